/* test_metrics_round.c — the counters move during real rounds. A coordinator
 * engine and two client agents (the same code `fedkd serve` and
 * `fedkd-client` run, over inproc:// in one process) complete two rounds
 * while the metrics endpoint serves the registry fkd_coord_metrics_sync
 * fills; /metrics is scraped over loopback HTTP before the first round,
 * after the first and after the second. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "fkd_coordinator.h"
#include "http_get.h"

#define ENDPOINT "inproc://metrics-round"
#define N_CLIENTS 2
#define TEXT_BYTES 6000
#define TIME_LIMIT_MS 120000.0
#define RESPONSE_MAX (64 * 1024)

/* The body of GET path, which must answer 200. */
static void http_get(char *body, size_t cap, int port, const char *path)
{
    int status = 0;
    assert_int_equal(test_http_request(&status, body, cap, port, "GET", path), 0);
    assert_int_equal(status, 200);
}

static double sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *l = text; l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, series, n) == 0 && l[n] == ' ') return strtod(l + n + 1, NULL);
    return NAN;
}

typedef struct {
    double rounds, updates, bytes_in, bytes_out, connected, round, round_count, ppl;
} scraped;

static scraped scrape(int port)
{
    static char body[RESPONSE_MAX];
    http_get(body, sizeof body, port, "/metrics");
    return (scraped){sample(body, "fedkd_rounds_completed_total"),
                     sample(body, "fedkd_updates_accepted_total"),
                     sample(body, "fedkd_bytes_received_total"),
                     sample(body, "fedkd_bytes_sent_total"),
                     sample(body, "fedkd_clients_connected"), sample(body, "fedkd_round"),
                     sample(body, "fedkd_round_seconds_count"),
                     sample(body, "fedkd_eval_perplexity")};
}

/* Deterministic text a byte-level student can learn something from. */
static void make_text(fkd_token_stream *s, uint64_t seed)
{
    static const char *words[] = {"the ", "edge ", "device ", "learns ", "from ", "text ",
                                  "and ", "keeps ", "it ", "private. "};
    fkd_rng rng;
    fkd_rng_seed(&rng, seed);
    memset(s, 0, sizeof *s);
    s->tokens = malloc(TEXT_BYTES * sizeof *s->tokens);
    assert_non_null(s->tokens);
    int64_t n = 0;
    while (n < TEXT_BYTES - 16) {
        const char *w = words[fkd_rng_below(&rng, 10)];
        for (; *w; w++) s->tokens[n++] = (unsigned char)*w;
    }
    s->n = s->text_bytes = n;
    s->n_docs = 1;
    s->owned = 1;
}

typedef struct {
    void *zmq;
    fkd_logger log;
    fkd_wire_identity coord_id, client_id[N_CLIENTS];
    fkd_token_stream text[N_CLIENTS];
    fkd_coord_config cfg;
    fkd_coord *coord;
    void *router;
    fkd_client *client[N_CLIENTS];
    fkd_coord_metrics *m;
    fkd_coord_metrics_std ids;
    fkd_coord_metrics_http *srv;
    int rounds_seen;
    char dir[256], eval_path[300];
} fixture;

static void setup_coordinator(fixture *f)
{
    fkd_error err;
    const char *tmp = getenv("FKD_TEST_TMP");
    snprintf(f->dir, sizeof f->dir, "%s/metrics-round-XXXXXX", tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->eval_path, sizeof f->eval_path, "%s/eval.txt", f->dir);
    const char *eval = "the device learns from text and keeps it private. the edge learns. ";
    char buf[4096] = "";
    for (int i = 0; i < 40; i++) strcat(buf, eval);
    assert_int_equal(fkd_file_write_atomic(f->eval_path, buf, strlen(buf), &err), 0);

    fkd_coord_config_defaults(&f->cfg);
    snprintf(f->cfg.endpoint, sizeof f->cfg.endpoint, "%s", ENDPOINT);
    f->cfg.allowlist[0] = '\0';
    f->cfg.require_transport_auth = 0;
    assert_true(strlen(f->eval_path) < sizeof f->cfg.eval_data &&
                strlen(f->dir) + 7 < sizeof f->cfg.state_dir);
    memcpy(f->cfg.eval_data, f->eval_path, strlen(f->eval_path) + 1);
    memcpy(f->cfg.state_dir, f->dir, strlen(f->dir));
    memcpy(f->cfg.state_dir + strlen(f->dir), "/state", 7);
    f->cfg.rounds = 2;
    f->cfg.min_clients = N_CLIENTS;
    f->cfg.local_steps = 2;
    f->cfg.batch = 2;
    f->cfg.seq = 32;
    f->cfg.eval_tokens = 1024;
    assert_int_equal(fkd_wire_identity_generate(&f->coord_id, &err), 0);
    assert_int_equal(fkd_coord_new(&f->coord, &f->cfg, &f->coord_id, &f->log, &err), 0);
    f->router = zmq_socket(f->zmq, ZMQ_ROUTER);
    int one = 1;
    assert_int_equal(zmq_setsockopt(f->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one), 0);
    assert_int_equal(zmq_bind(f->router, ENDPOINT), 0);
    fkd_coord_attach(f->coord, f->router);
}

static void setup_clients(fixture *f)
{
    fkd_error err;
    for (int i = 0; i < N_CLIENTS; i++) {
        char state[300];
        snprintf(state, sizeof state, "%s/client-%d", f->dir, i);
        fkd_client_config cc = fkd_client_config_defaults();
        cc.endpoint = ENDPOINT;
        cc.use_curve = 0;
        cc.state_dir = state;   /* copied by the agent (created there) */
        cc.seed = (uint64_t)i + 1;
        assert_int_equal(fkd_wire_identity_generate(&f->client_id[i], &err), 0);
        make_text(&f->text[i], (uint64_t)i + 7);
        assert_int_equal(fkd_client_new(&f->client[i], &cc, &f->client_id[i],
                                        f->coord_id.curve_pk, &f->text[i], f->zmq, &f->log,
                                        &err), 0);
    }
}

/* Polls everyone until the engine has completed `rounds` rounds. */
static void run_until(fixture *f, int rounds)
{
    fkd_error err;
    double until = fkd_time_ms() + TIME_LIMIT_MS;
    while ((int)fkd_coord_round(f->coord) < rounds) {
        assert_true(fkd_time_ms() < until);
        assert_int_equal(fkd_coord_poll(f->coord, 5, &err), 0);
        for (int i = 0; i < N_CLIENTS; i++)
            assert_int_equal(fkd_client_poll(f->client[i], 5, &err), 0);
        fkd_coord_metrics_sync(f->m, &f->ids, f->coord, &f->rounds_seen);
    }
}

static void test_counters_move_during_rounds(void **state)
{
    static fixture f;
    fkd_error err;
    memset(&f, 0, sizeof f);
    f.zmq = zmq_ctx_new();
    fkd_logger_init(&f.log, NULL, FKD_LOG_ERROR, "test");
    assert_int_equal(fkd_coord_metrics_new(&f.m, &err), 0);
    assert_int_equal(fkd_coord_metrics_register_std(&f.ids, f.m, &err), 0);
    assert_int_equal(fkd_coord_metrics_http_start(&f.srv, f.m, "127.0.0.1:0", 60000, &err), 0);
    int port = fkd_coord_metrics_http_port(f.srv);
    f.rounds_seen = -1;
    setup_coordinator(&f);
    fkd_coord_metrics_sync(f.m, &f.ids, f.coord, &f.rounds_seen);

    scraped s0 = scrape(port);
    assert_true(s0.rounds == 0 && s0.updates == 0 && s0.bytes_in == 0 && s0.round_count == 0);
    assert_true(isnan(s0.ppl));
    assert_true(s0.round == 0);

    setup_clients(&f);
    run_until(&f, 1);
    scraped s1 = scrape(port);
    assert_true(s1.rounds == 1);
    assert_true(s1.updates == N_CLIENTS);
    assert_true(s1.bytes_in > 0 && s1.bytes_out > s1.bytes_in);   /* the student down, top-k up */
    assert_true(s1.connected == N_CLIENTS);
    assert_true(s1.round_count == 1);
    assert_true(isfinite(s1.ppl) && s1.ppl > 1);

    run_until(&f, 2);
    scraped s2 = scrape(port);
    assert_true(s2.rounds == 2 && s2.updates == 2 * N_CLIENTS && s2.round_count == 2);
    assert_true(s2.bytes_in > s1.bytes_in && s2.bytes_out > s1.bytes_out);
    assert_true(isfinite(s2.ppl) && s2.ppl != s1.ppl);
    print_message("round 1: ppl %.3f bytes in %.0f out %.0f; round 2: ppl %.3f in %.0f out %.0f\n",
                  s1.ppl, s1.bytes_in, s1.bytes_out, s2.ppl, s2.bytes_in, s2.bytes_out);

    static char body[256];
    http_get(body, sizeof body, port, "/healthz");
    assert_string_equal(body, "ok\n");

    for (int i = 0; i < N_CLIENTS; i++) {
        fkd_client_free(&f.client[i]);
        fkd_token_stream_free(&f.text[i]);
        fkd_wire_identity_wipe(&f.client_id[i]);
    }
    fkd_coord_free(&f.coord);
    zmq_close(f.router);
    fkd_coord_metrics_http_stop(&f.srv);
    fkd_coord_metrics_destroy(&f.m);
    fkd_wire_identity_wipe(&f.coord_id);
    zmq_ctx_term(f.zmq);
    char rm[320];   /* the folder came from mkdtemp: no quotes or spaces in it */
    snprintf(rm, sizeof rm, "rm -rf '%s'", f.dir);
    assert_int_equal(system(rm), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_counters_move_during_rounds)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
