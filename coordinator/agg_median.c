/* agg_median.c — coordinate-wise median (Yin et al.): each weight moves by
 * the median of the clients' deltas for it, so fewer than half of the
 * clients, however large their updates, cannot drag it past the honest
 * range. Unweighted: a weight would let a liar claim many samples. */
#include "agg_internal.h"

#include <stdlib.h>

/* Insertion sort: k is the number of updates in a round (small). */
static void sort_small(float *v, int k)
{
    for (int i = 1; i < k; i++) {
        float x = v[i];
        int j = i - 1;
        while (j >= 0 && v[j] > x) {
            v[j + 1] = v[j];
            j--;
        }
        v[j + 1] = x;
    }
}

void fkd_agg_sorted_column(float *col, const fkd_coord_update *ups, int k, size_t j)
{
    for (int i = 0; i < k; i++) col[i] = ups[i].delta[j];
    sort_small(col, k);
}

static int median_apply(fkd_coord_agg *a, float *master, const fkd_coord_update *ups, int k,
                        fkd_error *err)
{
    float *col = malloc((size_t)k * sizeof *col);
    if (!col) return fkd_error_set(err, FKD_E_NOMEM, "no memory for the median");
    for (size_t j = 0; j < a->n; j++) {
        fkd_agg_sorted_column(col, ups, k, j);
        a->scratch[j] = k % 2 ? col[k / 2] : 0.5f * (col[k / 2 - 1] + col[k / 2]);
    }
    free(col);
    fkd_agg_step(master, a->scratch, a->server_lr, a->n);
    a->step++;
    return 0;
}

const fkd_coord_agg_ops fkd_coord_agg_median = {"median", 0, median_apply};
