/* cmd_teacher.c — `fedkd teacher train` trains the teacher on the server's
 * public corpus (never the clients' private categories) with progress,
 * periodic validation and a resumable training state; `fedkd teacher
 * softlabels` runs a teacher over the transfer set and writes the soft-label
 * shards the coordinator hands to clients. A GGUF teacher is loaded as its
 * file's blocks (no fp32 copy) and labels through compress/qsoftlabels.c;
 * the transfer set is then encoded with the file's own tokenizer. */
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "fkd_compress.h"

/* Defaults sized so the default teacher trains in under 5 minutes on 2
 * cores (docs/data.md, "Teacher"): 256 steps of 4 x 128 tokens at about
 * 65 MFLOP per token, about 4 CPU-minutes on one core; --time-limit stops
 * a slower or busier machine in time (resumably). */
#define TEACHER_STEPS 256
#define TEACHER_BATCH 4
#define TEACHER_EVAL_EVERY 64
/* Measured at 64 steps (docs/data.md): the teacher reaches validation
 * perplexity 14.1 at 1e-3, 15.6 at 2e-3 and worse at 3e-3; the smaller
 * student-s does best of these at 2e-3. */
#define TEACHER_LR 1e-3f
#define STUDENT_LR 2e-3f
#define TEACHER_TIME_LIMIT_S 285.0f
#define TEACHER_EVAL_TOKENS 4096
#define GGUF_LABEL_CONTEXT 512 /* tokens per window of a GGUF teacher */
/* The documents are chosen by bytes; a BPE token is 4-5 bytes of English,
 * so 6 a token leaves the cap, not the choice, to end the transfer set. */
#define BPE_BYTES_PER_TOKEN 6

static int model_config_by_name(fkd_model_config *cfg, const char *name)
{
    if (strcmp(name, "teacher") == 0) *cfg = fkd_config_teacher_default();
    else if (strcmp(name, "student-s") == 0) *cfg = fkd_config_student_s();
    else return -1;
    return 0;
}

static int fail(const char *what, const fkd_error *err)
{
    fprintf(stderr, "fedkd teacher %s: %s\n", what, err->msg);
    return 1;
}

static int teacher_train(int argc, char **argv)
{
    const char *data = FKD_DATA_DEFAULT_DIR, *out = "teacher.ckpt", *model = "teacher";
    const char *public_list = NULL;
    int64_t steps = TEACHER_STEPS;
    int batch = TEACHER_BATCH, seq = 0, threads = 2, eval_every = TEACHER_EVAL_EVERY, accum = 1;
    float lr = 0.0f, time_limit = TEACHER_TIME_LIMIT_S;
    int64_t seed = 1;
    int fresh = 0;
    const fkd_opt opts[] = {
        {"data", FKD_OPT_STR, &data, "corpus directory (its public categories are used)"},
        {"public", FKD_OPT_STR, &public_list, "comma list of public categories (default: docs/data.md)"},
        {"out", FKD_OPT_STR, &out, "checkpoint to write; its training state is OUT.state"},
        {"model", FKD_OPT_STR, &model, "shape: teacher | student-s"},
        {"steps", FKD_OPT_I64, &steps, "optimizer steps"},
        {"batch", FKD_OPT_INT, &batch, "windows per micro-batch"},
        {"accum", FKD_OPT_INT, &accum, "micro-batches per step"},
        {"seq", FKD_OPT_INT, &seq, "window length (0 = the model's max_seq)"},
        {"lr", FKD_OPT_FLOAT, &lr, "peak learning rate, AdamW + cosine (0 = 1e-3 teacher, 2e-3 student-s)"},
        {"eval-every", FKD_OPT_INT, &eval_every, "steps between validations"},
        {"time-limit", FKD_OPT_FLOAT, &time_limit, "seconds; stops (resumable) when exceeded, 0 = none"},
        {"seed", FKD_OPT_I64, &seed, "seed of the weights, the split and the batches"},
        {"threads", FKD_OPT_INT, &threads, "compute threads"},
        {"fresh", FKD_OPT_FLAG, &fresh, "ignore and replace an existing training state"},
    };
    int rc = fkd_cli_parse(argc, argv, opts, (int)(sizeof opts / sizeof opts[0]),
                           "usage: fedkd teacher train [options]\n"
                           "Trains the teacher on the public corpus; rerun to resume.",
                           NULL, 0, NULL);
    if (rc != 0) return rc > 0 ? 0 : 2;
    fkd_model_config mc;
    if (model_config_by_name(&mc, model) != 0) {
        fprintf(stderr, "fedkd teacher train: unknown --model %s (teacher | student-s)\n", model);
        return 2;
    }
    if (seq > 0) mc.max_seq = seq;
    if (lr <= 0) lr = strcmp(model, "teacher") == 0 ? TEACHER_LR : STUDENT_LR;
    fkd_train_set_threads(threads);

    fkd_error err = {0};
    fkd_corpus c;
    fkd_federation fed;
    if (fkd_data_load_public(&c, &fed, data, public_list, (uint64_t)seed, &err) != 0)
        return fail("train", &err);
    fkd_tokenizer tok;
    fkd_tokenizer_init_bytes(&tok);
    mc.vocab = tok.vocab;
    fkd_token_stream train = {0}, val = {0};
    fkd_params params = {0};
    fkd_model m = {0};
    /* validation on documents spread over every category, not the first few */
    const fkd_client_data *pub = &fed.clients[0];
    uint32_t *val_docs = NULL, n_val = 0;
    int ok = fkd_token_stream_from_split(&train, &c, &fed, 0, FKD_SPLIT_TRAIN, &tok, &err) == 0 &&
             fkd_docs_spread(&val_docs, &n_val, &c, pub->docs[FKD_SPLIT_VAL],
                             pub->n_docs[FKD_SPLIT_VAL], TEACHER_EVAL_TOKENS, &err) == 0 &&
             fkd_token_stream_from_docs(&val, &c, val_docs, n_val, &tok, &err) == 0 &&
             fkd_params_init(&params, &mc, &err) == 0;
    free(val_docs);
    if (ok) {
        fkd_params_randomize(&params, (uint64_t)seed);
        ok = fkd_model_init(&m, &params, batch, mc.max_seq, 0, &err) == 0;
    }
    char state[1100];
    snprintf(state, sizeof state, "%s.state", out);
    if (ok && fresh) remove(state);
    fkd_trainer_result res = {0};
    if (ok) {
        printf("teacher: %s, %zu parameters, public corpus %d categories, %u documents, "
               "%lld training tokens\n", model, fkd_config_param_count(&mc), c.n_parts, c.n_docs,
               (long long)train.n);
        fkd_trainer_config tc = fkd_trainer_defaults();
        tc.steps = steps;
        tc.accum = accum;
        tc.opt.lr = lr;
        tc.opt.warmup_steps = (int)(steps / 16);
        tc.eval_every = eval_every;
        tc.eval_max_tokens = TEACHER_EVAL_TOKENS;
        tc.ckpt_every = eval_every;
        tc.state_path = state;
        tc.seed = (uint64_t)seed;
        tc.time_limit_s = time_limit;
        tc.progress = 1;
        tc.log = stdout;
        tc.label = "teacher";
        ok = fkd_trainer_run(&res, &m, &train, NULL, &val, &tc, &err) == 0 &&
             fkd_checkpoint_save(out, &m.params, &err) == 0;
    }
    if (ok)
        printf("teacher: %s step %lld/%lld%s%s in %.1f s (%lld tokens), validation perplexity "
               "%.3f, %.4f bits/byte\n", out, (long long)res.step, (long long)steps,
               res.resumed ? ", resumed" : "", res.stopped_early ? ", stopped by --time-limit"
               " (rerun to continue)" : "", res.seconds, (long long)res.tokens, res.val_ppl,
               res.val_bpb);
    fkd_model_free(&m);
    fkd_params_free(&params);
    fkd_token_stream_free(&train);
    fkd_token_stream_free(&val);
    fkd_federation_free(&fed);
    fkd_corpus_free(&c);
    return ok ? 0 : fail("train", &err);
}

static int parse_quant(const char *name)
{
    if (strcmp(name, "q8") == 0) return FKD_SOFT_Q8_SQRT;
    if (strcmp(name, "q16") == 0) return FKD_SOFT_Q16;
    return -1;
}

static int write_shards(const char *dir, const fkd_softlabel_shard *shards, int n,
                        fkd_error *err)
{
    if (fkd_mkdir_p(dir, err) != 0) return -1;
    for (int i = 0; i < n; i++) {
        char path[1100];
        snprintf(path, sizeof path, "%s/shard-%03d.fkds", dir, i);
        if (fkd_softlabels_save(path, &shards[i], err) != 0) return -1;
    }
    return 0;
}

static int teacher_softlabels(int argc, char **argv)
{
    const char *data = FKD_DATA_DEFAULT_DIR, *teacher = "teacher.ckpt", *out = "softlabels";
    const char *public_list = NULL, *quant = "q8";
    fkd_teacher_config tc = fkd_teacher_defaults();
    int64_t seed = 1, max_tokens = 32768;
    int threads = 2, context = GGUF_LABEL_CONTEXT;
    const fkd_opt opts[] = {
        {"teacher", FKD_OPT_STR, &teacher, "teacher checkpoint or GGUF file"},
        {"data", FKD_OPT_STR, &data, "corpus directory (the transfer set is its public train split)"},
        {"public", FKD_OPT_STR, &public_list, "comma list of public categories"},
        {"out", FKD_OPT_STR, &out, "directory for shard-NNN.fkds"},
        {"k", FKD_OPT_INT, &tc.k, "token ids kept per position"},
        {"temperature", FKD_OPT_FLOAT, &tc.temperature, "softmax temperature of the labels"},
        {"quant", FKD_OPT_STR, &quant, "probability code: q8 (sqrt, 1 byte) | q16 (2 bytes)"},
        {"shards", FKD_OPT_INT, &tc.n_shards, "shards (one per round's client group)"},
        {"max-tokens", FKD_OPT_I64, &max_tokens, "transfer-set tokens labelled (0 = all)"},
        {"seed", FKD_OPT_I64, &seed, "seed of the public split (as in teacher train)"},
        {"threads", FKD_OPT_INT, &threads, "compute threads"},
        {"context", FKD_OPT_INT, &context, "GGUF teacher: tokens per window (caps the file's context)"},
    };
    int rc = fkd_cli_parse(argc, argv, opts, (int)(sizeof opts / sizeof opts[0]),
                           "usage: fedkd teacher softlabels --teacher CKPT|FILE.gguf [options]\n"
                           "Writes the teacher's top-k soft labels on the transfer set.",
                           NULL, 0, NULL);
    if (rc != 0) return rc > 0 ? 0 : 2;
    tc.quant = parse_quant(quant);
    if (tc.quant < 0) {
        fprintf(stderr, "fedkd teacher softlabels: --quant is q8 or q16, not %s\n", quant);
        return 2;
    }
    fkd_train_set_threads(threads);
    fkd_error err = {0};
    fkd_params params = {0};
    fkd_qmodel qm = {0};
    fkd_tokenizer tok;
    fkd_corpus c;
    fkd_federation fed;
    int gguf = fkd_gguf_is_gguf(teacher);
    fkd_tokenizer_init_bytes(&tok);
    if ((gguf ? fkd_gguf_load_qmodel(&qm, &tok, teacher, context, &err)
              : fkd_checkpoint_load(&params, teacher, &err)) != 0)
        return fail("softlabels", &err);
    if (fkd_data_load_public(&c, &fed, data, public_list, (uint64_t)seed, &err) != 0) {
        fkd_params_free(&params);
        fkd_qmodel_free(&qm);
        fkd_tokenizer_free(&tok);
        return fail("softlabels", &err);
    }
    fkd_token_stream transfer = {0};
    fkd_softlabel_shard *shards = calloc((size_t)(tc.n_shards > 0 ? tc.n_shards : 1),
                                         sizeof *shards);
    fkd_softlabel_stats st = {0};
    /* a capped transfer set still samples every public category */
    uint32_t *docs = NULL, n_docs = 0;
    const fkd_client_data *pub = &fed.clients[0];
    int ok = shards &&
             fkd_docs_spread(&docs, &n_docs, &c, pub->docs[FKD_SPLIT_TRAIN],
                             pub->n_docs[FKD_SPLIT_TRAIN],
                             (uint64_t)max_tokens * (gguf ? BPE_BYTES_PER_TOKEN : 1), &err) == 0 &&
             fkd_token_stream_from_docs(&transfer, &c, docs, n_docs, &tok, &err) == 0;
    free(docs);
    if (ok && max_tokens > 0 && transfer.n > max_tokens) transfer.n = max_tokens;
    ok = ok && (gguf ? fkd_qsoftlabels_make(shards, &st, &qm, &transfer, &tc, &err)
                     : fkd_teacher_softlabels(shards, &st, &params, &transfer, &tc, &err)) == 0 &&
         write_shards(out, shards, tc.n_shards, &err) == 0;
    if (ok) {
        printf("softlabels: %lld positions in %d shards under %s/ (k=%d, T=%g, %s) in %.1f s\n",
               (long long)st.positions, tc.n_shards, out, tc.k, (double)tc.temperature, quant,
               st.seconds);
        printf("size: %llu bytes, %.2f bytes/position; dense fp32 %llu bytes (%.1fx larger)\n",
               (unsigned long long)st.encoded_bytes,
               (double)st.encoded_bytes / (double)(st.positions ? st.positions : 1),
               (unsigned long long)st.dense_fp32_bytes,
               (double)st.dense_fp32_bytes / (double)(st.encoded_bytes ? st.encoded_bytes : 1));
        printf("KL(teacher || labels): truncation to top-%d %.5f nats/position, with "
               "quantization %.5f; top-1 mass %.3f, top-%d mass %.3f\n", tc.k, st.kl_truncation,
               st.kl_total, st.top1_mass, tc.k, st.kept_mass);
    }
    for (int i = 0; shards && i < tc.n_shards; i++) fkd_softlabels_free(&shards[i]);
    free(shards);
    fkd_token_stream_free(&transfer);
    fkd_federation_free(&fed);
    fkd_corpus_free(&c);
    fkd_params_free(&params);
    fkd_qmodel_free(&qm);
    fkd_tokenizer_free(&tok);
    return ok ? 0 : fail("softlabels", &err);
}

int cmd_teacher(int argc, char **argv)
{
    static const fkd_command subs[] = {
        {"train", teacher_train, "train the teacher on the public corpus (resumable)"},
        {"softlabels", teacher_softlabels, "write the teacher's soft labels on the transfer set"},
    };
    return fkd_dispatch(subs, (int)(sizeof subs / sizeof subs[0]), "fedkd teacher", argc - 1,
                        argv + 1);
}
