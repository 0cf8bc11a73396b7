/* cmd_bench_quant.c — `fedkd bench quant`: the deployed student in each
 * format: serialized bytes, held-out perplexity, and generation speed at one
 * thread, each next to its peer from the same run (the fp32 model through
 * train's fkd_infer_step: ppl_fp32, tokens_per_s_fp32). Speeds are given in
 * wall-clock and in CPU time (cpu_*), the latter being the decoder's own
 * cost on a shared machine.
 *
 * The model is --model (a train checkpoint) or, without it, a student-S
 * trained here for --steps on the fortune texts so the bench runs alone.
 * Perplexity is scored by one loop (fkd_compress_eval_steps) for both the
 * fp32 and the quantized step functions, so the figures are comparable.
 * Pruned variants (unstructured and 2:4) are fine-tuned with their mask in
 * the optimizer, then quantized with the mask, and reported against dense.
 * With --peer-bench, int4 generation is also set beside llama.cpp's on the
 * same model written as a GGUF (a byte-vocabulary student). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_llamacpp.h"
#include "bench_student.h"
#include "commands.h"
#include "fkd_compress.h"

#define PROMPT_TOKENS 16
#define SAMPLE_CHARS 120

typedef struct {
    const char *model, *data, *kernel_name, *save, *peer;
    int steps, batch, seq, eval_tokens, gen_tokens, prune_steps, train_threads, prune_only;
    float lr, sparsity;
} options;

typedef struct {
    const fkd_token_stream *eval;
    int64_t n_eval;
    int window;
} eval_setup;

static int perplexity(double *ppl, void *state, fkd_step_fn step, fkd_reset_fn reset, int vocab,
                      const eval_setup *e, fkd_error *err)
{
    fkd_eval_result r;
    if (fkd_compress_eval_steps(&r, state, step, reset, vocab, e->eval->tokens, e->n_eval, e->n_eval,
                                e->window, err) < 0)
        return -1;
    *ppl = r.perplexity;
    return 0;
}

typedef struct {
    double wall, cpu; /* tokens per second of wall-clock and of CPU time */
} speed;

/* Decoding speed: prompt, then sampled tokens up to the context, repeated
 * until gen_tokens steps ran. Optionally keeps the first run's text. */
static int gen_speed(speed *tokens_per_s, char *sample, void *state, fkd_step_fn step,
                     fkd_reset_fn reset, int vocab, int max_seq, const int32_t *prompt,
                     int gen_tokens, fkd_error *err)
{
    fkd_sampler s;
    if (fkd_sampler_init(&s, vocab, 0.8f, 40, 0.95f, 7, err) < 0) return -1;
    int64_t steps = 0, chars = 0;
    double ms = 0.0, cms = 0.0;
    while (steps < gen_tokens) {
        reset(state);
        double t0 = fkd_time_ms(), c0 = fkd_cpu_time_ms();
        const float *logits = NULL;
        for (int i = 0; i < PROMPT_TOKENS && i < max_seq; i++, steps++) logits = step(state, prompt[i]);
        for (int pos = PROMPT_TOKENS; pos < max_seq && logits; pos++, steps++) {
            int32_t tok = fkd_sampler_sample(&s, logits);
            if (sample && chars < SAMPLE_CHARS) sample[chars++] = tok >= 32 && tok < 127 && tok != '"' ? (char)tok : '.';
            logits = step(state, tok);
        }
        ms += fkd_time_ms() - t0;
        cms += fkd_cpu_time_ms() - c0;
        if (sample) sample[chars] = 0;
        sample = NULL;
    }
    fkd_sampler_free(&s);
    tokens_per_s->wall = (double)steps / (ms / 1e3);
    tokens_per_s->cpu = (double)steps / (cms / 1e3);
    return 0;
}

typedef struct {
    double ppl;
    speed tokens_per_s, tokens_per_s_scalar;
    size_t bytes;
    char sample[SAMPLE_CHARS + 1];
} qresult;

/* Quantizes params to type (with mask) and measures bytes, perplexity, speed. */
static int measure(qresult *r, const fkd_params *params, int type, const uint8_t *mask, int kernel,
                   const eval_setup *e, const int32_t *prompt, int gen_tokens, fkd_error *err)
{
    fkd_qmodel qm;
    fkd_qinfer st;
    if (fkd_qmodel_quantize(&qm, params, type, mask, err) < 0) return -1;
    r->bytes = fkd_qmodel_encoded_bytes(&qm);
    int rc = -1, V = qm.cfg.vocab, S = qm.cfg.max_seq;
    if (fkd_qinfer_init(&st, &qm, kernel, err) < 0) goto out;
    if (perplexity(&r->ppl, &st, fkd_qinfer_step_fn, fkd_qinfer_reset_fn, V, e, err) == 0 &&
        gen_speed(&r->tokens_per_s, r->sample, &st, fkd_qinfer_step_fn, fkd_qinfer_reset_fn, V, S, prompt,
                  gen_tokens, err) == 0) {
        fkd_qinfer_free(&st);
        if (fkd_qinfer_init(&st, &qm, FKD_QKERNEL_SCALAR, err) == 0)
            rc = gen_speed(&r->tokens_per_s_scalar, NULL, &st, fkd_qinfer_step_fn, fkd_qinfer_reset_fn, V, S,
                           prompt, gen_tokens, err);
    }
    fkd_qinfer_free(&st);
out:
    fkd_qmodel_free(&qm);
    return rc;
}

static int kernel_from_name(const char *name)
{
    for (int k = FKD_QKERNEL_AUTO; k <= FKD_QKERNEL_VNNI; k++)
        if (strcmp(name, fkd_qkernel_name(k)) == 0) return k;
    return -1;
}

enum { PRUNE_NONE = 0, PRUNE_MAGNITUDE = 1, PRUNE_2_4 = 2 };

/* A copy of params pruned by mode (its mask returned; NULL for
 * PRUNE_NONE), then fine-tuned for steps with the mask in the optimizer. */
static int pruned_copy(fkd_params *out, uint8_t **mask, const fkd_params *params, int mode, int steps,
                       const options *o, const fkd_token_stream *train, fkd_error *err)
{
    *mask = NULL;
    if (mode != PRUNE_NONE) {
        *mask = malloc(params->n_params);
        if (!*mask) return fkd_error_set(err, FKD_E_NOMEM, "out of memory for a pruning mask");
        int rc = mode == PRUNE_2_4 ? fkd_prune_2_4(*mask, params, err)
                                   : fkd_prune_magnitude(*mask, params, o->sparsity, err);
        if (rc < 0) goto fail;
    }
    if (fkd_params_init(out, &params->cfg, err) < 0) goto fail;
    memcpy(out->memory, params->memory, params->n_params * sizeof *params->memory);
    if (*mask) fkd_prune_apply(out->memory, *mask, out->n_params);
    int seq = o->seq < params->cfg.max_seq ? o->seq : params->cfg.max_seq;
    fkd_train_set_threads(o->train_threads);
    int rc = steps > 0 ? bench_train_steps(out, train, steps, o->batch, seq, o->lr * 0.25f, 500000, *mask, NULL, err) : 0;
    fkd_train_set_threads(1);
    if (rc == 0) return 0;
    fkd_params_free(out);
fail:
    free(*mask);
    *mask = NULL;
    return -1;
}

/* Perplexity of params quantized to Q8_0 with mask. */
static int q8_ppl(double *ppl, const fkd_params *params, const uint8_t *mask, int kernel, const eval_setup *e,
                  fkd_error *err)
{
    fkd_qmodel qm;
    fkd_qinfer st;
    if (fkd_qmodel_quantize(&qm, params, FKD_QTYPE_Q8_0, mask, err) < 0) return -1;
    int rc = fkd_qinfer_init(&st, &qm, kernel, err);
    if (rc == 0) {
        rc = perplexity(ppl, &st, fkd_qinfer_step_fn, fkd_qinfer_reset_fn, qm.cfg.vocab, e, err);
        fkd_qinfer_free(&st);
    }
    fkd_qmodel_free(&qm);
    return rc;
}

/* Pruned students against the dense one given the same fine-tuning steps
 * (ppl_dense), and before their own fine-tuning (ppl_pruned_only). */
static int prune_lines(const fkd_params *params, const options *o, const fkd_token_stream *train, int kernel,
                       const eval_setup *e, const int32_t *prompt, double ppl_fp32, fkd_error *err)
{
    fkd_params dense;
    uint8_t *none;
    double ppl_dense;
    if (pruned_copy(&dense, &none, params, PRUNE_NONE, o->prune_steps, o, train, err) < 0) return -1;
    int rc = q8_ppl(&ppl_dense, &dense, NULL, kernel, e, err);
    fkd_params_free(&dense);
    if (rc < 0) return -1;
    for (int mode = PRUNE_MAGNITUDE; mode <= PRUNE_2_4; mode++) {
        fkd_params pruned;
        uint8_t *mask;
        qresult r;
        double ppl_raw;
        if (pruned_copy(&pruned, &mask, params, mode, 0, o, train, err) < 0) return -1;
        rc = q8_ppl(&ppl_raw, &pruned, mask, kernel, e, err);
        fkd_params_free(&pruned);
        free(mask);
        if (rc < 0 || pruned_copy(&pruned, &mask, params, mode, o->prune_steps, o, train, err) < 0) return -1;
        double sparsity = fkd_prune_sparsity(mask, &pruned);
        rc = measure(&r, &pruned, FKD_QTYPE_Q8_0, mask, kernel, e, prompt, o->gen_tokens, err);
        size_t dense_bytes = 0;
        fkd_qmodel qm;
        if (rc == 0 && (rc = fkd_qmodel_quantize(&qm, &pruned, FKD_QTYPE_Q8_0, NULL, err)) == 0) {
            dense_bytes = fkd_qmodel_encoded_bytes(&qm);
            fkd_qmodel_free(&qm);
        }
        /* A sparse encoding's size: the dense blocks less one int8 code per
         * pruned weight (scales and the mask bitmap kept). The qmodel format
         * itself stores blocks densely plus the bitmap (bytes). */
        size_t prunable = 0;
        for (int t = FKD_T_WQ; t <= FKD_T_W2; t++)
            if (t != FKD_T_FFN_NORM) prunable += pruned.tensors[t].count;
        size_t sparse_est = r.bytes - (size_t)((double)prunable * sparsity);
        fkd_params_free(&pruned);
        free(mask);
        if (rc < 0) return -1;
        printf("format=q8_0 prune=%s sparsity=%.3f finetune_steps=%d bytes=%zu bytes_sparse_est=%zu "
               "bytes_dense=%zu ppl=%.4f ppl_pruned_only=%.4f ppl_dense=%.4f ppl_change_pct=%+.2f ppl_fp32=%.4f "
               "tokens_per_s=%.0f cpu_tokens_per_s=%.0f\n",
               mode == PRUNE_2_4 ? "2:4" : "magnitude", sparsity, o->prune_steps, r.bytes, sparse_est, dense_bytes,
               r.ppl, ppl_raw, ppl_dense, 100.0 * (r.ppl / ppl_dense - 1.0), ppl_fp32, r.tokens_per_s.wall,
               r.tokens_per_s.cpu);
        fflush(stdout);
    }
    return 0;
}

/* int4 generation beside llama.cpp's on the same file: the model written as
 * a GGUF with every matrix in the format (what llama.cpp runs), ours on the
 * same blocks, both timed as llama-bench times (bench_llamacpp.h). */
#define PEER_REPS 3
static int peer_lines(const fkd_params *params, const options *o, fkd_error *err)
{
    const int formats[] = {FKD_QTYPE_Q4_1, FKD_QTYPE_Q4_0};
    int n = o->gen_tokens < params->cfg.max_seq ? o->gen_tokens : params->cfg.max_seq;
    const char *tmp = getenv("TMPDIR");
    const char *dir = tmp && *tmp ? tmp : "/tmp";
    char path[1024];
    if (snprintf(path, sizeof path, "%s/fedkd-bench-quant-XXXXXX", dir) >= (int)sizeof path)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "TMPDIR is too long; set a shorter one");
    int fd = mkstemp(path);
    if (fd < 0)
        return fkd_error_set(err, FKD_E_IO, "cannot create a temporary file in %s for the peer's "
                             "GGUF; set TMPDIR to a writable folder", dir);
    close(fd);
    int rc = 0;
    for (size_t f = 0; rc == 0 && f < sizeof formats / sizeof formats[0]; f++) {
        int types[FKD_T_COUNT];
        for (int t = 0; t < FKD_T_COUNT; t++) types[t] = params->tensors[t].is_matrix ? formats[f] : FKD_QTYPE_F32;
        fkd_qmodel qm;
        rc = fkd_gguf_llama_save(path, params, formats[f], NULL, "fedkd bench quant", err);
        if (rc == 0) rc = fkd_qmodel_quantize_types(&qm, params, types, NULL, err);
        if (rc != 0) break;
        double ours = bench_qinfer_tg_rate(&qm, n, PEER_REPS, err);
        fkd_qmodel_free(&qm);
        double peer = bench_llamacpp_rate(o->peer, path, 0, n, 1, PEER_REPS);
        if (ours < 0) rc = -1;
        else
            printf("format=%s generation=llama-bench tg=%d threads=1 tokens_per_s=%.1f llamacpp_tokens_per_s=%.1f "
                   "ratio=%.2f%s\n", fkd_qtype_name(formats[f]), n, ours, peer > 0 ? peer : 0.0,
                   peer > 0 ? ours / peer : 0.0, peer > 0 ? "" : " peer=unavailable");
        fflush(stdout);
    }
    unlink(path);
    return rc;
}

static int run(const options *o)
{
    fkd_error err = {0};
    bench_text text;
    fkd_params params;
    int have_params = 0, rc = 1;
    int kernel = kernel_from_name(o->kernel_name);
    if (kernel < 0 || !fkd_qkernel_supported(kernel)) {
        fprintf(stderr, "fedkd bench quant: kernel %s is unknown or not supported by this CPU\n", o->kernel_name);
        return 2;
    }
    if (kernel == FKD_QKERNEL_AUTO) kernel = fkd_qkernel_best();
    if (bench_text_load(&text, o->data, &err) < 0) {
        fprintf(stderr, "fedkd bench quant: %s\n", err.msg);
        return 1;
    }
    double loss = 0.0, t0 = fkd_time_ms();
    if (o->model) {
        if (fkd_checkpoint_load(&params, o->model, &err) < 0) goto fail;
        have_params = 1;
    } else {
        fkd_model_config cfg = fkd_config_student_s();
        if (fkd_params_init(&params, &cfg, &err) < 0) goto fail;
        have_params = 1;
        fkd_params_randomize(&params, 1);
        fkd_train_set_threads(o->train_threads);
        int seq = o->seq < cfg.max_seq ? o->seq : cfg.max_seq;
        if (bench_train_steps(&params, &text.train, o->steps, o->batch, seq, o->lr, 0, NULL, &loss, &err) < 0)
            goto fail;
        if (o->save && fkd_checkpoint_save(o->save, &params, &err) < 0) goto fail;
    }
    fkd_train_set_threads(1); /* every figure below is at one thread */
    eval_setup e = {&text.heldout, text.heldout.n < o->eval_tokens ? text.heldout.n : o->eval_tokens,
                    params.cfg.max_seq};
    const int32_t *prompt = text.heldout.tokens;
    printf("model=%s params=%zu train_steps=%d train_loss=%.3f train_s=%.1f eval_tokens=%lld kernel=%s threads=1\n",
           o->model ? o->model : "student-s(trained here)", params.n_params, o->model ? 0 : o->steps, loss,
           (fkd_time_ms() - t0) / 1e3, (long long)e.n_eval, fkd_qkernel_name(kernel));
    fflush(stdout);

    fkd_infer fs;
    double ppl_fp32;
    speed tps_fp32;
    if (fkd_infer_init(&fs, &params, &err) < 0) goto fail;
    int frc = perplexity(&ppl_fp32, &fs, fkd_infer_step_fn, fkd_infer_reset_fn, params.cfg.vocab, &e, &err);
    if (frc == 0)
        frc = gen_speed(&tps_fp32, NULL, &fs, fkd_infer_step_fn, fkd_infer_reset_fn, params.cfg.vocab,
                        params.cfg.max_seq, prompt, o->gen_tokens, &err);
    fkd_infer_free(&fs);
    if (frc < 0) goto fail;
    size_t bytes_fp32 = 0;
    uint8_t *ck;
    if (fkd_checkpoint_encode(&ck, &bytes_fp32, &params, &err) < 0) goto fail;
    free(ck);

    const int formats[] = {FKD_QTYPE_F32, FKD_QTYPE_F16, FKD_QTYPE_Q8_0, FKD_QTYPE_Q4_1, FKD_QTYPE_Q4_0};
    for (size_t f = 0; !o->prune_only && f < sizeof formats / sizeof formats[0]; f++) {
        qresult r;
        if (measure(&r, &params, formats[f], NULL, kernel, &e, prompt, o->gen_tokens, &err) < 0) goto fail;
        printf("format=%s bytes=%zu bytes_fp32=%zu ppl=%.4f ppl_fp32=%.4f ppl_change_pct=%+.2f tokens_per_s=%.0f "
               "tokens_per_s_scalar=%.0f tokens_per_s_fp32=%.0f cpu_tokens_per_s=%.0f cpu_tokens_per_s_scalar=%.0f "
               "cpu_tokens_per_s_fp32=%.0f sample=\"%s\"\n",
               fkd_qtype_name(formats[f]), r.bytes, bytes_fp32, r.ppl, ppl_fp32, 100.0 * (r.ppl / ppl_fp32 - 1.0),
               r.tokens_per_s.wall, r.tokens_per_s_scalar.wall, tps_fp32.wall, r.tokens_per_s.cpu,
               r.tokens_per_s_scalar.cpu, tps_fp32.cpu, r.sample);
        fflush(stdout);
    }
    if (o->peer && !o->prune_only && peer_lines(&params, o, &err) < 0) goto fail;
    if (prune_lines(&params, o, &text.train, kernel, &e, prompt, ppl_fp32, &err) < 0) goto fail;
    rc = 0;
fail:
    if (rc) fprintf(stderr, "fedkd bench quant: %s\n", err.msg);
    if (have_params) fkd_params_free(&params);
    bench_text_free(&text);
    return rc;
}

int cmd_bench_quant(int argc, char **argv)
{
    options o = {.model = NULL, .data = FKD_DATA_DEFAULT_DIR, .kernel_name = "auto", .save = NULL, .peer = NULL, .steps = 200,
                 .batch = 8, .seq = 128, .eval_tokens = 4096, .gen_tokens = 512, .prune_steps = 40,
                 .train_threads = 2, .lr = 3e-3f, .sparsity = 0.5f};
    fkd_opt opts[] = {
        {"model", FKD_OPT_STR, &o.model, "train checkpoint to quantize (default: train a student-S here)"},
        {"data", FKD_OPT_STR, &o.data, "directory of text (fortune files); every 10th document is held out"},
        {"steps", FKD_OPT_INT, &o.steps, "training steps when no --model"},
        {"save", FKD_OPT_STR, &o.save, "save the model trained here (for a later --model)"},
        {"batch", FKD_OPT_INT, &o.batch, "sequences per training step"},
        {"seq", FKD_OPT_INT, &o.seq, "tokens per training sequence"},
        {"lr", FKD_OPT_FLOAT, &o.lr, "learning rate (pruned fine-tuning uses a quarter)"},
        {"train-threads", FKD_OPT_INT, &o.train_threads, "threads for training (measurements use 1)"},
        {"eval-tokens", FKD_OPT_INT, &o.eval_tokens, "held-out tokens scored per format"},
        {"gen-tokens", FKD_OPT_INT, &o.gen_tokens, "decoding steps timed per format"},
        {"kernel", FKD_OPT_STR, &o.kernel_name, "auto, scalar, avx2 or avx512vnni"},
        {"sparsity", FKD_OPT_FLOAT, &o.sparsity, "share of matrix weights pruned (magnitude)"},
        {"prune-steps", FKD_OPT_INT, &o.prune_steps, "fine-tuning steps of the pruned models (mask kept)"},
        {"prune-only", FKD_OPT_FLAG, &o.prune_only, "skip the formats, run only the pruning comparison"},
        {"peer-bench", FKD_OPT_STR, &o.peer, "llama.cpp's llama-bench: int4 generation on the same GGUF beside ours"},
    };
    int rc = fkd_cli_parse(argc, argv, opts, (int)(sizeof opts / sizeof opts[0]),
                           "usage: fedkd bench quant [--model M] [options]\n"
                           "Quantizes a student to each format and prints bytes, held-out perplexity and\n"
                           "tokens/s at 1 thread, with the fp32 figures from the same run.",
                           NULL, 0, NULL);
    if (rc != 0) return rc < 0 ? 2 : 0;
    if (o.steps < 0 || o.batch < 1 || o.seq < 2 || o.eval_tokens < 2 || o.gen_tokens < 1 || o.train_threads < 1 ||
        o.prune_steps < 0 || !(o.sparsity >= 0.0f && o.sparsity < 1.0f)) {
        fprintf(stderr, "fedkd bench quant: an option is out of range (see --help)\n");
        return 2;
    }
    return run(&o);
}
