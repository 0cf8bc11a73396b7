/* threads.c — one setting for both thread pools: BLIS's (matrix products)
 * and OpenMP's (element-wise kernels). */
#include "fkd_train.h"

#include <blis.h>
#include <omp.h>

void fkd_train_set_threads(int n)
{
    if (n < 1) n = 1;
    omp_set_num_threads(n);
    bli_thread_set_num_threads(n);
}

int fkd_train_get_threads(void) { return omp_get_max_threads(); }
