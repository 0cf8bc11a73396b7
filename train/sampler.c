/* sampler.c — choosing the next token from logits: greedy, or temperature
 * with optional top-k and top-p (nucleus) truncation. Deterministic given
 * the seed: the sampler owns its generator. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int fkd_sampler_init(fkd_sampler *s, int vocab, float temperature, int top_k, float top_p,
                     uint64_t seed, fkd_error *err)
{
    memset(s, 0, sizeof *s);
    if (vocab < 1 || temperature < 0 || top_k < 0 || !(top_p > 0 && top_p <= 1))
        return fkd_error_set(err, FKD_E_INVALID_ARG,
                             "sampler: need temperature >= 0, top_k >= 0, 0 < top_p <= 1");
    s->vocab = vocab;
    s->temperature = temperature;
    s->top_k = top_k;
    s->top_p = top_p;
    fkd_rng_seed(&s->rng, seed);
    s->candidates = malloc((size_t)vocab * sizeof *s->candidates);
    if (!s->candidates) {
        fkd_sampler_free(s);
        return fkd_error_set(err, FKD_E_NOMEM, "sampler: out of memory");
    }
    return 0;
}

void fkd_sampler_free(fkd_sampler *s)
{
    free(s->candidates);
    s->candidates = NULL;
}

static int32_t argmax(const float *x, int n)
{
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Orders candidates by probability, descending; ties by id (deterministic). */
static int by_prob_desc(const void *a, const void *b)
{
    const fkd_prob_index *x = a, *y = b;
    if (x->prob != y->prob) return x->prob > y->prob ? -1 : 1;
    return x->id < y->id ? -1 : 1;
}

int32_t fkd_sampler_sample(fkd_sampler *s, const float *logits)
{
    int V = s->vocab;
    if (s->temperature == 0.0f) return argmax(logits, V);
    fkd_prob_index *cand = s->candidates;
    float mx = logits[argmax(logits, V)];
    double sum = 0.0;
    for (int i = 0; i < V; i++) {
        cand[i].prob = expf((logits[i] - mx) / s->temperature);
        cand[i].id = i;
        sum += cand[i].prob;
    }
    int n = V;
    if ((s->top_k > 0 && s->top_k < V) || s->top_p < 1.0f) {
        qsort(cand, (size_t)V, sizeof *cand, by_prob_desc);
        if (s->top_k > 0 && s->top_k < n) n = s->top_k;
        if (s->top_p < 1.0f) {
            double cum = 0.0;
            for (int i = 0; i < n; i++) {
                cum += cand[i].prob / sum;
                if (cum >= s->top_p) { n = i + 1; break; }
            }
        }
    }
    double total = 0.0;
    for (int i = 0; i < n; i++) total += cand[i].prob;
    double r = (double)fkd_rng_uniform(&s->rng) * total, cum = 0.0;
    for (int i = 0; i < n; i++) {
        cum += cand[i].prob;
        if (r < cum) return cand[i].id;
    }
    return cand[n - 1].id;
}
