/* calib_fixture.h — the tiny random model and calibration text shared by the
 * importance-matrix and GPTQ tests: 2 blocks, dim 64, 4 heads in 2 kv
 * groups, FFN 96, 64 tokens, context 32, uneven attention-norm gains (so
 * the input channels differ), CALIB_TOKENS random tokens. */
#ifndef CALIB_FIXTURE_H
#define CALIB_FIXTURE_H

#include "fkd_compress.h"

#define CALIB_TOKENS 96

typedef struct {
    fkd_params p;
    fkd_token_stream text;
    int32_t tokens[CALIB_TOKENS];
} calib_fixture;

fkd_model_config calib_fixture_config(void);
/* A fresh fixture (NULL when out of memory): weights from weight_seed,
 * gains and tokens from text_seed. */
calib_fixture *calib_fixture_new(uint64_t weight_seed, uint64_t text_seed);
void calib_fixture_free(calib_fixture *f);

#endif
