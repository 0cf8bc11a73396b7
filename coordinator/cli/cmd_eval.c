/* cmd_eval.c — `fedkd eval --model M --data D`: the project's one
 * evaluation (fkd_eval_report_run) of a checkpoint on a split of a corpus:
 * perplexity, bits per byte, next-token accuracy, hallucination rate and
 * the resource figures, as a table or as JSON. */
#include <string.h>

#include "commands.h"
#include "fkd_train.h"

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

int cmd_eval(int argc, char **argv)
{
    const char *model = NULL, *data = FKD_DATA_DEFAULT_DIR, *side_name = "private";
    const char *split_name = "test", *partition = "natural", *words = FKD_DATA_WORDS_PATH;
    fkd_eval_config ec = fkd_eval_defaults();
    fkd_partition_config pc = fkd_partition_defaults();
    int json = 0, threads = 2, clients = pc.n_clients;
    int64_t seed = (int64_t)pc.seed, eval_seed = (int64_t)ec.seed;
    float alpha = pc.alpha;
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
    };
    int rc = fkd_cli_parse(argc, argv, opts, (int)(sizeof opts / sizeof opts[0]),
                           "usage: fedkd eval --model M [--data D] [--json]\n"
                           "Evaluates a model on held-out text (docs/data.md, \"Evaluation\").",
                           NULL, 0, NULL);
    if (rc != 0) return rc > 0 ? 0 : 2;
    int side = parse_side(side_name), split = parse_split(split_name);
    pc.kind = fkd_partition_parse_kind(partition);
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
    fkd_params params = {0};
    fkd_eval_set es;
    fkd_tokenizer tok;
    if (fkd_cli_load_model(&params, &tok, model, EVAL_GGUF_CONTEXT, &err) != 0) {
        fprintf(stderr, "fedkd eval: %s\n", err.msg);
        return 1;
    }
    if (fkd_eval_set_load(&es, data, side, split, &pc, words, &err) != 0) {
        fprintf(stderr, "fedkd eval: %s\n", err.msg);
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
