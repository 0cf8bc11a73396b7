/* test_checkpoint.c — the model file: bit-exact round trip, atomic save,
 * and every kind of damage refused with the right error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "fkd_train.h"

static fkd_params make_params(int tie)
{
    fkd_model_config cfg = {.vocab = 17, .dim = 8, .n_layers = 2, .n_heads = 2,
                            .n_kv_heads = 1, .ffn_hidden = 12, .max_seq = 16,
                            .tie_embeddings = tie, .rope_theta = 10000.0f, .norm_eps = 1e-5f};
    fkd_params p;
    assert_int_equal(fkd_params_init(&p, &cfg, NULL), 0);
    fkd_params_randomize(&p, 42);
    return p;
}

static void tmp_path(char *out, size_t n, const char *name)
{
    const char *dir = getenv("FKD_TEST_TMP");
    snprintf(out, n, "%s/%s.%d", dir ? dir : "/tmp", name, (int)getpid());
}

static void test_round_trip_is_bit_exact(void **state)
{
    for (int tie = 0; tie <= 1; tie++) {
        fkd_params p = make_params(tie), q;
        char path[512];
        tmp_path(path, sizeof path, "ckpt");
        fkd_error err;
        assert_int_equal(fkd_checkpoint_save(path, &p, &err), 0);
        assert_int_equal(fkd_checkpoint_load(&q, path, &err), 0);
        assert_memory_equal(&p.cfg, &q.cfg, sizeof p.cfg);
        assert_int_equal(p.n_params, q.n_params);
        assert_memory_equal(p.memory, q.memory, p.n_params * sizeof(float));
        /* the file on disk equals the in-memory encoding */
        uint8_t *enc, *file;
        size_t enc_bytes, file_bytes;
        assert_int_equal(fkd_checkpoint_encode(&enc, &enc_bytes, &p, &err), 0);
        assert_int_equal(fkd_file_read_all(&file, &file_bytes, path, 1 << 24, &err), 0);
        assert_int_equal(enc_bytes, file_bytes);
        assert_memory_equal(enc, file, enc_bytes);
        char tmp[600];
        snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
        assert_int_not_equal(access(tmp, F_OK), 0); /* no temporary left behind */
        free(enc);
        free(file);
        unlink(path);
        fkd_params_free(&p);
        fkd_params_free(&q);
    }
}

static int decode_error(const uint8_t *data, size_t bytes)
{
    fkd_params q;
    fkd_error err = {0};
    int rc = fkd_checkpoint_decode(&q, data, bytes, &err);
    if (rc == 0) {
        fkd_params_free(&q);
        return FKD_OK;
    }
    assert_true(strlen(err.msg) > 0);
    return err.code;
}

static void test_damaged_files_are_refused(void **state)
{
    fkd_params p = make_params(0);
    uint8_t *enc;
    size_t n;
    assert_int_equal(fkd_checkpoint_encode(&enc, &n, &p, NULL), 0);
    uint8_t *copy = malloc(n + 8);

    /* every truncation */
    for (size_t cut = 0; cut < n; cut += (cut < 2000 ? 1 : 97)) {
        int code = decode_error(enc, cut);
        assert_true(code == FKD_E_TRUNCATED || code == FKD_E_FORMAT);
    }
    /* a flipped bit in the weights */
    memcpy(copy, enc, n);
    copy[n / 2] ^= 0x10;
    assert_int_equal(decode_error(copy, n), FKD_E_CHECKSUM);
    /* bad magic */
    memcpy(copy, enc, n);
    copy[0] = 'X';
    assert_int_equal(decode_error(copy, n), FKD_E_FORMAT);
    /* a newer version */
    memcpy(copy, enc, n);
    copy[8] = FKD_CHECKPOINT_VERSION + 1;
    assert_int_equal(decode_error(copy, n), FKD_E_VERSION);
    /* an impossible config (heads do not divide dim) */
    memcpy(copy, enc, n);
    copy[24] = 3;
    assert_int_equal(decode_error(copy, n), FKD_E_FORMAT);
    /* a huge layer count: refused before any allocation */
    memcpy(copy, enc, n);
    copy[20] = 0xff;
    copy[21] = 0xff;
    copy[22] = 0xff;
    assert_int_equal(decode_error(copy, n), FKD_E_FORMAT);
    /* trailing garbage */
    memcpy(copy, enc, n);
    assert_int_equal(decode_error(copy, n + 8), FKD_E_FORMAT);
    /* the original still loads */
    assert_int_equal(decode_error(enc, n), FKD_OK);

    fkd_params q;
    fkd_error err;
    assert_int_equal(fkd_checkpoint_load(&q, "/nonexistent/model.ckpt", &err), -1);
    assert_int_equal(err.code, FKD_E_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/model.ckpt"));
    free(copy);
    free(enc);
    fkd_params_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_is_bit_exact),
        cmocka_unit_test(test_damaged_files_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
