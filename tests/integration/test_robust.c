/* test_robust.c — five clients, one of which (20 %) sends its update scaled
 * up. Plain FedAvg lets it drag the student off (perplexity more than 5 %
 * worse than the clean run); norm clipping keeps perplexity within 5 % of
 * the clean run. All three runs use the same seed, keys and data. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"

#define N_CLIENTS 5
#define SERVE_TIMEOUT_S 150
#define CLIENT_EXIT_S 30
#define ATTACK "attack_scale=30"

static const char *const names[N_CLIENTS] = {"c0", "c1", "c2", "c3", "c4"};

/* Runs one federation; returns the final held-out perplexity. */
static double run(const h_env *e, const char *label, const char *aggregator, int attack)
{
    char agg[64], state[64];
    snprintf(agg, sizeof agg, "aggregator=%s", aggregator);
    snprintf(state, sizeof state, "state-%s", label);
    const char *extra[] = {"rounds=3", "min_clients=5", "eval_side=private", "heartbeat_ms=300",
                           "seed=5", "local_steps=10", "batch=4", agg, NULL};
    pid_t s = h_serve(e, state, "coord.log", extra);
    pid_t c[N_CLIENTS];
    for (int i = 0; i < N_CLIENTS; i++) {
        char log[64], sd[H_PATH + 32];
        snprintf(log, sizeof log, "%s-%s.log", label, names[i]);
        snprintf(sd, sizeof sd, "state_dir=%s/%s-%s-state", e->dir, label, names[i]);
        const char *cx[] = {sd, attack && i == N_CLIENTS - 1 ? ATTACK : NULL, NULL};
        c[i] = h_client(e, names[i], i, log, cx);
    }
    assert_int_equal(h_wait_exit(s, SERVE_TIMEOUT_S), 0);
    for (int i = 0; i < N_CLIENTS; i++) assert_int_equal(h_wait_exit(c[i], CLIENT_EXIT_S), 0);
    h_round r[H_MAX_ROUNDS];
    int n = h_rounds(e, state, r, H_MAX_ROUNDS);
    h_print_rounds(label, r, n);
    assert_int_equal(n, 3);
    return r[n - 1].perplexity;
}

static void test_clipping_resists_scaled_updates(void **state)
{
    (void)state;
    h_env e;
    h_init(&e, "it-robust", 0);
    h_keys(&e, names, N_CLIENTS, names, N_CLIENTS);
    double clean = run(&e, "clean-fedavg", "fedavg", 0);
    double attacked = run(&e, "attacked-fedavg", "fedavg", 1);
    double robust = run(&e, "attacked-clip", "clip", 1);
    printf("clean_fedavg_ppl=%.3f attacked_fedavg_ppl=%.3f attacked_clip_ppl=%.3f "
           "fedavg_ratio=%.3f clip_ratio=%.3f\n",
           clean, attacked, robust, attacked / clean, robust / clean);
    assert_true(attacked > 1.05 * clean);
    assert_true(robust <= 1.05 * clean && robust >= 0.95 * clean);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clipping_resists_scaled_updates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
