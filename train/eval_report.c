/* eval_report.c — the one evaluation every fedkd result is reported with:
 * the loss metrics (perplexity, bits per byte, next-token accuracy, from
 * fkd_eval_tokens), the hallucination rate, and the resource side
 * (parameters, bytes, FLOPs per token, peak memory, latency per token).
 *
 * Hallucination rate (docs/data.md): from n_prompts held-out documents taken
 * evenly over the list, the prompt is SEP + the document's first
 * prompt_bytes bytes cut back to the last non-letter, so no word straddles
 * prompt and continuation. gen_tokens tokens are sampled (temperature,
 * top-k, top-p; prompt i uses seed + i), stopping at SEP. A word is a
 * maximal run of ASCII letters, compared lower-cased; a word the token limit
 * cut off is not counted. The rate is the share of counted words found
 * neither in the training-side corpora nor in the system word list. */
#include "fkd_train.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define WORD_MAX 64           /* longer letter runs are compared on their first 64 */
#define WORDSET_MAX_FILE ((size_t)64 << 20)

/* ---- word set: open addressing over a pool of NUL-terminated words ------- */
struct fkd_wordset {
    char *pool;
    size_t pool_used, pool_cap;
    uint32_t *slots;      /* pool offset + 1; 0 = empty */
    size_t n, cap;        /* cap is a power of two */
};

int fkd_wordset_new(fkd_wordset **ws, fkd_error *err)
{
    *ws = calloc(1, sizeof **ws);
    if (!*ws) return fkd_error_set(err, FKD_E_NOMEM, "out of memory for a word set");
    return 0;
}

void fkd_wordset_destroy(fkd_wordset **ws)
{
    if (!*ws) return;
    free((*ws)->pool);
    free((*ws)->slots);
    free(*ws);
    *ws = NULL;
}

size_t fkd_wordset_size(const fkd_wordset *ws) { return ws->n; }

static uint64_t word_hash(const char *w, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)w[i]) * 1099511628211ULL;
    return h;
}

/* Lower-cases a word into buf (at most WORD_MAX bytes); returns its length. */
static size_t normalize(char *buf, const uint8_t *word, size_t len)
{
    if (len > WORD_MAX) len = WORD_MAX;
    for (size_t i = 0; i < len; i++) buf[i] = (char)tolower(word[i]);
    return len;
}

static size_t find_slot(const fkd_wordset *ws, const char *w, size_t len)
{
    size_t mask = ws->cap - 1, i = (size_t)word_hash(w, len) & mask;
    while (ws->slots[i]) {
        const char *o = ws->pool + ws->slots[i] - 1;
        if (strlen(o) == len && memcmp(o, w, len) == 0) break;
        i = (i + 1) & mask;
    }
    return i;
}

static int grow_slots(fkd_wordset *ws, fkd_error *err)
{
    size_t cap = ws->cap ? ws->cap * 2 : 1 << 16;
    uint32_t *old = ws->slots;
    size_t old_cap = ws->cap;
    ws->slots = calloc(cap, sizeof *ws->slots);
    if (!ws->slots) {
        ws->slots = old;
        return fkd_error_set(err, FKD_E_NOMEM, "out of memory growing a word set");
    }
    ws->cap = cap;
    for (size_t i = 0; i < old_cap; i++) {
        if (!old[i]) continue;
        const char *w = ws->pool + old[i] - 1;
        ws->slots[find_slot(ws, w, strlen(w))] = old[i];
    }
    free(old);
    return 0;
}

static int add_word(fkd_wordset *ws, const uint8_t *word, size_t len, fkd_error *err)
{
    char w[WORD_MAX];
    len = normalize(w, word, len);
    if ((ws->n + 1) * 2 > ws->cap && grow_slots(ws, err) != 0) return -1;
    size_t i = find_slot(ws, w, len);
    if (ws->slots[i]) return 0;
    if (ws->pool_used + len + 1 > ws->pool_cap) {
        size_t cap = ws->pool_cap ? ws->pool_cap * 2 : 1 << 20;
        char *p = realloc(ws->pool, cap);
        if (!p || cap > UINT32_MAX)
            return fkd_error_set(err, FKD_E_NOMEM, "out of memory for word set text");
        ws->pool = p;
        ws->pool_cap = cap;
    }
    memcpy(ws->pool + ws->pool_used, w, len);
    ws->pool[ws->pool_used + len] = 0;
    ws->slots[i] = (uint32_t)(ws->pool_used + 1);
    ws->pool_used += len + 1;
    ws->n++;
    return 0;
}

int fkd_wordset_contains(const fkd_wordset *ws, const uint8_t *word, size_t len)
{
    if (!ws->cap) return 0;
    char w[WORD_MAX];
    len = normalize(w, word, len);
    return ws->slots[find_slot(ws, w, len)] != 0;
}

static int is_letter(uint8_t c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

/* The next word of text at or after *i: its first byte at *start, *i just
 * past its end; 0 when no word is left. */
static int next_word(size_t *start, size_t *i, const uint8_t *text, size_t bytes)
{
    while (*i < bytes && !is_letter(text[*i])) (*i)++;
    if (*i == bytes) return 0;
    *start = *i;
    while (*i < bytes && is_letter(text[*i])) (*i)++;
    return 1;
}

int fkd_wordset_add_text(fkd_wordset *ws, const uint8_t *text, size_t bytes, fkd_error *err)
{
    size_t i = 0, start;
    while (next_word(&start, &i, text, bytes))
        if (add_word(ws, text + start, i - start, err) != 0) return -1;
    return 0;
}

int fkd_wordset_add_file(fkd_wordset *ws, const char *path, fkd_error *err)
{
    uint8_t *data;
    size_t bytes;
    if (fkd_file_read_all(&data, &bytes, path, WORDSET_MAX_FILE, err) != 0) return -1;
    int rc = fkd_wordset_add_text(ws, data, bytes, err);
    free(data);
    return rc;
}

int fkd_wordset_add_corpus(fkd_wordset *ws, const fkd_corpus *c, const uint32_t *docs,
                           uint32_t n_docs, fkd_error *err)
{
    for (uint32_t i = 0; i < n_docs; i++) {
        if (docs[i] >= c->n_docs)
            return fkd_error_set(err, FKD_E_INVALID_ARG, "document %u does not exist", docs[i]);
        const fkd_doc *d = &c->docs[docs[i]];
        if (fkd_wordset_add_text(ws, c->text + d->offset, d->bytes, err) != 0) return -1;
    }
    return 0;
}

void fkd_words_count(int64_t *unknown, int64_t *total, const fkd_wordset *ws,
                     const uint8_t *text, size_t bytes, int last_complete)
{
    *unknown = 0;
    *total = 0;
    size_t i = 0, start;
    while (next_word(&start, &i, text, bytes)) {
        if (i == bytes && !last_complete) break;
        (*total)++;
        if (!fkd_wordset_contains(ws, text + start, i - start)) (*unknown)++;
    }
}

/* ---- generation ------------------------------------------------------------- */

int fkd_generate(uint8_t *out, size_t cap, size_t *n_out, int *stopped, double *ms_per_token,
                 fkd_infer *st, fkd_sampler *sm, const fkd_tokenizer *tok,
                 const int32_t *prompt, size_t n_prompt, int max_new, int32_t stop_token,
                 fkd_error *err)
{
    fkd_step_model m = {st, fkd_infer_step_fn, fkd_infer_reset_fn, st->params->cfg.max_seq};
    return fkd_generate_steps(out, cap, n_out, stopped, ms_per_token, &m, sm, tok, prompt,
                              n_prompt, max_new, stop_token, err);
}

int fkd_generate_steps(uint8_t *out, size_t cap, size_t *n_out, int *stopped,
                       double *ms_per_token, const fkd_step_model *m, fkd_sampler *sm,
                       const fkd_tokenizer *tok, const int32_t *prompt, size_t n_prompt,
                       int max_new, int32_t stop_token, fkd_error *err)
{
    *n_out = 0;
    *stopped = 0;
    *ms_per_token = 0;
    int max_seq = m->max_seq;
    if (n_prompt < 1 || max_new < 0)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "generation needs a prompt of 1+ tokens");
    if (max_new > max_seq - 1) max_new = max_seq - 1;
    if ((int64_t)n_prompt + max_new > max_seq) { /* keep the prompt's end */
        prompt += n_prompt - (size_t)(max_seq - max_new);
        n_prompt = (size_t)(max_seq - max_new);
    }
    int32_t *gen = malloc(((size_t)max_new + 1) * sizeof *gen);
    if (!gen) return fkd_error_set(err, FKD_E_NOMEM, "out of memory for generation");
    m->reset(m->state);
    float *logits = NULL;
    for (size_t i = 0; i < n_prompt && (i == 0 || logits); i++) logits = m->step(m->state, prompt[i]);
    if (!logits) {
        free(gen);
        return fkd_error_set(err, FKD_E_INVALID_ARG, "the model refused a prompt token "
                             "(outside its vocabulary?)");
    }
    double t0 = fkd_time_ms();
    int n = 0;
    while (n < max_new) {
        int32_t next = fkd_sampler_sample(sm, logits);
        if (next == stop_token) {
            *stopped = 1;
            break;
        }
        gen[n++] = next;
        if (n < max_new) logits = m->step(m->state, next);
    }
    int sampled = n + *stopped;
    *ms_per_token = sampled ? (fkd_time_ms() - t0) / sampled : 0;
    int rc = fkd_tokenizer_decode(out, cap, n_out, tok, gen, (size_t)n, err);
    free(gen);
    return rc;
}

/* ---- the report ----------------------------------------------------------------- */

fkd_eval_config fkd_eval_defaults(void)
{
    return (fkd_eval_config){.window = 0, .max_tokens = 0, .n_prompts = 32, .prompt_bytes = 48,
                             .gen_tokens = 64, .temperature = 0.8f, .top_k = 0, .top_p = 1.0f,
                             .seed = 1};
}

/* The prompt of one document: SEP + its opening cut back to a non-letter. */
static int make_prompt(int32_t *tokens, size_t cap, size_t *n, const fkd_corpus *c,
                       uint32_t doc, const fkd_tokenizer *tok, int prompt_bytes, fkd_error *err)
{
    const fkd_doc *d = &c->docs[doc];
    const uint8_t *text = c->text + d->offset;
    size_t len = d->bytes < (uint32_t)prompt_bytes ? d->bytes : (size_t)prompt_bytes;
    if (len < d->bytes)
        while (len > 0 && is_letter(text[len]) && is_letter(text[len - 1])) len--;
    tokens[0] = fkd_data_separator(tok);
    size_t got = 0;
    if (fkd_tokenizer_encode(tokens + 1, cap - 1, &got, tok, text, len, err) != 0) return -1;
    *n = got + 1;
    return 0;
}

static int hallucination(fkd_eval_report *r, const fkd_params *params, const fkd_tokenizer *tok,
                         const fkd_corpus *c, const uint32_t *docs, uint32_t n_docs,
                         const fkd_wordset *known, const fkd_eval_config *cfg, fkd_error *err)
{
    int n_prompts = cfg->n_prompts < (int)n_docs ? cfg->n_prompts : (int)n_docs;
    size_t pcap = (size_t)cfg->prompt_bytes + 2, ocap = (size_t)cfg->gen_tokens * 64 + 1;
    int32_t *prompt = malloc(pcap * sizeof *prompt);
    uint8_t *out = malloc(ocap);
    fkd_infer st = {0};
    int rc = prompt && out ? fkd_infer_init(&st, params, err)
                           : fkd_error_set(err, FKD_E_NOMEM, "out of memory for prompts");
    double ms_sum = 0;
    int ms_n = 0;
    for (int i = 0; rc == 0 && i < n_prompts; i++) {
        uint32_t doc = docs[(uint64_t)i * n_docs / (uint64_t)n_prompts];
        size_t np, n_out;
        int stopped;
        double ms;
        fkd_sampler sm;
        rc = make_prompt(prompt, pcap, &np, c, doc, tok, cfg->prompt_bytes, err);
        if (rc == 0)
            rc = fkd_sampler_init(&sm, params->cfg.vocab, cfg->temperature, cfg->top_k,
                                  cfg->top_p, cfg->seed + (uint64_t)i, err);
        if (rc != 0) break;
        rc = fkd_generate(out, ocap, &n_out, &stopped, &ms, &st, &sm, tok, prompt, np,
                          cfg->gen_tokens, fkd_data_separator(tok), err);
        fkd_sampler_free(&sm);
        if (rc != 0) break;
        int64_t unknown, total;
        fkd_words_count(&unknown, &total, known, out, n_out, stopped);
        r->halluc_unknown += unknown;
        r->halluc_words += total;
        ms_sum += ms;
        ms_n++;
    }
    r->n_prompts = ms_n;
    r->ms_per_token = ms_n ? ms_sum / ms_n : 0;
    r->halluc_rate = r->halluc_words ? (double)r->halluc_unknown / (double)r->halluc_words : 0;
    fkd_infer_free(&st);
    free(prompt);
    free(out);
    return rc;
}

int fkd_eval_report_run(fkd_eval_report *r, const fkd_params *params, const fkd_tokenizer *tok,
                        const fkd_corpus *c, const uint32_t *docs, uint32_t n_docs,
                        const fkd_wordset *known, const fkd_eval_config *cfg, fkd_error *err)
{
    memset(r, 0, sizeof *r);
    if (params->cfg.vocab != tok->vocab)
        return fkd_error_set(err, FKD_E_MISMATCH, "model vocabulary %d is not the tokenizer's %d",
                             params->cfg.vocab, tok->vocab);
    int window = cfg->window > 0 ? cfg->window : params->cfg.max_seq;
    fkd_token_stream s;
    uint32_t *sel, n_sel;
    /* a byte is at most one token, so max_tokens bytes of documents fill it */
    if (fkd_docs_spread(&sel, &n_sel, c, docs, n_docs, (uint64_t)cfg->max_tokens, err) != 0)
        return -1;
    int rc = fkd_token_stream_from_docs(&s, c, sel, n_sel, tok, err);
    free(sel);
    if (rc != 0) return -1;
    int64_t n = cfg->max_tokens > 0 && s.n > cfg->max_tokens ? cfg->max_tokens : s.n;
    int64_t bytes = (int64_t)((double)s.text_bytes * (double)n / (double)(s.n ? s.n : 1));
    double t0 = fkd_time_ms();
    rc = fkd_eval_tokens(&r->lm, params, s.tokens, n, bytes, window, err);
    double secs = (fkd_time_ms() - t0) / 1e3;
    fkd_token_stream_free(&s);
    if (rc != 0) return -1;
    r->tokens_per_s_eval = secs > 0 ? (double)r->lm.tokens / secs : 0;
    if (known && cfg->n_prompts > 0 && cfg->gen_tokens > 0 &&
        hallucination(r, params, tok, c, docs, n_docs, known, cfg, err) != 0)
        return -1;
    r->n_params = params->n_params;
    r->model_bytes_fp32 = (uint64_t)params->n_params * sizeof(float);
    r->flops_per_token = fkd_config_flops_per_token(&params->cfg, window);
    r->peak_rss_mb = fkd_peak_rss_mb();
    return 0;
}

void fkd_eval_report_print(FILE *f, const fkd_eval_report *r, const char *title, int json)
{
    if (json) {
        fprintf(f, "{\"title\":\"%s\",\"tokens\":%lld,\"loss\":%.6f,\"perplexity\":%.6f,"
                   "\"bits_per_byte\":%.6f,\"accuracy\":%.6f,\"hallucination_rate\":%.6f,"
                   "\"hallucination_unknown\":%lld,\"hallucination_words\":%lld,\"prompts\":%d,"
                   "\"params\":%zu,\"model_bytes_fp32\":%llu,\"flops_per_token\":%.0f,"
                   "\"peak_rss_mb\":%.1f,\"ms_per_token\":%.4f,\"eval_tokens_per_s\":%.1f}\n",
                title ? title : "", (long long)r->lm.tokens, r->lm.mean_loss, r->lm.perplexity,
                r->lm.bits_per_byte, r->lm.accuracy, r->halluc_rate,
                (long long)r->halluc_unknown, (long long)r->halluc_words, r->n_prompts,
                r->n_params, (unsigned long long)r->model_bytes_fp32, r->flops_per_token,
                r->peak_rss_mb, r->ms_per_token, r->tokens_per_s_eval);
        return;
    }
    if (title) fprintf(f, "%s\n", title);
    fprintf(f, "  %-22s %lld\n", "tokens evaluated", (long long)r->lm.tokens);
    fprintf(f, "  %-22s %.4f\n", "perplexity", r->lm.perplexity);
    fprintf(f, "  %-22s %.4f\n", "bits per byte", r->lm.bits_per_byte);
    fprintf(f, "  %-22s %.4f\n", "next-token accuracy", r->lm.accuracy);
    fprintf(f, "  %-22s %.4f (%lld of %lld words, %d prompts)\n", "hallucination rate",
            r->halluc_rate, (long long)r->halluc_unknown, (long long)r->halluc_words,
            r->n_prompts);
    fprintf(f, "  %-22s %zu\n", "parameters", r->n_params);
    fprintf(f, "  %-22s %.2f MB\n", "model bytes (fp32)", (double)r->model_bytes_fp32 / 1e6);
    fprintf(f, "  %-22s %.1f MFLOP\n", "FLOPs per token", r->flops_per_token / 1e6);
    fprintf(f, "  %-22s %.1f MB\n", "peak memory (RSS)", r->peak_rss_mb);
    fprintf(f, "  %-22s %.3f ms\n", "latency per token", r->ms_per_token);
}

/* ---- the standard evaluation set ------------------------------------------------ */

static int add_split_words(fkd_wordset *ws, const fkd_corpus *c, const fkd_federation *fed,
                           int split, fkd_error *err)
{
    uint32_t *docs, n;
    if (fkd_federation_docs(&docs, &n, fed, split, err) != 0) return -1;
    int rc = fkd_wordset_add_corpus(ws, c, docs, n, err);
    free(docs);
    return rc;
}

static int add_public_words(fkd_wordset *ws, const char *dir, fkd_error *err)
{
    fkd_corpus pub;
    fkd_corpus_options o = fkd_corpus_defaults(FKD_SIDE_PUBLIC);
    if (fkd_corpus_load(&pub, dir, &o, NULL) != 0) return 0; /* no public side: nothing to add */
    int rc = 0;
    for (uint32_t d = 0; d < pub.n_docs && rc == 0; d++)
        rc = fkd_wordset_add_text(ws, pub.text + pub.docs[d].offset, pub.docs[d].bytes, err);
    fkd_corpus_free(&pub);
    return rc;
}

static int load_side(fkd_eval_set *es, const char *data, int side, const fkd_partition_config *pc,
                     fkd_error *err)
{
    fkd_partition_config defaults = fkd_partition_defaults();
    if (!pc) pc = &defaults;
    if (side == FKD_SIDE_PUBLIC)
        return fkd_data_load_public(&es->corpus, &es->fed, data, NULL, pc->seed, err);
    fkd_corpus_options o = fkd_corpus_defaults(side);
    if (fkd_corpus_load(&es->corpus, data, &o, err) != 0) return -1;
    return fkd_federation_build(&es->fed, &es->corpus, pc, err);
}

int fkd_eval_set_load(fkd_eval_set *es, const char *data, int side, int split,
                      const fkd_partition_config *pc, const char *words_path, fkd_error *err)
{
    memset(es, 0, sizeof *es);
    if (!data) data = FKD_DATA_DEFAULT_DIR;
    FILE *probe = fopen(data, "rb");
    int is_file = 0;
    if (probe) { /* a directory opens too; a file reads */
        char c;
        is_file = fread(&c, 1, 1, probe) == 1;
        fclose(probe);
    }
    int rc = fkd_wordset_new(&es->known, err);
    if (rc == 0 && words_path) rc = fkd_wordset_add_file(es->known, words_path, err);
    if (rc == 0 && is_file) {
        fkd_corpus_options o = fkd_corpus_defaults(FKD_SIDE_ALL);
        rc = fkd_corpus_load(&es->corpus, data, &o, err);
        es->n_docs = es->corpus.n_docs;
        es->docs = rc == 0 ? malloc(((size_t)es->n_docs + 1) * sizeof *es->docs) : NULL;
        if (rc == 0 && !es->docs) rc = fkd_error_set(err, FKD_E_NOMEM, "out of memory");
        for (uint32_t d = 0; rc == 0 && d < es->n_docs; d++) es->docs[d] = d;
    } else if (rc == 0) {
        rc = load_side(es, data, side, pc, err);
        if (rc == 0) rc = fkd_federation_docs(&es->docs, &es->n_docs, &es->fed, split, err);
        if (rc == 0) rc = add_split_words(es->known, &es->corpus, &es->fed, FKD_SPLIT_TRAIN, err);
        if (rc == 0 && side != FKD_SIDE_PUBLIC) rc = add_public_words(es->known, data, err);
    }
    if (rc == 0 && es->n_docs == 0)
        rc = fkd_error_set(err, FKD_E_INVALID_ARG, "%s: the chosen split has no documents", data);
    if (rc != 0) fkd_eval_set_free(es);
    return rc;
}

void fkd_eval_set_free(fkd_eval_set *es)
{
    fkd_corpus_free(&es->corpus);
    fkd_federation_free(&es->fed);
    free(es->docs);
    fkd_wordset_destroy(&es->known);
    memset(es, 0, sizeof *es);
}
