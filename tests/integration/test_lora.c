/* test_lora.c — QLoRA int4 clients as real fedkd-client processes over TCP:
 * the TASK says client_mode qlora4, every client trains adapters over the
 * int4 base it received and uploads only them (UPDATE kind 1), and the
 * coordinator merges them into its master round after round. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"

#define SERVE_TIMEOUT_S 150
#define CLIENT_EXIT_S 20
#define N_CLIENTS 2

static void test_qlora4_rounds_over_tcp(void **state)
{
    (void)state;
    h_env e;
    h_init(&e, "it-lora", 0);
    const char *names[N_CLIENTS] = {"c0", "c1"};
    h_keys(&e, names, N_CLIENTS, names, N_CLIENTS);
    const char *extra[] = {"rounds=2", "min_clients=2", "eval_side=private", "heartbeat_ms=300",
                           "seed=7", "local_steps=8", "client_mode=qlora4", "lora_rank=4",
                           "lr=0.01", NULL};
    pid_t s = h_serve(&e, "state", "coord.log", extra);
    pid_t c[N_CLIENTS];
    h_clients(c, &e, names, N_CLIENTS);
    assert_int_equal(h_wait_exit(s, SERVE_TIMEOUT_S), 0);
    for (int i = 0; i < N_CLIENTS; i++) assert_int_equal(h_wait_exit(c[i], CLIENT_EXIT_S), 0);
    h_round r[H_MAX_ROUNDS];
    int n = h_rounds(&e, "state", r, H_MAX_ROUNDS);
    h_print_rounds("qlora4", r, n);
    assert_int_equal(n, 2);
    for (int i = 0; i < n; i++) {
        assert_int_equal(r[i].updates, N_CLIENTS);
        assert_int_equal(r[i].rejected, 0);
        /* adapters up, int4 bases down: the uplink is the smaller side */
        assert_true(r[i].bytes_up > 0 && r[i].bytes_up < r[i].bytes_down);
    }
    assert_true(r[1].perplexity != r[0].perplexity); /* the merged adapters moved the master */
    char log[H_PATH];
    h_path(log, &e, "c0.log");
    assert_int_equal(h_count(log, "event=update_acked"), 2);
    assert_int_equal(h_count(log, "event=update_refused"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qlora4_rounds_over_tcp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
