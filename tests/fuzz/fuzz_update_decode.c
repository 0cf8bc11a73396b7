/* fuzz_update_decode.c — libFuzzer target for the compressed-update decoder
 * (bytes a client sends the coordinator): the header, the Rice gap stream
 * or bitmap of the indices, the scales and the packed codes. Any input must
 * be refused or decoded without reading outside it; a decoded update is
 * finite and holds at most the k entries its header announces. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "fkd_compress.h"

#define FUZZ_MAX_N (1u << 20) /* the coordinator knows n; bound the allocation here */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n = 0, k = 0;
    if (fkd_update_peek(&n, &k, NULL, NULL, data, size, NULL) < 0 || n > FUZZ_MAX_N) {
        float one;
        (void)fkd_update_decompress(&one, 1, data, size, NULL); /* the refusal path too */
        return 0;
    }
    float *dense = malloc((n ? n : 1) * sizeof *dense);
    if (!dense) return 0;
    if (fkd_update_decompress(dense, n, data, size, NULL) == 0) {
        size_t nonzero = 0;
        for (size_t i = 0; i < n; i++) {
            if (!isfinite(dense[i])) abort();
            nonzero += dense[i] != 0.0f;
        }
        if (nonzero > k) abort();
    }
    free(dense);
    return 0;
}
