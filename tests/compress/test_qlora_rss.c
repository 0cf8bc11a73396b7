/* test_qlora_rss.c — a QLoRA client of the SmolLM2 student shape (49.5 M
 * parameters, int4 base, rank-8 adapters, batch 4 x 256) planned for a
 * 128 MB budget trains one optimizer step within it: peak RSS measured
 * from the kernel's high-water mark, reset once the quantized base (what
 * the client receives) is in memory. Slow: about one step of the student. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fkd_compress.h"

/* A /proc/self/status field in kB, or -1. */
static long status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long v = -1;
    size_t n = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, n) == 0) v = atol(line + n);
    fclose(f);
    return v;
}

/* Resets VmHWM to the current RSS (Linux >= 4.0); 0 on success. */
static int reset_peak(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return -1;
    int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

static void test_student_qlora_step_within_128_mb(void **state)
{
    const size_t budget = (size_t)128 << 20;
    fkd_model_config s = {.vocab = 49152, .dim = 576, .n_layers = 6, .n_heads = 9,
                          .n_kv_heads = 3, .ffn_hidden = 1536, .max_seq = 256,
                          .tie_embeddings = 1, .rope_theta = 100000.0f, .norm_eps = 1e-5f};
    enum { BATCH = 4, SEQ = 256 };
    fkd_error err;
    fkd_qmodel qm;
    {
        fkd_params full;
        assert_int_equal(fkd_params_init(&full, &s, &err), 0);
        fkd_params_randomize(&full, 1);
        assert_int_equal(fkd_qmodel_quantize(&qm, &full, FKD_QTYPE_Q4_1, NULL, &err), 0);
        fkd_params_free(&full); /* the client never holds it */
    }
    fkd_lora_config lc = fkd_lora_defaults();
    fkd_memory_plan plan;
    assert_int_equal(fkd_memory_plan_make_lora(&plan, &s, &lc, fkd_qlora_base_bytes(&s, FKD_QTYPE_Q4_1),
                                               1, BATCH, SEQ, budget, &err), 0);
    if (reset_peak() != 0 || status_kb("VmHWM:") < 0) skip(); /* no /proc: nothing to measure */

    fkd_weight_source src;
    fkd_lora lora;
    fkd_model m;
    fkd_optimizer opt;
    fkd_optimizer_config oc = fkd_optimizer_defaults();
    assert_int_equal(fkd_lora_init(&lora, &s, &lc, 2, &err), 0);
    assert_int_equal(fkd_qlora_model_init(&m, &src, &qm, &lora, plan.micro_batch, SEQ,
                                          plan.recompute, &err), 0);
    assert_int_equal(fkd_lora_optimizer_init(&opt, &oc, &lora, &err), 0);
    int32_t *tokens = malloc(sizeof(int32_t) * BATCH * SEQ);
    int32_t *targets = malloc(sizeof(int32_t) * BATCH * SEQ);
    for (int i = 0; i < BATCH * SEQ; i++) {
        tokens[i] = (int32_t)((i * 7919) % s.vocab);
        targets[i] = (int32_t)((i * 104729 + 1) % s.vocab);
    }
    fkd_model_zero_grad(&m);
    double loss = 0;
    for (int k = 0; k < plan.n_micro; k++) {
        fkd_loss_stats st;
        int32_t *tk = tokens + (size_t)k * plan.micro_batch * SEQ;
        assert_int_equal(fkd_model_forward(&m, tk, NULL), 0);
        fkd_model_backward(&m, tk, targets + (size_t)k * plan.micro_batch * SEQ, NULL, NULL, &st,
                           1.0f / plan.n_micro);
        loss += st.loss / plan.n_micro;
    }
    fkd_optimizer_step(&opt, lora.params, lora.grads);
    long peak_kb = status_kb("VmHWM:");
    print_message("qlora int4 student: micro-batch %d x %d, recompute %d, estimated %.1f MB, "
                  "peak RSS %.1f MB, loss %.3f\n", plan.micro_batch, plan.n_micro, plan.recompute,
                  plan.estimated_bytes / 1048576.0, peak_kb / 1024.0, loss);
    assert_true(isfinite(loss) && loss > 0);
    assert_true((size_t)peak_kb * 1024 <= budget);
    free(tokens);
    free(targets);
    fkd_optimizer_free(&opt);
    fkd_model_free(&m);
    fkd_lora_free(&lora);
    fkd_qmodel_free(&qm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_student_qlora_step_within_128_mb),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
