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
 * 1/positions. targets[i] < 0 means "no hard target". soft may be NULL. */
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
} fkd_model;

/* Takes ownership of params (moved in; the caller's copy is cleared). */
int fkd_model_init(fkd_model *m, fkd_params *params, int B, int T, int recompute,
                   fkd_error *err);
void fkd_model_free(fkd_model *m);
/* Bytes the activations of a (B,T) batch need, without allocating them. */
size_t fkd_model_activation_bytes(const fkd_model_config *cfg, int B, int T, int recompute);

/* Forward pass over tokens (B,T); leaves logits (B*T,V) in *logits_out. */
void fkd_model_forward(fkd_model *m, const int32_t *tokens, float **logits_out);
/* Loss + full backward; grads ACCUMULATE (call fkd_model_zero_grad first). */
void fkd_model_backward(fkd_model *m, const int32_t *tokens, const int32_t *targets,
                        const fkd_soft_labels *soft, const fkd_loss_config *lc,
                        fkd_loss_stats *stats, float grad_scale);
void fkd_model_zero_grad(fkd_model *m);

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
} fkd_optimizer;

int fkd_optimizer_init(fkd_optimizer *opt, const fkd_optimizer_config *cfg,
                       const fkd_params *params, fkd_error *err);
void fkd_optimizer_free(fkd_optimizer *opt);
float fkd_optimizer_lr(const fkd_optimizer *opt); /* lr for the next step */
/* One update of params from grads; returns the gradient norm before clipping. */
float fkd_optimizer_step(fkd_optimizer *opt, float *params, float *grads);

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

typedef struct {
    float temperature;      /* 0 = greedy */
    int top_k;              /* 0 = off */
    float top_p;            /* 1 = off */
    fkd_rng rng;
    int32_t *index_scratch; /* (V) */
    float *prob_scratch;    /* (V) */
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

#endif
