/* test_coord_state.c — the coordinator checkpoint: a round trip of every
 * field, and damaged files (truncated anywhere, a flipped byte, another
 * magic, trailing bytes) refused with an error, never a crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fkd_coordinator.h"

static void make_state(fkd_coord_state *s)
{
    memset(s, 0, sizeof *s);
    fkd_model_config cfg = {.vocab = 64, .dim = 32, .n_layers = 1, .n_heads = 2, .n_kv_heads = 2,
                            .ffn_hidden = 64, .max_seq = 16, .tie_embeddings = 1,
                            .rope_theta = 10000, .norm_eps = 1e-5f};
    assert_int_equal(fkd_params_init(&s->master, &cfg, NULL), 0);
    fkd_params_randomize(&s->master, 3);
    s->round = 5;
    fkd_rng_seed(&s->rng, 42);
    s->n_moments = s->master.n_params;
    s->m = malloc(s->n_moments * sizeof *s->m);
    s->v = malloc(s->n_moments * sizeof *s->v);
    for (size_t i = 0; i < s->n_moments; i++) {
        s->m[i] = (float)i * 1e-3f;
        s->v[i] = (float)i * 1e-6f;
    }
    s->agg_step = 5;
    s->n_clients = 2;
    s->clients = calloc(2, sizeof *s->clients);
    s->clients[0].sign_pk[0] = 1;
    s->clients[1].sign_pk[0] = 2;
    s->clients[1].rounds = 4;
    s->clients[1].bytes_up = 12345;
    s->n_history = 2;
    s->history = calloc(2, sizeof *s->history);
    s->history[0].round = 1;
    s->history[0].perplexity = 50.5;
    s->history[1].round = 2;
    s->history[1].updates = 3;
    s->history[1].bytes_down = 999;
}

static void path(char *out, const char *name)
{
    const char *t = getenv("FKD_TEST_TMP");
    snprintf(out, 512, "%s/%s", t ? t : "/tmp", name);
}

static void test_round_trip(void **st)
{
    (void)st;
    fkd_coord_state a, b;
    make_state(&a);
    char p[512];
    path(p, "coord-state-rt.bin");
    assert_int_equal(fkd_coord_state_save(p, &a, NULL), 0);
    fkd_error err;
    assert_int_equal(fkd_coord_state_load(&b, p, &err), 0);
    assert_true(b.round == 5 && b.agg_step == 5);
    assert_memory_equal(&a.rng, &b.rng, sizeof a.rng);
    assert_int_equal(b.master.n_params, a.master.n_params);
    assert_memory_equal(a.master.memory, b.master.memory, a.master.n_params * sizeof(float));
    assert_memory_equal(a.m, b.m, a.n_moments * sizeof(float));
    assert_memory_equal(a.v, b.v, a.n_moments * sizeof(float));
    assert_int_equal(b.n_clients, 2);
    assert_memory_equal(a.clients, b.clients, 2 * sizeof *a.clients);
    assert_int_equal(b.n_history, 2);
    assert_true(b.history[0].perplexity == 50.5 && b.history[1].updates == 3 &&
                b.history[1].bytes_down == 999);
    fkd_coord_state_free(&a);
    fkd_coord_state_free(&b);
}

static void test_damaged_files_refused(void **st)
{
    (void)st;
    fkd_coord_state a, b;
    make_state(&a);
    char p[512];
    path(p, "coord-state-dmg.bin");
    assert_int_equal(fkd_coord_state_save(p, &a, NULL), 0);
    uint8_t *data;
    size_t len;
    assert_int_equal(fkd_file_read_all(&data, &len, p, 1 << 26, NULL), 0);
    fkd_error err;
    /* Every truncation, at a stride, is refused. */
    for (size_t cut = 0; cut < len; cut += 1 + len / 97)
        assert_int_equal(fkd_coord_state_decode(&b, data, cut, &err), -1);
    /* A flipped byte anywhere is caught by the checksum. */
    for (size_t at = 0; at < len; at += 1 + len / 61) {
        data[at] ^= 0x5a;
        assert_int_equal(fkd_coord_state_decode(&b, data, len, &err), -1);
        data[at] ^= 0x5a;
    }
    assert_int_equal(fkd_coord_state_decode(&b, data, len, &err), 0);
    fkd_coord_state_free(&b);
    /* A count that claims more than the file holds, with a valid CRC. */
    uint8_t *copy = malloc(len);
    memcpy(copy, data, len);
    copy[80] = 0xff; /* n_clients low byte */
    copy[83] = 0x7f;
    uint32_t crc = fkd_crc32(0, copy, len - 4);
    for (int i = 0; i < 4; i++) copy[len - 4 + i] = (uint8_t)(crc >> (8 * i));
    assert_int_equal(fkd_coord_state_decode(&b, copy, len, &err), -1);
    free(copy);
    free(data);
    fkd_coord_state_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_damaged_files_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
