/* prune_struct.c — structured pruning of a llama teacher into a smaller dense
 * student, after NVIDIA's Minitron: importances from the teacher's own
 * activations on a little calibration text, then whole structures kept by
 * rank and every tensor that touches them sliced to match.
 *
 * The calibration pass runs the teacher once, layer by layer, with train's
 * kernels (it needs the activations inside each block, which the training
 * forward keeps private) and accumulates per structure:
 *   - query heads: mean L2 norm of the head's attention output;
 *   - FFN channels: mean |silu(W1 x) * W3 x|;
 *   - embedding channels: mean |RMSNorm output|, summed over every norm
 *     that reads the residual stream (what the matrices see of a channel);
 *   - blocks: 1 - cosine between a block's input and output, and, when asked,
 *     the mean KL between the teacher's next-token distribution and the one
 *     it gives with that block skipped. The residual stream before every
 *     block is kept, so skipping block l restarts from there and runs only
 *     the blocks after it: L(L-1)/2 block passes and L heads in all.
 *
 * The student keeps the teacher's head size: RoPE's frequencies are a
 * function of it, so heads are kept or dropped whole, and whole key-value
 * groups with them (a kv head serves a fixed group of query heads, which
 * stays together and in order). Nothing is rescaled: the pruned student is
 * a starting point for healing by distillation, as in Minitron.
 */
#include "fkd_compress.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- the calibration forward ------------------------------------------------ */
typedef struct {
    const fkd_params *p;
    int B, T, N, C, H, KV, hd, F, V;
    float *xn, *rstd, *q, *k, *v, *att, *ao, *tmp, *h1, *h3, *hh, *rope_cos, *rope_sin;
    float *logits, *base;   /* (N, V) each: a pass's and the full teacher's log-probabilities */
    float *states;          /* (L+1, N, C) residual stream before each block, and after the last */
    float *memory;
} calib;

static void calib_free(calib *c)
{
    free(c->memory);
    memset(c, 0, sizeof *c);
}

static int calib_init(calib *c, const fkd_params *p, int B, int T, int depth_kl, fkd_error *err)
{
    const fkd_model_config *m = &p->cfg;
    memset(c, 0, sizeof *c);
    c->p = p;
    c->B = B, c->T = T, c->N = B * T, c->C = m->dim, c->H = m->n_heads, c->KV = m->n_kv_heads;
    c->hd = m->dim / m->n_heads, c->F = m->ffn_hidden, c->V = m->vocab;
    size_t N = (size_t)c->N, C = (size_t)c->C, Hd = (size_t)c->H * c->hd,
           KVd = (size_t)c->KV * c->hd, F = (size_t)c->F, V = (size_t)c->V;
    size_t sizes[] = {N * C, N, N * Hd, N * KVd, N * KVd, (size_t)B * c->H * T * T, N * Hd,
                      N * C, N * F, N * F, N * F, (size_t)T * c->hd / 2, (size_t)T * c->hd / 2,
                      N * V, depth_kl ? N * V : 0, ((size_t)m->n_layers + 1) * N * C};
    float **ptrs[] = {&c->xn, &c->rstd, &c->q, &c->k, &c->v, &c->att, &c->ao, &c->tmp, &c->h1,
                      &c->h3, &c->hh, &c->rope_cos, &c->rope_sin, &c->logits, &c->base,
                      &c->states};
    size_t n = sizeof sizes / sizeof sizes[0], total = 0;
    for (size_t i = 0; i < n; i++) total += (sizes[i] + 15) / 16 * 16;
    c->memory = malloc(total * sizeof(float));
    if (!c->memory)
        return fkd_error_set(err, FKD_E_NOMEM, "out of memory for the calibration pass (%zu MB); "
                             "use fewer calibration tokens", total * sizeof(float) >> 20);
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        *ptrs[i] = sizes[i] ? c->memory + at : NULL;
        at += (sizes[i] + 15) / 16 * 16;
    }
    fkd_rope_tables(c->rope_cos, c->rope_sin, T, c->hd, m->rope_theta);
    return 0;
}

/* out[j] += mean over rows of |x[i, j]| (N rows of n). */
static void add_mean_abs(double *out, const float *x, int N, int n)
{
    for (int i = 0; i < N; i++)
        for (int j = 0; j < n; j++) out[j] += fabsf(x[(size_t)i * n + j]) / (double)N;
}

/* x (N, C) goes through block l in place; imp (may be NULL) accumulates. */
static void block_forward(calib *c, int l, float *x, fkd_prune_importance *imp)
{
    const fkd_param_ptrs *w = &c->p->p;
    const fkd_model_config *m = &c->p->cfg;
    int N = c->N, C = c->C, Hd = c->H * c->hd, KVd = c->KV * c->hd, F = c->F;
    fkd_rmsnorm_forward(c->xn, c->rstd, x, w->attn_norm + (size_t)l * C, N, C, m->norm_eps);
    if (imp) add_mean_abs(imp->chan_score, c->xn, N, C);
    fkd_matmul_forward(c->q, c->xn, w->wq + (size_t)l * Hd * C, N, C, Hd, 0.0f);
    fkd_matmul_forward(c->k, c->xn, w->wk + (size_t)l * KVd * C, N, C, KVd, 0.0f);
    fkd_matmul_forward(c->v, c->xn, w->wv + (size_t)l * KVd * C, N, C, KVd, 0.0f);
    fkd_rope_forward(c->q, c->rope_cos, c->rope_sin, c->B, c->T, c->H, c->hd, 0);
    fkd_rope_forward(c->k, c->rope_cos, c->rope_sin, c->B, c->T, c->KV, c->hd, 0);
    fkd_attention_forward(c->ao, c->att, c->q, c->k, c->v, c->B, c->T, c->H, c->KV, c->hd);
    if (imp)
        for (int i = 0; i < N; i++)
            for (int h = 0; h < c->H; h++) {
                const float *o = c->ao + (size_t)i * Hd + (size_t)h * c->hd;
                double s = 0.0;
                for (int d = 0; d < c->hd; d++) s += (double)o[d] * o[d];
                imp->head_score[(size_t)l * c->H + h] += sqrt(s) / N;
            }
    fkd_matmul_forward(c->tmp, c->ao, w->wo + (size_t)l * C * Hd, N, Hd, C, 0.0f);
    fkd_residual_forward(x, c->tmp, (size_t)N * C);
    fkd_rmsnorm_forward(c->xn, c->rstd, x, w->ffn_norm + (size_t)l * C, N, C, m->norm_eps);
    if (imp) add_mean_abs(imp->chan_score, c->xn, N, C);
    fkd_matmul_forward(c->h1, c->xn, w->w1 + (size_t)l * F * C, N, C, F, 0.0f);
    fkd_matmul_forward(c->h3, c->xn, w->w3 + (size_t)l * F * C, N, C, F, 0.0f);
    fkd_swiglu_forward(c->hh, c->h1, c->h3, N, F);
    if (imp) add_mean_abs(imp->ffn_score + (size_t)l * F, c->hh, N, F);
    fkd_matmul_forward(c->tmp, c->hh, w->w2 + (size_t)l * C * F, N, F, C, 0.0f);
    fkd_residual_forward(x, c->tmp, (size_t)N * C);
}

/* out (N, V) = log-softmax of the head over the final norm of x. */
static void head_logprobs(calib *c, float *out, const float *x, fkd_prune_importance *imp)
{
    const fkd_model_config *m = &c->p->cfg;
    fkd_rmsnorm_forward(c->xn, c->rstd, x, c->p->p.final_norm, c->N, c->C, m->norm_eps);
    if (imp) add_mean_abs(imp->chan_score, c->xn, c->N, c->C);
    fkd_matmul_forward(out, c->xn, c->p->p.head, c->N, c->C, c->V, 0.0f);
    for (int i = 0; i < c->N; i++) {
        float *z = out + (size_t)i * c->V, mx = z[0];
        for (int j = 1; j < c->V; j++) mx = z[j] > mx ? z[j] : mx;
        double s = 0.0;
        for (int j = 0; j < c->V; j++) s += exp((double)(z[j] - mx));
        float lse = mx + (float)log(s);
        for (int j = 0; j < c->V; j++) z[j] -= lse;
    }
}

/* Mean over positions of KL(p || q) for log-probabilities (N, V). */
static double mean_kl(const float *logp, const float *logq, int N, int V)
{
    double total = 0.0;
    for (size_t i = 0; i < (size_t)N * V; i++) {
        double p = exp((double)logp[i]);
        total += p * ((double)logp[i] - (double)logq[i]);
    }
    return total / N;
}

/* Mean next-token loss of log-probabilities over the sequences' targets. */
static double mean_loss(const calib *c, const float *logp, const int32_t *tokens)
{
    double s = 0.0;
    int64_t n = 0;
    for (int b = 0; b < c->B; b++)
        for (int t = 0; t + 1 < c->T; t++, n++) {
            int32_t next = tokens[(size_t)b * c->T + t + 1];
            s -= logp[((size_t)b * c->T + t) * c->V + next];
        }
    return n ? s / (double)n : 0.0;
}

static double mean_cosine_gap(const float *a, const float *b, int N, int C)
{
    double s = 0.0;
    for (int i = 0; i < N; i++) {
        const float *x = a + (size_t)i * C, *y = b + (size_t)i * C;
        double xy = 0.0, xx = 0.0, yy = 0.0;
        for (int j = 0; j < C; j++) xy += (double)x[j] * y[j], xx += (double)x[j] * x[j],
                                    yy += (double)y[j] * y[j];
        s += xx > 0 && yy > 0 ? 1.0 - xy / sqrt(xx * yy) : 0.0;
    }
    return s / N;
}

void fkd_prune_importance_free(fkd_prune_importance *imp)
{
    if (!imp) return;
    free(imp->memory);
    memset(imp, 0, sizeof *imp);
}

static int importance_alloc(fkd_prune_importance *imp, const fkd_model_config *m, int depth_kl,
                            fkd_error *err)
{
    memset(imp, 0, sizeof *imp);
    imp->cfg = *m;
    size_t L = (size_t)m->n_layers;
    size_t n = 2 * L + L * m->n_heads + L * m->ffn_hidden + (size_t)m->dim;
    imp->memory = calloc(n, sizeof(double));
    if (!imp->memory) return fkd_error_set(err, FKD_E_NOMEM, "out of memory for importances");
    double *at = imp->memory;
    imp->block_cos = at, at += L;
    imp->block_kl = depth_kl ? at : NULL, at += L;
    imp->head_score = at, at += L * m->n_heads;
    imp->ffn_score = at, at += L * m->ffn_hidden;
    imp->chan_score = at;
    return 0;
}

int fkd_prune_importance_compute(fkd_prune_importance *imp, const fkd_params *teacher,
                                 const int32_t *tokens, int n_seq, int seq_len, int depth_kl,
                                 int progress, fkd_error *err)
{
    const fkd_model_config *m = &teacher->cfg;
    memset(imp, 0, sizeof *imp);
    if (n_seq < 1 || seq_len < 2 || seq_len > m->max_seq)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "calibration needs at least one sequence of "
                             "2 to %d tokens, not %d of %d", m->max_seq, n_seq, seq_len);
    for (size_t i = 0; i < (size_t)n_seq * seq_len; i++)
        if (tokens[i] < 0 || tokens[i] >= m->vocab)
            return fkd_error_set(err, FKD_E_INVALID_ARG, "calibration token %d at %zu is outside "
                                 "the %d-token vocabulary", tokens[i], i, m->vocab);
    calib c;
    if (calib_init(&c, teacher, n_seq, seq_len, depth_kl, err) != 0) return -1;
    if (importance_alloc(imp, m, depth_kl, err) != 0) {
        calib_free(&c);
        return -1;
    }
    int L = m->n_layers;
    size_t NC = (size_t)c.N * c.C;
    fkd_progress pr;
    fkd_progress_begin(&pr, "prune: calibration", depth_kl ? L + 1 : 1);
    if (!progress) pr.enabled = 0;
    fkd_embedding_forward(c.states, tokens, teacher->p.tok_emb, c.N, c.C);
    for (int l = 0; l < L; l++) {
        memcpy(c.states + (l + 1) * NC, c.states + l * NC, NC * sizeof(float));
        block_forward(&c, l, c.states + (l + 1) * NC, imp);
        imp->block_cos[l] = mean_cosine_gap(c.states + l * NC, c.states + (l + 1) * NC, c.N, c.C);
    }
    float *full = depth_kl ? c.base : c.logits;
    head_logprobs(&c, full, c.states + (size_t)L * NC, imp);
    imp->base_loss = mean_loss(&c, full, tokens);
    imp->tokens = (int64_t)c.N;
    fkd_progress_update(&pr, 1, NULL);
    /* Without block l: from the stream before it, through the blocks after it.
     * The stream before block l+1 is overwritten last, once nothing needs it. */
    for (int l = 0; depth_kl && l < L; l++) {
        float *x = c.states + (size_t)L * NC; /* the final state is spare now */
        memcpy(x, c.states + l * NC, NC * sizeof(float));
        for (int j = l + 1; j < L; j++) block_forward(&c, j, x, NULL);
        head_logprobs(&c, c.logits, x, NULL);
        imp->block_kl[l] = mean_kl(c.base, c.logits, c.N, c.V);
        fkd_progress_update(&pr, l + 2, NULL);
    }
    fkd_progress_end(&pr);
    calib_free(&c);
    return 0;
}

/* ---- choosing what to keep ---------------------------------------------------- */
typedef struct {
    double score;
    int32_t index;
} ranked;

static int cmp_ranked(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;  /* larger first */
    return (x->index > y->index) - (x->index < y->index);           /* then lower index */
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* out (k) = the indices of the k largest scores (ties: lower index), ascending. */
static int top_k(int32_t *out, const double *scores, int n, int k)
{
    ranked *r = malloc((size_t)n * sizeof *r);
    if (!r) return -1;
    for (int i = 0; i < n; i++) r[i] = (ranked){scores[i], i};
    qsort(r, (size_t)n, sizeof *r, cmp_ranked);
    for (int i = 0; i < k; i++) out[i] = r[i].index;
    free(r);
    qsort(out, (size_t)k, sizeof *out, cmp_i32);
    return 0;
}

void fkd_prune_plan_free(fkd_prune_plan *plan)
{
    if (!plan) return;
    free(plan->memory);
    memset(plan, 0, sizeof *plan);
}

static int check_target(const fkd_model_config *s, const fkd_model_config *t, fkd_error *err)
{
    int hd = t->dim / t->n_heads;
    if (s->n_layers < 1 || s->n_layers > t->n_layers || s->n_kv_heads < 1 ||
        s->n_kv_heads > t->n_kv_heads || s->n_heads < s->n_kv_heads ||
        s->n_heads % s->n_kv_heads != 0 ||
        s->n_heads / s->n_kv_heads > t->n_heads / t->n_kv_heads || s->ffn_hidden < 1 ||
        s->ffn_hidden > t->ffn_hidden)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "a student of %d layers, %d heads (%d kv), "
                             "ffn %d cannot be cut from a teacher of %d layers, %d heads (%d kv), "
                             "ffn %d", s->n_layers, s->n_heads, s->n_kv_heads, s->ffn_hidden,
                             t->n_layers, t->n_heads, t->n_kv_heads, t->ffn_hidden);
    if (s->dim != s->n_heads * hd)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "the student's dim must be its heads x the "
                             "teacher's head size %d = %d, not %d", hd, s->n_heads * hd, s->dim);
    return 0;
}

/* Per kept block: its kv groups by summed head score, then the best query
 * heads of each group. */
static int pick_heads(fkd_prune_plan *plan, const fkd_prune_importance *imp)
{
    const fkd_model_config *t = &imp->cfg, *s = &plan->cfg;
    int G = t->n_heads / t->n_kv_heads, g = s->n_heads / s->n_kv_heads;
    double group[FKD_PRUNE_MAX_KV];
    for (int i = 0; i < s->n_layers; i++) {
        const double *hs = imp->head_score + (size_t)plan->layers[i] * t->n_heads;
        int32_t *kv = plan->kv_heads + (size_t)i * s->n_kv_heads;
        for (int k = 0; k < t->n_kv_heads; k++) {
            group[k] = 0.0;
            for (int j = 0; j < G; j++) group[k] += hs[k * G + j];
        }
        if (top_k(kv, group, t->n_kv_heads, s->n_kv_heads) != 0) return -1;
        for (int k = 0; k < s->n_kv_heads; k++) {
            int32_t *h = plan->heads + (size_t)i * s->n_heads + (size_t)k * g;
            if (top_k(h, hs + (size_t)kv[k] * G, G, g) != 0) return -1;
            for (int j = 0; j < g; j++) h[j] += kv[k] * G;
        }
    }
    return 0;
}

int fkd_prune_plan_make(fkd_prune_plan *plan, const fkd_prune_importance *imp,
                        const fkd_model_config *target, const fkd_vocab_map *map,
                        fkd_error *err)
{
    const fkd_model_config *t = &imp->cfg;
    memset(plan, 0, sizeof *plan);
    if (check_target(target, t, err) != 0) return -1;
    if (t->n_kv_heads > FKD_PRUNE_MAX_KV)
        return fkd_error_set(err, FKD_E_UNSUPPORTED, "the teacher has %d kv heads; pruning takes "
                             "up to %d", t->n_kv_heads, FKD_PRUNE_MAX_KV);
    if (map && map->old_vocab != t->vocab)
        return fkd_error_set(err, FKD_E_MISMATCH, "the id map is over %d tokens; the teacher has "
                             "%d", map->old_vocab, t->vocab);
    plan->cfg = *target;
    plan->cfg.vocab = map ? map->new_vocab : t->vocab;
    plan->cfg.max_seq = t->max_seq;
    plan->cfg.rope_theta = t->rope_theta;
    plan->cfg.norm_eps = t->norm_eps;
    plan->cfg.tie_embeddings = t->tie_embeddings;
    const fkd_model_config *s = &plan->cfg;
    size_t L = (size_t)s->n_layers;
    size_t n = L * (1 + (size_t)s->n_heads + (size_t)s->n_kv_heads + (size_t)s->ffn_hidden) +
               (size_t)s->dim;
    plan->memory = malloc(n * sizeof *plan->memory);
    if (!plan->memory) return fkd_error_set(err, FKD_E_NOMEM, "out of memory for a pruning plan");
    int32_t *at = plan->memory;
    plan->layers = at, at += L;
    plan->heads = at, at += L * s->n_heads;
    plan->kv_heads = at, at += L * s->n_kv_heads;
    plan->ffn = at, at += L * s->ffn_hidden;
    plan->channels = at;
    const double *depth = imp->block_kl ? imp->block_kl : imp->block_cos;
    int rc = top_k(plan->layers, depth, t->n_layers, s->n_layers);
    if (rc == 0) rc = pick_heads(plan, imp);
    for (size_t i = 0; rc == 0 && i < L; i++)
        rc = top_k(plan->ffn + i * s->ffn_hidden,
                   imp->ffn_score + (size_t)plan->layers[i] * t->ffn_hidden, t->ffn_hidden,
                   s->ffn_hidden);
    if (rc == 0) rc = top_k(plan->channels, imp->chan_score, t->dim, s->dim);
    if (rc != 0) {
        fkd_prune_plan_free(plan);
        return fkd_error_set(err, FKD_E_NOMEM, "out of memory ranking structures");
    }
    return 0;
}

/* ---- slicing ------------------------------------------------------------------- */

/* dst (nr, nc) = src[rows[i], cols[j]] of a matrix with src_cols columns;
 * rows or cols NULL = the identity. */
static void gather(float *dst, const float *src, const int32_t *rows, int nr,
                   const int32_t *cols, int nc, int src_cols)
{
    for (int i = 0; i < nr; i++) {
        const float *r = src + (size_t)(rows ? rows[i] : i) * src_cols;
        float *d = dst + (size_t)i * nc;
        for (int j = 0; j < nc; j++) d[j] = r[cols ? cols[j] : j];
    }
}

/* The rows of whole heads: heads (n) of hd rows each -> (n * hd) row indices. */
static void head_rows(int32_t *rows, const int32_t *heads, int n, int hd)
{
    for (int i = 0; i < n; i++)
        for (int d = 0; d < hd; d++) rows[i * hd + d] = heads[i] * hd + d;
}

static void build_layer(fkd_params *s, const fkd_params *t, const fkd_prune_plan *plan, int i,
                        int32_t *qrows, int32_t *kvrows)
{
    const fkd_model_config *sc = &s->cfg, *tc = &t->cfg;
    int l = plan->layers[i], hd = tc->dim / tc->n_heads;
    int C = sc->dim, Hd = sc->n_heads * hd, KVd = sc->n_kv_heads * hd, F = sc->ffn_hidden;
    int tC = tc->dim, tHd = tc->n_heads * hd, tKVd = tc->n_kv_heads * hd, tF = tc->ffn_hidden;
    const int32_t *ch = plan->channels, *ffn = plan->ffn + (size_t)i * F;
    head_rows(qrows, plan->heads + (size_t)i * sc->n_heads, sc->n_heads, hd);
    head_rows(kvrows, plan->kv_heads + (size_t)i * sc->n_kv_heads, sc->n_kv_heads, hd);
    gather(s->p.attn_norm + (size_t)i * C, t->p.attn_norm + (size_t)l * tC, NULL, 1, ch, C, tC);
    gather(s->p.ffn_norm + (size_t)i * C, t->p.ffn_norm + (size_t)l * tC, NULL, 1, ch, C, tC);
    gather(s->p.wq + (size_t)i * Hd * C, t->p.wq + (size_t)l * tHd * tC, qrows, Hd, ch, C, tC);
    gather(s->p.wk + (size_t)i * KVd * C, t->p.wk + (size_t)l * tKVd * tC, kvrows, KVd, ch, C, tC);
    gather(s->p.wv + (size_t)i * KVd * C, t->p.wv + (size_t)l * tKVd * tC, kvrows, KVd, ch, C, tC);
    gather(s->p.wo + (size_t)i * C * Hd, t->p.wo + (size_t)l * tC * tHd, ch, C, qrows, Hd, tHd);
    gather(s->p.w1 + (size_t)i * F * C, t->p.w1 + (size_t)l * tF * tC, ffn, F, ch, C, tC);
    gather(s->p.w3 + (size_t)i * F * C, t->p.w3 + (size_t)l * tF * tC, ffn, F, ch, C, tC);
    gather(s->p.w2 + (size_t)i * C * F, t->p.w2 + (size_t)l * tC * tF, ch, C, ffn, F, tF);
}

int fkd_prune_build(fkd_params *student, const fkd_params *teacher, const fkd_prune_plan *plan,
                    const fkd_vocab_map *map, fkd_error *err)
{
    const fkd_model_config *sc = &plan->cfg, *tc = &teacher->cfg;
    memset(student, 0, sizeof *student);
    if (check_target(sc, tc, err) != 0) return -1;
    int V = map ? map->new_vocab : tc->vocab;
    if (sc->vocab != V || (map && map->old_vocab != tc->vocab))
        return fkd_error_set(err, FKD_E_MISMATCH, "the plan's vocabulary (%d) and the id map do "
                             "not fit this teacher (%d tokens)", sc->vocab, tc->vocab);
    int hd = tc->dim / tc->n_heads;
    int32_t *rows = malloc(((size_t)sc->n_heads + (size_t)sc->n_kv_heads) * hd * sizeof *rows);
    if (!rows) return fkd_error_set(err, FKD_E_NOMEM, "out of memory slicing the teacher");
    if (fkd_params_init(student, sc, err) != 0) {
        free(rows);
        return -1;
    }
    const int32_t *vrows = map ? map->new_to_old : NULL;
    gather(student->p.tok_emb, teacher->p.tok_emb, vrows, V, plan->channels, sc->dim, tc->dim);
    if (!sc->tie_embeddings)
        gather(student->p.head, teacher->p.head, vrows, V, plan->channels, sc->dim, tc->dim);
    gather(student->p.final_norm, teacher->p.final_norm, NULL, 1, plan->channels, sc->dim,
           tc->dim);
    for (int i = 0; i < sc->n_layers; i++)
        build_layer(student, teacher, plan, i, rows, rows + (size_t)sc->n_heads * hd);
    free(rows);
    return 0;
}

/* ---- choosing a shape for a parameter budget ------------------------------------ */

static size_t shape_params(const fkd_model_config *t, int vocab, int L, int H, int KV, int F)
{
    fkd_model_config c = *t;
    c.vocab = vocab, c.n_layers = L, c.n_heads = H, c.n_kv_heads = KV, c.ffn_hidden = F;
    c.dim = H * (t->dim / t->n_heads);
    return fkd_config_param_count(&c);
}

int fkd_prune_default_min_layers(const fkd_model_config *t)
{
    return (t->n_layers * FKD_PRUNE_KEEP_BLOCKS_NUM + FKD_PRUNE_KEEP_BLOCKS_DEN - 1) /
           FKD_PRUNE_KEEP_BLOCKS_DEN;
}

int fkd_prune_fit(fkd_model_config *out, const fkd_model_config *t, int vocab,
                  size_t target_params, int min_layers, fkd_error *err)
{
    int G = t->n_heads / t->n_kv_heads;
    if (min_layers < 1) min_layers = fkd_prune_default_min_layers(t);
    if (min_layers > t->n_layers) min_layers = t->n_layers;
    *out = *t;
    out->vocab = vocab;
    for (int L = t->n_layers; L >= min_layers; L--)
        if (shape_params(t, vocab, L, t->n_heads, t->n_kv_heads, t->ffn_hidden) <= target_params) {
            out->n_layers = L;
            return 0;
        }
    /* min_layers blocks: per attention shape the widest FFN (in whole quant
     * blocks) that fits. Whole kv groups (all of a group's query heads) win
     * over split ones: they healed far better (docs/pruning.md, "Which
     * student heals"); then the largest model, then the wider attention. */
    size_t best = 0;
    int found = 0, best_whole = 0;
    for (int kv = t->n_kv_heads; kv >= 1; kv--)
        for (int g = G; g >= 1; g--)
            for (int F = t->ffn_hidden / FKD_QK * FKD_QK; F >= FKD_QK; F -= FKD_QK) {
                size_t n = shape_params(t, vocab, min_layers, kv * g, kv, F);
                if (n > target_params) continue;
                int whole = g == G;
                if (whole > best_whole || (whole == best_whole && n > best)) {
                    best_whole = whole;
                    best = n, found = 1;
                    out->n_layers = min_layers, out->n_heads = kv * g, out->n_kv_heads = kv;
                    out->ffn_hidden = F, out->dim = kv * g * (t->dim / t->n_heads);
                }
                break;
            }
    if (!found)
        return fkd_error_set(err, FKD_E_LIMIT, "no student of %d layers fits in %zu parameters; "
                             "lower --min-layers or raise the target", min_layers, target_params);
    return 0;
}
