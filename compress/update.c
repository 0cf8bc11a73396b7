/* update.c — compression of a client's model update for the uplink.
 *
 * Pipeline (encoder): optional error feedback (add the residual kept from
 * earlier rounds), top-k by magnitude (or by |value x weight|, the client's
 * gradient as weight: the first-order loss change), value quantization per
 * chunk of FKD_UPDATE_CHUNK selected values (int8 or int4 symmetric,
 * ternary sign*scale, or sign with a scale per sign; stochastic rounding
 * makes the int and ternary codes unbiased), index coding (all / Golomb-Rice
 * gaps / bitmap, whichever is smallest), then a CRC.
 *
 * Layout, version 2 (little-endian; docs/protocol.md gives it field by field):
 *   0  "FKDU"         4  u8 version     5  u8 value format   6  u8 index coding
 *   7  u8 flags (0)   8  u64 n          16 u64 k             24 u32 chunk
 *   28 u32 index bytes
 *   32 index section: none (all) | rice: ceil(k/chunk) u8 parameters b, then
 *      a bit stream of the gaps (idx - prev - 1, prev starting at -1): gap
 *      >> b in unary (that many 1 bits, then a 0), then its low b bits | a
 *      bitmap of n bits. Bit streams fill each byte from bit 0.
 *      scales: ceil(k/chunk) x f32 (x 2 for sign: non-negative, negative;
 *      none for f32 values)
 *      values: f32 | int8 in [-127,127] | int4 as nibble q+8, q in [-7,7],
 *      value i in the low nibble of byte i/2 when i is even | ternary 2-bit
 *      codes (0: 0, 1: +scale, 2: -scale), value i at bits 2(i%4) of byte i/4
 *      | sign bits (0: +scale, 1: -negative scale), value i at bit i%8 of
 *      byte i/8
 *   end u32 CRC-32 of everything before it.
 * Every padding bit must be 0 and the sections must add up exactly.
 *
 * Why Rice per chunk: a 1.5 % top-k is close to a Bernoulli mask, whose
 * gaps are geometric, and Golomb-Rice is the prefix code for geometric
 * gaps; the top-k ranked by gradient is denser in some rows than others,
 * so each chunk of 256 gaps gets the parameter that is cheapest for it
 * (exact cost, one byte). Measured in docs/simulation.md, "The uplink".
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
#define MAX_CHUNK 65536
#define RICE_MAX_PARAM 31 /* gaps are below 2^32 */

/* ---- value formats --------------------------------------------------------- */
static const char *const value_names[FKD_UVAL_COUNT] = {"f32", "int8", "int4", "ternary", "sign"};

const char *fkd_update_value_name(int value_format)
{
    return value_format >= 0 && value_format < FKD_UVAL_COUNT ? value_names[value_format] : "?";
}

int fkd_update_value_parse(const char *name)
{
    for (int i = 0; name && i < FKD_UVAL_COUNT; i++)
        if (strcmp(name, value_names[i]) == 0) return i;
    return -1;
}

static int value_format_valid(int f)
{
    return f >= 0 && f < FKD_UVAL_COUNT;
}

/* Bits of one value's code. */
static unsigned code_bits(int fmt)
{
    static const unsigned bits[FKD_UVAL_COUNT] = {32, 8, 4, 2, 1};
    return bits[fmt];
}

static uint64_t values_bytes(int fmt, uint64_t k)
{
    return (k * code_bits(fmt) + 7) / 8;
}

static unsigned scales_per_chunk(int fmt)
{
    return fmt == FKD_UVAL_F32 ? 0 : (fmt == FKD_UVAL_SIGN ? 2 : 1);
}

static uint64_t chunks_of(uint64_t k, uint64_t chunk)
{
    return (k + chunk - 1) / chunk;
}

static uint64_t scales_bytes(int fmt, uint64_t k, uint64_t chunk)
{
    return 4 * scales_per_chunk(fmt) * chunks_of(k, chunk);
}

/* The value a code stands for, s the chunk's scales: the decoder and the
 * error-feedback residual both use this, so they agree to the bit. */
static float code_value(int fmt, int code, const float *s)
{
    if (fmt == FKD_UVAL_TERNARY) return code == 1 ? s[0] : (code == 2 ? -s[0] : 0.0f);
    if (fmt == FKD_UVAL_SIGN) return code ? -s[1] : s[0];
    return (float)code * s[0];
}

static int code_max(int fmt)
{
    return fmt == FKD_UVAL_INT8 ? 127 : 7;
}

/* Scales of a chunk: symmetric max for int8/int4; for ternary the mean
 * magnitude (deterministic, as Sparse Ternary Compression) or the max
 * (stochastic: |v|/max is then a probability, and the code is unbiased);
 * for sign the mean magnitude of each sign's values, the scale that
 * minimizes each group's squared error. */
static void chunk_scales(float *s, int fmt, int stochastic, const float *v, size_t m)
{
    float amax = 0.0f;
    double asum = 0.0, pos = 0.0, neg = 0.0;
    size_t n_neg = 0;
    for (size_t i = 0; i < m; i++) {
        amax = fmaxf(amax, fabsf(v[i]));
        asum += fabsf(v[i]);
        if (v[i] < 0.0f) {
            neg -= v[i];
            n_neg++;
        } else {
            pos += v[i];
        }
    }
    if (fmt == FKD_UVAL_SIGN) {
        s[0] = n_neg < m ? (float)(pos / (double)(m - n_neg)) : 0.0f;
        s[1] = n_neg ? (float)(neg / (double)n_neg) : 0.0f;
    } else if (fmt == FKD_UVAL_TERNARY) {
        s[0] = stochastic ? amax : (float)(asum / (double)m);
    } else {
        s[0] = amax / (float)code_max(fmt);
    }
}

static int quantize_value(int fmt, float v, const float *s, int stochastic, fkd_rng *rng)
{
    if (fmt == FKD_UVAL_SIGN) return v < 0.0f;
    float scale = s[0];
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

/* Codes are stored biased (int4: q+8) so that one field width covers every
 * packed format: code i at bits [i*w, (i+1)*w) of the values section. */
static unsigned code_bias(int fmt)
{
    return fmt == FKD_UVAL_INT4 ? 8 : 0;
}

static void put_code(uint8_t *vals, int fmt, size_t i, int code)
{
    if (fmt == FKD_UVAL_INT8) {
        vals[i] = (uint8_t)(int8_t)code;
        return;
    }
    unsigned w = code_bits(fmt);
    uint64_t bit = (uint64_t)i * w;
    vals[bit / 8] |= (uint8_t)((unsigned)(code + (int)code_bias(fmt)) << (bit % 8));
}

/* Reads code i; BAD_CODE marks a code no encoder writes (refused). */
#define BAD_CODE (-1000)
static int get_code(const uint8_t *vals, int fmt, size_t i)
{
    if (fmt == FKD_UVAL_INT8) {
        int c = (int8_t)vals[i];
        return c == -128 ? BAD_CODE : c;
    }
    unsigned w = code_bits(fmt);
    uint64_t bit = (uint64_t)i * w;
    int c = (vals[bit / 8] >> (bit % 8)) & ((1 << w) - 1);
    if (fmt == FKD_UVAL_INT4) return c == 0 ? BAD_CODE : c - 8;
    if (fmt == FKD_UVAL_TERNARY) return c == 3 ? BAD_CODE : c;
    return c;
}

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

/* ---- bit streams ------------------------------------------------------------------- */
/* Writer over a zeroed buffer: a 0 bit is a step forward. */
typedef struct {
    uint8_t *p;
    uint64_t bit;
} bit_writer;

static void bw_bits(bit_writer *w, uint64_t v, unsigned nbits)
{
    for (unsigned i = 0; i < nbits; i++, w->bit++)
        if ((v >> i) & 1) w->p[w->bit / 8] |= (uint8_t)(1u << (w->bit % 8));
}

static void bw_unary(bit_writer *w, uint64_t q)
{
    for (uint64_t i = 0; i < q; i++, w->bit++) w->p[w->bit / 8] |= (uint8_t)(1u << (w->bit % 8));
    w->bit++;
}

typedef struct {
    const uint8_t *p;
    uint64_t bits, pos;
} bit_reader;

static int br_bits(bit_reader *r, unsigned nbits, uint64_t *v)
{
    if (r->bits - r->pos < nbits) return -1;
    *v = 0;
    for (unsigned i = 0; i < nbits; i++, r->pos++) *v |= (uint64_t)((r->p[r->pos / 8] >> (r->pos % 8)) & 1) << i;
    return 0;
}

/* Counts 1 bits up to the terminating 0; refuses more than limit of them
 * or a stream that ends first. */
static int br_unary(bit_reader *r, uint64_t limit, uint64_t *q)
{
    *q = 0;
    for (;;) {
        if (r->pos >= r->bits) return -1;
        int b = (r->p[r->pos / 8] >> (r->pos % 8)) & 1;
        r->pos++;
        if (!b) return 0;
        if (++*q > limit) return -1;
    }
}

/* ---- index coding ---------------------------------------------------------------- */
static uint64_t gap_at(const uint32_t *idx, size_t i)
{
    return i == 0 ? idx[0] : (uint64_t)idx[i] - idx[i - 1] - 1;
}

static uint64_t rice_bits(const uint32_t *idx, size_t i0, size_t m, unsigned b)
{
    uint64_t bits = (uint64_t)m * (b + 1);
    for (size_t i = i0; i < i0 + m; i++) bits += gap_at(idx, i) >> b;
    return bits;
}

/* The parameter that codes gaps i0..i0+m in the fewest bits: the cost
 * falls while doubling b halves the unary parts by more than m bits. */
static unsigned rice_param(uint64_t *bits, const uint32_t *idx, size_t i0, size_t m)
{
    unsigned best = 0;
    *bits = rice_bits(idx, i0, m, 0);
    for (unsigned b = 1; b <= RICE_MAX_PARAM; b++) {
        uint64_t c = rice_bits(idx, i0, m, b);
        if (c >= *bits) break;
        *bits = c;
        best = b;
    }
    return best;
}

/* Chooses a parameter per chunk (into params, ceil(k/chunk) of them) and
 * returns the index section's bytes. */
static uint64_t rice_plan(uint8_t *params, const uint32_t *idx, size_t k)
{
    uint64_t bits = 0;
    for (size_t c = 0, i0 = 0; i0 < k; c++, i0 += FKD_UPDATE_CHUNK) {
        size_t m = k - i0 < FKD_UPDATE_CHUNK ? k - i0 : FKD_UPDATE_CHUNK;
        uint64_t cb;
        params[c] = (uint8_t)rice_param(&cb, idx, i0, m);
        bits += cb;
    }
    return chunks_of(k, FKD_UPDATE_CHUNK) + (bits + 7) / 8;
}

static void write_indices(uint8_t *out, int coding, const uint32_t *idx, size_t k,
                          const uint8_t *params)
{
    if (coding == FKD_UIDX_BITMAP) {
        for (size_t i = 0; i < k; i++) out[idx[i] / 8] |= (uint8_t)(1u << (idx[i] % 8));
        return;
    }
    if (coding != FKD_UIDX_RICE) return;
    size_t n_params = (size_t)chunks_of(k, FKD_UPDATE_CHUNK);
    memcpy(out, params, n_params);
    bit_writer w = {out + n_params, 0};
    for (size_t i = 0; i < k; i++) {
        unsigned b = params[i / FKD_UPDATE_CHUNK];
        uint64_t g = gap_at(idx, i);
        bw_unary(&w, g >> b);
        bw_bits(&w, g, b);
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
    if (cfg->stochastic && !cfg->rng && cfg->value_format != FKD_UVAL_SIGN)
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
    int stochastic = cfg->stochastic && fmt != FKD_UVAL_SIGN;
    float buf[FKD_UPDATE_CHUNK], s[2];
    fkd_wr ws = {scales_out};
    for (size_t c0 = 0; c0 < k; c0 += FKD_UPDATE_CHUNK) {
        size_t m = k - c0 < FKD_UPDATE_CHUNK ? k - c0 : FKD_UPDATE_CHUNK;
        for (size_t i = 0; i < m; i++) buf[i] = acc[idx[c0 + i]];
        chunk_scales(s, fmt, stochastic, buf, m);
        for (unsigned j = 0; j < scales_per_chunk(fmt); j++) wr_f32(&ws, s[j]);
        for (size_t i = 0; i < m; i++) {
            int code = quantize_value(fmt, buf[i], s, stochastic, cfg->rng);
            put_code(vals, fmt, c0 + i, code);
            sent[c0 + i] = code_value(fmt, code, s);
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
    uint8_t *params = malloc((size_t)chunks_of(k, FKD_UPDATE_CHUNK) + 1);
    uint8_t *out = NULL;
    int rc = -1;
    if (!acc || !idx || !sent || !params) {
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

    uint64_t bitmap = ((uint64_t)n + 7) / 8;
    uint64_t rice = k == n ? 0 : rice_plan(params, idx, k);
    int coding = k == n ? FKD_UIDX_ALL : (rice <= bitmap ? FKD_UIDX_RICE : FKD_UIDX_BITMAP);
    uint64_t index_bytes = coding == FKD_UIDX_ALL ? 0 : (coding == FKD_UIDX_RICE ? rice : bitmap);
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
    write_indices(w.p, coding, idx, k, params);
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
    free(params);
    return rc;
}

/* ---- decoder ------------------------------------------------------------------------ */
typedef struct {
    int value_format, index_coding;
    uint64_t n, k, chunk, index_bytes, n_params;
    const uint8_t *index, *scales, *values;
} update_view;

/* The index section's size must follow from its coding: none for all, n
 * bits for the bitmap, and for rice the parameters plus at least the one
 * terminating bit of every gap and at most what gaps summing to below n
 * can take (their unary parts add up to at most n, the rest is at most
 * 1 + RICE_MAX_PARAM bits a gap). */
static int index_section_fits(const update_view *v, uint64_t index_bytes)
{
    switch (v->index_coding) {
    case FKD_UIDX_ALL: return v->k == v->n && index_bytes == 0;
    case FKD_UIDX_BITMAP: return v->k < v->n && index_bytes == (v->n + 7) / 8;
    case FKD_UIDX_RICE:
        return v->k < v->n && index_bytes >= v->n_params + (v->k + 7) / 8 &&
               index_bytes <= v->n_params + (v->n + (1 + RICE_MAX_PARAM) * v->k + 7) / 8;
    }
    return 0;
}

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
    if (version != FKD_UPDATE_VERSION)
        return fkd_error_set(err, FKD_E_VERSION, "compressed update has format version %u, this build reads "
                             "version %d only; run the same fedkd release on clients and coordinator",
                             version, FKD_UPDATE_VERSION);
    if (flags != 0 || !value_format_valid(fmt) || coding > FKD_UIDX_BITMAP)
        return fkd_error_set(err, FKD_E_FORMAT, "compressed update header has invalid fields (format %u, coding %u, flags %u)",
                             fmt, coding, flags);
    if (v->n > FKD_UPDATE_MAX_N || v->k > v->n || chunk == 0 || chunk > MAX_CHUNK)
        return fkd_error_set(err, FKD_E_FORMAT, "compressed update header is inconsistent (n %llu, k %llu, chunk %u)",
                             (unsigned long long)v->n, (unsigned long long)v->k, chunk);
    v->value_format = fmt;
    v->index_coding = coding;
    v->chunk = chunk;
    v->index_bytes = index_bytes;
    v->n_params = coding == FKD_UIDX_RICE ? chunks_of(v->k, chunk) : 0;
    if (!index_section_fits(v, index_bytes))
        return fkd_error_set(err, FKD_E_FORMAT, "compressed update index section does not fit its coding "
                             "(%u bytes, coding %u, k %llu of n %llu)", index_bytes, coding,
                             (unsigned long long)v->k, (unsigned long long)v->n);
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
    uint64_t pos;      /* bit position (bitmap) */
    bit_reader rice;   /* the gap stream (rice) */
    uint64_t i;        /* indices yielded */
    int64_t prev;
} index_iter;

static void index_iter_init(index_iter *it, const update_view *v)
{
    memset(it, 0, sizeof *it);
    it->v = v;
    it->prev = -1;
    if (v->index_coding == FKD_UIDX_RICE)
        it->rice = (bit_reader){v->index + v->n_params, 8 * (v->index_bytes - v->n_params), 0};
}

static int next_rice(index_iter *it, uint64_t *out)
{
    const update_view *v = it->v;
    unsigned b = v->index[it->i / v->chunk]; /* <= RICE_MAX_PARAM, checked before decoding */
    uint64_t q, low;
    /* q << b stays below 2^33: no index past n has a shorter code */
    if (br_unary(&it->rice, v->n >> b, &q) < 0 || br_bits(&it->rice, b, &low) < 0) return -1;
    uint64_t idx = (uint64_t)(it->prev + 1) + ((q << b) | low);
    if (idx >= v->n) return -1;
    *out = idx;
    return 0;
}

static int next_bitmap(index_iter *it, uint64_t *out)
{
    const update_view *v = it->v;
    while (it->pos < v->n && !((v->index[it->pos / 8] >> (it->pos % 8)) & 1)) it->pos++;
    if (it->pos >= v->n) return -1;
    *out = it->pos++;
    return 0;
}

static int next_index(index_iter *it, uint64_t *out)
{
    int rc = 0;
    if (it->v->index_coding == FKD_UIDX_ALL) *out = (uint64_t)(it->prev + 1);
    else if (it->v->index_coding == FKD_UIDX_BITMAP) rc = next_bitmap(it, out);
    else rc = next_rice(it, out);
    if (rc < 0) return -1;
    it->prev = (int64_t)*out;
    it->i++;
    return 0;
}

/* True when bits [from, to) of p are all 0. */
static int bits_clear(const uint8_t *p, uint64_t from, uint64_t to)
{
    for (uint64_t b = from; b < to; b++)
        if ((p[b / 8] >> (b % 8)) & 1) return 0;
    return 1;
}

/* After k indices the section must be used up exactly: no stray set bits,
 * no whole byte left over in the gap stream. */
static int index_section_done(const index_iter *it)
{
    const update_view *v = it->v;
    if (v->index_coding == FKD_UIDX_RICE)
        return it->rice.bits - it->rice.pos < 8 && bits_clear(it->rice.p, it->rice.pos, it->rice.bits);
    if (v->index_coding == FKD_UIDX_BITMAP) return bits_clear(v->index, it->pos, 8 * v->index_bytes);
    return 1;
}

static int padding_clear(const update_view *v)
{
    if (v->value_format == FKD_UVAL_F32 || v->value_format == FKD_UVAL_INT8) return 1;
    return bits_clear(v->values, v->k * code_bits(v->value_format), 8 * values_bytes(v->value_format, v->k));
}

/* The decoded value i, or NAN for an invalid code or scale. */
static float value_at(const update_view *v, uint64_t i)
{
    if (v->value_format == FKD_UVAL_F32) return lef32(v->values + 4 * i);
    unsigned per = scales_per_chunk(v->value_format);
    float s[2] = {0.0f, 0.0f};
    for (unsigned j = 0; j < per; j++) {
        s[j] = lef32(v->scales + 4 * (per * (i / v->chunk) + j));
        if (!isfinite(s[j]) || s[j] < 0.0f) return NAN;
    }
    int code = get_code(v->values, v->value_format, (size_t)i);
    return code == BAD_CODE ? NAN : code_value(v->value_format, code, s);
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
    for (uint64_t c = 0; c < v.n_params; c++)
        if (v.index[c] > RICE_MAX_PARAM)
            return fkd_error_set(err, FKD_E_FORMAT, "compressed update chunk %llu has Rice parameter %u, above %d",
                                 (unsigned long long)c, v.index[c], RICE_MAX_PARAM);
    memset(dense, 0, n * sizeof *dense);
    index_iter it;
    index_iter_init(&it, &v);
    for (uint64_t i = 0; i < v.k; i++) {
        uint64_t idx;
        if (next_index(&it, &idx) < 0)
            return fkd_error_set(err, FKD_E_FORMAT, "compressed update index %llu is missing, cut short or out of range",
                                 (unsigned long long)i);
        float val = value_at(&v, i);
        if (!isfinite(val))
            return fkd_error_set(err, FKD_E_FORMAT, "compressed update value %llu has an invalid code or scale",
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
