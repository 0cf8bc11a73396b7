/* metrics_http.c — the coordinator's metrics registry and its HTTP endpoint.
 *
 * The registry is a fixed array of series behind one mutex: registration
 * never moves a series, so an id stays valid for the registry's life, and a
 * scrape renders a consistent snapshot. The HTTP side is libmicrohttpd with
 * its own polling thread; it only ever reads the registry. It answers GET and
 * HEAD on /metrics and /healthz, 404 elsewhere, 405 for other methods, and
 * never reads a request body (there is nothing to upload). */
#include "fkd_coordinator.h"

#include <arpa/inet.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#define CONNECTION_LIMIT 16        /* scrapers are few; a flood is refused */
#define CONNECTION_TIMEOUT_S 10
#define LISTEN_MAX 128
#define RENDER_START_BYTES 4096    /* the standard set renders to about 3 KiB */

typedef struct {
    int type;
    char name[FKD_COORD_METRICS_NAME_BYTES];   /* family, then {labels} if any */
    size_t family_len;
    char help[FKD_COORD_METRICS_HELP_BYTES];
    double value;                               /* counter, gauge; histogram sum */
    int n_bounds;
    double bounds[FKD_COORD_METRICS_MAX_BUCKETS];
    uint64_t buckets[FKD_COORD_METRICS_MAX_BUCKETS + 1];   /* per bucket, last = +Inf */
    uint64_t count;
} series;

struct fkd_coord_metrics {
    pthread_mutex_t lock;
    int n;
    series s[FKD_COORD_METRICS_MAX];
    int healthy;
    char reason[FKD_COORD_METRICS_REASON_BYTES];
    double heartbeat_ms;
};

int fkd_coord_metrics_new(fkd_coord_metrics **m, fkd_error *err)
{
    *m = calloc(1, sizeof **m);
    if (!*m) return fkd_error_set(err, FKD_E_NOMEM, "out of memory for the metrics registry");
    if (pthread_mutex_init(&(*m)->lock, NULL) != 0) {
        free(*m);
        *m = NULL;
        return fkd_error_set(err, FKD_E_NOMEM, "cannot create the metrics registry's mutex");
    }
    (*m)->healthy = 1;
    (*m)->heartbeat_ms = fkd_time_ms();
    return 0;
}

void fkd_coord_metrics_destroy(fkd_coord_metrics **m)
{
    if (!m || !*m) return;
    pthread_mutex_destroy(&(*m)->lock);
    free(*m);
    *m = NULL;
}

/* ---- names ---------------------------------------------------------------- */

static int is_name_char(char c, int first)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':') return 1;
    return !first && c >= '0' && c <= '9';
}

/* Checks "family" or "family{label=\"value\",...}" against the exposition
 * format and returns the family's length, or 0 when the name is malformed. */
static size_t check_name(const char *name)
{
    size_t i = 0;
    while (name[i] && name[i] != '{') {
        if (!is_name_char(name[i], i == 0)) return 0;
        i++;
    }
    size_t family_len = i;
    if (family_len == 0) return 0;
    if (!name[i]) return family_len;
    i++;   /* '{' */
    for (;;) {
        size_t start = i;
        while (name[i] && name[i] != '=') {
            if (!is_name_char(name[i], i == start)) return 0;
            i++;
        }
        if (i == start || name[i] != '=' || name[i + 1] != '"') return 0;
        i += 2;
        while (name[i] && name[i] != '"') {
            if (name[i] == '\\' || name[i] == '\n') return 0;   /* keep values plain */
            i++;
        }
        if (name[i] != '"') return 0;
        i++;
        if (name[i] == ',') {
            i++;
            continue;
        }
        return name[i] == '}' && name[i + 1] == '\0' ? family_len : 0;
    }
}

static int check_help(const char *help)
{
    for (const char *p = help; *p; p++)
        if (*p == '\n' || *p == '\\') return 0;
    return 1;
}

static int check_bounds(const double *bounds, int n_bounds)
{
    if (n_bounds < 1 || n_bounds > FKD_COORD_METRICS_MAX_BUCKETS || !bounds) return 0;
    for (int i = 0; i < n_bounds; i++) {
        if (!isfinite(bounds[i])) return 0;
        if (i > 0 && !(bounds[i] > bounds[i - 1])) return 0;
    }
    return 1;
}

static int find_locked(const fkd_coord_metrics *m, const char *name)
{
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->s[i].name, name) == 0) return i;
    return -1;
}

/* ---- registration and updates -------------------------------------------- */

static int check_series(int type, const char *name, const char *help, const double *bounds,
                        int n_bounds, fkd_error *err)
{
    if (type < FKD_COORD_METRIC_COUNTER || type > FKD_COORD_METRIC_HISTOGRAM)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "metric type %d is not a counter, gauge "
                             "or histogram", type);
    if (!name || strlen(name) >= FKD_COORD_METRICS_NAME_BYTES || !check_name(name))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "metric name '%s' is not a Prometheus "
                             "name (letters, digits, '_', ':', optional {k=\"v\"} labels, "
                             "under %d bytes)", name ? name : "(null)",
                             FKD_COORD_METRICS_NAME_BYTES);
    if (!help || strlen(help) >= FKD_COORD_METRICS_HELP_BYTES || !check_help(help))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "help of metric '%s' must be one line "
                             "without backslashes, under %d bytes", name,
                             FKD_COORD_METRICS_HELP_BYTES);
    if (type != FKD_COORD_METRIC_HISTOGRAM) return 0;
    if (strchr(name, '{'))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "histogram '%s' cannot carry labels", name);
    if (!check_bounds(bounds, n_bounds))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "histogram '%s' needs 1 to %d finite, "
                             "strictly increasing bucket bounds", name,
                             FKD_COORD_METRICS_MAX_BUCKETS);
    return 0;
}

int fkd_coord_metrics_register(int *id, fkd_coord_metrics *m, int type, const char *name,
                               const char *help, const double *bounds, int n_bounds,
                               fkd_error *err)
{
    *id = -1;
    if (check_series(type, name, help, bounds, n_bounds, err) != 0) return -1;
    pthread_mutex_lock(&m->lock);
    int found = find_locked(m, name);
    if (found >= 0) {
        int same = m->s[found].type == type;
        pthread_mutex_unlock(&m->lock);
        if (!same)
            return fkd_error_set(err, FKD_E_MISMATCH, "metric '%s' is already registered with "
                                 "another type", name);
        *id = found;
        return 0;
    }
    size_t family_len = check_name(name);
    for (int i = 0; i < m->n; i++) {
        const series *o = &m->s[i];
        if (o->family_len == family_len && strncmp(o->name, name, family_len) == 0 &&
            o->type != type) {
            pthread_mutex_unlock(&m->lock);
            return fkd_error_set(err, FKD_E_MISMATCH, "metric family of '%s' is already "
                                 "registered with another type", name);
        }
    }
    if (m->n >= FKD_COORD_METRICS_MAX) {
        pthread_mutex_unlock(&m->lock);
        return fkd_error_set(err, FKD_E_LIMIT, "cannot register metric '%s': the registry "
                             "holds at most %d series", name, FKD_COORD_METRICS_MAX);
    }
    series *s = &m->s[m->n];
    memset(s, 0, sizeof *s);
    s->type = type;
    s->family_len = family_len;
    snprintf(s->name, sizeof s->name, "%s", name);
    snprintf(s->help, sizeof s->help, "%s", help);
    if (type == FKD_COORD_METRIC_HISTOGRAM) {
        s->n_bounds = n_bounds;
        memcpy(s->bounds, bounds, (size_t)n_bounds * sizeof *bounds);
    }
    *id = m->n++;
    pthread_mutex_unlock(&m->lock);
    return 0;
}

/* Locks m and returns the series id if it has the wanted type; NULL (and
 * unlocked) otherwise. type -1 accepts any. */
static series *lock_series(fkd_coord_metrics *m, int id, int type)
{
    if (!m) return NULL;
    pthread_mutex_lock(&m->lock);
    if (id < 0 || id >= m->n || (type >= 0 && m->s[id].type != type)) {
        pthread_mutex_unlock(&m->lock);
        return NULL;
    }
    return &m->s[id];
}

void fkd_coord_metrics_add(fkd_coord_metrics *m, int id, double v)
{
    series *s = lock_series(m, id, -1);
    if (!s) return;
    if (s->type == FKD_COORD_METRIC_GAUGE || (s->type == FKD_COORD_METRIC_COUNTER && v >= 0))
        s->value += v;
    pthread_mutex_unlock(&m->lock);
}

void fkd_coord_metrics_set(fkd_coord_metrics *m, int id, double v)
{
    series *s = lock_series(m, id, FKD_COORD_METRIC_GAUGE);
    if (!s) return;
    s->value = v;
    pthread_mutex_unlock(&m->lock);
}

void fkd_coord_metrics_observe(fkd_coord_metrics *m, int id, double v)
{
    series *s = lock_series(m, id, FKD_COORD_METRIC_HISTOGRAM);
    if (!s) return;
    if (!isnan(v)) {
        int b = 0;
        while (b < s->n_bounds && v > s->bounds[b]) b++;
        s->buckets[b]++;
        s->count++;
        s->value += v;
    }
    pthread_mutex_unlock(&m->lock);
}

double fkd_coord_metrics_value(fkd_coord_metrics *m, int id)
{
    series *s = lock_series(m, id, -1);
    if (!s) return NAN;
    double v = s->type == FKD_COORD_METRIC_HISTOGRAM ? (double)s->count : s->value;
    pthread_mutex_unlock(&m->lock);
    return v;
}

void fkd_coord_metrics_set_health(fkd_coord_metrics *m, int ok, const char *reason)
{
    pthread_mutex_lock(&m->lock);
    m->healthy = ok != 0;
    snprintf(m->reason, sizeof m->reason, "%s", ok || !reason ? "" : reason);
    pthread_mutex_unlock(&m->lock);
}

void fkd_coord_metrics_heartbeat(fkd_coord_metrics *m)
{
    pthread_mutex_lock(&m->lock);
    m->heartbeat_ms = fkd_time_ms();
    pthread_mutex_unlock(&m->lock);
}

/* ---- rendering ------------------------------------------------------------ */

typedef struct {
    char *p;
    size_t len, cap;
    int failed;
} strbuf;

static void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *b, const char *fmt, ...)
{
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap + (size_t)n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* A sample value as the format spells it; integers (byte counts, rounds)
 * print without an exponent, everything else round-trips through %.17g. */
static void format_value(char out[40], double v)
{
    if (isnan(v)) snprintf(out, 40, "NaN");
    else if (isinf(v)) snprintf(out, 40, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 9007199254740992.0) snprintf(out, 40, "%.0f", v);
    else snprintf(out, 40, "%.17g", v);
}

static const char *type_name(int type)
{
    return type == FKD_COORD_METRIC_COUNTER ? "counter"
           : type == FKD_COORD_METRIC_GAUGE ? "gauge" : "histogram";
}

static void render_histogram(strbuf *b, const series *s)
{
    char v[40];
    uint64_t cumulative = 0;
    for (int i = 0; i <= s->n_bounds; i++) {
        cumulative += s->buckets[i];
        if (i < s->n_bounds) format_value(v, s->bounds[i]);
        else snprintf(v, sizeof v, "+Inf");
        sb_printf(b, "%s_bucket{le=\"%s\"} %llu\n", s->name, v, (unsigned long long)cumulative);
    }
    format_value(v, s->value);
    sb_printf(b, "%s_sum %s\n%s_count %llu\n", s->name, v, s->name,
              (unsigned long long)s->count);
}

static void render_locked(strbuf *b, const fkd_coord_metrics *m)
{
    unsigned char done[FKD_COORD_METRICS_MAX] = {0};
    for (int i = 0; i < m->n; i++) {
        if (done[i]) continue;
        const series *f = &m->s[i];
        sb_printf(b, "# HELP %.*s %s\n# TYPE %.*s %s\n", (int)f->family_len, f->name, f->help,
                  (int)f->family_len, f->name, type_name(f->type));
        for (int j = i; j < m->n; j++) {
            const series *s = &m->s[j];
            if (s->family_len != f->family_len || strncmp(s->name, f->name, f->family_len) != 0)
                continue;
            done[j] = 1;
            if (s->type == FKD_COORD_METRIC_HISTOGRAM) {
                render_histogram(b, s);
                continue;
            }
            char v[40];
            format_value(v, s->value);
            sb_printf(b, "%s %s\n", s->name, v);
        }
    }
}

int fkd_coord_metrics_render(char **text, size_t *bytes, fkd_coord_metrics *m, fkd_error *err)
{
    strbuf b = {.p = malloc(RENDER_START_BYTES), .cap = RENDER_START_BYTES};
    b.failed = !b.p;
    if (b.p) b.p[0] = '\0';
    pthread_mutex_lock(&m->lock);
    render_locked(&b, m);
    pthread_mutex_unlock(&m->lock);
    if (b.failed) {
        free(b.p);
        *text = NULL;
        return fkd_error_set(err, FKD_E_NOMEM, "out of memory rendering the metrics");
    }
    *text = b.p;
    *bytes = b.len;
    return 0;
}

/* ---- the standard set ----------------------------------------------------- */

static const double BYTES_BOUNDS[] = {1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9};
static const double SECONDS_BOUNDS[] = {0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600};
#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

int fkd_coord_metrics_register_std(fkd_coord_metrics_std *ids, fkd_coord_metrics *m,
                                   fkd_error *err)
{
    const struct {
        int *id, type;
        const char *name, *help;
        const double *bounds;
        int n_bounds;
    } t[] = {
        {&ids->rounds_completed, FKD_COORD_METRIC_COUNTER, "fedkd_rounds_completed_total",
         "Rounds aggregated and checkpointed.", NULL, 0},
        {&ids->rounds_failed, FKD_COORD_METRIC_COUNTER, "fedkd_rounds_failed_total",
         "Rounds closed without enough updates to aggregate.", NULL, 0},
        {&ids->round, FKD_COORD_METRIC_GAUGE, "fedkd_round", "The round now running.", NULL, 0},
        {&ids->clients_connected, FKD_COORD_METRIC_GAUGE, "fedkd_clients_connected",
         "Clients that said HELLO and are still connected.", NULL, 0},
        {&ids->clients_selected, FKD_COORD_METRIC_GAUGE, "fedkd_clients_selected",
         "Clients sent a TASK in the last completed round.", NULL, 0},
        {&ids->clients_dropped_late, FKD_COORD_METRIC_COUNTER,
         "fedkd_clients_dropped_total{reason=\"late\"}",
         "Selected clients whose update did not count, by reason.", NULL, 0},
        {&ids->clients_dropped_gone, FKD_COORD_METRIC_COUNTER,
         "fedkd_clients_dropped_total{reason=\"disconnected\"}",
         "Selected clients whose update did not count, by reason.", NULL, 0},
        {&ids->clients_dropped_rejected, FKD_COORD_METRIC_COUNTER,
         "fedkd_clients_dropped_total{reason=\"rejected\"}",
         "Selected clients whose update did not count, by reason.", NULL, 0},
        {&ids->updates_accepted, FKD_COORD_METRIC_COUNTER, "fedkd_updates_accepted_total",
         "Updates verified, decrypted and aggregated.", NULL, 0},
        {&ids->bytes_in, FKD_COORD_METRIC_COUNTER, "fedkd_bytes_received_total",
         "Bytes received from clients (whole messages).", NULL, 0},
        {&ids->bytes_out, FKD_COORD_METRIC_COUNTER, "fedkd_bytes_sent_total",
         "Bytes sent to clients (whole messages).", NULL, 0},
        {&ids->update_bytes, FKD_COORD_METRIC_HISTOGRAM, "fedkd_update_bytes",
         "Size of each sealed update received.", BYTES_BOUNDS, N_OF(BYTES_BOUNDS)},
        {&ids->aggregation_seconds, FKD_COORD_METRIC_HISTOGRAM, "fedkd_aggregation_seconds",
         "Time to aggregate a round's updates and re-quantize the student.", SECONDS_BOUNDS,
         N_OF(SECONDS_BOUNDS)},
        {&ids->round_seconds, FKD_COORD_METRIC_HISTOGRAM, "fedkd_round_seconds",
         "Wall time of a round, selection to checkpoint.", SECONDS_BOUNDS,
         N_OF(SECONDS_BOUNDS)},
        {&ids->eval_perplexity, FKD_COORD_METRIC_GAUGE, "fedkd_eval_perplexity",
         "Held-out perplexity of the student after the last completed round.", NULL, 0},
    };
    for (int i = 0; i < N_OF(t); i++)
        if (fkd_coord_metrics_register(t[i].id, m, t[i].type, t[i].name, t[i].help, t[i].bounds,
                                       t[i].n_bounds, err) != 0)
            return -1;
    fkd_coord_metrics_set(m, ids->eval_perplexity, NAN);   /* none measured yet */
    return 0;
}

/* ---- HTTP ------------------------------------------------------------------ */

struct fkd_coord_metrics_http {
    struct MHD_Daemon *daemon;
    fkd_coord_metrics *m;
    int64_t max_stale_ms;
    int port;
};

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
                             char *body, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status, const char *text)
{
    char *body = strdup(text);
    if (!body) return MHD_NO;
    return reply(c, status, "text/plain; charset=utf-8", body, strlen(body));
}

static enum MHD_Result serve_healthz(struct MHD_Connection *c, fkd_coord_metrics_http *srv)
{
    char text[FKD_COORD_METRICS_REASON_BYTES + 64];
    fkd_coord_metrics *m = srv->m;
    pthread_mutex_lock(&m->lock);
    int ok = m->healthy;
    double age_ms = fkd_time_ms() - m->heartbeat_ms;
    if (!ok) snprintf(text, sizeof text, "unhealthy: %s\n", m->reason);
    pthread_mutex_unlock(&m->lock);
    if (ok && srv->max_stale_ms > 0 && age_ms > (double)srv->max_stale_ms) {
        ok = 0;
        snprintf(text, sizeof text, "unhealthy: no heartbeat for %.0f ms (limit %lld ms)\n",
                 age_ms, (long long)srv->max_stale_ms);
    }
    return reply_text(c, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, ok ? "ok\n" : text);
}

static enum MHD_Result serve_metrics(struct MHD_Connection *c, fkd_coord_metrics_http *srv)
{
    char *text;
    size_t len;
    if (fkd_coord_metrics_render(&text, &len, srv->m, NULL) != 0)
        return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    fkd_coord_metrics_http *srv = cls;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    if (*upload_data_size != 0) return MHD_NO;   /* a GET with a body: drop the connection */
    if (strcmp(url, "/metrics") == 0) return serve_metrics(c, srv);
    if (strcmp(url, "/healthz") == 0) return serve_healthz(c, srv);
    return reply_text(c, MHD_HTTP_NOT_FOUND, "not found: try /metrics or /healthz\n");
}

/* Splits "HOST:PORT" / "[V6]:PORT" into a socket address. */
static int parse_listen(struct sockaddr_storage *ss, int *ipv6, const char *listen,
                        fkd_error *err)
{
    char host[LISTEN_MAX];
    const char *colon = strrchr(listen, ':');
    if (!colon || strlen(listen) >= sizeof host)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "metrics address '%s' is not HOST:PORT "
                             "(e.g. 127.0.0.1:9465)", listen);
    size_t host_len = (size_t)(colon - listen);
    const char *h = listen;
    if (host_len >= 2 && listen[0] == '[' && listen[host_len - 1] == ']') {
        h++;
        host_len -= 2;
    }
    memcpy(host, h, host_len);
    host[host_len] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || port < 0 || port > 65535)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "metrics port in '%s' must be 0 to 65535",
                             listen);
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    char port_text[8];
    snprintf(port_text, sizeof port_text, "%ld", port);
    if (getaddrinfo(host, port_text, &hints, &ai) != 0 || !ai)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "metrics host in '%s' must be a numeric "
                             "IPv4 or [IPv6] address (0.0.0.0 for every interface)", listen);
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    *ipv6 = ai->ai_family == AF_INET6;
    freeaddrinfo(ai);
    return 0;
}

int fkd_coord_metrics_http_start(fkd_coord_metrics_http **srv, fkd_coord_metrics *m,
                                 const char *listen, int64_t max_stale_ms, fkd_error *err)
{
    *srv = NULL;
    struct sockaddr_storage ss = {0};
    int ipv6 = 0;
    if (parse_listen(&ss, &ipv6, listen ? listen : FKD_COORD_METRICS_DEFAULT_LISTEN, err) != 0)
        return -1;
    fkd_coord_metrics_http *s = calloc(1, sizeof *s);
    if (!s) return fkd_error_set(err, FKD_E_NOMEM, "out of memory for the metrics server");
    s->m = m;
    s->max_stale_ms = max_stale_ms;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | (ipv6 ? MHD_USE_IPv6 : 0);
    s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR,
                                 (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT,
                                 (unsigned)CONNECTION_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT,
                                 (unsigned)CONNECTION_TIMEOUT_S, MHD_OPTION_END);
    if (!s->daemon) {
        free(s);
        return fkd_error_set(err, FKD_E_NET, "cannot serve metrics on %s: the address is in "
                             "use or not on this machine (set metrics_listen to another "
                             "HOST:PORT)", listen ? listen : FKD_COORD_METRICS_DEFAULT_LISTEN);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : 0;
    *srv = s;
    return 0;
}

int fkd_coord_metrics_http_port(const fkd_coord_metrics_http *srv)
{
    return srv ? srv->port : 0;
}

void fkd_coord_metrics_http_stop(fkd_coord_metrics_http **srv)
{
    if (!srv || !*srv) return;
    MHD_stop_daemon((*srv)->daemon);
    free(*srv);
    *srv = NULL;
}
