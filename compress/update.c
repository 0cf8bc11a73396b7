/* update.c — compression of a client's model update for the uplink.
 *
 * Pipeline (encoder): optional error feedback (add the residual kept from
 * earlier rounds), top-k by magnitude (or by |value x weight|, the client's
 * gradient as weight: the first-order loss change), value quantization per chunk of
 * FKD_UPDATE_CHUNK selected values (int8 or int4 symmetric, or ternary
 * sign*scale; stochastic rounding makes each code unbiased), index coding
 * (all / delta+varint / bitmap, whichever is smallest), then a CRC.
 *
 * Layout (little-endian):
 *   0  "FKDU"         4  u8 version     5  u8 value format   6  u8 index coding
 *   7  u8 flags (0)   8  u64 n          16 u64 k             24 u32 chunk
 *   28 u32 index bytes
 *   32 index section: none (all) | varints of gaps (idx - prev - 1, prev
 *      starting at -1) | bitmap of n bits (bit i = byte i/8, bit i%8)
 *      scales: ceil(k/chunk) x f32 (none for f32 values)
 *      values: f32 | int8 in [-127,127] | int4 as nibble q+8, q in [-7,7],
 *      value i in the low nibble of byte i/2 when i is even | ternary 2-bit
 *      codes (0: 0, 1: +scale, 2: -scale), value i at bits 2(i%4) of byte i/4
 *   end u32 CRC-32 of everything before it.
 * Every unused padding bit must be 0: one update has one encoding.
 *
 * The residual the client keeps is exactly "what the coordinator has not
 * received": the encoder reconstructs the decoded values with the decoder's
 * own function, so error feedback loses nothing over rounds.
 */
#include "fkd_compress.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cbytes.h"

static const uint8_t update_magic[4] = {'F', 'K', 'D', 'U'};
#define CRC_BYTES 4
#define VARINT_MAX_BYTES 5 /* indices are below 2^32 */
#define MAX_CHUNK 65536

/* ---- value formats --------------------------------------------------------- */
static int value_format_valid(int f)
{
    return f == FKD_UVAL_F32 || f == FKD_UVAL_INT8 || f == FKD_UVAL_INT4 || f == FKD_UVAL_TERNARY;
}

static uint64_t values_bytes(int fmt, uint64_t k)
{
    switch (fmt) {
    case FKD_UVAL_F32: return 4 * k;
    case FKD_UVAL_INT8: return k;
    case FKD_UVAL_INT4: return (k + 1) / 2;
    case FKD_UVAL_TERNARY: return (k + 3) / 4;
    }
    return 0;
}

static uint64_t scales_bytes(int fmt, uint64_t k, uint64_t chunk)
{
    return fmt == FKD_UVAL_F32 ? 0 : 4 * ((k + chunk - 1) / chunk);
}

/* The value a code stands for: the decoder and the error-feedback residual
 * both use this, so they agree to the bit. */
static float code_value(int fmt, int code, float scale)
{
    if (fmt == FKD_UVAL_TERNARY) return code == 1 ? scale : (code == 2 ? -scale : 0.0f);
    return (float)code * scale;
}

static int code_max(int fmt)
{
    return fmt == FKD_UVAL_INT8 ? 127 : 7;
}

/* Scale of a chunk: symmetric max for int8/int4; for ternary the mean
 * magnitude (deterministic, as Sparse Ternary Compression) or the max
 * (stochastic: |v|/max is then a probability, and the code is unbiased). */
static float chunk_scale(int fmt, int stochastic, const float *v, size_t m)
{
    float amax = 0.0f;
    double asum = 0.0;
    for (size_t i = 0; i < m; i++) {
        amax = fmaxf(amax, fabsf(v[i]));
        asum += fabsf(v[i]);
    }
    if (fmt == FKD_UVAL_TERNARY) return stochastic ? amax : (float)(asum / (double)m);
    return amax / (float)code_max(fmt);
}

static int quantize_value(int fmt, float v, float scale, int stochastic, fkd_rng *rng)
{
    if (scale == 0.0f) return 0;
    if (fmt == FKD_UVAL_TERNARY) {
        int sign = v > 0.0f ? 1 : (v < 0.0f ? 2 : 0);
        if (!stochastic) return sign;
        return fkd_rng_uniform(rng) < fabsf(v) / scale ? sign : 0;
    }
    float x = v / scale;
    float q = stochastic ? floorf(x + fkd_rng_uniform(rng)) : roundf(x);
    float hi = (float)code_max(fmt);
    q = q > hi ? hi : (q < -hi ? -hi : q);
    return (int)q;
}

static void put_code(uint8_t *vals, int fmt, size_t i, int code)
{
    if (fmt == FKD_UVAL_INT8) vals[i] = (uint8_t)(int8_t)code;
    else if (fmt == FKD_UVAL_INT4) vals[i / 2] |= (uint8_t)((code + 8) << (4 * (i % 2)));
    else vals[i / 4] |= (uint8_t)(code << (2 * (i % 4)));
}

/* Reads code i; -1 marks a code no encoder writes (refused). */
static int get_code(const uint8_t *vals, int fmt, size_t i)
{
    if (fmt == FKD_UVAL_INT8) {
        int c = (int8_t)vals[i];
        return c == -128 ? -1000 : c;
    }
    if (fmt == FKD_UVAL_INT4) {
        int nib = (vals[i / 2] >> (4 * (i % 2))) & 0x0f;
        return nib == 0 ? -1000 : nib - 8;
    }
    int c = (vals[i / 4] >> (2 * (i % 4))) & 3;
    return c == 3 ? -1000 : c;
}
#define BAD_CODE (-1000)

/* ---- top-k selection ---------------------------------------------------------- */
static void swapf(float *a, float *b)
{
    float t = *a;
    *a = *b;
    *b = t;
}

/* k-th smallest (0-based) of a[0..n) by quickselect; reorders a. */
static float select_kth(float *a, size_t n, size_t kth)
{
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] < a[lo]) swapf(&a[mid], &a[lo]);
        if (a[hi] < a[lo]) swapf(&a[hi], &a[lo]);
        if (a[hi] < a[mid]) swapf(&a[hi], &a[mid]);
        float pivot = a[mid];
        size_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < pivot) i++;
            while (a[j] > pivot) j--;
            if (i <= j) {
                swapf(&a[i], &a[j]);
                i++;
                if (j == 0) break;
                j--;
            }
        }
        if (kth <= j) hi = j;
        else if (kth >= i) lo = i;
        else return a[kth];
    }
    return a[kth];
}

/* The rank of entry i: its magnitude, times |w[i]| when weighted. */
static float score(const float *v, const float *w, size_t i)
{
    return w ? fabsf(v[i]) * fabsf(w[i]) : fabsf(v[i]);
}

/* Indices (ascending) of the k largest scores; ties at the threshold are
 * taken in index order so exactly k come out. */
static int select_top_k(uint32_t *idx, const float *v, const float *w, size_t n, size_t k,
                        fkd_error *err)
{
    if (k == n) {
        for (size_t i = 0; i < n; i++) idx[i] = (uint32_t)i;
        return 0;
    }
    float *mag = malloc(n * sizeof *mag);
    if (!mag) return fkd_error_set(err, FKD_E_NOMEM, "out of memory selecting the top %zu of %zu update values", k, n);
    for (size_t i = 0; i < n; i++) mag[i] = score(v, w, i);
    float t = select_kth(mag, n, n - k);
    free(mag);
    size_t above = 0;
    for (size_t i = 0; i < n; i++) above += score(v, w, i) > t;
    size_t ties = k - above, c = 0;
    for (size_t i = 0; i < n && c < k; i++) {
        float a = score(v, w, i);
        if (a > t || (a == t && ties > 0)) {
            if (a == t) ties--;
            idx[c++] = (uint32_t)i;
        }
    }
    return 0;
}

/* ---- index coding ---------------------------------------------------------------- */
static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint64_t varint_index_bytes(const uint32_t *idx, size_t k)
{
    uint64_t total = 0;
    int64_t prev = -1;
    for (size_t i = 0; i < k; i++) {
        total += varint_len((uint64_t)((int64_t)idx[i] - prev - 1));
        prev = idx[i];
    }
    return total;
}

static void write_indices(uint8_t *out, int coding, const uint32_t *idx, size_t k)
{
    if (coding == FKD_UIDX_BITMAP) {
        for (size_t i = 0; i < k; i++) out[idx[i] / 8] |= (uint8_t)(1u << (idx[i] % 8));
        return;
    }
    if (coding != FKD_UIDX_VARINT) return;
    int64_t prev = -1;
    for (size_t i = 0; i < k; i++) {
        uint64_t gap = (uint64_t)((int64_t)idx[i] - prev - 1);
        prev = idx[i];
        while (gap >= 0x80) {
            *out++ = (uint8_t)(gap | 0x80);
            gap >>= 7;
        }
        *out++ = (uint8_t)gap;
    }
}

/* ---- encoder ---------------------------------------------------------------------- */
static int check_config(const fkd_update_config *cfg, size_t n, fkd_error *err)
{
    if (!cfg || !(cfg->fraction > 0.0f && cfg->fraction <= 1.0f))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "update fraction must be in (0, 1], got %g",
                             cfg ? (double)cfg->fraction : 0.0);
    if (!value_format_valid(cfg->value_format))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "unknown update value format %d", cfg->value_format);
    if (cfg->stochastic && !cfg->rng)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "stochastic rounding needs an rng in the update config");
    if ((uint64_t)n > FKD_UPDATE_MAX_N)
        return fkd_error_set(err, FKD_E_LIMIT, "update of %zu values exceeds the limit of 2^32", n);
    return 0;
}

/* round(fraction * n), at least 1: 0.3 of 5000 is 1500 although 0.3f is
 * slightly above 0.3. */
static size_t top_k_count(float fraction, size_t n)
{
    if (n == 0) return 0;
    if (fraction >= 1.0f) return n;
    double k = floor((double)fraction * (double)n + 0.5);
    return k < 1.0 ? 1 : (k > (double)n ? n : (size_t)k);
}

/* Writes scales and codes for the selected values; sent[i] receives the
 * value the decoder will restore for idx[i]. */
static void encode_values(uint8_t *scales_out, uint8_t *vals, float *sent, const float *acc,
                          const uint32_t *idx, size_t k, const fkd_update_config *cfg)
{
    int fmt = cfg->value_format;
    if (fmt == FKD_UVAL_F32) {
        fkd_wr w = {vals};
        for (size_t i = 0; i < k; i++) {
            sent[i] = acc[idx[i]];
            wr_f32(&w, sent[i]);
        }
        return;
    }
    float buf[FKD_UPDATE_CHUNK];
    fkd_wr ws = {scales_out};
    for (size_t c0 = 0; c0 < k; c0 += FKD_UPDATE_CHUNK) {
        size_t m = k - c0 < FKD_UPDATE_CHUNK ? k - c0 : FKD_UPDATE_CHUNK;
        for (size_t i = 0; i < m; i++) buf[i] = acc[idx[c0 + i]];
        float scale = chunk_scale(fmt, cfg->stochastic, buf, m);
        wr_f32(&ws, scale);
        for (size_t i = 0; i < m; i++) {
            int code = quantize_value(fmt, buf[i], scale, cfg->stochastic, cfg->rng);
            put_code(vals, fmt, c0 + i, code);
            sent[c0 + i] = code_value(fmt, code, scale);
        }
    }
}

static void fill_stats(fkd_update_stats *st, size_t n, size_t k, size_t bytes, int coding,
                       double input_sq, double residual_sq)
{
    if (!st) return;
    st->n = n;
    st->k = k;
    st->bytes_dense = 4 * n;
    st->bytes = bytes;
    st->ratio = bytes ? (double)st->bytes_dense / (double)bytes : 0.0;
    st->rel_error = input_sq > 0.0 ? sqrt(residual_sq / input_sq) : 0.0;
    st->index_coding = coding;
}

int fkd_update_compress(uint8_t **data, size_t *bytes, fkd_update_stats *stats,
                        const float *update, float *residual, size_t n,
                        const fkd_update_config *cfg, fkd_error *err)
{
    *data = NULL;
    *bytes = 0;
    if (check_config(cfg, n, err) < 0) return -1;
    size_t k = top_k_count(cfg->fraction, n);
    float *acc = malloc((n ? n : 1) * sizeof *acc);
    uint32_t *idx = malloc((k ? k : 1) * sizeof *idx);
    float *sent = malloc((k ? k : 1) * sizeof *sent);
    uint8_t *out = NULL;
    int rc = -1;
    if (!acc || !idx || !sent) {
        fkd_error_set(err, FKD_E_NOMEM, "out of memory compressing an update of %zu values", n);
        goto done;
    }
    double input_sq = 0.0, residual_sq = 0.0;
    for (size_t i = 0; i < n; i++) {
        acc[i] = update[i] + (residual ? residual[i] : 0.0f);
        input_sq += (double)acc[i] * acc[i];
        if (!isfinite(acc[i]) || (cfg->weight && !isfinite(cfg->weight[i]))) {
            fkd_error_set(err, FKD_E_INVALID_ARG,
                          "update %s %zu is not finite; refusing to send it (check the local training)",
                          isfinite(acc[i]) ? "weight" : "value", i);
            goto done;
        }
    }
    if (select_top_k(idx, acc, cfg->weight, n, k, err) < 0) goto done;

    uint64_t varint = varint_index_bytes(idx, k), bitmap = ((uint64_t)n + 7) / 8;
    int coding = k == n ? FKD_UIDX_ALL : (varint <= bitmap ? FKD_UIDX_VARINT : FKD_UIDX_BITMAP);
    uint64_t index_bytes = coding == FKD_UIDX_ALL ? 0 : (coding == FKD_UIDX_VARINT ? varint : bitmap);
    uint64_t sbytes = scales_bytes(cfg->value_format, k, FKD_UPDATE_CHUNK);
    uint64_t vbytes = values_bytes(cfg->value_format, k);
    size_t total = (size_t)(FKD_UPDATE_HEADER_BYTES + index_bytes + sbytes + vbytes + CRC_BYTES);
    out = calloc(1, total);
    if (!out) {
        fkd_error_set(err, FKD_E_NOMEM, "out of memory for a %zu-byte compressed update", total);
        goto done;
    }
    fkd_wr w = {out};
    wr_bytes(&w, update_magic, 4);
    wr_u8(&w, FKD_UPDATE_VERSION);
    wr_u8(&w, (uint8_t)cfg->value_format);
    wr_u8(&w, (uint8_t)coding);
    wr_u8(&w, 0);
    wr_u64(&w, n);
    wr_u64(&w, k);
    wr_u32(&w, FKD_UPDATE_CHUNK);
    wr_u32(&w, (uint32_t)index_bytes);
    write_indices(w.p, coding, idx, k);
    uint8_t *scales_at = w.p + index_bytes;
    encode_values(scales_at, scales_at + sbytes, sent, acc, idx, k, cfg);
    uint32_t crc = fkd_crc32(0, out, total - CRC_BYTES);
    w.p = out + total - CRC_BYTES;
    wr_u32(&w, crc);

    /* acc becomes what was not sent: the residual of error feedback. */
    for (size_t i = 0; i < k; i++) acc[idx[i]] -= sent[i];
    for (size_t i = 0; i < n; i++) residual_sq += (double)acc[i] * acc[i];
    fill_stats(stats, n, k, total, coding, input_sq, residual_sq);
    if (residual) memcpy(residual, acc, n * sizeof *acc);
    *data = out;
    *bytes = total;
    out = NULL;
    rc = 0;
done:
    free(out);
    free(acc);
    free(idx);
    free(sent);
    return rc;
}

/* ---- decoder ------------------------------------------------------------------------ */
typedef struct {
    int value_format, index_coding;
    uint64_t n, k, chunk, index_bytes;
    const uint8_t *index, *scales, *values;
} update_view;

static int parse_header(update_view *v, const uint8_t *data, size_t bytes, fkd_error *err)
{
    fkd_rd r = {data, bytes};
    const uint8_t *magic = rd_take(&r, 4);
    uint8_t version, fmt, coding, flags;
    uint32_t chunk, index_bytes;
    if (!magic || rd_u8(&r, &version) || rd_u8(&r, &fmt) || rd_u8(&r, &coding) ||
        rd_u8(&r, &flags) || rd_u64(&r, &v->n) || rd_u64(&r, &v->k) || rd_u32(&r, &chunk) ||
        rd_u32(&r, &index_bytes))
        return fkd_error_set(err, FKD_E_TRUNCATED, "compressed update is %zu bytes, shorter than its %d-byte header",
                             bytes, FKD_UPDATE_HEADER_BYTES);
    if (memcmp(magic, update_magic, 4) != 0)
        return fkd_error_set(err, FKD_E_FORMAT, "not a compressed update (bad magic)");
    if (version > FKD_UPDATE_VERSION)
        return fkd_error_set(err, FKD_E_VERSION, "compressed update has version %u, this build reads up to %d; upgrade",
                             version, FKD_UPDATE_VERSION);
    if (version == 0 || flags != 0 || !value_format_valid(fmt) || coding > FKD_UIDX_BITMAP)
        return fkd_error_set(err, FKD_E_FORMAT, "compressed update header has invalid fields (version %u, format %u, coding %u, flags %u)",
                             version, fmt, coding, flags);
    if (v->n > FKD_UPDATE_MAX_N || v->k > v->n || chunk == 0 || chunk > MAX_CHUNK)
        return fkd_error_set(err, FKD_E_FORMAT, "compressed update header is inconsistent (n %llu, k %llu, chunk %u)",
                             (unsigned long long)v->n, (unsigned long long)v->k, chunk);
    uint64_t expect_index = coding == FKD_UIDX_ALL ? 0 : (coding == FKD_UIDX_BITMAP ? (v->n + 7) / 8 : index_bytes);
    if ((coding == FKD_UIDX_ALL && v->k != v->n) || index_bytes != expect_index ||
        (coding == FKD_UIDX_VARINT && (index_bytes < v->k || index_bytes > VARINT_MAX_BYTES * v->k)))
        return fkd_error_set(err, FKD_E_FORMAT, "compressed update index section does not fit its coding (%u bytes)",
                             index_bytes);
    v->value_format = fmt;
    v->index_coding = coding;
    v->chunk = chunk;
    v->index_bytes = index_bytes;
    uint64_t need = index_bytes + scales_bytes(fmt, v->k, chunk) + values_bytes(fmt, v->k) + CRC_BYTES;
    if (need != r.left)
        return fkd_error_set(err, r.left < need ? FKD_E_TRUNCATED : FKD_E_FORMAT,
                             "compressed update body is %zu bytes, its header says %llu",
                             r.left, (unsigned long long)need);
    v->index = r.p;
    v->scales = v->index + index_bytes;
    v->values = v->scales + scales_bytes(fmt, v->k, chunk);
    return 0;
}

int fkd_update_peek(size_t *n, size_t *k, int *value_format, int *index_coding,
                    const uint8_t *data, size_t bytes, fkd_error *err)
{
    update_view v;
    if (parse_header(&v, data, bytes, err) < 0) return -1;
    if (n) *n = (size_t)v.n;
    if (k) *k = (size_t)v.k;
    if (value_format) *value_format = v.value_format;
    if (index_coding) *index_coding = v.index_coding;
    return 0;
}

/* Iterates the index section: next() yields ascending indices < n. */
typedef struct {
    const update_view *v;
    uint64_t pos;      /* bit position (bitmap) or byte offset (varint) */
    int64_t prev;
} index_iter;

static int next_index(index_iter *it, uint64_t *out)
{
    const update_view *v = it->v;
    if (v->index_coding == FKD_UIDX_ALL) {
        *out = (uint64_t)(++it->prev);
        return 0;
    }
    if (v->index_coding == FKD_UIDX_BITMAP) {
        while (it->pos < v->n && !((v->index[it->pos / 8] >> (it->pos % 8)) & 1)) it->pos++;
        if (it->pos >= v->n) return -1;
        *out = it->pos++;
        return 0;
    }
    uint64_t gap = 0;
    for (int shift = 0;; shift += 7) {
        if (it->pos >= v->index_bytes || shift >= 7 * VARINT_MAX_BYTES) return -1;
        uint8_t b = v->index[it->pos++];
        gap |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) break;
    }
    uint64_t idx = (uint64_t)(it->prev + 1) + gap;
    if (idx >= v->n) return -1;
    it->prev = (int64_t)idx;
    *out = idx;
    return 0;
}

/* After k indices the section must be used up exactly (no stray set bits,
 * no trailing varint bytes). */
static int index_section_done(const index_iter *it)
{
    const update_view *v = it->v;
    if (v->index_coding == FKD_UIDX_VARINT) return it->pos == v->index_bytes;
    if (v->index_coding == FKD_UIDX_BITMAP) {
        for (uint64_t b = it->pos; b < 8 * v->index_bytes; b++)
            if ((v->index[b / 8] >> (b % 8)) & 1) return 0;
    }
    return 1;
}

static int padding_clear(const update_view *v)
{
    uint64_t used_bits = v->value_format == FKD_UVAL_INT4 ? 4 * v->k
                       : v->value_format == FKD_UVAL_TERNARY ? 2 * v->k : 0;
    uint64_t total_bits = 8 * values_bytes(v->value_format, v->k);
    for (uint64_t b = used_bits; used_bits && b < total_bits; b++)
        if ((v->values[b / 8] >> (b % 8)) & 1) return 0;
    return 1;
}

int fkd_update_decompress(float *dense, size_t n, const uint8_t *data, size_t bytes,
                          fkd_error *err)
{
    update_view v;
    if (parse_header(&v, data, bytes, err) < 0) return -1;
    if (v.n != (uint64_t)n)
        return fkd_error_set(err, FKD_E_MISMATCH, "compressed update has %llu values, the model has %zu",
                             (unsigned long long)v.n, n);
#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION /* let a fuzzer reach the structural checks */
    uint32_t crc = le32(data + bytes - CRC_BYTES);
    if (fkd_crc32(0, data, bytes - CRC_BYTES) != crc)
        return fkd_error_set(err, FKD_E_CHECKSUM, "compressed update fails its CRC check; it was damaged in transit");
#endif
    if (!padding_clear(&v))
        return fkd_error_set(err, FKD_E_FORMAT, "compressed update has stray bits after its last value");
    memset(dense, 0, n * sizeof *dense);
    index_iter it = {&v, 0, -1};
    for (uint64_t i = 0; i < v.k; i++) {
        uint64_t idx;
        if (next_index(&it, &idx) < 0)
            return fkd_error_set(err, FKD_E_FORMAT, "compressed update index %llu is missing or out of range",
                                 (unsigned long long)i);
        float val;
        if (v.value_format == FKD_UVAL_F32) {
            val = lef32(v.values + 4 * i);
        } else {
            float scale = lef32(v.scales + 4 * (i / v.chunk));
            int code = get_code(v.values, v.value_format, (size_t)i);
            if (!isfinite(scale) || scale < 0.0f || code == BAD_CODE)
                return fkd_error_set(err, FKD_E_FORMAT, "compressed update value %llu has an invalid code or scale",
                                     (unsigned long long)i);
            val = code_value(v.value_format, code, scale);
        }
        if (!isfinite(val))
            return fkd_error_set(err, FKD_E_FORMAT, "compressed update value %llu is not finite",
                                 (unsigned long long)i);
        dense[idx] = val;
    }
    if (!index_section_done(&it))
        return fkd_error_set(err, FKD_E_FORMAT, "compressed update index section has more entries than its count");
    return 0;
}

void fkd_update_diff(float *update, const float *after, const float *before, size_t n)
{
    for (size_t i = 0; i < n; i++) update[i] = after[i] - before[i];
}

/* ---- residual file ------------------------------------------------------------------ */
static const uint8_t resid_magic[8] = {'F', 'K', 'D', 'R', 'E', 'S', 'I', 'D'};
#define RESID_VERSION 1
#define RESID_HEADER_BYTES 20

int fkd_residual_save(const char *path, const float *residual, size_t n, fkd_error *err)
{
    size_t total = RESID_HEADER_BYTES + 4 * n + CRC_BYTES;
    uint8_t *buf = malloc(total);
    if (!buf) return fkd_error_set(err, FKD_E_NOMEM, "out of memory saving a residual of %zu values", n);
    fkd_wr w = {buf};
    wr_bytes(&w, resid_magic, 8);
    wr_u32(&w, RESID_VERSION);
    wr_u64(&w, n);
    for (size_t i = 0; i < n; i++) wr_f32(&w, residual[i]);
    wr_u32(&w, fkd_crc32(0, buf, total - CRC_BYTES));
    int rc = fkd_file_write_atomic(path, buf, total, err);
    free(buf);
    return rc;
}

int fkd_residual_load(float *residual, size_t n, const char *path, fkd_error *err)
{
    uint8_t *buf;
    size_t bytes;
    if (fkd_file_read_all(&buf, &bytes, path, RESID_HEADER_BYTES + 4 * n + CRC_BYTES, err) < 0) return -1;
    fkd_rd r = {buf, bytes};
    const uint8_t *magic = rd_take(&r, 8);
    uint32_t version;
    uint64_t count;
    int rc = -1;
    if (!magic || rd_u32(&r, &version) || rd_u64(&r, &count)) {
        fkd_error_set(err, FKD_E_TRUNCATED, "residual file %s is truncated", path);
    } else if (memcmp(magic, resid_magic, 8) != 0) {
        fkd_error_set(err, FKD_E_FORMAT, "%s is not a residual file (bad magic)", path);
    } else if (version != RESID_VERSION) {
        fkd_error_set(err, FKD_E_VERSION, "residual file %s has version %u, expected %d", path, version, RESID_VERSION);
    } else if (count != n) {
        fkd_error_set(err, FKD_E_MISMATCH, "residual file %s holds %llu values, the model has %zu; delete it to start afresh",
                      path, (unsigned long long)count, n);
    } else if (r.left != 4 * n + CRC_BYTES) {
        fkd_error_set(err, FKD_E_TRUNCATED, "residual file %s is %zu bytes, expected %zu", path, bytes,
                      RESID_HEADER_BYTES + 4 * n + CRC_BYTES);
    } else if (fkd_crc32(0, buf, bytes - CRC_BYTES) != le32(buf + bytes - CRC_BYTES)) {
        fkd_error_set(err, FKD_E_CHECKSUM, "residual file %s fails its CRC check; delete it to start afresh", path);
    } else {
        for (size_t i = 0; i < n; i++) residual[i] = lef32(r.p + 4 * i);
        rc = 0;
    }
    free(buf);
    return rc;
}
