/* test_gguf_forward.c — SmolLM2-135M read from its GGUF file through train/'s
 * forward passes (the batched fkd_model_forward and the KV-cache
 * fkd_infer_step) against transformers' fp32 forward pass over the same
 * dequantized weights (tests/reference/logits_topk.txt, written by
 * make_expected.py): the same argmax at every position where the reference
 * is not a near tie, and a mean KL(ref || ours) at most 1e-4, computed over
 * the reference's top-k tokens plus one bucket for the rest of the mass. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <math.h>

#include "fkd_compress.h"
#include "gguf_test_util.h"

#define TOP_K 20
#define MAX_TEXTS 8
#define MAX_POS 256
#define MAX_MEAN_KL 1e-4
#define NEAR_TIE 1e-3   /* logit gap under which either argmax is right */

typedef struct {
    int n;
    int32_t ids[MAX_POS];
    double lse[MAX_POS];
    int32_t top[MAX_POS][TOP_K];
    double logit[MAX_POS][TOP_K];
} ref_text;

static ref_text refs[MAX_TEXTS];
static int n_refs;
static fkd_params params;
static int have_model;

static void parse_reference(void)
{
    size_t bytes;
    char *file = reference_file("logits_topk.txt", &bytes);
    char *line = strtok(file, "\n");
    while (line && n_refs < MAX_TEXTS) {
        ref_text *r = &refs[n_refs++];
        assert_int_equal(sscanf(line, "text %*d %d", &r->n), 1);
        assert_true(r->n > 0 && r->n <= MAX_POS);
        assert_int_equal(parse_ids(r->ids, MAX_POS, strtok(NULL, "\n")), r->n);
        for (int p = 0; p < r->n; p++) {
            char *s = strtok(NULL, "\n"), *end;
            assert_non_null(s);
            assert_int_equal(strtol(s, &end, 10), p);
            r->lse[p] = strtod(end, &end);
            for (int k = 0; k < TOP_K; k++) {
                r->top[p][k] = (int32_t)strtol(end, &end, 10);
                assert_int_equal(*end, ':');
                r->logit[p][k] = strtod(end + 1, &end);
            }
        }
        line = strtok(NULL, "\n");
    }
    free(file);
}

static int setup(void **state)
{
    parse_reference();
    const char *path = smollm2_path();
    if (!path) return 0;
    fkd_gguf g;
    fkd_error err;
    if (fkd_gguf_open(&g, path, &err) != 0 || fkd_gguf_llama_load(&params, &g, MAX_POS, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    fkd_gguf_close(&g);
    have_model = 1;
    return 0;
}

static int teardown(void **state)
{
    if (have_model) fkd_params_free(&params);
    return 0;
}

typedef struct {
    double kl_sum, max_kl, max_logit_diff;
    int positions, argmax_same, argmax_checked;
} agreement;

/* Compares our logits (V) at one position with the reference. */
static void compare(agreement *a, const ref_text *r, int p, const float *logits, int V)
{
    double mx = logits[0];
    int arg = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > mx) mx = logits[i], arg = i;
    double sum = 0;
    for (int i = 0; i < V; i++) sum += exp(logits[i] - mx);
    double lse = mx + log(sum), kl = 0, p_rest = 1, q_rest = 1;
    for (int k = 0; k < TOP_K; k++) {
        double lp = r->logit[p][k] - r->lse[p], lq = logits[r->top[p][k]] - lse;
        kl += exp(lp) * (lp - lq);
        p_rest -= exp(lp);
        q_rest -= exp(lq);
        double d = fabs(logits[r->top[p][k]] - r->logit[p][k]);
        if (d > a->max_logit_diff) a->max_logit_diff = d;
    }
    if (p_rest > 1e-12 && q_rest > 1e-12) kl += p_rest * log(p_rest / q_rest);
    a->kl_sum += kl;
    if (kl > a->max_kl) a->max_kl = kl;
    a->positions++;
    if (r->logit[p][0] - r->logit[p][1] >= NEAR_TIE) {
        a->argmax_checked++;
        a->argmax_same += arg == r->top[p][0];
    }
}

static void check(const agreement *a, const char *path)
{
    double mean_kl = a->kl_sum / a->positions;
    printf("%s: positions=%d mean_kl=%.3g max_kl=%.3g argmax_same=%d/%d max_logit_diff=%.4f\n",
           path, a->positions, mean_kl, a->max_kl, a->argmax_same, a->argmax_checked,
           a->max_logit_diff);
    assert_true(a->positions >= 40);
    assert_true(mean_kl <= MAX_MEAN_KL);
    assert_int_equal(a->argmax_same, a->argmax_checked);
}

static void test_infer_step_matches_reference(void **state)
{
    if (!have_model) skip();
    fkd_infer st;
    fkd_error err;
    assert_int_equal(fkd_infer_init(&st, &params, &err), 0);
    agreement a = {0};
    for (int t = 0; t < n_refs; t++) {
        fkd_infer_reset(&st);
        for (int p = 0; p < refs[t].n; p++)
            compare(&a, &refs[t], p, fkd_infer_step(&st, refs[t].ids[p]), params.cfg.vocab);
    }
    fkd_infer_free(&st);
    check(&a, "fkd_infer_step");
}

static void test_batched_forward_matches_reference(void **state)
{
    if (!have_model) skip();
    agreement a = {0};
    fkd_error err;
    for (int t = 0; t < n_refs; t++) {
        fkd_model m;
        assert_int_equal(fkd_model_init_borrowed(&m, &params, 1, refs[t].n, 0, &err), 0);
        float *logits;
        fkd_model_forward(&m, refs[t].ids, &logits);
        for (int p = 0; p < refs[t].n; p++)
            compare(&a, &refs[t], p, logits + (size_t)p * params.cfg.vocab, params.cfg.vocab);
        fkd_model_free(&m);
    }
    check(&a, "fkd_model_forward");
}

/* The soft-label pass of the data pipeline with this teacher: top-k ids of
 * its 49,152-token vocabulary at T = 1 agree with the reference's, with the
 * reference's probabilities up to the file's quantization, and the shard
 * survives its encoding. */
static void test_soft_labels_from_teacher(void **state)
{
    if (!have_model) skip();
    const ref_text *r = &refs[1];
    fkd_token_stream ts = {.tokens = (int32_t *)r->ids, .n = r->n, .text_bytes = r->n};
    fkd_teacher_config tc = fkd_teacher_defaults();
    tc.k = 8;
    tc.temperature = 1.0f;
    tc.quant = FKD_SOFT_Q16;
    tc.n_shards = 1;
    tc.batch = 1;
    tc.window = r->n;
    fkd_softlabel_shard shard;
    fkd_softlabel_stats st;
    fkd_error err;
    assert_int_equal(fkd_teacher_softlabels(&shard, &st, &params, &ts, &tc, &err), 0);
    assert_int_equal(shard.vocab, 49152);
    assert_int_equal(shard.n, r->n);
    for (int p = 0; p < r->n; p++) {
        double want = exp(r->logit[p][0] - r->lse[p]);
        assert_int_equal(shard.ids[(size_t)p * tc.k], r->top[p][0]);
        assert_true(fabs(shard.probs[(size_t)p * tc.k] - want) < 1e-3);
    }
    printf("soft labels: positions=%lld kept_mass=%.3f top1_mass=%.3f kl_total=%.4f bytes=%llu "
           "dense_bytes=%llu\n", (long long)st.positions, st.kept_mass, st.top1_mass,
           st.kl_total, (unsigned long long)st.encoded_bytes,
           (unsigned long long)st.dense_fp32_bytes);
    uint8_t *data;
    size_t bytes;
    fkd_softlabel_shard back;
    assert_int_equal(fkd_softlabels_encode(&data, &bytes, &shard, &err), 0);
    assert_int_equal(fkd_softlabels_decode(&back, data, bytes, &err), 0);
    assert_memory_equal(back.ids, shard.ids, (size_t)shard.n * tc.k * sizeof *shard.ids);
    free(data);
    fkd_softlabels_free(&back);
    fkd_softlabels_free(&shard);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_infer_step_matches_reference),
        cmocka_unit_test(test_batched_forward_matches_reference),
        cmocka_unit_test(test_soft_labels_from_teacher),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
