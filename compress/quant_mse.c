/* quant_mse.c — Q4_0 and Q4_1 blocks whose scale (and minimum) are chosen to
 * minimise the block's squared error, optionally weighted per value by an
 * importance (for a weight matrix: the mean square of the input channel's
 * activation, so that the error is counted where the matrix's output feels
 * it).
 *
 * The layouts and the dequantization are ggml's, unchanged: only the choice
 * of codes and scales differs from quant.c's round-to-nearest rules, so
 * fkd_qdot, the GGUF writer and llama.cpp read these blocks as they are.
 *
 * Per block:
 *   1. candidates: the block's extreme value mapped to a grid of codes
 *      around the one round-to-nearest uses (past it, which clips the
 *      extreme, when the rest of the block gains more than it loses);
 *   2. each candidate's codes get the least-squares scale (Q4_0) or
 *      scale and minimum (Q4_1, a 2x2 normal equation) that fit them best;
 *   3. the best candidate is refined by alternating "the nearest codes for
 *      this scale" and "the least-squares scale for these codes" (neither
 *      step can raise the error), with the scale rounded to fp16 as it is
 *      stored, so the error measured is the error of the stored block;
 *   4. quant.c's round-to-nearest block is kept whenever it is at least as
 *      good, so the error is never above it.
 * Sums are in double: a block of huge (finite) values must not overflow
 * into inf or NaN scales.
 *
 * Not here: the K-quant formats, searches across blocks, and Q8_0 (at 8
 * bits round-to-nearest is within a few percent of the best scale).
 */
#include "fkd_compress.h"

#include <math.h>
#include <string.h>

/* The grids of step 1, as the code the extreme value lands on. Q4_0:
 * the RTN rule puts it on -8; the positive side (+7) is the other sign of
 * the scale. Q4_1: the range [min, max] in 15 + delta steps (delta > 0
 * clips), anchored at the minimum, the maximum or the middle. */
#define Q4_0_GRID_LO 5.0f
#define Q4_0_GRID_NEG_HI 9.0f
#define Q4_0_GRID_POS_HI 7.75f
#define Q4_0_GRID_STEP 0.25f
static const float q4_1_deltas[] = {0.0f, 0.25f, 0.5f, 0.75f, 1.0f, 1.5f, 2.0f, 2.5f, 3.0f, 4.0f};
static const float q4_1_anchors[] = {0.0f, 1.0f, 0.5f};
#define REFINE_ITERS 3

static float fp16_round(float v)
{
    return fkd_fp16_to_fp32(fkd_fp32_to_fp16(v));
}

static void put_f16(uint8_t *p, float v)
{
    uint16_t h = fkd_fp32_to_fp16(v);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

/* Code of v in [0, 15], v already offset by +0.5 (truncation is rounding);
 * NaN and out-of-range values are clamped before the cast (UB otherwise). */
static int code4(float v)
{
    if (!(v > 0.0f)) return 0;
    if (v > 15.0f) return 15;
    return (int)v;
}

static void pack4(uint8_t *qs, const uint8_t *codes)
{
    for (int j = 0; j < FKD_QK / 2; j++) qs[j] = (uint8_t)(codes[j] | (codes[j + FKD_QK / 2] << 4));
}

/* Weighted squared error of a decoded block y against x. */
static double block_err(const float *x, const float *y, const float *w)
{
    double e = 0.0;
    for (int j = 0; j < FKD_QK; j++) {
        double d = (double)x[j] - (double)y[j];
        e += w[j] * d * d;
    }
    return e;
}

/* The weights of one block: the caller's, or all 1 when there are none or
 * they carry no information (all zero, or not finite). */
static void block_weights(float *w, const float *weights)
{
    double s = 0.0;
    if (weights)
        for (int j = 0; j < FKD_QK; j++) s += weights[j] >= 0.0f ? weights[j] : NAN;
    int usable = weights && s > 0.0 && isfinite(s);
    for (int j = 0; j < FKD_QK; j++) w[j] = usable ? weights[j] : 1.0f;
}

static int block_finite(const float *x)
{
    for (int j = 0; j < FKD_QK; j++)
        if (!isfinite(x[j])) return 0;
    return 1;
}

/* ---- Q4_0: x = d * (q - 8) ---------------------------------------------------- */
/* Codes (0..15) nearest to x for the inverse scale id; returns the
 * least-squares d for them in *d and the error it removes, (sum w x k)^2 /
 * sum w k^2 with k = q - 8 (the larger, the better). */
static double q4_0_fit(uint8_t *codes, double *d, const float *x, const float *w, float id)
{
    double sxk = 0.0, skk = 0.0;
    for (int j = 0; j < FKD_QK; j++) {
        int q = code4(x[j] * id + 8.5f);
        codes[j] = (uint8_t)q;
        double k = q - 8;
        sxk += w[j] * x[j] * k;
        skk += w[j] * k * k;
    }
    *d = skk > 0.0 ? sxk / skk : 0.0;
    return skk > 0.0 ? sxk * sxk / skk : 0.0;
}

static void q4_0_decode(float *y, const uint8_t *codes, float d)
{
    for (int j = 0; j < FKD_QK; j++) y[j] = (float)(codes[j] - 8) * d;
}

/* Writes the block; returns its weighted squared error. */
static double q4_0_block_mse(uint8_t *block, const float *x, const float *weights)
{
    float w[FKD_QK], y[FKD_QK];
    fkd_q4_0_quantize_row(block, x, FKD_QK); /* the round-to-nearest block: the bar to beat */
    block_weights(w, weights);
    fkd_q4_0_dequantize_row(y, block, FKD_QK);
    double best_err = block_err(x, y, w);
    if (!block_finite(x)) return best_err;

    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < FKD_QK; j++)
        if (fabsf(x[j]) > amax) amax = fabsf(x[j]), max = x[j];
    if (amax == 0.0f) return best_err;

    uint8_t codes[FKD_QK], best_codes[FKD_QK];
    double d, best_d = 0.0, best_gain = -1.0;
    for (float c = -Q4_0_GRID_NEG_HI; c <= Q4_0_GRID_POS_HI + 1e-3f; c += Q4_0_GRID_STEP) {
        if (fabsf(c) < Q4_0_GRID_LO) continue;
        double gain = q4_0_fit(codes, &d, x, w, c / max);
        if (gain > best_gain) best_gain = gain, best_d = d;
    }

    /* Refine on the stored (fp16) scale; keep the best block seen. */
    float best_d16 = 0.0f;
    double found_err = INFINITY;
    d = best_d;
    for (int it = 0; it < REFINE_ITERS; it++) {
        float d16 = fp16_round((float)d);
        if (d16 == 0.0f || !isfinite(d16)) break;
        q4_0_fit(codes, &d, x, w, 1.0f / d16);
        q4_0_decode(y, codes, d16);
        double e = block_err(x, y, w);
        if (e < found_err) found_err = e, best_d16 = d16, memcpy(best_codes, codes, sizeof codes);
    }
    if (!(found_err < best_err)) return best_err;
    put_f16(block, best_d16);
    pack4(block + 2, best_codes);
    return found_err;
}

/* ---- Q4_1: x = d * q + m ------------------------------------------------------- */
/* Codes nearest to x for (id, m); the least-squares (d, m) for them in
 * *d, *m; returns the error they leave (smaller is better). sxx is
 * sum w x^2 of the block. */
static double q4_1_fit(uint8_t *codes, double *d, double *m, const float *x, const float *w,
                       float id, float m0, double sxx)
{
    double sw = 0.0, sq = 0.0, sqq = 0.0, sx = 0.0, sqx = 0.0;
    for (int j = 0; j < FKD_QK; j++) {
        int q = code4((x[j] - m0) * id + 0.5f);
        codes[j] = (uint8_t)q;
        sw += w[j];
        sq += w[j] * q;
        sqq += w[j] * q * q;
        sx += w[j] * x[j];
        sqx += w[j] * q * x[j];
    }
    double det = sw * sqq - sq * sq;
    if (det > 1e-9 * sw * sqq) {
        *d = (sw * sqx - sq * sx) / det;
        *m = (sqq * sx - sq * sqx) / det;
    } else { /* every code equal: the best constant */
        *d = 0.0;
        *m = sx / sw;
    }
    return sxx - *d * sqx - *m * sx;
}

static void q4_1_decode(float *y, const uint8_t *codes, float d, float m)
{
    for (int j = 0; j < FKD_QK; j++) y[j] = (float)codes[j] * d + m;
}

static double q4_1_block_mse(uint8_t *block, const float *x, const float *weights)
{
    float w[FKD_QK], y[FKD_QK];
    fkd_q4_1_quantize_row(block, x, FKD_QK);
    block_weights(w, weights);
    fkd_q4_1_dequantize_row(y, block, FKD_QK);
    double best_err = block_err(x, y, w);
    if (!block_finite(x)) return best_err;

    float mn = x[0], mx = x[0];
    double sxx = 0.0;
    for (int j = 0; j < FKD_QK; j++) {
        mn = fminf(mn, x[j]);
        mx = fmaxf(mx, x[j]);
        sxx += w[j] * (double)x[j] * x[j];
    }
    float range = mx - mn;
    if (mx == mn || !isfinite(range)) return best_err; /* constant: RTN is exact up to fp16 */

    uint8_t codes[FKD_QK], best_codes[FKD_QK];
    double d, m, best_dd = 0.0, best_mm = mn, cand_err = INFINITY;
    for (size_t a = 0; a < sizeof q4_1_anchors / sizeof q4_1_anchors[0]; a++) {
        for (size_t i = 0; i < sizeof q4_1_deltas / sizeof q4_1_deltas[0]; i++) {
            if (a > 0 && q4_1_deltas[i] == 0.0f) continue; /* delta 0 is the same for every anchor */
            float step = range / (15.0f + q4_1_deltas[i]);
            float m0 = mn + q4_1_anchors[a] * (range - 15.0f * step);
            double e = q4_1_fit(codes, &d, &m, x, w, 1.0f / step, m0, sxx);
            if (e < cand_err) cand_err = e, best_dd = d, best_mm = m;
        }
    }

    float best_d16 = 0.0f, best_m16 = 0.0f;
    double found_err = INFINITY;
    d = best_dd, m = best_mm;
    for (int it = 0; it < REFINE_ITERS; it++) {
        float d16 = fp16_round((float)d), m16 = fp16_round((float)m);
        if (d16 == 0.0f || !isfinite(d16) || !isfinite(m16)) break;
        q4_1_fit(codes, &d, &m, x, w, 1.0f / d16, m16, sxx);
        q4_1_decode(y, codes, d16, m16);
        double e = block_err(x, y, w);
        if (e < found_err)
            found_err = e, best_d16 = d16, best_m16 = m16, memcpy(best_codes, codes, sizeof codes);
    }
    if (!(found_err < best_err)) return best_err;
    put_f16(block, best_d16);
    put_f16(block + 2, best_m16);
    pack4(block + 4, best_codes);
    return found_err;
}

/* ---- rows ------------------------------------------------------------------------ */
typedef double (*block_mse_fn)(uint8_t *block, const float *x, const float *w);

/* Every whole block of the row through one format's block quantizer. */
static double row_mse(uint8_t *blocks, size_t block_bytes, block_mse_fn block_mse,
                      const float *x, const float *weights, size_t n)
{
    double e = 0.0;
    for (size_t b = 0; b < n / FKD_QK; b++)
        e += block_mse(blocks + b * block_bytes, x + b * FKD_QK,
                       weights ? weights + b * FKD_QK : NULL);
    return e;
}

double fkd_q4_0_quantize_row_mse(uint8_t *blocks, const float *x, const float *weights, size_t n)
{
    return row_mse(blocks, FKD_Q4_0_BLOCK_BYTES, q4_0_block_mse, x, weights, n);
}

double fkd_q4_1_quantize_row_mse(uint8_t *blocks, const float *x, const float *weights, size_t n)
{
    return row_mse(blocks, FKD_Q4_1_BLOCK_BYTES, q4_1_block_mse, x, weights, n);
}

int fkd_quantize_row_mse(uint8_t *out, int type, const float *x, const float *weights, size_t n)
{
    if (fkd_qtype_row_bytes(type, n) == 0 && n != 0) return -1;
    switch (type) {
    case FKD_QTYPE_Q4_0: fkd_q4_0_quantize_row_mse(out, x, weights, n); return 0;
    case FKD_QTYPE_Q4_1: fkd_q4_1_quantize_row_mse(out, x, weights, n); return 0;
    }
    return fkd_quantize_row(out, type, x, n);
}
