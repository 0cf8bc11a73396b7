/* fuzz_update_decode.c — libFuzzer target for the compressed-update decoder
 * (bytes a client sends the coordinator). Any input must be refused or
 * decoded without reading outside it; a decoded update is finite. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "fkd_compress.h"

#define FUZZ_MAX_N (1u << 20) /* the coordinator knows n; bound the allocation here */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n = 0;
    if (fkd_update_peek(&n, NULL, NULL, NULL, data, size, NULL) < 0 || n > FUZZ_MAX_N) {
        float one;
        (void)fkd_update_decompress(&one, 1, data, size, NULL); /* the refusal path too */
        return 0;
    }
    float *dense = malloc((n ? n : 1) * sizeof *dense);
    if (!dense) return 0;
    if (fkd_update_decompress(dense, n, data, size, NULL) == 0)
        for (size_t i = 0; i < n; i++)
            if (!isfinite(dense[i])) abort();
    free(dense);
    return 0;
}
