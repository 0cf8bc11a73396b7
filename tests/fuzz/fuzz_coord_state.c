/* fuzz_coord_state.c — the coordinator's checkpoint decoder must refuse any
 * malformed file with an error, never crash, over-read or leak. The input's
 * last 4 bytes are replaced by its CRC-32, so the fuzzer explores the fields
 * behind the checksum instead of stopping at it. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fkd_coordinator.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    if (size >= 4) {
        uint32_t crc = fkd_crc32(0, copy, size - 4);
        for (int i = 0; i < 4; i++) copy[size - 4 + i] = (uint8_t)(crc >> (8 * i));
    }
    fkd_coord_state s;
    fkd_error err;
    if (fkd_coord_state_decode(&s, copy, size, &err) == 0) fkd_coord_state_free(&s);
    free(copy);
    return 0;
}
