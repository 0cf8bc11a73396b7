/* bench_student.h — what `fedkd bench compress` and `fedkd bench quant`
 * share: real text (the fortune files, every 10th document held out) and a
 * few real training steps of a student on it. */
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

#endif
