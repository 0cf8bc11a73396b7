/* fuzz_checkpoint.c — the model-file decoder must refuse any malformed input
 * with an error, never crash, over-read or leak. */
#include <stddef.h>
#include <stdint.h>

#include "fkd_train.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fkd_params params;
    fkd_error err;
    if (fkd_checkpoint_decode(&params, data, size, &err) == 0) fkd_params_free(&params);
    return 0;
}
