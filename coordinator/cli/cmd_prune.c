/* cmd_prune.c — `fedkd prune --teacher FILE.gguf --target-params N`: cuts a
 * compact student out of a pretrained llama teacher (compress/prune_*.c):
 * importances on calibration text from the public corpus, vocabulary
 * trimmed to what the public corpus uses, depth and width pruned to the
 * target; writes the student as GGUF (its trimmed tokenizer inside, so
 * llama.cpp reads it) and reports its size and its perplexity before
 * healing on the private test text. docs/pruning.md explains the figures. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "fkd_compress.h"

enum {
    PRUNE_CONTEXT = 2048,    /* the student's context (written to its GGUF file) */
    PRUNE_EVAL_WINDOW = 512, /* tokens per evaluation window */
};

typedef struct {
    const char *teacher, *out, *checkpoint, *data, *public_list, *depth, *type_name;
    int64_t target, seed, eval_bytes;
    int layers, heads, kv_heads, ffn, min_layers, trim_vocab, calib_tokens, calib_seq, threads;
    int eval_teacher;
} prune_opts;

typedef struct {
    fkd_gguf g;
    fkd_params teacher, student;
    fkd_tokenizer tok, student_tok;
    fkd_bpe_tables full, trimmed;
    fkd_vocab_map map;
    fkd_corpus pub;
    fkd_federation pub_fed;
    fkd_prune_importance imp;
    fkd_prune_plan plan;
    int have_map;
} prune_ctx;

static void ctx_free(prune_ctx *x)
{
    fkd_prune_plan_free(&x->plan);
    fkd_prune_importance_free(&x->imp);
    fkd_federation_free(&x->pub_fed);
    fkd_corpus_free(&x->pub);
    fkd_vocab_map_free(&x->map);
    fkd_bpe_tables_free(&x->trimmed);
    fkd_bpe_tables_free(&x->full);
    fkd_tokenizer_free(&x->student_tok);
    fkd_tokenizer_free(&x->tok);
    fkd_params_free(&x->student);
    fkd_params_free(&x->teacher);
    fkd_gguf_close(&x->g);
}

static int load_teacher(prune_ctx *x, const char *path, fkd_error *err)
{
    if (fkd_gguf_open(&x->g, path, err) != 0) return -1;
    if (fkd_gguf_llama_load(&x->teacher, &x->g, PRUNE_CONTEXT, err) != 0 ||
        fkd_gguf_tokenizer(&x->tok, &x->g, err) != 0 ||
        fkd_bpe_tables_from_gguf(&x->full, &x->g, err) != 0)
        return -1;
    if (x->tok.vocab != x->teacher.cfg.vocab)
        return fkd_error_set(err, FKD_E_MISMATCH, "%s: the tokenizer has %d tokens, the model %d",
                             path, x->tok.vocab, x->teacher.cfg.vocab);
    return 0;
}

/* n_seq windows of seq tokens spread evenly over the public training text. */
static int calibrate(prune_ctx *x, const prune_opts *o, fkd_error *err)
{
    fkd_token_stream s;
    if (fkd_token_stream_from_split(&s, &x->pub, &x->pub_fed, 0, FKD_SPLIT_TRAIN, &x->tok,
                                    err) != 0)
        return -1;
    int T = o->calib_seq, B = o->calib_tokens / o->calib_seq;
    if (B < 1) B = 1;
    int rc = -1;
    int32_t *tokens = malloc((size_t)B * T * sizeof *tokens);
    if (!tokens) {
        fkd_error_set(err, FKD_E_NOMEM, "out of memory for calibration tokens");
    } else if (s.n < T) {
        fkd_error_set(err, FKD_E_INVALID_ARG, "the public text has %lld tokens, fewer than one "
                      "calibration sequence of %d", (long long)s.n, T);
    } else {
        for (int b = 0; b < B; b++)
            memcpy(tokens + (size_t)b * T, s.tokens + (s.n - T) * b / B, (size_t)T * sizeof *tokens);
        rc = fkd_prune_importance_compute(&x->imp, &x->teacher, tokens, B, T,
                                          strcmp(o->depth, "kl") == 0, 1, err);
    }
    free(tokens);
    fkd_token_stream_free(&s);
    return rc;
}

/* The kept vocabulary: every token the whole public corpus encodes to. */
static int trim_vocab(prune_ctx *x, fkd_error *err)
{
    uint32_t *docs = malloc(((size_t)x->pub.n_docs + 1) * sizeof *docs);
    if (!docs) return fkd_error_set(err, FKD_E_NOMEM, "out of memory listing documents");
    for (uint32_t d = 0; d < x->pub.n_docs; d++) docs[d] = d;
    fkd_token_stream s;
    int rc = fkd_token_stream_from_docs(&s, &x->pub, docs, x->pub.n_docs, &x->tok, err);
    free(docs);
    if (rc != 0) return -1;
    rc = fkd_vocab_trim(&x->map, &x->trimmed, &x->full, s.tokens, (size_t)s.n, err);
    fkd_token_stream_free(&s);
    if (rc != 0) return -1;
    x->have_map = 1;
    return fkd_bpe_tables_tokenizer(&x->student_tok, &x->trimmed, err);
}

static int student_shape(fkd_model_config *s, const prune_ctx *x, const prune_opts *o,
                         fkd_error *err)
{
    const fkd_model_config *t = &x->teacher.cfg;
    int vocab = x->have_map ? x->map.new_vocab : t->vocab;
    if (o->target > 0 &&
        fkd_prune_fit(s, t, vocab, (size_t)o->target, o->min_layers, err) != 0)
        return -1;
    if (o->target <= 0) *s = *t;
    if (o->layers > 0) s->n_layers = o->layers;
    if (o->kv_heads > 0) s->n_kv_heads = o->kv_heads;
    if (o->heads > 0) s->n_heads = o->heads;
    if (o->ffn > 0) s->ffn_hidden = o->ffn;
    s->dim = s->n_heads * (t->dim / t->n_heads);
    s->vocab = vocab;
    return 0;
}

static int parse_type(const char *name)
{
    int t = fkd_qtype_from_name(name);
    return t < 0 && strcmp(name, "f32") == 0 ? FKD_QTYPE_F32 : t;
}

/* Bytes of the student's weights at int8 and int4 (the qmodel policy: norms
 * f32, embedding and head never below Q8_0). */
static void quant_bytes(uint64_t *b8, uint64_t *b4, const fkd_params *p)
{
    fkd_qmodel qm;
    *b8 = *b4 = 0;
    if (fkd_qmodel_quantize(&qm, p, FKD_QTYPE_Q8_0, NULL, NULL) == 0) {
        *b8 = qm.data_bytes;
        fkd_qmodel_free(&qm);
    }
    if (fkd_qmodel_quantize(&qm, p, FKD_QTYPE_Q4_0, NULL, NULL) == 0) {
        *b4 = qm.data_bytes;
        fkd_qmodel_free(&qm);
    }
}

static void print_model(const char *label, const fkd_params *p)
{
    const fkd_model_config *c = &p->cfg;
    uint64_t b8, b4;
    quant_bytes(&b8, &b4, p);
    printf("%s: layers=%d dim=%d heads=%d kv_heads=%d ffn=%d vocab=%d params=%zu "
           "bytes_fp32=%llu bytes_int8=%llu bytes_int4=%llu\n", label, c->n_layers, c->dim,
           c->n_heads, c->n_kv_heads, c->ffn_hidden, c->vocab, p->n_params,
           (unsigned long long)p->n_params * 4, (unsigned long long)b8, (unsigned long long)b4);
}

/* The private test text (spread to eval_bytes) encoded with tok. */
static int eval_stream(fkd_token_stream *s, const fkd_eval_set *es, const uint32_t *docs,
                       uint32_t n_docs, const fkd_tokenizer *tok, fkd_error *err)
{
    return fkd_token_stream_from_docs(s, &es->corpus, docs, n_docs, tok, err);
}

static int evaluate(prune_ctx *x, const prune_opts *o, fkd_error *err)
{
    fkd_eval_set es;
    if (fkd_eval_set_load(&es, o->data, FKD_SIDE_PRIVATE, FKD_SPLIT_TEST, NULL, NULL, err) != 0)
        return -1;
    uint32_t *docs = NULL, n_docs = 0;
    fkd_token_stream ts = {0}, ss = {0};
    const fkd_tokenizer *stok = x->have_map ? &x->student_tok : &x->tok;
    fkd_eval_result rs, rt;
    int rc = fkd_docs_spread(&docs, &n_docs, &es.corpus, es.docs, es.n_docs,
                             (uint64_t)o->eval_bytes, err);
    if (rc == 0) rc = eval_stream(&ts, &es, docs, n_docs, &x->tok, err);
    if (rc == 0) rc = eval_stream(&ss, &es, docs, n_docs, stok, err);
    if (rc == 0)
        rc = fkd_eval_tokens(&rs, &x->student, ss.tokens, ss.n, ss.text_bytes, PRUNE_EVAL_WINDOW,
                             err);
    if (rc == 0) {
        /* per teacher token: the same nats spread over the teacher's tokens of the text */
        double per_teacher = exp(rs.mean_loss * (double)ss.n / (double)ts.n);
        printf("eval: private test text, %u documents, %lld bytes, teacher_tokens=%lld "
               "student_tokens=%lld\n", n_docs, (long long)ss.text_bytes, (long long)ts.n,
               (long long)ss.n);
        printf("student_before_healing: ppl_own_token=%.3f ppl_per_teacher_token=%.3f "
               "bits_per_byte=%.4f accuracy=%.4f\n", rs.perplexity, per_teacher,
               rs.bits_per_byte, rs.accuracy);
    }
    if (rc == 0 && o->eval_teacher) {
        rc = fkd_eval_tokens(&rt, &x->teacher, ts.tokens, ts.n, ts.text_bytes, PRUNE_EVAL_WINDOW,
                             err);
        if (rc == 0)
            printf("teacher: ppl=%.3f bits_per_byte=%.4f accuracy=%.4f\n", rt.perplexity,
                   rt.bits_per_byte, rt.accuracy);
    }
    fkd_token_stream_free(&ts);
    fkd_token_stream_free(&ss);
    free(docs);
    fkd_eval_set_free(&es);
    return rc;
}

static int write_student(prune_ctx *x, const prune_opts *o, fkd_error *err)
{
    int type = parse_type(o->type_name);
    if (type < 0)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "--type %s is not one of f32, f16, q8_0, "
                             "q4_0, q4_1", o->type_name);
    if (fkd_gguf_llama_save_bpe(o->out, &x->student, type, x->have_map ? &x->trimmed : &x->full,
                                &x->g, "fedkd pruned student", err) != 0)
        return -1;
    if (o->checkpoint && fkd_checkpoint_save(o->checkpoint, &x->student, err) != 0) return -1;
    printf("wrote %s%s%s\n", o->out, o->checkpoint ? " and " : "",
           o->checkpoint ? o->checkpoint : "");
    return 0;
}

static void print_plan(const prune_ctx *x)
{
    const fkd_prune_importance *imp = &x->imp;
    printf("calibration: tokens=%lld teacher_loss=%.4f depth_metric=%s\n",
           (long long)imp->tokens, imp->base_loss, imp->block_kl ? "kl" : "cosine");
    printf("blocks_kept=");
    for (int i = 0; i < x->plan.cfg.n_layers; i++)
        printf("%s%d", i ? "," : "", x->plan.layers[i]);
    printf("\nblock_scores=");
    for (int l = 0; l < imp->cfg.n_layers; l++)
        printf("%s%d:%.4g", l ? "," : "", l, imp->block_kl ? imp->block_kl[l] : imp->block_cos[l]);
    printf("\n");
    if (x->have_map)
        printf("vocabulary: kept=%d of %d merges_kept=%d of %d\n", x->map.new_vocab,
               x->map.old_vocab, x->trimmed.n_merges, x->full.n_merges);
}

static int run(prune_ctx *x, const prune_opts *o, fkd_error *err)
{
    double t0 = fkd_time_ms();
    if (load_teacher(x, o->teacher, err) != 0) return -1;
    if (fkd_data_load_public(&x->pub, &x->pub_fed, o->data, o->public_list, (uint64_t)o->seed,
                             err) != 0)
        return -1;
    if (o->trim_vocab && trim_vocab(x, err) != 0) return -1;
    fkd_model_config target;
    if (student_shape(&target, x, o, err) != 0) return -1;
    fkd_error sub;
    if (fkd_config_validate(&target, &sub) != 0)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "student shape: %s", sub.msg);
    if (calibrate(x, o, err) != 0) return -1;
    if (fkd_prune_plan_make(&x->plan, &x->imp, &target, x->have_map ? &x->map : NULL, err) != 0 ||
        fkd_prune_build(&x->student, &x->teacher, &x->plan, x->have_map ? &x->map : NULL,
                        err) != 0)
        return -1;
    print_model("teacher", &x->teacher);
    print_plan(x);
    print_model("student", &x->student);
    printf("prune_seconds=%.1f\n", (fkd_time_ms() - t0) / 1000.0);
    if (write_student(x, o, err) != 0) return -1;
    return o->eval_bytes > 0 ? evaluate(x, o, err) : 0;
}

int cmd_prune(int argc, char **argv)
{
    prune_opts o = {.out = "student.gguf", .data = FKD_DATA_DEFAULT_DIR, .depth = "kl",
                    .type_name = "f32", .seed = (int64_t)fkd_partition_defaults().seed,
                    .eval_bytes = 65536, .min_layers = 6, .trim_vocab = 1, .calib_tokens = 512,
                    .calib_seq = 256, .threads = 2};
    const fkd_opt opts[] = {
        {"teacher", FKD_OPT_STR, &o.teacher, "the teacher, a llama GGUF file (required)"},
        {"out", FKD_OPT_STR, &o.out, "the student's GGUF file"},
        {"checkpoint", FKD_OPT_STR, &o.checkpoint, "also write the student as a fedkd checkpoint"},
        {"type", FKD_OPT_STR, &o.type_name, "GGUF matrix type: f32 | f16 | q8_0 | q4_0 | q4_1"},
        {"target-params", FKD_OPT_I64, &o.target, "parameter budget: picks the shape (docs/pruning.md)"},
        {"min-layers", FKD_OPT_INT, &o.min_layers, "with --target-params: fewest blocks before narrowing"},
        {"layers", FKD_OPT_INT, &o.layers, "blocks to keep (overrides the fitted shape)"},
        {"heads", FKD_OPT_INT, &o.heads, "query heads to keep (dim = heads x head size)"},
        {"kv-heads", FKD_OPT_INT, &o.kv_heads, "key-value groups to keep"},
        {"ffn", FKD_OPT_INT, &o.ffn, "FFN channels to keep per block"},
        {"trim-vocab", FKD_OPT_INT, &o.trim_vocab, "1: keep only the tokens the public corpus uses"},
        {"data", FKD_OPT_STR, &o.data, "corpus directory (public side: calibration, vocabulary)"},
        {"public", FKD_OPT_STR, &o.public_list, "public categories (default: the standard split)"},
        {"seed", FKD_OPT_I64, &o.seed, "seed of the public/private splits"},
        {"calib-tokens", FKD_OPT_INT, &o.calib_tokens, "calibration tokens (a few hundred to ~1k)"},
        {"calib-seq", FKD_OPT_INT, &o.calib_seq, "tokens per calibration sequence"},
        {"depth", FKD_OPT_STR, &o.depth, "block score: kl (output change) | cosine (cheap)"},
        {"eval-bytes", FKD_OPT_I64, &o.eval_bytes, "private test text evaluated (0 = skip)"},
        {"eval-teacher", FKD_OPT_FLAG, &o.eval_teacher, "also evaluate the teacher on that text"},
        {"threads", FKD_OPT_INT, &o.threads, "compute threads"},
    };
    int rc = fkd_cli_parse(argc, argv, opts, (int)(sizeof opts / sizeof opts[0]),
                           "usage: fedkd prune --teacher FILE.gguf (--target-params N | --layers L "
                           "...) [--out student.gguf]\n"
                           "Prunes a pretrained llama model into a compact student "
                           "(docs/pruning.md).", NULL, 0, NULL);
    if (rc != 0) return rc > 0 ? 0 : 2;
    if (!o.teacher || o.calib_seq < 2 || o.calib_tokens < o.calib_seq ||
        (strcmp(o.depth, "kl") != 0 && strcmp(o.depth, "cosine") != 0)) {
        fprintf(stderr, "fedkd prune: need --teacher, --calib-tokens >= --calib-seq >= 2 and "
                        "--depth kl|cosine (see --help)\n");
        return 2;
    }
    fkd_train_set_threads(o.threads);
    prune_ctx x;
    memset(&x, 0, sizeof x);
    fkd_error err = {0};
    rc = run(&x, &o, &err);
    if (rc != 0) fprintf(stderr, "fedkd prune: %s\n", err.msg);
    ctx_free(&x);
    return rc == 0 ? 0 : 1;
}
