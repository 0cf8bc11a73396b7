/* test_restart.c — the coordinator killed (SIGKILL) in the middle of round 2
 * and started again with the same state_dir: training resumes from the last
 * completed round, and the final master weights are byte for byte those of
 * an uninterrupted run with the same seed and the same clients. The
 * deployment file is int4 (deploy_quant = q4_1): compress's deploy recipe,
 * with the importances of the master on the public transfer shard. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "fkd_compress.h"
#include "harness.h"

#define N_CLIENTS 3
#define SERVE_TIMEOUT_S 150
#define CLIENT_EXIT_S 30

static const char *const names[N_CLIENTS] = {"c0", "c1", "c2"};

static void start_clients(const h_env *e, pid_t *pids, const char *run)
{
    for (int i = 0; i < N_CLIENTS; i++) {
        char log[64], sd[H_PATH + 32];
        snprintf(log, sizeof log, "%s-%s.log", run, names[i]);
        snprintf(sd, sizeof sd, "state_dir=%s/%s-%s-state", e->dir, run, names[i]);
        const char *extra[] = {sd, NULL};
        pids[i] = h_client(e, names[i], i, log, extra);
    }
}

static void wait_clients(pid_t *pids)
{
    for (int i = 0; i < N_CLIENTS; i++) assert_int_equal(h_wait_exit(pids[i], CLIENT_EXIT_S), 0);
}

static void test_restart_gives_same_weights(void **state)
{
    (void)state;
    h_env e;
    h_init(&e, "it-restart", 0);
    h_keys(&e, names, N_CLIENTS, names, N_CLIENTS);
    h_softlabels(&e, "soft.bin", 30000);
    char soft[H_PATH + 32];
    snprintf(soft, sizeof soft, "softlabels=%s/soft.bin", e.dir);
    const char *extra[] = {"rounds=3", "min_clients=3", "eval_side=private", "heartbeat_ms=300",
                           "seed=11", "local_steps=15", "aggregator=fedadam", "server_lr=0.01",
                           "deploy_quant=q4_1", soft, NULL};
    pid_t c[N_CLIENTS];

    /* A: uninterrupted. */
    pid_t s = h_serve(&e, "stateA", "A-coord.log", extra);
    start_clients(&e, c, "A");
    assert_int_equal(h_wait_exit(s, SERVE_TIMEOUT_S), 0);
    wait_clients(c);

    /* B: killed while round 2 is under way, then restarted. */
    s = h_serve(&e, "stateB", "B-coord.log", extra);
    start_clients(&e, c, "B");
    char log[H_PATH];
    h_path(log, &e, "B-coord.log");
    assert_int_equal(h_wait_for(log, "event=round_start round=2", 90), 0);
    char clog[H_PATH];
    h_path(clog, &e, "B-c0.log");
    assert_int_equal(h_wait_for(clog, "event=task_received round=2", 30), 0);
    h_kill(s, SIGKILL);
    s = h_serve(&e, "stateB", "B-coord2.log", extra);
    assert_int_equal(h_wait_exit(s, SERVE_TIMEOUT_S), 0);
    wait_clients(c);

    h_path(log, &e, "B-coord2.log");
    assert_int_equal(h_count(log, "event=resumed round=1"), 1);
    h_round ra[H_MAX_ROUNDS], rb[H_MAX_ROUNDS];
    int na = h_rounds(&e, "stateA", ra, H_MAX_ROUNDS), nb = h_rounds(&e, "stateB", rb, H_MAX_ROUNDS);
    h_print_rounds("uninterrupted", ra, na);
    h_print_rounds("restarted", rb, nb);
    assert_int_equal(na, 3);
    assert_int_equal(nb, 3);
    for (int i = 0; i < 3; i++) assert_true(ra[i].perplexity == rb[i].perplexity);
    char a[H_PATH], b[H_PATH];
    h_path(a, &e, "stateA/master.ckpt");
    h_path(b, &e, "stateB/master.ckpt");
    assert_true(h_same_file(a, b));
    h_path(a, &e, "stateA/student.qmdl");
    h_path(b, &e, "stateB/student.qmdl");
    assert_true(h_same_file(a, b));
    /* the recipe's formats: Q4_1 matrices, wv, wo and w2 at Q8_0 */
    fkd_qmodel qm;
    fkd_error err = {0};
    assert_int_equal(fkd_qmodel_load(&qm, a, &err), 0);
    int types[FKD_T_COUNT];
    fkd_qmodel_deploy_types(types, &qm.cfg, FKD_QTYPE_Q4_1);
    for (int t = 0; t < FKD_T_COUNT; t++)
        if (qm.q[t].count > 0) assert_int_equal(qm.q[t].type, types[t]);
    assert_int_equal(qm.q[FKD_T_WQ].type, FKD_QTYPE_Q4_1);
    assert_int_equal(qm.q[FKD_T_WV].type, FKD_QTYPE_Q8_0);
    assert_int_equal(qm.q[FKD_T_WO].type, FKD_QTYPE_Q8_0);
    assert_int_equal(qm.q[FKD_T_W2].type, FKD_QTYPE_Q8_0);
    fkd_qmodel_free(&qm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_restart_gives_same_weights),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
