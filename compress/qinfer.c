/* qinfer.c — the quantized student's forward pass, one token at a time, in
 * the shape of llama2.c's run.c: the model (fkd_qmodel), a run state with
 * its KV cache (fkd_qinfer), and a step function that returns the logits.
 *
 * The math is train's fkd_infer_step's (same RMSNorm, RoPE and SwiGLU
 * kernels are called from train); only the matrix-vector products differ:
 * each input vector is quantized once to 8-bit blocks and every weight row
 * is consumed in its own format by compress/qdot.c. No tensor is ever
 * dequantized whole: an embedding lookup dequantizes one row.
 *
 * Also here: a perplexity loop over any one-token step function, so the
 * fp32 and the quantized student are scored by the same code.
 */
#include "fkd_compress.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Layer l's slice of a stacked tensor: rows x row_len values. */
static const uint8_t *layer_slice(const fkd_qtensor *q, int l, size_t rows)
{
    return q->data + (size_t)l * rows * fkd_qtype_row_bytes(q->type, q->row_len);
}

static int needs_blocks(int type)
{
    return fkd_qtype_block_values(type) == FKD_QK;
}

int fkd_qinfer_init(fkd_qinfer *st, const fkd_qmodel *qm, int kernel, fkd_error *err)
{
    memset(st, 0, sizeof *st);
    const fkd_model_config *c = &qm->cfg;
    size_t C = (size_t)c->dim, L = (size_t)c->n_layers, hd = C / (size_t)c->n_heads;
    size_t kv = (size_t)c->n_kv_heads * hd, F = (size_t)c->ffn_hidden, S = (size_t)c->max_seq;
    size_t V = (size_t)c->vocab, H = (size_t)c->n_heads;
    size_t sizes[] = {C, C, C, C, kv, kv, H * S, F, F, V, L * S * kv, L * S * kv,
                      S * hd / 2, S * hd / 2, 2 * L * C + C, F};
    float **ptrs[] = {&st->x, &st->xb, &st->xb2, &st->q, &st->k, &st->v, &st->att, &st->h1,
                      &st->h3, &st->logits, &st->key_cache, &st->value_cache, &st->rope_cos,
                      &st->rope_sin, &st->norms, &st->hb};
    size_t total = 0, n = sizeof sizes / sizeof sizes[0];
    for (size_t i = 0; i < n; i++) total += sizes[i];
    size_t max_in = F > C ? F : C;
    st->memory = calloc(total, sizeof(float));
    st->xq = calloc(max_in / FKD_QK + 1, sizeof *st->xq);
    if (!st->memory || !st->xq) {
        fkd_qinfer_free(st);
        return fkd_error_set(err, FKD_E_NOMEM, "out of memory for the quantized model's run state (%zu floats)", total);
    }
    float *p = st->memory;
    for (size_t i = 0; i < n; i++) {
        *ptrs[i] = p;
        p += sizes[i];
    }
    st->qm = qm;
    st->kernel = kernel == FKD_QKERNEL_AUTO ? fkd_qkernel_best() : kernel;
    if (!fkd_qkernel_supported(st->kernel)) {
        fkd_qinfer_free(st);
        return fkd_error_set(err, FKD_E_UNSUPPORTED, "this CPU cannot run the %s kernel", fkd_qkernel_name(kernel));
    }
    fkd_rope_tables(st->rope_cos, st->rope_sin, c->max_seq, (int)hd, c->rope_theta);
    fkd_dequantize_row(st->norms, qm->q[FKD_T_ATTN_NORM].type, qm->q[FKD_T_ATTN_NORM].data, L * C);
    fkd_dequantize_row(st->norms + L * C, qm->q[FKD_T_FFN_NORM].type, qm->q[FKD_T_FFN_NORM].data, L * C);
    fkd_dequantize_row(st->norms + 2 * L * C, qm->q[FKD_T_FINAL_NORM].type, qm->q[FKD_T_FINAL_NORM].data, C);
    return 0;
}

void fkd_qinfer_free(fkd_qinfer *st)
{
    if (!st) return;
    free(st->memory);
    free(st->xq);
    memset(st, 0, sizeof *st);
}

void fkd_qinfer_reset(fkd_qinfer *st)
{
    st->pos = 0;
}

/* out (rows) = W · x, quantizing x once when W is stored in blocks. */
static void matvec(fkd_qinfer *st, float *out, const fkd_qtensor *w, const uint8_t *data,
                   const float *x, size_t rows, size_t n)
{
    if (needs_blocks(w->type)) fkd_q8_act_quantize(st->xq, x, n);
    fkd_qmatvec(st->kernel, out, w->type, data, x, st->xq, rows, n);
}

/* Masked causal attention of one query position over the cache (GQA). */
static void attend(fkd_qinfer *st, int l)
{
    const fkd_model_config *c = &st->qm->cfg;
    int H = c->n_heads, KV = c->n_kv_heads, hd = c->dim / H, kvd = KV * hd, pos = st->pos;
    const float *kc = st->key_cache + (size_t)l * c->max_seq * kvd;
    const float *vc = st->value_cache + (size_t)l * c->max_seq * kvd;
    float scale = 1.0f / sqrtf((float)hd);
    for (int h = 0; h < H; h++) {
        const float *q = st->q + h * hd;
        float *att = st->att + (size_t)h * c->max_seq;
        int g = h / (H / KV);
        float max = -INFINITY;
        for (int t = 0; t <= pos; t++) {
            const float *k = kc + (size_t)t * kvd + g * hd;
            float s = 0.0f;
            for (int i = 0; i < hd; i++) s += q[i] * k[i];
            att[t] = s * scale;
            max = fmaxf(max, att[t]);
        }
        float sum = 0.0f;
        for (int t = 0; t <= pos; t++) {
            att[t] = expf(att[t] - max);
            sum += att[t];
        }
        float *out = st->xb + h * hd;
        memset(out, 0, (size_t)hd * sizeof *out);
        for (int t = 0; t <= pos; t++) {
            const float *v = vc + (size_t)t * kvd + g * hd;
            float a = att[t] / sum;
            for (int i = 0; i < hd; i++) out[i] += a * v[i];
        }
    }
}

float *fkd_qinfer_step(fkd_qinfer *st, int32_t token)
{
    const fkd_qmodel *qm = st->qm;
    const fkd_model_config *c = &qm->cfg;
    int C = c->dim, H = c->n_heads, hd = C / H, kvd = c->n_kv_heads * hd, F = c->ffn_hidden;
    int L = c->n_layers, pos = st->pos;
    float rstd;
    if (pos >= c->max_seq || token < 0 || token >= c->vocab) return NULL;
    const fkd_qtensor *emb = &qm->q[FKD_T_TOK_EMB];
    fkd_dequantize_row(st->x, emb->type, emb->data + (size_t)token * fkd_qtype_row_bytes(emb->type, (size_t)C), (size_t)C);
    if (qm->mask) fkd_prune_apply(st->x, qm->mask + qm->tensors[FKD_T_TOK_EMB].offset + (size_t)token * C, (size_t)C);

    for (int l = 0; l < L; l++) {
        fkd_rmsnorm_forward(st->xb, &rstd, st->x, st->norms + (size_t)l * C, 1, C, c->norm_eps);
        float *kdst = st->key_cache + ((size_t)l * c->max_seq + pos) * kvd;
        float *vdst = st->value_cache + ((size_t)l * c->max_seq + pos) * kvd;
        fkd_q8_act_quantize(st->xq, st->xb, (size_t)C); /* shared by wq, wk, wv when blocked */
        const fkd_qtensor *wq = &qm->q[FKD_T_WQ], *wk = &qm->q[FKD_T_WK], *wv = &qm->q[FKD_T_WV];
        fkd_qmatvec(st->kernel, st->q, wq->type, layer_slice(wq, l, C), st->xb, st->xq, C, C);
        fkd_qmatvec(st->kernel, kdst, wk->type, layer_slice(wk, l, kvd), st->xb, st->xq, kvd, C);
        fkd_qmatvec(st->kernel, vdst, wv->type, layer_slice(wv, l, kvd), st->xb, st->xq, kvd, C);
        fkd_rope_forward(st->q, st->rope_cos, st->rope_sin, 1, 1, H, hd, pos);
        fkd_rope_forward(kdst, st->rope_cos, st->rope_sin, 1, 1, c->n_kv_heads, hd, pos);
        attend(st, l);
        const fkd_qtensor *wo = &qm->q[FKD_T_WO];
        matvec(st, st->xb2, wo, layer_slice(wo, l, C), st->xb, C, C);
        fkd_residual_forward(st->x, st->xb2, (size_t)C);

        fkd_rmsnorm_forward(st->xb, &rstd, st->x, st->norms + (size_t)(L + l) * C, 1, C, c->norm_eps);
        const fkd_qtensor *w1 = &qm->q[FKD_T_W1], *w3 = &qm->q[FKD_T_W3], *w2 = &qm->q[FKD_T_W2];
        fkd_q8_act_quantize(st->xq, st->xb, (size_t)C);
        fkd_qmatvec(st->kernel, st->h1, w1->type, layer_slice(w1, l, F), st->xb, st->xq, F, C);
        fkd_qmatvec(st->kernel, st->h3, w3->type, layer_slice(w3, l, F), st->xb, st->xq, F, C);
        fkd_swiglu_forward(st->hb, st->h1, st->h3, 1, F);
        matvec(st, st->xb2, w2, layer_slice(w2, l, C), st->hb, C, F);
        fkd_residual_forward(st->x, st->xb2, (size_t)C);
    }
    fkd_rmsnorm_forward(st->xb, &rstd, st->x, st->norms + (size_t)2 * L * C, 1, C, c->norm_eps);
    const fkd_qtensor *head = c->tie_embeddings ? emb : &qm->q[FKD_T_HEAD];
    matvec(st, st->logits, head, head->data, st->xb, (size_t)c->vocab, (size_t)C);
    st->pos++;
    return st->logits;
}

/* ---- evaluation ------------------------------------------------------------------ */
static double token_nll(const float *logits, int vocab, int32_t target, int *correct)
{
    float max = logits[0];
    int arg = 0;
    for (int i = 1; i < vocab; i++)
        if (logits[i] > max) {
            max = logits[i];
            arg = i;
        }
    double sum = 0.0;
    for (int i = 0; i < vocab; i++) sum += exp((double)logits[i] - max);
    *correct = arg == target;
    return log(sum) - ((double)logits[target] - max);
}

int fkd_compress_eval_steps(fkd_eval_result *res, void *state, fkd_step_fn step,
                            fkd_reset_fn reset, int vocab, const int32_t *tokens,
                            int64_t n_tokens, int64_t text_bytes, int window, fkd_error *err)
{
    memset(res, 0, sizeof *res);
    if (window < 1 || n_tokens < 2)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "evaluation needs a window >= 1 and at least 2 tokens");
    double nll = 0.0;
    int64_t counted = 0, correct = 0;
    for (int64_t w0 = 0; w0 + 1 < n_tokens; w0 += window) {
        reset(state);
        for (int64_t t = w0; t < w0 + window && t + 1 < n_tokens; t++) {
            if (tokens[t] < 0 || tokens[t] >= vocab || tokens[t + 1] < 0 || tokens[t + 1] >= vocab)
                return fkd_error_set(err, FKD_E_INVALID_ARG, "token %lld is outside the vocabulary", (long long)t);
            const float *logits = step(state, tokens[t]);
            if (!logits)
                return fkd_error_set(err, FKD_E_INVALID_ARG, "the model refused token %lld (window above its max_seq?)",
                                     (long long)t);
            int ok;
            nll += token_nll(logits, vocab, tokens[t + 1], &ok);
            correct += ok;
            counted++;
        }
    }
    res->tokens = counted;
    res->mean_loss = nll / (double)counted;
    res->perplexity = exp(res->mean_loss);
    res->bits_per_byte = text_bytes > 0 ? nll / log(2.0) / (double)text_bytes : 0.0;
    res->accuracy = (double)correct / (double)counted;
    return 0;
}

float *fkd_qinfer_step_fn(void *st, int32_t token)
{
    return fkd_qinfer_step((fkd_qinfer *)st, token);
}

void fkd_qinfer_reset_fn(void *st)
{
    fkd_qinfer_reset((fkd_qinfer *)st);
}

float *fkd_infer_step_fn(void *st, int32_t token)
{
    return fkd_infer_step((fkd_infer *)st, token);
}

void fkd_infer_reset_fn(void *st)
{
    fkd_infer_reset((fkd_infer *)st);
}
