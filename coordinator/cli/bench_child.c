/* bench_child.c — see bench_child.h. */
#include "bench_child.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int bench_run_child(void *result, size_t result_bytes, double *peak_rss_mb,
                    void (*fn)(void *result, const void *arg), const void *arg)
{
    memset(result, 0, result_bytes);
    int fds[2];
    if (pipe(fds) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        close(fds[0]);
        void *r = calloc(1, result_bytes);
        if (r) fn(r, arg);
        ssize_t w = r ? write(fds[1], r, result_bytes) : -1;
        _exit(w == (ssize_t)result_bytes ? 0 : 1);
    }
    close(fds[1]);
    ssize_t got = read(fds[0], result, result_bytes);
    close(fds[0]);
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0 || got != (ssize_t)result_bytes) return -1;
    if (peak_rss_mb) *peak_rss_mb = (double)ru.ru_maxrss / 1024.0;
    return 0;
}

int bench_peak_reset(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return -1;
    int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

double bench_peak_mb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    double mb = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0) mb = atof(line + 6) / 1024.0;
    fclose(f);
    return mb;
}
