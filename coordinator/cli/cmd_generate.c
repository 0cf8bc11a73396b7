/* cmd_generate.c — `fedkd generate --model M --prompt "..."`: samples a
 * continuation with the KV-cache inference path and the sampler
 * (temperature, top-k, top-p, seed), stopping at the document separator.
 * A GGUF model runs on its file's blocks (fkd_qinfer, no fp32 copy of the
 * weights: a fifth of the memory for SmolLM2's Q4_1 file), unless --fp32. */
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "fkd_compress.h"

enum { GENERATE_CONTEXT = 2048 }; /* tokens of context for a GGUF model */

/* The model behind fkd_generate_steps: the file's blocks or fp32 weights. */
typedef struct {
    fkd_params params;
    fkd_infer st;
    fkd_qmodel qm;
    fkd_qinfer qs;
    fkd_step_model m;
    int vocab;
} gen_model;

static int gen_model_open(gen_model *g, fkd_tokenizer *tok, const char *path, int fp32,
                          fkd_error *err)
{
    memset(g, 0, sizeof *g);
    if (fkd_gguf_is_gguf(path) && !fp32) {
        if (fkd_gguf_load_qmodel(&g->qm, tok, path, GENERATE_CONTEXT, err) != 0) return -1;
        g->m = (fkd_step_model){&g->qs, fkd_qinfer_step_fn, fkd_qinfer_reset_fn, g->qm.cfg.max_seq};
        g->vocab = g->qm.cfg.vocab;
        return fkd_qinfer_init(&g->qs, &g->qm, FKD_QKERNEL_AUTO, err);
    }
    if (fkd_cli_load_model(&g->params, tok, path, GENERATE_CONTEXT, err) != 0) return -1;
    g->m = (fkd_step_model){&g->st, fkd_infer_step_fn, fkd_infer_reset_fn, g->params.cfg.max_seq};
    g->vocab = g->params.cfg.vocab;
    return fkd_infer_init(&g->st, &g->params, err);
}

static void gen_model_close(gen_model *g)
{
    fkd_qinfer_free(&g->qs);
    fkd_qmodel_free(&g->qm);
    fkd_infer_free(&g->st);
    fkd_params_free(&g->params);
}

int cmd_generate(int argc, char **argv)
{
    const char *model = NULL, *teacher = NULL, *prompt = "";
    int tokens = 200, top_k = 0, threads = 1, no_stop = 0, fp32 = 0;
    float temperature = 0.8f, top_p = 0.95f;
    int64_t seed = 1;
    const fkd_opt opts[] = {
        {"model", FKD_OPT_STR, &model, "checkpoint or GGUF file (required)"},
        {"teacher", FKD_OPT_STR, &teacher, "same as --model (a GGUF teacher reads naturally)"},
        {"prompt", FKD_OPT_STR, &prompt, "text to continue (a new document when empty)"},
        {"tokens", FKD_OPT_INT, &tokens, "tokens to sample at most"},
        {"temperature", FKD_OPT_FLOAT, &temperature, "0 = greedy"},
        {"top-k", FKD_OPT_INT, &top_k, "sample among the k likeliest (0 = off)"},
        {"top-p", FKD_OPT_FLOAT, &top_p, "nucleus mass (1 = off)"},
        {"seed", FKD_OPT_I64, &seed, "seed of the sampler"},
        {"no-stop", FKD_OPT_FLAG, &no_stop, "do not stop at the end of a document"},
        {"threads", FKD_OPT_INT, &threads, "compute threads"},
        {"fp32", FKD_OPT_FLAG, &fp32, "GGUF: run on dequantized fp32 weights, not the file's blocks"},
    };
    int rc = fkd_cli_parse(argc, argv, opts, (int)(sizeof opts / sizeof opts[0]),
                           "usage: fedkd generate --model M [--prompt TEXT] [options]", NULL, 0,
                           NULL);
    if (rc != 0) return rc > 0 ? 0 : 2;
    if (!model) model = teacher;
    if (!model) {
        fprintf(stderr, "fedkd generate: --model is required\n");
        return 2;
    }
    fkd_train_set_threads(threads);
    fkd_error err = {0};
    gen_model g;
    fkd_tokenizer tok = {0};
    if (gen_model_open(&g, &tok, model, fp32, &err) != 0) {
        fprintf(stderr, "fedkd generate: %s\n", err.msg);
        gen_model_close(&g);
        fkd_tokenizer_free(&tok);
        return 1;
    }
    size_t plen = strlen(prompt), n_prompt = 0, n_out = 0, cap = (size_t)tokens * 64 + 1;
    int32_t *ptok = malloc((plen + 1) * sizeof *ptok);
    uint8_t *out = malloc(cap);
    fkd_sampler sm = {0};
    int stopped = 0;
    double ms = 0;
    int32_t sep = fkd_data_separator(&tok);
    rc = ptok && out ? 0 : fkd_error_set(&err, FKD_E_NOMEM, "out of memory");
    /* A byte model's prompt starts a document, as in training; a pretrained
     * BPE model's prompt is its text, chat markers included. */
    int lead = tok.kind == FKD_TOKENIZER_BYTES || plen == 0;
    if (rc == 0) {
        ptok[0] = sep;
        rc = tok.kind == FKD_TOKENIZER_BPE
                 ? fkd_tokenizer_encode_special(ptok + lead, plen, &n_prompt, &tok,
                                                (const uint8_t *)prompt, plen, &err)
                 : fkd_tokenizer_encode(ptok + lead, plen, &n_prompt, &tok,
                                        (const uint8_t *)prompt, plen, &err);
    }
    if (rc == 0)
        rc = fkd_sampler_init(&sm, g.vocab, temperature, top_k, top_p, (uint64_t)seed, &err);
    if (rc == 0)
        rc = fkd_generate_steps(out, cap, &n_out, &stopped, &ms, &g.m, &sm, &tok, ptok,
                                n_prompt + (size_t)lead, tokens, no_stop ? -1 : sep, &err);
    if (rc == 0) {
        fwrite(prompt, 1, plen, stdout);
        fwrite(out, 1, n_out, stdout);
        printf("\n");
        fprintf(stderr, "[%zu bytes, %.2f ms/token%s]\n", n_out, ms,
                stopped ? ", end of document" : "");
    } else {
        fprintf(stderr, "fedkd generate: %s\n", err.msg);
    }
    fkd_sampler_free(&sm);
    free(ptok);
    free(out);
    gen_model_close(&g);
    fkd_tokenizer_free(&tok);
    return rc == 0 ? 0 : 1;
}
