/* fuzz_gguf.c — libFuzzer target for the GGUF reader and what reads on top of
 * it: parse, convert every tensor to f32, map a llama model (dequantized and
 * as blocks) and build its tokenizer, then encode and decode a short text with it. Any input must end
 * in an error or a valid result, never a crash, an over-read or a leak. */
#include <stdlib.h>

#include "fkd_compress.h"

static void exercise_tensors(const fkd_gguf *g)
{
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const fkd_gguf_tensor *t = &g->tensors[i];
        if (t->n_values > ((uint64_t)1 << 24)) continue;  /* keep each run fast */
        float *out = malloc(t->n_values * sizeof *out);
        fkd_error err;
        if (out) fkd_gguf_tensor_to_f32(out, t, &err);
        free(out);
    }
}

static void exercise_tokenizer(const fkd_gguf *g)
{
    fkd_tokenizer tok;
    fkd_error err;
    if (fkd_gguf_tokenizer(&tok, g, &err) != 0) return;
    static const uint8_t text[] = "Hello, world! 123 <|im_start|>\xff\xc3 \n\n  x";
    int32_t ids[sizeof text];
    uint8_t back[4 * sizeof text];
    size_t n, m;
    if (fkd_tokenizer_encode_special(ids, sizeof text, &n, &tok, text, sizeof text, &err) == 0)
        fkd_tokenizer_decode(back, sizeof back, &m, &tok, ids, n, &err);
    fkd_tokenizer_free(&tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fkd_gguf g;
    fkd_error err;
    if (fkd_gguf_parse(&g, data, size, &err) != 0) return 0;
    exercise_tensors(&g);
    fkd_params params;
    if (fkd_gguf_llama_load(&params, &g, 8, &err) == 0) fkd_params_free(&params);
    fkd_qmodel qm;
    if (fkd_gguf_llama_load_qmodel(&qm, &g, 8, &err) == 0) fkd_qmodel_free(&qm);
    exercise_tokenizer(&g);
    fkd_gguf_close(&g);
    return 0;
}
