/* cmd_bench_lora.c — `fedkd bench lora`: what each client mode needs to
 * train the pruned SmolLM2 student (49.5 M parameters; --vocab for a
 * trimmed vocabulary) on a batch: full fine-tuning, LoRA over an fp32 base,
 * and QLoRA over an int8 (Q8_0) or int4 (Q4_1) base. Per mode: the memory
 * plan for the budget, tokens/s, and the peak RSS of the training steps,
 * measured in a child process after the base it would receive is in memory
 * (so the fp32 weights a QLoRA child quantizes from do not count). The peer
 * figure is full fine-tuning, run in the same invocation: speeds and memory
 * are printed as ratios to it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_child.h"
#include "bench_student.h"
#include "commands.h"
#include "fkd_compress.h"

enum { MODE_FULL, MODE_LORA, MODE_Q8, MODE_Q4, MODE_COUNT };
static const char *const mode_names[MODE_COUNT] = {"full", "lora", "qlora_q8_0", "qlora_q4_1"};

typedef struct {
    fkd_model_config cfg;
    fkd_lora_config lora;
    int mode, batch, seq, steps, warmup, threads;
    float budget_mb;
} lora_setup;

typedef struct {
    int ok, micro_batch, recompute;
    double tokens_per_s, cpu_tokens_per_s, peak_mb, estimated_mb, base_mb, loss_first, loss_last;
    char error[sizeof(((fkd_error *)0)->msg)];
} lora_result;

/* Bytes of the base the mode holds, as the planner counts them. */
static size_t base_bytes(const lora_setup *s)
{
    if (s->mode == MODE_Q8) return fkd_qlora_base_bytes(&s->cfg, FKD_QTYPE_Q8_0);
    if (s->mode == MODE_Q4) return fkd_qlora_base_bytes(&s->cfg, FKD_QTYPE_Q4_1);
    return fkd_config_param_count(&s->cfg) * sizeof(float);
}

static int plan_mode(fkd_memory_plan *plan, const lora_setup *s, fkd_error *err)
{
    size_t budget = (size_t)(s->budget_mb * 1048576.0);
    if (s->mode == MODE_FULL)
        return fkd_memory_plan_make(plan, &s->cfg, s->batch, s->seq, FKD_OPT_ADAMW, budget, err);
    return fkd_memory_plan_make_lora(plan, &s->cfg, &s->lora, base_bytes(s),
                                     s->mode == MODE_Q8 || s->mode == MODE_Q4, s->batch, s->seq,
                                     budget, err);
}

/* The model of the mode, with its optimizer; the base is what the client
 * would receive (fp32 params, or a quantized model in qm). */
static int build(fkd_model *m, fkd_optimizer *opt, fkd_lora *lora, fkd_qmodel *qm,
                 fkd_weight_source *src, const lora_setup *s, const fkd_memory_plan *plan,
                 fkd_error *err)
{
    fkd_params params;
    if (fkd_params_init(&params, &s->cfg, err) != 0) return -1;
    fkd_params_randomize(&params, 1);
    fkd_optimizer_config oc = fkd_optimizer_defaults();
    if (s->mode == MODE_FULL) {
        if (fkd_model_init(m, &params, plan->micro_batch, s->seq, plan->recompute, err) != 0) {
            fkd_params_free(&params);
            return -1;
        }
        return fkd_optimizer_init(opt, &oc, &m->params, err);
    }
    int quantized = s->mode == MODE_Q8 || s->mode == MODE_Q4;
    if (quantized) {
        int type = s->mode == MODE_Q8 ? FKD_QTYPE_Q8_0 : FKD_QTYPE_Q4_1;
        int rc = fkd_qmodel_quantize(qm, &params, type, NULL, err);
        fkd_params_free(&params);
        if (rc != 0) return -1;
    }
    bench_peak_reset(); /* what the client holds from here on */
    int rc = fkd_lora_init(lora, &s->cfg, &s->lora, 2, err);
    if (rc == 0)
        rc = quantized ? fkd_qlora_model_init(m, src, qm, lora, plan->micro_batch, s->seq,
                                              plan->recompute, err)
                       : fkd_model_init_lora(m, &params, NULL, lora, plan->micro_batch, s->seq,
                                             plan->recompute, err);
    if (rc != 0) {
        fkd_params_free(&params);
        return -1;
    }
    return fkd_lora_optimizer_init(opt, &oc, lora, err);
}

static void run_mode(void *out, const void *arg)
{
    lora_result *res = out;
    const lora_setup *s = arg;
    fkd_error err = {0};
    fkd_memory_plan plan;
    fkd_model m = {0};
    fkd_optimizer opt = {0};
    fkd_lora lora = {0};
    fkd_qmodel qm = {0};
    fkd_weight_source src;
    fkd_train_set_threads(s->threads);
    if (plan_mode(&plan, s, &err) != 0 || build(&m, &opt, &lora, &qm, &src, s, &plan, &err) != 0) {
        snprintf(res->error, sizeof res->error, "%s", err.msg);
        return;
    }
    bench_step_rate rate;
    float *params = s->mode == MODE_FULL ? m.params.memory : lora.params;
    float *grads = s->mode == MODE_FULL ? m.grads : lora.grads;
    if (bench_time_steps(&rate, &m, &opt, params, grads, &plan, s->batch, s->seq, s->warmup,
                         s->steps, &err) == 0) {
        res->tokens_per_s = rate.tokens_per_s;
        res->cpu_tokens_per_s = rate.cpu_tokens_per_s;
        res->loss_first = rate.loss_first;
        res->loss_last = rate.loss_last;
        res->ok = 1;
    } else {
        snprintf(res->error, sizeof res->error, "%s", err.msg);
    }
    res->peak_mb = bench_peak_mb();
    res->estimated_mb = plan.estimated_bytes / 1048576.0;
    res->base_mb = base_bytes(s) / 1048576.0;
    res->micro_batch = plan.micro_batch;
    res->recompute = plan.recompute;
    fkd_optimizer_free(&opt);
    fkd_model_free(&m);
    fkd_lora_free(&lora);
    fkd_qmodel_free(&qm);
}

static void print_mode(const lora_setup *s, const lora_result *r, const lora_result *full)
{
    if (!r->ok) {
        printf("run=%s budget_mb=%.0f error=\"%s\"\n", mode_names[s->mode], s->budget_mb, r->error);
        return;
    }
    printf("run=%s threads=%d batch=%d seq=%d rank=%d budget_mb=%.0f micro_batch=%d "
           "recompute=%d base_mb=%.1f estimated_mb=%.1f peak_rss_mb=%.1f tokens_per_s=%.0f "
           "cpu_tokens_per_s=%.0f loss_first=%.3f loss_last=%.3f",
           mode_names[s->mode], s->threads, s->batch, s->seq, s->lora.rank, s->budget_mb,
           r->micro_batch, r->recompute, r->base_mb, r->estimated_mb, r->peak_mb,
           r->tokens_per_s, r->cpu_tokens_per_s, r->loss_first, r->loss_last);
    if (full && full->ok)
        printf(" peer=full full_tokens_per_s=%.0f full_cpu_tokens_per_s=%.0f "
               "full_peak_rss_mb=%.1f speed_ratio=%.2f cpu_speed_ratio=%.2f rss_ratio=%.3f",
               full->tokens_per_s, full->cpu_tokens_per_s, full->peak_mb,
               r->tokens_per_s / full->tokens_per_s, r->cpu_tokens_per_s / full->cpu_tokens_per_s,
               r->peak_mb / full->peak_mb);
    printf("\n");
    fflush(stdout);
}

int cmd_bench_lora(int argc, char **argv)
{
    lora_setup s = {.cfg = {.vocab = 49152, .dim = 576, .n_layers = 6, .n_heads = 9,
                            .n_kv_heads = 3, .ffn_hidden = 1536, .max_seq = 256,
                            .tie_embeddings = 1, .rope_theta = 100000.0f, .norm_eps = 1e-5f},
                    .lora = fkd_lora_defaults(), .batch = 4, .seq = 256, .steps = 2,
                    .warmup = 1, .threads = 1};
    const char *targets = "all";
    fkd_opt opts[] = {
        {"rank", FKD_OPT_INT, &s.lora.rank, "adapter rank r"},
        {"alpha", FKD_OPT_FLOAT, &s.lora.alpha, "adapter scale numerator (the term is alpha/r)"},
        {"targets", FKD_OPT_STR, &targets, "adapted matrices: wq,wk,wv,wo,w1,w3,w2 or all"},
        {"batch", FKD_OPT_INT, &s.batch, "sequences per optimizer step"},
        {"seq", FKD_OPT_INT, &s.seq, "tokens per sequence"},
        {"vocab", FKD_OPT_INT, &s.cfg.vocab, "vocabulary of the student (49152, or trimmed)"},
        {"steps", FKD_OPT_INT, &s.steps, "timed steps"},
        {"threads", FKD_OPT_INT, &s.threads, "threads"},
        {"budget-mb", FKD_OPT_FLOAT, &s.budget_mb,
         "plan micro-batches and recomputation for this budget (0: none)"},
    };
    int rc = fkd_cli_parse(argc, argv, opts, (int)(sizeof opts / sizeof opts[0]),
                           "usage: fedkd bench lora [options]\n"
                           "Trains the 49.5M student a few steps in each client mode (full, LoRA,\n"
                           "QLoRA int8, QLoRA int4); one key=value line per mode, with full\n"
                           "fine-tuning's figures from the same run as the peer.",
                           NULL, 0, NULL);
    if (rc != 0) return rc > 0 ? 0 : 2;
    fkd_error err;
    s.cfg.max_seq = s.seq;
    if (fkd_lora_parse_targets(s.lora.targets, targets, &err) != 0 ||
        fkd_config_validate(&s.cfg, &err) != 0) {
        fprintf(stderr, "fedkd bench lora: %s\n", err.msg);
        return 2;
    }
    if (s.batch < 1 || s.steps < 1 || s.threads < 1) {
        fprintf(stderr, "fedkd bench lora: batch, steps and threads must be positive\n");
        return 2;
    }
    printf("bench=lora params=%zu adapter_floats=%zu\n", fkd_config_param_count(&s.cfg),
           fkd_lora_param_count(&s.cfg, &s.lora));
    lora_result results[MODE_COUNT];
    for (int mode = 0; mode < MODE_COUNT; mode++) {
        lora_setup run = s;
        run.mode = mode;
        if (bench_run_child(&results[mode], sizeof results[mode], NULL, run_mode, &run) != 0) {
            fprintf(stderr, "fedkd bench lora: the %s process failed\n", mode_names[mode]);
            return 1;
        }
        print_mode(&run, &results[mode], mode == MODE_FULL ? NULL : &results[MODE_FULL]);
    }
    return 0;
}
