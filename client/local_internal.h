/* local_internal.h — what the two ways of training one task share (local.c
 * trains every weight and uploads a delta; local_lora.c trains adapters and
 * uploads them). Private to client/. */
#ifndef FKD_CLIENT_LOCAL_INTERNAL_H
#define FKD_CLIENT_LOCAL_INTERNAL_H

#include "fkd_client.h"

typedef struct {
    int64_t steps;
    int batch, seq, warmup;
    float lr, weight_decay, grad_clip, alpha, temperature, transfer_share, prox_mu;
    uint64_t seed;
    fkd_update_config comp;
} task_params;

/* The value of key in m, or dflt when absent. */
double fkd_client_kv_or(const fkd_wire_kvmap *m, const char *key, double dflt);
/* The TASK's hyper-parameters, checked (seq against the student's max_seq). */
int fkd_client_task_params(task_params *p, const fkd_wire_task *t, int max_seq, fkd_error *err);
/* The round's soft labels as a transfer stream (nothing when the TASK has none). */
int fkd_client_task_transfer(fkd_softlabel_shard *shard, fkd_token_stream *transfer,
                             const fkd_wire_task *t, int vocab, fkd_error *err);
uint64_t fkd_client_id_hash(const uint8_t id[FKD_WIRE_ID_BYTES]);
/* The trainer's settings for a task (prox_ref left NULL). */
void fkd_client_trainer_config(fkd_trainer_config *tc, const task_params *p,
                               const fkd_memory_plan *plan, const fkd_token_stream *transfer,
                               const fkd_client_trainer *tr);
void fkd_client_result_from(fkd_client_result *res, const fkd_trainer_result *tres);
/* Seals plain to the coordinator and fills *up (kind DELTA; set it after). */
int fkd_client_seal_update(fkd_wire_msg *up, uint8_t **sealed, const uint8_t *plain,
                           size_t plain_len, const fkd_wire_msg *task,
                           const fkd_client_trainer *tr, fkd_error *err);
void fkd_client_put_metrics(fkd_wire_kvmap *m, const fkd_client_result *r);
/* Samples and metrics of a sealed UPDATE. */
void fkd_client_update_finish(fkd_wire_msg *update, const fkd_client_result *res,
                              const fkd_client_trainer *tr);

/* fkd_client_run_task for a TASK whose hparams "mode" is lora, qlora8 or
 * qlora4 (local_lora.c). */
int fkd_client_run_lora(fkd_client_result *res, fkd_wire_msg *update, uint8_t **sealed,
                        const fkd_wire_msg *task, const fkd_client_trainer *tr, fkd_error *err);

#endif
