/* test_tokenizer_bpe.c — the byte-level BPE against the reference ids of
 * Hugging Face `tokenizers` (tests/reference/make_expected.py) on the real
 * SmolLM2 vocabulary, special tokens only when asked, exact round trips of
 * any bytes, and the errors of a tokenizer that is built or used wrongly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "fkd_compress.h"
#include "gguf_test_util.h"

static fkd_gguf model;
static fkd_tokenizer tok;
static int have_model;

static int setup(void **state)
{
    const char *path = smollm2_path();
    if (!path) return 0;
    fkd_error err;
    if (fkd_gguf_open(&model, path, &err) != 0 || fkd_gguf_tokenizer(&tok, &model, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    have_model = 1;
    return 0;
}

static int teardown(void **state)
{
    if (have_model) {
        fkd_tokenizer_free(&tok);
        fkd_gguf_close(&model);
    }
    return 0;
}

/* Encodes text (special or not) and compares with the expected ids, naming
 * the first difference. */
static void expect_ids(const char *text, size_t bytes, const int32_t *want, size_t n_want,
                       int special)
{
    int32_t *ids = malloc((bytes + 1) * sizeof *ids);
    size_t n;
    fkd_error err;
    int rc = special ? fkd_tokenizer_encode_special(ids, bytes, &n, &tok, (const uint8_t *)text,
                                                    bytes, &err)
                     : fkd_tokenizer_encode(ids, bytes, &n, &tok, (const uint8_t *)text, bytes,
                                            &err);
    assert_int_equal(rc, 0);
    size_t i = 0;
    while (i < n && i < n_want && ids[i] == want[i]) i++;
    if (i < n || i < n_want)
        fail_msg("ids differ at %zu of %zu (want %zu): got %d, want %d", i, n, n_want,
                 i < n ? ids[i] : -1, i < n_want ? want[i] : -1);
    free(ids);
}

static void expect_reference(const char *text_file, const char *ids_file, size_t min_ids)
{
    size_t bytes, id_bytes;
    char *text = reference_file(text_file, &bytes);
    char *ids_text = reference_file(ids_file, &id_bytes);
    int32_t *want = malloc(bytes * sizeof *want);
    size_t n_want = parse_ids(want, bytes, ids_text);
    assert_true(n_want >= min_ids);
    expect_ids(text, bytes, want, n_want, 0);
    free(want);
    free(ids_text);
    free(text);
}

/* Prose, code, numbers, white space runs, eight scripts, emoji. */
static void test_reference_ids(void **state)
{
    if (!have_model) skip();
    expect_reference("tokenizer_text.txt", "tokenizer_ids.txt", 700);
}

/* Random runs of every kind of white space, Unicode numbers, combining marks,
 * ZWJ sequences and supplementary-plane characters. */
static void test_reference_random_ids(void **state)
{
    if (!have_model) skip();
    expect_reference("tokenizer_random.txt", "tokenizer_random_ids.txt", 6000);
}

static void test_special_tokens_when_asked(void **state)
{
    if (!have_model) skip();
    size_t bytes;
    char *file = reference_file("tokenizer_special.txt", &bytes);
    char *sep = strstr(file, "--\n");
    assert_non_null(sep);
    size_t text_bytes = (size_t)(sep - file);
    int32_t want[256];
    size_t n_want = parse_ids(want, 256, sep + 3);
    assert_int_equal(want[0], 1);  /* <|im_start|> */
    expect_ids(file, text_bytes, want, n_want, 1);

    /* Not asked: the same text has no special ids at all. */
    int32_t ids[512];
    size_t n;
    fkd_error err;
    assert_int_equal(fkd_tokenizer_encode(ids, 512, &n, &tok, (const uint8_t *)file, text_bytes,
                                          &err), 0);
    for (size_t i = 0; i < n; i++) assert_true(ids[i] > 16);
    free(file);
}

/* Bytes that the tokenizer leaves out: those with no token of their own. */
static void find_dropped(uint8_t dropped[256], const fkd_tokenizer *t)
{
    for (int b = 0; b < 256; b++) {
        uint8_t c = (uint8_t)b;
        int32_t id;
        size_t n;
        fkd_error err;
        assert_int_equal(fkd_tokenizer_encode(&id, 1, &n, t, &c, 1, &err), 0);
        dropped[b] = n == 0;
    }
}

/* decode(encode(text)) is text without the dropped bytes. */
static void round_trip(const fkd_tokenizer *t, const uint8_t *text, size_t bytes, int special)
{
    uint8_t dropped[256];
    find_dropped(dropped, t);
    int32_t *ids = malloc((bytes + 1) * sizeof *ids);
    uint8_t *back = malloc(bytes + 1), *want = malloc(bytes + 1);
    size_t n, m, k = 0;
    fkd_error err;
    int rc = special ? fkd_tokenizer_encode_special(ids, bytes, &n, t, text, bytes, &err)
                     : fkd_tokenizer_encode(ids, bytes, &n, t, text, bytes, &err);
    assert_int_equal(rc, 0);
    assert_true(n <= bytes);
    assert_int_equal(fkd_tokenizer_decode(back, bytes, &m, t, ids, n, &err), 0);
    for (size_t i = 0; i < bytes; i++)
        if (!dropped[text[i]]) want[k++] = text[i];
    assert_int_equal(m, k);
    assert_memory_equal(back, want, k);
    free(ids);
    free(back);
    free(want);
}

/* Mostly bytes from a small alphabet of UTF-8 lead and continuation bytes,
 * spaces, digits and letters, so that invalid sequences, long white-space
 * runs and long pieces all occur; every other trial uniform bytes. */
static void random_text(uint8_t *buf, size_t n, fkd_rng *rng, int uniform)
{
    static const uint8_t alphabet[] = {' ', ' ', '\n', '\t', 'a', 'b', 'Z', '7', '\'', 's',
                                       0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xF0, 0x9F, 0x98,
                                       0x80, 0xFF, 0x00, '<', '|'};
    for (size_t i = 0; i < n; i++)
        buf[i] = uniform ? (uint8_t)fkd_rng_below(rng, 256)
                         : alphabet[fkd_rng_below(rng, sizeof alphabet)];
}

/* trials round trips of random texts of 1..max_len bytes, every other one
 * uniform bytes, every third with special tokens allowed. */
static void random_round_trips(const fkd_tokenizer *t, uint64_t seed, int trials, size_t max_len)
{
    fkd_rng rng;
    fkd_rng_seed(&rng, seed);
    uint8_t *buf = malloc(max_len);
    assert_non_null(buf);
    for (int trial = 0; trial < trials; trial++) {
        size_t n = 1 + fkd_rng_below(&rng, (uint32_t)max_len);
        random_text(buf, n, &rng, trial % 2);
        round_trip(t, buf, n, trial % 3 == 0);
    }
    free(buf);
}

static void test_round_trip_any_bytes(void **state)
{
    if (!have_model) skip();
    uint8_t dropped[256];
    find_dropped(dropped, &tok);
    assert_true(dropped[0x04] && dropped[0xFF] && !dropped[0x00] && !dropped['a']);
    random_round_trips(&tok, 10, 200, 4096);
    size_t bytes;
    char *text = reference_file("tokenizer_text.txt", &bytes);
    round_trip(&tok, (const uint8_t *)text, bytes, 0);
    round_trip(&tok, (const uint8_t *)text, bytes, 1);
    free(text);
    uint8_t spaces[3000];
    memset(spaces, ' ', sizeof spaces);
    round_trip(&tok, spaces, sizeof spaces, 0);
}

static void test_errors(void **state)
{
    if (!have_model) skip();
    int32_t ids[4];
    uint8_t out[4];
    size_t n;
    fkd_error err;
    const uint8_t *text = (const uint8_t *)"hello world, this is long";
    assert_int_equal(fkd_tokenizer_encode(ids, 2, &n, &tok, text, 25, &err), -1);
    assert_int_equal(err.code, FKD_E_LIMIT);
    int32_t bad[1] = {49152};
    assert_int_equal(fkd_tokenizer_decode(out, 4, &n, &tok, bad, 1, &err), -1);
    assert_int_equal(err.code, FKD_E_INVALID_ARG);
    int32_t big[1] = {19556}; /* "Hello": 5 bytes, room for 4 */
    assert_int_equal(fkd_tokenizer_decode(out, 4, &n, &tok, big, 1, &err), -1);
    assert_int_equal(err.code, FKD_E_LIMIT);
}

/* A vocabulary built by hand: the pre-tokenizer name is checked, merges
 * apply by rank, and with every byte in the vocabulary any bytes round-trip. */
static void test_init_by_hand(void **state)
{
    char spell[258][8];
    const char *tokens[258];
    uint32_t lens[258];
    for (int b = 0; b < 256; b++) {
        lens[b] = (uint32_t)fkd_bpe_byte_spelling(spell[b], (uint8_t)b);
        tokens[b] = spell[b];
    }
    strcpy(spell[256], "ab");
    strcpy(spell[257], "abab");
    tokens[256] = spell[256];
    tokens[257] = spell[257];
    lens[256] = 2;
    lens[257] = 4;
    const char *merges[] = {"a b", "ab ab"};
    uint32_t mlens[] = {3, 5};
    fkd_tokenizer t;
    fkd_error err;
    assert_int_equal(fkd_tokenizer_init_bpe(&t, tokens, lens, NULL, 258, merges, mlens, 2, -1, -1,
                                            "llama3", &err), -1);
    assert_int_equal(err.code, FKD_E_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "llama3"));
    assert_int_equal(fkd_tokenizer_init_bpe(&t, tokens, lens, NULL, 258, merges, mlens, 2, -1, -1,
                                            "gpt2", &err), 0);
    int32_t ids[16];
    size_t n;
    assert_int_equal(fkd_tokenizer_encode(ids, 16, &n, &t, (const uint8_t *)"ababa", 5, &err), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 257);
    assert_int_equal(ids[1], 'a');
    /* With all 256 byte tokens, any bytes come back exactly. */
    random_round_trips(&t, 11, 100, 2048);
    fkd_tokenizer_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_ids),
        cmocka_unit_test(test_reference_random_ids),
        cmocka_unit_test(test_special_tokens_when_asked),
        cmocka_unit_test(test_round_trip_any_bytes),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_init_by_hand),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
