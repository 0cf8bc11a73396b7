/* agg.c — the aggregation interface: the table of strategies, their shared
 * state (server moments, scratch) and the arithmetic more than one of them
 * uses. Each strategy lives in its own agg_<name>.c.
 *
 * Every strategy turns the round's client deltas into a step on the fp32
 * master. The result never depends on the order updates arrived in: the
 * engine sorts them by client id first, and each strategy reduces in that
 * order, so a restarted coordinator reproduces a round bit for bit. */
#include "agg_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const fkd_coord_agg_ops *const strategies[] = {
    &fkd_coord_agg_fedavg, &fkd_coord_agg_fedprox, &fkd_coord_agg_fedadam, &fkd_coord_agg_fedyogi,
    &fkd_coord_agg_median, &fkd_coord_agg_trimmed, &fkd_coord_agg_clip,
};

const fkd_coord_agg_ops *fkd_coord_agg_find(const char *name)
{
    for (size_t i = 0; i < sizeof strategies / sizeof strategies[0]; i++)
        if (strcmp(strategies[i]->name, name) == 0) return strategies[i];
    return NULL;
}

int fkd_coord_agg_init(fkd_coord_agg *a, const fkd_coord_config *cfg, size_t n, fkd_error *err)
{
    memset(a, 0, sizeof *a);
    a->ops = fkd_coord_agg_find(cfg->aggregator);
    if (!a->ops)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "aggregator '%s' unknown", cfg->aggregator);
    a->n = n;
    a->server_lr = cfg->server_lr;
    a->beta1 = cfg->beta1;
    a->beta2 = cfg->beta2;
    a->tau = cfg->tau;
    a->trim = cfg->trim;
    a->clip_norm = cfg->clip_norm;
    a->scratch = calloc(n, sizeof *a->scratch);
    if (a->ops->server_moments) {
        a->m = calloc(n, sizeof *a->m);
        a->v = calloc(n, sizeof *a->v);
    }
    if (!a->scratch || (a->ops->server_moments && (!a->m || !a->v))) {
        fkd_coord_agg_free(a);
        return fkd_error_set(err, FKD_E_NOMEM, "no memory for the aggregator (%zu floats)", n);
    }
    return 0;
}

int fkd_coord_agg_apply(fkd_coord_agg *a, float *master, const fkd_coord_update *ups, int k,
                        fkd_error *err)
{
    if (k < 1) return fkd_error_set(err, FKD_E_INVALID_ARG, "no updates to aggregate");
    return a->ops->apply(a, master, ups, k, err);
}

void fkd_coord_agg_free(fkd_coord_agg *a)
{
    free(a->m);
    free(a->v);
    free(a->scratch);
    a->m = a->v = a->scratch = NULL;
}

void fkd_agg_weighted_mean(float *out, const fkd_coord_update *ups, int k, size_t n)
{
    double total = 0;
    for (int i = 0; i < k; i++) total += ups[i].weight > 0 ? ups[i].weight : 1;
    memset(out, 0, n * sizeof *out);
    for (int i = 0; i < k; i++) {
        float w = (float)((ups[i].weight > 0 ? ups[i].weight : 1) / total);
        const float *d = ups[i].delta;
        for (size_t j = 0; j < n; j++) out[j] += w * d[j];
    }
}

void fkd_agg_step(float *master, const float *d, float lr, size_t n)
{
    for (size_t j = 0; j < n; j++) master[j] += lr * d[j];
}

void fkd_agg_adaptive(fkd_coord_agg *a, float *master, const float *mean, int yogi)
{
    float b1 = a->beta1, b2 = a->beta2;
    for (size_t j = 0; j < a->n; j++) {
        float d = mean[j], d2 = d * d;
        a->m[j] = b1 * a->m[j] + (1 - b1) * d;
        if (yogi) {
            float s = a->v[j] - d2;
            a->v[j] -= (1 - b2) * d2 * (float)((s > 0) - (s < 0));
        } else {
            a->v[j] = b2 * a->v[j] + (1 - b2) * d2;
        }
        master[j] += a->server_lr * a->m[j] / (sqrtf(a->v[j]) + a->tau);
    }
    a->step++;
}

double fkd_agg_norm(const float *x, size_t n)
{
    double s = 0;
    for (size_t j = 0; j < n; j++) s += (double)x[j] * x[j];
    return sqrt(s);
}
