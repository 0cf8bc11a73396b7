/* test_update.c — update compression: round trips within each value
 * format's bound at many sizes and densities, one update's exact bytes
 * (the example of docs/protocol.md), the automatic index coding and the
 * Rice coding's cost against the entropy of the mask, error feedback that
 * loses nothing over rounds, unbiased stochastic rounding, the residual
 * file, and a decoder that refuses every truncation and every forged field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fkd_compress.h"

static float *normal_vec(size_t n, uint64_t seed, float scale)
{
    float *x = malloc(n * sizeof *x);
    fkd_rng rng;
    fkd_rng_seed(&rng, seed);
    for (size_t i = 0; i < n; i++) x[i] = scale * fkd_rng_normal(&rng);
    return x;
}

static int compress(uint8_t **data, size_t *bytes, fkd_update_stats *st, const float *u,
                    float *residual, size_t n, float fraction, int fmt, fkd_rng *rng)
{
    fkd_update_config cfg = {fraction, fmt, rng != NULL, rng, NULL};
    fkd_error err;
    int rc = fkd_update_compress(data, bytes, st, u, residual, n, &cfg, &err);
    if (rc < 0) print_error("%s\n", err.msg);
    return rc;
}

/* ---- round trips ------------------------------------------------------------------- */
#define N_FMTS 5
static const int all_fmts[N_FMTS] = {FKD_UVAL_F32, FKD_UVAL_INT8, FKD_UVAL_INT4, FKD_UVAL_TERNARY,
                                     FKD_UVAL_SIGN};

/* One size: every format at every density decodes within its bound, and
 * what was sent is a top-k. */
static void round_trips_of(size_t n)
{
    const float fractions[] = {1.0f, 0.7f, 0.3f, 0.05f, 0.03f, 0.015f, 0.001f};
    const int *fmts = all_fmts;
    float *u = normal_vec(n, 1 + n, 0.01f), *d = malloc(n * sizeof *d);
    float amax = 0;
    for (size_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(u[i]));
    for (size_t f = 0; f < sizeof fractions / sizeof fractions[0]; f++) {
        for (size_t v = 0; v < N_FMTS; v++) {
            uint8_t *data;
            size_t bytes;
            fkd_update_stats st;
            assert_int_equal(compress(&data, &bytes, &st, u, NULL, n, fractions[f], fmts[v], NULL), 0);
            assert_int_equal(fkd_update_decompress(d, n, data, bytes, NULL), 0);
            size_t k = (size_t)lround((double)fractions[f] * n), sent = 0;
            k = k ? k : 1;
            int exact_k = fmts[v] == FKD_UVAL_F32 || fmts[v] == FKD_UVAL_SIGN; /* no zero code */
            assert_int_equal(st.k, k);
            assert_int_equal(st.bytes, bytes);
            assert_true(fabs(st.ratio - 4.0 * n / bytes) < 1e-9);
            /* the sent set is a top-k: nothing left out is larger than what was sent */
            float min_sent = INFINITY, max_unsent = 0;
            double num = 0, den = 0;
            for (size_t i = 0; i < n; i++) {
                num += (double)(d[i] - u[i]) * (d[i] - u[i]);
                den += (double)u[i] * u[i];
                if (d[i] != 0.0f || fmts[v] == FKD_UVAL_F32) {
                    if (d[i] != 0.0f) sent++;
                } else if (fmts[v] != FKD_UVAL_TERNARY && fmts[v] != FKD_UVAL_F32) {
                    /* a zero code: the value was small against its chunk's scale */
                }
                float err_bound = fmts[v] == FKD_UVAL_F32 ? 0.0f
                                : fmts[v] == FKD_UVAL_INT8 ? amax / 254.0f * 1.0001f
                                : fmts[v] == FKD_UVAL_INT4 ? amax / 14.0f * 1.0001f : INFINITY;
                if (d[i] != 0.0f) {
                    min_sent = fminf(min_sent, fabsf(u[i]));
                    if (fabsf(d[i] - u[i]) > err_bound) fail_msg("fmt %d value %zu: %g vs %g", fmts[v], i, d[i], u[i]);
                    if (fmts[v] == FKD_UVAL_TERNARY || fmts[v] == FKD_UVAL_SIGN)
                        assert_true((d[i] > 0) == (u[i] > 0));
                } else {
                    max_unsent = fmaxf(max_unsent, fabsf(u[i]));
                }
            }
            assert_true(sent <= k);
            if (exact_k) assert_int_equal(sent, k);
            if (exact_k && k < n) assert_true(max_unsent <= min_sent);
            assert_true(fabs(st.rel_error - sqrt(num / den)) < 1e-6);
            if (fmts[v] == FKD_UVAL_F32 && k == n) assert_true(st.rel_error == 0.0);
            if (fmts[v] == FKD_UVAL_INT8 && k == n) assert_true(st.rel_error < 0.01);
            free(data);
        }
    }
    free(u);
    free(d);
}

static void test_round_trips(void **state)
{
    (void)state;
    const size_t sizes[] = {1, 2, 7, 255, 256, 257, 5000, 70001};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) round_trips_of(sizes[s]);
}

/* Sign keeps one scale per sign and chunk: every decoded value is the mean
 * of its chunk's sent values of the same sign. */
static void test_sign_scales(void **state)
{
    (void)state;
    const size_t n = 3000;
    float *u = normal_vec(n, 11, 1.0f), *d = malloc(n * sizeof *d);
    uint8_t *data;
    size_t bytes;
    assert_int_equal(compress(&data, &bytes, NULL, u, NULL, n, 0.2f, FKD_UVAL_SIGN, NULL), 0);
    assert_int_equal(fkd_update_decompress(d, n, data, bytes, NULL), 0);
    double sum[2] = {0, 0};
    size_t cnt[2] = {0, 0}, seen = 0, chunk_start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || (d[i] != 0.0f && seen == FKD_UPDATE_CHUNK)) {
            /* a chunk complete: check its values against the means */
            for (size_t j = chunk_start; j < i; j++) {
                if (d[j] == 0.0f) continue;
                int neg = u[j] < 0;
                assert_float_equal(d[j], (neg ? -1 : 1) * sum[neg] / (double)cnt[neg], 1e-6);
            }
            sum[0] = sum[1] = 0;
            cnt[0] = cnt[1] = 0;
            seen = 0;
            chunk_start = i;
        }
        if (i < n && d[i] != 0.0f) {
            sum[u[i] < 0] += fabsf(u[i]);
            cnt[u[i] < 0]++;
            seen++;
        }
    }
    free(data);
    /* stochastic rounding has no zero code to round to: sign ignores it */
    uint8_t *again;
    size_t again_bytes;
    fkd_update_config cfg = {0.2f, FKD_UVAL_SIGN, 1, NULL, NULL};
    assert_int_equal(fkd_update_compress(&again, &again_bytes, NULL, u, NULL, n, &cfg, NULL), 0);
    assert_int_equal(compress(&data, &bytes, NULL, u, NULL, n, 0.2f, FKD_UVAL_SIGN, NULL), 0);
    assert_int_equal(again_bytes, bytes);
    assert_memory_equal(again, data, bytes);
    free(again);
    free(data);
    free(u);
    free(d);
}

/* The example of docs/protocol.md, byte for byte: 4 of 20 values as sign,
 * gaps 2, 2, 0, 8 Rice-coded with b = 1. */
static void test_exact_bytes(void **state)
{
    (void)state;
    float u[20];
    for (int i = 0; i < 20; i++) u[i] = 0.01f;
    u[2] = 0.5f;
    u[5] = -0.25f;
    u[6] = 1.5f;
    u[15] = -0.75f;
    uint8_t *data;
    size_t bytes;
    assert_int_equal(compress(&data, &bytes, NULL, u, NULL, 20, 0.2f, FKD_UVAL_SIGN, NULL), 0);
    const uint8_t want[44] = {
        'F', 'K', 'D', 'U', 2, FKD_UVAL_SIGN, FKD_UIDX_RICE, 0,
        20, 0, 0, 0, 0, 0, 0, 0,       /* n */
        4, 0, 0, 0, 0, 0, 0, 0,        /* k */
        0, 1, 0, 0,                    /* chunk 256 */
        3, 0, 0, 0,                    /* index bytes */
        0x01, 0x09, 0x0f,              /* b = 1; gaps 100 100 00 111100, padding 00 */
        0, 0, 0x80, 0x3f, 0, 0, 0, 0x3f, /* scales 1.0 (mean of 0.5, 1.5), 0.5 (of 0.25, 0.75) */
        0x0a};                         /* signs + - + - */
    assert_int_equal(bytes, sizeof want + 4);
    assert_memory_equal(data, want, sizeof want);
    uint32_t crc = fkd_crc32(0, want, sizeof want);
    for (int i = 0; i < 4; i++) assert_int_equal(data[sizeof want + i], (uint8_t)(crc >> (8 * i)));
    free(data);
}

/* The empty update, and the first or the last entry alone (the longest
 * gap a payload can hold). */
static void test_edge_updates(void **state)
{
    (void)state;
    uint8_t *data;
    size_t bytes, k;
    float none = 0.0f;
    assert_int_equal(compress(&data, &bytes, NULL, &none, NULL, 0, 1.0f, FKD_UVAL_SIGN, NULL), 0);
    assert_int_equal(fkd_update_peek(NULL, &k, NULL, NULL, data, bytes, NULL), 0);
    assert_int_equal(k, 0);
    assert_int_equal(fkd_update_decompress(&none, 0, data, bytes, NULL), 0);
    free(data);
    const size_t n = 1000003;
    float *u = calloc(n, sizeof *u), *d = malloc(n * sizeof *d);
    const size_t at[] = {0, n - 1};
    for (size_t a = 0; a < 2; a++) {
        for (size_t v = 0; v < N_FMTS; v++) {
            memset(u, 0, n * sizeof *u);
            u[at[a]] = -3.0f;
            int coding;
            assert_int_equal(compress(&data, &bytes, NULL, u, NULL, n, 1e-7f, all_fmts[v], NULL), 0);
            assert_int_equal(fkd_update_peek(NULL, &k, NULL, &coding, data, bytes, NULL), 0);
            assert_int_equal(k, 1);
            assert_int_equal(coding, FKD_UIDX_RICE);
            assert_true(bytes < 64);
            assert_int_equal(fkd_update_decompress(d, n, data, bytes, NULL), 0);
            assert_float_equal(d[at[a]], -3.0f, 1e-6);
            free(data);
        }
    }
    free(u);
    free(d);
}

static void test_value_names(void **state)
{
    (void)state;
    for (int f = 0; f < FKD_UVAL_COUNT; f++)
        assert_int_equal(fkd_update_value_parse(fkd_update_value_name(f)), f);
    assert_string_equal(fkd_update_value_name(FKD_UVAL_SIGN), "sign");
    assert_string_equal(fkd_update_value_name(FKD_UVAL_COUNT), "?");
    assert_int_equal(fkd_update_value_parse("int2"), -1);
    assert_int_equal(fkd_update_value_parse(NULL), -1);
}

static void test_index_coding_choice(void **state)
{
    (void)state;
    const size_t n = 10000;
    float *u = normal_vec(n, 2, 1.0f);
    const struct { float fraction; int coding; } cases[] = {
        {1.0f, FKD_UIDX_ALL}, {0.5f, FKD_UIDX_BITMAP}, {0.01f, FKD_UIDX_RICE}};
    for (size_t c = 0; c < 3; c++) {
        uint8_t *data;
        size_t bytes, pn, pk;
        int fmt, coding;
        fkd_update_stats st;
        assert_int_equal(compress(&data, &bytes, &st, u, NULL, n, cases[c].fraction, FKD_UVAL_INT8, NULL), 0);
        assert_int_equal(fkd_update_peek(&pn, &pk, &fmt, &coding, data, bytes, NULL), 0);
        assert_int_equal(coding, cases[c].coding);
        assert_int_equal(st.index_coding, coding);
        assert_int_equal(pn, n);
        assert_int_equal(fmt, FKD_UVAL_INT8);
        if (coding == FKD_UIDX_BITMAP) assert_true(bytes < FKD_UPDATE_HEADER_BYTES + n / 8 + pk * 2);
        free(data);
    }
    free(u);
}

/* A random top-k is a Bernoulli mask: the Rice gaps must cost within half
 * a bit per entry of its entropy (varint gaps took about 14 bits here). */
static void test_rice_near_entropy(void **state)
{
    (void)state;
    const size_t n = 400000;
    float *u = normal_vec(n, 12, 1.0f);
    const float fractions[] = {0.003f, 0.015f, 0.04f, 0.1f};
    for (size_t f = 0; f < sizeof fractions / sizeof fractions[0]; f++) {
        uint8_t *data;
        size_t bytes, k;
        assert_int_equal(compress(&data, &bytes, NULL, u, NULL, n, fractions[f], FKD_UVAL_SIGN, NULL), 0);
        assert_int_equal(fkd_update_peek(NULL, &k, NULL, NULL, data, bytes, NULL), 0);
        uint32_t index_bytes = (uint32_t)data[28] | (uint32_t)data[29] << 8 | (uint32_t)data[30] << 16;
        double p = (double)k / (double)n;
        double entropy = -(p * log2(p) + (1 - p) * log2(1 - p)) / p;
        double bits = 8.0 * index_bytes / (double)k;
        if (bits > entropy + 0.5 || bits < entropy - 0.5)
            fail_msg("density %g: %.2f bits per index, entropy %.2f", p, bits, entropy);
        free(data);
    }
    free(u);
}

/* ---- error feedback ------------------------------------------------------------------ */
static void test_error_feedback_loses_nothing(void **state)
{
    (void)state;
    const size_t n = 3000;
    const int rounds = 25;
    const int *fmts = all_fmts;
    for (size_t v = 0; v < N_FMTS; v++) {
        for (int stochastic = 0; stochastic < 2; stochastic++) {
            double *truth = calloc(n, sizeof *truth), *got = calloc(n, sizeof *got);
            float *residual = calloc(n, sizeof *residual), *d = malloc(n * sizeof *d);
            fkd_rng rng;
            fkd_rng_seed(&rng, 99);
            for (int r = 0; r < rounds; r++) {
                float *u = normal_vec(n, 1000 + r, 0.001f);
                uint8_t *data;
                size_t bytes;
                assert_int_equal(compress(&data, &bytes, NULL, u, residual, n, 0.02f, fmts[v],
                                          stochastic ? &rng : NULL), 0);
                assert_int_equal(fkd_update_decompress(d, n, data, bytes, NULL), 0);
                for (size_t i = 0; i < n; i++) {
                    truth[i] += u[i];
                    got[i] += d[i];
                }
                free(data);
                free(u);
            }
            double worst = 0.0, sent_norm = 0.0;
            for (size_t i = 0; i < n; i++) {
                worst = fmax(worst, fabs(got[i] + residual[i] - truth[i]));
                sent_norm += got[i] * got[i];
            }
            /* float rounding of 25 additions of values ~1e-3 */
            if (worst > 1e-8) fail_msg("format %d stochastic %d: sent + residual misses the updates by %g", fmts[v], stochastic, worst);
            assert_true(sent_norm > 0.0);
            free(truth);
            free(got);
            free(residual);
            free(d);
        }
    }
}

/* ---- stochastic rounding ---------------------------------------------------------------- */
static void test_stochastic_unbiased_and_seeded(void **state)
{
    (void)state;
    enum { N = 64, TRIALS = 2000 };
    float *u = normal_vec(N, 5, 1.0f), d[N];
    float amax = 0;
    for (int i = 0; i < N; i++) amax = fmaxf(amax, fabsf(u[i]));
    const int fmts[] = {FKD_UVAL_INT4, FKD_UVAL_TERNARY};
    for (int v = 0; v < 2; v++) {
        double mean[N] = {0};
        fkd_rng rng;
        fkd_rng_seed(&rng, 3);
        for (int t = 0; t < TRIALS; t++) {
            uint8_t *data;
            size_t bytes;
            assert_int_equal(compress(&data, &bytes, NULL, u, NULL, N, 1.0f, fmts[v], &rng), 0);
            assert_int_equal(fkd_update_decompress(d, N, data, bytes, NULL), 0);
            for (int i = 0; i < N; i++) mean[i] += d[i] / (double)TRIALS;
            free(data);
        }
        double step = fmts[v] == FKD_UVAL_INT4 ? amax / 7.0 : amax;
        for (int i = 0; i < N; i++) {
            double tol = 5.0 * step / (2.0 * sqrt((double)TRIALS));
            if (fabs(mean[i] - u[i]) > tol) fail_msg("format %d value %d: mean %g vs %g", fmts[v], i, mean[i], u[i]);
        }
    }
    /* same seed, same bytes */
    uint8_t *a, *b;
    size_t na, nb;
    fkd_rng r1, r2;
    fkd_rng_seed(&r1, 42);
    fkd_rng_seed(&r2, 42);
    assert_int_equal(compress(&a, &na, NULL, u, NULL, N, 0.5f, FKD_UVAL_INT8, &r1), 0);
    assert_int_equal(compress(&b, &nb, NULL, u, NULL, N, 0.5f, FKD_UVAL_INT8, &r2), 0);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na);
    free(a);
    free(b);
    free(u);
}

static void test_bad_input_refused(void **state)
{
    (void)state;
    float u[4] = {1, 2, NAN, 4};
    uint8_t *data;
    size_t bytes;
    fkd_error err;
    fkd_update_config cfg = {0.5f, FKD_UVAL_INT8, 0, NULL, NULL};
    assert_int_equal(fkd_update_compress(&data, &bytes, NULL, u, NULL, 4, &cfg, &err), -1);
    assert_int_equal(err.code, FKD_E_INVALID_ARG);
    u[2] = 3;
    cfg.fraction = 0.0f;
    assert_int_equal(fkd_update_compress(&data, &bytes, NULL, u, NULL, 4, &cfg, &err), -1);
    cfg.fraction = 1.5f;
    assert_int_equal(fkd_update_compress(&data, &bytes, NULL, u, NULL, 4, &cfg, &err), -1);
    cfg = (fkd_update_config){0.5f, 7, 0, NULL, NULL};
    assert_int_equal(fkd_update_compress(&data, &bytes, NULL, u, NULL, 4, &cfg, &err), -1);
    cfg = (fkd_update_config){0.5f, FKD_UVAL_COUNT, 0, NULL, NULL};
    assert_int_equal(fkd_update_compress(&data, &bytes, NULL, u, NULL, 4, &cfg, &err), -1);
    cfg = (fkd_update_config){0.5f, FKD_UVAL_INT4, 1, NULL, NULL};
    assert_int_equal(fkd_update_compress(&data, &bytes, NULL, u, NULL, 4, &cfg, &err), -1);
}

/* A weight ranks by |value * weight|: the large entry with no gradient behind
 * it stays home, the small one the loss depends on is sent; the residual
 * still holds exactly what was not sent. */
static void test_weighted_selection(void **state)
{
    (void)state;
    const float u[5] = {0.9f, -0.1f, 0.5f, 0.2f, -0.3f};
    const float g[5] = {0.0f, 8.0f, 1.0f, -4.0f, 0.1f};
    float res[5] = {0}, d[5];
    fkd_update_config cfg = {0.4f, FKD_UVAL_F32, 0, NULL, g};
    uint8_t *data;
    size_t bytes;
    assert_int_equal(fkd_update_compress(&data, &bytes, NULL, u, res, 5, &cfg, NULL), 0);
    assert_int_equal(fkd_update_decompress(d, 5, data, bytes, NULL), 0);
    const float want[5] = {0, -0.1f, 0, 0.2f, 0}; /* scores 0, 0.8, 0.5, 0.8, 0.03 */
    for (int i = 0; i < 5; i++) {
        assert_float_equal(d[i], want[i], 0);
        assert_float_equal(res[i], u[i] - want[i], 0);
    }
    free(data);
    cfg.weight = NULL;                            /* by magnitude: 0.9 and 0.5 */
    assert_int_equal(fkd_update_compress(&data, &bytes, NULL, u, NULL, 5, &cfg, NULL), 0);
    assert_int_equal(fkd_update_decompress(d, 5, data, bytes, NULL), 0);
    assert_float_equal(d[0], 0.9f, 0);
    assert_float_equal(d[2], 0.5f, 0);
    free(data);
    const float bad[5] = {0, 1, NAN, 0, 0};       /* a broken gradient is refused */
    cfg.weight = bad;
    fkd_error err;
    assert_int_equal(fkd_update_compress(&data, &bytes, NULL, u, NULL, 5, &cfg, &err), -1);
    assert_int_equal(err.code, FKD_E_INVALID_ARG);
}

/* ---- malformed input ---------------------------------------------------------------------- */
static void fix_crc(uint8_t *data, size_t bytes)
{
    uint32_t crc = fkd_crc32(0, data, bytes - 4);
    for (int i = 0; i < 4; i++) data[bytes - 4 + i] = (uint8_t)(crc >> (8 * i));
}

/* A copy in its own exact-size allocation, so ASan sees any over-read. */
static int decode_copy(const uint8_t *src, size_t bytes, size_t n, fkd_error *err)
{
    uint8_t *copy = malloc(bytes ? bytes : 1);
    memcpy(copy, src, bytes);
    float *d = malloc(n * sizeof *d);
    int rc = fkd_update_decompress(d, n, copy, bytes, err);
    free(copy);
    free(d);
    return rc;
}

static void test_truncation_and_corruption_refused(void **state)
{
    (void)state;
    const size_t n = 700;
    float *u = normal_vec(n, 8, 1.0f);
    const struct { float fraction; int fmt; } cases[] = {
        {0.05f, FKD_UVAL_INT4}, {0.5f, FKD_UVAL_TERNARY}, {1.0f, FKD_UVAL_INT8},
        {0.03f, FKD_UVAL_F32}, {0.011f, FKD_UVAL_TERNARY}, {0.015f, FKD_UVAL_SIGN},
        {0.6f, FKD_UVAL_SIGN}, {1.0f, FKD_UVAL_SIGN}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        uint8_t *data;
        size_t bytes;
        fkd_error err;
        assert_int_equal(compress(&data, &bytes, NULL, u, NULL, n, cases[c].fraction, cases[c].fmt, NULL), 0);
        assert_int_equal(decode_copy(data, bytes, n, &err), 0);
        for (size_t len = 0; len < bytes; len++) assert_int_equal(decode_copy(data, len, n, &err), -1);
        uint8_t *longer = calloc(1, bytes + 1);
        memcpy(longer, data, bytes);
        assert_int_equal(decode_copy(longer, bytes + 1, n, &err), -1);
        free(longer);
        assert_int_equal(decode_copy(data, bytes, n + 1, &err), -1);
        assert_int_equal(err.code, FKD_E_MISMATCH);
        /* every byte flipped: the CRC refuses it; with the CRC forged to
         * match, the structural checks must still refuse or decode safely */
        uint8_t *bad = malloc(bytes);
        for (size_t i = 0; i < bytes - 4; i++) {
            memcpy(bad, data, bytes);
            bad[i] ^= 0x5a;
            assert_int_equal(decode_copy(bad, bytes, n, &err), -1);
            fix_crc(bad, bytes);
            (void)decode_copy(bad, bytes, n, &err);
        }
        free(bad);
        free(data);
    }
    free(u);
}

/* Fields forged one at a time, CRC recomputed: each must be refused by name. */
static void test_forged_fields_refused(void **state)
{
    (void)state;
    const size_t n = 200;
    float *u = normal_vec(n, 9, 1.0f);
    uint8_t *data, *bad;
    size_t bytes;
    fkd_error err;
    assert_int_equal(compress(&data, &bytes, NULL, u, NULL, n, 0.05f, FKD_UVAL_INT4, NULL), 0);
    bad = malloc(bytes);
    const struct { size_t off; uint8_t value; int code; } forgeries[] = {
        {0, 'X', FKD_E_FORMAT},     /* magic */
        {4, 3, FKD_E_VERSION},      /* newer version */
        {4, 1, FKD_E_VERSION},      /* version 1 (varint indices) */
        {4, 0, FKD_E_VERSION},      /* version 0 */
        {5, 9, FKD_E_FORMAT},       /* value format */
        {6, 3, FKD_E_FORMAT},       /* index coding */
        {6, FKD_UIDX_ALL, FKD_E_FORMAT},
        {6, FKD_UIDX_BITMAP, FKD_E_FORMAT},
        {7, 1, FKD_E_FORMAT},       /* flags */
        {16, 0xff, FKD_E_FORMAT},   /* k > n */
        {24, 0, FKD_E_FORMAT},      /* chunk 0 ... */
        {28, 0xff, FKD_E_FORMAT},   /* index bytes */
    };
    for (size_t f = 0; f < sizeof forgeries / sizeof forgeries[0]; f++) {
        memcpy(bad, data, bytes);
        bad[forgeries[f].off] = forgeries[f].value;
        if (forgeries[f].off == 24) bad[25] = 0;
        fix_crc(bad, bytes);
        assert_int_equal(decode_copy(bad, bytes, n, &err), -1);
        if (err.code != forgeries[f].code)
            fail_msg("forgery at %zu: code %d (%s)", forgeries[f].off, err.code, err.msg);
    }
    /* k = 10 in one chunk: one Rice parameter, then the gap stream */
    assert_int_equal(data[6], FKD_UIDX_RICE);
    const size_t stream = FKD_UPDATE_HEADER_BYTES + 1;
    /* a Rice parameter above 31 (a gap is below 2^32) */
    memcpy(bad, data, bytes);
    bad[FKD_UPDATE_HEADER_BYTES] = 32;
    fix_crc(bad, bytes);
    assert_int_equal(decode_copy(bad, bytes, n, &err), -1);
    assert_non_null(strstr(err.msg, "Rice parameter"));
    /* an index past n: a unary run longer than any gap below n */
    memcpy(bad, data, bytes);
    bad[stream] = 0xff;
    bad[stream + 1] = 0xff;
    fix_crc(bad, bytes);
    assert_int_equal(decode_copy(bad, bytes, n, &err), -1);
    /* a unary run that never ends: the stream is cut short */
    uint32_t rice_bytes = (uint32_t)data[28] - 1;
    memcpy(bad, data, bytes);
    memset(bad + stream, 0xff, rice_bytes);
    bad[FKD_UPDATE_HEADER_BYTES] = 0;
    fix_crc(bad, bytes);
    assert_int_equal(decode_copy(bad, bytes, n, &err), -1);
    /* every gap 0 (b = 0): the k indices end before the stream does */
    memcpy(bad, data, bytes);
    memset(bad + stream, 0, rice_bytes);
    bad[FKD_UPDATE_HEADER_BYTES] = 0;
    fix_crc(bad, bytes);
    assert_int_equal(decode_copy(bad, bytes, n, &err), -1);
    assert_non_null(strstr(err.msg, "more entries"));
    /* a set padding bit at the end of the gap stream */
    memcpy(bad, data, bytes);
    bad[stream + rice_bytes - 1] |= 0x80;
    fix_crc(bad, bytes);
    assert_int_equal(decode_copy(bad, bytes, n, &err), -1);
    /* a stray padding nibble after the last int4 value (k = 10 is even:
     * flip a bit of a code instead, making nibble 0 = the invalid code) */
    memcpy(bad, data, bytes);
    bad[bytes - 5] &= 0x0f; /* last value byte: high nibble 0 */
    fix_crc(bad, bytes);
    assert_int_equal(decode_copy(bad, bytes, n, &err), -1);
    /* a stray padding nibble after an odd count of int4 values */
    uint8_t *odd;
    size_t odd_bytes;
    assert_int_equal(compress(&odd, &odd_bytes, NULL, u, NULL, n, 0.055f, FKD_UVAL_INT4, NULL), 0);
    assert_int_equal(decode_copy(odd, odd_bytes, n, &err), 0);
    odd[odd_bytes - 5] |= 0x80;
    fix_crc(odd, odd_bytes);
    assert_int_equal(decode_copy(odd, odd_bytes, n, &err), -1);
    free(odd);
    /* a non-finite scale */
    size_t pk;
    assert_int_equal(fkd_update_peek(NULL, &pk, NULL, NULL, data, bytes, NULL), 0);
    uint32_t index_bytes = (uint32_t)data[28] | (uint32_t)data[29] << 8;
    memcpy(bad, data, bytes);
    memset(bad + FKD_UPDATE_HEADER_BYTES + index_bytes, 0xff, 4);
    fix_crc(bad, bytes);
    assert_int_equal(decode_copy(bad, bytes, n, &err), -1);
    free(bad);
    free(data);
    free(u);
}

static void test_residual_file(void **state)
{
    (void)state;
    const char *dir = getenv("FKD_TEST_TMP") ? getenv("FKD_TEST_TMP") : "/tmp";
    char path[1024];
    snprintf(path, sizeof path, "%s/test_residual.%d.bin", dir, (int)getpid());
    const size_t n = 1000;
    float *r = normal_vec(n, 4, 1.0f), *back = malloc(n * sizeof *back);
    fkd_error err;
    assert_int_equal(fkd_residual_save(path, r, n, &err), 0);
    assert_int_equal(fkd_residual_load(back, n, path, &err), 0);
    assert_memory_equal(r, back, n * sizeof *r);
    assert_int_equal(fkd_residual_load(back, n - 1, path, &err), -1);
    assert_int_equal(fkd_residual_load(back, n + 1, path, &err), -1);
    /* corrupt one value */
    FILE *f = fopen(path, "r+b");
    fseek(f, 100, SEEK_SET);
    fputc(0x55, f);
    fclose(f);
    assert_int_equal(fkd_residual_load(back, n, path, &err), -1);
    assert_int_equal(err.code, FKD_E_CHECKSUM);
    /* truncated */
    assert_int_equal(truncate(path, 50), 0);
    assert_int_equal(fkd_residual_load(back, n, path, &err), -1);
    unlink(path);
    assert_int_equal(fkd_residual_load(back, n, path, &err), -1);
    free(r);
    free(back);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_sign_scales),
        cmocka_unit_test(test_exact_bytes),
        cmocka_unit_test(test_edge_updates),
        cmocka_unit_test(test_value_names),
        cmocka_unit_test(test_index_coding_choice),
        cmocka_unit_test(test_rice_near_entropy),
        cmocka_unit_test(test_error_feedback_loses_nothing),
        cmocka_unit_test(test_stochastic_unbiased_and_seeded),
        cmocka_unit_test(test_bad_input_refused),
        cmocka_unit_test(test_weighted_selection),
        cmocka_unit_test(test_truncation_and_corruption_refused),
        cmocka_unit_test(test_forged_fields_refused),
        cmocka_unit_test(test_residual_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
