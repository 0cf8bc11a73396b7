/* test_lora.c — LoRA adapters: the kernel pair and the whole model checked
 * against finite differences (tied and untied heads, with recomputation),
 * a weight source giving exactly what fp32 parameters give, merging,
 * training that lowers the loss without touching the base, the adapter
 * file (round trip, and every kind of damage refused), target lists, and
 * the memory figure of the SmolLM2 student shape. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fkd_train.h"
#include "gradcheck.h"

enum { B = 2, T = 5 };

static fkd_model_config tiny_config(int tie)
{
    return (fkd_model_config){.vocab = 13, .dim = 8, .n_layers = 2, .n_heads = 4,
                              .n_kv_heads = 2, .ffn_hidden = 12, .max_seq = 8,
                              .tie_embeddings = tie, .rope_theta = 10000.0f, .norm_eps = 1e-5f};
}

static void make_base(fkd_params *p, const fkd_model_config *cfg, uint64_t seed)
{
    fkd_error err;
    assert_int_equal(fkd_params_init(p, cfg, &err), 0);
    fkd_params_randomize(p, seed);
    for (size_t i = 0; i < p->n_params; i++) p->memory[i] *= 3.0f; /* a sensitive check */
}

static void copy_params(fkd_params *dst, const fkd_params *src)
{
    fkd_error err;
    assert_int_equal(fkd_params_init(dst, &src->cfg, &err), 0);
    memcpy(dst->memory, src->memory, src->n_params * sizeof(float));
}

/* Adapters whose B is not zero, so every gradient is exercised. */
static void make_lora(fkd_lora *lora, const fkd_model_config *cfg, int rank, uint64_t seed)
{
    fkd_lora_config lc = fkd_lora_defaults();
    lc.rank = rank;
    lc.alpha = 2.0f * rank;
    fkd_error err;
    assert_int_equal(fkd_lora_init(lora, cfg, &lc, seed, &err), 0);
    fill_normal(lora->params, lora->n, 0.3f, seed + 1);
}

/* ---- the kernel pair --------------------------------------------------------- */
enum { KN = 5, KC = 7, KOC = 6, KR = 3 };

typedef struct {
    float x[KN * KC], a[KR * KC], b[KOC * KR], r[KN * KOC], out[KN * KOC], u[KN * KR];
    float s;
} kernel_ctx;

static double kernel_loss(void *p)
{
    kernel_ctx *k = p;
    memset(k->out, 0, sizeof k->out);
    fkd_lora_forward(k->out, k->u, k->x, k->a, k->b, k->s, KN, KC, KOC, KR);
    return dot_double(k->out, k->r, KN * KOC);
}

static void test_kernel_gradients(void **state)
{
    kernel_ctx k = {.s = 1.7f};
    fill_normal(k.x, KN * KC, 1.0f, 1);
    fill_normal(k.a, KR * KC, 1.0f, 2);
    fill_normal(k.b, KOC * KR, 1.0f, 3);
    fill_normal(k.r, KN * KOC, 1.0f, 4);
    float dx[KN * KC], da[KR * KC], db[KOC * KR], u[KN * KR], du[KN * KR];
    /* backward accumulates: start from a known value and subtract it */
    for (int i = 0; i < KN * KC; i++) dx[i] = 1.0f;
    for (int i = 0; i < KR * KC; i++) da[i] = 1.0f;
    for (int i = 0; i < KOC * KR; i++) db[i] = 1.0f;
    fkd_lora_backward(dx, da, db, u, du, k.r, k.x, k.a, k.b, k.s, KN, KC, KOC, KR);
    for (int i = 0; i < KN * KC; i++) dx[i] -= 1.0f;
    for (int i = 0; i < KR * KC; i++) da[i] -= 1.0f;
    for (int i = 0; i < KOC * KR; i++) db[i] -= 1.0f;
    gradcheck(k.x, KN * KC, dx, kernel_loss, &k, 1e-2f, 1e-3, 1e-3, 100, "dx");
    gradcheck(k.a, KR * KC, da, kernel_loss, &k, 1e-2f, 1e-3, 1e-3, 100, "dA");
    gradcheck(k.b, KOC * KR, db, kernel_loss, &k, 1e-2f, 1e-3, 1e-3, 100, "dB");
}

/* ---- the whole model ---------------------------------------------------------- */
typedef struct {
    fkd_model *m;
    int32_t tokens[B * T], targets[B * T];
} model_ctx;

static double model_loss(void *p)
{
    model_ctx *c = p;
    gradcheck_model g = {c->m, c->tokens, c->targets};
    return gradcheck_model_loss(&g);
}

static void fill_tokens(model_ctx *c, int vocab)
{
    fkd_rng rng;
    fkd_rng_seed(&rng, 77);
    for (int i = 0; i < B * T; i++) {
        c->tokens[i] = (int32_t)fkd_rng_below(&rng, (uint32_t)vocab);
        c->targets[i] = i % 4 == 3 ? -1 : (int32_t)fkd_rng_below(&rng, (uint32_t)vocab);
    }
}

/* Every adapter entry's gradient against finite differences of the loss. */
static void check_adapter_gradients(fkd_model *m, fkd_lora *lora, const int32_t *tokens,
                                    const int32_t *targets, double atol, double rtol)
{
    model_ctx c = {.m = m};
    memcpy(c.tokens, tokens, sizeof c.tokens);
    memcpy(c.targets, targets, sizeof c.targets);
    fkd_model_zero_grad(m);
    model_loss(&c);
    float *analytic = malloc(lora->n * sizeof(float));
    memcpy(analytic, lora->grads, lora->n * sizeof(float));
    for (int t = 0; t < FKD_T_COUNT; t++) {
        const fkd_tensor_info *ti = &lora->tensors[t];
        if (!ti->count) continue;
        gradcheck(lora->params + ti->offset, ti->count, analytic + ti->offset, model_loss, &c,
                  1e-3f, atol, rtol, 24, ti->name);
    }
    free(analytic);
}

static void check_model_gradients(int tie, int recompute)
{
    fkd_model_config cfg = tiny_config(tie);
    fkd_params base;
    make_base(&base, &cfg, 5);
    fkd_lora lora;
    make_lora(&lora, &cfg, 3, 11);
    fkd_model m;
    fkd_error err;
    assert_int_equal(fkd_model_init_lora(&m, &base, NULL, &lora, B, T, recompute, &err), 0);
    assert_null(m.grads); /* the frozen base has no gradient arena */
    model_ctx c;
    fill_tokens(&c, cfg.vocab);
    check_adapter_gradients(&m, &lora, c.tokens, c.targets, 5e-4, 3e-2);
    fkd_model_free(&m);
    fkd_lora_free(&lora);
}

static void test_model_gradient_untied(void **state) { check_model_gradients(0, 0); }
static void test_model_gradient_tied_recompute(void **state) { check_model_gradients(1, 1); }

/* ---- a weight source ----------------------------------------------------------- */
/* Serves the matrices of an fp32 params, as a quantized source would. */
static void fp32_rows(float *out, void *user, int tensor, int layer, size_t row0, size_t n_rows)
{
    const fkd_params *p = user;
    int rows, cols;
    if (tensor == FKD_T_TOK_EMB || tensor == FKD_T_HEAD) {
        assert_int_equal(layer, 0);
        rows = p->cfg.vocab;
        cols = p->cfg.dim;
        assert_true(row0 + n_rows <= (size_t)rows);
        if (p->cfg.tie_embeddings) tensor = FKD_T_TOK_EMB;
    } else {
        assert_int_equal(fkd_config_matrix_shape(&rows, &cols, &p->cfg, tensor), 0);
    }
    const float *w = p->memory + p->tensors[tensor].offset + ((size_t)layer * rows + row0) * cols;
    memcpy(out, w, n_rows * cols * sizeof(float));
}

/* The base without its block matrices (and, norms_only, without any
 * matrix), the rest copied from full. */
static void held_copy(fkd_params *dst, const fkd_params *full, int norms_only)
{
    uint8_t held[FKD_T_COUNT];
    fkd_params_held_without_blocks(held);
    if (norms_only) held[FKD_T_TOK_EMB] = held[FKD_T_HEAD] = 0;
    fkd_error err;
    assert_int_equal(fkd_params_init_held(dst, &full->cfg, held, &err), 0);
    assert_null(dst->p.wq);
    assert_true(dst->n_params < full->n_params);
    for (int t = 0; t < FKD_T_COUNT; t++)
        if (dst->tensors[t].count)
            memcpy(dst->memory + dst->tensors[t].offset, full->memory + full->tensors[t].offset,
                   full->tensors[t].count * sizeof(float));
}

/* max |a-b| / (max |a| + tiny) */
static double max_rel_diff(const float *a, const float *b, size_t n)
{
    double diff = 0, scale = 1e-30;
    for (size_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs((double)a[i]));
    }
    return diff / scale;
}

static void check_source_equals_fp32_base(int tie, int norms_only)
{
    fkd_model_config cfg = tiny_config(tie);
    fkd_params full, plain_base, held;
    make_base(&full, &cfg, 6);
    copy_params(&plain_base, &full);
    held_copy(&held, &full, norms_only);
    fkd_lora l1, l2;
    make_lora(&l1, &cfg, 2, 21);
    make_lora(&l2, &cfg, 2, 21);
    fkd_weight_source src = {.rows = fp32_rows, .user = &full};
    fkd_model plain, sourced;
    fkd_error err;
    assert_int_equal(fkd_model_init_lora(&plain, &plain_base, NULL, &l1, B, T, 0, &err), 0);
    assert_int_equal(fkd_model_init_lora(&sourced, &held, &src, &l2, B, T, 0, &err), 0);
    model_ctx c = {.m = &plain};
    fill_tokens(&c, cfg.vocab);
    fkd_model_zero_grad(&plain);
    double loss_plain = model_loss(&c);
    c.m = &sourced;
    fkd_model_zero_grad(&sourced);
    double loss_sourced = model_loss(&c);
    /* Block matrices from a source: the very same products. A head in
     * slices sums dx slice by slice, so the gradients differ by rounding. */
    assert_true(fabs(loss_plain - loss_sourced) <= 1e-6 * fabs(loss_plain));
    assert_true(max_rel_diff(l1.grads, l2.grads, l1.n) <= (norms_only ? 1e-5 : 0.0));
    float *lp, *ls;
    assert_int_equal(fkd_model_forward(&plain, c.tokens, &lp), 0);
    assert_int_equal(fkd_model_forward(&sourced, c.tokens, &ls), 0);
    assert_true(max_rel_diff(lp, ls, (size_t)B * T * cfg.vocab) <= (norms_only ? 1e-6 : 0.0));
    /* a base without its block matrices and no source is refused */
    fkd_params lacking;
    held_copy(&lacking, &full, norms_only);
    fkd_model bad;
    assert_int_equal(fkd_model_init_lora(&bad, &lacking, NULL, &l1, B, T, 0, &err), -1);
    assert_int_equal(err.code, FKD_E_INVALID_ARG);
    fkd_params_free(&lacking);
    fkd_model_free(&plain);
    fkd_model_free(&sourced);
    fkd_lora_free(&l1);
    fkd_lora_free(&l2);
    fkd_params_free(&full);
}

static void test_weight_source_equals_fp32_base(void **state)
{
    check_source_equals_fp32_base(1, 0); /* block matrices from the source */
    check_source_equals_fp32_base(1, 1); /* every matrix, tied head */
    check_source_equals_fp32_base(0, 1); /* every matrix, untied head */
}

/* ---- merging ------------------------------------------------------------------- */
static void test_merged_adapters_give_the_same_logits(void **state)
{
    fkd_model_config cfg = tiny_config(0);
    fkd_params base, merged;
    make_base(&base, &cfg, 7);
    copy_params(&merged, &base);
    fkd_lora lora;
    make_lora(&lora, &cfg, 4, 31);
    fkd_error err;
    assert_int_equal(fkd_lora_merge(&merged, &lora, &err), 0);
    fkd_model with_lora, plain;
    assert_int_equal(fkd_model_init_lora(&with_lora, &base, NULL, &lora, B, T, 0, &err), 0);
    assert_int_equal(fkd_model_init(&plain, &merged, B, T, 0, &err), 0);
    model_ctx c;
    fill_tokens(&c, cfg.vocab);
    float *l1, *l2;
    assert_int_equal(fkd_model_forward(&with_lora, c.tokens, &l1), 0);
    assert_int_equal(fkd_model_forward(&plain, c.tokens, &l2), 0);
    double worst = 0, moved = 0;
    fkd_params unmerged;
    copy_params(&unmerged, &with_lora.params);
    for (size_t i = 0; i < (size_t)B * T * cfg.vocab; i++) {
        worst = fmax(worst, fabs((double)l1[i] - l2[i]));
        moved = fmax(moved, fabs((double)l1[i]));
    }
    assert_true(worst < 1e-4 * (1.0 + moved));
    /* the adapters do change the logits: a merge that did nothing would fail */
    fkd_model base_only;
    assert_int_equal(fkd_model_init(&base_only, &unmerged, B, T, 0, &err), 0);
    float *l3;
    assert_int_equal(fkd_model_forward(&base_only, c.tokens, &l3), 0);
    double diff = 0;
    for (size_t i = 0; i < (size_t)B * T * cfg.vocab; i++) diff = fmax(diff, fabs((double)l3[i] - l2[i]));
    assert_true(diff > 1e-2);
    /* two half-weighted merges of the same adapters are one full merge */
    fkd_params halves;
    copy_params(&halves, &base_only.params);
    assert_int_equal(fkd_lora_merge_weighted(&halves, &lora, 0.5f, &err), 0);
    assert_int_equal(fkd_lora_merge_weighted(&halves, &lora, 0.5f, &err), 0);
    for (size_t i = 0; i < halves.n_params; i++)
        assert_true(fabsf(halves.memory[i] - plain.params.memory[i]) <= 1e-5f);
    fkd_params_free(&halves);
    /* another shape is refused */
    fkd_model_config other = tiny_config(0);
    other.ffn_hidden = 16;
    fkd_params wrong;
    make_base(&wrong, &other, 1);
    assert_int_equal(fkd_lora_merge(&wrong, &lora, &err), -1);
    assert_int_equal(err.code, FKD_E_MISMATCH);
    fkd_params_free(&wrong);
    fkd_model_free(&base_only);
    fkd_model_free(&with_lora);
    fkd_model_free(&plain);
    fkd_lora_free(&lora);
}

/* ---- training ------------------------------------------------------------------ */
static void test_training_adapters_lowers_loss_and_keeps_base(void **state)
{
    fkd_model_config cfg = tiny_config(1);
    fkd_params base;
    make_base(&base, &cfg, 8);
    float *before = malloc(base.n_params * sizeof(float));
    memcpy(before, base.memory, base.n_params * sizeof(float));
    fkd_lora lora;
    fkd_lora_config lc = fkd_lora_defaults();
    lc.rank = 4;
    fkd_error err;
    assert_int_equal(fkd_lora_init(&lora, &cfg, &lc, 3, &err), 0);
    fkd_model m;
    assert_int_equal(fkd_model_init_lora(&m, &base, NULL, &lora, B, T, 0, &err), 0);
    fkd_optimizer_config oc = fkd_optimizer_defaults();
    oc.lr = 1e-2f;
    oc.schedule = FKD_LR_CONSTANT;
    oc.weight_decay = 0.0f;
    fkd_optimizer opt;
    assert_int_equal(fkd_lora_optimizer_init(&opt, &oc, &lora, &err), 0);
    model_ctx c = {.m = &m};
    fill_tokens(&c, cfg.vocab);
    double first = 0, last = 0;
    for (int step = 0; step < 40; step++) {
        fkd_model_zero_grad(&m);
        double loss = model_loss(&c);
        if (step == 0) first = loss;
        last = loss;
        fkd_optimizer_step(&opt, lora.params, lora.grads);
    }
    assert_true(last < 0.7 * first);
    assert_memory_equal(m.params.memory, before, m.params.n_params * sizeof(float));
    fkd_optimizer_free(&opt);
    fkd_model_free(&m);
    fkd_lora_free(&lora);
    free(before);
}

/* The trainer runs a LoRA model: adapters and their moments are the state,
 * an interrupted run resumes to the same adapters, the base stays put. */
static void run_trainer(float *adapters_out, const fkd_params *start, const fkd_token_stream *ts,
                        int64_t steps, const char *state_path, int *resumed)
{
    fkd_params base;
    copy_params(&base, start);
    fkd_lora lora;
    fkd_lora_config lc = fkd_lora_defaults();
    lc.rank = 2;
    fkd_error err;
    assert_int_equal(fkd_lora_init(&lora, &start->cfg, &lc, 3, &err), 0);
    fkd_model m;
    assert_int_equal(fkd_model_init_lora(&m, &base, NULL, &lora, B, T, 0, &err), 0);
    fkd_trainer_config tc = fkd_trainer_defaults();
    tc.steps = steps;
    tc.opt.lr = 1e-2f;
    tc.opt.warmup_steps = 0;
    tc.opt.total_steps = 12;
    tc.eval_every = 0;
    tc.ckpt_every = 3;
    tc.state_path = state_path;
    fkd_trainer_result res;
    assert_int_equal(fkd_trainer_run(&res, &m, ts, NULL, NULL, &tc, &err), 0);
    if (resumed) *resumed = res.resumed;
    memcpy(adapters_out, lora.params, lora.n * sizeof(float));
    assert_memory_equal(m.params.memory, start->memory, start->n_params * sizeof(float));
    /* validation needs the merged fp32 model: refused, not silently skipped */
    assert_int_equal(fkd_trainer_run(&res, &m, ts, NULL, ts, &tc, &err), -1);
    fkd_model_free(&m);
    fkd_lora_free(&lora);
}

static void test_trainer_trains_adapters_and_resumes(void **state)
{
    fkd_model_config cfg = tiny_config(1);
    fkd_params start;
    make_base(&start, &cfg, 12);
    int32_t tokens[240];
    for (int i = 0; i < 240; i++) tokens[i] = (int32_t)((i * 5) % 7);
    fkd_token_stream ts = {.tokens = tokens, .n = 240, .text_bytes = 240, .n_docs = 1};
    fkd_lora_config lc = fkd_lora_defaults();
    lc.rank = 2;
    fkd_lora probe;
    fkd_error err;
    assert_int_equal(fkd_lora_init(&probe, &cfg, &lc, 3, &err), 0);
    size_t n = probe.n;
    fkd_lora_free(&probe);
    float *straight = malloc(n * sizeof(float)), *resumed_run = malloc(n * sizeof(float));
    run_trainer(straight, &start, &ts, 12, NULL, NULL);
    char path[512];
    snprintf(path, sizeof path, "%s/test_lora.state", getenv("FKD_TEST_TMP") ? getenv("FKD_TEST_TMP") : ".");
    remove(path);
    int resumed = -1;
    run_trainer(resumed_run, &start, &ts, 6, path, &resumed);
    assert_int_equal(resumed, 0);
    run_trainer(resumed_run, &start, &ts, 12, path, &resumed);
    assert_int_equal(resumed, 1);
    assert_memory_equal(straight, resumed_run, n * sizeof(float));
    remove(path);

    /* the trained adapters fit the pattern better than the base alone */
    fkd_params b1, b2;
    copy_params(&b1, &start);
    copy_params(&b2, &start);
    fkd_lora fresh, trained;
    assert_int_equal(fkd_lora_init(&fresh, &cfg, &lc, 3, &err), 0);
    assert_int_equal(fkd_lora_init(&trained, &cfg, &lc, 3, &err), 0);
    memcpy(trained.params, straight, n * sizeof(float));
    fkd_model m1, m2;
    assert_int_equal(fkd_model_init_lora(&m1, &b1, NULL, &fresh, B, T, 0, &err), 0);
    assert_int_equal(fkd_model_init_lora(&m2, &b2, NULL, &trained, B, T, 0, &err), 0);
    model_ctx c = {.m = &m1};
    memcpy(c.tokens, tokens, sizeof c.tokens);
    for (int i = 0; i < B * T; i++) c.targets[i] = tokens[i + 1];
    double before = model_loss(&c);
    c.m = &m2;
    double after = model_loss(&c);
    assert_true(after < 0.9 * before);
    fkd_model_free(&m1);
    fkd_model_free(&m2);
    fkd_lora_free(&fresh);
    fkd_lora_free(&trained);
    fkd_params_free(&start);
    free(straight);
    free(resumed_run);
}

/* ---- the adapter file ------------------------------------------------------------ */
static void test_file_round_trip_and_damage(void **state)
{
    fkd_model_config cfg = tiny_config(0);
    fkd_lora lora, back;
    make_lora(&lora, &cfg, 3, 41);
    fkd_error err;
    uint8_t *data;
    size_t bytes;
    assert_int_equal(fkd_lora_encode(&data, &bytes, &lora, &err), 0);
    assert_int_equal(bytes, fkd_lora_encoded_bytes(&lora));
    assert_int_equal(fkd_lora_decode(&back, &cfg, data, bytes, &err), 0);
    assert_int_equal(back.n, lora.n);
    assert_int_equal(back.cfg.rank, 3);
    assert_true(back.scale == lora.scale);
    assert_memory_equal(back.params, lora.params, lora.n * sizeof(float));
    assert_memory_equal(back.cfg.targets, lora.cfg.targets, FKD_T_COUNT);
    fkd_lora_free(&back);

    for (size_t cut = 0; cut < bytes; cut += 1 + cut / 3)
        assert_int_equal(fkd_lora_decode(&back, &cfg, data, cut, &err), -1);
    uint8_t *longer = malloc(bytes + 1);
    memcpy(longer, data, bytes);
    longer[bytes] = 0;
    assert_int_equal(fkd_lora_decode(&back, &cfg, longer, bytes + 1, &err), -1);
    free(longer);
    data[bytes / 2] ^= 0x10;
    assert_int_equal(fkd_lora_decode(&back, &cfg, data, bytes, &err), -1);
    assert_int_equal(err.code, FKD_E_CHECKSUM);
    data[bytes / 2] ^= 0x10;
    data[52] ^= 1; /* rank 3 -> 2: the sizes no longer add up */
    assert_int_equal(fkd_lora_decode(&back, &cfg, data, bytes, &err), -1);
    assert_int_equal(err.code, FKD_E_FORMAT);
    data[52] ^= 1;
    data[60] |= 1; /* a target bit on the embedding */
    assert_int_equal(fkd_lora_decode(&back, &cfg, data, bytes, &err), -1);
    assert_int_equal(err.code, FKD_E_FORMAT);
    data[60] &= (uint8_t)~1u;
    fkd_model_config other = cfg;
    other.n_layers = 3;
    assert_int_equal(fkd_lora_decode(&back, &other, data, bytes, &err), -1);
    assert_int_equal(err.code, FKD_E_MISMATCH);
    assert_int_equal(fkd_lora_decode(&back, NULL, data, bytes, &err), 0); /* no expectation */
    fkd_lora_free(&back);
    free(data);

    char path[512];
    snprintf(path, sizeof path, "%s/test_lora.fkdlora", getenv("FKD_TEST_TMP") ? getenv("FKD_TEST_TMP") : ".");
    assert_int_equal(fkd_lora_save(path, &lora, &err), 0);
    assert_int_equal(fkd_lora_load(&back, &cfg, path, &err), 0);
    assert_memory_equal(back.params, lora.params, lora.n * sizeof(float));
    remove(path);
    fkd_lora_free(&back);
    fkd_lora_free(&lora);
}

static void test_targets_and_config(void **state)
{
    uint8_t t[FKD_T_COUNT];
    fkd_error err;
    assert_int_equal(fkd_lora_parse_targets(t, "wq,wv", &err), 0);
    for (int i = 0; i < FKD_T_COUNT; i++) assert_int_equal(t[i], i == FKD_T_WQ || i == FKD_T_WV);
    assert_int_equal(fkd_lora_parse_targets(t, "all", &err), 0);
    for (int i = 0; i < FKD_T_COUNT; i++) assert_int_equal(t[i], fkd_tensor_is_block_matrix(i));
    assert_int_equal(fkd_lora_parse_targets(t, "wq,tok_emb", &err), -1);
    assert_int_equal(fkd_lora_parse_targets(t, "", &err), -1);

    fkd_model_config cfg = tiny_config(0);
    fkd_lora_config lc = fkd_lora_defaults();
    fkd_lora lora;
    lc.rank = 0;
    assert_int_equal(fkd_lora_init(&lora, &cfg, &lc, 1, &err), -1);
    lc = fkd_lora_defaults();
    memset(lc.targets, 0, sizeof lc.targets);
    assert_int_equal(fkd_lora_init(&lora, &cfg, &lc, 1, &err), -1);
    lc.targets[FKD_T_FFN_NORM] = 1;
    assert_int_equal(fkd_lora_init(&lora, &cfg, &lc, 1, &err), -1);

    /* B starts at zero: a fresh adapter leaves the model as it was */
    lc = fkd_lora_defaults();
    assert_int_equal(fkd_lora_init(&lora, &cfg, &lc, 1, &err), 0);
    for (int l = 0; l < cfg.n_layers; l++) {
        float *b = fkd_lora_b(&lora, lora.params, FKD_T_W2, l);
        for (int i = 0; i < cfg.dim * lc.rank; i++) assert_true(b[i] == 0.0f);
        assert_true(fkd_lora_a(&lora, lora.params, FKD_T_W2, l)[0] != 0.0f);
    }
    fkd_lora_free(&lora);
}

/* The 6-layer SmolLM2 student (49.5 M parameters) at batch 4 x 256 with
 * rank-8 adapters on all seven block matrices: 488,448 adapter floats;
 * params + grads + AdamW moments 7.8 MB, the lora scratch 64 KB and one
 * materialised FFN matrix (1536 x 576) 3.5 MB: 11,419,648 bytes. */
static void test_student_memory_figure(void **state)
{
    fkd_model_config s = {.vocab = 49152, .dim = 576, .n_layers = 6, .n_heads = 9,
                          .n_kv_heads = 3, .ffn_hidden = 1536, .max_seq = 256,
                          .tie_embeddings = 1, .rope_theta = 100000.0f, .norm_eps = 1e-5f};
    fkd_lora_config lc = fkd_lora_defaults();
    assert_int_equal(fkd_config_param_count(&s), 49552704);
    assert_int_equal(fkd_lora_param_count(&s, &lc), 488448);
    assert_int_equal(fkd_lora_train_bytes(&s, &lc, 4, 256, 1), 11419648);
    assert_int_equal(fkd_lora_train_bytes(&s, &lc, 4, 256, 0), 11419648 - 884736 * 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernel_gradients),
        cmocka_unit_test(test_model_gradient_untied),
        cmocka_unit_test(test_model_gradient_tied_recompute),
        cmocka_unit_test(test_weight_source_equals_fp32_base),
        cmocka_unit_test(test_merged_adapters_give_the_same_logits),
        cmocka_unit_test(test_training_adapters_lowers_loss_and_keeps_base),
        cmocka_unit_test(test_trainer_trains_adapters_and_resumes),
        cmocka_unit_test(test_file_round_trip_and_damage),
        cmocka_unit_test(test_targets_and_config),
        cmocka_unit_test(test_student_memory_figure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
