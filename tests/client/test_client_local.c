/* test_client_local.c — one task trained with no network: the update opens
 * with the coordinator's key and decompresses to the right length; the same
 * task asked again (a restarted coordinator) gives the same plaintext
 * because the residual used is the one from before that round; residual
 * files are pruned to two; a budget too small is refused; a task with
 * out-of-range hyper-parameters is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "fkd_client.h"

typedef struct {
    fkd_params params;
    uint8_t *weights;
    size_t weights_len;
    fkd_wire_identity coord, client;
    fkd_token_stream text;
    char dir[512];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    fkd_model_config cfg = {.vocab = 256, .dim = 32, .n_layers = 1, .n_heads = 2,
                            .n_kv_heads = 2, .ffn_hidden = 64, .max_seq = 32,
                            .tie_embeddings = 1, .rope_theta = 10000, .norm_eps = 1e-5f};
    assert_int_equal(fkd_params_init(&f->params, &cfg, NULL), 0);
    fkd_params_randomize(&f->params, 1);
    fkd_qmodel qm;
    assert_int_equal(fkd_qmodel_quantize(&qm, &f->params, FKD_QTYPE_Q8_0, NULL, NULL), 0);
    assert_int_equal(fkd_qmodel_encode(&f->weights, &f->weights_len, &qm, NULL), 0);
    fkd_qmodel_free(&qm);
    assert_int_equal(fkd_wire_identity_generate(&f->coord, NULL), 0);
    assert_int_equal(fkd_wire_identity_generate(&f->client, NULL), 0);
    const char *t = "private text of one device, never sent anywhere. ";
    size_t n = strlen(t) * 40;
    f->text.tokens = malloc(n * sizeof *f->text.tokens);
    for (size_t i = 0; i < n; i++) f->text.tokens[i] = (uint8_t)t[i % strlen(t)];
    f->text.n = f->text.text_bytes = (int64_t)n;
    f->text.owned = 1;
    const char *tmp = getenv("FKD_TEST_TMP");
    snprintf(f->dir, sizeof f->dir, "%s/client-local", tmp ? tmp : "/tmp");
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", f->dir, f->dir);
    assert_int_equal(system(cmd), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    fkd_params_free(&f->params);
    free(f->weights);
    fkd_token_stream_free(&f->text);
    free(f);
    return 0;
}

static void make_task(fkd_wire_msg *m, const fixture *f, uint64_t round, int steps)
{
    fkd_wire_msg_init(m, FKD_WIRE_TASK, f->coord.sign_pk, round);
    m->u.task.model_version = round - 1;
    m->u.task.weights.data = f->weights;
    m->u.task.weights.len = f->weights_len;
    fkd_wire_kv_set(&m->u.task.hparams, "steps", steps, NULL);
    fkd_wire_kv_set(&m->u.task.hparams, "batch", 2, NULL);
    fkd_wire_kv_set(&m->u.task.hparams, "seq", 32, NULL);
    fkd_wire_kv_set(&m->u.task.hparams, "seed", 77, NULL);
    fkd_wire_kv_set(&m->u.task.compression, "fraction", 0.05, NULL);
}

/* Trains, opens the sealed update as the coordinator, returns the plaintext. */
static uint8_t *train_open(size_t *len, const fixture *f, uint64_t round, int steps,
                           size_t budget)
{
    fkd_wire_msg task, up;
    make_task(&task, f, round, steps);
    fkd_client_trainer tr = {.id = &f->client, .coord_curve_pk = f->coord.curve_pk,
                             .train = &f->text, .state_dir = f->dir,
                             .memory_budget_bytes = budget};
    fkd_client_result res;
    uint8_t *sealed;
    fkd_error err;
    if (fkd_client_run_task(&res, &up, &sealed, &task, &tr, &err) != 0) return NULL;
    assert_int_equal(res.steps, steps);
    assert_true(up.u.update.samples == (uint64_t)f->text.n);
    fkd_wire_seal_ctx ctx = {.round = round, .model_version = round - 1};
    memcpy(ctx.client_id, f->client.sign_pk, FKD_WIRE_ID_BYTES);
    size_t cap = fkd_wire_open_bytes(up.u.update.sealed.len);
    uint8_t *plain = malloc(cap);
    assert_int_equal(fkd_wire_open(plain, cap, len, up.u.update.sealed.data,
                                   up.u.update.sealed.len, &ctx, &f->coord, NULL, &err), 0);
    /* Bound to its round: opening it as another round fails. */
    ctx.round++;
    uint8_t *other = malloc(cap);
    size_t olen;
    assert_int_equal(fkd_wire_open(other, cap, &olen, up.u.update.sealed.data,
                                   up.u.update.sealed.len, &ctx, &f->coord, NULL, &err), -1);
    free(other);
    free(sealed);
    return plain;
}

static int file_exists(const fixture *f, uint64_t round)
{
    char p[1200];
    fkd_client_residual_path(p, sizeof p, f->dir, round);
    struct stat st;
    return stat(p, &st) == 0;
}

static void test_update_opens_and_repeats(void **state)
{
    fixture *f = *state;
    size_t n1, n2;
    uint8_t *p1 = train_open(&n1, f, 1, 3, 0);
    assert_non_null(p1);
    float *dense = malloc(f->params.n_params * sizeof *dense);
    assert_int_equal(fkd_update_decompress(dense, f->params.n_params, p1, n1, NULL), 0);
    uint8_t *p2 = train_open(&n2, f, 2, 3, 0);
    /* Round 2 asked again: same residual in (round 1's), same bytes out. */
    uint8_t *p2b = train_open(&n1, f, 2, 3, 0);
    assert_int_equal(n1, n2);
    assert_memory_equal(p2, p2b, n2);
    assert_true(file_exists(f, 1) && file_exists(f, 2));
    uint8_t *p3 = train_open(&n1, f, 3, 3, 0);
    assert_false(file_exists(f, 1)); /* pruned: the newest two are kept */
    assert_true(file_exists(f, 2) && file_exists(f, 3));
    assert_int_equal(fkd_client_residual_latest(f->dir, 3), 2);
    free(p1);
    free(p2);
    free(p2b);
    free(p3);
    free(dense);
}

/* A budget below what one micro-batch of the whole batch needs: the planner
 * splits the batch (or recomputes activations) and the task still trains. */
static void test_tight_budget_splits_the_batch(void **state)
{
    fixture *f = *state;
    fkd_memory_plan whole;
    assert_int_equal(fkd_memory_plan_make(&whole, &f->params.cfg, 2, 32, FKD_OPT_ADAMW, 0, NULL), 0);
    assert_int_equal(whole.n_micro, 1);
    fkd_wire_msg task, up;
    make_task(&task, f, 6, 2);
    fkd_client_trainer tr = {.id = &f->client, .coord_curve_pk = f->coord.curve_pk,
                             .train = &f->text, .state_dir = f->dir,
                             .memory_budget_bytes = whole.estimated_bytes - 1};
    fkd_client_result res;
    uint8_t *sealed;
    fkd_error err;
    assert_int_equal(fkd_client_run_task(&res, &up, &sealed, &task, &tr, &err), 0);
    assert_true(res.plan.n_micro > 1 || res.plan.recompute);
    assert_true(res.plan.estimated_bytes <= whole.estimated_bytes - 1);
    assert_int_equal(res.steps, 2);
    free(sealed);
}

static void test_budget_and_bad_hparams(void **state)
{
    fixture *f = *state;
    size_t n;
    assert_null(train_open(&n, f, 4, 2, 1024)); /* 1 KiB cannot hold the model */
    fkd_wire_msg task, up;
    make_task(&task, f, 5, 2);
    fkd_wire_kv_set(&task.u.task.hparams, "seq", 4096, NULL); /* above max_seq */
    fkd_client_trainer tr = {.id = &f->client, .coord_curve_pk = f->coord.curve_pk,
                             .train = &f->text, .state_dir = f->dir};
    fkd_client_result res;
    uint8_t *sealed;
    fkd_error err;
    assert_int_equal(fkd_client_run_task(&res, &up, &sealed, &task, &tr, &err), -1);
    assert_int_equal(err.code, FKD_E_FORMAT);
    task.u.task.weights.len = 10; /* a truncated model */
    fkd_wire_kv_set(&task.u.task.hparams, "seq", 32, NULL);
    assert_int_equal(fkd_client_run_task(&res, &up, &sealed, &task, &tr, &err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_update_opens_and_repeats),
        cmocka_unit_test(test_tight_budget_splits_the_batch),
        cmocka_unit_test(test_budget_and_bad_hparams),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
