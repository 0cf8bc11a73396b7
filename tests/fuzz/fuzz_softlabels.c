/* fuzz_softlabels.c — the soft-label shard decoder (file and TASK payload)
 * must refuse any malformed input with an error, never crash, over-read or
 * leak; what it accepts must encode again (to the same size). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fkd_train.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fkd_softlabel_shard s;
    fkd_error err;
    if (fkd_softlabels_decode(&s, data, size, &err) != 0) return 0;
    uint8_t *again;
    size_t bytes;
    if (fkd_softlabels_encode(&again, &bytes, &s, &err) != 0) abort();
    if (bytes != size) abort();
    free(again);
    fkd_softlabels_free(&s);
    return 0;
}
