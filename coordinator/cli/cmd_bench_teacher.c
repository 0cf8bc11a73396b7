/* cmd_bench_teacher.c — `fedkd bench teacher --teacher FILE.gguf`: the
 * pretrained teacher's two speeds, each measured in its own child process
 * (so that each peak RSS is its own), on the file's formats (for SmolLM2's
 * file: Q4_1 matrices, Q8_0 embedding and tied head), its blocks read as
 * they are (fkd_gguf_llama_load_qmodel). Any llama GGUF will do, a pruned
 * student's included (`fedkd export --type q4_1` writes one):
 *   prompt processing: fkd_qinfer_prompt over one window of --pp tokens,
 *   2 threads, the last position's logits (what llama-bench's pp computes),
 *   and with every position's logits (pp_all: the soft-label throughput);
 *   generation: --tg tokens one at a time with the KV cache, 1 thread, over
 *   blocks (fkd_qinfer) and over fp32 weights (fkd_infer, tg_fp32).
 * Each of ours is the mean of --reps runs after a warm-up, as llama-bench's
 * figure is. The peer is llama.cpp's llama-bench on the same file with the
 * same threads (`-p N -n 0 -t 2`, `-p 0 -n N -t 1`), run in the same
 * benchmark when --peer-bench names its binary. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_child.h"
#include "bench_llamacpp.h"
#include "commands.h"

typedef struct {
    double tokens_per_s, peak_rss_mb;
    int ok;
} speed;

enum { RUN_PP, RUN_PP_ALL, RUN_TG, RUN_TG_FP32 };

typedef struct {
    const char *model, *only;
    int pp, tg, reps;
} teacher_setup;

static const char *const run_names[] = {"pp", "pp_all", "tg", "tg_fp32"};

/* The model as both sides run it: the file's own blocks, read as they are
 * (so our RSS holds the file's bytes, as llama.cpp's does). */
static int load_blocks(fkd_qmodel *qm, const char *path, int max_seq, fkd_error *err)
{
    fkd_gguf g;
    if (fkd_gguf_open(&g, path, err) != 0) return -1;
    int rc = fkd_gguf_llama_load_qmodel(qm, &g, max_seq, err);
    fkd_gguf_close(&g);
    return rc;
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

/* Warm-up (first touches, thread pools), then the mean rate of reps runs
 * over the model at path: blocks, or fp32 weights for tg_fp32. */
static double time_runs(int what, const char *path, int n, int reps, fkd_error *err)
{
    fkd_infer st = {0};
    fkd_qinfer qs = {0};
    fkd_qmodel qm = {0};
    fkd_params p = {0};
    fkd_tokenizer tok;
    if (what == RUN_TG_FP32 ? fkd_gguf_load_model(&p, &tok, path, n, err) < 0
                            : load_blocks(&qm, path, n, err) < 0)
        return -1;
    if (what == RUN_TG_FP32) fkd_tokenizer_free(&tok);
    if (what == RUN_TG) {
        double rate = bench_qinfer_tg_rate(&qm, n, reps, err);
        fkd_qmodel_free(&qm);
        return rate;
    }
    int vocab = what == RUN_TG_FP32 ? p.cfg.vocab : qm.cfg.vocab;
    int32_t *tokens = malloc((size_t)n * sizeof *tokens);
    float *all = what == RUN_PP_ALL ? malloc((size_t)n * vocab * sizeof *all) : NULL;
    double sum = 0;
    int rc = !tokens || (what == RUN_PP_ALL && !all) ? -1 : 0;
    if (rc != 0) fkd_error_set(err, FKD_E_NOMEM, "out of memory for %d tokens", n);
    if (rc == 0)
        rc = what == RUN_TG_FP32 ? fkd_infer_init(&st, &p, err) : fkd_qinfer_init(&qs, &qm, FKD_QKERNEL_AUTO, err);
    for (int i = 0; rc == 0 && i < n; i++) tokens[i] = bench_token_at(i, vocab);
    for (int r = -1; rc == 0 && r < reps; r++) {
        double rate = run_once(what, &qs, &st, tokens, n, all);
        if (rate < 0) rc = fkd_error_set(err, FKD_E_NOMEM, "the model refused the benchmark's tokens");
        if (r >= 0) sum += rate;
    }
    fkd_qinfer_free(&qs);
    fkd_qmodel_free(&qm);
    fkd_infer_free(&st);
    fkd_params_free(&p);
    free(tokens);
    free(all);
    return rc == 0 ? sum / reps : -1;
}

/* Times one figure with the figure's threads (time_runs loads the model);
 * -1 (err set) on failure. */
static double load_and_time(const teacher_setup *ts, int what, fkd_error *err)
{
    int pp = what == RUN_PP || what == RUN_PP_ALL, n = pp ? ts->pp : ts->tg;
    fkd_train_set_threads(pp ? 2 : 1);
    return time_runs(what, ts->model, n, ts->reps, err);
}

typedef struct {
    const teacher_setup *ts;
    int what;
} measure_arg;

typedef struct {
    double rate;
    char error[sizeof(((fkd_error *)0)->msg)];
} measure_result;

static void measure_child(void *out, const void *arg)
{
    measure_result *r = out;
    const measure_arg *a = arg;
    fkd_error err = {0};
    r->rate = load_and_time(a->ts, a->what, &err);
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
    int what = -1;
    for (int i = 0; i < (int)(sizeof run_names / sizeof run_names[0]); i++)
        if (strcmp(ts->only, run_names[i]) == 0) what = i;
    if (what < 0) {
        fprintf(stderr, "fedkd bench teacher: --only takes pp, pp_all, tg or tg_fp32, not %s\n", ts->only);
        return 2;
    }
    fkd_error err;
    double rate = load_and_time(ts, what, &err);
    if (rate < 0) {
        fprintf(stderr, "fedkd bench teacher: %s\n", err.msg);
        return 1;
    }
    printf("bench=teacher model=%s %s_tokens_per_s=%.1f\n", ts->model, ts->only, rate);
    return 0;
}

int cmd_bench_teacher(int argc, char **argv)
{
    teacher_setup ts = {"models/SmolLM2-135M-Instruct.Q4_1.gguf", NULL, 512, 128, 3};
    const char *peer = NULL;
    fkd_opt opts[] = {
        {"teacher", FKD_OPT_STR, &ts.model, "GGUF model (llama family)"},
        {"pp", FKD_OPT_INT, &ts.pp, "prompt tokens processed in one pass (2 threads)"},
        {"tg", FKD_OPT_INT, &ts.tg, "tokens generated one at a time (1 thread)"},
        {"reps", FKD_OPT_INT, &ts.reps, "timed runs averaged per figure (llama-bench -r)"},
        {"peer-bench", FKD_OPT_STR, &peer, "llama.cpp's llama-bench binary (the peer)"},
        {"only", FKD_OPT_STR, &ts.only, "one figure (pp, pp_all, tg or tg_fp32), in this process: for a profiler"},
    };
    int rc = fkd_cli_parse(argc, argv, opts, (int)(sizeof opts / sizeof opts[0]),
                           "usage: fedkd bench teacher [--teacher FILE.gguf] [--peer-bench PATH]\n"
                           "Times prompt processing and generation of a pretrained teacher;\n"
                           "prints one key=value line, with llama.cpp's figures when given.",
                           NULL, 0, NULL);
    if (rc != 0) return rc > 0 ? 0 : 2;
    if (ts.pp < 1 || ts.tg < 1 || ts.reps < 1) {
        fprintf(stderr, "fedkd bench teacher: --pp, --tg and --reps must be positive\n");
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
    printf("bench=teacher model=%s pp=%d tg=%d reps=%d", ts.model, ts.pp, ts.tg, ts.reps);
    print_pair("pp", &pp, peer_pp);
    print_pair("tg", &tg, peer_tg);
    print_pair("pp_all", &pp_all, peer_pp);
    print_pair("tg_fp32", &tg32, peer_tg);
    if (peer && (peer_pp <= 0 || peer_tg <= 0)) printf(" peer=unavailable");
    printf("\n");
    return pp.ok && pp_all.ok && tg.ok && tg32.ok ? 0 : 1;
}
