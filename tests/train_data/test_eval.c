/* test_eval.c — the evaluation report and the teacher pass on models whose
 * answers are known: an all-zero model (uniform: perplexity = vocab, 8 bits
 * per byte) and a hand-built "cycle" model that always continues
 * SEP -> a -> b -> c -> ' ' -> a ..., so its greedy continuations, their
 * words and its soft labels are known exactly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fkd_train.h"

#define DIM 32

static fkd_model_config tiny_config(void)
{
    fkd_model_config c = {.vocab = 256, .dim = DIM, .n_layers = 1, .n_heads = 2,
                          .n_kv_heads = 2, .ffn_hidden = 64, .max_seq = 64,
                          .tie_embeddings = 0, .rope_theta = 10000.0f, .norm_eps = 1e-6f};
    return c;
}

static void zero_model(fkd_params *p)
{
    fkd_model_config c = tiny_config();
    fkd_error err;
    assert_int_equal(fkd_params_init(p, &c, &err), 0);
    memset(p->memory, 0, p->n_params * sizeof(float));
}

/* Zero blocks leave x = tok_emb[token]; the head reads it after the final
 * RMSNorm, so tok_emb = one-hot slot and head[next] = 10 * that slot make a
 * lookup table of next tokens. */
static const int CYCLE[] = {FKD_DATA_SEPARATOR_BYTE, 'a', 'b', 'c', ' '};
static int cycle_next(int t)
{
    for (int i = 0; i < 5; i++)
        if (CYCLE[i] == t) return i == 4 ? 'a' : CYCLE[i + 1];
    return -1;
}

static void cycle_model(fkd_params *p)
{
    zero_model(p);
    for (int i = 0; i < DIM; i++) p->p.final_norm[i] = 1.0f;
    for (int slot = 0; slot < 5; slot++) {
        int t = CYCLE[slot];
        p->p.tok_emb[t * DIM + slot] = 1.0f;
        p->p.head[cycle_next(t) * DIM + slot] = 10.0f;
    }
}

/* A corpus of documents "abc abc ... abc" in a temp directory. */
static void cycle_corpus(fkd_corpus *c)
{
    const char *tmp = getenv("FKD_TEST_TMP");
    char dir[1024], path[1100];
    snprintf(dir, sizeof dir, "%s/evalcorpus.%d", tmp ? tmp : "/tmp", (int)getpid());
    fkd_error err;
    assert_int_equal(fkd_mkdir_p(dir, &err), 0);
    char text[4096] = "";
    for (int d = 0; d < 8; d++) {
        for (int w = 0; w < 10 + d; w++) strcat(text, w ? " abc" : "abc");
        strcat(text, "\n%\n");
    }
    snprintf(path, sizeof path, "%s/cycle", dir);
    assert_int_equal(fkd_file_write_atomic(path, text, strlen(text), &err), 0);
    assert_int_equal(fkd_corpus_load(c, dir, NULL, &err), 0);
    assert_int_equal(c->n_docs, 8);
}

static void test_words(void **state)
{
    fkd_wordset *ws;
    fkd_error err;
    assert_int_equal(fkd_wordset_new(&ws, &err), 0);
    const char *known = "The cat, the DOG; it's 42 birds.";
    assert_int_equal(fkd_wordset_add_text(ws, (const uint8_t *)known, strlen(known), &err), 0);
    assert_int_equal(fkd_wordset_size(ws), 6); /* the cat dog it s birds */
    assert_true(fkd_wordset_contains(ws, (const uint8_t *)"CAT", 3));
    assert_false(fkd_wordset_contains(ws, (const uint8_t *)"ca", 2));
    int64_t unknown, total;
    const char *gen = "the cat zorbled the dgo\nbir";
    fkd_words_count(&unknown, &total, ws, (const uint8_t *)gen, strlen(gen), 0);
    assert_int_equal(total, 5);    /* "bir" was cut by the token limit: not counted */
    assert_int_equal(unknown, 2);  /* zorbled, dgo */
    fkd_words_count(&unknown, &total, ws, (const uint8_t *)gen, strlen(gen), 1);
    assert_int_equal(total, 6);
    assert_int_equal(unknown, 3);
    fkd_wordset_destroy(&ws);
    assert_null(ws);
}

/* What the report tests start from: the cycle corpus, a model (zero or
 * cycle), the byte tokenizer, and the list of every document. */
typedef struct {
    fkd_corpus c;
    fkd_params p;
    fkd_tokenizer tok;
    uint32_t docs[8];
} eval_fixture;

static void eval_setup(eval_fixture *f, void (*make_model)(fkd_params *))
{
    fkd_train_set_threads(1);
    cycle_corpus(&f->c);
    make_model(&f->p);
    fkd_tokenizer_init_bytes(&f->tok);
    for (uint32_t i = 0; i < 8; i++) f->docs[i] = i;
}

static void eval_teardown(eval_fixture *f)
{
    fkd_params_free(&f->p);
    fkd_corpus_free(&f->c);
}

static void test_uniform_model(void **state)
{
    eval_fixture f;
    eval_setup(&f, zero_model);
    fkd_eval_config ec = fkd_eval_defaults();
    ec.n_prompts = 0;
    fkd_eval_report r;
    fkd_error err;
    assert_int_equal(fkd_eval_report_run(&r, &f.p, &f.tok, &f.c, f.docs, 8, NULL, &ec, &err), 0);
    assert_float_equal(r.lm.perplexity, 256.0, 1e-3);
    assert_float_equal(r.lm.bits_per_byte, 8.0, 1e-5); /* every byte and separator predicted */
    assert_int_equal(r.n_params, f.p.n_params);
    assert_int_equal(r.model_bytes_fp32, f.p.n_params * 4);
    assert_float_equal(r.flops_per_token, fkd_config_flops_per_token(&f.p.cfg, 64), 1);
    assert_true(r.peak_rss_mb > 0);
    eval_teardown(&f);
}

static void test_cycle_model(void **state)
{
    eval_fixture f;
    eval_setup(&f, cycle_model);
    fkd_eval_config ec = fkd_eval_defaults();
    ec.n_prompts = 4;
    ec.prompt_bytes = 10;   /* "abc abc ab" is cut back to "abc abc " */
    ec.gen_tokens = 22;     /* "abc abc abc abc abc ab": 5 whole words, one cut */
    ec.temperature = 0.0f;  /* greedy */
    fkd_wordset *ws;
    fkd_error err;
    assert_int_equal(fkd_wordset_new(&ws, &err), 0);
    assert_int_equal(fkd_wordset_add_text(ws, (const uint8_t *)"xyz", 3, &err), 0);
    fkd_eval_report r;
    assert_int_equal(fkd_eval_report_run(&r, &f.p, &f.tok, &f.c, f.docs, 8, ws, &ec, &err), 0);
    assert_int_equal(r.n_prompts, 4);
    assert_int_equal(r.halluc_words, 4 * 5);
    assert_int_equal(r.halluc_unknown, 4 * 5);
    assert_float_equal(r.halluc_rate, 1.0, 0);
    assert_true(r.ms_per_token > 0);
    /* all predictions right except each document's end (' ' expected, SEP
     * follows 'c'): 8 misses */
    assert_int_equal(r.lm.tokens - (int64_t)llround(r.lm.accuracy * r.lm.tokens), 8);
    assert_int_equal(fkd_wordset_add_text(ws, (const uint8_t *)"ABC", 3, &err), 0);
    assert_int_equal(fkd_eval_report_run(&r, &f.p, &f.tok, &f.c, f.docs, 8, ws, &ec, &err), 0);
    assert_float_equal(r.halluc_rate, 0.0, 0);
    assert_int_equal(r.halluc_words, 20);

    /* generation stops at the separator: after "abc" at the end of a
     * document the model says ' ', never SEP, so it runs to the limit */
    fkd_infer st;
    fkd_sampler sm;
    assert_int_equal(fkd_infer_init(&st, &f.p, &err), 0);
    assert_int_equal(fkd_sampler_init(&sm, 256, 0.0f, 0, 1.0f, 1, &err), 0);
    int32_t prompt[2] = {FKD_DATA_SEPARATOR_BYTE, 'a'};
    uint8_t out[64];
    size_t n_out;
    int stopped;
    double ms;
    assert_int_equal(fkd_generate(out, sizeof out, &n_out, &stopped, &ms, &st, &sm, &f.tok, prompt,
                                  2, 7, 'a', &err), 0);
    assert_int_equal(n_out, 3); /* "bc " then 'a' is the stop token */
    assert_memory_equal(out, "bc ", 3);
    assert_int_equal(stopped, 1);
    fkd_sampler_free(&sm);
    fkd_infer_free(&st);
    fkd_wordset_destroy(&ws);
    eval_teardown(&f);
}

static void test_teacher_pass(void **state)
{
    eval_fixture f;
    eval_setup(&f, cycle_model);
    fkd_token_stream s;
    fkd_error err;
    assert_int_equal(fkd_token_stream_from_docs(&s, &f.c, f.docs, 8, &f.tok, &err), 0);
    fkd_teacher_config tc = fkd_teacher_defaults();
    tc.k = 4;
    tc.temperature = 1.0f;
    tc.n_shards = 3;
    tc.window = 16;
    fkd_softlabel_shard shards[3];
    fkd_softlabel_stats st;
    assert_int_equal(fkd_teacher_softlabels(shards, &st, &f.p, &s, &tc, &err), 0);
    assert_int_equal(st.positions, s.n);
    int64_t at = 0;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(shards[i].first_position, at);
        assert_int_equal(shards[i].shard_index, i);
        for (int64_t j = 0; j < shards[i].n; j++, at++) {
            assert_int_equal(shards[i].tokens[j], s.tokens[at]);
            /* the teacher's top id is the cycle's next token, almost surely */
            assert_int_equal(shards[i].ids[j * 4], cycle_next(s.tokens[at]));
            assert_true(shards[i].probs[j * 4] > 0.99f);
        }
        /* shards round-trip through the file format */
        uint8_t *data;
        size_t bytes;
        fkd_softlabel_shard back;
        assert_int_equal(fkd_softlabels_encode(&data, &bytes, &shards[i], &err), 0);
        assert_int_equal(fkd_softlabels_decode(&back, data, bytes, &err), 0);
        assert_memory_equal(back.ids, shards[i].ids, (size_t)back.n * 4 * sizeof(int32_t));
        free(data);
        fkd_softlabels_free(&back);
        fkd_softlabels_free(&shards[i]);
    }
    assert_int_equal(at, s.n);
    assert_true(st.top1_mass > 0.99);
    assert_true(st.kl_truncation >= 0 && st.kl_truncation < 1e-3);
    assert_true(st.kl_total >= 0 && st.kl_total < 0.05);
    assert_int_equal(st.dense_fp32_bytes, (uint64_t)s.n * 256 * 4);
    /* for a uniform teacher, top-k + an evenly spread rest is exact */
    fkd_params z;
    zero_model(&z);
    assert_int_equal(fkd_teacher_softlabels(shards, &st, &z, &s, &tc, &err), 0);
    assert_float_equal(st.kl_truncation, 0.0, 1e-6);
    assert_float_equal(st.kept_mass, 4.0 / 256, 1e-6);
    for (int i = 0; i < 3; i++) fkd_softlabels_free(&shards[i]);
    fkd_params_free(&z);
    fkd_token_stream_free(&s);
    eval_teardown(&f);
}

/* The loss of a (B,T) batch from the whole (B*T,V) logits, as evaluation
 * computed it before the head was chunked. */
static void full_logits_loss(fkd_loss_stats *st, const fkd_params *p, const int32_t *tokens,
                             const int32_t *targets, int B, int T)
{
    fkd_model m;
    fkd_error err;
    float *logits;
    assert_int_equal(fkd_model_init_borrowed(&m, p, B, T, 1, &err), 0);
    assert_int_equal(fkd_model_forward(&m, tokens, &logits), 0);
    fkd_loss_forward_backward(NULL, st, logits, targets, NULL, NULL, B * T, p->cfg.vocab);
    fkd_model_free(&m);
}

/* Evaluation through the chunked head gives the figures of the whole
 * logits: fkd_model_loss in chunks that do not divide the batch, and
 * fkd_eval_tokens on one window. */
static void test_chunked_loss_equals_full_logits(void **state)
{
    fkd_train_set_threads(1);
    enum { B = 2, T = 48, CHUNK = 20 };
    fkd_model_config c = tiny_config();
    fkd_params p;
    fkd_error err;
    assert_int_equal(fkd_params_init(&p, &c, &err), 0);
    fkd_params_randomize(&p, 5);
    int32_t tokens[B * T + 1], targets[B * T];
    for (int i = 0; i <= B * T; i++) tokens[i] = (int32_t)((i * 37 + 11) % c.vocab);
    for (int i = 0; i < B * T; i++) targets[i] = i % 7 == 3 ? -1 : tokens[i + 1];
    fkd_loss_stats want, got;
    full_logits_loss(&want, &p, tokens, targets, B, T);

    fkd_model m;
    assert_int_equal(fkd_model_init_borrowed(&m, &p, B, T, 1, &err), 0);
    m.head_chunk = CHUNK; /* 96 positions: 4 chunks of 20 and one of 16 */
    assert_int_equal(fkd_model_forward(&m, tokens, NULL), 0);
    fkd_model_loss(&got, &m, targets);
    fkd_model_free(&m);
    assert_int_equal(got.n_ce, want.n_ce);
    assert_int_equal(got.n_correct, want.n_correct);
    assert_float_equal(got.ce, want.ce, 1e-5 * want.ce);

    /* one window of T inputs predicting tokens[1..T] */
    for (int i = 0; i < T; i++) targets[i] = tokens[i + 1];
    full_logits_loss(&want, &p, tokens, targets, 1, T);
    fkd_eval_result r;
    assert_int_equal(fkd_eval_tokens(&r, &p, tokens, T + 1, 0, T, &err), 0);
    assert_int_equal(r.tokens, want.n_ce);
    assert_float_equal(r.mean_loss, want.ce, 1e-5 * want.ce);
    assert_float_equal(r.accuracy, (double)want.n_correct / want.n_ce, 1e-12);
    fkd_params_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_words),
        cmocka_unit_test(test_uniform_model),
        cmocka_unit_test(test_cycle_model),
        cmocka_unit_test(test_teacher_pass),
        cmocka_unit_test(test_chunked_loss_equals_full_logits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
