/* agg_lora.c — rounds of LoRA / QLoRA clients: what the TASK says, how an
 * adapter upload is opened, and how the round's adapters reach the master.
 *
 * FedAvg of adapters is done on their products: each client's (alpha/r)·B·A
 * is added to the fp32 master with weight n_i / Σn (fkd_lora_merge_weighted).
 * Averaging A and B separately would not average the updates, and the next
 * round's clients start fresh adapters over the re-quantized master, so no
 * adapter state lives here between rounds. The master is the only state,
 * which is why a checkpoint needs nothing more for these rounds. */
#include "agg_internal.h"

#include <stdlib.h>
#include <string.h>

uint32_t fkd_coord_mode_kind(int mode)
{
    return mode == FKD_WIRE_MODE_FULL ? FKD_WIRE_UPDATE_DELTA : FKD_WIRE_UPDATE_LORA;
}

int fkd_coord_mode_quant(int mode, int task_quant)
{
    if (mode == FKD_WIRE_MODE_QLORA8) return FKD_QTYPE_Q8_0;
    if (mode == FKD_WIRE_MODE_QLORA4) return FKD_QTYPE_Q4_1;
    return task_quant;
}

const char *fkd_coord_kind_name(uint32_t kind)
{
    return kind == FKD_WIRE_UPDATE_DELTA ? "delta" : kind == FKD_WIRE_UPDATE_LORA ? "lora" : "?";
}

int fkd_coord_kind_check(int mode, uint32_t kind, fkd_error *err)
{
    uint32_t want = fkd_coord_mode_kind(mode);
    if (kind == want) return 0;
    return fkd_error_set(err, FKD_E_MISMATCH, "this round collects %s updates, not %s (kind %u): "
                         "one round never mixes kinds (train with the TASK's mode)",
                         fkd_coord_kind_name(want), fkd_coord_kind_name(kind), kind);
}

void fkd_coord_lora_hparams(fkd_wire_kvmap *h, const fkd_coord_config *cfg)
{
    if (cfg->client_mode == FKD_WIRE_MODE_FULL) return; /* absent = full: older clients agree */
    fkd_wire_kv_set(h, "mode", cfg->client_mode, NULL);
    fkd_wire_kv_set(h, "lora_rank", cfg->lora_rank, NULL);
    fkd_wire_kv_set(h, "lora_alpha", cfg->lora_alpha, NULL);
}

static fkd_lora_config round_lora(const fkd_coord_config *cfg)
{
    fkd_lora_config lc = fkd_lora_defaults();
    lc.rank = cfg->lora_rank;
    lc.alpha = cfg->lora_alpha;
    return lc;
}

int fkd_coord_lora_fits(const fkd_coord_config *cfg, size_t budget_bytes)
{
    fkd_lora_config lc = round_lora(cfg);
    int quant = cfg->client_mode != FKD_WIRE_MODE_LORA;
    size_t base = quant ? fkd_qlora_base_bytes(&cfg->model, fkd_coord_mode_quant(
                                                   cfg->client_mode, cfg->task_quant))
                        : fkd_config_param_count(&cfg->model) * sizeof(float);
    fkd_memory_plan plan;
    return fkd_memory_plan_make_lora(&plan, &cfg->model, &lc, base, quant, cfg->batch, cfg->seq,
                                     budget_bytes, NULL) == 0;
}

int fkd_coord_lora_open(fkd_lora **out, const fkd_model_config *model,
                        const fkd_coord_config *cfg, const uint8_t *plain, size_t len,
                        fkd_error *err)
{
    *out = calloc(1, sizeof **out);
    if (!*out) return fkd_error_set(err, FKD_E_NOMEM, "no memory for an adapter update");
    fkd_lora_config lc = round_lora(cfg);
    int rc = fkd_lora_decode(*out, model, plain, len, err);
    if (rc == 0 && ((*out)->cfg.rank != lc.rank || (*out)->cfg.alpha != lc.alpha ||
                    memcmp((*out)->cfg.targets, lc.targets, sizeof lc.targets) != 0))
        rc = fkd_error_set(err, FKD_E_MISMATCH, "adapters of rank %d alpha %g, the round's are "
                           "rank %d alpha %g on every block matrix: train with the TASK's "
                           "lora_rank and lora_alpha", (*out)->cfg.rank, (double)(*out)->cfg.alpha,
                           lc.rank, (double)lc.alpha);
    if (rc != 0) fkd_coord_lora_destroy(out);
    return rc;
}

void fkd_coord_lora_destroy(fkd_lora **lora)
{
    if (!*lora) return;
    fkd_lora_free(*lora);
    free(*lora);
    *lora = NULL;
}

int fkd_coord_lora_merge(fkd_params *master, fkd_lora *const *loras, const double *weights, int k,
                         fkd_error *err)
{
    double total = 0;
    for (int i = 0; i < k; i++) total += weights[i] > 0 ? weights[i] : 1;
    for (int i = 0; i < k; i++) {
        double w = (weights[i] > 0 ? weights[i] : 1) / total;
        if (fkd_lora_merge_weighted(master, loras[i], (float)w, err) != 0) return -1;
    }
    return 0;
}
