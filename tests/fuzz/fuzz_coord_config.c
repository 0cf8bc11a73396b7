/* fuzz_coord_config.c — a configuration file (common/kvconf.c splitting
 * lines, coordinator/config.c parsing values) must be refused with an error
 * naming the line, never crash or over-read. */
#include <stddef.h>
#include <stdint.h>

#include "fkd_coordinator.h"

static int set(void *ctx, const char *key, const char *value, fkd_error *err)
{
    return fkd_coord_config_set(ctx, key, value, err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fkd_coord_config cfg;
    fkd_coord_config_defaults(&cfg);
    fkd_error err;
    if (fkd_kvconf_parse((const char *)data, size, "fuzz.conf", set, &cfg, &err) == 0)
        fkd_coord_config_validate(&cfg, &err);
    return 0;
}
