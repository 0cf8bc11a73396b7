/* test_cli.c — the option parser every command uses (common/cli.c): values
 * of each type, errors that stop the command, and --help, whose lines show
 * a default only when there is one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fkd_common.h"

typedef struct {
    int n, flag;
    float x;
    const char *name, *empty, *unset;
} values;

static int parse(values *v, int argc, char **argv)
{
    fkd_opt opts[] = {
        {"n", FKD_OPT_INT, &v->n, "a count"},
        {"x", FKD_OPT_FLOAT, &v->x, "a ratio"},
        {"name", FKD_OPT_STR, &v->name, "a name"},
        {"empty", FKD_OPT_STR, &v->empty, "a text that defaults to nothing"},
        {"unset", FKD_OPT_STR, &v->unset, "a text with no default"},
        {"flag", FKD_OPT_FLAG, &v->flag, "a switch"},
    };
    return fkd_cli_parse(argc, argv, opts, (int)(sizeof opts / sizeof opts[0]),
                         "usage: test [options]", NULL, 0, NULL);
}

static values defaults(void)
{
    return (values){.n = 3, .x = 0.5f, .name = "abc", .empty = "", .unset = NULL};
}

static void test_values(void **state)
{
    values v = defaults();
    char *argv[] = {"test", "--n", "7", "--x=0.25", "--name", "z", "--flag", NULL};
    assert_int_equal(parse(&v, 7, argv), 0);
    assert_int_equal(v.n, 7);
    assert_float_equal(v.x, 0.25f, 0);
    assert_string_equal(v.name, "z");
    assert_int_equal(v.flag, 1);
}

static void test_bad_options(void **state)
{
    values v = defaults();
    char *unknown[] = {"test", "--nope", NULL};
    char *not_int[] = {"test", "--n", "7x", NULL};
    char *missing[] = {"test", "--n", NULL};
    assert_int_equal(parse(&v, 2, unknown), -1);
    assert_int_equal(parse(&v, 3, not_int), -1);
    assert_int_equal(parse(&v, 2, missing), -1);
    assert_int_equal(v.n, 3);
}

/* --help's text, read back from a temporary file stdout pointed to. */
static void help_text(char *out, size_t cap)
{
    values v = defaults();
    char *argv[] = {"test", "--help", NULL};
    char path[1024];
    const char *tmp = getenv("FKD_TEST_TMP");
    snprintf(path, sizeof path, "%s/cli-help.%d", tmp ? tmp : "/tmp", (int)getpid());
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    assert_non_null(freopen(path, "w", stdout));
    int rc = parse(&v, 2, argv);
    fflush(stdout);
    assert_int_not_equal(dup2(saved, STDOUT_FILENO), -1);
    close(saved);
    assert_int_equal(rc, 1);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = 0;
    fclose(f);
    unlink(path);
}

static const char *line_of(const char *text, const char *option)
{
    const char *at = strstr(text, option);
    assert_non_null(at);
    return at;
}

static int line_has(const char *line, const char *what)
{
    const char *end = strchr(line, '\n');
    const char *at = strstr(line, what);
    return at && (!end || at < end);
}

static void test_help_defaults(void **state)
{
    char text[4096];
    help_text(text, sizeof text);
    assert_true(line_has(line_of(text, "--n N"), "(default 3)"));
    assert_true(line_has(line_of(text, "--x N"), "(default 0.5)"));
    assert_true(line_has(line_of(text, "--name TEXT"), "(default abc)"));
    assert_false(line_has(line_of(text, "--empty TEXT"), "(default"));
    assert_false(line_has(line_of(text, "--unset TEXT"), "(default"));
    assert_false(line_has(line_of(text, "--flag "), "(default"));
    assert_non_null(strstr(text, "--help"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_help_defaults),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
