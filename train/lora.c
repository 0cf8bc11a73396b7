/* lora.c — low-rank adapters over a frozen base (LoRA, Hu et al. 2021).
 *
 * For each adapted block matrix W (out, in) of each layer, A (r, in) and
 * B (out, r) add (alpha/r)·(x·Aᵀ)·Bᵀ to x·Wᵀ. A and B of every target live in
 * one parameter arena, their gradients in another of the same layout, so the
 * optimizer, zeroing and serialization each see one flat buffer.
 *
 * A starts N(0, 1/in), which keeps u = x·Aᵀ of order one for RMS-normalised
 * inputs whatever the width; B starts at 0, so a fresh adapter changes
 * nothing and the first steps move B alone. The scale alpha/r lets the rank
 * change without retuning the learning rate.
 *
 * Not here: where the base weights come from (weight_source.c, and
 * compress/qlora.c for a quantized base), the file format (lora_io.c).
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The name of a kind LoRA can target: a block matrix's, or "". */
static const char *target_name(int t)
{
    return fkd_tensor_is_block_matrix(t) ? fkd_tensor_name(t) : "";
}

fkd_lora_config fkd_lora_defaults(void)
{
    fkd_lora_config c = {.rank = FKD_LORA_DEFAULT_RANK, .alpha = FKD_LORA_DEFAULT_ALPHA};
    for (int t = 0; t < FKD_T_COUNT; t++) c.targets[t] = (uint8_t)fkd_tensor_is_block_matrix(t);
    return c;
}

int fkd_lora_parse_targets(uint8_t targets[FKD_T_COUNT], const char *list, fkd_error *err)
{
    memset(targets, 0, FKD_T_COUNT);
    if (strcmp(list, "all") == 0) {
        for (int t = 0; t < FKD_T_COUNT; t++) targets[t] = (uint8_t)fkd_tensor_is_block_matrix(t);
        return 0;
    }
    int any = 0;
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",");
        int found = -1;
        for (int t = 0; t < FKD_T_COUNT && found < 0; t++)
            if (fkd_tensor_is_block_matrix(t) && strlen(fkd_tensor_name(t)) == len &&
                memcmp(p, fkd_tensor_name(t), len) == 0)
                found = t;
        if (found < 0)
            return fkd_error_set(err, FKD_E_INVALID_ARG,
                                 "LoRA targets '%s': '%.*s' is not one of wq wk wv wo w1 w3 w2 "
                                 "(or 'all')", list, (int)len, p);
        targets[found] = 1;
        any = 1;
        p += len + (p[len] == ',');
    }
    if (!any) return fkd_error_set(err, FKD_E_INVALID_ARG, "LoRA targets: the list is empty");
    return 0;
}

size_t fkd_lora_layout(fkd_tensor_info tensors[FKD_T_COUNT], const fkd_model_config *model,
                       const fkd_lora_config *cfg, fkd_error *err)
{
    if (fkd_config_validate(model, err) != 0) return 0;
    if (cfg->rank < 1 || cfg->rank > FKD_LORA_MAX_RANK || !(cfg->alpha > 0) ||
        !isfinite(cfg->alpha)) {
        fkd_error_set(err, FKD_E_INVALID_ARG,
                      "LoRA rank %d must be in [1, %d] and alpha %g positive", cfg->rank,
                      FKD_LORA_MAX_RANK, (double)cfg->alpha);
        return 0;
    }
    size_t off = 0, L = (size_t)model->n_layers, r = (size_t)cfg->rank;
    memset(tensors, 0, FKD_T_COUNT * sizeof *tensors);
    for (int t = 0; t < FKD_T_COUNT; t++) {
        fkd_tensor_info *ti = &tensors[t];
        ti->name = target_name(t);
        ti->offset = off;
        if (!cfg->targets[t]) continue;
        int rows, cols;
        if (fkd_config_matrix_shape(&rows, &cols, model, t) != 0) {
            fkd_error_set(err, FKD_E_INVALID_ARG, "LoRA target %d is not a block matrix", t);
            return 0;
        }
        ti->ndim = 3;
        ti->shape[0] = (int)L;
        ti->shape[1] = (int)r;
        ti->shape[2] = rows + cols;
        ti->count = L * r * (size_t)(rows + cols);
        ti->is_matrix = 1;
        off += ti->count;
    }
    if (off == 0)
        fkd_error_set(err, FKD_E_INVALID_ARG, "LoRA adapts no tensor: name at least one target");
    if (off > FKD_LORA_MAX_FLOATS) {
        fkd_error_set(err, FKD_E_LIMIT, "LoRA of %zu floats is above the limit of %zu", off,
                      FKD_LORA_MAX_FLOATS);
        return 0;
    }
    return off;
}

/* Allocates zeroed arenas for a layout already in lora (used by init and decode). */
int fkd_lora_alloc(fkd_lora *lora, const fkd_model_config *model, const fkd_lora_config *cfg,
                   fkd_error *err)
{
    memset(lora, 0, sizeof *lora);
    size_t n = fkd_lora_layout(lora->tensors, model, cfg, err);
    if (n == 0) return -1;
    lora->cfg = *cfg;
    lora->model = *model;
    lora->scale = cfg->alpha / (float)cfg->rank;
    lora->n = n;
    lora->params = fkd_alloc_floats(n);
    lora->grads = fkd_alloc_floats(n);
    if (!lora->params || !lora->grads) {
        fkd_lora_free(lora);
        return fkd_error_set(err, FKD_E_NOMEM, "cannot allocate %zu MB of LoRA adapters",
                             (2 * n * sizeof(float)) >> 20);
    }
    return 0;
}

int fkd_lora_init(fkd_lora *lora, const fkd_model_config *model, const fkd_lora_config *cfg,
                  uint64_t seed, fkd_error *err)
{
    if (fkd_lora_alloc(lora, model, cfg, err) != 0) return -1;
    fkd_rng rng;
    fkd_rng_seed(&rng, seed);
    for (int t = 0; t < FKD_T_COUNT; t++) {
        if (!lora->tensors[t].count) continue;
        int rows, cols;
        fkd_config_matrix_shape(&rows, &cols, model, t);
        float std = 1.0f / sqrtf((float)cols);
        float *a = lora->params + lora->tensors[t].offset;
        size_t n_a = (size_t)model->n_layers * cfg->rank * cols; /* B after it stays 0 */
        for (size_t i = 0; i < n_a; i++) a[i] = std * fkd_rng_normal(&rng);
    }
    return 0;
}

void fkd_lora_free(fkd_lora *lora)
{
    free(lora->params);
    free(lora->grads);
    memset(lora, 0, sizeof *lora);
}

void fkd_lora_zero_grad(fkd_lora *lora)
{
    if (lora->grads) memset(lora->grads, 0, lora->n * sizeof(float));
}

float *fkd_lora_a(const fkd_lora *lora, float *arena, int tensor, int layer)
{
    if (tensor < 0 || tensor >= FKD_T_COUNT || !lora->tensors[tensor].count) return NULL;
    int rows, cols;
    fkd_config_matrix_shape(&rows, &cols, &lora->model, tensor);
    return arena + lora->tensors[tensor].offset + (size_t)layer * lora->cfg.rank * cols;
}

float *fkd_lora_b(const fkd_lora *lora, float *arena, int tensor, int layer)
{
    if (tensor < 0 || tensor >= FKD_T_COUNT || !lora->tensors[tensor].count) return NULL;
    int rows, cols;
    fkd_config_matrix_shape(&rows, &cols, &lora->model, tensor);
    size_t r = (size_t)lora->cfg.rank, L = (size_t)lora->model.n_layers;
    return arena + lora->tensors[tensor].offset + L * r * cols + (size_t)layer * rows * r;
}

void fkd_lora_forward(float *out, float *u, const float *x, const float *a, const float *b,
                      float s, int N, int C, int OC, int r)
{
    /* x (N,C), A (r,C), B (OC,r), u (N,r), out (N,OC) */
    fkd_sgemm(0, 1, N, r, C, 1.0f, x, C, a, C, 0.0f, u, r, 0);
    fkd_sgemm(0, 1, N, OC, r, s, u, r, b, r, 1.0f, out, OC, 0);
}

void fkd_lora_backward(float *dx, float *da, float *db, float *u, float *du, const float *dout,
                       const float *x, const float *a, const float *b, float s, int N, int C,
                       int OC, int r)
{
    /* dout (N,OC); u = x·Aᵀ is recomputed (cheaper than keeping it per layer) */
    fkd_sgemm(0, 1, N, r, C, 1.0f, x, C, a, C, 0.0f, u, r, 0);
    fkd_sgemm(0, 0, N, r, OC, s, dout, OC, b, r, 0.0f, du, r, 0);
    if (db) fkd_sgemm(1, 0, OC, r, N, s, dout, OC, u, r, 1.0f, db, r, 0);
    if (da) fkd_sgemm(1, 0, r, C, N, 1.0f, du, r, x, C, 1.0f, da, C, 0);
    if (dx) fkd_sgemm(0, 0, N, C, r, 1.0f, du, r, a, C, 1.0f, dx, C, 0);
}

int fkd_config_same_blocks(const fkd_model_config *a, const fkd_model_config *b)
{
    return a->dim == b->dim && a->n_layers == b->n_layers && a->n_heads == b->n_heads &&
           a->n_kv_heads == b->n_kv_heads && a->ffn_hidden == b->ffn_hidden;
}

int fkd_lora_merge(fkd_params *params, const fkd_lora *lora, fkd_error *err)
{
    return fkd_lora_merge_weighted(params, lora, 1.0f, err);
}

int fkd_lora_merge_weighted(fkd_params *params, const fkd_lora *lora, float weight,
                            fkd_error *err)
{
    if (!fkd_config_same_blocks(&params->cfg, &lora->model))
        return fkd_error_set(err, FKD_E_MISMATCH, "LoRA adapters were made for another model "
                             "shape (dim %d, %d layers); merge them into that model",
                             lora->model.dim, lora->model.n_layers);
    for (int t = 0; t < FKD_T_COUNT; t++) {
        if (!lora->tensors[t].count) continue;
        const fkd_tensor_info *ti = &params->tensors[t];
        int rows, cols;
        fkd_config_matrix_shape(&rows, &cols, &lora->model, t);
        if (ti->count != (size_t)lora->model.n_layers * rows * cols)
            return fkd_error_set(err, FKD_E_INVALID_ARG, "cannot merge LoRA into '%s': the "
                                 "parameters do not hold it in fp32", ti->name);
        for (int l = 0; l < lora->model.n_layers; l++) {
            float *w = params->memory + ti->offset + (size_t)l * rows * cols;
            fkd_sgemm(0, 0, rows, cols, lora->cfg.rank, weight * lora->scale,
                      fkd_lora_b(lora, lora->params, t, l), lora->cfg.rank,
                      fkd_lora_a(lora, lora->params, t, l), cols, 1.0f, w, cols, 0);
        }
    }
    return 0;
}

int fkd_lora_optimizer_init(fkd_optimizer *opt, const fkd_optimizer_config *cfg,
                            const fkd_lora *lora, fkd_error *err)
{
    /* The optimizer reads only the float count and the tensor table. */
    fkd_params view = {.n_params = lora->n};
    memcpy(view.tensors, lora->tensors, sizeof view.tensors);
    if (fkd_optimizer_init(opt, cfg, &view, err) != 0) return -1;
    opt->tensors = lora->tensors;
    return 0;
}

/* The largest block matrix of one layer, in floats. */
static size_t max_matrix_floats(const fkd_model_config *model)
{
    size_t most = 0;
    for (int t = 0; t < FKD_T_COUNT; t++) {
        int rows, cols;
        if (fkd_config_matrix_shape(&rows, &cols, model, t) == 0 && (size_t)rows * cols > most)
            most = (size_t)rows * cols;
    }
    return most;
}

size_t fkd_lora_scratch_floats(const fkd_lora_config *cfg, int B, int T)
{
    return 2 * (size_t)B * T * cfg->rank;
}

size_t fkd_lora_param_count(const fkd_model_config *model, const fkd_lora_config *cfg)
{
    fkd_tensor_info tensors[FKD_T_COUNT];
    return fkd_lora_layout(tensors, model, cfg, NULL);
}

size_t fkd_lora_train_bytes(const fkd_model_config *model, const fkd_lora_config *cfg, int B,
                            int T, int with_source)
{
    /* params, grads and the two AdamW moments, then the scratch */
    size_t floats = 4 * fkd_lora_param_count(model, cfg) + fkd_lora_scratch_floats(cfg, B, T);
    if (with_source) floats += max_matrix_floats(model);
    return floats * sizeof(float);
}

size_t fkd_weight_scratch_floats(const fkd_model_config *model)
{
    return max_matrix_floats(model);
}
