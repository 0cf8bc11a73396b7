/* sim_internal.h — what the sim_*.c files share: the run's context (its
 * data, teacher, soft labels, devices and progress) and the functions that
 * pass it between them. Private to the simulation. */
#ifndef FKD_SIM_INTERNAL_H
#define FKD_SIM_INTERNAL_H

#include "fkd_sim.h"

typedef struct {
    fkd_sim_config cfg;
    fkd_sim_result *res;
    fkd_tokenizer tok;                 /* the student's: every private stream */
    fkd_tokenizer ttok;                /* a file teacher's: the transfer set, its test text */
    fkd_vocab_map vmap;                /* teacher ids -> a trimmed student's ids */
    int have_vmap;                     /* 0: both share one vocabulary */
    fkd_model_config student_cfg;
    fkd_params init;                   /* the one initial student every method starts from */
    fkd_params server_kd;              /* init after the server's distillation on public data */
    fkd_params server_ce;              /* init after the server's cross-entropy on public text
                                          (its checkpoint only, after the server's phase) */
    /* private side */
    fkd_eval_set es;                   /* corpus, federation, test documents, known words */
    fkd_token_stream *client_train;    /* (n_clients) */
    fkd_token_stream *client_test;     /* (n_client_test) for the accuracy distribution */
    int *client_test_id;
    int n_clients, n_client_test;
    fkd_token_stream pooled;           /* every client's training text */
    fkd_token_stream test;             /* private test text, eval_tokens_final tokens */
    fkd_token_stream test_t;           /* file teacher: the same documents, teacher tokens */
    /* public side */
    fkd_params teacher;                /* freed once evaluated (its soft labels made) */
    fkd_softlabel_shard *shards;       /* until shards_concat (sim_data.c), then NULL */
    int n_shards;
    fkd_softlabel_shard all_soft;      /* the shards back to back (central methods) */
    fkd_token_stream transfer;         /* view of all_soft */
    char soft_dir[FKD_SIM_PATH_MAX + 64];   /* the shards as *.soft files, for the coordinator */
    /* devices */
    fkd_sim_device *devs;              /* (n_clients) */
    fkd_sim_access *access;            /* (n_clients) */
    uint8_t *recompute;                /* (n_clients) */
    fkd_sim_work work[3];              /* a client's round: FedAvg, fedkd, fedkd dense uplink */
    /* progress */
    fkd_progress bar;
    int64_t units_total, units_done;   /* training tokens of all methods */
    char work_dir[FKD_SIM_PATH_MAX + 16];   /* out/work: training states, client folders */
} sim_ctx;

/* sim_data.c */
/* A file teacher (--teacher) and the student healed from it: loads both
 * and their tokenizers before any text is encoded. */
int sim_models_load(sim_ctx *x, fkd_error *err);
int sim_data_load(sim_ctx *x, fkd_error *err);
int sim_teacher_prepare(sim_ctx *x, fkd_error *err);
void sim_data_free(sim_ctx *x);
/* A copy of src into fresh dst. */
int sim_params_copy(fkd_params *dst, const fkd_params *src, fkd_error *err);

/* sim_eval.c */
/* The int4 column, student-int4.qmdl and student-q4_1.gguf: one model,
 * quantized by compress's deploy recipe (fkd_qmodel_quantize_deploy): GPTQ
 * calibrated on the public transfer set's first tokens. */
#define SIM_INT4_QTYPE FKD_QTYPE_Q4_1
/* m's calibration text, or NULL when it has none. */
const fkd_token_stream *sim_method_calib(const fkd_sim_method *m);
int sim_eval_ppl(double *ppl, double *acc, const fkd_params *p, const fkd_token_stream *s,
                 int64_t max_tokens, fkd_error *err);
int sim_eval_final(fkd_sim_method *m, const sim_ctx *x, const fkd_params *p, fkd_error *err);
int sim_eval_clients(fkd_sim_method *m, const sim_ctx *x, const fkd_params *p, fkd_error *err);
/* After a method's evaluations: m->final_crc of its student, whose weights
 * are freed unless keep (fedkd's, written at the end). */
void sim_method_release(fkd_sim_method *m, int keep);
/* A student's perplexity per own token as perplexity per teacher token. */
double sim_ppl_per_teacher_token(const sim_ctx *x, double ppl_own);

/* sim_baselines.c */
int sim_run_teacher(sim_ctx *x, fkd_error *err);
/* The server's phase on public data (server_kd, and the checkpoints of
 * both: server_ce is freed once evaluated); every student but the teacher
 * starts from one of them. */
int sim_run_server(sim_ctx *x, fkd_error *err);
void sim_server_free(sim_ctx *x);
/* The checkpoint a method's federation starts from. */
void sim_server_path(char *out, size_t cap, const sim_ctx *x, int method);
/* The server phase's optimizer state a method's server goes on from (the
 * distilling one, or FedAvg's cross-entropy one), and the seed of its
 * batches: a state resumes only with its own seed. */
void sim_server_state_path(char *out, size_t cap, const sim_ctx *x, int method);
uint64_t sim_server_seed(const sim_ctx *x, int method);
int sim_run_central(sim_ctx *x, int method, fkd_error *err);
/* Round r's (1-based) factor on the learning rate, as the coordinator's. */
float sim_round_lr_scale(const fkd_sim_config *cfg, int r);

/* sim_fed.c */
int sim_run_federated(sim_ctx *x, int method, fkd_error *err);
/* Aggregation throughput: open + decompress + FedAvg of real-sized updates. */
int sim_measure_aggregation(sim_ctx *x, fkd_error *err);

/* sim_report.c: fedkd's final student as student-f32.gguf and
 * student-q4_1.gguf in the run directory, with its tokenizer. */
int sim_write_student_gguf(const sim_ctx *x, fkd_error *err);

/* sim_run.c */
double sim_rss_bytes(void);            /* resident memory of this process now */
/* A finished run's work folder down to its logs (*.jsonl, *.csv): an LLM
 * student's checkpoints, optimizer states and clients' copies are GBs. */
void sim_work_prune(const char *work_dir);
void sim_progress(sim_ctx *x, int64_t tokens, const char *what);
int sim_method_add_round(fkd_sim_method *m, const fkd_sim_round *r, fkd_error *err);
/* Steps a central method takes per round to match the federated compute. */
int64_t sim_matched_steps(const fkd_sim_config *cfg);
/* The server's phase: cfg->server_steps, or (when < 0) as many steps as the
 * federation's clients take in all its rounds. */
int64_t sim_server_steps(const fkd_sim_config *cfg);
/* The server's steps per round after the server's phase:
 * cfg->server_round_steps, or (when < 0) sim_matched_steps. */
int64_t sim_server_round_steps(const fkd_sim_config *cfg);

#endif
