/* gradcheck.c — see gradcheck.h. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#include <cmocka.h>

#include "fkd_train.h"
#include "gradcheck.h"

double gradcheck(float *x, size_t n, const float *analytic, gradcheck_loss f, void *ctx,
                 float eps, double atol, double rtol, int max_checks, const char *name)
{
    size_t stride = n > (size_t)max_checks ? n / (size_t)max_checks : 1;
    double worst = 0.0;
    for (size_t i = 0; i < n; i += stride) {
        float saved = x[i];
        x[i] = saved + eps;
        double up = f(ctx);
        x[i] = saved - eps;
        double down = f(ctx);
        x[i] = saved;
        double fd = (up - down) / (2.0 * (double)eps);
        double diff = fabs(fd - (double)analytic[i]);
        double rel = diff / (fabs(fd) + 1e-6);
        if (rel > worst && diff > atol) worst = rel;
        if (diff > atol + rtol * fabs(fd)) {
            print_error("%s[%zu]: analytic %.6g, finite difference %.6g\n", name, i,
                        (double)analytic[i], fd);
            fail();
        }
    }
    return worst;
}

void fill_normal(float *x, size_t n, float scale, uint64_t seed)
{
    fkd_rng rng;
    fkd_rng_seed(&rng, seed);
    for (size_t i = 0; i < n; i++) x[i] = scale * fkd_rng_normal(&rng);
}

double dot_double(const float *out, const float *r, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)out[i] * r[i];
    return s;
}

double gradcheck_model_loss(void *ctx)
{
    gradcheck_model *g = ctx;
    fkd_loss_stats st;
    fkd_model_forward(g->model, g->tokens, NULL);
    fkd_model_backward(g->model, g->tokens, g->targets, NULL, NULL, &st, 1.0f);
    return st.loss;
}
