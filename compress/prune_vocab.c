/* prune_vocab.c — vocabulary trimming for a pruned student: the byte-level
 * BPE tables of a GGUF tokenizer, cut down to the tokens a corpus uses.
 *
 * A token is kept when the corpus's encoding uses it, when it is a byte token
 * (so any text still encodes), when it is not a normal token (control,
 * user-defined, unknown: the chat markers and bos/eos), and, closing the set,
 * when BPE builds a kept token through it: replaying the merges on a kept
 * token's own bytes gives the exact merge tree every word built it with
 * (inside a word a final token's span only merges within itself, lowest rank
 * first), and each intermediate token of that tree is kept. The kept merges
 * are those whose parts and result are all kept, in their original order.
 *
 * Why the corpus then encodes exactly as before: every merge the full
 * tokenizer applies to a corpus word is in some final token's tree, so its
 * parts and result are kept and the merge is kept. BPE applies, at each step,
 * the lowest-ranked merge among the adjacent pairs; the trimmed list is a
 * rank-ordered subset that holds the full run's choice at every step and no
 * lower-ranked merge the full list lacks, so both runs take the same steps
 * and stop at the same symbols.
 *
 * New ids are the kept tokens in their old order, so old->new is monotone and
 * the map can be rebuilt from the two tables alone (by spelling), which is
 * how a cached student finds its map again.
 */
#include "fkd_compress.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TT_NORMAL = 1, TT_BYTE = 6 };   /* GGUF token types */
#define VOCAB_MAX_TOKENS (1 << 24)

/* ---- a spelling -> id index (open addressing, FNV-1a) --------------------- */
typedef struct {
    int32_t *slots;
    size_t mask;
    char *const *strs;
    const uint32_t *lens;
} spell_map;

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static int32_t spell_map_find(const spell_map *m, const char *s, size_t n)
{
    for (size_t i = fnv1a(s, n) & m->mask;; i = (i + 1) & m->mask) {
        int32_t id = m->slots[i];
        if (id < 0) return -1;
        if (m->lens[id] == n && memcmp(m->strs[id], s, n) == 0) return id;
    }
}

/* The first of equal spellings wins, as in train's BPE. */
static int spell_map_build(spell_map *m, const fkd_bpe_tables *t, fkd_error *err)
{
    size_t slots = 1;
    while (slots < 2 * (size_t)t->n_tokens + 2) slots *= 2;
    m->slots = malloc(slots * sizeof *m->slots);
    if (!m->slots) return fkd_error_set(err, FKD_E_NOMEM, "out of memory indexing %d tokens",
                                        t->n_tokens);
    memset(m->slots, 0xFF, slots * sizeof *m->slots);
    m->mask = slots - 1;
    m->strs = t->tokens;
    m->lens = t->token_lens;
    for (int id = 0; id < t->n_tokens; id++) {
        if (spell_map_find(m, t->tokens[id], t->token_lens[id]) >= 0) continue;
        size_t i = fnv1a(t->tokens[id], t->token_lens[id]) & m->mask;
        while (m->slots[i] >= 0) i = (i + 1) & m->mask;
        m->slots[i] = id;
    }
    return 0;
}

/* ---- tables ------------------------------------------------------------------ */

void fkd_bpe_tables_free(fkd_bpe_tables *t)
{
    if (!t) return;
    free(t->tokens);
    free(t->token_lens);
    free(t->token_types);
    free(t->merges);
    free(t->merge_lens);
    free(t->text);
    memset(t, 0, sizeof *t);
}

/* Allocates the arrays for n_tokens and n_merges and text_bytes of strings. */
static int tables_alloc(fkd_bpe_tables *t, int n_tokens, int n_merges, size_t text_bytes,
                        fkd_error *err)
{
    t->n_tokens = n_tokens;
    t->n_merges = n_merges;
    t->tokens = malloc(((size_t)n_tokens + 1) * sizeof *t->tokens);
    t->token_lens = malloc(((size_t)n_tokens + 1) * sizeof *t->token_lens);
    t->token_types = malloc(((size_t)n_tokens + 1) * sizeof *t->token_types);
    t->merges = malloc(((size_t)n_merges + 1) * sizeof *t->merges);
    t->merge_lens = malloc(((size_t)n_merges + 1) * sizeof *t->merge_lens);
    t->text = malloc(text_bytes + 1);
    if (!t->tokens || !t->token_lens || !t->token_types || !t->merges || !t->merge_lens ||
        !t->text) {
        fkd_bpe_tables_free(t);
        return fkd_error_set(err, FKD_E_NOMEM, "out of memory for a tokenizer of %d tokens",
                             n_tokens);
    }
    return 0;
}

/* A special id: -1 when the key is absent, an error when it is out of range. */
static int optional_id(int32_t *id, const fkd_gguf *g, const char *key, int vocab,
                       fkd_error *err)
{
    int64_t v;
    *id = -1;
    if (!fkd_gguf_find(g, key)) return 0;
    if (fkd_gguf_get_int(&v, g, key, 0, vocab - 1, err) != 0) return -1;
    *id = (int32_t)v;
    return 0;
}

/* Copies n strings into the arena at *at. */
static void copy_strings(char **dst, uint32_t *dst_lens, char *arena, size_t *at,
                         const char *const *src, const uint32_t *src_lens, int n)
{
    for (int i = 0; i < n; i++) {
        dst[i] = arena + *at;
        dst_lens[i] = src_lens[i];
        memcpy(dst[i], src[i], src_lens[i]);
        *at += src_lens[i];
    }
}

static int tables_fill(fkd_bpe_tables *t, const fkd_gguf *g, const fkd_gguf_kv *tokens,
                       const fkd_gguf_kv *merges, const fkd_gguf_kv *types, fkd_error *err)
{
    int nt = (int)tokens->count, nm = (int)merges->count;
    const char **strs = malloc(((size_t)nt + (size_t)nm + 1) * sizeof *strs);
    uint32_t *lens = malloc(((size_t)nt + (size_t)nm + 1) * sizeof *lens);
    int rc = -1;
    if (!strs || !lens) {
        fkd_error_set(err, FKD_E_NOMEM, "out of memory reading the tokenizer");
        goto done;
    }
    if (fkd_gguf_array_strings(strs, lens, tokens, err) != 0 ||
        fkd_gguf_array_strings(strs + nt, lens + nt, merges, err) != 0)
        goto done;
    size_t text = 0;
    for (int i = 0; i < nt + nm; i++) text += lens[i];
    if (tables_alloc(t, nt, nm, text, err) != 0) goto done;
    size_t at = 0;
    copy_strings(t->tokens, t->token_lens, t->text, &at, strs, lens, nt);
    copy_strings(t->merges, t->merge_lens, t->text, &at, strs + nt, lens + nt, nm);
    for (int i = 0; i < nt; i++) {
        int32_t v = TT_NORMAL;
        if (types) memcpy(&v, types->data + 4 * (size_t)i, 4); /* GGUF is little-endian, as we are */
        t->token_types[i] = v;
    }
    if (optional_id(&t->bos_id, g, "tokenizer.ggml.bos_token_id", nt, err) != 0 ||
        optional_id(&t->eos_id, g, "tokenizer.ggml.eos_token_id", nt, err) != 0 ||
        optional_id(&t->unk_id, g, "tokenizer.ggml.unknown_token_id", nt, err) != 0 ||
        optional_id(&t->pad_id, g, "tokenizer.ggml.padding_token_id", nt, err) != 0) {
        fkd_bpe_tables_free(t);
        goto done;
    }
    rc = 0;
done:
    free(strs);
    free(lens);
    return rc;
}

int fkd_bpe_tables_from_gguf(fkd_bpe_tables *t, const fkd_gguf *g, fkd_error *err)
{
    memset(t, 0, sizeof *t);
    t->bos_id = t->eos_id = t->unk_id = t->pad_id = -1;
    const char *s;
    size_t len;
    if (fkd_gguf_get_str(&s, &len, g, "tokenizer.ggml.model", err) != 0) return -1;
    if (len != 4 || memcmp(s, "gpt2", 4) != 0)
        return fkd_error_set(err, FKD_E_UNSUPPORTED, "tokenizer.ggml.model is \"%.*s\"; fedkd "
                             "reads \"gpt2\" (byte-level BPE)", (int)(len > 64 ? 64 : len), s);
    snprintf(t->pre, sizeof t->pre, "gpt2");
    if (fkd_gguf_find(g, "tokenizer.ggml.pre")) {
        if (fkd_gguf_get_str(&s, &len, g, "tokenizer.ggml.pre", err) != 0) return -1;
        if (len >= sizeof t->pre)
            return fkd_error_set(err, FKD_E_UNSUPPORTED, "tokenizer.ggml.pre is too long");
        memcpy(t->pre, s, len);
        t->pre[len] = 0;
    }
    const fkd_gguf_kv *tokens, *merges, *types = NULL;
    if (fkd_gguf_get_array(&tokens, g, "tokenizer.ggml.tokens", FKD_GGUF_STR, err) != 0 ||
        fkd_gguf_get_array(&merges, g, "tokenizer.ggml.merges", FKD_GGUF_STR, err) != 0)
        return -1;
    if (fkd_gguf_find(g, "tokenizer.ggml.token_type") &&
        fkd_gguf_get_array(&types, g, "tokenizer.ggml.token_type", FKD_GGUF_I32, err) != 0)
        return -1;
    if (tokens->count < 1 || tokens->count > VOCAB_MAX_TOKENS || merges->count > VOCAB_MAX_TOKENS)
        return fkd_error_set(err, FKD_E_LIMIT, "the tokenizer has %llu tokens and %llu merges; "
                             "up to 2^24 of each are taken", (unsigned long long)tokens->count,
                             (unsigned long long)merges->count);
    if (types && types->count != tokens->count)
        return fkd_error_set(err, FKD_E_FORMAT, "tokenizer.ggml.token_type has %llu entries for "
                             "%llu tokens", (unsigned long long)types->count,
                             (unsigned long long)tokens->count);
    return tables_fill(t, g, tokens, merges, types, err);
}

int fkd_bpe_tables_tokenizer(fkd_tokenizer *tok, const fkd_bpe_tables *t, fkd_error *err)
{
    return fkd_tokenizer_init_bpe(tok, (const char *const *)t->tokens, t->token_lens,
                                  t->token_types, t->n_tokens, (const char *const *)t->merges,
                                  t->merge_lens, t->n_merges, t->bos_id, t->eos_id, t->pre, err);
}

/* ---- merges as ids ----------------------------------------------------------- */
typedef struct {
    int32_t left, right, result;   /* -1 when a part is not a token: the merge never fires */
} merge_ids;

static int merges_resolve(merge_ids **out, const fkd_bpe_tables *t, const spell_map *m,
                          fkd_error *err)
{
    merge_ids *mi = malloc(((size_t)t->n_merges + 1) * sizeof *mi);
    char *joined = malloc(2 * (size_t)FKD_BPE_MAX_TOKEN_BYTES + 1);
    if (!mi || !joined) {
        free(mi);
        free(joined);
        return fkd_error_set(err, FKD_E_NOMEM, "out of memory for %d merges", t->n_merges);
    }
    for (int r = 0; r < t->n_merges; r++) {
        const char *s = t->merges[r];
        uint32_t n = t->merge_lens[r];
        const char *sp = memchr(s, ' ', n);
        mi[r] = (merge_ids){-1, -1, -1};
        if (!sp || n > 2 * FKD_BPE_MAX_TOKEN_BYTES) continue;
        size_t la = (size_t)(sp - s), lb = n - la - 1;
        memcpy(joined, s, la);
        memcpy(joined + la, sp + 1, lb);
        mi[r].left = spell_map_find(m, s, la);
        mi[r].right = spell_map_find(m, sp + 1, lb);
        mi[r].result = spell_map_find(m, joined, la + lb);
        if (mi[r].left < 0 || mi[r].right < 0 || mi[r].result < 0) mi[r] = (merge_ids){-1, -1, -1};
    }
    free(joined);
    *out = mi;
    return 0;
}

/* ---- trimming ------------------------------------------------------------------- */

void fkd_vocab_map_free(fkd_vocab_map *m)
{
    if (!m) return;
    free(m->old_to_new);
    free(m->new_to_old);
    memset(m, 0, sizeof *m);
}

/* The seeds of the kept set: used tokens, byte tokens, every token that is
 * not a normal one, and the special ids. */
static int mark_seeds(uint8_t *keep, const fkd_bpe_tables *t, const spell_map *m,
                      const int32_t *used, size_t n_used, fkd_error *err)
{
    for (size_t i = 0; i < n_used; i++) {
        if (used[i] < 0 || used[i] >= t->n_tokens)
            return fkd_error_set(err, FKD_E_INVALID_ARG, "token %d at %zu is outside the %d-token "
                                 "vocabulary", used[i], i, t->n_tokens);
        keep[used[i]] = 1;
    }
    for (int b = 0; b < 256; b++) {
        char sp[2];
        int n = fkd_bpe_byte_spelling(sp, (uint8_t)b);
        int32_t id = spell_map_find(m, sp, (size_t)n);
        if (id >= 0) keep[id] = 1;
    }
    for (int i = 0; i < t->n_tokens; i++)
        if (t->token_types[i] != TT_NORMAL) keep[i] = 1;
    const int32_t ids[4] = {t->bos_id, t->eos_id, t->unk_id, t->pad_id};
    for (int i = 0; i < 4; i++)
        if (ids[i] >= 0 && ids[i] < t->n_tokens) keep[ids[i]] = 1;
    return 0;
}

/* (left, right) -> merge rank, for replaying BPE on one token. */
typedef struct {
    uint64_t *keys;       /* left << 32 | right, UINT64_MAX when empty */
    int32_t *ranks;
    size_t mask;
} pair_map;

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static int32_t pair_map_find(const pair_map *pm, int32_t left, int32_t right)
{
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    for (size_t i = mix64(key) & pm->mask;; i = (i + 1) & pm->mask) {
        if (pm->keys[i] == UINT64_MAX) return -1;
        if (pm->keys[i] == key) return pm->ranks[i];
    }
}

/* The first rank of a pair wins, as in train's BPE. */
static int pair_map_build(pair_map *pm, const merge_ids *mi, int n)
{
    size_t slots = 1;
    while (slots < 2 * (size_t)n + 2) slots *= 2;
    pm->keys = malloc(slots * sizeof *pm->keys);
    pm->ranks = malloc(slots * sizeof *pm->ranks);
    if (!pm->keys || !pm->ranks) return -1;
    memset(pm->keys, 0xFF, slots * sizeof *pm->keys);
    pm->mask = slots - 1;
    for (int r = 0; r < n; r++) {
        if (mi[r].result < 0 || pair_map_find(pm, mi[r].left, mi[r].right) >= 0) continue;
        uint64_t key = (uint64_t)(uint32_t)mi[r].left << 32 | (uint32_t)mi[r].right;
        size_t i = mix64(key) & pm->mask;
        while (pm->keys[i] != UINT64_MAX) i = (i + 1) & pm->mask;
        pm->keys[i] = key;
        pm->ranks[i] = r;
    }
    return 0;
}

/* Replays BPE on the bytes of token id alone and keeps every intermediate
 * token. Inside a word, a final token's span only ever merges with itself,
 * always taking its lowest-ranked pair, so this is exactly the merge tree the
 * word built it with. sym has room for the token's characters. */
static void keep_ancestry(uint8_t *keep, int32_t *sym, const fkd_bpe_tables *t,
                          const spell_map *sm, const pair_map *pm, const merge_ids *mi, int32_t id)
{
    const char *s = t->tokens[id];
    uint32_t len = t->token_lens[id];
    int n = 0;
    for (uint32_t i = 0; i < len;) {  /* each character spells one byte */
        uint32_t cl = (uint8_t)s[i] < 0x80 ? 1 : 2;
        if (i + cl > len) return;
        sym[n] = spell_map_find(sm, s + i, cl);
        if (sym[n++] < 0) return;  /* not a byte-level spelling: nothing to replay */
        i += cl;
    }
    for (;;) {
        int best = -1;
        int32_t best_rank = INT32_MAX;
        for (int i = 0; i + 1 < n; i++) {
            int32_t r = pair_map_find(pm, sym[i], sym[i + 1]);
            if (r >= 0 && r < best_rank) best_rank = r, best = i;
        }
        if (best < 0) return;
        keep[sym[best]] = keep[sym[best + 1]] = 1;
        sym[best] = mi[best_rank].result;
        keep[sym[best]] = 1;
        memmove(sym + best + 1, sym + best + 2, (size_t)(n - best - 2) * sizeof *sym);
        n--;
    }
}

static int close_under_merges(uint8_t *keep, const fkd_bpe_tables *t, const spell_map *sm,
                              const merge_ids *mi, fkd_error *err)
{
    pair_map pm = {0};
    int32_t *sym = malloc(((size_t)FKD_BPE_MAX_TOKEN_BYTES + 1) * sizeof *sym);
    uint8_t *seed = malloc((size_t)t->n_tokens + 1);
    int rc = 0;
    if (!sym || !seed || pair_map_build(&pm, mi, t->n_merges) != 0) {
        rc = fkd_error_set(err, FKD_E_NOMEM, "out of memory closing the vocabulary");
    } else {
        memcpy(seed, keep, (size_t)t->n_tokens);
        for (int32_t id = 0; id < t->n_tokens; id++)
            if (seed[id] && t->token_types[id] == TT_NORMAL && t->token_lens[id] <= FKD_BPE_MAX_TOKEN_BYTES)
                keep_ancestry(keep, sym, t, sm, &pm, mi, id);
    }
    free(pm.keys);
    free(pm.ranks);
    free(sym);
    free(seed);
    return rc;
}

static int map_from_keep(fkd_vocab_map *map, const uint8_t *keep, int old_vocab, fkd_error *err)
{
    memset(map, 0, sizeof *map);
    int n = 0;
    for (int i = 0; i < old_vocab; i++) n += keep[i] != 0;
    map->old_vocab = old_vocab;
    map->new_vocab = n;
    map->old_to_new = malloc((size_t)old_vocab * sizeof *map->old_to_new);
    map->new_to_old = malloc(((size_t)n + 1) * sizeof *map->new_to_old);
    if (!map->old_to_new || !map->new_to_old) {
        fkd_vocab_map_free(map);
        return fkd_error_set(err, FKD_E_NOMEM, "out of memory for a %d-token id map", old_vocab);
    }
    int at = 0;
    for (int i = 0; i < old_vocab; i++) {
        map->old_to_new[i] = keep[i] ? at : -1;
        if (keep[i]) map->new_to_old[at++] = i;
    }
    return 0;
}

static int32_t remap_id(const fkd_vocab_map *m, int32_t id)
{
    return id >= 0 && id < m->old_vocab ? m->old_to_new[id] : -1;
}

/* The trimmed tables: kept tokens in order, kept merges in order. */
static int tables_trim(fkd_bpe_tables *out, const fkd_bpe_tables *t, const fkd_vocab_map *map,
                       const merge_ids *mi, fkd_error *err)
{
    int nm = 0;
    size_t text = 0;
    for (int i = 0; i < map->new_vocab; i++) text += t->token_lens[map->new_to_old[i]];
    for (int r = 0; r < t->n_merges; r++)
        if (mi[r].result >= 0 && map->old_to_new[mi[r].left] >= 0 &&
            map->old_to_new[mi[r].right] >= 0 && map->old_to_new[mi[r].result] >= 0)
            nm++, text += t->merge_lens[r];
    if (tables_alloc(out, map->new_vocab, nm, text, err) != 0) return -1;
    size_t at = 0;
    for (int i = 0; i < map->new_vocab; i++) {
        int32_t o = map->new_to_old[i];
        copy_strings(out->tokens + i, out->token_lens + i, out->text, &at,
                     (const char *const *)&t->tokens[o], &t->token_lens[o], 1);
        out->token_types[i] = t->token_types[o];
    }
    int k = 0;
    for (int r = 0; r < t->n_merges; r++)
        if (mi[r].result >= 0 && map->old_to_new[mi[r].left] >= 0 &&
            map->old_to_new[mi[r].right] >= 0 && map->old_to_new[mi[r].result] >= 0) {
            copy_strings(out->merges + k, out->merge_lens + k, out->text, &at,
                         (const char *const *)&t->merges[r], &t->merge_lens[r], 1);
            k++;
        }
    memcpy(out->pre, t->pre, sizeof out->pre);
    out->bos_id = remap_id(map, t->bos_id);
    out->eos_id = remap_id(map, t->eos_id);
    out->unk_id = remap_id(map, t->unk_id);
    out->pad_id = remap_id(map, t->pad_id);
    return 0;
}

int fkd_vocab_trim(fkd_vocab_map *map, fkd_bpe_tables *trimmed, const fkd_bpe_tables *full,
                   const int32_t *used, size_t n_used, fkd_error *err)
{
    memset(map, 0, sizeof *map);
    memset(trimmed, 0, sizeof *trimmed);
    spell_map sm = {0};
    merge_ids *mi = NULL;
    uint8_t *keep = calloc((size_t)full->n_tokens + 1, 1);
    int rc = -1;
    if (!keep) {
        fkd_error_set(err, FKD_E_NOMEM, "out of memory trimming %d tokens", full->n_tokens);
        goto done;
    }
    if (spell_map_build(&sm, full, err) != 0 || merges_resolve(&mi, full, &sm, err) != 0 ||
        mark_seeds(keep, full, &sm, used, n_used, err) != 0 ||
        close_under_merges(keep, full, &sm, mi, err) != 0 ||
        map_from_keep(map, keep, full->n_tokens, err) != 0)
        goto done;
    if (tables_trim(trimmed, full, map, mi, err) != 0) {
        fkd_vocab_map_free(map);
        goto done;
    }
    rc = 0;
done:
    free(sm.slots);
    free(mi);
    free(keep);
    return rc;
}

int fkd_vocab_map_from_tables(fkd_vocab_map *map, const fkd_bpe_tables *full,
                              const fkd_bpe_tables *trimmed, fkd_error *err)
{
    memset(map, 0, sizeof *map);
    spell_map sm = {0};
    uint8_t *keep = calloc((size_t)full->n_tokens + 1, 1);
    int rc = -1;
    if (!keep) {
        fkd_error_set(err, FKD_E_NOMEM, "out of memory for a %d-token id map", full->n_tokens);
        goto done;
    }
    if (spell_map_build(&sm, full, err) != 0) goto done;
    int32_t prev = -1;
    for (int i = 0; i < trimmed->n_tokens; i++) {
        int32_t o = spell_map_find(&sm, trimmed->tokens[i], trimmed->token_lens[i]);
        if (o <= prev) {
            fkd_error_set(err, FKD_E_MISMATCH, "token %d of the trimmed vocabulary %s; it was "
                          "not trimmed from this tokenizer", i,
                          o < 0 ? "is not in the full one" : "is out of the full one's order");
            goto done;
        }
        keep[o] = 1;
        prev = o;
    }
    rc = map_from_keep(map, keep, full->n_tokens, err);
done:
    free(sm.slots);
    free(keep);
    return rc;
}

int fkd_vocab_remap_tokens(int32_t *out, const int32_t *in, size_t n, const fkd_vocab_map *m,
                           fkd_error *err)
{
    for (size_t i = 0; i < n; i++) /* all checked first: out may be in */
        if (remap_id(m, in[i]) < 0)
            return fkd_error_set(err, FKD_E_MISMATCH, "token %d at %zu is not in the trimmed "
                                 "vocabulary; trim it from text that covers this text", in[i], i);
    for (size_t i = 0; i < n; i++) out[i] = remap_id(m, in[i]);
    return 0;
}

/* One position: kept (id, p) pairs move to the front in order; the freed
 * slots get probability 0 and the highest new ids not already present (rare
 * merges, never a duplicate), so the mass of dropped ids joins the rest. */
static void remap_position(int32_t *ids, float *probs, int k, const fkd_vocab_map *m)
{
    int kept = 0;
    for (int j = 0; j < k; j++) {
        int32_t id = remap_id(m, ids[j]);
        if (id < 0 || probs[j] <= 0.0f) continue;
        ids[kept] = id;
        probs[kept++] = probs[j];
    }
    int32_t filler = m->new_vocab - 1;
    for (int j = kept; j < k; j++) {
        for (;;) {
            int dup = 0;
            for (int i = 0; i < j && !dup; i++) dup = ids[i] == filler;
            if (!dup) break;
            filler--;
        }
        ids[j] = filler--;
        probs[j] = 0.0f;
    }
}

int fkd_vocab_remap_softlabels(fkd_softlabel_shard *s, const fkd_vocab_map *m, fkd_error *err)
{
    if (s->vocab != m->old_vocab)
        return fkd_error_set(err, FKD_E_MISMATCH, "the soft labels are over %d tokens; the id map "
                             "is from %d", s->vocab, m->old_vocab);
    if (m->new_vocab < s->k)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "a trimmed vocabulary of %d tokens cannot "
                             "carry top-%d labels", m->new_vocab, s->k);
    if (fkd_vocab_remap_tokens(s->tokens, s->tokens, (size_t)s->n, m, err) != 0) return -1;
    for (int64_t i = 0; i < s->n; i++)
        remap_position(s->ids + i * s->k, s->probs + i * s->k, s->k, m);
    s->vocab = m->new_vocab;
    return 0;
}
