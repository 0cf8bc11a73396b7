/* agg_fedavg.c — FedAvg (McMahan et al.): the master moves by the mean of the
 * clients' deltas, weighted by their samples, times server_lr (1 = plain
 * averaging of the clients' models). */
#include "agg_internal.h"

static int fedavg_apply(fkd_coord_agg *a, float *master, const fkd_coord_update *ups, int k,
                        fkd_error *err)
{
    fkd_agg_weighted_mean(a->scratch, ups, k, a->n);
    fkd_agg_step(master, a->scratch, a->server_lr, a->n);
    a->step++;
    return 0;
}

const fkd_coord_agg_ops fkd_coord_agg_fedavg = {"fedavg", 0, fedavg_apply};
