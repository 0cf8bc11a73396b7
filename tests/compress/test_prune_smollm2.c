/* test_prune_smollm2.c — structured pruning on the real teacher (slow; skipped
 * when models/SmolLM2-135M-Instruct.Q4_1.gguf is absent): the vocabulary
 * trimmed from a text encodes that text exactly as the full one, remapped,
 * and decodes any bytes as the full one does; a student cut from it (4
 * blocks, 2 of 3 kv groups, a third of the FFN) loads back from its GGUF file
 * with the trimmed tokenizer and runs. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "../gguf/gguf_test_util.h"
#include "fkd_compress.h"

enum { CONTEXT = 256, CAL_T = 64, CAP = 4096 };

static const char text[] =
    "The quick brown fox jumps over the lazy dog. In 1969, 3 astronauts flew 384,400 km.\n"
    "int main(void) { return printf(\"%d\\n\", 42) > 0 ? 0 : 1; }\n"
    "    Indented    runs   of spaces,\ttabs\tand newlines\n\n\n"
    "Ça coûte 12,50 € — naïve café; Ελληνικά, русский, 日本語 and 🙂 emoji.\n"
    "A fortune: you will be pruned, distilled and quantized, and still speak well.";

static void test_prune_real_teacher(void **state)
{
    (void)state;
    const char *path = smollm2_path();
    if (!path) skip();
    fkd_error err;
    fkd_gguf g;
    fkd_params t;
    fkd_tokenizer full_tok, tok;
    fkd_bpe_tables full, trimmed;
    fkd_vocab_map map;
    assert_int_equal(fkd_gguf_open(&g, path, &err), 0);
    assert_int_equal(fkd_gguf_llama_load(&t, &g, CONTEXT, &err), 0);
    assert_int_equal(fkd_gguf_tokenizer(&full_tok, &g, &err), 0);
    assert_int_equal(fkd_bpe_tables_from_gguf(&full, &g, &err), 0);
    assert_int_equal(full.n_tokens, 49152);

    static int32_t ids[CAP], tids[CAP], remapped[CAP];
    size_t n, nt;
    size_t len = sizeof text - 1;
    assert_int_equal(fkd_tokenizer_encode(ids, CAP, &n, &full_tok, (const uint8_t *)text, len, &err), 0);
    assert_int_equal(fkd_vocab_trim(&map, &trimmed, &full, ids, n, &err), 0);
    assert_true(map.new_vocab < 1000);  /* bytes, specials, the text's tokens and their trees */
    assert_int_equal(fkd_bpe_tables_tokenizer(&tok, &trimmed, &err), 0);
    assert_int_equal(fkd_tokenizer_encode(tids, CAP, &nt, &tok, (const uint8_t *)text, len, &err), 0);
    assert_int_equal(fkd_vocab_remap_tokens(remapped, ids, n, &map, &err), 0);
    assert_int_equal(nt, n);
    assert_memory_equal(tids, remapped, n * sizeof *ids);
    /* any bytes: the trimmed tokenizer drops exactly the bytes the full one drops */
    uint8_t bytes[256], a[CAP], b[CAP];
    for (int i = 0; i < 256; i++) bytes[i] = (uint8_t)i;
    size_t na, nb;
    assert_int_equal(fkd_tokenizer_encode(ids, CAP, &n, &full_tok, bytes, 256, &err), 0);
    assert_int_equal(fkd_tokenizer_decode(a, CAP, &na, &full_tok, ids, n, &err), 0);
    assert_int_equal(fkd_tokenizer_encode(tids, CAP, &nt, &tok, bytes, 256, &err), 0);
    assert_int_equal(fkd_tokenizer_decode(b, CAP, &nb, &tok, tids, nt, &err), 0);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na);

    /* a student: calibration on the text's first tokens (cheap metric) */
    fkd_prune_importance imp;
    assert_int_equal(fkd_tokenizer_encode(ids, CAP, &n, &full_tok, (const uint8_t *)text, len, &err), 0);
    assert_true(n >= CAL_T);
    assert_int_equal(fkd_prune_importance_compute(&imp, &t, ids, 1, CAL_T, 0, 0, &err), 0);
    assert_true(imp.base_loss > 0.5 && imp.base_loss < 6.0);
    fkd_model_config target = t.cfg;
    target.n_layers = 4, target.n_heads = 6, target.n_kv_heads = 2, target.ffn_hidden = 512;
    target.dim = 6 * 64;
    fkd_prune_plan plan;
    fkd_params s;
    assert_int_equal(fkd_prune_plan_make(&plan, &imp, &target, &map, &err), 0);
    assert_int_equal(fkd_prune_build(&s, &t, &plan, &map, &err), 0);
    assert_int_equal(s.n_params, fkd_config_param_count(&s.cfg));

    char out[1024];
    snprintf(out, sizeof out, "%s/prune_smollm2.gguf", getenv("FKD_TEST_TMP") ? getenv("FKD_TEST_TMP") : "/tmp");
    assert_int_equal(fkd_gguf_llama_save_bpe(out, &s, FKD_QTYPE_F32, &trimmed, &g, "t", &err), 0);
    fkd_params back;
    fkd_tokenizer btok;
    assert_int_equal(fkd_gguf_load_model(&back, &btok, out, CONTEXT, &err), 0);
    assert_int_equal(back.cfg.vocab, map.new_vocab);
    assert_int_equal(back.cfg.dim, 384);
    assert_memory_equal(back.memory, s.memory, s.n_params * sizeof(float));
    assert_int_equal(btok.eos_id, map.old_to_new[full_tok.eos_id]);
    assert_int_equal(fkd_tokenizer_encode(ids, CAP, &n, &btok, (const uint8_t *)text, len, &err), 0);
    fkd_eval_result r;
    assert_int_equal(fkd_eval_tokens(&r, &back, ids, (int64_t)n, (int64_t)len, CONTEXT, &err), 0);
    assert_true(isfinite(r.mean_loss));
    remove(out);
    fkd_tokenizer_free(&btok);
    fkd_params_free(&back);
    fkd_params_free(&s);
    fkd_prune_plan_free(&plan);
    fkd_prune_importance_free(&imp);
    fkd_tokenizer_free(&tok);
    fkd_vocab_map_free(&map);
    fkd_bpe_tables_free(&trimmed);
    fkd_bpe_tables_free(&full);
    fkd_tokenizer_free(&full_tok);
    fkd_params_free(&t);
    fkd_gguf_close(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prune_real_teacher),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
