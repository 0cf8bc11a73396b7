/* agg_internal.h — what the aggregation strategies share (agg.c). Private to
 * coordinator/. */
#ifndef FKD_AGG_INTERNAL_H
#define FKD_AGG_INTERNAL_H

#include "fkd_coordinator.h"

/* out (n) = sum_i w_i delta_i / sum_i w_i, weights <= 0 counted as 1. */
void fkd_agg_weighted_mean(float *out, const fkd_coord_update *ups, int k, size_t n);
/* master (n) += lr * d */
void fkd_agg_step(float *master, const float *d, float lr, size_t n);
/* Server adaptive optimizer on the mean delta (Reddi et al., "Adaptive
 * Federated Optimization"): yogi 0 = FedAdam, 1 = FedYogi. */
void fkd_agg_adaptive(fkd_coord_agg *a, float *master, const float *mean, int yogi);
/* Euclidean norm of x (n), accumulated in double. */
double fkd_agg_norm(const float *x, size_t n);
/* col (k) = column j of the updates, sorted ascending (agg_median.c). */
void fkd_agg_sorted_column(float *col, const fkd_coord_update *ups, int k, size_t j);

/* ---- LoRA / QLoRA rounds (agg_lora.c) ---- */
/* The UPDATE kind (enum fkd_wire_update_kind) a round of client mode collects. */
uint32_t fkd_coord_mode_kind(int mode);
const char *fkd_coord_kind_name(uint32_t kind);
/* 0 when an UPDATE of kind belongs in a round of mode, else -1 (FKD_E_MISMATCH). */
int fkd_coord_kind_check(int mode, uint32_t kind, fkd_error *err);
/* The TASK weights' format: what a qlora8 / qlora4 client keeps as its base. */
int fkd_coord_mode_quant(int mode, int task_quant);
/* mode, lora_rank, lora_alpha into a TASK's hparams (nothing for full). */
void fkd_coord_lora_hparams(fkd_wire_kvmap *h, const fkd_coord_config *cfg);
/* 1 when a client of the round's mode can train within budget_bytes. */
int fkd_coord_lora_fits(const fkd_coord_config *cfg, size_t budget_bytes);
/* *out (malloc'ed; fkd_coord_lora_destroy) from an opened adapter upload:
 * the shape must be model, rank and alpha the round's. */
int fkd_coord_lora_open(fkd_lora **out, const fkd_model_config *model,
                        const fkd_coord_config *cfg, const uint8_t *plain, size_t len,
                        fkd_error *err);
void fkd_coord_lora_destroy(fkd_lora **lora);
/* master += sum_i (w_i / sum w) (alpha/r) B_i A_i, weights <= 0 counted as 1. */
int fkd_coord_lora_merge(fkd_params *master, fkd_lora *const *loras, const double *weights, int k,
                         fkd_error *err);

#endif
