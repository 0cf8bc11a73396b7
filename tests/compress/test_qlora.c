/* test_qlora.c — a quantized model as the frozen base of LoRA adapters:
 * the adapters' gradients against finite differences of the quantized-base
 * model (Q8_0 and Q4_1), the source serving exactly the values that
 * fkd_qmodel_dequantize gives (pruned weights included), refusal of a model
 * whose rows do not fit, and the documented base bytes of the SmolLM2
 * student shape. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fkd_compress.h"
#include "gradcheck.h"

enum { B = 2, T = 5 };

static fkd_model_config small_config(void)
{
    /* rows of 32 and 64 values: whole blocks for every format */
    return (fkd_model_config){.vocab = 13, .dim = 32, .n_layers = 2, .n_heads = 2,
                              .n_kv_heads = 1, .ffn_hidden = 64, .max_seq = 8,
                              .tie_embeddings = 1, .rope_theta = 10000.0f, .norm_eps = 1e-5f};
}

static void make_qmodel(fkd_qmodel *qm, int type, int pruned)
{
    fkd_model_config cfg = small_config();
    fkd_params p;
    fkd_error err;
    assert_int_equal(fkd_params_init(&p, &cfg, &err), 0);
    fkd_params_randomize(&p, 3);
    for (size_t i = 0; i < p.n_params; i++) p.memory[i] *= 5.0f;
    uint8_t *mask = NULL;
    if (pruned) {
        mask = malloc(p.n_params);
        assert_int_equal(fkd_prune_magnitude(mask, &p, 0.5f, &err), 0);
    }
    assert_int_equal(fkd_qmodel_quantize(qm, &p, type, mask, &err), 0);
    free(mask);
    fkd_params_free(&p);
}

static void make_lora(fkd_lora *lora, const fkd_model_config *cfg)
{
    fkd_lora_config lc = fkd_lora_defaults();
    lc.rank = 2;
    fkd_error err;
    assert_int_equal(fkd_lora_init(lora, cfg, &lc, 9, &err), 0);
    fkd_rng rng;
    fkd_rng_seed(&rng, 10);
    for (size_t i = 0; i < lora->n; i++) lora->params[i] = 0.3f * fkd_rng_normal(&rng);
}

typedef struct {
    int32_t tokens[B * T], targets[B * T];
} ctx;

static void fill_tokens(ctx *c)
{
    for (int i = 0; i < B * T; i++) {
        c->tokens[i] = (int32_t)((i * 7 + 3) % 13);
        c->targets[i] = i % 5 == 4 ? -1 : (int32_t)((i * 5 + 1) % 13);
    }
}

static void qlora_model(fkd_model *m, const fkd_qmodel *qm, fkd_weight_source *src, fkd_lora *lora)
{
    fkd_error err;
    assert_int_equal(fkd_qlora_model_init(m, src, qm, lora, B, T, 0, &err), 0);
    assert_null(m->params.p.w1);
    assert_null(m->params.p.tok_emb); /* only the norm gains are fp32 */
}

/* dA and dB against central differences of the loss of the model whose
 * base is the quantized one (the base's own gradient is not needed). */
static void check_gradients(int type)
{
    fkd_qmodel qm;
    make_qmodel(&qm, type, 0);
    fkd_lora lora;
    make_lora(&lora, &qm.cfg);
    fkd_weight_source src;
    fkd_model m;
    qlora_model(&m, &qm, &src, &lora);
    ctx c;
    fill_tokens(&c);
    gradcheck_model g = {&m, c.tokens, c.targets};
    fkd_model_zero_grad(&m);
    gradcheck_model_loss(&g);
    float *analytic = malloc(lora.n * sizeof(float));
    memcpy(analytic, lora.grads, lora.n * sizeof(float));
    double largest = 0;
    for (size_t i = 0; i < lora.n; i++) largest = fmax(largest, fabs(analytic[i]));
    assert_true(largest > 1e-3); /* the check sees real gradients */
    gradcheck(lora.params, lora.n, analytic, gradcheck_model_loss, &g, 1e-3f, 5e-4, 3e-2, 97,
              fkd_qtype_name(type));
    free(analytic);
    fkd_model_free(&m);
    fkd_lora_free(&lora);
    fkd_qmodel_free(&qm);
}

static void test_gradients_over_q8_0(void **state) { check_gradients(FKD_QTYPE_Q8_0); }
static void test_gradients_over_q4_1(void **state) { check_gradients(FKD_QTYPE_Q4_1); }

/* The source's model and a model over fkd_qmodel_dequantize's fp32 params
 * compute the same loss and adapter gradients, bit for bit. */
static void check_same_as_dequantized(int type, int pruned)
{
    fkd_qmodel qm;
    make_qmodel(&qm, type, pruned);
    fkd_lora l1, l2;
    make_lora(&l1, &qm.cfg);
    make_lora(&l2, &qm.cfg);
    fkd_weight_source src;
    fkd_model quantized, dense;
    qlora_model(&quantized, &qm, &src, &l1);
    fkd_params deq;
    fkd_error err;
    assert_int_equal(fkd_qmodel_dequantize(&deq, &qm, &err), 0);
    assert_int_equal(fkd_model_init_lora(&dense, &deq, NULL, &l2, B, T, 0, &err), 0);
    ctx c;
    fill_tokens(&c);
    gradcheck_model gq = {&quantized, c.tokens, c.targets}, gd = {&dense, c.tokens, c.targets};
    fkd_model_zero_grad(&quantized);
    double lq = gradcheck_model_loss(&gq);
    fkd_model_zero_grad(&dense);
    double ld = gradcheck_model_loss(&gd);
    assert_true(lq == ld);
    assert_memory_equal(l1.grads, l2.grads, l1.n * sizeof(float));
    fkd_model_free(&quantized);
    fkd_model_free(&dense);
    fkd_lora_free(&l1);
    fkd_lora_free(&l2);
    fkd_qmodel_free(&qm);
}

static void test_source_equals_dequantized(void **state)
{
    check_same_as_dequantized(FKD_QTYPE_Q8_0, 0);
    check_same_as_dequantized(FKD_QTYPE_Q4_0, 0);
    check_same_as_dequantized(FKD_QTYPE_Q4_1, 1); /* pruned weights read as exact zeros */
}

static void test_unfit_model_is_refused(void **state)
{
    fkd_qmodel qm;
    make_qmodel(&qm, FKD_QTYPE_Q8_0, 0);
    fkd_weight_source src;
    fkd_error err;
    qm.q[FKD_T_W2].row_len = 32; /* w2's rows hold ffn_hidden = 64 values */
    assert_int_equal(fkd_qlora_source(&src, &qm, &err), -1);
    assert_int_equal(err.code, FKD_E_INVALID_ARG);
    assert_null(src.rows);
    fkd_qmodel_free(&qm);
}

/* The 6-layer SmolLM2 student (vocab 49152, dim 576, 9/3 heads, ffn 1536,
 * tied): 21,233,664 block-matrix weights, 28,311,552 embedding weights and
 * 7,488 norm gains (29,952 bytes, held twice: in the quantized model and as
 * the base's fp32 params). As Q8_0 everything takes 52,641,792 bytes; as
 * Q4_1 the block matrices take 13,271,040 and the embedding stays Q8_0
 * (30,081,024, the policy of fkd_qmodel_quantize). */
static void test_student_base_bytes(void **state)
{
    fkd_model_config s = {.vocab = 49152, .dim = 576, .n_layers = 6, .n_heads = 9,
                          .n_kv_heads = 3, .ffn_hidden = 1536, .max_seq = 256,
                          .tie_embeddings = 1, .rope_theta = 100000.0f, .norm_eps = 1e-5f};
    assert_int_equal(fkd_qlora_base_bytes(&s, FKD_QTYPE_Q8_0), 52641792 + 2 * 29952);
    assert_int_equal(fkd_qlora_base_bytes(&s, FKD_QTYPE_Q4_1), 13271040 + 30081024 + 2 * 29952);
    assert_int_equal(fkd_qlora_base_bytes(&s, FKD_QTYPE_F32), 49552704 * 4 + 29952);

    /* Batch 4 x 256 with rank-8 adapters: a 128 MB phone trains QLoRA int4
     * in micro-batches of one sequence with recomputation, a 512 MB one in a
     * single pass; an fp32 base alone is above 128 MB. */
    fkd_lora_config lc = fkd_lora_defaults();
    fkd_memory_plan plan;
    fkd_error err;
    size_t q4 = fkd_qlora_base_bytes(&s, FKD_QTYPE_Q4_1), mb = (size_t)1 << 20;
    assert_int_equal(fkd_memory_plan_make_lora(&plan, &s, &lc, q4, 1, 4, 256, 128 * mb, &err), 0);
    assert_int_equal(plan.micro_batch, 1);
    assert_int_equal(plan.n_micro, 4);
    assert_int_equal(plan.recompute, 1);
    assert_true(plan.estimated_bytes <= 128 * mb);
    assert_int_equal(fkd_memory_plan_make_lora(&plan, &s, &lc, q4, 1, 4, 256, 512 * mb, &err), 0);
    assert_int_equal(plan.micro_batch, 4);
    assert_int_equal(plan.recompute, 0);
    size_t fp32 = fkd_config_param_count(&s) * sizeof(float);
    assert_int_equal(fkd_memory_plan_make_lora(&plan, &s, &lc, fp32, 0, 4, 256, 128 * mb, &err), -1);
    assert_int_equal(err.code, FKD_E_LIMIT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradients_over_q8_0),
        cmocka_unit_test(test_gradients_over_q4_1),
        cmocka_unit_test(test_source_equals_dequantized),
        cmocka_unit_test(test_unfit_model_is_refused),
        cmocka_unit_test(test_student_base_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
