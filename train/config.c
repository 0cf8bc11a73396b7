/* config.c — model shapes: the named configurations, validation, and the
 * parameter and FLOP counts derived from a config. */
#include "fkd_train.h"

fkd_model_config fkd_config_student_s(void)
{
    /* The benchmark shape of issue 2: about 3.5 M parameters. */
    return (fkd_model_config){.vocab = 256, .dim = 256, .n_layers = 4, .n_heads = 4,
                              .n_kv_heads = 4, .ffn_hidden = 768, .max_seq = 128,
                              .tie_embeddings = 0, .rope_theta = 10000.0f, .norm_eps = 1e-5f};
}

fkd_model_config fkd_config_teacher_default(void)
{
    /* About 3x student-S (10.8 M parameters against 3.5 M): 1.5x the depth,
     * 1.5x the width. The issue asked for about 4x; 3x is what trains within
     * the 5-minute teacher budget on 2 cores (docs/data.md). */
    return (fkd_model_config){.vocab = 256, .dim = 384, .n_layers = 6, .n_heads = 6,
                              .n_kv_heads = 6, .ffn_hidden = 1024, .max_seq = 128,
                              .tie_embeddings = 0, .rope_theta = 10000.0f, .norm_eps = 1e-5f};
}

int fkd_config_validate(const fkd_model_config *c, fkd_error *err)
{
    if (c->vocab < 2 || c->vocab > (1 << 24))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "vocab %d outside [2, 2^24]", c->vocab);
    if (c->dim < 2 || c->dim > 65536)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "dim %d outside [2, 65536]", c->dim);
    if (c->n_layers < 1 || c->n_layers > 1024)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "n_layers %d outside [1, 1024]", c->n_layers);
    if (c->n_heads < 1 || c->dim % c->n_heads != 0)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "n_heads %d must divide dim %d", c->n_heads,
                             c->dim);
    if ((c->dim / c->n_heads) % 2 != 0)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "head size %d must be even for RoPE",
                             c->dim / c->n_heads);
    if (c->n_kv_heads < 1 || c->n_heads % c->n_kv_heads != 0)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "n_kv_heads %d must divide n_heads %d",
                             c->n_kv_heads, c->n_heads);
    if (c->ffn_hidden < 1 || c->ffn_hidden > (1 << 20))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "ffn_hidden %d outside [1, 2^20]",
                             c->ffn_hidden);
    if (c->max_seq < 1 || c->max_seq > (1 << 20))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "max_seq %d outside [1, 2^20]", c->max_seq);
    if (!(c->rope_theta > 0) || !(c->norm_eps > 0))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "rope_theta and norm_eps must be positive");
    if (c->tie_embeddings != 0 && c->tie_embeddings != 1)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "tie_embeddings must be 0 or 1");
    return 0;
}

size_t fkd_config_param_count(const fkd_model_config *cfg)
{
    fkd_tensor_info infos[FKD_T_COUNT];
    return fkd_param_layout(infos, cfg);
}

double fkd_config_flops_per_token(const fkd_model_config *c, int seq)
{
    double hd = (double)c->dim / c->n_heads;
    double per_layer = 2.0 * c->dim * (c->n_heads * hd)           /* wq */
                       + 2.0 * 2.0 * c->dim * (c->n_kv_heads * hd) /* wk, wv */
                       + 2.0 * (c->n_heads * hd) * c->dim          /* wo */
                       + 3.0 * 2.0 * c->dim * c->ffn_hidden        /* w1, w3, w2 */
                       + 2.0 * 2.0 * c->n_heads * hd * seq / 2.0;  /* QK and AV, causal mean */
    return c->n_layers * per_layer + 2.0 * c->dim * c->vocab;
}
