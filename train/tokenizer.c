/* tokenizer.c — the tokenizer front door: byte-level here, BPE in
 * tokenizer_bpe.c. A byte tokenizer is the identity on bytes, so any input
 * encodes and decode(encode(x)) == x. */
#include "fkd_train.h"
#include "tokenizer_bpe.h"

#include <string.h>

void fkd_tokenizer_init_bytes(fkd_tokenizer *tok)
{
    memset(tok, 0, sizeof *tok);
    tok->kind = FKD_TOKENIZER_BYTES;
    tok->vocab = 256;
    tok->bos_id = -1;
    tok->eos_id = -1;
}

void fkd_tokenizer_free(fkd_tokenizer *tok)
{
    if (tok->bpe) fkd_bpe_free(tok->bpe);
    tok->bpe = NULL;
}

static int encode(int32_t *tokens, size_t capacity, size_t *n_tokens, const fkd_tokenizer *tok,
                  const uint8_t *text, size_t bytes, int special, fkd_error *err)
{
    *n_tokens = 0;
    if (tok->kind == FKD_TOKENIZER_BPE) {
        if (!tok->bpe)
            return fkd_error_set(err, FKD_E_UNSUPPORTED, "BPE tokenizer has no tables");
        return fkd_bpe_encode(tokens, capacity, n_tokens, tok->bpe, text, bytes, special, err);
    }
    if (bytes > capacity)
        return fkd_error_set(err, FKD_E_LIMIT, "%zu bytes need %zu token slots, have %zu", bytes,
                             bytes, capacity);
    for (size_t i = 0; i < bytes; i++) tokens[i] = text[i];
    *n_tokens = bytes;
    return 0;
}

int fkd_tokenizer_encode(int32_t *tokens, size_t capacity, size_t *n_tokens,
                         const fkd_tokenizer *tok, const uint8_t *text, size_t bytes,
                         fkd_error *err)
{
    return encode(tokens, capacity, n_tokens, tok, text, bytes, 0, err);
}

int fkd_tokenizer_encode_special(int32_t *tokens, size_t capacity, size_t *n_tokens,
                                 const fkd_tokenizer *tok, const uint8_t *text, size_t bytes,
                                 fkd_error *err)
{
    return encode(tokens, capacity, n_tokens, tok, text, bytes, 1, err);
}

int fkd_tokenizer_decode(uint8_t *out, size_t capacity, size_t *n_bytes,
                         const fkd_tokenizer *tok, const int32_t *tokens, size_t n_tokens,
                         fkd_error *err)
{
    *n_bytes = 0;
    if (tok->kind == FKD_TOKENIZER_BPE) {
        if (!tok->bpe)
            return fkd_error_set(err, FKD_E_UNSUPPORTED, "BPE tokenizer has no tables");
        return fkd_bpe_decode(out, capacity, n_bytes, tok->bpe, tokens, n_tokens, err);
    }
    if (n_tokens > capacity)
        return fkd_error_set(err, FKD_E_LIMIT, "%zu tokens need %zu bytes, have %zu", n_tokens,
                             n_tokens, capacity);
    for (size_t i = 0; i < n_tokens; i++) {
        if (tokens[i] < 0 || tokens[i] > 255)
            return fkd_error_set(err, FKD_E_INVALID_ARG, "token %d at %zu is not a byte",
                                 tokens[i], i);
        out[i] = (uint8_t)tokens[i];
    }
    *n_bytes = n_tokens;
    return 0;
}
