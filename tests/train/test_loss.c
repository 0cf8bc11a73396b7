/* test_loss.c — cross-entropy and top-k distillation: values against a
 * direct computation on hand-made distributions, gradients against finite
 * differences, and alpha = 0 reducing exactly to cross-entropy. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "fkd_train.h"
#include "gradcheck.h"

enum { N = 3, V = 6, K = 2 };

typedef struct {
    float z[N * V];
    int32_t targets[N];
    int32_t ids[N * K];
    float probs[N * K];
    int use_targets, use_soft;
    fkd_loss_config lc;
} loss_ctx;

static double run_loss(loss_ctx *c, float *grad)
{
    float scratch[N * V];
    fkd_loss_stats st;
    fkd_soft_labels soft = {.k = K, .ids = c->ids, .probs = c->probs};
    fkd_loss_forward_backward(grad ? grad : scratch, &st, c->z, c->use_targets ? c->targets : NULL,
                              c->use_soft ? &soft : NULL, &c->lc, N, V);
    return st.loss;
}
static double loss_only(void *p) { return run_loss(p, NULL); }

static void setup(loss_ctx *c)
{
    memset(c, 0, sizeof *c);
    fill_normal(c->z, N * V, 1.5f, 21);
    int32_t t[N] = {2, 5, 0};
    int32_t ids[N * K] = {2, 1, 4, 5, 0, 3};
    float probs[N * K] = {0.6f, 0.3f, 0.5f, 0.2f, 0.0f, 0.0f}; /* row 2: no soft label */
    memcpy(c->targets, t, sizeof t);
    memcpy(c->ids, ids, sizeof ids);
    memcpy(c->probs, probs, sizeof probs);
    c->lc = (fkd_loss_config){.alpha = 0.5f, .temperature = 2.0f};
}

/* Direct KL between coarsened distributions {k ids, rest}, times T^2. */
static double direct_kd(const float *z, const int32_t *ids, const float *p, double T)
{
    double mx = z[0], sum = 0, q[V];
    for (int j = 1; j < V; j++) mx = z[j] > mx ? z[j] : mx;
    for (int j = 0; j < V; j++) sum += exp((z[j] - mx) / T);
    for (int j = 0; j < V; j++) q[j] = exp((z[j] - mx) / T) / sum;
    double kl = 0, p_sum = 0, q_sum = 0;
    for (int j = 0; j < K; j++) {
        kl += p[j] * log(p[j] / q[ids[j]]);
        p_sum += p[j];
        q_sum += q[ids[j]];
    }
    kl += (1 - p_sum) * log((1 - p_sum) / (1 - q_sum));
    return T * T * kl;
}

static double direct_ce(const float *z, int t)
{
    double mx = z[0], sum = 0;
    for (int j = 1; j < V; j++) mx = z[j] > mx ? z[j] : mx;
    for (int j = 0; j < V; j++) sum += exp(z[j] - mx);
    return log(sum) - (z[t] - mx);
}

static void test_values_match_direct_computation(void **state)
{
    loss_ctx c;
    setup(&c);
    c.use_targets = c.use_soft = 1;
    fkd_loss_stats st;
    float g[N * V];
    fkd_soft_labels soft = {.k = K, .ids = c.ids, .probs = c.probs};
    fkd_loss_forward_backward(g, &st, c.z, c.targets, &soft, &c.lc, N, V);
    double kd0 = direct_kd(c.z, c.ids, c.probs, 2.0), kd1 = direct_kd(c.z + V, c.ids + K, c.probs + K, 2.0);
    double ce[N];
    for (int i = 0; i < N; i++) ce[i] = direct_ce(c.z + i * V, c.targets[i]);
    /* rows 0 and 1 mix; row 2 has only a target */
    double expect = (0.5 * kd0 + 0.5 * ce[0] + 0.5 * kd1 + 0.5 * ce[1] + ce[2]) / 3.0;
    assert_true(fabs(st.loss - expect) < 1e-5);
    assert_true(fabs(st.kd - (kd0 + kd1) / 2) < 1e-5);
    assert_int_equal(st.n_kd, 2);
    assert_int_equal(st.n_ce, 3);
    /* without a gradient buffer: the same loss, nothing written */
    fkd_loss_stats only;
    fkd_loss_forward_backward(NULL, &only, c.z, c.targets, &soft, &c.lc, N, V);
    assert_true(only.loss == st.loss && only.n_correct == st.n_correct);
}

static void test_gradient_matches_finite_differences(void **state)
{
    for (int mode = 0; mode < 3; mode++) {
        loss_ctx c;
        setup(&c);
        c.use_targets = mode != 1;
        c.use_soft = mode != 0;
        float g[N * V];
        run_loss(&c, g);
        gradcheck(c.z, N * V, g, loss_only, &c, 1e-2f, 1e-4, 1e-2, 100,
                  mode == 0 ? "ce" : mode == 1 ? "kd" : "mixed");
    }
}

static void test_alpha_zero_is_cross_entropy(void **state)
{
    loss_ctx a, b;
    setup(&a);
    setup(&b);
    a.use_targets = b.use_targets = 1;
    a.use_soft = 1;
    a.lc.alpha = 0.0f;
    float ga[N * V], gb[N * V];
    double la = run_loss(&a, ga), lb = run_loss(&b, gb);
    assert_true(la == lb);
    for (int i = 0; i < N * V; i++) assert_true(ga[i] == gb[i]);
}

/* A top-k slot with probability 0 is part of the rest: the same loss and
 * gradient as the soft label without that slot. */
static void test_zero_probability_slot_is_rest(void **state)
{
    float z[V];
    fill_normal(z, V, 1.5f, 5);
    int32_t ids3[3] = {1, 3, 4}, ids2[2] = {1, 3};
    float probs3[3] = {0.5f, 0.2f, 0.0f}, probs2[2] = {0.5f, 0.2f};
    fkd_soft_labels s3 = {.k = 3, .ids = ids3, .probs = probs3};
    fkd_soft_labels s2 = {.k = 2, .ids = ids2, .probs = probs2};
    fkd_loss_config lc = {.alpha = 1.0f, .temperature = 2.0f};
    float g3[V], g2[V];
    fkd_loss_stats st3, st2;
    fkd_loss_forward_backward(g3, &st3, z, NULL, &s3, &lc, 1, V);
    fkd_loss_forward_backward(g2, &st2, z, NULL, &s2, &lc, 1, V);
    assert_true(fabs(st3.loss - st2.loss) < 1e-6);
    for (int i = 0; i < V; i++) assert_true(fabsf(g3[i] - g2[i]) < 1e-6f);
}

static void test_kd_is_zero_when_student_matches_teacher(void **state)
{
    /* Student logits whose coarsened distribution at T equals the teacher's. */
    float z[V] = {0};
    int32_t ids[K] = {1, 3};
    double T = 1.0;
    /* q1 = 0.5, q3 = 0.25, the other 4 share 0.25 */
    z[1] = (float)log(0.5);
    z[3] = (float)log(0.25);
    for (int j = 0; j < V; j++)
        if (j != 1 && j != 3) z[j] = (float)log(0.0625);
    float probs[K] = {0.5f, 0.25f};
    fkd_soft_labels soft = {.k = K, .ids = ids, .probs = probs};
    fkd_loss_config lc = {.alpha = 1.0f, .temperature = (float)T};
    float g[V];
    fkd_loss_stats st;
    fkd_loss_forward_backward(g, &st, z, NULL, &soft, &lc, 1, V);
    assert_true(fabs(st.kd) < 1e-6);
    for (int j = 0; j < V; j++) assert_true(fabsf(g[j]) < 1e-6f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values_match_direct_computation),
        cmocka_unit_test(test_gradient_matches_finite_differences),
        cmocka_unit_test(test_alpha_zero_is_cross_entropy),
        cmocka_unit_test(test_kd_is_zero_when_student_matches_teacher),
        cmocka_unit_test(test_zero_probability_slot_is_rest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
