/* test_coord_agg.c — every aggregation strategy on small updates whose
 * result is worked out by hand, and the selection helpers. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "fkd_coordinator.h"

#define N 3

static fkd_coord_config config(const char *name)
{
    fkd_coord_config c;
    fkd_coord_config_defaults(&c);
    snprintf(c.aggregator, sizeof c.aggregator, "%s", name);
    return c;
}

/* Applies strategy `name` to k updates from a zero master. */
static void run(float *master, const char *name, const float (*d)[N], const double *w, int k,
                float trim, float clip)
{
    fkd_coord_config c = config(name);
    c.trim = trim;
    c.clip_norm = clip;
    fkd_coord_agg a;
    assert_int_equal(fkd_coord_agg_init(&a, &c, N, NULL), 0);
    fkd_coord_update ups[8];
    for (int i = 0; i < k; i++) ups[i] = (fkd_coord_update){d[i], w[i]};
    memset(master, 0, N * sizeof *master);
    assert_int_equal(fkd_coord_agg_apply(&a, master, ups, k, NULL), 0);
    fkd_coord_agg_free(&a);
}

static const float d5[5][N] = {{1, 2, 3}, {2, 2, 2}, {3, 2, 1}, {4, 2, 0}, {100, -50, 7}};
static const double w5[5] = {1, 1, 1, 1, 1};

static void test_fedavg_weighted(void **s)
{
    (void)s;
    const float d[2][N] = {{1, 0, 2}, {4, 3, -1}};
    const double w[2] = {1, 2};
    float m[N];
    run(m, "fedavg", d, w, 2, 0, 0);
    assert_float_equal(m[0], 3.0f, 1e-6);  /* (1*1 + 2*4) / 3 */
    assert_float_equal(m[1], 2.0f, 1e-6);
    assert_float_equal(m[2], 0.0f, 1e-6);
    run(m, "fedprox", d, w, 2, 0, 0);      /* the server side is FedAvg */
    assert_float_equal(m[0], 3.0f, 1e-6);
}

static void test_median_and_trimmed(void **s)
{
    (void)s;
    float m[N];
    run(m, "median", d5, w5, 5, 0, 0);
    assert_float_equal(m[0], 3.0f, 1e-6);
    assert_float_equal(m[1], 2.0f, 1e-6);
    assert_float_equal(m[2], 2.0f, 1e-6);
    run(m, "trimmed", d5, w5, 5, 0.2f, 0); /* drops one at each end */
    assert_float_equal(m[0], 3.0f, 1e-6);  /* mean of 2 3 4 */
    assert_float_equal(m[1], 2.0f, 1e-6);
    assert_float_equal(m[2], 2.0f, 1e-6);  /* mean of 1 2 3 */
    run(m, "median", d5, w5, 4, 0, 0);     /* even count: mean of the middle two */
    assert_float_equal(m[0], 2.5f, 1e-6);
}

static void test_clip_bounds_the_outlier(void **s)
{
    (void)s;
    float m[N];
    const float d[3][N] = {{3, 4, 0}, {0, 0, 5}, {30, 40, 0}}; /* norms 5, 5, 50 */
    const double w[3] = {1, 1, 1};
    run(m, "clip", d, w, 3, 0, 0); /* bound = median norm = 5: the third becomes (3,4,0) */
    assert_float_equal(m[0], 2.0f, 1e-5);
    assert_float_equal(m[1], 8.0f / 3, 1e-5);
    assert_float_equal(m[2], 5.0f / 3, 1e-5);
    run(m, "clip", d, w, 3, 0, 2.5f); /* a fixed bound halves the honest ones too */
    assert_float_equal(m[0], 1.0f, 1e-5);
    assert_float_equal(m[2], 2.5f / 3, 1e-5);
}

static void test_fedadam_and_fedyogi_first_step(void **s)
{
    (void)s;
    const float d[1][N] = {{0.5f, -0.25f, 0}};
    const double w[1] = {1};
    float m[N];
    /* Step 1 from zero moments: m = (1-b1) d, v = (1-b2) d^2 (Adam; Yogi is
     * the same from v = 0), x += lr m / (sqrt(v) + tau). */
    for (int yogi = 0; yogi < 2; yogi++) {
        run(m, yogi ? "fedyogi" : "fedadam", d, w, 1, 0, 0);
        for (int j = 0; j < N; j++) {
            double mm = 0.1 * d[0][j], vv = 0.01 * d[0][j] * d[0][j];
            double want = 1.0 * mm / (sqrt(vv) + 1e-3);
            assert_float_equal(m[j], (float)want, 1e-4);
        }
    }
}

static void test_unknown_strategy_and_empty_round(void **s)
{
    (void)s;
    fkd_coord_config c = config("fedmagic");
    fkd_coord_agg a;
    fkd_error err;
    assert_int_equal(fkd_coord_agg_init(&a, &c, N, &err), -1);
    assert_null(fkd_coord_agg_find("fedmagic"));
    c = config("median");
    assert_int_equal(fkd_coord_agg_init(&a, &c, N, NULL), 0);
    float m[N] = {0};
    assert_int_equal(fkd_coord_agg_apply(&a, m, NULL, 0, &err), -1);
    fkd_coord_agg_free(&a);
}

static void test_selection(void **s)
{
    (void)s;
    fkd_coord_config c;
    fkd_coord_config_defaults(&c);
    c.fraction = 0.1f;
    c.min_clients = 3;
    c.max_clients = 50;
    assert_int_equal(fkd_coord_target(&c, 10), 3);    /* min wins */
    assert_int_equal(fkd_coord_target(&c, 200), 20);
    assert_int_equal(fkd_coord_target(&c, 1000), 50); /* max wins */
    assert_int_equal(fkd_coord_target(&c, 2), 2);     /* cannot pick more than exist */
    fkd_rng r1, r2;
    fkd_rng_seed(&r1, 9);
    fkd_rng_seed(&r2, 9);
    int a[10], b[10];
    assert_int_equal(fkd_coord_select(a, 10, 100, &r1), 10);
    assert_int_equal(fkd_coord_select(b, 10, 100, &r2), 10);
    assert_memory_equal(a, b, sizeof a); /* seeded */
    for (int i = 1; i < 10; i++) assert_true(a[i] > a[i - 1]); /* distinct, ascending */
    assert_true(a[9] < 100);
    assert_int_equal(fkd_coord_select(a, 10, 4, &r1), 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fedavg_weighted),
        cmocka_unit_test(test_median_and_trimmed),
        cmocka_unit_test(test_clip_bounds_the_outlier),
        cmocka_unit_test(test_fedadam_and_fedyogi_first_step),
        cmocka_unit_test(test_unknown_strategy_and_empty_round),
        cmocka_unit_test(test_selection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
