/* test_metrics_http.c — the coordinator's metrics registry and HTTP endpoint:
 * exact exposition text for a small registry, names the format refuses,
 * counters that move between two real scrapes over loopback, /healthz going
 * sick and well again, wrong paths and methods, and updates from two threads
 * adding up exactly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fkd_coordinator.h"
#include "http_get.h"

#define RESPONSE_MAX (256 * 1024)
#define THREAD_ADDS 100000

typedef struct {
    int status;
    char body[RESPONSE_MAX];
} http_response;

static int http_request(http_response *r, int port, const char *method, const char *path)
{
    return test_http_request(&r->status, r->body, sizeof r->body, port, method, path);
}

/* The sample value of the series named exactly `series` in exposition text. */
static double sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
        if (strncmp(line, series, n) == 0 && line[n] == ' ') return strtod(line + n + 1, NULL);
    return NAN;
}

static double scrape(int port, const char *series)
{
    static http_response r;
    assert_int_equal(http_request(&r, port, "GET", "/metrics"), 0);
    assert_int_equal(r.status, 200);
    return sample(r.body, series);
}

static void test_render_exact(void **state)
{
    fkd_coord_metrics *m;
    fkd_error err;
    assert_int_equal(fkd_coord_metrics_new(&m, &err), 0);
    int c, g, d1, d2, h;
    const double bounds[] = {1, 10};
    assert_int_equal(fkd_coord_metrics_register(&c, m, FKD_COORD_METRIC_COUNTER, "t_total",
                                                "A counter.", NULL, 0, &err), 0);
    assert_int_equal(fkd_coord_metrics_register(&d1, m, FKD_COORD_METRIC_COUNTER,
                                                "t_drop_total{reason=\"late\"}", "Drops.", NULL,
                                                0, &err), 0);
    assert_int_equal(fkd_coord_metrics_register(&g, m, FKD_COORD_METRIC_GAUGE, "t_gauge",
                                                "A gauge.", NULL, 0, &err), 0);
    assert_int_equal(fkd_coord_metrics_register(&d2, m, FKD_COORD_METRIC_COUNTER,
                                                "t_drop_total{reason=\"gone\"}", "Drops.", NULL,
                                                0, &err), 0);
    assert_int_equal(fkd_coord_metrics_register(&h, m, FKD_COORD_METRIC_HISTOGRAM, "t_seconds",
                                                "A histogram.", bounds, 2, &err), 0);
    fkd_coord_metrics_add(m, c, 3);
    fkd_coord_metrics_add(m, c, -5);   /* a counter never goes down */
    fkd_coord_metrics_add(m, d1, 1);
    fkd_coord_metrics_add(m, d2, 2);
    fkd_coord_metrics_set(m, g, 0.25);
    fkd_coord_metrics_set(m, c, 100);  /* set is for gauges only */
    fkd_coord_metrics_observe(m, h, 0.5);
    fkd_coord_metrics_observe(m, h, 1);    /* le="1" includes 1 */
    fkd_coord_metrics_observe(m, h, 7);
    fkd_coord_metrics_observe(m, h, 1e6);
    fkd_coord_metrics_observe(m, h, NAN);  /* ignored */
    char *text;
    size_t len;
    assert_int_equal(fkd_coord_metrics_render(&text, &len, m, &err), 0);
    const char *want =
        "# HELP t_total A counter.\n# TYPE t_total counter\nt_total 3\n"
        "# HELP t_drop_total Drops.\n# TYPE t_drop_total counter\n"
        "t_drop_total{reason=\"late\"} 1\nt_drop_total{reason=\"gone\"} 2\n"
        "# HELP t_gauge A gauge.\n# TYPE t_gauge gauge\nt_gauge 0.25\n"
        "# HELP t_seconds A histogram.\n# TYPE t_seconds histogram\n"
        "t_seconds_bucket{le=\"1\"} 2\nt_seconds_bucket{le=\"10\"} 3\n"
        "t_seconds_bucket{le=\"+Inf\"} 4\nt_seconds_sum 1000008.5\nt_seconds_count 4\n";
    assert_string_equal(text, want);
    assert_int_equal(len, strlen(want));
    free(text);
    assert_true(fkd_coord_metrics_value(m, h) == 4);
    assert_true(isnan(fkd_coord_metrics_value(m, 99)));
    fkd_coord_metrics_destroy(&m);
    assert_null(m);
}

static void test_register_refuses(void **state)
{
    fkd_coord_metrics *m;
    fkd_error err;
    assert_int_equal(fkd_coord_metrics_new(&m, &err), 0);
    int id;
    const char *bad[] = {"", "9lives", "has space", "a-b", "x{", "x{k=v}", "x{k=\"v\"",
                         "x{k=\"v\"}y", "x{=\"v\"}", "x{k=\"a\\\"b\"}", "x{k=\"v\",}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(fkd_coord_metrics_register(&id, m, FKD_COORD_METRIC_GAUGE, bad[i], "h",
                                                    NULL, 0, &err), -1);
        assert_int_equal(err.code, FKD_E_INVALID_ARG);
        assert_int_equal(id, -1);
    }
    assert_int_equal(fkd_coord_metrics_register(&id, m, FKD_COORD_METRIC_GAUGE, "ok",
                                                "two\nlines", NULL, 0, &err), -1);
    const double unsorted[] = {2, 1}, inf[] = {1, INFINITY};
    assert_int_equal(fkd_coord_metrics_register(&id, m, FKD_COORD_METRIC_HISTOGRAM, "h", "h",
                                                unsorted, 2, &err), -1);
    assert_int_equal(fkd_coord_metrics_register(&id, m, FKD_COORD_METRIC_HISTOGRAM, "h", "h",
                                                inf, 2, &err), -1);
    assert_int_equal(fkd_coord_metrics_register(&id, m, FKD_COORD_METRIC_HISTOGRAM, "h", "h",
                                                NULL, 0, &err), -1);
    assert_int_equal(fkd_coord_metrics_register(&id, m, 7, "ok", "h", NULL, 0, &err), -1);

    /* Same name and type: the same id. Other type: refused, also per family. */
    int a, b;
    assert_int_equal(fkd_coord_metrics_register(&a, m, FKD_COORD_METRIC_COUNTER, "n_total", "h",
                                                NULL, 0, &err), 0);
    assert_int_equal(fkd_coord_metrics_register(&b, m, FKD_COORD_METRIC_COUNTER, "n_total", "h",
                                                NULL, 0, &err), 0);
    assert_int_equal(a, b);
    assert_int_equal(fkd_coord_metrics_register(&b, m, FKD_COORD_METRIC_GAUGE, "n_total", "h",
                                                NULL, 0, &err), -1);
    assert_int_equal(err.code, FKD_E_MISMATCH);
    assert_int_equal(fkd_coord_metrics_register(&b, m, FKD_COORD_METRIC_GAUGE,
                                                "n_total{k=\"v\"}", "h", NULL, 0, &err), -1);
    assert_int_equal(err.code, FKD_E_MISMATCH);

    /* The registry is bounded. */
    int n_ok = 1, last = 0;
    for (int i = 0; i < FKD_COORD_METRICS_MAX + 4; i++) {
        char name[32];
        snprintf(name, sizeof name, "fill_%d", i);
        last = fkd_coord_metrics_register(&id, m, FKD_COORD_METRIC_GAUGE, name, "h", NULL, 0,
                                          &err);
        if (last == 0) n_ok++;
    }
    assert_int_equal(last, -1);
    assert_int_equal(err.code, FKD_E_LIMIT);
    assert_int_equal(n_ok, FKD_COORD_METRICS_MAX);
    fkd_coord_metrics_destroy(&m);
}

static void test_scrape_counters_move(void **state)
{
    fkd_coord_metrics *m;
    fkd_coord_metrics_std ids;
    fkd_coord_metrics_http *srv;
    fkd_error err;
    assert_int_equal(fkd_coord_metrics_new(&m, &err), 0);
    assert_int_equal(fkd_coord_metrics_register_std(&ids, m, &err), 0);
    assert_int_equal(fkd_coord_metrics_http_start(&srv, m, "127.0.0.1:0", 0, &err), 0);
    int port = fkd_coord_metrics_http_port(srv);
    assert_true(port > 0);

    assert_true(scrape(port, "fedkd_rounds_completed_total") == 0);
    assert_true(isnan(scrape(port, "fedkd_eval_perplexity")));
    /* what a round does */
    fkd_coord_metrics_set(m, ids.clients_selected, 3);
    fkd_coord_metrics_add(m, ids.bytes_out, 3 * 1048576.0);
    fkd_coord_metrics_add(m, ids.bytes_in, 40000);
    fkd_coord_metrics_observe(m, ids.update_bytes, 40000);
    fkd_coord_metrics_add(m, ids.clients_dropped_late, 1);
    fkd_coord_metrics_observe(m, ids.round_seconds, 2.5);
    fkd_coord_metrics_set(m, ids.eval_perplexity, 41.5);
    fkd_coord_metrics_add(m, ids.rounds_completed, 1);

    assert_true(scrape(port, "fedkd_rounds_completed_total") == 1);
    assert_true(scrape(port, "fedkd_clients_selected") == 3);
    assert_true(scrape(port, "fedkd_bytes_sent_total") == 3145728);
    assert_true(scrape(port, "fedkd_bytes_received_total") == 40000);
    assert_true(scrape(port, "fedkd_update_bytes_bucket{le=\"100000\"}") == 1);
    assert_true(scrape(port, "fedkd_update_bytes_bucket{le=\"10000\"}") == 0);
    assert_true(scrape(port, "fedkd_clients_dropped_total{reason=\"late\"}") == 1);
    assert_true(scrape(port, "fedkd_clients_dropped_total{reason=\"rejected\"}") == 0);
    assert_true(scrape(port, "fedkd_round_seconds_count") == 1);
    assert_true(scrape(port, "fedkd_eval_perplexity") == 41.5);

    fkd_coord_metrics_http_stop(&srv);
    assert_null(srv);
    fkd_coord_metrics_destroy(&m);
}

static void test_healthz(void **state)
{
    fkd_coord_metrics *m;
    fkd_coord_metrics_http *srv;
    fkd_error err;
    static http_response r;
    assert_int_equal(fkd_coord_metrics_new(&m, &err), 0);
    assert_int_equal(fkd_coord_metrics_http_start(&srv, m, "127.0.0.1:0", 200, &err), 0);
    int port = fkd_coord_metrics_http_port(srv);

    assert_int_equal(http_request(&r, port, "GET", "/healthz"), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok\n");

    fkd_coord_metrics_set_health(m, 0, "checkpoint write failed: disk full");
    assert_int_equal(http_request(&r, port, "GET", "/healthz"), 0);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "disk full"));
    fkd_coord_metrics_set_health(m, 1, NULL);
    assert_int_equal(http_request(&r, port, "GET", "/healthz"), 0);
    assert_int_equal(r.status, 200);

    /* No heartbeat for longer than the limit: sick until the next one. */
    struct timespec ts = {.tv_nsec = 300 * 1000000L};
    nanosleep(&ts, NULL);
    assert_int_equal(http_request(&r, port, "GET", "/healthz"), 0);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "no heartbeat"));
    fkd_coord_metrics_heartbeat(m);
    assert_int_equal(http_request(&r, port, "GET", "/healthz"), 0);
    assert_int_equal(r.status, 200);

    assert_int_equal(http_request(&r, port, "GET", "/"), 0);
    assert_int_equal(r.status, 404);
    assert_int_equal(http_request(&r, port, "GET", "/metrics/../healthz"), 0);
    assert_int_equal(r.status, 404);
    assert_int_equal(http_request(&r, port, "POST", "/metrics"), 0);
    assert_int_equal(r.status, 405);
    assert_int_equal(http_request(&r, port, "HEAD", "/metrics"), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "");

    fkd_coord_metrics_http_stop(&srv);
    fkd_coord_metrics_destroy(&m);
}

static void test_listen_errors(void **state)
{
    fkd_coord_metrics *m;
    fkd_coord_metrics_http *a, *b;
    fkd_error err;
    assert_int_equal(fkd_coord_metrics_new(&m, &err), 0);
    const char *bad[] = {"9465", "localhost:9465", "127.0.0.1:", "127.0.0.1:70000",
                         "127.0.0.1:-1", "127.0.0.1:12x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(fkd_coord_metrics_http_start(&a, m, bad[i], 0, &err), -1);
        assert_int_equal(err.code, FKD_E_INVALID_ARG);
        assert_null(a);
    }
    assert_int_equal(fkd_coord_metrics_http_start(&a, m, "127.0.0.1:0", 0, &err), 0);
    char taken[64];
    snprintf(taken, sizeof taken, "127.0.0.1:%d", fkd_coord_metrics_http_port(a));
    assert_int_equal(fkd_coord_metrics_http_start(&b, m, taken, 0, &err), -1);
    assert_int_equal(err.code, FKD_E_NET);
    assert_non_null(strstr(err.msg, "metrics_listen"));
    fkd_coord_metrics_http_stop(&a);
    fkd_coord_metrics_http_stop(&a);   /* twice is harmless */
    fkd_coord_metrics_destroy(&m);
}

typedef struct {
    fkd_coord_metrics *m;
    int counter, hist;
} adder;

static void *add_many(void *arg)
{
    adder *a = arg;
    for (int i = 0; i < THREAD_ADDS; i++) {
        fkd_coord_metrics_add(a->m, a->counter, 1);
        fkd_coord_metrics_observe(a->m, a->hist, 1);
    }
    return NULL;
}

static void test_threads_add_up(void **state)
{
    adder a;
    fkd_error err;
    const double bounds[] = {0.5, 2};
    assert_int_equal(fkd_coord_metrics_new(&a.m, &err), 0);
    assert_int_equal(fkd_coord_metrics_register(&a.counter, a.m, FKD_COORD_METRIC_COUNTER, "c",
                                                "h", NULL, 0, &err), 0);
    assert_int_equal(fkd_coord_metrics_register(&a.hist, a.m, FKD_COORD_METRIC_HISTOGRAM, "hh",
                                                "h", bounds, 2, &err), 0);
    pthread_t t[2];
    for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&t[i], NULL, add_many, &a), 0);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    assert_true(fkd_coord_metrics_value(a.m, a.counter) == 2.0 * THREAD_ADDS);
    char *text;
    size_t len;
    assert_int_equal(fkd_coord_metrics_render(&text, &len, a.m, &err), 0);
    assert_true(sample(text, "hh_bucket{le=\"2\"}") == 2.0 * THREAD_ADDS);
    assert_true(sample(text, "hh_bucket{le=\"0.5\"}") == 0);
    free(text);
    fkd_coord_metrics_destroy(&a.m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_exact),        cmocka_unit_test(test_register_refuses),
        cmocka_unit_test(test_scrape_counters_move), cmocka_unit_test(test_healthz),
        cmocka_unit_test(test_listen_errors),       cmocka_unit_test(test_threads_add_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
