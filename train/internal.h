/* internal.h — helpers shared by train/'s own files, not part of the API. */
#ifndef FKD_TRAIN_INTERNAL_H
#define FKD_TRAIN_INTERNAL_H

#include "fkd_train.h"

/* C (m,n) = alpha * op(A) · op(B) + beta * C, all row-major with the given
 * row strides; trans_a / trans_b say whether A / B are stored transposed.
 * single_thread = 1 when called from inside an OpenMP parallel region. */
void fkd_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a,
               int lda, const float *b, int ldb, float beta, float *c, int ldc,
               int single_thread);

/* Allocates 64-byte aligned, zeroed floats; NULL on failure. */
float *fkd_alloc_floats(size_t n);

#endif
