/* sim_fed.c — the federated methods, run as a deployment runs them: the
 * coordinator engine (coord.c) on a ROUTER bound to inproc://, and one
 * client agent (client/agent.c) per accessible device on a DEALER, speaking
 * the real protocol: HELLO, chunked TASKs with the quantized student and the
 * round's soft labels, sealed compressed UPDATEs, ACKs, BYE.
 *
 * What the simulation adds is time. When the engine has sent a round's
 * TASKs, the simulated clock plans the round from the selected devices
 * (sim_clock.c): dropouts and stragglers leave (their agent says BYE and
 * comes back after the round, as a device that went offline would), and
 * only the clients whose updates the coordinator would have counted
 * train — on a worker pool, one core each, with the agents' own training
 * code (fkd_client_train). The engine then closes the round on its target
 * or because everyone else left, exactly as it would on a network.
 *
 * Idle agents hold their keys, a socket and a few counters; their
 * error-feedback residuals live on disk in per-client folders. */
#define _XOPEN_SOURCE 700 /* nftw */
#include "sim_internal.h"

#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <zmq.h>

#define SIM_HEARTBEAT_MS 60000            /* the clock, not heartbeats, decides liveness */
#define SIM_CLIENT_TIMEOUT_MS 3600000
#define SIM_ROUND_TIMEOUT_MS 3600000
#define SIM_STALL_MS 120000               /* no progress for this long is a bug: stop */
#define SIM_CHUNK_BYTES (1u << 20)
#define SIM_IDLE_POLL_MS 20

typedef struct {
    fkd_wire_identity id;
    fkd_client *cl;          /* NULL while offline */
    int pop;                 /* index into the population (devices, data) */
    int busy;                /* a worker is training it (guarded by the pool's mutex) */
} vclient;

/* ---- the worker pool ------------------------------------------------------------------------- */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    vclient *vc;
    int *queue, head, tail;
    int pending;             /* queued or training */
    int stop, failed;
    int64_t tokens_done;     /* since the last look */
    fkd_error err;
    pthread_t *threads;
    int n_threads;
} pool;

static void *worker(void *arg)
{
    pool *p = arg;
    fkd_train_set_threads(1);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->head == p->tail) pthread_cond_wait(&p->cv, &p->mu);
        if (p->stop) break;
        vclient *v = &p->vc[p->queue[p->head++]];
        pthread_mutex_unlock(&p->mu);
        fkd_error e = {0};
        int rc = fkd_client_train(v->cl, &e);
        const fkd_client_stats *st = fkd_client_get_stats(v->cl);
        pthread_mutex_lock(&p->mu);
        v->busy = 0;
        p->pending--;
        p->tokens_done += st->last.tokens;
        if (rc != 0 && !p->failed) {
            p->failed = 1;
            p->err = e;
        }
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static int pool_start(pool *p, vclient *vc, int n_clients, int n_threads, fkd_error *err)
{
    memset(p, 0, sizeof *p);
    p->vc = vc;
    p->queue = malloc((size_t)n_clients * sizeof *p->queue);
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    if (!p->queue || !p->threads) return fkd_error_set(err, FKD_E_NOMEM, "no memory for workers");
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    for (int i = 0; i < n_threads; i++) {
        if (pthread_create(&p->threads[i], NULL, worker, p) != 0)
            return fkd_error_set(err, FKD_E_NOMEM, "cannot start worker thread %d", i);
        p->n_threads++;
    }
    return 0;
}

static void pool_stop(pool *p)
{
    if (!p->threads) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_threads; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->queue);
    free(p->threads);
    p->threads = NULL;
}

/* Queue positions restart every round (at most one job per client). */
static void pool_submit(pool *p, int v)
{
    pthread_mutex_lock(&p->mu);
    p->vc[v].busy = 1;
    p->queue[p->tail++] = v;
    p->pending++;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static void pool_reset_queue(pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->head = p->tail = 0;
    pthread_mutex_unlock(&p->mu);
}

/* ---- deterministic identities ------------------------------------------------------------------ */
static void derive_seed(uint8_t out[32], uint64_t seed, uint64_t who, uint64_t purpose)
{
    fkd_rng rng;
    fkd_rng_seed(&rng, seed ^ (who * 0x9e3779b97f4a7c15ULL) ^ (purpose << 56));
    for (int i = 0; i < 4; i++) {
        uint64_t v = fkd_rng_u64(&rng);
        memcpy(out + 8 * i, &v, 8);
    }
}

/* The same keys for the same seed and client, so selection (which sorts by
 * id) and every client's batches repeat from run to run. */
static int identity_derive(fkd_wire_identity *id, uint64_t seed, uint64_t who, fkd_error *err)
{
    uint8_t s1[32], s2[32];
    derive_seed(s1, seed, who, 1);
    derive_seed(s2, seed, who, 2);
    int rc = sodium_init() < 0 || crypto_sign_seed_keypair(id->sign_pk, id->sign_sk, s1) != 0 ||
             crypto_box_seed_keypair(id->curve_pk, id->curve_sk, s2) != 0;
    sodium_memzero(s1, sizeof s1);
    sodium_memzero(s2, sizeof s2);
    return rc ? fkd_error_set(err, FKD_E_UNSUPPORTED, "key derivation failed") : 0;
}

/* ---- files --------------------------------------------------------------------------------------- */
static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(path);
}

static void rm_tree(const char *path) { nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static int has_suffix(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Files go unless they are logs (*.jsonl, *.csv); a folder goes once empty
 * (remove fails on one that still holds a log, which is what we want). */
static int prune_entry(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)f;
    if (flag == FTW_DP || !(has_suffix(path, ".jsonl") || has_suffix(path, ".csv"))) remove(path);
    return 0;
}

void sim_work_prune(const char *work_dir)
{
    nftw(work_dir, prune_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int write_allowlist(const char *path, const vclient *vc, int n, fkd_error *err)
{
    fkd_atomic_file af;
    if (fkd_atomic_open(&af, path, err) != 0) return -1;
    for (int i = 0; i < n; i++) {
        fkd_wire_pubkey pub;
        char label[32], line[256];
        snprintf(label, sizeof label, "sim-%d", vc[i].pop);
        fkd_wire_identity_public(&pub, &vc[i].id, label);
        if (fkd_wire_pubkey_format(line, sizeof line - 1, &pub, err) != 0) {
            fkd_atomic_abort(&af);
            return -1;
        }
        strcat(line, "\n");
        if (fkd_atomic_write(&af, line, strlen(line), err) != 0) {
            fkd_atomic_abort(&af);
            return -1;
        }
    }
    return fkd_atomic_commit(&af, err);
}

/* ---- one federated run ---------------------------------------------------------------------------- */
typedef struct {
    sim_ctx *x;
    int method;
    fkd_sim_method *m;
    char dir[FKD_SIM_PATH_MAX + 48];
    char endpoint[64];
    void *zctx, *router;
    fkd_wire_identity coord_id;
    fkd_coord_config cc;
    fkd_coord *coord;
    fkd_logger log;
    vclient *vc;
    int n;                    /* online-capable (accessible) clients */
    pool pool;
    fkd_sim_work work;
    fkd_rng clock_rng;
} fed_run;

static int client_open(fed_run *f, int v, fkd_error *err)
{
    vclient *c = &f->vc[v];
    const fkd_sim_device *d = &f->x->devs[c->pop];
    char sdir[FKD_SIM_PATH_MAX + 80];
    snprintf(sdir, sizeof sdir, "%s/c%05d", f->dir, c->pop);
    fkd_client_config cfg = fkd_client_config_defaults();
    cfg.endpoint = f->endpoint;
    cfg.use_curve = 0;
    cfg.state_dir = sdir;
    cfg.memory_mb = (uint32_t)(d->mem_bytes / 1048576.0);
    cfg.cores = 1;
    cfg.heartbeat_ms = SIM_HEARTBEAT_MS;
    cfg.auto_train = 0;
    cfg.seed = f->x->cfg.seed ^ (uint64_t)c->pop;
    if (fkd_client_new(&c->cl, &cfg, &c->id, f->coord_id.curve_pk, &f->x->client_train[c->pop],
                       f->zctx, &f->log, err) != 0)
        return -1;
    return fkd_client_poll(c->cl, 0, err); /* opens the socket and says HELLO */
}

static void configure(fed_run *f)
{
    const fkd_sim_config *s = &f->x->cfg;
    fkd_coord_config *c = &f->cc;
    fkd_coord_config_defaults(c);
    snprintf(c->endpoint, sizeof c->endpoint, "%s", f->endpoint);
    c->key[0] = 0;
    snprintf(c->allowlist, sizeof c->allowlist, "%s/allowlist.txt", f->dir);
    snprintf(c->state_dir, sizeof c->state_dir, "%s/coordinator", f->dir);
    sim_server_path(c->init, sizeof c->init, f->x, f->method); /* after the server's phase */
    c->require_transport_auth = 0;
    c->model = f->x->student_cfg;
    c->seed = s->seed;
    c->rounds = s->rounds;
    c->fraction = 1.0f;
    c->min_clients = s->per_round;
    c->max_clients = s->per_round;
    c->over_select = s->over_select;
    c->min_updates = 1;
    c->round_timeout_ms = SIM_ROUND_TIMEOUT_MS;
    c->heartbeat_ms = SIM_HEARTBEAT_MS;
    c->client_timeout_ms = SIM_CLIENT_TIMEOUT_MS;
    snprintf(c->aggregator, sizeof c->aggregator, "fedavg");
    c->server_lr = s->server_lr;
    c->local_steps = s->local_steps;
    c->batch = s->batch;
    c->seq = s->seq;
    c->warmup = 0;
    c->lr = s->lr;
    c->lr_schedule = s->lr_schedule;
    c->min_lr_ratio = s->min_lr_ratio;
    c->alpha = s->alpha;
    c->temperature = s->soft_temperature;
    int kd = f->method != FKD_SIM_FEDAVG;
    c->transfer_share = kd ? s->transfer_share : 0; /* FedAvg's TASKs carry no soft labels */
    /* Every method's server takes public-only distillation's steps per round
     * on the public transfer set, going on from the server phase's run
     * (fed_server_state): distillation, or cross-entropy without a teacher. */
    c->server_steps = (int)sim_server_round_steps(s);
    c->server_alpha = kd ? s->alpha : 0;
    c->server_train_lr = 0;
    c->server_seed = sim_server_seed(f->x, f->method);
    if (kd || c->server_steps > 0)
        snprintf(c->softlabels, sizeof c->softlabels, "%s", f->x->soft_dir);
    else c->softlabels[0] = 0;
    int dense = f->method == FKD_SIM_FEDKD_DENSE;
    c->up_fraction = dense ? 1.0f : s->up_fraction;
    c->up_format = dense ? FKD_UVAL_F32 : s->up_format;
    c->up_stochastic = 0;
    c->client_mode = s->client_mode; /* fkd_sim_client_mode == fkd_wire_client_mode */
    c->lora_rank = s->lora_rank;
    c->lora_alpha = s->lora_alpha;
    c->chunk_bytes = SIM_CHUNK_BYTES;
    c->eval_data[0] = 0;     /* every method is evaluated the same way, by sim_eval.c */
    c->log_level = s->verbose ? FKD_LOG_INFO : FKD_LOG_ERROR;
}

/* Every agent's socket holds a descriptor (its mailbox): a thousand agents
 * need more than the usual soft limit of 1024. */
static int raise_fd_limit(int n_sockets, fkd_error *err)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
    rlim_t want = (rlim_t)n_sockets * 2 + 256;
    if (rl.rlim_cur >= want) return 0;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want)
        return fkd_error_set(err, FKD_E_LIMIT, "%d virtual clients need %llu file descriptors; "
                             "the hard limit is %llu (raise it with ulimit -Hn)", n_sockets,
                             (unsigned long long)want, (unsigned long long)rl.rlim_max);
    rl.rlim_cur = want;
    return setrlimit(RLIMIT_NOFILE, &rl) == 0
               ? 0
               : fkd_error_set(err, FKD_E_LIMIT, "cannot raise the file descriptor limit");
}

static int open_coordinator(fed_run *f, fkd_error *err)
{
    if (raise_fd_limit(f->n, err) != 0) return -1;
    f->zctx = zmq_ctx_new();
    if (!f->zctx) return fkd_error_set(err, FKD_E_NET, "cannot create a ZeroMQ context");
    /* One socket per agent, plus the coordinator and ZeroMQ's own. */
    zmq_ctx_set(f->zctx, ZMQ_MAX_SOCKETS, f->n + 64);
    f->router = zmq_socket(f->zctx, ZMQ_ROUTER);
    int one = 1, zero = 0;
    if (!f->router || zmq_setsockopt(f->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one) ||
        zmq_setsockopt(f->router, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_bind(f->router, f->endpoint))
        return fkd_error_set(err, FKD_E_NET, "cannot bind %s: %s", f->endpoint,
                             zmq_strerror(zmq_errno()));
    if (fkd_coord_new(&f->coord, &f->cc, &f->coord_id, &f->log, err) != 0) return -1;
    fkd_coord_attach(f->coord, f->router);
    return 0;
}

static int busy(fed_run *f, int v)
{
    pthread_mutex_lock(&f->pool.mu);
    int b = f->vc[v].busy;
    pthread_mutex_unlock(&f->pool.mu);
    return b;
}

/* One turn for everyone: the coordinator, then every agent not training. */
static int pump(fed_run *f, int timeout_ms, fkd_error *err)
{
    if (fkd_coord_poll(f->coord, timeout_ms, err) != 0) return -1;
    for (int v = 0; v < f->n; v++)
        if (f->vc[v].cl && !busy(f, v) && fkd_client_poll(f->vc[v].cl, 0, err) != 0) return -1;
    return 0;
}

static int count_ready(fed_run *f, int *ready)
{
    int n = 0;
    for (int v = 0; v < f->n; v++) {
        ready[v] = f->vc[v].cl && !busy(f, v) &&
                   fkd_client_state(f->vc[v].cl) == FKD_CLIENT_TASK_READY;
        n += ready[v];
    }
    return n;
}

/* How many clients the engine selects this round (select.c's rule). */
static int expected_selected(fed_run *f, int connected, int target)
{
    int want = (int)ceil(target * (1.0 + f->cc.over_select) - 1e-9);
    return want < connected ? want : connected;
}

typedef struct {
    fkd_sim_round r;
    fkd_sim_slot *slots;
    int *ready;
    int n_slots;
    int target;              /* updates the engine waits for (select.c's rule) */
    double t0;
} round_state;

/* The TASKs are out: plan the round on the simulated clock, send away the
 * clients that will not deliver, and queue the others for training. */
static int plan_round(fed_run *f, round_state *rs, int target, fkd_error *err)
{
    int n = 0;
    for (int v = 0; v < f->n; v++)
        if (rs->ready[v]) rs->slots[n++] = (fkd_sim_slot){.client = v};
    /* slots hold vclient indices; the clock wants device data per vclient */
    fkd_sim_device *devs = malloc((size_t)(f->n > 0 ? f->n : 1) * sizeof *devs);
    uint8_t *rec = malloc((size_t)(f->n > 0 ? f->n : 1));
    if (!devs || !rec) {
        free(devs);
        free(rec);
        return fkd_error_set(err, FKD_E_NOMEM, "no memory to plan a round");
    }
    for (int v = 0; v < f->n; v++) {
        devs[v] = f->x->devs[f->vc[v].pop];
        rec[v] = f->x->recompute[f->vc[v].pop];
    }
    rs->r.sim_seconds = fkd_sim_round_plan(rs->slots, n, target, f->x->cfg.deadline_s, devs, rec,
                                           &f->work, &f->clock_rng);
    free(devs);
    free(rec);
    rs->n_slots = n;
    rs->r.selected = n;
    pool_reset_queue(&f->pool);
    for (int i = 0; i < n; i++) {
        int v = rs->slots[i].client;
        switch (rs->slots[i].outcome) {
        case FKD_SIM_DELIVERED: rs->r.delivered++; pool_submit(&f->pool, v); break;
        case FKD_SIM_SURPLUS: rs->r.surplus++; break;
        case FKD_SIM_STRAGGLER: rs->r.stragglers++; break;
        default: rs->r.dropouts++; break;
        }
        /* Not delivering: the device leaves for the rest of the round. */
        if (rs->slots[i].outcome != FKD_SIM_DELIVERED) fkd_client_free(&f->vc[v].cl);
    }
    return 0;
}

static int reopen_offline(fed_run *f, fkd_error *err)
{
    for (int v = 0; v < f->n; v++)
        if (!f->vc[v].cl && client_open(f, v, err) != 0) return -1;
    return 0;
}

static int finish_round(fed_run *f, round_state *rs, fkd_error *err)
{
    int nh;
    const fkd_coord_round_stats *h = fkd_coord_history(f->coord, &nh);
    const fkd_coord_round_stats *last = &h[nh - 1];
    const fkd_params *master = fkd_coord_master(f->coord);
    size_t dense_model = master->n_params * sizeof(float);
    rs->r.round = (int)last->round;
    rs->r.bytes_up = last->bytes_up;
    rs->r.bytes_down = last->bytes_down;
    rs->r.bytes_up_dense = (uint64_t)last->updates * dense_model;
    /* A dense TASK: fp32 weights instead of q8_0, the same soft labels. */
    double q8 = (double)f->x->res->sum.student_q8_bytes;
    double per_task = (double)last->bytes_down / (rs->r.selected ? rs->r.selected : 1);
    rs->r.bytes_down_dense = (uint64_t)(rs->r.selected * (per_task - q8 + (double)dense_model));
    rs->r.wall_seconds = (fkd_time_ms() - rs->t0) / 1e3;
    sim_progress(f->x, (int64_t)f->cc.server_steps * f->cc.batch * f->cc.seq, f->m->key);
    if (sim_eval_ppl(&rs->r.ppl, &rs->r.acc, master, &f->x->test, f->x->cfg.eval_tokens_round,
                     err) != 0)
        return -1;
    return sim_method_add_round(f->m, &rs->r, err);
}

/* The coordinator's server optimizer starts as the server phase's ends: it
 * reads that state in place (server_init) and writes its own only into its
 * state_dir, so every method starts from the same one. */
static int fed_server_state(fed_run *f, fkd_error *err)
{
    f->cc.server_init[0] = 0;
    if (f->cc.server_steps <= 0) return 0;
    char from[FKD_SIM_PATH_MAX + 64];
    sim_server_state_path(from, sizeof from, f->x, f->method);
    if (strlen(from) >= sizeof f->cc.server_init)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "path too long: %s", from);
    memcpy(f->cc.server_init, from, strlen(from) + 1);
    return 0; /* no server phase, no file: a fresh optimizer */
}

static void progress_line(fed_run *f, const round_state *rs, int64_t tokens)
{
    char what[128];
    pthread_mutex_lock((pthread_mutex_t *)&f->pool.mu);
    int done = rs->r.delivered - f->pool.pending;
    pthread_mutex_unlock((pthread_mutex_t *)&f->pool.mu);
    snprintf(what, sizeof what, "%s · round %d/%d · clients %d/%d trained (%d selected)",
             f->m->key, (int)fkd_coord_round(f->coord) + 1, f->x->cfg.rounds,
             done < 0 ? 0 : done, rs->r.delivered, rs->r.selected);
    sim_progress(f->x, tokens, what);
}

static int take_tokens(fed_run *f, int64_t *tokens, fkd_error *err)
{
    pthread_mutex_lock(&f->pool.mu);
    *tokens = f->pool.tokens_done;
    f->pool.tokens_done = 0;
    int failed = f->pool.failed;
    if (failed && err) *err = f->pool.err;
    pthread_mutex_unlock(&f->pool.mu);
    return failed ? -1 : 0;
}

static int drive(fed_run *f, fkd_error *err)
{
    round_state rs = {0};
    rs.slots = malloc((size_t)f->n * sizeof *rs.slots);
    rs.ready = malloc((size_t)f->n * sizeof *rs.ready);
    if (!rs.slots || !rs.ready) {
        free(rs.slots);
        free(rs.ready);
        return fkd_error_set(err, FKD_E_NOMEM, "no memory for the rounds");
    }
    int planned = 0, rc = 0, expect = 0;
    uint64_t done_rounds = 0;
    double last_progress = fkd_time_ms();
    while (rc == 0 && fkd_coord_phase(f->coord) != FKD_COORD_DONE) {
        /* While the workers train, wait on the coordinator's socket instead
         * of spinning: the cores are theirs. */
        pthread_mutex_lock(&f->pool.mu);
        int idle = planned && f->pool.pending > 0;
        pthread_mutex_unlock(&f->pool.mu);
        rc = pump(f, idle ? SIM_IDLE_POLL_MS : 0, err);
        int64_t tokens = 0;
        if (rc == 0) rc = take_tokens(f, &tokens, err);
        if (rc != 0) break;
        if (tokens > 0) last_progress = fkd_time_ms();
        int phase = fkd_coord_phase(f->coord);
        if (phase == FKD_COORD_COLLECTING && !planned) {
            if (!expect) {
                int connected = fkd_coord_connected(f->coord);
                rs.target = fkd_coord_target(&f->cc, connected);
                expect = expected_selected(f, connected, rs.target);
                rs.r = (fkd_sim_round){0};
                rs.t0 = fkd_time_ms();
            }
            if (count_ready(f, rs.ready) >= expect) {
                rc = plan_round(f, &rs, rs.target, err);
                planned = 1;
                last_progress = fkd_time_ms();
            }
        } else if (phase != FKD_COORD_COLLECTING && planned) {
            /* The round closed (or failed and will be chosen again). */
            if (fkd_coord_round(f->coord) > done_rounds) {
                done_rounds = fkd_coord_round(f->coord);
                rc = finish_round(f, &rs, err);
            }
            if (rc == 0) rc = reopen_offline(f, err);
            planned = 0;
            expect = 0;
            last_progress = fkd_time_ms();
        }
        if (planned) progress_line(f, &rs, tokens);
        if (rc == 0 && fkd_time_ms() - last_progress > SIM_STALL_MS)
            rc = fkd_error_set(err, FKD_E_TIMEOUT, "the simulated federation made no progress "
                               "for %d s (round %llu, phase %d)", SIM_STALL_MS / 1000,
                               (unsigned long long)fkd_coord_round(f->coord), phase);
    }
    free(rs.slots);
    free(rs.ready);
    return rc;
}

static void close_all(fed_run *f)
{
    pool_stop(&f->pool);
    if (f->coord) fkd_coord_say_bye(f->coord);
    for (int v = 0; f->vc && v < f->n; v++) {
        if (f->vc[v].cl) fkd_client_poll(f->vc[v].cl, 0, NULL);
        fkd_client_free(&f->vc[v].cl);
        fkd_wire_identity_wipe(&f->vc[v].id);
    }
    free(f->vc);
    fkd_coord_free(&f->coord);
    if (f->router) zmq_close(f->router);
    if (f->zctx) zmq_ctx_term(f->zctx);
    fkd_wire_identity_wipe(&f->coord_id);
}

static int setup_clients(fed_run *f, fkd_error *err)
{
    sim_ctx *x = f->x;
    f->vc = calloc((size_t)(x->n_clients > 0 ? x->n_clients : 1), sizeof *f->vc);
    if (!f->vc) return fkd_error_set(err, FKD_E_NOMEM, "no memory for %d clients", x->n_clients);
    for (int i = 0; i < x->n_clients; i++) {
        if (!(x->access[i].can_train && x->access[i].can_run)) continue;
        vclient *v = &f->vc[f->n++];
        v->pop = i;
        if (identity_derive(&v->id, x->cfg.seed, (uint64_t)i + 1, err) != 0) return -1;
    }
    if (f->n < x->cfg.per_round)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "only %d of %d devices can train and run "
                             "the student; a round needs %d (fewer --per-round, a longer "
                             "--deadline, or more clients)", f->n, x->n_clients,
                             x->cfg.per_round);
    return 0;
}

int sim_run_federated(sim_ctx *x, int method, fkd_error *err)
{
    fed_run f = {.x = x, .method = method, .m = &x->res->m[method]};
    snprintf(f.dir, sizeof f.dir, "%s/%s", x->work_dir, f.m->key);
    snprintf(f.endpoint, sizeof f.endpoint, "inproc://fedkd-sim-%s", f.m->key);
    rm_tree(f.dir);
    fkd_logger_init(&f.log, stderr, x->cfg.verbose ? FKD_LOG_INFO : FKD_LOG_ERROR, "sim");
    fkd_rng_seed(&f.clock_rng, x->cfg.seed ^ 0x636c6f636bULL);
    f.work = x->work[method == FKD_SIM_FEDAVG ? 0 : method == FKD_SIM_FEDKD_DENSE ? 2 : 1];
    configure(&f);
    double t0 = fkd_time_ms();
    int rc = fkd_mkdir_p(f.dir, err);
    if (rc == 0) rc = identity_derive(&f.coord_id, x->cfg.seed, 0, err);
    if (rc == 0) rc = setup_clients(&f, err);
    if (rc == 0) rc = write_allowlist(f.cc.allowlist, f.vc, f.n, err);
    if (rc == 0) rc = fed_server_state(&f, err);
    if (rc == 0) rc = open_coordinator(&f, err);
    if (rc == 0) rc = pool_start(&f.pool, f.vc, f.n, x->cfg.threads, err);
    double rss0 = sim_rss_bytes();
    for (int v = 0; rc == 0 && v < f.n; v++) rc = client_open(&f, v, err);
    /* Measured before the coordinator reads a HELLO: once it has, it may
     * start the first round, and its TASKs (the student, queued for each
     * selected client) are not an idle client's memory. */
    if (rc == 0 && x->res->sum.idle_client_bytes == 0)
        x->res->sum.idle_client_bytes = (sim_rss_bytes() - rss0) / f.n;
    if (rc == 0) rc = pump(&f, 0, err); /* HELLOs in, WELCOMEs out: every agent idle */
    for (int v = 0; rc == 0 && v < f.n; v++) rc = fkd_client_poll(f.vc[v].cl, 0, err);
    if (rc == 0) rc = drive(&f, err);
    if (rc == 0) rc = sim_params_copy(&f.m->final, fkd_coord_master(f.coord), err);
    close_all(&f);
    f.m->wall_seconds = (fkd_time_ms() - t0) / 1e3;
    for (int r = 0; rc == 0 && r < f.m->n_rounds; r++) {
        f.m->bytes_up += f.m->rounds[r].bytes_up;
        f.m->bytes_down += f.m->rounds[r].bytes_down;
        f.m->bytes_up_dense += f.m->rounds[r].bytes_up_dense;
        f.m->bytes_down_dense += f.m->rounds[r].bytes_down_dense;
        f.m->train_tokens += ((int64_t)f.m->rounds[r].delivered * x->cfg.local_steps +
                              f.cc.server_steps) * x->cfg.batch * x->cfg.seq;
    }
    fkd_train_set_threads(x->cfg.threads);
    if (rc == 0) rc = sim_eval_final(f.m, x, &f.m->final, err);
    if (rc == 0) rc = sim_eval_clients(f.m, x, &f.m->final, err);
    if (rc == 0) f.m->ran = 1;
    return rc;
}
