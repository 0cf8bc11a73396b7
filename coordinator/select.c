/* select.c — who takes part in a round. The count is a fraction of the
 * clients connected, bounded by min_clients and max_clients; the members are
 * drawn uniformly with the coordinator's seeded RNG (saved in every
 * checkpoint) from the candidates in a fixed order (sorted by id), so a
 * restarted coordinator draws the same clients. */
#include "fkd_coordinator.h"

#include <math.h>
#include <stdlib.h>

int fkd_coord_target(const fkd_coord_config *cfg, int n_available)
{
    /* fraction is a float: 0.1f * 200 is 20.0000003, which must give 20. */
    int t = (int)ceil((double)cfg->fraction * n_available - 1e-4);
    if (t < cfg->min_clients) t = cfg->min_clients;
    if (cfg->max_clients > 0 && t > cfg->max_clients) t = cfg->max_clients;
    if (t > n_available) t = n_available;
    return t;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

int fkd_coord_select(int *out, int how_many, int n, fkd_rng *rng)
{
    if (how_many > n) how_many = n;
    if (how_many <= 0) return 0;
    int *idx = malloc((size_t)n * sizeof *idx);
    if (!idx) return -1;
    for (int i = 0; i < n; i++) idx[i] = i;
    for (int i = 0; i < how_many; i++) {
        int j = i + (int)fkd_rng_below(rng, (uint32_t)(n - i));
        int t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
    for (int i = 0; i < how_many; i++) out[i] = idx[i];
    free(idx);
    qsort(out, (size_t)how_many, sizeof *out, cmp_int);
    return how_many;
}
