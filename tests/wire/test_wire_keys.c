/* test_wire_keys.c — key files: written 0600, read back identical; files
 * that are edited, corrupted, or readable by others are refused; public-key
 * lines and allow-lists parse and reject garbage. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fkd_wire.h"

static char dir[512];

static int setup(void **state)
{
    const char *base = getenv("FKD_TEST_TMP");
    snprintf(dir, sizeof dir, "%s/wire-keys-%ld", base ? base : "/tmp", (long)getpid());
    return fkd_mkdir_p(dir, NULL);
}

static char *path_of(const char *name)
{
    static char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

static void test_save_load_round_trip(void **state)
{
    fkd_wire_identity id, back;
    fkd_error err;
    assert_int_equal(fkd_wire_identity_generate(&id, &err), 0);
    char prefix[600];
    snprintf(prefix, sizeof prefix, "%s", path_of("node1"));
    assert_int_equal(fkd_wire_identity_save(prefix, &id, "node one", 0, &err), 0);

    struct stat st;
    assert_int_equal(stat(path_of("node1.key"), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(fkd_wire_identity_load(&back, path_of("node1.key"), &err), 0);
    assert_memory_equal(&id, &back, sizeof id);

    fkd_wire_pubkey pub;
    assert_int_equal(fkd_wire_pubkey_load(&pub, path_of("node1.pub"), &err), 0);
    assert_memory_equal(pub.sign_pk, id.sign_pk, 32);
    assert_memory_equal(pub.curve_pk, id.curve_pk, 32);
    assert_string_equal(pub.label, "node one");

    /* no silent overwrite; --force replaces */
    assert_int_equal(fkd_wire_identity_save(prefix, &id, NULL, 0, &err), -1);
    assert_int_equal(fkd_wire_identity_save(prefix, &id, NULL, 1, &err), 0);

    /* a key file readable by others is refused */
    chmod(path_of("node1.key"), 0644);
    assert_int_equal(fkd_wire_identity_load(&back, path_of("node1.key"), &err), -1);
    assert_int_equal(err.code, FKD_E_AUTH);
    fkd_wire_identity_wipe(&id);
    fkd_wire_identity_wipe(&back);
}

static void test_edited_key_file_refused(void **state)
{
    fkd_wire_identity id, back;
    fkd_wire_identity_generate(&id, NULL);
    assert_int_equal(fkd_wire_identity_save(path_of("edit"), &id, NULL, 1, NULL), 0);
    uint8_t *text;
    size_t len;
    assert_int_equal(fkd_file_read_all(&text, &len, path_of("edit.key"), 4096, NULL), 0);
    fkd_error err;
    assert_int_equal(fkd_wire_identity_parse(&back, (char *)text, len, &err), 0);
    /* change one character of each key line in turn: never accepted */
    int refused = 0, tried = 0;
    for (size_t i = strlen("fedkd-key-v1\n"); i < len; i++) {
        if (text[i] == '\n' || text[i] == ' ') continue;
        uint8_t saved = text[i];
        text[i] = saved == 'a' ? 'b' : 'a';
        tried++;
        refused += fkd_wire_identity_parse(&back, (char *)text, len, &err) == -1;
        text[i] = saved;
    }
    assert_int_equal(refused, tried);
    /* every truncation refused */
    for (size_t cut = 0; cut + 1 < len; cut++)
        assert_int_equal(fkd_wire_identity_parse(&back, (char *)text, cut, &err), -1);
    free(text);
    const char *junk = "fedkd-key-v1\nsign-public !!!\n";
    assert_int_equal(fkd_wire_identity_parse(&back, junk, strlen(junk), &err), -1);
    assert_int_equal(err.code, FKD_E_FORMAT);
}

/* X25519 ignores the clamped bits of a secret: a file whose secret differs
 * from the stored one only there would still match its public key, so the
 * reader insists on the clamped spelling. */
static void test_unclamped_secret_refused(void **state)
{
    (void)state;
    static const struct { int byte; uint8_t bit; } clamped[] = {
        {0, 1}, {0, 2}, {0, 4}, {31, 64}, {31, 128},
    };
    for (size_t i = 0; i < sizeof clamped / sizeof clamped[0]; i++) {
        fkd_wire_identity id, back;
        fkd_wire_identity_generate(&id, NULL);
        id.curve_sk[clamped[i].byte] ^= clamped[i].bit;
        assert_int_equal(fkd_wire_identity_save(path_of("clamp"), &id, NULL, 1, NULL), 0);
        fkd_error err;
        assert_int_equal(fkd_wire_identity_load(&back, path_of("clamp.key"), &err), -1);
        assert_int_equal(err.code, FKD_E_FORMAT);
    }
}

static void test_pubkey_lines_and_allowlist(void **state)
{
    fkd_wire_identity a, b;
    fkd_wire_identity_generate(&a, NULL);
    fkd_wire_identity_generate(&b, NULL);
    fkd_wire_pubkey pa, pb, back;
    fkd_wire_identity_public(&pa, &a, "alice");
    fkd_wire_identity_public(&pb, &b, "");
    char la[200], lb[200];
    assert_int_equal(fkd_wire_pubkey_format(la, sizeof la, &pa, NULL), 0);
    assert_int_equal(fkd_wire_pubkey_format(lb, sizeof lb, &pb, NULL), 0);
    assert_int_equal(fkd_wire_pubkey_parse(&back, la, strlen(la), NULL), 0);
    assert_memory_equal(&back, &pa, sizeof back);

    char list[600];
    snprintf(list, sizeof list, "# clients of round 1\n\n  \t\n%s\r\n%s\n", la, lb);
    fkd_wire_allowlist al;
    fkd_error err;
    assert_int_equal(fkd_wire_allowlist_parse(&al, list, strlen(list), &err), 0);
    assert_int_equal(al.n, 2);
    assert_non_null(fkd_wire_allowlist_find(&al, a.curve_pk));
    assert_string_equal(fkd_wire_allowlist_find(&al, a.curve_pk)->label, "alice");
    assert_null(fkd_wire_allowlist_find(&al, a.sign_pk)); /* matches transport keys only */
    fkd_wire_allowlist_free(&al);

    /* a bad line names its number */
    snprintf(list, sizeof list, "%s\nfedkd-pub-v1 short key\n", la);
    assert_int_equal(fkd_wire_allowlist_parse(&al, list, strlen(list), &err), -1);
    assert_non_null(strstr(err.msg, "line 2"));
    /* a non-canonical Z85 group ("#####" is above 2^32) is refused */
    char bad[200];
    snprintf(bad, sizeof bad, "%s", la);
    memcpy(bad + strlen("fedkd-pub-v1 "), "#####", 5);
    assert_int_equal(fkd_wire_pubkey_parse(&back, bad, strlen(bad), &err), -1);
    /* a label too long */
    char longl[400];
    snprintf(longl, sizeof longl, "%s %0100d", lb, 0);
    assert_int_equal(fkd_wire_pubkey_parse(&back, longl, strlen(longl), &err), -1);
    assert_int_equal(err.code, FKD_E_LIMIT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_save_load_round_trip),
        cmocka_unit_test(test_edited_key_file_refused),
        cmocka_unit_test(test_unclamped_secret_refused),
        cmocka_unit_test(test_pubkey_lines_and_allowlist),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
