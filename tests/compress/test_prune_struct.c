/* test_prune_struct.c — structured pruning (compress/prune_struct.c) and
 * vocabulary trimming (compress/prune_vocab.c) on a small random llama model
 * and a hand-built BPE vocabulary: a consistent student (shapes, GQA groups,
 * tied head) that runs and round-trips through GGUF; the depth score finds an
 * identity block; removing structures that contribute nothing leaves the
 * logits unchanged; the trimmed vocabulary encodes its corpus exactly as the
 * full one, remapped, and still encodes any byte; soft labels keep their mass. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "prune_test_util.h"

static const char corpus[] = "A thing and the out in the outing, and the ant: in and out; "
                             "the thing in the thing.<|end|> and the";

static void encode(int32_t *ids, size_t cap, size_t *n, const fkd_tokenizer *tok, const char *s,
                   size_t len)
{
    fkd_error err;
    assert_int_equal(fkd_tokenizer_encode_special(ids, cap, n, tok, (const uint8_t *)s, len, &err), 0);
}

/* The trimmed vocabulary and its tokenizer, from the corpus. */
typedef struct {
    fkd_bpe_tables full, trimmed;
    fkd_tokenizer full_tok, tok;
    fkd_vocab_map map;
} vocab_fixture;

static void vocab_setup(vocab_fixture *v)
{
    fkd_error err;
    test_tables(&v->full);
    assert_int_equal(fkd_bpe_tables_tokenizer(&v->full_tok, &v->full, &err), 0);
    int32_t ids[512];
    size_t n;
    encode(ids, 512, &n, &v->full_tok, corpus, strlen(corpus));
    assert_int_equal(fkd_vocab_trim(&v->map, &v->trimmed, &v->full, ids, n, &err), 0);
    assert_int_equal(fkd_bpe_tables_tokenizer(&v->tok, &v->trimmed, &err), 0);
}

static void vocab_teardown(vocab_fixture *v)
{
    fkd_tokenizer_free(&v->tok);
    fkd_tokenizer_free(&v->full_tok);
    fkd_vocab_map_free(&v->map);
    fkd_bpe_tables_free(&v->trimmed);
    fkd_bpe_tables_free(&v->full);
}

static void test_trim_keeps_what_is_used(void **state)
{
    (void)state;
    vocab_fixture v;
    vocab_setup(&v);
    const fkd_vocab_map *m = &v.map;
    /* used, and their merge ancestry */
    const char *kept[] = {"Ġthe", "Ġt", "he", "th", "ing", "in", "Ġin", "Ġout", "Ġou", "ou"};
    for (int i = 0; i < 10; i++) assert_true(m->old_to_new[test_token_id(&v.full, kept[i])] >= 0);
    /* never used: merge results the corpus never needs, an orphan, the
     * result of a merge whose part is no token; "the" (" the" builds through
     * "he", never "the"), and "thin", "thing", "Ġthing" (" thing" ends as
     * Ġ th ing: "in g" outranks "th in") although merges would make them */
    const char *dropped[] = {"Ġxy", "Ġx", TEST_UNUSED, "Ġouting", "the", "thin", "thing", "Ġthing"};
    for (int i = 0; i < 8; i++) assert_int_equal(m->old_to_new[test_token_id(&v.full, dropped[i])], -1);
    /* every byte and the control token */
    for (int b = 0; b < 256; b++) assert_true(m->old_to_new[b] >= 0);
    assert_int_equal(v.trimmed.eos_id, m->old_to_new[v.full.eos_id]);
    assert_int_equal(v.trimmed.token_types[v.trimmed.eos_id], 3);
    /* the map is monotone and the two directions agree */
    for (int i = 0; i < m->new_vocab; i++) {
        assert_int_equal(m->old_to_new[m->new_to_old[i]], i);
        if (i) assert_true(m->new_to_old[i] > m->new_to_old[i - 1]);
    }
    assert_int_equal(v.trimmed.n_tokens, m->new_vocab);
    vocab_teardown(&v);
}

/* Closure: every kept merge's parts and result are kept tokens. */
static void test_trim_merges_closed(void **state)
{
    (void)state;
    vocab_fixture v;
    vocab_setup(&v);
    assert_true(v.trimmed.n_merges > 0 && v.trimmed.n_merges < v.full.n_merges);
    for (int r = 0; r < v.trimmed.n_merges; r++) {
        const char *s = v.trimmed.merges[r], *sp = memchr(s, ' ', v.trimmed.merge_lens[r]);
        assert_non_null(sp);
        size_t la = (size_t)(sp - s), lb = v.trimmed.merge_lens[r] - la - 1;
        char buf[64];
        memcpy(buf, s, la);
        buf[la] = 0;
        assert_true(test_token_id(&v.trimmed, buf) >= 0);
        memcpy(buf, sp + 1, lb);
        buf[lb] = 0;
        assert_true(test_token_id(&v.trimmed, buf) >= 0);
        memcpy(buf, s, la);
        memcpy(buf + la, sp + 1, lb);
        buf[la + lb] = 0;
        assert_true(test_token_id(&v.trimmed, buf) >= 0);
    }
    vocab_teardown(&v);
}

/* The corpus encodes with the trimmed tokenizer exactly as the full
 * encoding remapped; any bytes still encode and decode back. */
static void test_trim_encodes_exactly(void **state)
{
    (void)state;
    vocab_fixture v;
    vocab_setup(&v);
    fkd_error err;
    int32_t full[512], trimmed[512], remapped[512];
    size_t nf, nt;
    encode(full, 512, &nf, &v.full_tok, corpus, strlen(corpus));
    encode(trimmed, 512, &nt, &v.tok, corpus, strlen(corpus));
    assert_int_equal(fkd_vocab_remap_tokens(remapped, full, nf, &v.map, &err), 0);
    assert_int_equal(nt, nf);
    assert_memory_equal(trimmed, remapped, nf * sizeof *trimmed);

    uint8_t bytes[256], back[256];
    for (int b = 0; b < 256; b++) bytes[b] = (uint8_t)(255 - b);
    int32_t ids[256];
    size_t n, nb;
    assert_int_equal(fkd_tokenizer_encode(ids, 256, &n, &v.tok, bytes, 256, &err), 0);
    assert_int_equal(fkd_tokenizer_decode(back, 256, &nb, &v.tok, ids, n, &err), 0);
    assert_int_equal(nb, 256);
    assert_memory_equal(back, bytes, 256);
    /* text off the corpus encodes too, if less compactly: "xy" lost its merge */
    encode(ids, 256, &n, &v.tok, " xy the", 7);
    assert_int_equal(n, 4);
    vocab_teardown(&v);
}

static void test_map_from_tables(void **state)
{
    (void)state;
    vocab_fixture v;
    vocab_setup(&v);
    fkd_error err;
    fkd_vocab_map m;
    assert_int_equal(fkd_vocab_map_from_tables(&m, &v.full, &v.trimmed, &err), 0);
    assert_int_equal(m.new_vocab, v.map.new_vocab);
    assert_memory_equal(m.old_to_new, v.map.old_to_new, (size_t)m.old_vocab * sizeof(int32_t));
    fkd_vocab_map_free(&m);
    /* tables not trimmed from full: out of order */
    char *t0 = v.trimmed.tokens[0];
    uint32_t l0 = v.trimmed.token_lens[0];
    v.trimmed.tokens[0] = v.trimmed.tokens[1], v.trimmed.token_lens[0] = v.trimmed.token_lens[1];
    v.trimmed.tokens[1] = t0, v.trimmed.token_lens[1] = l0;
    assert_int_equal(fkd_vocab_map_from_tables(&m, &v.full, &v.trimmed, &err), -1);
    assert_int_equal(err.code, FKD_E_MISMATCH);
    v.trimmed.tokens[1] = v.trimmed.tokens[0], v.trimmed.token_lens[1] = v.trimmed.token_lens[0];
    v.trimmed.tokens[0] = t0, v.trimmed.token_lens[0] = l0;
    /* a dropped id cannot be remapped, and nothing is written */
    int32_t in[2] = {0, test_token_id(&v.full, "Ġxy")}, out[2] = {-7, -7};
    assert_int_equal(fkd_vocab_remap_tokens(out, in, 2, &v.map, &err), -1);
    assert_int_equal(out[0], -7);
    vocab_teardown(&v);
}

/* Remapped soft labels: kept ids keep their probability, the mass of dropped
 * ids moves to the rest, ids stay distinct and inside the new vocabulary. */
static void test_softlabel_remap(void **state)
{
    (void)state;
    vocab_fixture v;
    vocab_setup(&v);
    fkd_error err;
    const int n = 64, k = 8;
    fkd_softlabel_shard s;
    assert_int_equal(fkd_softlabels_alloc(&s, n, k, v.full.n_tokens, &err), 0);
    int32_t *old_ids = malloc((size_t)n * k * sizeof *old_ids);
    float *old_probs = malloc((size_t)n * k * sizeof *old_probs);
    fkd_rng rng;
    fkd_rng_seed(&rng, 7);
    int64_t dropped_seen = 0;
    for (int i = 0; i < n; i++) {
        s.tokens[i] = (int32_t)fkd_rng_below(&rng, 256);
        float left = 0.97f;
        for (int j = 0; j < k; j++) {
            int32_t id;
            int dup;
            do {  /* distinct ids over the whole vocabulary, dropped ones included */
                id = i == 0 && j == 0 ? test_token_id(&v.full, "Ġxy")
                                      : (int32_t)fkd_rng_below(&rng, (uint32_t)v.full.n_tokens);
                dup = 0;
                for (int q = 0; q < j; q++) dup |= s.ids[i * k + q] == id;
            } while (dup);
            s.ids[i * k + j] = id;
            s.probs[i * k + j] = left * 0.5f;
            left *= 0.5f;
            dropped_seen += v.map.old_to_new[id] < 0;
        }
    }
    memcpy(old_ids, s.ids, (size_t)n * k * sizeof *old_ids);
    memcpy(old_probs, s.probs, (size_t)n * k * sizeof *old_probs);
    assert_true(dropped_seen > 0);
    assert_int_equal(fkd_vocab_remap_softlabels(&s, &v.map, &err), 0);
    assert_int_equal(s.vocab, v.map.new_vocab);
    for (int i = 0; i < n; i++) {
        double old_sum = 0, kept_sum = 0, new_sum = 0;
        int at = 0;
        for (int j = 0; j < k; j++) {
            int32_t o = old_ids[i * k + j];
            old_sum += old_probs[i * k + j];
            if (v.map.old_to_new[o] < 0) continue;
            kept_sum += old_probs[i * k + j];
            assert_int_equal(s.ids[i * k + at], v.map.old_to_new[o]);
            assert_true(s.probs[i * k + at] == old_probs[i * k + j]);
            at++;
        }
        for (int j = 0; j < k; j++) {
            new_sum += s.probs[i * k + j];
            assert_true(s.ids[i * k + j] >= 0 && s.ids[i * k + j] < v.map.new_vocab);
            for (int q = 0; q < j; q++) assert_true(s.ids[i * k + q] != s.ids[i * k + j]);
            if (j >= at) assert_true(s.probs[i * k + j] == 0.0f);
        }
        /* total mass: kept + new rest = 1, new rest = old rest + dropped mass */
        assert_true(fabs(new_sum - kept_sum) < 1e-6);
        double old_rest = 1.0 - old_sum, new_rest = 1.0 - new_sum;
        assert_true(fabs(new_rest - (old_rest + (old_sum - kept_sum))) < 1e-6);
    }
    /* the encoder takes the remapped shard */
    uint8_t *bytes;
    size_t nbytes;
    assert_int_equal(fkd_softlabels_encode(&bytes, &nbytes, &s, &err), 0);
    free(bytes);
    fkd_softlabel_shard wrong;
    assert_int_equal(fkd_softlabels_alloc(&wrong, 1, k, v.full.n_tokens + 1, &err), 0);
    assert_int_equal(fkd_vocab_remap_softlabels(&wrong, &v.map, &err), -1);
    fkd_softlabels_free(&wrong);
    fkd_softlabels_free(&s);
    free(old_ids);
    free(old_probs);
    vocab_teardown(&v);
}

/* ---- the model side ----------------------------------------------------------- */

static void random_tokens(int32_t *t, int n, int vocab, uint64_t seed)
{
    fkd_rng rng;
    fkd_rng_seed(&rng, seed);
    for (int i = 0; i < n; i++) t[i] = (int32_t)fkd_rng_below(&rng, (uint32_t)vocab);
}

/* Logits of the last position of each sequence, by the training forward. */
static void forward_logits(float *out, const fkd_params *p, const int32_t *tokens, int B, int T)
{
    fkd_model m;
    fkd_error err;
    assert_int_equal(fkd_model_init_borrowed(&m, p, B, T, 0, &err), 0);
    float *logits;
    fkd_model_forward(&m, tokens, &logits);
    memcpy(out, logits, (size_t)B * T * p->cfg.vocab * sizeof *out);
    fkd_model_free(&m);
}

static void make_teacher(fkd_params *t, int vocab)
{
    fkd_error err;
    fkd_model_config c = test_teacher_config(vocab);
    assert_int_equal(fkd_params_init(t, &c, &err), 0);
    fkd_params_randomize(t, 11);
    /* larger weights so that blocks matter against the embedding */
    for (size_t i = 0; i < t->n_params; i++) t->memory[i] *= 8.0f;
    for (int l = 0; l < c.n_layers; l++)
        for (int j = 0; j < c.dim; j++)
            t->p.attn_norm[l * c.dim + j] = t->p.ffn_norm[l * c.dim + j] = 1.0f;
    for (int j = 0; j < c.dim; j++) t->p.final_norm[j] = 1.0f;
}

/* Block l adds nothing to the residual stream: zero output projections. */
static void make_identity_block(fkd_params *t, int l)
{
    const fkd_model_config *c = &t->cfg;
    size_t wo = (size_t)c->dim * c->dim, w2 = (size_t)c->dim * c->ffn_hidden;
    memset(t->p.wo + l * wo, 0, wo * sizeof(float));
    memset(t->p.w2 + l * w2, 0, w2 * sizeof(float));
}

enum { CAL_B = 2, CAL_T = 16 };

/* The student gives the teacher's logits (V = 300) on tokens (CAL_B, CAL_T). */
static void expect_same_logits(const fkd_params *t, const fkd_params *s, const int32_t *tokens)
{
    size_t nl = (size_t)CAL_B * CAL_T * 300;
    float *a = malloc(nl * sizeof *a), *b = malloc(nl * sizeof *b);
    forward_logits(a, t, tokens, CAL_B, CAL_T);
    forward_logits(b, s, tokens, CAL_B, CAL_T);
    for (size_t i = 0; i < nl; i++) assert_true(fabsf(a[i] - b[i]) < 1e-3f);
    free(a);
    free(b);
}

/* What the model-side tests start from: a teacher (edited by the test
 * before importance_setup), calibration tokens (CAL_B, CAL_T), and their
 * importance. */
typedef struct {
    fkd_params t;
    int32_t tokens[CAL_B * CAL_T];
    fkd_prune_importance imp;
} model_fixture;

static void model_setup(model_fixture *f, int vocab, uint64_t seed)
{
    make_teacher(&f->t, vocab);
    random_tokens(f->tokens, CAL_B * CAL_T, vocab, seed);
}

static void importance_setup(model_fixture *f, int depth_kl)
{
    fkd_error err;
    assert_int_equal(fkd_prune_importance_compute(&f->imp, &f->t, f->tokens, CAL_B, CAL_T,
                                                  depth_kl, 0, &err), 0);
}

static void model_teardown(model_fixture *f)
{
    fkd_prune_importance_free(&f->imp);
    fkd_params_free(&f->t);
}

/* The student plan builds (same vocabulary) gives the teacher's logits. */
static void expect_student_same_logits(const model_fixture *f, const fkd_prune_plan *plan)
{
    fkd_error err;
    fkd_params s;
    assert_int_equal(fkd_prune_build(&s, &f->t, plan, NULL, &err), 0);
    expect_same_logits(&f->t, &s, f->tokens);
    fkd_params_free(&s);
}

static void test_depth_finds_identity_block(void **state)
{
    (void)state;
    fkd_error err;
    model_fixture f;
    model_setup(&f, 300, 3);
    make_identity_block(&f.t, 2);
    importance_setup(&f, 1);
    fkd_prune_importance imp = f.imp; /* a copy: the cheap-metric check below clears block_kl */
    assert_non_null(imp.block_kl);
    assert_true(fabs(imp.block_kl[2]) < 1e-6);
    assert_true(imp.block_cos[2] < 1e-6);
    for (int l = 0; l < 4; l++)
        if (l != 2) assert_true(imp.block_kl[l] > 1e-3 && imp.block_cos[l] > 1e-4);
    assert_true(imp.base_loss > 0 && isfinite(imp.base_loss));
    /* three blocks kept: the identity one goes, and the logits do not change */
    fkd_model_config target = f.t.cfg;
    target.n_layers = 3;
    fkd_prune_plan plan;
    assert_int_equal(fkd_prune_plan_make(&plan, &imp, &target, NULL, &err), 0);
    assert_int_equal(plan.layers[0], 0);
    assert_int_equal(plan.layers[1], 1);
    assert_int_equal(plan.layers[2], 3);
    expect_student_same_logits(&f, &plan);
    /* the cheap metric alone picks the same */
    imp.block_kl = NULL;
    fkd_prune_plan plan2;
    assert_int_equal(fkd_prune_plan_make(&plan2, &imp, &target, NULL, &err), 0);
    assert_memory_equal(plan2.layers, plan.layers, 3 * sizeof(int32_t));
    fkd_prune_plan_free(&plan2);
    fkd_prune_plan_free(&plan);
    model_teardown(&f);
}

/* FFN channels that contribute nothing rank last and leave the logits as they were. */
static void test_ffn_width(void **state)
{
    (void)state;
    fkd_error err;
    model_fixture f;
    model_setup(&f, 300, 5);
    const fkd_model_config *c = &f.t.cfg;
    size_t row = (size_t)c->dim * sizeof(float);
    for (int l = 0; l < c->n_layers; l++)
        for (int ch = 1; ch < c->ffn_hidden; ch += 2) { /* odd channels: silu(0) * 0 = 0 */
            memset(f.t.p.w1 + ((size_t)l * c->ffn_hidden + ch) * c->dim, 0, row);
            memset(f.t.p.w3 + ((size_t)l * c->ffn_hidden + ch) * c->dim, 0, row);
        }
    importance_setup(&f, 0);
    assert_null(f.imp.block_kl);
    fkd_model_config target = f.t.cfg;
    target.ffn_hidden = c->ffn_hidden / 2;
    fkd_prune_plan plan;
    assert_int_equal(fkd_prune_plan_make(&plan, &f.imp, &target, NULL, &err), 0);
    for (int l = 0; l < c->n_layers; l++)
        for (int i = 0; i < target.ffn_hidden; i++) assert_int_equal(plan.ffn[l * target.ffn_hidden + i], 2 * i);
    expect_student_same_logits(&f, &plan);
    fkd_prune_plan_free(&plan);
    model_teardown(&f);
}

/* One pruned student, checked tensor by tensor against the plan. */
static void check_slices(const fkd_params *s, const fkd_params *t, const fkd_prune_plan *p,
                         const fkd_vocab_map *map)
{
    const fkd_model_config *sc = &s->cfg, *tc = &t->cfg;
    int hd = tc->dim / tc->n_heads, G = tc->n_heads / tc->n_kv_heads, g = sc->n_heads / sc->n_kv_heads;
    int C = sc->dim, tC = tc->dim;
    for (int v = 0; v < sc->vocab; v++)
        for (int j = 0; j < C; j++)
            assert_true(s->p.tok_emb[(size_t)v * C + j] ==
                        t->p.tok_emb[(size_t)map->new_to_old[v] * tC + p->channels[j]]);
    for (int i = 0; i < sc->n_layers; i++) {
        int l = p->layers[i];
        for (int h = 0; h < sc->n_heads; h++) {
            int th = p->heads[i * sc->n_heads + h];
            /* GQA: student head h serves student kv head h / g, whose teacher
             * kv head must be the group of teacher head th */
            assert_int_equal(th / G, p->kv_heads[i * sc->n_kv_heads + h / g]);
            for (int d = 0; d < hd; d++)
                for (int j = 0; j < C; j += 7) {
                    float sv = s->p.wq[(((size_t)i * sc->n_heads + h) * hd + d) * C + j];
                    float tv = t->p.wq[(((size_t)l * tc->n_heads + th) * hd + d) * tC + p->channels[j]];
                    assert_true(sv == tv);
                    /* wo: rows are channels, columns the head's */
                    sv = s->p.wo[((size_t)i * C + j) * (sc->n_heads * hd) + h * hd + d];
                    tv = t->p.wo[((size_t)l * tC + p->channels[j]) * (tc->n_heads * hd) + th * hd + d];
                    assert_true(sv == tv);
                }
        }
        for (int k = 0; k < sc->n_kv_heads; k++) {
            int tk = p->kv_heads[i * sc->n_kv_heads + k];
            for (int d = 0; d < hd; d++)
                assert_true(s->p.wk[(((size_t)i * sc->n_kv_heads + k) * hd + d) * C] ==
                            t->p.wk[(((size_t)l * tc->n_kv_heads + tk) * hd + d) * tC + p->channels[0]]);
        }
        for (int f = 0; f < sc->ffn_hidden; f++)
            assert_true(s->p.w2[((size_t)i * C + 1) * sc->ffn_hidden + f] ==
                        t->p.w2[((size_t)l * tC + p->channels[1]) * tc->ffn_hidden + p->ffn[i * sc->ffn_hidden + f]]);
        assert_true(s->p.ffn_norm[i * C + 2] == t->p.ffn_norm[l * tC + p->channels[2]]);
    }
    (void)G;
}

static void test_student_consistent_and_gguf(void **state)
{
    (void)state;
    fkd_error err;
    vocab_fixture v;
    vocab_setup(&v);
    model_fixture f;
    model_setup(&f, v.full.n_tokens, 9);
    for (size_t i = 0; i < (size_t)f.t.cfg.n_layers * f.t.cfg.dim; i++)  /* distinct gains, to see slicing */
        f.t.p.ffn_norm[i] = 1.0f + 0.01f * (float)i;
    importance_setup(&f, 1);
    /* 2 of 4 blocks, 1 of 2 kv groups with 2 of its 3 query heads, half the FFN */
    fkd_model_config target = f.t.cfg;
    target.n_layers = 2, target.n_heads = 2, target.n_kv_heads = 1, target.ffn_hidden = 32;
    target.dim = 2 * (f.t.cfg.dim / f.t.cfg.n_heads);
    fkd_prune_plan plan;
    assert_int_equal(fkd_prune_plan_make(&plan, &f.imp, &target, &v.map, &err), 0);
    fkd_params s;
    assert_int_equal(fkd_prune_build(&s, &f.t, &plan, &v.map, &err), 0);
    assert_int_equal(s.cfg.vocab, v.map.new_vocab);
    assert_int_equal(s.cfg.dim, 16);
    assert_int_equal(s.cfg.tie_embeddings, 1);
    assert_int_equal(s.tensors[FKD_T_HEAD].count, 0);
    assert_ptr_equal(s.p.head, s.p.tok_emb);
    assert_int_equal(s.n_params, fkd_config_param_count(&s.cfg));
    check_slices(&s, &f.t, &plan, &v.map);

    /* it runs */
    int32_t st[64];
    size_t n;
    encode(st, 64, &n, &v.tok, corpus, 40);
    fkd_eval_result r;
    assert_int_equal(fkd_eval_tokens(&r, &s, st, (int64_t)n, 40, 32, &err), 0);
    assert_true(isfinite(r.mean_loss) && r.mean_loss > 0);

    /* and round-trips through GGUF with its trimmed tokenizer */
    char path[1024];
    snprintf(path, sizeof path, "%s/prune_student.gguf", getenv("FKD_TEST_TMP") ? getenv("FKD_TEST_TMP") : "/tmp");
    assert_int_equal(fkd_gguf_llama_save_bpe(path, &s, FKD_QTYPE_F32, &v.trimmed, NULL, "t", &err), 0);
    fkd_params back;
    fkd_tokenizer tok;
    assert_int_equal(fkd_gguf_load_model(&back, &tok, path, 0, &err), 0);
    assert_int_equal(back.n_params, s.n_params);
    assert_int_equal(back.cfg.n_heads, 2);
    assert_int_equal(back.cfg.n_kv_heads, 1);
    assert_memory_equal(back.memory, s.memory, s.n_params * sizeof(float));
    int32_t a[256], b[256];
    size_t na, nb;
    encode(a, 256, &na, &tok, corpus, strlen(corpus));
    encode(b, 256, &nb, &v.tok, corpus, strlen(corpus));
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na * sizeof *a);
    assert_int_equal(tok.eos_id, v.trimmed.eos_id);
    /* the map comes back from the file's tables */
    fkd_gguf g;
    fkd_bpe_tables tb;
    fkd_vocab_map m;
    assert_int_equal(fkd_gguf_open(&g, path, &err), 0);
    assert_int_equal(fkd_bpe_tables_from_gguf(&tb, &g, &err), 0);
    assert_int_equal(fkd_vocab_map_from_tables(&m, &v.full, &tb, &err), 0);
    assert_memory_equal(m.new_to_old, v.map.new_to_old, (size_t)m.new_vocab * sizeof(int32_t));
    fkd_vocab_map_free(&m);
    fkd_bpe_tables_free(&tb);
    fkd_gguf_close(&g);
    remove(path);
    fkd_tokenizer_free(&tok);
    fkd_params_free(&back);
    fkd_params_free(&s);
    fkd_prune_plan_free(&plan);
    model_teardown(&f);
    vocab_teardown(&v);
}

static void test_bad_targets(void **state)
{
    (void)state;
    fkd_error err;
    model_fixture f;
    model_setup(&f, 300, 1);
    assert_int_equal(fkd_prune_importance_compute(&f.imp, &f.t, f.tokens, CAL_B, 64, 0, 0, &err), -1);
    f.tokens[3] = 300;
    assert_int_equal(fkd_prune_importance_compute(&f.imp, &f.t, f.tokens, CAL_B, CAL_T, 0, 0, &err), -1);
    f.tokens[3] = 0;
    importance_setup(&f, 0);
    fkd_prune_plan plan;
    fkd_model_config bad[4];
    for (int i = 0; i < 4; i++) bad[i] = f.t.cfg;
    bad[0].n_layers = 5;                       /* deeper than the teacher */
    bad[1].n_heads = 4, bad[1].dim = 40;       /* dim is not heads x head size */
    bad[2].n_heads = 4, bad[2].n_kv_heads = 1; /* 4 heads on one kv: more than a group of 3 */
    bad[2].dim = 32;
    bad[3].ffn_hidden = 65;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(fkd_prune_plan_make(&plan, &f.imp, &bad[i], NULL, &err), -1);
        assert_int_equal(err.code, FKD_E_INVALID_ARG);
    }
    model_teardown(&f);
}

static void test_fit(void **state)
{
    (void)state;
    fkd_error err;
    fkd_model_config t = {.vocab = 49152, .dim = 576, .n_layers = 30, .n_heads = 9,
                          .n_kv_heads = 3, .ffn_hidden = 1536, .max_seq = 2048,
                          .tie_embeddings = 1, .rope_theta = 1e5f, .norm_eps = 1e-5f};
    fkd_model_config s;
    /* the 49.5 M student: 6 blocks at full width */
    assert_int_equal(fkd_prune_fit(&s, &t, 49152, 49500000, 6, &err), 0);
    assert_int_equal(s.n_layers, 6);
    assert_int_equal(s.dim, 576);
    assert_true(fkd_config_param_count(&s) <= 49500000);
    /* below 6 full-width blocks: narrower, still 6 blocks, within budget */
    assert_int_equal(fkd_prune_fit(&s, &t, 20000, 20000000, 6, &err), 0);
    assert_int_equal(s.n_layers, 6);
    assert_true(s.dim < 576 && s.dim == s.n_heads * 64 && s.ffn_hidden % FKD_QK == 0);
    assert_true(fkd_config_param_count(&s) <= 20000000);
    assert_true(fkd_config_param_count(&s) > 15000000);
    assert_int_equal(fkd_prune_fit(&s, &t, 49152, 1000000, 6, &err), -1);
    assert_int_equal(err.code, FKD_E_LIMIT);
    /* the default least (0): 20 of 30 blocks, narrowed to a third of the
     * teacher with its trimmed vocabulary in whole kv groups (docs/pruning.md:
     * 2 of 3 groups with all 3 query heads each, dim 384, FFN 1152, 44.54 M)
     * rather than the larger 3 groups of 2 heads (FFN 1120, 44.79 M) */
    assert_int_equal(fkd_prune_default_min_layers(&t), 20);
    assert_int_equal(fkd_prune_fit(&s, &t, 26354, 134515008 / 3, 0, &err), 0);
    assert_int_equal(s.n_layers, 20);
    assert_int_equal(s.n_heads, 6);
    assert_int_equal(s.n_kv_heads, 2);
    assert_int_equal(s.ffn_hidden, 1152);
    assert_int_equal(fkd_config_param_count(&s), 44542080);
    /* width alone keeps whole groups too: 30 blocks, 2 groups, FFN 640 */
    assert_int_equal(fkd_prune_fit(&s, &t, 26354, 134515008 / 3, 30, &err), 0);
    assert_int_equal(s.n_kv_heads, 2);
    assert_int_equal(s.n_heads, 6);
    assert_int_equal(s.ffn_hidden, 640);
    assert_int_equal(fkd_config_param_count(&s), 44058240);
}

/* The one-call recipe: trimmed or not, a student of the fitted or asked shape. */
static void test_prune_teacher_recipe(void **state)
{
    (void)state;
    fkd_error err;
    vocab_fixture v;
    vocab_setup(&v);
    fkd_params t;
    make_teacher(&t, v.full.n_tokens);
    int32_t ids[512];
    size_t n;
    encode(ids, 512, &n, &v.full_tok, corpus, strlen(corpus));
    fkd_token_stream text = {.tokens = ids, .n = (int64_t)n};
    fkd_prune_config pc = fkd_prune_defaults();
    pc.calib_tokens = 32, pc.calib_seq = 16;
    pc.layers = 3, pc.ffn = 32;
    fkd_prune_result r;
    assert_int_equal(fkd_prune_teacher(&r, &t, &v.full, &text, &text, &pc, &err), 0);
    assert_int_equal(r.map.new_vocab, v.map.new_vocab);
    assert_int_equal(r.vocab.n_tokens, r.map.new_vocab);
    assert_int_equal(r.student.cfg.vocab, r.map.new_vocab);
    assert_int_equal(r.student.cfg.n_layers, 3);
    assert_int_equal(r.student.cfg.ffn_hidden, 32);
    assert_non_null(r.imp.block_kl);
    fkd_prune_result_free(&r);
    /* not trimmed: the identity map and every token */
    pc.trim_vocab = 0, pc.depth_kl = 0;
    assert_int_equal(fkd_prune_teacher(&r, &t, &v.full, &text, &text, &pc, &err), 0);
    assert_int_equal(r.map.new_vocab, v.full.n_tokens);
    for (int i = 0; i < r.map.new_vocab; i++) assert_int_equal(r.map.new_to_old[i], i);
    assert_null(r.imp.block_kl);
    fkd_prune_result_free(&r);
    /* calibration longer than the text */
    pc.calib_seq = 512, pc.calib_tokens = 512;
    assert_int_equal(fkd_prune_teacher(&r, &t, &v.full, &text, &text, &pc, &err), -1);
    assert_int_equal(err.code, FKD_E_INVALID_ARG);
    fkd_params_free(&t);
    vocab_teardown(&v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trim_keeps_what_is_used),
        cmocka_unit_test(test_trim_merges_closed),
        cmocka_unit_test(test_trim_encodes_exactly),
        cmocka_unit_test(test_map_from_tables),
        cmocka_unit_test(test_softlabel_remap),
        cmocka_unit_test(test_depth_finds_identity_block),
        cmocka_unit_test(test_ffn_width),
        cmocka_unit_test(test_student_consistent_and_gguf),
        cmocka_unit_test(test_bad_targets),
        cmocka_unit_test(test_fit),
        cmocka_unit_test(test_prune_teacher_recipe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
