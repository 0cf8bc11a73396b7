/* sim_baselines.c — the methods that need no federation:
 *   1. the teacher itself, evaluated on the private clients' test text;
 *   2. a student distilled from the teacher on the public transfer set only
 *      (what a server can do without any client);
 *   5. a student trained centrally on everything pooled: every client's
 *      private text and the transfer set with its soft labels (the upper
 *      bound that privacy forbids).
 * Both students start from the same initial weights as the federated ones
 * and take the same number of optimizer steps of the same batch as the
 * federation's clients take in total (matched compute), in round-sized
 * chunks so every method has a per-round curve. */
#include "sim_internal.h"

#include <stdio.h>
#include <string.h>

int sim_run_teacher(sim_ctx *x, fkd_error *err)
{
    fkd_sim_method *m = &x->res->m[FKD_SIM_TEACHER];
    double t0 = fkd_time_ms();
    sim_progress(x, 0, "evaluating the teacher");
    if (sim_eval_final(m, x, &x->teacher, err) != 0) return -1;
    m->ran = 1;
    m->wall_seconds = (fkd_time_ms() - t0) / 1e3;
    return 0;
}

int64_t sim_matched_steps(const fkd_sim_config *cfg)
{
    return (int64_t)cfg->per_round * cfg->local_steps;
}

static fkd_trainer_config central_trainer(const sim_ctx *x, int method, const char *state)
{
    const fkd_sim_config *cfg = &x->cfg;
    fkd_trainer_config tc = fkd_trainer_defaults();
    tc.accum = 1;
    tc.opt.lr = cfg->lr;
    tc.opt.schedule = FKD_LR_CONSTANT;  /* as the clients train */
    tc.opt.warmup_steps = 0;
    tc.opt.grad_clip = 1.0f;
    tc.opt.weight_decay = 0;
    tc.loss.alpha = cfg->alpha;
    tc.loss.temperature = cfg->soft_temperature;
    tc.transfer_share = method == FKD_SIM_PUBLIC_KD ? 1.0f : cfg->transfer_share;
    tc.eval_every = 0;
    tc.ckpt_every = 0;
    tc.state_path = state;
    tc.seed = cfg->seed ^ (uint64_t)(method + 1) * 0x9e3779b97f4a7c15ULL;
    tc.label = "central";
    return tc;
}

int sim_run_central(sim_ctx *x, int method, fkd_error *err)
{
    const fkd_sim_config *cfg = &x->cfg;
    fkd_sim_method *m = &x->res->m[method];
    char state[FKD_SIM_PATH_MAX + 64];
    snprintf(state, sizeof state, "%s/%s.state", x->work_dir, m->key);
    remove(state);
    fkd_params p;
    if (sim_params_copy(&p, &x->init, err) != 0) return -1;
    fkd_model model;
    if (fkd_model_init(&model, &p, cfg->batch, cfg->seq, 0, err) != 0) {
        fkd_params_free(&p);
        return -1;
    }
    const fkd_token_stream *train = method == FKD_SIM_PUBLIC_KD ? &x->transfer : &x->pooled;
    fkd_trainer_config tc = central_trainer(x, method, state);
    int64_t per_round = sim_matched_steps(cfg);
    double t0 = fkd_time_ms();
    int rc = 0;
    for (int r = 1; r <= cfg->rounds && rc == 0; r++) {
        char what[96];
        snprintf(what, sizeof what, "%s · round %d/%d", m->key, r, cfg->rounds);
        sim_progress(x, 0, what);
        double tr = fkd_time_ms();
        tc.steps = per_round * r;
        fkd_trainer_result tres;
        rc = fkd_trainer_run(&tres, &model, train, &x->transfer, NULL, &tc, err);
        if (rc != 0) break;
        m->train_tokens += tres.tokens;
        sim_progress(x, tres.tokens, what);
        fkd_sim_round rr = {.round = r};
        rc = sim_eval_ppl(&rr.ppl, &rr.acc, &model.params, &x->test, cfg->eval_tokens_round, err);
        rr.wall_seconds = (fkd_time_ms() - tr) / 1e3;
        if (rc == 0) rc = sim_method_add_round(m, &rr, err);
    }
    remove(state);
    m->wall_seconds = (fkd_time_ms() - t0) / 1e3;
    if (rc == 0) rc = sim_params_copy(&m->final, &model.params, err);
    fkd_model_free(&model);
    if (rc == 0) rc = sim_eval_final(m, x, &m->final, err);
    if (rc == 0) rc = sim_eval_clients(m, x, &m->final, err);
    if (rc == 0) m->ran = 1;
    return rc;
}
