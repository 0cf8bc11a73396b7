/* fkd_sim.h — `fedkd simulate`: one process runs the coordinator engine and
 * N virtual clients over ZeroMQ inproc://, with devices that differ as real
 * ones do, and compares federated distillation with the alternatives.
 *
 * The parts, one file each:
 *   sim_devices.c   the device classes (a documented table), drawing a
 *                   device per client, accessibility (can it train and run
 *                   the student within its memory and time budgets?)
 *   sim_clock.c     the simulated clock: bytes and FLOPs -> seconds per
 *                   client, dropouts and stragglers, the round's wall time
 *   sim_data.c      corpora: the private federation and its test text, the
 *                   public transfer set; the teacher and its soft labels,
 *                   cached under runs/cache/ keyed by their settings; or a
 *                   pretrained teacher from a file (--teacher: GGUF with its
 *                   BPE tokenizer, or a checkpoint) and the student made from
 *                   it or given (--student)
 *   sim_eval.c      one evaluation for every method: perplexity, accuracy,
 *                   hallucination rate, int8 / int4 perplexity, per client
 *   sim_baselines.c the methods with no federation: the teacher, a student
 *                   distilled on public data only, a student trained
 *                   centrally on everything pooled
 *   sim_fed.c       the federated methods: the coordinator engine and the
 *                   client agents over inproc://, training on a worker pool
 *   sim_report.c    summary.json, rounds.jsonl, rounds.csv, report.html
 *   sim_run.c       the whole run, in order
 * docs/simulation.md explains the device table, the clock and the outputs.
 *
 * Deterministic given the seed: devices, dropouts, selection, client keys and
 * every training batch derive from it; only wall times differ between runs. */
#ifndef FKD_SIM_H
#define FKD_SIM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "fkd_coordinator.h"

/* ======================================================================== *
 * Devices (sim_devices.c)
 * ======================================================================== */
enum fkd_sim_class {
    FKD_SIM_PHONE_LOW = 0, FKD_SIM_PHONE_HIGH, FKD_SIM_SBC, FKD_SIM_EDGE, FKD_SIM_CLASS_COUNT
};

/* One row of the device table: each figure is a range a device is drawn
 * from (log-uniformly), except share and dropout. Sources in
 * docs/simulation.md. */
typedef struct {
    const char *key;                  /* "phone-low" */
    const char *name;                 /* "low-end phone" */
    double share;                     /* of the default population */
    double gflops[2];                 /* sustained fp32 training throughput, GFLOP/s */
    double mem_mb[2];                 /* memory an app may use for training, MiB */
    double up_mbps[2], down_mbps[2];  /* link, Mbit/s */
    double rtt_ms;                    /* round trip to the coordinator */
    double dropout;                   /* probability of dropping out of a selected round */
} fkd_sim_class_info;

extern const fkd_sim_class_info fkd_sim_classes[FKD_SIM_CLASS_COUNT];

typedef struct {
    int cls;              /* enum fkd_sim_class */
    double flops;         /* FLOP/s for training and inference */
    double mem_bytes;     /* budget for training; inference gets the same */
    double up_Bps, down_Bps; /* bytes per second */
    double rtt_s;
    double dropout;
} fkd_sim_device;

/* Draws one device: its class by share, then each figure in its range. */
void fkd_sim_device_draw(fkd_sim_device *d, fkd_rng *rng);

/* ======================================================================== *
 * The simulated clock (sim_clock.c)
 * ======================================================================== */
/* Training FLOPs per token: forward + backward = 3 x forward; recomputing
 * activations repeats the forward once more. */
#define FKD_SIM_TRAIN_FLOP_FACTOR 3.0
#define FKD_SIM_RECOMPUTE_FLOP_FACTOR 4.0
/* Per round, a device runs at its nominal speed divided by a load factor
 * drawn log-uniformly in [1, this] (other apps, heat, a busy link). */
#define FKD_SIM_LOAD_MAX 3.0

/* What one client does in one round. */
typedef struct {
    double down_bytes;    /* TASK: quantized weights + soft-label shard + envelope */
    double up_bytes;      /* sealed compressed update */
    double train_tokens;  /* local steps x batch x seq */
    double flops_per_token; /* forward, at seq */
} fkd_sim_work;

/* Seconds from the TASK leaving the coordinator to the UPDATE arriving. */
double fkd_sim_client_seconds(const fkd_sim_device *d, const fkd_sim_work *w, int recompute);

enum fkd_sim_outcome {
    FKD_SIM_DELIVERED = 0, /* finished before the deadline and counted */
    FKD_SIM_SURPLUS,       /* finished in time, after the round already had its target */
    FKD_SIM_STRAGGLER,     /* would finish after the deadline: dropped as late */
    FKD_SIM_DROPOUT,       /* went offline during the round */
    FKD_SIM_OUTCOME_COUNT
};
const char *fkd_sim_outcome_name(int outcome);

typedef struct {
    int client;            /* index into the population */
    double finish_s;       /* simulated seconds after the round start (dropouts: inf) */
    int outcome;           /* enum fkd_sim_outcome */
} fkd_sim_slot;

/* Plans a round for the n selected clients in slots (client filled in):
 * draws dropouts and load factors, times everyone else, and marks the first `target`
 * finishers before deadline_s as delivered. Returns the round's simulated
 * wall time: the target-th arrival, or the deadline when fewer made it, or
 * the last arrival when every live client made it. recompute[client] says
 * whether that client's memory plan recomputes activations. */
double fkd_sim_round_plan(fkd_sim_slot *slots, int n, int target, double deadline_s,
                          const fkd_sim_device *devs, const uint8_t *recompute,
                          const fkd_sim_work *w, fkd_rng *rng);

/* ======================================================================== *
 * Accessibility (sim_devices.c)
 * ======================================================================== */
typedef struct {
    int can_train;         /* a memory plan fits and a round ends before the deadline */
    int can_run;           /* the int8 student + KV cache fit, and it generates fast enough */
    int fits_train_memory;
    int recompute;         /* of its memory plan */
    double round_s;        /* simulated seconds of one round */
    double run_bytes;      /* inference: int8 weights + KV cache + runtime */
    double tokens_per_s;   /* inference speed */
    double train_bytes;    /* its training plan's peak (0 when none fits) */
} fkd_sim_access;

#define FKD_SIM_MIN_TOKENS_PER_S 5.0  /* slower generation than this is not usable */

/* How a client trains, which decides what it must hold in memory:
 *   FULL    every weight in fp32 with its gradient and AdamW moments;
 *   LORA    a frozen fp32 base and rank-r adapters on every matrix of every
 *           block (q, k, v, o, gate, up, down), only those trained;
 *   QLORA8, QLORA4  the same over a base held as q8_0 / q4_0 blocks.
 * The run's clients train in cfg.client_mode (client/local_lora.c for the
 * LoRA modes: only the adapters go up, the coordinator merges them); every
 * mode's memory and accessibility is also estimated (summary.json
 * "client_modes"). The values are the wire's (FKD_WIRE_MODE_*). */
enum fkd_sim_client_mode {
    FKD_SIM_CLIENT_FULL = 0, FKD_SIM_CLIENT_LORA, FKD_SIM_CLIENT_QLORA8, FKD_SIM_CLIENT_QLORA4,
    FKD_SIM_CLIENT_MODE_COUNT
};
const char *fkd_sim_client_mode_name(int mode);   /* "full", "lora", "qlora8", "qlora4" */
int fkd_sim_client_mode_parse(const char *name);  /* -1 when unknown */

/* The memory plan of one client's training step in a mode: micro-batches
 * and recomputation within budget_bytes (0 = no limit), as
 * fkd_memory_plan_make does for FULL. Fails with FKD_E_LIMIT when nothing fits. */
int fkd_sim_train_plan(fkd_memory_plan *plan, const fkd_model_config *cfg, int mode, int rank,
                       int batch, int seq, size_t budget_bytes, fkd_error *err);

/* The least memory a client in this mode needs: one sequence, recomputing. */
size_t fkd_sim_train_min_bytes(const fkd_model_config *cfg, int mode, int rank, int seq);

/* Judges one device for a student of cfg trained in client mode (rank for
 * the LoRA modes) with (batch, seq) and shipped as run_model_bytes (int8). */
void fkd_sim_access_check(fkd_sim_access *a, const fkd_sim_device *d, const fkd_model_config *cfg,
                          int mode, int rank, int batch, int seq, const fkd_sim_work *w,
                          double deadline_s, double run_model_bytes);

/* ======================================================================== *
 * Settings and results of a run
 * ======================================================================== */
#define FKD_SIM_PATH_MAX 400  /* leaves room for file names within the coordinator's paths */
#define FKD_SIM_MAX_CONTEXT 8192  /* --context of file models */

enum fkd_sim_method_id {
    FKD_SIM_TEACHER = 0, FKD_SIM_PUBLIC_KD, FKD_SIM_FEDAVG, FKD_SIM_FEDKD, FKD_SIM_CENTRAL,
    FKD_SIM_FEDKD_DENSE,   /* fedkd with a dense fp32 uplink: the compression reference */
    FKD_SIM_PRUNED,        /* the student made from a file teacher, before any training */
    FKD_SIM_METHOD_COUNT
};

typedef struct {
    char data[FKD_SIM_PATH_MAX];     /* private corpus (one file or folder per natural client) */
    char public_dir[FKD_SIM_PATH_MAX]; /* public corpus (teacher + transfer set) */
    char out[FKD_SIM_PATH_MAX];      /* run directory */
    char cache[FKD_SIM_PATH_MAX];    /* teacher and soft-label cache */
    char words[FKD_SIM_PATH_MAX];    /* word list for the hallucination rate ("" = none) */
    /* A pretrained teacher from a file ("" = train the byte-level teacher):
     * GGUF (its BPE tokenizer encodes every stream) or a fedkd checkpoint. */
    char teacher[FKD_SIM_PATH_MAX];
    char student[FKD_SIM_PATH_MAX];  /* the student to heal ("" = pruned from the teacher) */
    int student_layers;              /* pruned: blocks kept (at least, with a budget; 0 there:
                                        fkd_prune_default_min_layers) */
    int64_t student_params;          /* pruned: a parameter budget (0 = none: the teacher's
                                        width; -1 = a third of the teacher's) */
    int context;                     /* file models: context the teacher and student run at */
    uint64_t seed;
    int threads;                     /* worker pool size = cores */
    int clients;                     /* 0: natural partition; N: split into N clients */
    int partition;                   /* for N clients: FKD_PARTITION_DIRICHLET or _IID */
    float dirichlet_alpha;
    /* rounds */
    int rounds, per_round;           /* per_round: updates a round waits for */
    float over_select;
    double deadline_s;               /* simulated round deadline */
    /* the server's phase: optimizer steps on the public data before any
     * client joins (every student but the teacher starts after it);
     * -1: as many as the federation's clients take in all its rounds */
    int server_steps;
    /* the server's steps in every round of the federated methods (after the
     * aggregation, on the public transfer set) and central's per round;
     * -1: as many as public-only distillation takes per round
     * (per_round x local_steps); 0: off */
    int server_round_steps;
    /* local training (also the step budget of the central baselines) */
    int local_steps, batch, seq;
    float lr, alpha, transfer_share;
    int lr_schedule;                 /* over the rounds, every method: FKD_LR_CONSTANT or _COSINE */
    float min_lr_ratio;              /* cosine's last rounds train at about this x lr */
    /* compression */
    float up_fraction;
    int up_format;                   /* enum fkd_uvalue */
    int client_mode;                 /* enum fkd_sim_client_mode */
    int lora_rank;
    float lora_alpha;                /* adapter scale numerator (alpha / rank) */
    int dense_reference;             /* 1: also run fedkd with a dense fp32 uplink (off:
                                      * it is the compression cost's reference, 1/6 of the run) */
    unsigned methods;                /* bit (1 << id) per method to run; 0 = all */
    float server_lr;                 /* the federated servers' step on the aggregate (1: FedAvg) */
    /* teacher and soft labels */
    int teacher_steps, teacher_batch;
    int soft_k, soft_shards;
    float soft_temperature;
    int64_t transfer_tokens;
    /* evaluation */
    int64_t eval_tokens_round;       /* per round, per method */
    int64_t eval_tokens_final;
    int halluc_prompts;
    int64_t quant_eval_tokens;       /* int8 / int4 perplexity, one token at a time */
    int64_t client_eval_tokens;      /* per client, for the accuracy distribution */
    int client_eval_max;             /* clients evaluated for the distribution */
    int progress;                    /* progress line on a terminal */
    int verbose;                     /* engine and agent logs on stderr */
    int keep_work;                   /* 1: keep out/work's checkpoints and states (GBs for an
                                        LLM student); 0: a finished run keeps only its logs */
} fkd_sim_config;

void fkd_sim_config_defaults(fkd_sim_config *cfg);
/* Settings sized for a pretrained file teacher (a 135 M-parameter LLM and a
 * 49,152-token vocabulary) so the whole run fits 30 minutes on 2 cores;
 * applied over the defaults before the options. */
void fkd_sim_config_file_defaults(fkd_sim_config *cfg);
int fkd_sim_config_validate(const fkd_sim_config *cfg, fkd_error *err);
/* "fedkd,public-kd" -> the bits of cfg.methods ("all" = 0, every method but
 * the dense-uplink reference, which cfg.dense_reference adds).
 * The keys are those of summary.json: teacher public-kd fedavg fedkd
 * central fedkd-dense. 0 on success. */
int fkd_sim_methods_parse(unsigned *methods, const char *list, fkd_error *err);
/* Whether a run of cfg takes method id (its --methods and --dense-reference). */
int fkd_sim_runs_method(const fkd_sim_config *cfg, int id);

/* One method's per-round figures. */
typedef struct {
    int round;
    double ppl, acc;
    uint64_t bytes_up, bytes_down, bytes_up_dense, bytes_down_dense;
    double sim_seconds;    /* simulated wall time of the round (federated only) */
    double wall_seconds;
    int selected, delivered, surplus, stragglers, dropouts;
} fkd_sim_round;

typedef struct {
    int id;                /* enum fkd_sim_method_id */
    int ran;
    const char *key, *name;
    double ppl, acc, bpb, halluc;
    double ppl_int8, ppl_int4;    /* on device: quantized, one token at a time */
    double ppl_fp32_steps;        /* the fp32 model scored the same way, same tokens */
    int64_t quant_tokens;
    uint64_t bytes_up, bytes_down;           /* as sent */
    uint64_t bytes_up_dense, bytes_down_dense; /* the same rounds with fp32 weights and updates */
    int64_t train_tokens;
    double wall_seconds;
    fkd_sim_round *rounds;
    int n_rounds;
    double *client_acc;    /* per evaluated client */
    int n_client_acc;
    fkd_params final;      /* the trained model: fedkd's, for the files written at the end;
                              every other student's is freed once evaluated */
    fkd_token_stream calib; /* the public transfer text's first tokens, in final's ids: its
                              int4 deploy recipe's calibration (n 0: none); freed with final */
    uint32_t final_crc;    /* CRC-32 of the trained model's weights (students), kept */
    double peak_client_bytes;      /* federated: the largest training plan of a client */
    int class_ok[FKD_SIM_CLASS_COUNT]; /* devices per class that could take part: train and
                                      run (federated), run (the others) */
    double eval_seconds;           /* its final evaluation */
    double cpu_seconds;            /* CPU time of the method, evaluations included */
} fkd_sim_method;

typedef struct {
    int n_clients, n_accessible;
    int class_count[FKD_SIM_CLASS_COUNT], class_train[FKD_SIM_CLASS_COUNT],
        class_run[FKD_SIM_CLASS_COUNT], class_both[FKD_SIM_CLASS_COUNT];
    double accessibility;          /* share that can train and run */
    double idle_client_bytes;      /* resident memory per idle virtual client (agent, socket,
                                      coordinator's record of it) */
    double client_data_bytes;      /* its private training tokens, per client */
    double agg_updates_per_s;      /* open + decompress + aggregate, one core */
    double wall_seconds;
    double teacher_seconds;        /* training (0 when cached) */
    double server_seconds;         /* the server's phase */
    double server_kd_ppl, server_ce_ppl; /* its students, on eval_tokens_round test tokens */
    int teacher_cached;
    size_t student_params, teacher_params;
    uint64_t student_q8_bytes;     /* the TASK's weights */
    char int4_recipe[FKD_QDEPLOY_RECIPE_MAX]; /* the int4 column's, fkd_qmodel_deploy_recipe */
    uint64_t update_bytes;         /* one compressed, sealed update (estimate for the clock) */
    uint64_t private_train_tokens, public_transfer_tokens;
    int64_t test_tokens;
    /* A file teacher: perplexity is per teacher token (total nats / the
     * teacher's token count of the same test text), so models with other
     * tokenizers compare; accuracy stays per own token. */
    int teacher_from_file;
    int64_t test_teacher_tokens;   /* the test text in the teacher's tokens */
    double own_per_teacher_token;  /* student tokens per teacher token on it (1 = same) */
    int teacher_vocab, student_vocab;
    char student_source[FKD_SIM_PATH_MAX + 128]; /* the file, or how it was made */
    uint32_t teacher_crc;          /* of the teacher file: the soft-label cache key */
    int soft_cached, student_cached, teacher_eval_cached;
    double prune_seconds, prune_cpu_seconds; /* making the pruned student (0: cached, given) */
    double load_seconds, soft_seconds, soft_tokens_per_s; /* teacher pass over the transfer set */
    double soft_cpu_seconds, cpu_seconds;  /* the pass; the whole run */
    /* Training memory and accessibility in each client mode (the run trains
     * in cfg.client_mode): the smallest plan and the devices that could train. */
    double mode_min_train_bytes[FKD_SIM_CLIENT_MODE_COUNT];
    int mode_accessible[FKD_SIM_CLIENT_MODE_COUNT];
    int mode_class_both[FKD_SIM_CLIENT_MODE_COUNT][FKD_SIM_CLASS_COUNT];
    size_t lora_params;
} fkd_sim_summary;

typedef struct {
    fkd_sim_config cfg;
    fkd_sim_summary sum;
    fkd_sim_method m[FKD_SIM_METHOD_COUNT];
} fkd_sim_result;

/* Runs everything and writes the run directory (sim_report.c): summary.json,
 * rounds.jsonl, rounds.csv, student-fp32.ckpt, student-int8.qmdl,
 * student-int4.qmdl, student-f32.gguf, student-q4_1.gguf (fedkd's final
 * student; the GGUF files with its tokenizer, for llama.cpp) and report.html. */
int fkd_sim_run(fkd_sim_result *res, const fkd_sim_config *cfg, fkd_error *err);
void fkd_sim_result_free(fkd_sim_result *res);
/* The comparison table for a terminal, rows in fkd_sim_display_order. */
extern const int fkd_sim_display_order[FKD_SIM_METHOD_COUNT];
void fkd_sim_print_table(FILE *f, const fkd_sim_result *res);
/* "L/H/S/E": devices per class (phone-low/phone-high/sbc/edge) that could take part. */
void fkd_sim_format_classes(char *out, size_t cap, const int class_ok[FKD_SIM_CLASS_COUNT]);
/* sim_report.c: every file of the run directory; the HTML report alone. */
int fkd_sim_write_outputs(const fkd_sim_result *res, fkd_error *err);
int fkd_sim_write_html(const char *path, const fkd_sim_result *res, fkd_error *err);

#endif
