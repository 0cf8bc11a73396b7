/* cmd_export.c — `fedkd export --model M --type q4_1 --out student.gguf`:
 * writes a student as the GGUF file users run (fkd_gguf_llama_export:
 * the quantized student's format policy, so a q4_1 file has Q4_1 matrices,
 * a Q8_0 embedding and head and f32 norms, the blocks fkd_qinfer runs, and
 * llama.cpp reads it as it is). The model is a fedkd checkpoint (the
 * simulation's student-fp32.ckpt, `fedkd prune --checkpoint`) or a GGUF
 * file; its tokenizer comes from a GGUF file with the same vocabulary (the
 * pruned student's, or the teacher's when the vocabulary was not trimmed),
 * the model's own when it is GGUF, or is the byte vocabulary of a 256-token
 * model. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "commands.h"
#include "fkd_compress.h"

typedef struct {
    const char *model, *tokenizer, *out, *type_name, *name;
    int context;
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

/* The tokenizer's GGUF file is opened into g (the tables' strings and the
 * copied keys point into it); NULL tokenizer: a byte model needs none. */
static int write_file(const export_opts *o, const fkd_params *p, int scheme, fkd_error *err)
{
    const char *tok_path = o->tokenizer ? o->tokenizer
                         : fkd_gguf_is_gguf(o->model) ? o->model : NULL;
    if (!tok_path) return fkd_gguf_llama_export(o->out, p, scheme, NULL, NULL, o->name, err);
    fkd_gguf g;
    fkd_bpe_tables tables;
    if (fkd_gguf_open(&g, tok_path, err) != 0) return -1;
    int rc = fkd_bpe_tables_from_gguf(&tables, &g, err);
    if (rc == 0) {
        rc = fkd_gguf_llama_export(o->out, p, scheme, &tables, &g, o->name, err);
        fkd_bpe_tables_free(&tables);
    }
    fkd_gguf_close(&g);
    return rc;
}

static int export_model(const export_opts *o, int scheme)
{
    fkd_error err = {0};
    fkd_params p = {0};
    int rc = load_weights(&p, o->model, &err);
    if (rc == 0) rc = set_context(&p, o->context, &err);
    if (rc == 0) rc = write_file(o, &p, scheme, &err);
    if (rc == 0) {
        struct stat st;
        long long bytes = stat(o->out, &st) == 0 ? (long long)st.st_size : -1;
        printf("export=%s type=%s bytes=%lld params=%zu layers=%d dim=%d vocab=%d context=%d\n",
               o->out, fkd_qtype_name(scheme), bytes, p.n_params,
               p.cfg.n_layers, p.cfg.dim, p.cfg.vocab, p.cfg.max_seq);
    } else {
        fprintf(stderr, "fedkd export: %s\n", err.msg);
    }
    fkd_params_free(&p);
    return rc == 0 ? 0 : 1;
}

int cmd_export(int argc, char **argv)
{
    export_opts o = {NULL, NULL, "student.gguf", "q4_1", "fedkd student", 0};
    const fkd_opt opts[] = {
        {"model", FKD_OPT_STR, &o.model, "the student: fedkd checkpoint or GGUF file (required)"},
        {"tokenizer", FKD_OPT_STR, &o.tokenizer, "GGUF file whose tokenizer the model uses (default: the model's own; none for a byte model)"},
        {"type", FKD_OPT_STR, &o.type_name, "f32 | f16 | q8_0 | q4_0 | q4_1 (embedding and head never below q8_0, norms f32)"},
        {"out", FKD_OPT_STR, &o.out, "the GGUF file to write (atomically)"},
        {"name", FKD_OPT_STR, &o.name, "general.name of the file"},
        {"context", FKD_OPT_INT, &o.context, "context length the file declares (0 = the model's)"},
    };
    int rc = fkd_cli_parse(argc, argv, opts, (int)(sizeof opts / sizeof opts[0]),
                           "usage: fedkd export --model M [--tokenizer FILE.gguf] [--type q4_1] "
                           "[--out student.gguf]\n"
                           "Writes a student as a llama GGUF file in a quantized format, the\n"
                           "file fedkd and llama.cpp run; prints one key=value line.",
                           NULL, 0, NULL);
    if (rc != 0) return rc > 0 ? 0 : 2;
    int scheme = fkd_qtype_from_name(o.type_name);
    if (!o.model || scheme < 0 || o.context < 0) {
        fprintf(stderr, "fedkd export: %s\n", !o.model ? "--model is required"
                : scheme < 0 ? "--type takes f32, f16, q8_0, q4_0 or q4_1"
                : "--context must not be negative");
        return 2;
    }
    return export_model(&o, scheme);
}
