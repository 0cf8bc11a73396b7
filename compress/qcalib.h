/* qcalib.h — compress/'s calibration pass, shared by the importance matrix
 * (qimatrix.c) and GPTQ (quant_gptq.c): one window of the residual stream
 * through one block with train's kernels (the activations inside a block
 * are private to the training forward), each block matrix's input handed
 * to a collector. Not part of the public API. */
#ifndef FKD_QCALIB_H
#define FKD_QCALIB_H

#include "fkd_compress.h"

typedef struct {
    int T, C, H, KV, hd, F;
    float *x;  /* (T, C): the residual stream, advanced in place block by block */
    float *xn, *rstd, *q, *k, *v, *att, *ao, *tmp, *h1, *h3, *hh, *rope_cos, *rope_sin;
    float *memory;
} fkd_qcalib;

/* What a block matrix hears: kind is FKD_T_WQ (the input of wq, wk and wv),
 * FKD_T_WO, FKD_T_W1 (of w1 and w3) or FKD_T_W2; x is (T, n). */
typedef void (*fkd_qcalib_fn)(void *ctx, int kind, int layer, const float *x, int T, int n);

int fkd_qcalib_init(fkd_qcalib *p, const fkd_model_config *m, int T, fkd_error *err);
void fkd_qcalib_free(fkd_qcalib *p);
/* p->x through block l of m, in place, fn told each matrix input. */
void fkd_qcalib_block(fkd_qcalib *p, const fkd_params *m, int l, fkd_qcalib_fn fn, void *ctx);
/* The input length of block matrix t (its row length). */
size_t fkd_qcalib_input_len(int t, const fkd_model_config *m);
/* The kind whose input t reads (wk, wv: wq's; w3: w1's; the rest: its own). */
int fkd_qcalib_input_kind(int t);
/* Checks a calibration text: n_tokens / seq_len >= 1 windows of 1 to
 * max_seq tokens that the text holds, every token in the vocabulary. */
int fkd_qcalib_check(const fkd_model_config *m, const fkd_token_stream *text, int n_tokens,
                     int seq_len, fkd_error *err);
/* The first token of window s of n_seq spread evenly over text. */
const int32_t *fkd_qcalib_window(const fkd_token_stream *text, int seq_len, int s, int n_seq);

#endif
