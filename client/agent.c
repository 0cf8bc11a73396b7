/* agent.c — the client's event loop: a state machine over one DEALER socket.
 *
 *   DISCONNECTED --backoff--> HELLO_SENT --WELCOME--> IDLE
 *   IDLE --TASK complete--> TASK_READY --train--> UPLOADING --ACK--> IDLE
 *   any --BYE "finished"--> FINISHED        any --REJECT (no retry)--> REJECTED
 *
 * Liveness: while welcomed the agent sends a HEARTBEAT every heartbeat_ms
 * and the coordinator answers each; FKD_CLIENT_SILENCE_BEATS beats without
 * hearing anything, an unanswered HELLO, or an ERROR saying the session is
 * unknown (the coordinator restarted) make the agent drop the socket and say
 * HELLO again after an exponential backoff with jitter. A TASK download in
 * progress and an UPDATE not yet acknowledged survive this: the download
 * resumes, the update is sent again. */
#include "fkd_client.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#define ENDPOINT_MAX 256
#define PATH_MAX_LEN 1024
#define LINGER_MS 200

struct fkd_client {
    fkd_client_config cfg;
    char endpoint[ENDPOINT_MAX];
    char state_dir[PATH_MAX_LEN];
    const fkd_wire_identity *id;
    uint8_t coord_pk[FKD_WIRE_KEY_BYTES];
    const fkd_token_stream *train;
    void *ctx, *sock;
    const fkd_logger *log;
    fkd_wire_limits lim;
    fkd_rng rng;
    int state;
    int heartbeat_ms;
    uint32_t chunk_bytes;
    double next_hello_ms, hello_sent_ms, backoff_ms, last_heard_ms, last_beat_ms;
    uint64_t session, beat_seq;
    uint64_t model_version;       /* of the newest weights seen (sent in HELLO) */
    fkd_client_xlink link;
    uint8_t *task_buf;            /* the TASK waiting to be trained (decoded into task) */
    fkd_wire_msg task;
    uint8_t *pending;             /* encoded UPDATE not yet acknowledged */
    size_t pending_len;
    uint64_t pending_round;
    uint64_t acked_round, acked_session; /* the last update ACKed, and in which session */
    uint64_t job_round;           /* round being trained by a job (0: none) */
    uint8_t pending_nonce[FKD_WIRE_NONCE_BYTES];
    fkd_client_stats stats;
};

static const char *const state_names[] = {"disconnected", "hello_sent", "idle", "task_ready",
                                          "uploading", "finished", "rejected", "training"};

const char *fkd_client_state_name(int s)
{
    return s >= 0 && s <= FKD_CLIENT_TRAINING ? state_names[s] : "?";
}

fkd_client_config fkd_client_config_defaults(void)
{
    fkd_client_config c = {0};
    c.endpoint = "tcp://127.0.0.1:7878";
    c.use_curve = 1;
    c.state_dir = "fedkd-client-state";
    c.cores = 1;
    c.heartbeat_ms = FKD_CLIENT_DEFAULT_HEARTBEAT_MS;
    c.backoff_min_ms = FKD_CLIENT_BACKOFF_MIN_MS;
    c.backoff_max_ms = FKD_CLIENT_BACKOFF_MAX_MS;
    c.auto_train = 1;
    c.seed = 1;
    return c;
}

static void set_state(fkd_client *cl, int s)
{
    if (cl->state == s) return;
    fkd_log(cl->log, FKD_LOG_DEBUG, "state", "from=%s to=%s", fkd_client_state_name(cl->state),
            fkd_client_state_name(s));
    cl->state = s;
}

/* ---- socket ----------------------------------------------------------------------- */
static int open_plain(fkd_client *cl, fkd_error *err)
{
    void *s = zmq_socket(cl->ctx, ZMQ_DEALER);
    if (!s) return fkd_error_set(err, FKD_E_NET, "cannot create a DEALER socket: %s",
                                 zmq_strerror(zmq_errno()));
    int linger = LINGER_MS, one = 1;
    int64_t max = (int64_t)cl->lim.max_frame_bytes;
    if (zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_setsockopt(s, ZMQ_IMMEDIATE, &one, sizeof one) ||
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &max, sizeof max) || zmq_connect(s, cl->endpoint)) {
        fkd_error_set(err, FKD_E_NET, "cannot connect to %s: %s", cl->endpoint,
                      zmq_strerror(zmq_errno()));
        zmq_close(s);
        return -1;
    }
    cl->sock = s;
    return 0;
}

static int open_socket(fkd_client *cl, fkd_error *err)
{
    if (cl->sock) return 0;
    if (!cl->cfg.use_curve) return open_plain(cl, err);
    return fkd_wire_client_open(&cl->sock, cl->ctx, cl->id, cl->coord_pk, cl->endpoint, &cl->lim,
                                err);
}

/* Drops the connection and schedules the next HELLO after the backoff. */
static void reconnect_later(fkd_client *cl, const char *why)
{
    fkd_wire_socket_close(&cl->sock);
    double jitter = 0.8 + 0.4 * fkd_rng_uniform(&cl->rng); /* +-20 % (docs/protocol.md 7) */
    double wait = cl->backoff_ms * jitter;
    cl->next_hello_ms = fkd_time_ms() + wait;
    cl->backoff_ms *= 2;
    if (cl->backoff_ms > cl->cfg.backoff_max_ms) cl->backoff_ms = cl->cfg.backoff_max_ms;
    cl->stats.reconnects++;
    fkd_log(cl->log, FKD_LOG_WARN, "reconnect", "reason=\"%s\" wait_ms=%.0f", why, wait);
    set_state(cl, FKD_CLIENT_DISCONNECTED);
}

static int send_bytes(fkd_client *cl, const uint8_t *buf, size_t len, fkd_error *err)
{
    if (fkd_wire_send(cl->sock, NULL, buf, len, FKD_CLIENT_SEND_TIMEOUT_MS, err) != 0) return -1;
    cl->stats.bytes_up += len;
    return 0;
}

static int send_msg(fkd_client *cl, fkd_wire_msg *m, fkd_error *err)
{
    uint8_t *buf;
    size_t len;
    if (fkd_wire_encode(&buf, &len, m, err) != 0) return -1;
    int rc = send_bytes(cl, buf, len, err);
    free(buf);
    return rc;
}

/* ---- what the agent sends ------------------------------------------------------------ */
static int send_hello(fkd_client *cl, fkd_error *err)
{
    fkd_wire_msg m;
    fkd_wire_msg_init(&m, FKD_WIRE_HELLO, cl->id->sign_pk, 0);
    fkd_wire_hello *h = &m.u.hello;
    h->cores = cl->cfg.cores;
    h->memory_mb = cl->cfg.memory_mb;
    h->train_tokens_per_s = cl->stats.last.train_seconds > 0
                                ? (double)cl->stats.last.tokens / cl->stats.last.train_seconds
                                : 0;
    h->local_tokens = cl->train ? (uint64_t)cl->train->n : 0;
    h->model_version = cl->model_version;
    snprintf(h->software, sizeof h->software, "%s", FKD_CLIENT_SOFTWARE);
    if (send_msg(cl, &m, err) != 0) return -1;
    cl->stats.hellos++;
    cl->hello_sent_ms = fkd_time_ms();
    set_state(cl, FKD_CLIENT_HELLO_SENT);
    return 0;
}

static int send_pending(fkd_client *cl, fkd_error *err)
{
    if (!cl->pending) return 0;
    if (cl->pending_len <= cl->chunk_bytes) return send_bytes(cl, cl->pending, cl->pending_len, err);
    uint8_t *copy = malloc(cl->pending_len);
    if (!copy) return fkd_error_set(err, FKD_E_NOMEM, "no memory to send the update");
    memcpy(copy, cl->pending, cl->pending_len);
    return fkd_client_xlink_start(&cl->link, copy, cl->pending_len, FKD_WIRE_UPDATE,
                                  cl->chunk_bytes, cl->pending_round, err);
}

static int send_heartbeat(fkd_client *cl, fkd_error *err)
{
    fkd_wire_msg m;
    fkd_wire_msg_init(&m, FKD_WIRE_HEARTBEAT, cl->id->sign_pk, cl->pending_round);
    m.u.heartbeat.seq = ++cl->beat_seq;
    cl->last_beat_ms = fkd_time_ms();
    return send_msg(cl, &m, err);
}

/* ---- what the agent receives ------------------------------------------------------------ */
static void drop_task(fkd_client *cl)
{
    free(cl->task_buf);
    cl->task_buf = NULL;
}

static int take_task(fkd_client *cl, uint8_t *buf, size_t len, fkd_error *err)
{
    fkd_wire_msg m;
    fkd_error derr;
    if (fkd_wire_decode(&m, buf, len, &cl->lim, &derr) != 0 || m.env.type != FKD_WIRE_TASK) {
        fkd_log(cl->log, FKD_LOG_WARN, "bad_task", "error=\"%s\"", derr.msg);
        free(buf);
        return 0;
    }
    if (cl->pending && m.env.round == cl->pending_round) {
        /* The coordinator asks again for a round we trained: resend. */
        free(buf);
        return send_pending(cl, err);
    }
    if (cl->job_round && m.env.round == cl->job_round) {
        free(buf); /* being trained right now */
        return 0;
    }
    if (m.env.round == cl->acked_round && cl->session == cl->acked_session) {
        /* This coordinator already holds our update of that round (it was
         * resent after a reconnect and crossed the TASK): nothing to do. A
         * TASK of the same round in a NEW session is trained again, since a
         * restarted coordinator lost what the old one acknowledged. */
        free(buf);
        return 0;
    }
    drop_task(cl);
    cl->task_buf = buf;
    cl->task = m;
    cl->stats.tasks++;
    cl->model_version = m.u.task.model_version;
    fkd_wire_msg a;
    fkd_wire_msg_init(&a, FKD_WIRE_ACK, cl->id->sign_pk, m.env.round);
    a.u.ack.acked_type = FKD_WIRE_TASK;
    memcpy(a.u.ack.acked_nonce, m.env.nonce, FKD_WIRE_NONCE_BYTES);
    fkd_error aerr;
    if (cl->sock && send_msg(cl, &a, &aerr) != 0)
        fkd_log(cl->log, FKD_LOG_WARN, "send_failed", "error=\"%s\"", aerr.msg);
    fkd_log(cl->log, FKD_LOG_INFO, "task_received", "round=%llu version=%llu bytes=%zu",
            (unsigned long long)m.env.round, (unsigned long long)m.u.task.model_version, len);
    if (cl->state != FKD_CLIENT_TRAINING) set_state(cl, FKD_CLIENT_TASK_READY);
    return 0;
}

static void drop_pending(fkd_client *cl, uint32_t code)
{
    fkd_log(cl->log, FKD_LOG_WARN, "update_refused", "round=%llu code=%u",
            (unsigned long long)cl->pending_round, code);
    free(cl->pending);
    cl->pending = NULL;
    set_state(cl, FKD_CLIENT_IDLE);
}

static void on_welcome(fkd_client *cl, const fkd_wire_welcome *w, fkd_error *err)
{
    cl->session = w->session;
    if (w->heartbeat_ms >= 50) cl->heartbeat_ms = (int)w->heartbeat_ms;
    if (w->model_version > cl->model_version) cl->model_version = w->model_version;
    if (w->chunk_bytes > 0 && w->chunk_bytes <= cl->lim.max_chunk_bytes)
        cl->chunk_bytes = w->chunk_bytes;
    cl->backoff_ms = cl->cfg.backoff_min_ms;
    fkd_log(cl->log, FKD_LOG_INFO, "welcome", "session=%llu version=%llu",
            (unsigned long long)w->session, (unsigned long long)w->model_version);
    if (cl->job_round) {
        set_state(cl, FKD_CLIENT_TRAINING); /* the job's update follows when it is done */
    } else if (cl->task_buf) {
        set_state(cl, FKD_CLIENT_TASK_READY);
    } else if (cl->pending) {
        set_state(cl, FKD_CLIENT_UPLOADING);
        if (send_pending(cl, err) != 0)
            fkd_log(cl->log, FKD_LOG_WARN, "send_failed", "error=\"%s\"", err->msg);
    } else {
        set_state(cl, FKD_CLIENT_IDLE);
    }
}

static void on_ack(fkd_client *cl, const fkd_wire_ack *a)
{
    if (!cl->pending || a->acked_type != FKD_WIRE_UPDATE ||
        memcmp(a->acked_nonce, cl->pending_nonce, FKD_WIRE_NONCE_BYTES) != 0)
        return;
    free(cl->pending);
    cl->pending = NULL;
    cl->acked_round = cl->pending_round;
    cl->acked_session = cl->session;
    cl->stats.updates_acked++;
    fkd_log(cl->log, FKD_LOG_INFO, "update_acked", "round=%llu",
            (unsigned long long)cl->pending_round);
    set_state(cl, FKD_CLIENT_IDLE);
}

static int on_message(fkd_client *cl, uint8_t *buf, size_t len, fkd_error *err)
{
    fkd_wire_msg m;
    fkd_error derr;
    if (fkd_wire_decode(&m, buf, len, &cl->lim, &derr) != 0) {
        fkd_log(cl->log, FKD_LOG_WARN, "bad_message", "error=\"%s\"", derr.msg);
        return 0;
    }
    int rc = 0;
    uint8_t *payload;
    size_t plen;
    switch (m.env.type) {
    case FKD_WIRE_WELCOME: on_welcome(cl, &m.u.welcome, err); break;
    case FKD_WIRE_REJECT:
        fkd_log(cl->log, FKD_LOG_WARN, "rejected", "reason=\"%s\" retry_ms=%u", m.u.reject.reason,
                m.u.reject.retry_after_ms);
        if (m.u.reject.retry_after_ms == 0) {
            set_state(cl, FKD_CLIENT_REJECTED);
        } else {
            reconnect_later(cl, "rejected");
            cl->next_hello_ms = fkd_time_ms() + m.u.reject.retry_after_ms;
        }
        break;
    case FKD_WIRE_ERROR:
        fkd_log(cl->log, FKD_LOG_WARN, "peer_error", "code=%u text=\"%s\"", m.u.error.code,
                m.u.error.text);
        if (m.u.error.code == FKD_E_PROTOCOL && cl->state != FKD_CLIENT_HELLO_SENT)
            rc = send_hello(cl, err); /* the coordinator lost our session (restart) */
        else if (cl->state == FKD_CLIENT_UPLOADING && cl->pending)
            drop_pending(cl, m.u.error.code); /* refused for good (closed round, ...) */
        break;
    case FKD_WIRE_ACK: on_ack(cl, &m.u.ack); break;
    case FKD_WIRE_TASK: {
        uint8_t *copy = malloc(len);
        if (!copy) return fkd_error_set(err, FKD_E_NOMEM, "no memory for a task");
        memcpy(copy, buf, len);
        rc = take_task(cl, copy, len, err);
        break;
    }
    case FKD_WIRE_XFER_BEGIN:
    case FKD_WIRE_XFER_CHUNK:
    case FKD_WIRE_XFER_CREDIT: {
        fkd_error xerr;
        int done = fkd_client_xlink_on_msg(&cl->link, &m, &payload, &plen, &xerr);
        if (done < 0) fkd_log(cl->log, FKD_LOG_WARN, "xfer_error", "error=\"%s\"", xerr.msg);
        if (done > 0) rc = take_task(cl, payload, plen, err);
        break;
    }
    case FKD_WIRE_BYE:
        fkd_log(cl->log, FKD_LOG_INFO, "bye", "reason=\"%s\"", m.u.bye.reason);
        if (strncmp(m.u.bye.reason, "finished", 8) == 0)
            set_state(cl, FKD_CLIENT_FINISHED);
        else
            reconnect_later(cl, "coordinator said bye");
        break;
    default: break; /* HEARTBEAT: hearing it is the point */
    }
    return rc;
}

/* ---- the loop ------------------------------------------------------------------------------ */
int fkd_client_new(fkd_client **out, const fkd_client_config *cfg, const fkd_wire_identity *id,
                   const uint8_t coord_curve_pk[FKD_WIRE_KEY_BYTES],
                   const fkd_token_stream *train, void *zmq_ctx, const fkd_logger *log,
                   fkd_error *err)
{
    *out = NULL;
    if (!cfg->endpoint || strlen(cfg->endpoint) >= ENDPOINT_MAX || !cfg->state_dir ||
        strlen(cfg->state_dir) >= PATH_MAX_LEN - 64)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "client: endpoint or state_dir missing or "
                             "too long");
    if (fkd_mkdir_p(cfg->state_dir, err) != 0) return -1;
    fkd_client *cl = calloc(1, sizeof *cl);
    if (!cl) return fkd_error_set(err, FKD_E_NOMEM, "no memory for a client");
    cl->cfg = *cfg;
    snprintf(cl->endpoint, sizeof cl->endpoint, "%s", cfg->endpoint);
    snprintf(cl->state_dir, sizeof cl->state_dir, "%s", cfg->state_dir);
    cl->cfg.endpoint = cl->endpoint;
    cl->cfg.state_dir = cl->state_dir;
    if (cl->cfg.backoff_min_ms <= 0) cl->cfg.backoff_min_ms = FKD_CLIENT_BACKOFF_MIN_MS;
    if (cl->cfg.backoff_max_ms < cl->cfg.backoff_min_ms) cl->cfg.backoff_max_ms = FKD_CLIENT_BACKOFF_MAX_MS;
    cl->heartbeat_ms = cfg->heartbeat_ms > 0 ? cfg->heartbeat_ms : FKD_CLIENT_DEFAULT_HEARTBEAT_MS;
    cl->id = id;
    memcpy(cl->coord_pk, coord_curve_pk, FKD_WIRE_KEY_BYTES);
    cl->train = train;
    cl->ctx = zmq_ctx;
    cl->log = log;
    fkd_wire_limits_default(&cl->lim);
    fkd_rng_seed(&cl->rng, cfg->seed ^ id->sign_pk[0] ^ ((uint64_t)id->sign_pk[1] << 8));
    cl->chunk_bytes = FKD_WIRE_DEFAULT_CHUNK;
    cl->backoff_ms = cl->cfg.backoff_min_ms;
    fkd_client_xlink_init(&cl->link, id->sign_pk, &cl->lim, 0);
    cl->state = FKD_CLIENT_DISCONNECTED;
    *out = cl;
    return 0;
}

static int welcomed(const fkd_client *cl)
{
    return cl->state == FKD_CLIENT_IDLE || cl->state == FKD_CLIENT_TASK_READY ||
           cl->state == FKD_CLIENT_UPLOADING || cl->state == FKD_CLIENT_TRAINING;
}

/* Timers: HELLO when the backoff ends, heartbeats, silence and HELLO timeouts. */
static int run_timers(fkd_client *cl, fkd_error *err)
{
    double now = fkd_time_ms();
    if (cl->state == FKD_CLIENT_DISCONNECTED && now >= cl->next_hello_ms) {
        if (open_socket(cl, err) != 0) return -1;
        cl->last_heard_ms = now;
        fkd_error serr;
        if (send_hello(cl, &serr) != 0) reconnect_later(cl, serr.msg);
        return 0;
    }
    double hello_timeout = cl->heartbeat_ms * 2.0;
    if (hello_timeout < FKD_CLIENT_HELLO_TIMEOUT_MS) hello_timeout = FKD_CLIENT_HELLO_TIMEOUT_MS;
    if (cl->state == FKD_CLIENT_HELLO_SENT && now - cl->hello_sent_ms > hello_timeout) {
        reconnect_later(cl, "no answer to HELLO");
        return 0;
    }
    if (!welcomed(cl)) return 0;
    double silence = (double)cl->heartbeat_ms * FKD_CLIENT_SILENCE_BEATS;
    if (silence < FKD_CLIENT_SILENCE_MIN_MS) silence = FKD_CLIENT_SILENCE_MIN_MS;
    if (now - cl->last_heard_ms > silence) {
        reconnect_later(cl, "coordinator silent");
        return 0;
    }
    if (now - cl->last_beat_ms >= cl->heartbeat_ms) {
        fkd_error serr;
        if (send_heartbeat(cl, &serr) != 0) reconnect_later(cl, serr.msg);
    }
    return 0;
}

int fkd_client_poll(fkd_client *cl, int timeout_ms, fkd_error *err)
{
    if (cl->state == FKD_CLIENT_FINISHED || cl->state == FKD_CLIENT_REJECTED) return 0;
    if (run_timers(cl, err) != 0) return -1;
    if (!cl->sock) {
        double wait = cl->next_hello_ms - fkd_time_ms();
        if (wait > timeout_ms) wait = timeout_ms;
        if (wait > 0) zmq_poll(NULL, 0, (long)wait);
        return 0;
    }
    zmq_pollitem_t item = {cl->sock, 0, ZMQ_POLLIN, 0};
    int wait = timeout_ms;
    if (wait > cl->heartbeat_ms / 2) wait = cl->heartbeat_ms / 2;
    int rc = zmq_poll(&item, 1, wait);
    if (rc < 0 && zmq_errno() != EINTR)
        return fkd_error_set(err, FKD_E_NET, "poll: %s", zmq_strerror(zmq_errno()));
    while (rc > 0 && cl->sock) {
        uint8_t *buf;
        size_t len;
        fkd_error rerr;
        if (fkd_wire_recv(cl->sock, NULL, &buf, &len, 0, &cl->lim, &rerr) != 0) break;
        cl->stats.bytes_down += len;
        cl->last_heard_ms = fkd_time_ms();
        int hrc = on_message(cl, buf, len, err);
        free(buf);
        if (hrc != 0) return -1;
        if (cl->state == FKD_CLIENT_FINISHED || cl->state == FKD_CLIENT_REJECTED) return 0;
        item.revents = 0;
        rc = zmq_poll(&item, 1, 0);
    }
    if (cl->sock) {
        fkd_error perr;
        if (fkd_client_xlink_pump(&cl->link, cl->sock, NULL, &cl->stats.bytes_up, &perr) != 0)
            fkd_log(cl->log, FKD_LOG_WARN, "send_failed", "error=\"%s\"", perr.msg);
    }
    if (cl->state == FKD_CLIENT_TASK_READY && cl->cfg.auto_train) return fkd_client_train(cl, err);
    return 0;
}

/* ---- training as a job ---------------------------------------------------------------------- */
struct fkd_client_job {
    uint8_t *task_buf;            /* owned; task points into it */
    fkd_wire_msg task;
    fkd_client_trainer tr;
    fkd_client_result res;
    fkd_wire_msg update;
    uint8_t *sealed;
    int rc;
    fkd_error err;
};

static uint64_t unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int fkd_client_job_take(fkd_client *cl, fkd_client_job **out, fkd_error *err)
{
    *out = NULL;
    if (cl->state != FKD_CLIENT_TASK_READY || !cl->task_buf)
        return fkd_error_set(err, FKD_E_PROTOCOL, "no task to train");
    uint64_t round = cl->task.env.round;
    if (cl->task.u.task.deadline_ms > 0 && unix_ms() > cl->task.u.task.deadline_ms) {
        fkd_log(cl->log, FKD_LOG_WARN, "task_expired", "round=%llu", (unsigned long long)round);
        drop_task(cl);
        set_state(cl, FKD_CLIENT_IDLE);
        return 0;
    }
    fkd_client_job *j = calloc(1, sizeof *j);
    if (!j) return fkd_error_set(err, FKD_E_NOMEM, "no memory for a training job");
    j->task_buf = cl->task_buf;
    j->task = cl->task;
    cl->task_buf = NULL;
    j->tr = (fkd_client_trainer){.id = cl->id, .coord_curve_pk = cl->coord_pk, .train = cl->train,
                                 .state_dir = cl->state_dir,
                                 .memory_budget_bytes = (size_t)cl->cfg.memory_mb << 20,
                                 .attack_scale = cl->cfg.attack_scale};
    cl->job_round = round;
    set_state(cl, FKD_CLIENT_TRAINING);
    *out = j;
    return 0;
}

int fkd_client_job_run(fkd_client_job *j)
{
    j->rc = fkd_client_run_task(&j->res, &j->update, &j->sealed, &j->task, &j->tr, &j->err);
    return j->rc;
}

static void job_free(fkd_client_job **jp)
{
    fkd_client_job *j = *jp;
    if (!j) return;
    free(j->sealed);
    free(j->task_buf);
    free(j);
    *jp = NULL;
}

/* After a job: the task that arrived meanwhile, the upload, or nothing. */
static void after_job(fkd_client *cl)
{
    cl->job_round = 0;
    /* Training kept an inline agent from hearing the coordinator; that is
     * not the coordinator's silence. */
    cl->last_heard_ms = fkd_time_ms();
    set_state(cl, cl->task_buf ? FKD_CLIENT_TASK_READY
                  : cl->pending ? FKD_CLIENT_UPLOADING
                                : FKD_CLIENT_IDLE);
}

int fkd_client_job_finish(fkd_client *cl, fkd_client_job **jp, fkd_error *err)
{
    fkd_client_job *j = *jp;
    if (!j) return 0;
    uint64_t round = j->task.env.round;
    if (j->rc != 0) {
        /* A task this device cannot do (memory, a malformed model) is
         * skipped, not fatal: the coordinator's deadline covers it. */
        fkd_log(cl->log, FKD_LOG_ERROR, "train_failed", "round=%llu error=\"%s\"",
                (unsigned long long)round, j->err.msg);
        job_free(jp);
        after_job(cl);
        return 0;
    }
    free(cl->pending);
    cl->pending = NULL;
    int rc = fkd_wire_encode(&cl->pending, &cl->pending_len, &j->update, err);
    if (rc == 0) {
        memcpy(cl->pending_nonce, j->update.env.nonce, FKD_WIRE_NONCE_BYTES);
        cl->pending_round = round;
        cl->stats.last = j->res;
        cl->stats.last_round = round;
        const fkd_client_result *r = &j->res;
        fkd_log(cl->log, FKD_LOG_INFO, "trained",
                "round=%llu loss=%.4f steps=%lld tokens=%lld seconds=%.2f update_bytes=%zu "
                "ratio=%.1f micro_batch=%d recompute=%d",
                (unsigned long long)round, r->loss, (long long)r->steps, (long long)r->tokens,
                r->train_seconds, cl->pending_len, r->compress_ratio, r->plan.micro_batch,
                r->plan.recompute);
    }
    job_free(jp);
    after_job(cl);
    if (rc != 0) return -1;
    if (cl->sock && welcomed(cl)) {
        fkd_error serr;
        if (send_pending(cl, &serr) != 0) reconnect_later(cl, serr.msg);
    }
    return 0;
}

int fkd_client_train(fkd_client *cl, fkd_error *err)
{
    fkd_client_job *j;
    if (fkd_client_job_take(cl, &j, err) != 0) return -1;
    if (!j) return 0; /* expired */
    fkd_client_job_run(j);
    return fkd_client_job_finish(cl, &j, err);
}

int fkd_client_state(const fkd_client *cl) { return cl->state; }
const fkd_client_stats *fkd_client_get_stats(const fkd_client *cl) { return &cl->stats; }

void fkd_client_free(fkd_client **clp)
{
    fkd_client *cl = *clp;
    if (!cl) return;
    if (cl->sock && welcomed(cl)) {
        fkd_wire_msg m;
        fkd_wire_msg_init(&m, FKD_WIRE_BYE, cl->id->sign_pk, 0);
        snprintf(m.u.bye.reason, sizeof m.u.bye.reason, "client stopping");
        send_msg(cl, &m, NULL);
    }
    fkd_wire_socket_close(&cl->sock);
    fkd_client_xlink_free(&cl->link);
    drop_task(cl);
    free(cl->pending);
    free(cl);
    *clp = NULL;
}
