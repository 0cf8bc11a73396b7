/* threads.c — one setting for both thread pools: BLIS's (matrix products)
 * and OpenMP's (element-wise kernels), and the floating-point mode they
 * run in. */
#include "fkd_train.h"
#include "internal.h"

#include <blis.h>
#include <omp.h>
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#endif

/* Subnormal floats (below 1.2e-38) cost x86 cores about a hundred cycles
 * per operation: a training run whose gradients or activations drift into
 * them slows down several times (a simulated central run took 3x the CPU
 * time per step of the same shape's other runs). Training never needs
 * them, so results are flushed to zero and subnormal inputs read as zero
 * (FTZ and DAZ), as PyTorch's set_flush_denormal does. New threads inherit
 * the mode from the thread that creates them; OpenMP's pool threads are
 * set here as well. */
static void flush_subnormals_here(void)
{
#if defined(__SSE__) || defined(__x86_64__)
    _mm_setcsr(_mm_getcsr() | 0x8040u); /* FTZ (bit 15) | DAZ (bit 6) */
#elif defined(__aarch64__)
    unsigned long fpcr;
    __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
    __asm__ volatile("msr fpcr, %0" : : "r"(fpcr | (1ul << 24))); /* FZ */
#endif
}

void fkd_flush_subnormals(void)
{
    flush_subnormals_here();
#pragma omp parallel
    flush_subnormals_here();
}

void fkd_train_set_threads(int n)
{
    if (n < 1) n = 1;
    omp_set_num_threads(n);
    bli_thread_set_num_threads(n);
    fkd_flush_subnormals();
}

int fkd_train_get_threads(void) { return omp_get_max_threads(); }
