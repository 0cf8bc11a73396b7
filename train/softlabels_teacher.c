/* softlabels_teacher.c — the teacher pass: runs a model over the transfer
 * stream in windows, turns each position's logits into the top-k of
 * softmax(logits / T), quantizes them as the file will hold them, and cuts
 * the positions into shards. It also measures what the compact labels cost:
 * the KL divergence from the teacher's full distribution to the one a
 * student can recover from a label (the k ids with their probabilities, the
 * rest mass spread evenly over the other ids), before and after
 * quantization.
 *
 * The pass is also public in pieces (fkd_softlabel_pass_*), so that a
 * teacher which is not an fkd_params (the quantized one of compress/
 * qsoftlabels.c) makes its labels with the same code. */
#include "fkd_train.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define KL_MIN_REST 1e-9 /* a rest mass quantized to 0 still counts as tiny, not infinite */

fkd_teacher_config fkd_teacher_defaults(void)
{
    /* T = 1: at T = 2 the default teacher's top 8 hold 39% of the mass and
     * truncation costs more (docs/data.md, "Figures"). */
    return (fkd_teacher_config){.k = 8, .temperature = 1.0f, .quant = FKD_SOFT_Q8_SQRT,
                                .n_shards = 4, .batch = 8, .window = 0};
}

/* probs (V) = softmax(logits / T), in double for the KL figures. */
static void softmax_t(double *probs, const float *logits, int V, float T)
{
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < V; i++)
        if (logits[i] / T > mx) mx = logits[i] / T;
    for (int i = 0; i < V; i++) sum += probs[i] = exp(logits[i] / T - mx);
    for (int i = 0; i < V; i++) probs[i] /= sum;
}

/* The k largest of probs, descending (ties by lower id). */
static void top_k(int32_t *ids, const double *probs, int V, int k)
{
    for (int j = 0; j < k; j++) ids[j] = -1;
    for (int i = 0; i < V; i++) {
        int at = k;
        while (at > 0 && (ids[at - 1] < 0 || probs[i] > probs[ids[at - 1]])) at--;
        if (at >= k) continue;
        memmove(ids + at + 1, ids + at, (size_t)(k - at - 1) * sizeof *ids);
        ids[at] = i;
    }
}

/* KL(p || q) where q keeps the nonzero q_kept of ids and spreads the rest. */
static double kl_to_label(const double *p, int V, const int32_t *ids, const float *q_kept, int k,
                          uint8_t *in_label)
{
    double kept = 0, kl = 0;
    int n_kept = 0;
    for (int j = 0; j < k; j++) {
        if (q_kept[j] <= 0) continue;
        in_label[ids[j]] = 1;
        kept += q_kept[j];
        n_kept++;
        if (p[ids[j]] > 0) kl += p[ids[j]] * log(p[ids[j]] / q_kept[j]);
    }
    double rest = 1.0 - kept;
    if (rest < KL_MIN_REST) rest = KL_MIN_REST;
    double q_other = rest / (double)(V - n_kept > 0 ? V - n_kept : 1);
    for (int i = 0; i < V; i++) {
        if (in_label[i]) continue;
        if (p[i] > 0) kl += p[i] * log(p[i] / q_other);
    }
    for (int j = 0; j < k; j++) in_label[ids[j]] = 0;
    return kl > 0 ? kl : 0; /* >= 0 exactly; rounding can leave -1e-21 */
}

/* The labels of the whole stream, made window by window. Each position's
 * figures are kept apart and summed in order at the end, so the stats do
 * not depend on how many threads labelled. */
struct fkd_softlabel_pass {
    fkd_teacher_config cfg;
    const fkd_token_stream *s;
    int V, W, n_scratch;
    double *p;          /* (n_scratch, V) softmax of one position per thread */
    uint8_t *in_label;  /* (n_scratch, V) */
    int32_t *ids;       /* (n,k) of the whole stream */
    float *probs;       /* (n,k) */
    double *figs;       /* (n, FIGS): kl_trunc, kl_total, top1, kept */
    double t0;
};
enum { FIG_KL_TRUNC, FIG_KL_TOTAL, FIG_TOP1, FIG_KEPT, FIGS };

static void label_position(fkd_softlabel_pass *ps, int64_t i, const float *logits, double *p,
                           uint8_t *in_label)
{
    int k = ps->cfg.k, V = ps->V;
    int32_t *ids = ps->ids + i * k;
    float *pr = ps->probs + i * k;
    double *fig = ps->figs + i * FIGS;
    softmax_t(p, logits, V, ps->cfg.temperature);
    top_k(ids, p, V, k);
    double mass = 0;
    for (int j = 0; j < k; j++) mass += pr[j] = (float)p[ids[j]];
    fig[FIG_KL_TRUNC] = kl_to_label(p, V, ids, pr, k, in_label);
    fkd_softlabels_quantize(pr, k, ps->cfg.quant);
    fig[FIG_KL_TOTAL] = kl_to_label(p, V, ids, pr, k, in_label);
    fig[FIG_TOP1] = p[ids[0]];
    fig[FIG_KEPT] = mass;
}

void fkd_softlabel_pass_label(fkd_softlabel_pass *ps, int64_t first, const float *logits, int rows)
{
    int64_t end = first + rows < ps->s->n ? first + rows : ps->s->n;
    int n = first < end ? (int)(end - first) : 0;
    size_t V = (size_t)ps->V;
    /* a softmax, a top-k and two KL sums over the vocabulary per position:
     * as much work as a small teacher's forward, so it is shared out too */
#pragma omp parallel for schedule(dynamic, 4) num_threads(ps->n_scratch) if (n > 1)
    for (int r = 0; r < n; r++) {
        int t = omp_get_thread_num();
        label_position(ps, first + r, logits + (size_t)r * V, ps->p + (size_t)t * V,
                       ps->in_label + (size_t)t * V);
    }
}

int fkd_softlabel_pass_window(const fkd_softlabel_pass *ps)
{
    return ps->W;
}

static void pass_free(fkd_softlabel_pass **ps)
{
    if (!*ps) return;
    free((*ps)->p);
    free((*ps)->in_label);
    free((*ps)->ids);
    free((*ps)->probs);
    free((*ps)->figs);
    free(*ps);
    *ps = NULL;
}

static int pass_new(fkd_softlabel_pass **out, const fkd_token_stream *transfer, int vocab,
                           int max_seq, const fkd_teacher_config *cfg, fkd_error *err)
{
    *out = NULL;
    int V = vocab;
    int W = cfg->window > 0 ? cfg->window : max_seq;
    if (cfg->k < 1 || cfg->k > FKD_SOFT_MAX_K || cfg->k > V || !(cfg->temperature > 0) ||
        cfg->n_shards < 1 || cfg->batch < 1 || W > max_seq ||
        (cfg->quant != FKD_SOFT_Q8_SQRT && cfg->quant != FKD_SOFT_Q16))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "teacher pass: k=%d, T=%g, shards=%d, "
                             "batch=%d, window=%d is not a valid setting", cfg->k,
                             (double)cfg->temperature, cfg->n_shards, cfg->batch, W);
    if (transfer->n < cfg->n_shards || transfer->n > FKD_SOFT_MAX_POSITIONS)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "transfer set of %lld tokens cannot make "
                             "%d shards", (long long)transfer->n, cfg->n_shards);
    for (int64_t i = 0; i < transfer->n; i++)
        if (transfer->tokens[i] < 0 || transfer->tokens[i] >= V)
            return fkd_error_set(err, FKD_E_MISMATCH, "transfer token %d is outside the "
                                 "teacher's vocabulary of %d", transfer->tokens[i], V);
    fkd_softlabel_pass *ps = calloc(1, sizeof *ps);
    if (!ps) return fkd_error_set(err, FKD_E_NOMEM, "out of memory for the teacher pass");
    size_t nk = (size_t)transfer->n * (size_t)cfg->k;
    ps->cfg = *cfg;
    ps->s = transfer;
    ps->V = V;
    ps->W = W;
    ps->n_scratch = omp_get_max_threads();
    ps->t0 = fkd_time_ms();
    ps->p = malloc((size_t)ps->n_scratch * (size_t)V * sizeof *ps->p);
    ps->in_label = calloc((size_t)ps->n_scratch * (size_t)V, 1);
    ps->ids = malloc(nk * sizeof *ps->ids);
    ps->probs = malloc(nk * sizeof *ps->probs);
    ps->figs = calloc((size_t)transfer->n * FIGS, sizeof *ps->figs);
    if (!ps->p || !ps->in_label || !ps->ids || !ps->probs || !ps->figs) {
        pass_free(&ps);
        return fkd_error_set(err, FKD_E_NOMEM, "out of memory for %lld soft labels",
                             (long long)transfer->n);
    }
    *out = ps;
    return 0;
}

static int cut_shards(fkd_softlabel_shard *shards, const fkd_softlabel_pass *ps, fkd_error *err)
{
    const fkd_token_stream *s = ps->s;
    const fkd_teacher_config *cfg = &ps->cfg;
    int k = cfg->k;
    for (int i = 0; i < cfg->n_shards; i++) {
        int64_t a = s->n * i / cfg->n_shards, b = s->n * (i + 1) / cfg->n_shards;
        fkd_softlabel_shard *sh = &shards[i];
        if (fkd_softlabels_alloc(sh, b - a, k, ps->V, err) != 0) return -1;
        sh->quant = cfg->quant;
        sh->temperature = cfg->temperature;
        sh->shard_index = (uint32_t)i;
        sh->shard_count = (uint32_t)cfg->n_shards;
        sh->first_position = (uint64_t)a;
        memcpy(sh->tokens, s->tokens + a, (size_t)(b - a) * sizeof *sh->tokens);
        memcpy(sh->ids, ps->ids + a * k, (size_t)((b - a) * k) * sizeof *sh->ids);
        memcpy(sh->probs, ps->probs + a * k, (size_t)((b - a) * k) * sizeof *sh->probs);
    }
    return 0;
}

static void fill_stats(fkd_softlabel_stats *st, const fkd_softlabel_pass *ps,
                       const fkd_softlabel_shard *shards)
{
    const fkd_teacher_config *cfg = &ps->cfg;
    int64_t n = ps->s->n;
    double sum[FIGS] = {0};
    for (int64_t i = 0; i < n; i++)
        for (int f = 0; f < FIGS; f++) sum[f] += ps->figs[i * FIGS + f];
    st->positions = n;
    st->kl_truncation = sum[FIG_KL_TRUNC] / (double)n;
    st->kl_total = sum[FIG_KL_TOTAL] / (double)n;
    st->top1_mass = sum[FIG_TOP1] / (double)n;
    st->kept_mass = sum[FIG_KEPT] / (double)n;
    for (int i = 0; i < cfg->n_shards; i++)
        st->encoded_bytes += fkd_softlabels_encoded_bytes(shards[i].n, cfg->k, ps->V, cfg->quant);
    st->dense_fp32_bytes = (uint64_t)n * (uint64_t)ps->V * 4;
    st->seconds = (fkd_time_ms() - ps->t0) / 1e3;
}

static int pass_finish(fkd_softlabel_shard *shards, fkd_softlabel_stats *st,
                       fkd_softlabel_pass **ps, fkd_error *err)
{
    memset(st, 0, sizeof *st);
    memset(shards, 0, (size_t)(*ps)->cfg.n_shards * sizeof *shards);
    int rc = cut_shards(shards, *ps, err);
    if (rc != 0)
        for (int i = 0; i < (*ps)->cfg.n_shards; i++) fkd_softlabels_free(&shards[i]);
    else
        fill_stats(st, *ps, shards);
    pass_free(ps);
    return rc;
}

/* The fp32 teacher: batches of B windows through fkd_model_forward. */
static int run_windows(fkd_softlabel_pass *ps, const fkd_params *teacher, int B, fkd_error *err)
{
    const fkd_token_stream *s = ps->s;
    int W = ps->W;
    fkd_model m;
    /* forward only: recompute mode keeps one layer of activations */
    if (fkd_model_init_borrowed(&m, teacher, B, W, 1, err) != 0) return -1;
    int32_t *in = malloc((size_t)B * W * sizeof *in);
    if (!in) {
        fkd_model_free(&m);
        return fkd_error_set(err, FKD_E_NOMEM, "out of memory for teacher windows");
    }
    int64_t windows = (s->n + W - 1) / W;
    for (int64_t w0 = 0; w0 < windows; w0 += B) {
        for (int b = 0; b < B; b++)
            for (int t = 0; t < W; t++) {
                int64_t i = (w0 + b) * W + t;
                in[b * W + t] = i < s->n ? s->tokens[i] : 0;
            }
        float *logits;
        fkd_model_forward(&m, in, &logits);
        /* the B windows are consecutive positions; the pass ignores the padding */
        fkd_softlabel_pass_label(ps, w0 * W, logits, B * W);
    }
    free(in);
    fkd_model_free(&m);
    return 0;
}

int fkd_softlabel_pass_run(fkd_softlabel_shard *shards, fkd_softlabel_stats *st,
                           const fkd_token_stream *transfer, int vocab, int max_seq,
                           const fkd_teacher_config *cfg, fkd_softlabel_windows_fn windows,
                           void *ctx, fkd_error *err)
{
    memset(st, 0, sizeof *st);
    fkd_softlabel_pass *ps;
    if (pass_new(&ps, transfer, vocab, max_seq, cfg, err) != 0) return -1;
    if (windows(ps, ctx, err) != 0) {
        pass_free(&ps);
        return -1;
    }
    return pass_finish(shards, st, &ps, err);
}

typedef struct {
    const fkd_params *teacher;
    int batch;
} fp32_teacher;

static int fp32_windows(fkd_softlabel_pass *ps, void *ctx, fkd_error *err)
{
    const fp32_teacher *t = ctx;
    return run_windows(ps, t->teacher, t->batch, err);
}

int fkd_teacher_softlabels(fkd_softlabel_shard *shards, fkd_softlabel_stats *st,
                           const fkd_params *teacher, const fkd_token_stream *transfer,
                           const fkd_teacher_config *cfg, fkd_error *err)
{
    fp32_teacher t = {teacher, cfg->batch};
    return fkd_softlabel_pass_run(shards, st, transfer, teacher->cfg.vocab, teacher->cfg.max_seq,
                                  cfg, fp32_windows, &t, err);
}
