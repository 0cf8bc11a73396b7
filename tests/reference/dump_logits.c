/* dump_logits.c — the C side of compare_logits.py: tokenizes a text with the
 * GGUF model's own tokenizer, runs fkd_model_forward over windows of W tokens
 * (each window from a fresh context) and writes the token ids (int32) and the
 * full logits (float32, positions x vocab) for the Python side to compare.
 *   gguf_dump_logits MODEL.gguf TEXT_FILE WINDOW OUT_PREFIX MAX_TOKENS */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fkd_compress.h"

static int write_file(const char *prefix, const char *ext, const void *data, size_t bytes)
{
    char path[1024];
    fkd_error err;
    snprintf(path, sizeof path, "%s.%s", prefix, ext);
    if (fkd_file_write_atomic(path, data, bytes, &err) == 0) return 0;
    fprintf(stderr, "%s\n", err.msg);
    return -1;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s MODEL.gguf TEXT_FILE WINDOW OUT_PREFIX MAX_TOKENS\n", argv[0]);
        return 2;
    }
    int window = atoi(argv[3]);
    size_t max_tokens = (size_t)atol(argv[5]);
    fkd_gguf g;
    fkd_params params;
    fkd_tokenizer tok;
    fkd_error err;
    uint8_t *text;
    size_t bytes, n;
    if (fkd_gguf_open(&g, argv[1], &err) != 0 || fkd_gguf_llama_load(&params, &g, window, &err) != 0 ||
        fkd_gguf_tokenizer(&tok, &g, &err) != 0 ||
        fkd_file_read_all(&text, &bytes, argv[2], (size_t)1 << 30, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int32_t *ids = malloc((bytes + 1) * sizeof *ids);
    if (fkd_tokenizer_encode(ids, bytes, &n, &tok, text, bytes, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    n = n < max_tokens ? n : max_tokens;
    n -= n % (size_t)window;
    size_t V = (size_t)params.cfg.vocab;
    float *all = malloc(n * V * sizeof *all);
    fkd_model m;
    if (!all || fkd_model_init_borrowed(&m, &params, 1, window, 0, &err) != 0) {
        fprintf(stderr, "cannot set up: %s\n", err.msg);
        return 1;
    }
    double t0 = fkd_time_ms();
    for (size_t w = 0; w < n; w += (size_t)window) {
        float *logits;
        fkd_model_forward(&m, ids + w, &logits);
        memcpy(all + w * V, logits, (size_t)window * V * sizeof *all);
    }
    fprintf(stderr, "%zu tokens in windows of %d: %.1f s\n", n, window, (fkd_time_ms() - t0) / 1e3);
    int rc = write_file(argv[4], "ids", ids, n * sizeof *ids) ||
             write_file(argv[4], "logits", all, n * V * sizeof *all);
    fkd_model_free(&m);
    free(all);
    free(ids);
    free(text);
    fkd_tokenizer_free(&tok);
    fkd_params_free(&params);
    fkd_gguf_close(&g);
    return rc ? 1 : 0;
}
