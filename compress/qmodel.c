/* qmodel.c — the quantized student: per-tensor formats chosen by policy,
 * one arena holding every tensor's blocks (and the pruning mask), its
 * serialization for the downlink, and dequantization back to fkd_params.
 *
 * The decoder is written for bytes that came over the network: it rebuilds
 * the expected layout from the config alone, then demands that every tensor
 * entry, every size and the CRC agree with it before it copies anything.
 */
#include "fkd_compress.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbytes.h"

static const uint8_t qmodel_magic[8] = {'F', 'K', 'D', 'Q', 'M', 'D', 'L', 0};
#define QMODEL_FLAG_MASK 1u
#define CONFIG_BYTES (8 * 4 + 2 * 4)
#define TENSOR_ENTRY_BYTES (4 + 8 + 8)
#define CRC_BYTES 4
#define ARENA_ALIGN 64
/* Bounds on config fields checked before any size is multiplied out. */
#define MAX_DIM (1 << 20)
#define MAX_LAYERS 1024

static size_t tensor_row_len(const fkd_tensor_info *ti)
{
    return ti->ndim >= 2 ? (size_t)ti->shape[ti->ndim - 1] : ti->count;
}

static size_t tensor_bytes(int type, const fkd_tensor_info *ti)
{
    size_t row_len = tensor_row_len(ti);
    if (ti->count == 0) return 0;
    size_t rb = fkd_qtype_row_bytes(type, row_len);
    return rb ? rb * (ti->count / row_len) : 0;
}

/* The policy of fkd_compress.h: norms F32, embedding/head at least Q8_0,
 * the other matrices `scheme`; rows that do not split into blocks take F16. */
static int policy_type(int t, const fkd_tensor_info *ti, int scheme)
{
    if (!ti->is_matrix) return FKD_QTYPE_F32;
    int type = scheme;
    if ((t == FKD_T_TOK_EMB || t == FKD_T_HEAD) && fkd_qtype_is_int4(scheme))
        type = FKD_QTYPE_Q8_0;
    if (fkd_qtype_row_bytes(type, tensor_row_len(ti)) == 0) type = FKD_QTYPE_F16;
    return type;
}

static void *arena_alloc(size_t bytes)
{
    size_t rounded = (bytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    void *p = aligned_alloc(ARENA_ALIGN, rounded ? rounded : ARENA_ALIGN);
    if (p) memset(p, 0, rounded ? rounded : ARENA_ALIGN);
    return p;
}

/* Sets up qm's layout for cfg and types (no allocation). */
static int qmodel_layout(fkd_qmodel *qm, const fkd_model_config *cfg, const int *types,
                         fkd_error *err)
{
    memset(qm, 0, sizeof *qm);
    qm->cfg = *cfg;
    qm->n_params = fkd_param_layout(qm->tensors, cfg);
    size_t total = 0;
    for (int t = 0; t < FKD_T_COUNT; t++) {
        const fkd_tensor_info *ti = &qm->tensors[t];
        if (!fkd_qtype_valid(types[t]))
            return fkd_error_set(err, FKD_E_INVALID_ARG, "tensor %s: unknown format %d", ti->name, types[t]);
        size_t bytes = tensor_bytes(types[t], ti);
        if (ti->count && !bytes)
            return fkd_error_set(err, FKD_E_INVALID_ARG, "tensor %s: rows of %zu values cannot be stored as %s (blocks of %zu)",
                                 ti->name, tensor_row_len(ti), fkd_qtype_name(types[t]), fkd_qtype_block_values(types[t]));
        qm->q[t] = (fkd_qtensor){types[t], ti->count, tensor_row_len(ti), bytes, NULL};
        total += bytes;
    }
    qm->data_bytes = total;
    return 0;
}

/* Allocates the arena of a laid-out model and points the tensors into it. */
static int qmodel_alloc(fkd_qmodel *qm, int with_mask, fkd_error *err)
{
    size_t total = qm->data_bytes;
    qm->memory = arena_alloc(total + (with_mask ? qm->n_params : 0));
    if (!qm->memory) return fkd_error_set(err, FKD_E_NOMEM, "out of memory for a %zu-byte quantized model", total);
    size_t off = 0;
    for (int t = 0; t < FKD_T_COUNT; t++) {
        qm->q[t].data = qm->memory + off;
        off += qm->q[t].bytes;
    }
    if (with_mask) qm->mask = qm->memory + total;
    return 0;
}

int fkd_qmodel_init(fkd_qmodel *qm, const fkd_model_config *cfg, const int *types, fkd_error *err)
{
    if (qmodel_layout(qm, cfg, types, err) < 0 || qmodel_alloc(qm, 0, err) < 0) {
        fkd_qmodel_free(qm);
        return -1;
    }
    return 0;
}

/* The weights of one row's int4 error: the importance of each input
 * channel (NULL: 1) times the weight's own square (plus a floor of 1e-3 of
 * the row's mean square, so small weights still count). Why the square:
 * measured on the healed SmolLM2 student (docs/benchmarks.md, "int4
 * quality"), plain least squares lowers the weights' squared error by 30 %
 * yet raises perplexity by 17 %, since it gives up the exact extremes that
 * round-to-nearest keeps; weighting by x^2 keeps them. */
static void row_weights(float *w, const float *x, const float *imp, size_t n)
{
    double ms = 0.0;
    for (size_t i = 0; i < n; i++) ms += (double)x[i] * x[i];
    float floor = (float)(1e-3 * ms / (double)n);
    for (size_t i = 0; i < n; i++) w[i] = (x[i] * x[i] + floor) * (imp ? imp[i] : 1.0f);
}

/* Quantizes one tensor (rows of row_len, L layers stacked) in its format:
 * int4 by rule, each layer's rows weighted as row_weights says with that
 * layer's importances (imp (L, row_len), may be NULL); every other format
 * as quant.c does. scratch holds row_len floats. */
static void quantize_tensor(uint8_t *out, const fkd_qtensor *q, const float *src, int n_layers,
                            int rule, const float *imp, float *scratch)
{
    if (!fkd_qtype_is_int4(q->type) || rule == FKD_QRULE_RTN) {
        fkd_quantize_row(out, q->type, src, q->count);
        return;
    }
    size_t rows = q->count / q->row_len, per_layer = rows / (size_t)n_layers;
    size_t row_bytes = fkd_qtype_row_bytes(q->type, q->row_len);
    for (size_t r = 0; r < rows; r++) {
        const float *x = src + r * q->row_len;
        row_weights(scratch, x, imp ? imp + (r / per_layer) * q->row_len : NULL, q->row_len);
        fkd_quantize_row_mse(out + r * row_bytes, q->type, x, scratch, q->row_len);
    }
}

static size_t qm_max_row(const fkd_qmodel *qm)
{
    size_t n = 1;
    for (int t = 0; t < FKD_T_COUNT; t++) n = qm->q[t].row_len > n ? qm->q[t].row_len : n;
    return n;
}

static int imatrix_check(const fkd_qimatrix *im, const fkd_model_config *cfg, fkd_error *err)
{
    const fkd_model_config *a = &im->cfg;
    if (a->vocab != cfg->vocab || a->dim != cfg->dim || a->n_layers != cfg->n_layers ||
        a->n_heads != cfg->n_heads || a->n_kv_heads != cfg->n_kv_heads || a->ffn_hidden != cfg->ffn_hidden)
        return fkd_error_set(err, FKD_E_MISMATCH, "the importance matrix was computed for another "
                             "model shape (dim %d, %d blocks) than this one (dim %d, %d blocks)",
                             a->dim, a->n_layers, cfg->dim, cfg->n_layers);
    return 0;
}

int fkd_qmodel_quantize_with(fkd_qmodel *qm, const fkd_params *params, const int *types,
                             const uint8_t *mask, int rule, const fkd_qimatrix *imatrix,
                             fkd_error *err)
{
    memset(qm, 0, sizeof *qm);
    if (rule != FKD_QRULE_MSE && rule != FKD_QRULE_RTN)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "unknown int4 rounding rule %d", rule);
    if (imatrix && imatrix_check(imatrix, &params->cfg, err) < 0) return -1;
    if (qmodel_layout(qm, &params->cfg, types, err) < 0 || qmodel_alloc(qm, mask != NULL, err) < 0) {
        fkd_qmodel_free(qm);
        return -1;
    }
    if (mask) memcpy(qm->mask, mask, qm->n_params);
    float *masked = NULL, *scratch = malloc(qm_max_row(qm) * sizeof *scratch);
    if (!scratch) {
        fkd_qmodel_free(qm);
        return fkd_error_set(err, FKD_E_NOMEM, "out of memory quantizing");
    }
    for (int t = 0; t < FKD_T_COUNT; t++) {
        const fkd_tensor_info *ti = &qm->tensors[t];
        if (!ti->count) continue;
        const float *src = params->memory + ti->offset;
        if (mask) {
            /* quantize the pruned tensor, so block scales ignore pruned weights */
            float *tmp = realloc(masked, ti->count * sizeof *tmp);
            if (!tmp) {
                free(masked);
                free(scratch);
                fkd_error_set(err, FKD_E_NOMEM, "out of memory quantizing tensor %s", ti->name);
                fkd_qmodel_free(qm);
                return -1;
            }
            masked = tmp;
            memcpy(masked, src, ti->count * sizeof *masked);
            fkd_prune_apply(masked, mask + ti->offset, ti->count);
            src = masked;
        }
        const float *imp = imatrix && fkd_tensor_is_block_matrix(t) ? imatrix->w[t] : NULL;
        quantize_tensor(qm->q[t].data, &qm->q[t], src, params->cfg.n_layers, rule, imp, scratch);
    }
    free(masked);
    free(scratch);
    return 0;
}

int fkd_qmodel_quantize_types(fkd_qmodel *qm, const fkd_params *params, const int *types,
                              const uint8_t *mask, fkd_error *err)
{
    return fkd_qmodel_quantize_with(qm, params, types, mask, FKD_QRULE_RTN, NULL, err);
}

void fkd_qmodel_policy_types(int types[FKD_T_COUNT], const fkd_model_config *cfg, int scheme)
{
    fkd_tensor_info infos[FKD_T_COUNT];
    fkd_param_layout(infos, cfg);
    for (int t = 0; t < FKD_T_COUNT; t++) types[t] = policy_type(t, &infos[t], scheme);
}

int fkd_qmodel_parse_types(int types[FKD_T_COUNT], const fkd_model_config *cfg, const char *list,
                           fkd_error *err)
{
    fkd_tensor_info infos[FKD_T_COUNT];
    int out[FKD_T_COUNT];
    fkd_param_layout(infos, cfg);
    memcpy(out, types, sizeof out);
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ","), eq = strcspn(p, "=");
        char kind[32], type[16];
        if (eq >= len || eq >= sizeof kind || len - eq - 1 >= sizeof type)
            return fkd_error_set(err, FKD_E_INVALID_ARG, "tensor types '%s': '%.*s' is not "
                                 "TENSOR=TYPE (e.g. w2=q8_0)", list, (int)len, p);
        memcpy(kind, p, eq), kind[eq] = 0;
        memcpy(type, p + eq + 1, len - eq - 1), type[len - eq - 1] = 0;
        int t = 0, q = fkd_qtype_from_name(type);
        while (t < FKD_T_COUNT && strcmp(infos[t].name, kind) != 0) t++;
        if (t == FKD_T_COUNT || !infos[t].is_matrix || q < 0)
            return fkd_error_set(err, FKD_E_INVALID_ARG, "tensor types '%s': '%s' is not a matrix "
                                 "(wq wk wv wo w1 w3 w2 tok_emb head) or '%s' not a format (f32 f16 "
                                 "q8_0 q4_0 q4_1)", list, kind, type);
        out[t] = q;
        p += len + (p[len] == ',');
    }
    memcpy(types, out, sizeof out);
    return 0;
}

int fkd_qmodel_quantize(fkd_qmodel *qm, const fkd_params *params, int type, const uint8_t *mask,
                        fkd_error *err)
{
    if (!fkd_qtype_valid(type)) {
        memset(qm, 0, sizeof *qm);
        return fkd_error_set(err, FKD_E_INVALID_ARG, "unknown quantization format %d", type);
    }
    int types[FKD_T_COUNT];
    fkd_qmodel_policy_types(types, &params->cfg, type);
    return fkd_qmodel_quantize_types(qm, params, types, mask, err);
}

/* The matrices the deploy recipe keeps at 8 bits: measured the most
 * sensitive to int4 on a healed SmolLM2 student, per byte. Rounded to
 * nearest, w2 alone lost +6.4 % and wo +3.1 % of the +11.7 % a Q4_1 model
 * lost, for a sixth of its bytes. With GPTQ on the rest, wv at Q8_0 takes
 * 4.3 % to 3.4 % for 2.4 % more bytes, the best gain per byte of the
 * remaining matrices (it is small under grouped-query attention); llama.cpp's
 * Q4_K_M also gives attn_v and ffn_down more bits. */
static int deploy_keeps_q8(int t)
{
    return t == FKD_T_W2 || t == FKD_T_WO || t == FKD_T_WV;
}

void fkd_qmodel_deploy_types(int types[FKD_T_COUNT], const fkd_model_config *cfg, int scheme)
{
    fkd_qmodel_policy_types(types, cfg, scheme);
    for (int t = 0; t < FKD_T_COUNT; t++)
        if (deploy_keeps_q8(t) && fkd_qtype_is_int4(types[t])) types[t] = FKD_QTYPE_Q8_0;
}

/* The recipe's calibration windows: FKD_QIMATRIX_DEFAULT_SEQ, or the context. */
static int deploy_seq(const fkd_model_config *cfg)
{
    return cfg->max_seq < FKD_QIMATRIX_DEFAULT_SEQ ? cfg->max_seq : FKD_QIMATRIX_DEFAULT_SEQ;
}

int64_t fkd_qmodel_deploy_calib_tokens(const fkd_model_config *cfg, const fkd_token_stream *calib)
{
    int seq = deploy_seq(cfg);
    int64_t n = calib ? calib->n : 0;
    if (n > FKD_QIMATRIX_DEFAULT_TOKENS) n = FKD_QIMATRIX_DEFAULT_TOKENS;
    return n < seq ? 0 : n / seq * seq;
}

int fkd_qmodel_quantize_deploy(fkd_qmodel *qm, const fkd_params *params, int scheme,
                               const uint8_t *mask, const fkd_token_stream *calib, fkd_error *err)
{
    if (!fkd_qtype_valid(scheme)) {
        memset(qm, 0, sizeof *qm);
        return fkd_error_set(err, FKD_E_INVALID_ARG, "unknown quantization format %d", scheme);
    }
    int types[FKD_T_COUNT];
    fkd_qmodel_deploy_types(types, &params->cfg, scheme);
    /* GPTQ only with calibration text and on whole matrices; otherwise
     * round-to-nearest. An int8 or float scheme needs neither. */
    int64_t n = fkd_qmodel_deploy_calib_tokens(&params->cfg, calib);
    if (!fkd_qtype_is_int4(scheme) || mask || n == 0)
        return fkd_qmodel_quantize_with(qm, params, types, mask, FKD_QRULE_RTN, NULL, err);
    fkd_token_stream head = *calib;
    head.n = n;
    return fkd_qmodel_quantize_gptq(qm, params, types, &head, (int)n, deploy_seq(&params->cfg), err);
}

void fkd_qmodel_deploy_recipe(char *out, size_t cap, int scheme, int64_t calib_tokens)
{
    if (!fkd_qtype_is_int4(scheme)) {
        snprintf(out, cap, "%s", fkd_qtype_name(scheme));
        return;
    }
    char q8[64] = "";
    for (int t = 0; t < FKD_T_COUNT; t++)
        if (deploy_keeps_q8(t)) {
            size_t used = strlen(q8);
            snprintf(q8 + used, sizeof q8 - used, "%s ", fkd_tensor_name(t));
        }
    if (calib_tokens > 0)
        snprintf(out, cap, "%s gptq, %lld calibration tokens, %sq8_0", fkd_qtype_name(scheme),
                 (long long)calib_tokens, q8);
    else
        snprintf(out, cap, "%s rtn, %sq8_0", fkd_qtype_name(scheme), q8);
}

size_t fkd_qmodel_scheme_bytes(const fkd_model_config *cfg, int type)
{
    fkd_tensor_info infos[FKD_T_COUNT];
    int types[FKD_T_COUNT];
    fkd_qmodel qm;
    if (!fkd_qtype_valid(type) || fkd_config_validate(cfg, NULL) < 0) return 0;
    fkd_param_layout(infos, cfg);
    for (int t = 0; t < FKD_T_COUNT; t++) types[t] = policy_type(t, &infos[t], type);
    return qmodel_layout(&qm, cfg, types, NULL) < 0 ? 0 : qm.data_bytes;
}

void fkd_qmodel_free(fkd_qmodel *qm)
{
    if (!qm) return;
    free(qm->memory);
    memset(qm, 0, sizeof *qm);
}

int fkd_qmodel_dequantize(fkd_params *params, const fkd_qmodel *qm, fkd_error *err)
{
    if (fkd_params_init(params, &qm->cfg, err) < 0) return -1;
    for (int t = 0; t < FKD_T_COUNT; t++) {
        const fkd_qtensor *q = &qm->q[t];
        if (q->count) fkd_dequantize_row(params->memory + qm->tensors[t].offset, q->type, q->data, q->count);
    }
    if (qm->mask) fkd_prune_apply(params->memory, qm->mask, qm->n_params);
    return 0;
}

/* ---- serialization ---------------------------------------------------------- */
static size_t mask_bitmap_bytes(size_t n_params)
{
    return (n_params + 7) / 8;
}

size_t fkd_qmodel_encoded_bytes(const fkd_qmodel *qm)
{
    return sizeof qmodel_magic + 4 + 4 + CONFIG_BYTES + 4 + FKD_T_COUNT * TENSOR_ENTRY_BYTES +
           qm->data_bytes + (qm->mask ? mask_bitmap_bytes(qm->n_params) : 0) + CRC_BYTES;
}

static void write_config(fkd_wr *w, const fkd_model_config *c)
{
    const int ints[8] = {c->vocab, c->dim, c->n_layers, c->n_heads,
                         c->n_kv_heads, c->ffn_hidden, c->max_seq, c->tie_embeddings};
    for (int i = 0; i < 8; i++) wr_u32(w, (uint32_t)ints[i]);
    wr_f32(w, c->rope_theta);
    wr_f32(w, c->norm_eps);
}

int fkd_qmodel_encode(uint8_t **data, size_t *bytes, const fkd_qmodel *qm, fkd_error *err)
{
    size_t total = fkd_qmodel_encoded_bytes(qm);
    uint8_t *out = calloc(1, total);
    if (!out) return fkd_error_set(err, FKD_E_NOMEM, "out of memory encoding a %zu-byte quantized model", total);
    fkd_wr w = {out};
    wr_bytes(&w, qmodel_magic, sizeof qmodel_magic);
    wr_u32(&w, FKD_QMODEL_VERSION);
    wr_u32(&w, qm->mask ? QMODEL_FLAG_MASK : 0);
    write_config(&w, &qm->cfg);
    wr_u32(&w, FKD_T_COUNT);
    for (int t = 0; t < FKD_T_COUNT; t++) {
        wr_u32(&w, (uint32_t)qm->q[t].type);
        wr_u64(&w, qm->q[t].count);
        wr_u64(&w, qm->q[t].bytes);
    }
    wr_bytes(&w, qm->memory, qm->data_bytes);
    if (qm->mask)
        for (size_t i = 0; i < qm->n_params; i++)
            if (qm->mask[i]) w.p[i / 8] |= (uint8_t)(1u << (i % 8));
    w.p += qm->mask ? mask_bitmap_bytes(qm->n_params) : 0;
    wr_u32(&w, fkd_crc32(0, out, total - CRC_BYTES));
    *data = out;
    *bytes = total;
    return 0;
}

static int read_config(fkd_model_config *c, fkd_rd *r, fkd_error *err)
{
    uint32_t v[8];
    float theta, eps;
    for (int i = 0; i < 8; i++)
        if (rd_u32(r, &v[i])) return fkd_error_set(err, FKD_E_TRUNCATED, "quantized model ends inside its config");
    if (rd_f32(r, &theta) || rd_f32(r, &eps))
        return fkd_error_set(err, FKD_E_TRUNCATED, "quantized model ends inside its config");
    for (int i = 0; i < 7; i++)
        if (v[i] == 0 || v[i] > MAX_DIM || (i == 2 && v[i] > MAX_LAYERS))
            return fkd_error_set(err, FKD_E_FORMAT, "quantized model config field %d is out of range (%u)", i, v[i]);
    if (v[7] > 1 || !isfinite(theta) || !isfinite(eps))
        return fkd_error_set(err, FKD_E_FORMAT, "quantized model config has invalid tie/rope/eps fields");
    *c = (fkd_model_config){(int)v[0], (int)v[1], (int)v[2], (int)v[3], (int)v[4], (int)v[5],
                            (int)v[6], (int)v[7], theta, eps};
    if (fkd_config_validate(c, err) < 0) return -1;
    if (fkd_config_param_count(c) > FKD_QMODEL_MAX_PARAMS)
        return fkd_error_set(err, FKD_E_LIMIT, "quantized model has %zu parameters, above the limit of %zu",
                             fkd_config_param_count(c), FKD_QMODEL_MAX_PARAMS);
    return 0;
}

/* 1 when every scale (blocks) or value (F32/F16) of the tensor is finite. */
static int tensor_finite(const fkd_qtensor *q)
{
    float tmp[FKD_QK];
    size_t bv = fkd_qtype_block_values(q->type), bb = fkd_qtype_block_bytes(q->type);
    for (size_t off = 0; off < q->bytes; off += bb) {
        if (q->type == FKD_QTYPE_Q8_0 || q->type == FKD_QTYPE_Q4_0) {
            tmp[0] = fkd_fp16_to_fp32((uint16_t)(q->data[off] | (q->data[off + 1] << 8)));
            if (!isfinite(tmp[0])) return 0;
            continue;
        }
        fkd_dequantize_row(tmp, q->type, q->data + off, bv);
        for (size_t i = 0; i < bv; i++)
            if (!isfinite(tmp[i])) return 0;
    }
    return 1;
}

int fkd_qmodel_decode(fkd_qmodel *qm, const uint8_t *data, size_t bytes, fkd_error *err)
{
    memset(qm, 0, sizeof *qm);
    fkd_rd r = {data, bytes};
    const uint8_t *magic = rd_take(&r, sizeof qmodel_magic);
    uint32_t version, flags, n_tensors;
    if (!magic || rd_u32(&r, &version) || rd_u32(&r, &flags))
        return fkd_error_set(err, FKD_E_TRUNCATED, "quantized model is %zu bytes, shorter than its header", bytes);
    if (memcmp(magic, qmodel_magic, sizeof qmodel_magic) != 0)
        return fkd_error_set(err, FKD_E_FORMAT, "not a quantized fedkd model (bad magic)");
    if (version > FKD_QMODEL_VERSION)
        return fkd_error_set(err, FKD_E_VERSION, "quantized model has version %u, this build reads up to %d; upgrade",
                             version, FKD_QMODEL_VERSION);
    if (version == 0 || (flags & ~QMODEL_FLAG_MASK))
        return fkd_error_set(err, FKD_E_FORMAT, "quantized model header has invalid version %u or flags %#x", version, flags);
    fkd_model_config cfg;
    if (read_config(&cfg, &r, err) < 0) return -1;
    if (rd_u32(&r, &n_tensors))
        return fkd_error_set(err, FKD_E_TRUNCATED, "quantized model ends before its tensor table");
    if (n_tensors != FKD_T_COUNT)
        return fkd_error_set(err, FKD_E_FORMAT, "quantized model lists %u tensors, expected %d", n_tensors, FKD_T_COUNT);
    int types[FKD_T_COUNT];
    uint64_t counts[FKD_T_COUNT], sizes[FKD_T_COUNT];
    for (int t = 0; t < FKD_T_COUNT; t++) {
        uint32_t type;
        if (rd_u32(&r, &type) || rd_u64(&r, &counts[t]) || rd_u64(&r, &sizes[t]))
            return fkd_error_set(err, FKD_E_TRUNCATED, "quantized model ends inside its tensor table");
        if (!fkd_qtype_valid((int)type) || type > 255)
            return fkd_error_set(err, FKD_E_FORMAT, "quantized model tensor %d has unknown format %u", t, type);
        types[t] = (int)type;
    }
    if (qmodel_layout(qm, &cfg, types, err) < 0) return -1;
    for (int t = 0; t < FKD_T_COUNT; t++) {
        if (counts[t] != qm->q[t].count || sizes[t] != qm->q[t].bytes) {
            fkd_error_set(err, FKD_E_FORMAT, "quantized model tensor %s: %llu values in %llu bytes, its config implies %zu in %zu",
                          qm->tensors[t].name, (unsigned long long)counts[t], (unsigned long long)sizes[t],
                          qm->q[t].count, qm->q[t].bytes);
            goto fail;
        }
    }
    int with_mask = (flags & QMODEL_FLAG_MASK) != 0;
    size_t mask_bytes = with_mask ? mask_bitmap_bytes(qm->n_params) : 0;
    if (r.left != qm->data_bytes + mask_bytes + CRC_BYTES) {
        fkd_error_set(err, r.left < qm->data_bytes + mask_bytes + CRC_BYTES ? FKD_E_TRUNCATED : FKD_E_FORMAT,
                      "quantized model body is %zu bytes, its header implies %zu", r.left,
                      qm->data_bytes + mask_bytes + CRC_BYTES);
        goto fail;
    }
#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION /* let a fuzzer reach the checks below */
    if (fkd_crc32(0, data, bytes - CRC_BYTES) != le32(data + bytes - CRC_BYTES)) {
        fkd_error_set(err, FKD_E_CHECKSUM, "quantized model fails its CRC check; it was damaged in transit or on disk");
        goto fail;
    }
#endif
    if (qmodel_alloc(qm, with_mask, err) < 0) goto fail;
    memcpy(qm->memory, rd_take(&r, qm->data_bytes), qm->data_bytes);
    if (qm->mask) {
        const uint8_t *bits = rd_take(&r, mask_bytes);
        for (size_t i = 0; i < qm->n_params; i++) qm->mask[i] = (bits[i / 8] >> (i % 8)) & 1;
        if (qm->n_params % 8 && (bits[mask_bytes - 1] >> (qm->n_params % 8))) {
            fkd_error_set(err, FKD_E_FORMAT, "quantized model mask has stray bits past its last weight");
            goto fail;
        }
    }
    for (int t = 0; t < FKD_T_COUNT; t++) {
        if (!tensor_finite(&qm->q[t])) {
            fkd_error_set(err, FKD_E_FORMAT, "quantized model tensor %s holds non-finite scales or values",
                          qm->tensors[t].name);
            goto fail;
        }
    }
    return 0;
fail:
    fkd_qmodel_free(qm);
    return -1;
}

int fkd_qmodel_save(const char *path, const fkd_qmodel *qm, fkd_error *err)
{
    uint8_t *data;
    size_t bytes;
    if (fkd_qmodel_encode(&data, &bytes, qm, err) < 0) return -1;
    int rc = fkd_file_write_atomic(path, data, bytes, err);
    free(data);
    return rc;
}

int fkd_qmodel_load(fkd_qmodel *qm, const char *path, fkd_error *err)
{
    uint8_t *data;
    size_t bytes;
    memset(qm, 0, sizeof *qm);
    if (fkd_file_read_all(&data, &bytes, path, (size_t)1 << 34, err) < 0) return -1;
    int rc = fkd_qmodel_decode(qm, data, bytes, err);
    free(data);
    return rc;
}
