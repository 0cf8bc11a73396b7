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
 * Prompt processing (fkd_qinfer_prompt) runs a batch of positions through
 * each layer at once: the layer's input is quantized row by row, every
 * weight matrix multiplies all positions in one threaded product, and the
 * attention is train's causal fkd_attention_forward over the batch.
 *
 * fkd_qinfer_prompt_each hands every position's logits over in chunks of
 * rows, so that a soft-label pass over a long window never holds the whole
 * (n, V) matrix (512 x 49,152 floats is 100 MB).
 *
 * Also here: a perplexity loop over any one-token step function, so the
 * fp32 and the quantized student are scored by the same code, and
 * llama.cpp's llama-perplexity protocol run on the blocks.
 */
#include "fkd_compress.h"

#include <math.h>
#include <omp.h>
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
    free(st->batch);
    free(st->batch_q);
    memset(st, 0, sizeof *st);
}

void fkd_qinfer_reset(fkd_qinfer *st)
{
    st->pos = 0;
}

/* x (C) = the embedding row of token, pruned weights 0. */
static void embed(float *x, const fkd_qmodel *qm, int32_t token)
{
    const fkd_qtensor *emb = &qm->q[FKD_T_TOK_EMB];
    size_t C = (size_t)qm->cfg.dim;
    fkd_dequantize_row(x, emb->type, emb->data + (size_t)token * fkd_qtype_row_bytes(emb->type, C), C);
    if (qm->mask) fkd_prune_apply(x, qm->mask + qm->tensors[FKD_T_TOK_EMB].offset + (size_t)token * C, C);
}

/* out (rows) = W · x, quantizing x once when W is stored in blocks. */
static void matvec(fkd_qinfer *st, float *out, const fkd_qtensor *w, const uint8_t *data,
                   const float *x, size_t rows, size_t n)
{
    if (needs_blocks(w->type)) fkd_q8_act_quantize(st->xq, x, n);
    fkd_qmatvec(st->kernel, out, w->type, data, x, st->xq, rows, n);
}

/* The attention's two loops, built for AVX2 too and picked at run time
 * (the library stays baseline x86-64). Both fix their summation order in
 * the source, so every build gives the same bits. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define ATTN_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define ATTN_CLONES
#endif
#define DOT_LANES 8

/* att[t] = q · k_t * scale for t <= pos, keys a row of kvd floats apart;
 * returns the largest. Eight running sums per dot product. */
ATTN_CLONES static float head_scores(float *restrict att, const float *restrict q, const float *restrict k,
                                     int pos, int hd, size_t kvd, float scale)
{
    float max = -INFINITY;
    for (int t = 0; t <= pos; t++, k += kvd) {
        float acc[DOT_LANES] = {0}, s;
        int i = 0;
        for (; i + DOT_LANES <= hd; i += DOT_LANES)
            for (int j = 0; j < DOT_LANES; j++) acc[j] += q[i + j] * k[i + j];
        s = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
        for (; i < hd; i++) s += q[i] * k[i];
        att[t] = s * scale;
        max = att[t] > max ? att[t] : max;
    }
    return max;
}

/* out (hd) = sum over t <= pos of att[t] * inv * v_t, VALUE_SPAN values at a
 * time so that the running sums stay in registers over all t. */
#define VALUE_SPAN 16
ATTN_CLONES static void head_values(float *restrict out, const float *restrict att, float inv,
                                    const float *restrict v, int pos, int hd, size_t kvd)
{
    int i0 = 0;
    for (; i0 + VALUE_SPAN <= hd; i0 += VALUE_SPAN) {
        float acc[VALUE_SPAN] = {0};
        const float *vt = v + i0;
        for (int t = 0; t <= pos; t++, vt += kvd) {
            float a = att[t] * inv;
#pragma GCC unroll 16
            for (int j = 0; j < VALUE_SPAN; j++) acc[j] += a * vt[j];
        }
        for (int j = 0; j < VALUE_SPAN; j++) out[i0 + j] = acc[j];
    }
    for (int i = i0; i < hd; i++) {
        float acc = 0.0f;
        for (int t = 0; t <= pos; t++) acc += att[t] * inv * v[(size_t)t * kvd + i];
        out[i] = acc;
    }
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
        float *att = st->att + (size_t)h * c->max_seq;
        int g = h / (H / KV);
        float max = head_scores(att, st->q + h * hd, kc + g * hd, pos, hd, (size_t)kvd, scale);
        float sum = 0.0f;
        for (int t = 0; t <= pos; t++) {
            att[t] = expf(att[t] - max);
            sum += att[t];
        }
        head_values(st->xb + h * hd, att, 1.0f / sum, vc + g * hd, pos, hd, (size_t)kvd);
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
    embed(st->x, qm, token);

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

/* ---- prompt processing ---------------------------------------------------------- */
/* Grows the batch buffers to n positions: X, XB, Q (n, C), H1, H3 (n, F),
 * the attention probabilities (H, n, n), rstd (n), and the blocks of the
 * widest input. */
static int batch_reserve(fkd_qinfer *st, int n)
{
    if (n <= st->batch_cap) return 0;
    const fkd_model_config *c = &st->qm->cfg;
    size_t N = (size_t)n, C = (size_t)c->dim, F = (size_t)c->ffn_hidden, H = (size_t)c->n_heads;
    size_t widest = F > C ? F : C;
    float *batch = malloc((3 * N * C + 2 * N * F + H * N * N + N) * sizeof *batch);
    fkd_q8_act *bq = malloc(N * (widest / FKD_QK + 1) * sizeof *bq);
    if (!batch || !bq) {
        free(batch);
        free(bq);
        return -1;
    }
    free(st->batch);
    free(st->batch_q);
    st->batch = batch;
    st->batch_q = bq;
    st->batch_cap = n;
    return 0;
}

/* Blocks of n rows of `in` values each (row r's blocks at xq + r * in / 32). */
static void quantize_rows(fkd_q8_act *xq, const float *x, int n, size_t in)
{
    if (in % FKD_QK != 0) return; /* only F32/F16 rows read such an input */
#pragma omp parallel for schedule(static) if (n > 1 && !omp_in_parallel())
    for (int r = 0; r < n; r++) fkd_q8_act_quantize(xq + (size_t)r * (in / FKD_QK), x + (size_t)r * in, in);
}

/* out (n, rows) = x (n, in) · Wᵀ for layer l of tensor t (xq: x's blocks). */
static void layer_matmul(const fkd_qinfer *st, float *out, int t, int l, size_t rows,
                         const float *x, const fkd_q8_act *xq, int n, size_t in)
{
    const fkd_qtensor *w = &st->qm->q[t];
    fkd_qmatmul(st->kernel, out, w->type, layer_slice(w, l, rows), x, xq, (size_t)n, rows, in);
}

/* One block of the model over the n batch positions in X (from position 0). */
static void batch_layer(fkd_qinfer *st, int l, int n, float *X, float *XB, float *Q, float *H1,
                        float *H3, float *att, float *rstd)
{
    const fkd_model_config *c = &st->qm->cfg;
    int C = c->dim, H = c->n_heads, KV = c->n_kv_heads, hd = C / H, kvd = KV * hd, F = c->ffn_hidden, L = c->n_layers;
    float *K = st->key_cache + (size_t)l * c->max_seq * kvd, *V = st->value_cache + (size_t)l * c->max_seq * kvd;
    fkd_q8_act *xq = st->batch_q;

    fkd_rmsnorm_forward(XB, rstd, X, st->norms + (size_t)l * C, n, C, c->norm_eps);
    quantize_rows(xq, XB, n, (size_t)C);
    layer_matmul(st, Q, FKD_T_WQ, l, (size_t)C, XB, xq, n, (size_t)C);
    layer_matmul(st, K, FKD_T_WK, l, (size_t)kvd, XB, xq, n, (size_t)C);
    layer_matmul(st, V, FKD_T_WV, l, (size_t)kvd, XB, xq, n, (size_t)C);
    fkd_rope_forward(Q, st->rope_cos, st->rope_sin, 1, n, H, hd, 0);
    fkd_rope_forward(K, st->rope_cos, st->rope_sin, 1, n, KV, hd, 0);
    fkd_attention_forward(XB, att, Q, K, V, 1, n, H, KV, hd);
    quantize_rows(xq, XB, n, (size_t)C);
    layer_matmul(st, Q, FKD_T_WO, l, (size_t)C, XB, xq, n, (size_t)C);
    fkd_residual_forward(X, Q, (size_t)n * C);

    fkd_rmsnorm_forward(XB, rstd, X, st->norms + (size_t)(L + l) * C, n, C, c->norm_eps);
    quantize_rows(xq, XB, n, (size_t)C);
    layer_matmul(st, H1, FKD_T_W1, l, (size_t)F, XB, xq, n, (size_t)C);
    layer_matmul(st, H3, FKD_T_W3, l, (size_t)F, XB, xq, n, (size_t)C);
    fkd_swiglu_forward(H1, H1, H3, n, F);
    quantize_rows(xq, H1, n, (size_t)F);
    layer_matmul(st, Q, FKD_T_W2, l, (size_t)C, H1, xq, n, (size_t)F);
    fkd_residual_forward(X, Q, (size_t)n * C);
}

/* Token by token, for a batch that continues a context (the batched
 * attention starts at position 0). */
static float *prompt_by_steps(fkd_qinfer *st, const int32_t *tokens, int n, float *all_logits)
{
    size_t V = (size_t)st->qm->cfg.vocab;
    float *logits = NULL;
    for (int i = 0; i < n; i++) {
        if (!(logits = fkd_qinfer_step(st, tokens[i]))) return NULL;
        if (all_logits) memcpy(all_logits + (size_t)i * V, logits, V * sizeof *logits);
    }
    return logits;
}

/* Runs the layers over tokens[0..n) from position 0 (checked by the
 * caller); the last layer's output is left in the batch buffer X. */
static int prompt_layers(fkd_qinfer *st, const int32_t *tokens, int n)
{
    const fkd_qmodel *qm = st->qm;
    const fkd_model_config *c = &qm->cfg;
    if (batch_reserve(st, n) < 0) return -1;
    size_t N = (size_t)n, C = (size_t)c->dim, F = (size_t)c->ffn_hidden;
    float *X = st->batch, *XB = X + N * C, *Q = XB + N * C, *H1 = Q + N * C, *H3 = H1 + N * F;
    float *att = H3 + N * F, *rstd = att + (size_t)c->n_heads * N * N;
    for (int i = 0; i < n; i++) embed(X + (size_t)i * C, qm, tokens[i]);
    for (int l = 0; l < c->n_layers; l++) batch_layer(st, l, n, X, XB, Q, H1, H3, att, rstd);
    st->pos = n;
    return 0;
}

/* out (rows, V) = the logits of batch positions first..first+rows, from the
 * last layer's output in X (XB and its blocks are free by then). */
static void prompt_head(fkd_qinfer *st, float *out, int n, int first, int rows)
{
    const fkd_qmodel *qm = st->qm;
    const fkd_model_config *c = &qm->cfg;
    size_t N = (size_t)n, C = (size_t)c->dim, V = (size_t)c->vocab;
    float *X = st->batch, *XB = X + N * C;
    float *rstd = XB + 2 * N * C + 2 * N * (size_t)c->ffn_hidden + (size_t)c->n_heads * N * N;
    const float *final_norm = st->norms + (size_t)2 * c->n_layers * C;
    const fkd_qtensor *head = c->tie_embeddings ? &qm->q[FKD_T_TOK_EMB] : &qm->q[FKD_T_HEAD];
    fkd_rmsnorm_forward(XB, rstd, X + (size_t)first * C, final_norm, rows, (int)C, c->norm_eps);
    quantize_rows(st->batch_q, XB, rows, C);
    fkd_qmatmul(st->kernel, out, head->type, head->data, XB, st->batch_q, (size_t)rows, V, C);
}

static int prompt_fits(const fkd_qinfer *st, const int32_t *tokens, int n)
{
    const fkd_model_config *c = &st->qm->cfg;
    if (n < 1 || n > c->max_seq - st->pos) return 0;
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab) return 0;
    return 1;
}

float *fkd_qinfer_prompt(fkd_qinfer *st, const int32_t *tokens, int n, float *all_logits)
{
    if (!prompt_fits(st, tokens, n)) return NULL;
    if (st->pos > 0 || n == 1) return prompt_by_steps(st, tokens, n, all_logits);
    if (prompt_layers(st, tokens, n) < 0) return NULL;
    size_t V = (size_t)st->qm->cfg.vocab;
    /* without all_logits only the last position's */
    if (!all_logits) {
        prompt_head(st, st->logits, n, n - 1, 1);
        return st->logits;
    }
    prompt_head(st, all_logits, n, 0, n);
    memcpy(st->logits, all_logits + (size_t)(n - 1) * V, V * sizeof *st->logits);
    return st->logits;
}

int fkd_qinfer_prompt_each(fkd_qinfer *st, const int32_t *tokens, int n, int chunk,
                           fkd_qinfer_logits_fn fn, void *ctx, fkd_error *err)
{
    if (chunk < 1 || !prompt_fits(st, tokens, n))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "a prompt of %d tokens (chunks of %d) does "
                             "not fit the context from position %d, or has a token outside "
                             "the vocabulary", n, chunk, st->pos);
    size_t V = (size_t)st->qm->cfg.vocab;
    int rows = chunk < n ? chunk : n;
    float *buf = malloc((size_t)rows * V * sizeof *buf);
    if (!buf) return fkd_error_set(err, FKD_E_NOMEM, "out of memory for %d rows of logits", rows);
    int by_steps = st->pos > 0 || n == 1, rc = 0;
    if (!by_steps && prompt_layers(st, tokens, n) < 0)
        rc = fkd_error_set(err, FKD_E_NOMEM, "out of memory for a batch of %d positions", n);
    for (int r0 = 0; rc == 0 && r0 < n; r0 += rows) {
        int m = n - r0 < rows ? n - r0 : rows;
        if (by_steps && !prompt_by_steps(st, tokens + r0, m, buf))
            rc = fkd_error_set(err, FKD_E_INVALID_ARG, "the model refused the prompt");
        else if (!by_steps)
            prompt_head(st, buf, n, r0, m);
        if (rc == 0) fn(ctx, buf, r0, m);
    }
    if (rc == 0) memcpy(st->logits, buf + (size_t)((n - 1) % rows) * V, V * sizeof *st->logits);
    free(buf);
    return rc;
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

/* ---- the steps' protocol in batches ---- */
#define EVAL_CHUNK_ROWS 64 /* rows of logits held at once: 64 x V floats */

typedef struct {
    const int32_t *targets; /* the window's next tokens: targets[t] follows position t */
    int n_targets;          /* positions of the window that have a next token */
    int vocab;
    double nll;
    int64_t counted, correct;
} window_score;

static void score_rows(void *ctx, const float *logits, int first, int rows)
{
    window_score *w = ctx;
    for (int r = 0; r < rows && first + r < w->n_targets; r++) {
        int ok;
        w->nll += token_nll(logits + (size_t)r * w->vocab, w->vocab, w->targets[first + r], &ok);
        w->correct += ok;
        w->counted++;
    }
}

int fkd_qinfer_eval_windows(fkd_eval_result *res, fkd_qinfer *st, const int32_t *tokens,
                            int64_t n_tokens, int64_t text_bytes, int window, fkd_error *err)
{
    memset(res, 0, sizeof *res);
    int V = st->qm->cfg.vocab;
    if (window < 1 || window > st->qm->cfg.max_seq || n_tokens < 2)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "evaluation needs a window of 1 to %d and "
                             "at least 2 tokens (window %d, %lld tokens)", st->qm->cfg.max_seq,
                             window, (long long)n_tokens);
    for (int64_t i = 0; i < n_tokens; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return fkd_error_set(err, FKD_E_INVALID_ARG, "token %lld is outside the vocabulary",
                                 (long long)i);
    window_score w = {.vocab = V};
    int rc = 0;
    for (int64_t w0 = 0; rc == 0 && w0 + 1 < n_tokens; w0 += window) {
        int n = n_tokens - w0 < window ? (int)(n_tokens - w0) : window;
        w.targets = tokens + w0 + 1;
        w.n_targets = w0 + n < n_tokens ? n : n - 1; /* the stream's last token predicts none */
        fkd_qinfer_reset(st);
        rc = fkd_qinfer_prompt_each(st, tokens + w0, n, EVAL_CHUNK_ROWS, score_rows, &w, err);
    }
    if (rc != 0) return -1;
    res->tokens = w.counted;
    res->mean_loss = w.nll / (double)w.counted;
    res->perplexity = exp(res->mean_loss);
    res->bits_per_byte = text_bytes > 0 ? w.nll / log(2.0) / (double)text_bytes : 0.0;
    res->accuracy = (double)w.correct / (double)w.counted;
    return 0;
}

/* One chunk's second half: positions from n_ctx/2 to n_ctx-2 predict the
 * next token of the chunk (the last position has none inside it). */
static void score_chunk(double *nll, int64_t *counted, int64_t *correct, const float *logits,
                        const int32_t *chunk, int n_ctx, int vocab)
{
    for (int t = n_ctx / 2; t + 1 < n_ctx; t++) {
        int ok;
        *nll += token_nll(logits + (size_t)t * vocab, vocab, chunk[t + 1], &ok);
        *correct += ok;
        (*counted)++;
    }
}

int fkd_qinfer_eval_llama(fkd_eval_result *res, fkd_qinfer *st, const int32_t *tokens,
                          int64_t n_tokens, int64_t text_bytes, int n_ctx, int32_t bos_id,
                          fkd_error *err)
{
    memset(res, 0, sizeof *res);
    int V = st->qm->cfg.vocab;
    if (n_ctx < 2 || n_ctx > st->qm->cfg.max_seq || n_tokens < n_ctx)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "llama-perplexity needs chunks of 2 to %d "
                             "tokens and a text of at least one chunk (%lld tokens, ctx %d)",
                             st->qm->cfg.max_seq, (long long)n_tokens, n_ctx);
    float *logits = malloc((size_t)n_ctx * V * sizeof *logits);
    int32_t *chunk = malloc((size_t)n_ctx * sizeof *chunk);
    int rc = logits && chunk ? 0 : fkd_error_set(err, FKD_E_NOMEM, "out of memory for %d x %d "
                                                 "logits", n_ctx, V);
    double nll = 0.0;
    int64_t counted = 0, correct = 0;
    for (int64_t c = 0; rc == 0 && (c + 1) * n_ctx <= n_tokens; c++) {
        memcpy(chunk, tokens + c * n_ctx, (size_t)n_ctx * sizeof *chunk);
        if (bos_id >= 0) chunk[0] = bos_id;
        fkd_qinfer_reset(st);
        if (!fkd_qinfer_prompt(st, chunk, n_ctx, logits))
            rc = fkd_error_set(err, FKD_E_INVALID_ARG, "chunk %lld has a token outside the "
                               "vocabulary (or no memory for the batch)", (long long)c);
        else
            score_chunk(&nll, &counted, &correct, logits, chunk, n_ctx, V);
    }
    free(logits);
    free(chunk);
    if (rc != 0) return -1;
    res->tokens = counted;
    res->mean_loss = nll / (double)counted;
    res->perplexity = exp(res->mean_loss);
    double bytes = text_bytes > 0 ? (double)text_bytes * counted / (double)n_tokens : counted;
    res->bits_per_byte = nll / log(2.0) / bytes;
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

