/* test_trainer.c — the training loop learns real text, and a run stopped
 * and resumed from its state file ends with exactly the weights of an
 * uninterrupted run with the same seed; a damaged state file is refused; an
 * optimizer carried in memory across calls (and saved without weights)
 * trains exactly as one carried through a state file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fkd_train.h"

/* Plain English prose, written for this test. */
static const char *PROSE[] = {
    "The river was low that summer, and the children walked along its bed looking for "
    "stones that still held the shape of the water.",
    "A good tool is one you forget you are holding. The work is what you see, and the "
    "hand learns the rest without being told.",
    "When the train was late again, the people on the platform began to talk to each "
    "other, which they had never done when it was on time.",
    "She kept a list of the birds she heard in the morning, and by the end of the year "
    "the list was longer than the one of things she had to do.",
    "The old map showed a road where there was now a field, and the field showed, if "
    "you looked closely, where the road had been.",
    "He learned to cook from his grandmother, who never measured anything and never "
    "made the same soup twice, and never made a bad one.",
};
#define N_PROSE (int)(sizeof PROSE / sizeof PROSE[0])

static fkd_model_config tiny_config(void)
{
    fkd_model_config c = {.vocab = 256, .dim = 32, .n_layers = 1, .n_heads = 2,
                          .n_kv_heads = 2, .ffn_hidden = 64, .max_seq = 32,
                          .tie_embeddings = 0, .rope_theta = 10000.0f, .norm_eps = 1e-5f};
    return c;
}

/* A stream of the prose, repeated so random windows see all of it. */
static void prose_stream(fkd_token_stream *s)
{
    fkd_tokenizer tok;
    fkd_tokenizer_init_bytes(&tok);
    size_t cap = 0;
    for (int i = 0; i < N_PROSE; i++) cap += strlen(PROSE[i]) + 1;
    cap = cap * 4 + 1;
    memset(s, 0, sizeof *s);
    s->tokens = malloc(cap * sizeof(int32_t));
    s->owned = 1;
    int32_t sep = fkd_data_separator(&tok);
    s->tokens[s->n++] = sep;
    s->text_bytes = 1;
    for (int rep = 0; rep < 4; rep++)
        for (int i = 0; i < N_PROSE; i++) {
            size_t len = strlen(PROSE[i]);
            for (size_t j = 0; j < len; j++) s->tokens[s->n++] = (uint8_t)PROSE[i][j];
            s->tokens[s->n++] = sep;
            s->text_bytes += (int64_t)len + 1;
        }
}

static void make_model(fkd_model *m, uint64_t seed)
{
    fkd_model_config c = tiny_config();
    fkd_params p;
    fkd_error err;
    assert_int_equal(fkd_params_init(&p, &c, &err), 0);
    fkd_params_randomize(&p, seed);
    assert_int_equal(fkd_model_init(m, &p, 4, 32, 0, &err), 0);
}

static fkd_trainer_config config(int64_t steps)
{
    fkd_trainer_config tc = fkd_trainer_defaults();
    tc.steps = steps;
    tc.accum = 2;
    tc.opt.lr = 3e-3f;
    tc.opt.warmup_steps = 5;
    tc.opt.total_steps = 60; /* fixed, so shorter runs share the schedule */
    tc.eval_every = 0;
    tc.eval_max_tokens = 0;
    tc.ckpt_every = 7;
    tc.seed = 11;
    return tc;
}

static void state_path(char *path, size_t cap, const char *name)
{
    const char *tmp = getenv("FKD_TEST_TMP");
    snprintf(path, cap, "%s/%s.%d", tmp ? tmp : "/tmp", name, (int)getpid());
}

static void test_loss_falls(void **state)
{
    fkd_train_set_threads(1);
    fkd_token_stream s;
    prose_stream(&s);
    fkd_model m;
    make_model(&m, 3);
    fkd_eval_result before;
    fkd_error err;
    assert_int_equal(fkd_eval_tokens(&before, &m.params, s.tokens, s.n, s.text_bytes, 32, &err), 0);
    fkd_trainer_config tc = config(60);
    fkd_trainer_result res;
    assert_int_equal(fkd_trainer_run(&res, &m, &s, NULL, &s, &tc, &err), 0);
    assert_int_equal(res.step, 60);
    assert_int_equal(res.tokens, 60 * 2 * 4 * 32);
    /* from ~ln(256) = 5.5 nats to well under the 4.3 of byte frequencies alone */
    assert_true(before.mean_loss > 5.0);
    assert_true(res.val_loss < 3.3);
    assert_true(res.val_loss < before.mean_loss - 2.0);
    fkd_model_free(&m);
    fkd_token_stream_free(&s);
}

static void test_resume_is_exact(void **state)
{
    fkd_train_set_threads(1);
    fkd_token_stream s;
    prose_stream(&s);
    char path[1024];
    state_path(path, sizeof path, "trainer_state");
    unlink(path);
    fkd_error err;
    fkd_trainer_result res;

    fkd_model straight;
    make_model(&straight, 5);
    fkd_trainer_config tc = config(30);
    assert_int_equal(fkd_trainer_run(&res, &straight, &s, NULL, NULL, &tc, &err), 0);

    /* the same run, stopped after 17 steps (state saved then), resumed into
     * a model with other initial weights: the state must overwrite them */
    fkd_model first;
    make_model(&first, 5);
    tc = config(17);
    tc.state_path = path;
    assert_int_equal(fkd_trainer_run(&res, &first, &s, NULL, NULL, &tc, &err), 0);
    assert_int_equal(res.resumed, 0);
    fkd_model second;
    make_model(&second, 99);
    tc = config(30);
    tc.state_path = path;
    assert_int_equal(fkd_trainer_run(&res, &second, &s, NULL, NULL, &tc, &err), 0);
    assert_int_equal(res.resumed, 1);
    assert_int_equal(res.steps_run, 13);
    assert_int_equal(res.step, 30);
    assert_memory_equal(second.params.memory, straight.params.memory,
                        straight.params.n_params * sizeof(float));
    /* and the weights did move: not a test of an idle loop */
    assert_memory_not_equal(first.params.memory, straight.params.memory,
                            straight.params.n_params * sizeof(float));

    /* another seed refuses the state; a damaged state is refused */
    tc.seed = 12;
    assert_int_equal(fkd_trainer_run(&res, &second, &s, NULL, NULL, &tc, &err), -1);
    assert_int_equal(err.code, FKD_E_MISMATCH);
    uint8_t *data;
    size_t bytes;
    assert_int_equal(fkd_file_read_all(&data, &bytes, path, (size_t)1 << 30, &err), 0);
    data[bytes / 2] ^= 1;
    assert_int_equal(fkd_file_write_atomic(path, data, bytes, &err), 0);
    tc.seed = 11;
    assert_int_equal(fkd_trainer_run(&res, &second, &s, NULL, NULL, &tc, &err), -1);
    assert_int_equal(err.code, FKD_E_CHECKSUM);
    assert_int_equal(fkd_file_write_atomic(path, data, bytes / 3, &err), 0);
    assert_int_equal(fkd_trainer_run(&res, &second, &s, NULL, NULL, &tc, &err), -1);
    assert_int_equal(err.code, FKD_E_TRUNCATED);
    free(data);
    unlink(path);
    fkd_model_free(&straight);
    fkd_model_free(&first);
    fkd_model_free(&second);
    fkd_token_stream_free(&s);
}

/* What a coordinator does between two calls: moves the weights. */
static void nudge(fkd_model *m, int call)
{
    for (size_t i = 0; i < m->params.n_params; i += 5) m->params.memory[i] += 1e-3f * (float)call;
}

/* Three calls of 6 steps with the weights nudged in between: the optimizer
 * carried through a state file (carry_optimizer) and carried in memory end
 * bit-identical, and so does one carried in memory, saved without weights
 * after the second call and resumed from that file by a fresh carry. */
static void test_carry_in_memory(void **state)
{
    fkd_train_set_threads(1);
    fkd_token_stream s;
    prose_stream(&s);
    char path[1024], saved[1024];
    state_path(path, sizeof path, "carry_file");
    state_path(saved, sizeof saved, "carry_saved");
    unlink(path);
    unlink(saved);
    fkd_error err;
    fkd_trainer_result res;
    fkd_model by_file, in_mem, restarted;
    make_model(&by_file, 21);
    make_model(&in_mem, 21);
    make_model(&restarted, 21);
    fkd_trainer_carry carry = {0}, carry2 = {0};
    for (int call = 1; call <= 3; call++) {
        fkd_trainer_config tc = config(6);
        tc.carry_optimizer = 1;
        tc.state_path = path;
        assert_int_equal(fkd_trainer_run(&res, &by_file, &s, NULL, NULL, &tc, &err), 0);
        tc.state_path = NULL;
        tc.carry = &carry;
        assert_int_equal(fkd_trainer_run(&res, &in_mem, &s, NULL, NULL, &tc, &err), 0);
        assert_int_equal(res.step, 6 * call);
        assert_int_equal(carry.step, 6 * call);
        assert_int_equal(carry.opt.step, 6 * call);
        /* the restarted one loses its carry after call 2 and reads the save */
        tc.carry = &carry2;
        tc.state_path = saved;
        assert_int_equal(fkd_trainer_run(&res, &restarted, &s, NULL, NULL, &tc, &err), 0);
        assert_int_equal(res.resumed, call > 1); /* the carry, then the file */
        if (call == 2) {
            assert_int_equal(fkd_trainer_carry_save(saved, &carry2, &err), 0);
            fkd_trainer_carry_free(&carry2);
            assert_int_equal(carry2.ready, 0);
        }
        nudge(&by_file, call);
        nudge(&in_mem, call);
        nudge(&restarted, call);
    }
    size_t bytes = by_file.params.n_params * sizeof(float);
    assert_memory_equal(in_mem.params.memory, by_file.params.memory, bytes);
    assert_memory_equal(restarted.params.memory, by_file.params.memory, bytes);
    /* the carried state is the moments and a header, no weights */
    uint8_t *data;
    size_t n;
    assert_int_equal(fkd_file_read_all(&data, &n, saved, (size_t)1 << 30, &err), 0);
    assert_int_equal(n, 56 + 2 * by_file.params.n_params * sizeof(float) + 4);
    free(data);
    /* and the carry mattered: a fresh optimizer at every call ends elsewhere */
    fkd_model forgetful;
    make_model(&forgetful, 21);
    for (int call = 1; call <= 3; call++) {
        fkd_trainer_carry once = {0};
        fkd_trainer_config tc = config(6);
        tc.carry = &once;
        assert_int_equal(fkd_trainer_run(&res, &forgetful, &s, NULL, NULL, &tc, &err), 0);
        fkd_trainer_carry_free(&once);
        nudge(&forgetful, call);
    }
    assert_memory_not_equal(forgetful.params.memory, by_file.params.memory, bytes);
    /* a weightless state restores no weights: refused without carry_optimizer;
     * a carry made with another seed is refused */
    fkd_trainer_config tc = config(12);
    tc.state_path = saved;
    assert_int_equal(fkd_trainer_run(&res, &forgetful, &s, NULL, NULL, &tc, &err), -1);
    assert_int_equal(err.code, FKD_E_MISMATCH);
    tc = config(6);
    tc.carry = &carry;
    tc.seed = 12;
    assert_int_equal(fkd_trainer_run(&res, &in_mem, &s, NULL, NULL, &tc, &err), -1);
    assert_int_equal(err.code, FKD_E_MISMATCH);
    fkd_trainer_carry_free(&carry);
    fkd_trainer_carry_free(&carry2);
    unlink(path);
    unlink(saved);
    fkd_model_free(&by_file);
    fkd_model_free(&in_mem);
    fkd_model_free(&restarted);
    fkd_model_free(&forgetful);
    fkd_token_stream_free(&s);
}

/* Distillation batches: a transfer stream with soft labels is used. */
static void test_transfer_share(void **state)
{
    fkd_train_set_threads(1);
    fkd_token_stream s;
    prose_stream(&s);
    fkd_softlabel_shard sh;
    fkd_error err;
    assert_int_equal(fkd_softlabels_alloc(&sh, s.n, 4, 256, &err), 0);
    memcpy(sh.tokens, s.tokens, (size_t)s.n * sizeof(int32_t));
    for (int64_t i = 0; i + 1 < s.n; i++) { /* a teacher that knows the next byte */
        sh.ids[i * 4] = s.tokens[i + 1];
        sh.probs[i * 4] = 0.9f;
        for (int j = 1; j < 4; j++) sh.ids[i * 4 + j] = (s.tokens[i + 1] + j) % 256;
    }
    fkd_token_stream transfer;
    fkd_token_stream_from_shard(&transfer, &sh);
    fkd_model m;
    make_model(&m, 8);
    fkd_trainer_config tc = config(40);
    tc.transfer_share = 1.0f;
    tc.loss.alpha = 1.0f;
    fkd_trainer_result res;
    assert_int_equal(fkd_trainer_run(&res, &m, NULL, &transfer, &s, &tc, &err), 0);
    assert_true(res.val_loss < 4.0); /* learned the text from soft labels alone */
    fkd_model_free(&m);
    fkd_softlabels_free(&sh);
    fkd_token_stream_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loss_falls),
        cmocka_unit_test(test_resume_is_exact),
        cmocka_unit_test(test_carry_in_memory),
        cmocka_unit_test(test_transfer_share),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
