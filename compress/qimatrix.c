/* qimatrix.c — the importance matrix of int4 quantization: per block matrix
 * and layer, the mean square of each input channel's activation on some
 * calibration text.
 *
 * Why: a matrix W's int4 error E reaches its output as E x. Over inputs x
 * with independent channels, the expected squared output error of row i is
 * sum_j E_ij^2 E[x_j^2], so weighting the block's squared error by E[x_j^2]
 * (fkd_q4_*_quantize_row_mse) minimises what the next layer sees, not the
 * error of the weights themselves. RMSNorm outputs have a few channels far
 * louder than the rest, which is where plain least squares spends its bits
 * wrongly.
 *
 * The pass runs the model one sequence at a time with train's kernels, layer
 * by layer (the activations inside a block are private to the training
 * forward), as compress/prune_struct.c's calibration does. It needs no
 * logits: the head is Q8_0 in every int4 scheme.
 */
#include "fkd_compress.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int T, C, H, KV, hd, F;
    float *x, *xn, *rstd, *q, *k, *v, *att, *ao, *tmp, *h1, *h3, *hh, *rope_cos, *rope_sin;
    float *memory;
} pass;

static int pass_init(pass *p, const fkd_model_config *m, int T, fkd_error *err)
{
    memset(p, 0, sizeof *p);
    p->T = T, p->C = m->dim, p->H = m->n_heads, p->KV = m->n_kv_heads;
    p->hd = m->dim / m->n_heads, p->F = m->ffn_hidden;
    size_t t = (size_t)T, C = (size_t)p->C, Hd = (size_t)p->H * p->hd, KVd = (size_t)p->KV * p->hd,
           F = (size_t)p->F;
    size_t sizes[] = {t * C, t * C, t, t * Hd, t * KVd, t * KVd, (size_t)p->H * t * t, t * Hd,
                      t * C, t * F, t * F, t * F, t * p->hd / 2, t * p->hd / 2};
    float **ptrs[] = {&p->x, &p->xn, &p->rstd, &p->q, &p->k, &p->v, &p->att, &p->ao,
                      &p->tmp, &p->h1, &p->h3, &p->hh, &p->rope_cos, &p->rope_sin};
    size_t n = sizeof sizes / sizeof sizes[0], total = 0;
    for (size_t i = 0; i < n; i++) total += (sizes[i] + 15) / 16 * 16;
    p->memory = malloc(total * sizeof(float));
    if (!p->memory)
        return fkd_error_set(err, FKD_E_NOMEM, "out of memory for the importance pass (%zu MB)",
                             total * sizeof(float) >> 20);
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        *ptrs[i] = p->memory + at;
        at += (sizes[i] + 15) / 16 * 16;
    }
    fkd_rope_tables(p->rope_cos, p->rope_sin, T, p->hd, m->rope_theta);
    return 0;
}

/* out[j] += sum over the T rows of x[i, j]^2 (x is (T, n)). */
static void add_squares(double *out, const float *x, int T, int n)
{
    for (int i = 0; i < T; i++)
        for (int j = 0; j < n; j++) out[j] += (double)x[(size_t)i * n + j] * x[(size_t)i * n + j];
}

/* p->x (T, C) through block l in place; sums[t] + l * row_len accumulate. */
static void block_forward(pass *p, const fkd_params *m, int l, double **sums)
{
    const fkd_param_ptrs *w = &m->p;
    int T = p->T, C = p->C, Hd = p->H * p->hd, KVd = p->KV * p->hd, F = p->F;
    fkd_rmsnorm_forward(p->xn, p->rstd, p->x, w->attn_norm + (size_t)l * C, T, C, m->cfg.norm_eps);
    add_squares(sums[FKD_T_WQ] + (size_t)l * C, p->xn, T, C);
    fkd_matmul_forward(p->q, p->xn, w->wq + (size_t)l * Hd * C, T, C, Hd, 0.0f);
    fkd_matmul_forward(p->k, p->xn, w->wk + (size_t)l * KVd * C, T, C, KVd, 0.0f);
    fkd_matmul_forward(p->v, p->xn, w->wv + (size_t)l * KVd * C, T, C, KVd, 0.0f);
    fkd_rope_forward(p->q, p->rope_cos, p->rope_sin, 1, T, p->H, p->hd, 0);
    fkd_rope_forward(p->k, p->rope_cos, p->rope_sin, 1, T, p->KV, p->hd, 0);
    fkd_attention_forward(p->ao, p->att, p->q, p->k, p->v, 1, T, p->H, p->KV, p->hd);
    add_squares(sums[FKD_T_WO] + (size_t)l * Hd, p->ao, T, Hd);
    fkd_matmul_forward(p->tmp, p->ao, w->wo + (size_t)l * C * Hd, T, Hd, C, 0.0f);
    fkd_residual_forward(p->x, p->tmp, (size_t)T * C);
    fkd_rmsnorm_forward(p->xn, p->rstd, p->x, w->ffn_norm + (size_t)l * C, T, C, m->cfg.norm_eps);
    add_squares(sums[FKD_T_W1] + (size_t)l * C, p->xn, T, C);
    fkd_matmul_forward(p->h1, p->xn, w->w1 + (size_t)l * F * C, T, C, F, 0.0f);
    fkd_matmul_forward(p->h3, p->xn, w->w3 + (size_t)l * F * C, T, C, F, 0.0f);
    fkd_swiglu_forward(p->hh, p->h1, p->h3, T, F);
    add_squares(sums[FKD_T_W2] + (size_t)l * F, p->hh, T, F);
    fkd_matmul_forward(p->tmp, p->hh, w->w2 + (size_t)l * C * F, T, F, C, 0.0f);
    fkd_residual_forward(p->x, p->tmp, (size_t)T * C);
}

void fkd_qimatrix_free(fkd_qimatrix *im)
{
    if (!im) return;
    free(im->memory);
    memset(im, 0, sizeof *im);
}

/* The input length of each block matrix (its row length). */
static size_t input_len(int t, const fkd_model_config *m)
{
    switch (t) {
    case FKD_T_WO: return (size_t)m->n_heads * (m->dim / m->n_heads);
    case FKD_T_W2: return (size_t)m->ffn_hidden;
    default: return (size_t)m->dim;
    }
}

int fkd_qimatrix_compute(fkd_qimatrix *im, const fkd_params *params, const fkd_token_stream *text,
                         int n_tokens, int seq_len, fkd_error *err)
{
    const fkd_model_config *m = &params->cfg;
    memset(im, 0, sizeof *im);
    int n_seq = seq_len > 0 ? n_tokens / seq_len : 0;
    if (n_seq < 1 || seq_len > m->max_seq || text->n < seq_len)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "the importance pass needs windows of 1 to %d "
                             "tokens, at least one, in a text that holds one (%d tokens in windows "
                             "of %d, text of %lld)", m->max_seq, n_tokens, seq_len, (long long)text->n);
    for (int64_t i = 0; i < text->n; i++)
        if (text->tokens[i] < 0 || text->tokens[i] >= m->vocab)
            return fkd_error_set(err, FKD_E_INVALID_ARG, "calibration token %d at %lld is outside "
                                 "the %d-token vocabulary", text->tokens[i], (long long)i, m->vocab);
    size_t L = (size_t)m->n_layers, total = 0;
    for (int t = 0; t < FKD_T_COUNT; t++)
        if (fkd_tensor_is_block_matrix(t)) total += L * input_len(t, m);
    pass p;
    if (pass_init(&p, m, seq_len, err) != 0) return -1;
    /* summed in double (a channel's square over thousands of positions), stored as float */
    double *sums[FKD_T_COUNT] = {0}, *acc = calloc(total, sizeof *acc);
    im->memory = malloc(total * sizeof(float));
    if (!acc || !im->memory) {
        free(acc);
        free(p.memory);
        fkd_qimatrix_free(im);
        return fkd_error_set(err, FKD_E_NOMEM, "out of memory for an importance matrix");
    }
    size_t at = 0;
    for (int t = 0; t < FKD_T_COUNT; t++) {
        if (!fkd_tensor_is_block_matrix(t)) continue;
        sums[t] = acc + at;
        im->w[t] = im->memory + at;
        at += L * input_len(t, m);
    }
    for (int s = 0; s < n_seq; s++) { /* windows spread evenly over the text */
        const int32_t *tokens = text->tokens + (text->n - seq_len) * s / n_seq;
        fkd_embedding_forward(p.x, tokens, params->p.tok_emb, seq_len, p.C);
        for (int l = 0; l < m->n_layers; l++) block_forward(&p, params, l, sums);
    }
    /* wk, wv read wq's input and w3 reads w1's: the same sums */
    double n = (double)n_seq * seq_len;
    for (int t = 0; t < FKD_T_COUNT; t++) {
        if (!sums[t]) continue;
        const double *src = sums[t == FKD_T_WK || t == FKD_T_WV ? FKD_T_WQ : t == FKD_T_W3 ? FKD_T_W1 : t];
        for (size_t i = 0; i < L * input_len(t, m); i++) im->w[t][i] = (float)(src[i] / n);
    }
    im->cfg = *m;
    im->tokens = (int64_t)n;
    free(acc);
    free(p.memory);
    return 0;
}

int fkd_qimatrix_compute_deploy(fkd_qimatrix *im, const fkd_params *params,
                                const fkd_token_stream *text, fkd_error *err)
{
    memset(im, 0, sizeof *im);
    int seq = params->cfg.max_seq < FKD_QIMATRIX_DEFAULT_SEQ ? params->cfg.max_seq
                                                             : FKD_QIMATRIX_DEFAULT_SEQ;
    fkd_token_stream head = *text;
    if (head.n > FKD_QIMATRIX_DEFAULT_TOKENS) head.n = FKD_QIMATRIX_DEFAULT_TOKENS;
    if (head.n < seq) return 0; /* no window: the recipe goes without importances */
    return fkd_qimatrix_compute(im, params, &head, (int)head.n, seq, err);
}
