/* local_lora.c — one LoRA / QLoRA task: the client trains adapters over a
 * frozen base and uploads only the adapters (docs/protocol.md, TASK
 * "mode").
 *
 * In qlora8 / qlora4 the received quantized student IS the base: a weight
 * source materialises one matrix at a time from it, so the device never
 * holds an fp32 copy of the base (only its norm gains). In lora the base is
 * dequantized to fp32 once. Adapters start fresh every round (A seeded from
 * the task's seed and our id, B = 0): the coordinator merged last round's
 * into the master it sends. There is no residual: adapters are exact. */
#include "local_internal.h"

#include <stdlib.h>
#include <string.h>

#define LORA_SEED_SALT 0x6c6f7261ULL /* "lora": adapters and data draw differ */

typedef struct {
    int mode;                 /* enum fkd_wire_client_mode, not FULL */
    fkd_lora_config lora;
} lora_task;

static int read_lora_task(lora_task *lt, const fkd_wire_task *t, fkd_error *err)
{
    double mode = fkd_client_kv_or(&t->hparams, "mode", FKD_WIRE_MODE_FULL);
    double rank = fkd_client_kv_or(&t->hparams, "lora_rank", FKD_LORA_DEFAULT_RANK);
    double alpha = fkd_client_kv_or(&t->hparams, "lora_alpha", FKD_LORA_DEFAULT_ALPHA);
    if (!(mode == FKD_WIRE_MODE_LORA || mode == FKD_WIRE_MODE_QLORA8 ||
          mode == FKD_WIRE_MODE_QLORA4))
        return fkd_error_set(err, FKD_E_FORMAT, "the task's mode %g is not lora (1), qlora8 (2) "
                             "or qlora4 (3)", mode);
    if (!(rank >= 1 && rank <= FKD_LORA_MAX_RANK) || rank != (int)rank || !(alpha > 0) ||
        !(alpha < 1e6))
        return fkd_error_set(err, FKD_E_FORMAT, "the task's lora_rank %g (1..%d) or lora_alpha "
                             "%g (> 0) is out of range", rank, FKD_LORA_MAX_RANK, alpha);
    lt->mode = (int)mode;
    lt->lora = fkd_lora_defaults();
    lt->lora.rank = (int)rank;
    lt->lora.alpha = (float)alpha;
    return 0;
}

static int quantized_mode(int mode) { return mode != FKD_WIRE_MODE_LORA; }

/* The frozen base from the received student: the norm gains plus a source
 * over qm (quantized modes), or the whole student in fp32 (lora). qm stays
 * alive as long as the source is used. */
static int make_base(fkd_params *base, fkd_weight_source *src, size_t *base_bytes,
                     const fkd_qmodel *qm, int mode, fkd_error *err)
{
    if (!quantized_mode(mode)) {
        *base_bytes = fkd_config_param_count(&qm->cfg) * sizeof(float);
        return fkd_qmodel_dequantize(base, qm, err);
    }
    int type = mode == FKD_WIRE_MODE_QLORA8 ? FKD_QTYPE_Q8_0 : FKD_QTYPE_Q4_1;
    *base_bytes = fkd_qlora_base_bytes(&qm->cfg, type);
    if (fkd_qlora_source(src, qm, err) != 0) return -1;
    return fkd_qlora_base_params(base, qm, err);
}

/* Trains the adapters of lora (initialised here) over base (owned from
 * here on, freed with the model). */
static int train_adapters(fkd_client_result *res, fkd_lora *lora, fkd_params *base,
                          const fkd_weight_source *src, size_t base_bytes, const lora_task *lt,
                          const task_params *p, const fkd_token_stream *transfer,
                          const fkd_client_trainer *tr, fkd_error *err)
{
    const fkd_model_config *cfg = &base->cfg;
    uint64_t seed = p->seed ^ fkd_client_id_hash(tr->id->sign_pk) ^ LORA_SEED_SALT;
    if (fkd_memory_plan_make_lora(&res->plan, cfg, &lt->lora, base_bytes, src != NULL, p->batch,
                                  p->seq, tr->memory_budget_bytes, err) != 0 ||
        fkd_lora_init(lora, cfg, &lt->lora, seed, err) != 0) {
        fkd_params_free(base);
        return -1;
    }
    fkd_model m;
    if (fkd_model_init_lora(&m, base, src, lora, res->plan.micro_batch, p->seq,
                            res->plan.recompute, err) != 0) {
        fkd_params_free(base);
        return -1;
    }
    fkd_trainer_config tc;
    fkd_client_trainer_config(&tc, p, &res->plan, transfer, tr);
    tc.opt.prox_mu = 0; /* adapters start at zero change: nothing to pull them back to */
    const fkd_token_stream *text = tr->train && tr->train->n >= 2 ? tr->train : NULL;
    fkd_trainer_result tres;
    int rc = fkd_trainer_run(&tres, &m, text, transfer, NULL, &tc, err);
    if (rc == 0) fkd_client_result_from(res, &tres);
    fkd_model_free(&m);
    return rc;
}

int fkd_client_run_lora(fkd_client_result *res, fkd_wire_msg *update, uint8_t **sealed,
                        const fkd_wire_msg *task, const fkd_client_trainer *tr, fkd_error *err)
{
    const fkd_wire_task *t = &task->u.task;
    lora_task lt;
    task_params p;
    fkd_qmodel qm = {0};
    fkd_params base = {0};
    fkd_weight_source src;
    fkd_lora lora = {0};
    fkd_softlabel_shard shard = {0};
    fkd_token_stream transfer = {0};
    uint8_t *plain = NULL;
    size_t plain_len = 0, base_bytes = 0;
    if (read_lora_task(&lt, t, err) != 0) return -1;
    if (t->weights.len == 0)
        return fkd_error_set(err, FKD_E_FORMAT, "the task carries no weights");
    if (fkd_qmodel_decode(&qm, t->weights.data, t->weights.len, err) != 0) return -1;
    int rc = fkd_client_task_params(&p, t, qm.cfg.max_seq, err);
    if (rc == 0) rc = fkd_client_task_transfer(&shard, &transfer, t, qm.cfg.vocab, err);
    if (rc == 0) rc = make_base(&base, &src, &base_bytes, &qm, lt.mode, err);
    if (rc == 0 && !quantized_mode(lt.mode)) fkd_qmodel_free(&qm); /* lora: fp32 from here */
    if (rc == 0)
        rc = train_adapters(res, &lora, &base, quantized_mode(lt.mode) ? &src : NULL, base_bytes,
                            &lt, &p, t->soft_labels.len ? &transfer : NULL, tr, err);
    else
        fkd_params_free(&base);
    if (rc == 0 && tr->attack_scale != 0 && tr->attack_scale != 1)
        for (size_t i = 0; i < lora.n; i++) lora.params[i] *= tr->attack_scale; /* tests only */
    if (rc == 0) rc = fkd_lora_encode(&plain, &plain_len, &lora, err);
    if (rc == 0) {
        res->update_bytes = plain_len;
        res->dense_bytes = fkd_config_param_count(&lora.model) * sizeof(float);
        res->compress_ratio = (double)res->dense_bytes / (double)plain_len;
        rc = fkd_client_seal_update(update, sealed, plain, plain_len, task, tr, err);
    }
    if (rc == 0) {
        update->u.update.kind = FKD_WIRE_UPDATE_LORA;
        fkd_client_update_finish(update, res, tr);
    }
    free(plain);
    fkd_lora_free(&lora);
    fkd_softlabels_free(&shard);
    fkd_qmodel_free(&qm);
    return rc;
}
