/* metrics_coord.c — the round engine seen through the metrics registry.
 *
 * The engine keeps its own figures (fkd_coord_history, one entry per
 * completed round, and fkd_coord_connected); this file copies what changed
 * since the last call into the standard series, so the engine needs no
 * knowledge of metrics and a scrape never touches the engine's state. It
 * runs on the engine's thread; the HTTP thread reads only the registry.
 *
 * Not derivable from the history, so left to hooks in the engine: the size
 * of each update (fedkd_update_bytes), the aggregation time
 * (fedkd_aggregation_seconds) and abandoned rounds (fedkd_rounds_failed_total). */
#include "fkd_coordinator.h"

#include <stdlib.h>

static void add_round(fkd_coord_metrics *m, const fkd_coord_metrics_std *ids,
                      const fkd_coord_round_stats *r)
{
    fkd_coord_metrics_add(m, ids->rounds_completed, 1);
    fkd_coord_metrics_add(m, ids->updates_accepted, r->updates);
    fkd_coord_metrics_add(m, ids->clients_dropped_late, r->late);
    fkd_coord_metrics_add(m, ids->clients_dropped_gone, r->vanished);
    fkd_coord_metrics_add(m, ids->clients_dropped_rejected, r->rejected);
    fkd_coord_metrics_add(m, ids->bytes_in, (double)r->bytes_up);
    fkd_coord_metrics_add(m, ids->bytes_out, (double)r->bytes_down);
    fkd_coord_metrics_observe(m, ids->round_seconds, r->seconds);
}

void fkd_coord_metrics_sync(fkd_coord_metrics *m, const fkd_coord_metrics_std *ids,
                            const fkd_coord *c, int *rounds_seen)
{
    int n = 0;
    const fkd_coord_round_stats *h = fkd_coord_history(c, &n);
    if (*rounds_seen < 0) *rounds_seen = n;
    for (int i = *rounds_seen; i < n; i++) add_round(m, ids, &h[i]);
    if (n > 0) {
        fkd_coord_metrics_set(m, ids->eval_perplexity, h[n - 1].perplexity);
        fkd_coord_metrics_set(m, ids->clients_selected, h[n - 1].selected);
    }
    *rounds_seen = n;
    int collecting = fkd_coord_phase(c) == FKD_COORD_COLLECTING;
    fkd_coord_metrics_set(m, ids->round, (double)fkd_coord_round(c) + (collecting ? 1 : 0));
    fkd_coord_metrics_set(m, ids->clients_connected, fkd_coord_connected(c));
    fkd_coord_metrics_heartbeat(m);
}

/* ---- the service `fedkd serve` runs -------------------------------------- */
struct fkd_coord_metrics_service {
    fkd_coord_metrics *m;
    fkd_coord_metrics_std ids;
    fkd_coord_metrics_http *http;
    int rounds_seen;
};

int fkd_coord_metrics_service_start(fkd_coord_metrics_service **out, const char *listen,
                                    int64_t max_stale_ms, fkd_error *err)
{
    *out = NULL;
    fkd_coord_metrics_service *s = calloc(1, sizeof *s);
    if (!s) return fkd_error_set(err, FKD_E_NOMEM, "out of memory for the metrics service");
    s->rounds_seen = -1;
    if (fkd_coord_metrics_new(&s->m, err) != 0 ||
        fkd_coord_metrics_register_std(&s->ids, s->m, err) != 0 ||
        fkd_coord_metrics_http_start(&s->http, s->m, listen, max_stale_ms, err) != 0) {
        fkd_coord_metrics_service_stop(&s);
        return -1;
    }
    *out = s;
    return 0;
}

int fkd_coord_metrics_service_port(const fkd_coord_metrics_service *s)
{
    return s ? fkd_coord_metrics_http_port(s->http) : 0;
}

void fkd_coord_metrics_service_update(fkd_coord_metrics_service *s, const fkd_coord *c)
{
    if (s) fkd_coord_metrics_sync(s->m, &s->ids, c, &s->rounds_seen);
}

void fkd_coord_metrics_service_fail(fkd_coord_metrics_service *s, const char *reason)
{
    if (s) fkd_coord_metrics_set_health(s->m, 0, reason);
}

void fkd_coord_metrics_service_stop(fkd_coord_metrics_service **s)
{
    if (!s || !*s) return;
    fkd_coord_metrics_http_stop(&(*s)->http);
    fkd_coord_metrics_destroy(&(*s)->m);
    free(*s);
    *s = NULL;
}
