/* prune_test_util.h — shared by the structured-pruning tests: a small
 * byte-level BPE vocabulary built by hand (256 byte tokens, a few merges,
 * a control token) and a random llama model over it. */
#ifndef FKD_PRUNE_TEST_UTIL_H
#define FKD_PRUNE_TEST_UTIL_H

#include <stdlib.h>
#include <string.h>

#include "fkd_compress.h"

/* Merges in spelling space ("Ġ" is GPT-2's spelling of the space byte). */
static const char *const test_merges[] = {
    "h e", "t h", "Ġ t", "t he", "Ġt he", "i n", "Ġ a", "a n", "an d", "Ġa n", "Ġan d",
    "Ġ in", "in g", "o u", "Ġ ou", "ou t", "Ġou t", "Ġ x", "Ġx y", "th in", "thin g",
    "Ġ thing", "Ġ the", "Ġou ting",
};
#define TEST_N_MERGES ((int)(sizeof test_merges / sizeof test_merges[0]))
#define TEST_N_BYTES 256
#define TEST_CONTROL "<|end|>"
#define TEST_UNUSED "zzz"       /* a normal token no merge builds */

/* Fills t with the bytes, each merge's result (in merge order, skipping
 * repeats), the unused token and the control token (eos). */
static inline void test_tables(fkd_bpe_tables *t)
{
    memset(t, 0, sizeof *t);
    int cap = TEST_N_BYTES + TEST_N_MERGES + 2;
    size_t text_cap = 4096;
    t->tokens = malloc((size_t)cap * sizeof *t->tokens);
    t->token_lens = malloc((size_t)cap * sizeof *t->token_lens);
    t->token_types = malloc((size_t)cap * sizeof *t->token_types);
    t->merges = malloc((size_t)TEST_N_MERGES * sizeof *t->merges);
    t->merge_lens = malloc((size_t)TEST_N_MERGES * sizeof *t->merge_lens);
    t->text = malloc(text_cap);
    size_t at = 0;
    int n = 0;
#define ADD_TOKEN(s, len, type)                                   \
    do {                                                          \
        memcpy(t->text + at, (s), (len));                         \
        t->tokens[n] = t->text + at;                              \
        t->token_lens[n] = (uint32_t)(len);                       \
        t->token_types[n++] = (type);                             \
        at += (len);                                              \
    } while (0)
    for (int b = 0; b < TEST_N_BYTES; b++) {
        char sp[2];
        int len = fkd_bpe_byte_spelling(sp, (uint8_t)b);
        ADD_TOKEN(sp, (size_t)len, 1);
    }
    for (int m = 0; m < TEST_N_MERGES; m++) {
        const char *s = test_merges[m], *sp = strchr(s, ' ');
        char joined[64];
        size_t la = (size_t)(sp - s), lb = strlen(sp + 1);
        memcpy(joined, s, la);
        memcpy(joined + la, sp + 1, lb);
        int dup = 0;
        for (int i = 0; i < n && !dup; i++)
            dup = t->token_lens[i] == la + lb && memcmp(t->tokens[i], joined, la + lb) == 0;
        if (!dup) ADD_TOKEN(joined, la + lb, 1);
        t->merges[m] = t->text + at;
        t->merge_lens[m] = (uint32_t)strlen(s);
        memcpy(t->text + at, s, strlen(s));
        at += strlen(s);
    }
    ADD_TOKEN(TEST_UNUSED, strlen(TEST_UNUSED), 1);
    t->eos_id = n;
    ADD_TOKEN(TEST_CONTROL, strlen(TEST_CONTROL), 3);
#undef ADD_TOKEN
    t->n_tokens = n;
    t->n_merges = TEST_N_MERGES;
    t->bos_id = t->unk_id = t->pad_id = -1;
    strcpy(t->pre, "gpt2");
}

static inline int32_t test_token_id(const fkd_bpe_tables *t, const char *s)
{
    for (int i = 0; i < t->n_tokens; i++)
        if (t->token_lens[i] == strlen(s) && memcmp(t->tokens[i], s, strlen(s)) == 0) return i;
    return -1;
}

/* A random llama teacher with GQA (6 query heads in 2 groups of 3). */
static inline fkd_model_config test_teacher_config(int vocab)
{
    fkd_model_config c = {.vocab = vocab, .dim = 48, .n_layers = 4, .n_heads = 6,
                          .n_kv_heads = 2, .ffn_hidden = 64, .max_seq = 32,
                          .tie_embeddings = 1, .rope_theta = 10000.0f, .norm_eps = 1e-5f};
    return c;
}

#endif
