/* test_kernels.c — each forward/backward pair of train/ against central
 * finite differences: loss = sum(out * R) for a fixed random R, so
 * dloss/dout = R and backward(R) must equal the numerical gradient. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include <cmocka.h>
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#endif

#include "fkd_train.h"
#include "gradcheck.h"
#include "internal.h"

enum { N = 6, C = 8, OC = 5, V = 11 };

/* ---- matmul ---- */
typedef struct { float x[N * C], w[OC * C], out[N * OC], r[N * OC]; } matmul_ctx;
static double matmul_loss(void *p)
{
    matmul_ctx *c = p;
    fkd_matmul_forward(c->out, c->x, c->w, N, C, OC, 0.0f);
    return dot_double(c->out, c->r, N * OC);
}
static void test_matmul(void **state)
{
    matmul_ctx c;
    fill_normal(c.x, N * C, 1, 1);
    fill_normal(c.w, OC * C, 1, 2);
    fill_normal(c.r, N * OC, 1, 3);
    float dx[N * C] = {0}, dw[OC * C] = {0};
    fkd_matmul_backward(dx, dw, c.r, c.x, c.w, N, C, OC);
    gradcheck(c.x, N * C, dx, matmul_loss, &c, 1e-2f, 1e-3, 1e-2, 100, "matmul dx");
    gradcheck(c.w, OC * C, dw, matmul_loss, &c, 1e-2f, 1e-3, 1e-2, 100, "matmul dw");
}

/* ---- rmsnorm ---- */
typedef struct { float x[N * C], g[C], out[N * C], rstd[N], r[N * C]; } rms_ctx;
static double rms_loss(void *p)
{
    rms_ctx *c = p;
    fkd_rmsnorm_forward(c->out, c->rstd, c->x, c->g, N, C, 1e-5f);
    return dot_double(c->out, c->r, N * C);
}
static void test_rmsnorm(void **state)
{
    rms_ctx c;
    fill_normal(c.x, N * C, 1, 4);
    fill_normal(c.g, C, 1, 5);
    fill_normal(c.r, N * C, 1, 6);
    rms_loss(&c);
    float dx[N * C] = {0}, dg[C] = {0};
    fkd_rmsnorm_backward(dx, dg, c.r, c.x, c.g, c.rstd, N, C);
    gradcheck(c.x, N * C, dx, rms_loss, &c, 1e-2f, 1e-3, 1e-2, 100, "rmsnorm dx");
    gradcheck(c.g, C, dg, rms_loss, &c, 1e-2f, 1e-3, 1e-2, 100, "rmsnorm dg");
}

/* ---- embedding ---- */
typedef struct { float emb[V * C], out[N * C], r[N * C]; int32_t tok[N]; } emb_ctx;
static double emb_loss(void *p)
{
    emb_ctx *c = p;
    fkd_embedding_forward(c->out, c->tok, c->emb, N, C);
    return dot_double(c->out, c->r, N * C);
}
static void test_embedding(void **state)
{
    emb_ctx c;
    int32_t tok[N] = {3, 0, 3, 10, 7, 3}; /* repeats: gradients must add */
    memcpy(c.tok, tok, sizeof tok);
    fill_normal(c.emb, V * C, 1, 7);
    fill_normal(c.r, N * C, 1, 8);
    float demb[V * C] = {0};
    fkd_embedding_backward(demb, c.r, c.tok, N, C);
    gradcheck(c.emb, V * C, demb, emb_loss, &c, 1e-2f, 1e-3, 1e-2, 200, "embedding");
}

/* ---- rope ---- */
enum { RB = 2, RT = 3, RH = 2, RD = 4 };
typedef struct { float x[RB * RT * RH * RD], y[RB * RT * RH * RD], r[RB * RT * RH * RD];
                 float cs[16 * RD / 2], sn[16 * RD / 2]; } rope_ctx;
static double rope_loss(void *p)
{
    rope_ctx *c = p;
    memcpy(c->y, c->x, sizeof c->x);
    fkd_rope_forward(c->y, c->cs, c->sn, RB, RT, RH, RD, 5);
    return dot_double(c->y, c->r, RB * RT * RH * RD);
}
static void test_rope(void **state)
{
    rope_ctx c;
    fkd_rope_tables(c.cs, c.sn, 16, RD, 10000.0f);
    fill_normal(c.x, sizeof c.x / 4, 1, 9);
    fill_normal(c.r, sizeof c.r / 4, 1, 10);
    float d[RB * RT * RH * RD];
    memcpy(d, c.r, sizeof d);
    fkd_rope_backward(d, c.cs, c.sn, RB, RT, RH, RD, 5);
    gradcheck(c.x, sizeof c.x / 4, d, rope_loss, &c, 1e-2f, 1e-3, 1e-2, 100, "rope");
    /* position 0 is the identity */
    float z[RD] = {1, 2, 3, 4};
    fkd_rope_forward(z, c.cs, c.sn, 1, 1, 1, RD, 0);
    assert_float_equal(z[0], 1, 1e-6);
    assert_float_equal(z[3], 4, 1e-6);
}

/* ---- attention (grouped-query: 4 query heads over 2 kv heads) ---- */
enum { AB = 2, AT = 5, AH = 4, AKV = 2, AD = 4 };
typedef struct {
    float q[AB * AT * AH * AD], k[AB * AT * AKV * AD], v[AB * AT * AKV * AD];
    float out[AB * AT * AH * AD], att[AB * AH * AT * AT], r[AB * AT * AH * AD];
} att_ctx;
static double att_loss(void *p)
{
    att_ctx *c = p;
    fkd_attention_forward(c->out, c->att, c->q, c->k, c->v, AB, AT, AH, AKV, AD);
    return dot_double(c->out, c->r, AB * AT * AH * AD);
}
static void test_attention(void **state)
{
    att_ctx c;
    fill_normal(c.q, sizeof c.q / 4, 1, 11);
    fill_normal(c.k, sizeof c.k / 4, 1, 12);
    fill_normal(c.v, sizeof c.v / 4, 1, 13);
    fill_normal(c.r, sizeof c.r / 4, 1, 14);
    att_loss(&c);
    float dq[sizeof c.q / 4], dk[sizeof c.k / 4], dv[sizeof c.v / 4], datt[sizeof c.att / 4];
    fkd_attention_backward(dq, dk, dv, datt, c.r, c.att, c.q, c.k, c.v, AB, AT, AH, AKV, AD);
    gradcheck(c.q, sizeof c.q / 4, dq, att_loss, &c, 1e-2f, 1e-3, 1e-2, 200, "attention dq");
    gradcheck(c.k, sizeof c.k / 4, dk, att_loss, &c, 1e-2f, 1e-3, 1e-2, 200, "attention dk");
    gradcheck(c.v, sizeof c.v / 4, dv, att_loss, &c, 1e-2f, 1e-3, 1e-2, 200, "attention dv");
    /* causality: the first position attends to itself only */
    assert_float_equal(c.att[0], 1.0f, 1e-6);
    assert_float_equal(c.att[1], 0.0f, 0);
}

/* ---- swiglu ---- */
typedef struct { float a[N * C], b[N * C], out[N * C], r[N * C]; } swi_ctx;
static double swi_loss(void *p)
{
    swi_ctx *c = p;
    fkd_swiglu_forward(c->out, c->a, c->b, N, C);
    return dot_double(c->out, c->r, N * C);
}
static void test_swiglu(void **state)
{
    swi_ctx c;
    fill_normal(c.a, N * C, 2, 15);
    fill_normal(c.b, N * C, 1, 16);
    fill_normal(c.r, N * C, 1, 17);
    float da[N * C], db[N * C];
    fkd_swiglu_backward(da, db, c.r, c.a, c.b, N, C);
    gradcheck(c.a, N * C, da, swi_loss, &c, 1e-2f, 1e-3, 1e-2, 100, "swiglu da");
    gradcheck(c.b, N * C, db, swi_loss, &c, 1e-2f, 1e-3, 1e-2, 100, "swiglu db");
    /* in place on dout, as the model uses it */
    float dd[N * C];
    memcpy(dd, c.r, sizeof dd);
    float db2[N * C];
    fkd_swiglu_backward(dd, db2, dd, c.a, c.b, N, C);
    assert_memory_equal(dd, da, sizeof da);
}

/* ---- the vectorisable exp ---- */
static void test_expf(void **state)
{
    double worst = 0;
    for (float x = -87.0f; x < 88.0f; x += 0.01f) {
        double e = exp((double)x), rel = fabs(fkd_expf(x) - e) / e;
        worst = rel > worst ? rel : worst;
    }
    assert_true(worst < 5e-7);
    assert_true(isnan(fkd_expf(NAN)));         /* no undefined float-to-int cast */
    assert_true(fkd_expf(-1000.0f) < 1e-37f);  /* clamped, not garbage */
    assert_true(isfinite(fkd_expf(1000.0f)));
}

/* A subnormal result (1e-30 * 1e-10 = 1e-40) comes out as 0 once the
 * training threads are set: in this thread and in one it starts. */
static float subnormal_product(void)
{
    volatile float a = 1e-30f, b = 1e-10f;
    return a * b;
}

static void *product_in_thread(void *out)
{
    *(float *)out = subnormal_product();
    return NULL;
}

static void test_subnormals_flushed(void **state)
{
    (void)state;
#if defined(__SSE__) || defined(__x86_64__) || defined(__aarch64__)
    fkd_train_set_threads(2);
    assert_true(subnormal_product() == 0.0f);
    float in_thread = 1.0f;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, product_in_thread, &in_thread), 0);
    pthread_join(t, NULL);
    assert_true(in_thread == 0.0f);
    volatile float normal = 1e-20f;
    assert_true(normal * 1e-10f > 0.0f); /* normal results are untouched */
#else
    skip();
#endif
}

/* A library user who never calls fkd_train_set_threads: setting up a model
 * to train flushes subnormals in the thread that sets it up. The thread
 * judges the products itself: with DAZ on, this one would read a
 * subnormal as 0. */
typedef struct {
    int kept_before, flushed_after, set_up;
} setup_flush;

static void *model_setup_in_fresh_thread(void *out)
{
    setup_flush *r = out;
#if defined(__SSE__) || defined(__x86_64__)
    _mm_setcsr(0x1f80u); /* the power-on default: subnormals kept */
#elif defined(__aarch64__)
    unsigned long fpcr;
    __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
    __asm__ volatile("msr fpcr, %0" : : "r"(fpcr & ~(1ul << 24)));
#endif
    r->kept_before = subnormal_product() != 0.0f;
    fkd_model_config cfg = fkd_config_student_s();
    cfg.n_layers = 1;
    cfg.vocab = 64;
    fkd_params params;
    fkd_model m;
    fkd_error err;
    if (fkd_params_init(&params, &cfg, &err) != 0) return NULL;
    if (fkd_model_init_borrowed(&m, &params, 1, 8, 0, &err) == 0) {
        r->flushed_after = subnormal_product() == 0.0f;
        r->set_up = 1;
        fkd_model_free(&m);
    }
    fkd_params_free(&params);
    return NULL;
}

static void test_model_setup_flushes_subnormals(void **state)
{
    (void)state;
#if defined(__SSE__) || defined(__x86_64__) || defined(__aarch64__)
    setup_flush r = {0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, model_setup_in_fresh_thread, &r), 0);
    pthread_join(t, NULL);
    assert_true(r.set_up);
    assert_true(r.kept_before);
    assert_true(r.flushed_after);
#else
    skip();
#endif
}

int main(void)
{
    fkd_train_set_threads(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul),    cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_embedding), cmocka_unit_test(test_rope),
        cmocka_unit_test(test_attention), cmocka_unit_test(test_swiglu),
        cmocka_unit_test(test_expf),        cmocka_unit_test(test_subnormals_flushed),
        cmocka_unit_test(test_model_setup_flushes_subnormals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
