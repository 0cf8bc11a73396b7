/* cmd_bench_train.c — `fedkd bench train`: tokens/s, GFLOP/s and peak memory
 * of a full training step (forward, loss, backward, AdamW) of the student-S
 * shape (or any shape: the shape flags are torch_ref.py's), next to the
 * PyTorch peers (shared/bench/torch_ref.py) run on the same shape and threads
 * in the same invocation. --freeze-emb trains with the embedding (and a tied
 * head) frozen, to show what that saves; the peers train everything.
 *
 * Each configuration runs in a child process so that its peak RSS is its
 * own: the parent never starts OpenMP or BLIS threads (forking after that is
 * unsafe), it only forks, waits, and prints. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_child.h"
#include "bench_student.h"
#include "commands.h"
#include "fkd_train.h"

typedef struct {
    fkd_model_config cfg;
    int batch, seq, steps, warmup, threads;
    float mem_budget_mb;
    uint8_t frozen[FKD_T_COUNT];
    int any_frozen;
} bench_setup;

typedef struct {
    double tokens_per_s, cpu_tokens_per_s, gflops, peak_rss_mb;
    int micro_batch, recompute, head_chunk, ok;
    char error[sizeof(((fkd_error *)0)->msg)];
} bench_result;

static void run_steps(bench_result *res, const bench_setup *s)
{
    fkd_error err = {0};
    fkd_memory_plan plan;
    size_t budget = (size_t)(s->mem_budget_mb * 1048576.0);
    const uint8_t *frozen = s->any_frozen ? s->frozen : NULL;
    if (fkd_memory_plan_make_frozen(&plan, &s->cfg, frozen, s->batch, s->seq, FKD_OPT_ADAMW,
                                    budget, &err) != 0) {
        snprintf(res->error, sizeof res->error, "%s", err.msg);
        return;
    }
    fkd_train_set_threads(s->threads);
    fkd_params params;
    fkd_model m;
    fkd_optimizer opt;
    if (fkd_params_init(&params, &s->cfg, &err) != 0) goto fail;
    fkd_params_randomize(&params, 1);
    if (fkd_model_init(&m, &params, plan.micro_batch, s->seq, plan.recompute, &err) != 0) {
        fkd_params_free(&params);
        goto fail;
    }
    m.frozen = frozen;
    fkd_optimizer_config oc = fkd_optimizer_defaults();
    if (fkd_optimizer_init(&opt, &oc, &m.params, &err) != 0) {
        fkd_model_free(&m);
        goto fail;
    }
    opt.frozen = frozen;
    bench_step_rate rate;
    int rc = bench_time_steps(&rate, &m, &opt, m.params.memory, m.grads, &plan, s->batch, s->seq,
                              s->warmup, s->steps, &err);
    res->head_chunk = m.head_chunk;
    fkd_optimizer_free(&opt);
    fkd_model_free(&m);
    if (rc != 0) goto fail;
    res->tokens_per_s = rate.tokens_per_s;
    res->cpu_tokens_per_s = rate.cpu_tokens_per_s;
    res->gflops = res->tokens_per_s * 3.0 * fkd_config_flops_per_token(&s->cfg, s->seq) / 1e9;
    res->micro_batch = plan.micro_batch;
    res->recompute = plan.recompute;
    res->ok = 1;
    return;
fail:
    snprintf(res->error, sizeof res->error, "%s", err.msg);
}

static void run_steps_fn(void *res, const void *s)
{
    run_steps(res, s);
}

/* Runs one configuration in a child; its peak RSS comes from wait4. */
static int run_in_child(bench_result *res, const bench_setup *s)
{
    return bench_run_child(res, sizeof *res, &res->peak_rss_mb, run_steps_fn, s);
}

typedef struct {
    double tokens_per_s, cpu_tokens_per_s, peak_rss_mb;
    char python[256];
    int ok;
} peer_result;

/* Runs the peer script with its clock read twice: the script times its loop
 * with time.perf_counter, which this prologue turns into the process's CPU
 * clock (time.process_time, every thread) while it keeps the wall times; the
 * script then prints CPU-time tokens/s and the prologue the loop's wall
 * seconds. On a shared machine only the CPU-time rates of both sides compare. */
#define PEER_PROLOGUE                                                                      \
    "import sys,time,runpy; w=[]; r=time.perf_counter; "                                   \
    "time.perf_counter=lambda: (w.append(r()), time.process_time())[1]; "                  \
    "s=sys.argv[1]; sys.argv=sys.argv[1:]; runpy.run_path(s, run_name=\"__main__\"); "     \
    "print(\"peer_wall_s=%%.6f\" %% (w[-1]-w[-2]))" /* a printf format: %% */

static void run_peer(peer_result *pr, const char *python, const char *script,
                     const bench_setup *s)
{
    memset(pr, 0, sizeof *pr);
    snprintf(pr->python, sizeof pr->python, "%s", python);
    if (access(script, R_OK) != 0) return;
    const fkd_model_config *c = &s->cfg;
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "OMP_NUM_THREADS=%d %s -c '" PEER_PROLOGUE "' %s --threads %d --vocab %d --dim %d "
             "--layers %d --heads %d --kv-heads %d --ffn %d %s --rope-theta %g --batch %d "
             "--seq %d --steps %d 2>/dev/null",
             s->threads, python, script, s->threads, c->vocab, c->dim, c->n_layers, c->n_heads,
             c->n_kv_heads, c->ffn_hidden, c->tie_embeddings ? "--tie" : "", c->rope_theta,
             s->batch, s->seq, s->steps);
    FILE *p = popen(cmd, "r");
    if (!p) return;
    char line[1024];
    double wall_s = 0;
    while (fgets(line, sizeof line, p)) {
        const char *tps = strstr(line, "tokens_per_s="), *rss = strstr(line, "peak_rss_mb=");
        if (tps && rss) {
            pr->cpu_tokens_per_s = atof(tps + 13);
            pr->peak_rss_mb = atof(rss + 12);
        }
        if (strncmp(line, "peer_wall_s=", 12) == 0) wall_s = atof(line + 12);
    }
    pclose(p);
    if (pr->cpu_tokens_per_s > 0 && wall_s > 0) {
        pr->tokens_per_s = (double)s->batch * s->seq * s->steps / wall_s;
        pr->ok = 1;
    }
}

/* Runs every peer interpreter of the comma list, prints each, and keeps the
 * fastest: that is the one to beat. */
static void run_peers(peer_result *best, const char *pythons, const char *script,
                      const bench_setup *s)
{
    memset(best, 0, sizeof *best);
    char list[1024];
    snprintf(list, sizeof list, "%s", pythons);
    char *save = NULL;
    for (char *py = strtok_r(list, ",", &save); py; py = strtok_r(NULL, ",", &save)) {
        peer_result pr;
        run_peer(&pr, py, script, s);
        if (!pr.ok) {
            printf("run=peer threads=%d python=%s error=\"no result (is PyTorch installed for it?)\"\n",
                   s->threads, py);
            continue;
        }
        printf("run=peer threads=%d python=%s tokens_per_s=%.0f cpu_tokens_per_s=%.0f "
               "peak_rss_mb=%.0f\n",
               s->threads, py, pr.tokens_per_s, pr.cpu_tokens_per_s, pr.peak_rss_mb);
        /* the faster by CPU time: wall time on a shared machine measures the load */
        if (!best->ok || pr.cpu_tokens_per_s > best->cpu_tokens_per_s) *best = pr;
    }
    fflush(stdout);
}

static void print_result(const char *label, const bench_setup *s, const bench_result *r,
                         const peer_result *peer, double ref_tokens_per_s)
{
    if (!r->ok) {
        printf("run=%s threads=%d error=\"%s\"\n", label, s->threads, r->error);
        return;
    }
    printf("run=%s threads=%d batch=%d seq=%d micro_batch=%d recompute=%d head_chunk=%d "
           "tokens_per_s=%.0f cpu_tokens_per_s=%.0f gflops=%.1f peak_rss_mb=%.0f",
           label, s->threads, s->batch, s->seq, r->micro_batch, r->recompute, r->head_chunk,
           r->tokens_per_s, r->cpu_tokens_per_s, r->gflops, r->peak_rss_mb);
    if (s->any_frozen) printf(" frozen=tok_emb");
    if (s->mem_budget_mb > 0) printf(" mem_budget_mb=%.0f", s->mem_budget_mb);
    if (ref_tokens_per_s > 0) printf(" speed_vs_unconstrained=%.2f", r->tokens_per_s / ref_tokens_per_s);
    if (peer && peer->ok)
        printf(" peer_python=%s peer_tokens_per_s=%.0f peer_cpu_tokens_per_s=%.0f "
               "peer_peak_rss_mb=%.0f speed_ratio=%.2f cpu_speed_ratio=%.2f rss_ratio=%.2f",
               peer->python, peer->tokens_per_s, peer->cpu_tokens_per_s, peer->peak_rss_mb,
               r->tokens_per_s / peer->tokens_per_s,
               r->cpu_tokens_per_s / peer->cpu_tokens_per_s, r->peak_rss_mb / peer->peak_rss_mb);
    else if (peer)
        printf(" peer=unavailable");
    printf("\n");
    fflush(stdout);
}

int cmd_bench_train(int argc, char **argv)
{
    bench_setup s = {.cfg = fkd_config_student_s(), .batch = 16, .seq = 128, .steps = 20,
                     .warmup = 3, .threads = 0, .mem_budget_mb = 100};
    int tie = 0, no_peer = 0, freeze_emb = 0;
    s.cfg.n_kv_heads = 0; /* as torch_ref.py: 0 = as many as --heads */
    const char *python = "/usr/bin/python3", *script = "../shared/bench/torch_ref.py";
    fkd_opt opts[] = {
        {"threads", FKD_OPT_INT, &s.threads, "threads (0: run 1 and then 2)"},
        {"steps", FKD_OPT_INT, &s.steps, "timed steps"},
        {"batch", FKD_OPT_INT, &s.batch, "sequences per step"},
        {"seq", FKD_OPT_INT, &s.seq, "tokens per sequence"},
        {"vocab", FKD_OPT_INT, &s.cfg.vocab, "vocabulary size"},
        {"dim", FKD_OPT_INT, &s.cfg.dim, "model width"},
        {"layers", FKD_OPT_INT, &s.cfg.n_layers, "transformer blocks"},
        {"heads", FKD_OPT_INT, &s.cfg.n_heads, "query heads"},
        {"kv-heads", FKD_OPT_INT, &s.cfg.n_kv_heads, "key/value heads (0: as many as --heads)"},
        {"ffn", FKD_OPT_INT, &s.cfg.ffn_hidden, "SwiGLU hidden width"},
        {"rope-theta", FKD_OPT_FLOAT, &s.cfg.rope_theta, "RoPE base"},
        {"tie", FKD_OPT_FLAG, &tie, "tie the head to the embedding"},
        {"freeze-emb", FKD_OPT_FLAG, &freeze_emb,
         "freeze the embedding (and a tied head): no gradient, no moments"},
        {"mem-budget-mb", FKD_OPT_FLOAT, &s.mem_budget_mb,
         "also run within this memory budget (0: skip)"},
        {"peer-python", FKD_OPT_STR, &python,
         "comma list of Pythons that run the PyTorch peer; the fastest is compared"},
        {"peer-script", FKD_OPT_STR, &script, "path of shared/bench/torch_ref.py"},
        {"no-peer", FKD_OPT_FLAG, &no_peer, "do not run the PyTorch peer"},
    };
    int rc = fkd_cli_parse(argc, argv, opts, (int)(sizeof opts / sizeof opts[0]),
                           "usage: fedkd bench train [options]\n"
                           "Times full training steps (forward, backward, AdamW) on random tokens;\n"
                           "prints one key=value line per run, with the PyTorch peer's figures.",
                           NULL, 0, NULL);
    if (rc != 0) return rc > 0 ? 0 : 2;
    s.cfg.tie_embeddings = tie;
    if (s.cfg.n_kv_heads == 0) s.cfg.n_kv_heads = s.cfg.n_heads;
    s.any_frozen = freeze_emb;
    s.frozen[FKD_T_TOK_EMB] = (uint8_t)freeze_emb;
    s.cfg.max_seq = s.seq;
    fkd_error err;
    if (fkd_config_validate(&s.cfg, &err) != 0 || s.batch < 1 || s.steps < 1) {
        fprintf(stderr, "fedkd bench train: %s\n", s.batch < 1 || s.steps < 1
                                                       ? "batch and steps must be positive"
                                                       : err.msg);
        return 2;
    }
    if (!no_peer && access(script, R_OK) != 0)
        fprintf(stderr, "note: peer script %s not found (pass --peer-script PATH)\n", script);
    printf("bench=train params=%zu flops_per_token=%.0f\n", fkd_config_param_count(&s.cfg),
           3.0 * fkd_config_flops_per_token(&s.cfg, s.seq));
    int first = s.threads > 0 ? s.threads : 1, last = s.threads > 0 ? s.threads : 2;
    for (int t = first; t <= last; t++) {
        bench_setup run = s;
        run.threads = t;
        run.mem_budget_mb = 0;
        bench_result mine, budget;
        peer_result peer;
        if (run_in_child(&mine, &run) != 0) {
            fprintf(stderr, "fedkd bench train: the benchmark process failed\n");
            return 1;
        }
        if (!no_peer) run_peers(&peer, python, script, &run);
        print_result("fedkd", &run, &mine, no_peer ? NULL : &peer, 0);
        if (s.mem_budget_mb > 0) {
            run.mem_budget_mb = s.mem_budget_mb;
            if (run_in_child(&budget, &run) != 0) return 1;
            print_result("fedkd_budget", &run, &budget, no_peer ? NULL : &peer, mine.tokens_per_s);
        }
    }
    return 0;
}
