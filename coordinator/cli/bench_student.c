/* bench_student.c — real text and real training steps for the compression
 * benchmarks, and the timed step loop of the training benchmarks (see
 * bench_student.h). */
#include "bench_student.h"

#include <stdlib.h>
#include <string.h>

#define BENCH_SEED 20261125

static int docs_where(uint32_t **out, uint32_t *n, const fkd_corpus *c, int heldout, int part,
                      fkd_error *err)
{
    *out = malloc((c->n_docs ? c->n_docs : 1) * sizeof **out);
    if (!*out) return fkd_error_set(err, FKD_E_NOMEM, "out of memory listing documents");
    *n = 0;
    for (uint32_t i = 0; i < c->n_docs; i++) {
        if ((i % BENCH_HELDOUT_EVERY == 0) != heldout) continue;
        if (part >= 0 && c->docs[i].partition != (uint32_t)part) continue;
        (*out)[(*n)++] = i;
    }
    return 0;
}

static int stream_where(fkd_token_stream *s, const bench_text *t, int heldout, int part,
                        fkd_error *err)
{
    uint32_t *docs = NULL, n = 0;
    if (docs_where(&docs, &n, &t->corpus, heldout, part, err) < 0) return -1;
    int rc = n ? fkd_token_stream_from_docs(s, &t->corpus, docs, n, &t->tok, err)
               : fkd_error_set(err, FKD_E_INVALID_ARG, "no documents selected");
    free(docs);
    return rc;
}

int bench_text_load(bench_text *t, const char *dir, fkd_error *err)
{
    memset(t, 0, sizeof *t);
    fkd_tokenizer_init_bytes(&t->tok);
    fkd_corpus_options opt = fkd_corpus_defaults(FKD_SIDE_ALL);
    if (fkd_corpus_load(&t->corpus, dir, &opt, err) < 0) return -1;
    if (stream_where(&t->train, t, 0, -1, err) < 0 || stream_where(&t->heldout, t, 1, -1, err) < 0) {
        bench_text_free(t);
        return -1;
    }
    return 0;
}

int bench_text_partition(fkd_token_stream *s, const bench_text *t, int part, fkd_error *err)
{
    return stream_where(s, t, 0, part, err);
}

void bench_text_free(bench_text *t)
{
    fkd_token_stream_free(&t->train);
    fkd_token_stream_free(&t->heldout);
    fkd_corpus_free(&t->corpus);
    fkd_tokenizer_free(&t->tok);
    memset(t, 0, sizeof *t);
}

int bench_train_steps(fkd_params *params, const fkd_token_stream *s, int steps, int B, int T,
                      float lr, int64_t first_batch, const uint8_t *mask, double *loss,
                      fkd_error *err)
{
    fkd_model m;
    fkd_optimizer opt;
    fkd_batch b;
    if (fkd_model_init_borrowed(&m, params, B, T, 0, err) < 0) return -1;
    fkd_optimizer_config oc = fkd_optimizer_defaults();
    oc.lr = lr;
    if (fkd_optimizer_init(&opt, &oc, params, err) < 0) {
        fkd_model_free(&m);
        return -1;
    }
    opt.mask = mask;
    int rc = fkd_batch_init(&b, B, T, 0, err);
    for (int step = 0; rc == 0 && step < steps; step++) {
        fkd_loss_stats st;
        rc = fkd_batch_random(&b, s, BENCH_SEED, first_batch + step, err);
        if (rc < 0) break;
        fkd_model_zero_grad(&m);
        fkd_model_forward(&m, b.inputs, NULL);
        fkd_model_backward(&m, b.inputs, b.targets, NULL, NULL, &st, 1.0f);
        fkd_optimizer_step(&opt, params->memory, m.grads);
        if (loss) *loss = st.loss;
    }
    fkd_batch_free(&b);
    fkd_optimizer_free(&opt);
    fkd_model_free(&m);
    return rc < 0 ? -1 : 0;
}

/* batch x seq random tokens and next-token targets in [0, vocab). */
static int random_batch(int32_t **tokens, int32_t **targets, size_t n, int vocab, fkd_error *err)
{
    *tokens = malloc(n * sizeof **tokens);
    *targets = malloc(n * sizeof **targets);
    if (!*tokens || !*targets) {
        free(*tokens);
        free(*targets);
        return fkd_error_set(err, FKD_E_NOMEM, "out of memory for a batch of %zu tokens", n);
    }
    fkd_rng rng;
    fkd_rng_seed(&rng, 7);
    for (size_t i = 0; i < n; i++) {
        (*tokens)[i] = (int32_t)fkd_rng_below(&rng, (uint32_t)vocab);
        (*targets)[i] = (int32_t)fkd_rng_below(&rng, (uint32_t)vocab);
    }
    return 0;
}

int bench_time_steps(bench_step_rate *rate, fkd_model *m, fkd_optimizer *opt, float *params,
                     float *grads, const fkd_memory_plan *plan, int batch, int seq, int warmup,
                     int steps, fkd_error *err)
{
    memset(rate, 0, sizeof *rate);
    size_t n = (size_t)batch * seq, micro = (size_t)plan->micro_batch * seq;
    int32_t *tokens, *targets;
    if (random_batch(&tokens, &targets, n, m->params.cfg.vocab, err) != 0) return -1;
    double t0 = 0, cpu0 = 0;
    for (int step = 0; step < warmup + steps; step++) {
        if (step == warmup) {
            t0 = fkd_time_ms();
            cpu0 = fkd_cpu_time_ms();
        }
        fkd_model_zero_grad(m);
        double loss = 0;
        for (int k = 0; k < plan->n_micro; k++) {
            fkd_loss_stats st;
            fkd_model_forward(m, tokens + k * micro, NULL);
            fkd_model_backward(m, tokens + k * micro, targets + k * micro, NULL, NULL, &st,
                               1.0f / (float)plan->n_micro);
            loss += st.loss / plan->n_micro;
        }
        fkd_optimizer_step(opt, params, grads);
        if (step == 0) rate->loss_first = loss;
        rate->loss_last = loss;
    }
    rate->tokens_per_s = (double)n * steps * 1e3 / (fkd_time_ms() - t0);
    rate->cpu_tokens_per_s = (double)n * steps * 1e3 / (fkd_cpu_time_ms() - cpu0);
    free(tokens);
    free(targets);
    return 0;
}
