/* internal.h — helpers shared by train/'s own files, not part of the API. */
#ifndef FKD_TRAIN_INTERNAL_H
#define FKD_TRAIN_INTERNAL_H

#include <string.h>

#include "fkd_train.h"

/* C (m,n) = alpha * op(A) · op(B) + beta * C, all row-major with the given
 * row strides; trans_a / trans_b say whether A / B are stored transposed.
 * single_thread = 1 when called from inside an OpenMP parallel region. */
void fkd_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a,
               int lda, const float *b, int ldb, float beta, float *c, int ldc,
               int single_thread);

/* Element-wise kernels are compiled twice on x86-64, for the portable
 * baseline and for AVX2/FMA machines (x86-64-v3), and the loader picks one
 * at run time: the build stays portable and the hot loops still get 8-wide
 * vectors. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define FKD_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define FKD_VECTOR_CLONES
#endif

/* exp(x) for float, written so that compilers vectorize it: range
 * reduction to x = n*ln2 + r with |r| <= ln2/2, a degree-6 polynomial for
 * e^r (relative error below 2e-7), and 2^n put into the exponent bits.
 * Inputs below -87 give 0-ish, above 88 are clamped. */
static inline float fkd_expf(float x)
{
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x); /* NaN passes through */
    float n = (x * 1.44269504f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = x - n * 0.693145752f - n * 1.42860677e-6f;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (0.166666672f + r * (0.0416666679f +
              r * (0.00833333377f + r * 0.00138888892f)))));
    /* 2^n from the bits of n + 127 held in the low mantissa of 1.5*2^23:
     * unsigned integer work only, so a NaN input cannot cause undefined
     * behaviour (a float-to-int cast of NaN would) and stays NaN in p. */
    float biased = n + (127.0f + 12582912.0f);
    uint32_t bits;
    memcpy(&bits, &biased, sizeof bits);
    bits = (bits - 0x4B400000u) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* The loss over a batch in pieces (loss.c): count the positions that carry
 * a target or a soft label once, then any rows i0..i0+n-1 with
 * row_scale = grad_scale / count; logits and dlogits (may alias, or NULL
 * for the loss only) hold just those n rows, targets and soft the whole batch. */
typedef struct {
    double ce, kd, loss;
    int64_t n_ce, n_kd, n_pos, n_correct;
} fkd_loss_sums;

int64_t fkd_loss_count(const int32_t *targets, const fkd_soft_labels *soft, int N, int V);
void fkd_loss_rows(float *dlogits, fkd_loss_sums *sums, const float *logits,
                   const int32_t *targets, const fkd_soft_labels *soft,
                   const fkd_loss_config *lc, int i0, int n, int V, float row_scale);
void fkd_loss_stats_from_sums(fkd_loss_stats *stats, const fkd_loss_sums *s);

/* Allocates zeroed floats; NULL on failure. */
float *fkd_alloc_floats(size_t n);

/* Files of a header, a float32 body and a CRC-32 of both (framed.c):
 * encoded into a fresh buffer, or streamed atomically to path. */
int fkd_frame_encode(uint8_t **data, size_t *bytes, const uint8_t *head, size_t head_bytes,
                     const float *body, size_t n, fkd_error *err);
int fkd_frame_save(const char *path, const uint8_t *head, size_t head_bytes, const float *body,
                   size_t n, fkd_error *err);
/* The model config in those headers: vocab dim n_layers n_heads n_kv_heads
 * ffn_hidden max_seq tie_embeddings (u32), rope_theta norm_eps (f32). get
 * copies the fields unchecked: validate them after. */
#define FKD_CONFIG_BYTES 40
void fkd_config_put(uint8_t out[FKD_CONFIG_BYTES], const fkd_model_config *c);
void fkd_config_get(fkd_model_config *c, const uint8_t in[FKD_CONFIG_BYTES]);
static inline void fkd_put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline uint32_t fkd_get_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* LoRA (lora.c): zeroed arenas for cfg over model (init and decode fill
 * them); scratch of a (B,T) batch; one layer's largest block matrix. */
int fkd_lora_alloc(fkd_lora *lora, const fkd_model_config *model, const fkd_lora_config *cfg,
                   fkd_error *err);
/* Lays out the arenas of cfg over model; returns the float count, or 0 when
 * the configuration is invalid (err says why). Allocates nothing. */
size_t fkd_lora_layout(fkd_tensor_info tensors[FKD_T_COUNT], const fkd_model_config *model,
                       const fkd_lora_config *cfg, fkd_error *err);
/* 1 when a and b have the same block matrices (width, depth, heads, FFN). */
int fkd_config_same_blocks(const fkd_model_config *a, const fkd_model_config *b);
size_t fkd_lora_scratch_floats(const fkd_lora_config *cfg, int B, int T);
size_t fkd_weight_scratch_floats(const fkd_model_config *model);

/* threads.c: subnormal floats flushed to zero (FTZ/DAZ, arm64 FZ) in the
 * calling thread and the OpenMP pool at its current size. Every model a
 * training step runs is set up through model.c, which calls this, so a
 * library user who never calls fkd_train_set_threads trains at full speed
 * too. */
void fkd_flush_subnormals(void);

#endif
