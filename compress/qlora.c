/* qlora.c — a quantized model as the frozen base of a LoRA client (QLoRA).
 *
 * train/ defines the weight source: a function that writes rows of one
 * layer's matrix as fp32 into the model's scratch. Here it reads them from
 * an fkd_qmodel's blocks (Q8_0, Q4_0, Q4_1, F16 or F32) with the row
 * dequantizers: the block matrices a layer at a time, the embedding a row
 * per token and the head in slices of rows. The device holds the model
 * int8/int4, its norm gains in fp32, and one matrix of fp32 scratch. Pruned
 * weights dequantize to exact zeros, as fkd_qmodel_dequantize gives them.
 *
 * Not here: the adapters themselves and the training step (train/lora.c).
 */
#include "fkd_compress.h"

#include <string.h>

/* Rows of a tensor per layer: (L, rows, cols) for block matrices, (V, C)
 * for the embedding and head, which are one "layer". */
static size_t rows_per_layer(const fkd_tensor_info *ti)
{
    return ti->ndim == 3 ? (size_t)ti->shape[1] : (size_t)ti->shape[0];
}

static void qlora_rows(float *out, void *user, int tensor, int layer, size_t row0, size_t n_rows)
{
    const fkd_qmodel *qm = user;
    if (tensor == FKD_T_HEAD && qm->cfg.tie_embeddings) tensor = FKD_T_TOK_EMB;
    const fkd_tensor_info *ti = &qm->tensors[tensor];
    const fkd_qtensor *q = &qm->q[tensor];
    size_t cols = q->row_len, row = (size_t)layer * rows_per_layer(ti) + row0;
    size_t row_bytes = fkd_qtype_row_bytes(q->type, cols);
    fkd_dequantize_row(out, q->type, q->data + row * row_bytes, n_rows * cols);
    if (qm->mask) fkd_prune_apply(out, qm->mask + ti->offset + row * cols, n_rows * cols);
}

/* The row length a matrix must have to be served: block matrices by their
 * shape, the embedding and an untied head by the width; 0 = not served. */
static int served_cols(const fkd_model_config *cfg, int t)
{
    int rows, cols;
    if (fkd_config_matrix_shape(&rows, &cols, cfg, t) == 0) return cols;
    if (t == FKD_T_TOK_EMB || (t == FKD_T_HEAD && !cfg->tie_embeddings)) return cfg->dim;
    return 0;
}

int fkd_qlora_source(fkd_weight_source *src, const fkd_qmodel *qm, fkd_error *err)
{
    memset(src, 0, sizeof *src);
    for (int t = 0; t < FKD_T_COUNT; t++) {
        int cols = served_cols(&qm->cfg, t);
        if (!cols) continue;
        const fkd_qtensor *q = &qm->q[t];
        if (!q->data || q->row_len != (size_t)cols || q->count != qm->tensors[t].count ||
            fkd_qtype_row_bytes(q->type, (size_t)cols) == 0)
            return fkd_error_set(err, FKD_E_INVALID_ARG, "quantized model tensor %s does not "
                                 "hold rows of %d values; it cannot be a QLoRA base",
                                 qm->tensors[t].name, cols);
    }
    *src = (fkd_weight_source){.rows = qlora_rows, .user = (void *)qm};
    return 0;
}

int fkd_qlora_base_params(fkd_params *base, const fkd_qmodel *qm, fkd_error *err)
{
    /* Only the norm gains: the source serves every matrix, the embedding
     * and head included, so no fp32 copy of any of them is held. */
    uint8_t held[FKD_T_COUNT];
    for (int t = 0; t < FKD_T_COUNT; t++) held[t] = !qm->tensors[t].is_matrix;
    if (fkd_params_init_held(base, &qm->cfg, held, err) != 0) return -1;
    for (int t = 0; t < FKD_T_COUNT; t++) {
        const fkd_qtensor *q = &qm->q[t];
        const fkd_tensor_info *ti = &base->tensors[t];
        if (!ti->count) continue;
        float *dst = base->memory + ti->offset;
        fkd_dequantize_row(dst, q->type, q->data, q->count);
        if (qm->mask) fkd_prune_apply(dst, qm->mask + qm->tensors[t].offset, q->count);
    }
    return 0;
}

size_t fkd_qlora_base_bytes(const fkd_model_config *cfg, int type)
{
    fkd_tensor_info layout[FKD_T_COUNT];
    fkd_param_layout(layout, cfg);
    size_t norms = 0;
    for (int t = 0; t < FKD_T_COUNT; t++)
        if (!layout[t].is_matrix) norms += layout[t].count * sizeof(float);
    return fkd_qmodel_scheme_bytes(cfg, type) + norms;
}

int fkd_qlora_model_init(fkd_model *m, fkd_weight_source *src, const fkd_qmodel *qm,
                         fkd_lora *lora, int B, int T, int recompute, fkd_error *err)
{
    fkd_params base;
    if (fkd_qlora_source(src, qm, err) != 0 || fkd_qlora_base_params(&base, qm, err) != 0)
        return -1;
    if (fkd_model_init_lora(m, &base, src, lora, B, T, recompute, err) != 0) {
        fkd_params_free(&base);
        return -1;
    }
    return 0;
}
