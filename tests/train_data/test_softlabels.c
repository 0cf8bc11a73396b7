/* test_softlabels.c — the soft-label shard format: round trip, quantization
 * error, and refusal of damaged, truncated, forged and newer files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fkd_train.h"

/* A shard with random tokens and descending random distributions. */
static void make_shard(fkd_softlabel_shard *s, int64_t n, int k, int vocab, int quant,
                       uint64_t seed)
{
    fkd_error err;
    assert_int_equal(fkd_softlabels_alloc(s, n, k, vocab, &err), 0);
    s->quant = quant;
    s->temperature = 2.0f;
    s->shard_index = 1;
    s->shard_count = 3;
    s->first_position = 12345;
    fkd_rng rng;
    fkd_rng_seed(&rng, seed);
    for (int64_t i = 0; i < n; i++) {
        s->tokens[i] = (int32_t)fkd_rng_below(&rng, (uint32_t)vocab);
        float left = 1.0f;
        for (int j = 0; j < k; j++) {
            s->ids[i * k + j] = (int32_t)((i * 7 + j * 13) % vocab); /* distinct in a row */
            float p = left * (0.2f + 0.6f * fkd_rng_uniform(&rng));
            s->probs[i * k + j] = p;
            left -= p;
        }
        if (i % 17 == 0) /* positions without a soft label */
            for (int j = 0; j < k; j++) s->probs[i * k + j] = 0;
    }
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Recomputes the CRC so a forged field is seen by the field checks. */
static void reseal(uint8_t *data, size_t bytes)
{
    put_u32(data + bytes - 4, fkd_crc32(0, data, bytes - 4));
}

static void check_round_trip(int vocab, int quant, float max_err)
{
    fkd_softlabel_shard s, back;
    make_shard(&s, 200, 8, vocab, quant, 3);
    uint8_t *data;
    size_t bytes;
    fkd_error err;
    assert_int_equal(fkd_softlabels_encode(&data, &bytes, &s, &err), 0);
    assert_int_equal(bytes, fkd_softlabels_encoded_bytes(200, 8, vocab, quant));
    assert_int_equal(fkd_softlabels_decode(&back, data, bytes, &err), 0);
    assert_int_equal(back.n, 200);
    assert_int_equal(back.k, 8);
    assert_int_equal(back.vocab, vocab);
    assert_int_equal(back.quant, quant);
    assert_int_equal(back.shard_index, 1);
    assert_int_equal(back.shard_count, 3);
    assert_int_equal(back.first_position, 12345);
    assert_float_equal(back.temperature, 2.0f, 0);
    assert_memory_equal(back.tokens, s.tokens, 200 * sizeof(int32_t));
    assert_memory_equal(back.ids, s.ids, 200 * 8 * sizeof(int32_t));
    for (int64_t i = 0; i < 200; i++) {
        float sum = 0;
        float q[8];
        memcpy(q, s.probs + i * 8, sizeof q);
        fkd_softlabels_quantize(q, 8, quant);
        for (int j = 0; j < 8; j++) {
            float p = back.probs[i * 8 + j];
            assert_float_equal(p, q[j], 0);            /* what quantize() promises */
            if (quant == FKD_SOFT_Q8_SQRT) /* within one code step */
                assert_float_equal(sqrtf(p), sqrtf(s.probs[i * 8 + j]), max_err);
            else
                assert_float_equal(p, s.probs[i * 8 + j], max_err);
            if (s.probs[i * 8 + j] == 0) assert_float_equal(p, 0, 0);
            sum += p;
        }
        assert_true(sum <= 1.0f + 1e-6f);            /* the rest mass is never negative */
    }
    /* encode(decode(x)) == x: the dequantized values quantize to the same codes */
    uint8_t *again;
    size_t again_bytes;
    assert_int_equal(fkd_softlabels_encode(&again, &again_bytes, &back, &err), 0);
    assert_int_equal(again_bytes, bytes);
    assert_memory_equal(again, data, bytes);
    free(again);
    free(data);
    fkd_softlabels_free(&s);
    fkd_softlabels_free(&back);
}

static void test_round_trip(void **state)
{
    check_round_trip(256, FKD_SOFT_Q8_SQRT, 1.0001f / 255);  /* in sqrt(p) */
    check_round_trip(256, FKD_SOFT_Q16, 1.0001f / 65535);
    check_round_trip(1000, FKD_SOFT_Q8_SQRT, 1.0001f / 255);   /* 2-byte ids */
    check_round_trip(100000, FKD_SOFT_Q16, 1.0001f / 65535);   /* 4-byte ids */
}

static void test_sizes(void **state)
{
    /* bytes vocabulary, k=8, sqrt-u8: 1 token + 8 ids + 8 probs per position */
    assert_int_equal(fkd_softlabels_encoded_bytes(1000, 8, 256, FKD_SOFT_Q8_SQRT),
                     64 + 1000 * 17 + 4);
    assert_int_equal(fkd_softlabels_encoded_bytes(1000, 8, 50000, FKD_SOFT_Q16),
                     64 + 1000 * (2 + 8 * 4) + 4);
    /* a mass just above 1 after rounding is pulled back to <= 1 */
    float p[3] = {0.5f, 0.3f, 0.2f};
    fkd_softlabels_quantize(p, 3, FKD_SOFT_Q8_SQRT);
    assert_true(p[0] + p[1] + p[2] <= 1.0f);
}

static void test_damaged_refused(void **state)
{
    fkd_softlabel_shard s, back;
    make_shard(&s, 40, 4, 256, FKD_SOFT_Q8_SQRT, 5);
    uint8_t *data;
    size_t bytes;
    fkd_error err;
    assert_int_equal(fkd_softlabels_encode(&data, &bytes, &s, &err), 0);
    /* truncated at every length */
    for (size_t cut = 0; cut < bytes; cut++) {
        assert_int_equal(fkd_softlabels_decode(&back, data, cut, &err), -1);
        assert_null(back.tokens);
    }
    /* any one flipped bit anywhere */
    for (size_t i = 0; i < bytes; i++) {
        data[i] ^= 0x10;
        assert_int_equal(fkd_softlabels_decode(&back, data, bytes, &err), -1);
        data[i] ^= 0x10;
    }
    assert_int_equal(fkd_softlabels_decode(&back, data, bytes, &err), 0);
    fkd_softlabels_free(&back);
    /* trailing bytes */
    uint8_t *longer = malloc(bytes + 1);
    memcpy(longer, data, bytes);
    longer[bytes] = 0;
    assert_int_equal(fkd_softlabels_decode(&back, longer, bytes + 1, &err), -1);
    free(longer);

    uint8_t *forged = malloc(bytes);
    /* a newer version says so */
    memcpy(forged, data, bytes);
    put_u32(forged + 8, FKD_SOFT_VERSION + 1);
    reseal(forged, bytes);
    assert_int_equal(fkd_softlabels_decode(&back, forged, bytes, &err), -1);
    assert_int_equal(err.code, FKD_E_VERSION);
    /* a token outside the vocabulary (with a valid CRC) */
    memcpy(forged, data, bytes);
    put_u32(forged + 16, 100); /* vocab 100 while tokens go up to 255 */
    reseal(forged, bytes);
    assert_int_equal(fkd_softlabels_decode(&back, forged, bytes, &err), -1);
    assert_int_equal(err.code, FKD_E_FORMAT);
    /* a position whose mass is above 1 */
    memcpy(forged, data, bytes);
    size_t probs_at = 64 + 40 + 40 * 4;
    for (int j = 0; j < 4; j++) forged[probs_at + 4 + j] = 255; /* position 1 */
    reseal(forged, bytes);
    assert_int_equal(fkd_softlabels_decode(&back, forged, bytes, &err), -1);
    assert_int_equal(err.code, FKD_E_FORMAT);
    /* a positions count that would overflow or exceed the limit */
    memcpy(forged, data, bytes);
    for (int i = 48; i < 56; i++) forged[i] = 0xff;
    reseal(forged, bytes);
    assert_int_equal(fkd_softlabels_decode(&back, forged, bytes, &err), -1);
    assert_int_equal(err.code, FKD_E_LIMIT);
    free(forged);
    free(data);
    fkd_softlabels_free(&s);
}

static void test_file_and_stream_view(void **state)
{
    const char *tmp = getenv("FKD_TEST_TMP");
    char path[1024];
    snprintf(path, sizeof path, "%s/shard.%d.fkds", tmp ? tmp : "/tmp", (int)getpid());
    fkd_softlabel_shard s, back;
    make_shard(&s, 64, 8, 256, FKD_SOFT_Q8_SQRT, 9);
    fkd_error err;
    assert_int_equal(fkd_softlabels_save(path, &s, &err), 0);
    assert_int_equal(fkd_softlabels_load(&back, path, &err), 0);
    assert_memory_equal(back.tokens, s.tokens, 64 * sizeof(int32_t));
    /* a batch from the shard's view carries its soft labels, aligned */
    fkd_token_stream view;
    fkd_token_stream_from_shard(&view, &back);
    fkd_batch b;
    assert_int_equal(fkd_batch_init(&b, 2, 16, 8, &err), 0);
    assert_int_equal(fkd_batch_random(&b, &view, 1, 0, &err), 0);
    assert_true(b.has_soft);
    for (int r = 0; r < 2; r++) {
        /* find the row's start in the stream (tokens are random, 16 in a row pin it) */
        int64_t start = -1;
        for (int64_t i = 0; i + 16 < back.n && start < 0; i++)
            if (memcmp(back.tokens + i, b.inputs + r * 16, 16 * sizeof(int32_t)) == 0) start = i;
        assert_true(start >= 0);
        for (int t = 0; t < 16; t++) {
            assert_int_equal(b.targets[r * 16 + t], back.tokens[start + t + 1]);
            for (int j = 0; j < 8; j++) {
                assert_int_equal(b.soft_ids[(r * 16 + t) * 8 + j], back.ids[(start + t) * 8 + j]);
                assert_float_equal(b.soft_probs[(r * 16 + t) * 8 + j],
                                   back.probs[(start + t) * 8 + j], 0);
            }
        }
    }
    fkd_batch_free(&b);
    fkd_softlabels_free(&back);
    unlink(path);
    assert_int_equal(fkd_softlabels_load(&back, path, &err), -1);
    assert_int_equal(err.code, FKD_E_IO);
    fkd_softlabels_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_damaged_refused),
        cmocka_unit_test(test_file_and_stream_view),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
