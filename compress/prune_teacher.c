/* prune_teacher.c — the pruning recipe in one call, shared by `fedkd prune`
 * and the simulation: trim the vocabulary, measure importances, fit a shape
 * to the budget, plan and slice. The pieces live in prune_vocab.c and
 * prune_struct.c; this file only puts them in order and picks the
 * calibration windows. */
#include "fkd_compress.h"

#include <stdlib.h>
#include <string.h>

#define PRUNE_DEFAULT_MIN_LAYERS 0 /* fkd_prune_default_min_layers */
#define PRUNE_DEFAULT_CALIB_TOKENS 512
#define PRUNE_DEFAULT_CALIB_SEQ 256

fkd_prune_config fkd_prune_defaults(void)
{
    fkd_prune_config c = {0};
    c.min_layers = PRUNE_DEFAULT_MIN_LAYERS;
    c.trim_vocab = 1;
    c.calib_tokens = PRUNE_DEFAULT_CALIB_TOKENS;
    c.calib_seq = PRUNE_DEFAULT_CALIB_SEQ;
    c.depth_kl = 1;
    return c;
}

void fkd_prune_result_free(fkd_prune_result *r)
{
    if (!r) return;
    fkd_params_free(&r->student);
    fkd_bpe_tables_free(&r->vocab);
    fkd_vocab_map_free(&r->map);
    fkd_prune_importance_free(&r->imp);
    fkd_prune_plan_free(&r->plan);
    memset(r, 0, sizeof *r);
}

/* The used ids: the text's tokens, or every id when nothing is trimmed (which
 * makes the trim an identity that still yields the student's tables). */
static int trim(fkd_prune_result *r, const fkd_bpe_tables *full, const fkd_token_stream *text,
                int trim_vocab, fkd_error *err)
{
    int all = !trim_vocab || !text;
    size_t n = all ? (size_t)full->n_tokens : (size_t)text->n;
    int32_t *ids = all ? malloc((n + 1) * sizeof *ids) : NULL;
    uint8_t *seen = calloc((size_t)full->n_tokens + 1, 1);
    if ((all && !ids) || !seen) {
        free(ids);
        free(seen);
        return fkd_error_set(err, FKD_E_NOMEM, "out of memory trimming the vocabulary");
    }
    for (size_t i = 0; all && i < n; i++) ids[i] = (int32_t)i;
    const int32_t *used = all ? ids : text->tokens;
    for (size_t i = 0; i < n; i++)
        if (used[i] >= 0 && used[i] < full->n_tokens && !seen[used[i]])
            seen[used[i]] = 1, r->used_tokens++;
    int rc = fkd_vocab_trim(&r->map, &r->vocab, full, used, n, err);
    free(ids);
    free(seen);
    return rc;
}

/* calib_tokens / calib_seq windows spread evenly over the text. */
static int calibrate(fkd_prune_result *r, const fkd_params *teacher, const fkd_token_stream *text,
                     const fkd_prune_config *cfg, int depth_kl, fkd_error *err)
{
    int T = cfg->calib_seq, B = cfg->calib_seq > 0 ? cfg->calib_tokens / cfg->calib_seq : 0;
    if (T < 2 || B < 1)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "calibration needs calib_tokens >= "
                             "calib_seq >= 2, not %d and %d", cfg->calib_tokens, cfg->calib_seq);
    if (text->n < T)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "the calibration text has %lld tokens, "
                             "fewer than one sequence of %d", (long long)text->n, T);
    int32_t *tokens = malloc((size_t)B * T * sizeof *tokens);
    if (!tokens) return fkd_error_set(err, FKD_E_NOMEM, "out of memory for calibration tokens");
    for (int b = 0; b < B; b++)
        memcpy(tokens + (size_t)b * T, text->tokens + (text->n - T) * b / B,
               (size_t)T * sizeof *tokens);
    int rc = fkd_prune_importance_compute(&r->imp, teacher, tokens, B, T, depth_kl,
                                          cfg->progress, err);
    free(tokens);
    return rc;
}

static int shape(fkd_model_config *s, const fkd_model_config *t, int vocab,
                 const fkd_prune_config *cfg, fkd_error *err)
{
    *s = *t;
    if (cfg->target_params > 0 &&
        fkd_prune_fit(s, t, vocab, cfg->target_params, cfg->min_layers, err) != 0)
        return -1;
    if (cfg->layers > 0) s->n_layers = cfg->layers;
    if (cfg->kv_heads > 0) s->n_kv_heads = cfg->kv_heads;
    if (cfg->heads > 0) s->n_heads = cfg->heads;
    if (cfg->ffn > 0) s->ffn_hidden = cfg->ffn;
    s->dim = s->n_heads * (t->dim / t->n_heads);
    s->vocab = vocab;
    fkd_error sub;
    if (fkd_config_validate(s, &sub) != 0)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "student shape: %s", sub.msg);
    return 0;
}

int fkd_prune_teacher(fkd_prune_result *r, const fkd_params *teacher,
                      const fkd_bpe_tables *teacher_vocab, const fkd_token_stream *vocab_text,
                      const fkd_token_stream *calib_text, const fkd_prune_config *cfg,
                      fkd_error *err)
{
    memset(r, 0, sizeof *r);
    if (teacher_vocab->n_tokens != teacher->cfg.vocab)
        return fkd_error_set(err, FKD_E_MISMATCH, "the tokenizer has %d tokens, the teacher %d",
                             teacher_vocab->n_tokens, teacher->cfg.vocab);
    fkd_model_config target;
    int rc = trim(r, teacher_vocab, vocab_text, cfg->trim_vocab, err);
    if (rc == 0) rc = shape(&target, &teacher->cfg, r->map.new_vocab, cfg, err);
    /* The KL depth score costs L/2 passes: only worth it when blocks go. */
    int kl = cfg->depth_kl && target.n_layers < teacher->cfg.n_layers;
    if (rc == 0) rc = calibrate(r, teacher, calib_text, cfg, kl, err);
    if (rc == 0) rc = fkd_prune_plan_make(&r->plan, &r->imp, &target, &r->map, err);
    if (rc == 0) rc = fkd_prune_build(&r->student, teacher, &r->plan, &r->map, err);
    if (rc != 0) fkd_prune_result_free(r);
    return rc;
}
