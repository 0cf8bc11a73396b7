/* infer.c — generation one token at a time with a KV cache (llama2.c's
 * shape: config, weights, run state). Used by `fedkd generate`, the
 * hallucination measure, and as the reference the quantized path in
 * compress/ is checked against. */
#include "internal.h"

#include <blis.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* y (OC) = W (OC,C) · x (C) */
static void matvec(float *y, const float *w, const float *x, int C, int OC)
{
    float one = 1.0f, zero = 0.0f;
    bli_sgemv(BLIS_NO_TRANSPOSE, BLIS_NO_CONJUGATE, OC, C, &one, (float *)w, C, 1, (float *)x, 1,
              &zero, y, 1);
}

int fkd_infer_init(fkd_infer *st, const fkd_params *params, fkd_error *err)
{
    memset(st, 0, sizeof *st);
    const fkd_model_config *c = &params->cfg;
    size_t C = c->dim, hd = C / c->n_heads, QD = c->n_heads * hd, KVD = c->n_kv_heads * hd;
    size_t F = c->ffn_hidden, S = c->max_seq, L = c->n_layers;
    size_t total = 3 * C + QD + 2 * KVD + (size_t)c->n_heads * S + 2 * F + c->vocab +
                   2 * L * S * KVD + S * hd;
    st->memory = fkd_alloc_floats(total);
    if (!st->memory)
        return fkd_error_set(err, FKD_E_NOMEM, "cannot allocate %zu MB for inference",
                             total * sizeof(float) >> 20);
    float *p = st->memory;
    st->x = p; p += C;
    st->xb = p; p += C;
    st->xb2 = p; p += C;
    st->q = p; p += QD;
    st->k = p; p += KVD;
    st->v = p; p += KVD;
    st->att = p; p += (size_t)c->n_heads * S;
    st->h1 = p; p += F;
    st->h3 = p; p += F;
    st->logits = p; p += c->vocab;
    st->key_cache = p; p += L * S * KVD;
    st->value_cache = p; p += L * S * KVD;
    st->rope_cos = p; p += S * hd / 2;
    st->rope_sin = p;
    fkd_rope_tables(st->rope_cos, st->rope_sin, c->max_seq, (int)hd, c->rope_theta);
    st->params = params;
    return 0;
}

void fkd_infer_free(fkd_infer *st)
{
    free(st->memory);
    memset(st, 0, sizeof *st);
}

void fkd_infer_reset(fkd_infer *st) { st->pos = 0; }

static void attend(fkd_infer *st, int l)
{
    const fkd_model_config *c = &st->params->cfg;
    int C = c->dim, hd = C / c->n_heads, KVD = c->n_kv_heads * hd, S = c->max_seq;
    int group = c->n_heads / c->n_kv_heads, pos = st->pos;
    const float *kc = st->key_cache + (size_t)l * S * KVD;
    const float *vc = st->value_cache + (size_t)l * S * KVD;
    float scale = 1.0f / sqrtf((float)hd);
    for (int h = 0; h < c->n_heads; h++) {
        const float *q = st->q + (size_t)h * hd;
        float *att = st->att + (size_t)h * S;
        int kvh = h / group;
        float mx = -INFINITY;
        for (int t = 0; t <= pos; t++) {
            const float *k = kc + (size_t)t * KVD + (size_t)kvh * hd;
            float s = 0.0f;
            for (int i = 0; i < hd; i++) s += q[i] * k[i];
            att[t] = s * scale;
            mx = att[t] > mx ? att[t] : mx;
        }
        float sum = 0.0f;
        for (int t = 0; t <= pos; t++) {
            att[t] = expf(att[t] - mx);
            sum += att[t];
        }
        float *out = st->xb + (size_t)h * hd; /* QD == C */
        memset(out, 0, (size_t)hd * sizeof(float));
        for (int t = 0; t <= pos; t++) {
            const float *v = vc + (size_t)t * KVD + (size_t)kvh * hd;
            float a = att[t] / sum;
            for (int i = 0; i < hd; i++) out[i] += a * v[i];
        }
    }
}

float *fkd_infer_step(fkd_infer *st, int32_t token)
{
    const fkd_model_config *c = &st->params->cfg;
    const fkd_param_ptrs *w = &st->params->p;
    int C = c->dim, hd = C / c->n_heads, QD = c->n_heads * hd, KVD = c->n_kv_heads * hd;
    int F = c->ffn_hidden, S = c->max_seq;
    if (st->pos >= S) return NULL; /* context full: caller resets or slides */
    if (token < 0 || token >= c->vocab) return NULL;
    float rstd;
    memcpy(st->x, w->tok_emb + (size_t)token * C, (size_t)C * sizeof(float));
    for (int l = 0; l < c->n_layers; l++) {
        fkd_rmsnorm_forward(st->xb, &rstd, st->x, w->attn_norm + (size_t)l * C, 1, C, c->norm_eps);
        matvec(st->q, w->wq + (size_t)l * QD * C, st->xb, C, QD);
        float *kslot = st->key_cache + ((size_t)l * S + st->pos) * KVD;
        float *vslot = st->value_cache + ((size_t)l * S + st->pos) * KVD;
        matvec(kslot, w->wk + (size_t)l * KVD * C, st->xb, C, KVD);
        matvec(vslot, w->wv + (size_t)l * KVD * C, st->xb, C, KVD);
        fkd_rope_forward(st->q, st->rope_cos, st->rope_sin, 1, 1, c->n_heads, hd, st->pos);
        fkd_rope_forward(kslot, st->rope_cos, st->rope_sin, 1, 1, c->n_kv_heads, hd, st->pos);
        attend(st, l);
        matvec(st->xb2, w->wo + (size_t)l * C * QD, st->xb, QD, C);
        for (int i = 0; i < C; i++) st->x[i] += st->xb2[i];
        fkd_rmsnorm_forward(st->xb, &rstd, st->x, w->ffn_norm + (size_t)l * C, 1, C, c->norm_eps);
        matvec(st->h1, w->w1 + (size_t)l * F * C, st->xb, C, F);
        matvec(st->h3, w->w3 + (size_t)l * F * C, st->xb, C, F);
        fkd_swiglu_forward(st->h1, st->h1, st->h3, 1, F);
        matvec(st->xb2, w->w2 + (size_t)l * C * F, st->h1, F, C);
        for (int i = 0; i < C; i++) st->x[i] += st->xb2[i];
    }
    fkd_rmsnorm_forward(st->xb, &rstd, st->x, w->final_norm, 1, C, c->norm_eps);
    matvec(st->logits, w->head, st->xb, C, c->vocab);
    st->pos++;
    return st->logits;
}

float *fkd_infer_step_fn(void *st, int32_t token)
{
    return fkd_infer_step((fkd_infer *)st, token);
}

void fkd_infer_reset_fn(void *st)
{
    fkd_infer_reset((fkd_infer *)st);
}
