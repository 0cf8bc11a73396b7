/* cmd_bench_teacher.c — `fedkd bench teacher --teacher FILE.gguf`: the
 * pretrained teacher's speeds, each measured in its own child process (so
 * that each peak RSS is its own). The quantized runs load the file's own
 * blocks (for SmolLM2's file: Q4_1 matrices, Q8_0 embedding and tied head)
 * without an fp32 copy; the fp32 runs load the weights dequantized. Any
 * llama GGUF will do, a pruned student's included (`fedkd export --type
 * q4_1` writes one):
 *   prompt processing: fkd_qinfer_prompt over one window of --pp tokens,
 *   2 threads, the last position's logits (what llama-bench's pp computes),
 *   and with every position's logits (pp_all: the soft-label throughput);
 *   generation: --tg tokens one at a time with the KV cache, 1 thread, over
 *   blocks (fkd_qinfer) and over fp32 weights (fkd_infer, tg_fp32);
 *   soft labels: --soft-tokens labelled through the quantized teacher
 *   (fkd_qsoftlabels_make) and through the fp32 one (fkd_teacher_softlabels),
 *   2 threads, in windows of --soft-window; their ratio is the speed-up.
 * Each of ours but the soft labels (one pass) is the mean of --reps runs
 * after a warm-up, as llama-bench's figure is. The peer is llama.cpp's
 * llama-bench on the same file with the same threads (`-p N -n 0 -t 2`,
 * `-p 0 -n N -t 1`), run in the same benchmark when --peer-bench names its
 * binary. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_child.h"
#include "bench_llamacpp.h"
#include "commands.h"

/* Four of the simulation's windows (its --context default is 256). */
#define SOFT_TOKENS 1024
#define SOFT_WINDOW 256

typedef struct {
    double tokens_per_s, peak_rss_mb, cpu_s;
    int ok;
} speed;

enum { RUN_PP, RUN_PP_ALL, RUN_TG, RUN_TG_FP32, RUN_SOFT, RUN_SOFT_FP32, RUN_COUNT };

typedef struct {
    const char *model, *only, *soft_text;
    int pp, tg, reps, soft_tokens, soft_window;
} teacher_setup;

static const char *const run_names[] = {"pp", "pp_all", "tg", "tg_fp32", "soft", "soft_fp32"};

static int is_fp32(int what) { return what == RUN_TG_FP32 || what == RUN_SOFT_FP32; }
static int is_soft(int what) { return what == RUN_SOFT || what == RUN_SOFT_FP32; }
static int is_tg(int what) { return what == RUN_TG || what == RUN_TG_FP32; }

/* Tokens per run and the context the model is loaded with. */
static int run_tokens(const teacher_setup *ts, int what)
{
    return is_soft(what) ? ts->soft_tokens : is_tg(what) ? ts->tg : ts->pp;
}

static int run_context(const teacher_setup *ts, int what)
{
    return is_soft(what) ? ts->soft_window : run_tokens(ts, what);
}

/* One timed prompt (pp, pp_all) or fp32 generation from an empty context. */
static double run_once(int what, fkd_qinfer *qs, fkd_infer *st, const int32_t *tokens, int n,
                       float *all_logits)
{
    double t0 = fkd_time_ms();
    if (what == RUN_TG_FP32) {
        fkd_infer_reset(st);
        for (int i = 0; i < n; i++)
            if (!fkd_infer_step(st, tokens[i])) return -1;
    } else {
        fkd_qinfer_reset(qs);
        if (!fkd_qinfer_prompt(qs, tokens, n, what == RUN_PP_ALL ? all_logits : NULL)) return -1;
    }
    return n / (fkd_time_ms() - t0) * 1e3;
}

/* Warm-up (first touches, thread pools), then the mean rate of reps runs. */
static double time_runs(int what, const fkd_params *p, const fkd_qmodel *qm, int n, int reps,
                        fkd_error *err)
{
    if (what == RUN_TG) return bench_qinfer_tg_rate(qm, n, reps, err);
    int V = what == RUN_TG_FP32 ? p->cfg.vocab : qm->cfg.vocab;
    fkd_infer st = {0};
    fkd_qinfer qs = {0};
    int32_t *tokens = malloc((size_t)n * sizeof *tokens);
    float *all = what == RUN_PP_ALL ? malloc((size_t)n * V * sizeof *all) : NULL;
    double sum = 0;
    int rc = !tokens || (what == RUN_PP_ALL && !all) ? -1 : 0;
    if (rc != 0) fkd_error_set(err, FKD_E_NOMEM, "out of memory for %d tokens", n);
    if (rc == 0)
        rc = what == RUN_TG_FP32 ? fkd_infer_init(&st, p, err) : fkd_qinfer_init(&qs, qm, FKD_QKERNEL_AUTO, err);
    for (int i = 0; rc == 0 && i < n; i++) tokens[i] = bench_token_at(i, V);
    for (int r = -1; rc == 0 && r < reps; r++) {
        double rate = run_once(what, &qs, &st, tokens, n, all);
        if (rate < 0) rc = fkd_error_set(err, FKD_E_NOMEM, "the model refused the benchmark's tokens");
        if (r >= 0) sum += rate;
    }
    fkd_qinfer_free(&qs);
    fkd_infer_free(&st);
    free(tokens);
    free(all);
    return rc == 0 ? sum / reps : -1;
}

#define SOFT_TEXT_MAX ((size_t)64 << 20)

/* The soft labels' transfer set: --soft-text encoded with the file's
 * tokenizer (at most n tokens), else the benchmark's token stream. */
static int soft_stream(fkd_token_stream *s, const teacher_setup *ts, const fkd_tokenizer *tok,
                       int V, fkd_error *err)
{
    memset(s, 0, sizeof *s);
    size_t n = (size_t)ts->soft_tokens, got = 0, bytes = 0;
    uint8_t *text = NULL;
    if (ts->soft_text && fkd_file_read_all(&text, &bytes, ts->soft_text, SOFT_TEXT_MAX, err) != 0)
        return -1;
    /* a token is at least one byte: bytes + 1 tokens always fit */
    size_t cap = text && bytes + 1 > n ? bytes + 1 : n;
    s->tokens = malloc(cap * sizeof *s->tokens);
    s->owned = 1;
    int rc = s->tokens ? 0 : fkd_error_set(err, FKD_E_NOMEM, "out of memory for %zu tokens", cap);
    if (rc == 0 && text) rc = fkd_tokenizer_encode(s->tokens, cap, &got, tok, text, bytes, err);
    for (size_t i = 0; rc == 0 && !text && i < n; i++) s->tokens[i] = bench_token_at((int)i, V);
    s->n = (int64_t)(text && got < n ? got : n);
    free(text);
    return rc;
}

/* The whole label pass (k 8, T 1, q8 codes, one shard) over the transfer set,
 * as the simulation runs it: tokens labelled per second. */
static double soft_rate(int what, const fkd_params *p, const fkd_qmodel *qm,
                        const fkd_tokenizer *tok, const teacher_setup *ts, fkd_error *err)
{
    fkd_token_stream s;
    int V = what == RUN_SOFT_FP32 ? p->cfg.vocab : qm->cfg.vocab;
    if (soft_stream(&s, ts, tok, V, err) != 0) {
        fkd_token_stream_free(&s);
        return -1;
    }
    fkd_teacher_config tc = fkd_teacher_defaults();
    tc.window = ts->soft_window;
    tc.n_shards = 1;
    fkd_softlabel_shard sh;
    fkd_softlabel_stats st;
    int rc = what == RUN_SOFT_FP32 ? fkd_teacher_softlabels(&sh, &st, p, &s, &tc, err)
                                   : fkd_qsoftlabels_make(&sh, &st, qm, &s, &tc, err);
    if (rc == 0) fkd_softlabels_free(&sh);
    fkd_token_stream_free(&s);
    return rc == 0 && st.seconds > 0 ? (double)st.positions / st.seconds : -1;
}

/* --only agree: the two label sets of the same stream, compared (fp32
 * first, so the figures are the quantized labels' distance from it). */
static int soft_agree(const teacher_setup *ts)
{
    fkd_params p = {0};
    fkd_qmodel qm = {0};
    fkd_tokenizer tok = {0}, tok2 = {0};
    fkd_token_stream s = {0};
    fkd_softlabel_shard a = {0}, b = {0};
    fkd_softlabel_stats sa, sb;
    fkd_qsoft_agreement ag;
    fkd_error err;
    fkd_teacher_config tc = fkd_teacher_defaults();
    tc.window = ts->soft_window;
    tc.n_shards = 1;
    tc.quant = FKD_SOFT_Q16; /* the teachers' distance, not the code's */
    fkd_train_set_threads(2);
    int rc = fkd_gguf_load_model(&p, &tok, ts->model, ts->soft_window, &err) == 0 &&
             fkd_gguf_load_qmodel(&qm, &tok2, ts->model, ts->soft_window, &err) == 0 &&
             soft_stream(&s, ts, &tok, p.cfg.vocab, &err) == 0 &&
             fkd_teacher_softlabels(&a, &sa, &p, &s, &tc, &err) == 0 &&
             fkd_qsoftlabels_make(&b, &sb, &qm, &s, &tc, &err) == 0 &&
             fkd_qsoftlabels_compare(&ag, &a, &b, 1, &err) == 0 ? 0 : -1;
    if (rc == 0)
        printf("bench=teacher model=%s soft_tokens=%lld soft_window=%d top1_agreement=%.4f "
               "topk_overlap=%.4f max_prob_diff=%.5f mean_prob_diff=%.6f kl_truncation=%.5f "
               "kl_truncation_fp32=%.5f\n", ts->model, (long long)ag.positions, ts->soft_window,
               ag.top1_agreement, ag.topk_overlap, ag.max_prob_diff, ag.mean_prob_diff,
               sb.kl_truncation, sa.kl_truncation);
    else
        fprintf(stderr, "fedkd bench teacher: %s\n", err.msg);
    fkd_softlabels_free(&a);
    fkd_softlabels_free(&b);
    fkd_token_stream_free(&s);
    fkd_params_free(&p);
    fkd_qmodel_free(&qm);
    fkd_tokenizer_free(&tok);
    fkd_tokenizer_free(&tok2);
    return rc == 0 ? 0 : 1;
}

/* One figure in this process: the teacher loaded the way the run needs it
 * (fp32 weights, or the file's blocks without an fp32 copy), then timed. */
static double measure_here(const teacher_setup *ts, int what, fkd_error *err)
{
    fkd_params p = {0};
    fkd_qmodel qm = {0};
    fkd_tokenizer tok = {0};
    int ctx = run_context(ts, what);
    fkd_train_set_threads(is_tg(what) ? 1 : 2);
    int rc = is_fp32(what) ? fkd_gguf_load_model(&p, &tok, ts->model, ctx, err)
                           : fkd_gguf_load_qmodel(&qm, &tok, ts->model, ctx, err);
    double rate = -1;
    if (rc == 0)
        rate = is_soft(what) ? soft_rate(what, &p, &qm, &tok, ts, err)
                             : time_runs(what, &p, &qm, run_tokens(ts, what), ts->reps, err);
    fkd_params_free(&p);
    fkd_qmodel_free(&qm);
    fkd_tokenizer_free(&tok);
    return rate;
}

typedef struct {
    const teacher_setup *ts;
    int what;
} measure_arg;

typedef struct {
    double rate, cpu_s;
    char error[sizeof(((fkd_error *)0)->msg)];
} measure_result;

static void measure_child(void *out, const void *arg)
{
    measure_result *r = out;
    const measure_arg *a = arg;
    fkd_error err = {0};
    double cpu0 = fkd_cpu_time_ms();
    r->rate = measure_here(a->ts, a->what, &err);
    r->cpu_s = (fkd_cpu_time_ms() - cpu0) / 1e3;
    if (r->rate <= 0) snprintf(r->error, sizeof r->error, "%s", err.msg);
}

/* Runs one measurement in a child (bench_child.h): its peak RSS is its own. */
static void measure(speed *s, const teacher_setup *ts, int what)
{
    memset(s, 0, sizeof *s);
    measure_arg a = {ts, what};
    measure_result r;
    if (bench_run_child(&r, sizeof r, &s->peak_rss_mb, measure_child, &a) != 0) return;
    if (r.rate <= 0) {
        fprintf(stderr, "fedkd bench teacher: %s\n", r.error);
        return;
    }
    s->tokens_per_s = r.rate;
    s->cpu_s = r.cpu_s;
    s->ok = 1;
}

static void print_pair(const char *name, const speed *s, double peer)
{
    printf(" %s_tokens_per_s=%.1f %s_peak_rss_mb=%.0f", name, s->ok ? s->tokens_per_s : 0.0,
           name, s->ok ? s->peak_rss_mb : 0.0);
    if (peer > 0) printf(" %s_llamacpp_tokens_per_s=%.1f %s_ratio=%.2f", name, peer, name,
                         s->ok ? s->tokens_per_s / peer : 0.0);
}

/* --only: one figure measured in this process, without a peer. */
static int only_one(const teacher_setup *ts)
{
    if (strcmp(ts->only, "agree") == 0) return soft_agree(ts);
    int what = -1;
    for (int i = 0; i < RUN_COUNT; i++)
        if (strcmp(ts->only, run_names[i]) == 0) what = i;
    if (what < 0) {
        fprintf(stderr, "fedkd bench teacher: --only takes pp, pp_all, tg, tg_fp32, soft, "
                "soft_fp32 or agree, not %s\n", ts->only);
        return 2;
    }
    fkd_error err;
    double rate = measure_here(ts, what, &err);
    if (rate < 0) {
        fprintf(stderr, "fedkd bench teacher: %s\n", err.msg);
        return 1;
    }
    printf("bench=teacher model=%s %s_tokens_per_s=%.1f\n", ts->model, ts->only, rate);
    return 0;
}

int cmd_bench_teacher(int argc, char **argv)
{
    teacher_setup ts = {"models/SmolLM2-135M-Instruct.Q4_1.gguf", NULL, NULL, 512, 128, 3,
                        SOFT_TOKENS, SOFT_WINDOW};
    const char *peer = NULL;
    fkd_opt opts[] = {
        {"teacher", FKD_OPT_STR, &ts.model, "GGUF model (llama family)"},
        {"pp", FKD_OPT_INT, &ts.pp, "prompt tokens processed in one pass (2 threads)"},
        {"tg", FKD_OPT_INT, &ts.tg, "tokens generated one at a time (1 thread)"},
        {"reps", FKD_OPT_INT, &ts.reps, "timed runs averaged per figure (llama-bench -r)"},
        {"peer-bench", FKD_OPT_STR, &peer, "llama.cpp's llama-bench binary (the peer)"},
        {"soft-tokens", FKD_OPT_INT, &ts.soft_tokens, "tokens soft-labelled, fp32 vs blocks (2 threads)"},
        {"soft-window", FKD_OPT_INT, &ts.soft_window, "tokens per soft-label window (the simulation's --context)"},
        {"soft-text", FKD_OPT_STR, &ts.soft_text, "text file to soft-label (default: the benchmark's token stream)"},
        {"only", FKD_OPT_STR, &ts.only, "one figure (pp, pp_all, tg, tg_fp32, soft, soft_fp32; agree: the two label sets compared), in this process"},
    };
    int rc = fkd_cli_parse(argc, argv, opts, (int)(sizeof opts / sizeof opts[0]),
                           "usage: fedkd bench teacher [--teacher FILE.gguf] [--peer-bench PATH]\n"
                           "Times prompt processing and generation of a pretrained teacher;\n"
                           "prints one key=value line, with llama.cpp's figures when given.",
                           NULL, 0, NULL);
    if (rc != 0) return rc > 0 ? 0 : 2;
    if (ts.pp < 1 || ts.tg < 1 || ts.reps < 1 || ts.soft_tokens < 1 || ts.soft_window < 1) {
        fprintf(stderr, "fedkd bench teacher: --pp, --tg, --reps, --soft-tokens and "
                "--soft-window must be positive\n");
        return 2;
    }
    if (ts.only) return only_one(&ts);
    /* ours and the peer's alternate, so that a burst of load on the shared
     * machine falls on both sides rather than on one */
    speed pp, pp_all, tg, tg32;
    measure(&pp, &ts, RUN_PP);
    double peer_pp = peer ? bench_llamacpp_rate(peer, ts.model, ts.pp, 0, 2, ts.reps) : -1;
    measure(&tg, &ts, RUN_TG);
    double peer_tg = peer ? bench_llamacpp_rate(peer, ts.model, 0, ts.tg, 1, ts.reps) : -1;
    measure(&pp_all, &ts, RUN_PP_ALL);
    measure(&tg32, &ts, RUN_TG_FP32);
    speed soft, soft32;
    measure(&soft, &ts, RUN_SOFT);
    measure(&soft32, &ts, RUN_SOFT_FP32);
    printf("bench=teacher model=%s pp=%d tg=%d reps=%d", ts.model, ts.pp, ts.tg, ts.reps);
    print_pair("pp", &pp, peer_pp);
    print_pair("tg", &tg, peer_tg);
    print_pair("pp_all", &pp_all, peer_pp);
    print_pair("tg_fp32", &tg32, peer_tg);
    /* the soft labels' peer is the fp32 teacher they came from before */
    printf(" soft_tokens=%d soft_window=%d", ts.soft_tokens, ts.soft_window);
    print_pair("soft", &soft, -1);
    print_pair("soft_fp32", &soft32, -1);
    int both = soft.ok && soft32.ok;
    printf(" soft_cpu_s=%.1f soft_fp32_cpu_s=%.1f soft_vs_fp32_ratio=%.2f "
           "soft_cpu_vs_fp32_ratio=%.2f soft_rss_vs_fp32_ratio=%.2f", soft.cpu_s, soft32.cpu_s,
           both ? soft.tokens_per_s / soft32.tokens_per_s : 0.0,
           both && soft32.cpu_s > 0 ? soft.cpu_s / soft32.cpu_s : 0.0,
           both ? soft.peak_rss_mb / soft32.peak_rss_mb : 0.0);
    if (peer && (peer_pp <= 0 || peer_tg <= 0)) printf(" peer=unavailable");
    printf("\n");
    return pp.ok && pp_all.ok && tg.ok && tg32.ok && soft.ok && soft32.ok ? 0 : 1;
}
