/* metrics_http.h — the coordinator's Prometheus metrics and its /healthz.
 *
 * (To be folded into fkd_coordinator.h, the coordinator's one public header,
 * once that exists; until then the coordinator includes this file.)
 *
 * A registry holds counters, gauges and histograms registered by name; the
 * round loop updates them by the id registration returned, from any thread
 * (one mutex: updates are a handful per message, never a hot loop). An HTTP
 * server (libmicrohttpd, its own thread) answers
 *     GET /metrics   the Prometheus text exposition format, version 0.0.4
 *     GET /healthz   200 "ok" while healthy, 503 and the reason otherwise
 * Health is a flag the coordinator sets (a failed checkpoint makes it sick)
 * plus, when max_stale_ms > 0, a heartbeat the round loop must renew: a
 * coordinator stuck in a round for longer answers 503, so an orchestrator
 * restarts it (it resumes from its last checkpoint).
 *
 * A name may carry a fixed label set, "fedkd_clients_dropped_total{reason=\"late\"}";
 * all series of one family are written together under one HELP/TYPE. */
#ifndef FKD_METRICS_HTTP_H
#define FKD_METRICS_HTTP_H

#include <stdint.h>

#include "fkd_common.h"

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
typedef struct fkd_coord fkd_coord;
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
