/* test_coord_server.c — the coordinator's server-side training between
 * rounds (server_train.c): it lowers the master's distillation loss on the
 * shards, its optimizer state persists across rounds and restarts (the same
 * weights as a run never interrupted, even when a round's training was lost
 * before its checkpoint), lives in memory between rounds (the state file is
 * written for a restart, never read back by a running server, and holds no
 * weights), starts from server_init without writing it, and the
 * configuration keys that drive it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "server_train.h"

#define VOCAB 48
#define SEQ 16
#define BATCH 4
#define K 4
#define POSITIONS 2048
#define N_SHARDS 2

typedef struct {
    uint8_t *data[N_SHARDS];
    size_t len[N_SHARDS];
} shards;

static fkd_model_config model_cfg(void)
{
    return (fkd_model_config){.vocab = VOCAB, .dim = 32, .n_layers = 1, .n_heads = 2,
                              .n_kv_heads = 2, .ffn_hidden = 64, .max_seq = SEQ,
                              .tie_embeddings = 1, .rope_theta = 10000.0f, .norm_eps = 1e-5f};
}

/* A learnable text (t+1 = 3t + 1 mod VOCAB, a little noise) whose teacher
 * puts 0.7 on the true next token and the rest on three others. */
static void make_shards(shards *out)
{
    fkd_rng rng;
    fkd_rng_seed(&rng, 42);
    int32_t t = 1;
    for (int s = 0; s < N_SHARDS; s++) {
        fkd_softlabel_shard sh;
        assert_int_equal(fkd_softlabels_alloc(&sh, POSITIONS, K, VOCAB, NULL), 0);
        sh.quant = FKD_SOFT_Q16;
        sh.temperature = 1.0f;
        sh.shard_index = (uint32_t)s;
        sh.shard_count = N_SHARDS;
        for (int64_t i = 0; i < POSITIONS; i++) {
            sh.tokens[i] = t;
            t = fkd_rng_uniform(&rng) < 0.1 ? (int32_t)(fkd_rng_u64(&rng) % VOCAB)
                                            : (3 * t + 1) % VOCAB;
            int32_t next = (3 * sh.tokens[i] + 1) % VOCAB;
            static const float p[K] = {0.7f, 0.1f, 0.1f, 0.05f};
            for (int j = 0; j < K; j++) {
                sh.ids[i * K + j] = (next + 5 * j) % VOCAB;
                sh.probs[i * K + j] = p[j];
            }
        }
        assert_int_equal(fkd_softlabels_encode(&out->data[s], &out->len[s], &sh, NULL), 0);
        fkd_softlabels_free(&sh);
    }
}

static void free_shards(shards *s)
{
    for (int i = 0; i < N_SHARDS; i++) free(s->data[i]);
}

static void state_dir(char *out, size_t cap, const char *name)
{
    const char *tmp = getenv("FKD_TEST_TMP") ? getenv("FKD_TEST_TMP") : "/tmp";
    snprintf(out, cap, "%s/coord-server-%s", tmp, name);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", out, out);
    assert_int_equal(system(cmd), 0);
}

static void config(fkd_coord_config *c, const char *dir, int steps)
{
    fkd_coord_config_defaults(c);
    c->model = model_cfg();
    c->batch = BATCH;
    c->seq = SEQ;
    c->server_steps = steps;
    c->server_alpha = 1.0f;
    c->server_train_lr = 1e-2f;
    snprintf(c->softlabels, sizeof c->softlabels, "shards in memory");
    snprintf(c->state_dir, sizeof c->state_dir, "%s", dir);
}

static void master_new(fkd_params *p)
{
    fkd_model_config mc = model_cfg();
    assert_int_equal(fkd_params_init(p, &mc, NULL), 0);
    fkd_params_randomize(p, 7);
}

/* The distillation loss (alpha 1) of p on the shards' first windows. */
static double kd_loss(const fkd_params *p, const fkd_coord_server *s)
{
    fkd_model m;
    fkd_batch b;
    assert_int_equal(fkd_model_init_borrowed(&m, p, BATCH, SEQ, 0, NULL), 0);
    assert_int_equal(fkd_batch_init(&b, BATCH, SEQ, K, NULL), 0);
    double sum = 0;
    const fkd_loss_config lc = {.alpha = 1.0f, .temperature = 1.0f};
    for (int64_t w = 0; w < 16; w += BATCH) {
        fkd_batch_sequential(&b, &s->stream, w);
        assert_true(b.has_soft);
        fkd_loss_stats st;
        fkd_model_zero_grad(&m);
        fkd_model_forward(&m, b.inputs, NULL);
        fkd_model_backward(&m, b.inputs, b.targets, &b.soft, &lc, &st, 1.0f);
        sum += st.loss;
    }
    fkd_batch_free(&b);
    fkd_model_free(&m);
    return sum;
}

static void test_lowers_kd_loss(void **unused)
{
    (void)unused;
    shards sh;
    make_shards(&sh);
    char dir[512];
    state_dir(dir, sizeof dir, "lowers");
    fkd_coord_config c;
    config(&c, dir, 40);
    fkd_params master;
    master_new(&master);
    fkd_coord_server s;
    fkd_error err = {0};
    assert_int_equal(fkd_coord_server_init(&s, &c, &master, sh.data, sh.len, N_SHARDS, &err), 0);
    assert_int_equal(s.stream.n, (int64_t)N_SHARDS * POSITIONS);
    double before = kd_loss(&master, &s), loss;
    assert_int_equal(fkd_coord_server_train(&loss, &s, &c, &err), 0);
    assert_true(loss > 0);
    double after = kd_loss(&master, &s);
    assert_true(after < 0.8 * before);
    assert_int_equal(fkd_coord_server_commit(&s, &err), 0);
    char path[700];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, FKD_COORD_SERVER_TRAIN_FILE);
    assert_int_equal(stat(path, &st), 0);
    /* the optimizer only: header, two moments, checksum (the master is the checkpoint's) */
    assert_int_equal((size_t)st.st_size, 56 + 2 * master.n_params * sizeof(float) + 4);
    snprintf(path, sizeof path, "%s/%s.next", dir, FKD_COORD_SERVER_TRAIN_FILE);
    assert_int_not_equal(stat(path, &st), 0);
    fkd_coord_server_free(&s);
    fkd_params_free(&master);
    free_shards(&sh);
}

/* What an aggregation does between two rounds' server steps. */
static void aggregate_like(fkd_params *p, int round)
{
    for (size_t i = 0; i < p->n_params; i += 3) p->memory[i] += 1e-3f * (float)round;
}

static void state_file(char *out, size_t cap, const char *dir)
{
    snprintf(out, cap, "%s/%s", dir, FKD_COORD_SERVER_TRAIN_FILE);
}

/* Three rounds, the server restarted as given: restart[r] = 1 frees and
 * re-creates it before round r; lost[r] = 1 trains round r once more
 * without committing first (a crash before the round's checkpoint: the
 * master goes back to the last checkpoint's, the state is not resumed);
 * damage[r] = 1 ruins the committed state file before round r, which a
 * server that keeps its optimizer in memory never reads. */
static void three_rounds(fkd_params *master, const char *name, const int *restart,
                         const int *lost, const int *damage, const shards *sh)
{
    char dir[512];
    state_dir(dir, sizeof dir, name);
    fkd_coord_config c;
    config(&c, dir, 5);
    master_new(master);
    fkd_coord_server s;
    fkd_error err = {0};
    double loss;
    assert_int_equal(fkd_coord_server_init(&s, &c, master, sh->data, sh->len, N_SHARDS, &err), 0);
    for (int r = 0; r < 3; r++) {
        if (lost[r]) {
            float *saved = malloc(master->n_params * sizeof *saved);
            assert_non_null(saved);
            memcpy(saved, master->memory, master->n_params * sizeof *saved);
            aggregate_like(master, r + 1);
            assert_int_equal(fkd_coord_server_train(&loss, &s, &c, &err), 0);
            memcpy(master->memory, saved, master->n_params * sizeof *saved);
            free(saved);
        }
        if (damage[r]) {
            char path[700];
            state_file(path, sizeof path, dir);
            assert_int_equal(fkd_file_write_atomic(path, "ruined", 6, &err), 0);
        }
        if (restart[r] || lost[r]) {
            fkd_coord_server_free(&s);
            assert_int_equal(
                fkd_coord_server_init(&s, &c, master, sh->data, sh->len, N_SHARDS, &err), 0);
        }
        aggregate_like(master, r + 1);
        assert_int_equal(fkd_coord_server_train(&loss, &s, &c, &err), 0);
        assert_int_equal(fkd_coord_server_commit(&s, &err), 0);
    }
    fkd_coord_server_free(&s);
}

static void test_resume_is_bit_identical(void **unused)
{
    (void)unused;
    shards sh;
    make_shards(&sh);
    static const int none[3] = {0}, restarts[3] = {0, 1, 1}, lost[3] = {0, 0, 1},
                     damage[3] = {0, 1, 1};
    fkd_params a, b, c, d, fresh;
    three_rounds(&a, "straight", none, none, none, &sh);
    three_rounds(&b, "restarted", restarts, none, none, &sh);
    three_rounds(&c, "lost", none, lost, none, &sh);
    three_rounds(&d, "in-memory", none, none, damage, &sh);
    assert_memory_equal(a.memory, b.memory, a.n_params * sizeof(float));
    assert_memory_equal(a.memory, c.memory, a.n_params * sizeof(float));
    assert_memory_equal(a.memory, d.memory, a.n_params * sizeof(float));
    /* The state carried something: a server that forgot its optimizer
     * before every round ends elsewhere. */
    char dir[512];
    fkd_coord_config cfg;
    master_new(&fresh);
    for (int r = 0; r < 3; r++) {
        state_dir(dir, sizeof dir, "forgetful");
        config(&cfg, dir, 5);
        fkd_coord_server s;
        double loss;
        assert_int_equal(fkd_coord_server_init(&s, &cfg, &fresh, sh.data, sh.len, N_SHARDS, NULL),
                         0);
        aggregate_like(&fresh, r + 1);
        assert_int_equal(fkd_coord_server_train(&loss, &s, &cfg, NULL), 0);
        fkd_coord_server_free(&s);
    }
    assert_true(memcmp(a.memory, fresh.memory, a.n_params * sizeof(float)) != 0);
    fkd_params_free(&a);
    fkd_params_free(&b);
    fkd_params_free(&c);
    fkd_params_free(&d);
    fkd_params_free(&fresh);
    free_shards(&sh);
}

/* Two rounds on a copy of start, in dir, its config as given. */
static void two_rounds(fkd_params *out, const fkd_params *start, const fkd_coord_config *c,
                       const shards *sh)
{
    fkd_error err = {0};
    assert_int_equal(fkd_params_init(out, &start->cfg, &err), 0);
    memcpy(out->memory, start->memory, start->n_params * sizeof(float));
    fkd_coord_server s;
    double loss;
    assert_int_equal(fkd_coord_server_init(&s, c, out, sh->data, sh->len, N_SHARDS, &err), 0);
    for (int r = 0; r < 2; r++) {
        aggregate_like(out, r + 2);
        assert_int_equal(fkd_coord_server_train(&loss, &s, c, &err), 0);
        assert_int_equal(fkd_coord_server_commit(&s, &err), 0);
    }
    fkd_coord_server_free(&s);
}

/* server_init: a server whose state_dir holds no state starts from that
 * file as if it were its own committed one (the simulation hands every
 * method the server phase's state this way), and never writes it. */
static void test_starts_from_server_init(void **unused)
{
    (void)unused;
    shards sh;
    make_shards(&sh);
    char dir[512], seed[700], own[700];
    fkd_coord_config c;
    fkd_error err = {0};
    /* one round makes the seed state; start is the master after it */
    state_dir(dir, sizeof dir, "seed");
    state_file(seed, sizeof seed, dir);
    config(&c, dir, 5);
    fkd_params start, restarted, seeded, fresh;
    master_new(&start);
    fkd_coord_server s;
    double loss;
    assert_int_equal(fkd_coord_server_init(&s, &c, &start, sh.data, sh.len, N_SHARDS, &err), 0);
    aggregate_like(&start, 1);
    assert_int_equal(fkd_coord_server_train(&loss, &s, &c, &err), 0);
    assert_int_equal(fkd_coord_server_commit(&s, &err), 0);
    fkd_coord_server_free(&s);
    uint8_t *before, *after;
    size_t before_len, after_len;
    assert_int_equal(fkd_file_read_all(&before, &before_len, seed, (size_t)1 << 30, &err), 0);
    /* the reference: the seed as the server's own committed state (a restart) */
    state_dir(dir, sizeof dir, "restart");
    state_file(own, sizeof own, dir);
    assert_int_equal(fkd_file_write_atomic(own, before, before_len, &err), 0);
    config(&c, dir, 5);
    two_rounds(&restarted, &start, &c, &sh);
    /* the seed read in place, from an empty state_dir */
    state_dir(dir, sizeof dir, "from-init");
    state_file(own, sizeof own, dir);
    config(&c, dir, 5);
    int len = snprintf(c.server_init, sizeof c.server_init, "%s", seed);
    assert_true(len >= 0 && len < (int)sizeof c.server_init);
    two_rounds(&seeded, &start, &c, &sh);
    assert_memory_equal(seeded.memory, restarted.memory, start.n_params * sizeof(float));
    struct stat st;
    assert_int_equal(stat(own, &st), 0); /* it wrote its own state, */
    assert_int_equal(fkd_file_read_all(&after, &after_len, seed, (size_t)1 << 30, &err), 0);
    assert_int_equal(after_len, before_len); /* not into the seed */
    assert_memory_equal(after, before, before_len);
    /* the seed mattered: a fresh optimizer ends elsewhere */
    state_dir(dir, sizeof dir, "no-init");
    config(&c, dir, 5);
    two_rounds(&fresh, &start, &c, &sh);
    assert_true(memcmp(fresh.memory, restarted.memory, start.n_params * sizeof(float)) != 0);
    /* and the key is a configuration key like the others */
    assert_int_equal(fkd_coord_config_override(&c, "server_init=/srv/phase.state", &err), 0);
    assert_string_equal(c.server_init, "/srv/phase.state");
    free(before);
    free(after);
    fkd_params_free(&start);
    fkd_params_free(&restarted);
    fkd_params_free(&seeded);
    fkd_params_free(&fresh);
    free_shards(&sh);
}

static void test_off_is_a_no_op(void **unused)
{
    (void)unused;
    fkd_coord_config c;
    config(&c, "/nonexistent/never-made", 0);
    fkd_params master;
    master_new(&master);
    fkd_coord_server s;
    assert_int_equal(fkd_coord_server_init(&s, &c, &master, NULL, NULL, 0, NULL), 0);
    double loss = 1;
    assert_int_equal(fkd_coord_server_train(&loss, &s, &c, NULL), 0);
    assert_true(loss == 0);
    assert_int_equal(fkd_coord_server_commit(&s, NULL), 0);
    fkd_coord_server_free(&s);
    fkd_params_free(&master);
}

static void test_bad_shards_refused(void **unused)
{
    (void)unused;
    shards sh;
    make_shards(&sh);
    char dir[512];
    state_dir(dir, sizeof dir, "bad");
    fkd_coord_config c;
    config(&c, dir, 5);
    fkd_params master;
    master_new(&master);
    fkd_coord_server s;
    fkd_error err = {0};
    size_t len[N_SHARDS] = {sh.len[0], sh.len[1] / 2}; /* the second one truncated */
    assert_int_equal(fkd_coord_server_init(&s, &c, &master, sh.data, len, N_SHARDS, &err), -1);
    assert_int_not_equal(err.code, 0);
    assert_int_equal(fkd_coord_server_init(&s, &c, &master, sh.data, sh.len, 0, &err), -1);
    assert_non_null(strstr(err.msg, "softlabels"));
    fkd_params_free(&master);
    free_shards(&sh);
}

static void test_config_keys(void **unused)
{
    (void)unused;
    fkd_coord_config c;
    fkd_coord_config_defaults(&c);
    assert_int_equal(c.server_steps, 0);
    fkd_error err = {0};
    assert_int_equal(fkd_coord_config_override(&c, "server_steps=24", &err), 0);
    assert_int_equal(fkd_coord_config_override(&c, "server_alpha=0.25", &err), 0);
    assert_int_equal(fkd_coord_config_override(&c, "server_train_lr=0.001", &err), 0);
    assert_int_equal(fkd_coord_config_override(&c, "server_seed=99", &err), 0);
    assert_int_equal(c.server_steps, 24);
    assert_true(c.server_alpha == 0.25f);
    assert_true(c.server_train_lr == 0.001f);
    assert_true(c.server_seed == 99);
    /* no shards to train on */
    assert_int_equal(fkd_coord_config_validate(&c, &err), -1);
    assert_non_null(strstr(err.msg, "softlabels"));
    assert_non_null(strstr(err.msg, "server_steps"));
    snprintf(c.softlabels, sizeof c.softlabels, "public.soft");
    assert_int_equal(fkd_coord_config_validate(&c, &err), 0);
    assert_int_equal(fkd_coord_config_override(&c, "server_alpha=1.5", &err), -1);
    assert_non_null(strstr(err.msg, "server_alpha"));
    assert_int_equal(fkd_coord_config_override(&c, "server_steps=-1", &err), -1);
    assert_non_null(strstr(err.msg, "server_steps"));
    assert_int_equal(fkd_coord_config_override(&c, "server_steps=2.5", &err), -1);
    assert_non_null(strstr(err.msg, "not an integer"));
    assert_int_equal(fkd_coord_config_override(&c, "server_train_lr=fast", &err), -1);
    assert_non_null(strstr(err.msg, "server_train_lr"));
    /* printed as a config file holds them */
    char buf[8192] = {0};
    FILE *f = fmemopen(buf, sizeof buf - 1, "w");
    assert_non_null(f);
    fkd_coord_config_print(f, &c);
    fclose(f);
    assert_non_null(strstr(buf, "server_steps = 24\n"));
    assert_non_null(strstr(buf, "server_alpha = 0.25\n"));
}

/* The round history keeps the server's seconds and loss across a restart,
 * and a checkpoint written before they existed (version 1) still loads. */
static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void test_state_keeps_server_stats(void **unused)
{
    (void)unused;
    fkd_coord_state a = {0}, b;
    master_new(&a.master);
    fkd_rng_seed(&a.rng, 1);
    a.round = 2;
    a.n_history = 2;
    a.history = calloc(2, sizeof *a.history);
    assert_non_null(a.history);
    a.history[0] = (fkd_coord_round_stats){.round = 1, .server_seconds = 1.5, .server_loss = 2.25};
    a.history[1] = (fkd_coord_round_stats){.round = 2, .clip_bound = 3, .server_loss = 1.75};
    char dir[512], path[600];
    state_dir(dir, sizeof dir, "state");
    snprintf(path, sizeof path, "%s/%s", dir, FKD_COORD_STATE_FILE);
    fkd_error err = {0};
    assert_int_equal(fkd_coord_state_save(path, &a, &err), 0);
    assert_int_equal(fkd_coord_state_load(&b, path, &err), 0);
    assert_true(b.history[0].server_seconds == 1.5 && b.history[0].server_loss == 2.25);
    assert_true(b.history[1].server_loss == 1.75 && b.history[1].clip_bound == 3);
    fkd_coord_state_free(&b);
    /* version 1: each history entry 16 bytes shorter (no server fields) */
    uint8_t *data;
    size_t bytes;
    assert_int_equal(fkd_file_read_all(&data, &bytes, path, (size_t)1 << 30, &err), 0);
    const size_t v2 = 120, v1 = 104, end = bytes - 4, first = end - 2 * v2;
    uint8_t *old = malloc(bytes);
    assert_non_null(old);
    memcpy(old, data, first);
    memcpy(old + first, data + first, v1);
    memcpy(old + first + v1, data + first + v2, v1);
    size_t old_bytes = first + 2 * v1 + 4;
    put_u32(old + 8, 1);
    put_u32(old + old_bytes - 4, fkd_crc32(0, old, old_bytes - 4));
    assert_int_equal(fkd_coord_state_decode(&b, old, old_bytes, &err), 0);
    assert_true(b.history[1].clip_bound == 3 && b.history[1].server_loss == 0);
    assert_int_equal(b.history[1].round, 2);
    fkd_coord_state_free(&b);
    /* the same bytes read as version 2 do not fit: refused */
    put_u32(old + 8, 2);
    put_u32(old + old_bytes - 4, fkd_crc32(0, old, old_bytes - 4));
    assert_int_equal(fkd_coord_state_decode(&b, old, old_bytes, &err), -1);
    free(old);
    free(data);
    fkd_coord_state_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lowers_kd_loss),
        cmocka_unit_test(test_resume_is_bit_identical),
        cmocka_unit_test(test_starts_from_server_init),
        cmocka_unit_test(test_off_is_a_no_op),
        cmocka_unit_test(test_bad_shards_refused),
        cmocka_unit_test(test_config_keys),
        cmocka_unit_test(test_state_keeps_server_stats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
