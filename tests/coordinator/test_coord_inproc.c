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

#include "agg_internal.h"
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

/* A coordinator and n agents (all listed) over inproc, ready to drive. */
typedef struct {
    void *ctx, *router;
    fkd_wire_identity coord_id, ids[4];
    fkd_coord *c;
    fkd_client *agents[4];
    fkd_token_stream streams[4];
    int n;
} world;

/* last_memory_mb: the memory budget the last agent declares (0: none). */
static void world_open(world *w, const char *name, int n, const char *const *sets, int n_sets,
                       uint32_t last_memory_mb)
{
    memset(w, 0, sizeof *w);
    w->n = n;
    char dir[512], allow[600], evalf[600], line[256], ep[128], cmd[1200];
    tmp_path(dir, name);
    snprintf(allow, sizeof allow, "%s.allow", dir);
    snprintf(evalf, sizeof evalf, "%s.eval", dir);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'-agent*", dir, dir);
    assert_int_equal(system(cmd), 0);
    FILE *f = fopen(evalf, "w");
    for (int i = 0; i < 20; i++) fputs(text, f);
    fclose(f);
    assert_int_equal(fkd_wire_identity_generate(&w->coord_id, NULL), 0);
    f = fopen(allow, "w");
    for (int i = 0; i < n; i++) {
        assert_int_equal(fkd_wire_identity_generate(&w->ids[i], NULL), 0);
        fkd_wire_pubkey pub;
        fkd_wire_identity_public(&pub, &w->ids[i], "agent");
        assert_int_equal(fkd_wire_pubkey_format(line, sizeof line, &pub, NULL), 0);
        fprintf(f, "%s\n", line);
    }
    fclose(f);
    fkd_coord_config cfg;
    fkd_coord_config_defaults(&cfg);
    const char *base[] = {"model.dim=32", "model.layers=1", "model.heads=2", "model.kv_heads=2",
                          "model.ffn=64", "model.seq=32", "seq=32", "batch=2", "local_steps=2",
                          "require_transport_auth=0", "heartbeat_ms=200", "eval_tokens=1024"};
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++)
        assert_int_equal(fkd_coord_config_override(&cfg, base[i], NULL), 0);
    for (int i = 0; i < n_sets; i++) assert_int_equal(fkd_coord_config_override(&cfg, sets[i], NULL), 0);
    snprintf(cfg.state_dir, sizeof cfg.state_dir, "%s", dir);
    snprintf(cfg.allowlist, sizeof cfg.allowlist, "%.500s", allow);
    snprintf(cfg.eval_data, sizeof cfg.eval_data, "%.500s", evalf);
    snprintf(ep, sizeof ep, "inproc://%s", name);
    w->ctx = zmq_ctx_new();
    w->router = zmq_socket(w->ctx, ZMQ_ROUTER);
    int one = 1;
    zmq_setsockopt(w->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    assert_int_equal(zmq_bind(w->router, ep), 0);
    fkd_error err;
    assert_int_equal(fkd_coord_new(&w->c, &cfg, &w->coord_id, NULL, &err), 0);
    fkd_coord_attach(w->c, w->router);
    for (int i = 0; i < n; i++) {
        make_stream(&w->streams[i], 10);
        fkd_client_config cc = fkd_client_config_defaults();
        char sd[600];
        snprintf(sd, sizeof sd, "%s-agent%d", dir, i);
        cc.endpoint = ep;
        cc.use_curve = 0;
        cc.state_dir = sd;
        cc.auto_train = 0;
        if (i == n - 1) cc.memory_mb = last_memory_mb;
        assert_int_equal(fkd_client_new(&w->agents[i], &cc, &w->ids[i], w->coord_id.curve_pk,
                                         &w->streams[i], w->ctx, NULL, &err), 0);
    }
}

static void world_close(world *w)
{
    for (int i = 0; i < w->n; i++) {
        fkd_client_free(&w->agents[i]);
        fkd_token_stream_free(&w->streams[i]);
    }
    fkd_coord_free(&w->c);
    zmq_close(w->router);
    zmq_ctx_term(w->ctx);
}

/* Drives w until the engine is done; agents train every task they get. */
static void world_run(world *w)
{
    fkd_error err;
    for (int turn = 0; turn < MAX_TURNS && fkd_coord_phase(w->c) != FKD_COORD_DONE; turn++) {
        assert_int_equal(fkd_coord_poll(w->c, 1, &err), 0);
        for (int i = 0; i < w->n; i++) {
            assert_int_equal(fkd_client_poll(w->agents[i], 0, &err), 0);
            if (fkd_client_state(w->agents[i]) == FKD_CLIENT_TASK_READY)
                assert_int_equal(fkd_client_train(w->agents[i], &err), 0);
        }
    }
    assert_int_equal(fkd_coord_phase(w->c), FKD_COORD_DONE);
}

/* Over-selection: 3 selected for a target of 2; the round closes on the
 * first two, and the third, trained after the close, is late: refused and
 * counted in the next round. */
static void test_over_selection_and_late_update(void **state)
{
    (void)state;
    world w;
    const char *sets[] = {"rounds=2", "min_clients=2", "max_clients=2", "fraction=0.5",
                          "over_select=0.5"};
    world_open(&w, "oversel", 3, sets, 5, 0);
    fkd_error err;
    int held = -1;
    for (int turn = 0; turn < MAX_TURNS && fkd_coord_phase(w.c) != FKD_COORD_DONE; turn++) {
        assert_int_equal(fkd_coord_poll(w.c, 1, &err), 0);
        for (int i = 0; i < w.n; i++) {
            assert_int_equal(fkd_client_poll(w.agents[i], 0, &err), 0);
            if (fkd_client_state(w.agents[i]) != FKD_CLIENT_TASK_READY) continue;
            /* In round 1 the third agent to get its task waits until the round closed. */
            int r1 = fkd_coord_round(w.c) == 0;
            if (r1 && held < 0) {
                int ready = 0;
                for (int j = 0; j < w.n; j++)
                    ready += fkd_client_state(w.agents[j]) == FKD_CLIENT_TASK_READY;
                if (ready == 3) held = i;
            }
            if (r1 && (i == held || held < 0)) continue;
            assert_int_equal(fkd_client_train(w.agents[i], &err), 0);
        }
    }
    assert_int_equal(fkd_coord_phase(w.c), FKD_COORD_DONE);
    int n;
    const fkd_coord_round_stats *h = fkd_coord_history(w.c, &n);
    assert_int_equal(n, 2);
    assert_int_equal(h[0].selected, 3);
    assert_int_equal(h[0].target, 2);
    assert_int_equal(h[0].updates, 2);
    assert_int_equal(h[1].late, 1);
    world_close(&w);
}

/* The deadline closes a round whose other selected client never answers. */
static void test_deadline_closes_round(void **state)
{
    (void)state;
    world w;
    const char *sets[] = {"rounds=1", "min_clients=2", "min_updates=1", "round_timeout_ms=400"};
    world_open(&w, "deadline", 2, sets, 4, 0);
    fkd_error err;
    double t0 = fkd_time_ms();
    for (int turn = 0; turn < MAX_TURNS && fkd_coord_phase(w.c) != FKD_COORD_DONE; turn++) {
        assert_int_equal(fkd_coord_poll(w.c, 1, &err), 0);
        for (int i = 0; i < w.n; i++) {
            assert_int_equal(fkd_client_poll(w.agents[i], 0, &err), 0);
            if (i == 0 && fkd_client_state(w.agents[i]) == FKD_CLIENT_TASK_READY)
                assert_int_equal(fkd_client_train(w.agents[i], &err), 0);
        }
    }
    assert_int_equal(fkd_coord_phase(w.c), FKD_COORD_DONE);
    int n;
    const fkd_coord_round_stats *h = fkd_coord_history(w.c, &n);
    assert_int_equal(n, 1);
    assert_int_equal(h[0].selected, 2);
    assert_int_equal(h[0].updates, 1);
    assert_true(fkd_time_ms() - t0 >= 400);
    world_close(&w);
}

/* A device whose declared memory cannot hold the student is never selected. */
static void test_device_too_small_not_selected(void **state)
{
    (void)state;
    world w;
    const char *sets[] = {"rounds=1", "min_clients=2"};
    world_open(&w, "small", 3, sets, 2, 1); /* 1 MB: below the runtime overhead alone */
    world_run(&w);
    int n;
    const fkd_coord_round_stats *h = fkd_coord_history(w.c, &n);
    assert_int_equal(n, 1);
    assert_int_equal(h[0].selected, 2);
    assert_int_equal(fkd_client_get_stats(w.agents[2])->tasks, 0);
    world_close(&w);
}

/* Dense f32 updates in 4 KiB chunks: the UPDATE travels as a transfer and
 * is reassembled, opened and aggregated. */
static void test_chunked_dense_update(void **state)
{
    (void)state;
    world w;
    const char *sets[] = {"rounds=1", "min_clients=2", "up_fraction=1", "up_format=f32",
                          "chunk_bytes=4096"};
    world_open(&w, "chunked", 2, sets, 5, 0);
    world_run(&w);
    int n;
    const fkd_coord_round_stats *h = fkd_coord_history(w.c, &n);
    assert_int_equal(n, 1);
    assert_int_equal(h[0].updates, 2);
    size_t dense = fkd_coord_master(w.c)->n_params * sizeof(float);
    assert_true(h[0].bytes_up > 2 * dense); /* two dense updates, chunked */
    world_close(&w);
}

/* QLoRA int4 clients over the real protocol: each uploads exactly its
 * adapters' encoding, the engine merges them into the fp32 master (which
 * moves) and sends the next round's int4 base. */
static void test_qlora4_rounds(void **state)
{
    (void)state;
    world w;
    const char *sets[] = {"rounds=2", "min_clients=2", "client_mode=qlora4", "lora_rank=4",
                          "lora_alpha=8", "lr=0.01"};
    world_open(&w, "qlora4", 2, sets, 6, 0);
    const fkd_params *master = fkd_coord_master(w.c);
    float *before = malloc(master->n_params * sizeof *before);
    memcpy(before, master->memory, master->n_params * sizeof *before);
    world_run(&w);
    int n;
    const fkd_coord_round_stats *h = fkd_coord_history(w.c, &n);
    assert_int_equal(n, 2);
    for (int i = 0; i < n; i++) {
        assert_int_equal(h[i].updates, 2);
        assert_int_equal(h[i].rejected, 0);
        assert_true(isfinite(h[i].perplexity));
    }
    double moved = 0;
    for (size_t i = 0; i < master->n_params; i++) moved += fabs(master->memory[i] - before[i]);
    assert_true(moved > 1e-3);
    fkd_lora_config lc = fkd_lora_defaults();
    lc.rank = 4;
    lc.alpha = 8;
    fkd_lora ref;
    assert_int_equal(fkd_lora_init(&ref, &master->cfg, &lc, 1, NULL), 0);
    for (int i = 0; i < w.n; i++) {
        const fkd_client_stats *st = fkd_client_get_stats(w.agents[i]);
        assert_int_equal(st->tasks, 2);
        assert_int_equal(st->last.update_bytes, fkd_lora_encoded_bytes(&ref));
        assert_true(st->last.update_bytes < st->last.dense_bytes);
    }
    fkd_lora_free(&ref);
    free(before);
    world_close(&w);
}

/* An adapter upload with non-finite values is refused (ERROR to its client,
 * counted rejected); the round goes on with the honest client's. */
static void test_lora_malformed_upload_refused(void **state)
{
    (void)state;
    world w;
    const char *sets[] = {"rounds=1", "min_clients=2", "client_mode=lora", "lora_rank=2",
                          "round_timeout_ms=3000"};
    world_open(&w, "lorabad", 2, sets, 5, 0);
    fkd_client_free(&w.agents[1]);
    fkd_client_config cc = fkd_client_config_defaults();
    char sd[600];
    tmp_path(sd, "lorabad-agent1");
    cc.endpoint = "inproc://lorabad";
    cc.use_curve = 0;
    cc.state_dir = sd;
    cc.auto_train = 0;
    cc.attack_scale = NAN;
    assert_int_equal(fkd_client_new(&w.agents[1], &cc, &w.ids[1], w.coord_id.curve_pk,
                                     &w.streams[1], w.ctx, NULL, NULL), 0);
    world_run(&w);
    int n;
    const fkd_coord_round_stats *h = fkd_coord_history(w.c, &n);
    assert_int_equal(n, 1);
    assert_int_equal(h[0].updates, 1);
    assert_int_equal(h[0].rejected, 1);
    world_close(&w);
}

/* The engine's adapter decoder refuses what is not the round's adapters. */
static void test_lora_open_refuses_bad_bytes(void **state)
{
    (void)state;
    fkd_coord_config cfg;
    fkd_coord_config_defaults(&cfg);
    assert_int_equal(fkd_coord_config_override(&cfg, "client_mode=qlora8", NULL), 0);
    fkd_lora_config lc = fkd_lora_defaults();
    fkd_lora good, *out = NULL;
    assert_int_equal(fkd_lora_init(&good, &cfg.model, &lc, 7, NULL), 0);
    uint8_t *bytes;
    size_t len;
    assert_int_equal(fkd_lora_encode(&bytes, &len, &good, NULL), 0);
    fkd_error err;
    assert_int_equal(fkd_coord_lora_open(&out, &cfg.model, &cfg, bytes, len, &err), 0);
    fkd_coord_lora_destroy(&out);
    assert_null(out);
    assert_int_equal(fkd_coord_lora_open(&out, &cfg.model, &cfg, bytes, len - 1, &err), -1);
    assert_null(out);
    assert_int_equal(fkd_coord_lora_open(&out, &cfg.model, &cfg, bytes, 3, &err), -1);
    bytes[len / 2] ^= 0x40;
    assert_int_equal(fkd_coord_lora_open(&out, &cfg.model, &cfg, bytes, len, &err), -1);
    bytes[len / 2] ^= 0x40;
    cfg.lora_rank = 4; /* another round's rank */
    assert_int_equal(fkd_coord_lora_open(&out, &cfg.model, &cfg, bytes, len, &err), -1);
    assert_int_equal(err.code, FKD_E_MISMATCH);
    fkd_model_config other = cfg.model;
    other.dim *= 2;
    cfg.lora_rank = lc.rank;
    assert_int_equal(fkd_coord_lora_open(&out, &other, &cfg, bytes, len, &err), -1);
    assert_null(out);
    free(bytes);
    fkd_lora_free(&good);
}

/* Each mode's update kind and TASK format; one round never mixes kinds; a
 * LoRA round needs FedAvg. */
static void test_lora_mode_kind(void **state)
{
    (void)state;
    assert_int_equal(fkd_coord_mode_kind(FKD_WIRE_MODE_FULL), FKD_WIRE_UPDATE_DELTA);
    assert_int_equal(fkd_coord_mode_kind(FKD_WIRE_MODE_QLORA4), FKD_WIRE_UPDATE_LORA);
    assert_int_equal(fkd_coord_mode_quant(FKD_WIRE_MODE_QLORA4, FKD_QTYPE_Q8_0), FKD_QTYPE_Q4_1);
    assert_int_equal(fkd_coord_mode_quant(FKD_WIRE_MODE_LORA, FKD_QTYPE_F16), FKD_QTYPE_F16);
    fkd_error err;
    assert_int_equal(fkd_coord_kind_check(FKD_WIRE_MODE_QLORA4, FKD_WIRE_UPDATE_LORA, &err), 0);
    assert_int_equal(fkd_coord_kind_check(FKD_WIRE_MODE_FULL, FKD_WIRE_UPDATE_DELTA, &err), 0);
    assert_int_equal(fkd_coord_kind_check(FKD_WIRE_MODE_QLORA8, FKD_WIRE_UPDATE_DELTA, &err), -1);
    assert_int_equal(err.code, FKD_E_MISMATCH);
    assert_non_null(strstr(err.msg, "never mixes"));
    assert_int_equal(fkd_coord_kind_check(FKD_WIRE_MODE_FULL, FKD_WIRE_UPDATE_LORA, &err), -1);
    assert_int_equal(fkd_coord_kind_check(FKD_WIRE_MODE_LORA, 7, &err), -1);
    fkd_coord_config cfg;
    fkd_coord_config_defaults(&cfg);
    assert_int_equal(fkd_coord_config_override(&cfg, "client_mode=qlora9", NULL), -1);
    assert_int_equal(fkd_coord_config_override(&cfg, "client_mode=lora", NULL), 0);
    assert_int_equal(fkd_coord_config_override(&cfg, "aggregator=median", NULL), 0);
    assert_int_equal(fkd_coord_config_validate(&cfg, NULL), -1);
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
        cmocka_unit_test(test_over_selection_and_late_update),
        cmocka_unit_test(test_deadline_closes_round),
        cmocka_unit_test(test_device_too_small_not_selected),
        cmocka_unit_test(test_chunked_dense_update),
        cmocka_unit_test(test_qlora4_rounds),
        cmocka_unit_test(test_lora_malformed_upload_refused),
        cmocka_unit_test(test_lora_open_refuses_bad_bytes),
        cmocka_unit_test(test_lora_mode_kind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
