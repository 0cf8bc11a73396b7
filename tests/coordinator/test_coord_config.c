/* test_coord_config.c — the configuration file and overrides: every kind of
 * value, comments and quotes, and errors that name the file, line and key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fkd_coordinator.h"

static void test_defaults_are_valid(void **s)
{
    (void)s;
    fkd_coord_config c;
    fkd_coord_config_defaults(&c);
    assert_int_equal(fkd_coord_config_validate(&c, NULL), 0);
}

static void test_file_and_overrides(void **s)
{
    (void)s;
    char path[512];
    snprintf(path, sizeof path, "%s/coord-test.conf", getenv("FKD_TEST_TMP") ? getenv("FKD_TEST_TMP") : "/tmp");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "# a comment\n\nrounds = 7   # trailing comment\nendpoint = \"tcp://127.0.0.1:9 #x\"\n"
               "aggregator = trimmed\nup_format = int4\ntask_quant = q4_0\nfraction=0.5\n"
               "model.dim = 128\nmodel.ffn = 352\nseed = 123456789012\nlog_level = debug\n");
    fclose(f);
    fkd_coord_config c;
    fkd_coord_config_defaults(&c);
    fkd_error err;
    assert_int_equal(fkd_coord_config_load(&c, path, &err), 0);
    assert_int_equal(c.rounds, 7);
    assert_string_equal(c.endpoint, "tcp://127.0.0.1:9 #x");
    assert_string_equal(c.aggregator, "trimmed");
    assert_int_equal(c.up_format, FKD_UVAL_INT4);
    assert_int_equal(c.task_quant, FKD_QTYPE_Q4_0);
    assert_float_equal(c.fraction, 0.5f, 1e-7);
    assert_int_equal(c.model.dim, 128);
    assert_true(c.seed == 123456789012ULL);
    assert_int_equal(c.log_level, FKD_LOG_DEBUG);
    assert_int_equal(fkd_coord_config_override(&c, "rounds=9", &err), 0);
    assert_int_equal(c.rounds, 9);
    assert_int_equal(fkd_coord_config_validate(&c, &err), 0);
}

static int set_cb(void *ctx, const char *k, const char *v, fkd_error *err)
{
    return fkd_coord_config_set(ctx, k, v, err);
}

static void test_errors_name_the_problem(void **s)
{
    (void)s;
    fkd_coord_config c;
    fkd_coord_config_defaults(&c);
    fkd_error err;
    assert_int_equal(fkd_coord_config_set(&c, "roundz", "3", &err), -1);
    assert_non_null(strstr(err.msg, "roundz"));
    assert_int_equal(fkd_coord_config_set(&c, "rounds", "3x", &err), -1);
    assert_int_equal(fkd_coord_config_set(&c, "rounds", "0", &err), -1);
    assert_int_equal(fkd_coord_config_set(&c, "fraction", "1.5", &err), -1);
    assert_int_equal(fkd_coord_config_set(&c, "fraction", "nan", &err), -1);
    assert_int_equal(fkd_coord_config_set(&c, "up_format", "int3", &err), -1);
    assert_int_equal(fkd_coord_config_override(&c, "=3", &err), -1);
    assert_int_equal(fkd_coord_config_override(&c, "rounds", &err), -1);
    const char text[] = "rounds = 3\nfraction = 2\n";
    assert_int_equal(fkd_kvconf_parse(text, sizeof text - 1, "x.conf",
                                      set_cb, &c, &err), -1);
    assert_non_null(strstr(err.msg, "x.conf:2"));
    const char bad[] = "just words\n";
    assert_int_equal(fkd_kvconf_parse(bad, sizeof bad - 1, "y.conf",
                                      set_cb, &c, &err), -1);
    assert_non_null(strstr(err.msg, "y.conf:1"));
    /* Validation across keys. */
    fkd_coord_config_defaults(&c);
    snprintf(c.aggregator, sizeof c.aggregator, "nope");
    assert_int_equal(fkd_coord_config_validate(&c, &err), -1);
    fkd_coord_config_defaults(&c);
    c.seq = c.model.max_seq + 1;
    assert_int_equal(fkd_coord_config_validate(&c, &err), -1);
    fkd_coord_config_defaults(&c);
    c.min_updates = c.min_clients + 1;
    assert_int_equal(fkd_coord_config_validate(&c, &err), -1);
}

/* The cosine schedule starts at lr, falls every round, ends near the floor;
 * constant is 1 throughout. */
static void test_lr_schedule(void **s)
{
    (void)s;
    fkd_coord_config c;
    fkd_coord_config_defaults(&c);
    fkd_error err;
    assert_int_equal(c.lr_schedule, 0);
    for (uint64_t r = 1; r <= 12; r++) assert_true(fkd_coord_lr_scale(&c, r) == 1.0f);
    assert_int_equal(fkd_coord_config_set(&c, "lr_schedule", "cosine", &err), 0);
    assert_int_equal(fkd_coord_config_set(&c, "min_lr_ratio", "0.2", &err), 0);
    assert_int_equal(fkd_coord_config_set(&c, "lr_schedule", "linear", &err), -1);
    assert_non_null(strstr(err.msg, "constant cosine"));
    assert_int_equal(fkd_coord_config_set(&c, "min_lr_ratio", "1.5", &err), -1);
    c.rounds = 10;
    assert_float_equal(fkd_coord_lr_scale(&c, 1), 1.0f, 1e-7);
    for (uint64_t r = 2; r <= 10; r++) {
        float a = fkd_coord_lr_scale(&c, r - 1), b = fkd_coord_lr_scale(&c, r);
        assert_true(b < a && b > 0.2f);
    }
    /* halfway: the mean of lr and the floor */
    assert_float_equal(fkd_coord_lr_scale(&c, 6), 0.6f, 1e-6);
    assert_float_equal(fkd_coord_lr_scale(&c, 11), 0.2f, 1e-6); /* past the end: the floor */
    char buf[16384];
    FILE *f = fmemopen(buf, sizeof buf, "w");
    assert_non_null(f);
    fkd_coord_config_print(f, &c);
    fclose(f);
    assert_non_null(strstr(buf, "lr_schedule = cosine\n"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_are_valid),
        cmocka_unit_test(test_file_and_overrides),
        cmocka_unit_test(test_errors_name_the_problem),
        cmocka_unit_test(test_lr_schedule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
