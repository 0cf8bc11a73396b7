/* agg_fedprox.c — FedProx (Li et al.): the server side is FedAvg; what
 * differs happens on the clients, whose local objective gets the proximal
 * term mu/2 ||w - w_round||^2 (the coordinator sends prox_mu in every TASK,
 * the client passes the round's weights to the optimizer as prox_ref). It
 * keeps clients with very different data from drifting apart. */
#include "agg_internal.h"

static int fedprox_apply(fkd_coord_agg *a, float *master, const fkd_coord_update *ups, int k,
                         fkd_error *err)
{
    return fkd_coord_agg_fedavg.apply(a, master, ups, k, err);
}

const fkd_coord_agg_ops fkd_coord_agg_fedprox = {"fedprox", 0, fedprox_apply};
