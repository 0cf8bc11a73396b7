/* data_stream.c — documents to token streams, and token streams to batches
 * of (input, next-token target) windows, with or without soft labels.
 *
 * A stream is  SEP d0 SEP d1 ... SEP d(n-1) SEP : the separator before a
 * document plays its beginning-of-text token and the one after it teaches the
 * model where it ends, so generation can stop there. Windows are cut from
 * the stream anywhere; a window that spans two documents always has the
 * separator between them, so the model is never shown two documents as one.
 *
 * Random batches are a pure function of (stream, seed, batch index): the
 * window offsets come from a generator seeded by both, which is what makes a
 * resumed training run see exactly the batches of an uninterrupted one. */
#include "fkd_train.h"

#include <stdlib.h>
#include <string.h>

int32_t fkd_data_separator(const fkd_tokenizer *tok)
{
    if (tok->eos_id >= 0) return tok->eos_id;
    uint8_t byte = FKD_DATA_SEPARATOR_BYTE;
    int32_t id = FKD_DATA_SEPARATOR_BYTE;
    size_t n = 0;
    if (fkd_tokenizer_encode(&id, 1, &n, tok, &byte, 1, NULL) != 0 || n != 1)
        return FKD_DATA_SEPARATOR_BYTE < tok->vocab ? FKD_DATA_SEPARATOR_BYTE : 0;
    return id;
}

int fkd_token_stream_from_docs(fkd_token_stream *s, const fkd_corpus *c, const uint32_t *docs,
                               uint32_t n_docs, const fkd_tokenizer *tok, fkd_error *err)
{
    memset(s, 0, sizeof *s);
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < n_docs; i++) {
        if (docs[i] >= c->n_docs)
            return fkd_error_set(err, FKD_E_INVALID_ARG, "document %u of %u does not exist",
                                 docs[i], c->n_docs);
        bytes += c->docs[docs[i]].bytes;
    }
    /* Every tokenizer emits at most one token per byte (BPE merges bytes). */
    uint64_t cap = bytes + n_docs + 1;
    s->tokens = malloc((size_t)cap * sizeof *s->tokens);
    if (!s->tokens)
        return fkd_error_set(err, FKD_E_NOMEM, "out of memory for %llu tokens",
                             (unsigned long long)cap);
    s->owned = 1;
    int32_t sep = fkd_data_separator(tok);
    int64_t n = 0;
    s->tokens[n++] = sep;
    for (uint32_t i = 0; i < n_docs; i++) {
        const fkd_doc *d = &c->docs[docs[i]];
        size_t got = 0;
        if (fkd_tokenizer_encode(s->tokens + n, (size_t)(cap - (uint64_t)n - 1), &got, tok,
                                 c->text + d->offset, d->bytes, err) != 0) {
            fkd_token_stream_free(s);
            return -1;
        }
        n += (int64_t)got;
        s->tokens[n++] = sep;
    }
    s->n = n;
    s->n_docs = n_docs;
    s->text_bytes = (int64_t)bytes + n_docs + 1; /* a separator stands for one byte */
    return 0;
}

int fkd_token_stream_from_split(fkd_token_stream *s, const fkd_corpus *c,
                                const fkd_federation *fed, int client, int split,
                                const fkd_tokenizer *tok, fkd_error *err)
{
    memset(s, 0, sizeof *s);
    if (split < 0 || split >= FKD_SPLIT_COUNT || client >= fed->n_clients)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "client %d / split %d does not exist",
                             client, split);
    if (client >= 0)
        return fkd_token_stream_from_docs(s, c, fed->clients[client].docs[split],
                                          fed->clients[client].n_docs[split], tok, err);
    uint32_t *docs, n;
    if (fkd_federation_docs(&docs, &n, fed, split, err) != 0) return -1;
    int rc = fkd_token_stream_from_docs(s, c, docs, n, tok, err);
    free(docs);
    return rc;
}

void fkd_token_stream_free(fkd_token_stream *s)
{
    if (s->owned) free(s->tokens);
    memset(s, 0, sizeof *s);
}

void fkd_token_stream_from_shard(fkd_token_stream *s, const fkd_softlabel_shard *shard)
{
    memset(s, 0, sizeof *s);
    s->tokens = shard->tokens;
    s->n = shard->n;
    s->text_bytes = shard->n; /* byte tokens; an estimate for others */
    s->soft_k = shard->k;
    s->soft_ids = shard->ids;
    s->soft_probs = shard->probs;
}

/* ---- batches ------------------------------------------------------------------ */

int fkd_batch_init(fkd_batch *b, int B, int T, int k, fkd_error *err)
{
    memset(b, 0, sizeof *b);
    if (B <= 0 || T <= 0 || k < 0 || k > FKD_SOFT_MAX_K)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "batch shape B=%d T=%d k=%d is invalid", B,
                             T, k);
    size_t n = (size_t)B * (size_t)T;
    b->B = B;
    b->T = T;
    b->k = k;
    b->inputs = malloc(n * sizeof *b->inputs);
    b->targets = malloc(n * sizeof *b->targets);
    if (k > 0) {
        b->soft_ids = malloc(n * (size_t)k * sizeof *b->soft_ids);
        b->soft_probs = malloc(n * (size_t)k * sizeof *b->soft_probs);
    }
    if (!b->inputs || !b->targets || (k > 0 && (!b->soft_ids || !b->soft_probs))) {
        fkd_batch_free(b);
        return fkd_error_set(err, FKD_E_NOMEM, "out of memory for a %dx%d batch", B, T);
    }
    b->soft.k = k;
    b->soft.ids = b->soft_ids;
    b->soft.probs = b->soft_probs;
    return 0;
}

void fkd_batch_free(fkd_batch *b)
{
    free(b->inputs);
    free(b->targets);
    free(b->soft_ids);
    free(b->soft_probs);
    memset(b, 0, sizeof *b);
}

/* Row r of the batch from stream tokens [start, start+T]; beyond the stream's
 * end the row is padded (input 0, target -1). */
static void fill_row(fkd_batch *b, int r, const fkd_token_stream *s, int64_t start)
{
    int T = b->T, k = b->k;
    int32_t *in = b->inputs + (size_t)r * T, *tg = b->targets + (size_t)r * T;
    for (int t = 0; t < T; t++) {
        int64_t i = start + t;
        in[t] = i < s->n ? s->tokens[i] : 0;
        tg[t] = i + 1 < s->n ? s->tokens[i + 1] : -1;
        if (k == 0) continue;
        int32_t *ids = b->soft_ids + ((size_t)r * T + t) * k;
        float *pr = b->soft_probs + ((size_t)r * T + t) * k;
        int sk = s->soft_k < k ? s->soft_k : k;
        for (int j = 0; j < k; j++) {
            int have = j < sk && tg[t] >= 0;
            ids[j] = have ? s->soft_ids[i * s->soft_k + j] : 0;
            pr[j] = have ? s->soft_probs[i * s->soft_k + j] : 0.0f;
        }
    }
}

static void finish(fkd_batch *b, const fkd_token_stream *s)
{
    b->has_soft = b->k > 0 && s->soft_k > 0;
    b->soft.k = b->k;
}

int fkd_batch_random(fkd_batch *b, const fkd_token_stream *s, uint64_t seed, int64_t index,
                     fkd_error *err)
{
    if (s->n < 2)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "a stream of %lld tokens has no targets",
                             (long long)s->n);
    if (s->soft_k > b->k && b->k > 0)
        return fkd_error_set(err, FKD_E_MISMATCH, "batch holds %d soft ids, stream has %d",
                             b->k, s->soft_k);
    fkd_rng rng;
    fkd_rng_seed(&rng, seed ^ ((uint64_t)index * 0xd6e8feb86659fd93ULL));
    int64_t span = s->n - 1 - b->T; /* start offsets keeping a full window of targets */
    for (int r = 0; r < b->B; r++) {
        int64_t start = 0;
        if (span > 0) start = (int64_t)(fkd_rng_u64(&rng) % (uint64_t)(span + 1));
        fill_row(b, r, s, start);
    }
    finish(b, s);
    return 0;
}

int64_t fkd_batch_window_count(const fkd_token_stream *s, int T)
{
    if (s->n < 2 || T <= 0) return 0;
    return (s->n - 1 + T - 1) / T; /* windows covering every target once */
}

int fkd_batch_sequential(fkd_batch *b, const fkd_token_stream *s, int64_t first_window)
{
    int64_t windows = fkd_batch_window_count(s, b->T);
    int rows = 0;
    for (int r = 0; r < b->B; r++) {
        int64_t w = first_window + r;
        if (w < windows) {
            fill_row(b, r, s, w * b->T);
            rows++;
        } else {
            fill_row(b, r, s, s->n); /* all padding */
        }
    }
    finish(b, s);
    return rows;
}
