/* test_gguf_reader.c — the GGUF reader on the real SmolLM2 file and on
 * damaged copies (every prefix, bad magic, forged counts and lengths, offsets
 * past the end, overflowing dims, unknown types, duplicates), and the writer
 * in a round trip whose quantized blocks must come back bit for bit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <math.h>

#include "fkd_compress.h"
#include "gguf_test_util.h"

static uint8_t *read_all(size_t *bytes, const char *path)
{
    uint8_t *data;
    fkd_error err;
    assert_int_equal(fkd_file_read_all(&data, bytes, path, (size_t)1 << 30, &err), 0);
    return data;
}

/* A tiny model written by our writer, as bytes. */
static uint8_t *tiny_file(size_t *bytes, int type)
{
    fkd_model_config cfg = gguf_tiny_config(0);
    fkd_params params;
    fkd_error err;
    assert_int_equal(fkd_params_init(&params, &cfg, &err), 0);
    fkd_params_randomize(&params, 7);
    char path[1024];
    gguf_tmp_path(path, sizeof path, "tiny.gguf");
    assert_int_equal(fkd_gguf_llama_save(path, &params, type, NULL, "tiny", &err), 0);
    fkd_params_free(&params);
    return read_all(bytes, path);
}

static void expect_error(const uint8_t *data, size_t bytes, int code, const char *words)
{
    fkd_gguf g;
    fkd_error err = {0};
    int rc = fkd_gguf_parse(&g, data, bytes, &err);
    if (rc == 0) fkd_gguf_close(&g);
    assert_int_equal(rc, -1);
    if (code >= 0 && err.code != code) fail_msg("code %d, want %d: %s", err.code, code, err.msg);
    if (words && !strstr(err.msg, words)) fail_msg("\"%s\" does not name \"%s\"", err.msg, words);
}

/* ---- the real file ------------------------------------------------------------ */

static void test_real_file(void **state)
{
    const char *path = smollm2_path();
    if (!path) skip();
    fkd_gguf g;
    fkd_error err;
    assert_int_equal(fkd_gguf_open(&g, path, &err), 0);
    assert_int_equal(g.version, 3);
    assert_int_equal(g.n_tensors, 272);
    assert_int_equal(g.alignment, 32);
    int counts[64] = {0};
    for (uint64_t i = 0; i < g.n_tensors; i++) counts[g.tensors[i].type]++;
    assert_int_equal(counts[FKD_QTYPE_F32], 61);
    assert_int_equal(counts[FKD_QTYPE_Q4_1], 210);
    assert_int_equal(counts[FKD_QTYPE_Q8_0], 1);

    fkd_model_config cfg;
    assert_int_equal(fkd_gguf_llama_config(&cfg, &g, 0, &err), 0);
    assert_int_equal(cfg.vocab, 49152);
    assert_int_equal(cfg.dim, 576);
    assert_int_equal(cfg.n_layers, 30);
    assert_int_equal(cfg.n_heads, 9);
    assert_int_equal(cfg.n_kv_heads, 3);
    assert_int_equal(cfg.ffn_hidden, 1536);
    assert_int_equal(cfg.max_seq, 8192);
    assert_int_equal(cfg.tie_embeddings, 1);
    assert_true(cfg.rope_theta == 100000.0f);
    assert_true(fabsf(cfg.norm_eps - 1e-5f) < 1e-9f);
    assert_int_equal(fkd_gguf_llama_config(&cfg, &g, 512, &err), 0);
    assert_int_equal(cfg.max_seq, 512);

    fkd_params params;
    assert_int_equal(fkd_gguf_llama_load(&params, &g, 256, &err), 0);
    assert_ptr_equal(params.p.head, params.p.tok_emb);
    /* Layer 7's attn_k lands in the 8th slice of wk, (out, in) row-major. */
    const fkd_gguf_tensor *t = fkd_gguf_find_tensor(&g, "blk.7.attn_k.weight");
    assert_non_null(t);
    assert_int_equal(t->ne[0], 576);
    assert_int_equal(t->ne[1], 192);
    float *k7 = malloc(t->n_values * sizeof *k7);
    assert_int_equal(fkd_gguf_tensor_to_f32(k7, t, &err), 0);
    assert_memory_equal(k7, params.p.wk + 7 * 192 * 576, t->n_values * sizeof *k7);
    free(k7);
    double sum = 0;
    for (size_t i = 0; i < params.n_params; i++) sum += fabs(params.memory[i]);
    assert_true(isfinite(sum) && sum > 0);
    fkd_params_free(&params);

    /* Cut anywhere, the real file is an error that says so. */
    expect_error(g.base, g.size / 2, FKD_E_TRUNCATED, "past its end");
    expect_error(g.base, 200, FKD_E_FORMAT, "key/value count 33 cannot fit");
    expect_error(g.base, 1000000, FKD_E_FORMAT, "tokenizer.ggml.merges claims 48900");
    expect_error(g.base, (size_t)g.data_offset - 1, FKD_E_TRUNCATED, NULL);
    fkd_gguf_close(&g);
}

/* ---- damaged copies ----------------------------------------------------------- */

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Position of the n_dims field of the tensor named name in a file. */
static size_t tensor_info_at(const uint8_t *data, size_t bytes, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 8; i + len < bytes; i++)
        if (data[i - 8] == len && memcmp(data + i, name, len) == 0) return i + len;
    fail_msg("no tensor %s", name);
    return 0;
}

static void test_every_prefix_fails(void **state)
{
    size_t bytes;
    uint8_t *data = tiny_file(&bytes, FKD_QTYPE_Q8_0);
    fkd_gguf g;
    fkd_error err;
    assert_int_equal(fkd_gguf_parse(&g, data, bytes, &err), 0);
    size_t data_offset = (size_t)g.data_offset;
    fkd_gguf_close(&g);
    /* Each prefix in its own allocation, so ASan sees any read past it. */
    for (size_t n = 0; n < bytes; n += n < data_offset + 64 ? 1 : 61) {
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, data, n);
        expect_error(copy, n, -1, NULL);
        free(copy);
    }
    free(data);
}

static void test_damaged_fields(void **state)
{
    size_t bytes;
    uint8_t *orig = tiny_file(&bytes, FKD_QTYPE_Q4_1);
    uint8_t *d = malloc(bytes);
#define RESET() memcpy(d, orig, bytes)
    RESET();
    d[0] = 'X';
    expect_error(d, bytes, FKD_E_FORMAT, "magic");
    RESET();
    put32(d + 4, 2);
    expect_error(d, bytes, FKD_E_VERSION, "version 2");
    RESET();
    put64(d + 8, UINT64_MAX / 2);
    expect_error(d, bytes, FKD_E_FORMAT, "tensor count");
    RESET();
    put64(d + 16, (uint64_t)1 << 40);
    expect_error(d, bytes, FKD_E_FORMAT, "key/value count");
    RESET();
    put64(d + 24, UINT64_MAX - 3);  /* the first key's length */
    expect_error(d, bytes, FKD_E_FORMAT, "key of key/value 0");

    /* The token array's count, forged. */
    RESET();
    size_t at = tensor_info_at(d, bytes, "tokenizer.ggml.tokens");
    put64(d + at + 4 + 4, (uint64_t)1 << 50);
    expect_error(d, bytes, FKD_E_FORMAT, "tokenizer.ggml.tokens");
    RESET();
    put32(d + at, 99);  /* value type */
    expect_error(d, bytes, FKD_E_FORMAT, "unknown value type");
    RESET();
    put32(d + at + 4, FKD_GGUF_ARR);  /* element type: arrays of arrays */
    expect_error(d, bytes, FKD_E_UNSUPPORTED, "array of arrays");

    /* Tensor infos: token_embd is 2-d (64, 256). */
    size_t ti = tensor_info_at(orig, bytes, "token_embd.weight");
    size_t type_at = ti + 4 + 16, off_at = type_at + 4;
    RESET();
    put64(d + off_at, (uint64_t)bytes * 4);
    expect_error(d, bytes, FKD_E_TRUNCATED, "token_embd.weight");
    RESET();
    put64(d + off_at, UINT64_MAX - 31);
    expect_error(d, bytes, FKD_E_TRUNCATED, "token_embd.weight");
    RESET();
    put64(d + off_at, 16);
    expect_error(d, bytes, FKD_E_FORMAT, "alignment");
    RESET();
    put32(d + type_at, 14);
    expect_error(d, bytes, FKD_E_UNSUPPORTED, "q6_K");
    RESET();
    put32(d + type_at, 1000);
    expect_error(d, bytes, FKD_E_UNSUPPORTED, "unknown");
    RESET();
    put64(d + ti + 4, (uint64_t)1 << 62);  /* ne[0] */
    expect_error(d, bytes, FKD_E_FORMAT, "token_embd.weight");
    RESET();
    put64(d + ti + 4 + 8, (uint64_t)1 << 40);  /* ne[1]: dims x ... overflow the file */
    expect_error(d, bytes, -1, "token_embd.weight");
    RESET();
    put64(d + ti + 4, 48);  /* not a whole number of blocks */
    expect_error(d, bytes, FKD_E_FORMAT, "block");
    RESET();
    put32(d + ti, 5);
    expect_error(d, bytes, FKD_E_FORMAT, "dimensions");
    /* Two tensors at one offset overlap. */
    RESET();
    size_t ti2 = tensor_info_at(orig, bytes, "blk.0.attn_norm.weight");
    memcpy(d + ti2 + 4 + 8 + 4, d + off_at, 8);
    expect_error(d, bytes, FKD_E_FORMAT, "overlap");
    /* A key twice ("general.file_type" is as long as "llama.block_count"),
     * and a key with a NUL in it. */
    size_t k1 = tensor_info_at(orig, bytes, "llama.block_count") - 17;
    RESET();
    memcpy(d + k1, "general.file_type", 17);
    expect_error(d, bytes, FKD_E_FORMAT, "general.file_type appears twice");
    RESET();
    d[k1 + 11] = 0;
    expect_error(d, bytes, FKD_E_FORMAT, "NUL");
    /* A tensor name twice. */
    RESET();
    size_t n1 = tensor_info_at(orig, bytes, "blk.0.ffn_norm.weight") - 21;
    memcpy(d + n1, "blk.1.ffn_norm.weight", 21);
    expect_error(d, bytes, FKD_E_FORMAT, "appears twice");
#undef RESET
    free(d);
    free(orig);
}

static void expect_load_error(const uint8_t *data, size_t bytes, const char *words)
{
    fkd_gguf g;
    fkd_params params;
    fkd_error err;
    assert_int_equal(fkd_gguf_parse(&g, data, bytes, &err), 0);
    assert_int_equal(fkd_gguf_llama_load(&params, &g, 0, &err), -1);
    if (!strstr(err.msg, words)) fail_msg("\"%s\" does not name \"%s\"", err.msg, words);
    fkd_gguf_close(&g);
}

/* Tensors the llama model does not have are refused by name; a missing one too. */
static void test_llama_tensors_checked(void **state)
{
    size_t bytes;
    uint8_t *orig = tiny_file(&bytes, FKD_QTYPE_Q8_0);
    uint8_t *d = malloc(bytes);
    size_t at = tensor_info_at(orig, bytes, "output_norm.weight") - 18;
    memcpy(d, orig, bytes);
    memcpy(d + at, "rope_freqs.weights", 18);
    expect_load_error(d, bytes, "rope_freqs.weights");
    memcpy(d, orig, bytes);
    at = tensor_info_at(orig, bytes, "blk.1.ffn_up.weight") - 19;
    memcpy(d + at, "blk.01.ffn_up.weigh", 19);
    expect_load_error(d, bytes, "blk.01.ffn_up.weigh");
    memcpy(d, orig, bytes);
    memcpy(d + at, "blk.9.ffn_up.weight", 19);
    expect_load_error(d, bytes, "blk.9.ffn_up.weight");
    free(d);
    free(orig);
}

static void test_llama_keys_required(void **state)
{
    size_t bytes;
    uint8_t *orig = tiny_file(&bytes, FKD_QTYPE_F32);
    uint8_t *d = malloc(bytes);
    static const char *const keys[] = {"llama.block_count", "llama.embedding_length",
                                       "llama.feed_forward_length", "llama.context_length",
                                       "llama.attention.head_count"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        memcpy(d, orig, bytes);
        size_t at = tensor_info_at(d, bytes, keys[i]);
        d[at - 1] ^= 0x20;  /* the key is now another (unknown) key */
        fkd_gguf g;
        fkd_model_config cfg;
        fkd_error err;
        assert_int_equal(fkd_gguf_parse(&g, d, bytes, &err), 0);
        assert_int_equal(fkd_gguf_llama_config(&cfg, &g, 0, &err), -1);
        assert_non_null(strstr(err.msg, keys[i]));
        fkd_gguf_close(&g);
    }
    free(d);
    free(orig);
}

/* ---- writer round trip --------------------------------------------------------- */

static void round_trip(int type, int tie)
{
    fkd_model_config cfg = gguf_tiny_config(tie);
    fkd_params params, back;
    fkd_error err;
    assert_int_equal(fkd_params_init(&params, &cfg, &err), 0);
    fkd_params_randomize(&params, 99);
    char path[1024];
    gguf_tmp_path(path, sizeof path, "round_trip.gguf");
    assert_int_equal(fkd_gguf_llama_save(path, &params, type, NULL, "rt", &err), 0);

    fkd_gguf g;
    assert_int_equal(fkd_gguf_open(&g, path, &err), 0);
    assert_int_equal(g.n_tensors, 2 + 9 * cfg.n_layers + (tie ? 0 : 1));
    /* The blocks of blk.1.ffn_down are what quantize_row makes of w2[1]. */
    const fkd_gguf_tensor *t = fkd_gguf_find_tensor(&g, "blk.1.ffn_down.weight");
    assert_non_null(t);
    assert_int_equal(t->type, type);
    assert_int_equal(t->ne[0], cfg.ffn_hidden);
    assert_int_equal(t->ne[1], cfg.dim);
    uint8_t *want = malloc(t->bytes);
    size_t slice = (size_t)cfg.dim * cfg.ffn_hidden;
    assert_int_equal(fkd_quantize_row(want, type, params.p.w2 + slice, slice), 0);
    assert_memory_equal(t->data, want, t->bytes);
    free(want);
    assert_int_equal(fkd_gguf_find_tensor(&g, "blk.0.attn_norm.weight")->type, FKD_QTYPE_F32);

    assert_int_equal(fkd_gguf_llama_load(&back, &g, 0, &err), 0);
    assert_memory_equal(&back.cfg, &params.cfg, sizeof params.cfg);
    /* Every weight is what its format keeps of the original. */
    float *row = malloc(params.n_params * sizeof *row);
    uint8_t *q = malloc(params.n_params * sizeof(float));
    for (int k = 0; k < FKD_T_COUNT; k++) {
        const fkd_tensor_info *ti = &params.tensors[k];
        if (!ti->count) continue;
        int f = ti->is_matrix ? type : FKD_QTYPE_F32;
        assert_int_equal(fkd_quantize_row(q, f, params.memory + ti->offset, ti->count), 0);
        assert_int_equal(fkd_dequantize_row(row, f, q, ti->count), 0);
        assert_memory_equal(back.memory + ti->offset, row, ti->count * sizeof *row);
    }
    free(row);
    free(q);

    /* The byte vocabulary comes back as a tokenizer that gives byte ids. */
    fkd_tokenizer tok;
    assert_int_equal(fkd_gguf_tokenizer(&tok, &g, &err), 0);
    assert_int_equal(tok.vocab, 256);
    const uint8_t text[] = "h\xc3\xa9llo 42 \xff\x00!";
    int32_t ids[32];
    size_t n;
    assert_int_equal(fkd_tokenizer_encode(ids, 32, &n, &tok, text, sizeof text, &err), 0);
    assert_int_equal(n, sizeof text);
    for (size_t i = 0; i < n; i++) assert_int_equal(ids[i], text[i]);
    fkd_tokenizer_free(&tok);
    fkd_params_free(&back);
    fkd_gguf_close(&g);
    fkd_params_free(&params);
}

static void test_round_trip(void **state)
{
    static const int types[] = {FKD_QTYPE_F32, FKD_QTYPE_F16, FKD_QTYPE_Q8_0, FKD_QTYPE_Q4_0,
                                FKD_QTYPE_Q4_1};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) round_trip(types[i], (int)i % 2);
}

/* A student with the teacher's vocabulary carries the teacher's tokenizer. */
static void test_copy_tokenizer(void **state)
{
    const char *model = smollm2_path();
    if (!model) skip();
    fkd_gguf teacher, g;
    fkd_error err;
    assert_int_equal(fkd_gguf_open(&teacher, model, &err), 0);
    fkd_model_config cfg = gguf_tiny_config(1);
    cfg.vocab = 49152;
    cfg.dim = 32;
    cfg.n_heads = 2;
    cfg.n_kv_heads = 1;
    fkd_params params;
    assert_int_equal(fkd_params_init(&params, &cfg, &err), 0);
    char path[1024];
    gguf_tmp_path(path, sizeof path, "student_bpe.gguf");
    assert_int_equal(fkd_gguf_llama_save(path, &params, FKD_QTYPE_Q8_0, NULL, "s", &err), -1);
    assert_int_equal(fkd_gguf_llama_save(path, &params, FKD_QTYPE_Q8_0, &teacher, "s", &err), 0);
    assert_int_equal(fkd_gguf_open(&g, path, &err), 0);
    fkd_tokenizer a, b;
    assert_int_equal(fkd_gguf_tokenizer(&a, &teacher, &err), 0);
    assert_int_equal(fkd_gguf_tokenizer(&b, &g, &err), 0);
    size_t bytes;
    char *text = reference_file("tokenizer_text.txt", &bytes);
    int32_t *ia = malloc(bytes * sizeof *ia), *ib = malloc(bytes * sizeof *ib);
    size_t na, nb;
    assert_int_equal(fkd_tokenizer_encode(ia, bytes, &na, &a, (uint8_t *)text, bytes, &err), 0);
    assert_int_equal(fkd_tokenizer_encode(ib, bytes, &nb, &b, (uint8_t *)text, bytes, &err), 0);
    assert_int_equal(na, nb);
    assert_memory_equal(ia, ib, na * sizeof *ia);
    free(ia);
    free(ib);
    free(text);
    fkd_tokenizer_free(&a);
    fkd_tokenizer_free(&b);
    fkd_gguf_close(&g);
    fkd_gguf_close(&teacher);
    fkd_params_free(&params);
}

/* The commands' one call: weights and tokenizer together, GGUF told apart
 * from other files by its magic. */
static void test_load_model(void **state)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/reference/tokenizer_text.txt", FKD_SOURCE_DIR);
    assert_int_equal(fkd_gguf_is_gguf(path), 0);
    assert_int_equal(fkd_gguf_is_gguf("/nonexistent/x.gguf"), 0);
    fkd_params params;
    fkd_tokenizer tok;
    fkd_error err;
    assert_int_equal(fkd_gguf_load_model(&params, &tok, path, 0, &err), -1);
    assert_non_null(strstr(err.msg, "magic"));
    const char *model = smollm2_path();
    if (!model) skip();
    assert_int_equal(fkd_gguf_is_gguf(model), 1);
    assert_int_equal(fkd_gguf_load_model(&params, &tok, model, 32, &err), 0);
    assert_int_equal(tok.vocab, params.cfg.vocab);
    assert_int_equal(tok.bos_id, 1);
    assert_int_equal(tok.eos_id, 2);
    assert_int_equal(params.cfg.max_seq, 32);
    fkd_tokenizer_free(&tok);
    fkd_params_free(&params);
}

/* BF16 (read only as f32): the writer's generic path and the reader agree,
 * and an array of every scalar type comes back as written. */
static void test_bf16_and_arrays(void **state)
{
    float values[64];
    uint16_t bf16[64];
    for (int i = 0; i < 64; i++) {
        values[i] = (float)(i - 20) * 0.375f;  /* exact in bf16 */
        uint32_t bits;
        memcpy(&bits, &values[i], 4);
        bf16[i] = (uint16_t)(bits >> 16);
    }
    fkd_gguf_writer *w;
    fkd_error err;
    assert_int_equal(fkd_gguf_writer_new(&w, &err), 0);
    uint64_t ne[2] = {32, 2};
    int32_t arr[3] = {-1, 0, 7};
    int flag = 1;
    uint8_t b = 1;
    assert_int_equal(fkd_gguf_writer_add_tensor(w, "x.weight", FKD_GGML_BF16, ne, 2, bf16,
                                                sizeof bf16, &err), 0);
    assert_int_equal(fkd_gguf_writer_add_array(w, "a", FKD_GGUF_I32, arr, 3, &err), 0);
    assert_int_equal(fkd_gguf_writer_add(w, "b", FKD_GGUF_BOOL, &b, &err), 0);
    char path[1024];
    gguf_tmp_path(path, sizeof path, "bf16.gguf");
    assert_int_equal(fkd_gguf_writer_write(w, path, &err), 0);
    fkd_gguf_writer_free(&w);
    fkd_gguf g;
    assert_int_equal(fkd_gguf_open(&g, path, &err), 0);
    const fkd_gguf_tensor *t = fkd_gguf_find_tensor(&g, "x.weight");
    float back[64];
    assert_int_equal(fkd_gguf_tensor_to_f32(back, t, &err), 0);
    assert_memory_equal(back, values, sizeof values);
    const fkd_gguf_kv *kv;
    assert_int_equal(fkd_gguf_get_array(&kv, &g, "a", FKD_GGUF_I32, &err), 0);
    assert_int_equal(kv->count, 3);
    assert_memory_equal(kv->data, arr, sizeof arr);
    assert_int_equal(fkd_gguf_get_bool(&flag, &g, "b", &err), 0);
    assert_int_equal(flag, 1);
    int64_t v;
    assert_int_equal(fkd_gguf_get_int(&v, &g, "b", 0, 1, &err), -1);  /* a bool is no integer */
    assert_non_null(strstr(err.msg, "bool"));
    assert_int_equal(fkd_gguf_get_int(&v, &g, "missing", 0, 1, &err), -1);
    assert_non_null(strstr(err.msg, "missing"));
    fkd_gguf_close(&g);
}

static void test_writer_refuses_bad_tensors(void **state)
{
    fkd_gguf_writer *w;
    fkd_error err;
    assert_int_equal(fkd_gguf_writer_new(&w, &err), 0);
    uint64_t ne[2] = {32, 2};
    uint8_t data[64] = {0};
    assert_int_equal(fkd_gguf_writer_add_tensor(w, "x", FKD_QTYPE_Q8_0, ne, 2, data, 64, &err),
                     -1);  /* two Q8_0 rows are 68 bytes */
    char path[1024];
    gguf_tmp_path(path, sizeof path, "refused.gguf");
    assert_int_equal(fkd_gguf_writer_write(w, path, &err), -1);
    assert_int_equal(access(path, F_OK), -1);
    fkd_gguf_writer_free(&w);
    assert_null(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_file),
        cmocka_unit_test(test_every_prefix_fails),
        cmocka_unit_test(test_damaged_fields),
        cmocka_unit_test(test_llama_keys_required),
        cmocka_unit_test(test_llama_tensors_checked),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_copy_tokenizer),
        cmocka_unit_test(test_load_model),
        cmocka_unit_test(test_bf16_and_arrays),
        cmocka_unit_test(test_writer_refuses_bad_tensors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
