/* test_error.c — the error convention's helpers (common/error.c): a set
 * error, and a prefix that says where, kept within the message's size. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "fkd_common.h"

static void test_set_and_prefix(void **state)
{
    fkd_error err;
    assert_int_equal(fkd_error_set(&err, FKD_E_FORMAT, "bad magic %x", 0x12), -1);
    assert_int_equal(fkd_error_prefix(&err, "%s:%d", "a.conf", 7), -1);
    assert_int_equal(err.code, FKD_E_FORMAT);
    assert_string_equal(err.msg, "a.conf:7: bad magic 12");
    assert_int_equal(fkd_error_prefix(NULL, "%s", "x"), -1);
}

static void test_prefix_truncates(void **state)
{
    fkd_error err;
    char longer[2 * sizeof err.msg];
    memset(longer, 'p', sizeof longer - 1);
    longer[sizeof longer - 1] = 0;
    fkd_error_set(&err, FKD_E_IO, "inner");
    fkd_error_prefix(&err, "%s", longer);
    assert_int_equal(strlen(err.msg), sizeof err.msg - 1);
    assert_int_equal(err.msg[0], 'p');
    fkd_error_set(&err, FKD_E_IO, "%s", longer); /* a full message keeps its start */
    fkd_error_prefix(&err, "f");
    assert_int_equal(strlen(err.msg), sizeof err.msg - 1);
    assert_memory_equal(err.msg, "f: ppp", 6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_and_prefix),
        cmocka_unit_test(test_prefix_truncates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
