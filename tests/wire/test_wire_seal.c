/* test_wire_seal.c — sealed updates: open what was sealed; refuse any
 * altered byte, another coordinator key, another round, version or client,
 * a forged signer, and a replay; the replay cache forgets old rounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "fkd_wire.h"

typedef struct {
    fkd_wire_identity client, coord, other;
    fkd_wire_seal_ctx ctx;
    uint8_t plain[777];
    uint8_t *sealed, *out;
    size_t sealed_len, out_cap;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    fkd_wire_identity_generate(&f->client, NULL);
    fkd_wire_identity_generate(&f->coord, NULL);
    fkd_wire_identity_generate(&f->other, NULL);
    for (size_t i = 0; i < sizeof f->plain; i++) f->plain[i] = (uint8_t)(i ^ 0x5c);
    f->ctx.round = 12;
    f->ctx.model_version = 3;
    memcpy(f->ctx.client_id, f->client.sign_pk, FKD_WIRE_ID_BYTES);
    f->sealed = malloc(fkd_wire_sealed_bytes(sizeof f->plain));
    fkd_error err;
    if (fkd_wire_seal(f->sealed, fkd_wire_sealed_bytes(sizeof f->plain), &f->sealed_len, f->plain,
                      sizeof f->plain, &f->ctx, &f->client, f->coord.curve_pk, &err))
        return -1;
    f->out_cap = fkd_wire_open_bytes(f->sealed_len);
    f->out = malloc(f->out_cap);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    free(f->sealed);
    free(f->out);
    free(f);
    return 0;
}

static int open_with(fixture *f, const fkd_wire_seal_ctx *ctx, const fkd_wire_identity *coord,
                     fkd_wire_replay *replay, fkd_error *err)
{
    size_t n = 0;
    return fkd_wire_open(f->out, f->out_cap, &n, f->sealed, f->sealed_len, ctx, coord, replay,
                         err);
}

static void test_round_trip(void **state)
{
    fixture *f = *state;
    assert_int_equal(f->sealed_len, sizeof f->plain + FKD_WIRE_SEAL_OVERHEAD);
    size_t n = 0;
    fkd_error err;
    assert_int_equal(fkd_wire_open(f->out, f->out_cap, &n, f->sealed, f->sealed_len, &f->ctx,
                                   &f->coord, NULL, &err), 0);
    assert_int_equal(n, sizeof f->plain);
    assert_memory_equal(f->out, f->plain, n);
    /* the ciphertext does not contain the plaintext */
    assert_memory_not_equal(f->sealed + FKD_WIRE_SEAL_HEADER_BYTES, f->plain, 64);
}

static void test_every_tampered_byte_refused(void **state)
{
    fixture *f = *state;
    for (size_t i = 0; i < f->sealed_len; i++) {
        f->sealed[i] ^= 0x01;
        fkd_error err;
        assert_int_equal(open_with(f, &f->ctx, &f->coord, NULL, &err), -1);
        assert_true(err.code == FKD_E_AUTH || err.code == FKD_E_FORMAT);
        f->sealed[i] ^= 0x01;
    }
    /* truncated */
    size_t saved = f->sealed_len;
    f->sealed_len = saved - 1;
    assert_int_equal(open_with(f, &f->ctx, &f->coord, NULL, NULL), -1);
    f->sealed_len = 10;
    assert_int_equal(open_with(f, &f->ctx, &f->coord, NULL, NULL), -1);
    f->sealed_len = saved;
    assert_int_equal(open_with(f, &f->ctx, &f->coord, NULL, NULL), 0);
}

static void test_wrong_key_round_version_client(void **state)
{
    fixture *f = *state;
    fkd_error err;
    assert_int_equal(open_with(f, &f->ctx, &f->other, NULL, &err), -1);
    assert_int_equal(err.code, FKD_E_AUTH);
    fkd_wire_seal_ctx c = f->ctx;
    c.round++;
    assert_int_equal(open_with(f, &c, &f->coord, NULL, &err), -1);
    assert_int_equal(err.code, FKD_E_AUTH);
    c = f->ctx;
    c.model_version--;
    assert_int_equal(open_with(f, &c, &f->coord, NULL, &err), -1);
    c = f->ctx;
    memcpy(c.client_id, f->other.sign_pk, FKD_WIRE_ID_BYTES);
    assert_int_equal(open_with(f, &c, &f->coord, NULL, &err), -1);
    assert_int_equal(err.code, FKD_E_AUTH);
}

/* Someone who knows the coordinator's public key (anyone) but not the
 * client's signing key cannot seal in the client's name. */
static void test_forged_signer_refused(void **state)
{
    fixture *f = *state;
    fkd_wire_identity forger = f->other;
    memcpy(forger.sign_pk, f->client.sign_pk, FKD_WIRE_ID_BYTES); /* claims to be client */
    uint8_t *sealed = malloc(f->sealed_len);
    size_t len;
    assert_int_equal(fkd_wire_seal(sealed, f->sealed_len, &len, f->plain, sizeof f->plain,
                                   &f->ctx, &forger, f->coord.curve_pk, NULL), 0);
    size_t n;
    fkd_error err;
    assert_int_equal(fkd_wire_open(f->out, f->out_cap, &n, sealed, len, &f->ctx, &f->coord, NULL,
                                   &err), -1);
    assert_int_equal(err.code, FKD_E_AUTH);
    assert_non_null(strstr(err.msg, "signature"));
    free(sealed);
    /* sealing with an identity other than ctx's client is a caller error */
    assert_int_equal(fkd_wire_seal(f->out, f->out_cap + 200, &len, f->plain, 10, &f->ctx,
                                   &f->other, f->coord.curve_pk, &err), -1);
}

static void test_replay_refused(void **state)
{
    fixture *f = *state;
    fkd_wire_replay *r;
    assert_int_equal(fkd_wire_replay_new(&r, 4, NULL), 0);
    fkd_error err;
    assert_int_equal(open_with(f, &f->ctx, &f->coord, r, &err), 0);
    assert_int_equal(open_with(f, &f->ctx, &f->coord, r, &err), -1);
    assert_int_equal(err.code, FKD_E_REPLAY);
    /* a forgery does not enter the cache */
    f->sealed[f->sealed_len - 1] ^= 1;
    assert_int_equal(open_with(f, &f->ctx, &f->coord, r, &err), -1);
    f->sealed[f->sealed_len - 1] ^= 1;
    assert_int_equal(fkd_wire_replay_count(r), 1);
    fkd_wire_replay_free(&r);
    assert_null(r);
}

static void test_replay_cache_rounds_and_capacity(void **state)
{
    fkd_wire_replay *r;
    assert_int_equal(fkd_wire_replay_new(&r, 3, NULL), 0);
    uint8_t client[32] = {1}, nonce[24] = {0};
    fkd_error err;
    for (uint8_t i = 0; i < 3; i++) {
        nonce[0] = i;
        assert_int_equal(fkd_wire_replay_check(r, 5 + i, client, nonce, &err), 0);
    }
    nonce[0] = 9;
    assert_int_equal(fkd_wire_replay_check(r, 7, client, nonce, &err), -1);
    assert_int_equal(err.code, FKD_E_LIMIT);
    /* same nonce in another round is another message */
    nonce[0] = 0;
    fkd_wire_replay_forget_before(r, 6);
    assert_int_equal(fkd_wire_replay_count(r), 2);
    assert_int_equal(fkd_wire_replay_check(r, 6, client, nonce, &err), 0);
    nonce[0] = 1;
    assert_int_equal(fkd_wire_replay_check(r, 6, client, nonce, &err), -1);
    assert_int_equal(err.code, FKD_E_REPLAY);
    fkd_wire_replay_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_tampered_byte_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_key_round_version_client, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forged_signer_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_refused, setup, teardown),
        cmocka_unit_test(test_replay_cache_rounds_and_capacity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
