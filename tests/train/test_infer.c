/* test_infer.c — the KV-cache path agrees with the training forward pass;
 * sampling is deterministic and honours greedy / top-k / top-p; evaluation
 * gives the known answers of a uniform model; the byte tokenizer is the
 * identity. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fkd_train.h"

enum { T = 12 };

static fkd_params random_params(int tie)
{
    fkd_model_config cfg = {.vocab = 40, .dim = 16, .n_layers = 2, .n_heads = 4,
                            .n_kv_heads = 2, .ffn_hidden = 24, .max_seq = T,
                            .tie_embeddings = tie, .rope_theta = 10000.0f, .norm_eps = 1e-5f};
    fkd_params p;
    assert_int_equal(fkd_params_init(&p, &cfg, NULL), 0);
    fkd_params_randomize(&p, 11);
    for (size_t i = 0; i < p.n_params; i++) p.memory[i] *= 5.0f;
    return p;
}

static void test_kv_cache_matches_training_forward(void **state)
{
    for (int tie = 0; tie <= 1; tie++) {
        fkd_params p = random_params(tie);
        int32_t tokens[T];
        for (int t = 0; t < T; t++) tokens[t] = (t * 7 + 3) % p.cfg.vocab;
        fkd_model m;
        assert_int_equal(fkd_model_init_borrowed(&m, &p, 1, T, 0, NULL), 0);
        float *logits;
        fkd_model_forward(&m, tokens, &logits);
        fkd_infer st;
        assert_int_equal(fkd_infer_init(&st, &p, NULL), 0);
        for (int t = 0; t < T; t++) {
            float *step = fkd_infer_step(&st, tokens[t]);
            assert_non_null(step);
            for (int v = 0; v < p.cfg.vocab; v++)
                assert_float_equal(step[v], logits[t * p.cfg.vocab + v], 1e-4);
        }
        assert_null(fkd_infer_step(&st, tokens[0])); /* context full */
        fkd_infer_reset(&st);
        assert_null(fkd_infer_step(&st, p.cfg.vocab)); /* out-of-range token */
        fkd_infer_free(&st);
        fkd_model_free(&m);
        fkd_params_free(&p);
    }
}

static void test_sampler(void **state)
{
    float logits[6] = {0.1f, 2.0f, -1.0f, 1.9f, 0.0f, 0.5f};
    fkd_sampler greedy, a, b, k1, p_small;
    assert_int_equal(fkd_sampler_init(&greedy, 6, 0.0f, 0, 1.0f, 1, NULL), 0);
    assert_int_equal(fkd_sampler_sample(&greedy, logits), 1);
    assert_int_equal(fkd_sampler_init(&a, 6, 1.0f, 0, 1.0f, 7, NULL), 0);
    assert_int_equal(fkd_sampler_init(&b, 6, 1.0f, 0, 1.0f, 7, NULL), 0);
    int counts[6] = {0};
    for (int i = 0; i < 2000; i++) {
        int32_t x = fkd_sampler_sample(&a, logits), y = fkd_sampler_sample(&b, logits);
        assert_int_equal(x, y); /* same seed, same draws */
        (void)x;
        assert_int_equal(a.rng.s[0], b.rng.s[0]);
        counts[y]++;
    }
    assert_true(counts[1] > counts[0] && counts[3] > counts[2]); /* follows the logits */
    assert_true(counts[2] > 0);                                   /* full support at top_p=1 */
    assert_int_equal(fkd_sampler_init(&k1, 6, 1.0f, 1, 1.0f, 3, NULL), 0);
    assert_int_equal(fkd_sampler_init(&p_small, 6, 1.0f, 0, 0.01f, 3, NULL), 0);
    for (int i = 0; i < 50; i++) {
        assert_int_equal(fkd_sampler_sample(&k1, logits), 1);
        assert_int_equal(fkd_sampler_sample(&p_small, logits), 1);
    }
    fkd_sampler bad;
    assert_int_equal(fkd_sampler_init(&bad, 6, -1.0f, 0, 1.0f, 3, NULL), -1);
    fkd_sampler_free(&greedy);
    fkd_sampler_free(&a);
    fkd_sampler_free(&b);
    fkd_sampler_free(&k1);
    fkd_sampler_free(&p_small);
}

static void test_eval_of_a_uniform_model(void **state)
{
    /* A zero head gives uniform predictions: loss ln V, perplexity V,
     * 8 bits per byte for V = 256. */
    fkd_model_config cfg = fkd_config_student_s();
    cfg.n_layers = 1;
    cfg.max_seq = 32;
    fkd_params p;
    assert_int_equal(fkd_params_init(&p, &cfg, NULL), 0);
    fkd_params_randomize(&p, 1);
    memset(p.p.head, 0, (size_t)cfg.vocab * cfg.dim * sizeof(float));
    const char *text = "a uniform model knows nothing about this text at all.";
    size_t n;
    int32_t tokens[128];
    fkd_tokenizer tok;
    fkd_tokenizer_init_bytes(&tok);
    assert_int_equal(fkd_tokenizer_encode(tokens, 128, &n, &tok, (const uint8_t *)text,
                                          strlen(text), NULL), 0);
    fkd_eval_result res;
    assert_int_equal(fkd_eval_tokens(&res, &p, tokens, (int64_t)n, (int64_t)n, 16, NULL), 0);
    assert_int_equal(res.tokens, (int64_t)n - 1);
    assert_true(fabs(res.perplexity - 256.0) < 1e-2);
    assert_true(fabs(res.bits_per_byte - 8.0) < 1e-4);
    fkd_error err;
    assert_int_equal(fkd_eval_tokens(&res, &p, tokens, 1, 1, 16, &err), -1);
    assert_int_equal(err.code, FKD_E_INVALID_ARG);
    fkd_params_free(&p);
}

/* llama-perplexity's protocol, computed by hand from the forward pass:
 * whole chunks only, BOS first, the second half of each chunk scored. */
static double chunk_nll(fkd_model *m, const int32_t *chunk, int32_t bos, int64_t *counted)
{
    int32_t inp[T];
    memcpy(inp, chunk, sizeof inp);
    inp[0] = bos;
    float *logits;
    fkd_model_forward(m, inp, &logits);
    int V = m->params.cfg.vocab;
    double nll = 0.0;
    for (int j = T / 2; j <= T - 2; j++) {
        const float *row = logits + (size_t)j * V;
        double mx = row[0], sum = 0.0;
        for (int v = 1; v < V; v++) mx = row[v] > mx ? row[v] : mx;
        for (int v = 0; v < V; v++) sum += exp(row[v] - mx);
        nll += mx + log(sum) - row[chunk[j + 1]];
        (*counted)++;
    }
    return nll;
}

static void test_eval_llama_protocol(void **state)
{
    fkd_params p = random_params(1);
    enum { N = 2 * T + 5 }; /* the partial third chunk is dropped */
    int32_t tokens[N];
    for (int i = 0; i < N; i++) tokens[i] = (i * 13 + 5) % p.cfg.vocab;
    const int32_t bos = 1;
    fkd_model m;
    assert_int_equal(fkd_model_init_borrowed(&m, &p, 1, T, 0, NULL), 0);
    int64_t counted = 0;
    double nll = chunk_nll(&m, tokens, bos, &counted) + chunk_nll(&m, tokens + T, bos, &counted);
    fkd_model_free(&m);
    fkd_eval_result res;
    assert_int_equal(fkd_eval_tokens_llama(&res, &p, tokens, N, N, T, bos, NULL), 0);
    assert_int_equal(res.tokens, counted);
    assert_true(fabs(res.mean_loss - nll / (double)counted) < 1e-4);
    fkd_error err;
    assert_int_equal(fkd_eval_tokens_llama(&res, &p, tokens, T - 1, T - 1, T, -1, &err), -1);
    assert_int_equal(err.code, FKD_E_INVALID_ARG);
    fkd_params_free(&p);
}

static void test_byte_tokenizer_round_trip(void **state)
{
    fkd_tokenizer tok;
    fkd_tokenizer_init_bytes(&tok);
    uint8_t text[256], back[256];
    for (int i = 0; i < 256; i++) text[i] = (uint8_t)(255 - i); /* invalid UTF-8 included */
    int32_t ids[256];
    size_t n, m;
    assert_int_equal(fkd_tokenizer_encode(ids, 256, &n, &tok, text, 256, NULL), 0);
    assert_int_equal(fkd_tokenizer_decode(back, 256, &m, &tok, ids, n, NULL), 0);
    assert_int_equal(m, 256);
    assert_memory_equal(text, back, 256);
    fkd_error err;
    assert_int_equal(fkd_tokenizer_encode(ids, 10, &n, &tok, text, 256, &err), -1);
    assert_int_equal(err.code, FKD_E_LIMIT);
    ids[0] = 300;
    assert_int_equal(fkd_tokenizer_decode(back, 256, &m, &tok, ids, 1, &err), -1);
    fkd_tokenizer_free(&tok);
}

int main(void)
{
    fkd_train_set_threads(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kv_cache_matches_training_forward),
        cmocka_unit_test(test_sampler),
        cmocka_unit_test(test_eval_of_a_uniform_model),
        cmocka_unit_test(test_eval_llama_protocol),
        cmocka_unit_test(test_byte_tokenizer_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
