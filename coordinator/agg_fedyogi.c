/* agg_fedyogi.c — FedYogi (Reddi et al.): as FedAdam, but the second moment
 * moves additively toward the squared delta (v -= (1-b2) d^2 sign(v - d^2)),
 * so it cannot grow without bound after a few large rounds. */
#include "agg_internal.h"

static int fedyogi_apply(fkd_coord_agg *a, float *master, const fkd_coord_update *ups, int k,
                         fkd_error *err)
{
    fkd_agg_weighted_mean(a->scratch, ups, k, a->n);
    fkd_agg_adaptive(a, master, a->scratch, 1);
    return 0;
}

const fkd_coord_agg_ops fkd_coord_agg_fedyogi = {"fedyogi", 1, fedyogi_apply};
