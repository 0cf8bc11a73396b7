/* cmd_bench_compress.c — `fedkd bench compress`: how small a real client
 * update gets, and what that costs.
 *
 * The update is real: a student (student-S unless --model) is trained on
 * the fortune texts to give the "received" weights, then fine-tuned for a
 * few local steps on one partition (a non-IID client); the update is the
 * difference. Every setting compresses that same update and prints one
 * key=value line with its peer figure, the dense fp32 update
 * (bytes_dense), and the quality cost: the relative error of the decoded
 * update and the held-out perplexity of received + decoded update next to
 * received + exact update (ppl_exact). Then --rounds rounds of the same
 * client, each update compressed with and without error feedback and
 * applied to the global model, against exact updates: one update loses
 * most of itself to top-k; error feedback delivers it over the rounds. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_student.h"
#include "commands.h"
#include "fkd_compress.h"

typedef struct {
    const char *name;
    float fraction;
    int value_format;
    int stochastic;
} setting;

static const setting settings[] = {
    {"dense_f32", 1.0f, FKD_UVAL_F32, 0},
    {"dense_int8", 1.0f, FKD_UVAL_INT8, 0},
    {"top10_int8", 0.10f, FKD_UVAL_INT8, 0},
    {"top1_f32", 0.01f, FKD_UVAL_F32, 0},
    {"top1_int8", 0.01f, FKD_UVAL_INT8, 0},
    {"top1_int4", 0.01f, FKD_UVAL_INT4, 0},
    {"top1_int4_sr", 0.01f, FKD_UVAL_INT4, 1},
    {"top1_ternary", 0.01f, FKD_UVAL_TERNARY, 0},
    {"top0.3_int4", 0.003f, FKD_UVAL_INT4, 0},
    {"top0.1_int8", 0.001f, FKD_UVAL_INT8, 0},
    {"top0.1_ternary", 0.001f, FKD_UVAL_TERNARY, 0},
    {"top1.5_ternary", 0.015f, FKD_UVAL_TERNARY, 0},
    {"top1.5_sign", 0.015f, FKD_UVAL_SIGN, 0},
    {"top3_sign", 0.03f, FKD_UVAL_SIGN, 0},
};

static const char *index_name(int c)
{
    static const char *names[] = {"all", "rice", "bitmap"};
    return c >= 0 && c < 3 ? names[c] : "?";
}

/* Perplexity of base + delta on the held-out tokens. */
static int ppl_with(double *ppl, fkd_params *scratch, const fkd_params *base, const float *delta,
                    const fkd_token_stream *eval, int64_t n_eval, int window, fkd_error *err)
{
    for (size_t i = 0; i < base->n_params; i++) scratch->memory[i] = base->memory[i] + delta[i];
    fkd_eval_result r;
    if (fkd_eval_tokens(&r, scratch, eval->tokens, n_eval, n_eval, window, err) < 0) return -1;
    *ppl = r.perplexity;
    return 0;
}

/* The partition with the most training tokens that is not the whole corpus. */
static int pick_client(const bench_text *t, const char *name)
{
    if (name) return fkd_corpus_find_partition(&t->corpus, name);
    int best = 0;
    for (int i = 1; i < t->corpus.n_parts; i++)
        if (t->corpus.parts[i].bytes > t->corpus.parts[best].bytes) best = i;
    return best;
}

typedef struct {
    const char *model, *data, *client;
    int pretrain_steps, steps, batch, seq, threads, eval_tokens, ef_rounds;
    float lr, client_lr;
    uint64_t seed;
} options;

/* Rounds of one client: local steps from the global model, the update
 * compressed (with or without error feedback, or exact when uc is NULL),
 * the decoded update applied to the global model. The global model's
 * held-out perplexity after the rounds is the quality that matters, since
 * error feedback only pays off over rounds. */
static int rounds_run(double *ppl, size_t *bytes_total, const fkd_params *received,
                      const fkd_token_stream *client, const fkd_update_config *uc, int error_feedback,
                      const options *o, int seq, const fkd_token_stream *eval, int64_t n_eval,
                      fkd_error *err)
{
    fkd_params global, local;
    size_t n = received->n_params;
    float *update = malloc(n * sizeof *update), *decoded = malloc(n * sizeof *decoded);
    float *residual = calloc(n, sizeof *residual), *zero = calloc(n, sizeof *zero);
    int rc = -1, have_g = 0, have_l = 0;
    if (!update || !decoded || !residual || !zero) {
        fkd_error_set(err, FKD_E_NOMEM, "out of memory for the rounds");
        goto out;
    }
    if (fkd_params_init(&global, &received->cfg, err) < 0) goto out;
    have_g = 1;
    if (fkd_params_init(&local, &received->cfg, err) < 0) goto out;
    have_l = 1;
    memcpy(global.memory, received->memory, n * sizeof *update);
    *bytes_total = 0;
    for (int r = 0; r < o->ef_rounds; r++) {
        memcpy(local.memory, global.memory, n * sizeof *update);
        if (bench_train_steps(&local, client, o->steps, o->batch, seq, o->client_lr, 2000000 + (int64_t)r * o->steps,
                              NULL, NULL, err) < 0)
            goto out;
        fkd_update_diff(update, local.memory, global.memory, n);
        if (uc) {
            uint8_t *data;
            size_t bytes;
            if (fkd_update_compress(&data, &bytes, NULL, update, error_feedback ? residual : NULL, n, uc, err) < 0)
                goto out;
            int drc = fkd_update_decompress(decoded, n, data, bytes, err);
            free(data);
            if (drc < 0) goto out;
            *bytes_total += bytes;
        } else {
            memcpy(decoded, update, n * sizeof *update);
            *bytes_total += 4 * n;
        }
        for (size_t i = 0; i < n; i++) global.memory[i] += decoded[i];
    }
    rc = ppl_with(ppl, &local, &global, zero, eval, n_eval, seq, err);
out:
    if (have_g) fkd_params_free(&global);
    if (have_l) fkd_params_free(&local);
    free(update);
    free(decoded);
    free(residual);
    free(zero);
    return rc;
}

static int run(const options *o)
{
    fkd_error err = {0};
    bench_text text;
    fkd_params base, local, scratch;
    fkd_token_stream client_stream = {0};
    float *update = NULL, *decoded = NULL;
    int rc = 1, have_base = 0, have_local = 0, have_scratch = 0;
    fkd_train_set_threads(o->threads);
    if (bench_text_load(&text, o->data, &err) < 0) {
        fprintf(stderr, "fedkd bench compress: %s\n", err.msg);
        return 1;
    }
    if (o->model) {
        if (fkd_checkpoint_load(&base, o->model, &err) < 0) goto fail;
    } else {
        fkd_model_config cfg = fkd_config_student_s();
        if (fkd_params_init(&base, &cfg, &err) < 0) goto fail;
        fkd_params_randomize(&base, o->seed);
    }
    have_base = 1;
    double loss = 0.0;
    int seq = o->seq < base.cfg.max_seq ? o->seq : base.cfg.max_seq;
    double t0 = fkd_time_ms();
    if (o->pretrain_steps > 0 &&
        bench_train_steps(&base, &text.train, o->pretrain_steps, o->batch, seq, o->lr, 0, NULL, &loss, &err) < 0)
        goto fail;
    int part = pick_client(&text, o->client);
    if (part < 0) {
        fkd_error_set(&err, FKD_E_INVALID_ARG, "no partition named %s in %s", o->client, o->data);
        goto fail;
    }
    if (bench_text_partition(&client_stream, &text, part, &err) < 0) goto fail;
    if (fkd_params_init(&local, &base.cfg, &err) < 0) goto fail;
    have_local = 1;
    memcpy(local.memory, base.memory, base.n_params * sizeof *base.memory);
    double client_loss = 0.0;
    if (bench_train_steps(&local, &client_stream, o->steps, o->batch, seq, o->client_lr, 1000000, NULL,
                          &client_loss, &err) < 0)
        goto fail;
    double train_s = (fkd_time_ms() - t0) / 1e3;

    size_t n = base.n_params;
    update = malloc(n * sizeof *update);
    decoded = malloc(n * sizeof *decoded);
    if (!update || !decoded || fkd_params_init(&scratch, &base.cfg, &err) < 0) {
        if (!update || !decoded) fkd_error_set(&err, FKD_E_NOMEM, "out of memory for the update");
        goto fail;
    }
    have_scratch = 1;
    fkd_update_diff(update, local.memory, base.memory, n);
    double sq = 0.0;
    for (size_t i = 0; i < n; i++) sq += (double)update[i] * update[i];
    int64_t n_eval = text.heldout.n < o->eval_tokens ? text.heldout.n : o->eval_tokens;
    double ppl_base, ppl_exact;
    float *zero = calloc(n, sizeof *zero);
    int bad = !zero || ppl_with(&ppl_base, &scratch, &base, zero, &text.heldout, n_eval, seq, &err) < 0 ||
              ppl_with(&ppl_exact, &scratch, &base, update, &text.heldout, n_eval, seq, &err) < 0;
    free(zero);
    if (bad) goto fail;
    printf("update params=%zu client=%s pretrain_steps=%d local_steps=%d loss=%.3f client_loss=%.3f "
           "update_rms=%.3g ppl_received=%.3f ppl_exact=%.3f eval_tokens=%lld train_s=%.1f\n",
           n, text.corpus.parts[part].name, o->pretrain_steps, o->steps, loss, client_loss,
           sqrt(sq / (double)n), ppl_base, ppl_exact, (long long)n_eval, train_s);
    fflush(stdout);

    for (size_t s = 0; s < sizeof settings / sizeof settings[0]; s++) {
        const setting *st = &settings[s];
        fkd_rng rng;
        fkd_rng_seed(&rng, o->seed + s);
        fkd_update_config uc = {st->fraction, st->value_format, st->stochastic, &rng, NULL};
        fkd_update_stats stats;
        uint8_t *data;
        size_t bytes;
        double c0 = fkd_time_ms();
        if (fkd_update_compress(&data, &bytes, &stats, update, NULL, n, &uc, &err) < 0) goto fail;
        double c1 = fkd_time_ms();
        int drc = fkd_update_decompress(decoded, n, data, bytes, &err);
        double c2 = fkd_time_ms();
        free(data);
        if (drc < 0) goto fail;
        double ppl;
        if (ppl_with(&ppl, &scratch, &base, decoded, &text.heldout, n_eval, seq, &err) < 0) goto fail;
        printf("setting=%s fraction=%g values=%s%s index=%s k=%zu bytes_dense=%zu bytes=%zu ratio=%.1f "
               "bits_per_entry=%.2f rel_error=%.4f ppl=%.3f ppl_exact=%.3f ppl_received=%.3f compress_ms=%.1f decompress_ms=%.1f\n",
               st->name, (double)st->fraction, fkd_update_value_name(st->value_format), st->stochastic ? "_sr" : "",
               index_name(stats.index_coding), stats.k, stats.bytes_dense, stats.bytes, stats.ratio,
               8.0 * (double)stats.bytes / (double)stats.k, stats.rel_error, ppl, ppl_exact, ppl_base, c1 - c0, c2 - c1);
        fflush(stdout);
    }
    if (o->ef_rounds > 0) {
        double ppl_exact_rounds;
        size_t dense_total;
        if (rounds_run(&ppl_exact_rounds, &dense_total, &base, &client_stream, NULL, 0, o, seq, &text.heldout, n_eval,
                       &err) < 0)
            goto fail;
        const setting *ef[] = {&settings[5], &settings[7], &settings[8]}; /* top1_int4, top1_ternary, top0.3_int4 */
        for (size_t s = 0; s < sizeof ef / sizeof ef[0]; s++) {
            for (int fb = 1; fb >= 0; fb--) {
                fkd_rng rng;
                fkd_rng_seed(&rng, o->seed);
                fkd_update_config uc = {ef[s]->fraction, ef[s]->value_format, ef[s]->stochastic, &rng,
                                        NULL};
                double ppl;
                size_t total;
                if (rounds_run(&ppl, &total, &base, &client_stream, &uc, fb, o, seq, &text.heldout, n_eval, &err) < 0)
                    goto fail;
                printf("rounds=%d setting=%s error_feedback=%d bytes_dense=%zu bytes=%zu ratio=%.1f ppl=%.3f "
                       "ppl_exact=%.3f ppl_change_pct=%+.2f ppl_received=%.3f\n",
                       o->ef_rounds, ef[s]->name, fb, dense_total, total, (double)dense_total / (double)total, ppl,
                       ppl_exact_rounds, 100.0 * (ppl / ppl_exact_rounds - 1.0), ppl_base);
                fflush(stdout);
            }
        }
    }
    rc = 0;
fail:
    if (rc) fprintf(stderr, "fedkd bench compress: %s\n", err.msg);
    free(update);
    free(decoded);
    if (have_scratch) fkd_params_free(&scratch);
    if (have_local) fkd_params_free(&local);
    if (have_base) fkd_params_free(&base);
    fkd_token_stream_free(&client_stream);
    bench_text_free(&text);
    return rc;
}

int cmd_bench_compress(int argc, char **argv)
{
    options o = {.model = NULL, .data = FKD_DATA_DEFAULT_DIR, .client = NULL, .pretrain_steps = 60,
                 .steps = 10, .batch = 8, .seq = 128, .threads = 2, .eval_tokens = 16384,
                 .lr = 2e-3f, .client_lr = 1e-3f, .seed = 1, .ef_rounds = 4};
    int64_t seed = 1;
    fkd_opt opts[] = {
        {"model", FKD_OPT_STR, &o.model, "start from this checkpoint (default: a fresh student-S)"},
        {"data", FKD_OPT_STR, &o.data, "directory of text (fortune files)"},
        {"pretrain-steps", FKD_OPT_INT, &o.pretrain_steps, "steps that make the received model"},
        {"steps", FKD_OPT_INT, &o.steps, "local steps of the client (the update)"},
        {"client", FKD_OPT_STR, &o.client, "partition the client trains on (default: the largest)"},
        {"batch", FKD_OPT_INT, &o.batch, "sequences per step"},
        {"seq", FKD_OPT_INT, &o.seq, "tokens per sequence"},
        {"lr", FKD_OPT_FLOAT, &o.lr, "learning rate of the pretraining"},
        {"client-lr", FKD_OPT_FLOAT, &o.client_lr, "learning rate of the client"},
        {"eval-tokens", FKD_OPT_INT, &o.eval_tokens, "held-out tokens for the perplexities"},
        {"rounds", FKD_OPT_INT, &o.ef_rounds, "rounds of the error-feedback comparison (0: skip)"},
        {"threads", FKD_OPT_INT, &o.threads, "training threads"},
        {"seed", FKD_OPT_I64, &seed, "seed of the initial weights and the stochastic rounding"},
    };
    int rc = fkd_cli_parse(argc, argv, opts, (int)(sizeof opts / sizeof opts[0]),
                           "usage: fedkd bench compress [options]\n"
                           "Compresses a real client update (local fine-tuning of a student on real text)\n"
                           "with each setting; prints one key=value line per setting.",
                           NULL, 0, NULL);
    if (rc != 0) return rc < 0 ? 2 : 0;
    o.seed = (uint64_t)seed;
    if (o.steps < 1 || o.batch < 1 || o.seq < 2 || o.eval_tokens < 2 || o.threads < 1 || o.ef_rounds < 0) {
        fprintf(stderr, "fedkd bench compress: steps, batch, threads must be >= 1, seq and eval-tokens >= 2\n");
        return 2;
    }
    return run(&o);
}
