/* agg_trimmed.c — coordinate-wise trimmed mean (Yin et al.): for each weight,
 * drop the floor(trim * k) smallest and largest deltas and average the rest.
 * Tolerates up to that many arbitrary clients and, unlike the median, still
 * averages the honest middle (less noise). At least one value is kept. */
#include "agg_internal.h"

#include <stdlib.h>

static int trimmed_apply(fkd_coord_agg *a, float *master, const fkd_coord_update *ups, int k,
                         fkd_error *err)
{
    int t = (int)(a->trim * (float)k);
    if (k - 2 * t < 1) t = (k - 1) / 2;
    float *col = malloc((size_t)k * sizeof *col);
    if (!col) return fkd_error_set(err, FKD_E_NOMEM, "no memory for the trimmed mean");
    for (size_t j = 0; j < a->n; j++) {
        fkd_agg_sorted_column(col, ups, k, j);
        double s = 0;
        for (int i = t; i < k - t; i++) s += col[i];
        a->scratch[j] = (float)(s / (k - 2 * t));
    }
    free(col);
    fkd_agg_step(master, a->scratch, a->server_lr, a->n);
    a->step++;
    return 0;
}

const fkd_coord_agg_ops fkd_coord_agg_trimmed = {"trimmed", 0, trimmed_apply};
