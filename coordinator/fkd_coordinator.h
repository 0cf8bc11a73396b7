/* fkd_coordinator.h — the coordinator: federated rounds over real sockets.
 *
 * One round, in the order a reader can follow through the files:
 *   select.c  choose clients (fraction / min / max, seeded, over-selection)
 *   coord.c   push each a TASK (quantized student + soft-label shard +
 *             hyper-parameters + deadline; chunked), collect sealed UPDATEs
 *             until enough arrived, every selected client answered or
 *             vanished, or the deadline passed; verify, open, decompress
 *   agg*.c    aggregate into the fp32 master (one strategy per file)
 *   coord.c   re-quantize for the next round and for deployment, evaluate
 *             on held-out text
 *   state.c   checkpoint atomically: master, server-optimizer state, round,
 *             registry, RNG, round history
 * docs/coordinator.md describes the configuration, the state machine, the
 * strategies and what happens when things fail.
 *
 * The engine is a plain object driven by fkd_coord_poll() over a ROUTER
 * socket bound to any endpoint (tcp:// with CURVE for a deployment, inproc://
 * for the simulation); no threads, no globals. Deterministic given the seed:
 * a coordinator killed at any moment and restarted from its state directory
 * ends with the same weights as one never interrupted (when every selected
 * client delivers, as with over_select = 0). */
#ifndef FKD_COORDINATOR_H
#define FKD_COORDINATOR_H

#include <stddef.h>
#include <stdint.h>

#include "fkd_client.h"
#include "fkd_compress.h"
#include "fkd_wire.h"

#define FKD_COORD_PATH_MAX 512
#define FKD_COORD_NAME_MAX 32
#define FKD_COORD_MAX_CLIENTS 100000
#define FKD_COORD_STATE_FILE "coordinator.state"
#define FKD_COORD_MASTER_FILE "master.ckpt"     /* fp32 master after the last round */
#define FKD_COORD_DEPLOY_FILE "student.qmdl"    /* re-quantized for deployment */
#define FKD_COORD_ROUNDS_FILE "rounds.jsonl"    /* one JSON object per completed round */
#define FKD_COORD_SERVER_TRAIN_FILE "server-train.state" /* the server's optimizer (server_train.c) */

/* ======================================================================== *
 * Configuration: "key = value" file (fkd_kvconf) plus overrides.
 * ======================================================================== */
typedef struct {
    /* service */
    char endpoint[FKD_COORD_PATH_MAX];   /* endpoint: bind here */
    char key[FKD_COORD_PATH_MAX];        /* key: coordinator secret key file */
    char allowlist[FKD_COORD_PATH_MAX];  /* allowlist: admitted clients' public keys */
    char state_dir[FKD_COORD_PATH_MAX];  /* state_dir: checkpoints, deployment, rounds.jsonl */
    int require_transport_auth;          /* 1: peers must come through CURVE + ZAP */
    int log_level;                       /* log_level: debug|info|warn|error */
    char metrics_listen[FKD_COORD_PATH_MAX]; /* metrics_listen: HOST:PORT of /metrics; "" = off */
    int64_t metrics_stale_ms;            /* metrics_stale_ms: /healthz 503 after this silence */
    /* student */
    fkd_model_config model;              /* model.dim, model.layers, ... */
    char init[FKD_COORD_PATH_MAX];       /* init: starting checkpoint (empty: random) */
    uint64_t seed;
    /* rounds */
    int rounds;                          /* stop after this many completed rounds */
    float fraction;                      /* of the connected clients selected per round */
    int min_clients, max_clients;        /* bounds on the target count; max 0 = none */
    float over_select;                   /* select target * (1 + over_select) */
    int min_updates;                     /* a round needs at least this many updates */
    int round_timeout_ms;                /* deadline after the TASKs went out */
    int start_timeout_ms;                /* wait this long for min_clients; 0 = forever */
    int heartbeat_ms;                    /* told to clients in WELCOME */
    int client_timeout_ms;               /* silence after which a client is gone */
    /* aggregation */
    char aggregator[FKD_COORD_NAME_MAX]; /* fedavg fedprox fedadam fedyogi median trimmed clip */
    float server_lr;                     /* step on the aggregated delta (1 for FedAvg) */
    float beta1, beta2, tau;             /* FedAdam / FedYogi */
    float trim;                          /* trimmed mean: share dropped at each end */
    float clip_norm;                     /* clip: update norm bound; 0 = median of the round */
    float prox_mu;                       /* FedProx mu (sent to clients) */
    /* client mode (enum fkd_wire_client_mode; config: full lora qlora8 qlora4): full
     * rounds collect deltas, the others LoRA adapters merged into the master
     * (FedAvg of B·A whatever the aggregator); qlora8/qlora4 send the TASK
     * weights as q8_0/q4_1, the base the clients hold */
    int client_mode;
    int lora_rank;                       /* adapter rank (8) */
    float lora_alpha;                    /* adapter scale numerator (16) */
    /* local training, sent in TASK hyper-parameters */
    int local_steps, batch, seq, warmup;
    float lr, weight_decay, grad_clip, alpha, temperature, transfer_share;
    /* lr_schedule: constant | cosine over the rounds — round r's clients and
     * server train at lr x fkd_coord_lr_scale(r), from lr in round 1 down to
     * min_lr_ratio x lr at the end (a constant rate leaves the last rounds'
     * noise in the model) */
    int lr_schedule;                     /* FKD_LR_CONSTANT or FKD_LR_COSINE */
    float min_lr_ratio;
    /* compression */
    float up_fraction;                   /* top-k share of the uplink update */
    int up_format;                       /* enum fkd_uvalue; config: f32 int8 int4 ternary */
    int up_stochastic;
    int task_quant;                      /* enum fkd_qtype of TASK weights (q8_0) */
    int deploy_quant;                    /* enum fkd_qtype of student.qmdl (q8_0) */
    uint32_t chunk_bytes;                /* TASK chunk size */
    /* data */
    char softlabels[FKD_COORD_PATH_MAX]; /* a shard file or a folder of *.soft; round r uses
                                            shard (r-1) mod n; empty: no distillation */
    char eval_data[FKD_COORD_PATH_MAX];  /* corpus folder (fkd_corpus_load), or a text file */
    /* server-side training (server_train.c): after each round's aggregation
     * the master takes server_steps optimizer steps (AdamW, kept in memory
     * and saved to FKD_COORD_SERVER_TRAIN_FILE for a restart) on the
     * soft-label shards' public text */
    int server_steps;                    /* per round; 0 = off */
    float server_alpha;                  /* 1 = pure distillation, 0 = cross-entropy on the text */
    float server_train_lr;               /* 0 = lr */
    uint64_t server_seed;                /* of the server's batches; 0 = derived from seed */
    char server_init[FKD_COORD_PATH_MAX]; /* server_init: a training state (fkd_trainer's) its
                                            optimizer starts from while state_dir holds none;
                                            read, never written; empty: a fresh optimizer */
    int eval_side;                       /* eval_side: public|private|all (corpus folders) */
    int64_t eval_tokens;                 /* held-out tokens evaluated per round */
} fkd_coord_config;

void fkd_coord_config_defaults(fkd_coord_config *cfg);
/* The factor on lr (and server_train_lr) in round (1-based) of cfg's
 * schedule: 1 for constant; for cosine min + (1 - min)(1 + cos(pi (round-1) /
 * rounds)) / 2, so round 1 trains at lr and the last one near the floor. */
float fkd_coord_lr_scale(const fkd_coord_config *cfg, uint64_t round);
/* Sets one key from its text value (the names in the comments above; model
 * keys are model.vocab model.dim model.layers model.heads model.kv_heads
 * model.ffn model.seq model.tie model.rope_theta). Unknown keys are errors. */
int fkd_coord_config_set(fkd_coord_config *cfg, const char *key, const char *value,
                         fkd_error *err);
/* "key=value" (a command-line override). */
int fkd_coord_config_override(fkd_coord_config *cfg, const char *assignment, fkd_error *err);
int fkd_coord_config_load(fkd_coord_config *cfg, const char *path, fkd_error *err);
int fkd_coord_config_validate(const fkd_coord_config *cfg, fkd_error *err);
/* Writes every key with its value, as a config file would hold it. */
void fkd_coord_config_print(FILE *f, const fkd_coord_config *cfg);

/* ======================================================================== *
 * Aggregation strategies: one interface, one file each.
 * ======================================================================== */
typedef struct {
    const float *delta;   /* (n) client weights after - before */
    double weight;        /* samples (FedAvg weight) */
} fkd_coord_update;

typedef struct fkd_coord_agg fkd_coord_agg;

typedef struct {
    const char *name;
    int server_moments;   /* 1: keeps m and v (saved in the checkpoint) */
    /* master (n) += the strategy's step from updates[0..k). */
    int (*apply)(fkd_coord_agg *a, float *master, const fkd_coord_update *ups, int k,
                 fkd_error *err);
} fkd_coord_agg_ops;

struct fkd_coord_agg {
    const fkd_coord_agg_ops *ops;
    size_t n;
    float server_lr, beta1, beta2, tau, trim, clip_norm;
    float *m, *v;         /* server moments (n each) when ops->server_moments */
    int64_t step;         /* server optimizer steps */
    float *scratch;       /* (n) */
    double last_clip;     /* clip: the bound used in the last round */
    int last_clipped;     /* clip: updates scaled down in the last round */
};

extern const fkd_coord_agg_ops fkd_coord_agg_fedavg, fkd_coord_agg_fedprox,
    fkd_coord_agg_fedadam, fkd_coord_agg_fedyogi, fkd_coord_agg_median, fkd_coord_agg_trimmed,
    fkd_coord_agg_clip;

const fkd_coord_agg_ops *fkd_coord_agg_find(const char *name); /* NULL if unknown */
int fkd_coord_agg_init(fkd_coord_agg *a, const fkd_coord_config *cfg, size_t n, fkd_error *err);
int fkd_coord_agg_apply(fkd_coord_agg *a, float *master, const fkd_coord_update *ups, int k,
                        fkd_error *err);
void fkd_coord_agg_free(fkd_coord_agg *a);

/* ======================================================================== *
 * Client selection (select.c)
 * ======================================================================== */
/* Number of updates a round waits for, out of n_available clients:
 * clamp(ceil(fraction * n), min_clients, max_clients) capped at n. */
int fkd_coord_target(const fkd_coord_config *cfg, int n_available);
/* Picks how_many distinct indices of [0, n) into out, uniformly with rng
 * (partial Fisher-Yates), returned in ascending order. */
int fkd_coord_select(int *out, int how_many, int n, fkd_rng *rng);

/* ======================================================================== *
 * The engine
 * ======================================================================== */
enum fkd_coord_phase { FKD_COORD_WAITING = 0, FKD_COORD_COLLECTING = 1, FKD_COORD_DONE = 2 };

typedef struct {
    uint64_t round;
    int selected, target, updates, late, vanished, rejected;
    double perplexity, eval_loss, bits_per_byte, accuracy;
    double client_loss;          /* mean of the clients' reported training loss */
    uint64_t bytes_down, bytes_up; /* TASK transfers out, UPDATEs in (all frames) */
    double seconds;              /* from TASKs out to checkpoint written */
    double clip_bound;           /* clip aggregator: the bound used */
    double server_seconds;       /* server-side training after the aggregation */
    double server_loss;          /* its mean training loss (0 when off) */
} fkd_coord_round_stats;

/* One registered client (persisted in the checkpoint). */
typedef struct {
    uint8_t sign_pk[FKD_WIRE_ID_BYTES];
    uint64_t rounds;             /* updates aggregated */
    uint64_t last_round;         /* last round it contributed to */
    uint64_t bytes_up, bytes_down;
} fkd_coord_client_record;

typedef struct fkd_coord fkd_coord;

/* Loads the state directory's checkpoint when there is one (resume), else
 * starts from cfg->init or a seeded random student. id and log are borrowed. */
int fkd_coord_new(fkd_coord **c, const fkd_coord_config *cfg, const fkd_wire_identity *id,
                  const fkd_logger *log, fkd_error *err);
/* Serves on sock, a bound ROUTER (not owned). */
void fkd_coord_attach(fkd_coord *c, void *sock);
/* One turn: waits up to timeout_ms for messages, handles them, advances the
 * round (select, close, aggregate, checkpoint). -1 only when the coordinator
 * cannot go on (a checkpoint cannot be written, out of memory). */
int fkd_coord_poll(fkd_coord *c, int timeout_ms, fkd_error *err);
int fkd_coord_phase(const fkd_coord *c);
uint64_t fkd_coord_round(const fkd_coord *c);          /* completed rounds */
const fkd_params *fkd_coord_master(const fkd_coord *c);
/* Stats of completed rounds (index 0 = round 1), *n of them. */
const fkd_coord_round_stats *fkd_coord_history(const fkd_coord *c, int *n);
int fkd_coord_connected(const fkd_coord *c);           /* clients with a live session */
/* Sends BYE ("finished" when training is over) to every connected client. */
void fkd_coord_say_bye(fkd_coord *c);
void fkd_coord_free(fkd_coord **c);

/* Evaluation on held-out text (eval.c): the loaded token stream. */
int fkd_coord_eval_load(fkd_token_stream *s, const fkd_coord_config *cfg, fkd_error *err);

/* The checkpoint (state.c), exposed for tests and tools. */
typedef struct {
    uint64_t round;
    fkd_rng rng;
    fkd_params master;                 /* owned */
    float *m, *v;                      /* server moments or NULL */
    size_t n_moments;                  /* floats in each of m, v (0 or n_params) */
    int64_t agg_step;
    fkd_coord_client_record *clients;  /* owned */
    uint32_t n_clients;
    fkd_coord_round_stats *history;    /* owned, round entries */
    uint32_t n_history;
} fkd_coord_state;

int fkd_coord_state_save(const char *path, const fkd_coord_state *s, fkd_error *err);
int fkd_coord_state_load(fkd_coord_state *s, const char *path, fkd_error *err);
int fkd_coord_state_decode(fkd_coord_state *s, const uint8_t *data, size_t bytes,
                           fkd_error *err);
void fkd_coord_state_free(fkd_coord_state *s);

/* ======================================================================== *
 * Metrics (metrics_http.c, metrics_coord.c)
 * ======================================================================== *
 * A registry of counters, gauges and histograms registered by name and
 * updated from any thread (one mutex: a handful of updates per message),
 * served over HTTP by libmicrohttpd on its own thread:
 *     GET /metrics   the Prometheus text exposition format, version 0.0.4
 *     GET /healthz   200 "ok" while healthy, 503 and the reason otherwise
 * Health is a flag (set sick by a fatal error) plus, when max_stale_ms > 0,
 * a heartbeat the round loop renews: a loop stuck longer answers 503, so an
 * orchestrator restarts the coordinator (it resumes from its checkpoint).
 * A name may carry fixed labels, "fedkd_clients_dropped_total{reason=\"late\"}";
 * the series of one family are written together under one HELP/TYPE. */
#define FKD_COORD_METRICS_MAX 64            /* series in one registry */
#define FKD_COORD_METRICS_NAME_BYTES 128    /* family name + labels, with NUL */
#define FKD_COORD_METRICS_HELP_BYTES 160
#define FKD_COORD_METRICS_MAX_BUCKETS 16    /* histogram upper bounds, +Inf not counted */
#define FKD_COORD_METRICS_REASON_BYTES 160
#define FKD_COORD_METRICS_DEFAULT_LISTEN "127.0.0.1:9465"

enum fkd_coord_metric_type {
    FKD_COORD_METRIC_COUNTER,    /* only goes up: fkd_coord_metrics_add */
    FKD_COORD_METRIC_GAUGE,      /* set or add */
    FKD_COORD_METRIC_HISTOGRAM   /* fkd_coord_metrics_observe */
};

typedef struct fkd_coord_metrics fkd_coord_metrics;

int fkd_coord_metrics_new(fkd_coord_metrics **m, fkd_error *err);
void fkd_coord_metrics_destroy(fkd_coord_metrics **m);   /* stop the server first */

/* Registers a series and returns its id in *id. Registering a name twice
 * with the same type returns the first id (so a restarted round loop can
 * register again); with another type it is an error. bounds (histograms
 * only) are n_bounds strictly increasing finite upper bounds. */
int fkd_coord_metrics_register(int *id, fkd_coord_metrics *m, int type, const char *name,
                               const char *help, const double *bounds, int n_bounds,
                               fkd_error *err);

/* Updates; an id not returned by register is ignored (metrics must never
 * take the coordinator down). A counter ignores negative or NaN increments. */
void fkd_coord_metrics_add(fkd_coord_metrics *m, int id, double v);
void fkd_coord_metrics_set(fkd_coord_metrics *m, int id, double v);
void fkd_coord_metrics_observe(fkd_coord_metrics *m, int id, double v);
/* The value of a counter or gauge, the observation count of a histogram;
 * NaN for an unknown id. */
double fkd_coord_metrics_value(fkd_coord_metrics *m, int id);

/* Health: ok = 0 makes /healthz answer 503 with reason until set ok again. */
void fkd_coord_metrics_set_health(fkd_coord_metrics *m, int ok, const char *reason);
void fkd_coord_metrics_heartbeat(fkd_coord_metrics *m);

/* Writes the exposition text into a fresh malloc'ed, NUL-terminated buffer. */
int fkd_coord_metrics_render(char **text, size_t *bytes, fkd_coord_metrics *m, fkd_error *err);

/* The series every coordinator exports (docs/configuration.md lists them). */
typedef struct {
    int rounds_completed, round, rounds_failed;
    int clients_connected, clients_selected;
    int clients_dropped_late, clients_dropped_gone, clients_dropped_rejected;
    int updates_accepted;
    int bytes_in, bytes_out;
    int update_bytes, aggregation_seconds, round_seconds;
    int eval_perplexity;
} fkd_coord_metrics_std;

int fkd_coord_metrics_register_std(fkd_coord_metrics_std *ids, fkd_coord_metrics *m,
                                   fkd_error *err);

/* Brings the standard series up to date with the round engine (see
 * metrics_coord.c); call after every fkd_coord_poll. *rounds_seen starts at
 * -1: rounds completed before this process started (a resumed checkpoint)
 * are then not counted again, only their last perplexity shown. */
void fkd_coord_metrics_sync(fkd_coord_metrics *m, const fkd_coord_metrics_std *ids,
                            const fkd_coord *c, int *rounds_seen);

/* Everything `fedkd serve` needs in one object: a registry with the
 * standard series, served on listen, kept in step with the engine. All
 * calls accept a NULL service (metrics turned off) and do nothing. */
typedef struct fkd_coord_metrics_service fkd_coord_metrics_service;
int fkd_coord_metrics_service_start(fkd_coord_metrics_service **s, const char *listen,
                                    int64_t max_stale_ms, fkd_error *err);
int fkd_coord_metrics_service_port(const fkd_coord_metrics_service *s);
void fkd_coord_metrics_service_update(fkd_coord_metrics_service *s, const fkd_coord *c);
void fkd_coord_metrics_service_fail(fkd_coord_metrics_service *s, const char *reason);
void fkd_coord_metrics_service_stop(fkd_coord_metrics_service **s);

/* ---- the HTTP endpoint ---------------------------------------------------- */
typedef struct fkd_coord_metrics_http fkd_coord_metrics_http;

/* Serves m on listen = "HOST:PORT" (HOST a numeric IPv4 or [IPv6] address;
 * PORT 0 picks a free one, see _port). max_stale_ms > 0 turns on the
 * heartbeat check of /healthz. m must outlive the server. */
int fkd_coord_metrics_http_start(fkd_coord_metrics_http **srv, fkd_coord_metrics *m,
                                 const char *listen, int64_t max_stale_ms, fkd_error *err);
int fkd_coord_metrics_http_port(const fkd_coord_metrics_http *srv);
void fkd_coord_metrics_http_stop(fkd_coord_metrics_http **srv);

#endif
