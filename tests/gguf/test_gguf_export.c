/* test_gguf_export.c — the deployment file (fkd_gguf_llama_export) and the
 * block reader (fkd_gguf_llama_load_qmodel): a Q4_1 or Q8_0 file holds the
 * quantized student's blocks byte for byte, so the model read back gives
 * the same logits, bit for bit, as quantize-then-infer; its llama metadata
 * is complete; a slice of a file whose layers mix formats is converted to
 * its kind's format by the block reader (as the dequantizing reader reads
 * it); a trimmed tokenizer travels with the file, and trimming the
 * teacher's again to its ids gives it back; llama.cpp's perplexity
 * protocol on the blocks agrees with the fp32 one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <math.h>

#include "fkd_compress.h"
#include "gguf_test_util.h"

enum { STEPS = 12 };

static void expect_int(const fkd_gguf *g, const char *key, int64_t want)
{
    int64_t v;
    fkd_error err;
    if (fkd_gguf_get_int(&v, g, key, INT64_MIN, INT64_MAX, &err) != 0) fail_msg("%s", err.msg);
    if (v != want) fail_msg("%s is %lld, want %lld", key, (long long)v, (long long)want);
}

static void expect_str(const fkd_gguf *g, const char *key, const char *want)
{
    const char *s;
    size_t len;
    fkd_error err;
    if (fkd_gguf_get_str(&s, &len, g, key, &err) != 0) fail_msg("%s", err.msg);
    if (len != strlen(want) || memcmp(s, want, len) != 0)
        fail_msg("%s is \"%.*s\", want \"%s\"", key, (int)len, s, want);
}

static int tensor_type(const fkd_gguf *g, const char *name)
{
    const fkd_gguf_tensor *t = fkd_gguf_find_tensor(g, name);
    return t ? t->type : -1;
}

/* Everything llama.cpp's loader reads for a llama model. */
static void expect_llama_metadata(const fkd_gguf *g, const fkd_model_config *c, int file_type)
{
    expect_str(g, "general.architecture", "llama");
    expect_int(g, "general.file_type", file_type);
    expect_int(g, "general.quantization_version", 2);
    expect_int(g, "llama.block_count", c->n_layers);
    expect_int(g, "llama.context_length", c->max_seq);
    expect_int(g, "llama.embedding_length", c->dim);
    expect_int(g, "llama.feed_forward_length", c->ffn_hidden);
    expect_int(g, "llama.attention.head_count", c->n_heads);
    expect_int(g, "llama.attention.head_count_kv", c->n_kv_heads);
    expect_int(g, "llama.rope.dimension_count", c->dim / c->n_heads);
    expect_int(g, "llama.vocab_size", c->vocab);
    float v;
    fkd_error err;
    assert_int_equal(fkd_gguf_get_f32(&v, g, "llama.rope.freq_base", &err), 0);
    assert_true(v == c->rope_theta);
    assert_int_equal(fkd_gguf_get_f32(&v, g, "llama.attention.layer_norm_rms_epsilon", &err), 0);
    assert_true(v == c->norm_eps);
    expect_str(g, "tokenizer.ggml.model", "gpt2");
    const fkd_gguf_kv *kv;
    assert_int_equal(fkd_gguf_get_array(&kv, g, "tokenizer.ggml.tokens", FKD_GGUF_STR, &err), 0);
    assert_int_equal(kv->count, (uint64_t)c->vocab);
    assert_int_equal(fkd_gguf_get_array(&kv, g, "tokenizer.ggml.token_type", FKD_GGUF_I32, &err),
                     0);
    assert_int_equal(kv->count, (uint64_t)c->vocab);
    assert_int_equal(fkd_gguf_get_array(&kv, g, "tokenizer.ggml.merges", FKD_GGUF_STR, &err), 0);
}

/* Logits of STEPS tokens through fkd_qinfer (STEPS x vocab floats). */
static float *run_steps(const fkd_qmodel *qm)
{
    fkd_qinfer st;
    fkd_error err;
    assert_int_equal(fkd_qinfer_init(&st, qm, FKD_QKERNEL_AUTO, &err), 0);
    int V = qm->cfg.vocab;
    float *out = malloc((size_t)STEPS * V * sizeof *out);
    for (int i = 0; i < STEPS; i++) {
        float *logits = fkd_qinfer_step(&st, (int32_t)((i * 37 + 5) % V));
        assert_non_null(logits);
        memcpy(out + (size_t)i * V, logits, (size_t)V * sizeof *out);
    }
    fkd_qinfer_free(&st);
    return out;
}

static void export_round_trip(int scheme, int tie, int file_type)
{
    fkd_model_config cfg = gguf_tiny_config(tie);
    fkd_params params;
    fkd_error err;
    assert_int_equal(fkd_params_init(&params, &cfg, &err), 0);
    fkd_params_randomize(&params, 11);
    char path[1024];
    gguf_tmp_path(path, sizeof path, "export.gguf");
    assert_int_equal(fkd_gguf_llama_export(path, &params, scheme, NULL, NULL, NULL, "t", &err), 0);

    fkd_gguf g;
    assert_int_equal(fkd_gguf_open(&g, path, &err), 0);
    expect_llama_metadata(&g, &cfg, file_type);
    /* the deploy recipe: embedding and head at least Q8_0, norms f32, and
     * w2 (ffn_down) and wo (attn_output) kept at Q8_0 in an int4 file */
    assert_int_equal(tensor_type(&g, "token_embd.weight"), FKD_QTYPE_Q8_0);
    assert_int_equal(tensor_type(&g, "output.weight"), tie ? -1 : FKD_QTYPE_Q8_0);
    assert_int_equal(tensor_type(&g, "blk.1.attn_q.weight"), scheme);
    assert_int_equal(tensor_type(&g, "blk.0.ffn_gate.weight"), scheme);
    assert_int_equal(tensor_type(&g, "blk.0.ffn_down.weight"), FKD_QTYPE_Q8_0);
    assert_int_equal(tensor_type(&g, "blk.1.attn_output.weight"), FKD_QTYPE_Q8_0);
    assert_int_equal(tensor_type(&g, "blk.1.ffn_norm.weight"), FKD_QTYPE_F32);
    assert_int_equal(tensor_type(&g, "output_norm.weight"), FKD_QTYPE_F32);

    fkd_qmodel want, back;
    assert_int_equal(fkd_qmodel_quantize_deploy(&want, &params, scheme, NULL, NULL, &err), 0);
    assert_int_equal(fkd_gguf_llama_load_qmodel(&back, &g, 0, &err), 0);
    assert_memory_equal(&back.cfg, &want.cfg, sizeof want.cfg);
    for (int t = 0; t < FKD_T_COUNT; t++) {
        assert_int_equal(back.q[t].type, want.q[t].type);
        assert_int_equal(back.q[t].bytes, want.q[t].bytes);
        assert_memory_equal(back.q[t].data, want.q[t].data, want.q[t].bytes);
    }
    float *a = run_steps(&want), *b = run_steps(&back);
    assert_memory_equal(a, b, (size_t)STEPS * cfg.vocab * sizeof *a);
    /* the f32 reader sees the same weights as the blocks dequantized */
    fkd_params deq, f32;
    assert_int_equal(fkd_qmodel_dequantize(&deq, &want, &err), 0);
    assert_int_equal(fkd_gguf_llama_load(&f32, &g, 0, &err), 0);
    assert_memory_equal(f32.memory, deq.memory, deq.n_params * sizeof(float));
    free(a);
    free(b);
    fkd_params_free(&f32);
    fkd_params_free(&deq);
    fkd_qmodel_free(&back);
    fkd_qmodel_free(&want);
    fkd_gguf_close(&g);
    fkd_params_free(&params);
}

static void test_export_round_trip(void **state)
{
    (void)state;
    export_round_trip(FKD_QTYPE_Q4_1, 1, 3);
    export_round_trip(FKD_QTYPE_Q4_1, 0, 3);
    export_round_trip(FKD_QTYPE_Q8_0, 1, 7);
}

/* A copy of the file at src with one tensor turned into f32. */
static void write_with_f32_tensor(const char *dst, const char *src, const char *name)
{
    fkd_gguf g;
    fkd_gguf_writer *w;
    fkd_error err;
    assert_int_equal(fkd_gguf_open(&g, src, &err), 0);
    assert_int_equal(fkd_gguf_writer_new(&w, &err), 0);
    for (uint64_t i = 0; i < g.n_kv; i++)
        assert_int_equal(fkd_gguf_writer_copy_kv(w, &g.kv[i], &err), 0);
    const fkd_gguf_tensor *one = fkd_gguf_find_tensor(&g, name);
    assert_non_null(one);
    float *f = malloc(one->n_values * sizeof *f);
    assert_int_equal(fkd_gguf_tensor_to_f32(f, one, &err), 0);
    for (uint64_t i = 0; i < g.n_tensors; i++) {
        const fkd_gguf_tensor *t = &g.tensors[i];
        int as_f32 = t == one;
        assert_int_equal(fkd_gguf_writer_add_tensor(w, t->name, as_f32 ? FKD_QTYPE_F32 : t->type,
                                                    t->ne, t->n_dims, as_f32 ? (void *)f : t->data,
                                                    as_f32 ? t->n_values * 4 : t->bytes, &err),
                         0);
    }
    assert_int_equal(fkd_gguf_writer_write(w, dst, &err), 0);
    fkd_gguf_writer_free(&w);
    free(f);
    fkd_gguf_close(&g);
}

static void test_mixed_formats_converted(void **state)
{
    (void)state;
    fkd_model_config cfg = gguf_tiny_config(1);
    fkd_params params, p2;
    fkd_qmodel qm;
    fkd_error err = {0};
    assert_int_equal(fkd_params_init(&params, &cfg, &err), 0);
    fkd_params_randomize(&params, 5);
    char src[1024], dst[1024];
    gguf_tmp_path(src, sizeof src, "mixed_src.gguf");
    gguf_tmp_path(dst, sizeof dst, "mixed.gguf");
    assert_int_equal(fkd_gguf_llama_export(src, &params, FKD_QTYPE_Q4_1, NULL, NULL, NULL, "m", &err),
                     0);
    write_with_f32_tensor(dst, src, "blk.1.attn_q.weight");
    fkd_gguf g;
    assert_int_equal(fkd_gguf_open(&g, dst, &err), 0);
    assert_int_equal(fkd_gguf_llama_load_qmodel(&qm, &g, 0, &err), 0);
    assert_int_equal(qm.q[FKD_T_WQ].type, FKD_QTYPE_Q4_1); /* layer 0's format */
    /* The converted slice (layer 1) holds the f32 slice quantized: the
     * dequantizing reader's weights, quantized the same way. */
    assert_int_equal(fkd_gguf_llama_load(&p2, &g, 0, &err), 0);
    fkd_qmodel q2;
    assert_int_equal(fkd_qmodel_quantize(&q2, &p2, FKD_QTYPE_Q4_1, NULL, &err), 0);
    assert_int_equal(q2.q[FKD_T_WQ].type, FKD_QTYPE_Q4_1);
    size_t slice = qm.q[FKD_T_WQ].bytes / (size_t)cfg.n_layers;
    assert_memory_equal(qm.q[FKD_T_WQ].data + slice, q2.q[FKD_T_WQ].data + slice, slice);
    fkd_qmodel_free(&q2);
    fkd_qmodel_free(&qm);
    fkd_params_free(&p2);
    fkd_gguf_close(&g);
    fkd_params_free(&params);
}

/* A student with a trimmed vocabulary: its tables, the teacher's id-free
 * keys, and a tokenizer that encodes as the teacher's, remapped. */
static void test_trimmed_tokenizer(void **state)
{
    (void)state;
    const char *model = smollm2_path();
    if (!model) skip();
    fkd_gguf teacher, g;
    fkd_error err;
    fkd_bpe_tables full, trimmed, back;
    fkd_vocab_map map;
    fkd_tokenizer ttok, stok;
    assert_int_equal(fkd_gguf_open(&teacher, model, &err), 0);
    assert_int_equal(fkd_bpe_tables_from_gguf(&full, &teacher, &err), 0);
    assert_int_equal(fkd_gguf_tokenizer(&ttok, &teacher, &err), 0);
    static const char text[] = "The quick brown fox jumps over the lazy dog, twice.";
    int32_t ids[sizeof text], remapped[sizeof text], sids[4 * sizeof text];
    size_t n, ns;
    assert_int_equal(fkd_tokenizer_encode(ids, sizeof text, &n, &ttok, (const uint8_t *)text,
                                          sizeof text - 1, &err), 0);
    assert_int_equal(fkd_vocab_trim(&map, &trimmed, &full, ids, n, &err), 0);
    /* The simulation writes its student's tokenizer by trimming the teacher's
     * to exactly the kept ids: they are closed already, so nothing changes. */
    fkd_vocab_map again;
    fkd_bpe_tables again_t;
    assert_int_equal(fkd_vocab_trim(&again, &again_t, &full, map.new_to_old,
                                    (size_t)map.new_vocab, &err), 0);
    assert_int_equal(again.new_vocab, map.new_vocab);
    assert_memory_equal(again.new_to_old, map.new_to_old, map.new_vocab * sizeof(int32_t));
    assert_int_equal(again_t.n_merges, trimmed.n_merges);
    assert_true(map.new_vocab > 256 && trimmed.n_merges > 0);
    fkd_vocab_map_free(&again);
    fkd_bpe_tables_free(&again_t);

    fkd_model_config cfg = gguf_tiny_config(1);
    cfg.vocab = trimmed.n_tokens;
    fkd_params params;
    assert_int_equal(fkd_params_init(&params, &cfg, &err), 0);
    fkd_params_randomize(&params, 3);
    char path[1024];
    gguf_tmp_path(path, sizeof path, "trimmed.gguf");
    assert_int_equal(fkd_gguf_llama_export(path, &params, FKD_QTYPE_Q4_1, NULL, &trimmed, &teacher,
                                           "s", &err), 0);
    assert_int_equal(fkd_gguf_open(&g, path, &err), 0);
    expect_llama_metadata(&g, &cfg, 3);
    assert_int_equal(fkd_bpe_tables_from_gguf(&back, &g, &err), 0);
    assert_int_equal(back.n_tokens, trimmed.n_tokens);
    assert_int_equal(back.n_merges, trimmed.n_merges);
    assert_int_equal(back.bos_id, trimmed.bos_id);
    assert_string_equal(back.pre, full.pre);
    for (uint64_t i = 0; i < teacher.n_kv; i++)  /* add_bos_token, chat template, ... */
        if (strncmp(teacher.kv[i].key, "tokenizer.", 10) == 0)
            assert_non_null(fkd_gguf_find(&g, teacher.kv[i].key));
    assert_int_equal(fkd_gguf_tokenizer(&stok, &g, &err), 0);
    assert_int_equal(fkd_tokenizer_encode(sids, sizeof sids / sizeof sids[0], &ns, &stok,
                                          (const uint8_t *)text, sizeof text - 1, &err), 0);
    assert_int_equal(fkd_vocab_remap_tokens(remapped, ids, n, &map, &err), 0);
    assert_int_equal(ns, n);
    assert_memory_equal(sids, remapped, n * sizeof *ids);

    fkd_tokenizer_free(&stok);
    fkd_bpe_tables_free(&back);
    fkd_gguf_close(&g);
    fkd_params_free(&params);
    fkd_vocab_map_free(&map);
    fkd_bpe_tables_free(&trimmed);
    fkd_tokenizer_free(&ttok);
    fkd_bpe_tables_free(&full);
    fkd_gguf_close(&teacher);
}

/* The block reader on llama.cpp's own file: Q4_1 matrices and the Q8_0
 * embedding, taken as they are. */
static void test_real_file_blocks(void **state)
{
    (void)state;
    const char *model = smollm2_path();
    if (!model) skip();
    fkd_gguf g;
    fkd_qmodel qm;
    fkd_error err;
    assert_int_equal(fkd_gguf_open(&g, model, &err), 0);
    assert_int_equal(fkd_gguf_llama_load_qmodel(&qm, &g, 32, &err), 0);
    assert_int_equal(qm.cfg.max_seq, 32);
    assert_int_equal(qm.q[FKD_T_WQ].type, FKD_QTYPE_Q4_1);
    assert_int_equal(qm.q[FKD_T_TOK_EMB].type, FKD_QTYPE_Q8_0);
    const fkd_gguf_tensor *t = fkd_gguf_find_tensor(&g, "blk.29.ffn_down.weight");
    const fkd_qtensor *w2 = &qm.q[FKD_T_W2];
    assert_memory_equal(w2->data + w2->bytes - t->bytes, t->data, t->bytes);
    assert_true(qm.data_bytes < g.size);
    fkd_qmodel_free(&qm);
    fkd_gguf_close(&g);
}

/* llama-perplexity on the blocks scores the positions the fp32 protocol
 * scores; over f32 blocks it is the same model, so the same loss up to
 * summation order, and over Q8_0 blocks within the quantization's error. */
static void test_llama_protocol_on_blocks(void **state)
{
    (void)state;
    fkd_model_config cfg = gguf_tiny_config(1);
    fkd_params params;
    fkd_error err;
    assert_int_equal(fkd_params_init(&params, &cfg, &err), 0);
    fkd_params_randomize(&params, 21);
    enum { N = 200, CTX = 48 };
    int32_t tokens[N];
    for (int i = 0; i < N; i++) tokens[i] = (int32_t)((i * 73 + i / 7) % cfg.vocab);
    fkd_eval_result want, got;
    assert_int_equal(fkd_eval_tokens_llama(&want, &params, tokens, N, N, CTX, 1, &err), 0);
    assert_int_equal(want.tokens, (N / CTX) * (CTX / 2 - 1));
    static const struct {
        int scheme;
        double tol;
    } cases[] = {{FKD_QTYPE_F32, 1e-5}, {FKD_QTYPE_Q8_0, 2e-2}};
    for (int i = 0; i < 2; i++) {
        fkd_qmodel qm;
        fkd_qinfer st;
        assert_int_equal(fkd_qmodel_quantize(&qm, &params, cases[i].scheme, NULL, &err), 0);
        assert_int_equal(fkd_qinfer_init(&st, &qm, FKD_QKERNEL_AUTO, &err), 0);
        assert_int_equal(fkd_qinfer_eval_llama(&got, &st, tokens, N, N, CTX, 1, &err), 0);
        assert_int_equal(got.tokens, want.tokens);
        double rel = fabs(got.mean_loss - want.mean_loss) / want.mean_loss;
        if (rel > cases[i].tol)
            fail_msg("%s: loss %.6f, fp32 %.6f", fkd_qtype_name(cases[i].scheme), got.mean_loss,
                     want.mean_loss);
        assert_int_equal(fkd_qinfer_eval_llama(&got, &st, tokens, CTX - 1, CTX - 1, CTX, -1, &err),
                         -1);  /* not one whole chunk */
        fkd_qinfer_free(&st);
        fkd_qmodel_free(&qm);
    }
    fkd_params_free(&params);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_export_round_trip),
        cmocka_unit_test(test_mixed_formats_converted),
        cmocka_unit_test(test_trimmed_tokenizer),
        cmocka_unit_test(test_real_file_blocks),
        cmocka_unit_test(test_llama_protocol_on_blocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
