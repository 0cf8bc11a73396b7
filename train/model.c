/* model.c — the transformer's training pass: forward over a (B,T) batch,
 * loss, and backward into one gradient arena.
 *
 * Activations live in one arena sized at init. Per layer we keep what the
 * backward pass needs (normalised inputs, q/k/v after RoPE, attention
 * probabilities, the attention output, the FFN pre-activations); the SwiGLU
 * product is recomputed in backward because it is cheap and large. With
 * `recompute` set only each layer's input is kept, and a layer's activations
 * are recomputed just before its backward: memory for one layer instead of L.
 *
 * The head and the loss never hold the (B*T, V) logits in training: the
 * forward stops at the final norm, and backward computes logits, loss and
 * their gradients one chunk of positions at a time (head_loss_backward).
 * Only a forward asked for logits (evaluation, soft labels) makes them.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    float *ln1, *rstd1;   /* (N,C), (N) */
    float *q, *k, *v;     /* (N,QD), (N,KVD), (N,KVD) after RoPE */
    float *att;           /* (B,H,T,T) */
    float *atty;          /* (N,QD) */
    float *resid2;        /* (N,C) after the attention residual */
    float *ln2, *rstd2;   /* (N,C), (N) */
    float *h1, *h3;       /* (N,F) */
} layer_acts;

struct fkd_acts {
    float *memory;
    float *resid;         /* (L+1, N, C): input of each layer, then the last output */
    layer_acts *layers;   /* L entries, or 1 when recomputing */
    int n_layer_acts;
    float *lnf, *rstd_f;  /* (N,C), (N) */
    float *head_buf;      /* (head chunk, V): one chunk's logits, then their gradient */
    float *logits;        /* (N,V), own allocation, made by the first forward asked for them */
    /* backward scratch, shared by all layers */
    float *dresid, *dln;  /* (N,C) */
    float *dq, *dk, *dv, *datty; /* (N,QD), (N,KVD), (N,KVD), (N,QD) */
    float *datt;          /* (B,H,T,T) */
    float *fbuf1, *fbuf2; /* (N,F) */
};

typedef struct {
    size_t N, C, QD, KVD, F, V, att, L;
} dims;

static dims model_dims(const fkd_model_config *c, int B, int T)
{
    int hd = c->dim / c->n_heads;
    return (dims){.N = (size_t)B * T, .C = (size_t)c->dim, .QD = (size_t)c->n_heads * hd,
                  .KVD = (size_t)c->n_kv_heads * hd, .F = (size_t)c->ffn_hidden,
                  .V = (size_t)c->vocab, .att = (size_t)B * c->n_heads * T * T,
                  .L = (size_t)c->n_layers};
}

static size_t layer_floats(const dims *d)
{
    return 2 * d->N * d->C + 2 * d->N + 2 * d->N * d->QD + 2 * d->N * d->KVD + d->att +
           d->N * d->C + 2 * d->N * d->F;
}

/* Positions per chunk of the head and loss: at most FKD_HEAD_CHUNK_BYTES of
 * logits (FKD_HEAD_CHUNK_LEAN_BYTES when recomputing, the mode that saves
 * memory), in chunks of equal size, a multiple of 8 rows when that many fit. */
static size_t head_rows(const dims *d, int recompute)
{
    size_t bytes = recompute ? FKD_HEAD_CHUNK_LEAN_BYTES : FKD_HEAD_CHUNK_BYTES;
    size_t max_rows = bytes / (d->V * sizeof(float));
    if (max_rows >= 8) max_rows -= max_rows % 8;
    if (max_rows < 1) max_rows = 1;
    if (max_rows >= d->N) return d->N;
    size_t n_chunks = (d->N + max_rows - 1) / max_rows;
    size_t rows = (d->N + n_chunks - 1) / n_chunks;
    if (max_rows >= 8) rows = (rows + 7) / 8 * 8;
    return rows < max_rows ? rows : max_rows;
}

int fkd_model_head_chunk(const fkd_model_config *cfg, int B, int T, int recompute)
{
    dims d = model_dims(cfg, B, T);
    return (int)head_rows(&d, recompute);
}

static size_t acts_floats(const dims *d, int recompute)
{
    size_t n_layers = recompute ? 1 : d->L;
    return (d->L + 1) * d->N * d->C + n_layers * layer_floats(d) + d->N * d->C + d->N +
           head_rows(d, recompute) * d->V + 2 * d->N * d->C + 2 * d->N * d->QD + 2 * d->N * d->KVD + d->att +
           2 * d->N * d->F;
}

size_t fkd_model_activation_bytes(const fkd_model_config *cfg, int B, int T, int recompute)
{
    dims d = model_dims(cfg, B, T);
    return acts_floats(&d, recompute) * sizeof(float);
}

/* Hands out consecutive slices of the arena. */
static float *take(float **cursor, size_t n)
{
    float *p = *cursor;
    *cursor += n;
    return p;
}

static void bind_acts(fkd_acts *a, const dims *d, size_t head_chunk)
{
    float *cur = a->memory;
    a->resid = take(&cur, (d->L + 1) * d->N * d->C);
    for (int l = 0; l < a->n_layer_acts; l++) {
        layer_acts *la = &a->layers[l];
        la->ln1 = take(&cur, d->N * d->C);
        la->rstd1 = take(&cur, d->N);
        la->q = take(&cur, d->N * d->QD);
        la->k = take(&cur, d->N * d->KVD);
        la->v = take(&cur, d->N * d->KVD);
        la->att = take(&cur, d->att);
        la->atty = take(&cur, d->N * d->QD);
        la->resid2 = take(&cur, d->N * d->C);
        la->ln2 = take(&cur, d->N * d->C);
        la->rstd2 = take(&cur, d->N);
        la->h1 = take(&cur, d->N * d->F);
        la->h3 = take(&cur, d->N * d->F);
    }
    a->lnf = take(&cur, d->N * d->C);
    a->rstd_f = take(&cur, d->N);
    a->head_buf = take(&cur, head_chunk * d->V);
    a->dresid = take(&cur, d->N * d->C);
    a->dln = take(&cur, d->N * d->C);
    a->dq = take(&cur, d->N * d->QD);
    a->dk = take(&cur, d->N * d->KVD);
    a->dv = take(&cur, d->N * d->KVD);
    a->datty = take(&cur, d->N * d->QD);
    a->datt = take(&cur, d->att);
    a->fbuf1 = take(&cur, d->N * d->F);
    a->fbuf2 = take(&cur, d->N * d->F);
}

static int model_setup(fkd_model *m, int B, int T, int recompute, int with_grads,
                       fkd_error *err);

int fkd_model_init(fkd_model *m, fkd_params *params, int B, int T, int recompute,
                   fkd_error *err)
{
    memset(m, 0, sizeof *m);
    m->params = *params;
    m->owns_params = 1;
    if (model_setup(m, B, T, recompute, 1, err) != 0) return -1;
    memset(params, 0, sizeof *params); /* moved in only on success */
    return 0;
}

int fkd_model_init_borrowed(fkd_model *m, const fkd_params *params, int B, int T, int recompute,
                            fkd_error *err)
{
    memset(m, 0, sizeof *m);
    m->params = *params;
    m->owns_params = 0;
    return model_setup(m, B, T, recompute, 1, err);
}

/* What a LoRA model's base must hold in fp32: everything the forward pass
 * reads directly, and the block matrices unless a source gives them. */
static int lora_base_check(const fkd_params *base, const fkd_weight_source *src,
                           const fkd_lora *lora, fkd_error *err)
{
    const fkd_param_ptrs *p = &base->p;
    if (!p->attn_norm || !p->ffn_norm || !p->final_norm)
        return fkd_error_set(err, FKD_E_INVALID_ARG,
                             "a LoRA base must hold its norm gains in fp32");
    if (!src && (!p->tok_emb || !p->head || !p->wq || !p->wk || !p->wv || !p->wo || !p->w1 ||
                 !p->w3 || !p->w2))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "a LoRA base without some of its matrices "
                             "needs a weight source");
    const fkd_model_config *a = &base->cfg, *b = lora ? &lora->model : &base->cfg;
    if (!fkd_config_same_blocks(a, b))
        return fkd_error_set(err, FKD_E_MISMATCH, "the LoRA adapters were made for another model "
                             "shape than the base (dim %d vs %d, %d vs %d layers)", b->dim,
                             a->dim, b->n_layers, a->n_layers);
    return 0;
}

int fkd_model_init_lora(fkd_model *m, fkd_params *base, const fkd_weight_source *src,
                        fkd_lora *lora, int B, int T, int recompute, fkd_error *err)
{
    memset(m, 0, sizeof *m);
    if (lora_base_check(base, src, lora, err) != 0) return -1;
    m->params = *base;
    m->owns_params = 1;
    m->wsrc = src;
    m->lora = lora;
    if (model_setup(m, B, T, recompute, 0, err) != 0) return -1;
    if (src) m->wscratch = fkd_alloc_floats(fkd_weight_scratch_floats(&base->cfg));
    if (lora) m->lora_scratch = fkd_alloc_floats(fkd_lora_scratch_floats(&lora->cfg, B, T));
    if ((src && !m->wscratch) || (lora && !m->lora_scratch)) {
        m->owns_params = 0; /* on failure the caller keeps its params */
        fkd_model_free(m);
        return fkd_error_set(err, FKD_E_NOMEM, "cannot allocate the LoRA model's scratch");
    }
    memset(base, 0, sizeof *base); /* moved in only on success */
    return 0;
}

static int model_setup(fkd_model *m, int B, int T, int recompute, int with_grads,
                       fkd_error *err)
{
    fkd_flush_subnormals();
    const fkd_model_config *c = &m->params.cfg;
    if (B < 1 || T < 1 || T > c->max_seq) {
        m->owns_params = 0;
        memset(&m->params, 0, sizeof m->params);
        return fkd_error_set(err, FKD_E_INVALID_ARG, "batch %dx%d: need B >= 1 and 1 <= T <= %d",
                             B, T, c->max_seq);
    }
    m->B = B;
    m->T = T;
    m->recompute = recompute ? 1 : 0;
    dims d = model_dims(c, B, T);
    int hd = c->dim / c->n_heads;
    if (with_grads) m->grads = fkd_alloc_floats(m->params.n_params);
    m->acts = calloc(1, sizeof *m->acts);
    m->rope_cos = fkd_alloc_floats((size_t)c->max_seq * hd / 2);
    m->rope_sin = fkd_alloc_floats((size_t)c->max_seq * hd / 2);
    m->act_floats = acts_floats(&d, m->recompute);
    if (m->acts) {
        m->acts->n_layer_acts = m->recompute ? 1 : c->n_layers;
        m->acts->layers = calloc((size_t)m->acts->n_layer_acts, sizeof(layer_acts));
        m->acts->memory = fkd_alloc_floats(m->act_floats);
    }
    if ((with_grads && !m->grads) || !m->acts || !m->acts->layers || !m->acts->memory ||
        !m->rope_cos || !m->rope_sin) {
        m->owns_params = 0; /* on failure the caller keeps its params */
        fkd_model_free(m);
        return fkd_error_set(err, FKD_E_NOMEM,
                             "cannot allocate the model (%zu MB of activations for batch %dx%d); "
                             "lower the batch or use a memory budget",
                             m->act_floats * sizeof(float) >> 20, B, T);
    }
    m->head_chunk = (int)head_rows(&d, m->recompute);
    bind_acts(m->acts, &d, (size_t)m->head_chunk);
    if (m->grads) fkd_param_ptrs_bind(&m->g, m->grads, m->params.tensors, c->tie_embeddings);
    fkd_rope_tables(m->rope_cos, m->rope_sin, c->max_seq, hd, c->rope_theta);
    return 0;
}

void fkd_model_free(fkd_model *m)
{
    if (m->acts) {
        free(m->acts->memory);
        free(m->acts->logits);
        free(m->acts->layers);
        free(m->acts);
    }
    free(m->grads);
    free(m->wscratch);
    free(m->lora_scratch);
    free(m->rope_cos);
    free(m->rope_sin);
    if (m->owns_params) fkd_params_free(&m->params);
    memset(m, 0, sizeof *m);
}

void fkd_model_zero_grad(fkd_model *m)
{
    /* Frozen tensors' gradients are never written: leaving their pages
     * untouched keeps them out of memory (the arena is calloc'ed). */
    for (int t = 0; m->grads && t < FKD_T_COUNT; t++)
        if (!(m->frozen && m->frozen[t]))
            memset(m->grads + m->params.tensors[t].offset, 0,
                   m->params.tensors[t].count * sizeof(float));
    if (m->lora) fkd_lora_zero_grad(m->lora);
}

/* Layer l's norm gains (or their gradients; NULL when there are none). */
typedef struct {
    float *attn_norm, *ffn_norm;
} layer_norms;

static layer_norms norms_of(const fkd_param_ptrs *p, const dims *d, int l)
{
    if (!p->attn_norm) return (layer_norms){NULL, NULL};
    return (layer_norms){.attn_norm = p->attn_norm + l * d->C, .ffn_norm = p->ffn_norm + l * d->C};
}

/* ---- the block matmuls ------------------------------------------------------
 * Every product with wq wk wv wo w1 w3 w2 goes through block_forward and
 * block_backward: the weight comes from the weight source when the model has
 * one (materialised into one matrix of scratch, again in backward for dx,
 * rather than kept per layer: dequantizing costs a few percent of the
 * product), else from the fp32 params; a LoRA adapter on the tensor adds its
 * low-rank term. */
static const float *block_weight(fkd_model *m, int tensor, int layer, int rows, int cols)
{
    if (m->wsrc) {
        m->wsrc->rows(m->wscratch, m->wsrc->user, tensor, layer, 0, (size_t)rows);
        return m->wscratch;
    }
    return m->params.memory + m->params.tensors[tensor].offset + (size_t)layer * rows * cols;
}

static float *block_grad(const fkd_model *m, int tensor, int layer, int rows, int cols)
{
    if (!m->grads || (m->frozen && m->frozen[tensor])) return NULL;
    return m->grads + m->params.tensors[tensor].offset + (size_t)layer * rows * cols;
}

/* out (N,rows) = x (N,cols) · Wᵀ + beta·out, plus the adapter's term. */
static void block_forward(fkd_model *m, float *out, const float *x, int tensor, int layer,
                          float beta)
{
    int rows, cols, N = m->B * m->T;
    fkd_config_matrix_shape(&rows, &cols, &m->params.cfg, tensor);
    fkd_matmul_forward(out, x, block_weight(m, tensor, layer, rows, cols), N, cols, rows, beta);
    fkd_lora *lo = m->lora;
    float *a = lo ? fkd_lora_a(lo, lo->params, tensor, layer) : NULL;
    if (a)
        fkd_lora_forward(out, m->lora_scratch, x, a, fkd_lora_b(lo, lo->params, tensor, layer),
                         lo->scale, N, cols, rows, lo->cfg.rank);
}

static void linear_backward(float *dx, float beta, float *dw, const float *dout, const float *x,
                            const float *w, int N, int C, int OC);

/* dx = dout·W + beta·dx ; dW += doutᵀ·x unless frozen ; the adapter's dA, dB
 * and its share of dx. */
static void block_backward(fkd_model *m, float *dx, float beta, const float *dout,
                           const float *x, int tensor, int layer)
{
    int rows, cols, N = m->B * m->T;
    fkd_config_matrix_shape(&rows, &cols, &m->params.cfg, tensor);
    linear_backward(dx, beta, block_grad(m, tensor, layer, rows, cols), dout, x,
                    block_weight(m, tensor, layer, rows, cols), N, cols, rows);
    fkd_lora *lo = m->lora;
    float *a = lo ? fkd_lora_a(lo, lo->params, tensor, layer) : NULL;
    if (!a) return;
    size_t nr = (size_t)N * lo->cfg.rank;
    fkd_lora_backward(dx, fkd_lora_a(lo, lo->grads, tensor, layer),
                      fkd_lora_b(lo, lo->grads, tensor, layer), m->lora_scratch,
                      m->lora_scratch + nr, dout, x, a, fkd_lora_b(lo, lo->params, tensor, layer),
                      lo->scale, N, cols, rows, lo->cfg.rank);
}

/* ---- embedding and head of a base held by the weight source ---------------
 * A QLoRA base keeps only its norm gains in fp32: embedding rows are
 * materialised per token, the head in slices of vocabulary rows that fit the
 * matrix scratch, once for the logits and once for dx per chunk of
 * positions. Without a source these are the plain fp32 products. */
static void embed_tokens(fkd_model *m, float *out, const int32_t *tokens, int N)
{
    int C = m->params.cfg.dim;
    if (m->params.p.tok_emb) {
        fkd_embedding_forward(out, tokens, m->params.p.tok_emb, N, C);
        return;
    }
    for (int i = 0; i < N; i++)
        m->wsrc->rows(out + (size_t)i * C, m->wsrc->user, FKD_T_TOK_EMB, 0, (size_t)tokens[i], 1);
}

/* logits (n,V) = x (n,C) · headᵀ */
static void head_forward(fkd_model *m, float *logits, const float *x, int n)
{
    int C = m->params.cfg.dim, V = m->params.cfg.vocab;
    if (m->params.p.head) {
        fkd_matmul_forward(logits, x, m->params.p.head, n, C, V, 0.0f);
        return;
    }
    int slice = (int)(fkd_weight_scratch_floats(&m->params.cfg) / (size_t)C);
    for (int v0 = 0; v0 < V; v0 += slice) {
        int nv = V - v0 < slice ? V - v0 : slice;
        m->wsrc->rows(m->wscratch, m->wsrc->user, FKD_T_HEAD, 0, (size_t)v0, (size_t)nv);
        fkd_sgemm(0, 1, n, nv, C, 1.0f, x, C, m->wscratch, C, 0.0f, logits + v0, V, 0);
    }
}

/* dx (n,C) = dlogits (n,V) · head ; dhead += dlogitsᵀ · x (fp32 head only) */
static void head_backward(fkd_model *m, float *dx, float *dhead, const float *dlogits,
                          const float *x, int n)
{
    int C = m->params.cfg.dim, V = m->params.cfg.vocab;
    if (m->params.p.head) {
        linear_backward(dx, 0.0f, dhead, dlogits, x, m->params.p.head, n, C, V);
        return;
    }
    int slice = (int)(fkd_weight_scratch_floats(&m->params.cfg) / (size_t)C);
    for (int v0 = 0; v0 < V; v0 += slice) {
        int nv = V - v0 < slice ? V - v0 : slice;
        m->wsrc->rows(m->wscratch, m->wsrc->user, FKD_T_HEAD, 0, (size_t)v0, (size_t)nv);
        fkd_sgemm(0, 0, n, C, nv, 1.0f, dlogits + v0, V, m->wscratch, C, v0 ? 1.0f : 0.0f, dx,
                  C, 0);
    }
}

static void layer_forward(fkd_model *m, const dims *d, int l, layer_acts *la, const float *x,
                          float *out)
{
    const fkd_model_config *c = &m->params.cfg;
    layer_norms w = norms_of(&m->params.p, d, l);
    int N = (int)d->N, C = (int)d->C, F = (int)d->F;
    int hd = C / c->n_heads;
    fkd_rmsnorm_forward(la->ln1, la->rstd1, x, w.attn_norm, N, C, c->norm_eps);
    block_forward(m, la->q, la->ln1, FKD_T_WQ, l, 0.0f);
    block_forward(m, la->k, la->ln1, FKD_T_WK, l, 0.0f);
    block_forward(m, la->v, la->ln1, FKD_T_WV, l, 0.0f);
    fkd_rope_forward(la->q, m->rope_cos, m->rope_sin, m->B, m->T, c->n_heads, hd, 0);
    fkd_rope_forward(la->k, m->rope_cos, m->rope_sin, m->B, m->T, c->n_kv_heads, hd, 0);
    fkd_attention_forward(la->atty, la->att, la->q, la->k, la->v, m->B, m->T, c->n_heads,
                          c->n_kv_heads, hd);
    memcpy(la->resid2, x, d->N * d->C * sizeof(float));
    block_forward(m, la->resid2, la->atty, FKD_T_WO, l, 1.0f);
    fkd_rmsnorm_forward(la->ln2, la->rstd2, la->resid2, w.ffn_norm, N, C, c->norm_eps);
    block_forward(m, la->h1, la->ln2, FKD_T_W1, l, 0.0f);
    block_forward(m, la->h3, la->ln2, FKD_T_W3, l, 0.0f);
    float *gated = m->acts->fbuf1; /* scratch: recomputed in backward */
    fkd_swiglu_forward(gated, la->h1, la->h3, N, F);
    memcpy(out, la->resid2, d->N * d->C * sizeof(float));
    block_forward(m, out, gated, FKD_T_W2, l, 1.0f);
}

static layer_acts *acts_of_layer(fkd_model *m, int l)
{
    return &m->acts->layers[m->recompute ? 0 : l];
}

int fkd_model_forward(fkd_model *m, const int32_t *tokens, float **logits_out)
{
    const fkd_model_config *c = &m->params.cfg;
    dims d = model_dims(c, m->B, m->T);
    fkd_acts *a = m->acts;
    int N = (int)d.N, C = (int)d.C;
    embed_tokens(m, a->resid, tokens, N);
    for (int l = 0; l < c->n_layers; l++)
        layer_forward(m, &d, l, acts_of_layer(m, l), a->resid + l * d.N * d.C,
                      a->resid + (l + 1) * d.N * d.C);
    float *last = a->resid + d.L * d.N * d.C;
    fkd_rmsnorm_forward(a->lnf, a->rstd_f, last, m->params.p.final_norm, N, C, c->norm_eps);
    if (!logits_out) return 0; /* training: backward runs the head chunk by chunk */
    *logits_out = NULL;
    if (!a->logits) a->logits = fkd_alloc_floats(d.N * d.V);
    if (!a->logits) return -1;
    head_forward(m, a->logits, a->lnf, N);
    *logits_out = a->logits;
    return 0;
}

/* dW pointer, or NULL when that tensor is frozen. */
static float *grad_or_null(const fkd_model *m, int tensor, float *g)
{
    return (!m->grads || (m->frozen && m->frozen[tensor])) ? NULL : g;
}

/* dx = dout·W (overwrite, beta 0) or accumulate (beta 1); dW += doutᵀ·x. */
static void linear_backward(float *dx, float beta, float *dw, const float *dout, const float *x,
                            const float *w, int N, int C, int OC)
{
    if (dx) fkd_sgemm(0, 0, N, C, OC, 1.0f, dout, OC, w, C, beta, dx, C, 0);
    if (dw) fkd_sgemm(1, 0, OC, C, N, 1.0f, dout, OC, x, C, 1.0f, dw, C, 0);
}

static void layer_backward(fkd_model *m, const dims *d, int l, layer_acts *la, const float *x)
{
    /* On entry a->dresid holds dL/d(layer output); on exit dL/d(layer input). */
    const fkd_model_config *c = &m->params.cfg;
    fkd_acts *a = m->acts;
    layer_norms w = norms_of(&m->params.p, d, l);
    layer_norms g = norms_of(&m->g, d, l);
    int N = (int)d->N, C = (int)d->C, F = (int)d->F;
    int hd = C / c->n_heads;

    /* MLP: out = resid2 + W2·(silu(h1)*h3) */
    float *gated = a->fbuf1, *dgated = a->fbuf2;
    fkd_swiglu_forward(gated, la->h1, la->h3, N, F);
    block_backward(m, dgated, 0.0f, a->dresid, gated, FKD_T_W2, l);
    float *dh1 = dgated, *dh3 = gated; /* both free now: reuse in place */
    fkd_swiglu_backward(dh1, dh3, dgated, la->h1, la->h3, N, F);
    block_backward(m, a->dln, 0.0f, dh1, la->ln2, FKD_T_W1, l);
    block_backward(m, a->dln, 1.0f, dh3, la->ln2, FKD_T_W3, l);
    fkd_rmsnorm_backward(a->dresid, grad_or_null(m, FKD_T_FFN_NORM, g.ffn_norm), a->dln,
                         la->resid2, w.ffn_norm, la->rstd2, N, C);

    /* Attention: resid2 = x + Wo·attn(q, k, v) */
    block_backward(m, a->datty, 0.0f, a->dresid, la->atty, FKD_T_WO, l);
    fkd_attention_backward(a->dq, a->dk, a->dv, a->datt, a->datty, la->att, la->q, la->k, la->v,
                           m->B, m->T, c->n_heads, c->n_kv_heads, hd);
    fkd_rope_backward(a->dq, m->rope_cos, m->rope_sin, m->B, m->T, c->n_heads, hd, 0);
    fkd_rope_backward(a->dk, m->rope_cos, m->rope_sin, m->B, m->T, c->n_kv_heads, hd, 0);
    block_backward(m, a->dln, 0.0f, a->dq, la->ln1, FKD_T_WQ, l);
    block_backward(m, a->dln, 1.0f, a->dk, la->ln1, FKD_T_WK, l);
    block_backward(m, a->dln, 1.0f, a->dv, la->ln1, FKD_T_WV, l);
    fkd_rmsnorm_backward(a->dresid, grad_or_null(m, FKD_T_ATTN_NORM, g.attn_norm), a->dln, x,
                         w.attn_norm, la->rstd1, N, C);
}

/* The head and the loss, FKD_HEAD_CHUNK_BYTES of logits at a time: per chunk
 * of positions, logits = lnf·headᵀ, the loss turns them into their gradient
 * in place, then dlnf = dlogits·head and dhead += dlogitsᵀ·lnf (a tied head
 * adds into the embedding's gradient). The (N,V) logits never exist at once;
 * every row is the same as the unchunked loss's, since the count of
 * positions that scales the mean is taken over the whole batch first.
 * backward 0: the loss alone (evaluation), no gradient written. */
static void head_loss(fkd_model *m, const dims *d, const int32_t *targets,
                      const fkd_soft_labels *soft, const fkd_loss_config *lc,
                      fkd_loss_stats *stats, float grad_scale, int backward)
{
    fkd_acts *a = m->acts;
    int N = (int)d->N, C = (int)d->C, V = (int)d->V;
    int max_chunk = (int)head_rows(d, m->recompute);
    int chunk = m->head_chunk >= 1 && m->head_chunk <= max_chunk ? m->head_chunk : max_chunk;
    int head_tensor = m->params.cfg.tie_embeddings ? FKD_T_TOK_EMB : FKD_T_HEAD;
    float *dhead = grad_or_null(m, head_tensor, m->g.head);
    int64_t n_pos = fkd_loss_count(targets, soft, N, V);
    float row_scale = n_pos > 0 ? grad_scale / (float)n_pos : 0.0f;
    fkd_loss_sums sums = {0};
    for (int i0 = 0; i0 < N; i0 += chunk) {
        int n = N - i0 < chunk ? N - i0 : chunk;
        const float *x = a->lnf + (size_t)i0 * C;
        head_forward(m, a->head_buf, x, n);
        fkd_loss_rows(backward ? a->head_buf : NULL, &sums, a->head_buf, targets, soft, lc, i0,
                      n, V, row_scale);
        if (backward) head_backward(m, a->dln + (size_t)i0 * C, dhead, a->head_buf, x, n);
    }
    fkd_loss_stats_from_sums(stats, &sums);
}

void fkd_model_loss(fkd_loss_stats *stats, fkd_model *m, const int32_t *targets)
{
    dims d = model_dims(&m->params.cfg, m->B, m->T);
    head_loss(m, &d, targets, NULL, NULL, stats, 1.0f, 0);
}

void fkd_model_backward(fkd_model *m, const int32_t *tokens, const int32_t *targets,
                        const fkd_soft_labels *soft, const fkd_loss_config *lc,
                        fkd_loss_stats *stats, float grad_scale)
{
    const fkd_model_config *c = &m->params.cfg;
    dims d = model_dims(c, m->B, m->T);
    fkd_acts *a = m->acts;
    int N = (int)d.N, C = (int)d.C;

    head_loss(m, &d, targets, soft, lc, stats, grad_scale, 1);
    memset(a->dresid, 0, d.N * d.C * sizeof(float));
    fkd_rmsnorm_backward(a->dresid, grad_or_null(m, FKD_T_FINAL_NORM, m->g.final_norm), a->dln,
                         a->resid + d.L * d.N * d.C, m->params.p.final_norm, a->rstd_f, N, C);

    for (int l = c->n_layers - 1; l >= 0; l--) {
        const float *x = a->resid + l * d.N * d.C;
        layer_acts *la = acts_of_layer(m, l);
        /* With recompute the one activation slot holds the last layer's
         * forward; any other layer is rebuilt from its saved input. It
         * rewrites resid[l+1] with the values forward wrote there. */
        if (m->recompute && l != c->n_layers - 1)
            layer_forward(m, &d, l, la, x, a->resid + (l + 1) * d.N * d.C);
        layer_backward(m, &d, l, la, x);
    }
    if (grad_or_null(m, FKD_T_TOK_EMB, m->g.tok_emb))
        fkd_embedding_backward(m->g.tok_emb, a->dresid, tokens, N, C);
}
