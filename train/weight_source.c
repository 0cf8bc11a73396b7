/* weight_source.c — a frozen base that need not sit in fp32 parameters.
 *
 * The block matrices (wq wk wv wo w1 w3 w2) are most of a model's bytes.
 * When a LoRA client trains over a base held quantized, its parameters hold
 * only the small or shared tensors (norm gains, embedding, head) and a weight
 * source hands the model one layer's matrix at a time. This file gives the
 * shapes both sides agree on and parameters with tensors left out.
 */
#include "fkd_train.h"

#include <stdlib.h>
#include <string.h>

int fkd_tensor_is_block_matrix(int tensor)
{
    switch (tensor) {
    case FKD_T_WQ: case FKD_T_WK: case FKD_T_WV: case FKD_T_WO:
    case FKD_T_W1: case FKD_T_W3: case FKD_T_W2:
        return 1;
    default:
        return 0;
    }
}

int fkd_config_matrix_shape(int *rows, int *cols, const fkd_model_config *cfg, int tensor)
{
    int C = cfg->dim, hd = cfg->dim / cfg->n_heads;
    int QD = cfg->n_heads * hd, KVD = cfg->n_kv_heads * hd, F = cfg->ffn_hidden;
    switch (tensor) {
    case FKD_T_WQ: *rows = QD; *cols = C; return 0;
    case FKD_T_WK: case FKD_T_WV: *rows = KVD; *cols = C; return 0;
    case FKD_T_WO: *rows = C; *cols = QD; return 0;
    case FKD_T_W1: case FKD_T_W3: *rows = F; *cols = C; return 0;
    case FKD_T_W2: *rows = C; *cols = F; return 0;
    default: return -1;
    }
}

void fkd_params_held_without_blocks(uint8_t held[FKD_T_COUNT])
{
    for (int t = 0; t < FKD_T_COUNT; t++) held[t] = !fkd_tensor_is_block_matrix(t);
}

int fkd_params_init_held(fkd_params *params, const fkd_model_config *cfg,
                         const uint8_t held[FKD_T_COUNT], fkd_error *err)
{
    memset(params, 0, sizeof *params);
    if (fkd_config_validate(cfg, err) != 0) return -1;
    params->cfg = *cfg;
    fkd_param_layout(params->tensors, cfg);
    /* Compact the arena: a tensor left out takes no room. Shapes stay, so
     * the table still says what the tensor would be. */
    size_t off = 0;
    for (int t = 0; t < FKD_T_COUNT; t++) {
        fkd_tensor_info *ti = &params->tensors[t];
        if (t == FKD_T_HEAD && cfg->tie_embeddings) continue; /* fixed up below */
        if (!held[t]) ti->count = 0;
        ti->offset = off;
        off += ti->count;
    }
    if (cfg->tie_embeddings)
        params->tensors[FKD_T_HEAD].offset = params->tensors[FKD_T_TOK_EMB].offset;
    params->n_params = off;
    size_t bytes = (off * sizeof(float) + 63) & ~(size_t)63;
    params->memory = aligned_alloc(64, bytes ? bytes : 64);
    if (!params->memory)
        return fkd_error_set(err, FKD_E_NOMEM, "cannot allocate %zu bytes of parameters", bytes);
    memset(params->memory, 0, bytes ? bytes : 64);
    fkd_param_ptrs_bind(&params->p, params->memory, params->tensors, cfg->tie_embeddings);
    float **ptr[FKD_T_COUNT] = {
        [FKD_T_TOK_EMB] = &params->p.tok_emb, [FKD_T_ATTN_NORM] = &params->p.attn_norm,
        [FKD_T_WQ] = &params->p.wq, [FKD_T_WK] = &params->p.wk, [FKD_T_WV] = &params->p.wv,
        [FKD_T_WO] = &params->p.wo, [FKD_T_FFN_NORM] = &params->p.ffn_norm,
        [FKD_T_W1] = &params->p.w1, [FKD_T_W3] = &params->p.w3, [FKD_T_W2] = &params->p.w2,
        [FKD_T_FINAL_NORM] = &params->p.final_norm, [FKD_T_HEAD] = &params->p.head};
    for (int t = 0; t < FKD_T_COUNT; t++)
        if (!held[t] && !(t == FKD_T_HEAD && cfg->tie_embeddings)) *ptr[t] = NULL;
    if (cfg->tie_embeddings) params->p.head = params->p.tok_emb;
    return 0;
}
