/* agg_internal.h — what the aggregation strategies share (agg.c). Private to
 * coordinator/. */
#ifndef FKD_AGG_INTERNAL_H
#define FKD_AGG_INTERNAL_H

#include "fkd_coordinator.h"

/* out (n) = sum_i w_i delta_i / sum_i w_i, weights <= 0 counted as 1. */
void fkd_agg_weighted_mean(float *out, const fkd_coord_update *ups, int k, size_t n);
/* master (n) += lr * d */
void fkd_agg_step(float *master, const float *d, float lr, size_t n);
/* Server adaptive optimizer on the mean delta (Reddi et al., "Adaptive
 * Federated Optimization"): yogi 0 = FedAdam, 1 = FedYogi. */
void fkd_agg_adaptive(fkd_coord_agg *a, float *master, const float *mean, int yogi);
/* Euclidean norm of x (n), accumulated in double. */
double fkd_agg_norm(const float *x, size_t n);
/* col (k) = column j of the updates, sorted ascending (agg_median.c). */
void fkd_agg_sorted_column(float *col, const fkd_coord_update *ups, int k, size_t j);

#endif
