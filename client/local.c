/* local.c — one task, start to finish, with no I/O but files: the quantized
 * student is dequantized, trained on the private text (cross-entropy) and the
 * round's soft labels (distillation) within the memory budget, and the
 * weight delta is compressed with error feedback, sealed and wrapped in an
 * UPDATE message.
 *
 * Determinism: everything random is seeded from the task's seed and our id,
 * and the residual used is the newest one saved for an EARLIER round, so
 * when a restarted coordinator asks for a round again the update is the
 * same bytes before sealing. */
#include "fkd_client.h"
#include "local_internal.h"

#include <dirent.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RESIDUAL_PREFIX "residual-"
#define RESIDUALS_KEPT 2

double fkd_client_kv_or(const fkd_wire_kvmap *m, const char *key, double dflt)
{
    double v;
    return fkd_wire_kv_get(m, key, &v) ? v : dflt;
}

int fkd_client_task_params(task_params *p, const fkd_wire_task *t, int max_seq, fkd_error *err)
{
    const fkd_wire_kvmap *h = &t->hparams, *c = &t->compression;
    p->steps = (int64_t)fkd_client_kv_or(h, "steps", 20);
    p->batch = (int)fkd_client_kv_or(h, "batch", 8);
    p->seq = (int)fkd_client_kv_or(h, "seq", 64);
    p->warmup = (int)fkd_client_kv_or(h, "warmup", 0);
    p->lr = (float)fkd_client_kv_or(h, "lr", 1e-3);
    p->weight_decay = (float)fkd_client_kv_or(h, "weight_decay", 0);
    p->grad_clip = (float)fkd_client_kv_or(h, "grad_clip", 1);
    p->alpha = (float)fkd_client_kv_or(h, "alpha", 0.5);
    p->temperature = (float)fkd_client_kv_or(h, "temperature", 1);
    p->transfer_share = (float)fkd_client_kv_or(h, "transfer_share", 0.5);
    p->prox_mu = (float)fkd_client_kv_or(h, "prox_mu", 0);
    p->seed = (uint64_t)fkd_client_kv_or(h, "seed", 1);
    memset(&p->comp, 0, sizeof p->comp);
    p->comp.fraction = (float)fkd_client_kv_or(c, "fraction", 0.1);
    p->comp.value_format = (int)fkd_client_kv_or(c, "value_format", FKD_UVAL_INT8);
    p->comp.stochastic = fkd_client_kv_or(c, "stochastic", 0) != 0;
    if (p->steps < 1 || p->steps > 1000000 || p->batch < 1 || p->batch > 4096 || p->seq < 2 ||
        p->seq > max_seq || !(p->lr > 0) || !(p->lr < 1) || !(p->prox_mu >= 0) ||
        !(p->alpha >= 0 && p->alpha <= 1) || !(p->temperature > 0) ||
        !(p->transfer_share >= 0 && p->transfer_share <= 1) || !(p->comp.fraction > 0) ||
        p->comp.fraction > 1 || p->comp.value_format < FKD_UVAL_F32 ||
        p->comp.value_format >= FKD_UVAL_COUNT)
        return fkd_error_set(err, FKD_E_FORMAT, "the task's hyper-parameters are out of range "
                             "(steps %lld batch %d seq %d of max %d, lr %g, fraction %g)",
                             (long long)p->steps, p->batch, p->seq, max_seq, (double)p->lr,
                             (double)p->comp.fraction);
    return 0;
}

/* ---- residual files ---------------------------------------------------------- */
int fkd_client_residual_path(char *out, size_t cap, const char *state_dir, uint64_t round)
{
    int n = snprintf(out, cap, "%s/" RESIDUAL_PREFIX "%" PRIu64 ".bin", state_dir, round);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

static int residual_round(uint64_t *round, const char *name)
{
    size_t pl = strlen(RESIDUAL_PREFIX);
    if (strncmp(name, RESIDUAL_PREFIX, pl) != 0) return 0;
    char *end;
    unsigned long long r = strtoull(name + pl, &end, 10);
    if (end == name + pl || strcmp(end, ".bin") != 0) return 0;
    *round = r;
    return 1;
}

uint64_t fkd_client_residual_latest(const char *state_dir, uint64_t below)
{
    DIR *d = opendir(state_dir);
    if (!d) return 0;
    uint64_t best = 0, r;
    struct dirent *e;
    while ((e = readdir(d)))
        if (residual_round(&r, e->d_name) && r < below && r > best) best = r;
    closedir(d);
    return best;
}

/* Keeps the newest RESIDUALS_KEPT files: a redo of the last round needs the
 * one before it. */
static void residual_prune(const char *state_dir)
{
    uint64_t keep = UINT64_MAX;
    for (int i = 0; i < RESIDUALS_KEPT; i++) {
        uint64_t r = fkd_client_residual_latest(state_dir, keep);
        if (r == 0) return;
        keep = r;
    }
    DIR *d = opendir(state_dir);
    if (!d) return;
    struct dirent *e;
    uint64_t r;
    char path[1200];
    while ((e = readdir(d)))
        if (residual_round(&r, e->d_name) && r < keep &&
            fkd_client_residual_path(path, sizeof path, state_dir, r) == 0)
            unlink(path);
    closedir(d);
}

static int residual_load(float *res, size_t n, const char *dir, uint64_t round, fkd_error *err)
{
    memset(res, 0, n * sizeof *res);
    if (!dir) return 0;
    uint64_t prev = fkd_client_residual_latest(dir, round);
    if (prev == 0) return 0;
    char path[1200];
    if (fkd_client_residual_path(path, sizeof path, dir, prev) != 0)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "state directory path too long");
    if (fkd_residual_load(res, n, path, err) == 0) return 0;
    /* Another model shape (a new deployment) or a damaged file: start afresh
     * rather than refuse to work; error feedback only delays, never loses. */
    memset(res, 0, n * sizeof *res);
    return 0;
}

/* ---- the steps of a task -------------------------------------------------------- */
static int load_student(fkd_params *base, const fkd_wire_task *t, fkd_error *err)
{
    fkd_qmodel qm;
    if (t->weights.len == 0)
        return fkd_error_set(err, FKD_E_FORMAT, "the task carries no weights");
    if (fkd_qmodel_decode(&qm, t->weights.data, t->weights.len, err) != 0) return -1;
    int rc = fkd_qmodel_dequantize(base, &qm, err);
    fkd_qmodel_free(&qm);
    return rc;
}

static int copy_params(fkd_params *dst, const fkd_params *src, fkd_error *err)
{
    if (fkd_params_init(dst, &src->cfg, err) != 0) return -1;
    memcpy(dst->memory, src->memory, src->n_params * sizeof(float));
    return 0;
}

uint64_t fkd_client_id_hash(const uint8_t id[FKD_WIRE_ID_BYTES])
{
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < FKD_WIRE_ID_BYTES; i++) h = (h ^ id[i]) * 1099511628211ULL;
    return h;
}

static int train_local(fkd_client_result *res, fkd_params *trained, float *grad,
                       const fkd_params *base, const fkd_token_stream *transfer,
                       const task_params *p, const fkd_client_trainer *tr, fkd_error *err)
{
    if (fkd_memory_plan_make(&res->plan, &base->cfg, p->batch, p->seq, FKD_OPT_ADAMW,
                             tr->memory_budget_bytes, err) != 0)
        return -1;
    fkd_params own;
    if (copy_params(&own, base, err) != 0) return -1;
    fkd_model m;
    if (fkd_model_init(&m, &own, res->plan.micro_batch, p->seq, res->plan.recompute, err) != 0) {
        fkd_params_free(&own);
        return -1;
    }
    fkd_trainer_config tc;
    fkd_client_trainer_config(&tc, p, &res->plan, transfer, tr);
    tc.prox_ref = p->prox_mu > 0 ? base->memory : NULL;
    const fkd_token_stream *text = tr->train && tr->train->n >= 2 ? tr->train : NULL;
    fkd_trainer_result tres;
    int rc = fkd_trainer_run(&tres, &m, text, transfer, NULL, &tc, err);
    if (rc == 0) {
        fkd_client_result_from(res, &tres);
        rc = copy_params(trained, &m.params, err);
        /* The last step's gradient: where the loss still falls, per weight. */
        if (rc == 0) memcpy(grad, m.grads, base->n_params * sizeof *grad);
    }
    fkd_model_free(&m);
    return rc;
}

void fkd_client_result_from(fkd_client_result *res, const fkd_trainer_result *tres)
{
    res->loss = tres->train_loss;
    res->steps = tres->steps_run;
    res->tokens = tres->tokens;
    res->train_seconds = tres->seconds;
}

void fkd_client_trainer_config(fkd_trainer_config *out, const task_params *p,
                               const fkd_memory_plan *plan, const fkd_token_stream *transfer,
                               const fkd_client_trainer *tr)
{
    fkd_trainer_config tc = fkd_trainer_defaults();
    tc.steps = p->steps;
    tc.accum = plan->n_micro;
    tc.opt.lr = p->lr;
    tc.opt.weight_decay = p->weight_decay;
    tc.opt.grad_clip = p->grad_clip;
    tc.opt.warmup_steps = p->warmup;
    tc.opt.schedule = FKD_LR_CONSTANT;
    tc.opt.prox_mu = p->prox_mu;
    tc.loss.alpha = p->alpha;
    tc.loss.temperature = p->temperature;
    tc.transfer_share = transfer ? p->transfer_share : 0;
    tc.eval_every = 0;
    tc.ckpt_every = 0;
    tc.seed = p->seed ^ fkd_client_id_hash(tr->id->sign_pk);
    tc.label = "local";
    *out = tc;
}

/* delta (n) -> compressed bytes, with the residual of earlier rounds. */
static int compress_delta(uint8_t **data, size_t *bytes, fkd_client_result *res, float *delta,
                          const float *grad, size_t n, uint64_t round, const task_params *p,
                          const fkd_client_trainer *tr, fkd_error *err)
{
    float *residual = malloc(n * sizeof *residual);
    if (!residual) return fkd_error_set(err, FKD_E_NOMEM, "no memory for the residual");
    int rc = residual_load(residual, n, tr->state_dir, round, err);
    fkd_rng rng;
    fkd_rng_seed(&rng, p->seed ^ fkd_client_id_hash(tr->id->sign_pk) ^ 0x636f6d70ULL);
    fkd_update_config uc = p->comp;
    uc.rng = &rng;
    uc.weight = grad;
    fkd_update_stats st;
    if (rc == 0) rc = fkd_update_compress(data, bytes, &st, delta, residual, n, &uc, err);
    if (rc == 0 && tr->state_dir) {
        char path[1200];
        if (fkd_client_residual_path(path, sizeof path, tr->state_dir, round) != 0)
            rc = fkd_error_set(err, FKD_E_INVALID_ARG, "state directory path too long");
        else
            rc = fkd_residual_save(path, residual, n, err);
        if (rc == 0) residual_prune(tr->state_dir);
        if (rc != 0) {
            free(*data);
            *data = NULL;
        }
    }
    if (rc == 0) {
        res->update_bytes = st.bytes;
        res->dense_bytes = st.bytes_dense;
        res->compress_ratio = st.ratio;
        res->compress_rel_error = st.rel_error;
    }
    free(residual);
    return rc;
}

int fkd_client_seal_update(fkd_wire_msg *up, uint8_t **sealed, const uint8_t *plain,
                           size_t plain_len, const fkd_wire_msg *task,
                           const fkd_client_trainer *tr, fkd_error *err)
{
    fkd_wire_seal_ctx ctx = {.round = task->env.round,
                             .model_version = task->u.task.model_version};
    memcpy(ctx.client_id, tr->id->sign_pk, FKD_WIRE_ID_BYTES);
    size_t cap = fkd_wire_sealed_bytes(plain_len), len;
    *sealed = malloc(cap);
    if (!*sealed) return fkd_error_set(err, FKD_E_NOMEM, "no memory to seal the update");
    if (fkd_wire_seal(*sealed, cap, &len, plain, plain_len, &ctx, tr->id, tr->coord_curve_pk,
                      err) != 0) {
        free(*sealed);
        *sealed = NULL;
        return -1;
    }
    fkd_wire_msg_init(up, FKD_WIRE_UPDATE, tr->id->sign_pk, task->env.round);
    up->u.update.model_version = task->u.task.model_version;
    up->u.update.sealed.data = *sealed;
    up->u.update.sealed.len = len;
    return 0;
}

void fkd_client_put_metrics(fkd_wire_kvmap *m, const fkd_client_result *r)
{
    fkd_wire_kv_set(m, "loss", r->loss, NULL);
    fkd_wire_kv_set(m, "steps", (double)r->steps, NULL);
    fkd_wire_kv_set(m, "tokens", (double)r->tokens, NULL);
    fkd_wire_kv_set(m, "seconds", r->train_seconds, NULL);
    fkd_wire_kv_set(m, "ratio", r->compress_ratio, NULL);
    fkd_wire_kv_set(m, "micro_batch", r->plan.micro_batch, NULL);
    fkd_wire_kv_set(m, "recompute", r->plan.recompute, NULL);
    fkd_wire_kv_set(m, "peak_mb", fkd_peak_rss_mb(), NULL);
}

int fkd_client_task_transfer(fkd_softlabel_shard *shard, fkd_token_stream *transfer,
                             const fkd_wire_task *t, int vocab, fkd_error *err)
{
    if (t->soft_labels.len == 0) return 0;
    if (fkd_softlabels_decode(shard, t->soft_labels.data, t->soft_labels.len, err) != 0) return -1;
    if (shard->vocab != vocab)
        return fkd_error_set(err, FKD_E_MISMATCH, "soft labels for vocabulary %d, student has %d",
                             shard->vocab, vocab);
    fkd_token_stream_from_shard(transfer, shard);
    return 0;
}

void fkd_client_update_finish(fkd_wire_msg *update, const fkd_client_result *res,
                              const fkd_client_trainer *tr)
{
    update->u.update.samples = tr->train ? (uint64_t)tr->train->n : 0;
    fkd_client_put_metrics(&update->u.update.metrics, res);
}

int fkd_client_run_task(fkd_client_result *res, fkd_wire_msg *update, uint8_t **sealed,
                        const fkd_wire_msg *task, const fkd_client_trainer *tr, fkd_error *err)
{
    memset(res, 0, sizeof *res);
    *sealed = NULL;
    if (task->env.type != FKD_WIRE_TASK)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "not a TASK message");
    const fkd_wire_task *t = &task->u.task;
    if (fkd_client_kv_or(&t->hparams, "mode", FKD_WIRE_MODE_FULL) != FKD_WIRE_MODE_FULL)
        return fkd_client_run_lora(res, update, sealed, task, tr, err);
    fkd_params base = {0}, trained = {0};
    fkd_softlabel_shard shard = {0};
    fkd_token_stream transfer = {0};
    task_params p;
    uint8_t *plain = NULL;
    size_t plain_len = 0;
    float *delta = NULL, *grad = NULL;
    int rc = load_student(&base, t, err);
    if (rc == 0) rc = fkd_client_task_params(&p, t, base.cfg.max_seq, err);
    if (rc == 0) rc = fkd_client_task_transfer(&shard, &transfer, t, base.cfg.vocab, err);
    size_t n = base.n_params;
    if (rc == 0 && (!(delta = malloc(n * sizeof *delta)) || !(grad = malloc(n * sizeof *grad))))
        rc = fkd_error_set(err, FKD_E_NOMEM, "no memory for the update");
    if (rc == 0)
        rc = train_local(res, &trained, grad, &base, t->soft_labels.len ? &transfer : NULL, &p,
                         tr, err);
    if (rc == 0) {
        fkd_update_diff(delta, trained.memory, base.memory, n);
        if (tr->attack_scale != 0 && tr->attack_scale != 1)
            for (size_t i = 0; i < n; i++) delta[i] *= tr->attack_scale;
        rc = compress_delta(&plain, &plain_len, res, delta, grad, n, task->env.round, &p, tr,
                            err);
    }
    if (rc == 0) rc = fkd_client_seal_update(update, sealed, plain, plain_len, task, tr, err);
    if (rc == 0) fkd_client_update_finish(update, res, tr);
    free(plain);
    free(delta);
    free(grad);
    fkd_softlabels_free(&shard);
    fkd_params_free(&base);
    fkd_params_free(&trained);
    return rc;
}
