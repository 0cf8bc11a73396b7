/* calib_fixture.c — see calib_fixture.h. */
#include "calib_fixture.h"

#include <stdlib.h>

fkd_model_config calib_fixture_config(void)
{
    return (fkd_model_config){.vocab = 64, .dim = 64, .n_layers = 2, .n_heads = 4,
                              .n_kv_heads = 2, .ffn_hidden = 96, .max_seq = 32,
                              .tie_embeddings = 1, .rope_theta = 10000.0f, .norm_eps = 1e-5f};
}

calib_fixture *calib_fixture_new(uint64_t weight_seed, uint64_t text_seed)
{
    calib_fixture *f = calloc(1, sizeof *f);
    fkd_model_config cfg = calib_fixture_config();
    if (!f || fkd_params_init(&f->p, &cfg, NULL) < 0) {
        free(f);
        return NULL;
    }
    fkd_params_randomize(&f->p, weight_seed);
    fkd_rng rng;
    fkd_rng_seed(&rng, text_seed);
    for (size_t j = 0; j < f->p.tensors[FKD_T_ATTN_NORM].count; j++)
        f->p.memory[f->p.tensors[FKD_T_ATTN_NORM].offset + j] = 0.2f + 3.0f * fkd_rng_uniform(&rng);
    for (int i = 0; i < CALIB_TOKENS; i++)
        f->tokens[i] = (int32_t)(fkd_rng_u64(&rng) % (uint64_t)cfg.vocab);
    f->text = (fkd_token_stream){.tokens = f->tokens, .n = CALIB_TOKENS};
    return f;
}

void calib_fixture_free(calib_fixture *f)
{
    if (!f) return;
    fkd_params_free(&f->p);
    free(f);
}
