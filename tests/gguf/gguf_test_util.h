/* gguf_test_util.h — shared by the GGUF tests: where the real model is, and
 * the expected-value files of tests/reference/. */
#ifndef FKD_GGUF_TEST_UTIL_H
#define FKD_GGUF_TEST_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fkd_train.h"

#define SMOLLM2_FILE "SmolLM2-135M-Instruct.Q4_1.gguf"

/* The real model's path (FKD_MODELS_DIR or models/), or NULL after telling
 * why the test is skipped: install-deps puts it there, CI included. */
static inline const char *smollm2_path(void)
{
    static char path[1024];
    const char *dir = getenv("FKD_MODELS_DIR");
    if (dir) snprintf(path, sizeof path, "%s/%s", dir, SMOLLM2_FILE);
    else snprintf(path, sizeof path, "%s/models/%s", FKD_SOURCE_DIR, SMOLLM2_FILE);
    if (access(path, R_OK) == 0) return path;
    fprintf(stderr, "SKIP: %s is missing; run deploy/get-model.sh (deploy/install-deps.sh "
                    "does) to test against the real model\n", path);
    return NULL;
}

/* A file of tests/reference/, read whole (NUL-terminated); aborts when absent. */
static inline char *reference_file(const char *name, size_t *bytes)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/reference/%s", FKD_SOURCE_DIR, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        abort();
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) abort();
    buf[n] = 0;
    fclose(f);
    *bytes = (size_t)n;
    return buf;
}

/* Whitespace-separated integers from s into ids (up to cap); returns the count. */
static inline size_t parse_ids(int32_t *ids, size_t cap, const char *s)
{
    size_t n = 0;
    char *end;
    for (;;) {
        long v = strtol(s, &end, 10);
        if (end == s || n == cap) break;
        ids[n++] = (int32_t)v;
        s = end;
    }
    return n;
}

/* The small llama the writer tests use (every row a whole number of blocks). */
static inline fkd_model_config gguf_tiny_config(int tie)
{
    return (fkd_model_config){.vocab = 256, .dim = 64, .n_layers = 2, .n_heads = 4,
                              .n_kv_heads = 2, .ffn_hidden = 96, .max_seq = 64,
                              .tie_embeddings = tie, .rope_theta = 10000.0f, .norm_eps = 1e-5f};
}

/* A scratch file name under the test's directory (FKD_TEST_TMP). */
static inline void gguf_tmp_path(char *out, size_t cap, const char *name)
{
    const char *dir = getenv("FKD_TEST_TMP");
    snprintf(out, cap, "%s/%s", dir ? dir : "/tmp", name);
}

#endif
