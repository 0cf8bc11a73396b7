/* test_coord_inproc.c — the round engine and client agents in ONE process
 * over inproc:// (how the simulation runs them): two listed agents train two
 * rounds with training driven by the caller (auto_train = 0, as a worker
 * pool would), an unlisted agent is refused by the engine's own allow-list
 * check (no CURVE on inproc), and the state files appear. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <zmq.h>

#include "fkd_coordinator.h"

#define ENDPOINT "inproc://fedkd-coord-test"
#define N_AGENTS 3
#define MAX_TURNS 20000

static const char text[] =
    "the quick brown fox jumps over the lazy dog. a federated student learns from many "
    "devices without their text ever leaving them. ";

static void tmp_path(char *out, const char *name)
{
    const char *t = getenv("FKD_TEST_TMP");
    snprintf(out, 512, "%s/inproc-%s", t ? t : "/tmp", name);
}

static void make_stream(fkd_token_stream *s, int repeat)
{
    size_t n = (sizeof text - 1) * (size_t)repeat;
    memset(s, 0, sizeof *s);
    s->tokens = malloc(n * sizeof *s->tokens);
    for (size_t i = 0; i < n; i++) s->tokens[i] = (uint8_t)text[i % (sizeof text - 1)];
    s->n = s->text_bytes = (int64_t)n;
    s->n_docs = 1;
    s->owned = 1;
}

static void test_rounds_over_inproc(void **state)
{
    (void)state;
    char dir[512], allow[512], evalf[512], line[256];
    tmp_path(dir, "state");
    tmp_path(allow, "allow.txt");
    tmp_path(evalf, "eval.txt");
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    FILE *f = fopen(evalf, "w");
    for (int i = 0; i < 20; i++) fputs(text, f);
    fclose(f);

    fkd_wire_identity coord_id, ids[N_AGENTS];
    assert_int_equal(fkd_wire_identity_generate(&coord_id, NULL), 0);
    f = fopen(allow, "w");
    for (int i = 0; i < N_AGENTS; i++) {
        assert_int_equal(fkd_wire_identity_generate(&ids[i], NULL), 0);
        fkd_wire_pubkey pub;
        fkd_wire_identity_public(&pub, &ids[i], "agent");
        assert_int_equal(fkd_wire_pubkey_format(line, sizeof line, &pub, NULL), 0);
        if (i < N_AGENTS - 1) fprintf(f, "%s\n", line); /* the last one is not listed */
    }
    fclose(f);

    fkd_coord_config cfg;
    fkd_coord_config_defaults(&cfg);
    const char *sets[] = {"model.dim=32", "model.layers=1", "model.heads=2", "model.kv_heads=2",
                          "model.ffn=64", "model.seq=32", "seq=32", "batch=2", "local_steps=4",
                          "rounds=2", "min_clients=2", "require_transport_auth=0",
                          "heartbeat_ms=200", "eval_tokens=2048", "up_fraction=0.2"};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
        assert_int_equal(fkd_coord_config_override(&cfg, sets[i], NULL), 0);
    snprintf(cfg.state_dir, sizeof cfg.state_dir, "%s", dir);
    snprintf(cfg.allowlist, sizeof cfg.allowlist, "%s", allow);
    snprintf(cfg.eval_data, sizeof cfg.eval_data, "%s", evalf);

    void *ctx = zmq_ctx_new();
    void *router = zmq_socket(ctx, ZMQ_ROUTER);
    int one = 1;
    zmq_setsockopt(router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    assert_int_equal(zmq_bind(router, ENDPOINT), 0);
    fkd_logger log;
    fkd_logger_init(&log, stderr, FKD_LOG_WARN, "coord");
    fkd_coord *c;
    fkd_error err;
    assert_int_equal(fkd_coord_new(&c, &cfg, &coord_id, &log, &err), 0);
    fkd_coord_attach(c, router);

    fkd_token_stream streams[N_AGENTS];
    fkd_client *agents[N_AGENTS];
    for (int i = 0; i < N_AGENTS; i++) {
        make_stream(&streams[i], 10 + 5 * i);
        fkd_client_config cc = fkd_client_config_defaults();
        char sd[512], name[32];
        snprintf(name, sizeof name, "agent%d", i);
        tmp_path(sd, name);
        cc.endpoint = ENDPOINT;
        cc.use_curve = 0;
        cc.state_dir = sd;
        cc.auto_train = 0;
        cc.heartbeat_ms = 200;
        assert_int_equal(fkd_client_new(&agents[i], &cc, &ids[i], coord_id.curve_pk, &streams[i],
                                         ctx, NULL, &err), 0);
    }
    int trained = 0;
    for (int turn = 0; turn < MAX_TURNS && fkd_coord_phase(c) != FKD_COORD_DONE; turn++) {
        assert_int_equal(fkd_coord_poll(c, 1, &err), 0);
        for (int i = 0; i < N_AGENTS; i++) {
            assert_int_equal(fkd_client_poll(agents[i], 0, &err), 0);
            if (fkd_client_state(agents[i]) == FKD_CLIENT_TASK_READY) {
                assert_int_equal(fkd_client_train(agents[i], &err), 0);
                trained++;
            }
        }
    }
    assert_int_equal(fkd_coord_phase(c), FKD_COORD_DONE);
    assert_int_equal(trained, 4);
    int n;
    const fkd_coord_round_stats *h = fkd_coord_history(c, &n);
    assert_int_equal(n, 2);
    for (int i = 0; i < n; i++) {
        assert_int_equal(h[i].updates, 2);
        assert_true(isfinite(h[i].perplexity) && h[i].perplexity > 1);
        assert_true(h[i].bytes_up > 0 && h[i].bytes_down > 0);
    }
    assert_true(h[1].perplexity < h[0].perplexity);
    assert_int_equal(fkd_client_state(agents[N_AGENTS - 1]), FKD_CLIENT_REJECTED);
    assert_int_equal(fkd_client_get_stats(agents[N_AGENTS - 1])->tasks, 0);
    /* Goodbye: agents see "finished". */
    fkd_coord_say_bye(c);
    for (int turn = 0; turn < 200; turn++)
        for (int i = 0; i < N_AGENTS - 1; i++) fkd_client_poll(agents[i], 1, &err);
    for (int i = 0; i < N_AGENTS - 1; i++)
        assert_int_equal(fkd_client_state(agents[i]), FKD_CLIENT_FINISHED);
    struct stat st;
    char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, FKD_COORD_STATE_FILE);
    assert_int_equal(stat(p, &st), 0);
    snprintf(p, sizeof p, "%s/%s", dir, FKD_COORD_DEPLOY_FILE);
    assert_int_equal(stat(p, &st), 0);

    for (int i = 0; i < N_AGENTS; i++) {
        fkd_client_free(&agents[i]);
        fkd_token_stream_free(&streams[i]);
    }
    fkd_coord_free(&c);
    zmq_close(router);
    zmq_ctx_term(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rounds_over_inproc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
