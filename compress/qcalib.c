/* qcalib.c — the calibration pass of int4 quantization (qcalib.h). */
#include "qcalib.h"

#include <stdlib.h>
#include <string.h>

int fkd_qcalib_init(fkd_qcalib *p, const fkd_model_config *m, int T, fkd_error *err)
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
        return fkd_error_set(err, FKD_E_NOMEM, "out of memory for the calibration pass (%zu MB)",
                             total * sizeof(float) >> 20);
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        *ptrs[i] = p->memory + at;
        at += (sizes[i] + 15) / 16 * 16;
    }
    fkd_rope_tables(p->rope_cos, p->rope_sin, T, p->hd, m->rope_theta);
    return 0;
}

void fkd_qcalib_free(fkd_qcalib *p)
{
    free(p->memory);
    memset(p, 0, sizeof *p);
}

void fkd_qcalib_block(fkd_qcalib *p, const fkd_params *m, int l, fkd_qcalib_fn fn, void *ctx)
{
    const fkd_param_ptrs *w = &m->p;
    int T = p->T, C = p->C, Hd = p->H * p->hd, KVd = p->KV * p->hd, F = p->F;
    fkd_rmsnorm_forward(p->xn, p->rstd, p->x, w->attn_norm + (size_t)l * C, T, C, m->cfg.norm_eps);
    fn(ctx, FKD_T_WQ, l, p->xn, T, C);
    fkd_matmul_forward(p->q, p->xn, w->wq + (size_t)l * Hd * C, T, C, Hd, 0.0f);
    fkd_matmul_forward(p->k, p->xn, w->wk + (size_t)l * KVd * C, T, C, KVd, 0.0f);
    fkd_matmul_forward(p->v, p->xn, w->wv + (size_t)l * KVd * C, T, C, KVd, 0.0f);
    fkd_rope_forward(p->q, p->rope_cos, p->rope_sin, 1, T, p->H, p->hd, 0);
    fkd_rope_forward(p->k, p->rope_cos, p->rope_sin, 1, T, p->KV, p->hd, 0);
    fkd_attention_forward(p->ao, p->att, p->q, p->k, p->v, 1, T, p->H, p->KV, p->hd);
    fn(ctx, FKD_T_WO, l, p->ao, T, Hd);
    fkd_matmul_forward(p->tmp, p->ao, w->wo + (size_t)l * C * Hd, T, Hd, C, 0.0f);
    fkd_residual_forward(p->x, p->tmp, (size_t)T * C);
    fkd_rmsnorm_forward(p->xn, p->rstd, p->x, w->ffn_norm + (size_t)l * C, T, C, m->cfg.norm_eps);
    fn(ctx, FKD_T_W1, l, p->xn, T, C);
    fkd_matmul_forward(p->h1, p->xn, w->w1 + (size_t)l * F * C, T, C, F, 0.0f);
    fkd_matmul_forward(p->h3, p->xn, w->w3 + (size_t)l * F * C, T, C, F, 0.0f);
    fkd_swiglu_forward(p->hh, p->h1, p->h3, T, F);
    fn(ctx, FKD_T_W2, l, p->hh, T, F);
    fkd_matmul_forward(p->tmp, p->hh, w->w2 + (size_t)l * C * F, T, F, C, 0.0f);
    fkd_residual_forward(p->x, p->tmp, (size_t)T * C);
}

size_t fkd_qcalib_input_len(int t, const fkd_model_config *m)
{
    switch (t) {
    case FKD_T_WO: return (size_t)m->n_heads * (m->dim / m->n_heads);
    case FKD_T_W2: return (size_t)m->ffn_hidden;
    default: return (size_t)m->dim;
    }
}

int fkd_qcalib_input_kind(int t)
{
    return t == FKD_T_WK || t == FKD_T_WV ? FKD_T_WQ : t == FKD_T_W3 ? FKD_T_W1 : t;
}

int fkd_qcalib_check(const fkd_model_config *m, const fkd_token_stream *text, int n_tokens,
                     int seq_len, fkd_error *err)
{
    int n_seq = seq_len > 0 ? n_tokens / seq_len : 0;
    if (n_seq < 1 || seq_len > m->max_seq || text->n < seq_len)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "the calibration pass needs windows of 1 to "
                             "%d tokens, at least one, in a text that holds one (%d tokens in "
                             "windows of %d, text of %lld)", m->max_seq, n_tokens, seq_len,
                             (long long)text->n);
    for (int64_t i = 0; i < text->n; i++)
        if (text->tokens[i] < 0 || text->tokens[i] >= m->vocab)
            return fkd_error_set(err, FKD_E_INVALID_ARG, "calibration token %d at %lld is outside "
                                 "the %d-token vocabulary", text->tokens[i], (long long)i, m->vocab);
    return 0;
}

const int32_t *fkd_qcalib_window(const fkd_token_stream *text, int seq_len, int s, int n_seq)
{
    return text->tokens + (text->n - seq_len) * s / n_seq;
}
