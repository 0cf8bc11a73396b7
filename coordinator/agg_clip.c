/* agg_clip.c — norm clipping (Sun et al., "Can you really backdoor federated
 * learning?"): every delta longer than a bound is scaled down to it, then
 * the deltas are averaged as in FedAvg. The bound is clip_norm, or, when
 * that is 0, the median of the round's norms, which adapts as training
 * progresses and which a minority cannot move. A scaled-up malicious update
 * then weighs no more than an honest one. */
#include "agg_internal.h"

#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static int clip_apply(fkd_coord_agg *a, float *master, const fkd_coord_update *ups, int k,
                      fkd_error *err)
{
    double *norms = malloc((size_t)k * 2 * sizeof *norms);
    if (!norms) return fkd_error_set(err, FKD_E_NOMEM, "no memory for norm clipping");
    double *sorted = norms + k;
    for (int i = 0; i < k; i++) sorted[i] = norms[i] = fkd_agg_norm(ups[i].delta, a->n);
    qsort(sorted, (size_t)k, sizeof *sorted, cmp_double);
    double bound = a->clip_norm > 0 ? a->clip_norm
                   : k % 2        ? sorted[k / 2]
                                  : 0.5 * (sorted[k / 2 - 1] + sorted[k / 2]);
    double total = 0;
    for (int i = 0; i < k; i++) total += ups[i].weight > 0 ? ups[i].weight : 1;
    memset(a->scratch, 0, a->n * sizeof *a->scratch);
    a->last_clipped = 0;
    for (int i = 0; i < k; i++) {
        double scale = norms[i] > bound && norms[i] > 0 ? bound / norms[i] : 1.0;
        if (scale < 1.0) a->last_clipped++;
        float w = (float)((ups[i].weight > 0 ? ups[i].weight : 1) / total * scale);
        for (size_t j = 0; j < a->n; j++) a->scratch[j] += w * ups[i].delta[j];
    }
    a->last_clip = bound;
    free(norms);
    fkd_agg_step(master, a->scratch, a->server_lr, a->n);
    a->step++;
    return 0;
}

const fkd_coord_agg_ops fkd_coord_agg_clip = {"clip", 0, clip_apply};
