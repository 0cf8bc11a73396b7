/* bench_llamacpp.c — the peer's figures from llama.cpp's llama-bench, and
 * our generation rate measured as llama-bench measures its own (see
 * bench_llamacpp.h). */
#include "bench_llamacpp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LINE_BYTES 8192

double bench_llamacpp_rate(const char *bench, const char *model, int pp, int tg, int threads,
                           int reps)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s -m %s -p %d -n %d -t %d -r %d -o jsonl 2>/dev/null", bench,
             model, pp, tg, threads, reps);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char line[LINE_BYTES];
    double rate = -1;
    while (fgets(line, sizeof line, p)) {
        const char *at = strstr(line, "\"avg_ts\":");
        if (at) rate = atof(at + 9);
    }
    pclose(p);
    return rate;
}

int32_t bench_token_at(int i, int vocab)
{
    if (vocab > 41000) return (int32_t)(1000 + (i * 7919) % 40000);
    return (int32_t)((i * 7919) % vocab);
}

double bench_qinfer_tg_rate(const fkd_qmodel *qm, int n, int reps, fkd_error *err)
{
    fkd_qinfer st;
    if (n > qm->cfg.max_seq) n = qm->cfg.max_seq;
    if (fkd_qinfer_init(&st, qm, FKD_QKERNEL_AUTO, err) < 0) return -1;
    double sum = 0;
    for (int r = -1; r < reps; r++) {
        fkd_qinfer_reset(&st);
        double t0 = fkd_time_ms();
        for (int i = 0; i < n; i++) fkd_qinfer_step(&st, bench_token_at(i, qm->cfg.vocab));
        if (r >= 0) sum += n / (fkd_time_ms() - t0) * 1e3;
    }
    fkd_qinfer_free(&st);
    return sum / reps;
}
