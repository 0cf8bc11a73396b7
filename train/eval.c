/* eval.c — loss, perplexity, bits per byte and next-token accuracy of a
 * model on a token stream. The stream is cut into windows of `window`
 * tokens (each predicting its next tokens); windows run as one batch of the
 * training forward pass, so evaluation is as fast as training's forward,
 * and the loss goes through the model's chunked head (fkd_model_loss): the
 * (positions, vocab) logits of a batch are never held at once. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Windows per forward pass: up to 8, fewer when the logits of a batch would
 * pass EVAL_LOGITS_BYTES (a 49,152-token vocabulary). The logits are not
 * held, but the batch's activations grow with it: this keeps them in step. */
enum { EVAL_MAX_BATCH = 8 };
#define EVAL_LOGITS_BYTES ((size_t)128 << 20)

/* How a stream is cut into scored windows: windows of `window` inputs every
 * `stride` tokens; within each, positions from score_from on are scored;
 * bos_id >= 0 replaces each window's first input (llama.cpp's chunks). */
typedef struct {
    int window, score_from;
    int64_t stride;
    int32_t bos_id;
    int full_windows_only;
} eval_cut;

static int64_t eval_window_count(const eval_cut *cut, int64_t n_tokens)
{
    if (cut->full_windows_only) return n_tokens / cut->window;
    return (n_tokens - 1 + cut->window - 1) / cut->window;
}

/* Fills one batch of windows w0.. with inputs and targets (-1 = not scored). */
static void eval_fill_batch(int32_t *inp, int32_t *tgt, const eval_cut *cut, int batch,
                            int64_t w0, int64_t n_windows, const int32_t *tokens,
                            int64_t n_tokens)
{
    int window = cut->window;
    for (int b = 0; b < batch; b++) {
        int64_t start = (w0 + b) * cut->stride;
        for (int t = 0; t < window; t++) {
            int64_t i = start + t;
            int in_stream = w0 + b < n_windows && i < n_tokens;
            int scored = in_stream && i + 1 < n_tokens && t >= cut->score_from &&
                         !(cut->full_windows_only && t == window - 1);
            int32_t input = in_stream ? tokens[i] : 0;
            if (t == 0 && in_stream && cut->bos_id >= 0) input = cut->bos_id;
            inp[b * window + t] = input;
            tgt[b * window + t] = scored ? tokens[i + 1] : -1;
        }
    }
}

static int eval_cut_run(fkd_eval_result *res, const fkd_params *params, const int32_t *tokens,
                        int64_t n_tokens, int64_t text_bytes, const eval_cut *cut,
                        fkd_error *err)
{
    memset(res, 0, sizeof *res);
    int window = cut->window;
    if (window < 1 || window > params->cfg.max_seq)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "eval window %d outside [1, %d]", window,
                             params->cfg.max_seq);
    int64_t n_windows = eval_window_count(cut, n_tokens);
    if (n_tokens < 2 || n_windows < 1)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "eval needs at least %d tokens, got %lld",
                             cut->full_windows_only ? window : 2, (long long)n_tokens);
    size_t logits_per_window = (size_t)window * params->cfg.vocab * sizeof(float);
    int batch = (int)(EVAL_LOGITS_BYTES / logits_per_window);
    batch = batch < 1 ? 1 : batch > EVAL_MAX_BATCH ? EVAL_MAX_BATCH : batch;
    /* Recompute mode keeps one layer's activations: forward-only needs no more. */
    fkd_model m;
    if (fkd_model_init_borrowed(&m, params, batch, window, 1, err) != 0) return -1;

    int32_t *inp = malloc((size_t)batch * window * sizeof(int32_t));
    int32_t *tgt = malloc((size_t)batch * window * sizeof(int32_t));
    if (!inp || !tgt) {
        free(inp);
        free(tgt);
        fkd_model_free(&m);
        return fkd_error_set(err, FKD_E_NOMEM, "eval: out of memory");
    }
    double nats = 0.0;
    int64_t counted = 0, correct = 0;
    for (int64_t w0 = 0; w0 < n_windows; w0 += batch) {
        eval_fill_batch(inp, tgt, cut, batch, w0, n_windows, tokens, n_tokens);
        fkd_model_forward(&m, inp, NULL);
        fkd_loss_stats st;
        fkd_model_loss(&st, &m, tgt);
        nats += st.ce * (double)st.n_ce;
        counted += st.n_ce;
        correct += st.n_correct;
    }
    free(inp);
    free(tgt);
    fkd_model_free(&m);

    res->tokens = counted;
    res->mean_loss = counted ? nats / (double)counted : 0.0;
    res->perplexity = exp(res->mean_loss);
    res->accuracy = counted ? (double)correct / (double)counted : 0.0;
    /* Bits per byte over the bytes whose tokens were predicted. */
    double bytes = text_bytes > 0 ? (double)text_bytes * counted / (double)n_tokens : counted;
    res->bits_per_byte = nats / M_LN2 / bytes;
    return 0;
}

int fkd_eval_tokens(fkd_eval_result *res, const fkd_params *params, const int32_t *tokens,
                    int64_t n_tokens, int64_t text_bytes, int window, fkd_error *err)
{
    eval_cut cut = {.window = window, .score_from = 0, .stride = window, .bos_id = -1,
                    .full_windows_only = 0};
    return eval_cut_run(res, params, tokens, n_tokens, text_bytes, &cut, err);
}

int fkd_eval_tokens_llama(fkd_eval_result *res, const fkd_params *params, const int32_t *tokens,
                          int64_t n_tokens, int64_t text_bytes, int n_ctx, int32_t bos_id,
                          fkd_error *err)
{
    eval_cut cut = {.window = n_ctx, .score_from = n_ctx / 2, .stride = n_ctx,
                    .bos_id = bos_id, .full_windows_only = 1};
    return eval_cut_run(res, params, tokens, n_tokens, text_bytes, &cut, err);
}
