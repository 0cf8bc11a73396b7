/* test_quant_mse.c — the least-squares Q4_0 / Q4_1 quantizers
 * (compress/quant_mse.c): never worse than round-to-nearest on any block,
 * clearly better on average, blocks that decode (with quant.c's
 * dequantizers) to the error they report, and the edge cases: constant,
 * zero, huge, non-finite, one outlier, weights that carry no information. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fkd_compress.h"

#define N_BLOCKS 512
#define N_VALUES (N_BLOCKS * FKD_QK)
#define MAX_BLOCK_BYTES FKD_Q4_1_BLOCK_BYTES

static const int q4_types[] = {FKD_QTYPE_Q4_0, FKD_QTYPE_Q4_1};

enum { DIST_NORMAL, DIST_HEAVY, DIST_OUTLIER, DIST_COUNT };

/* x (n): normal; heavy-tailed (Student t with 2 degrees of freedom, as
 * trained weights have a few large entries); or normal with one large
 * outlier per block. */
static void fill(float *x, size_t n, int dist, uint64_t seed)
{
    fkd_rng rng;
    fkd_rng_seed(&rng, seed);
    for (size_t i = 0; i < n; i++) {
        float z = 0.02f * fkd_rng_normal(&rng);
        if (dist == DIST_HEAVY) {
            float c = 0.0f;
            for (int k = 0; k < 2; k++) {
                float g = fkd_rng_normal(&rng);
                c += g * g;
            }
            z = z / sqrtf(c / 2.0f + 1e-12f);
        }
        if (dist == DIST_OUTLIER && i % FKD_QK == (size_t)(fkd_rng_u64(&rng) % FKD_QK)) z *= 25.0f;
        x[i] = z;
    }
}

static double sq_err(const float *x, const float *y, const float *w, size_t n)
{
    double e = 0.0;
    for (size_t i = 0; i < n; i++) e += (w ? w[i] : 1.0) * ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
    return e;
}

static double quantize_mse(uint8_t *q, int type, const float *x, const float *w, size_t n)
{
    return type == FKD_QTYPE_Q4_0 ? fkd_q4_0_quantize_row_mse(q, x, w, n)
                                  : fkd_q4_1_quantize_row_mse(q, x, w, n);
}

/* Per block: error(new) <= error(RTN), both measured by decoding; the
 * error returned is the decoded one; on average the new one is clearly
 * lower. With and without weights (the error then weighted). */
static void test_never_worse_and_better_on_average(void **state)
{
    (void)state;
    float *x = malloc(N_VALUES * sizeof *x), *y = malloc(N_VALUES * sizeof *y);
    float *w = malloc(N_VALUES * sizeof *w);
    uint8_t *q = malloc(N_BLOCKS * MAX_BLOCK_BYTES), *r = malloc(N_BLOCKS * MAX_BLOCK_BYTES);
    fkd_rng rng;
    fkd_rng_seed(&rng, 5);
    for (size_t i = 0; i < N_VALUES; i++) {
        float g = fkd_rng_normal(&rng);
        w[i] = g * g + 0.01f; /* mean squares of activations: positive, uneven */
    }
    for (size_t t = 0; t < 2; t++) {
        int type = q4_types[t];
        size_t bb = fkd_qtype_block_bytes(type);
        for (int dist = 0; dist < DIST_COUNT; dist++) {
            for (int weighted = 0; weighted < 2; weighted++) {
                const float *wt = weighted ? w : NULL;
                fill(x, N_VALUES, dist, 11 + (uint64_t)dist);
                double claimed = quantize_mse(q, type, x, wt, N_VALUES);
                assert_int_equal(fkd_quantize_row(r, type, x, N_VALUES), 0);
                double sum_new = 0.0, sum_rtn = 0.0;
                for (size_t b = 0; b < N_BLOCKS; b++) {
                    const float *xb = x + b * FKD_QK, *wb = wt ? wt + b * FKD_QK : NULL;
                    fkd_dequantize_row(y, type, q + b * bb, FKD_QK);
                    double e_new = sq_err(xb, y, wb, FKD_QK);
                    fkd_dequantize_row(y, type, r + b * bb, FKD_QK);
                    double e_rtn = sq_err(xb, y, wb, FKD_QK);
                    if (e_new > e_rtn)
                        fail_msg("%s dist %d weighted %d block %zu: error %g above RTN's %g",
                                 fkd_qtype_name(type), dist, weighted, b, e_new, e_rtn);
                    sum_new += e_new;
                    sum_rtn += e_rtn;
                }
                assert_true(fabs(claimed - sum_new) <= 1e-9 * sum_new);
                /* measured (share of RTN's error): Q4_0 0.88 / 0.96 / 0.97 unweighted
                 * (normal / heavy / outlier), 0.76-0.89 weighted; Q4_1 0.60-0.79
                 * unweighted, 0.43-0.57 weighted. Demand a clear gain. */
                double bar = type == FKD_QTYPE_Q4_0 ? 0.985 : 0.85;
                if (!(sum_new < bar * sum_rtn))
                    fail_msg("%s dist %d weighted %d: mean error %g is not below %.3f x RTN's %g",
                             fkd_qtype_name(type), dist, weighted, sum_new / N_BLOCKS, bar,
                             sum_rtn / N_BLOCKS);
            }
        }
    }
    free(x);
    free(y);
    free(w);
    free(q);
    free(r);
}

/* Weights move the error to where they are small: the weighted error of
 * the weighted quantizer is below that of the unweighted one. */
static void test_weights_steer_the_error(void **state)
{
    (void)state;
    float *x = malloc(N_VALUES * sizeof *x), *y = malloc(N_VALUES * sizeof *y);
    float *w = malloc(N_VALUES * sizeof *w);
    uint8_t *q = malloc(N_BLOCKS * MAX_BLOCK_BYTES);
    fill(x, N_VALUES, DIST_HEAVY, 3);
    for (size_t i = 0; i < N_VALUES; i++) w[i] = (i % 7 == 0) ? 50.0f : 1.0f; /* a few loud channels */
    for (size_t t = 0; t < 2; t++) {
        int type = q4_types[t];
        quantize_mse(q, type, x, NULL, N_VALUES);
        fkd_dequantize_row(y, type, q, N_VALUES);
        double plain = sq_err(x, y, w, N_VALUES);
        double weighted = quantize_mse(q, type, x, w, N_VALUES);
        if (!(weighted < 0.9 * plain))
            fail_msg("%s: weighted error %g, unweighted quantizer's %g", fkd_qtype_name(type), weighted, plain);
    }
    free(x);
    free(y);
    free(w);
    free(q);
}

/* A block on a 4-bit grid that round-to-nearest misses (its extreme is
 * +7 steps, RTN puts the extreme on -8): recovered exactly. */
static void test_exact_grid_recovered(void **state)
{
    (void)state;
    float x[FKD_QK], y[FKD_QK];
    uint8_t q[MAX_BLOCK_BYTES];
    for (int j = 0; j < FKD_QK; j++) x[j] = 0.125f * (float)(j % 13 - 5); /* codes -5..7 */
    double e = fkd_q4_0_quantize_row_mse(q, x, NULL, FKD_QK);
    fkd_q4_0_dequantize_row(y, q, FKD_QK);
    assert_true(e == 0.0);
    for (int j = 0; j < FKD_QK; j++) assert_true(y[j] == x[j]);
    fkd_q4_0_quantize_row(q, x, FKD_QK);
    fkd_q4_0_dequantize_row(y, q, FKD_QK);
    assert_true(sq_err(x, y, NULL, FKD_QK) > 0.0); /* the case is one RTN gets wrong */
}

/* Edge cases: each block's error is <= RTN's and every decoded value finite. */
static void test_edge_cases(void **state)
{
    (void)state;
    enum { CONSTANT, ZEROS, HUGE_VALUES, ONE_OUTLIER, TINY, N_CASES };
    float x[FKD_QK], y[FKD_QK], w0[FKD_QK];
    uint8_t q[MAX_BLOCK_BYTES], r[MAX_BLOCK_BYTES];
    memset(w0, 0, sizeof w0); /* all-zero weights: count every value alike */
    for (int c = 0; c < N_CASES; c++) {
        for (int j = 0; j < FKD_QK; j++) {
            switch (c) {
            case CONSTANT: x[j] = -0.3f; break;
            case ZEROS: x[j] = 0.0f; break;
            case HUGE_VALUES: x[j] = (j % 2 ? 1.0f : -1.0f) * (30000.0f + 1000.0f * (float)j); break; /* near fp16's 65504 */
            case ONE_OUTLIER: x[j] = j == 9 ? 1000.0f : 0.0f; break;
            case TINY: x[j] = 1e-6f * (float)(j - 11); break;
            }
        }
        for (size_t t = 0; t < 2; t++) {
            int type = q4_types[t];
            for (int wz = 0; wz < 2; wz++) {
                double e = quantize_mse(q, type, x, wz ? w0 : NULL, FKD_QK);
                fkd_dequantize_row(y, type, q, FKD_QK);
                for (int j = 0; j < FKD_QK; j++)
                    if (!isfinite(y[j])) fail_msg("%s case %d: value %d decodes to %g", fkd_qtype_name(type), c, j, y[j]);
                double e_new = sq_err(x, y, NULL, FKD_QK);
                assert_true(e == e_new);
                fkd_quantize_row(r, type, x, FKD_QK);
                fkd_dequantize_row(y, type, r, FKD_QK);
                double e_rtn = sq_err(x, y, NULL, FKD_QK);
                if (e_new > e_rtn) fail_msg("%s case %d: error %g above RTN's %g", fkd_qtype_name(type), c, e_new, e_rtn);
                if (c == ZEROS) assert_true(e_new == 0.0);
                if (c == CONSTANT) assert_true(e_new == e_rtn); /* nothing to gain */
                if (c == ONE_OUTLIER) /* the zeros stay exact; Q4_0 keeps the outlier exact too */
                    for (int j = 0; j < FKD_QK; j++)
                        if (j != 9 || type == FKD_QTYPE_Q4_0) assert_true(fabsf(y[j] - x[j]) <= 0.5f);
            }
        }
    }
}

/* Non-finite input reaches no float-to-int cast (UBSan watches) and gives
 * the round-to-nearest block; the other blocks of the row are unaffected. */
static void test_non_finite_input(void **state)
{
    (void)state;
    float x[3 * FKD_QK], y[3 * FKD_QK];
    uint8_t q[3 * MAX_BLOCK_BYTES], r[3 * MAX_BLOCK_BYTES];
    for (int i = 0; i < 3 * FKD_QK; i++) x[i] = 0.01f * (float)(i % 17) - 0.05f;
    x[3] = NAN;
    x[FKD_QK + 5] = INFINITY;
    for (size_t t = 0; t < 2; t++) {
        int type = q4_types[t];
        size_t bb = fkd_qtype_block_bytes(type);
        assert_int_equal(fkd_quantize_row_mse(q, type, x, NULL, 3 * FKD_QK), 0);
        fkd_quantize_row(r, type, x, 3 * FKD_QK);
        assert_memory_equal(q, r, 2 * bb);
        fkd_dequantize_row(y, type, q + 2 * bb, FKD_QK);
        for (int j = 0; j < FKD_QK; j++) assert_true(isfinite(y[j]));
    }
}

/* The dispatcher: other formats are quant.c's, bad sizes refused. */
static void test_any_format(void **state)
{
    (void)state;
    float x[2 * FKD_QK];
    uint8_t a[2 * FKD_QK * 4], b[2 * FKD_QK * 4];
    fill(x, 2 * FKD_QK, DIST_NORMAL, 9);
    const int others[] = {FKD_QTYPE_F32, FKD_QTYPE_F16, FKD_QTYPE_Q8_0};
    for (size_t t = 0; t < 3; t++) {
        assert_int_equal(fkd_quantize_row_mse(a, others[t], x, NULL, 2 * FKD_QK), 0);
        assert_int_equal(fkd_quantize_row(b, others[t], x, 2 * FKD_QK), 0);
        assert_memory_equal(a, b, fkd_qtype_row_bytes(others[t], 2 * FKD_QK));
    }
    assert_int_equal(fkd_quantize_row_mse(a, FKD_QTYPE_Q4_1, x, NULL, 31), -1);
    assert_int_equal(fkd_quantize_row_mse(a, 5, x, NULL, 32), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_never_worse_and_better_on_average),
        cmocka_unit_test(test_weights_steer_the_error),
        cmocka_unit_test(test_exact_grid_recovered),
        cmocka_unit_test(test_edge_cases),
        cmocka_unit_test(test_non_finite_input),
        cmocka_unit_test(test_any_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
