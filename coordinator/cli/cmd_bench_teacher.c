/* cmd_bench_teacher.c — `fedkd bench teacher --teacher FILE.gguf`: the
 * pretrained teacher's two speeds, each measured in its own child process
 * (so that each peak RSS is its own):
 *   prompt processing (soft-label throughput): fkd_model_forward over one
 *   window of --pp tokens, 2 threads, weights dequantized to fp32;
 *   generation: --tg tokens one at a time with the KV cache, 1 thread, over
 *   fp32 weights (fkd_infer) and over blocks (fkd_qinfer; the file's formats
 *   re-made from the fp32 weights: Q4_1 matrices, Q8_0 embedding).
 * The peer is llama.cpp's llama-bench on the same file with the same threads
 * (`-p N -n 0 -t 2`, `-p 0 -n N -t 1`), run in the same benchmark when
 * --peer-bench names its binary. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "commands.h"
#include "fkd_compress.h"

typedef struct {
    double tokens_per_s, peak_rss_mb;
    int ok;
} speed;

enum { RUN_PP_FP32, RUN_TG_FP32, RUN_TG_Q };

typedef struct {
    const char *model;
    int pp, tg;
} teacher_setup;

static int32_t token_at(int i) { return (int32_t)(1000 + (i * 7919) % 40000); }

static double time_pp(const fkd_params *p, int n, fkd_error *err)
{
    fkd_model m;
    int32_t *tokens = malloc((size_t)n * sizeof *tokens);
    if (!tokens || fkd_model_init_borrowed(&m, p, 1, n, 0, err) != 0) {
        free(tokens);
        return -1;
    }
    for (int i = 0; i < n; i++) tokens[i] = token_at(i);
    float *logits;
    fkd_model_forward(&m, tokens, &logits);  /* warm-up: first touches, BLIS buffers */
    double t0 = fkd_time_ms();
    fkd_model_forward(&m, tokens, &logits);
    double ms = fkd_time_ms() - t0;
    fkd_model_free(&m);
    free(tokens);
    return n / ms * 1e3;
}

static double time_tg(const fkd_params *p, int n, int quantized, fkd_error *err)
{
    fkd_infer st = {0};
    fkd_qinfer qs = {0};
    fkd_qmodel qm = {0};
    int types[FKD_T_COUNT];
    for (int t = 0; t < FKD_T_COUNT; t++)
        types[t] = p->tensors[t].is_matrix ? FKD_QTYPE_Q4_1 : FKD_QTYPE_F32;
    types[FKD_T_TOK_EMB] = types[FKD_T_HEAD] = FKD_QTYPE_Q8_0;
    int rc = quantized ? fkd_qmodel_quantize_types(&qm, p, types, NULL, err) ||
                             fkd_qinfer_init(&qs, &qm, FKD_QKERNEL_AUTO, err)
                       : fkd_infer_init(&st, p, err);
    double rate = -1;
    if (rc == 0) {
        double t0 = fkd_time_ms();
        for (int i = 0; i < n; i++)
            quantized ? (void)fkd_qinfer_step(&qs, token_at(i)) : (void)fkd_infer_step(&st, token_at(i));
        rate = n / (fkd_time_ms() - t0) * 1e3;
    }
    fkd_qinfer_free(&qs);
    fkd_qmodel_free(&qm);
    fkd_infer_free(&st);
    return rate;
}

/* Runs one measurement in a child; its rate comes back through a pipe and
 * its peak RSS from wait4. */
static void measure(speed *s, const teacher_setup *ts, int what)
{
    memset(s, 0, sizeof *s);
    int fds[2];
    if (pipe(fds) != 0) return;
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        fkd_params p;
        fkd_tokenizer tok;
        fkd_error err;
        double rate = -1;
        int max_seq = what == RUN_PP_FP32 ? ts->pp : ts->tg;
        fkd_train_set_threads(what == RUN_PP_FP32 ? 2 : 1);
        if (fkd_gguf_load_model(&p, &tok, ts->model, max_seq, &err) == 0) {
            rate = what == RUN_PP_FP32 ? time_pp(&p, ts->pp, &err)
                                       : time_tg(&p, ts->tg, what == RUN_TG_Q, &err);
        }
        if (rate < 0) fprintf(stderr, "fedkd bench teacher: %s\n", err.msg);
        if (write(fds[1], &rate, sizeof rate) != sizeof rate) _exit(1);
        _exit(0);
    }
    close(fds[1]);
    double rate = -1;
    ssize_t got = pid > 0 ? read(fds[0], &rate, sizeof rate) : -1;
    close(fds[0]);
    int status;
    struct rusage ru;
    if (pid < 0 || wait4(pid, &status, 0, &ru) < 0 || got != (ssize_t)sizeof rate || rate <= 0)
        return;
    s->tokens_per_s = rate;
    s->peak_rss_mb = (double)ru.ru_maxrss / 1024.0;
    s->ok = 1;
}

/* llama-bench's mean tokens/s for one test (its JSON-lines output). */
static double peer_rate(const char *bench, const char *model, int pp, int tg, int threads)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s -m %s -p %d -n %d -t %d -r 3 -o jsonl 2>/dev/null", bench,
             model, pp, tg, threads);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char line[8192];
    double rate = -1;
    while (fgets(line, sizeof line, p)) {
        const char *at = strstr(line, "\"avg_ts\":");
        if (at) rate = atof(at + 9);
    }
    pclose(p);
    return rate;
}

static void print_pair(const char *name, const speed *s, double peer)
{
    printf(" %s_tokens_per_s=%.1f %s_peak_rss_mb=%.0f", name, s->ok ? s->tokens_per_s : 0.0,
           name, s->ok ? s->peak_rss_mb : 0.0);
    if (peer > 0) printf(" %s_llamacpp_tokens_per_s=%.1f %s_ratio=%.2f", name, peer, name,
                         s->ok ? s->tokens_per_s / peer : 0.0);
}

int cmd_bench_teacher(int argc, char **argv)
{
    teacher_setup ts = {"models/SmolLM2-135M-Instruct.Q4_1.gguf", 512, 128};
    const char *peer = NULL;
    fkd_opt opts[] = {
        {"teacher", FKD_OPT_STR, &ts.model, "GGUF model (llama family)"},
        {"pp", FKD_OPT_INT, &ts.pp, "prompt tokens processed in one pass (2 threads)"},
        {"tg", FKD_OPT_INT, &ts.tg, "tokens generated one at a time (1 thread)"},
        {"peer-bench", FKD_OPT_STR, &peer, "llama.cpp's llama-bench binary (the peer)"},
    };
    int rc = fkd_cli_parse(argc, argv, opts, (int)(sizeof opts / sizeof opts[0]),
                           "usage: fedkd bench teacher [--teacher FILE.gguf] [--peer-bench PATH]\n"
                           "Times prompt processing and generation of a pretrained teacher;\n"
                           "prints one key=value line, with llama.cpp's figures when given.",
                           NULL, 0, NULL);
    if (rc != 0) return rc > 0 ? 0 : 2;
    if (ts.pp < 1 || ts.tg < 1) {
        fprintf(stderr, "fedkd bench teacher: --pp and --tg must be positive\n");
        return 2;
    }
    speed pp, tg, tgq;
    measure(&pp, &ts, RUN_PP_FP32);
    measure(&tg, &ts, RUN_TG_FP32);
    measure(&tgq, &ts, RUN_TG_Q);
    double peer_pp = peer ? peer_rate(peer, ts.model, ts.pp, 0, 2) : -1;
    double peer_tg = peer ? peer_rate(peer, ts.model, 0, ts.tg, 1) : -1;
    printf("bench=teacher model=%s pp=%d tg=%d", ts.model, ts.pp, ts.tg);
    print_pair("pp", &pp, peer_pp);
    print_pair("tg", &tg, peer_tg);
    print_pair("tg_q4_1", &tgq, peer_tg);
    if (peer && (peer_pp <= 0 || peer_tg <= 0)) printf(" peer=unavailable");
    printf("\n");
    return pp.ok && tg.ok && tgq.ok ? 0 : 1;
}
