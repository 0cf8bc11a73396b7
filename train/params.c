/* params.c — the parameter arena: one allocation, a table of named tensors in
 * checkpoint order, and pointers into it. */
#include "fkd_train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const tensor_names[FKD_T_COUNT] = {
    [FKD_T_TOK_EMB] = "tok_emb", [FKD_T_ATTN_NORM] = "attn_norm", [FKD_T_WQ] = "wq",
    [FKD_T_WK] = "wk", [FKD_T_WV] = "wv", [FKD_T_WO] = "wo", [FKD_T_FFN_NORM] = "ffn_norm",
    [FKD_T_W1] = "w1", [FKD_T_W3] = "w3", [FKD_T_W2] = "w2", [FKD_T_FINAL_NORM] = "final_norm",
    [FKD_T_HEAD] = "head"};

const char *fkd_tensor_name(int tensor)
{
    return tensor >= 0 && tensor < FKD_T_COUNT ? tensor_names[tensor] : "";
}

static void set_info(fkd_tensor_info *infos, int kind, size_t *offset, int ndim, int d0, int d1,
                     int d2, int is_matrix)
{
    fkd_tensor_info *t = &infos[kind];
    t->name = tensor_names[kind];
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->shape[2] = d2;
    t->count = (size_t)d0 * (ndim > 1 ? (size_t)d1 : 1) * (ndim > 2 ? (size_t)d2 : 1);
    t->offset = *offset;
    t->is_matrix = is_matrix;
    *offset += t->count;
}

size_t fkd_param_layout(fkd_tensor_info infos[FKD_T_COUNT], const fkd_model_config *c)
{
    int C = c->dim, L = c->n_layers, F = c->ffn_hidden, V = c->vocab;
    int hd = C / c->n_heads, QD = c->n_heads * hd, KVD = c->n_kv_heads * hd;
    size_t off = 0;
    set_info(infos, FKD_T_TOK_EMB, &off, 2, V, C, 0, 1);
    set_info(infos, FKD_T_ATTN_NORM, &off, 2, L, C, 0, 0);
    set_info(infos, FKD_T_WQ, &off, 3, L, QD, C, 1);
    set_info(infos, FKD_T_WK, &off, 3, L, KVD, C, 1);
    set_info(infos, FKD_T_WV, &off, 3, L, KVD, C, 1);
    set_info(infos, FKD_T_WO, &off, 3, L, C, QD, 1);
    set_info(infos, FKD_T_FFN_NORM, &off, 2, L, C, 0, 0);
    set_info(infos, FKD_T_W1, &off, 3, L, F, C, 1);
    set_info(infos, FKD_T_W3, &off, 3, L, F, C, 1);
    set_info(infos, FKD_T_W2, &off, 3, L, C, F, 1);
    set_info(infos, FKD_T_FINAL_NORM, &off, 1, C, 0, 0, 0);
    if (c->tie_embeddings) {
        set_info(infos, FKD_T_HEAD, &off, 2, 0, C, 0, 1);
        infos[FKD_T_HEAD].count = 0;
        infos[FKD_T_HEAD].offset = infos[FKD_T_TOK_EMB].offset;
    } else {
        set_info(infos, FKD_T_HEAD, &off, 2, V, C, 0, 1);
    }
    return off;
}

void fkd_param_ptrs_bind(fkd_param_ptrs *p, float *m, const fkd_tensor_info *t, int tie)
{
    p->tok_emb = m + t[FKD_T_TOK_EMB].offset;
    p->attn_norm = m + t[FKD_T_ATTN_NORM].offset;
    p->wq = m + t[FKD_T_WQ].offset;
    p->wk = m + t[FKD_T_WK].offset;
    p->wv = m + t[FKD_T_WV].offset;
    p->wo = m + t[FKD_T_WO].offset;
    p->ffn_norm = m + t[FKD_T_FFN_NORM].offset;
    p->w1 = m + t[FKD_T_W1].offset;
    p->w3 = m + t[FKD_T_W3].offset;
    p->w2 = m + t[FKD_T_W2].offset;
    p->final_norm = m + t[FKD_T_FINAL_NORM].offset;
    p->head = tie ? p->tok_emb : m + t[FKD_T_HEAD].offset;
}

int fkd_params_init(fkd_params *params, const fkd_model_config *cfg, fkd_error *err)
{
    memset(params, 0, sizeof *params);
    if (fkd_config_validate(cfg, err) != 0) return -1;
    params->cfg = *cfg;
    params->n_params = fkd_param_layout(params->tensors, cfg);
    size_t bytes = (params->n_params * sizeof(float) + 63) & ~(size_t)63;
    params->memory = aligned_alloc(64, bytes);
    if (!params->memory)
        return fkd_error_set(err, FKD_E_NOMEM, "cannot allocate %zu bytes of parameters", bytes);
    memset(params->memory, 0, bytes);
    fkd_param_ptrs_bind(&params->p, params->memory, params->tensors, cfg->tie_embeddings);
    return 0;
}

void fkd_params_randomize(fkd_params *params, uint64_t seed)
{
    fkd_rng rng;
    fkd_rng_seed(&rng, seed);
    float out_scale = 1.0f / sqrtf(2.0f * (float)params->cfg.n_layers);
    for (int t = 0; t < FKD_T_COUNT; t++) {
        const fkd_tensor_info *ti = &params->tensors[t];
        float *w = params->memory + ti->offset;
        if (!ti->is_matrix) {
            for (size_t i = 0; i < ti->count; i++) w[i] = 1.0f;
            continue;
        }
        float std = 0.02f * ((t == FKD_T_WO || t == FKD_T_W2) ? out_scale : 1.0f);
        for (size_t i = 0; i < ti->count; i++) w[i] = std * fkd_rng_normal(&rng);
    }
}

void fkd_params_free(fkd_params *params)
{
    free(params->memory);
    memset(params, 0, sizeof *params);
}
