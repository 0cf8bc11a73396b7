/* agg_fedadam.c — FedAdam (Reddi et al.): the weighted mean delta is a
 * pseudo-gradient for an Adam step on the server, with first and second
 * moments kept across rounds (and in the checkpoint); tau bounds the
 * adaptivity. Helps when clients' deltas are noisy in scale. */
#include "agg_internal.h"

static int fedadam_apply(fkd_coord_agg *a, float *master, const fkd_coord_update *ups, int k,
                         fkd_error *err)
{
    fkd_agg_weighted_mean(a->scratch, ups, k, a->n);
    fkd_agg_adaptive(a, master, a->scratch, 0);
    return 0;
}

const fkd_coord_agg_ops fkd_coord_agg_fedadam = {"fedadam", 1, fedadam_apply};
