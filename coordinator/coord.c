/* coord.c — the round engine: sessions, the round state machine, and what
 * happens between an UPDATE arriving and the next round's TASK.
 *
 *   WAITING ──(enough clients connected)──> COLLECTING ──(close)──> WAITING
 *      └───────────(rounds done)───────────> DONE
 *
 * COLLECTING closes when the target number of updates arrived, when every
 * selected client delivered or vanished, or at the deadline. With at least
 * min_updates the round aggregates into the fp32 master, re-quantizes it
 * (the next TASK's weights and the deployment file), evaluates it on the
 * held-out text and checkpoints; with fewer the round is abandoned and
 * started again with a fresh selection, the master untouched.
 *
 * Clients are known by their Ed25519 id. Over tcp:// the ZAP handler has
 * already checked the transport key against the allow-list and vouches for
 * the id; the engine checks the id against the allow-list itself too, so an
 * inproc:// deployment (no CURVE) is still limited to listed clients. Every
 * update is sealed (signed by the client, encrypted to us) and bound to the
 * round and model version, so neither a replay nor another client's update
 * can be slipped in. */
#include "agg_internal.h"
#include "server_train.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zmq.h>

#define SEND_TIMEOUT_MS 200
#define REPLAY_CAPACITY 65536
#define XFER_SLACK_BYTES ((size_t)1 << 20) /* headers, indices, seal, metrics */
#define PATH_BYTES (FKD_COORD_PATH_MAX + 64)

typedef struct {
    fkd_coord_client_record rec;   /* persisted */
    int connected;
    fkd_wire_peer peer;
    double last_seen_ms, last_beat_ms;
    uint64_t session;
    fkd_wire_hello hello;
    int selected, delivered, gone;
    int fits;                      /* its memory budget can train the student */
    fkd_client_xlink link;
} slot;

typedef struct {
    uint8_t owner[FKD_WIRE_ID_BYTES];
    float *delta;                  /* a delta update, or NULL */
    fkd_lora *lora;                /* an adapter update (agg_lora.c), or NULL */
    double weight, loss;
    uint64_t bytes;
} collected;

struct fkd_coord {
    fkd_coord_config cfg;
    const fkd_wire_identity *id;
    const fkd_logger *log;
    void *sock;
    fkd_wire_limits lim;
    fkd_wire_limits xlim;          /* for clients' transfers: at most a dense update */
    fkd_params master;
    fkd_coord_agg agg;
    fkd_rng rng;
    uint64_t round;                /* completed rounds = model version */
    slot *slots;                   /* sorted by id */
    int n_slots, cap_slots;
    fkd_wire_allowlist allow;
    int have_allow;
    fkd_wire_replay *replay;
    int phase;
    double wait_since_ms, round_start_ms, deadline_ms, next_beat_ms;
    uint64_t deadline_unix_ms;
    int target, n_selected;
    int late;                      /* late updates since the last round ended */
    collected *ups;
    int n_ups;
    fkd_coord_round_stats cur;
    fkd_coord_round_stats *history;
    int n_history;
    uint8_t *qweights;             /* the master re-quantized for TASKs */
    size_t qweights_len;
    uint8_t *task;                 /* this round's TASK, encoded once, borrowed by every link */
    size_t task_len;
    uint8_t **shards;
    size_t *shard_len;
    int n_shards;
    /* The int4 deploy recipe's calibration text: the first shard's first
     * public tokens, kept from its one decode at the start. */
    int32_t *calib_tokens;
    int64_t n_calib;
    fkd_token_stream eval;
    fkd_coord_server server;       /* server-side training between rounds (server_train.c) */
    uint64_t sessions;
};

/* ---- small helpers ------------------------------------------------------------------ */
static uint64_t unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void id_hex(char out[17], const uint8_t *id)
{
    for (int i = 0; i < 8; i++) snprintf(out + 2 * i, 3, "%02x", id[i]);
}

static int path_in(char *out, const fkd_coord *c, const char *name)
{
    int n = snprintf(out, PATH_BYTES, "%s/%s", c->cfg.state_dir, name);
    return n > 0 && n < PATH_BYTES ? 0 : -1;
}

static slot *find_slot(fkd_coord *c, const uint8_t *id)
{
    int lo = 0, hi = c->n_slots;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        int d = memcmp(c->slots[mid].rec.sign_pk, id, FKD_WIRE_ID_BYTES);
        if (d == 0) return &c->slots[mid];
        if (d < 0) lo = mid + 1; else hi = mid;
    }
    return NULL;
}

/* Inserts id in order (the registry's order is the selection's order). */
static slot *add_slot(fkd_coord *c, const uint8_t *id, fkd_error *err)
{
    if (c->n_slots >= FKD_COORD_MAX_CLIENTS) {
        fkd_error_set(err, FKD_E_LIMIT, "registry full (%d clients)", FKD_COORD_MAX_CLIENTS);
        return NULL;
    }
    if (c->n_slots == c->cap_slots) {
        int cap = c->cap_slots ? 2 * c->cap_slots : 16;
        slot *s = realloc(c->slots, (size_t)cap * sizeof *s);
        if (!s) {
            fkd_error_set(err, FKD_E_NOMEM, "no memory for the client registry");
            return NULL;
        }
        c->slots = s;
        c->cap_slots = cap;
    }
    int at = 0;
    while (at < c->n_slots && memcmp(c->slots[at].rec.sign_pk, id, FKD_WIRE_ID_BYTES) < 0) at++;
    memmove(&c->slots[at + 1], &c->slots[at], (size_t)(c->n_slots - at) * sizeof *c->slots);
    slot *s = &c->slots[at];
    memset(s, 0, sizeof *s);
    memcpy(s->rec.sign_pk, id, FKD_WIRE_ID_BYTES);
    fkd_client_xlink_init(&s->link, c->id->sign_pk, &c->xlim, 0);
    c->n_slots++;
    return s;
}

static slot *slot_by_peer(fkd_coord *c, const fkd_wire_peer *p)
{
    for (int i = 0; i < c->n_slots; i++) {
        slot *s = &c->slots[i];
        if (s->connected && s->peer.routing_len == p->routing_len &&
            memcmp(s->peer.routing_id, p->routing_id, p->routing_len) == 0)
            return s;
    }
    return NULL;
}

static int send_to(fkd_coord *c, const fkd_wire_peer *peer, fkd_wire_msg *m, fkd_error *err)
{
    uint8_t *buf;
    size_t len;
    if (fkd_wire_encode(&buf, &len, m, err) != 0) return -1;
    int rc = fkd_wire_send(c->sock, peer, buf, len, SEND_TIMEOUT_MS, err);
    free(buf);
    if (rc == 0 && c->phase == FKD_COORD_COLLECTING) c->cur.bytes_down += len;
    return rc;
}

static void send_error(fkd_coord *c, const fkd_wire_peer *peer, int code, const char *text)
{
    fkd_wire_msg m;
    fkd_wire_msg_init(&m, FKD_WIRE_ERROR, c->id->sign_pk, c->round);
    m.u.error.code = (uint32_t)code;
    snprintf(m.u.error.text, sizeof m.u.error.text, "%.*s", FKD_WIRE_TEXT_MAX, text);
    send_to(c, peer, &m, NULL);
}

static void send_reject(fkd_coord *c, const fkd_wire_peer *peer, int code, const char *why)
{
    fkd_wire_msg m;
    fkd_wire_msg_init(&m, FKD_WIRE_REJECT, c->id->sign_pk, 0);
    m.u.reject.code = (uint32_t)code;
    snprintf(m.u.reject.reason, sizeof m.u.reject.reason, "%.*s", FKD_WIRE_TEXT_MAX, why);
    send_to(c, peer, &m, NULL);
}

/* The client is gone for this round (vanished, said BYE, timed out). */
static void lose(fkd_coord *c, slot *s, const char *why)
{
    char hex[17];
    id_hex(hex, s->rec.sign_pk);
    if (s->connected)
        fkd_log(c->log, FKD_LOG_WARN, "client_lost", "client=%s reason=\"%s\" round=%llu", hex,
                why, (unsigned long long)(c->round + 1));
    s->connected = 0;
    /* The link is kept: if the client comes back this round, its download
     * resumes where it stopped (clear_round drops it at the round's end). */
    if (c->phase == FKD_COORD_COLLECTING && s->selected && !s->delivered && !s->gone) {
        s->gone = 1;
        c->cur.vanished++;
    }
}

/* ---- model artefacts -------------------------------------------------------------------- */
static int requantize(fkd_coord *c, fkd_error *err)
{
    fkd_qmodel qm;
    int type = fkd_coord_mode_quant(c->cfg.client_mode, c->cfg.task_quant);
    if (fkd_qmodel_quantize(&qm, &c->master, type, NULL, err) != 0) return -1;
    free(c->qweights);
    c->qweights = NULL;
    int rc = fkd_qmodel_encode(&c->qweights, &c->qweights_len, &qm, err);
    fkd_qmodel_free(&qm);
    return rc;
}

static int save_deployment(fkd_coord *c, fkd_error *err)
{
    char path[PATH_BYTES];
    if (path_in(path, c, FKD_COORD_DEPLOY_FILE) != 0)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "state_dir too long");
    /* int4: GPTQ on the first shard's public tokens (none without soft labels) */
    fkd_token_stream calib = {0};
    calib.tokens = c->calib_tokens;
    calib.n = c->n_calib;
    fkd_qmodel qm;
    int rc = fkd_qmodel_quantize_deploy(&qm, &c->master, c->cfg.deploy_quant, NULL, &calib, err);
    if (rc != 0) return -1;
    rc = fkd_qmodel_save(path, &qm, err);
    fkd_qmodel_free(&qm);
    if (rc == 0 && path_in(path, c, FKD_COORD_MASTER_FILE) == 0)
        rc = fkd_checkpoint_save(path, &c->master, err);
    return rc;
}

static int has_suffix(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int keep_calibration(fkd_coord *c, const fkd_softlabel_shard *sh, fkd_error *err)
{
    int64_t n = sh->n < FKD_QIMATRIX_DEFAULT_TOKENS ? sh->n : FKD_QIMATRIX_DEFAULT_TOKENS;
    c->calib_tokens = malloc((size_t)(n ? n : 1) * sizeof *c->calib_tokens);
    if (!c->calib_tokens) return fkd_error_set(err, FKD_E_NOMEM, "no memory for calibration text");
    memcpy(c->calib_tokens, sh->tokens, (size_t)n * sizeof *c->calib_tokens);
    c->n_calib = n;
    return 0;
}

/* Soft-label shards: one file, or every *.soft of a folder in name order.
 * Each is decoded once here so a bad shard stops the start, not a round. */
static int add_shard(fkd_coord *c, const char *path, fkd_error *err)
{
    uint8_t *data;
    size_t bytes;
    if (fkd_file_read_all(&data, &bytes, path, FKD_WIRE_DEFAULT_MAX_MESSAGE / 2, err) != 0)
        return -1;
    fkd_softlabel_shard sh;
    if (fkd_softlabels_decode(&sh, data, bytes, err) != 0) {
        free(data);
        return -1;
    }
    int vocab = sh.vocab;
    int rc = c->n_shards == 0 ? keep_calibration(c, &sh, err) : 0;
    fkd_softlabels_free(&sh);
    if (rc != 0) {
        free(data);
        return -1;
    }
    if (vocab != c->cfg.model.vocab) {
        free(data);
        return fkd_error_set(err, FKD_E_MISMATCH, "soft labels %s are for vocabulary %d, the "
                             "student has %d", path, vocab, c->cfg.model.vocab);
    }
    uint8_t **sh2 = realloc(c->shards, (size_t)(c->n_shards + 1) * sizeof *sh2);
    size_t *len2 = sh2 ? realloc(c->shard_len, (size_t)(c->n_shards + 1) * sizeof *len2) : NULL;
    if (sh2) c->shards = sh2;
    if (!sh2 || !len2) {
        free(data);
        return fkd_error_set(err, FKD_E_NOMEM, "no memory for soft labels");
    }
    c->shard_len = len2;
    c->shards[c->n_shards] = data;
    c->shard_len[c->n_shards++] = bytes;
    return 0;
}

static int load_shards(fkd_coord *c, fkd_error *err)
{
    const char *p = c->cfg.softlabels;
    if (!p[0]) return 0;
    struct stat st;
    if (stat(p, &st) != 0) return fkd_error_set(err, FKD_E_IO, "softlabels %s does not exist", p);
    if (!S_ISDIR(st.st_mode)) return add_shard(c, p, err);
    DIR *d = opendir(p);
    if (!d) return fkd_error_set(err, FKD_E_IO, "cannot open softlabels folder %s", p);
    char *names[4096];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 4096)
        if (e->d_name[0] != '.' && has_suffix(e->d_name, ".soft")) names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    int rc = 0;
    for (int i = 0; i < n; i++) {
        char path[PATH_BYTES + 256];
        snprintf(path, sizeof path, "%s/%s", p, names[i]);
        if (rc == 0 && names[i]) rc = add_shard(c, path, err);
        free(names[i]);
    }
    if (rc == 0 && c->n_shards == 0)
        return fkd_error_set(err, FKD_E_IO, "softlabels folder %s has no *.soft file", p);
    return rc;
}

/* ---- checkpoint ---------------------------------------------------------------------------- */
static int checkpoint(fkd_coord *c, fkd_error *err)
{
    fkd_coord_state s = {0};
    s.round = c->round;
    s.rng = c->rng;
    s.master = c->master;
    s.m = c->agg.m;
    s.v = c->agg.v;
    s.n_moments = c->agg.m ? c->agg.n : 0;
    s.agg_step = c->agg.step;
    s.n_clients = (uint32_t)c->n_slots;
    s.clients = malloc((c->n_slots ? c->n_slots : 1) * sizeof *s.clients);
    if (!s.clients) return fkd_error_set(err, FKD_E_NOMEM, "no memory for the checkpoint");
    for (int i = 0; i < c->n_slots; i++) s.clients[i] = c->slots[i].rec;
    s.history = c->history;
    s.n_history = (uint32_t)c->n_history;
    char path[PATH_BYTES];
    int rc = path_in(path, c, FKD_COORD_STATE_FILE) == 0
                 ? fkd_coord_state_save(path, &s, err)
                 : fkd_error_set(err, FKD_E_INVALID_ARG, "state_dir too long");
    free(s.clients);
    return rc;
}

/* rounds.jsonl is rewritten whole from the history (kept in the state), so
 * it never disagrees with the checkpoint, whatever moment a crash hits. */
static int write_rounds_file(fkd_coord *c, fkd_error *err)
{
    char path[PATH_BYTES];
    if (path_in(path, c, FKD_COORD_ROUNDS_FILE) != 0)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "state_dir too long");
    fkd_atomic_file af;
    if (fkd_atomic_open(&af, path, err) != 0) return -1;
    for (int i = 0; i < c->n_history; i++) {
        const fkd_coord_round_stats *h = &c->history[i];
        fprintf(af.f,
                "{\"round\":%llu,\"selected\":%d,\"target\":%d,\"updates\":%d,\"late\":%d,"
                "\"vanished\":%d,\"rejected\":%d,\"perplexity\":%.6f,\"eval_loss\":%.6f,"
                "\"bits_per_byte\":%.6f,\"accuracy\":%.6f,\"client_loss\":%.6f,"
                "\"bytes_down\":%llu,\"bytes_up\":%llu,\"seconds\":%.3f,\"clip_bound\":%.6g,"
                "\"server_seconds\":%.3f,\"server_loss\":%.6f}\n",
                (unsigned long long)h->round, h->selected, h->target, h->updates, h->late,
                h->vanished, h->rejected, h->perplexity, h->eval_loss, h->bits_per_byte,
                h->accuracy, h->client_loss, (unsigned long long)h->bytes_down,
                (unsigned long long)h->bytes_up, h->seconds, h->clip_bound, h->server_seconds,
                h->server_loss);
    }
    if (ferror(af.f)) af.failed = 1;
    return fkd_atomic_commit(&af, err);
}

static int restore(fkd_coord *c, fkd_error *err)
{
    char path[PATH_BYTES];
    if (path_in(path, c, FKD_COORD_STATE_FILE) != 0)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "state_dir too long");
    struct stat st;
    if (stat(path, &st) != 0) return 0; /* a fresh start */
    fkd_coord_state s;
    if (fkd_coord_state_load(&s, path, err) != 0) return -1;
    if (s.n_moments && !c->agg.m) {
        fkd_coord_state_free(&s);
        return fkd_error_set(err, FKD_E_MISMATCH, "the checkpoint holds server moments but "
                             "aggregator %s keeps none: resume with the same aggregator",
                             c->cfg.aggregator);
    }
    if (s.master.n_params != c->master.n_params ||
        memcmp(&s.master.cfg, &c->master.cfg, sizeof s.master.cfg) != 0) {
        fkd_coord_state_free(&s);
        return fkd_error_set(err, FKD_E_MISMATCH, "the checkpoint in %s is of another model "
                             "shape than the configuration", c->cfg.state_dir);
    }
    memcpy(c->master.memory, s.master.memory, s.master.n_params * sizeof(float));
    if (s.n_moments) {
        memcpy(c->agg.m, s.m, s.n_moments * sizeof(float));
        memcpy(c->agg.v, s.v, s.n_moments * sizeof(float));
    }
    c->agg.step = s.agg_step;
    c->round = s.round;
    c->rng = s.rng;
    int rc = 0;
    for (uint32_t i = 0; i < s.n_clients && rc == 0; i++) {
        slot *sl = add_slot(c, s.clients[i].sign_pk, err);
        if (!sl) rc = -1;
        else sl->rec = s.clients[i];
    }
    if (rc == 0 && s.n_history) {
        c->history = s.history;
        c->n_history = (int)s.n_history;
        s.history = NULL;
    }
    fkd_coord_state_free(&s);
    if (rc == 0)
        fkd_log(c->log, FKD_LOG_INFO, "resumed", "round=%llu clients=%d",
                (unsigned long long)c->round, c->n_slots);
    return rc;
}

/* ---- construction ------------------------------------------------------------------------------ */
static int init_master(fkd_coord *c, fkd_error *err)
{
    if (c->cfg.init[0]) {
        if (fkd_checkpoint_load(&c->master, c->cfg.init, err) != 0) return -1;
        if (memcmp(&c->master.cfg, &c->cfg.model, sizeof c->cfg.model) != 0)
            c->cfg.model = c->master.cfg; /* the checkpoint's shape wins */
        return 0;
    }
    if (fkd_params_init(&c->master, &c->cfg.model, err) != 0) return -1;
    fkd_params_randomize(&c->master, c->cfg.seed);
    return 0;
}

int fkd_coord_new(fkd_coord **out, const fkd_coord_config *cfg, const fkd_wire_identity *id,
                  const fkd_logger *log, fkd_error *err)
{
    *out = NULL;
    if (fkd_coord_config_validate(cfg, err) != 0) return -1;
    fkd_coord *c = calloc(1, sizeof *c);
    if (!c) return fkd_error_set(err, FKD_E_NOMEM, "no memory for the coordinator");
    c->cfg = *cfg;
    c->id = id;
    c->log = log;
    fkd_wire_limits_default(&c->lim);
    fkd_rng_seed(&c->rng, cfg->seed ^ 0x73656c656374ULL);
    int rc = fkd_mkdir_p(cfg->state_dir, err);
    if (rc == 0) rc = init_master(c, err);
    if (rc == 0) rc = fkd_coord_agg_init(&c->agg, &c->cfg, c->master.n_params, err);
    /* The largest UPDATE a client can need is a dense f32 delta, sealed and
     * framed; a transfer announcing more is refused before any allocation. */
    c->xlim = c->lim;
    if (rc == 0 && c->master.n_params * 4 + XFER_SLACK_BYTES < c->xlim.max_message_bytes)
        c->xlim.max_message_bytes = c->master.n_params * 4 + XFER_SLACK_BYTES;
    if (rc == 0) rc = fkd_wire_replay_new(&c->replay, REPLAY_CAPACITY, err);
    if (rc == 0 && cfg->allowlist[0]) {
        rc = fkd_wire_allowlist_load(&c->allow, cfg->allowlist, err);
        c->have_allow = rc == 0;
    }
    if (rc == 0) rc = load_shards(c, err);
    if (rc == 0) rc = fkd_coord_eval_load(&c->eval, &c->cfg, err);
    if (rc == 0) rc = restore(c, err);
    if (rc == 0)
        rc = fkd_coord_server_init(&c->server, &c->cfg, &c->master, c->shards, c->shard_len,
                                   c->n_shards, err);
    if (rc == 0) rc = requantize(c, err);
    if (rc != 0) {
        fkd_coord_free(&c);
        return -1;
    }
    c->phase = c->round >= (uint64_t)cfg->rounds ? FKD_COORD_DONE : FKD_COORD_WAITING;
    c->wait_since_ms = fkd_time_ms();
    fkd_log(c->log, FKD_LOG_INFO, "coordinator_ready",
            "round=%llu rounds=%d params=%zu aggregator=%s shards=%d eval_tokens=%lld",
            (unsigned long long)c->round, cfg->rounds, c->master.n_params, cfg->aggregator,
            c->n_shards, (long long)c->eval.n);
    *out = c;
    return 0;
}

void fkd_coord_attach(fkd_coord *c, void *sock) { c->sock = sock; }

static void clear_round(fkd_coord *c)
{
    for (int i = 0; i < c->n_ups; i++) {
        free(c->ups[i].delta);
        fkd_coord_lora_destroy(&c->ups[i].lora);
    }
    free(c->ups);
    c->ups = NULL;
    c->n_ups = 0;
    for (int i = 0; i < c->n_slots; i++) {
        slot *s = &c->slots[i];
        /* Nothing more to send for a round that is over; and the links
         * borrow the round's TASK, freed below. */
        if (s->selected) fkd_client_xlink_drop_send(&s->link);
        s->selected = s->delivered = s->gone = 0;
    }
    free(c->task);
    c->task = NULL;
    c->task_len = 0;
    c->n_selected = 0;
}

void fkd_coord_free(fkd_coord **cp)
{
    fkd_coord *c = *cp;
    if (!c) return;
    clear_round(c);
    for (int i = 0; i < c->n_slots; i++) fkd_client_xlink_free(&c->slots[i].link);
    free(c->slots);
    fkd_coord_server_free(&c->server); /* borrows the master: first */
    fkd_params_free(&c->master);
    fkd_coord_agg_free(&c->agg);
    fkd_wire_replay_free(&c->replay);
    if (c->have_allow) fkd_wire_allowlist_free(&c->allow);
    for (int i = 0; i < c->n_shards; i++) free(c->shards[i]);
    free(c->shards);
    free(c->shard_len);
    free(c->calib_tokens);
    fkd_token_stream_free(&c->eval);
    free(c->qweights);
    free(c->history);
    free(c);
    *cp = NULL;
}

/* ---- the TASK --------------------------------------------------------------------------------- */
static uint64_t round_seed(uint64_t seed, uint64_t round)
{
    uint64_t z = seed ^ (round * 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return (z ^ (z >> 31)) & ((1ULL << 52) - 1); /* exact as a msgpack float64 */
}

static void fill_hparams(const fkd_coord *c, fkd_wire_task *t, uint64_t round)
{
    const fkd_coord_config *g = &c->cfg;
    fkd_wire_kvmap *h = &t->hparams, *z = &t->compression;
    fkd_wire_kv_set(h, "steps", g->local_steps, NULL);
    fkd_wire_kv_set(h, "batch", g->batch, NULL);
    fkd_wire_kv_set(h, "seq", g->seq, NULL);
    fkd_wire_kv_set(h, "warmup", g->warmup, NULL);
    fkd_wire_kv_set(h, "lr", g->lr * fkd_coord_lr_scale(g, round), NULL);
    fkd_wire_kv_set(h, "weight_decay", g->weight_decay, NULL);
    fkd_wire_kv_set(h, "grad_clip", g->grad_clip, NULL);
    fkd_wire_kv_set(h, "alpha", g->alpha, NULL);
    fkd_wire_kv_set(h, "temperature", g->temperature, NULL);
    fkd_wire_kv_set(h, "transfer_share", g->transfer_share, NULL);
    fkd_wire_kv_set(h, "prox_mu", strcmp(g->aggregator, "fedprox") == 0 ? g->prox_mu : 0, NULL);
    fkd_wire_kv_set(h, "seed", (double)round_seed(g->seed, round), NULL);
    fkd_coord_lora_hparams(h, g);
    fkd_wire_kv_set(z, "fraction", g->up_fraction, NULL);
    fkd_wire_kv_set(z, "value_format", g->up_format, NULL);
    fkd_wire_kv_set(z, "stochastic", g->up_stochastic, NULL);
}

/* Encodes the round's TASK once: every selected client gets the same bytes
 * (one copy in memory however many clients a round selects). */
static int encode_task(fkd_coord *c, fkd_error *err)
{
    uint64_t round = c->round + 1;
    fkd_wire_msg m;
    fkd_wire_msg_init(&m, FKD_WIRE_TASK, c->id->sign_pk, round);
    fkd_wire_task *t = &m.u.task;
    t->model_version = c->round;
    t->deadline_ms = c->deadline_unix_ms;
    t->weights.data = c->qweights;
    t->weights.len = c->qweights_len;
    /* Empty blobs still point somewhere: the encoder copies them with memcpy. */
    static const uint8_t none[1];
    t->student_config.data = none;
    t->soft_labels.data = none;
    if (c->n_shards && c->cfg.transfer_share > 0) { /* else the clients would not use them */
        int k = (int)((round - 1) % (uint64_t)c->n_shards);
        t->soft_labels.data = c->shards[k];
        t->soft_labels.len = c->shard_len[k];
    }
    fill_hparams(c, t, round);
    free(c->task);
    c->task = NULL;
    return fkd_wire_encode(&c->task, &c->task_len, &m, err);
}

static int send_task(fkd_coord *c, slot *s, fkd_error *err)
{
    return fkd_client_xlink_start_borrowed(&s->link, c->task, c->task_len, FKD_WIRE_TASK,
                                           c->cfg.chunk_bytes, c->round + 1, err);
}

/* ---- round start ------------------------------------------------------------------------------- */
static int start_round(fkd_coord *c, int n_avail, fkd_error *err)
{
    int *cand = malloc((size_t)n_avail * sizeof *cand), *pick = malloc((size_t)n_avail * sizeof *pick);
    if (!cand || !pick) {
        free(cand);
        free(pick);
        return fkd_error_set(err, FKD_E_NOMEM, "no memory to select clients");
    }
    int n = 0;
    for (int i = 0; i < c->n_slots; i++)
        if (c->slots[i].connected && c->slots[i].fits) cand[n++] = i;
    c->target = fkd_coord_target(&c->cfg, n);
    int want = (int)ceil(c->target * (1.0 + c->cfg.over_select) - 1e-9);
    int got = fkd_coord_select(pick, want, n, &c->rng);
    memset(&c->cur, 0, sizeof c->cur);
    c->cur.round = c->round + 1;
    c->cur.target = c->target;
    c->round_start_ms = fkd_time_ms();
    c->deadline_ms = c->round_start_ms + c->cfg.round_timeout_ms;
    c->deadline_unix_ms = unix_ms() + (uint64_t)c->cfg.round_timeout_ms;
    c->next_beat_ms = c->round_start_ms + c->cfg.heartbeat_ms;
    c->phase = FKD_COORD_COLLECTING;
    c->ups = calloc((size_t)(got > 0 ? got : 1), sizeof *c->ups);
    int rc = c->ups ? 0 : fkd_error_set(err, FKD_E_NOMEM, "no memory for the round");
    if (rc == 0) rc = encode_task(c, err);
    for (int i = 0; i < got && rc == 0; i++) {
        slot *s = &c->slots[cand[pick[i]]];
        s->selected = 1;
        rc = send_task(c, s, err);
    }
    c->n_selected = got;
    c->cur.selected = got;
    free(cand);
    free(pick);
    fkd_log(c->log, FKD_LOG_INFO, "round_start", "round=%llu connected=%d selected=%d target=%d "
            "deadline_ms=%d", (unsigned long long)c->cur.round, n, got, c->target,
            c->cfg.round_timeout_ms);
    return rc;
}

/* ---- updates ------------------------------------------------------------------------------------- */
static int open_update(float **delta, fkd_lora **lora, fkd_coord *c, const slot *s,
                       const fkd_wire_msg *m, fkd_error *err)
{
    const fkd_wire_update *u = &m->u.update;
    uint32_t want = fkd_coord_mode_kind(c->cfg.client_mode);
    if (fkd_coord_kind_check(c->cfg.client_mode, u->kind, err) != 0) return -1;
    fkd_wire_seal_ctx ctx = {.round = m->env.round, .model_version = u->model_version};
    memcpy(ctx.client_id, s->rec.sign_pk, FKD_WIRE_ID_BYTES);
    size_t cap = fkd_wire_open_bytes(u->sealed.len), plain_len;
    if (cap == 0) return fkd_error_set(err, FKD_E_FORMAT, "sealed update too short");
    uint8_t *plain = malloc(cap);
    *delta = want == FKD_WIRE_UPDATE_DELTA ? malloc(c->master.n_params * sizeof **delta) : NULL;
    int rc = plain && (*delta || want != FKD_WIRE_UPDATE_DELTA)
                 ? 0 : fkd_error_set(err, FKD_E_NOMEM, "no memory for an update");
    if (rc == 0)
        rc = fkd_wire_open(plain, cap, &plain_len, u->sealed.data, u->sealed.len, &ctx, c->id,
                           c->replay, err);
    if (rc == 0 && want == FKD_WIRE_UPDATE_LORA)
        rc = fkd_coord_lora_open(lora, &c->master.cfg, &c->cfg, plain, plain_len, err);
    else if (rc == 0)
        rc = fkd_update_decompress(*delta, c->master.n_params, plain, plain_len, err);
    for (size_t i = 0; rc == 0 && *delta && i < c->master.n_params; i++)
        if (!isfinite((*delta)[i])) rc = fkd_error_set(err, FKD_E_FORMAT, "update not finite");
    free(plain);
    if (rc != 0) {
        free(*delta);
        *delta = NULL;
    }
    return rc;
}

static void ack(fkd_coord *c, slot *s, const fkd_wire_msg *m)
{
    fkd_wire_msg a;
    fkd_wire_msg_init(&a, FKD_WIRE_ACK, c->id->sign_pk, m->env.round);
    a.u.ack.acked_type = m->env.type;
    memcpy(a.u.ack.acked_nonce, m->env.nonce, FKD_WIRE_NONCE_BYTES);
    send_to(c, &s->peer, &a, NULL);
}

static void on_update(fkd_coord *c, slot *s, const fkd_wire_msg *m, size_t bytes)
{
    char hex[17];
    id_hex(hex, s->rec.sign_pk);
    const fkd_wire_update *u = &m->u.update;
    uint64_t expect = c->round + 1;
    int collecting = c->phase == FKD_COORD_COLLECTING;
    if (collecting && m->env.round == expect && s->selected && s->delivered) {
        ack(c, s, m); /* a resend of the update we hold: its ACK was lost */
        return;
    }
    if (m->env.round < expect) {
        /* For a round already closed: dropped and counted (docs/protocol.md 7.2). */
        c->late++;
        fkd_log(c->log, FKD_LOG_WARN, "update_late", "client=%s round=%llu current=%llu", hex,
                (unsigned long long)m->env.round, (unsigned long long)expect);
        send_error(c, &s->peer, FKD_E_TIMEOUT, "the round of this update is closed");
        return;
    }
    if (!collecting || m->env.round != expect || !s->selected || u->model_version != c->round) {
        fkd_log(c->log, FKD_LOG_WARN, "update_unexpected", "client=%s round=%llu version=%llu "
                "current=%llu", hex, (unsigned long long)m->env.round,
                (unsigned long long)u->model_version, (unsigned long long)expect);
        send_error(c, &s->peer, FKD_E_MISMATCH, "no task of this round and version for you");
        return;
    }
    float *delta = NULL;
    fkd_lora *lora = NULL;
    fkd_error err;
    if (open_update(&delta, &lora, c, s, m, &err) != 0) {
        c->cur.rejected++;
        fkd_log(c->log, FKD_LOG_WARN, "update_rejected", "client=%s round=%llu error=\"%s\"", hex,
                (unsigned long long)expect, err.msg);
        send_error(c, &s->peer, err.code, err.msg);
        return;
    }
    collected *e = &c->ups[c->n_ups++];
    memcpy(e->owner, s->rec.sign_pk, FKD_WIRE_ID_BYTES);
    e->delta = delta;
    e->lora = lora;
    e->weight = (double)u->samples;
    e->bytes = bytes;
    double loss = 0;
    fkd_wire_kv_get(&u->metrics, "loss", &loss);
    e->loss = loss;
    s->delivered = 1;
    s->rec.bytes_up += bytes;
    ack(c, s, m);
    fkd_log(c->log, FKD_LOG_INFO, "update_accepted",
            "client=%s round=%llu bytes=%zu samples=%llu loss=%.4f received=%d/%d", hex,
            (unsigned long long)expect, bytes, (unsigned long long)u->samples, loss, c->n_ups,
            c->target);
}

/* ---- round close ---------------------------------------------------------------------------------- */
static int cmp_collected(const void *a, const void *b)
{
    return memcmp(((const collected *)a)->owner, ((const collected *)b)->owner,
                  FKD_WIRE_ID_BYTES);
}

static int evaluate(fkd_coord *c, fkd_error *err)
{
    if (c->eval.n < 2) return 0;
    fkd_eval_result r;
    if (fkd_eval_tokens(&r, &c->master, c->eval.tokens, c->eval.n, c->eval.text_bytes,
                        c->cfg.model.max_seq, err) != 0)
        return -1;
    c->cur.perplexity = r.perplexity;
    c->cur.eval_loss = r.mean_loss;
    c->cur.bits_per_byte = r.bits_per_byte;
    c->cur.accuracy = r.accuracy;
    return 0;
}

/* LoRA rounds: every update holds adapters (open_update refuses others). */
static int merge_adapters(fkd_coord *c, fkd_error *err)
{
    fkd_lora **loras = malloc((size_t)c->n_ups * sizeof *loras);
    double *w = malloc((size_t)c->n_ups * sizeof *w);
    int rc = loras && w ? 0 : fkd_error_set(err, FKD_E_NOMEM, "no memory to merge adapters");
    for (int i = 0; rc == 0 && i < c->n_ups; i++) {
        loras[i] = c->ups[i].lora;
        w[i] = c->ups[i].weight;
    }
    if (rc == 0) rc = fkd_coord_lora_merge(&c->master, loras, w, c->n_ups, err);
    free(loras);
    free(w);
    return rc;
}

static int master_finite(const fkd_coord *c)
{
    for (size_t i = 0; i < c->master.n_params; i++)
        if (!isfinite(c->master.memory[i])) return 0;
    return 1;
}

static int aggregate(fkd_coord *c, fkd_error *err)
{
    qsort(c->ups, (size_t)c->n_ups, sizeof *c->ups, cmp_collected);
    fkd_coord_update *list = malloc((size_t)c->n_ups * sizeof *list);
    if (!list) return fkd_error_set(err, FKD_E_NOMEM, "no memory to aggregate");
    double loss = 0;
    for (int i = 0; i < c->n_ups; i++) {
        list[i].delta = c->ups[i].delta;
        list[i].weight = c->ups[i].weight;
        loss += c->ups[i].loss;
    }
    c->cur.client_loss = loss / c->n_ups;
    int rc = c->ups[0].lora ? merge_adapters(c, err)
                            : fkd_coord_agg_apply(&c->agg, c->master.memory, list, c->n_ups, err);
    free(list);
    c->cur.clip_bound = c->agg.last_clip;
    if (rc == 0 && !master_finite(c))
        rc = fkd_error_set(err, FKD_E_FORMAT, "the aggregated master is not finite (lower "
                           "server_lr or use a robust aggregator)");
    for (int i = 0; rc == 0 && i < c->n_ups; i++) {
        slot *s = find_slot(c, c->ups[i].owner);
        if (s) {
            s->rec.rounds++;
            s->rec.last_round = c->round + 1;
        }
    }
    return rc;
}

/* The server's own steps on the public transfer set, before the master is
 * re-quantized for the next TASK. */
static int server_step(fkd_coord *c, fkd_error *err)
{
    if (c->cfg.server_steps <= 0) return 0;
    double t0 = fkd_time_ms();
    /* The round's rate of the schedule: the round being closed is c->round + 1. */
    fkd_coord_config round_cfg = c->cfg;
    float scale = fkd_coord_lr_scale(&c->cfg, c->round + 1);
    round_cfg.lr *= scale;
    round_cfg.server_train_lr *= scale;
    int rc = fkd_coord_server_train(&c->cur.server_loss, &c->server, &round_cfg, err);
    c->cur.server_seconds = (fkd_time_ms() - t0) / 1e3;
    if (rc == 0 && !master_finite(c))
        rc = fkd_error_set(err, FKD_E_FORMAT, "the server's training made the master not "
                           "finite (lower server_train_lr)");
    return rc;
}

static int finish_round(fkd_coord *c, fkd_error *err)
{
    fkd_coord_round_stats *h = realloc(c->history, (size_t)(c->n_history + 1) * sizeof *h);
    if (!h) return fkd_error_set(err, FKD_E_NOMEM, "no memory for the round history");
    c->history = h;
    c->round++;
    int rc = requantize(c, err);
    if (rc == 0) rc = evaluate(c, err);
    c->cur.updates = c->n_ups;
    c->cur.late = c->late;
    c->late = 0;
    c->cur.seconds = (fkd_time_ms() - c->round_start_ms) / 1e3;
    c->history[c->n_history++] = c->cur;
    if (rc == 0) rc = save_deployment(c, err);
    if (rc == 0) rc = checkpoint(c, err);
    if (rc == 0) rc = fkd_coord_server_commit(&c->server, err);
    if (rc == 0) rc = write_rounds_file(c, err);
    if (rc != 0) return -1;
    fkd_wire_replay_forget_before(c->replay, c->round);
    const fkd_coord_round_stats *r = &c->cur;
    fkd_log(c->log, FKD_LOG_INFO, "round_end",
            "round=%llu updates=%d selected=%d late=%d vanished=%d rejected=%d ppl=%.4f "
            "bpb=%.4f acc=%.4f client_loss=%.4f bytes_down=%llu bytes_up=%llu seconds=%.3f "
            "server_seconds=%.3f server_loss=%.4f",
            (unsigned long long)r->round, r->updates, r->selected, r->late, r->vanished,
            r->rejected, r->perplexity, r->bits_per_byte, r->accuracy, r->client_loss,
            (unsigned long long)r->bytes_down, (unsigned long long)r->bytes_up, r->seconds,
            r->server_seconds, r->server_loss);
    return 0;
}

static int close_round(fkd_coord *c, const char *why, fkd_error *err)
{
    int rc = 0;
    if (c->n_ups >= c->cfg.min_updates && c->n_ups > 0) {
        fkd_log(c->log, FKD_LOG_INFO, "round_close", "round=%llu reason=%s updates=%d",
                (unsigned long long)(c->round + 1), why, c->n_ups);
        rc = aggregate(c, err);
        if (rc == 0) rc = server_step(c, err);
        if (rc == 0) rc = finish_round(c, err);
    } else {
        fkd_log(c->log, FKD_LOG_WARN, "round_failed", "round=%llu reason=%s updates=%d "
                "min_updates=%d", (unsigned long long)(c->round + 1), why, c->n_ups,
                c->cfg.min_updates);
    }
    clear_round(c);
    c->phase = c->round >= (uint64_t)c->cfg.rounds ? FKD_COORD_DONE : FKD_COORD_WAITING;
    c->wait_since_ms = fkd_time_ms();
    if (c->phase == FKD_COORD_DONE)
        fkd_log(c->log, FKD_LOG_INFO, "training_done", "rounds=%llu", (unsigned long long)c->round);
    return rc;
}

/* ---- sessions ------------------------------------------------------------------------------------- */
static int allowed(const fkd_coord *c, const uint8_t *sign_pk)
{
    if (!c->have_allow) return 1; /* no list configured: ZAP (tcp) is the gate */
    for (size_t i = 0; i < c->allow.n; i++)
        if (memcmp(c->allow.keys[i].sign_pk, sign_pk, FKD_WIRE_KEY_BYTES) == 0) return 1;
    return 0;
}

/* A device that declared a memory budget is only selected when train's
 * memory planner finds a plan for the round's batch within it. */
static int fits_budget(const fkd_coord *c, uint32_t memory_mb)
{
    if (memory_mb == 0) return 1;
    if (c->cfg.client_mode != FKD_WIRE_MODE_FULL)
        return fkd_coord_lora_fits(&c->cfg, (size_t)memory_mb << 20);
    fkd_memory_plan plan;
    return fkd_memory_plan_make(&plan, &c->cfg.model, c->cfg.batch, c->cfg.seq, FKD_OPT_ADAMW,
                                (size_t)memory_mb << 20, NULL) == 0;
}

static void on_hello(fkd_coord *c, const fkd_wire_peer *peer, const fkd_wire_msg *m)
{
    char hex[17];
    id_hex(hex, m->env.sender);
    if (c->cfg.require_transport_auth &&
        (!peer->authenticated ||
         memcmp(peer->sign_pk, m->env.sender, FKD_WIRE_ID_BYTES) != 0)) {
        fkd_log(c->log, FKD_LOG_WARN, "hello_refused", "client=%s reason=\"transport identity "
                "does not match\"", hex);
        send_error(c, peer, FKD_E_AUTH, "the HELLO sender is not the id your transport key "
                   "was admitted as");
        return;
    }
    if (!allowed(c, m->env.sender)) {
        fkd_log(c->log, FKD_LOG_WARN, "hello_refused", "client=%s reason=\"not on the allow-list\"",
                hex);
        send_reject(c, peer, FKD_E_AUTH, "this id is not on the coordinator's allow-list");
        return;
    }
    slot *s = find_slot(c, m->env.sender);
    fkd_error err;
    if (!s && !(s = add_slot(c, m->env.sender, &err))) {
        send_reject(c, peer, err.code, err.msg);
        return;
    }
    int was = s->connected;
    s->connected = 1;
    s->peer = *peer;
    s->last_seen_ms = fkd_time_ms();
    s->hello = m->u.hello;
    s->session = ++c->sessions;
    s->fits = fits_budget(c, m->u.hello.memory_mb);
    fkd_wire_msg w;
    fkd_wire_msg_init(&w, FKD_WIRE_WELCOME, c->id->sign_pk, 0);
    w.u.welcome.session = s->session;
    w.u.welcome.model_version = c->round;
    w.u.welcome.heartbeat_ms = (uint32_t)c->cfg.heartbeat_ms;
    w.u.welcome.chunk_bytes = c->cfg.chunk_bytes;
    w.u.welcome.window = FKD_WIRE_DEFAULT_WINDOW;
    send_to(c, peer, &w, NULL);
    /* A selected client that came back mid-round resumes its download. */
    if (c->phase == FKD_COORD_COLLECTING && s->selected && !s->delivered) {
        if (s->gone) {
            s->gone = 0;
            c->cur.vanished--;
        }
        fkd_error terr;
        if (fkd_client_xlink_sending(&s->link))
            fkd_client_xlink_restart(&s->link);
        else if (send_task(c, s, &terr) != 0)
            fkd_log(c->log, FKD_LOG_WARN, "task_failed", "error=\"%s\"", terr.msg);
    }
    fkd_log(c->log, FKD_LOG_INFO, "hello", "client=%s session=%llu memory_mb=%u tokens=%llu "
            "fits=%d again=%d", hex, (unsigned long long)s->session, m->u.hello.memory_mb,
            (unsigned long long)m->u.hello.local_tokens, s->fits, was);
}

static void on_transfer(fkd_coord *c, slot *s, const fkd_wire_msg *m)
{
    uint8_t *payload;
    size_t len;
    fkd_error err;
    int done = fkd_client_xlink_on_msg(&s->link, m, &payload, &len, &err);
    if (done < 0) {
        fkd_log(c->log, FKD_LOG_WARN, "xfer_error", "error=\"%s\"", err.msg);
        return;
    }
    if (!done) return;
    fkd_wire_msg inner;
    if (fkd_wire_decode(&inner, payload, len, &c->lim, &err) != 0 ||
        inner.env.type != FKD_WIRE_UPDATE ||
        memcmp(inner.env.sender, s->rec.sign_pk, FKD_WIRE_ID_BYTES) != 0)
        fkd_log(c->log, FKD_LOG_WARN, "bad_transfer", "error=\"not an UPDATE of this client\"");
    else
        on_update(c, s, &inner, len);
    free(payload);
}

static void on_message(fkd_coord *c, const fkd_wire_peer *peer, const uint8_t *buf, size_t len)
{
    fkd_wire_msg m;
    fkd_error err;
    if (fkd_wire_decode(&m, buf, len, &c->lim, &err) != 0) {
        fkd_log(c->log, FKD_LOG_WARN, "bad_message", "error=\"%s\"", err.msg);
        return;
    }
    if (m.env.type == FKD_WIRE_HELLO) {
        on_hello(c, peer, &m);
        return;
    }
    slot *s = slot_by_peer(c, peer);
    if (!s || memcmp(m.env.sender, s->rec.sign_pk, FKD_WIRE_ID_BYTES) != 0) {
        send_error(c, peer, FKD_E_PROTOCOL, "unknown session: send HELLO");
        return;
    }
    s->last_seen_ms = fkd_time_ms();
    if (c->phase == FKD_COORD_COLLECTING) c->cur.bytes_up += len;
    switch (m.env.type) {
    case FKD_WIRE_UPDATE: on_update(c, s, &m, len); break;
    case FKD_WIRE_HEARTBEAT: {
        fkd_wire_msg h;
        fkd_wire_msg_init(&h, FKD_WIRE_HEARTBEAT, c->id->sign_pk, c->round);
        h.u.heartbeat.seq = m.u.heartbeat.seq;
        send_to(c, &s->peer, &h, NULL);
        break;
    }
    case FKD_WIRE_BYE: lose(c, s, "said bye"); break;
    case FKD_WIRE_ACK: break; /* ACK(TASK): the client took the work */
    case FKD_WIRE_XFER_BEGIN:
    case FKD_WIRE_XFER_CHUNK:
    case FKD_WIRE_XFER_CREDIT: on_transfer(c, s, &m); break;
    default: send_error(c, &s->peer, FKD_E_PROTOCOL, "unexpected message"); break;
    }
}

/* ---- timers ---------------------------------------------------------------------------------------- */
static void check_liveness(fkd_coord *c)
{
    double now = fkd_time_ms();
    int beat = c->phase == FKD_COORD_COLLECTING && now >= c->next_beat_ms;
    if (beat) c->next_beat_ms = now + c->cfg.heartbeat_ms;
    for (int i = 0; i < c->n_slots; i++) {
        slot *s = &c->slots[i];
        if (!s->connected) continue;
        if (now - s->last_seen_ms > c->cfg.client_timeout_ms) {
            lose(c, s, "silent");
            continue;
        }
        if (beat && s->selected && !s->delivered) {
            /* ROUTER_MANDATORY: a peer whose connection is gone fails here. */
            fkd_wire_msg h;
            fkd_wire_msg_init(&h, FKD_WIRE_HEARTBEAT, c->id->sign_pk, c->round + 1);
            fkd_error err;
            if (send_to(c, &s->peer, &h, &err) != 0 && err.code == FKD_E_NET)
                lose(c, s, "disconnected");
        }
    }
}

static void pump_transfers(fkd_coord *c)
{
    for (int i = 0; i < c->n_slots; i++) {
        slot *s = &c->slots[i];
        if (!s->connected) continue;
        uint64_t sent = 0;
        fkd_error err;
        int rc = fkd_client_xlink_pump(&s->link, c->sock, &s->peer, &sent, &err);
        s->rec.bytes_down += sent;
        if (c->phase == FKD_COORD_COLLECTING) c->cur.bytes_down += sent;
        if (rc != 0 && err.code == FKD_E_NET) lose(c, s, "disconnected");
    }
}

static int advance(fkd_coord *c, fkd_error *err)
{
    if (c->phase == FKD_COORD_WAITING) {
        if (c->round >= (uint64_t)c->cfg.rounds) {
            c->phase = FKD_COORD_DONE;
            return 0;
        }
        int n = 0;
        for (int i = 0; i < c->n_slots; i++) n += c->slots[i].connected && c->slots[i].fits;
        int waited_out = c->cfg.start_timeout_ms > 0 &&
                         fkd_time_ms() - c->wait_since_ms > c->cfg.start_timeout_ms &&
                         n >= c->cfg.min_updates;
        if (n >= c->cfg.min_clients || waited_out) return start_round(c, n, err);
        return 0;
    }
    if (c->phase != FKD_COORD_COLLECTING) return 0;
    int pending = 0;
    for (int i = 0; i < c->n_slots; i++)
        if (c->slots[i].selected && !c->slots[i].delivered && !c->slots[i].gone) pending++;
    if (c->n_ups >= c->target) return close_round(c, "target", err);
    if (pending == 0) return close_round(c, "all_answered", err);
    if (fkd_time_ms() >= c->deadline_ms) return close_round(c, "deadline", err);
    return 0;
}

int fkd_coord_poll(fkd_coord *c, int timeout_ms, fkd_error *err)
{
    if (!c->sock) return fkd_error_set(err, FKD_E_INVALID_ARG, "coordinator has no socket");
    zmq_pollitem_t item = {c->sock, 0, ZMQ_POLLIN, 0};
    int wait = timeout_ms;
    if (c->phase == FKD_COORD_COLLECTING && wait > c->cfg.heartbeat_ms / 4)
        wait = c->cfg.heartbeat_ms / 4;
    int rc = zmq_poll(&item, 1, wait);
    if (rc < 0 && zmq_errno() != EINTR)
        return fkd_error_set(err, FKD_E_NET, "poll: %s", zmq_strerror(zmq_errno()));
    for (int i = 0; rc > 0 && i < 1000; i++) {
        fkd_wire_peer peer;
        uint8_t *buf;
        size_t len;
        fkd_error rerr;
        if (fkd_wire_recv(c->sock, &peer, &buf, &len, 0, &c->lim, &rerr) != 0) break;
        on_message(c, &peer, buf, len);
        free(buf);
    }
    check_liveness(c);
    pump_transfers(c);
    return advance(c, err);
}

int fkd_coord_phase(const fkd_coord *c) { return c->phase; }
uint64_t fkd_coord_round(const fkd_coord *c) { return c->round; }
const fkd_params *fkd_coord_master(const fkd_coord *c) { return &c->master; }

const fkd_coord_round_stats *fkd_coord_history(const fkd_coord *c, int *n)
{
    *n = c->n_history;
    return c->history;
}

int fkd_coord_connected(const fkd_coord *c)
{
    int n = 0;
    for (int i = 0; i < c->n_slots; i++) n += c->slots[i].connected;
    return n;
}

void fkd_coord_say_bye(fkd_coord *c)
{
    for (int i = 0; i < c->n_slots; i++) {
        slot *s = &c->slots[i];
        if (!s->connected) continue;
        fkd_wire_msg m;
        fkd_wire_msg_init(&m, FKD_WIRE_BYE, c->id->sign_pk, c->round);
        snprintf(m.u.bye.reason, sizeof m.u.bye.reason, "%s",
                 c->phase == FKD_COORD_DONE ? "finished: training is over" : "coordinator stopping");
        send_to(c, &s->peer, &m, NULL);
    }
}
