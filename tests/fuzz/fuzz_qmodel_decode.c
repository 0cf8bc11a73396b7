/* fuzz_qmodel_decode.c — libFuzzer target for the quantized-model decoder
 * (the task's weights a client receives). Any input must be refused or
 * decoded without reading outside it. A decoded model must re-encode to
 * exactly the input (the format has one encoding per model; the CRC is not
 * compared, as fuzzing builds skip it), dequantize, and run a forward step. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fkd_compress.h"

#define FUZZ_MAX_STEP_PARAMS 200000 /* run the forward pass on small models only */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fkd_qmodel qm;
    if (fkd_qmodel_decode(&qm, data, size, NULL) < 0) return 0;
    uint8_t *again;
    size_t bytes;
    if (fkd_qmodel_encode(&again, &bytes, &qm, NULL) < 0) abort();
    if (bytes != size || memcmp(again, data, size - 4) != 0) abort();
    free(again);
    if (qm.n_params <= FUZZ_MAX_STEP_PARAMS) {
        fkd_params p;
        if (fkd_qmodel_dequantize(&p, &qm, NULL) == 0) fkd_params_free(&p);
        fkd_qinfer st;
        if (fkd_qinfer_init(&st, &qm, FKD_QKERNEL_AUTO, NULL) == 0) {
            (void)fkd_qinfer_step(&st, 0);
            (void)fkd_qinfer_step(&st, qm.cfg.vocab - 1);
            fkd_qinfer_free(&st);
        }
    }
    fkd_qmodel_free(&qm);
    return 0;
}
