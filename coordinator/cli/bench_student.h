/* bench_student.h — what the benches that train a student share: real text
 * (the fortune files, every 10th document held out) and a few real training
 * steps on it (`fedkd bench compress`, `fedkd bench quant`); and the timed
 * step loop on random tokens (`fedkd bench train`, `fedkd bench lora`). */
#ifndef FKD_BENCH_STUDENT_H
#define FKD_BENCH_STUDENT_H

#include "fkd_train.h"

#define BENCH_HELDOUT_EVERY 10 /* document i is held out when i % 10 == 0 */

typedef struct {
    fkd_corpus corpus;
    fkd_tokenizer tok;
    fkd_token_stream train, heldout;
} bench_text;

int bench_text_load(bench_text *t, const char *dir, fkd_error *err);
/* A stream of one partition's training documents (a client's local data). */
int bench_text_partition(fkd_token_stream *s, const bench_text *t, int part, fkd_error *err);
void bench_text_free(bench_text *t);

/* Trains params in place: steps AdamW steps of (B, T) random windows of s
 * (batch indices first_batch..), cross-entropy; mask (may be NULL) keeps
 * pruned weights at zero. *loss gets the mean loss of the last step. */
int bench_train_steps(fkd_params *params, const fkd_token_stream *s, int steps, int B, int T,
                      float lr, int64_t first_batch, const uint8_t *mask, double *loss,
                      fkd_error *err);

/* What bench_time_steps measured over its timed steps. */
typedef struct {
    double tokens_per_s, cpu_tokens_per_s; /* wall clock; CPU time of every thread */
    double loss_first, loss_last;          /* mean loss of the first and last step */
} bench_step_rate;

/* Runs warmup + steps optimizer steps of m, each plan->n_micro micro-batches
 * of plan->micro_batch x seq positions (m is sized for them), on batch x seq
 * random tokens and targets (seed 7: speed does not depend on the text), and
 * times the last `steps`. opt updates params from grads: the model's own, or
 * a LoRA's adapters. */
int bench_time_steps(bench_step_rate *rate, fkd_model *m, fkd_optimizer *opt, float *params,
                     float *grads, const fkd_memory_plan *plan, int batch, int seq, int warmup,
                     int steps, fkd_error *err);

#endif
