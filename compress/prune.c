/* prune.c — magnitude pruning masks over the parameter arena.
 *
 * A mask holds one byte per float of the arena (1 = kept, 0 = pruned). It
 * is computed once on the coordinator, travels with the quantized model
 * (fkd_qmodel.mask) and is handed to train's optimizer (fkd_optimizer.mask),
 * which keeps pruned weights at zero through every client's fine-tuning.
 *
 * Only the block matrices are pruned, each layer's slice on its own so that
 * no layer is emptied by a global threshold: the embedding (every row is
 * some token's), the head and the norm gains are kept whole.
 */
#include "fkd_compress.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int prunable(int t)
{
    return t == FKD_T_WQ || t == FKD_T_WK || t == FKD_T_WV || t == FKD_T_WO ||
           t == FKD_T_W1 || t == FKD_T_W3 || t == FKD_T_W2;
}

/* Calls fn on each layer slice (offset, count, row length) of the prunable tensors. */
typedef int (*slice_fn)(uint8_t *mask, const float *w, size_t count, size_t row_len, void *ctx);

static int for_each_slice(uint8_t *mask, const fkd_params *params, slice_fn fn, void *ctx)
{
    for (int t = 0; t < FKD_T_COUNT; t++) {
        const fkd_tensor_info *ti = &params->tensors[t];
        if (!prunable(t) || ti->count == 0) continue;
        size_t layers = ti->ndim == 3 ? (size_t)ti->shape[0] : 1;
        size_t slice = ti->count / layers, row_len = (size_t)ti->shape[ti->ndim - 1];
        for (size_t l = 0; l < layers; l++) {
            size_t off = ti->offset + l * slice;
            if (fn(mask + off, params->memory + off, slice, row_len, ctx) < 0) return -1;
        }
    }
    return 0;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Prunes exactly floor(sparsity * count) of the smallest |w|; ties at the
 * threshold go in index order. */
static int prune_slice_magnitude(uint8_t *mask, const float *w, size_t count, size_t row_len,
                                 void *ctx)
{
    float sparsity = *(const float *)ctx;
    size_t n_prune = (size_t)floor((double)sparsity * (double)count);
    memset(mask, 1, count);
    if (n_prune == 0) return 0;
    float *mag = malloc(count * sizeof *mag);
    if (!mag) return -1;
    for (size_t i = 0; i < count; i++) mag[i] = fabsf(w[i]);
    qsort(mag, count, sizeof *mag, cmp_float);
    float t = mag[n_prune - 1];
    free(mag);
    size_t below = 0;
    for (size_t i = 0; i < count; i++) below += fabsf(w[i]) < t;
    size_t ties = n_prune - below;
    for (size_t i = 0; i < count; i++) {
        float a = fabsf(w[i]);
        if (a < t) mask[i] = 0;
        else if (a == t && ties > 0) {
            mask[i] = 0;
            ties--;
        }
    }
    return 0;
}

int fkd_prune_magnitude(uint8_t *mask, const fkd_params *params, float sparsity, fkd_error *err)
{
    if (!(sparsity >= 0.0f && sparsity < 1.0f))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "sparsity must be in [0, 1), got %g", (double)sparsity);
    memset(mask, 1, params->n_params);
    if (for_each_slice(mask, params, prune_slice_magnitude, &sparsity) < 0)
        return fkd_error_set(err, FKD_E_NOMEM, "out of memory computing a pruning mask");
    return 0;
}

/* In each group of 4 along a row, drops the two smallest |w| (the earlier
 * one on a tie). */
static int prune_slice_2_4(uint8_t *mask, const float *w, size_t count, size_t row_len, void *ctx)
{
    (void)ctx;
    if (row_len % 4 != 0) return -1;
    for (size_t g = 0; g < count; g += 4) {
        int keep[4] = {1, 1, 1, 1};
        for (int drop = 0; drop < 2; drop++) {
            int worst = -1;
            for (int j = 0; j < 4; j++)
                if (keep[j] && (worst < 0 || fabsf(w[g + j]) < fabsf(w[g + worst]))) worst = j;
            keep[worst] = 0;
        }
        for (int j = 0; j < 4; j++) mask[g + j] = (uint8_t)keep[j];
    }
    return 0;
}

int fkd_prune_2_4(uint8_t *mask, const fkd_params *params, fkd_error *err)
{
    memset(mask, 1, params->n_params);
    if (for_each_slice(mask, params, prune_slice_2_4, NULL) < 0)
        return fkd_error_set(err, FKD_E_MISMATCH, "2:4 pruning needs every matrix row length to be a multiple of 4");
    return 0;
}

void fkd_prune_apply(float *weights, const uint8_t *mask, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!mask[i]) weights[i] = 0.0f;
}

double fkd_prune_sparsity(const uint8_t *mask, const fkd_params *params)
{
    size_t zeros = 0, total = 0;
    for (int t = 0; t < FKD_T_COUNT; t++) {
        const fkd_tensor_info *ti = &params->tensors[t];
        if (!prunable(t)) continue;
        for (size_t i = 0; i < ti->count; i++) zeros += mask[ti->offset + i] == 0;
        total += ti->count;
    }
    return total ? (double)zeros / (double)total : 0.0;
}
