/* cmd_eval.c — `fedkd eval --model M --data D`: the project's one
 * evaluation (fkd_eval_report_run) of a checkpoint on a split of a corpus:
 * perplexity, bits per byte, next-token accuracy, hallucination rate and
 * the resource figures, as a table or as JSON.
 *
 * `--protocol llama-perplexity` instead scores one text file exactly as
 * llama.cpp's llama-perplexity does (fkd_eval_tokens_llama), so the two
 * tools can be checked against each other on the same file, over fp32
 * weights or (`--blocks`) over the file's quantized blocks with 8-bit
 * activations, the arithmetic llama.cpp uses; `--save-text` writes the
 * documents of a split to such a file. */
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "fkd_compress.h"

enum { EVAL_GGUF_CONTEXT = 512 }; /* tokens per window for a GGUF model */

static int parse_side(const char *s)
{
    if (strcmp(s, "private") == 0) return FKD_SIDE_PRIVATE;
    if (strcmp(s, "public") == 0) return FKD_SIDE_PUBLIC;
    return -1;
}

static int parse_split(const char *s)
{
    if (strcmp(s, "train") == 0) return FKD_SPLIT_TRAIN;
    if (strcmp(s, "val") == 0) return FKD_SPLIT_VAL;
    if (strcmp(s, "test") == 0) return FKD_SPLIT_TEST;
    return -1;
}

/* The documents of the split, separated by blank lines, atomically. */
static int save_text(const char *path, const fkd_eval_set *es, fkd_error *err)
{
    fkd_atomic_file af;
    if (fkd_atomic_open(&af, path, err)) return -1;
    for (uint32_t i = 0; i < es->n_docs; i++) {
        const fkd_doc *d = &es->corpus.docs[es->docs[i]];
        if (fkd_atomic_write(&af, es->corpus.text + d->offset, d->bytes, err) ||
            fkd_atomic_write(&af, "\n\n", i + 1 < es->n_docs ? 2 : 1, err)) {
            fkd_atomic_abort(&af);
            return -1;
        }
    }
    return fkd_atomic_commit(&af, err);
}

enum { EVAL_TEXT_MAX_BYTES = 256 << 20 };

/* llama-perplexity's figure for one text file, tokenized whole: over fp32
 * weights (params), or over the file's blocks (qs) as llama.cpp computes. */
static int eval_llama_protocol(const fkd_params *params, fkd_qinfer *qs,
                               const fkd_tokenizer *tok, const char *path, int n_ctx,
                               int add_bos, int json, fkd_error *err)
{
    uint8_t *text = NULL;
    size_t bytes = 0;
    if (fkd_file_read_all(&text, &bytes, path, EVAL_TEXT_MAX_BYTES, err)) return -1;
    int32_t *tokens = malloc((bytes + 1) * sizeof *tokens);
    size_t n = 0;
    int rc = tokens ? fkd_tokenizer_encode(tokens, bytes + 1, &n, tok, text, bytes, err)
                    : fkd_error_set(err, FKD_E_NOMEM, "out of memory for %zu tokens", bytes);
    fkd_eval_result res;
    int32_t bos = add_bos ? tok->bos_id : -1;
    if (rc == 0 && add_bos && bos < 0)
        rc = fkd_error_set(err, FKD_E_INVALID_ARG, "--add-bos: the tokenizer has no BOS token");
    if (rc == 0)
        rc = qs ? fkd_qinfer_eval_llama(&res, qs, tokens, (int64_t)n, (int64_t)bytes, n_ctx, bos,
                                        err)
                : fkd_eval_tokens_llama(&res, params, tokens, (int64_t)n, (int64_t)bytes, n_ctx,
                                        bos, err);
    const char *weights = qs ? "blocks" : "fp32";
    if (rc == 0 && json)
        printf("{\"protocol\":\"llama-perplexity\",\"weights\":\"%s\",\"ctx\":%d,"
               "\"text_tokens\":%zu,\"scored_tokens\":%lld,\"perplexity\":%.6f,"
               "\"mean_loss\":%.6f,\"accuracy\":%.6f}\n", weights, n_ctx, n,
               (long long)res.tokens, res.perplexity, res.mean_loss, res.accuracy);
    else if (rc == 0)
        printf("%s, llama-perplexity protocol (ctx %d, %s weights): %zu tokens, %lld scored\n"
               "perplexity  %.4f\nmean loss   %.6f nats/token\naccuracy    %.4f\n", path,
               n_ctx, weights, n, (long long)res.tokens, res.perplexity, res.mean_loss,
               res.accuracy);
    free(tokens);
    free(text);
    return rc;
}

/* --blocks: the GGUF file's blocks as they are, run by fkd_qinfer. */
static int eval_llama_blocks(const char *model, const char *data, int n_ctx, int add_bos,
                             int json, fkd_error *err)
{
    fkd_gguf g;
    fkd_qmodel qm = {0};
    fkd_qinfer qs = {0};
    fkd_tokenizer tok = {0};
    if (fkd_gguf_open(&g, model, err) != 0) return -1;
    int rc = fkd_gguf_llama_load_qmodel(&qm, &g, n_ctx, err);
    if (rc == 0) rc = fkd_gguf_tokenizer(&tok, &g, err);
    fkd_gguf_close(&g);
    if (rc == 0) rc = fkd_qinfer_init(&qs, &qm, FKD_QKERNEL_AUTO, err);
    if (rc == 0) rc = eval_llama_protocol(NULL, &qs, &tok, data, n_ctx, add_bos, json, err);
    fkd_qinfer_free(&qs);
    fkd_tokenizer_free(&tok);
    fkd_qmodel_free(&qm);
    return rc;
}

int cmd_eval(int argc, char **argv)
{
    const char *model = NULL, *data = FKD_DATA_DEFAULT_DIR, *side_name = "private";
    const char *split_name = "test", *partition = "natural", *words = FKD_DATA_WORDS_PATH;
    fkd_eval_config ec = fkd_eval_defaults();
    fkd_partition_config pc = fkd_partition_defaults();
    int json = 0, threads = 2, clients = pc.n_clients;
    int64_t seed = (int64_t)pc.seed, eval_seed = (int64_t)ec.seed;
    float alpha = pc.alpha;
    const char *protocol = "fedkd", *save_path = NULL;
    int ctx = EVAL_GGUF_CONTEXT, add_bos = 0, blocks = 0;
    const fkd_opt opts[] = {
        {"model", FKD_OPT_STR, &model, "checkpoint to evaluate (required)"},
        {"data", FKD_OPT_STR, &data, "corpus directory, or one text file evaluated whole"},
        {"side", FKD_OPT_STR, &side_name, "private (the clients' categories) | public"},
        {"split", FKD_OPT_STR, &split_name, "train | val | test"},
        {"partition", FKD_OPT_STR, &partition, "private side: natural | iid | dirichlet"},
        {"clients", FKD_OPT_INT, &clients, "iid / dirichlet: number of clients"},
        {"alpha", FKD_OPT_FLOAT, &alpha, "dirichlet: concentration"},
        {"seed", FKD_OPT_I64, &seed, "seed of the partition and splits"},
        {"max-tokens", FKD_OPT_I64, &ec.max_tokens, "tokens evaluated for the loss (0 = all)"},
        {"prompts", FKD_OPT_INT, &ec.n_prompts, "held-out prompts for the hallucination rate (0 = skip)"},
        {"gen-tokens", FKD_OPT_INT, &ec.gen_tokens, "tokens sampled per prompt"},
        {"temperature", FKD_OPT_FLOAT, &ec.temperature, "sampling temperature"},
        {"eval-seed", FKD_OPT_I64, &eval_seed, "seed of the sampling"},
        {"words", FKD_OPT_STR, &words, "system word list (Debian wamerican)"},
        {"threads", FKD_OPT_INT, &threads, "compute threads"},
        {"json", FKD_OPT_FLAG, &json, "print one JSON object instead of a table"},
        {"protocol", FKD_OPT_STR, &protocol, "fedkd | llama-perplexity (--data is one text "
         "file, scored as llama.cpp's llama-perplexity -c CTX does)"},
        {"ctx", FKD_OPT_INT, &ctx, "llama-perplexity: tokens per chunk (its -c)"},
        {"add-bos", FKD_OPT_FLAG, &add_bos, "llama-perplexity: start each chunk with BOS, as "
         "llama.cpp does when the model's tokenizer.ggml.add_bos_token is true"},
        {"blocks", FKD_OPT_FLAG, &blocks, "llama-perplexity: run a GGUF file's quantized "
         "blocks with 8-bit activations (fkd_qinfer, what llama.cpp computes) instead of "
         "fp32 weights"},
        {"save-text", FKD_OPT_STR, &save_path, "also write the split's documents to this "
         "file (blank-line separated) for other tools"},
    };
    int rc = fkd_cli_parse(argc, argv, opts, (int)(sizeof opts / sizeof opts[0]),
                           "usage: fedkd eval --model M [--data D] [--json]\n"
                           "Evaluates a model on held-out text (docs/data.md, \"Evaluation\").",
                           NULL, 0, NULL);
    if (rc != 0) return rc > 0 ? 0 : 2;
    int side = parse_side(side_name), split = parse_split(split_name);
    pc.kind = fkd_partition_parse_kind(partition);
    int llama = strcmp(protocol, "llama-perplexity") == 0;
    if (!llama && strcmp(protocol, "fedkd") != 0) {
        fprintf(stderr, "fedkd eval: --protocol is fedkd or llama-perplexity\n");
        return 2;
    }
    if (!model || side < 0 || split < 0 || pc.kind < 0) {
        fprintf(stderr, "fedkd eval: need --model, and valid --side, --split, --partition "
                        "(see --help)\n");
        return 2;
    }
    pc.n_clients = clients;
    pc.alpha = alpha;
    pc.seed = (uint64_t)seed;
    ec.seed = (uint64_t)eval_seed;
    fkd_train_set_threads(threads);

    fkd_error err = {0};
    if (llama && blocks) {
        rc = eval_llama_blocks(model, data, ctx, add_bos, json, &err);
        if (rc != 0) fprintf(stderr, "fedkd eval: %s\n", err.msg);
        return rc == 0 ? 0 : 1;
    }
    fkd_params params = {0};
    fkd_eval_set es;
    fkd_tokenizer tok;
    if (fkd_cli_load_model(&params, &tok, model, llama ? ctx : EVAL_GGUF_CONTEXT, &err) != 0) {
        fprintf(stderr, "fedkd eval: %s\n", err.msg);
        return 1;
    }
    if (llama) {
        rc = eval_llama_protocol(&params, NULL, &tok, data, ctx, add_bos, json, &err);
        if (rc != 0) fprintf(stderr, "fedkd eval: %s\n", err.msg);
        fkd_params_free(&params);
        fkd_tokenizer_free(&tok);
        return rc == 0 ? 0 : 1;
    }
    if (fkd_eval_set_load(&es, data, side, split, &pc, words, &err) != 0) {
        fprintf(stderr, "fedkd eval: %s\n", err.msg);
        fkd_params_free(&params);
        fkd_tokenizer_free(&tok);
        return 1;
    }
    if (save_path && save_text(save_path, &es, &err) != 0) {
        fprintf(stderr, "fedkd eval: %s\n", err.msg);
        fkd_eval_set_free(&es);
        fkd_params_free(&params);
        fkd_tokenizer_free(&tok);
        return 1;
    }
    fkd_eval_report r;
    rc = fkd_eval_report_run(&r, &params, &tok, &es.corpus, es.docs, es.n_docs, es.known, &ec,
                             &err);
    if (rc == 0) {
        char title[1200];
        snprintf(title, sizeof title, "%s on %s (%s %s, %u documents)", model, data, side_name,
                 split_name, es.n_docs);
        fkd_eval_report_print(stdout, &r, title, json);
    } else {
        fprintf(stderr, "fedkd eval: %s\n", err.msg);
    }
    fkd_eval_set_free(&es);
    fkd_params_free(&params);
    fkd_tokenizer_free(&tok);
    return rc == 0 ? 0 : 1;
}
