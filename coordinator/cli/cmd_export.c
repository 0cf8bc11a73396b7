/* cmd_export.c — `fedkd export --model M --type q4_1 --out student.gguf`:
 * writes a student as the GGUF file users run (fkd_gguf_llama_export:
 * the quantized student's format policy, so a q4_1 file has Q4_1 matrices,
 * a Q8_0 embedding and head and f32 norms, the blocks fkd_qinfer runs, and
 * llama.cpp reads it as it is). The model is a fedkd checkpoint (the
 * simulation's student-fp32.ckpt, `fedkd prune --checkpoint`) or a GGUF
 * file; its tokenizer comes from a GGUF file with the same vocabulary (the
 * pruned student's, or the teacher's when the vocabulary was not trimmed),
 * the model's own when it is GGUF, or is the byte vocabulary of a 256-token
 * model.
 *
 * By default an int4 file is compress's deploy recipe
 * (fkd_qmodel_quantize_deploy, docs/benchmarks.md "int4 quality"): wo and
 * w2 at Q8_0, the int4 matrices by GPTQ calibrated on --calib-tokens of the
 * public corpus's training split. The options change it piece by piece,
 * for comparison: --rule mse takes least-squares codes weighted by the
 * inputs' mean squares, --rule rtn ggml's round-to-nearest codes,
 * --tensor-types other formats for chosen matrices (w2=q4_1,wo=q4_1 gives
 * the plain Q4_1 file), --calib-tokens 0 no calibration. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "commands.h"
#include "fkd_compress.h"

/* What the quantization took: its time and the calibration tokens it read. */
typedef struct {
    double quant_ms;
    int calib_tokens;
} export_stats;

typedef struct {
    const char *model, *tokenizer, *out, *type_name, *name, *rule_name, *tensor_types, *data;
    int context, calib_tokens, calib_seq;
} export_opts;

static int load_weights(fkd_params *p, const char *path, fkd_error *err)
{
    if (!fkd_gguf_is_gguf(path)) return fkd_checkpoint_load(p, path, err);
    fkd_gguf g;
    if (fkd_gguf_open(&g, path, err) != 0) return -1;
    int rc = fkd_gguf_llama_load(p, &g, 0, err);
    fkd_gguf_close(&g);
    return rc;
}

/* --context: llama has no positional weights, so the context the file
 * declares is a setting (the KV cache a reader sizes), not a shape. */
static int set_context(fkd_params *p, int context, fkd_error *err)
{
    if (context <= 0) return 0;
    fkd_model_config cfg = p->cfg;
    cfg.max_seq = context;
    if (fkd_config_validate(&cfg, err) != 0) return -1;
    p->cfg = cfg;
    return 0;
}

/* The public training split, encoded with the tables' tokenizer: the
 * calibration text of --rule gptq and mse. */
static int public_text(fkd_token_stream *ts, const export_opts *o, const fkd_bpe_tables *tables,
                       fkd_error *err)
{
    fkd_tokenizer tok;
    fkd_corpus c;
    fkd_federation fed;
    memset(ts, 0, sizeof *ts);
    if (!tables)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "--calib-tokens needs the model's BPE "
                             "tokenizer (a GGUF model or --tokenizer)");
    if (fkd_bpe_tables_tokenizer(&tok, tables, err) != 0) return -1;
    int rc = fkd_data_load_public(&c, &fed, o->data, NULL, 1, err);
    if (rc == 0) {
        rc = fkd_token_stream_from_split(ts, &c, &fed, 0, FKD_SPLIT_TRAIN, &tok, err);
        fkd_federation_free(&fed);
        fkd_corpus_free(&c);
    }
    fkd_tokenizer_free(&tok);
    return rc;
}

static int has_int4(const int *types)
{
    for (int t = 0; t < FKD_T_COUNT; t++)
        if (fkd_qtype_is_int4(types[t])) return 1;
    return 0;
}

/* The int4 matrices of qm by the rule: gptq and mse read calibration text
 * (a byte model without tokenizer has none: round-to-nearest). */
static int quantize(fkd_qmodel *qm, const export_opts *o, const fkd_params *p, const int *types,
                    const fkd_bpe_tables *tables, export_stats *stats, fkd_error *err)
{
    int rtn = strcmp(o->rule_name, "rtn") == 0, gptq = strcmp(o->rule_name, "gptq") == 0;
    fkd_token_stream ts = {0};
    int use_text = o->calib_tokens > 0 && tables && !rtn && has_int4(types);
    if (use_text && public_text(&ts, o, tables, err) != 0) return -1;
    int seq = o->calib_seq < p->cfg.max_seq ? o->calib_seq : p->cfg.max_seq;
    fkd_qimatrix im = {0};
    double t0 = fkd_time_ms();
    int rc = 0;
    if (use_text && gptq)
        rc = fkd_qmodel_quantize_gptq(qm, p, types, &ts, o->calib_tokens, seq, err);
    else {
        if (use_text) rc = fkd_qimatrix_compute(&im, p, &ts, o->calib_tokens, seq, err);
        if (rc == 0)
            rc = fkd_qmodel_quantize_with(qm, p, types, NULL, rtn ? FKD_QRULE_RTN : FKD_QRULE_MSE,
                                          use_text ? &im : NULL, err);
    }
    stats->quant_ms = fkd_time_ms() - t0;
    stats->calib_tokens = use_text ? o->calib_tokens : 0;
    fkd_qimatrix_free(&im);
    fkd_token_stream_free(&ts);
    return rc;
}

/* Quantizes p (the deploy recipe's formats, --tensor-types over them,
 * --rule on --calib-tokens) and writes the file; stats: what the
 * quantization took (calibration included). */
static int write_qmodel(const export_opts *o, const fkd_params *p, int scheme,
                        const fkd_bpe_tables *tables, const fkd_gguf *g, export_stats *stats,
                        fkd_error *err)
{
    int types[FKD_T_COUNT];
    fkd_qmodel_deploy_types(types, &p->cfg, scheme);
    if (o->tensor_types && fkd_qmodel_parse_types(types, &p->cfg, o->tensor_types, err) != 0)
        return -1;
    fkd_qmodel qm;
    if (quantize(&qm, o, p, types, tables, stats, err) != 0) return -1;
    int rc = fkd_gguf_llama_save_qmodel(o->out, &qm, tables, g, o->name, err);
    fkd_qmodel_free(&qm);
    return rc;
}

/* The tokenizer's GGUF file is opened into g (the tables' strings and the
 * copied keys point into it); NULL tokenizer: a byte model needs none. */
static int write_file(const export_opts *o, const fkd_params *p, int scheme, export_stats *stats,
                      fkd_error *err)
{
    const char *tok_path = o->tokenizer ? o->tokenizer
                         : fkd_gguf_is_gguf(o->model) ? o->model : NULL;
    if (!tok_path) return write_qmodel(o, p, scheme, NULL, NULL, stats, err);
    fkd_gguf g;
    fkd_bpe_tables tables;
    if (fkd_gguf_open(&g, tok_path, err) != 0) return -1;
    int rc = fkd_bpe_tables_from_gguf(&tables, &g, err);
    if (rc == 0) {
        rc = write_qmodel(o, p, scheme, &tables, &g, stats, err);
        fkd_bpe_tables_free(&tables);
    }
    fkd_gguf_close(&g);
    return rc;
}

static int export_model(const export_opts *o, int scheme)
{
    fkd_error err = {0};
    fkd_params p = {0};
    export_stats stats = {0};
    int rc = load_weights(&p, o->model, &err);
    if (rc == 0) rc = set_context(&p, o->context, &err);
    if (rc == 0) rc = write_file(o, &p, scheme, &stats, &err);
    if (rc == 0) {
        struct stat st;
        long long bytes = stat(o->out, &st) == 0 ? (long long)st.st_size : -1;
        printf("export=%s type=%s rule=%s tensor_types=%s calib_tokens=%d bytes=%lld "
               "quant_seconds=%.2f params=%zu layers=%d dim=%d vocab=%d context=%d\n",
               o->out, fkd_qtype_name(scheme), o->rule_name,
               o->tensor_types ? o->tensor_types : "-",
               stats.calib_tokens, bytes, stats.quant_ms / 1000.0, p.n_params, p.cfg.n_layers, p.cfg.dim, p.cfg.vocab, p.cfg.max_seq);
    } else {
        fprintf(stderr, "fedkd export: %s\n", err.msg);
    }
    fkd_params_free(&p);
    return rc == 0 ? 0 : 1;
}

int cmd_export(int argc, char **argv)
{
    export_opts o = {NULL, NULL, "student.gguf", "q4_1", "fedkd student", "gptq", NULL,
                     "/usr/share/games/fortunes", 0, FKD_QIMATRIX_DEFAULT_TOKENS,
                     FKD_QIMATRIX_DEFAULT_SEQ};
    const fkd_opt opts[] = {
        {"model", FKD_OPT_STR, &o.model, "the student: fedkd checkpoint or GGUF file (required)"},
        {"tokenizer", FKD_OPT_STR, &o.tokenizer, "GGUF file whose tokenizer the model uses (default: the model's own; none for a byte model)"},
        {"type", FKD_OPT_STR, &o.type_name, "f32 | f16 | q8_0 | q4_0 | q4_1 (embedding and head never below q8_0, norms f32)"},
        {"out", FKD_OPT_STR, &o.out, "the GGUF file to write (atomically)"},
        {"name", FKD_OPT_STR, &o.name, "general.name of the file"},
        {"context", FKD_OPT_INT, &o.context, "context length the file declares (0 = the model's)"},
        {"rule", FKD_OPT_STR, &o.rule_name, "int4 codes: gptq (columns in order, each one's error spread over the rest by the calibration inputs' inverse Hessian) | mse (least-squares scales, errors weighted by w^2 and the inputs' mean squares) | rtn (ggml's round-to-nearest)"},
        {"tensor-types", FKD_OPT_STR, &o.tensor_types, "matrices in another format than the recipe's (an int4 --type keeps wv, wo and w2 at q8_0): TENSOR=TYPE,... (wq wk wv wo w1 w3 w2 tok_emb head; w2=q4_1,wo=q4_1: all int4)"},
        {"calib-tokens", FKD_OPT_INT, &o.calib_tokens, "with --rule gptq or mse: public tokens of the calibration pass (0 = none: round-to-nearest; a byte model without tokenizer has none)"},
        {"calib-seq", FKD_OPT_INT, &o.calib_seq, "tokens per window of the calibration pass"},
        {"data", FKD_OPT_STR, &o.data, "corpus directory of the calibration pass (its public training split)"},
    };
    int rc = fkd_cli_parse(argc, argv, opts, (int)(sizeof opts / sizeof opts[0]),
                           "usage: fedkd export --model M [--tokenizer FILE.gguf] [--type q4_1] "
                           "[--out student.gguf]\n"
                           "Writes a student as a llama GGUF file in a quantized format, the\n"
                           "file fedkd and llama.cpp run; prints one key=value line.",
                           NULL, 0, NULL);
    if (rc != 0) return rc > 0 ? 0 : 2;
    int scheme = fkd_qtype_from_name(o.type_name);
    int rule_ok = strcmp(o.rule_name, "gptq") == 0 || strcmp(o.rule_name, "mse") == 0 ||
                  strcmp(o.rule_name, "rtn") == 0;
    if (!o.model || scheme < 0 || o.context < 0 || !rule_ok || o.calib_tokens < 0 ||
        o.calib_seq < 1) {
        fprintf(stderr, "fedkd export: %s\n", !o.model ? "--model is required"
                : scheme < 0 ? "--type takes f32, f16, q8_0, q4_0 or q4_1"
                : o.context < 0 ? "--context must not be negative"
                : !rule_ok ? "--rule takes gptq, mse or rtn"
                : "--calib-tokens must not be negative and --calib-seq must be positive");
        return 2;
    }
    return export_model(&o, scheme);
}
