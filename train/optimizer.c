/* optimizer.c — AdamW (decoupled weight decay) and SGD with momentum, with
 * global-norm gradient clipping, a warmup + cosine/linear learning-rate
 * schedule, the FedProx proximal term, and pruning masks that keep pruned
 * weights at exactly zero. Moments live in one arena, laid out as the
 * parameters; a frozen tensor's slice of it is never read or written, so
 * the pages of that slice are never backed by memory (the arena is calloc'ed). */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

fkd_optimizer_config fkd_optimizer_defaults(void)
{
    return (fkd_optimizer_config){.kind = FKD_OPT_ADAMW, .lr = 1e-3f, .beta1 = 0.9f,
                                  .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f,
                                  .momentum = 0.9f, .grad_clip = 1.0f,
                                  .schedule = FKD_LR_COSINE, .warmup_steps = 0,
                                  .total_steps = 0, .min_lr_ratio = 0.1f, .prox_mu = 0.0f};
}

int fkd_optimizer_init(fkd_optimizer *opt, const fkd_optimizer_config *cfg,
                       const fkd_params *params, fkd_error *err)
{
    memset(opt, 0, sizeof *opt);
    if (!(cfg->lr >= 0) || cfg->kind < FKD_OPT_ADAMW || cfg->kind > FKD_OPT_SGD)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "optimizer: bad kind %d or lr %g", cfg->kind,
                             cfg->lr);
    opt->cfg = *cfg;
    opt->n = params->n_params;
    opt->tensors = params->tensors;
    size_t moments = cfg->kind == FKD_OPT_ADAMW ? 2 * opt->n : opt->n;
    opt->m = fkd_alloc_floats(moments);
    if (!opt->m)
        return fkd_error_set(err, FKD_E_NOMEM, "cannot allocate %zu MB of optimizer moments",
                             moments * sizeof(float) >> 20);
    opt->v = cfg->kind == FKD_OPT_ADAMW ? opt->m + opt->n : NULL;
    return 0;
}

void fkd_optimizer_free(fkd_optimizer *opt)
{
    free(opt->m);
    memset(opt, 0, sizeof *opt);
}

float fkd_optimizer_lr(const fkd_optimizer *opt)
{
    const fkd_optimizer_config *c = &opt->cfg;
    double step = (double)opt->step;
    if (c->warmup_steps > 0 && step < c->warmup_steps) return c->lr * (float)((step + 1) / c->warmup_steps);
    if (c->schedule == FKD_LR_CONSTANT || c->total_steps <= c->warmup_steps) return c->lr;
    double progress = (step - c->warmup_steps) / (double)(c->total_steps - c->warmup_steps);
    if (progress > 1) progress = 1;
    double floor = c->min_lr_ratio, shape;
    if (c->schedule == FKD_LR_COSINE)
        shape = 0.5 * (1 + cos(M_PI * progress));
    else
        shape = 1 - progress;
    return c->lr * (float)(floor + (1 - floor) * shape);
}

static double grad_norm(const float *g, size_t n)
{
    /* Chunked partial sums in a fixed order: the same norm for any thread count. */
    enum { CHUNK = 1 << 16 };
    size_t n_chunks = (n + CHUNK - 1) / CHUNK;
    double total = 0.0;
    for (size_t c0 = 0; c0 < n_chunks; c0 += 64) {
        double part[64] = {0};
        size_t c1 = c0 + 64 < n_chunks ? c0 + 64 : n_chunks;
#pragma omp parallel for schedule(static)
        for (size_t c = c0; c < c1; c++) {
            size_t i1 = (c + 1) * CHUNK < n ? (c + 1) * CHUNK : n;
            double s = 0.0;
            for (size_t i = c * CHUNK; i < i1; i++) s += (double)g[i] * g[i];
            part[c - c0] = s;
        }
        for (size_t c = c0; c < c1; c++) total += part[c - c0];
    }
    return sqrt(total);
}

typedef struct {
    float clip, lr, b1, b2, bc1, bc2, eps, wd, mu, momentum;
} step_consts;

/* One AdamW update over a span; prox_ref may equal w (then the FedProx term is 0). */
FKD_VECTOR_CLONES
static void adamw_span(float *w, float *m, float *v, const float *g, const float *prox_ref,
                       size_t n, step_consts k)
{
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] * k.clip + k.mu * (w[i] - prox_ref[i]);
        float mi = m[i] = k.b1 * m[i] + (1 - k.b1) * gi;
        float vi = v[i] = k.b2 * v[i] + (1 - k.b2) * gi * gi;
        w[i] -= k.lr * ((mi / k.bc1) / (sqrtf(vi / k.bc2) + k.eps) + k.wd * w[i]);
    }
}

FKD_VECTOR_CLONES
static void sgd_span(float *w, float *m, const float *g, const float *prox_ref, size_t n,
                     step_consts k)
{
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] * k.clip + k.mu * (w[i] - prox_ref[i]);
        float mi = m[i] = k.momentum * m[i] + gi;
        w[i] -= k.lr * (mi + k.wd * w[i]);
    }
}

static int is_frozen(const fkd_optimizer *opt, int t)
{
    return opt->frozen && opt->frozen[t];
}

/* The norm over the tensors that train; the whole arena in one pass when
 * nothing is frozen (the same sums as before frozen tensors existed). */
static double trainable_grad_norm(const fkd_optimizer *opt, const float *grads)
{
    if (!opt->frozen) return grad_norm(grads, opt->n);
    double sq = 0.0;
    for (int t = 0; t < FKD_T_COUNT; t++) {
        if (is_frozen(opt, t)) continue;
        double nt = grad_norm(grads + opt->tensors[t].offset, opt->tensors[t].count);
        sq += nt * nt;
    }
    return sqrt(sq);
}

float fkd_optimizer_step(fkd_optimizer *opt, float *params, float *grads)
{
    const fkd_optimizer_config *c = &opt->cfg;
    float norm = (float)trainable_grad_norm(opt, grads);
    step_consts k = {.clip = (c->grad_clip > 0 && norm > c->grad_clip) ? c->grad_clip / norm : 1.0f,
                     .lr = fkd_optimizer_lr(opt), .b1 = c->beta1, .b2 = c->beta2,
                     .eps = c->eps, .momentum = c->momentum,
                     .mu = opt->prox_ref ? c->prox_mu : 0.0f};
    opt->step++;
    k.bc1 = 1.0f - powf(c->beta1, (float)opt->step);
    k.bc2 = 1.0f - powf(c->beta2, (float)opt->step);
    enum { SPAN = 4096 };
    for (int t = 0; t < FKD_T_COUNT; t++) {
        const fkd_tensor_info *ti = &opt->tensors[t];
        if (is_frozen(opt, t)) continue; /* not updated, not even decayed */
        k.wd = ti->is_matrix ? c->weight_decay : 0.0f; /* no decay on norm gains */
        size_t i0 = ti->offset, i1 = ti->offset + ti->count;
#pragma omp parallel for schedule(static)
        for (size_t s0 = i0; s0 < i1; s0 += SPAN) {
            size_t n = s0 + SPAN < i1 ? SPAN : i1 - s0;
            const float *ref = opt->prox_ref ? opt->prox_ref + s0 : params + s0;
            if (c->kind == FKD_OPT_ADAMW)
                adamw_span(params + s0, opt->m + s0, opt->v + s0, grads + s0, ref, n, k);
            else
                sgd_span(params + s0, opt->m + s0, grads + s0, ref, n, k);
            if (opt->mask)
                for (size_t i = s0; i < s0 + n; i++)
                    if (!opt->mask[i]) params[i] = 0.0f;
        }
    }
    return norm;
}
