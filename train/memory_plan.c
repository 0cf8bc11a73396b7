/* memory_plan.c — choosing micro-batch size and recomputation so a training
 * step fits a memory budget. Prefers, in order: the largest micro-batch
 * without recomputation, then the largest with it (recomputation costs about
 * one extra forward pass; smaller micro-batches cost GEMM efficiency). */
#include "fkd_train.h"

static size_t fixed_bytes(const fkd_model_config *cfg, int optimizer_kind)
{
    size_t p = fkd_config_param_count(cfg) * sizeof(float);
    size_t moments = optimizer_kind == FKD_OPT_ADAMW ? 2 : 1;
    return p * (2 + moments) + FKD_RUNTIME_OVERHEAD_BYTES;
}

int fkd_memory_plan_make(fkd_memory_plan *plan, const fkd_model_config *cfg, int batch, int seq,
                         int optimizer_kind, size_t budget_bytes, fkd_error *err)
{
    size_t fixed = fixed_bytes(cfg, optimizer_kind);
    for (int recompute = 0; recompute <= 1; recompute++) {
        for (int mb = batch; mb >= 1; mb--) {
            if (batch % mb != 0) continue;
            size_t total = fixed + fkd_model_activation_bytes(cfg, mb, seq, recompute);
            if (budget_bytes == 0 || total <= budget_bytes) {
                *plan = (fkd_memory_plan){.micro_batch = mb, .n_micro = batch / mb,
                                          .recompute = recompute, .estimated_bytes = total};
                return 0;
            }
        }
    }
    size_t smallest = fixed + fkd_model_activation_bytes(cfg, 1, seq, 1);
    return fkd_error_set(err, FKD_E_LIMIT,
                         "a training step needs at least %zu MB (one sequence of %d tokens with "
                         "recomputation); the budget is %zu MB: raise it, shorten the sequence "
                         "or use a smaller model",
                         (smallest >> 20) + 1, seq, budget_bytes >> 20);
}
