/* test_qsoftlabels.c — the quantized teacher: a GGUF file's blocks loaded
 * straight into an fkd_qmodel (the same bytes as the file, the same values
 * as the fp32 load), chunked prompt logits equal to the whole matrix, and
 * soft labels made on the blocks against the fp32 teacher's labels of the
 * same file: top-1 ids on >= 99 % of positions, probabilities within the
 * error that 8-bit activations leave, deterministic for any thread count. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fkd_compress.h"

#define VOCAB 256            /* the byte tokenizer GGUF writes without a source */
#define CTX 48
#define N_TRANSFER 400       /* 8 windows and a partial one */
#define SHARDS 3
/* A random model's next-token distributions are nearly flat, so any noise
 * reorders them; embeddings this much larger make the tied head's logits
 * spread over several nats, as a trained model's do (top-1 mass 0.38). */
#define EMB_SCALE 4.0f

static fkd_model_config tiny_config(void)
{
    return (fkd_model_config){.vocab = VOCAB, .dim = 64, .n_layers = 2, .n_heads = 4,
                              .n_kv_heads = 2, .ffn_hidden = 128, .max_seq = CTX,
                              .tie_embeddings = 1, .rope_theta = 10000.0f, .norm_eps = 1e-5f};
}

typedef struct {
    char path[64];
    fkd_params fp;     /* the file loaded to fp32 */
    fkd_qmodel qm;     /* the file's blocks */
    fkd_gguf g;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    fkd_error err;
    fkd_params p;
    fkd_model_config cfg = tiny_config();
    if (fkd_params_init(&p, &cfg, &err) != 0) fail_msg("%s", err.msg);
    fkd_params_randomize(&p, 7);
    const fkd_tensor_info *emb = &p.tensors[FKD_T_TOK_EMB];
    for (size_t i = 0; i < emb->count; i++) p.memory[emb->offset + i] *= EMB_SCALE;
    snprintf(f->path, sizeof f->path, "/tmp/fkd_qsoft_%d.gguf", (int)getpid());
    if (fkd_gguf_llama_save(f->path, &p, FKD_QTYPE_Q8_0, NULL, "qsoft test", &err) != 0)
        fail_msg("%s", err.msg);
    fkd_params_free(&p);
    if (fkd_gguf_open(&f->g, f->path, &err) != 0 || fkd_gguf_llama_load(&f->fp, &f->g, 0, &err) != 0 ||
        fkd_gguf_llama_load_qmodel(&f->qm, &f->g, 0, &err) != 0)
        fail_msg("%s", err.msg);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    fkd_qmodel_free(&f->qm);
    fkd_params_free(&f->fp);
    fkd_gguf_close(&f->g);
    remove(f->path);
    free(f);
    return 0;
}

/* The blocks are the file's bytes, and they dequantize to the fp32 load. */
static void test_qload_is_the_file(void **state)
{
    fixture *f = *state;
    assert_int_equal(f->qm.q[FKD_T_WQ].type, FKD_QTYPE_Q8_0);
    assert_int_equal(f->qm.q[FKD_T_ATTN_NORM].type, FKD_QTYPE_F32);
    const fkd_gguf_tensor *t = fkd_gguf_find_tensor(&f->g, "blk.1.ffn_down.weight");
    assert_non_null(t);
    const fkd_qtensor *q = &f->qm.q[FKD_T_W2];
    assert_int_equal(q->bytes, 2 * t->bytes);
    assert_memory_equal(q->data + t->bytes, t->data, t->bytes);
    fkd_params back;
    fkd_error err;
    assert_int_equal(fkd_qmodel_dequantize(&back, &f->qm, &err), 0);
    assert_int_equal(back.n_params, f->fp.n_params);
    assert_memory_equal(back.memory, f->fp.memory, f->fp.n_params * sizeof(float));
    fkd_params_free(&back);
}

/* A file whose tensors do not make the model is refused, nothing held. */
static void test_qload_refuses_missing_tensor(void **state)
{
    fixture *f = *state;
    fkd_gguf g = f->g;
    fkd_gguf_tensor *copy = malloc(g.n_tensors * sizeof *copy);
    memcpy(copy, g.tensors, g.n_tensors * sizeof *copy);
    g.tensors = copy;
    g.n_tensors--; /* the last tensor goes missing */
    fkd_qmodel qm;
    fkd_error err;
    assert_int_equal(fkd_gguf_llama_load_qmodel(&qm, &g, 0, &err), -1);
    assert_null(qm.memory);
    free(copy);
}

typedef struct {
    float *all;
    int V, calls, next;
} collect;

static void collect_rows(void *ctx, const float *logits, int first, int rows)
{
    collect *c = ctx;
    assert_int_equal(first, c->next); /* in order, no gaps */
    memcpy(c->all + (size_t)first * c->V, logits, (size_t)rows * c->V * sizeof *logits);
    c->next = first + rows;
    c->calls++;
}

static void test_prompt_each_equals_all_logits(void **state)
{
    fixture *f = *state;
    int n = CTX, V = VOCAB;
    int32_t tokens[CTX];
    for (int i = 0; i < n; i++) tokens[i] = (i * 37 + 11) % V;
    float *all = malloc((size_t)n * V * sizeof *all);
    collect c = {calloc((size_t)n * V, sizeof(float)), V, 0, 0};
    fkd_qinfer st;
    fkd_error err;
    assert_int_equal(fkd_qinfer_init(&st, &f->qm, FKD_QKERNEL_AUTO, &err), 0);
    assert_non_null(fkd_qinfer_prompt(&st, tokens, n, all));
    fkd_qinfer_reset(&st);
    assert_int_equal(fkd_qinfer_prompt_each(&st, tokens, n, 7, collect_rows, &c, &err), 0);
    assert_int_equal(c.calls, (n + 6) / 7);
    assert_int_equal(st.pos, n);
    assert_memory_equal(c.all, all, (size_t)n * V * sizeof *all);
    assert_memory_equal(st.logits, all + (size_t)(n - 1) * V, (size_t)V * sizeof *all);
    /* a prompt past the context, a token outside the vocabulary */
    fkd_qinfer_reset(&st);
    assert_int_equal(fkd_qinfer_prompt_each(&st, tokens, n + 1, 7, collect_rows, &c, &err), -1);
    tokens[3] = V;
    assert_int_equal(fkd_qinfer_prompt_each(&st, tokens, n, 7, collect_rows, &c, &err), -1);
    fkd_qinfer_free(&st);
    free(all);
    free(c.all);
}

static void transfer_stream(fkd_token_stream *s, int32_t *tokens)
{
    /* a repeating phrase with noise: structure the attention can use */
    fkd_rng rng;
    fkd_rng_seed(&rng, 3);
    for (int i = 0; i < N_TRANSFER; i++)
        tokens[i] = fkd_rng_uniform(&rng) < 0.8f ? (int32_t)("the quick brown fox "[i % 20])
                                                : (int32_t)(fkd_rng_u64(&rng) % VOCAB);
    memset(s, 0, sizeof *s);
    s->tokens = tokens;
    s->n = N_TRANSFER;
}

static fkd_teacher_config label_config(void)
{
    fkd_teacher_config tc = fkd_teacher_defaults();
    tc.n_shards = SHARDS;
    tc.quant = FKD_SOFT_Q16; /* 1/65535 steps: the comparison sees the teacher, not the code */
    tc.window = CTX;
    return tc;
}

static void free_shards(fkd_softlabel_shard *sh)
{
    for (int i = 0; i < SHARDS; i++) fkd_softlabels_free(&sh[i]);
}

/* Bounds of the comparison. The fp32 teacher and the quantized one read
 * the same weights (the file's, exactly); they differ by the 8-bit blocks
 * each activation is rounded to before a matrix product (a relative error
 * of about 1/254 per value) and by summation order. A logit off by e moves
 * a probability p by about p (1 - p) e <= e / 4; here the largest move
 * measured is 0.003 and the mean 0.00009 (Q16 codes, 1.5e-5 apart, do not
 * blur it). The bounds are 3x and 10x that: a kernel whose error doubles
 * still passes, a wrong row, position or window (moves of 0.1 and more)
 * does not. */
#define MAX_PROB_DIFF 0.01
#define MEAN_PROB_DIFF 0.001
#define MIN_TOP1_AGREEMENT 0.99
#define MIN_TOPK_OVERLAP 0.97 /* the 8th rank swaps where two ids are within 1e-3 */

static void test_labels_agree_with_fp32(void **state)
{
    fixture *f = *state;
    int32_t tokens[N_TRANSFER];
    fkd_token_stream s;
    transfer_stream(&s, tokens);
    fkd_teacher_config tc = label_config();
    fkd_softlabel_shard a[SHARDS], b[SHARDS];
    fkd_softlabel_stats sa, sb;
    fkd_error err;
    assert_int_equal(fkd_teacher_softlabels(a, &sa, &f->fp, &s, &tc, &err), 0);
    assert_int_equal(fkd_qsoftlabels_make(b, &sb, &f->qm, &s, &tc, &err), 0);
    assert_int_equal(sb.positions, N_TRANSFER);
    /* the labels mean something: far from a flat distribution */
    assert_true(sa.top1_mass > 0.2);
    for (int i = 0; i < SHARDS; i++)
        assert_memory_equal(a[i].tokens, b[i].tokens, (size_t)a[i].n * sizeof(int32_t));
    fkd_qsoft_agreement ag;
    assert_int_equal(fkd_qsoftlabels_compare(&ag, a, b, SHARDS, &err), 0);
    print_message("top-1 agreement %.4f, top-k overlap %.4f, max |dp| %.5f, mean |dp| %.6f, "
                  "top-1 mass %.3f vs %.3f\n", ag.top1_agreement, ag.topk_overlap,
                  ag.max_prob_diff, ag.mean_prob_diff, sa.top1_mass, sb.top1_mass);
    assert_int_equal(ag.positions, N_TRANSFER);
    assert_true(ag.top1_agreement >= MIN_TOP1_AGREEMENT);
    assert_true(ag.topk_overlap >= MIN_TOPK_OVERLAP);
    assert_true(ag.max_prob_diff <= MAX_PROB_DIFF);
    assert_true(ag.mean_prob_diff <= MEAN_PROB_DIFF);
    assert_true(fabs(sa.kl_truncation - sb.kl_truncation) <= 0.05 * sa.kl_truncation);
    free_shards(a);
    free_shards(b);
}

/* The same labels, bit for bit, with 1 and 2 threads and on a second run. */
static void test_labels_deterministic(void **state)
{
    fixture *f = *state;
    int32_t tokens[N_TRANSFER];
    fkd_token_stream s;
    transfer_stream(&s, tokens);
    fkd_teacher_config tc = label_config();
    tc.quant = FKD_SOFT_Q8_SQRT;
    fkd_softlabel_shard a[SHARDS], b[SHARDS];
    fkd_softlabel_stats sa, sb;
    fkd_error err;
    int threads = fkd_train_get_threads();
    fkd_train_set_threads(1);
    assert_int_equal(fkd_qsoftlabels_make(a, &sa, &f->qm, &s, &tc, &err), 0);
    fkd_train_set_threads(2);
    assert_int_equal(fkd_qsoftlabels_make(b, &sb, &f->qm, &s, &tc, &err), 0);
    fkd_train_set_threads(threads);
    for (int i = 0; i < SHARDS; i++) {
        size_t nk = (size_t)(a[i].n * tc.k);
        assert_memory_equal(a[i].ids, b[i].ids, nk * sizeof(int32_t));
        assert_memory_equal(a[i].probs, b[i].probs, nk * sizeof(float));
    }
    assert_true(sa.kl_total == sb.kl_total && sa.top1_mass == sb.top1_mass);
    free_shards(a);
    free_shards(b);
}

/* The comparison itself: equal sets agree fully; a swapped top-1, a
 * dropped id and a moved probability are each counted. */
static void test_compare_counts(void **state)
{
    (void)state;
    fkd_softlabel_shard a, b;
    fkd_error err;
    assert_int_equal(fkd_softlabels_alloc(&a, 2, 2, VOCAB, &err), 0);
    assert_int_equal(fkd_softlabels_alloc(&b, 2, 2, VOCAB, &err), 0);
    const int32_t ids[4] = {5, 6, 7, 8};
    const float probs[4] = {0.5f, 0.25f, 0.6f, 0.3f};
    memcpy(a.ids, ids, sizeof ids);
    memcpy(a.probs, probs, sizeof probs);
    memcpy(b.ids, ids, sizeof ids);
    memcpy(b.probs, probs, sizeof probs);
    fkd_qsoft_agreement ag;
    assert_int_equal(fkd_qsoftlabels_compare(&ag, &a, &b, 1, &err), 0);
    assert_true(ag.top1_agreement == 1.0 && ag.topk_overlap == 1.0 && ag.max_prob_diff == 0.0);
    b.ids[0] = 6, b.ids[1] = 5;  /* position 0: top-1 swapped, both kept */
    b.probs[0] = 0.25f, b.probs[1] = 0.5f;
    b.ids[3] = 9;                /* position 1: id 8 dropped */
    b.probs[2] = 0.5f;           /* id 7 moved by 0.1 */
    assert_int_equal(fkd_qsoftlabels_compare(&ag, &a, &b, 1, &err), 0);
    assert_true(fabs(ag.top1_agreement - 0.5) < 1e-12);
    assert_true(fabs(ag.topk_overlap - 0.75) < 1e-12);
    assert_true(fabs(ag.max_prob_diff - 0.1) < 1e-6);
    assert_true(fabs(ag.mean_prob_diff - 0.1 / 3) < 1e-6);
    b.n = 1;
    assert_int_equal(fkd_qsoftlabels_compare(&ag, &a, &b, 1, &err), -1);
    b.n = 2;
    fkd_softlabels_free(&a);
    fkd_softlabels_free(&b);
}

static void test_labels_refuse_bad_setting(void **state)
{
    fixture *f = *state;
    int32_t tokens[N_TRANSFER];
    fkd_token_stream s;
    transfer_stream(&s, tokens);
    fkd_teacher_config tc = label_config();
    fkd_softlabel_shard sh[SHARDS];
    fkd_softlabel_stats st;
    fkd_error err;
    tc.window = CTX + 1; /* longer than the teacher's context */
    assert_int_equal(fkd_qsoftlabels_make(sh, &st, &f->qm, &s, &tc, &err), -1);
    assert_int_equal(err.code, FKD_E_INVALID_ARG);
    tc = label_config();
    tokens[5] = VOCAB; /* outside the vocabulary */
    assert_int_equal(fkd_qsoftlabels_make(sh, &st, &f->qm, &s, &tc, &err), -1);
    assert_int_equal(err.code, FKD_E_MISMATCH);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qload_is_the_file),
        cmocka_unit_test(test_qload_refuses_missing_tensor),
        cmocka_unit_test(test_prompt_each_equals_all_logits),
        cmocka_unit_test(test_labels_agree_with_fp32),
        cmocka_unit_test(test_labels_deterministic),
        cmocka_unit_test(test_compare_counts),
        cmocka_unit_test(test_labels_refuse_bad_setting),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
