/* fuzz_lora_decode.c — the adapter-file decoder (what a LoRA client uploads)
 * must refuse any malformed input with an error, never crash, over-read or
 * leak; with and without an expected model shape. */
#include <stddef.h>
#include <stdint.h>

#include "fkd_train.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the seed's shape, so the fuzzer also reaches the checks behind it */
    const fkd_model_config expect = {.vocab = 16, .dim = 8, .n_layers = 1, .n_heads = 2,
                                     .n_kv_heads = 1, .ffn_hidden = 8, .max_seq = 8,
                                     .tie_embeddings = 1, .rope_theta = 10000.0f,
                                     .norm_eps = 1e-5f};
    fkd_lora lora;
    fkd_error err;
    if (fkd_lora_decode(&lora, &expect, data, size, &err) == 0) fkd_lora_free(&lora);
    if (fkd_lora_decode(&lora, NULL, data, size, &err) == 0) fkd_lora_free(&lora);
    return 0;
}
