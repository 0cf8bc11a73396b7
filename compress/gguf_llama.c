/* gguf_llama.c — the llama architecture in GGUF terms: its metadata onto
 * fkd_model_config, its tensors onto fkd_params (dequantized to f32) or onto
 * an fkd_qmodel (the blocks as they are), its tokenizer onto fkd_tokenizer,
 * and back again for a model that fedkd trained. Every file is written from
 * an fkd_qmodel, so the blocks a GGUF file holds are the blocks fkd_qinfer
 * runs, byte for byte, whichever program reads the file.
 *
 * Tensor names and shapes (ne[0] is the input dimension, so a GGUF matrix is
 * our (out, in) row-major matrix as it is):
 *   token_embd.weight (C, V)  output_norm.weight (C)  output.weight (C, V),
 *   absent when the head is tied to the embedding;
 *   blk.N.attn_norm (C)  attn_q (C, H*hd)  attn_k, attn_v (C, KV*hd)
 *   attn_output (H*hd, C)  ffn_norm (C)  ffn_gate, ffn_up (C, F)  ffn_down (F, C).
 * The converters permute Q and K rows so that RoPE rotates interleaved pairs,
 * which is the rotation train/ implements, so the rows are copied unchanged.
 * A tensor that is none of these (rope_freqs, biases, ...) would change the
 * math, so such a file is refused by the tensor's name.
 * The weights load either dequantized (fkd_params, for training and
 * pruning) or as the file's own blocks (fkd_qmodel, for inference). */
#include "fkd_compress.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define LLAMA_MAX_DIM (1 << 20)

/* Our tensor kinds, GGUF's name for them, and whether they are per layer. */
typedef struct {
    int kind;            /* FKD_T_... */
    const char *gguf;    /* "attn_q" -> "blk.N.attn_q.weight" */
    int per_layer;
} tensor_name;

static const tensor_name llama_names[] = {
    {FKD_T_TOK_EMB, "token_embd", 0},  {FKD_T_ATTN_NORM, "attn_norm", 1},
    {FKD_T_WQ, "attn_q", 1},           {FKD_T_WK, "attn_k", 1},
    {FKD_T_WV, "attn_v", 1},           {FKD_T_WO, "attn_output", 1},
    {FKD_T_FFN_NORM, "ffn_norm", 1},   {FKD_T_W1, "ffn_gate", 1},
    {FKD_T_W3, "ffn_up", 1},           {FKD_T_W2, "ffn_down", 1},
    {FKD_T_FINAL_NORM, "output_norm", 0}, {FKD_T_HEAD, "output", 0},
};
#define N_LLAMA_NAMES ((int)(sizeof llama_names / sizeof llama_names[0]))

static void gguf_tensor_name(char *out, size_t cap, const tensor_name *tn, int layer)
{
    if (tn->per_layer) snprintf(out, cap, "blk.%d.%s.weight", layer, tn->gguf);
    else snprintf(out, cap, "%s.weight", tn->gguf);
}

/* ---- config ----------------------------------------------------------------- */

static int get_dim(int *v, const fkd_gguf *g, const char *key, fkd_error *err)
{
    int64_t x;
    if (fkd_gguf_get_int(&x, g, key, 1, LLAMA_MAX_DIM, err) != 0) return -1;
    *v = (int)x;
    return 0;
}

/* Optional keys that must agree with what fedkd computes, when present. */
static int check_optional(const fkd_gguf *g, const char *key, int64_t want, fkd_error *err)
{
    if (!fkd_gguf_find(g, key)) return 0;
    int64_t v;
    if (fkd_gguf_get_int(&v, g, key, INT64_MIN, INT64_MAX, err) != 0) return -1;
    if (v != want)
        return fkd_error_set(err, FKD_E_UNSUPPORTED, "%s is %lld; fedkd's llama needs %lld", key,
                             (long long)v, (long long)want);
    return 0;
}

static int check_architecture(const fkd_gguf *g, fkd_error *err)
{
    const char *arch;
    size_t len;
    if (fkd_gguf_get_str(&arch, &len, g, "general.architecture", err) != 0) return -1;
    if (len != 5 || memcmp(arch, "llama", 5) != 0)
        return fkd_error_set(err, FKD_E_UNSUPPORTED, "general.architecture is \"%.*s\"; fedkd "
                             "runs \"llama\" models", (int)(len > 64 ? 64 : len), arch);
    const fkd_gguf_kv *scaling = fkd_gguf_find(g, "llama.rope.scaling.type");
    if (scaling && !(scaling->type == FKD_GGUF_STR && scaling->bytes == 4 &&
                     memcmp(scaling->data, "none", 4) == 0))
        return fkd_error_set(err, FKD_E_UNSUPPORTED, "llama.rope.scaling.type is set; fedkd "
                             "implements plain RoPE only");
    return 0;
}

/* The vocabulary: llama.vocab_size, else the tokenizer's token count, else
 * the embedding's rows. */
static int get_vocab(int *vocab, const fkd_gguf *g, fkd_error *err)
{
    if (fkd_gguf_find(g, "llama.vocab_size")) return get_dim(vocab, g, "llama.vocab_size", err);
    const fkd_gguf_kv *tokens = fkd_gguf_find(g, "tokenizer.ggml.tokens");
    if (tokens && tokens->type == FKD_GGUF_ARR) {
        if (tokens->count < 2 || tokens->count > LLAMA_MAX_DIM)
            return fkd_error_set(err, FKD_E_FORMAT, "tokenizer.ggml.tokens has %llu entries",
                                 (unsigned long long)tokens->count);
        *vocab = (int)tokens->count;
        return 0;
    }
    const fkd_gguf_tensor *emb = fkd_gguf_find_tensor(g, "token_embd.weight");
    if (!emb || emb->n_dims != 2 || emb->ne[1] > LLAMA_MAX_DIM)
        return fkd_error_set(err, FKD_E_FORMAT, "the GGUF file has no llama.vocab_size, no "
                             "tokenizer and no 2-d token_embd.weight");
    *vocab = (int)emb->ne[1];
    return 0;
}

int fkd_gguf_llama_config(fkd_model_config *cfg, const fkd_gguf *g, int max_seq, fkd_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    if (check_architecture(g, err) != 0) return -1;
    if (get_dim(&cfg->n_layers, g, "llama.block_count", err) != 0 ||
        get_dim(&cfg->dim, g, "llama.embedding_length", err) != 0 ||
        get_dim(&cfg->ffn_hidden, g, "llama.feed_forward_length", err) != 0 ||
        get_dim(&cfg->n_heads, g, "llama.attention.head_count", err) != 0 ||
        get_dim(&cfg->max_seq, g, "llama.context_length", err) != 0 ||
        fkd_gguf_get_f32(&cfg->norm_eps, g, "llama.attention.layer_norm_rms_epsilon", err) != 0 ||
        get_vocab(&cfg->vocab, g, err) != 0)
        return -1;
    cfg->n_kv_heads = cfg->n_heads;
    if (fkd_gguf_find(g, "llama.attention.head_count_kv") &&
        get_dim(&cfg->n_kv_heads, g, "llama.attention.head_count_kv", err) != 0)
        return -1;
    cfg->rope_theta = 10000.0f;
    if (fkd_gguf_find(g, "llama.rope.freq_base") &&
        fkd_gguf_get_f32(&cfg->rope_theta, g, "llama.rope.freq_base", err) != 0)
        return -1;
    if (cfg->dim % cfg->n_heads != 0)
        return fkd_error_set(err, FKD_E_FORMAT, "llama.attention.head_count %d does not divide "
                             "llama.embedding_length %d", cfg->n_heads, cfg->dim);
    int hd = cfg->dim / cfg->n_heads;
    if (check_optional(g, "llama.rope.dimension_count", hd, err) != 0 ||
        check_optional(g, "llama.attention.key_length", hd, err) != 0 ||
        check_optional(g, "llama.attention.value_length", hd, err) != 0)
        return -1;
    cfg->tie_embeddings = fkd_gguf_find_tensor(g, "output.weight") == NULL;
    if (max_seq > 0 && max_seq < cfg->max_seq) cfg->max_seq = max_seq;
    fkd_error sub;
    if (fkd_config_validate(cfg, &sub) != 0)
        return fkd_error_set(err, FKD_E_UNSUPPORTED, "the llama metadata gives a model fedkd "
                             "cannot run: %s", sub.msg);
    return 0;
}

/* ---- weights ---------------------------------------------------------------- */

/* GGUF shape (ne0, ne1) of one layer's slice of our tensor. */
static void slice_shape(uint64_t ne[2], int *n_dims, const fkd_tensor_info *ti, int per_layer)
{
    const int *s = ti->shape + (per_layer ? 1 : 0);
    int nd = ti->ndim - (per_layer ? 1 : 0);
    *n_dims = nd;
    ne[0] = (uint64_t)(nd == 2 ? s[1] : s[0]);
    ne[1] = nd == 2 ? (uint64_t)s[0] : 1;
}

/* The tensor name must be, with the GGUF shape (ne0, ne1) of our slice. */
static int find_slice(const fkd_gguf_tensor **out, const fkd_gguf *g, const char *name,
                      const uint64_t ne[2], int n_dims, fkd_error *err)
{
    const fkd_gguf_tensor *t = fkd_gguf_find_tensor(g, name);
    if (!t) return fkd_error_set(err, FKD_E_FORMAT, "the GGUF file has no tensor %s", name);
    int nd = t->n_dims;
    while (nd > 1 && t->ne[nd - 1] == 1) nd--;  /* trailing 1s do not change the layout */
    if (nd != n_dims || t->ne[0] != ne[0] || (n_dims == 2 && t->ne[1] != ne[1]))
        return fkd_error_set(err, FKD_E_MISMATCH, "tensor %s has shape (%llu, %llu); the "
                             "metadata makes it (%llu, %llu)", name,
                             (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                             (unsigned long long)ne[0], (unsigned long long)ne[1]);
    *out = t;
    return 0;
}

/* What is done with each tensor slice of the file once its name and shape
 * are checked: kind, layer, the file's tensor and the slice's values. */
typedef int (*slice_fn)(void *ctx, int kind, int layer, const fkd_gguf_tensor *t, size_t values,
                        fkd_error *err);

/* Walks every slice of the model: checks its name and shape, then hands it
 * to fn (when not NULL). Checking every slice before fn sees any means
 * nothing is allocated for a file whose tensors do not add up to the model
 * its metadata describes. */
static int each_slice(const fkd_tensor_info *infos, const fkd_gguf *g, int n_layers, slice_fn fn,
                      void *ctx, fkd_error *err)
{
    char name[96];
    for (int i = 0; i < N_LLAMA_NAMES; i++) {
        const tensor_name *tn = &llama_names[i];
        const fkd_tensor_info *ti = &infos[tn->kind];
        if (ti->count == 0) continue;  /* tied head */
        uint64_t ne[2];
        int n_dims;
        slice_shape(ne, &n_dims, ti, tn->per_layer);
        for (int l = 0; l < (tn->per_layer ? n_layers : 1); l++) {
            const fkd_gguf_tensor *t = NULL;
            gguf_tensor_name(name, sizeof name, tn, l);
            if (find_slice(&t, g, name, ne, n_dims, err) != 0) return -1;
            if (fn && fn(ctx, tn->kind, l, t, (size_t)(ne[0] * ne[1]), err) != 0) return -1;
        }
    }
    return 0;
}

/* 1 when name is one of the tensors the config uses: "blk.<l>.<kind>.weight"
 * with l < n_layers, or a whole-model "<kind>.weight". */
static int is_llama_tensor(const char *name, const fkd_model_config *cfg)
{
    int per_layer = strncmp(name, "blk.", 4) == 0;
    if (per_layer) {
        char *end;
        if (name[4] < '0' || name[4] > '9') return 0;
        long l = strtol(name + 4, &end, 10);
        if (*end != '.' || (name[4] == '0' && end != name + 5) || l >= cfg->n_layers) return 0;
        name = end + 1;
    }
    for (int i = 0; i < N_LLAMA_NAMES; i++) {
        const tensor_name *tn = &llama_names[i];
        size_t len = strlen(tn->gguf);
        if (tn->per_layer != per_layer || (tn->kind == FKD_T_HEAD && cfg->tie_embeddings))
            continue;
        if (strncmp(name, tn->gguf, len) == 0 && strcmp(name + len, ".weight") == 0) return 1;
    }
    return 0;
}

/* The config, and every tensor of the file checked to be the model's. */
static int llama_layout(fkd_model_config *cfg, fkd_tensor_info *infos, const fkd_gguf *g,
                        int max_seq, fkd_error *err)
{
    if (fkd_gguf_llama_config(cfg, g, max_seq, err) != 0) return -1;
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (!is_llama_tensor(g->tensors[i].name, cfg))
            return fkd_error_set(err, FKD_E_UNSUPPORTED, "tensor %s is not part of the llama "
                                 "model fedkd runs", g->tensors[i].name);
    fkd_param_layout(infos, cfg);
    return each_slice(infos, g, cfg->n_layers, NULL, NULL, err);
}

static int slice_to_f32(void *ctx, int kind, int layer, const fkd_gguf_tensor *t, size_t values,
                        fkd_error *err)
{
    fkd_params *params = ctx;
    float *out = params->memory + params->tensors[kind].offset + (size_t)layer * values;
    return fkd_gguf_tensor_to_f32(out, t, err);
}

int fkd_gguf_llama_load(fkd_params *params, const fkd_gguf *g, int max_seq, fkd_error *err)
{
    memset(params, 0, sizeof *params);
    fkd_model_config cfg;
    fkd_tensor_info infos[FKD_T_COUNT];
    if (llama_layout(&cfg, infos, g, max_seq, err) != 0) return -1;
    if (fkd_params_init(params, &cfg, err) != 0) return -1;
    if (each_slice(params->tensors, g, cfg.n_layers, slice_to_f32, params, err) != 0) {
        fkd_params_free(params);
        return -1;
    }
    return 0;
}

/* What the block loader carries from slice to slice (scratch grows to the
 * largest slice that needs converting). */
typedef struct {
    fkd_qmodel *qm;
    const fkd_gguf *g;
    float *scratch;
    size_t scratch_cap;
} qload_ctx;

/* A copied slice's pages of a mapped file leave the resident set at once
 * (they are read again from the file if touched), so that the load peaks
 * near the model's size rather than twice it. */
static void release_pages(const fkd_gguf *g, const uint8_t *p, size_t bytes)
{
    long page = sysconf(_SC_PAGESIZE);
    if (!g->mapped || page <= 0) return;
    uintptr_t a = ((uintptr_t)p + (uintptr_t)page - 1) / (uintptr_t)page * (uintptr_t)page;
    uintptr_t b = ((uintptr_t)p + bytes) / (uintptr_t)page * (uintptr_t)page;
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

/* Copies a slice in the tensor's format block for block; converts any
 * other format through f32. */
static int slice_to_blocks(void *ctx, int kind, int l, const fkd_gguf_tensor *t, size_t values,
                           fkd_error *err)
{
    qload_ctx *c = ctx;
    const fkd_qtensor *q = &c->qm->q[kind];
    size_t bytes = fkd_qtype_row_bytes(q->type, q->row_len) * (values / q->row_len);
    uint8_t *dst = q->data + (size_t)l * bytes;
    if (t->type == q->type && t->bytes == bytes) {
        memcpy(dst, t->data, bytes);
        release_pages(c->g, t->data, bytes);
        return 0;
    }
    if (values > c->scratch_cap) {
        float *grown = realloc(c->scratch, values * sizeof *grown);
        if (!grown) return fkd_error_set(err, FKD_E_NOMEM, "out of memory converting %s", t->name);
        c->scratch = grown;
        c->scratch_cap = values;
    }
    if (fkd_gguf_tensor_to_f32(c->scratch, t, err) != 0) return -1;
    fkd_quantize_row(dst, q->type, c->scratch, values);
    release_pages(c->g, t->data, (size_t)t->bytes);
    return 0;
}

/* Each kind's format: its first slice's, f32 when fedkd has no blocks for it. */
static void file_types(int *types, const fkd_gguf *g)
{
    char name[96];
    for (int t = 0; t < FKD_T_COUNT; t++) types[t] = FKD_QTYPE_F32;
    for (int i = 0; i < N_LLAMA_NAMES; i++) {
        gguf_tensor_name(name, sizeof name, &llama_names[i], 0);
        const fkd_gguf_tensor *t = fkd_gguf_find_tensor(g, name);
        if (t && fkd_qtype_valid(t->type)) types[llama_names[i].kind] = t->type;
    }
}

int fkd_gguf_llama_load_qmodel(fkd_qmodel *qm, const fkd_gguf *g, int max_seq, fkd_error *err)
{
    memset(qm, 0, sizeof *qm);
    fkd_model_config cfg;
    int types[FKD_T_COUNT];
    fkd_tensor_info infos[FKD_T_COUNT];
    if (llama_layout(&cfg, infos, g, max_seq, err) != 0) return -1;
    file_types(types, g);
    if (cfg.tie_embeddings) types[FKD_T_HEAD] = types[FKD_T_TOK_EMB];
    if (fkd_qmodel_init(qm, &cfg, types, err) != 0) return -1;
    qload_ctx c = {qm, g, NULL, 0};
    int rc = each_slice(qm->tensors, g, cfg.n_layers, slice_to_blocks, &c, err);
    free(c.scratch);
    if (rc != 0) fkd_qmodel_free(qm);
    return rc;
}

/* ---- tokenizer -------------------------------------------------------------- */

/* The tables (compress/prune_vocab.c reads them, for trimming too) make the
 * tokenizer. */
int fkd_gguf_tokenizer(fkd_tokenizer *tok, const fkd_gguf *g, fkd_error *err)
{
    memset(tok, 0, sizeof *tok);
    fkd_bpe_tables t;
    if (fkd_bpe_tables_from_gguf(&t, g, err) != 0) return -1;
    int rc = fkd_bpe_tables_tokenizer(tok, &t, err);
    fkd_bpe_tables_free(&t);
    return rc;
}

/* ---- writing our models ----------------------------------------------------- */

/* The formats params are written in: norm gains stay f32 (as in llama.cpp's
 * files); matrices take matrix_type when their rows fit its blocks. */
static void matrix_types(int *types, const fkd_params *params, int matrix_type)
{
    for (int t = 0; t < FKD_T_COUNT; t++) {
        const fkd_tensor_info *ti = &params->tensors[t];
        size_t row_len = ti->ndim >= 2 ? (size_t)ti->shape[ti->ndim - 1] : ti->count;
        int fits = ti->is_matrix && fkd_qtype_row_bytes(matrix_type, row_len) != 0;
        types[t] = fits ? matrix_type : FKD_QTYPE_F32;
    }
}

/* general.file_type: llama.cpp's numbering (LLAMA_FTYPE_*) of the format of
 * the bulk of the weights, the layers' matrices. */
static uint32_t llama_file_type(int matrix_type)
{
    switch (matrix_type) {
    case FKD_QTYPE_F16: return 1;
    case FKD_QTYPE_Q4_0: return 2;
    case FKD_QTYPE_Q4_1: return 3;
    case FKD_QTYPE_Q8_0: return 7;
    default: return 0;
    }
}

static int write_metadata(fkd_gguf_writer *w, const fkd_model_config *c, int matrix_type,
                          const char *name, fkd_error *err)
{
    static const char arch[] = "llama";
    uint32_t file_type = llama_file_type(matrix_type);
    int hd = c->dim / c->n_heads;
    if (fkd_gguf_writer_add_str(w, "general.architecture", arch, 5, err) != 0 ||
        fkd_gguf_writer_add_str(w, "general.name", name, strlen(name), err) != 0 ||
        fkd_gguf_writer_add_u32(w, "general.file_type", file_type, err) != 0 ||
        fkd_gguf_writer_add_u32(w, "general.quantization_version", 2, err) != 0 ||
        fkd_gguf_writer_add_u32(w, "llama.block_count", (uint32_t)c->n_layers, err) != 0 ||
        fkd_gguf_writer_add_u32(w, "llama.context_length", (uint32_t)c->max_seq, err) != 0 ||
        fkd_gguf_writer_add_u32(w, "llama.embedding_length", (uint32_t)c->dim, err) != 0 ||
        fkd_gguf_writer_add_u32(w, "llama.feed_forward_length", (uint32_t)c->ffn_hidden, err) != 0 ||
        fkd_gguf_writer_add_u32(w, "llama.attention.head_count", (uint32_t)c->n_heads, err) != 0 ||
        fkd_gguf_writer_add_u32(w, "llama.attention.head_count_kv", (uint32_t)c->n_kv_heads,
                                err) != 0 ||
        fkd_gguf_writer_add_f32(w, "llama.rope.freq_base", c->rope_theta, err) != 0 ||
        fkd_gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", c->norm_eps,
                                err) != 0 ||
        fkd_gguf_writer_add_u32(w, "llama.vocab_size", (uint32_t)c->vocab, err) != 0 ||
        fkd_gguf_writer_add_u32(w, "llama.rope.dimension_count", (uint32_t)hd, err) != 0)
        return -1;
    return 0;
}

/* The byte vocabulary as a GPT-2 tokenizer without merges: token i is byte i
 * in GPT-2's byte-level spelling, so every GGUF tool encodes text to the ids
 * fedkd's byte tokenizer gives. */
static int write_byte_tokenizer(fkd_gguf_writer *w, fkd_error *err)
{
    char spell[256][2];
    const char *strs[256];
    uint32_t lens[256];
    int32_t types[256];
    for (int b = 0; b < 256; b++) {
        lens[b] = (uint32_t)fkd_bpe_byte_spelling(spell[b], (uint8_t)b);
        strs[b] = spell[b];
        types[b] = 1;
    }
    if (fkd_gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2", 4, err) != 0 ||
        fkd_gguf_writer_add_str(w, "tokenizer.ggml.pre", "gpt2", 4, err) != 0 ||
        fkd_gguf_writer_add_str_array(w, "tokenizer.ggml.tokens", strs, lens, 256, err) != 0 ||
        fkd_gguf_writer_add_array(w, "tokenizer.ggml.token_type", FKD_GGUF_I32, types, 256,
                                  err) != 0 ||
        fkd_gguf_writer_add_str_array(w, "tokenizer.ggml.merges", NULL, NULL, 0, err) != 0)
        return -1;
    return 0;
}

static int copy_tokenizer(fkd_gguf_writer *w, const fkd_gguf *src, int vocab, fkd_error *err)
{
    const fkd_gguf_kv *tokens;
    if (fkd_gguf_get_array(&tokens, src, "tokenizer.ggml.tokens", FKD_GGUF_STR, err) != 0)
        return -1;
    if (tokens->count != (uint64_t)vocab)
        return fkd_error_set(err, FKD_E_MISMATCH, "the tokenizer to copy has %llu tokens; the "
                             "model's vocabulary is %d", (unsigned long long)tokens->count, vocab);
    for (uint64_t i = 0; i < src->n_kv; i++)
        if (strncmp(src->kv[i].key, "tokenizer.", 10) == 0 &&
            fkd_gguf_writer_copy_kv(w, &src->kv[i], err) != 0)
            return -1;
    return 0;
}

/* qm's blocks, slice by slice, as they are. */
static int add_tensors(fkd_gguf_writer *w, const fkd_qmodel *qm, fkd_error *err)
{
    char name[96];
    for (int i = 0; i < N_LLAMA_NAMES; i++) {
        const tensor_name *tn = &llama_names[i];
        const fkd_tensor_info *ti = &qm->tensors[tn->kind];
        const fkd_qtensor *q = &qm->q[tn->kind];
        if (ti->count == 0) continue;
        uint64_t ne[2];
        int n_dims;
        slice_shape(ne, &n_dims, ti, tn->per_layer);
        size_t bytes = fkd_qtype_row_bytes(q->type, (size_t)ne[0]) * (size_t)ne[1];
        for (int l = 0; l < (tn->per_layer ? qm->cfg.n_layers : 1); l++) {
            gguf_tensor_name(name, sizeof name, tn, l);
            if (fkd_gguf_writer_add_tensor(w, name, q->type, ne, n_dims, q->data + (size_t)l * bytes,
                                           bytes, err) != 0)
                return -1;
        }
    }
    return 0;
}

/* A trimmed vocabulary's tables; the id-free keys of src (chat template,
 * add_bos_token, ...) are copied as they are. */
static int write_bpe_tables(fkd_gguf_writer *w, const fkd_bpe_tables *t, const fkd_gguf *src,
                            int vocab, fkd_error *err)
{
    if (t->n_tokens != vocab)
        return fkd_error_set(err, FKD_E_MISMATCH, "the tokenizer has %d tokens; the model's "
                             "vocabulary is %d", t->n_tokens, vocab);
    if (fkd_gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2", 4, err) != 0 ||
        fkd_gguf_writer_add_str(w, "tokenizer.ggml.pre", t->pre, strlen(t->pre), err) != 0 ||
        fkd_gguf_writer_add_str_array(w, "tokenizer.ggml.tokens", (const char *const *)t->tokens,
                                      t->token_lens, (uint64_t)t->n_tokens, err) != 0 ||
        fkd_gguf_writer_add_array(w, "tokenizer.ggml.token_type", FKD_GGUF_I32, t->token_types,
                                  (uint64_t)t->n_tokens, err) != 0 ||
        fkd_gguf_writer_add_str_array(w, "tokenizer.ggml.merges", (const char *const *)t->merges,
                                      t->merge_lens, (uint64_t)t->n_merges, err) != 0)
        return -1;
    static const char *const id_keys[] = {"tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.padding_token_id"};
    const int32_t ids[] = {t->bos_id, t->eos_id, t->unk_id, t->pad_id};
    for (int i = 0; i < 4; i++)
        if (ids[i] >= 0 && fkd_gguf_writer_add_u32(w, id_keys[i], (uint32_t)ids[i], err) != 0)
            return -1;
    for (uint64_t i = 0; src && i < src->n_kv; i++) {
        const char *key = src->kv[i].key;
        if (strncmp(key, "tokenizer.", 10) != 0 || strncmp(key, "tokenizer.ggml.", 15) == 0)
            continue;
        if (fkd_gguf_writer_copy_kv(w, &src->kv[i], err) != 0) return -1;
    }
    for (uint64_t i = 0; src && i < src->n_kv; i++) {  /* flags of the ggml namespace */
        const fkd_gguf_kv *kv = &src->kv[i];
        if (kv->type == FKD_GGUF_BOOL && strncmp(kv->key, "tokenizer.ggml.", 15) == 0 &&
            fkd_gguf_writer_copy_kv(w, kv, err) != 0)
            return -1;
    }
    return 0;
}

int fkd_gguf_llama_save_qmodel(const char *path, const fkd_qmodel *qm,
                               const fkd_bpe_tables *tables, const fkd_gguf *tokenizer_src,
                               const char *name, fkd_error *err)
{
    if (!tables && !tokenizer_src && qm->cfg.vocab != 256)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "a %d-token model needs the GGUF file of "
                             "its tokenizer to copy it from", qm->cfg.vocab);
    fkd_gguf_writer *w;
    if (fkd_gguf_writer_new(&w, err) != 0) return -1;
    int rc = write_metadata(w, &qm->cfg, qm->q[FKD_T_WQ].type, name ? name : "fedkd student",
                            err);
    if (rc == 0)
        rc = tables ? write_bpe_tables(w, tables, tokenizer_src, qm->cfg.vocab, err)
           : tokenizer_src ? copy_tokenizer(w, tokenizer_src, qm->cfg.vocab, err)
                           : write_byte_tokenizer(w, err);
    if (rc == 0) rc = add_tensors(w, qm, err);
    if (rc == 0) rc = fkd_gguf_writer_write(w, path, err);
    fkd_gguf_writer_free(&w);
    return rc;
}

int fkd_gguf_llama_save_bpe(const char *path, const fkd_params *params, int matrix_type,
                            const fkd_bpe_tables *tables, const fkd_gguf *tokenizer_src,
                            const char *name, fkd_error *err)
{
    if (!fkd_qtype_valid(matrix_type))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "GGUF matrices are written as f32, f16, "
                             "q8_0, q4_0 or q4_1, not type %d", matrix_type);
    int types[FKD_T_COUNT];
    matrix_types(types, params, matrix_type);
    fkd_qmodel qm;
    if (fkd_qmodel_quantize_types(&qm, params, types, NULL, err) != 0) return -1;
    int rc = fkd_gguf_llama_save_qmodel(path, &qm, tables, tokenizer_src, name, err);
    fkd_qmodel_free(&qm);
    return rc;
}

int fkd_gguf_llama_save(const char *path, const fkd_params *params, int matrix_type,
                        const fkd_gguf *tokenizer_src, const char *name, fkd_error *err)
{
    return fkd_gguf_llama_save_bpe(path, params, matrix_type, NULL, tokenizer_src, name, err);
}

int fkd_gguf_llama_export(const char *path, const fkd_params *params, int scheme,
                          const fkd_token_stream *calib, const fkd_bpe_tables *tables,
                          const fkd_gguf *tokenizer_src, const char *name, fkd_error *err)
{
    fkd_qmodel qm;
    if (fkd_qmodel_quantize_deploy(&qm, params, scheme, NULL, calib, err) != 0) return -1;
    int rc = fkd_gguf_llama_save_qmodel(path, &qm, tables, tokenizer_src, name, err);
    fkd_qmodel_free(&qm);
    return rc;
}

/* ---- one call for the commands ---------------------------------------------- */

int fkd_gguf_is_gguf(const char *path)
{
    uint8_t magic[4];
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(magic, 1, sizeof magic, f);
    fclose(f);
    return n == 4 && memcmp(magic, "GGUF", 4) == 0;
}

/* Opens path, loads the model with load (into model, whose config is cfg)
 * and the tokenizer, and checks that they agree; unload frees the model on
 * a failure. Errors name the file. */
static int load_file(fkd_tokenizer *tok, const char *path, int max_seq,
                     int (*load)(void *model, const fkd_gguf *g, int max_seq, fkd_error *err),
                     void (*unload)(void *model), void *model, const fkd_model_config *cfg,
                     fkd_error *err)
{
    fkd_gguf g;
    memset(tok, 0, sizeof *tok);
    if (fkd_gguf_open(&g, path, err) != 0) return -1;
    fkd_error sub;
    int rc = load(model, &g, max_seq, &sub);
    if (rc == 0) {
        rc = fkd_gguf_tokenizer(tok, &g, &sub);
        if (rc == 0 && tok->vocab != cfg->vocab) {
            rc = fkd_error_set(&sub, FKD_E_MISMATCH, "the tokenizer has %d tokens, the model %d",
                               tok->vocab, cfg->vocab);
            fkd_tokenizer_free(tok);
        }
        if (rc != 0) unload(model);
    }
    fkd_gguf_close(&g);
    if (rc != 0) return fkd_error_set(err, sub.code, "%s: %s", path, sub.msg);
    return 0;
}

static int load_params(void *m, const fkd_gguf *g, int max_seq, fkd_error *err)
{
    return fkd_gguf_llama_load(m, g, max_seq, err);
}

static void unload_params(void *m) { fkd_params_free(m); }

static int load_qmodel(void *m, const fkd_gguf *g, int max_seq, fkd_error *err)
{
    return fkd_gguf_llama_load_qmodel(m, g, max_seq, err);
}

static void unload_qmodel(void *m) { fkd_qmodel_free(m); }

int fkd_gguf_load_model(fkd_params *params, fkd_tokenizer *tok, const char *path, int max_seq,
                        fkd_error *err)
{
    memset(params, 0, sizeof *params);
    return load_file(tok, path, max_seq, load_params, unload_params, params, &params->cfg, err);
}

int fkd_gguf_load_qmodel(fkd_qmodel *qm, fkd_tokenizer *tok, const char *path, int max_seq,
                         fkd_error *err)
{
    memset(qm, 0, sizeof *qm);
    return load_file(tok, path, max_seq, load_qmodel, unload_qmodel, qm, &qm->cfg, err);
}
