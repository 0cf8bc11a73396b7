/* sim_baselines.c — the server's phase and the methods that need no federation.
 *
 * The server's phase comes first: what a server holding only the public
 * corpus can do before any client joins. It trains two students from the
 * one initial student, for server_steps optimizer steps each:
 *   - with the teacher: distillation on the public transfer set (its soft
 *     labels); the students that use the teacher start from it;
 *   - without a teacher: cross-entropy on the same public text; FedAvg
 *     without distillation starts from it.
 * Then, with the same budget of steps after it (the federation's
 * rounds x per-round x local-steps):
 *   1. the teacher itself, evaluated on the private clients' test text;
 *   2. public-only distillation: the server's distillation simply goes on
 *      (same run, same optimizer state) — what a server can do without any
 *      client;
 *   5. central, all pooled: from the server's distilled student, every
 *      client's private text and the transfer set with its soft labels (the
 *      upper bound that privacy forbids), then, as the federated methods'
 *      servers do after each aggregation, the server's distillation steps
 *      of the round.
 * Each takes its steps in round-sized chunks so every method has a
 * per-round curve. The server phase's optimizer states are kept
 * (server-kd.state, server-ce.state) and from then on only read: public-only
 * distillation, the federated methods' coordinators and central start their
 * optimizers from them, in place, and carry them in memory from round to
 * round, so every server's distillation is the one public-only distillation
 * runs. */
#include "sim_internal.h"

#include <stdio.h>
#include <string.h>

#define SERVER_KD_FILE "server-kd.ckpt"
#define SERVER_CE_FILE "server-ce.ckpt"
#define SEED_MIX 0x9e3779b97f4a7c15ULL

int sim_run_teacher(sim_ctx *x, fkd_error *err)
{
    fkd_sim_method *m = &x->res->m[FKD_SIM_TEACHER];
    double t0 = fkd_time_ms();
    sim_progress(x, 0, "evaluating the teacher");
    if (sim_eval_final(m, x, &x->teacher, err) != 0) return -1;
    fkd_params_free(&x->teacher); /* its soft labels are made: nothing reads it any more */
    m->ran = 1;
    m->wall_seconds = (fkd_time_ms() - t0) / 1e3;
    return 0;
}

int64_t sim_matched_steps(const fkd_sim_config *cfg)
{
    return (int64_t)cfg->per_round * cfg->local_steps;
}

int64_t sim_server_steps(const fkd_sim_config *cfg)
{
    return cfg->server_steps >= 0 ? cfg->server_steps : cfg->rounds * sim_matched_steps(cfg);
}

void sim_server_path(char *out, size_t cap, const sim_ctx *x, int method)
{
    snprintf(out, cap, "%s/%s", x->work_dir,
             method == FKD_SIM_FEDAVG ? SERVER_CE_FILE : SERVER_KD_FILE);
}

static void state_path(char *out, size_t cap, const sim_ctx *x, const char *key)
{
    snprintf(out, cap, "%s/%s.state", x->work_dir, key);
}

int64_t sim_server_round_steps(const fkd_sim_config *cfg)
{
    return cfg->server_round_steps >= 0 ? cfg->server_round_steps : sim_matched_steps(cfg);
}

void sim_server_state_path(char *out, size_t cap, const sim_ctx *x, int method)
{
    state_path(out, cap, x, method == FKD_SIM_FEDAVG ? "server-ce" : "server-kd");
}

static uint64_t method_seed(const sim_ctx *x, int method)
{
    return x->cfg.seed ^ (uint64_t)(method + 1) * SEED_MIX;
}

uint64_t sim_server_seed(const sim_ctx *x, int method)
{
    return method_seed(x, method == FKD_SIM_FEDAVG ? FKD_SIM_FEDAVG : FKD_SIM_PUBLIC_KD);
}

/* kd: distillation on the transfer set (alpha of the run) or, without a
 * teacher, cross-entropy on the same text. state: the state file the run
 * resumes from (the server's phase writes it). */
static fkd_trainer_config trainer_for(const sim_ctx *x, int method, const char *state)
{
    const fkd_sim_config *cfg = &x->cfg;
    fkd_trainer_config tc = fkd_trainer_defaults();
    tc.accum = 1;
    tc.opt.lr = cfg->lr;
    tc.opt.schedule = FKD_LR_CONSTANT;  /* as the clients train */
    tc.opt.warmup_steps = 0;
    tc.opt.grad_clip = 1.0f;
    tc.opt.weight_decay = 0;
    tc.loss.alpha = method == FKD_SIM_FEDAVG ? 0.0f : cfg->alpha;
    tc.loss.temperature = cfg->soft_temperature;
    tc.transfer_share = method == FKD_SIM_CENTRAL ? cfg->transfer_share : 1.0f;
    tc.eval_every = 0;
    tc.ckpt_every = 0;
    tc.state_path = state;
    tc.seed = method_seed(x, method);
    tc.label = "central";
    return tc;
}

/* A model on a copy of src, for training. */
static int model_from(fkd_model *model, const fkd_params *src, const fkd_sim_config *cfg,
                      fkd_error *err)
{
    fkd_params p;
    if (sim_params_copy(&p, src, err) != 0) return -1;
    if (fkd_model_init(model, &p, cfg->batch, cfg->seq, 0, err) == 0) return 0;
    fkd_params_free(&p);
    return -1;
}

/* server_steps on the public text from the initial student, into *out and
 * its checkpoint. The state is kept, read-only from now on: public-only
 * distillation and the other distilling servers go on from the distilling
 * run's (server-kd.state), FedAvg's coordinator from the cross-entropy
 * one's (server-ce.state). */
static int server_train(sim_ctx *x, fkd_params *out, int method, fkd_error *err)
{
    const fkd_sim_config *cfg = &x->cfg;
    char state[FKD_SIM_PATH_MAX + 64], path[FKD_SIM_PATH_MAX + 64], what[96];
    sim_server_state_path(state, sizeof state, x, method);
    remove(state);
    fkd_model model;
    if (model_from(&model, &x->init, cfg, err) != 0) return -1;
    fkd_trainer_config tc = trainer_for(x, method == FKD_SIM_FEDAVG ? method : FKD_SIM_PUBLIC_KD,
                                        state);
    tc.steps = sim_server_steps(cfg);
    snprintf(what, sizeof what, "server · %s on the public text",
             method == FKD_SIM_FEDAVG ? "cross-entropy" : "distillation");
    sim_progress(x, 0, what);
    fkd_trainer_result tres;
    int rc = tc.steps > 0 ? fkd_trainer_run(&tres, &model, &x->transfer, &x->transfer, NULL, &tc,
                                            err)
                          : 0;
    if (rc == 0 && tc.steps > 0) sim_progress(x, tres.tokens, what);
    if (rc == 0) rc = sim_params_copy(out, &model.params, err);
    fkd_model_free(&model);
    sim_server_path(path, sizeof path, x, method);
    if (rc == 0) rc = fkd_checkpoint_save(path, out, err);
    return rc;
}

int sim_run_server(sim_ctx *x, fkd_error *err)
{
    double t0 = fkd_time_ms();
    /* Only FedAvg starts from the cross-entropy student. */
    int ce = fkd_sim_runs_method(&x->cfg, FKD_SIM_FEDAVG);
    int rc = server_train(x, &x->server_kd, FKD_SIM_PUBLIC_KD, err);
    if (rc == 0 && ce) rc = server_train(x, &x->server_ce, FKD_SIM_FEDAVG, err);
    if (rc == 0) {
        fkd_sim_summary *s = &x->res->sum;
        s->server_seconds = (fkd_time_ms() - t0) / 1e3;
        rc = sim_eval_ppl(&s->server_kd_ppl, NULL, &x->server_kd, &x->test,
                          x->cfg.eval_tokens_round, err);
        if (rc == 0 && ce)
            rc = sim_eval_ppl(&s->server_ce_ppl, NULL, &x->server_ce, &x->test,
                              x->cfg.eval_tokens_round, err);
    }
    fkd_params_free(&x->server_ce); /* FedAvg's coordinator starts from its checkpoint */
    return rc;
}

void sim_server_free(sim_ctx *x)
{
    fkd_params_free(&x->server_kd);
    fkd_params_free(&x->server_ce);
}

/* Round r's factor on lr: the federated methods' schedule (coord.c's), so
 * every method's round r trains at the same rate. */
float sim_round_lr_scale(const fkd_sim_config *cfg, int r)
{
    fkd_coord_config c;
    fkd_coord_config_defaults(&c);
    c.rounds = cfg->rounds;
    c.lr_schedule = cfg->lr_schedule;
    c.min_lr_ratio = cfg->min_lr_ratio;
    return fkd_coord_lr_scale(&c, (uint64_t)r);
}

/* One round of a central method, its optimizers carried in memory (own; kd
 * for central's server): public-only distillation's steps (its one run goes
 * on from the server phase's), or central's pooled steps then the server's
 * distillation of the round, which starts from the server phase's state. */
static int central_round(int64_t *tokens, fkd_model *model, sim_ctx *x, int method,
                         int r, fkd_trainer_carry *own, fkd_trainer_carry *kd_opt,
                         fkd_error *err)
{
    const fkd_sim_config *cfg = &x->cfg;
    int public_kd = method == FKD_SIM_PUBLIC_KD;
    char server[FKD_SIM_PATH_MAX + 64];
    sim_server_state_path(server, sizeof server, x, FKD_SIM_PUBLIC_KD); /* read, never written */
    fkd_trainer_config tc = trainer_for(x, method, public_kd ? server : NULL);
    fkd_trainer_result tres;
    tc.carry = own; /* the server's steps move central's weights in between */
    tc.opt.lr *= sim_round_lr_scale(cfg, r);
    tc.steps = sim_matched_steps(cfg);
    if (fkd_trainer_run(&tres, model, public_kd ? &x->transfer : &x->pooled, &x->transfer, NULL,
                        &tc, err) != 0)
        return -1;
    *tokens = tres.tokens;
    if (public_kd || sim_server_round_steps(cfg) == 0) return 0;
    fkd_trainer_config kd = trainer_for(x, FKD_SIM_PUBLIC_KD, server);
    kd.carry = kd_opt;
    kd.opt.lr *= sim_round_lr_scale(cfg, r);
    kd.steps = sim_server_round_steps(cfg);
    if (fkd_trainer_run(&tres, model, NULL, &x->transfer, NULL, &kd, err) != 0) return -1;
    *tokens += tres.tokens;
    return 0;
}

int sim_run_central(sim_ctx *x, int method, fkd_error *err)
{
    const fkd_sim_config *cfg = &x->cfg;
    fkd_sim_method *m = &x->res->m[method];
    fkd_trainer_carry own = {0}, kd = {0};
    fkd_model model;
    if (model_from(&model, &x->server_kd, cfg, err) != 0) return -1;
    double t0 = fkd_time_ms();
    int rc = 0;
    for (int r = 1; r <= cfg->rounds && rc == 0; r++) {
        char what[96];
        snprintf(what, sizeof what, "%s · round %d/%d", m->key, r, cfg->rounds);
        sim_progress(x, 0, what);
        double tr = fkd_time_ms();
        int64_t tokens = 0;
        rc = central_round(&tokens, &model, x, method, r, &own, &kd, err);
        if (rc != 0) break;
        m->train_tokens += tokens;
        sim_progress(x, tokens, what);
        fkd_sim_round rr = {.round = r};
        rc = sim_eval_ppl(&rr.ppl, &rr.acc, &model.params, &x->test, cfg->eval_tokens_round, err);
        rr.wall_seconds = (fkd_time_ms() - tr) / 1e3;
        if (rc == 0) rc = sim_method_add_round(m, &rr, err);
    }
    fkd_trainer_carry_free(&own);
    fkd_trainer_carry_free(&kd);
    m->wall_seconds = (fkd_time_ms() - t0) / 1e3;
    if (rc == 0) rc = sim_params_copy(&m->final, &model.params, err);
    fkd_model_free(&model);
    if (rc == 0) rc = sim_eval_final(m, x, &m->final, err);
    if (rc == 0) rc = sim_eval_clients(m, x, &m->final, err);
    if (rc == 0) m->ran = 1;
    return rc;
}
