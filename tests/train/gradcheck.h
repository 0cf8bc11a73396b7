/* gradcheck.h — central finite differences against an analytic gradient,
 * shared by the train/ tests. */
#ifndef FKD_GRADCHECK_H
#define FKD_GRADCHECK_H

#include <stddef.h>
#include <stdint.h>

/* Returns the scalar loss of the function under test at the current inputs. */
typedef double (*gradcheck_loss)(void *ctx);

/* Perturbs up to max_checks entries of x (spread over the array) by ±eps,
 * compares (f(x+eps) - f(x-eps)) / 2eps with analytic[i]; fails the cmocka
 * test with the worst index when |diff| > atol + rtol*|fd|. Returns the
 * largest relative error seen. */
double gradcheck(float *x, size_t n, const float *analytic, gradcheck_loss f, void *ctx,
                 float eps, double atol, double rtol, int max_checks, const char *name);

/* A model and one batch (B*T tokens and targets): gradcheck_model_loss(ctx)
 * runs forward and backward (gradients accumulate) and returns the loss. */
typedef struct {
    void *model;              /* fkd_model * */
    const int32_t *tokens, *targets;
} gradcheck_model;
double gradcheck_model_loss(void *ctx);

/* Fills x with N(0, scale) values from a seeded generator. */
void fill_normal(float *x, size_t n, float scale, uint64_t seed);
/* sum_i out[i] * r[i] in double: the scalar "loss" whose gradient wrt out is r. */
double dot_double(const float *out, const float *r, size_t n);

#endif
