/* test_qmodel.c — the quantized student: format policy, dequantization
 * error, serialization (round trip; truncated, corrupted and forged bytes
 * refused), pruning masks (exact counts, 2:4 pattern, kept through the
 * optimizer and through serialization), and the quantized forward pass
 * against train's fkd_infer_step. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fkd_compress.h"

static fkd_model_config tiny_config(int tie)
{
    return (fkd_model_config){.vocab = 96, .dim = 64, .n_layers = 2, .n_heads = 4,
                              .n_kv_heads = 2, .ffn_hidden = 160, .max_seq = 24,
                              .tie_embeddings = tie, .rope_theta = 10000.0f, .norm_eps = 1e-5f};
}

static void make_params(fkd_params *p, int tie, uint64_t seed)
{
    fkd_model_config cfg = tiny_config(tie);
    fkd_error err;
    if (fkd_params_init(p, &cfg, &err) < 0) fail_msg("%s", err.msg);
    fkd_params_randomize(p, seed);
    /* norm gains away from 1, so a wrong gain would show */
    fkd_rng rng;
    fkd_rng_seed(&rng, seed + 1);
    const int norms[] = {FKD_T_ATTN_NORM, FKD_T_FFN_NORM, FKD_T_FINAL_NORM};
    for (int i = 0; i < 3; i++) {
        const fkd_tensor_info *ti = &p->tensors[norms[i]];
        for (size_t j = 0; j < ti->count; j++) p->memory[ti->offset + j] = 1.0f + 0.2f * fkd_rng_normal(&rng);
    }
}

static double rel_error(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += (double)(a[i] - b[i]) * (a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* ---- policy and dequantization ------------------------------------------------------ */
static void test_policy_and_dequantize(void **state)
{
    (void)state;
    const int schemes[] = {FKD_QTYPE_Q8_0, FKD_QTYPE_Q4_0, FKD_QTYPE_Q4_1, FKD_QTYPE_F16, FKD_QTYPE_F32};
    const double bounds[] = {0.01, 0.15, 0.12, 0.001, 0.0};
    for (int tie = 0; tie < 2; tie++) {
        fkd_params p, back;
        make_params(&p, tie, 1);
        for (size_t s = 0; s < 5; s++) {
            fkd_qmodel qm;
            fkd_error err;
            assert_int_equal(fkd_qmodel_quantize(&qm, &p, schemes[s], NULL, &err), 0);
            assert_int_equal(qm.q[FKD_T_ATTN_NORM].type, FKD_QTYPE_F32);
            assert_int_equal(qm.q[FKD_T_FINAL_NORM].type, FKD_QTYPE_F32);
            assert_int_equal(qm.q[FKD_T_WQ].type, schemes[s]);
            int emb_type = schemes[s] == FKD_QTYPE_Q4_0 || schemes[s] == FKD_QTYPE_Q4_1 ? FKD_QTYPE_Q8_0 : schemes[s];
            assert_int_equal(qm.q[FKD_T_TOK_EMB].type, emb_type);
            if (tie) assert_int_equal(qm.q[FKD_T_HEAD].bytes, 0);
            assert_int_equal(fkd_qmodel_dequantize(&back, &qm, &err), 0);
            for (int t = 0; t < FKD_T_COUNT; t++) {
                const fkd_tensor_info *ti = &p.tensors[t];
                double e = rel_error(back.memory + ti->offset, p.memory + ti->offset, ti->count);
                double bound = ti->is_matrix ? bounds[s] : 0.0;
                if (t == FKD_T_TOK_EMB || t == FKD_T_HEAD) bound = fmin(bound, 0.01);
                if (e > bound) fail_msg("%s %s: relative error %g > %g", fkd_qtype_name(schemes[s]), ti->name, e, bound);
            }
            size_t expect = 0;
            for (int t = 0; t < FKD_T_COUNT; t++) expect += qm.q[t].bytes;
            assert_int_equal(qm.data_bytes, expect);
            fkd_params_free(&back);
            fkd_qmodel_free(&qm);
        }
        fkd_params_free(&p);
    }
}

static void test_explicit_types(void **state)
{
    (void)state;
    fkd_params p;
    make_params(&p, 0, 2);
    int types[FKD_T_COUNT];
    for (int t = 0; t < FKD_T_COUNT; t++) types[t] = FKD_QTYPE_Q4_1;
    fkd_qmodel qm;
    fkd_error err;
    assert_int_equal(fkd_qmodel_quantize_types(&qm, &p, types, NULL, &err), 0); /* norms: 64 = 2 blocks */
    fkd_qmodel_free(&qm);
    types[FKD_T_WQ] = 4; /* not a format */
    assert_int_equal(fkd_qmodel_quantize_types(&qm, &p, types, NULL, &err), -1);
    assert_int_equal(err.code, FKD_E_INVALID_ARG);
    fkd_params_free(&p);
}

/* ---- serialization -------------------------------------------------------------------- */
static void fix_crc(uint8_t *data, size_t bytes)
{
    uint32_t crc = fkd_crc32(0, data, bytes - 4);
    for (int i = 0; i < 4; i++) data[bytes - 4 + i] = (uint8_t)(crc >> (8 * i));
}

static int decode_copy(const uint8_t *src, size_t bytes, fkd_error *err)
{
    uint8_t *copy = malloc(bytes ? bytes : 1);
    memcpy(copy, src, bytes);
    fkd_qmodel qm;
    int rc = fkd_qmodel_decode(&qm, copy, bytes, err);
    fkd_qmodel_free(&qm);
    free(copy);
    return rc;
}

static void test_encode_decode(void **state)
{
    (void)state;
    fkd_params p;
    make_params(&p, 0, 3);
    uint8_t *mask = malloc(p.n_params);
    assert_int_equal(fkd_prune_magnitude(mask, &p, 0.3f, NULL), 0);
    for (int with_mask = 0; with_mask < 2; with_mask++) {
        fkd_qmodel qm, qm2;
        fkd_error err;
        uint8_t *data, *data2;
        size_t bytes, bytes2;
        assert_int_equal(fkd_qmodel_quantize(&qm, &p, FKD_QTYPE_Q4_1, with_mask ? mask : NULL, &err), 0);
        assert_int_equal(fkd_qmodel_encode(&data, &bytes, &qm, &err), 0);
        assert_int_equal(bytes, fkd_qmodel_encoded_bytes(&qm));
        assert_int_equal(fkd_qmodel_decode(&qm2, data, bytes, &err), 0);
        assert_memory_equal(&qm2.cfg, &qm.cfg, sizeof qm.cfg);
        assert_int_equal(qm2.data_bytes, qm.data_bytes);
        assert_memory_equal(qm2.memory, qm.memory, qm.data_bytes);
        assert_int_equal(qm2.mask != NULL, with_mask);
        if (with_mask) assert_memory_equal(qm2.mask, mask, p.n_params);
        assert_int_equal(fkd_qmodel_encode(&data2, &bytes2, &qm2, &err), 0);
        assert_int_equal(bytes2, bytes);
        assert_memory_equal(data2, data, bytes);
        free(data2);
        fkd_qmodel_free(&qm2);
        fkd_qmodel_free(&qm);
        free(data);
    }
    free(mask);
    fkd_params_free(&p);
}

static void test_malformed_refused(void **state)
{
    (void)state;
    fkd_params p;
    make_params(&p, 1, 4);
    uint8_t *mask = malloc(p.n_params);
    assert_int_equal(fkd_prune_2_4(mask, &p, NULL), 0);
    fkd_qmodel qm;
    fkd_error err;
    uint8_t *data;
    size_t bytes;
    assert_int_equal(fkd_qmodel_quantize(&qm, &p, FKD_QTYPE_Q8_0, mask, &err), 0);
    assert_int_equal(fkd_qmodel_encode(&data, &bytes, &qm, &err), 0);
    fkd_qmodel_free(&qm);
    assert_int_equal(decode_copy(data, bytes, &err), 0);
    /* every truncation through the header and tables, then a stride through the data */
    for (size_t len = 0; len < bytes; len += len < 512 ? 1 : 97) assert_int_equal(decode_copy(data, len, &err), -1);
    assert_int_equal(decode_copy(data, bytes - 1, &err), -1);
    uint8_t *bad = malloc(bytes + 1);
    memcpy(bad, data, bytes);
    bad[bytes] = 0;
    assert_int_equal(decode_copy(bad, bytes + 1, &err), -1);
    /* header bytes flipped (with the CRC forged to match): refused, no crash */
    const size_t header = 8 + 4 + 4 + 40 + 4 + FKD_T_COUNT * 20;
    for (size_t i = 0; i < header; i++) {
        memcpy(bad, data, bytes);
        bad[i] ^= 0x41;
        assert_int_equal(decode_copy(bad, bytes, &err), -1); /* CRC */
        fix_crc(bad, bytes);
        if (decode_copy(bad, bytes, &err) == 0 && !(i >= 40 && i < 44) && !(i >= 48 && i < 56)) /* max_seq, theta, eps */
            fail_msg("header byte %zu flipped was accepted", i);
    }
    /* forged fields */
    memcpy(bad, data, bytes);
    memset(bad + 16, 0xff, 4); /* vocab 2^32-1 */
    fix_crc(bad, bytes);
    assert_int_equal(decode_copy(bad, bytes, &err), -1);
    assert_int_equal(err.code, FKD_E_FORMAT);
    memcpy(bad, data, bytes);
    bad[8] = 9; /* version from the future */
    fix_crc(bad, bytes);
    assert_int_equal(decode_copy(bad, bytes, &err), -1);
    assert_int_equal(err.code, FKD_E_VERSION);
    /* a block scale of inf in the first tensor's data */
    memcpy(bad, data, bytes);
    bad[header] = 0x00;
    bad[header + 1] = 0x7c;
    fix_crc(bad, bytes);
    assert_int_equal(decode_copy(bad, bytes, &err), -1);
    /* stray bits past the mask's last weight are refused only if there are any */
    if (p.n_params % 8) {
        memcpy(bad, data, bytes);
        bad[bytes - 5] |= 0x80;
        fix_crc(bad, bytes);
        assert_int_equal(decode_copy(bad, bytes, &err), -1);
    }
    free(bad);
    free(data);
    free(mask);
    fkd_params_free(&p);
}

/* ---- pruning ------------------------------------------------------------------------------ */
static int prunable(int t)
{
    return t >= FKD_T_WQ && t <= FKD_T_W2 && t != FKD_T_FFN_NORM;
}

static void test_prune_masks(void **state)
{
    (void)state;
    fkd_params p;
    make_params(&p, 0, 5);
    uint8_t *mask = malloc(p.n_params);
    assert_int_equal(fkd_prune_magnitude(mask, &p, 0.5f, NULL), 0);
    assert_true(fabs(fkd_prune_sparsity(mask, &p) - 0.5) < 1e-9);
    for (int t = 0; t < FKD_T_COUNT; t++) {
        const fkd_tensor_info *ti = &p.tensors[t];
        size_t layers = ti->ndim == 3 ? (size_t)ti->shape[0] : 1, slice = ti->count / (layers ? layers : 1);
        for (size_t l = 0; l < layers && ti->count; l++) { /* each layer's slice on its own */
            float max_pruned = 0, min_kept = INFINITY;
            size_t zeros = 0, off = ti->offset + l * slice;
            for (size_t i = 0; i < slice; i++) {
                float a = fabsf(p.memory[off + i]);
                if (mask[off + i]) min_kept = fminf(min_kept, a);
                else {
                    max_pruned = fmaxf(max_pruned, a);
                    zeros++;
                }
            }
            if (!prunable(t)) assert_int_equal(zeros, 0);
            else {
                assert_int_equal(zeros, slice / 2);
                assert_true(max_pruned <= min_kept);
            }
        }
    }
    assert_int_equal(fkd_prune_magnitude(mask, &p, 1.0f, NULL), -1);

    assert_int_equal(fkd_prune_2_4(mask, &p, NULL), 0);
    for (int t = 0; t < FKD_T_COUNT; t++) {
        const fkd_tensor_info *ti = &p.tensors[t];
        for (size_t g = 0; g < ti->count; g += 4) {
            const uint8_t *m = mask + ti->offset + g;
            const float *w = p.memory + ti->offset + g;
            int kept = m[0] + m[1] + m[2] + m[3];
            assert_int_equal(kept, prunable(t) ? 2 : 4);
            for (int a = 0; a < 4; a++)
                for (int b = 0; b < 4; b++)
                    if (m[a] && !m[b]) assert_true(fabsf(w[a]) >= fabsf(w[b]));
        }
    }
    free(mask);
    fkd_params_free(&p);
}

/* Pruned weights stay zero through the optimizer and through the model. */
static void test_mask_persists(void **state)
{
    (void)state;
    fkd_params p;
    make_params(&p, 0, 6);
    uint8_t *mask = malloc(p.n_params);
    assert_int_equal(fkd_prune_magnitude(mask, &p, 0.6f, NULL), 0);
    fkd_prune_apply(p.memory, mask, p.n_params);
    fkd_optimizer_config oc = fkd_optimizer_defaults();
    oc.lr = 1e-2f;
    oc.weight_decay = 0.1f;
    fkd_optimizer opt;
    fkd_error err;
    assert_int_equal(fkd_optimizer_init(&opt, &oc, &p, &err), 0);
    opt.mask = mask;
    float *grads = malloc(p.n_params * sizeof *grads);
    fkd_rng rng;
    fkd_rng_seed(&rng, 8);
    for (int step = 0; step < 5; step++) {
        for (size_t i = 0; i < p.n_params; i++) grads[i] = fkd_rng_normal(&rng);
        fkd_optimizer_step(&opt, p.memory, grads);
    }
    size_t moved = 0;
    for (size_t i = 0; i < p.n_params; i++) {
        if (!mask[i]) assert_true(p.memory[i] == 0.0f);
        else moved++;
    }
    assert_true(moved > 0);
    /* through Q4_1 (whose zero is not a code) and serialization */
    fkd_qmodel qm, qm2;
    uint8_t *data;
    size_t bytes;
    assert_int_equal(fkd_qmodel_quantize(&qm, &p, FKD_QTYPE_Q4_1, mask, &err), 0);
    assert_int_equal(fkd_qmodel_encode(&data, &bytes, &qm, &err), 0);
    assert_int_equal(fkd_qmodel_decode(&qm2, data, bytes, &err), 0);
    fkd_params back;
    assert_int_equal(fkd_qmodel_dequantize(&back, &qm2, &err), 0);
    for (size_t i = 0; i < p.n_params; i++)
        if (!mask[i]) assert_true(back.memory[i] == 0.0f);
    fkd_params_free(&back);
    fkd_qmodel_free(&qm);
    fkd_qmodel_free(&qm2);
    free(data);
    free(grads);
    fkd_optimizer_free(&opt);
    free(mask);
    fkd_params_free(&p);
}

/* ---- forward pass ----------------------------------------------------------------------------- */
static double max_abs(const float *x, int n)
{
    double m = 0;
    for (int i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
    return m;
}

/* Runs both models over the same tokens; returns the worst logit gap
 * relative to the largest reference logit. */
static double compare_logits(const fkd_qmodel *qm, const fkd_params *ref, int kernel, int steps)
{
    fkd_qinfer qs;
    fkd_infer fs;
    fkd_error err;
    if (fkd_qinfer_init(&qs, qm, kernel, &err) < 0) fail_msg("%s", err.msg);
    if (fkd_infer_init(&fs, ref, &err) < 0) fail_msg("%s", err.msg);
    double worst = 0;
    for (int t = 0; t < steps; t++) {
        int32_t tok = (int32_t)((t * 37 + 5) % qm->cfg.vocab);
        const float *a = fkd_qinfer_step(&qs, tok), *b = fkd_infer_step(&fs, tok);
        assert_non_null(a);
        double scale = max_abs(b, qm->cfg.vocab);
        for (int i = 0; i < qm->cfg.vocab; i++) worst = fmax(worst, fabs(a[i] - b[i]) / scale);
    }
    fkd_qinfer_free(&qs);
    fkd_infer_free(&fs);
    return worst;
}

static void scale_up_head(fkd_params *p)
{
    /* trained heads give peaked logits; random ones are nearly flat */
    for (size_t i = 0; i < p->tensors[FKD_T_TOK_EMB].count; i++) p->p.tok_emb[i] *= 20.0f;
    if (!p->cfg.tie_embeddings)
        for (size_t i = 0; i < p->tensors[FKD_T_HEAD].count; i++) p->p.head[i] *= 20.0f;
}

static void test_forward_matches_train(void **state)
{
    (void)state;
    for (int tie = 0; tie < 2; tie++) {
        fkd_params p;
        make_params(&p, tie, 7);
        scale_up_head(&p);
        const struct { int type; double bound; } cases[] = {
            {FKD_QTYPE_F32, 1e-4}, {FKD_QTYPE_Q8_0, 0.03}, {FKD_QTYPE_Q4_0, 0.03}, {FKD_QTYPE_Q4_1, 0.03}};
        for (size_t c = 0; c < 4; c++) {
            fkd_qmodel qm;
            fkd_params deq;
            fkd_error err;
            assert_int_equal(fkd_qmodel_quantize(&qm, &p, cases[c].type, NULL, &err), 0);
            assert_int_equal(fkd_qmodel_dequantize(&deq, &qm, &err), 0);
            /* against fp32 inference on the same (dequantized) weights: only
             * the activations' 8-bit rounding differs */
            double gap = compare_logits(&qm, &deq, FKD_QKERNEL_SCALAR, 20);
            if (gap > cases[c].bound)
                fail_msg("tie %d %s: logits differ by %g of their scale", tie, fkd_qtype_name(cases[c].type), gap);
            /* a broken kernel would be far off: the check can fail */
            if (cases[c].type != FKD_QTYPE_F32) assert_true(gap > 0.0);
            fkd_params_free(&deq);
            fkd_qmodel_free(&qm);
        }
        fkd_params_free(&p);
    }
}

static void test_forward_kernels_identical(void **state)
{
    (void)state;
    fkd_params p;
    make_params(&p, 0, 9);
    fkd_qmodel qm;
    fkd_error err;
    assert_int_equal(fkd_qmodel_quantize(&qm, &p, FKD_QTYPE_Q4_0, NULL, &err), 0);
    int best = fkd_qkernel_best();
    fkd_qinfer a, b;
    assert_int_equal(fkd_qinfer_init(&a, &qm, FKD_QKERNEL_SCALAR, &err), 0);
    assert_int_equal(fkd_qinfer_init(&b, &qm, best, &err), 0);
    for (int t = 0; t < qm.cfg.max_seq; t++) {
        const float *la = fkd_qinfer_step(&a, t % qm.cfg.vocab), *lb = fkd_qinfer_step(&b, t % qm.cfg.vocab);
        assert_memory_equal(la, lb, (size_t)qm.cfg.vocab * sizeof *la);
    }
    assert_null(fkd_qinfer_step(&a, 0)); /* context full */
    fkd_qinfer_reset(&a);
    assert_null(fkd_qinfer_step(&a, qm.cfg.vocab)); /* outside the vocabulary */
    assert_non_null(fkd_qinfer_step(&a, 1));
    fkd_qinfer_free(&a);
    fkd_qinfer_free(&b);
    fkd_qmodel_free(&qm);
    fkd_params_free(&p);
}

/* The batched prompt against token-by-token steps: the matrix products give
 * the same bits (the kernels' canonical sum), the attention differs only in
 * summation order. A continued context and a bad token take the other paths. */
static void test_prompt_matches_steps(void **state)
{
    (void)state;
    fkd_params p;
    make_params(&p, 0, 11);
    scale_up_head(&p);
    const int types[] = {FKD_QTYPE_Q4_1, FKD_QTYPE_Q8_0};
    for (size_t t = 0; t < 2; t++) {
        fkd_qmodel qm;
        fkd_error err;
        assert_int_equal(fkd_qmodel_quantize(&qm, &p, types[t], NULL, &err), 0);
        int V = qm.cfg.vocab, n = qm.cfg.max_seq - 2;
        int32_t *tokens = malloc((size_t)n * sizeof *tokens);
        float *all = malloc((size_t)n * V * sizeof *all), *last = malloc((size_t)V * sizeof *last);
        for (int i = 0; i < n; i++) tokens[i] = (int32_t)((i * 37 + 5) % V);
        fkd_qinfer a, b;
        assert_int_equal(fkd_qinfer_init(&a, &qm, FKD_QKERNEL_AUTO, &err), 0);
        assert_int_equal(fkd_qinfer_init(&b, &qm, FKD_QKERNEL_AUTO, &err), 0);
        const float *lp = fkd_qinfer_prompt(&a, tokens, n, all);
        assert_non_null(lp);
        assert_int_equal(a.pos, n);
        double worst = 0.0;
        for (int i = 0; i < n; i++) {
            const float *ls = fkd_qinfer_step(&b, tokens[i]);
            double scale = max_abs(ls, V);
            for (int v = 0; v < V; v++) worst = fmax(worst, fabs(all[(size_t)i * V + v] - ls[v]) / scale);
        }
        if (worst > 1e-4) fail_msg("%s: prompt and steps differ by %g of the logits' scale", fkd_qtype_name(types[t]), worst);
        assert_memory_equal(lp, all + (size_t)(n - 1) * V, (size_t)V * sizeof *lp);
        /* without all_logits: the same last row */
        fkd_qinfer_reset(&a);
        memcpy(last, fkd_qinfer_prompt(&a, tokens, n, NULL), (size_t)V * sizeof *last);
        assert_memory_equal(last, all + (size_t)(n - 1) * V, (size_t)V * sizeof *last);
        /* continuing a context goes step by step */
        const float *la = fkd_qinfer_prompt(&a, tokens, 2, NULL);
        assert_non_null(la);
        assert_non_null(fkd_qinfer_step(&b, tokens[0]));
        const float *lb = fkd_qinfer_step(&b, tokens[1]);
        double scale = max_abs(lb, V);
        for (int v = 0; v < V; v++) assert_true(fabs(la[v] - lb[v]) <= 1e-4 * scale);
        assert_null(fkd_qinfer_prompt(&a, tokens, 1, NULL)); /* context full */
        fkd_qinfer_reset(&a);
        tokens[3] = V;
        assert_null(fkd_qinfer_prompt(&a, tokens, n, NULL)); /* outside the vocabulary */
        assert_null(fkd_qinfer_prompt(&a, tokens, 0, NULL));
        fkd_qinfer_free(&a);
        fkd_qinfer_free(&b);
        free(tokens);
        free(all);
        free(last);
        fkd_qmodel_free(&qm);
    }
    fkd_params_free(&p);
}

static void test_eval_steps(void **state)
{
    (void)state;
    fkd_params p;
    make_params(&p, 0, 10);
    scale_up_head(&p);
    fkd_qmodel qm;
    fkd_error err;
    assert_int_equal(fkd_qmodel_quantize(&qm, &p, FKD_QTYPE_F32, NULL, &err), 0);
    enum { N = 100 };
    int32_t tokens[N];
    for (int i = 0; i < N; i++) tokens[i] = (i * 7) % qm.cfg.vocab;
    fkd_qinfer qs;
    fkd_infer fs;
    assert_int_equal(fkd_qinfer_init(&qs, &qm, FKD_QKERNEL_AUTO, &err), 0);
    assert_int_equal(fkd_infer_init(&fs, &p, &err), 0);
    fkd_eval_result rq, rf;
    assert_int_equal(fkd_compress_eval_steps(&rq, &qs, fkd_qinfer_step_fn, fkd_qinfer_reset_fn, qm.cfg.vocab,
                                             tokens, N, N, qm.cfg.max_seq, &err), 0);
    assert_int_equal(fkd_compress_eval_steps(&rf, &fs, fkd_infer_step_fn, fkd_infer_reset_fn, qm.cfg.vocab,
                                             tokens, N, N, qm.cfg.max_seq, &err), 0);
    assert_int_equal(rq.tokens, N - 1);
    assert_true(fabs(rq.perplexity - rf.perplexity) < 1e-3 * rf.perplexity);
    assert_true(rq.perplexity > 1.0);
    /* a window beyond max_seq is refused, not overflowed */
    assert_int_equal(fkd_compress_eval_steps(&rq, &qs, fkd_qinfer_step_fn, fkd_qinfer_reset_fn, qm.cfg.vocab,
                                             tokens, N, N, qm.cfg.max_seq + 1, &err), -1);
    fkd_qinfer_free(&qs);
    fkd_infer_free(&fs);
    fkd_qmodel_free(&qm);
    fkd_params_free(&p);
}

/* The batched windows score what the steps score: same positions, same
 * figures within float rounding, for every window length. */
static void test_eval_windows(void **state)
{
    (void)state;
    fkd_params p;
    make_params(&p, 0, 10);
    scale_up_head(&p);
    enum { N = 100 };
    int32_t tokens[N];
    for (int i = 0; i < N; i++) tokens[i] = (i * 7 + i / 5) % p.cfg.vocab;
    static const int types[] = {FKD_QTYPE_F32, FKD_QTYPE_Q8_0, FKD_QTYPE_Q4_0};
    int windows[] = {1, 7, 32, p.cfg.max_seq};
    fkd_error err;
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        fkd_qmodel qm;
        assert_int_equal(fkd_qmodel_quantize(&qm, &p, types[t], NULL, &err), 0);
        fkd_qinfer qs;
        assert_int_equal(fkd_qinfer_init(&qs, &qm, FKD_QKERNEL_AUTO, &err), 0);
        for (size_t w = 0; w < sizeof windows / sizeof windows[0]; w++) {
            if (windows[w] > qm.cfg.max_seq) continue;
            fkd_eval_result steps, batched;
            assert_int_equal(fkd_compress_eval_steps(&steps, &qs, fkd_qinfer_step_fn,
                                                     fkd_qinfer_reset_fn, qm.cfg.vocab, tokens, N,
                                                     N, windows[w], &err), 0);
            assert_int_equal(fkd_qinfer_eval_windows(&batched, &qs, tokens, N, N, windows[w],
                                                     &err), 0);
            assert_int_equal(batched.tokens, N - 1);
            assert_int_equal(batched.tokens, steps.tokens);
            assert_true(fabs(batched.mean_loss - steps.mean_loss) < 1e-4 * steps.mean_loss);
            assert_true(fabs(batched.accuracy - steps.accuracy) <= 1.5 / N);
            assert_true(fabs(batched.bits_per_byte - steps.bits_per_byte) <
                        1e-4 * steps.bits_per_byte);
        }
        /* refused, not overflowed: a window beyond max_seq, a token outside
         * the vocabulary, a text of one token */
        fkd_eval_result r;
        assert_int_equal(fkd_qinfer_eval_windows(&r, &qs, tokens, N, N, qm.cfg.max_seq + 1, &err),
                         -1);
        assert_int_equal(fkd_qinfer_eval_windows(&r, &qs, tokens, 1, 1, 8, &err), -1);
        int32_t bad[4] = {1, 2, qm.cfg.vocab, 3};
        assert_int_equal(fkd_qinfer_eval_windows(&r, &qs, bad, 4, 4, 8, &err), -1);
        assert_non_null(strstr(err.msg, "vocabulary"));
        fkd_qinfer_free(&qs);
        fkd_qmodel_free(&qm);
    }
    fkd_params_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy_and_dequantize),
        cmocka_unit_test(test_explicit_types),
        cmocka_unit_test(test_encode_decode),
        cmocka_unit_test(test_malformed_refused),
        cmocka_unit_test(test_prune_masks),
        cmocka_unit_test(test_mask_persists),
        cmocka_unit_test(test_forward_matches_train),
        cmocka_unit_test(test_forward_kernels_identical),
        cmocka_unit_test(test_eval_steps),
        cmocka_unit_test(test_eval_windows),
        cmocka_unit_test(test_prompt_matches_steps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
