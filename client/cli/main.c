/* main.c — fedkd-client, the agent for edge devices: loads its keys and its
 * private text, then runs the agent's event loop until the coordinator says
 * training is over (exit 0), refuses it for good (exit 3), or a signal stops
 * it. Settings come from a key = value file plus key=value arguments:
 *
 *   endpoint      coordinator endpoint (tcp://127.0.0.1:7878)
 *   key           this device's secret key file (client.key)
 *   coordinator   the coordinator's public key file (coordinator.pub)
 *   state_dir     error-feedback residuals (fedkd-client-state)
 *   data          private text: a corpus folder (its private categories, split
 *                 into natural clients as docs/data.md describes) or one file
 *   client        which natural client of the folder this device is (0)
 *   memory_mb     training memory budget (0 = no limit)
 *   cores         threads for training (1)
 *   heartbeat_ms, backoff_min_ms, backoff_max_ms, seed, log_level
 *   attack_scale  tests only: multiply the update (a malicious client)
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "fkd_client.h"

#define POLL_MS 200
#define WORKER_POLL_MS 50  /* how soon a finished job is noticed */
#define VALUE_MAX 512

typedef struct {
    char endpoint[VALUE_MAX], key[VALUE_MAX], coordinator[VALUE_MAX], state_dir[VALUE_MAX];
    char data[VALUE_MAX];
    int client, memory_mb, cores, heartbeat_ms, backoff_min_ms, backoff_max_ms, log_level;
    double attack_scale;
    unsigned long long seed;
} settings;

static volatile sig_atomic_t g_stop;

/* Local training runs on a worker thread so the agent keeps answering
 * (heartbeats, a coordinator restart) while it trains. */
typedef struct {
    fkd_client_job *job;
    pthread_t thread;
    atomic_int done;
    int busy;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    fkd_client_job_run(w->job);
    atomic_store(&w->done, 1);
    return NULL;
}

/* Starts a job when a task waits; finishes one whose thread is done. */
static int drive_worker(worker *w, fkd_client *cl, fkd_error *err)
{
    if (w->busy) {
        if (!atomic_load(&w->done)) return 0;
        pthread_join(w->thread, NULL);
        w->busy = 0;
        return fkd_client_job_finish(cl, &w->job, err);
    }
    if (fkd_client_state(cl) != FKD_CLIENT_TASK_READY) return 0;
    if (fkd_client_job_take(cl, &w->job, err) != 0) return -1;
    if (!w->job) return 0;
    atomic_store(&w->done, 0);
    if (pthread_create(&w->thread, NULL, work, w) != 0) {
        fkd_client_job_run(w->job); /* no thread: train inline */
        return fkd_client_job_finish(cl, &w->job, err);
    }
    w->busy = 1;
    return 0;
}
static void on_stop(int sig) { g_stop = sig; }

static void defaults(settings *s)
{
    memset(s, 0, sizeof *s);
    snprintf(s->endpoint, VALUE_MAX, "tcp://127.0.0.1:7878");
    snprintf(s->key, VALUE_MAX, "client.key");
    snprintf(s->coordinator, VALUE_MAX, "coordinator.pub");
    snprintf(s->state_dir, VALUE_MAX, "fedkd-client-state");
    snprintf(s->data, VALUE_MAX, "%s", FKD_DATA_DEFAULT_DIR);
    s->cores = 1;
    s->heartbeat_ms = FKD_CLIENT_DEFAULT_HEARTBEAT_MS;
    s->backoff_min_ms = FKD_CLIENT_BACKOFF_MIN_MS;
    s->backoff_max_ms = FKD_CLIENT_BACKOFF_MAX_MS;
    s->log_level = FKD_LOG_INFO;
    s->seed = 1;
}

static int set_int(int *out, const char *key, const char *v, long lo, long hi, fkd_error *err)
{
    char *end;
    long x = strtol(v, &end, 10);
    if (end == v || *end || x < lo || x > hi)
        return fkd_error_set(err, FKD_E_FORMAT, "%s: '%s' is not an integer in [%ld, %ld]", key,
                             v, lo, hi);
    *out = (int)x;
    return 0;
}

static int set_key(void *ctx, const char *key, const char *v, fkd_error *err)
{
    settings *s = ctx;
    struct { const char *name; char *dst; } strs[] = {
        {"endpoint", s->endpoint}, {"key", s->key}, {"coordinator", s->coordinator},
        {"state_dir", s->state_dir}, {"data", s->data}};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if (strcmp(key, strs[i].name) == 0) {
            if (strlen(v) >= VALUE_MAX) return fkd_error_set(err, FKD_E_LIMIT, "%s too long", key);
            snprintf(strs[i].dst, VALUE_MAX, "%s", v);
            return 0;
        }
    if (strcmp(key, "client") == 0) return set_int(&s->client, key, v, 0, 1 << 20, err);
    if (strcmp(key, "memory_mb") == 0) return set_int(&s->memory_mb, key, v, 0, 1 << 24, err);
    if (strcmp(key, "cores") == 0) return set_int(&s->cores, key, v, 1, 1024, err);
    if (strcmp(key, "heartbeat_ms") == 0) return set_int(&s->heartbeat_ms, key, v, 50, 600000, err);
    if (strcmp(key, "backoff_min_ms") == 0)
        return set_int(&s->backoff_min_ms, key, v, 10, 600000, err);
    if (strcmp(key, "backoff_max_ms") == 0)
        return set_int(&s->backoff_max_ms, key, v, 10, 3600000, err);
    if (strcmp(key, "log_level") == 0) {
        s->log_level = fkd_log_level_parse(v);
        return s->log_level < 0 ? fkd_error_set(err, FKD_E_FORMAT, "log_level: debug, info, "
                                                "warn or error") : 0;
    }
    if (strcmp(key, "seed") == 0) {
        char *end;
        s->seed = strtoull(v, &end, 10);
        return end == v || *end ? fkd_error_set(err, FKD_E_FORMAT, "seed: not a number") : 0;
    }
    if (strcmp(key, "attack_scale") == 0) {
        char *end;
        s->attack_scale = strtod(v, &end);
        return end == v || *end ? fkd_error_set(err, FKD_E_FORMAT, "attack_scale: not a number")
                                : 0;
    }
    return fkd_error_set(err, FKD_E_FORMAT, "unknown setting '%s' (see fedkd-client --help)", key);
}

/* The private text: the train split of one natural client of a corpus
 * folder, or a whole file. */
static int load_text(fkd_token_stream *s, const settings *st, fkd_error *err)
{
    fkd_tokenizer tok;
    fkd_tokenizer_init_bytes(&tok);
    struct stat sb;
    if (stat(st->data, &sb) != 0)
        return fkd_error_set(err, FKD_E_IO, "data %s does not exist", st->data);
    if (!S_ISDIR(sb.st_mode)) {
        uint8_t *text;
        size_t bytes;
        if (fkd_file_read_all(&text, &bytes, st->data, FKD_DATA_MAX_FILE_BYTES, err) != 0)
            return -1;
        memset(s, 0, sizeof *s);
        s->tokens = malloc((bytes ? bytes : 1) * sizeof *s->tokens);
        if (!s->tokens) {
            free(text);
            return fkd_error_set(err, FKD_E_NOMEM, "no memory for the text");
        }
        for (size_t i = 0; i < bytes; i++) s->tokens[i] = text[i];
        s->n = s->text_bytes = (int64_t)bytes;
        s->n_docs = 1;
        s->owned = 1;
        free(text);
        return 0;
    }
    fkd_corpus c;
    fkd_corpus_options o = fkd_corpus_defaults(FKD_SIDE_PRIVATE);
    if (fkd_corpus_load(&c, st->data, &o, err) != 0) return -1;
    fkd_federation fed;
    fkd_partition_config pc = fkd_partition_defaults();
    int rc = fkd_federation_build(&fed, &c, &pc, err);
    if (rc == 0) {
        if (st->client >= fed.n_clients)
            rc = fkd_error_set(err, FKD_E_INVALID_ARG, "client %d: the corpus has %d clients",
                               st->client, fed.n_clients);
        else
            rc = fkd_token_stream_from_split(s, &c, &fed, st->client, FKD_SPLIT_TRAIN, &tok, err);
        fkd_federation_free(&fed);
    }
    fkd_corpus_free(&c);
    return rc;
}

static int keygen(const char *prefix)
{
    fkd_wire_identity id;
    fkd_error err;
    if (fkd_wire_identity_generate(&id, &err) != 0 ||
        fkd_wire_identity_save(prefix, &id, "client", 0, &err) != 0) {
        fprintf(stderr, "fedkd-client: %s\n", err.msg);
        return 1;
    }
    fkd_wire_identity_wipe(&id);
    printf("wrote %s.key (secret) and %s.pub (give it to the coordinator's allow-list)\n", prefix,
           prefix);
    return 0;
}

static int run(const settings *st)
{
    fkd_logger log;
    fkd_logger_init(&log, stderr, st->log_level, "client");
    fkd_error err;
    fkd_wire_identity id;
    fkd_wire_pubkey coord;
    fkd_token_stream text = {0};
    if (fkd_wire_identity_load(&id, st->key, &err) != 0 ||
        fkd_wire_pubkey_load(&coord, st->coordinator, &err) != 0 || load_text(&text, st, &err) != 0) {
        fkd_log(&log, FKD_LOG_ERROR, "start_failed", "error=\"%s\"", err.msg);
        return 1;
    }
    fkd_train_set_threads(st->cores);
    fkd_client_config cfg = fkd_client_config_defaults();
    cfg.endpoint = st->endpoint;
    cfg.use_curve = strncmp(st->endpoint, "inproc://", 9) != 0;
    cfg.state_dir = st->state_dir;
    cfg.memory_mb = (uint32_t)st->memory_mb;
    cfg.cores = (uint32_t)st->cores;
    cfg.heartbeat_ms = st->heartbeat_ms;
    cfg.backoff_min_ms = st->backoff_min_ms;
    cfg.backoff_max_ms = st->backoff_max_ms;
    cfg.attack_scale = (float)st->attack_scale;
    cfg.seed = st->seed;
    cfg.auto_train = 0; /* drive_worker trains on a thread */
    void *ctx = zmq_ctx_new();
    fkd_client *cl = NULL;
    int rc = fkd_client_new(&cl, &cfg, &id, coord.curve_pk, &text, ctx, &log, &err);
    if (rc == 0) {
        fkd_log(&log, FKD_LOG_INFO, "started", "endpoint=%s text_tokens=%lld memory_mb=%d",
                st->endpoint, (long long)text.n, st->memory_mb);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_stop;
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        worker w = {0};
        while (!g_stop && rc == 0) {
            int state = fkd_client_state(cl);
            if (state == FKD_CLIENT_FINISHED || state == FKD_CLIENT_REJECTED) break;
            rc = fkd_client_poll(cl, w.busy ? WORKER_POLL_MS : POLL_MS, &err);
            if (rc == 0) rc = drive_worker(&w, cl, &err);
        }
        if (w.busy) { /* stopping: let the job end (its update goes out if still connected) */
            pthread_join(w.thread, NULL);
            fkd_error ferr;
            fkd_client_job_finish(cl, &w.job, &ferr);
        }
    }
    int exit_code = rc != 0 ? 1 : 0;
    if (rc != 0) fkd_log(&log, FKD_LOG_ERROR, "stopped", "error=\"%s\"", err.msg);
    if (cl) {
        const fkd_client_stats *s = fkd_client_get_stats(cl);
        fkd_log(&log, FKD_LOG_INFO, "exit",
                "state=%s tasks=%llu acked=%llu reconnects=%llu bytes_up=%llu bytes_down=%llu",
                fkd_client_state_name(fkd_client_state(cl)), (unsigned long long)s->tasks,
                (unsigned long long)s->updates_acked, (unsigned long long)s->reconnects,
                (unsigned long long)s->bytes_up, (unsigned long long)s->bytes_down);
        if (fkd_client_state(cl) == FKD_CLIENT_REJECTED) exit_code = 3;
        fkd_client_free(&cl);
    }
    zmq_ctx_term(ctx);
    fkd_token_stream_free(&text);
    fkd_wire_identity_wipe(&id);
    return exit_code;
}

int main(int argc, char **argv)
{
    const char *config = NULL, *keygen_prefix = NULL;
    fkd_opt opts[] = {
        {"config", FKD_OPT_STR, &config, "settings file (key = value lines)"},
        {"keygen", FKD_OPT_STR, &keygen_prefix, "write this device's key pair PREFIX.key/.pub "
                                                "and exit"},
    };
    const char *sets[64];
    int n_sets = 0;
    int r = fkd_cli_parse(argc, argv, opts, 2,
                          "usage: fedkd-client [--config FILE] [key=value ...]\n"
                          "The fedkd edge agent. Settings: endpoint key coordinator state_dir "
                          "data client\nmemory_mb cores heartbeat_ms backoff_min_ms "
                          "backoff_max_ms seed log_level\n(see the header of client/cli/main.c "
                          "and docs/configuration.md).",
                          sets, 64, &n_sets);
    if (r != 0) return r > 0 ? 0 : 2;
    if (keygen_prefix) return keygen(keygen_prefix);
    settings st;
    defaults(&st);
    fkd_error err;
    if (config && fkd_kvconf_load(config, set_key, &st, &err) != 0) {
        fprintf(stderr, "fedkd-client: %s\n", err.msg);
        return 2;
    }
    for (int i = 0; i < n_sets; i++) {
        const char *eq = strchr(sets[i], '=');
        char key[64];
        if (!eq || eq == sets[i] || eq - sets[i] >= (long)sizeof key) {
            fprintf(stderr, "fedkd-client: '%s' is not key=value\n", sets[i]);
            return 2;
        }
        memcpy(key, sets[i], (size_t)(eq - sets[i]));
        key[eq - sets[i]] = '\0';
        if (set_key(&st, key, eq + 1, &err) != 0) {
            fprintf(stderr, "fedkd-client: %s\n", err.msg);
            return 2;
        }
    }
    return run(&st);
}
