/* tokenizer_bpe.h — private to train/: the hooks through which tokenizer.c
 * reaches the byte-level BPE of tokenizer_bpe.c. */
#ifndef FKD_TOKENIZER_BPE_H
#define FKD_TOKENIZER_BPE_H

#include "fkd_train.h"

/* special = 1: control and user-defined tokens written in the text map to
 * their ids; 0: they are ordinary text. */
int fkd_bpe_encode(int32_t *tokens, size_t capacity, size_t *n_tokens, const fkd_bpe *bpe,
                   const uint8_t *text, size_t bytes, int special, fkd_error *err);
int fkd_bpe_decode(uint8_t *out, size_t capacity, size_t *n_bytes, const fkd_bpe *bpe,
                   const int32_t *tokens, size_t n_tokens, fkd_error *err);
void fkd_bpe_free(fkd_bpe *bpe);

#endif
