/* trainer.c — the training loop every part of fedkd uses (the teacher, the
 * clients' local training, the simulation): steps of accumulated
 * micro-batches of random windows, periodic validation, a progress line,
 * and a training state saved atomically and resumed from.
 *
 * Resuming gives the weights of an uninterrupted run because nothing in a
 * step depends on the past except what the state file holds: micro-batch i
 * of the run is fkd_batch_random(seed, i), the optimizer's moments and step
 * count are saved with the weights.
 *
 * State file (little-endian, CRC-32 trailer):
 *   "FKDTRST\0", version u32, optimizer kind u32, step i64, seed u64,
 *   optimizer step i64, moment floats u64, checkpoint bytes u64,
 *   the weights as a checkpoint (fkd_checkpoint_encode; a LoRA model's
 *   adapters as fkd_lora_encode instead), the moments (f32), CRC-32 of
 *   everything before it. A carried optimizer's file (fkd_trainer_carry_save)
 *   has no weights (checkpoint bytes 0): it resumes only a run that keeps the
 *   model's (carry_optimizer), and its shape is checked by the moments' count.
 *
 * A LoRA model (fkd_model_init_lora) trains its adapters only: the optimizer,
 * its moments and the state file cover the adapter arena; prox_ref is then
 * laid out as lora->params; masks and validation need the fp32 model
 * (merge the adapters, then evaluate). */
#include "fkd_train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define STATE_MAGIC "FKDTRST"
#define STATE_VERSION 1
#define STATE_HEADER_BYTES 56
#define STATE_MAX_BYTES ((size_t)16 << 30)
#define TRANSFER_TAG 0x7472616e73666572ULL /* "transfer": its own window sequence */

fkd_trainer_config fkd_trainer_defaults(void)
{
    fkd_trainer_config c = {0};
    c.steps = 1000;
    c.accum = 1;
    c.opt = fkd_optimizer_defaults();
    c.opt.warmup_steps = 50;
    c.loss.alpha = 0.5f;
    c.loss.temperature = 1.0f;
    c.eval_every = 100;
    c.eval_max_tokens = 32768;
    c.ckpt_every = 100;
    c.seed = 1;
    c.label = "train";
    return c;
}

/* ---- state file ------------------------------------------------------------- */

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static size_t moment_floats(const fkd_optimizer *opt)
{
    return opt->cfg.kind == FKD_OPT_ADAMW ? 2 * opt->n : opt->n;
}

static void put_floats(uint8_t *p, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        put_u32(p + 4 * i, u);
    }
}

static void get_floats(float *x, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u = get_u32(p + 4 * i);
        memcpy(&x[i], &u, 4);
    }
}

/* What the optimizer updates: a LoRA model's adapters, else its parameters. */
static float *trained_params(const fkd_model *m)
{
    return m->lora ? m->lora->params : m->params.memory;
}

static float *trained_grads(const fkd_model *m)
{
    return m->lora ? m->lora->grads : m->grads;
}

static int state_save(const char *path, const fkd_model *m, const fkd_optimizer *opt,
                      int64_t step, uint64_t seed, fkd_error *err)
{
    uint8_t *ckpt;
    size_t ckpt_bytes;
    if ((m->lora ? fkd_lora_encode(&ckpt, &ckpt_bytes, m->lora, err)
                 : fkd_checkpoint_encode(&ckpt, &ckpt_bytes, &m->params, err)) != 0)
        return -1;
    size_t nm = moment_floats(opt);
    size_t total = STATE_HEADER_BYTES + ckpt_bytes + 4 * nm + 4;
    uint8_t *buf = malloc(total);
    if (!buf) {
        free(ckpt);
        return fkd_error_set(err, FKD_E_NOMEM, "out of memory saving the training state");
    }
    memset(buf, 0, STATE_HEADER_BYTES);
    memcpy(buf, STATE_MAGIC, 8);
    put_u32(buf + 8, STATE_VERSION);
    put_u32(buf + 12, (uint32_t)opt->cfg.kind);
    put_u64(buf + 16, (uint64_t)step);
    put_u64(buf + 24, seed);
    put_u64(buf + 32, (uint64_t)opt->step);
    put_u64(buf + 40, nm);
    put_u64(buf + 48, ckpt_bytes);
    memcpy(buf + STATE_HEADER_BYTES, ckpt, ckpt_bytes);
    put_floats(buf + STATE_HEADER_BYTES + ckpt_bytes, opt->m, nm);
    put_u32(buf + total - 4, fkd_crc32(0, buf, total - 4));
    free(ckpt);
    int rc = fkd_file_write_atomic(path, buf, total, err);
    free(buf);
    return rc;
}

static int same_shape(const fkd_model_config *a, const fkd_model_config *b)
{
    return a->vocab == b->vocab && a->dim == b->dim && a->n_layers == b->n_layers &&
           a->n_heads == b->n_heads && a->n_kv_heads == b->n_kv_heads &&
           a->ffn_hidden == b->ffn_hidden && a->tie_embeddings == b->tie_embeddings;
}

/* The state's weights (bytes at w) into m, unless keep_weights; *ok = 0
 * when they are of another shape than m's. */
static int weights_apply(int *ok, const uint8_t *w, size_t bytes, fkd_model *m, int keep_weights,
                         fkd_error *err)
{
    if (m->lora) {
        fkd_lora l;
        if (fkd_lora_decode(&l, &m->params.cfg, w, bytes, err) != 0) return -1;
        *ok = l.n == m->lora->n && l.cfg.rank == m->lora->cfg.rank;
        if (*ok && !keep_weights) memcpy(m->lora->params, l.params, l.n * sizeof(float));
        fkd_lora_free(&l);
        return 0;
    }
    fkd_params p;
    if (fkd_checkpoint_decode(&p, w, bytes, err) != 0) return -1;
    *ok = same_shape(&p.cfg, &m->params.cfg) && p.n_params == m->params.n_params;
    if (*ok && !keep_weights) memcpy(m->params.memory, p.memory, p.n_params * sizeof(float));
    fkd_params_free(&p);
    return 0;
}

/* Validates the state in data and copies it into m and opt. */
/* keep_weights: check the state's shape but leave the model's weights. */
static int state_apply(int64_t *step, const uint8_t *d, size_t bytes, fkd_model *m,
                       fkd_optimizer *opt, uint64_t seed, int keep_weights, fkd_error *err)
{
    if (bytes < STATE_HEADER_BYTES + 4 || memcmp(d, STATE_MAGIC, 8) != 0)
        return fkd_error_set(err, FKD_E_FORMAT, "not a training state file");
    if (get_u32(d + 8) != STATE_VERSION)
        return fkd_error_set(err, FKD_E_VERSION, "training state version %u is not %d",
                             get_u32(d + 8), STATE_VERSION);
    uint64_t nm = get_u64(d + 40), ckpt_bytes = get_u64(d + 48);
    if (nm != moment_floats(opt) || get_u32(d + 12) != (uint32_t)opt->cfg.kind)
        return fkd_error_set(err, FKD_E_MISMATCH, "training state is for another optimizer or "
                             "model size: delete it to start over");
    if (ckpt_bytes > bytes || STATE_HEADER_BYTES + ckpt_bytes + 4 * nm + 4 != bytes)
        return fkd_error_set(err, FKD_E_TRUNCATED, "training state has %zu bytes, its header "
                             "declares another size", bytes);
    if (get_u32(d + bytes - 4) != fkd_crc32(0, d, bytes - 4))
        return fkd_error_set(err, FKD_E_CHECKSUM, "training state is damaged (checksum)");
    if (get_u64(d + 24) != seed)
        return fkd_error_set(err, FKD_E_MISMATCH, "training state was made with seed %llu, "
                             "not %llu: use the same seed or delete it",
                             (unsigned long long)get_u64(d + 24), (unsigned long long)seed);
    if (ckpt_bytes == 0 && !keep_weights)
        return fkd_error_set(err, FKD_E_MISMATCH, "training state holds no weights (an optimizer "
                             "carried between runs): it resumes only with carry_optimizer");
    int ok = 1; /* no weights: the moments' count above is the shape's check */
    if (ckpt_bytes > 0 &&
        weights_apply(&ok, d + STATE_HEADER_BYTES, ckpt_bytes, m, keep_weights, err) != 0)
        return -1;
    if (!ok)
        return fkd_error_set(err, FKD_E_MISMATCH, "training state holds another model shape: "
                             "delete it to start over");
    get_floats(opt->m, d + STATE_HEADER_BYTES + ckpt_bytes, nm);
    opt->step = (int64_t)get_u64(d + 32);
    *step = (int64_t)get_u64(d + 16);
    return 0;
}

/* Resumes from path when it exists; *step stays 0 otherwise. */
static int state_resume(int64_t *step, int *resumed, const char *path, fkd_model *m,
                        fkd_optimizer *opt, uint64_t seed, int keep_weights, fkd_error *err)
{
    *step = 0;
    *resumed = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fclose(f);
    uint8_t *data;
    size_t bytes;
    if (fkd_file_read_all(&data, &bytes, path, STATE_MAX_BYTES, err) != 0) return -1;
    int rc = state_apply(step, data, bytes, m, opt, seed, keep_weights, err);
    free(data);
    if (rc != 0) fkd_error_prefix(err, "%s", path);
    *resumed = rc == 0;
    return rc;
}

/* ---- the loop ------------------------------------------------------------------ */

typedef struct {
    fkd_model *m;
    const fkd_trainer_config *cfg;
    const fkd_token_stream *train, *transfer, *val;
    fkd_optimizer *opt;       /* the run's own, or the caller's carry */
    fkd_batch batch;
    double loss_sum;
    int64_t loss_count;
} run;

static int validate(fkd_trainer_result *res, run *r, fkd_error *err)
{
    const fkd_token_stream *v = r->val;
    if (!v || v->n < 2) return 0;
    int64_t n = v->n;
    if (r->cfg->eval_max_tokens > 0 && n > r->cfg->eval_max_tokens) n = r->cfg->eval_max_tokens;
    int64_t bytes = (int64_t)((double)v->text_bytes * (double)n / (double)v->n);
    fkd_eval_result e;
    if (fkd_eval_tokens(&e, &r->m->params, v->tokens, n, bytes, r->m->T, err) != 0) return -1;
    res->val_loss = e.mean_loss;
    res->val_ppl = e.perplexity;
    res->val_bpb = e.bits_per_byte;
    res->val_accuracy = e.accuracy;
    return 0;
}

static int micro_step(run *r, int64_t index, float scale, fkd_error *err)
{
    const fkd_trainer_config *c = r->cfg;
    const fkd_token_stream *src = r->train;
    uint64_t seed = c->seed;
    if (r->transfer && c->transfer_share > 0) {
        fkd_rng pick;
        fkd_rng_seed(&pick, c->seed ^ TRANSFER_TAG ^ (uint64_t)index * 0x9e3779b97f4a7c15ULL);
        if (!r->train || fkd_rng_uniform(&pick) < c->transfer_share) {
            src = r->transfer;
            seed ^= TRANSFER_TAG;
        }
    }
    if (fkd_batch_random(&r->batch, src, seed, index, err) != 0) return -1;
    fkd_loss_stats st;
    fkd_model_forward(r->m, r->batch.inputs, NULL); /* the head runs chunked in backward */
    fkd_model_backward(r->m, r->batch.inputs, r->batch.targets,
                       r->batch.has_soft ? &r->batch.soft : NULL, &c->loss, &st, scale);
    if (!isfinite(st.loss))
        return fkd_error_set(err, FKD_E_LIMIT, "training diverged (loss %g at micro-batch "
                             "%lld): lower the learning rate", st.loss, (long long)index);
    r->loss_sum += st.loss;
    r->loss_count++;
    return 0;
}

static void log_line(const run *r, const fkd_trainer_result *res, int64_t step, double t0)
{
    if (!r->cfg->log) return;
    double s = (fkd_time_ms() - t0) / 1e3;
    fprintf(r->cfg->log, "%s step %lld/%lld  train %.4f", r->cfg->label ? r->cfg->label : "train",
            (long long)step, (long long)r->cfg->steps, res->train_loss);
    if (r->val) fprintf(r->cfg->log, "  val %.4f ppl %.3f bpb %.4f acc %.3f", res->val_loss,
                        res->val_ppl, res->val_bpb, res->val_accuracy);
    fprintf(r->cfg->log, "  lr %.2e  %.1fs  %.0f tok/s\n", fkd_optimizer_lr(r->opt), s,
            s > 0 ? (double)res->tokens / s : 0.0);
    fflush(r->cfg->log);
}

static int check_args(const fkd_model *m, const fkd_token_stream *train,
                      const fkd_token_stream *transfer, const fkd_token_stream *val,
                      const fkd_trainer_config *cfg, fkd_error *err)
{
    if (cfg->steps < 0 || cfg->accum < 1)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "trainer: steps %lld and accum %d invalid",
                             (long long)cfg->steps, cfg->accum);
    if ((!train || train->n < 2) && (!transfer || transfer->n < 2 || cfg->transfer_share <= 0))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "trainer: no training text");
    if (transfer && transfer->soft_k > FKD_SOFT_MAX_K)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "trainer: soft-label k too large");
    if (!m->grads && !m->lora)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "trainer: the model has no gradients");
    if (m->lora && (cfg->mask || (val && val->n >= 2)))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "trainer: a LoRA model takes no pruning "
                             "mask or validation stream (merge its adapters to evaluate)");
    return 0;
}

static int loop(fkd_trainer_result *res, run *r, int64_t step, fkd_error *err)
{
    const fkd_trainer_config *c = r->cfg;
    fkd_model *m = r->m;
    double t0 = fkd_time_ms();
    const char *label = c->label ? c->label : "train";
    fkd_progress prog;
    if (c->progress) fkd_progress_begin(&prog, label, c->steps);
    int rc = 0;
    while (step < c->steps && rc == 0) {
        fkd_model_zero_grad(m);
        for (int k = 0; k < c->accum && rc == 0; k++)
            rc = micro_step(r, step * c->accum + k, 1.0f / (float)c->accum, err);
        if (rc != 0) break;
        fkd_optimizer_step(r->opt, trained_params(m), trained_grads(m));
        step++;
        res->steps_run++;
        res->tokens += (int64_t)c->accum * m->B * m->T;
        res->step = step;
        int last = step == c->steps;
        int out_of_time = c->time_limit_s > 0 && (fkd_time_ms() - t0) / 1e3 > c->time_limit_s;
        if ((c->eval_every > 0 && step % c->eval_every == 0) || last || out_of_time) {
            res->train_loss = r->loss_count ? r->loss_sum / (double)r->loss_count : 0;
            r->loss_sum = 0;
            r->loss_count = 0;
            rc = validate(res, r, err);
            if (c->progress) fkd_progress_end(&prog);
            if (rc == 0) log_line(r, res, step, t0);
            if (c->progress && !last) fkd_progress_begin(&prog, label, c->steps);
        }
        if (rc == 0 && c->state_path && !c->carry &&
            ((c->ckpt_every > 0 && step % c->ckpt_every == 0) || last || out_of_time))
            rc = state_save(c->state_path, m, r->opt, step, c->seed, err);
        if (c->progress && rc == 0) {
            char extra[96];
            snprintf(extra, sizeof extra, "loss %.3f", r->loss_count ? r->loss_sum / r->loss_count
                                                                     : res->train_loss);
            fkd_progress_update(&prog, step, extra);
        }
        if (out_of_time && !last) {
            res->stopped_early = 1;
            break;
        }
    }
    if (c->progress) fkd_progress_end(&prog);
    res->seconds = (fkd_time_ms() - t0) / 1e3;
    return rc;
}

/* The run's optimizer: the carry's when it is going (its step is where the
 * run goes on), else a fresh one, resumed from state_path when present. */
static int optimizer_start(int64_t *step, int *resumed, fkd_optimizer *opt, fkd_model *m,
                           const fkd_trainer_config *cfg, fkd_error *err)
{
    fkd_optimizer_config oc = cfg->opt;
    if (oc.total_steps == 0) oc.total_steps = (int)cfg->steps;
    fkd_trainer_carry *carry = cfg->carry;
    *step = 0;
    *resumed = 0;
    if (carry && carry->ready) {
        size_t n = m->lora ? m->lora->n : m->params.n_params;
        if (carry->seed != cfg->seed || carry->opt.n != n || carry->opt.cfg.kind != oc.kind)
            return fkd_error_set(err, FKD_E_MISMATCH, "trainer: the carried optimizer is for "
                                 "another seed, model size or optimizer");
        carry->opt.cfg = oc; /* this call's learning rate and schedule */
        *step = carry->step;
        *resumed = 1;
        return 0;
    }
    if ((m->lora ? fkd_lora_optimizer_init(opt, &oc, m->lora, err)
                 : fkd_optimizer_init(opt, &oc, &m->params, err)) != 0)
        return -1;
    int rc = cfg->state_path ? state_resume(step, resumed, cfg->state_path, m, opt, cfg->seed,
                                            cfg->carry_optimizer || carry, err)
                             : 0;
    if (rc != 0) {
        fkd_optimizer_free(opt);
        return -1;
    }
    if (carry) {
        carry->step = *step;
        carry->seed = cfg->seed;
        carry->ready = 1;
    }
    return 0;
}

int fkd_trainer_run(fkd_trainer_result *res, fkd_model *m, const fkd_token_stream *train,
                    const fkd_token_stream *transfer, const fkd_token_stream *val,
                    const fkd_trainer_config *cfg, fkd_error *err)
{
    memset(res, 0, sizeof *res);
    if (check_args(m, train, transfer, val, cfg, err) != 0) return -1;
    fkd_trainer_config run_cfg = *cfg; /* carry_optimizer: steps become the resumed step + steps */
    fkd_optimizer own;
    run r = {.m = m, .cfg = &run_cfg, .train = train, .transfer = transfer, .val = val,
             .opt = cfg->carry ? &cfg->carry->opt : &own};
    if (train && train->n < 2) r.train = NULL;
    int64_t step;
    if (optimizer_start(&step, &res->resumed, r.opt, m, cfg, err) != 0) return -1;
    r.opt->prox_ref = cfg->prox_ref;
    r.opt->mask = cfg->mask;
    r.opt->frozen = m->lora ? NULL : m->frozen;
    int k = transfer && cfg->transfer_share > 0 ? transfer->soft_k : 0;
    int rc = fkd_batch_init(&r.batch, m->B, m->T, k, err);
    if (cfg->carry_optimizer || cfg->carry) run_cfg.steps = step + cfg->steps;
    res->step = step;
    if (rc == 0) rc = loop(res, &r, step, err);
    if (rc == 0 && res->steps_run == 0) rc = validate(res, &r, err); /* already done */
    if (cfg->carry) cfg->carry->step = res->step; /* each step moved both it and the moments */
    fkd_batch_free(&r.batch);
    if (!cfg->carry) fkd_optimizer_free(&own);
    return rc;
}

/* ---- the carried optimizer ------------------------------------------------------------------ */

int fkd_trainer_carry_save(const char *path, const fkd_trainer_carry *c, fkd_error *err)
{
    if (!c->ready) return fkd_error_set(err, FKD_E_INVALID_ARG, "trainer: no carried optimizer");
    enum { CHUNK = 1 << 16 }; /* floats: the moments go out in pieces, not in one more copy */
    size_t nm = moment_floats(&c->opt);
    uint8_t head[STATE_HEADER_BYTES] = {0}, *buf = malloc(4 * (size_t)CHUNK);
    if (!buf) return fkd_error_set(err, FKD_E_NOMEM, "out of memory saving the training state");
    memcpy(head, STATE_MAGIC, 8);
    put_u32(head + 8, STATE_VERSION);
    put_u32(head + 12, (uint32_t)c->opt.cfg.kind);
    put_u64(head + 16, (uint64_t)c->step);
    put_u64(head + 24, c->seed);
    put_u64(head + 32, (uint64_t)c->opt.step);
    put_u64(head + 40, nm);
    put_u64(head + 48, 0); /* no weights */
    fkd_atomic_file af;
    if (fkd_atomic_open(&af, path, err) != 0) {
        free(buf);
        return -1;
    }
    uint32_t crc = fkd_crc32(0, head, sizeof head);
    int rc = fkd_atomic_write(&af, head, sizeof head, err);
    for (size_t i = 0; i < nm && rc == 0; i += CHUNK) {
        size_t n = nm - i < CHUNK ? nm - i : CHUNK;
        put_floats(buf, c->opt.m + i, n);
        crc = fkd_crc32(crc, buf, 4 * n);
        rc = fkd_atomic_write(&af, buf, 4 * n, err);
    }
    free(buf);
    uint8_t tail[4];
    put_u32(tail, crc);
    if (rc == 0) rc = fkd_atomic_write(&af, tail, sizeof tail, err);
    if (rc != 0) {
        fkd_atomic_abort(&af);
        return -1;
    }
    return fkd_atomic_commit(&af, err);
}

void fkd_trainer_carry_free(fkd_trainer_carry *c)
{
    if (c->ready) fkd_optimizer_free(&c->opt);
    memset(c, 0, sizeof *c);
}
