/* test_rounds.c — a coordinator and fedkd-client processes over TCP:
 * three rounds in which held-out perplexity falls; a client killed mid-round
 * (the round closes on the others); a client whose key is not on the
 * allow-list (it never gets a TASK). */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"

#define SERVE_TIMEOUT_S 150
#define CLIENT_EXIT_S 20

static void test_three_rounds_perplexity_falls(void **state)
{
    (void)state;
    h_env e;
    h_init(&e, "it-rounds", 0);
    const char *names[] = {"c0", "c1", "c2"};
    h_keys(&e, names, 3, names, 3);
    h_softlabels(&e, "soft.bin", 60000);
    char soft[H_PATH + 32];
    snprintf(soft, sizeof soft, "softlabels=%s/soft.bin", e.dir);
    const char *extra[] = {"rounds=3", "min_clients=3", "eval_side=private", "heartbeat_ms=300",
                           "seed=7", soft, NULL};
    pid_t s = h_serve(&e, "state", "coord.log", extra);
    pid_t c[3];
    h_clients(c, &e, names, 3);
    assert_int_equal(h_wait_exit(s, SERVE_TIMEOUT_S), 0);
    for (int i = 0; i < 3; i++) assert_int_equal(h_wait_exit(c[i], CLIENT_EXIT_S), 0);
    h_round r[H_MAX_ROUNDS];
    int n = h_rounds(&e, "state", r, H_MAX_ROUNDS);
    h_print_rounds("three-rounds", r, n);
    assert_int_equal(n, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].updates, 3);
        assert_true(r[i].bytes_up > 0 && r[i].bytes_down > r[i].bytes_up);
    }
    assert_true(r[1].perplexity < r[0].perplexity);
    assert_true(r[2].perplexity < r[1].perplexity);
    char log[H_PATH];
    h_path(log, &e, "c0.log");
    assert_int_equal(h_count(log, "event=update_acked"), 3);
}

static void test_client_killed_mid_round(void **state)
{
    (void)state;
    h_env e;
    h_init(&e, "it-killed", 1);
    const char *names[] = {"c0", "c1", "c2"};
    h_keys(&e, names, 3, names, 3);
    const char *extra[] = {"rounds=2", "min_clients=2", "eval_side=private", "heartbeat_ms=300",
                           "round_timeout_ms=90000", NULL};
    pid_t s = h_serve(&e, "state", "coord.log", extra);
    pid_t c[3];
    h_clients(c, &e, names, 3);
    char log2[H_PATH];
    h_path(log2, &e, "c2.log");
    /* The third client is killed while it trains round 2. */
    assert_int_equal(h_wait_for(log2, "event=task_received round=2", 60), 0);
    h_kill(c[2], SIGKILL);
    assert_int_equal(h_wait_exit(s, SERVE_TIMEOUT_S), 0);
    for (int i = 0; i < 2; i++) assert_int_equal(h_wait_exit(c[i], CLIENT_EXIT_S), 0);
    h_round r[H_MAX_ROUNDS];
    int n = h_rounds(&e, "state", r, H_MAX_ROUNDS);
    h_print_rounds("client-killed", r, n);
    assert_int_equal(n, 2);
    assert_int_equal(r[1].selected, 3);
    assert_int_equal(r[1].updates, 2);
    assert_int_equal(r[1].vanished, 1);
    assert_true(r[1].seconds < 60); /* closed on the others, not at the deadline */
}

static void test_unlisted_client_gets_no_task(void **state)
{
    (void)state;
    h_env e;
    h_init(&e, "it-allowlist", 2);
    const char *names[] = {"c0", "c1", "rogue"};
    h_keys(&e, names, 3, names, 2); /* rogue is not on the list */
    const char *extra[] = {"rounds=2", "min_clients=2", "eval_side=private", "heartbeat_ms=300",
                           "local_steps=5", NULL};
    pid_t s = h_serve(&e, "state", "coord.log", extra);
    pid_t rogue = h_client(&e, "rogue", 2, "rogue.log", NULL);
    pid_t c0 = h_client(&e, "c0", 0, "c0.log", NULL);
    pid_t c1 = h_client(&e, "c1", 1, "c1.log", NULL);
    assert_int_equal(h_wait_exit(s, SERVE_TIMEOUT_S), 0);
    assert_int_equal(h_wait_exit(c0, CLIENT_EXIT_S), 0);
    assert_int_equal(h_wait_exit(c1, CLIENT_EXIT_S), 0);
    h_kill(rogue, SIGKILL);
    h_round r[H_MAX_ROUNDS];
    int n = h_rounds(&e, "state", r, H_MAX_ROUNDS);
    assert_int_equal(n, 2);
    for (int i = 0; i < n; i++) assert_int_equal(r[i].selected, 2);
    char log[H_PATH];
    h_path(log, &e, "rogue.log");
    assert_true(h_count(log, "event=started") == 1); /* it did run */
    assert_int_equal(h_count(log, "event=welcome"), 0);
    assert_int_equal(h_count(log, "event=task_received"), 0);
    h_path(log, &e, "c0.log");
    assert_int_equal(h_count(log, "event=task_received"), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_three_rounds_perplexity_falls),
        cmocka_unit_test(test_client_killed_mid_round),
        cmocka_unit_test(test_unlisted_client_gets_no_task),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
