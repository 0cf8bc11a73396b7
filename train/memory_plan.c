/* memory_plan.c — choosing micro-batch size and recomputation so a training
 * step fits a memory budget. Prefers, in order: the largest micro-batch
 * without recomputation, then the largest with it (recomputation costs about
 * one extra forward pass; smaller micro-batches cost GEMM efficiency).
 *
 * What a step holds: every parameter in fp32; a gradient and the optimizer's
 * moments for each tensor that trains; activations (fkd_model_activation_bytes,
 * whose head counts one chunk of logits, not the whole batch's); a fixed
 * runtime overhead. A frozen tensor costs only its parameters: the gradient
 * and moment arenas keep the parameters' layout, so their frozen slices exist
 * as address space, but nothing reads or writes them (fkd_model_zero_grad,
 * backward and fkd_optimizer_step skip frozen tensors) and the OS never backs
 * them with memory. A tied head is the embedding: freezing tok_emb freezes it. */
#include "fkd_train.h"

static size_t trainable_floats(const fkd_model_config *cfg, const uint8_t *frozen)
{
    fkd_tensor_info t[FKD_T_COUNT];
    size_t total = fkd_param_layout(t, cfg), frozen_floats = 0;
    for (int i = 0; frozen && i < FKD_T_COUNT; i++)
        if (frozen[i]) frozen_floats += t[i].count;
    return total - frozen_floats;
}

static size_t fixed_bytes(const fkd_model_config *cfg, const uint8_t *frozen, int optimizer_kind)
{
    size_t p = fkd_config_param_count(cfg) * sizeof(float);
    size_t trained = trainable_floats(cfg, frozen) * sizeof(float);
    size_t moments = optimizer_kind == FKD_OPT_ADAMW ? 2 : 1;
    return p + trained * (1 + moments) + FKD_RUNTIME_OVERHEAD_BYTES;
}

/* The plan for a step whose memory besides activations is `fixed`. */
static int plan_with_fixed(fkd_memory_plan *plan, const fkd_model_config *cfg, size_t fixed,
                           int batch, int seq, size_t budget_bytes, fkd_error *err)
{
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
                         "recomputation); the budget is %zu MB: raise it, shorten the sequence, "
                         "freeze tensors or use a smaller model",
                         (smallest >> 20) + 1, seq, budget_bytes >> 20);
}

int fkd_memory_plan_make_frozen(fkd_memory_plan *plan, const fkd_model_config *cfg,
                                const uint8_t *frozen, int batch, int seq, int optimizer_kind,
                                size_t budget_bytes, fkd_error *err)
{
    return plan_with_fixed(plan, cfg, fixed_bytes(cfg, frozen, optimizer_kind), batch, seq,
                           budget_bytes, err);
}

int fkd_memory_plan_make_lora(fkd_memory_plan *plan, const fkd_model_config *cfg,
                              const fkd_lora_config *lora, size_t base_bytes, int with_source,
                              int batch, int seq, size_t budget_bytes, fkd_error *err)
{
    /* the adapters' scratch is counted for the whole batch: a few KB more */
    size_t fixed = base_bytes + fkd_lora_train_bytes(cfg, lora, batch, seq, with_source) +
                   FKD_RUNTIME_OVERHEAD_BYTES;
    return plan_with_fixed(plan, cfg, fixed, batch, seq, budget_bytes, err);
}

int fkd_memory_plan_make(fkd_memory_plan *plan, const fkd_model_config *cfg, int batch, int seq,
                         int optimizer_kind, size_t budget_bytes, fkd_error *err)
{
    return fkd_memory_plan_make_frozen(plan, cfg, NULL, batch, seq, optimizer_kind, budget_bytes,
                                       err);
}
