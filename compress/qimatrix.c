/* qimatrix.c — the importance matrix of int4 quantization: per block matrix
 * and layer, the mean square of each input channel's activation on some
 * calibration text.
 *
 * Why: a matrix W's int4 error E reaches its output as E x. Over inputs x
 * with independent channels, the expected squared output error of row i is
 * sum_j E_ij^2 E[x_j^2], so weighting the block's squared error by E[x_j^2]
 * (fkd_q4_*_quantize_row_mse) minimises what the next layer sees, not the
 * error of the weights themselves. RMSNorm outputs have a few channels far
 * louder than the rest, which is where plain least squares spends its bits
 * wrongly.
 *
 * The pass (qcalib.c) runs the model one sequence at a time with train's
 * kernels, block by block. It needs no logits: the head is Q8_0 in every
 * int4 scheme.
 */
#include "qcalib.h"

#include <stdlib.h>
#include <string.h>

/* sums[t] + layer * n += the squares of x's channels over its T rows */
static void add_squares(void *ctx, int kind, int layer, const float *x, int T, int n)
{
    double *out = ((double **)ctx)[kind] + (size_t)layer * n;
    for (int i = 0; i < T; i++)
        for (int j = 0; j < n; j++) out[j] += (double)x[(size_t)i * n + j] * x[(size_t)i * n + j];
}

void fkd_qimatrix_free(fkd_qimatrix *im)
{
    if (!im) return;
    free(im->memory);
    memset(im, 0, sizeof *im);
}

int fkd_qimatrix_compute(fkd_qimatrix *im, const fkd_params *params, const fkd_token_stream *text,
                         int n_tokens, int seq_len, fkd_error *err)
{
    const fkd_model_config *m = &params->cfg;
    memset(im, 0, sizeof *im);
    if (fkd_qcalib_check(m, text, n_tokens, seq_len, err) != 0) return -1;
    int n_seq = n_tokens / seq_len;
    size_t L = (size_t)m->n_layers, total = 0;
    for (int t = 0; t < FKD_T_COUNT; t++)
        if (fkd_tensor_is_block_matrix(t)) total += L * fkd_qcalib_input_len(t, m);
    fkd_qcalib p;
    if (fkd_qcalib_init(&p, m, seq_len, err) != 0) return -1;
    /* summed in double (a channel's square over thousands of positions), stored as float */
    double *sums[FKD_T_COUNT] = {0}, *acc = calloc(total, sizeof *acc);
    im->memory = malloc(total * sizeof(float));
    if (!acc || !im->memory) {
        free(acc);
        fkd_qcalib_free(&p);
        fkd_qimatrix_free(im);
        return fkd_error_set(err, FKD_E_NOMEM, "out of memory for an importance matrix");
    }
    size_t at = 0;
    for (int t = 0; t < FKD_T_COUNT; t++) {
        if (!fkd_tensor_is_block_matrix(t)) continue;
        sums[t] = acc + at;
        im->w[t] = im->memory + at;
        at += L * fkd_qcalib_input_len(t, m);
    }
    for (int s = 0; s < n_seq; s++) { /* windows spread evenly over the text */
        const int32_t *tokens = fkd_qcalib_window(text, seq_len, s, n_seq);
        fkd_embedding_forward(p.x, tokens, params->p.tok_emb, seq_len, p.C);
        for (int l = 0; l < m->n_layers; l++) fkd_qcalib_block(&p, params, l, add_squares, sums);
    }
    /* wk, wv read wq's input and w3 reads w1's: the same sums */
    double n = (double)n_seq * seq_len;
    for (int t = 0; t < FKD_T_COUNT; t++) {
        if (!sums[t]) continue;
        const double *src = sums[fkd_qcalib_input_kind(t)];
        for (size_t i = 0; i < L * fkd_qcalib_input_len(t, m); i++) im->w[t][i] = (float)(src[i] / n);
    }
    im->cfg = *m;
    im->tokens = (int64_t)n;
    free(acc);
    fkd_qcalib_free(&p);
    return 0;
}
