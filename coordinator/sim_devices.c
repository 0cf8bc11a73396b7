/* sim_devices.c — the device classes a simulated client is drawn from, and
 * accessibility: whether a device can train the student within its memory
 * budget and the round deadline, and run it (int8) fast enough to be useful.
 * What training needs depends on the client mode: full fine-tuning holds
 * every weight with its gradient and moments; LoRA holds a frozen base (fp32,
 * or q8_0 / q4_0 blocks as in QLoRA) and trains small adapters.
 *
 * The table is an assumption, written down so it can be argued with:
 * docs/simulation.md gives the reasoning and sources for every range. A
 * figure is drawn log-uniformly inside its range, because device speeds and
 * link bandwidths spread over orders of magnitude, not evenly. */
#include "fkd_sim.h"
#include "agg_internal.h"

#include <math.h>
#include <string.h>

const fkd_sim_class_info fkd_sim_classes[FKD_SIM_CLASS_COUNT] = {
    [FKD_SIM_PHONE_LOW] = {.key = "phone-low", .name = "low-end phone", .share = 0.40,
                           .gflops = {1.0, 4.0}, .mem_mb = {48, 256},
                           .up_mbps = {0.5, 5}, .down_mbps = {2, 20}, .rtt_ms = 80,
                           .dropout = 0.20},
    [FKD_SIM_PHONE_HIGH] = {.key = "phone-high", .name = "high-end phone", .share = 0.35,
                            .gflops = {8.0, 30.0}, .mem_mb = {256, 1536},
                            .up_mbps = {5, 50}, .down_mbps = {20, 200}, .rtt_ms = 40,
                            .dropout = 0.10},
    [FKD_SIM_SBC] = {.key = "sbc", .name = "single-board computer", .share = 0.15,
                     .gflops = {3.0, 12.0}, .mem_mb = {192, 2048},
                     .up_mbps = {10, 100}, .down_mbps = {10, 100}, .rtt_ms = 30,
                     .dropout = 0.05},
    [FKD_SIM_EDGE] = {.key = "edge", .name = "edge server", .share = 0.10,
                      .gflops = {50.0, 400.0}, .mem_mb = {4096, 32768},
                      .up_mbps = {100, 1000}, .down_mbps = {100, 1000}, .rtt_ms = 10,
                      .dropout = 0.01},
};

static double log_uniform(fkd_rng *rng, const double range[2])
{
    double u = fkd_rng_uniform(rng);
    return exp(log(range[0]) + u * (log(range[1]) - log(range[0])));
}

static int draw_class(fkd_rng *rng)
{
    double u = fkd_rng_uniform(rng), acc = 0;
    for (int c = 0; c < FKD_SIM_CLASS_COUNT; c++) {
        acc += fkd_sim_classes[c].share;
        if (u < acc) return c;
    }
    return FKD_SIM_CLASS_COUNT - 1;
}

void fkd_sim_device_draw(fkd_sim_device *d, fkd_rng *rng)
{
    int c = draw_class(rng);
    const fkd_sim_class_info *k = &fkd_sim_classes[c];
    d->cls = c;
    d->flops = log_uniform(rng, k->gflops) * 1e9;
    d->mem_bytes = log_uniform(rng, k->mem_mb) * 1048576.0;
    d->up_Bps = log_uniform(rng, k->up_mbps) * 1e6 / 8;
    d->down_Bps = log_uniform(rng, k->down_mbps) * 1e6 / 8;
    d->rtt_s = k->rtt_ms / 1e3;
    d->dropout = k->dropout;
}

/* Inference memory: the int8 weights, the KV cache at max_seq, the float
 * activations of one token, and the runtime itself. */
static double run_bytes(const fkd_model_config *cfg, double model_bytes)
{
    double hd = (double)cfg->dim / cfg->n_heads;
    double kv = 2.0 * cfg->n_layers * cfg->max_seq * cfg->n_kv_heads * hd * sizeof(float);
    double acts = (4.0 * cfg->dim + 2.0 * cfg->ffn_hidden + cfg->vocab +
                   (double)cfg->n_heads * cfg->max_seq) * sizeof(float);
    return model_bytes + kv + acts + (double)FKD_RUNTIME_OVERHEAD_BYTES;
}

/* ---- client modes: what a client holds while it trains ---------------------------------------- */
static const char *const mode_names[FKD_SIM_CLIENT_MODE_COUNT] = {"full", "lora", "qlora8",
                                                                  "qlora4"};

const char *fkd_sim_client_mode_name(int mode)
{
    return mode >= 0 && mode < FKD_SIM_CLIENT_MODE_COUNT ? mode_names[mode] : "?";
}

int fkd_sim_client_mode_parse(const char *name)
{
    for (int i = 0; i < FKD_SIM_CLIENT_MODE_COUNT; i++)
        if (strcmp(name, mode_names[i]) == 0) return i;
    return -1;
}

/* The simulation hands its mode to the coordinator as is. */
_Static_assert((int)FKD_SIM_CLIENT_FULL == (int)FKD_WIRE_MODE_FULL &&
                   (int)FKD_SIM_CLIENT_LORA == (int)FKD_WIRE_MODE_LORA &&
                   (int)FKD_SIM_CLIENT_QLORA8 == (int)FKD_WIRE_MODE_QLORA8 &&
                   (int)FKD_SIM_CLIENT_QLORA4 == (int)FKD_WIRE_MODE_QLORA4,
               "fkd_sim_client_mode must equal fkd_wire_client_mode");

/* What the frozen base takes: fp32 weights, or (QLoRA) the quantized
 * model the coordinator sends in that mode and fp32 norm gains, read one
 * matrix at a time through a source. */
static size_t base_bytes(const fkd_model_config *c, int mode)
{
    if (mode == FKD_SIM_CLIENT_FULL || mode == FKD_SIM_CLIENT_LORA)
        return fkd_config_param_count(c) * sizeof(float);
    return fkd_qlora_base_bytes(c, fkd_coord_mode_quant(mode, FKD_QTYPE_Q8_0));
}

int fkd_sim_train_plan(fkd_memory_plan *plan, const fkd_model_config *cfg, int mode, int rank,
                       int batch, int seq, size_t budget_bytes, fkd_error *err)
{
    if (mode == FKD_SIM_CLIENT_FULL)
        return fkd_memory_plan_make(plan, cfg, batch, seq, FKD_OPT_ADAMW, budget_bytes, err);
    fkd_lora_config lc = fkd_lora_defaults();
    lc.rank = rank;
    return fkd_memory_plan_make_lora(plan, cfg, &lc, base_bytes(cfg, mode),
                                     mode != FKD_SIM_CLIENT_LORA, batch, seq, budget_bytes, err);
}

size_t fkd_sim_train_min_bytes(const fkd_model_config *cfg, int mode, int rank, int seq)
{
    fkd_memory_plan plan;
    if (fkd_sim_train_plan(&plan, cfg, mode, rank, 1, seq, 0, NULL) != 0) return 0;
    /* Bisect the budget: the plans' sizes are what the planner computes. */
    size_t lo = 0, hi = plan.estimated_bytes;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (fkd_sim_train_plan(&plan, cfg, mode, rank, 1, seq, mid, NULL) == 0) hi = mid;
        else lo = mid;
    }
    return hi;
}

void fkd_sim_access_check(fkd_sim_access *a, const fkd_sim_device *d, const fkd_model_config *cfg,
                          int mode, int rank, int batch, int seq, const fkd_sim_work *w,
                          double deadline_s, double run_model_bytes)
{
    fkd_memory_plan plan;
    a->fits_train_memory = fkd_sim_train_plan(&plan, cfg, mode, rank, batch, seq,
                                              (size_t)d->mem_bytes, NULL) == 0;
    a->recompute = a->fits_train_memory ? plan.recompute : 0;
    a->train_bytes = a->fits_train_memory ? (double)plan.estimated_bytes : 0;
    a->round_s = fkd_sim_client_seconds(d, w, a->recompute);
    a->can_train = a->fits_train_memory && a->round_s <= deadline_s;
    a->run_bytes = run_bytes(cfg, run_model_bytes);
    a->tokens_per_s = d->flops / fkd_config_flops_per_token(cfg, cfg->max_seq);
    a->can_run = a->run_bytes <= d->mem_bytes && a->tokens_per_s >= FKD_SIM_MIN_TOKENS_PER_S;
}
