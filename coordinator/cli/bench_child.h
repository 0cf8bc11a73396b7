/* bench_child.h — what the benches that measure memory share: running one
 * configuration in a forked child so that its peak RSS is its own. */
#ifndef FKD_BENCH_CHILD_H
#define FKD_BENCH_CHILD_H

#include <stddef.h>

/* Runs fn(result, arg) in a child process and copies its result
 * (result_bytes, plain data) back through a pipe; *peak_rss_mb (may be NULL)
 * gets the child's peak RSS from wait4. The caller must not have started
 * OpenMP or BLIS threads: forking after that is unsafe. 0, or -1 when the
 * child could not be run or did not report. */
int bench_run_child(void *result, size_t result_bytes, double *peak_rss_mb,
                    void (*fn)(void *result, const void *arg), const void *arg);

/* Inside a child: restarts the peak-RSS count at the current RSS, so that
 * what was set up before (a model the device would receive) counts only
 * as far as it stays resident; and reads the peak since. -1 / < 0 where the
 * kernel does not offer it (Linux >= 4.0 does, through /proc). */
int bench_peak_reset(void);
double bench_peak_mb(void);

#endif
