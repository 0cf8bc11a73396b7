/* test_quant_gptq.c — GPTQ (compress/quant_gptq.c): on the calibration
 * inputs, the output error of every int4 matrix of the first block is well
 * below round-to-nearest's and importance-weighted least squares'; the
 * tensors it does not touch are round-to-nearest's bytes; the result is
 * the same run to run; Q4_0 works too; bad calibration is refused. */
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
    *state = calib_fixture_new(5, 6);
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    calib_fixture_free(*state);
    return 0;
}

/* The first block's attention input over the calibration windows, by hand:
 * RMSNorm(embedding) * gain, (N_TOKENS / SEQ * SEQ, C). */
static float *first_input(const fixture *f, int *rows)
{
    int C = f->p.cfg.dim, n_seq = N_TOKENS / SEQ;
    float *x = malloc((size_t)n_seq * SEQ * C * sizeof *x);
    for (int s = 0; s < n_seq; s++)
        for (int t = 0; t < SEQ; t++) {
            int32_t tok = f->tokens[(N_TOKENS - SEQ) * s / n_seq + t];
            const float *e = f->p.p.tok_emb + (size_t)tok * C;
            double ms = 0.0;
            for (int j = 0; j < C; j++) ms += (double)e[j] * e[j];
            double r = 1.0 / sqrt(ms / C + f->p.cfg.norm_eps);
            for (int j = 0; j < C; j++)
                x[((size_t)s * SEQ + t) * C + j] = (float)(e[j] * r * f->p.p.attn_norm[j]);
        }
    *rows = n_seq * SEQ;
    return x;
}

/* sum over inputs x of |(W - Q) x|^2 for layer 0 of matrix t (input C). */
static double output_error(const fkd_qmodel *qm, const fkd_params *p, int t, const float *x,
                           int n_x)
{
    const fkd_qtensor *q = &qm->q[t];
    size_t n = q->row_len, rows = q->count / n / (size_t)p->cfg.n_layers;
    float *deq = malloc(rows * n * sizeof *deq);
    assert_int_equal(fkd_dequantize_row(deq, q->type, q->data, rows * n), 0);
    const float *w = p->memory + qm->tensors[t].offset;
    double e = 0.0;
    for (int i = 0; i < n_x; i++)
        for (size_t r = 0; r < rows; r++) {
            double d = 0.0;
            for (size_t j = 0; j < n; j++) d += ((double)w[r * n + j] - deq[r * n + j]) * x[(size_t)i * n + j];
            e += d * d;
        }
    free(deq);
    return e;
}

static void test_output_error_below_rtn_and_mse(void **state)
{
    fixture *f = *state;
    fkd_error err;
    const int schemes[] = {FKD_QTYPE_Q4_1, FKD_QTYPE_Q4_0};
    int n_x;
    float *x = first_input(f, &n_x);
    fkd_qimatrix im;
    assert_int_equal(fkd_qimatrix_compute(&im, &f->p, &f->text, N_TOKENS, SEQ, &err), 0);
    for (int s = 0; s < 2; s++) {
        int types[FKD_T_COUNT];
        fkd_qmodel_policy_types(types, &f->p.cfg, schemes[s]);
        fkd_qmodel g, rtn, mse;
        assert_int_equal(fkd_qmodel_quantize_gptq(&g, &f->p, types, &f->text, N_TOKENS, SEQ, &err), 0);
        assert_int_equal(fkd_qmodel_quantize_types(&rtn, &f->p, types, NULL, &err), 0);
        assert_int_equal(fkd_qmodel_quantize_with(&mse, &f->p, types, NULL, FKD_QRULE_MSE, &im, &err), 0);
        assert_int_equal(g.data_bytes, rtn.data_bytes);
        const int attn[] = {FKD_T_WQ, FKD_T_WK, FKD_T_WV};
        for (int i = 0; i < 3; i++) {
            double eg = output_error(&g, &f->p, attn[i], x, n_x);
            double er = output_error(&rtn, &f->p, attn[i], x, n_x);
            double em = output_error(&mse, &f->p, attn[i], x, n_x);
            if (!(eg < 0.7 * er && eg < em)) /* measured: 0.24 of RTN's (Q4_1 wq) */
                fail_msg("%s %s: output error %g, RTN %g, MSE %g", fkd_qtype_name(schemes[s]),
                         g.tensors[attn[i]].name, eg, er, em);
        }
        /* what GPTQ does not quantize is round-to-nearest's: embedding, norms */
        for (int t = 0; t < FKD_T_COUNT; t++)
            if (!fkd_tensor_is_block_matrix(t))
                assert_memory_equal(g.q[t].data, rtn.q[t].data, rtn.q[t].bytes);
        /* every int4 matrix was rewritten, in every layer */
        for (int t = 0; t < FKD_T_COUNT; t++) {
            if (!fkd_tensor_is_block_matrix(t)) continue;
            size_t half = g.q[t].bytes / 2;
            assert_true(memcmp(g.q[t].data, rtn.q[t].data, half) != 0);
            assert_true(memcmp(g.q[t].data + half, rtn.q[t].data + half, half) != 0);
        }
        fkd_qmodel again;
        assert_int_equal(fkd_qmodel_quantize_gptq(&again, &f->p, types, &f->text, N_TOKENS, SEQ, &err), 0);
        assert_memory_equal(again.memory, g.memory, g.data_bytes);
        fkd_qmodel_free(&again);
        fkd_qmodel_free(&g);
        fkd_qmodel_free(&rtn);
        fkd_qmodel_free(&mse);
    }
    fkd_qimatrix_free(&im);
    free(x);
}

/* A channel no calibration input reaches (its gain 0) gives the Hessian a
 * zero row: it is still factored (H_jj = 1) and the model comes out whole. */
static void test_silent_channel(void **state)
{
    fixture *f = *state;
    fkd_error err;
    float *gain = f->p.memory + f->p.tensors[FKD_T_ATTN_NORM].offset;
    float kept = gain[7];
    gain[7] = 0.0f;
    int types[FKD_T_COUNT];
    fkd_qmodel_policy_types(types, &f->p.cfg, FKD_QTYPE_Q4_1);
    fkd_qmodel g;
    assert_int_equal(fkd_qmodel_quantize_gptq(&g, &f->p, types, &f->text, N_TOKENS, SEQ, &err), 0);
    const fkd_qtensor *q = &g.q[FKD_T_WQ];
    float *deq = malloc(q->count * sizeof *deq);
    assert_int_equal(fkd_dequantize_row(deq, q->type, q->data, q->count), 0);
    for (size_t i = 0; i < q->count; i++) assert_true(isfinite(deq[i]));
    free(deq);
    fkd_qmodel_free(&g);
    gain[7] = kept;
}

static void test_bad_calibration_refused(void **state)
{
    fixture *f = *state;
    fkd_error err;
    int types[FKD_T_COUNT];
    fkd_qmodel_policy_types(types, &f->p.cfg, FKD_QTYPE_Q4_1);
    fkd_qmodel g;
    assert_int_equal(fkd_qmodel_quantize_gptq(&g, &f->p, types, &f->text, SEQ - 1, SEQ, &err), -1);
    assert_int_equal(err.code, FKD_E_INVALID_ARG);
    assert_null(g.memory);
    assert_int_equal(fkd_qmodel_quantize_gptq(&g, &f->p, types, &f->text, 64, 64, &err), -1);
    assert_null(g.memory); /* a window past the context */
    f->tokens[40] = 64; /* outside the vocabulary */
    assert_int_equal(fkd_qmodel_quantize_gptq(&g, &f->p, types, &f->text, N_TOKENS, SEQ, &err), -1);
    assert_non_null(strstr(err.msg, "vocabulary"));
    assert_null(g.memory);
    f->tokens[40] = 3;
}

int main(void)
{
    fkd_train_set_threads(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_output_error_below_rtn_and_mse),
        cmocka_unit_test(test_silent_channel),
        cmocka_unit_test(test_bad_calibration_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
