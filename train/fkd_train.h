/* fkd_train.h — fedkd's training library: a llama-style decoder-only
 * transformer with paired forward/backward kernels over flat float buffers,
 * its losses (cross-entropy, top-k distillation, FedProx), optimizers,
 * checkpoints, inference with a KV cache, sampling, and evaluation.
 *
 * Shape of the model (llama): token embedding, L blocks of
 *   x += Wo · attn(rope(Wq·rms(x)), rope(Wk·rms(x)), Wv·rms(x))   (causal, GQA)
 *   x += W2 · (silu(W1·rms(x)) * W3·rms(x))                       (SwiGLU)
 * then a final RMSNorm and the output head (tied to the embedding or not).
 * RoPE rotates interleaved pairs (x[2i], x[2i+1]) as GGUF's llama does.
 *
 * Memory is owned in one place per kind, as in llm.c: one arena for the
 * parameters, one for their gradients, one for optimizer moments, one for
 * activations (sized from the config and the batch). A training step
 * allocates nothing. Weight matrices are (out, in) row-major, as in GGUF and
 * PyTorch, so y = x · Wᵀ.
 *
 * Threads: matrix products run on BLIS, element-wise work on OpenMP; both
 * take the count from fkd_train_set_threads().
 *
 * Not here: the network, compression, or who sends what (wire/, compress/,
 * client/, coordinator/). This library knows nothing of them.
 */
#ifndef FKD_TRAIN_H
#define FKD_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "fkd_common.h"

/* ======================================================================== *
 * Configuration
 * ======================================================================== */
typedef struct {
    int vocab;          /* tokens in the vocabulary (256 for bytes) */
    int dim;            /* model width C */
    int n_layers;       /* L */
    int n_heads;        /* query heads H; head size hd = dim / n_heads */
    int n_kv_heads;     /* key/value heads KV, divides H (grouped-query attention) */
    int ffn_hidden;     /* SwiGLU hidden width F */
    int max_seq;        /* longest context the model is used with */
    int tie_embeddings; /* 1: the head is the embedding matrix */
    float rope_theta;   /* RoPE frequency base (10000 for llama 1/2, 100000 SmolLM2) */
    float norm_eps;     /* RMSNorm epsilon */
} fkd_model_config;

/* The shapes the project names: student-S (the benchmark shape) and the
 * default teacher (about 4x its parameters). */
fkd_model_config fkd_config_student_s(void);
fkd_model_config fkd_config_teacher_default(void);
int fkd_config_validate(const fkd_model_config *cfg, fkd_error *err);
size_t fkd_config_param_count(const fkd_model_config *cfg);
/* Forward FLOPs per token at context length seq (matrix products + attention). */
double fkd_config_flops_per_token(const fkd_model_config *cfg, int seq);

/* ======================================================================== *
 * Parameters: named pointers into one arena, in checkpoint order.
 * Per-layer tensors are stacked: wq is (L, H*hd, C), and so on.
 * ======================================================================== */
enum {
    FKD_T_TOK_EMB, FKD_T_ATTN_NORM, FKD_T_WQ, FKD_T_WK, FKD_T_WV, FKD_T_WO,
    FKD_T_FFN_NORM, FKD_T_W1, FKD_T_W3, FKD_T_W2, FKD_T_FINAL_NORM, FKD_T_HEAD,
    FKD_T_COUNT
};
/* A tensor kind's name in checkpoints and option lists ("tok_emb", "wq",
 * ...); "" for a number that is not a kind. */
const char *fkd_tensor_name(int tensor);

typedef struct {
    float *tok_emb;    /* (V, C) */
    float *attn_norm;  /* (L, C) */
    float *wq;         /* (L, H*hd, C) */
    float *wk;         /* (L, KV*hd, C) */
    float *wv;         /* (L, KV*hd, C) */
    float *wo;         /* (L, C, H*hd) */
    float *ffn_norm;   /* (L, C) */
    float *w1;         /* (L, F, C)   gate */
    float *w3;         /* (L, F, C)   up */
    float *w2;         /* (L, C, F)   down */
    float *final_norm; /* (C) */
    float *head;       /* (V, C); equals tok_emb when tied */
} fkd_param_ptrs;

typedef struct {
    const char *name;  /* "tok_emb", "wq", ... */
    size_t offset;     /* in floats from the arena's start */
    size_t count;      /* floats */
    int ndim;
    int shape[3];
    int is_matrix;     /* 1: a weight matrix (quantizable, prunable); 0: norm gains */
} fkd_tensor_info;

/* Fills infos[FKD_T_COUNT]; a tied head has count 0. Returns total floats. */
size_t fkd_param_layout(fkd_tensor_info infos[FKD_T_COUNT], const fkd_model_config *cfg);

typedef struct {
    fkd_model_config cfg;
    fkd_tensor_info tensors[FKD_T_COUNT];
    size_t n_params;   /* floats in the arena */
    float *memory;     /* the arena (64-byte aligned) */
    fkd_param_ptrs p;  /* pointers into memory */
} fkd_params;

int fkd_params_init(fkd_params *params, const fkd_model_config *cfg, fkd_error *err);
/* Weights ~ N(0, 0.02) (output projections scaled by 1/sqrt(2L)), norm gains 1. */
void fkd_params_randomize(fkd_params *params, uint64_t seed);
void fkd_params_free(fkd_params *params);
/* Points ptrs at the tensors of a flat buffer laid out as params is. */
void fkd_param_ptrs_bind(fkd_param_ptrs *ptrs, float *memory, const fkd_tensor_info *infos,
                         int tie_embeddings);

/* ======================================================================== *
 * Checkpoints: "FKDCKPT\0", format version, config, tensor table, data,
 * CRC-32 of everything before it; all little-endian. Saving is atomic.
 * ======================================================================== */
#define FKD_CHECKPOINT_VERSION 1
int fkd_checkpoint_save(const char *path, const fkd_params *params, fkd_error *err);
/* Loads into a fresh params (initialised here); refuses truncated, corrupted,
 * or newer files with a message that names the problem. */
int fkd_checkpoint_load(fkd_params *params, const char *path, fkd_error *err);
/* Same, from bytes in memory (for weights received over the network). */
int fkd_checkpoint_decode(fkd_params *params, const uint8_t *data, size_t bytes, fkd_error *err);
/* Encodes into a fresh malloc'ed buffer. */
int fkd_checkpoint_encode(uint8_t **data, size_t *bytes, const fkd_params *params, fkd_error *err);

/* ======================================================================== *
 * Layer kernels: paired forward/backward over flat buffers (llm.c style).
 * Backward functions ACCUMULATE (+=) into parameter gradients and into
 * input gradients, so callers zero them once.
 * N = number of token positions (B*T).
 * ======================================================================== */
/* out (N,C) = emb[tokens] ; demb (V,C) += scatter(dout) */
void fkd_embedding_forward(float *out, const int32_t *tokens, const float *emb, int N, int C);
void fkd_embedding_backward(float *demb, const float *dout, const int32_t *tokens, int N, int C);

/* out (N,C) = x / rms(x) * g ; rstd (N) saved for backward */
void fkd_rmsnorm_forward(float *out, float *rstd, const float *x, const float *g, int N, int C,
                         float eps);
void fkd_rmsnorm_backward(float *dx, float *dg, const float *dout, const float *x,
                          const float *g, const float *rstd, int N, int C);

/* out (N,OC) = x (N,C) · Wᵀ, W (OC,C).  beta=1 accumulates into out. */
void fkd_matmul_forward(float *out, const float *x, const float *w, int N, int C, int OC,
                        float beta);
/* dx (N,C) += dout · W (NULL to skip);  dw (OC,C) += doutᵀ · x (NULL to skip) */
void fkd_matmul_backward(float *dx, float *dw, const float *dout, const float *x,
                         const float *w, int N, int C, int OC);

/* In place on x (B,T,nh,hd) with positions pos0..pos0+T-1; cos/sin (max_seq, hd/2).
 * Backward is the inverse rotation, applied in place to the gradient. */
void fkd_rope_tables(float *cos_table, float *sin_table, int max_seq, int head_dim, float theta);
void fkd_rope_forward(float *x, const float *cos_table, const float *sin_table, int B, int T,
                      int nh, int hd, int pos0);
void fkd_rope_backward(float *dx, const float *cos_table, const float *sin_table, int B, int T,
                       int nh, int hd, int pos0);

/* Causal grouped-query attention.
 * q (B,T,H,hd), k and v (B,T,KV,hd) -> out (B,T,H,hd); att (B,H,T,T) keeps
 * the softmax probabilities for backward (rows above the diagonal are 0). */
void fkd_attention_forward(float *out, float *att, const float *q, const float *k,
                           const float *v, int B, int T, int H, int KV, int hd);
/* datt is scratch (B,H,T,T). dq is overwritten; dk, dv are overwritten. */
void fkd_attention_backward(float *dq, float *dk, float *dv, float *datt, const float *dout,
                            const float *att, const float *q, const float *k, const float *v,
                            int B, int T, int H, int KV, int hd);

/* out (N,F) = silu(a) * b ; da, db (N,F) overwritten */
void fkd_swiglu_forward(float *out, const float *a, const float *b, int N, int F);
void fkd_swiglu_backward(float *da, float *db, const float *dout, const float *a,
                         const float *b, int N, int F);

/* x (n) += y (n) */
void fkd_residual_forward(float *x, const float *y, size_t n);

/* ======================================================================== *
 * Losses over logits (N,V).
 * ======================================================================== */
/* Soft labels of a teacher: per position, the top-k token ids with their
 * probabilities at temperature T. The mass the teacher puts outside the top
 * k (1 - sum of probs) is kept as one "rest" bucket: the distillation loss is
 * the KL divergence between the teacher's and the student's distributions
 * coarsened to {top-k ids, rest}. A position whose probs are all 0 carries
 * no soft label. */
typedef struct {
    int k;
    const int32_t *ids;   /* (N,k) */
    const float *probs;   /* (N,k) */
} fkd_soft_labels;

typedef struct {
    float alpha;          /* weight of the KD term where a soft label exists: a*KD + (1-a)*CE */
    float temperature;    /* T of the soft labels; KD is scaled by T^2 */
} fkd_loss_config;

typedef struct {
    double loss;          /* mean objective over counted positions */
    double ce;            /* mean cross-entropy over positions with a target */
    double kd;            /* mean T^2*KL over positions with a soft label */
    int64_t n_ce, n_kd;   /* positions counted */
    int64_t n_correct;    /* argmax == target */
} fkd_loss_stats;

/* Computes the loss and writes dlogits (N,V) (may alias logits) scaled by
 * 1/positions; dlogits NULL computes the loss only (evaluation).
 * targets[i] < 0 means "no hard target". soft may be NULL. */
void fkd_loss_forward_backward(float *dlogits, fkd_loss_stats *stats, const float *logits,
                               const int32_t *targets, const fkd_soft_labels *soft,
                               const fkd_loss_config *lc, int N, int V);

/* ======================================================================== *
 * The model: parameters + gradients + activations for a (B,T) batch.
 * ======================================================================== */
typedef struct fkd_acts fkd_acts; /* activation buffers, private to model.c */

typedef struct {
    fkd_params params;       /* owned */
    float *grads;            /* one arena, same layout as params.memory */
    fkd_param_ptrs g;        /* pointers into grads */
    fkd_acts *acts;          /* sized for (B,T) */
    int B, T;
    float *rope_cos, *rope_sin; /* (max_seq, hd/2) */
    int recompute;           /* 1: keep only layer inputs, recompute the rest in backward */
    const uint8_t *frozen;   /* optional (FKD_T_COUNT): 1 = tensor gets no gradient */
    size_t act_floats;       /* size of the activation arena, for reports */
    int owns_params;         /* 0 when made by fkd_model_init_borrowed */
    int head_chunk;          /* positions per chunk of the head + loss in backward; init sets
                              * fkd_model_head_chunk(), a caller may lower it (tests do) */
    /* LoRA / QLoRA (fkd_model_init_lora): the base is frozen and has no
     * gradient arena (grads is NULL); block matrices come from wsrc when set. */
    const struct fkd_weight_source *wsrc; /* NULL: the fp32 params */
    float *wscratch;         /* one layer's matrix materialised from wsrc */
    struct fkd_lora *lora;   /* adapters (not owned), or NULL */
    float *lora_scratch;     /* (2, B*T, rank) */
} fkd_model;

/* Takes ownership of params (moved in; the caller's copy is cleared). */
int fkd_model_init(fkd_model *m, fkd_params *params, int B, int T, int recompute,
                   fkd_error *err);
/* Same, but borrows params: they must outlive m and are not freed with it
 * (evaluation and soft labels on a model someone else owns). */
int fkd_model_init_borrowed(fkd_model *m, const fkd_params *params, int B, int T, int recompute,
                            fkd_error *err);
void fkd_model_free(fkd_model *m);
/* Bytes the activations of a (B,T) training step need, without allocating
 * them (the head's logits count one chunk, not B*T rows). */
size_t fkd_model_activation_bytes(const fkd_model_config *cfg, int B, int T, int recompute);

/* Training never holds the (B*T,V) logits: backward computes the head and
 * the loss over chunks of positions, equal chunks of at most
 * FKD_HEAD_CHUNK_BYTES of logits, or FKD_HEAD_CHUNK_LEAN_BYTES with
 * recomputation (the memory-saving mode). A 49,152-token vocabulary and
 * 4 x 256 tokens: 2 chunks of 512 positions (96 MB) or 13 of 80 (15 MB),
 * instead of 192 MB of logits. Each chunk's three products pack the whole
 * head matrix again: below ~512 positions they lose speed (benchmarks.md). */
#define FKD_HEAD_CHUNK_BYTES ((size_t)96 << 20)
#define FKD_HEAD_CHUNK_LEAN_BYTES ((size_t)16 << 20)
/* Positions per chunk for a (B,T) batch: a multiple of 8 when 8 fit, <= B*T. */
int fkd_model_head_chunk(const fkd_model_config *cfg, int B, int T, int recompute);

/* Forward pass over tokens (B,T). With logits_out, leaves the logits
 * (B*T,V) there (evaluation, soft labels); their buffer is allocated by the
 * first such call and kept (-1 and *logits_out NULL when that allocation
 * fails). With logits_out NULL, stops at the final norm: the training
 * forward, followed by fkd_model_backward. */
int fkd_model_forward(fkd_model *m, const int32_t *tokens, float **logits_out);
/* Head + loss (chunked) + full backward; grads ACCUMULATE (call
 * fkd_model_zero_grad first). Runs after either kind of forward. */
void fkd_model_backward(fkd_model *m, const int32_t *tokens, const int32_t *targets,
                        const fkd_soft_labels *soft, const fkd_loss_config *lc,
                        fkd_loss_stats *stats, float grad_scale);
void fkd_model_zero_grad(fkd_model *m);
/* The cross-entropy of the last training forward (logits_out NULL) against
 * targets, no gradient: the head runs m->head_chunk positions at a time, so
 * evaluation never holds the (B*T,V) logits either. */
void fkd_model_loss(fkd_loss_stats *stats, fkd_model *m, const int32_t *targets);

/* ======================================================================== *
 * Memory planning: a device gives a client a budget, not the whole machine.
 * The plan trains the same effective batch in micro-batches (gradient
 * accumulation), recomputing activations when that is what makes it fit.
 * ======================================================================== */
#define FKD_RUNTIME_OVERHEAD_BYTES ((size_t)24 << 20) /* code, libraries, BLIS buffers */

typedef struct {
    int micro_batch;          /* sequences per forward/backward */
    int n_micro;              /* micro-batches per optimizer step */
    int recompute;            /* 1: activation recomputation */
    size_t estimated_bytes;   /* parameters + gradients + moments + activations + overhead */
} fkd_memory_plan;

/* budget_bytes = 0 means no limit (one micro-batch of the whole batch).
 * Fails with FKD_E_LIMIT, saying how much the smallest plan needs, when
 * nothing fits. */
int fkd_memory_plan_make(fkd_memory_plan *plan, const fkd_model_config *cfg, int batch, int seq,
                         int optimizer_kind, size_t budget_bytes, fkd_error *err);
/* Same, with frozen tensors (FKD_T_COUNT flags, as fkd_model.frozen; NULL =
 * none): a frozen tensor counts its parameters only, no gradient or moments. */
int fkd_memory_plan_make_frozen(fkd_memory_plan *plan, const fkd_model_config *cfg,
                                const uint8_t *frozen, int batch, int seq, int optimizer_kind,
                                size_t budget_bytes, fkd_error *err);

/* ======================================================================== *
 * Optimizers
 * ======================================================================== */
enum fkd_optimizer_kind { FKD_OPT_ADAMW = 0, FKD_OPT_SGD = 1 };
enum fkd_lr_schedule { FKD_LR_CONSTANT = 0, FKD_LR_COSINE = 1, FKD_LR_LINEAR = 2 };

typedef struct {
    int kind;             /* enum fkd_optimizer_kind */
    float lr;             /* peak learning rate */
    float beta1, beta2, eps;
    float weight_decay;   /* decoupled (AdamW); applied to matrices only */
    float momentum;       /* SGD */
    float grad_clip;      /* global-norm clipping; 0 = off */
    int schedule;         /* enum fkd_lr_schedule */
    int warmup_steps;
    int total_steps;      /* for the decay; 0 = no decay */
    float min_lr_ratio;   /* decay floor as a fraction of lr */
    float prox_mu;        /* FedProx: adds mu*(w - w_ref) to the gradient; 0 = off */
} fkd_optimizer_config;

fkd_optimizer_config fkd_optimizer_defaults(void);

typedef struct {
    fkd_optimizer_config cfg;
    float *m, *v;         /* moments, one arena (2 * n) */
    size_t n;
    int64_t step;
    const float *prox_ref;  /* FedProx reference weights (n), not owned */
    const fkd_tensor_info *tensors; /* for per-tensor weight decay */
    const uint8_t *mask;    /* optional (n): 0 = weight pruned, kept at 0 */
    const uint8_t *frozen;  /* optional (FKD_T_COUNT): 1 = tensor left as it is; its gradient
                             * and moments are never read (set it to the model's frozen) */
} fkd_optimizer;

int fkd_optimizer_init(fkd_optimizer *opt, const fkd_optimizer_config *cfg,
                       const fkd_params *params, fkd_error *err);
void fkd_optimizer_free(fkd_optimizer *opt);
float fkd_optimizer_lr(const fkd_optimizer *opt); /* lr for the next step */
/* One update of params from grads; returns the gradient norm before clipping. */
float fkd_optimizer_step(fkd_optimizer *opt, float *params, float *grads);

/* ======================================================================== *
 * Frozen base weights and LoRA adapters (train/weight_source.c, lora.c,
 * lora_io.c). A LoRA model adds to each adapted block matrix W (out, in) of
 * every layer a low-rank term:  y = x·Wᵀ + (alpha/r) · (x·Aᵀ)·Bᵀ  with
 * A (r, in) ~ N(0, 1/in) and B (out, r) = 0, so training starts from the
 * base. Only A and B are trained: one arena for them, one for their
 * gradients, AdamW (fkd_optimizer) over those arenas only.
 *
 * The base stays frozen and may live elsewhere than in fp32 parameters: a
 * weight source materialises one layer's matrix into the model's scratch
 * when a block matmul needs it (forward, and again for dx in backward), so a
 * QLoRA device holds the base int8/int4 plus one fp32 matrix (compress/
 * implements the source over a quantized model).
 * ======================================================================== */
/* One layer's slice of a block matrix (wq wk wv wo w1 w3 w2): rows = its
 * outputs, cols = its inputs. -1 for any other tensor. */
int fkd_config_matrix_shape(int *rows, int *cols, const fkd_model_config *cfg, int tensor);
int fkd_tensor_is_block_matrix(int tensor);

/* Writes rows [row0, row0+n_rows) of layer `layer`'s slice of `tensor` as
 * fp32 (n_rows, cols) into out. Serves the block matrices, and also
 * FKD_T_TOK_EMB / FKD_T_HEAD (layer 0, (V, C)) for a base that does not
 * hold them. Cannot fail: a source checks its storage when it is made. */
typedef void (*fkd_weight_rows_fn)(float *out, void *user, int tensor, int layer, size_t row0,
                                   size_t n_rows);
typedef struct fkd_weight_source {
    fkd_weight_rows_fn rows;
    void *user;
} fkd_weight_source;

/* Parameters holding only the tensors with held[t] = 1; the others have
 * count 0 and a NULL pointer (their values come from a weight source). */
int fkd_params_init_held(fkd_params *params, const fkd_model_config *cfg,
                         const uint8_t held[FKD_T_COUNT], fkd_error *err);
/* held[] of a LoRA base over a weight source: everything but the block matrices. */
void fkd_params_held_without_blocks(uint8_t held[FKD_T_COUNT]);

#define FKD_LORA_MAX_RANK 1024
#define FKD_LORA_DEFAULT_RANK 8
#define FKD_LORA_DEFAULT_ALPHA 16.0f

typedef struct {
    int rank;                      /* r, in [1, FKD_LORA_MAX_RANK] */
    float alpha;                   /* the term is scaled by alpha / r */
    uint8_t targets[FKD_T_COUNT];  /* 1: adapt this block matrix in every layer */
} fkd_lora_config;

/* Rank 8, alpha 16, on wq wk wv wo w1 w3 w2. */
fkd_lora_config fkd_lora_defaults(void);
/* "wq,wk,wv,wo,w1,w3,w2" (any subset, comma-separated; "all" = every one). */
int fkd_lora_parse_targets(uint8_t targets[FKD_T_COUNT], const char *list, fkd_error *err);

typedef struct fkd_lora {
    fkd_lora_config cfg;
    fkd_model_config model;   /* the shape it adapts */
    float scale;              /* alpha / rank */
    /* Per adapted tensor t, one contiguous range of both arenas: A of every
     * layer (L, r, in) then B of every layer (L, out, r). count 0 for
     * tensors without adapters. Ranges are in tensor order. */
    fkd_tensor_info tensors[FKD_T_COUNT];
    size_t n;                 /* floats in each arena */
    float *params;            /* A and B of every target */
    float *grads;             /* same layout; backward ACCUMULATES */
} fkd_lora;

/* A random (seeded), B zero. */
int fkd_lora_init(fkd_lora *lora, const fkd_model_config *model, const fkd_lora_config *cfg,
                  uint64_t seed, fkd_error *err);
void fkd_lora_free(fkd_lora *lora);
void fkd_lora_zero_grad(fkd_lora *lora);
/* A (r, in) and B (out, r) of one tensor and layer inside an arena laid out
 * as lora->params (pass lora->params or lora->grads). NULL without adapter. */
float *fkd_lora_a(const fkd_lora *lora, float *arena, int tensor, int layer);
float *fkd_lora_b(const fkd_lora *lora, float *arena, int tensor, int layer);

/* Kernels. out (N,OC) += s · (x (N,C) · Aᵀ) · Bᵀ ;  u (N,r) scratch. */
void fkd_lora_forward(float *out, float *u, const float *x, const float *a, const float *b,
                      float s, int N, int C, int OC, int r);
/* dx (N,C) += s·(dout·B)·A ; da (r,C) += s·(dout·B)ᵀ·x ; db (OC,r) += s·doutᵀ·(x·Aᵀ).
 * u, du (N,r) scratch. dx may be NULL. */
void fkd_lora_backward(float *dx, float *da, float *db, float *u, float *du, const float *dout,
                       const float *x, const float *a, const float *b, float s, int N, int C,
                       int OC, int r);

/* fkd_optimizer over the adapters only (weight decay applies to A and B);
 * step with fkd_optimizer_step(opt, lora->params, lora->grads). */
int fkd_lora_optimizer_init(fkd_optimizer *opt, const fkd_optimizer_config *cfg,
                            const fkd_lora *lora, fkd_error *err);

/* W += (alpha/r) · B·A for every adapted matrix: params then computes what
 * base + adapters computed. params must hold the block matrices in fp32. */
int fkd_lora_merge(fkd_params *params, const fkd_lora *lora, fkd_error *err);
/* W += weight · (alpha/r) · B·A: the coordinator's FedAvg of LoRA clients
 * merges each client's product with its weight (n_i / n) into the fp32
 * master, which averages the updates exactly (averaging A and B separately
 * would not); the next round's clients start fresh adapters (B = 0). */
int fkd_lora_merge_weighted(fkd_params *params, const fkd_lora *lora, float weight,
                            fkd_error *err);

/* The model of a LoRA client: takes ownership of base (as fkd_model_init),
 * which may hold only its norm gains when src is given (fkd_params_init_held):
 * the source then gives block matrices, embedding rows and head slices.
 * The base gets no gradient and no gradient arena; backward accumulates into
 * lora->grads (fkd_model_zero_grad zeroes them). src and lora must outlive m;
 * lora may be NULL (a forward-only model over a weight source). */
int fkd_model_init_lora(fkd_model *m, fkd_params *base, const fkd_weight_source *src,
                        fkd_lora *lora, int B, int T, int recompute, fkd_error *err);

/* Adapter floats (A and B of every target and layer): what a client trains
 * and uploads; 0 for an invalid configuration. */
size_t fkd_lora_param_count(const fkd_model_config *model, const fkd_lora_config *cfg);
/* Bytes a LoRA training step holds besides the base and the activations:
 * adapters, their gradients and AdamW moments, the lora scratch for a
 * (B,T) batch and, with a weight source, one materialised matrix. */
size_t fkd_lora_train_bytes(const fkd_model_config *model, const fkd_lora_config *cfg, int B,
                            int T, int with_source);
/* fkd_memory_plan_make for a LoRA client: the base takes base_bytes
 * (fp32: fkd_config_param_count * 4; quantized: fkd_qlora_base_bytes),
 * the adapters and AdamW what fkd_lora_train_bytes says. */
int fkd_memory_plan_make_lora(fkd_memory_plan *plan, const fkd_model_config *cfg,
                              const fkd_lora_config *lora, size_t base_bytes, int with_source,
                              int batch, int seq, size_t budget_bytes, fkd_error *err);

/* Serialization (what a LoRA client uploads), little-endian:
 *   "FKDLORA\0", u32 version, config (8 x u32: vocab dim n_layers n_heads
 *   n_kv_heads ffn_hidden max_seq tie_embeddings; 2 x f32 rope_theta
 *   norm_eps), u32 rank, f32 alpha, u32 target bits (bit t = tensor t),
 *   u64 n floats, n x f32 (the params arena), CRC-32 of all before it.
 * The decoder refuses anything whose fields disagree with each other, with
 * `expect` (when not NULL: the shape the coordinator trains), or with
 * exactly `bytes`; non-finite values; a bad CRC. Never reads past bytes. */
#define FKD_LORA_VERSION 1
#define FKD_LORA_MAX_FLOATS ((size_t)1 << 30)
size_t fkd_lora_encoded_bytes(const fkd_lora *lora);
int fkd_lora_encode(uint8_t **data, size_t *bytes, const fkd_lora *lora, fkd_error *err);
int fkd_lora_decode(fkd_lora *lora, const fkd_model_config *expect, const uint8_t *data,
                    size_t bytes, fkd_error *err);
int fkd_lora_save(const char *path, const fkd_lora *lora, fkd_error *err); /* atomic */
int fkd_lora_load(fkd_lora *lora, const fkd_model_config *expect, const char *path,
                  fkd_error *err);

/* ======================================================================== *
 * Threads
 * ======================================================================== */
void fkd_train_set_threads(int n);
int fkd_train_get_threads(void);

/* ======================================================================== *
 * Inference: KV cache, one token at a time (llama2.c style), and sampling.
 * ======================================================================== */
typedef struct {
    const fkd_params *params;
    float *memory;          /* one arena for everything below */
    float *x, *xb, *xb2, *q, *k, *v, *att, *h1, *h3, *logits;
    float *key_cache, *value_cache; /* (L, max_seq, KV*hd) */
    float *rope_cos, *rope_sin;
    int pos;
} fkd_infer;

int fkd_infer_init(fkd_infer *st, const fkd_params *params, fkd_error *err);
void fkd_infer_free(fkd_infer *st);
void fkd_infer_reset(fkd_infer *st);
/* Feeds one token at position st->pos and returns the logits (V). */
float *fkd_infer_step(fkd_infer *st, int32_t token);
/* Any one-token model behind two functions (fkd_infer here, compress's
 * quantized fkd_qinfer): step feeds a token and returns the logits (NULL
 * when refused), reset empties the context. */
typedef float *(*fkd_step_fn)(void *state, int32_t token);
typedef void (*fkd_reset_fn)(void *state);
float *fkd_infer_step_fn(void *st, int32_t token);
void fkd_infer_reset_fn(void *st);

typedef struct {
    float prob;
    int32_t id;
} fkd_prob_index;

typedef struct {
    float temperature;      /* 0 = greedy */
    int top_k;              /* 0 = off */
    float top_p;            /* 1 = off */
    fkd_rng rng;
    fkd_prob_index *candidates; /* (V) scratch */
    int vocab;
} fkd_sampler;

int fkd_sampler_init(fkd_sampler *s, int vocab, float temperature, int top_k, float top_p,
                     uint64_t seed, fkd_error *err);
void fkd_sampler_free(fkd_sampler *s);
int32_t fkd_sampler_sample(fkd_sampler *s, const float *logits);

/* ======================================================================== *
 * Evaluation on a token stream: mean loss, perplexity, bits per byte,
 * next-token accuracy. Windows of the model's max_seq, stride = window.
 * ======================================================================== */
typedef struct {
    double mean_loss;       /* nats per token */
    double perplexity;
    double bits_per_byte;   /* total bits / text bytes */
    double accuracy;        /* next-token argmax accuracy */
    int64_t tokens;         /* predictions counted */
} fkd_eval_result;

/* text_bytes: how many bytes of text the tokens encode (= n_tokens for bytes). */
int fkd_eval_tokens(fkd_eval_result *res, const fkd_params *params, const int32_t *tokens,
                    int64_t n_tokens, int64_t text_bytes, int window, fkd_error *err);
/* The protocol of llama.cpp's llama-perplexity, so the two tools' figures
 * compare: the stream cut into whole chunks of n_ctx tokens (a partial last
 * chunk is dropped), each chunk's first input replaced by bos_id when
 * bos_id >= 0 (a model whose tokenizer adds BOS), and only the second half
 * of each chunk scored: positions n_ctx/2 .. n_ctx-2 predicting the next. */
int fkd_eval_tokens_llama(fkd_eval_result *res, const fkd_params *params, const int32_t *tokens,
                          int64_t n_tokens, int64_t text_bytes, int n_ctx, int32_t bos_id,
                          fkd_error *err);

/* ======================================================================== *
 * Tokenizers: every part of fedkd takes a tokenizer and a vocabulary size.
 * BYTES maps each byte to its own id (vocab 256). BPE is the byte-level BPE
 * of GPT-2-style models (read from a GGUF file by compress/).
 * ======================================================================== */
enum fkd_tokenizer_kind { FKD_TOKENIZER_BYTES = 0, FKD_TOKENIZER_BPE = 1 };
typedef struct fkd_bpe fkd_bpe; /* BPE tables, private to tokenizer_bpe.c */

typedef struct {
    int kind;          /* enum fkd_tokenizer_kind */
    int vocab;         /* ids are in [0, vocab) */
    int32_t bos_id;    /* -1 when none */
    int32_t eos_id;    /* -1 when none */
    fkd_bpe *bpe;      /* NULL for BYTES */
} fkd_tokenizer;

void fkd_tokenizer_init_bytes(fkd_tokenizer *tok);
void fkd_tokenizer_free(fkd_tokenizer *tok);
/* Encodes text; tokens has room for capacity ids (bytes ids always suffice).
 * Special tokens are not recognised in text. */
int fkd_tokenizer_encode(int32_t *tokens, size_t capacity, size_t *n_tokens,
                         const fkd_tokenizer *tok, const uint8_t *text, size_t bytes,
                         fkd_error *err);
/* Decodes ids to bytes; out has room for capacity bytes. */
int fkd_tokenizer_decode(uint8_t *out, size_t capacity, size_t *n_bytes,
                         const fkd_tokenizer *tok, const int32_t *tokens, size_t n_tokens,
                         fkd_error *err);

/* Byte-level BPE (GPT-2 style; train/tokenizer_bpe.c) from its tables, all
 * copied: tokens[i] (token_lens[i] bytes, in GPT-2's byte-to-unicode
 * spelling), token_types[i] (GGUF's: 1 normal, 2 unknown, 3 control,
 * 4 user-defined, 5 unused, 6 byte; NULL = all normal), merges[j] "left right"
 * by priority, and the pre-tokenizer's name as GGUF's tokenizer.ggml.pre gives
 * it ("gpt2", "smollm", ...; an unknown name is refused). Any bytes encode;
 * a byte the vocabulary has no token for is left out, as Hugging Face's
 * tokenizers and llama.cpp do, so decode(encode(x)) == x exactly when all 256
 * byte tokens exist (SmolLM2 lacks 21, all rare control or non-UTF-8 bytes). */
#define FKD_BPE_MAX_TOKEN_BYTES 1024
int fkd_tokenizer_init_bpe(fkd_tokenizer *tok, const char *const *tokens,
                           const uint32_t *token_lens, const int32_t *token_types, int n_tokens,
                           const char *const *merges, const uint32_t *merge_lens, int n_merges,
                           int32_t bos_id, int32_t eos_id, const char *pre, fkd_error *err);
/* Like fkd_tokenizer_encode, and control / user-defined tokens written out
 * in the text ("<|im_start|>") become their ids. */
int fkd_tokenizer_encode_special(int32_t *tokens, size_t capacity, size_t *n_tokens,
                                 const fkd_tokenizer *tok, const uint8_t *text, size_t bytes,
                                 fkd_error *err);
/* GPT-2's byte-level spelling of byte b as UTF-8 (1 or 2 bytes); returns the length. */
int fkd_bpe_byte_spelling(char out[2], uint8_t b);

/* ======================================================================== *
 * Data (issue 3): corpora split into natural clients, token streams and
 * batches, soft-label files and the teacher pass that writes them, the
 * reusable training loop, and the one evaluation every result is reported
 * with. docs/data.md describes the formats and the choices.
 * ======================================================================== */
#define FKD_DATA_DEFAULT_DIR "/usr/share/games/fortunes"
#define FKD_DATA_WORDS_PATH "/usr/share/dict/words"
#define FKD_DATA_MAX_FILE_BYTES ((size_t)64 << 20) /* one corpus file */
#define FKD_DATA_MAX_NAME 64                       /* partition / client names */
#define FKD_DATA_SEPARATOR_BYTE 0x1E               /* ASCII record separator */

/* How a file's documents were told apart (docs/data.md, "Documents"). */
enum fkd_doc_format { FKD_DOCS_PERCENT = 0, FKD_DOCS_BLANK_LINE = 1, FKD_DOCS_WHOLE_FILE = 2 };
/* Which categories to load: the server's public ones, the clients' private
 * ones, or all (the split is a list of partition names). */
enum fkd_corpus_side { FKD_SIDE_ALL = 0, FKD_SIDE_PUBLIC = 1, FKD_SIDE_PRIVATE = 2 };

/* The default public/private split of the fortunes categories (comma lists). */
extern const char fkd_data_default_public[];
extern const char fkd_data_default_excluded[];

typedef struct {
    uint64_t offset;     /* into fkd_corpus.text */
    uint32_t bytes;
    uint32_t partition;  /* index into fkd_corpus.parts */
} fkd_doc;

typedef struct {
    char name[FKD_DATA_MAX_NAME]; /* file or sub-directory name */
    int format;                   /* enum fkd_doc_format (of its first file) */
    uint32_t first_doc, n_docs;   /* its documents are contiguous */
    uint64_t bytes;               /* text bytes of its documents */
} fkd_partition_info;

typedef struct {
    uint8_t *text;               /* all documents, back to back */
    uint64_t text_bytes;
    fkd_doc *docs;
    uint32_t n_docs;
    fkd_partition_info *parts;
    int n_parts;
    uint32_t n_duplicates;       /* documents dropped as exact repeats of earlier ones */
} fkd_corpus;

typedef struct {
    int side;                 /* enum fkd_corpus_side */
    const char *public_list;  /* comma-separated names; NULL = fkd_data_default_public */
    const char *exclude_list; /* never loaded; NULL = fkd_data_default_excluded */
    uint64_t max_bytes;       /* stop after this much text; 0 = no limit */
} fkd_corpus_options;

fkd_corpus_options fkd_corpus_defaults(int side);
/* Loads a directory whose entries (sorted by name) are the partitions: a
 * file, or a sub-directory whose files are read in name order. Skips hidden
 * entries and fortune index files (*.dat, *.u8). Empty documents and exact
 * duplicates are dropped, so no text can land in two splits; the PRIVATE
 * side also drops documents that repeat public text. A path to one file
 * loads a corpus of one partition. */
int fkd_corpus_load(fkd_corpus *c, const char *dir, const fkd_corpus_options *opt,
                    fkd_error *err);
void fkd_corpus_free(fkd_corpus *c);
/* Splits one file's bytes into documents (exposed for tests and tools):
 * calls fn(ctx, start, bytes) per non-empty document; returns the format. */
int fkd_docs_split(const uint8_t *text, size_t bytes,
                   int (*fn)(void *ctx, const uint8_t *doc, size_t doc_bytes), void *ctx);
int fkd_corpus_find_partition(const fkd_corpus *c, const char *name); /* -1 if absent */

/* ---- partitions into clients, and train/validation/test splits --------- */
enum fkd_partitioner { FKD_PARTITION_NATURAL = 0, FKD_PARTITION_IID = 1, FKD_PARTITION_DIRICHLET = 2 };
enum fkd_split { FKD_SPLIT_TRAIN = 0, FKD_SPLIT_VAL = 1, FKD_SPLIT_TEST = 2, FKD_SPLIT_COUNT = 3 };

typedef struct {
    int kind;                  /* enum fkd_partitioner */
    int n_clients;             /* IID and Dirichlet; natural: ignored */
    float alpha;               /* Dirichlet concentration (small = skewed) */
    uint64_t max_client_bytes; /* natural: a larger partition becomes several clients */
    float val_share, test_share; /* of each client's documents */
    uint32_t min_docs;         /* clients (and partitions, for natural) with fewer are dropped */
    uint64_t seed;
} fkd_partition_config;

fkd_partition_config fkd_partition_defaults(void);
int fkd_partition_parse_kind(const char *name); /* "natural" | "iid" | "dirichlet"; -1 */

typedef struct {
    char name[FKD_DATA_MAX_NAME];        /* "law", "songs-poems.2", "iid.7" */
    uint32_t *docs[FKD_SPLIT_COUNT];     /* document indices, ascending */
    uint32_t n_docs[FKD_SPLIT_COUNT];
    uint64_t bytes[FKD_SPLIT_COUNT];
    uint32_t *label_docs;                /* (n_parts) documents per source partition */
} fkd_client_data;

typedef struct {
    fkd_client_data *clients;
    int n_clients;
    int n_parts;                         /* of the corpus, the "labels" */
} fkd_federation;

int fkd_federation_build(fkd_federation *fed, const fkd_corpus *c,
                         const fkd_partition_config *cfg, fkd_error *err);
void fkd_federation_free(fkd_federation *fed);
/* The server's side in one call: the public categories of dir as a single
 * client whose train split is the teacher's training text and the transfer
 * set, with FKD_DATA_PUBLIC_HELDOUT of the documents each for validation and
 * test. The same seed gives the same split in every command. */
#define FKD_DATA_PUBLIC_HELDOUT 0.05f
int fkd_data_load_public(fkd_corpus *c, fkd_federation *fed, const char *dir,
                         const char *public_list, uint64_t seed, fkd_error *err);
/* An evenly spaced subset of docs holding about max_bytes of text (all of
 * them when they hold less), so a capped evaluation covers every partition
 * rather than the first few. Caller frees *out. */
int fkd_docs_spread(uint32_t **out, uint32_t *n_out, const fkd_corpus *c, const uint32_t *docs,
                    uint32_t n_docs, uint64_t max_bytes, fkd_error *err);
/* All clients' documents of one split, ascending (caller frees *docs). */
int fkd_federation_docs(uint32_t **docs, uint32_t *n_docs, const fkd_federation *fed, int split,
                        fkd_error *err);

/* ---- token streams and batches -------------------------------------------
 * A stream is its documents encoded and joined by a separator token:
 *   SEP d0 SEP d1 SEP ... d(n-1) SEP
 * so the model learns where a document starts and ends, and every token of a
 * document is predicted. Windows may cross a separator (as in GPT-2's
 * training), never without one. SEP is the tokenizer's eos when it has one,
 * else the token of byte 0x1E. Optional soft labels are aligned with the
 * tokens: soft label i is the teacher's distribution of token i+1. */
typedef struct {
    int32_t *tokens;
    int64_t n;
    int64_t text_bytes;    /* bytes all n tokens encode: docs + 1 per separator */
    int64_t n_docs;
    int soft_k;            /* 0 when there are no soft labels */
    const int32_t *soft_ids;  /* (n, soft_k) */
    const float *soft_probs;  /* (n, soft_k) */
    int owned;             /* 1: tokens is freed by fkd_token_stream_free */
} fkd_token_stream;

int32_t fkd_data_separator(const fkd_tokenizer *tok);
int fkd_token_stream_from_docs(fkd_token_stream *s, const fkd_corpus *c, const uint32_t *docs,
                               uint32_t n_docs, const fkd_tokenizer *tok, fkd_error *err);
/* One split of the whole federation (client < 0) or of one client. */
int fkd_token_stream_from_split(fkd_token_stream *s, const fkd_corpus *c,
                                const fkd_federation *fed, int client, int split,
                                const fkd_tokenizer *tok, fkd_error *err);
void fkd_token_stream_free(fkd_token_stream *s);

typedef struct {
    int B, T, k;
    int32_t *inputs;       /* (B,T) */
    int32_t *targets;      /* (B,T); -1 = no target (padding) */
    int32_t *soft_ids;     /* (B,T,k) when k > 0 */
    float *soft_probs;     /* (B,T,k) when k > 0; all 0 = no soft label */
    fkd_soft_labels soft;  /* view for the loss */
    int has_soft;          /* this batch carries soft labels (pass &soft to the loss) */
} fkd_batch;

/* k = the largest soft-label k the batch will carry (0 for none). */
int fkd_batch_init(fkd_batch *b, int B, int T, int k, fkd_error *err);
void fkd_batch_free(fkd_batch *b);
/* Batch number index of random windows: a pure function of (stream, seed,
 * index), so a resumed run sees exactly the batches it would have seen. */
int fkd_batch_random(fkd_batch *b, const fkd_token_stream *s, uint64_t seed, int64_t index,
                     fkd_error *err);
/* Consecutive windows first_window.. (window w starts at token w*T); returns
 * how many rows hold data (rows beyond are padding with targets -1). */
int fkd_batch_sequential(fkd_batch *b, const fkd_token_stream *s, int64_t first_window);
int64_t fkd_batch_window_count(const fkd_token_stream *s, int T);

/* ---- soft-label files ----------------------------------------------------
 * A shard holds a piece of the transfer set: its tokens and, per position,
 * the teacher's top-k ids and quantized probabilities; the rest mass is
 * implied (1 - sum). Little-endian, CRC-32 trailer; the same bytes are the
 * file and the network payload. Layout in docs/data.md. */
#define FKD_SOFT_MAGIC "FKDSOFT"        /* 8 bytes with its NUL */
#define FKD_SOFT_VERSION 1
#define FKD_SOFT_HEADER_BYTES 64
#define FKD_SOFT_MAX_K 64
#define FKD_SOFT_MAX_VOCAB (1 << 24)
#define FKD_SOFT_MAX_POSITIONS ((int64_t)1 << 28)
enum fkd_soft_quant { FKD_SOFT_Q8_SQRT = 1, FKD_SOFT_Q16 = 2 };

typedef struct {
    int vocab, k;
    int quant;                /* enum fkd_soft_quant (used when encoding) */
    float temperature;
    uint32_t shard_index, shard_count;
    uint64_t first_position;  /* of this shard in the whole transfer stream */
    int64_t n;                /* positions */
    int32_t *tokens;          /* (n) */
    int32_t *ids;             /* (n,k) */
    float *probs;             /* (n,k), as dequantized */
} fkd_softlabel_shard;

int fkd_softlabels_alloc(fkd_softlabel_shard *s, int64_t n, int k, int vocab, fkd_error *err);
void fkd_softlabels_free(fkd_softlabel_shard *s);
size_t fkd_softlabels_encoded_bytes(int64_t n, int k, int vocab, int quant);
int fkd_softlabels_encode(uint8_t **data, size_t *bytes, const fkd_softlabel_shard *s,
                          fkd_error *err);
/* Bounded: refuses anything malformed, never reads past bytes. */
int fkd_softlabels_decode(fkd_softlabel_shard *s, const uint8_t *data, size_t bytes,
                          fkd_error *err);
int fkd_softlabels_save(const char *path, const fkd_softlabel_shard *s, fkd_error *err);
int fkd_softlabels_load(fkd_softlabel_shard *s, const char *path, fkd_error *err);
/* Rounds probs (k, descending or not) to what a decoder will read back. */
void fkd_softlabels_quantize(float *probs, int k, int quant);
/* A view of a shard as a token stream with soft labels (no copy). */
void fkd_token_stream_from_shard(fkd_token_stream *s, const fkd_softlabel_shard *shard);

/* ---- the teacher pass ---------------------------------------------------- */
typedef struct {
    int k;               /* ids kept per position */
    float temperature;   /* softmax temperature of the soft labels */
    int quant;           /* enum fkd_soft_quant */
    int n_shards;
    int batch;           /* windows per forward pass */
    int window;          /* context per window; 0 = teacher's max_seq */
} fkd_teacher_config;

typedef struct {
    int64_t positions;
    double kl_truncation;  /* mean KL(p || top-k + uniform rest), nats/position */
    double kl_total;       /* same after quantization */
    double top1_mass;      /* mean probability of the top id */
    double kept_mass;      /* mean mass of the k ids */
    uint64_t encoded_bytes;     /* all shards */
    uint64_t dense_fp32_bytes;  /* n * vocab * 4 */
    double seconds;
} fkd_softlabel_stats;

fkd_teacher_config fkd_teacher_defaults(void);
/* Runs the teacher over the transfer stream and fills shards[cfg->n_shards]
 * (each allocated here; free with fkd_softlabels_free). */
int fkd_teacher_softlabels(fkd_softlabel_shard *shards, fkd_softlabel_stats *st,
                           const fkd_params *teacher, const fkd_token_stream *transfer,
                           const fkd_teacher_config *cfg, fkd_error *err);
/* The same pass for a teacher that is not an fkd_params (the quantized
 * one, compress/qsoftlabels.c): _run checks the setting against the
 * teacher's vocab and max_seq, calls windows(pass, ctx) once to label the
 * whole stream, then cuts shards[cfg->n_shards] and fills st. windows feeds
 * the teacher's logits through _label: the logits (rows, vocab) of
 * positions first.. become labels (rows past the stream's end are ignored;
 * threaded with OpenMP); windows returns 0, or -1 with err set. */
typedef struct fkd_softlabel_pass fkd_softlabel_pass;
typedef int (*fkd_softlabel_windows_fn)(fkd_softlabel_pass *ps, void *ctx, fkd_error *err);
int fkd_softlabel_pass_run(fkd_softlabel_shard *shards, fkd_softlabel_stats *st,
                           const fkd_token_stream *transfer, int vocab, int max_seq,
                           const fkd_teacher_config *cfg, fkd_softlabel_windows_fn windows,
                           void *ctx, fkd_error *err);
int fkd_softlabel_pass_window(const fkd_softlabel_pass *ps); /* tokens per window */
void fkd_softlabel_pass_label(fkd_softlabel_pass *ps, int64_t first, const float *logits,
                              int rows);

/* ---- an optimizer carried in memory ---------------------------------------
 * What a run that goes on across fkd_trainer_run calls keeps between them,
 * owned by the caller (a coordinator between its rounds): the optimizer's
 * moments and step, and where the batches go on. Kept here, nothing is read
 * or written per call; fkd_trainer_carry_save writes it for a restart. */
typedef struct {
    fkd_optimizer opt;         /* moments and step */
    int64_t step;              /* trainer steps done: the next batches' index */
    uint64_t seed;             /* of the batches, checked at every call */
    int ready;                 /* 0: the next run starts it (fresh, or from state_path) */
} fkd_trainer_carry;

/* The carry as a state file at path, atomically: the header and the moments
 * but no weights (a carried run keeps the model's), a third less than a full
 * state; state_path (with carry_optimizer or carry) resumes from it. */
int fkd_trainer_carry_save(const char *path, const fkd_trainer_carry *c, fkd_error *err);
void fkd_trainer_carry_free(fkd_trainer_carry *c);

/* ---- the training loop ----------------------------------------------------
 * Steps of accum micro-batches of (m->B, m->T) random windows; a share of the
 * micro-batches may come from a transfer stream with soft labels. Validation
 * every eval_every steps; a training state (weights, optimizer moments, step)
 * saved atomically every ckpt_every steps to state_path and resumed from it
 * when present, so an interrupted run continues to the same weights. */
typedef struct {
    int64_t steps;             /* total optimizer steps of the run */
    int accum;                 /* micro-batches per step */
    fkd_optimizer_config opt;  /* total_steps = steps when 0 */
    fkd_loss_config loss;
    float transfer_share;      /* of micro-batches drawn from the transfer stream */
    int eval_every;            /* steps; 0 = only at the end */
    int64_t eval_max_tokens;   /* validation tokens per evaluation; 0 = all */
    int ckpt_every;            /* steps; 0 = only at the end (when state_path) */
    const char *state_path;    /* NULL: no state file, no resume */
    /* 1: state_path carries only the optimizer from call to call: a resumed
     * run keeps the model's weights (the caller may have moved them since,
     * as a coordinator's aggregation does) and runs `steps` more steps after
     * the state's; the batches go on from the state's step. */
    int carry_optimizer;
    /* non-NULL: carry_optimizer in memory. The optimizer lives in *carry
     * from call to call; state_path is read only to start it (when
     * !carry->ready) and never written: the caller saves the carry. */
    fkd_trainer_carry *carry;
    uint64_t seed;             /* of the batches */
    double time_limit_s;       /* stop (after saving) once exceeded; 0 = none */
    int progress;              /* draw a progress line on a terminal */
    FILE *log;                 /* one line per validation; NULL = quiet */
    const char *label;         /* for the progress line and log */
    const float *prox_ref;     /* FedProx reference weights, or NULL */
    const uint8_t *mask;       /* pruning mask, or NULL */
} fkd_trainer_config;

typedef struct {
    int64_t step;              /* steps done in total (including before a resume) */
    int64_t steps_run;         /* in this call */
    int64_t tokens;            /* trained on in this call */
    double train_loss;         /* mean over the last eval interval */
    double val_loss, val_ppl, val_bpb, val_accuracy; /* last validation; 0 without val */
    double seconds;
    int resumed;               /* 1: continued from state_path or a going carry */
    int stopped_early;         /* 1: time_limit_s ended the run */
} fkd_trainer_result;

fkd_trainer_config fkd_trainer_defaults(void);
int fkd_trainer_run(fkd_trainer_result *res, fkd_model *m, const fkd_token_stream *train,
                    const fkd_token_stream *transfer, const fkd_token_stream *val,
                    const fkd_trainer_config *cfg, fkd_error *err);

/* ---- evaluation report --------------------------------------------------- *
 * Hallucination rate (docs/data.md): the share of words, runs of ASCII
 * letters compared case-insensitively, in sampled continuations of held-out
 * prompts that are in neither the known-word set (the training-side corpora
 * and the system word list) ; a word cut off by the token limit is not
 * counted. */
typedef struct fkd_wordset fkd_wordset;
int fkd_wordset_new(fkd_wordset **ws, fkd_error *err);
void fkd_wordset_destroy(fkd_wordset **ws);
int fkd_wordset_add_text(fkd_wordset *ws, const uint8_t *text, size_t bytes, fkd_error *err);
int fkd_wordset_add_file(fkd_wordset *ws, const char *path, fkd_error *err);
int fkd_wordset_add_corpus(fkd_wordset *ws, const fkd_corpus *c, const uint32_t *docs,
                           uint32_t n_docs, fkd_error *err);
int fkd_wordset_contains(const fkd_wordset *ws, const uint8_t *word, size_t len);
size_t fkd_wordset_size(const fkd_wordset *ws);
/* Counts the words of text and those not in ws; the last word counts only
 * when last_complete (a word ended by the text's end may be unfinished). */
void fkd_words_count(int64_t *unknown, int64_t *total, const fkd_wordset *ws,
                     const uint8_t *text, size_t bytes, int last_complete);

typedef struct {
    int window;           /* context of the loss evaluation; 0 = max_seq */
    int64_t max_tokens;   /* tokens of the text evaluated; 0 = all */
    int n_prompts;        /* held-out documents used as prompts */
    int prompt_bytes;     /* opening of each document, cut back to a word boundary */
    int gen_tokens;       /* sampled per prompt */
    float temperature;
    int top_k;
    float top_p;
    uint64_t seed;
} fkd_eval_config;

typedef struct {
    fkd_eval_result lm;          /* perplexity, bits per byte, accuracy */
    double halluc_rate;          /* unknown words / counted words */
    int64_t halluc_unknown, halluc_words;
    int n_prompts;
    size_t n_params;
    uint64_t model_bytes_fp32;
    double flops_per_token;      /* forward, at the evaluation window */
    double peak_rss_mb;          /* of this process, after the evaluation */
    double ms_per_token;         /* per generated token (sampling included) */
    double tokens_per_s_eval;    /* of the loss evaluation */
} fkd_eval_report;

fkd_eval_config fkd_eval_defaults(void);
/* Evaluates params on the documents docs of c: the loss metrics on their
 * token stream, the hallucination rate on continuations of their openings
 * (known: the known-word set; NULL skips the hallucination rate). */
int fkd_eval_report_run(fkd_eval_report *r, const fkd_params *params, const fkd_tokenizer *tok,
                        const fkd_corpus *c, const uint32_t *docs, uint32_t n_docs,
                        const fkd_wordset *known, const fkd_eval_config *cfg, fkd_error *err);
/* A table when json == 0, one JSON object otherwise. */
void fkd_eval_report_print(FILE *f, const fkd_eval_report *r, const char *title, int json);

/* The standard evaluation set, loaded the same way by every command: one
 * split of one side of a corpus, and its known-word set = the system word
 * list + every public document + the training split of the side's clients.
 * side PRIVATE uses the partition pc (NULL = fkd_partition_defaults()),
 * side PUBLIC the split of fkd_data_load_public (seed pc->seed). A path to a
 * single file is a one-partition corpus evaluated whole. */
typedef struct {
    fkd_corpus corpus;
    fkd_federation fed;
    uint32_t *docs;        /* the evaluated documents */
    uint32_t n_docs;
    fkd_wordset *known;
} fkd_eval_set;

int fkd_eval_set_load(fkd_eval_set *es, const char *data, int side, int split,
                      const fkd_partition_config *pc, const char *words_path, fkd_error *err);
void fkd_eval_set_free(fkd_eval_set *es);

/* Samples up to max_new tokens after prompt (stopping at stop_token unless
 * it is < 0) and decodes them into out (cap bytes). *ms_per_token gets the
 * mean time per sampled token; *stopped is 1 when stop_token ended it. */
int fkd_generate(uint8_t *out, size_t cap, size_t *n_out, int *stopped, double *ms_per_token,
                 fkd_infer *st, fkd_sampler *sm, const fkd_tokenizer *tok,
                 const int32_t *prompt, size_t n_prompt, int max_new, int32_t stop_token,
                 fkd_error *err);
/* The same with any one-token model (a quantized one from compress/). */
typedef struct {
    void *state;
    fkd_step_fn step;
    fkd_reset_fn reset;
    int max_seq;
} fkd_step_model;
int fkd_generate_steps(uint8_t *out, size_t cap, size_t *n_out, int *stopped,
                       double *ms_per_token, const fkd_step_model *m, fkd_sampler *sm,
                       const fkd_tokenizer *tok, const int32_t *prompt, size_t n_prompt,
                       int max_new, int32_t stop_token, fkd_error *err);

#endif
