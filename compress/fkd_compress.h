/* fkd_compress.h — fedkd's compression library: what makes the student small
 * enough for the device and its updates small enough for the uplink.
 *
 *  1. Block quantization (ggml's layouts, bit for bit, so a GGUF writer can
 *     copy blocks as they are): Q8_0, Q4_0, Q4_1, plus F16 and F32 tensors.
 *  2. Quantized kernels: int8 dot products between weight blocks and an
 *     activation vector quantized to 8-bit blocks, with a portable scalar
 *     path and AVX2 / AVX-512 VNNI paths chosen at run time. All paths give
 *     bit-identical results: SIMD computes the exact integer sum of each
 *     block, the float combination is one shared scalar loop.
 *  3. The quantized student (fkd_qmodel): per-tensor format, optional pruning
 *     mask, a strictly validated serialization (it is the task's weights on
 *     the wire), dequantization to fkd_params, and a llama2.c-style forward
 *     pass (fkd_qinfer) that runs on the blocks without dequantizing tensors.
 *  4. Pruning masks: unstructured magnitude and 2:4 structured.
 *  5. Update compression (client -> coordinator): top-k by magnitude with
 *     error feedback, int8 / int4 / ternary / sign values (optionally
 *     stochastic rounding), Golomb-Rice gaps or a bitmap for the indices
 *     (the smaller one), in a self-describing format with a bounds-checked
 *     decoder (docs/protocol.md, "The compressed update").
 *
 * Format policy of the quantized student (fkd_qmodel_quantize):
 *  - norm gains stay F32: they are a few thousand floats and multiply every
 *    activation, so their error would be paid everywhere for no saving;
 *  - the token embedding and the output head are never below Q8_0: the head
 *    writes the logits directly (its error is the perplexity error), and a
 *    byte-level vocabulary makes them a small share of the bytes;
 *  - every other matrix takes the scheme's format (Q8_0, Q4_0 or Q4_1).
 *
 * Not here: the network, encryption, who sends what (wire/, client/,
 * coordinator/). GGUF files are read and written by compress/gguf*.c, which
 * reuses the block functions below.
 */
#ifndef FKD_COMPRESS_H
#define FKD_COMPRESS_H

#include <stddef.h>
#include <stdint.h>

#include "fkd_train.h" /* brings fkd_common.h */

/* ======================================================================== *
 * Block formats (ggml layouts; little-endian fp16 scales)
 *   Q8_0: { fp16 d; int8 qs[32]; }           x = d * q
 *   Q4_0: { fp16 d; uint8 qs[16]; }          x = d * (q - 8)
 *   Q4_1: { fp16 d; fp16 m; uint8 qs[16]; }  x = d * q + m
 * In Q4 blocks, byte j holds value j in its low nibble and value j+16 in its
 * high nibble.
 * ======================================================================== */
#define FKD_QK 32                 /* values per block */
#define FKD_Q8_0_BLOCK_BYTES 34
#define FKD_Q4_0_BLOCK_BYTES 18
#define FKD_Q4_1_BLOCK_BYTES 20

/* Tensor formats. The numeric values are ggml's type ids (also GGUF's). */
enum fkd_qtype {
    FKD_QTYPE_F32 = 0,
    FKD_QTYPE_F16 = 1,
    FKD_QTYPE_Q4_0 = 2,
    FKD_QTYPE_Q4_1 = 3,
    FKD_QTYPE_Q8_0 = 8,
};

/* 1 when t is one of the formats above. */
int fkd_qtype_valid(int t);
/* 1 for the 4-bit block formats (Q4_0, Q4_1). */
int fkd_qtype_is_int4(int t);
const char *fkd_qtype_name(int t);              /* "q8_0", ...; "?" when invalid */
int fkd_qtype_from_name(const char *name);      /* -1 when unknown */
/* Values per block (1 for F32/F16) and bytes per block. */
size_t fkd_qtype_block_values(int t);
size_t fkd_qtype_block_bytes(int t);
/* Bytes of a row of n values; 0 when n is not a multiple of the block. */
size_t fkd_qtype_row_bytes(int t, size_t n);

/* Row functions: n must be a multiple of FKD_QK (the caller checks). */
void fkd_q8_0_quantize_row(uint8_t *blocks, const float *x, size_t n);
void fkd_q4_0_quantize_row(uint8_t *blocks, const float *x, size_t n);
void fkd_q4_1_quantize_row(uint8_t *blocks, const float *x, size_t n);
void fkd_q8_0_dequantize_row(float *x, const uint8_t *blocks, size_t n);
void fkd_q4_0_dequantize_row(float *x, const uint8_t *blocks, size_t n);
void fkd_q4_1_dequantize_row(float *x, const uint8_t *blocks, size_t n);
/* Any format (F32/F16 included); n a multiple of the type's block. Returns
 * -1 for an invalid type or n. */
int fkd_quantize_row(uint8_t *out, int type, const float *x, size_t n);
int fkd_dequantize_row(float *x, int type, const uint8_t *data, size_t n);
/* Q4_0 / Q4_1 blocks whose scale (and minimum) minimise the squared error
 * sum_j weights[j] * (x[j] - decoded[j])^2 (compress/quant_mse.c): a grid of
 * candidate scales around round-to-nearest's, each refitted by least squares
 * on its codes, then refined on the fp16 scale as stored. Same layouts (any
 * Q4 reader decodes them); a block's error is never above the one
 * fkd_q4_*_quantize_row gives it; returns the weighted squared error of the
 * blocks written (what decoding them gives). weights (n, may be NULL = all 1): e.g.
 * the mean square of each input channel's activation (fkd_qimatrix); a
 * block whose weights are all 0 (or negative, or not finite) counts every
 * value alike. */
double fkd_q4_0_quantize_row_mse(uint8_t *blocks, const float *x, const float *weights, size_t n);
double fkd_q4_1_quantize_row_mse(uint8_t *blocks, const float *x, const float *weights, size_t n);
/* Any format: Q4_0 / Q4_1 as above, the others as fkd_quantize_row
 * (weights ignored). */
int fkd_quantize_row_mse(uint8_t *out, int type, const float *x, const float *weights, size_t n);

/* ======================================================================== *
 * Quantized kernels
 * ======================================================================== */
/* An activation vector quantized to 8-bit blocks (internal, not a file
 * format): per block a float scale d, the exact sum of its codes (for Q4_1's
 * minimum) and 32 codes in [-127, 127]. */
typedef struct {
    float d;
    int32_t sum;
    int8_t qs[FKD_QK];
} fkd_q8_act;

void fkd_q8_act_quantize(fkd_q8_act *blocks, const float *x, size_t n);

enum fkd_qkernel { FKD_QKERNEL_AUTO = 0, FKD_QKERNEL_SCALAR, FKD_QKERNEL_AVX2, FKD_QKERNEL_VNNI };
/* Best kernel this CPU supports (checked once with __builtin_cpu_supports). */
int fkd_qkernel_best(void);
int fkd_qkernel_supported(int kernel);
const char *fkd_qkernel_name(int kernel);

/* Dot product of one weight row (n values of type, n a multiple of FKD_QK,
 * type Q8_0/Q4_0/Q4_1) with a quantized activation. */
float fkd_qdot(int kernel, int type, const uint8_t *row, const fkd_q8_act *x, size_t n);

/* out (rows) = W (rows, n) · x. W of any type: F32/F16 rows use the float
 * activation xf, block rows the quantized xq (both describe the same x; xq
 * may be NULL for F32/F16 and xf may be NULL for block types). */
void fkd_qmatvec(int kernel, float *out, int type, const uint8_t *w, const float *xf,
                 const fkd_q8_act *xq, size_t rows, size_t n);
/* Small batch: out (B, rows) = x (B, n) · Wᵀ, reading each weight row once. */
void fkd_qmatmul(int kernel, float *out, int type, const uint8_t *w, const float *xf,
                 const fkd_q8_act *xq, size_t B, size_t rows, size_t n);

/* ======================================================================== *
 * Quantized student
 * ======================================================================== */
typedef struct {
    int type;          /* enum fkd_qtype */
    size_t count;      /* values (0 for a tied head) */
    size_t row_len;    /* values per row (the input dimension; count for vectors) */
    size_t bytes;
    uint8_t *data;     /* into the model's arena */
} fkd_qtensor;

typedef struct {
    fkd_model_config cfg;
    fkd_tensor_info tensors[FKD_T_COUNT];
    fkd_qtensor q[FKD_T_COUNT];
    size_t n_params;   /* floats of the dense arena */
    uint8_t *mask;     /* NULL or (n_params): 0 = pruned weight (dequantizes to 0) */
    uint8_t *memory;   /* one arena: tensor data, then the mask */
    size_t data_bytes; /* sum of the tensors' bytes */
} fkd_qmodel;

/* Schemes for fkd_qmodel_quantize: the format of the block matrices. */
#define FKD_QMODEL_MAX_PARAMS ((size_t)1 << 31)   /* refuse larger models from bytes */
#define FKD_QMODEL_VERSION 1

/* Quantizes params with `type` for the block matrices and the policy above
 * for the rest. mask (n_params, may be NULL) is copied into the model.
 * Every block is ggml's round-to-nearest (FKD_QRULE_RTN), every matrix in
 * the scheme: the TASK's weights and the plain file. A student for a device
 * takes fkd_qmodel_quantize_deploy; fkd_qmodel_quantize_with takes any
 * rule, formats and importances. */
int fkd_qmodel_quantize(fkd_qmodel *qm, const fkd_params *params, int type, const uint8_t *mask,
                        fkd_error *err);
/* Per-tensor formats chosen by the caller (types[FKD_T_COUNT]); a format the
 * tensor's rows cannot take (row length not a multiple of 32) is an error. */
int fkd_qmodel_quantize_types(fkd_qmodel *qm, const fkd_params *params, const int *types,
                              const uint8_t *mask, fkd_error *err);
/* The formats fkd_qmodel_quantize(scheme) gives each tensor of cfg, for a
 * caller that changes a few (mixed precision) before _types / _with. */
void fkd_qmodel_policy_types(int types[FKD_T_COUNT], const fkd_model_config *cfg, int scheme);
/* Overrides types from a list "TENSOR=TYPE,..." (tensor names of
 * fkd_param_layout's matrices: wq wk wv wo w1 w3 w2 tok_emb head; formats
 * as fkd_qtype_from_name), e.g. "w2=q8_0" keeps w2 at 8 bits in a Q4_1
 * model. types is unchanged on an error. */
int fkd_qmodel_parse_types(int types[FKD_T_COUNT], const fkd_model_config *cfg, const char *list,
                           fkd_error *err);

/* How int4 codes are chosen: least squares (weighted as below), or ggml's
 * round-to-nearest rules bit for bit (fkd_q4_*_quantize_row). */
enum fkd_qrule { FKD_QRULE_MSE = 0, FKD_QRULE_RTN = 1 };

/* An importance matrix (what llama.cpp calls imatrix): per block matrix and
 * layer, the mean square of each input channel's activation over
 * calibration text, so int4 error on the channels the matrix hears loudest
 * costs more (compress/qimatrix.c). */
typedef struct {
    fkd_model_config cfg;      /* the model it was measured on */
    int64_t tokens;            /* calibration positions */
    float *w[FKD_T_COUNT];     /* block matrices (wq..w2): (L, row_len); NULL for the rest */
    float *memory;             /* one allocation for the arrays */
} fkd_qimatrix;

/* Runs params over n_tokens / seq_len windows of seq_len tokens spread
 * evenly over text (train's kernels, one window and layer at a time) and
 * measures the mean squares: wq/wk/wv and w1/w3 see their norm's output,
 * wo the attention output, w2 the SwiGLU output. */
#define FKD_QIMATRIX_DEFAULT_TOKENS 4096
#define FKD_QIMATRIX_DEFAULT_SEQ 256
int fkd_qimatrix_compute(fkd_qimatrix *im, const fkd_params *params, const fkd_token_stream *text,
                         int n_tokens, int seq_len, fkd_error *err);
void fkd_qimatrix_free(fkd_qimatrix *im);

/* fkd_qmodel_quantize_types with the int4 rule (enum fkd_qrule) and an
 * optional importance matrix of the same model shape (NULL = none). Under
 * FKD_QRULE_MSE each Q4_0 / Q4_1 block matrix's error is weighted per
 * weight by imp[channel] * (w^2 + 1e-3 * the row's mean square): the w^2
 * keeps the large weights near-exact, as round-to-nearest's extremes are
 * (unweighted least squares lost 17 % perplexity on SmolLM2's student). */
int fkd_qmodel_quantize_with(fkd_qmodel *qm, const fkd_params *params, const int *types,
                             const uint8_t *mask, int rule, const fkd_qimatrix *imatrix,
                             fkd_error *err);
/* fkd_qmodel_quantize_types's formats, with every Q4_0 / Q4_1 block matrix
 * quantized by GPTQ (compress/quant_gptq.c): columns rounded in order, each
 * one's error spread over the columns left through the inverse Hessian of
 * the layer's inputs on n_tokens / seq_len calibration windows spread over
 * text (fkd_qimatrix_compute's windows), so the output error on that text
 * is minimised rather than the weights' error. Same ggml layouts; the other
 * tensors are round-to-nearest. Costs a forward pass of the calibration
 * text and O(rows x in²) per matrix. */
int fkd_qmodel_quantize_gptq(fkd_qmodel *qm, const fkd_params *params, const int *types,
                             const fkd_token_stream *text, int n_tokens, int seq_len,
                             fkd_error *err);
/* The deployment recipe: what a student is quantized with for a device
 * (the simulation's int4 column and student-q4_1.gguf, `fedkd export`'s
 * default, the coordinator's student.qmdl). For an int4 scheme: the
 * scheme's policy with wv, wo and w2 at Q8_0, the int4 matrices by GPTQ
 * (fkd_qmodel_quantize_gptq) on the calibration text's first tokens
 * (fkd_qmodel_deploy_calib_tokens: at most FKD_QIMATRIX_DEFAULT_TOKENS, in
 * windows of FKD_QIMATRIX_DEFAULT_SEQ or the model's context). Measured on
 * the simulation's healed SmolLM2 student (docs/benchmarks.md, "int4
 * quality"): +3.4 % perplexity (+4.3 % with wv at int4), against +19.5 %
 * for importance-weighted least squares and +27.0 % for round-to-nearest.
 * Without calibration text (calib NULL or shorter than a window), or with
 * a mask, the codes are round-to-nearest. Any other scheme is fkd_qmodel_quantize's, and calib is
 * not read. Public text only: the deployed file must not be fitted to a
 * client's data. */
int fkd_qmodel_quantize_deploy(fkd_qmodel *qm, const fkd_params *params, int scheme,
                               const uint8_t *mask, const fkd_token_stream *calib, fkd_error *err);
/* The calibration tokens the deploy recipe reads of calib (0: none). */
int64_t fkd_qmodel_deploy_calib_tokens(const fkd_model_config *cfg, const fkd_token_stream *calib);
/* The formats fkd_qmodel_quantize_deploy(scheme) gives each tensor of cfg. */
void fkd_qmodel_deploy_types(int types[FKD_T_COUNT], const fkd_model_config *cfg, int scheme);
/* The recipe in words for reports, e.g. "q4_1 gptq, 4096 calibration
 * tokens, wv wo w2 q8_0" (calib_tokens 0: "q4_1 rtn, wv wo w2 q8_0"); any other
 * scheme: its name. */
#define FKD_QDEPLOY_RECIPE_MAX 96
void fkd_qmodel_deploy_recipe(char *out, size_t cap, int scheme, int64_t calib_tokens);
/* An empty model of cfg in these formats (blocks zeroed, no mask), for a
 * reader that fills q[t].data itself (fkd_gguf_llama_load_qmodel). */
int fkd_qmodel_init(fkd_qmodel *qm, const fkd_model_config *cfg, const int *types, fkd_error *err);
void fkd_qmodel_free(fkd_qmodel *qm);
/* Bytes of the tensor data fkd_qmodel_quantize(cfg's params, type) makes,
 * without making it (0 for an invalid type or config). */
size_t fkd_qmodel_scheme_bytes(const fkd_model_config *cfg, int type);
/* Dequantizes into a fresh params (initialised here); pruned weights are 0. */
int fkd_qmodel_dequantize(fkd_params *params, const fkd_qmodel *qm, fkd_error *err);
/* Bytes the serialized model takes (header, tensors, mask bitmap, CRC). */
size_t fkd_qmodel_encoded_bytes(const fkd_qmodel *qm);

/* Serialization, little-endian:
 *   "FKDQMDL\0", u32 version, u32 flags (bit 0: mask present),
 *   config (8 x i32: vocab dim n_layers n_heads n_kv_heads ffn_hidden max_seq
 *   tie_embeddings; 2 x f32: rope_theta norm_eps), u32 tensor count,
 *   per tensor { u32 type, u64 values, u64 bytes }, the tensors' data in
 *   order, the mask as a bitmap over n_params (bit i = byte i/8, bit i%8;
 *   1 = kept) when flagged, then a CRC-32 of everything before it.
 * The decoder checks every field against the config's layout, refuses
 * non-finite block scales, models above FKD_QMODEL_MAX_PARAMS and any size
 * that does not add up, and never reads past `bytes`. */
int fkd_qmodel_encode(uint8_t **data, size_t *bytes, const fkd_qmodel *qm, fkd_error *err);
int fkd_qmodel_decode(fkd_qmodel *qm, const uint8_t *data, size_t bytes, fkd_error *err);
int fkd_qmodel_save(const char *path, const fkd_qmodel *qm, fkd_error *err); /* atomic */
int fkd_qmodel_load(fkd_qmodel *qm, const char *path, fkd_error *err);

/* Forward pass on the quantized student, one token at a time (same math as
 * fkd_infer_step: RMSNorm, interleaved-pair RoPE, GQA, SwiGLU). Pruned
 * weights are 0 in Q8_0/Q4_0 blocks (0 is a code); in Q4_1 a pruned weight
 * is its block's nearest code to 0 (within d/2), while
 * fkd_qmodel_dequantize restores exact zeros from the mask. */
typedef struct {
    const fkd_qmodel *qm;
    int kernel;             /* enum fkd_qkernel in use */
    float *memory;          /* one arena for the float buffers below */
    float *x, *xb, *xb2, *q, *k, *v, *att, *h1, *h3, *logits;
    float *key_cache, *value_cache; /* (L, max_seq, KV*hd) */
    float *rope_cos, *rope_sin;     /* (max_seq, hd/2) */
    float *norms;           /* norm gains as float (F32/F16 tensors) */
    float *hb;              /* SwiGLU output (F) */
    fkd_q8_act *xq;         /* the quantized activation, max(C, H*hd, F) values */
    int pos;
    float *batch;           /* fkd_qinfer_prompt's buffers for batch_cap positions, */
    fkd_q8_act *batch_q;    /* grown on demand (one float arena and its blocks) */
    int batch_cap;
} fkd_qinfer;

int fkd_qinfer_init(fkd_qinfer *st, const fkd_qmodel *qm, int kernel, fkd_error *err);
void fkd_qinfer_free(fkd_qinfer *st);
void fkd_qinfer_reset(fkd_qinfer *st);
/* Feeds one token at st->pos and returns the logits (V); NULL when the
 * context is full (pos == max_seq) or the token is outside the vocabulary. */
float *fkd_qinfer_step(fkd_qinfer *st, int32_t token);
/* Prompt processing: feeds tokens[0..n) at st->pos as one batch (matrix
 * products instead of n matrix-vector ones, threaded with OpenMP) and
 * returns the last position's logits. all_logits, when not NULL, receives
 * every position's logits (n, V). Same math as n steps, except that the
 * attention of a batch starting at position 0 runs as train's
 * fkd_attention_forward (other summation order, within float rounding).
 * NULL when tokens do not fit the context or one is outside the vocabulary,
 * or when the batch buffers cannot be allocated. */
float *fkd_qinfer_prompt(fkd_qinfer *st, const int32_t *tokens, int n, float *all_logits);
/* The same batch with every position's logits handed to fn(ctx, logits
 * (rows, V), first position, rows) in chunks of at most `chunk` rows, in
 * order, from a buffer of the call's (chunk x V floats instead of n x V).
 * Returns 0, or -1 for tokens that do not fit or no memory. */
typedef void (*fkd_qinfer_logits_fn)(void *ctx, const float *logits, int first, int rows);
int fkd_qinfer_prompt_each(fkd_qinfer *st, const int32_t *tokens, int n, int chunk,
                           fkd_qinfer_logits_fn fn, void *ctx, fkd_error *err);

/* The teacher pass (train's fkd_teacher_softlabels) on a quantized teacher:
 * windows of cfg->window tokens (0 = its max_seq) through
 * fkd_qinfer_prompt_each, labelled by train's fkd_softlabel_pass; cfg->batch
 * is not used (a window is one batch). Fills shards[cfg->n_shards]. */
int fkd_qsoftlabels_make(fkd_softlabel_shard *shards, fkd_softlabel_stats *st,
                         const fkd_qmodel *teacher, const fkd_token_stream *transfer,
                         const fkd_teacher_config *cfg, fkd_error *err);

/* How far two label sets of the same stream are apart (the quantized
 * teacher's from the fp32 one's): the share of positions whose top-1 id
 * agrees, the share of a's top-k ids that b keeps too (the rest swapped
 * places with ids of nearly equal probability at the k-th rank), and over
 * the ids both keep, |p_a - p_b|: the largest and the mean. */
typedef struct {
    int64_t positions;
    double top1_agreement, topk_overlap, max_prob_diff, mean_prob_diff;
} fkd_qsoft_agreement;
int fkd_qsoftlabels_compare(fkd_qsoft_agreement *out, const fkd_softlabel_shard *a,
                            const fkd_softlabel_shard *b, int n_shards, fkd_error *err);

/* Perplexity with any one-token step function: windows of `window` tokens
 * (<= max_seq), state reset at each window, every next token scored. */
int fkd_compress_eval_steps(fkd_eval_result *res, void *state, fkd_step_fn step,
                            fkd_reset_fn reset, int vocab, const int32_t *tokens,
                            int64_t n_tokens, int64_t text_bytes, int window, fkd_error *err);
/* fkd_compress_eval_steps's protocol (windows of `window` tokens, state
 * reset at each, every next token scored) with each window fed as one
 * prompt (fkd_qinfer_prompt_each): matrix products, threaded, instead of a
 * matrix-vector product per token. The same figures within float rounding,
 * in a fraction of the time. */
int fkd_qinfer_eval_windows(fkd_eval_result *res, fkd_qinfer *st, const int32_t *tokens,
                            int64_t n_tokens, int64_t text_bytes, int window, fkd_error *err);
/* llama.cpp's llama-perplexity on the blocks (what it computes on the same
 * GGUF file: block weights times 8-bit activations): chunks of n_ctx
 * tokens (bos_id >= 0 replaces each chunk's first), each one prompt from
 * position 0 with every position's logits, positions n_ctx/2 .. n_ctx-2
 * scored; a partial last chunk is dropped. The protocol of train's
 * fkd_eval_tokens_llama, which runs fp32 weights. */
int fkd_qinfer_eval_llama(fkd_eval_result *res, fkd_qinfer *st, const int32_t *tokens,
                          int64_t n_tokens, int64_t text_bytes, int n_ctx, int32_t bos_id,
                          fkd_error *err);
/* Adapters for the quantized model (train has fkd_infer's). */
float *fkd_qinfer_step_fn(void *st, int32_t token);
void fkd_qinfer_reset_fn(void *st);

/* ======================================================================== *
 * Pruning masks: one uint8 per float of the parameter arena, 1 = kept.
 * Only the block matrices (wq wk wv wo w1 w3 w2) are pruned, each layer's
 * slice on its own; embeddings, head and norm gains are kept whole (every
 * embedding row is used by some token; gains are not weights to remove).
 * ======================================================================== */
/* Keeps the largest |w| of each slice; `sparsity` in [0, 1) is the share
 * zeroed (ties broken by position, so the count is exact). */
int fkd_prune_magnitude(uint8_t *mask, const fkd_params *params, float sparsity, fkd_error *err);
/* 2:4: in every group of 4 consecutive weights of a row, keeps the 2 largest. */
int fkd_prune_2_4(uint8_t *mask, const fkd_params *params, fkd_error *err);
/* weights[i] = 0 where mask[i] == 0. */
void fkd_prune_apply(float *weights, const uint8_t *mask, size_t n);
/* Share of zeros in the mask over the prunable tensors. */
double fkd_prune_sparsity(const uint8_t *mask, const fkd_params *params);

/* ======================================================================== *
 * Update compression
 * ======================================================================== */
/* sign: 1 bit per sent value, +scale of the chunk's non-negative values or
 * -scale of its negative ones (two scales per chunk); a sent value is never
 * zero, so the third code of ternary is a wasted bit. */
enum fkd_uvalue {
    FKD_UVAL_F32 = 0, FKD_UVAL_INT8 = 1, FKD_UVAL_INT4 = 2, FKD_UVAL_TERNARY = 3,
    FKD_UVAL_SIGN = 4, FKD_UVAL_COUNT
};
/* rice: gaps between sent indices, Golomb-Rice coded with a parameter per
 * chunk of FKD_UPDATE_CHUNK indices (version 1 had varint gaps here). */
enum fkd_uindex { FKD_UIDX_ALL = 0, FKD_UIDX_RICE = 1, FKD_UIDX_BITMAP = 2 };

#define FKD_UPDATE_VERSION 2            /* 2: rice indices, sign values; 1 is refused */
#define FKD_UPDATE_HEADER_BYTES 32
#define FKD_UPDATE_CHUNK 256            /* selected values per scale and per Rice parameter */
#define FKD_UPDATE_MAX_N ((uint64_t)1 << 32)

typedef struct {
    float fraction;     /* share of entries sent, in (0, 1]: k = round(fraction n) >= 1; 1 = dense */
    int value_format;   /* enum fkd_uvalue */
    int stochastic;     /* 1: stochastic rounding (unbiased) with rng; sign ignores it */
    fkd_rng *rng;       /* required when stochastic */
    /* Optional (n): rank entries by |value| * |weight[i]| instead of |value|.
     * With the client's gradient as weight this sends the entries whose
     * change lowers its loss most (first order), which magnitude alone
     * cannot tell apart when an adaptive optimizer moved every weight by
     * about the same amount. */
    const float *weight;
} fkd_update_config;

typedef struct {
    size_t n;              /* dense length */
    size_t k;              /* entries sent */
    size_t bytes_dense;    /* 4 n */
    size_t bytes;          /* compressed */
    double ratio;          /* bytes_dense / bytes */
    double rel_error;      /* ||decoded - input|| / ||input|| (0 when input is 0) */
    int index_coding;      /* enum fkd_uindex chosen */
} fkd_update_stats;

/* Compresses update (n) into a fresh malloc'ed buffer. When residual is not
 * NULL (error feedback), it is added to the update first and then replaced
 * by what was not sent: residual' = (update + residual) - decoded, so the
 * sum of everything decoded plus the residual equals the sum of updates.
 * stats may be NULL. */
int fkd_update_compress(uint8_t **data, size_t *bytes, fkd_update_stats *stats,
                        const float *update, float *residual, size_t n,
                        const fkd_update_config *cfg, fkd_error *err);
/* Decodes into dense (n floats, overwritten); refuses any input whose header
 * disagrees with n, whose fields do not add up to exactly `bytes`, with
 * out-of-range or unordered indices, invalid codes, non-finite scales or a
 * bad CRC. Never reads past bytes. */
int fkd_update_decompress(float *dense, size_t n, const uint8_t *data, size_t bytes,
                          fkd_error *err);
/* Header fields, for logs and the coordinator's checks (no full decode). */
int fkd_update_peek(size_t *n, size_t *k, int *value_format, int *index_coding,
                    const uint8_t *data, size_t bytes, fkd_error *err);

/* "f32", "int8", "int4", "ternary", "sign"; "?" for another value. */
const char *fkd_update_value_name(int value_format);
/* The enum fkd_uvalue of a name above, or -1. */
int fkd_update_value_parse(const char *name);

/* update = after - before (n). */
void fkd_update_diff(float *update, const float *after, const float *before, size_t n);

/* The error-feedback residual on disk: "FKDRESID", u32 version, u64 n,
 * n floats, CRC-32. Saved atomically; load refuses another n. */
int fkd_residual_save(const char *path, const float *residual, size_t n, fkd_error *err);
int fkd_residual_load(float *residual, size_t n, const char *path, fkd_error *err);

/* ======================================================================== *
 * GGUF (compress/gguf.c, compress/gguf_llama.c)
 * GGUF v3, the interchange format of llama.cpp and the other GGUF tools.
 * fkd_gguf_open memory-maps a file and validates all of it before returning:
 * counts and string lengths within the file, known value and tensor types,
 * dims x type size without overflow, each tensor aligned, inside the data
 * section and overlapping no other, no key or tensor name twice. Errors name
 * the field. Values and tensor data then point into the mapping.
 * ======================================================================== */
enum fkd_gguf_vtype {
    FKD_GGUF_U8 = 0, FKD_GGUF_I8, FKD_GGUF_U16, FKD_GGUF_I16, FKD_GGUF_U32, FKD_GGUF_I32,
    FKD_GGUF_F32, FKD_GGUF_BOOL, FKD_GGUF_STR, FKD_GGUF_ARR, FKD_GGUF_U64, FKD_GGUF_I64,
    FKD_GGUF_F64, FKD_GGUF_VTYPE_COUNT
};
#define FKD_GGML_BF16 30                  /* read (as f32) besides the fkd_qtype formats */
#define FKD_GGUF_VERSION 3
#define FKD_GGUF_DEFAULT_ALIGNMENT 32
#define FKD_GGUF_MAX_ALIGNMENT 65536
#define FKD_GGUF_MAX_DIMS 4
#define FKD_GGUF_MAX_NAME 65535           /* bytes of a key or tensor name */
#define FKD_GGUF_MAX_VALUES ((uint64_t)1 << 40) /* values in one tensor */

typedef struct {
    const char *key;       /* NUL-terminated copy */
    int type;              /* enum fkd_gguf_vtype */
    int elem_type;         /* arrays: the elements' type; otherwise = type */
    uint64_t count;        /* arrays: elements; otherwise 1 */
    const uint8_t *data;   /* scalar: its bytes; string: its characters (no NUL);
                              array: the first element (strings keep their u64 lengths) */
    uint64_t bytes;        /* bytes at data */
} fkd_gguf_kv;

typedef struct {
    const char *name;      /* NUL-terminated copy */
    int type;              /* ggml type id (enum fkd_qtype or FKD_GGML_BF16) */
    int n_dims;
    uint64_t ne[FKD_GGUF_MAX_DIMS]; /* ne[0] innermost (a matrix's input dim); unused = 1 */
    uint64_t n_values;
    uint64_t offset;       /* within the data section */
    uint64_t bytes;
    const uint8_t *data;   /* into the file */
} fkd_gguf_tensor;

typedef struct {
    const uint8_t *base;   /* the file's bytes */
    size_t size;
    int mapped;            /* 1: base is our mapping */
    uint32_t version, alignment;
    uint64_t n_kv, n_tensors, data_offset;
    fkd_gguf_kv *kv;
    fkd_gguf_tensor *tensors;
} fkd_gguf;

int fkd_gguf_open(fkd_gguf *g, const char *path, fkd_error *err);
/* The same over bytes in memory, which must outlive g. */
int fkd_gguf_parse(fkd_gguf *g, const uint8_t *data, size_t bytes, fkd_error *err);
void fkd_gguf_close(fkd_gguf *g);

const fkd_gguf_kv *fkd_gguf_find(const fkd_gguf *g, const char *key);   /* NULL if absent */
const fkd_gguf_tensor *fkd_gguf_find_tensor(const fkd_gguf *g, const char *name);
/* Typed getters: a missing key, another type or a value out of range is an
 * error that names the key. get_int takes any integer type. */
int fkd_gguf_get_int(int64_t *v, const fkd_gguf *g, const char *key, int64_t min, int64_t max,
                     fkd_error *err);
int fkd_gguf_get_f32(float *v, const fkd_gguf *g, const char *key, fkd_error *err);
int fkd_gguf_get_bool(int *v, const fkd_gguf *g, const char *key, fkd_error *err);
int fkd_gguf_get_str(const char **s, size_t *len, const fkd_gguf *g, const char *key,
                     fkd_error *err);
int fkd_gguf_get_array(const fkd_gguf_kv **kv, const fkd_gguf *g, const char *key, int elem_type,
                       fkd_error *err);
/* The strings of a string array: strs[i], lens[i] for i < kv->count. */
int fkd_gguf_array_strings(const char **strs, uint32_t *lens, const fkd_gguf_kv *kv,
                           fkd_error *err);

const char *fkd_gguf_vtype_name(int t);
const char *fkd_ggml_type_name(int t);         /* every ggml type, "unknown" otherwise */
int fkd_gguf_tensor_type_supported(int t);     /* f32 f16 bf16 q8_0 q4_0 q4_1 */
/* Bytes of a tensor of this type and shape; refuses unsupported types,
 * zero or overflowing dims and rows that are not whole blocks. */
int fkd_gguf_tensor_bytes(uint64_t *bytes, int type, const uint64_t *ne, int n_dims,
                          fkd_error *err);
/* All of t as floats (out has t->n_values). */
int fkd_gguf_tensor_to_f32(float *out, const fkd_gguf_tensor *t, fkd_error *err);

/* Writer: key/values in the order added, tensors laid out back to back at
 * the default alignment. Tensor data is referenced, not copied, until
 * write, which is atomic. After a failed add, write refuses. */
typedef struct fkd_gguf_writer fkd_gguf_writer;
int fkd_gguf_writer_new(fkd_gguf_writer **w, fkd_error *err);
void fkd_gguf_writer_free(fkd_gguf_writer **w);
int fkd_gguf_writer_add(fkd_gguf_writer *w, const char *key, int type, const void *value,
                        fkd_error *err);   /* a scalar of a numeric or bool type */
int fkd_gguf_writer_add_u32(fkd_gguf_writer *w, const char *key, uint32_t v, fkd_error *err);
int fkd_gguf_writer_add_f32(fkd_gguf_writer *w, const char *key, float v, fkd_error *err);
int fkd_gguf_writer_add_str(fkd_gguf_writer *w, const char *key, const char *s, size_t len,
                            fkd_error *err);
int fkd_gguf_writer_add_array(fkd_gguf_writer *w, const char *key, int elem_type,
                              const void *values, uint64_t count, fkd_error *err);
int fkd_gguf_writer_add_str_array(fkd_gguf_writer *w, const char *key, const char *const *strs,
                                  const uint32_t *lens, uint64_t count, fkd_error *err);
int fkd_gguf_writer_copy_kv(fkd_gguf_writer *w, const fkd_gguf_kv *kv, fkd_error *err);
int fkd_gguf_writer_add_tensor(fkd_gguf_writer *w, const char *name, int type,
                               const uint64_t *ne, int n_dims, const void *data, uint64_t bytes,
                               fkd_error *err);
int fkd_gguf_writer_write(const fkd_gguf_writer *w, const char *path, fkd_error *err);

/* The llama architecture. Config from the metadata (required: block_count,
 * embedding_length, feed_forward_length, attention.head_count, context_length,
 * attention.layer_norm_rms_epsilon; head_count_kv, rope.freq_base, vocab_size
 * optional; a tied head when output.weight is absent). max_seq > 0 caps the
 * file's context length (the KV cache is sized from it). */
int fkd_gguf_llama_config(fkd_model_config *cfg, const fkd_gguf *g, int max_seq, fkd_error *err);
/* All weights dequantized to f32 into fresh params; any tensor that is not
 * part of the llama model is refused by name. */
int fkd_gguf_llama_load(fkd_params *params, const fkd_gguf *g, int max_seq, fkd_error *err);
/* The byte-level BPE tokenizer of tokenizer.ggml.* (model "gpt2"; the
 * pre-tokenizer of tokenizer.ggml.pre, "gpt2" when absent; bos/eos ids). */
int fkd_gguf_tokenizer(fkd_tokenizer *tok, const fkd_gguf *g, fkd_error *err);
/* Writes params as a llama GGUF: norm gains f32, matrices matrix_type (f32,
 * f16, q8_0, q4_0, q4_1; f32 for rows that are not whole blocks). The
 * tokenizer.* keys are copied from tokenizer_src, or, when it is NULL, the
 * byte vocabulary is written as a merge-free GPT-2 vocabulary (vocab 256). */
int fkd_gguf_llama_save(const char *path, const fkd_params *params, int matrix_type,
                        const fkd_gguf *tokenizer_src, const char *name, fkd_error *err);
/* The weights as blocks, without an fp32 copy: each tensor kind takes the
 * format of its first slice in the file (f32 for bf16) and every slice in
 * that format is copied block for block; a slice in another format (a mixed
 * file) is converted through f32. The model runs on fkd_qinfer; it cannot be
 * pruned or trained (fkd_qmodel_dequantize gives fp32 weights when needed). */
int fkd_gguf_llama_load_qmodel(fkd_qmodel *qm, const fkd_gguf *g, int max_seq, fkd_error *err);
/* For the commands that take a model path: 1 when the file starts with
 * GGUF's magic; and the weights (dequantized) with the tokenizer in one call. */
int fkd_gguf_is_gguf(const char *path);
int fkd_gguf_load_model(fkd_params *params, fkd_tokenizer *tok, const char *path, int max_seq,
                        fkd_error *err);
int fkd_gguf_load_qmodel(fkd_qmodel *qm, fkd_tokenizer *tok, const char *path, int max_seq,
                         fkd_error *err);

/* ======================================================================== *
 * QLoRA (compress/qlora.c): a quantized model as the frozen base of a LoRA
 * client, so the device never holds the base's block matrices in fp32.
 *   fkd_qlora_base_params(&base, &qm, err);   -- the norm gains in fp32
 *   fkd_qlora_source(&src, &qm, err);         -- every matrix, on demand
 *   fkd_model_init_lora(&m, &base, &src, &lora, B, T, recompute, err);
 * ======================================================================== */
/* A weight source over qm's matrices (any format; pruned weights read as
 * 0): block matrices per layer, FKD_T_TOK_EMB and FKD_T_HEAD rows (layer 0).
 * qm must outlive src and every model using it. */
int fkd_qlora_source(fkd_weight_source *src, const fkd_qmodel *qm, fkd_error *err);
/* Fresh params holding only the norm gains, from qm (fkd_params_init_held):
 * the source serves every matrix, embedding and head included. */
int fkd_qlora_base_params(fkd_params *base, const fkd_qmodel *qm, fkd_error *err);
/* Bytes a QLoRA client holds for its base of cfg: the quantized model of
 * fkd_qmodel_quantize(type) plus the fp32 norm gains of fkd_qlora_base_params. */
size_t fkd_qlora_base_bytes(const fkd_model_config *cfg, int type);
/* The three calls above in one: src over qm, the norm gains, and the model
 * with the adapters lora (initialised by the caller) for (B,T) batches.
 * qm, src and lora must outlive m; on failure nothing is left allocated. */
int fkd_qlora_model_init(fkd_model *m, fkd_weight_source *src, const fkd_qmodel *qm,
                         fkd_lora *lora, int B, int T, int recompute, fkd_error *err);

/* ======================================================================== *
 * Structured pruning (compress/prune_struct.c, compress/prune_vocab.c):
 * a smaller dense student cut out of a teacher, Minitron-style. Importances
 * come from the teacher's own activations on calibration text; whole blocks
 * (depth), key-value groups with their query heads, FFN channels and
 * embedding channels (width) are kept by rank and every affected tensor is
 * sliced consistently. The head size stays the teacher's (RoPE's frequencies
 * depend on it), so the student's dim is its heads x the teacher's head size.
 * docs/pruning.md has the method and the measured students.
 * ======================================================================== */
#define FKD_PRUNE_MAX_KV 256   /* kv heads of a teacher */

/* What the calibration pass measured, per teacher structure. */
typedef struct {
    fkd_model_config cfg;  /* the teacher's */
    int64_t tokens;        /* calibration positions */
    double base_loss;      /* teacher's mean next-token loss on them (nats) */
    double *block_kl;      /* (L) mean KL(teacher || teacher without block l), nats per
                              position; NULL when not computed */
    double *block_cos;     /* (L) 1 - mean cosine(block input, block output) */
    double *head_score;    /* (L, H) mean L2 norm of each query head's attention output */
    double *ffn_score;     /* (L, F) mean |silu(W1 x) * W3 x| per channel */
    double *chan_score;    /* (C) mean |RMSNorm output| per channel, summed over every norm */
    double *memory;        /* one allocation for the arrays above */
} fkd_prune_importance;

/* Runs the teacher over tokens (n_seq sequences of seq_len, no separators
 * added) and fills imp. depth_kl = 1 also scores each block by the KL of the
 * next-token distributions without it (about L/2 extra forward passes: keep
 * n_seq * seq_len to a few hundred or a thousand tokens). progress draws a
 * line on a terminal. */
int fkd_prune_importance_compute(fkd_prune_importance *imp, const fkd_params *teacher,
                                 const int32_t *tokens, int n_seq, int seq_len, int depth_kl,
                                 int progress, fkd_error *err);
void fkd_prune_importance_free(fkd_prune_importance *imp);

/* Vocabulary trimming. The tables of a byte-level BPE tokenizer (GGUF's
 * tokenizer.ggml.*), owned: tokens in GPT-2's byte-level spelling, GGUF
 * token types, merges "left right" by priority, special ids (-1 = none). */
typedef struct {
    int n_tokens, n_merges;
    char **tokens;
    uint32_t *token_lens;
    int32_t *token_types;
    char **merges;
    uint32_t *merge_lens;
    int32_t bos_id, eos_id, unk_id, pad_id;
    char pre[32];          /* tokenizer.ggml.pre */
    char *text;            /* the strings' storage */
} fkd_bpe_tables;

/* old_to_new[old] = new id or -1 when dropped; new ids keep the old order. */
typedef struct {
    int old_vocab, new_vocab;
    int32_t *old_to_new;   /* (old_vocab) */
    int32_t *new_to_old;   /* (new_vocab) */
} fkd_vocab_map;

int fkd_bpe_tables_from_gguf(fkd_bpe_tables *t, const fkd_gguf *g, fkd_error *err);
void fkd_bpe_tables_free(fkd_bpe_tables *t);
/* train's BPE tokenizer from the tables. */
int fkd_bpe_tables_tokenizer(fkd_tokenizer *tok, const fkd_bpe_tables *t, fkd_error *err);
/* Keeps the tokens of used (the corpus encoded with full), the byte tokens,
 * every non-normal token (control, user-defined, unknown) and the special
 * ids, closed under merge ancestry: every token BPE builds a kept token
 * through (its merge tree, replayed on its bytes) is kept. Text the used ids came from encodes with the trimmed
 * tokenizer exactly as with the full one, remapped; any other text still
 * encodes (down to bytes). Fills map and the trimmed tables (the merges
 * whose parts and result are kept, in order). */
int fkd_vocab_trim(fkd_vocab_map *map, fkd_bpe_tables *trimmed, const fkd_bpe_tables *full,
                   const int32_t *used, size_t n_used, fkd_error *err);
/* The map again from the two tables (by spelling), e.g. for a student read
 * back from its GGUF file; refuses tables not trimmed from full. */
int fkd_vocab_map_from_tables(fkd_vocab_map *map, const fkd_bpe_tables *full,
                              const fkd_bpe_tables *trimmed, fkd_error *err);
void fkd_vocab_map_free(fkd_vocab_map *m);
/* out[i] = new id of in[i] (out may be in); a dropped id is an error and
 * nothing is written. */
int fkd_vocab_remap_tokens(int32_t *out, const int32_t *in, size_t n, const fkd_vocab_map *m,
                           fkd_error *err);
/* Rewrites a shard of the full vocabulary in place: tokens and top-k ids to
 * the new ids; the probability of a dropped id is removed from the k, so it
 * joins the rest mass (1 - sum); the freed slots hold probability 0. */
int fkd_vocab_remap_softlabels(fkd_softlabel_shard *s, const fkd_vocab_map *m, fkd_error *err);

/* The same with the tokenizer written from tables (a trimmed vocabulary):
 * tokens, types, merges, pre-tokenizer, special ids; tokenizer_src (may be
 * NULL) lends the keys that do not depend on ids (chat template, add_bos).
 * The tables' token count must be the model's vocabulary. */
int fkd_gguf_llama_save_bpe(const char *path, const fkd_params *params, int matrix_type,
                            const fkd_bpe_tables *tables, const fkd_gguf *tokenizer_src,
                            const char *name, fkd_error *err);
/* The deployment file: qm's tensors written in their own formats (for
 * fkd_qmodel_quantize(Q4_1): Q4_1 matrices, a Q8_0 embedding/head, f32
 * norms, which llama.cpp runs as it is), with the tokenizer from tables,
 * else copied from tokenizer_src, else the byte vocabulary (vocab 256).
 * A pruning mask is not written (GGUF has no place for it): the file holds
 * the blocks fkd_qinfer runs. fkd_gguf_llama_save(_bpe) quantize params
 * with every matrix in matrix_type and write through this function. */
int fkd_gguf_llama_save_qmodel(const char *path, const fkd_qmodel *qm,
                               const fkd_bpe_tables *tables, const fkd_gguf *tokenizer_src,
                               const char *name, fkd_error *err);
/* The deployment file of params in one call: fkd_qmodel_quantize_deploy
 * (scheme, calib: NULL = none) written as above. What the simulation's
 * student-<scheme>.gguf is (`fedkd export` makes the same file, with its
 * options over the recipe). */
int fkd_gguf_llama_export(const char *path, const fkd_params *params, int scheme,
                          const fkd_token_stream *calib, const fkd_bpe_tables *tables,
                          const fkd_gguf *tokenizer_src, const char *name, fkd_error *err);

/* Which teacher structures the student keeps (indices ascending). */
typedef struct {
    fkd_model_config cfg;   /* the student's */
    int32_t *layers;        /* (L') teacher blocks */
    int32_t *heads;         /* (L', H') teacher query heads, whole kv groups in order */
    int32_t *kv_heads;      /* (L', KV') teacher kv heads */
    int32_t *ffn;           /* (L', F') teacher FFN channels */
    int32_t *channels;      /* (C') teacher embedding channels */
    int32_t *memory;
} fkd_prune_plan;

/* Picks the structures for the student shape target (its vocab is ignored:
 * map's, or the teacher's when map is NULL). Blocks by block_kl (block_cos
 * when KL was not computed), smallest change dropped first; per kept block
 * the kv groups of largest summed head score and in each group its best query
 * heads; FFN channels per block and embedding channels overall by score.
 * target must keep the teacher's head size (dim = n_heads * hd) and may not
 * exceed it anywhere; n_heads / n_kv_heads at most the teacher's ratio. */
int fkd_prune_plan_make(fkd_prune_plan *plan, const fkd_prune_importance *imp,
                        const fkd_model_config *target, const fkd_vocab_map *map,
                        fkd_error *err);
void fkd_prune_plan_free(fkd_prune_plan *plan);
/* The student: teacher's tensors sliced by the plan (rows of the embedding
 * by map->new_to_old when map is not NULL); a tied head stays tied. */
int fkd_prune_build(fkd_params *student, const fkd_params *teacher, const fkd_prune_plan *plan,
                    const fkd_vocab_map *map, fkd_error *err);
/* The whole recipe in one call (compress/prune_teacher.c), as `fedkd prune`
 * and the simulation run it: vocabulary trimmed from vocab_text (the public
 * corpus encoded by the teacher; NULL or trim_vocab 0 keeps every token),
 * importances on calib_text (windows spread evenly over it), the shape from
 * the budget or the explicit fields, the plan and the student. */
typedef struct {
    size_t target_params;   /* 0: the teacher's shape, then the explicit fields */
    int min_layers;         /* with target_params: fewest blocks before narrowing
                               (0: fkd_prune_default_min_layers) */
    int layers, heads, kv_heads, ffn; /* > 0 overrides */
    int trim_vocab;         /* 1: keep only what vocab_text uses (and what that needs) */
    int calib_tokens, calib_seq;
    int depth_kl;           /* 1: KL depth score; 0: cosine */
    int progress;           /* progress line on a terminal */
} fkd_prune_config;

typedef struct {
    fkd_params student;
    fkd_bpe_tables vocab;   /* the student's tokenizer (all of the teacher's when not trimmed) */
    fkd_vocab_map map;      /* teacher ids -> student ids (the identity when not trimmed) */
    fkd_prune_importance imp;
    fkd_prune_plan plan;
    int used_tokens;        /* distinct tokens of vocab_text */
} fkd_prune_result;

fkd_prune_config fkd_prune_defaults(void);
int fkd_prune_teacher(fkd_prune_result *r, const fkd_params *teacher,
                      const fkd_bpe_tables *teacher_vocab, const fkd_token_stream *vocab_text,
                      const fkd_token_stream *calib_text, const fkd_prune_config *cfg,
                      fkd_error *err);
void fkd_prune_result_free(fkd_prune_result *r);
/* A student shape of at most target_params for a teacher of shape t with
 * a vocabulary of vocab tokens: the teacher's width with as many blocks as
 * fit, down to min_layers (0: fkd_prune_default_min_layers); below that
 * min_layers blocks with the widest attention and FFN that fit.
 * FKD_E_LIMIT when even the narrowest does not. */
int fkd_prune_fit(fkd_model_config *out, const fkd_model_config *t, int vocab,
                  size_t target_params, int min_layers, fkd_error *err);
/* The fewest blocks a budget cuts the teacher t to before it narrows:
 * FKD_PRUNE_KEEP_BLOCKS_NUM / _DEN of them, rounded up. Measured on
 * SmolLM2-135M at a third of its parameters (docs/pruning.md, "Which
 * student heals"): 2/3 of the blocks, narrowed in whole kv groups, healed
 * best; width alone came next, depth alone last. */
#define FKD_PRUNE_KEEP_BLOCKS_NUM 2
#define FKD_PRUNE_KEEP_BLOCKS_DEN 3
int fkd_prune_default_min_layers(const fkd_model_config *t);

#endif
