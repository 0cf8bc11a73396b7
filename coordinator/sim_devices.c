/* sim_devices.c — the device classes a simulated client is drawn from, and
 * accessibility: whether a device can train the student within its memory
 * budget and the round deadline, and run it (int8) fast enough to be useful.
 *
 * The table is an assumption, written down so it can be argued with:
 * docs/simulation.md gives the reasoning and sources for every range. A
 * figure is drawn log-uniformly inside its range, because device speeds and
 * link bandwidths spread over orders of magnitude, not evenly. */
#include "fkd_sim.h"

#include <math.h>

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

void fkd_sim_access_check(fkd_sim_access *a, const fkd_sim_device *d, const fkd_model_config *cfg,
                          int batch, int seq, const fkd_sim_work *w, double deadline_s,
                          double run_model_bytes)
{
    fkd_memory_plan plan;
    a->fits_train_memory = fkd_memory_plan_make(&plan, cfg, batch, seq, FKD_OPT_ADAMW,
                                                (size_t)d->mem_bytes, NULL) == 0;
    a->recompute = a->fits_train_memory ? plan.recompute : 0;
    a->round_s = fkd_sim_client_seconds(d, w, a->recompute);
    a->can_train = a->fits_train_memory && a->round_s <= deadline_s;
    a->run_bytes = run_bytes(cfg, run_model_bytes);
    a->tokens_per_s = d->flops / fkd_config_flops_per_token(cfg, cfg->max_seq);
    a->can_run = a->run_bytes <= d->mem_bytes && a->tokens_per_s >= FKD_SIM_MIN_TOKENS_PER_S;
}
