/* softlabels_teacher.c — the teacher pass: runs a model over the transfer
 * stream in windows, turns each position's logits into the top-k of
 * softmax(logits / T), quantizes them as the file will hold them, and cuts
 * the positions into shards. It also measures what the compact labels cost:
 * the KL divergence from the teacher's full distribution to the one a
 * student can recover from a label (the k ids with their probabilities, the
 * rest mass spread evenly over the other ids), before and after
 * quantization. */
#include "fkd_train.h"

#include <math.h>
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

typedef struct {
    double *p;          /* (V) */
    uint8_t *in_label;  /* (V) */
    int32_t *ids;       /* (n,k) of the whole stream */
    float *probs;       /* (n,k) */
    double kl_trunc, kl_total, top1, kept;
} pass;

static void label_position(pass *ps, int64_t i, const float *logits, int V,
                           const fkd_teacher_config *cfg)
{
    int k = cfg->k;
    int32_t *ids = ps->ids + i * k;
    float *pr = ps->probs + i * k;
    softmax_t(ps->p, logits, V, cfg->temperature);
    top_k(ids, ps->p, V, k);
    double mass = 0;
    for (int j = 0; j < k; j++) mass += pr[j] = (float)ps->p[ids[j]];
    ps->kl_trunc += kl_to_label(ps->p, V, ids, pr, k, ps->in_label);
    fkd_softlabels_quantize(pr, k, cfg->quant);
    ps->kl_total += kl_to_label(ps->p, V, ids, pr, k, ps->in_label);
    ps->top1 += ps->p[ids[0]];
    ps->kept += mass;
}

static int run_windows(pass *ps, const fkd_params *teacher, const fkd_token_stream *s,
                       const fkd_teacher_config *cfg, int W, fkd_error *err)
{
    int B = cfg->batch, V = teacher->cfg.vocab;
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
        for (int b = 0; b < B; b++)
            for (int t = 0; t < W; t++) {
                int64_t i = (w0 + b) * W + t;
                if (i < s->n) label_position(ps, i, logits + ((size_t)b * W + t) * V, V, cfg);
            }
    }
    free(in);
    fkd_model_free(&m);
    return 0;
}

static int cut_shards(fkd_softlabel_shard *shards, const pass *ps, const fkd_token_stream *s,
                      const fkd_teacher_config *cfg, int V, fkd_error *err)
{
    int k = cfg->k;
    for (int i = 0; i < cfg->n_shards; i++) {
        int64_t a = s->n * i / cfg->n_shards, b = s->n * (i + 1) / cfg->n_shards;
        fkd_softlabel_shard *sh = &shards[i];
        if (fkd_softlabels_alloc(sh, b - a, k, V, err) != 0) return -1;
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

int fkd_teacher_softlabels(fkd_softlabel_shard *shards, fkd_softlabel_stats *st,
                           const fkd_params *teacher, const fkd_token_stream *transfer,
                           const fkd_teacher_config *cfg, fkd_error *err)
{
    memset(st, 0, sizeof *st);
    int V = teacher->cfg.vocab;
    int W = cfg->window > 0 ? cfg->window : teacher->cfg.max_seq;
    if (cfg->k < 1 || cfg->k > FKD_SOFT_MAX_K || cfg->k > V || !(cfg->temperature > 0) ||
        cfg->n_shards < 1 || cfg->batch < 1 || W > teacher->cfg.max_seq ||
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
    double t0 = fkd_time_ms();
    size_t nk = (size_t)transfer->n * (size_t)cfg->k;
    pass ps = {0};
    ps.p = malloc((size_t)V * sizeof *ps.p);
    ps.in_label = calloc((size_t)V, 1);
    ps.ids = malloc(nk * sizeof *ps.ids);
    ps.probs = malloc(nk * sizeof *ps.probs);
    int rc = 0;
    if (!ps.p || !ps.in_label || !ps.ids || !ps.probs)
        rc = fkd_error_set(err, FKD_E_NOMEM, "out of memory for %lld soft labels",
                           (long long)transfer->n);
    if (rc == 0) rc = run_windows(&ps, teacher, transfer, cfg, W, err);
    memset(shards, 0, (size_t)cfg->n_shards * sizeof *shards);
    if (rc == 0) rc = cut_shards(shards, &ps, transfer, cfg, V, err);
    if (rc != 0)
        for (int i = 0; i < cfg->n_shards; i++) fkd_softlabels_free(&shards[i]);
    if (rc == 0) {
        double n = (double)transfer->n;
        st->positions = transfer->n;
        st->kl_truncation = ps.kl_trunc / n;
        st->kl_total = ps.kl_total / n;
        st->top1_mass = ps.top1 / n;
        st->kept_mass = ps.kept / n;
        for (int i = 0; i < cfg->n_shards; i++)
            st->encoded_bytes += fkd_softlabels_encoded_bytes(shards[i].n, cfg->k, V, cfg->quant);
        st->dense_fp32_bytes = (uint64_t)transfer->n * (uint64_t)V * 4;
        st->seconds = (fkd_time_ms() - t0) / 1e3;
    }
    free(ps.p);
    free(ps.in_label);
    free(ps.ids);
    free(ps.probs);
    return rc;
}
