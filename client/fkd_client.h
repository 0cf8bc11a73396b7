/* fkd_client.h — the edge agent: what runs on a device.
 *
 * A client connects to the coordinator (a ZeroMQ DEALER, CURVE on tcp://),
 * says HELLO with its capabilities, and then waits. When a TASK arrives
 * (chunked, resumable: the quantized student, the round's soft-label shard,
 * hyper-parameters, a deadline) it trains locally within its memory budget —
 * cross-entropy on its private text plus distillation on the soft labels,
 * through train/'s memory planner and trainer — compresses the weight delta
 * (top-k + quantization + error feedback, the residual kept on disk), seals
 * it to the coordinator's key and uploads it, then waits again. Silence from
 * the coordinator means a reconnect, with exponential backoff.
 *
 * The agent is a plain object driven by fkd_client_poll(): no threads, no
 * globals, its socket connected to any endpoint string, so one process can
 * run many agents over inproc:// (the simulation). Training can be left to
 * the caller (auto_train = 0, then fkd_client_train() from a worker) so a
 * scheduler decides when compute happens. An idle agent holds its identity,
 * a socket and a few counters; the error-feedback residual lives on disk.
 *
 * Also here, because both ends need it: fkd_client_xlink, one peer's chunked
 * transfers in both directions (the coordinator uses one per client).
 *
 * The private text never leaves the agent: only sealed updates and aggregate
 * metrics (loss, steps, seconds) are sent. */
#ifndef FKD_CLIENT_H
#define FKD_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "fkd_compress.h"
#include "fkd_wire.h"

#define FKD_CLIENT_SOFTWARE "fedkd-client 0.1.0"
#define FKD_CLIENT_DEFAULT_HEARTBEAT_MS 5000
#define FKD_CLIENT_BACKOFF_MIN_MS 1000
#define FKD_CLIENT_BACKOFF_MAX_MS 60000
#define FKD_CLIENT_SEND_TIMEOUT_MS 2000
#define FKD_CLIENT_XFER_STALL_MS 10000   /* no credit for this long: resend XFER_BEGIN */
#define FKD_CLIENT_SILENCE_BEATS 3       /* heartbeats unanswered before a reconnect */
#define FKD_CLIENT_SILENCE_MIN_MS 15000  /* ... and never sooner: a coordinator aggregating is busy */
#define FKD_CLIENT_HELLO_TIMEOUT_MS 10000/* a HELLO unanswered this long is sent again */

/* ======================================================================== *
 * Chunked transfers with one peer, both directions (no socket of its own).
 * ======================================================================== */
typedef struct {
    uint8_t self[FKD_WIRE_ID_BYTES];  /* our id, the sender of what we emit */
    fkd_wire_limits lim;
    uint32_t window;
    fkd_wire_xsend *tx;               /* outgoing transfer, or NULL */
    uint8_t *tx_payload;              /* the encoded message being sent */
    int tx_owned;                     /* 1: tx_payload is freed by the link */
    size_t tx_bytes;
    double tx_last_ms;                /* last credit (or start) of the outgoing transfer */
    fkd_wire_xrecv *rx;               /* incoming transfer, kept across reconnects */
    uint64_t bytes_out;               /* every frame emitted by this link */
} fkd_client_xlink;

void fkd_client_xlink_init(fkd_client_xlink *l, const uint8_t self[FKD_WIRE_ID_BYTES],
                           const fkd_wire_limits *lim, uint32_t window);
void fkd_client_xlink_free(fkd_client_xlink *l);
/* Starts sending payload (an encoded message of type kind; ownership moves
 * in, freed by the link) in chunk_bytes chunks; drops any previous transfer. */
int fkd_client_xlink_start(fkd_client_xlink *l, uint8_t *payload, size_t bytes, uint32_t kind,
                           uint32_t chunk_bytes, uint64_t round, fkd_error *err);
/* Sends what is due: transfer frames the peer has credit for, our credits,
 * and XFER_BEGIN again after FKD_CLIENT_XFER_STALL_MS without credit. peer
 * is NULL on a DEALER. *sent_bytes (may be NULL) grows by the bytes sent. */
int fkd_client_xlink_pump(fkd_client_xlink *l, void *sock, const fkd_wire_peer *peer,
                          uint64_t *sent_bytes, fkd_error *err);
/* Feeds an XFER_* message. Returns 1 with *payload (malloc'ed, the whole
 * encoded message carried) when an incoming transfer completed, 0 otherwise. */
int fkd_client_xlink_on_msg(fkd_client_xlink *l, const fkd_wire_msg *msg, uint8_t **payload,
                            size_t *bytes, fkd_error *err);
/* The same, but payload is borrowed: it must outlive the transfer (drop it
 * with fkd_client_xlink_drop_send first). One payload can feed many links,
 * as one round's TASK feeds every selected client. */
int fkd_client_xlink_start_borrowed(fkd_client_xlink *l, const uint8_t *payload, size_t bytes,
                                    uint32_t kind, uint32_t chunk_bytes, uint64_t round,
                                    fkd_error *err);
/* Forgets the outgoing transfer (complete or not); the incoming one stays. */
void fkd_client_xlink_drop_send(fkd_client_xlink *l);
/* 1 while an outgoing transfer is not yet confirmed complete. */
int fkd_client_xlink_sending(const fkd_client_xlink *l);
/* Forces XFER_BEGIN to be sent again (after the peer reconnected). */
void fkd_client_xlink_restart(fkd_client_xlink *l);

/* ======================================================================== *
 * Local training of one task: the part of the agent with no I/O.
 * TASK hyper-parameters (all optional, defaults in brackets): steps [20],
 * batch [8], seq [64], lr [1e-3], weight_decay [0], grad_clip [1], warmup [0],
 * alpha [0.5] (KD share where a soft label exists), temperature [1],
 * transfer_share [0.5] (micro-batches from the soft-label shard),
 * prox_mu [0] (FedProx), seed [1], mode [0 = full; 1 lora, 2 qlora8, 3 qlora4:
 * adapters over the received base, uploaded instead of a delta, see
 * client/local_lora.c], lora_rank [8], lora_alpha [16]. Compression: fraction [0.1],
 * value_format [1 = int8] (enum fkd_uvalue), stochastic [0].
 * ======================================================================== */
typedef struct {
    const fkd_wire_identity *id;          /* our keys (sign the update) */
    const uint8_t *coord_curve_pk;        /* seal to this key (32 bytes) */
    const fkd_token_stream *train;        /* private text (borrowed) */
    const char *state_dir;                /* residual files; NULL keeps no residual */
    size_t memory_budget_bytes;           /* 0 = no limit */
    float attack_scale;                   /* tests only: 0 or 1 = honest; else the delta (or
                                             the adapters) x this */
} fkd_client_trainer;

typedef struct {
    double loss;            /* mean training loss of the last steps */
    int64_t steps, tokens;
    double train_seconds;
    size_t update_bytes;    /* compressed, before sealing */
    size_t dense_bytes;     /* 4 x parameters */
    double compress_ratio, compress_rel_error;
    fkd_memory_plan plan;
} fkd_client_result;

/* Trains on task (a decoded TASK message of round `round`) and fills *update
 * with a ready-to-encode UPDATE message whose sealed blob is *sealed
 * (malloc'ed; keep it alive until the message is encoded, then free()). The
 * residual used is the newest one saved for a round below `round`, so a
 * round the coordinator asks for again (after its restart) gives the same
 * update. */
int fkd_client_run_task(fkd_client_result *res, fkd_wire_msg *update, uint8_t **sealed,
                        const fkd_wire_msg *task, const fkd_client_trainer *tr, fkd_error *err);

/* Residual files: "<state_dir>/residual-<round>.bin"; keeps the newest two. */
int fkd_client_residual_path(char *out, size_t cap, const char *state_dir, uint64_t round);
/* The newest round below `below` with a residual file, or 0 if none. */
uint64_t fkd_client_residual_latest(const char *state_dir, uint64_t below);

/* ======================================================================== *
 * The agent
 * ======================================================================== */
enum fkd_client_state {
    FKD_CLIENT_DISCONNECTED = 0, /* waiting for the backoff to end */
    FKD_CLIENT_HELLO_SENT,       /* waiting for WELCOME */
    FKD_CLIENT_IDLE,             /* welcomed, no task */
    FKD_CLIENT_TASK_READY,       /* a complete TASK waits for fkd_client_train */
    FKD_CLIENT_UPLOADING,        /* UPDATE sent, waiting for its ACK */
    FKD_CLIENT_FINISHED,         /* the coordinator said BYE: training is over */
    FKD_CLIENT_REJECTED,         /* refused for good (REJECT without retry) */
    FKD_CLIENT_TRAINING          /* a job took the task (fkd_client_job_take) */
};
const char *fkd_client_state_name(int state);

typedef struct {
    const char *endpoint;        /* "tcp://127.0.0.1:5555", "inproc://coord", ... */
    int use_curve;               /* 1: CURVE to the coordinator's key (tcp, ipc) */
    const char *state_dir;       /* residual files (created) */
    uint32_t memory_mb;          /* training budget; 0 = no limit */
    uint32_t cores;
    int heartbeat_ms;            /* 0 = FKD_CLIENT_DEFAULT_HEARTBEAT_MS (WELCOME overrides) */
    int backoff_min_ms, backoff_max_ms; /* 0 = defaults */
    int auto_train;              /* 1: poll() trains as soon as a task is complete */
    float attack_scale;          /* tests only (see fkd_client_trainer) */
    uint64_t seed;               /* of the backoff jitter */
} fkd_client_config;

fkd_client_config fkd_client_config_defaults(void);

typedef struct {
    uint64_t tasks, updates_acked, reconnects, hellos;
    uint64_t bytes_up, bytes_down;       /* all frames sent and received */
    uint64_t last_round;                 /* round of the last update sent */
    fkd_client_result last;              /* of the last task trained */
} fkd_client_stats;

typedef struct fkd_client fkd_client;

/* Borrows id, coord_curve_pk, train and log: they must outlive the agent.
 * zmq_ctx is the caller's ZeroMQ context. The socket is opened by the first
 * poll. */
int fkd_client_new(fkd_client **cl, const fkd_client_config *cfg, const fkd_wire_identity *id,
                   const uint8_t coord_curve_pk[FKD_WIRE_KEY_BYTES],
                   const fkd_token_stream *train, void *zmq_ctx, const fkd_logger *log,
                   fkd_error *err);
/* One turn of the event loop: waits up to timeout_ms for a message, handles
 * it, sends what is due (HELLO, heartbeats, transfer frames), reconnects when
 * the coordinator fell silent. -1 only on errors the agent cannot recover
 * from (out of memory, a bad configuration). */
int fkd_client_poll(fkd_client *cl, int timeout_ms, fkd_error *err);
/* Trains the task waiting in FKD_CLIENT_TASK_READY and queues the UPDATE
 * (take + run + finish below, on the calling thread). */
int fkd_client_train(fkd_client *cl, fkd_error *err);

/* Training on another thread while the agent keeps polling (heartbeats go
 * on, a reconnect can happen): _take moves the waiting task into a job
 * (state TRAINING; *job NULL if the task had expired); _run needs nothing
 * of the agent's socket or state and may run on any thread; _finish, back
 * on the agent's thread, queues the UPDATE (or logs the failure) and frees
 * the job. Never poll and finish one agent from two threads at once. */
typedef struct fkd_client_job fkd_client_job;
int fkd_client_job_take(fkd_client *cl, fkd_client_job **job, fkd_error *err);
int fkd_client_job_run(fkd_client_job *job);
int fkd_client_job_finish(fkd_client *cl, fkd_client_job **job, fkd_error *err);
int fkd_client_state(const fkd_client *cl);
const fkd_client_stats *fkd_client_get_stats(const fkd_client *cl);
/* Says BYE (best effort) and frees everything; *cl becomes NULL. */
void fkd_client_free(fkd_client **cl);

#endif
