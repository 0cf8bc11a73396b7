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
    int eval_teacher, threads;
    fkd_prune_config pc;
} prune_opts;

typedef struct {
    fkd_gguf g;
    fkd_params teacher;
    fkd_tokenizer tok, student_tok;
    fkd_bpe_tables full;
    fkd_corpus pub;
    fkd_federation pub_fed;
    fkd_token_stream vocab_text, calib_text;
    fkd_prune_result r;
} prune_ctx;

static void ctx_free(prune_ctx *x)
{
    fkd_prune_result_free(&x->r);
    fkd_token_stream_free(&x->calib_text);
    fkd_token_stream_free(&x->vocab_text);
    fkd_federation_free(&x->pub_fed);
    fkd_corpus_free(&x->pub);
    fkd_bpe_tables_free(&x->full);
    fkd_tokenizer_free(&x->student_tok);
    fkd_tokenizer_free(&x->tok);
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

/* The public corpus: all of it for the vocabulary, its training split
 * (the transfer set) for calibration. */
static int load_public(prune_ctx *x, const prune_opts *o, fkd_error *err)
{
    if (fkd_data_load_public(&x->pub, &x->pub_fed, o->data, o->public_list, (uint64_t)o->seed,
                             err) != 0)
        return -1;
    uint32_t *docs = malloc(((size_t)x->pub.n_docs + 1) * sizeof *docs);
    if (!docs) return fkd_error_set(err, FKD_E_NOMEM, "out of memory listing documents");
    for (uint32_t d = 0; d < x->pub.n_docs; d++) docs[d] = d;
    int rc = fkd_token_stream_from_docs(&x->vocab_text, &x->pub, docs, x->pub.n_docs, &x->tok,
                                        err);
    free(docs);
    if (rc != 0) return -1;
    return fkd_token_stream_from_split(&x->calib_text, &x->pub, &x->pub_fed, 0, FKD_SPLIT_TRAIN,
                                       &x->tok, err);
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
    fflush(stdout);
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
    const fkd_tokenizer *stok = &x->student_tok;
    fkd_eval_result rs, rt;
    int rc = fkd_docs_spread(&docs, &n_docs, &es.corpus, es.docs, es.n_docs,
                             (uint64_t)o->eval_bytes, err);
    if (rc == 0) rc = eval_stream(&ts, &es, docs, n_docs, &x->tok, err);
    if (rc == 0) rc = eval_stream(&ss, &es, docs, n_docs, stok, err);
    if (rc == 0)
        rc = fkd_eval_tokens(&rs, &x->r.student, ss.tokens, ss.n, ss.text_bytes, PRUNE_EVAL_WINDOW,
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
    fflush(stdout);
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
    if (fkd_gguf_llama_save_bpe(o->out, &x->r.student, type, &x->r.vocab, &x->g,
                                "fedkd pruned student", err) != 0)
        return -1;
    if (o->checkpoint && fkd_checkpoint_save(o->checkpoint, &x->r.student, err) != 0) return -1;
    printf("wrote %s%s%s\n", o->out, o->checkpoint ? " and " : "",
           o->checkpoint ? o->checkpoint : "");
    fflush(stdout);
    return 0;
}

static void print_plan(const prune_ctx *x, const prune_opts *o)
{
    const fkd_prune_importance *imp = &x->r.imp;
    printf("calibration: tokens=%lld teacher_loss=%.4f depth_metric=%s\n",
           (long long)imp->tokens, imp->base_loss, imp->block_kl ? "kl" : "cosine");
    printf("blocks_kept=");
    for (int i = 0; i < x->r.plan.cfg.n_layers; i++)
        printf("%s%d", i ? "," : "", x->r.plan.layers[i]);
    printf("\nblock_scores=");
    for (int l = 0; l < imp->cfg.n_layers; l++)
        printf("%s%d:%.4g", l ? "," : "", l, imp->block_kl ? imp->block_kl[l] : imp->block_cos[l]);
    printf("\n");
    if (o->pc.trim_vocab)
        printf("vocabulary: kept=%d of %d (public corpus uses %d) merges_kept=%d of %d\n",
               x->r.map.new_vocab, x->r.map.old_vocab, x->r.used_tokens, x->r.vocab.n_merges,
               x->full.n_merges);
    fflush(stdout);
}

static int run(prune_ctx *x, prune_opts *o, fkd_error *err)
{
    double t0 = fkd_time_ms();
    if (load_teacher(x, o->teacher, err) != 0 || load_public(x, o, err) != 0) return -1;
    o->pc.target_params = o->target > 0 ? (size_t)o->target : 0;
    o->pc.depth_kl = strcmp(o->depth, "kl") == 0;
    o->pc.progress = 1;
    if (fkd_prune_teacher(&x->r, &x->teacher, &x->full, &x->vocab_text, &x->calib_text, &o->pc,
                          err) != 0 ||
        fkd_bpe_tables_tokenizer(&x->student_tok, &x->r.vocab, err) != 0)
        return -1;
    print_model("teacher", &x->teacher);
    print_plan(x, o);
    print_model("student", &x->r.student);
    printf("prune_seconds=%.1f\n", (fkd_time_ms() - t0) / 1000.0);
    if (write_student(x, o, err) != 0) return -1;
    return o->eval_bytes > 0 ? evaluate(x, o, err) : 0;
}

/* Another budget from the same importances and vocabulary: refit, replan,
 * rebuild, and write OUT with "-N" before its extension. */
static int run_more(prune_ctx *x, prune_opts *o, int64_t target, fkd_error *err)
{
    fkd_model_config shape;
    fkd_prune_plan plan;
    fkd_params student;
    if (fkd_prune_fit(&shape, &x->teacher.cfg, x->r.map.new_vocab, (size_t)target,
                      o->pc.min_layers, err) != 0 ||
        fkd_prune_plan_make(&plan, &x->r.imp, &shape, &x->r.map, err) != 0)
        return -1;
    if (fkd_prune_build(&student, &x->teacher, &plan, &x->r.map, err) != 0) {
        fkd_prune_plan_free(&plan);
        return -1;
    }
    fkd_prune_plan_free(&x->r.plan);
    fkd_params_free(&x->r.student);
    x->r.plan = plan;
    x->r.student = student;
    char path[1024];
    const char *dot = strrchr(o->out, '.');
    int stem = dot ? (int)(dot - o->out) : (int)strlen(o->out);
    snprintf(path, sizeof path, "%.*s-%lld%s", stem, o->out, (long long)target, dot ? dot : "");
    printf("--- target %lld\n", (long long)target);
    print_plan(x, o);
    print_model("student", &x->r.student);
    prune_opts more = *o;
    more.out = path;
    more.checkpoint = NULL;
    more.eval_teacher = 0;
    if (write_student(x, &more, err) != 0) return -1;
    return o->eval_bytes > 0 ? evaluate(x, &more, err) : 0;
}

static int run_all(prune_ctx *x, prune_opts *o, const char *more, fkd_error *err)
{
    if (run(x, o, err) != 0) return -1;
    for (const char *p = more; p && *p;) {
        char *end;
        long long n = strtoll(p, &end, 10);
        if (end == p || n <= 0)
            return fkd_error_set(err, FKD_E_INVALID_ARG, "--more-targets takes positive numbers "
                                 "separated by commas, not \"%s\"", p);
        if (run_more(x, o, (int64_t)n, err) != 0) return -1;
        p = *end == ',' ? end + 1 : end;
    }
    return 0;
}

int cmd_prune(int argc, char **argv)
{
    prune_opts o = {.out = "student.gguf", .data = FKD_DATA_DEFAULT_DIR, .depth = "kl",
                    .type_name = "f32", .seed = (int64_t)fkd_partition_defaults().seed,
                    .eval_bytes = 65536, .threads = 2, .pc = fkd_prune_defaults()};
    const char *more = NULL;
    const fkd_opt opts[] = {
        {"teacher", FKD_OPT_STR, &o.teacher, "the teacher, a llama GGUF file (required)"},
        {"out", FKD_OPT_STR, &o.out, "the student's GGUF file"},
        {"checkpoint", FKD_OPT_STR, &o.checkpoint, "also write the student as a fedkd checkpoint"},
        {"type", FKD_OPT_STR, &o.type_name, "GGUF matrix type: f32 | f16 | q8_0 | q4_0 | q4_1"},
        {"target-params", FKD_OPT_I64, &o.target, "parameter budget: picks the shape (docs/pruning.md)"},
        {"min-layers", FKD_OPT_INT, &o.pc.min_layers, "with --target-params: fewest blocks before narrowing (0 = 2/3 of the teacher's)"},
        {"layers", FKD_OPT_INT, &o.pc.layers, "blocks to keep (overrides the fitted shape)"},
        {"heads", FKD_OPT_INT, &o.pc.heads, "query heads to keep (dim = heads x head size)"},
        {"kv-heads", FKD_OPT_INT, &o.pc.kv_heads, "key-value groups to keep"},
        {"ffn", FKD_OPT_INT, &o.pc.ffn, "FFN channels to keep per block"},
        {"trim-vocab", FKD_OPT_INT, &o.pc.trim_vocab, "1: keep only the tokens the public corpus uses"},
        {"data", FKD_OPT_STR, &o.data, "corpus directory (public side: calibration, vocabulary)"},
        {"public", FKD_OPT_STR, &o.public_list, "public categories (default: the standard split)"},
        {"seed", FKD_OPT_I64, &o.seed, "seed of the public/private splits"},
        {"calib-tokens", FKD_OPT_INT, &o.pc.calib_tokens, "calibration tokens (a few hundred to ~1k)"},
        {"calib-seq", FKD_OPT_INT, &o.pc.calib_seq, "tokens per calibration sequence"},
        {"depth", FKD_OPT_STR, &o.depth, "block score: kl (output change) | cosine (cheap)"},
        {"eval-bytes", FKD_OPT_I64, &o.eval_bytes, "private test text evaluated (0 = skip)"},
        {"eval-teacher", FKD_OPT_FLAG, &o.eval_teacher, "also evaluate the teacher on that text"},
        {"more-targets", FKD_OPT_STR, &more, "also these budgets (N,N,...) from the same "
         "calibration: OUT-N.gguf"},
        {"threads", FKD_OPT_INT, &o.threads, "compute threads"},
    };
    int rc = fkd_cli_parse(argc, argv, opts, (int)(sizeof opts / sizeof opts[0]),
                           "usage: fedkd prune --teacher FILE.gguf (--target-params N | --layers L "
                           "...) [--out student.gguf]\n"
                           "Prunes a pretrained llama model into a compact student "
                           "(docs/pruning.md).", NULL, 0, NULL);
    if (rc != 0) return rc > 0 ? 0 : 2;
    if (!o.teacher || o.pc.calib_seq < 2 || o.pc.calib_tokens < o.pc.calib_seq ||
        (strcmp(o.depth, "kl") != 0 && strcmp(o.depth, "cosine") != 0)) {
        fprintf(stderr, "fedkd prune: need --teacher, --calib-tokens >= --calib-seq >= 2 and "
                        "--depth kl|cosine (see --help)\n");
        return 2;
    }
    fkd_train_set_threads(o.threads);
    prune_ctx x;
    memset(&x, 0, sizeof x);
    fkd_error err = {0};
    rc = run_all(&x, &o, more, &err);
    if (rc != 0) fprintf(stderr, "fedkd prune: %s\n", err.msg);
    ctx_free(&x);
    return rc == 0 ? 0 : 1;
}
