/* test_quant.c — block formats (layouts fixed to the byte, round-trip error
 * bounds) and the quantized dot-product kernels (every SIMD path equal to
 * the scalar one to the bit, and within the error bound of the exact dot). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fkd_compress.h"

#define N_VALUES (FKD_QK * 130) /* crosses the kernels' 64-block chunks */

static void fill_normal(float *x, size_t n, uint64_t seed, float scale)
{
    fkd_rng rng;
    fkd_rng_seed(&rng, seed);
    for (size_t i = 0; i < n; i++) x[i] = scale * fkd_rng_normal(&rng);
}

/* ---- layouts, byte for byte -------------------------------------------------- */
static void test_q8_0_layout(void **state)
{
    (void)state;
    float x[FKD_QK];
    for (int j = 0; j < FKD_QK; j++) x[j] = (float)(j - 16);
    x[0] = -127.0f; /* amax 127 -> d = 1.0 exactly (fp16 0x3c00) */
    uint8_t b[FKD_Q8_0_BLOCK_BYTES];
    fkd_q8_0_quantize_row(b, x, FKD_QK);
    assert_int_equal(b[0], 0x00);
    assert_int_equal(b[1], 0x3c);
    for (int j = 0; j < FKD_QK; j++) assert_int_equal((int8_t)b[2 + j], (int)x[j]);
}

static void test_q4_0_layout(void **state)
{
    (void)state;
    float x[FKD_QK];
    for (int j = 0; j < FKD_QK; j++) x[j] = (float)(j - 16); /* max |x| at -16: d = 2 */
    uint8_t b[FKD_Q4_0_BLOCK_BYTES];
    fkd_q4_0_quantize_row(b, x, FKD_QK);
    assert_int_equal(b[0], 0x00);
    assert_int_equal(b[1], 0x40); /* fp16 2.0 */
    for (int j = 0; j < FKD_QK / 2; j++) {
        int lo = (j + 1) / 2, hi = (j + 16 + 1) / 2;
        hi = hi > 15 ? 15 : hi;
        assert_int_equal(b[2 + j], lo | (hi << 4));
    }
}

static void test_q4_1_layout(void **state)
{
    (void)state;
    float x[FKD_QK];
    for (int j = 0; j < FKD_QK; j++) x[j] = (float)(j % 16 - 3); /* min -3, max 12: d = 1 */
    uint8_t b[FKD_Q4_1_BLOCK_BYTES];
    fkd_q4_1_quantize_row(b, x, FKD_QK);
    assert_int_equal(b[0], 0x00);
    assert_int_equal(b[1], 0x3c);
    assert_int_equal(b[2], 0x00);
    assert_int_equal(b[3], 0xc2); /* fp16 -3.0 */
    for (int j = 0; j < FKD_QK / 2; j++) assert_int_equal(b[4 + j], j | (j << 4));
    assert_int_equal(fkd_qtype_row_bytes(FKD_QTYPE_Q4_1, 64), 2 * FKD_Q4_1_BLOCK_BYTES);
    assert_int_equal(fkd_qtype_row_bytes(FKD_QTYPE_Q8_0, 33), 0);
    assert_int_equal(fkd_qtype_from_name("q4_0"), FKD_QTYPE_Q4_0);
    assert_int_equal(fkd_qtype_from_name("q5_k"), -1);
    assert_true(fkd_qtype_is_int4(FKD_QTYPE_Q4_0) && fkd_qtype_is_int4(FKD_QTYPE_Q4_1));
    assert_false(fkd_qtype_is_int4(FKD_QTYPE_Q8_0) || fkd_qtype_is_int4(FKD_QTYPE_F16) ||
                 fkd_qtype_is_int4(FKD_QTYPE_F32) || fkd_qtype_is_int4(99));
}

/* ---- round trips within the format's bound ------------------------------------ */
/* Largest error the format allows for a block, from its own min/max. */
static float block_bound(int type, const float *x)
{
    float amax = 0, mn = INFINITY, mx = -INFINITY;
    for (int j = 0; j < FKD_QK; j++) {
        amax = fmaxf(amax, fabsf(x[j]));
        mn = fminf(mn, x[j]);
        mx = fmaxf(mx, x[j]);
    }
    const float fp16_rel = 1.0f / 2048.0f;
    switch (type) {
    case FKD_QTYPE_Q8_0: return amax / 127.0f * (0.5f + 127.0f * fp16_rel) + 1e-7f;
    case FKD_QTYPE_Q4_0: return amax / 8.0f * (1.0f + 8.0f * fp16_rel) + 1e-7f;
    case FKD_QTYPE_Q4_1: return (mx - mn) / 15.0f * (0.5f + 15.0f * fp16_rel) + fabsf(mn) * fp16_rel + 1e-7f;
    case FKD_QTYPE_F16: return amax * fp16_rel;
    }
    return 0.0f;
}

static void test_round_trips(void **state)
{
    (void)state;
    const int types[] = {FKD_QTYPE_F32, FKD_QTYPE_F16, FKD_QTYPE_Q8_0, FKD_QTYPE_Q4_0, FKD_QTYPE_Q4_1};
    float *x = malloc(N_VALUES * sizeof *x), *y = malloc(N_VALUES * sizeof *y);
    uint8_t *q = malloc(N_VALUES * 4);
    fill_normal(x, N_VALUES, 7, 0.05f);
    for (int i = 0; i < FKD_QK; i++) x[i] = 0.0f;          /* an all-zero block */
    for (int i = FKD_QK; i < 2 * FKD_QK; i++) x[i] = 3.0f; /* a constant block */
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        assert_int_equal(fkd_quantize_row(q, types[t], x, N_VALUES), 0);
        assert_int_equal(fkd_dequantize_row(y, types[t], q, N_VALUES), 0);
        for (size_t b = 0; b < N_VALUES / FKD_QK; b++) {
            float bound = block_bound(types[t], x + b * FKD_QK);
            for (int j = 0; j < FKD_QK; j++) {
                float e = fabsf(x[b * FKD_QK + j] - y[b * FKD_QK + j]);
                if (e > bound) fail_msg("%s: block %zu value %d error %g > bound %g", fkd_qtype_name(types[t]), b, j, e, bound);
            }
        }
        for (int i = 0; i < FKD_QK; i++) assert_true(y[i] == 0.0f); /* zeros stay zeros */
    }
    assert_int_equal(fkd_quantize_row(q, FKD_QTYPE_Q8_0, x, 31), -1);
    assert_int_equal(fkd_quantize_row(q, 5, x, 32), -1);
    free(x);
    free(y);
    free(q);
}

/* ---- kernels -------------------------------------------------------------------- */
static void random_blocks(uint8_t *w, int type, size_t n, uint64_t seed)
{
    fkd_rng rng;
    fkd_rng_seed(&rng, seed);
    size_t bytes = fkd_qtype_row_bytes(type, n), bb = fkd_qtype_block_bytes(type);
    for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)fkd_rng_u64(&rng);
    for (size_t off = 0; off < bytes; off += bb) { /* finite scales, any codes (-128 too) */
        uint16_t d = fkd_fp32_to_fp16(0.01f * (fkd_rng_uniform(&rng) + 0.01f));
        uint16_t m = fkd_fp32_to_fp16(-0.1f * fkd_rng_uniform(&rng));
        w[off] = (uint8_t)d;
        w[off + 1] = (uint8_t)(d >> 8);
        if (type == FKD_QTYPE_Q4_1) {
            w[off + 2] = (uint8_t)m;
            w[off + 3] = (uint8_t)(m >> 8);
        }
    }
    if (type == FKD_QTYPE_Q8_0) w[2] = 0x80; /* the code the abs/sign trick must survive */
}

/* Non-finite input must not reach a float-to-int cast (undefined
 * behaviour, caught by the UBSan build): it quantizes to something, safely. */
static void test_non_finite_input(void **state)
{
    (void)state;
    float x[2 * FKD_QK];
    for (int i = 0; i < 2 * FKD_QK; i++) x[i] = (float)i;
    x[3] = NAN;
    x[FKD_QK + 5] = INFINITY;
    uint8_t q[2 * FKD_QK * 4];
    const int types[] = {FKD_QTYPE_Q8_0, FKD_QTYPE_Q4_0, FKD_QTYPE_Q4_1};
    for (int t = 0; t < 3; t++) assert_int_equal(fkd_quantize_row(q, types[t], x, 2 * FKD_QK), 0);
    fkd_q8_act xq[2];
    fkd_q8_act_quantize(xq, x, 2 * FKD_QK);
    for (int j = 0; j < FKD_QK; j++) assert_true(xq[0].qs[j] >= -127 && xq[0].qs[j] <= 127);
}

static void test_kernels_agree(void **state)
{
    (void)state;
    const int types[] = {FKD_QTYPE_Q8_0, FKD_QTYPE_Q4_0, FKD_QTYPE_Q4_1};
    const int kernels[] = {FKD_QKERNEL_AVX2, FKD_QKERNEL_VNNI};
    float *x = malloc(N_VALUES * sizeof *x);
    fkd_q8_act *xq = malloc(N_VALUES / FKD_QK * sizeof *xq);
    uint8_t *w = malloc(N_VALUES * 4);
    int compared = 0;
    for (int trial = 0; trial < 8; trial++) {
        fill_normal(x, N_VALUES, 100 + trial, 1.0f);
        if (trial == 1) x[0] = 1e6f; /* an outlier dominating its block */
        fkd_q8_act_quantize(xq, x, N_VALUES);
        for (size_t t = 0; t < 3; t++) {
            random_blocks(w, types[t], N_VALUES, 200 + trial);
            for (size_t n = FKD_QK; n <= N_VALUES; n += n < 4 * FKD_QK ? FKD_QK : 61 * FKD_QK) {
                float ref = fkd_qdot(FKD_QKERNEL_SCALAR, types[t], w, xq, n);
                for (size_t k = 0; k < 2; k++) {
                    if (!fkd_qkernel_supported(kernels[k])) continue;
                    float got = fkd_qdot(kernels[k], types[t], w, xq, n);
                    if (memcmp(&got, &ref, sizeof got) != 0)
                        fail_msg("%s %s n=%zu: %.9g != scalar %.9g", fkd_qkernel_name(kernels[k]),
                                 fkd_qtype_name(types[t]), n, got, ref);
                    compared++;
                }
            }
        }
    }
    if (fkd_qkernel_supported(FKD_QKERNEL_AVX2)) assert_true(compared > 0);
    free(x);
    free(xq);
    free(w);
}

/* qdot against the exact dot of the dequantized row with the float input:
 * the only error is the activation's rounding, at most d_a/2 per code. */
static void test_qdot_accuracy(void **state)
{
    (void)state;
    const int types[] = {FKD_QTYPE_Q8_0, FKD_QTYPE_Q4_0, FKD_QTYPE_Q4_1};
    float *x = malloc(N_VALUES * sizeof *x), *wf = malloc(N_VALUES * sizeof *wf);
    float *wd = malloc(N_VALUES * sizeof *wd);
    fkd_q8_act *xq = malloc(N_VALUES / FKD_QK * sizeof *xq);
    uint8_t *w = malloc(N_VALUES * 4);
    fill_normal(x, N_VALUES, 11, 1.0f);
    fill_normal(wf, N_VALUES, 12, 0.02f);
    fkd_q8_act_quantize(xq, x, N_VALUES);
    for (size_t t = 0; t < 3; t++) {
        fkd_quantize_row(w, types[t], wf, N_VALUES);
        fkd_dequantize_row(wd, types[t], w, N_VALUES);
        double exact = 0.0, bound = 0.0;
        for (size_t b = 0; b < N_VALUES / FKD_QK; b++) {
            double wsum = 0.0;
            for (int j = 0; j < FKD_QK; j++) {
                exact += (double)wd[b * FKD_QK + j] * x[b * FKD_QK + j];
                wsum += fabs(wd[b * FKD_QK + j]);
            }
            bound += wsum * (0.5 * xq[b].d + 1e-6) + 1e-6;
        }
        for (int k = FKD_QKERNEL_SCALAR; k <= FKD_QKERNEL_VNNI; k++) {
            if (!fkd_qkernel_supported(k)) continue;
            float got = fkd_qdot(k, types[t], w, xq, N_VALUES);
            if (fabs(got - exact) > bound)
                fail_msg("%s %s: |%g - %g| > %g", fkd_qkernel_name(k), fkd_qtype_name(types[t]), got, exact, bound);
        }
    }
    free(x);
    free(wf);
    free(wd);
    free(xq);
    free(w);
}

/* The activation blocks against the rule spelled out here: d = amax/127,
 * codes rounded to nearest with ties to even, NaN to 0, the exact sum. */
static void test_q8_act_rule(void **state)
{
    (void)state;
    enum { NB = 6 };
    float x[NB * FKD_QK];
    fill_normal(x, NB * FKD_QK, 31, 3.0f);
    x[FKD_QK] = 127.0f; /* block 1: d = 1, so x.5 values are exact ties */
    for (int j = 1; j < FKD_QK; j++) x[FKD_QK + j] = (float)(j - 16) + 0.5f;
    x[2 * FKD_QK + 3] = NAN;
    x[3 * FKD_QK + 7] = -1e30f;
    for (int j = 0; j < FKD_QK; j++) x[4 * FKD_QK + j] = 0.0f;
    fkd_q8_act got[NB];
    fkd_q8_act_quantize(got, x, NB * FKD_QK);
    for (int b = 0; b < NB; b++) {
        const float *xb = x + b * FKD_QK;
        float amax = 0.0f;
        for (int j = 0; j < FKD_QK; j++)
            if (fabsf(xb[j]) > amax) amax = fabsf(xb[j]);
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        int32_t sum = 0;
        for (int j = 0; j < FKD_QK; j++) {
            float v = isnan(xb[j]) ? 0.0f : fminf(fmaxf(nearbyintf(xb[j] * id), -127.0f), 127.0f);
            if (got[b].qs[j] != (int8_t)v) fail_msg("block %d value %d (%g): code %d, want %d", b, j, xb[j], got[b].qs[j], (int)v);
            sum += (int32_t)v;
        }
        assert_true(memcmp(&got[b].d, &d, sizeof d) == 0);
        assert_int_equal(got[b].sum, sum);
    }
    assert_int_equal(got[1].qs[1], -14); /* -14.5 ties to even */
    assert_int_equal(got[1].qs[2], -14); /* -13.5 too */
}

/* The batched kernel gives each row exactly what the matvec gives it; F32
 * and F16 rows take the float input. B and ROWS leave edges beside the
 * matrix-matrix tiles. */
static void test_matmul_matches_matvec(void **state)
{
    (void)state;
    enum { B = 11, ROWS = 37, N = 4 * FKD_QK };
    static float x[B * N], wf[ROWS * N], out_mm[B * ROWS], out_mv[ROWS];
    static fkd_q8_act xq[B * N / FKD_QK];
    static uint8_t w[ROWS * N * 4];
    fill_normal(x, B * N, 21, 1.0f);
    fill_normal(wf, ROWS * N, 22, 0.1f);
    for (int b = 0; b < B; b++) fkd_q8_act_quantize(xq + b * (N / FKD_QK), x + b * N, N);
    const int types[] = {FKD_QTYPE_F32, FKD_QTYPE_F16, FKD_QTYPE_Q8_0, FKD_QTYPE_Q4_0, FKD_QTYPE_Q4_1};
    for (size_t t = 0; t < 5; t++) {
        fkd_quantize_row(w, types[t], wf, ROWS * N);
        fkd_qmatmul(FKD_QKERNEL_AUTO, out_mm, types[t], w, x, xq, B, ROWS, N);
        for (int b = 0; b < B; b++) {
            fkd_qmatvec(FKD_QKERNEL_AUTO, out_mv, types[t], w, x + b * N, xq + b * (N / FKD_QK), ROWS, N);
            assert_memory_equal(out_mv, out_mm + b * ROWS, sizeof out_mv);
        }
        if (types[t] == FKD_QTYPE_F32) {
            double ref = 0.0;
            for (int i = 0; i < N; i++) ref += (double)wf[i] * x[i];
            assert_true(fabs(out_mm[0] - ref) < 1e-4);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q8_0_layout),
        cmocka_unit_test(test_q4_0_layout),
        cmocka_unit_test(test_q4_1_layout),
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_non_finite_input),
        cmocka_unit_test(test_kernels_agree),
        cmocka_unit_test(test_qdot_accuracy),
        cmocka_unit_test(test_q8_act_rule),
        cmocka_unit_test(test_matmul_matches_matvec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
