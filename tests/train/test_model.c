/* test_model.c — the whole model: gradient check of every tensor against
 * finite differences (tied and untied heads, grouped-query attention, the
 * head and loss in chunks), recomputation, micro-batching and chunking giving
 * the same gradients, frozen tensors, the optimizers, the memory planner,
 * overfitting a short text, and determinism. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
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

static void make_model(fkd_model *m, const fkd_model_config *cfg, int batch, int recompute,
                       uint64_t seed)
{
    fkd_params p;
    fkd_error err;
    assert_int_equal(fkd_params_init(&p, cfg, &err), 0);
    fkd_params_randomize(&p, seed);
    /* Larger weights than the 0.02 default make the check sensitive; much
     * larger ones saturate attention and finite differences stop being exact. */
    for (size_t i = 0; i < p.n_params; i++) p.memory[i] *= 3.0f;
    assert_int_equal(fkd_model_init(m, &p, batch, T, recompute, &err), 0);
}

typedef struct {
    fkd_model *m;
    int32_t tokens[B * T], targets[B * T], ids[B * T * 2];
    float probs[B * T * 2];
    fkd_loss_config lc;
} model_ctx;

static double model_loss(void *p)
{
    model_ctx *c = p;
    fkd_soft_labels soft = {.k = 2, .ids = c->ids, .probs = c->probs};
    fkd_loss_stats st;
    fkd_model_forward(c->m, c->tokens, NULL);
    fkd_model_backward(c->m, c->tokens, c->targets, &soft, &c->lc, &st, 1.0f);
    return st.loss;
}

static void fill_batch(model_ctx *c, int vocab)
{
    fkd_rng rng;
    fkd_rng_seed(&rng, 99);
    for (int i = 0; i < B * T; i++) {
        c->tokens[i] = (int32_t)fkd_rng_below(&rng, (uint32_t)vocab);
        c->targets[i] = i % 4 == 3 ? -1 : (int32_t)fkd_rng_below(&rng, (uint32_t)vocab);
        c->ids[2 * i] = (int32_t)fkd_rng_below(&rng, (uint32_t)vocab);
        c->ids[2 * i + 1] = (c->ids[2 * i] + 1) % vocab;
        c->probs[2 * i] = i % 3 == 0 ? 0.0f : 0.5f;
        c->probs[2 * i + 1] = i % 3 == 0 ? 0.0f : 0.3f;
    }
    c->lc = (fkd_loss_config){.alpha = 0.6f, .temperature = 1.5f};
}

/* chunk: positions per chunk of the head and loss (0: the default, one chunk here). */
static void check_whole_model(int tie, int chunk)
{
    fkd_model_config cfg = tiny_config(tie);
    fkd_model m;
    make_model(&m, &cfg, B, 0, 5);
    if (chunk) m.head_chunk = chunk;
    model_ctx c = {.m = &m};
    fill_batch(&c, cfg.vocab);
    fkd_model_zero_grad(&m);
    model_loss(&c);
    float *analytic = malloc(m.params.n_params * sizeof(float));
    memcpy(analytic, m.grads, m.params.n_params * sizeof(float));
    for (int t = 0; t < FKD_T_COUNT; t++) {
        const fkd_tensor_info *ti = &m.params.tensors[t];
        if (ti->count == 0) continue;
        gradcheck(m.params.memory + ti->offset, ti->count, analytic + ti->offset, model_loss, &c,
                  1e-3f, 5e-4, 3e-2, 24, ti->name);
    }
    free(analytic);
    fkd_model_free(&m);
}

static void test_whole_model_gradient_untied(void **state) { check_whole_model(0, 0); }
static void test_whole_model_gradient_tied(void **state) { check_whole_model(1, 0); }
static void test_whole_model_gradient_chunked_untied(void **state) { check_whole_model(0, 3); }
static void test_whole_model_gradient_chunked_tied(void **state) { check_whole_model(1, 4); }

enum { LOSS_CE, LOSS_KD, LOSS_MIXED };

/* One forward + backward with hard targets, soft labels or both. */
static void step_with(fkd_model *m, const model_ctx *c, int kind, fkd_loss_stats *st)
{
    int32_t none[B * T];
    for (int i = 0; i < B * T; i++) none[i] = -1;
    fkd_soft_labels soft = {.k = 2, .ids = c->ids, .probs = c->probs};
    fkd_model_zero_grad(m);
    fkd_model_forward(m, c->tokens, NULL);
    fkd_model_backward(m, c->tokens, kind == LOSS_KD ? none : c->targets,
                       kind == LOSS_CE ? NULL : &soft, &c->lc, st, 0.5f);
}

static void assert_stats_close(const fkd_loss_stats *a, const fkd_loss_stats *b)
{
    assert_float_equal(a->loss, b->loss, 1e-6 * (1 + fabs(a->loss)));
    assert_float_equal(a->ce, b->ce, 1e-6 * (1 + fabs(a->ce)));
    assert_float_equal(a->kd, b->kd, 1e-6 * (1 + fabs(a->kd)));
    assert_int_equal(a->n_ce, b->n_ce);
    assert_int_equal(a->n_kd, b->n_kd);
    assert_int_equal(a->n_correct, b->n_correct);
}

/* The head and loss in chunks of 1, 3 and 4 positions (the last chunk
 * short) give the loss of the whole-batch logits and the same gradient in
 * every tensor, for each kind of loss and either head. */
static void check_chunked_equals_unchunked(int tie)
{
    fkd_model_config cfg = tiny_config(tie);
    for (int kind = LOSS_CE; kind <= LOSS_MIXED; kind++) {
        fkd_model whole, chunked;
        make_model(&whole, &cfg, B, 0, 11);
        make_model(&chunked, &cfg, B, 0, 11);
        assert_int_equal(whole.head_chunk, B * T); /* a 13-token vocabulary: one chunk */
        model_ctx c = {.m = &whole};
        fill_batch(&c, cfg.vocab);
        fkd_loss_stats ref, st;
        step_with(&whole, &c, kind, &ref);
        assert_true(ref.loss > 0);

        /* the loss of the materialised logits, as evaluation computes it */
        float *logits;
        int32_t none[B * T];
        for (int i = 0; i < B * T; i++) none[i] = -1;
        fkd_soft_labels soft = {.k = 2, .ids = c.ids, .probs = c.probs};
        assert_int_equal(fkd_model_forward(&whole, c.tokens, &logits), 0);
        fkd_loss_forward_backward(NULL, &st, logits, kind == LOSS_KD ? none : c.targets,
                                  kind == LOSS_CE ? NULL : &soft, &c.lc, B * T, cfg.vocab);
        assert_stats_close(&ref, &st);

        const int chunks[] = {1, 3, 4};
        for (size_t k = 0; k < sizeof chunks / sizeof chunks[0]; k++) {
            chunked.head_chunk = chunks[k];
            step_with(&chunked, &c, kind, &st);
            assert_stats_close(&ref, &st);
            for (size_t i = 0; i < whole.params.n_params; i++)
                assert_true(fabsf(whole.grads[i] - chunked.grads[i]) <=
                            1e-6f + 1e-5f * fabsf(whole.grads[i]));
        }
        fkd_model_free(&whole);
        fkd_model_free(&chunked);
    }
}

static void test_chunked_head_equals_unchunked_untied(void **state)
{
    check_chunked_equals_unchunked(0);
}
static void test_chunked_head_equals_unchunked_tied(void **state)
{
    check_chunked_equals_unchunked(1);
}

static void test_recompute_and_micro_batches_give_the_same_gradients(void **state)
{
    fkd_model_config cfg = tiny_config(0);
    fkd_model full, recompute, half;
    make_model(&full, &cfg, B, 0, 8);
    make_model(&recompute, &cfg, B, 1, 8);
    make_model(&half, &cfg, 1, 0, 8);
    model_ctx c = {.m = &full};
    fill_batch(&c, cfg.vocab);
    fkd_model_zero_grad(&full);
    model_loss(&c);
    c.m = &recompute;
    fkd_model_zero_grad(&recompute);
    model_loss(&c);
    assert_memory_equal(full.grads, recompute.grads, full.params.n_params * sizeof(float));

    /* Two micro-batches of one sequence, each scaled by 1/2, with only
     * hard targets (the mean over positions is then the same split). */
    fkd_model_zero_grad(&half);
    fkd_model_zero_grad(&full);
    fkd_model_forward(&full, c.tokens, NULL);
    int32_t targets[B * T];
    for (int i = 0; i < B * T; i++) targets[i] = c.tokens[(i + 1) % (B * T)];
    fkd_model_backward(&full, c.tokens, targets, NULL, NULL, NULL, 1.0f);
    for (int b = 0; b < B; b++) {
        fkd_model_forward(&half, c.tokens + b * T, NULL);
        fkd_model_backward(&half, c.tokens + b * T, targets + b * T, NULL, NULL, NULL, 0.5f);
    }
    for (size_t i = 0; i < full.params.n_params; i++)
        assert_true(fabsf(full.grads[i] - half.grads[i]) <= 1e-4f + 1e-3f * fabsf(full.grads[i]));
    fkd_model_free(&full);
    fkd_model_free(&recompute);
    fkd_model_free(&half);
}

static void test_frozen_tensors_get_no_gradient(void **state)
{
    fkd_model_config cfg = tiny_config(0);
    fkd_model m;
    make_model(&m, &cfg, B, 0, 9);
    uint8_t frozen[FKD_T_COUNT] = {0};
    frozen[FKD_T_TOK_EMB] = frozen[FKD_T_W1] = 1;
    m.frozen = frozen;
    model_ctx c = {.m = &m};
    fill_batch(&c, cfg.vocab);
    fkd_model_zero_grad(&m);
    model_loss(&c);
    const fkd_tensor_info *emb = &m.params.tensors[FKD_T_TOK_EMB], *w1 = &m.params.tensors[FKD_T_W1];
    const fkd_tensor_info *w2 = &m.params.tensors[FKD_T_W2];
    for (size_t i = 0; i < emb->count; i++) assert_true(m.grads[emb->offset + i] == 0.0f);
    for (size_t i = 0; i < w1->count; i++) assert_true(m.grads[w1->offset + i] == 0.0f);
    double w2_norm = 0;
    for (size_t i = 0; i < w2->count; i++) w2_norm += fabs(m.grads[w2->offset + i]);
    assert_true(w2_norm > 0);
    fkd_model_free(&m);
}

static void test_adamw_step_matches_hand_computation(void **state)
{
    fkd_model_config cfg = tiny_config(0);
    fkd_params p;
    assert_int_equal(fkd_params_init(&p, &cfg, NULL), 0);
    fkd_params_randomize(&p, 3);
    float *g = calloc(p.n_params, sizeof(float));
    fill_normal(g, p.n_params, 0.01f, 4);
    size_t wq = p.tensors[FKD_T_WQ].offset, norm = p.tensors[FKD_T_ATTN_NORM].offset;
    float w0 = p.memory[wq], n0 = p.memory[norm], gw = g[wq], gn = g[norm];
    fkd_optimizer_config oc = fkd_optimizer_defaults();
    oc.schedule = FKD_LR_CONSTANT;
    oc.grad_clip = 0;
    fkd_optimizer opt;
    assert_int_equal(fkd_optimizer_init(&opt, &oc, &p, NULL), 0);
    fkd_optimizer_step(&opt, p.memory, g);
    /* step 1: m/bc1 = g, v/bc2 = g^2, so the update is lr*(g/(|g|+eps) + wd*w) */
    float expect_w = w0 - oc.lr * (gw / (fabsf(gw) + oc.eps) + oc.weight_decay * w0);
    float expect_n = n0 - oc.lr * (gn / (fabsf(gn) + oc.eps)); /* no decay on norms */
    assert_float_equal(p.memory[wq], expect_w, 1e-6);
    assert_float_equal(p.memory[norm], expect_n, 1e-6);

    /* a pruning mask keeps weights at exactly zero */
    uint8_t *mask = malloc(p.n_params);
    memset(mask, 1, p.n_params);
    mask[wq] = 0;
    opt.mask = mask;
    fkd_optimizer_step(&opt, p.memory, g);
    assert_true(p.memory[wq] == 0.0f);
    free(mask);
    free(g);
    fkd_optimizer_free(&opt);
    fkd_params_free(&p);
}

static void test_learning_rate_schedule(void **state)
{
    fkd_model_config cfg = tiny_config(0);
    fkd_params p;
    assert_int_equal(fkd_params_init(&p, &cfg, NULL), 0);
    fkd_optimizer_config oc = fkd_optimizer_defaults();
    oc.lr = 1.0f;
    oc.warmup_steps = 10;
    oc.total_steps = 110;
    oc.min_lr_ratio = 0.0f;
    fkd_optimizer opt;
    assert_int_equal(fkd_optimizer_init(&opt, &oc, &p, NULL), 0);
    opt.step = 0;
    assert_float_equal(fkd_optimizer_lr(&opt), 0.1f, 1e-6);
    opt.step = 60; /* half-way through the decay */
    assert_float_equal(fkd_optimizer_lr(&opt), 0.5f, 1e-6);
    opt.step = 110;
    assert_float_equal(fkd_optimizer_lr(&opt), 0.0f, 1e-6);
    fkd_optimizer_free(&opt);
    fkd_params_free(&p);
}

static void test_memory_plan_fits_the_budget(void **state)
{
    fkd_model_config cfg = fkd_config_student_s();
    fkd_memory_plan plan;
    fkd_error err;
    assert_int_equal(fkd_memory_plan_make(&plan, &cfg, 16, 128, FKD_OPT_ADAMW, 0, &err), 0);
    assert_int_equal(plan.micro_batch, 16);
    assert_int_equal(fkd_memory_plan_make(&plan, &cfg, 16, 128, FKD_OPT_ADAMW, 100u << 20, &err), 0);
    assert_true(plan.estimated_bytes <= 100u << 20);
    assert_int_equal(plan.micro_batch * plan.n_micro, 16);
    assert_int_equal(fkd_memory_plan_make(&plan, &cfg, 16, 128, FKD_OPT_ADAMW, 30u << 20, &err), -1);
    assert_int_equal(err.code, FKD_E_LIMIT);
    assert_non_null(strstr(err.msg, "budget"));
}

/* The pruned SmolLM2 student of the train benchmark: 49,152 tokens, tied. */
static fkd_model_config smollm2_student(void)
{
    return (fkd_model_config){.vocab = 49152, .dim = 576, .n_layers = 6, .n_heads = 9,
                              .n_kv_heads = 3, .ffn_hidden = 1536, .max_seq = 256,
                              .tie_embeddings = 1, .rope_theta = 100000.0f, .norm_eps = 1e-5f};
}

static void test_memory_plan_counts_one_chunk_of_logits_and_no_frozen_state(void **state)
{
    fkd_model_config cfg = smollm2_student();
    size_t V = (size_t)cfg.vocab, C = (size_t)cfg.dim, N = 4 * 256;
    int chunk = fkd_model_head_chunk(&cfg, 4, 256, 0), lean = fkd_model_head_chunk(&cfg, 4, 256, 1);
    assert_true(chunk >= 8 && chunk % 8 == 0 && (size_t)chunk < N);
    assert_true((size_t)chunk * V * sizeof(float) <= FKD_HEAD_CHUNK_BYTES);
    assert_true(lean >= 8 && lean % 8 == 0 && lean < chunk);
    assert_true((size_t)lean * V * sizeof(float) <= FKD_HEAD_CHUNK_LEAN_BYTES);
    assert_int_equal(N % chunk, 0); /* equal chunks: 1024 = 2 x 512 */
    /* With recomputation the whole step's activations take less than the
     * (N,V) logits alone would. */
    assert_true(fkd_model_activation_bytes(&cfg, 4, 256, 1) < N * V * sizeof(float));

    /* A frozen tied embedding (and so head) drops its gradient and both
     * AdamW moments from the estimate, one moment with SGD. */
    uint8_t frozen[FKD_T_COUNT] = {0};
    frozen[FKD_T_TOK_EMB] = 1;
    fkd_memory_plan all, part;
    fkd_error err;
    assert_int_equal(fkd_memory_plan_make(&all, &cfg, 4, 256, FKD_OPT_ADAMW, 0, &err), 0);
    assert_int_equal(
        fkd_memory_plan_make_frozen(&part, &cfg, frozen, 4, 256, FKD_OPT_ADAMW, 0, &err), 0);
    assert_int_equal(all.estimated_bytes - part.estimated_bytes, 3 * V * C * sizeof(float));
    assert_int_equal(
        fkd_memory_plan_make_frozen(&part, &cfg, frozen, 4, 256, FKD_OPT_SGD, 0, &err), 0);
    assert_int_equal(fkd_memory_plan_make(&all, &cfg, 4, 256, FKD_OPT_SGD, 0, &err), 0);
    assert_int_equal(all.estimated_bytes - part.estimated_bytes, 2 * V * C * sizeof(float));
    /* a budget that only the frozen plan meets: one sequence, no recomputation */
    assert_int_equal(
        fkd_memory_plan_make_frozen(&part, &cfg, frozen, 1, 256, FKD_OPT_SGD, 0, &err), 0);
    size_t budget = part.estimated_bytes;
    assert_int_equal(fkd_memory_plan_make(&all, &cfg, 4, 256, FKD_OPT_SGD, budget, &err), -1);
    assert_int_equal(
        fkd_memory_plan_make_frozen(&part, &cfg, frozen, 4, 256, FKD_OPT_SGD, budget, &err), 0);
    assert_int_equal(part.micro_batch, 1);
}

static void test_optimizer_leaves_frozen_tensors_alone(void **state)
{
    fkd_model_config cfg = tiny_config(0);
    fkd_params p;
    assert_int_equal(fkd_params_init(&p, &cfg, NULL), 0);
    fkd_params_randomize(&p, 3);
    float *g = calloc(p.n_params, sizeof(float)), *w0 = malloc(p.n_params * sizeof(float));
    fill_normal(g, p.n_params, 0.01f, 4);
    memcpy(w0, p.memory, p.n_params * sizeof(float));
    fkd_optimizer_config oc = fkd_optimizer_defaults();
    oc.grad_clip = 0;
    fkd_optimizer opt;
    assert_int_equal(fkd_optimizer_init(&opt, &oc, &p, NULL), 0);
    uint8_t frozen[FKD_T_COUNT] = {0};
    frozen[FKD_T_WQ] = frozen[FKD_T_HEAD] = 1;
    opt.frozen = frozen;
    float norm = fkd_optimizer_step(&opt, p.memory, g);
    double sq = 0;
    for (int t = 0; t < FKD_T_COUNT; t++) {
        const fkd_tensor_info *ti = &p.tensors[t];
        for (size_t i = ti->offset; i < ti->offset + ti->count; i++) {
            if (frozen[t]) {
                assert_true(p.memory[i] == w0[i]);
                assert_true(opt.m[i] == 0.0f && opt.v[i] == 0.0f);
            } else {
                assert_true(p.memory[i] != w0[i]);
                sq += (double)g[i] * g[i];
            }
        }
    }
    assert_float_equal(norm, sqrt(sq), 1e-6 * sqrt(sq)); /* the trainable tensors' norm */
    free(g);
    free(w0);
    fkd_optimizer_free(&opt);
    fkd_params_free(&p);
}

static double train_short_text(fkd_model *m, int steps)
{
    const char *text = "the quick brown fox jumps over the lazy dog; the dog sleeps.";
    int32_t tok[2 * 16], tgt[2 * 16];
    for (int i = 0; i < 32; i++) {
        tok[i] = (unsigned char)text[i % 32 + (i >= 16 ? 8 : 0)];
        tgt[i] = (unsigned char)text[i % 32 + (i >= 16 ? 8 : 0) + 1];
    }
    fkd_optimizer_config oc = fkd_optimizer_defaults();
    oc.lr = 3e-3f;
    oc.schedule = FKD_LR_CONSTANT;
    oc.weight_decay = 0;
    fkd_optimizer opt;
    assert_int_equal(fkd_optimizer_init(&opt, &oc, &m->params, NULL), 0);
    fkd_loss_stats st = {0};
    for (int s = 0; s < steps; s++) {
        fkd_model_zero_grad(m);
        fkd_model_forward(m, tok, NULL);
        fkd_model_backward(m, tok, tgt, NULL, NULL, &st, 1.0f);
        fkd_optimizer_step(&opt, m->params.memory, m->grads);
    }
    fkd_optimizer_free(&opt);
    return st.loss;
}

static void make_byte_model(fkd_model *m, uint64_t seed)
{
    fkd_model_config cfg = {.vocab = 256, .dim = 32, .n_layers = 2, .n_heads = 4,
                            .n_kv_heads = 2, .ffn_hidden = 64, .max_seq = 16,
                            .tie_embeddings = 0, .rope_theta = 10000.0f, .norm_eps = 1e-5f};
    fkd_params p;
    assert_int_equal(fkd_params_init(&p, &cfg, NULL), 0);
    fkd_params_randomize(&p, seed);
    assert_int_equal(fkd_model_init(m, &p, 2, 16, 0, NULL), 0);
}

static void test_overfits_a_short_text(void **state)
{
    fkd_model m;
    make_byte_model(&m, 1);
    double loss = train_short_text(&m, 300);
    print_message("loss after 300 steps: %.4f\n", loss);
    assert_true(loss < 0.05);
    fkd_model_free(&m);
}

static void test_training_is_deterministic(void **state)
{
    fkd_model a, b;
    make_byte_model(&a, 2);
    make_byte_model(&b, 2);
    train_short_text(&a, 5);
    train_short_text(&b, 5);
    assert_memory_equal(a.params.memory, b.params.memory, a.params.n_params * sizeof(float));
    fkd_model_free(&a);
    fkd_model_free(&b);
}

int main(void)
{
    fkd_train_set_threads(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_model_gradient_untied),
        cmocka_unit_test(test_whole_model_gradient_tied),
        cmocka_unit_test(test_whole_model_gradient_chunked_untied),
        cmocka_unit_test(test_whole_model_gradient_chunked_tied),
        cmocka_unit_test(test_chunked_head_equals_unchunked_untied),
        cmocka_unit_test(test_chunked_head_equals_unchunked_tied),
        cmocka_unit_test(test_recompute_and_micro_batches_give_the_same_gradients),
        cmocka_unit_test(test_frozen_tensors_get_no_gradient),
        cmocka_unit_test(test_adamw_step_matches_hand_computation),
        cmocka_unit_test(test_learning_rate_schedule),
        cmocka_unit_test(test_memory_plan_fits_the_budget),
        cmocka_unit_test(test_memory_plan_counts_one_chunk_of_logits_and_no_frozen_state),
        cmocka_unit_test(test_optimizer_leaves_frozen_tensors_alone),
        cmocka_unit_test(test_overfits_a_short_text),
        cmocka_unit_test(test_training_is_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
