/* bench_llamacpp.h — what `fedkd bench teacher` and `fedkd bench quant`
 * share to set our quantized generation beside llama.cpp's: the peer's
 * figure from its llama-bench binary, and ours measured the way llama-bench
 * measures it (a warm-up, then the mean rate of reps runs from an empty
 * context, no sampling). */
#ifndef FKD_BENCH_LLAMACPP_H
#define FKD_BENCH_LLAMACPP_H

#include "fkd_compress.h"

/* llama-bench's mean tokens/s (-p pp -n tg -t threads -r reps) on model;
 * -1 when it cannot be run or prints no figure. */
double bench_llamacpp_rate(const char *bench, const char *model, int pp, int tg, int threads,
                           int reps);

/* Our generation: n tokens one step at a time through fkd_qinfer on qm;
 * mean tokens/s of reps runs after a warm-up, -1 on failure (err set). */
double bench_qinfer_tg_rate(const fkd_qmodel *qm, int n, int reps, fkd_error *err);

/* The benchmark's token stream: spread over [1000, 41000) when the vocabulary
 * has room, else over all of it. */
int32_t bench_token_at(int i, int vocab);

#endif
