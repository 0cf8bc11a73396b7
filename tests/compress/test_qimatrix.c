/* test_qimatrix.c — the importance matrix (compress/qimatrix.c) and the
 * quantized student built with it (fkd_qmodel_quantize_with): the mean
 * squares equal a hand computation of the first norm's output, the shared
 * inputs agree, the rules give what they say (RTN: fkd_qmodel_quantize's
 * bytes; MSE: lower importance-weighted error than RTN), a model of another
 * shape is refused, the deploy recipe (fkd_qmodel_quantize_deploy: wo and
 * w2 at Q8_0, GPTQ with calibration text, RTN without) and the
 * mixed-precision list parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fkd_compress.h"

#include "calib_fixture.h"

#define N_TOKENS CALIB_TOKENS
#define SEQ 16

typedef calib_fixture fixture;

static int setup(void **state)
{
    *state = calib_fixture_new(3, 4);
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    calib_fixture_free(*state);
    return 0;
}

/* Layer 0's wq importance is the mean square of RMSNorm(embedding) * gain
 * over the windows' tokens: computed here by hand. */
static void test_first_norm_by_hand(void **state)
{
    fixture *f = *state;
    fkd_qimatrix im;
    fkd_error err;
    const int n_tokens = 4 * SEQ;
    assert_int_equal(fkd_qimatrix_compute(&im, &f->p, &f->text, n_tokens, SEQ, &err), 0);
    assert_int_equal(im.tokens, n_tokens);
    int C = f->p.cfg.dim;
    double *want = calloc((size_t)C, sizeof *want);
    for (int s = 0; s < 4; s++) {
        const int32_t *win = f->tokens + (N_TOKENS - SEQ) * s / 4; /* spread evenly */
        for (int t = 0; t < SEQ; t++) {
            const float *x = f->p.p.tok_emb + (size_t)win[t] * C;
            double ms = 0.0;
            for (int j = 0; j < C; j++) ms += (double)x[j] * x[j];
            double r = 1.0 / sqrt(ms / C + f->p.cfg.norm_eps);
            for (int j = 0; j < C; j++) {
                double y = x[j] * r * f->p.p.attn_norm[j];
                want[j] += y * y / n_tokens;
            }
        }
    }
    for (int j = 0; j < C; j++)
        if (fabs(im.w[FKD_T_WQ][j] - want[j]) > 1e-4 * want[j] + 1e-7)
            fail_msg("channel %d: %g, by hand %g", j, im.w[FKD_T_WQ][j], want[j]);
    /* wk, wv read wq's input and w3 reads w1's; every block matrix has its array */
    size_t LC = (size_t)f->p.cfg.n_layers * C;
    assert_memory_equal(im.w[FKD_T_WK], im.w[FKD_T_WQ], LC * sizeof(float));
    assert_memory_equal(im.w[FKD_T_WV], im.w[FKD_T_WQ], LC * sizeof(float));
    assert_memory_equal(im.w[FKD_T_W3], im.w[FKD_T_W1], LC * sizeof(float));
    assert_null(im.w[FKD_T_TOK_EMB]);
    assert_null(im.w[FKD_T_ATTN_NORM]);
    for (size_t i = 0; i < (size_t)f->p.cfg.n_layers * f->p.cfg.ffn_hidden; i++)
        assert_true(im.w[FKD_T_W2][i] >= 0.0f && isfinite(im.w[FKD_T_W2][i]));
    free(want);
    fkd_qimatrix_free(&im);
    assert_null(im.memory);
}

static void test_bad_arguments_refused(void **state)
{
    fixture *f = *state;
    fkd_qimatrix im;
    fkd_error err;
    assert_int_equal(fkd_qimatrix_compute(&im, &f->p, &f->text, 8, SEQ, &err), -1); /* no window */
    assert_int_equal(err.code, FKD_E_INVALID_ARG);
    assert_int_equal(fkd_qimatrix_compute(&im, &f->p, &f->text, 64, 64, &err), -1); /* > max_seq */
    f->tokens[5] = 64;                                                             /* outside vocab */
    assert_int_equal(fkd_qimatrix_compute(&im, &f->p, &f->text, 64, SEQ, &err), -1);
    f->tokens[5] = 1;
}

/* The importance-weighted error (what the next layer hears) of each int4
 * matrix: the MSE rule with the importances is below round-to-nearest. */
static double weighted_err(const fkd_qmodel *qm, const fkd_params *p, const fkd_qimatrix *im, int t)
{
    const fkd_qtensor *q = &qm->q[t];
    float *y = malloc(q->count * sizeof *y);
    fkd_dequantize_row(y, q->type, q->data, q->count);
    const float *x = p->memory + qm->tensors[t].offset;
    size_t rows = q->count / q->row_len, per = rows / (size_t)p->cfg.n_layers;
    double e = 0.0;
    for (size_t i = 0; i < q->count; i++) {
        size_t r = i / q->row_len, j = i % q->row_len;
        double d = (double)x[i] - y[i];
        e += im->w[t][(r / per) * q->row_len + j] * d * d;
    }
    free(y);
    return e;
}

static void test_rules(void **state)
{
    fixture *f = *state;
    fkd_qimatrix im;
    fkd_error err;
    assert_int_equal(fkd_qimatrix_compute(&im, &f->p, &f->text, N_TOKENS, SEQ, &err), 0);
    const int schemes[] = {FKD_QTYPE_Q4_0, FKD_QTYPE_Q4_1};
    for (int s = 0; s < 2; s++) {
        int types[FKD_T_COUNT];
        fkd_qmodel_policy_types(types, &f->p.cfg, schemes[s]);
        fkd_qmodel plain, rtn, mse;
        assert_int_equal(fkd_qmodel_quantize(&plain, &f->p, schemes[s], NULL, &err), 0);
        assert_int_equal(fkd_qmodel_quantize_with(&rtn, &f->p, types, NULL, FKD_QRULE_RTN, &im, &err), 0);
        assert_int_equal(fkd_qmodel_quantize_with(&mse, &f->p, types, NULL, FKD_QRULE_MSE, &im, &err), 0);
        /* RTN ignores the importances: fkd_qmodel_quantize's bytes, ggml's rule */
        assert_int_equal(rtn.data_bytes, plain.data_bytes);
        assert_memory_equal(rtn.memory, plain.memory, plain.data_bytes);
        for (int t = 0; t < FKD_T_COUNT; t++) {
            if (!fkd_tensor_is_block_matrix(t)) {
                assert_memory_equal(mse.q[t].data, rtn.q[t].data, rtn.q[t].bytes); /* norms, Q8_0 */
                continue;
            }
            double e_rtn = weighted_err(&rtn, &f->p, &im, t), e_mse = weighted_err(&mse, &f->p, &im, t);
            if (!(e_mse < 0.97 * e_rtn)) /* measured: 0.90 (Q4_0 wq) and below */
                fail_msg("%s %s: weighted error %g, RTN's %g", fkd_qtype_name(schemes[s]),
                         rtn.tensors[t].name, e_mse, e_rtn);
        }
        fkd_qmodel_free(&plain);
        fkd_qmodel_free(&rtn);
        fkd_qmodel_free(&mse);
    }
    /* another shape's importances, and an unknown rule, are refused */
    fkd_qmodel qm;
    int types[FKD_T_COUNT];
    fkd_qmodel_policy_types(types, &f->p.cfg, FKD_QTYPE_Q4_1);
    im.cfg.ffn_hidden += 32;
    assert_int_equal(fkd_qmodel_quantize_with(&qm, &f->p, types, NULL, FKD_QRULE_MSE, &im, &err), -1);
    assert_int_equal(err.code, FKD_E_MISMATCH);
    assert_null(qm.memory);
    assert_int_equal(fkd_qmodel_quantize_with(&qm, &f->p, types, NULL, 7, NULL, &err), -1);
    fkd_qimatrix_free(&im);
}

/* The deploy recipe: an int4 model keeps wv, wo and w2 at Q8_0, its other
 * block matrices are GPTQ's on the calibration text (windows of the
 * context, 32 < 256, over the whole short text), round-to-nearest without
 * text, with a text shorter than a window, or with a mask; int8 is
 * unchanged and reads no text. */
static void test_deploy_recipe(void **state)
{
    fixture *f = *state;
    fkd_error err;
    int types[FKD_T_COUNT], policy[FKD_T_COUNT];
    fkd_qmodel_deploy_types(types, &f->p.cfg, FKD_QTYPE_Q4_1);
    fkd_qmodel_policy_types(policy, &f->p.cfg, FKD_QTYPE_Q4_1);
    for (int t = 0; t < FKD_T_COUNT; t++) {
        int want = t == FKD_T_WV || t == FKD_T_WO || t == FKD_T_W2 ? FKD_QTYPE_Q8_0 : policy[t];
        assert_int_equal(types[t], want);
    }
    assert_int_equal(types[FKD_T_WQ], FKD_QTYPE_Q4_1);
    assert_int_equal(types[FKD_T_WK], FKD_QTYPE_Q4_1);
    assert_int_equal(types[FKD_T_W1], FKD_QTYPE_Q4_1);
    assert_int_equal(types[FKD_T_TOK_EMB], FKD_QTYPE_Q8_0);

    int ctx = f->p.cfg.max_seq;
    assert_int_equal(fkd_qmodel_deploy_calib_tokens(&f->p.cfg, &f->text), N_TOKENS / ctx * ctx);
    fkd_qmodel dep, gptq, plain, bare, rtn;
    assert_int_equal(fkd_qmodel_quantize_deploy(&dep, &f->p, FKD_QTYPE_Q4_1, NULL, &f->text, &err), 0);
    assert_int_equal(fkd_qmodel_quantize_gptq(&gptq, &f->p, types, &f->text, N_TOKENS / ctx * ctx,
                                              ctx, &err), 0);
    assert_int_equal(fkd_qmodel_quantize(&plain, &f->p, FKD_QTYPE_Q4_1, NULL, &err), 0);
    assert_int_equal(dep.data_bytes, gptq.data_bytes);
    assert_memory_equal(dep.memory, gptq.memory, gptq.data_bytes);
    assert_true(dep.data_bytes > plain.data_bytes); /* the price of the three Q8_0 kinds */
    for (int t = 0; t < FKD_T_COUNT; t++) assert_int_equal(dep.q[t].type, types[t]);
    /* without text, or too little, or with a mask: round-to-nearest codes in the same formats */
    assert_int_equal(fkd_qmodel_quantize_with(&rtn, &f->p, types, NULL, FKD_QRULE_RTN, NULL, &err), 0);
    assert_true(memcmp(dep.q[FKD_T_WQ].data, rtn.q[FKD_T_WQ].data, rtn.q[FKD_T_WQ].bytes) != 0);
    fkd_token_stream few = {.tokens = f->tokens, .n = ctx - 1};
    assert_int_equal(fkd_qmodel_deploy_calib_tokens(&f->p.cfg, &few), 0);
    const fkd_token_stream *none[] = {NULL, &few};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(fkd_qmodel_quantize_deploy(&bare, &f->p, FKD_QTYPE_Q4_1, NULL, none[i],
                                                    &err), 0);
        assert_memory_equal(bare.memory, rtn.memory, rtn.data_bytes);
        fkd_qmodel_free(&bare);
    }
    fkd_qmodel_free(&dep);
    fkd_qmodel_free(&gptq);
    fkd_qmodel_free(&plain);
    fkd_qmodel_free(&rtn);

    /* int8: fkd_qmodel_quantize's model, text or not */
    assert_int_equal(fkd_qmodel_quantize_deploy(&dep, &f->p, FKD_QTYPE_Q8_0, NULL, &f->text, &err), 0);
    assert_int_equal(fkd_qmodel_quantize(&plain, &f->p, FKD_QTYPE_Q8_0, NULL, &err), 0);
    assert_int_equal(dep.data_bytes, plain.data_bytes);
    assert_memory_equal(dep.memory, plain.memory, plain.data_bytes);
    fkd_qmodel_free(&dep);
    fkd_qmodel_free(&plain);
    assert_int_equal(fkd_qmodel_quantize_deploy(&dep, &f->p, 99, NULL, &f->text, &err), -1);
    assert_int_equal(err.code, FKD_E_INVALID_ARG);
    assert_null(dep.memory);

    char r[FKD_QDEPLOY_RECIPE_MAX];
    fkd_qmodel_deploy_recipe(r, sizeof r, FKD_QTYPE_Q4_1, 4096);
    assert_string_equal(r, "q4_1 gptq, 4096 calibration tokens, wv wo w2 q8_0");
    fkd_qmodel_deploy_recipe(r, sizeof r, FKD_QTYPE_Q4_0, 0);
    assert_string_equal(r, "q4_0 rtn, wv wo w2 q8_0");
    fkd_qmodel_deploy_recipe(r, sizeof r, FKD_QTYPE_Q8_0, 4096);
    assert_string_equal(r, "q8_0");
}

static void test_parse_types(void **state)
{
    fixture *f = *state;
    fkd_error err;
    int types[FKD_T_COUNT], before[FKD_T_COUNT];
    fkd_qmodel_policy_types(types, &f->p.cfg, FKD_QTYPE_Q4_1);
    assert_int_equal(types[FKD_T_W2], FKD_QTYPE_Q4_1);
    assert_int_equal(types[FKD_T_TOK_EMB], FKD_QTYPE_Q8_0);
    assert_int_equal(types[FKD_T_ATTN_NORM], FKD_QTYPE_F32);
    assert_int_equal(fkd_qmodel_parse_types(types, &f->p.cfg, "w2=q8_0,wv=f16", &err), 0);
    assert_int_equal(types[FKD_T_W2], FKD_QTYPE_Q8_0);
    assert_int_equal(types[FKD_T_WV], FKD_QTYPE_F16);
    assert_int_equal(types[FKD_T_WQ], FKD_QTYPE_Q4_1);
    memcpy(before, types, sizeof before);
    const char *bad[] = {"w2", "w2=q5_k", "attn_norm=q8_0", "w9=q8_0", "wq=q8_0,w2", "=q8_0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(fkd_qmodel_parse_types(types, &f->p.cfg, bad[i], &err), -1);
        assert_int_equal(err.code, FKD_E_INVALID_ARG);
        assert_memory_equal(types, before, sizeof before); /* unchanged on an error */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_first_norm_by_hand, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deploy_recipe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parse_types, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
