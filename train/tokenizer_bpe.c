/* tokenizer_bpe.c — byte-level BPE as GPT-2 defined it and Hugging Face's
 * `tokenizers` runs it, over any bytes.
 *
 * Encoding has three stages:
 *  1. special tokens (only when asked): control and user-defined tokens
 *     written out in the text are cut out and emitted as their ids;
 *  2. pre-tokenization splits the rest into pieces: for "smollm" every
 *     numeric character first stands alone, then the GPT-2 pattern
 *        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *     cuts each stretch (a hand-written matcher of exactly that pattern);
 *  3. each piece starts as one symbol per byte and merges the adjacent pair
 *     of lowest rank, leftmost first, until no pair has a rank (a min-heap of
 *     candidate pairs with stale entries skipped, so long pieces stay n log n).
 * Bytes that are not valid UTF-8 are characters of their own, of no class, so
 * every input encodes, and decoding returns it exactly when the vocabulary has
 * a token for every byte (bytes without one are left out, as the reference
 * implementations do).
 *
 * The tables are built once and only read afterwards, so one tokenizer may
 * encode from several threads at once. Ids are mapped on the raw bytes of
 * each token (GPT-2's byte-to-unicode spelling undone at load time), which
 * makes the merge table a hash of (left id, right id) -> (rank, merged id). */
#include "fkd_train.h"
#include "tokenizer_bpe.h"
#include "tokenizer_unicode.h"

#include <stdlib.h>
#include <string.h>

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };
enum { PRE_GPT2 = 0, PRE_SMOLLM = 1 };
enum { CH_OTHER = 0, CH_LETTER, CH_NUMBER, CH_SPACE };

#define PIECE_CACHE_SLOTS 4096   /* per call, for texts above PIECE_CACHE_MIN_TEXT */
#define PIECE_CACHE_MIN_TEXT 4096
#define PIECE_CACHE_MAX 24       /* bytes of a cached piece (and at most as many ids) */

typedef struct {
    uint64_t key;      /* left << 32 | right, or UINT64_MAX when empty */
    int32_t rank, merged;
} merge_slot;

struct fkd_bpe {
    int n_tokens;
    int pre;                  /* PRE_... */
    uint8_t *bytes;           /* every token's raw bytes, back to back */
    uint32_t *offsets;        /* (n_tokens + 1) into bytes */
    uint8_t *types;           /* TT_... */
    int32_t byte_token[256];  /* the token of each single byte */
    merge_slot *merges;
    size_t merge_mask;        /* slots - 1 */
    int32_t *specials;        /* control/user-defined ids, longest text first */
    int n_specials;
    uint8_t special_first[256]; /* 1: some special token starts with this byte */
};

/* ---- GPT-2's byte-level spelling --------------------------------------------
 * Printable bytes stand for themselves; the other 68 are renamed to code points
 * from 256 upward, in byte order, so that every byte is a visible character. */
static int byte_is_printable(int b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

static uint32_t byte_code_point(uint8_t b)
{
    if (byte_is_printable(b)) return b;
    uint32_t n = 0;
    for (int c = 0; c < b; c++) n += !byte_is_printable(c);
    return 256 + n;
}

static int utf8_put(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;  /* the spelling never goes above U+07FF */
}

int fkd_bpe_byte_spelling(char out[2], uint8_t b)
{
    return utf8_put(out, byte_code_point(b));
}

/* ---- UTF-8 and character classes ------------------------------------------ */

/* The character at s (n > 0 bytes left): its length and code point, or
 * length 1 and cp = UINT32_MAX for a byte that does not start valid UTF-8. */
static int utf8_next(uint32_t *cp, const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    int len;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xE0) == 0xC0) {
        len = 2, v = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, v = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        *cp = UINT32_MAX;
        return 1;
    }
    if ((size_t)len > n) goto bad;
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) goto bad;
        v = v << 6 | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) goto bad;
    *cp = v;
    return len;
bad:
    *cp = UINT32_MAX;
    return 1;
}

static int in_ranges(uint32_t cp, const uint32_t (*r)[2], size_t n)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid][0]) hi = mid;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

/* Unicode White_Space, the \s of the pattern. */
static int is_white_space(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 ||
           cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
           cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

static int char_class(uint32_t cp)
{
    if (cp < 0x80) {
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return CH_LETTER;
        if (cp >= '0' && cp <= '9') return CH_NUMBER;
        return is_white_space(cp) ? CH_SPACE : CH_OTHER;
    }
    if (cp == UINT32_MAX) return CH_OTHER;
    if (is_white_space(cp)) return CH_SPACE;
    if (in_ranges(cp, unicode_letters, sizeof unicode_letters / sizeof unicode_letters[0]))
        return CH_LETTER;
    if (in_ranges(cp, unicode_numbers, sizeof unicode_numbers / sizeof unicode_numbers[0]))
        return CH_NUMBER;
    return CH_OTHER;
}

/* The class and length of the character at s[i] (i < end). */
static int class_at(const uint8_t *s, size_t i, size_t end, int *len)
{
    uint32_t cp;
    *len = utf8_next(&cp, s + i, end - i);
    return char_class(cp);
}

/* ---- the GPT-2 pattern -------------------------------------------------------- */

/* End of the run of characters of class cls starting at i. */
static size_t run_end(const uint8_t *s, size_t i, size_t end, int cls)
{
    while (i < end) {
        int len;
        if (class_at(s, i, end, &len) != cls) break;
        i += (size_t)len;
    }
    return i;
}

static size_t contraction(const uint8_t *s, size_t i, size_t end)
{
    if (s[i] != '\'' || i + 1 >= end) return 0;
    uint8_t a = s[i + 1], b = i + 2 < end ? s[i + 2] : 0;
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

/* Length of the match of the pattern at s[i] (i < end); always >= 1. */
static size_t gpt2_match(const uint8_t *s, size_t i, size_t end)
{
    size_t c = contraction(s, i, end);
    if (c) return c;
    int len, cls = class_at(s, i, end, &len);
    size_t j = i;
    if (s[i] == ' ' && i + 1 < end) {  /* " ?" before letters, numbers, others */
        int len2, next = class_at(s, i + 1, end, &len2);
        if (next != CH_SPACE) {
            cls = next;
            j = i + 1;
        }
    }
    if (cls != CH_SPACE) return run_end(s, j, end, cls) - i;
    /* White space: \s+(?!\S) takes the run but its last character when a
     * non-space follows, if that leaves any; otherwise \s+ takes the one. */
    size_t k = run_end(s, i, end, CH_SPACE);
    if (k == end) return k - i;
    size_t last = i;
    for (size_t at = i; at < k; at += (size_t)len) {
        last = at;
        class_at(s, at, end, &len);
    }
    return last > i ? last - i : k - i;
}

/* ---- hashing ----------------------------------------------------------------- */

static uint64_t hash_bytes(const uint8_t *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    return h;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static const merge_slot *merge_find(const fkd_bpe *b, int32_t left, int32_t right)
{
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    for (size_t i = mix64(key) & b->merge_mask;; i = (i + 1) & b->merge_mask) {
        const merge_slot *m = &b->merges[i];
        if (m->key == key) return m;
        if (m->key == UINT64_MAX) return NULL;
    }
}

/* ---- BPE over one piece ------------------------------------------------------ */

typedef struct {
    int32_t id;
    int prev, next;    /* -1 at the ends */
} symbol;

typedef struct {
    int32_t rank;
    int left, right;   /* symbol positions */
    int32_t left_id, right_id;
} candidate;

static int cand_less(const candidate *a, const candidate *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void heap_push(candidate *h, int *n, candidate c)
{
    int i = (*n)++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!cand_less(&c, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}

static candidate heap_pop(candidate *h, int *n)
{
    candidate top = h[0], last = h[--(*n)];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && cand_less(&h[c + 1], &h[c])) c++;
        if (!cand_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = last;
    return top;
}

static void push_pair(const fkd_bpe *b, candidate *heap, int *n, const symbol *sym, int left)
{
    int right = sym[left].next;
    if (left < 0 || right < 0) return;
    const merge_slot *m = merge_find(b, sym[left].id, sym[right].id);
    if (!m) return;
    heap_push(heap, n, (candidate){m->rank, left, right, sym[left].id, sym[right].id});
}

/* Scratch for bpe_piece, grown to the longest piece seen. */
typedef struct {
    symbol *sym;
    candidate *heap;
    size_t cap;
} bpe_scratch;

static int scratch_reserve(bpe_scratch *s, size_t n)
{
    if (n <= s->cap) return 0;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < n) cap *= 2;
    symbol *sym = realloc(s->sym, cap * sizeof *sym);
    if (sym) s->sym = sym;
    /* Each merge pushes at most two pairs: n initial + 2n, bounded by 3n. */
    candidate *heap = realloc(s->heap, 3 * cap * sizeof *heap);
    if (heap) s->heap = heap;
    if (!sym || !heap) return -1;
    s->cap = cap;
    return 0;
}

/* Appends the ids of piece s (n bytes) to out; returns how many. Bytes the
 * vocabulary has no token for are left out, as `tokenizers` and llama.cpp
 * do, and the pairs around them may merge. */
static size_t bpe_piece(int32_t *out, const fkd_bpe *b, const uint8_t *s, size_t n,
                        bpe_scratch *sc)
{
    symbol *sym = sc->sym;
    int ns = 0, nh = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = b->byte_token[s[i]];
        if (id < 0) continue;
        sym[ns] = (symbol){id, ns - 1, -1};
        if (ns > 0) sym[ns - 1].next = ns;
        ns++;
    }
    for (int i = 0; i + 1 < ns; i++) push_pair(b, sc->heap, &nh, sym, i);
    while (nh > 0) {
        candidate c = heap_pop(sc->heap, &nh);
        symbol *l = &sym[c.left];
        if (l->id != c.left_id || l->next != c.right || sym[c.right].id != c.right_id)
            continue;  /* stale: one side has merged since */
        const merge_slot *m = merge_find(b, c.left_id, c.right_id);
        l->id = m->merged;
        l->next = sym[c.right].next;
        if (l->next >= 0) sym[l->next].prev = c.left;
        sym[c.right].id = -1;
        if (l->prev >= 0) push_pair(b, sc->heap, &nh, sym, l->prev);
        push_pair(b, sc->heap, &nh, sym, c.left);
    }
    size_t k = 0;
    for (int i = ns ? 0 : -1; i >= 0; i = sym[i].next) out[k++] = sym[i].id;
    return k;
}

/* ---- the per-call piece cache ------------------------------------------------ */

typedef struct {
    uint8_t len, n_ids;
    uint8_t bytes[PIECE_CACHE_MAX];
    int32_t ids[PIECE_CACHE_MAX];
} cache_slot;

/* ---- encoding ----------------------------------------------------------------- */

typedef struct {
    const fkd_bpe *b;
    int32_t *out;
    size_t cap, n;
    bpe_scratch scratch;
    cache_slot *cache;   /* NULL for short texts */
    fkd_error *err;
} encoder;

static int emit_piece(encoder *e, const uint8_t *s, size_t n)
{
    /* Every id covers at least one byte, so n slots always suffice. */
    if (n > e->cap - e->n)
        return fkd_error_set(e->err, FKD_E_LIMIT, "the text needs more than %zu token slots",
                             e->cap);
    cache_slot *slot = NULL;
    if (e->cache && n <= PIECE_CACHE_MAX) {
        slot = &e->cache[hash_bytes(s, n) & (PIECE_CACHE_SLOTS - 1)];
        if (slot->len == n && memcmp(slot->bytes, s, n) == 0) {
            memcpy(e->out + e->n, slot->ids, slot->n_ids * sizeof *slot->ids);
            e->n += slot->n_ids;
            return 0;
        }
    }
    if (scratch_reserve(&e->scratch, n) != 0)
        return fkd_error_set(e->err, FKD_E_NOMEM, "out of memory for a %zu-byte piece", n);
    size_t k = bpe_piece(e->out + e->n, e->b, s, n, &e->scratch);
    if (slot) {
        slot->len = (uint8_t)n;
        slot->n_ids = (uint8_t)k;
        memcpy(slot->bytes, s, n);
        memcpy(slot->ids, e->out + e->n, k * sizeof *slot->ids);
    }
    e->n += k;
    return 0;
}

/* Runs the GPT-2 pattern over s[0..end). */
static int encode_stretch(encoder *e, const uint8_t *s, size_t end)
{
    for (size_t i = 0; i < end;) {
        size_t m = gpt2_match(s, i, end);
        if (emit_piece(e, s + i, m) != 0) return -1;
        i += m;
    }
    return 0;
}

/* Pre-tokenizes and encodes text without special tokens. */
static int encode_text(encoder *e, const uint8_t *s, size_t n)
{
    if (e->b->pre != PRE_SMOLLM) return encode_stretch(e, s, n);
    size_t start = 0;
    for (size_t i = 0; i < n;) {
        int len;
        if (class_at(s, i, n, &len) != CH_NUMBER) {
            i += (size_t)len;
            continue;
        }
        if (encode_stretch(e, s + start, i - start) != 0 ||
            emit_piece(e, s + i, (size_t)len) != 0)
            return -1;
        i += (size_t)len;
        start = i;
    }
    return encode_stretch(e, s + start, n - start);
}

/* The special token whose text starts s (n bytes left), longest first; -1 if none. */
static int32_t special_at(const fkd_bpe *b, const uint8_t *s, size_t n)
{
    if (!b->special_first[s[0]]) return -1;
    for (int i = 0; i < b->n_specials; i++) {
        int32_t id = b->specials[i];
        size_t len = b->offsets[id + 1] - b->offsets[id];
        if (len <= n && memcmp(s, b->bytes + b->offsets[id], len) == 0) return id;
    }
    return -1;
}

static int encode_with_specials(encoder *e, const uint8_t *s, size_t n)
{
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = special_at(e->b, s + i, n - i);
        if (id < 0) continue;
        if (encode_text(e, s + start, i - start) != 0) return -1;
        if (e->n == e->cap)
            return fkd_error_set(e->err, FKD_E_LIMIT, "the text needs more than %zu token "
                                 "slots", e->cap);
        e->out[e->n++] = id;
        i += e->b->offsets[id + 1] - e->b->offsets[id] - 1;
        start = i + 1;
    }
    return encode_text(e, s + start, n - start);
}

int fkd_bpe_encode(int32_t *tokens, size_t capacity, size_t *n_tokens, const fkd_bpe *bpe,
                   const uint8_t *text, size_t bytes, int special, fkd_error *err)
{
    encoder e = {.b = bpe, .out = tokens, .cap = capacity, .err = err};
    *n_tokens = 0;
    if (bytes >= PIECE_CACHE_MIN_TEXT) e.cache = calloc(PIECE_CACHE_SLOTS, sizeof *e.cache);
    int rc = special ? encode_with_specials(&e, text, bytes) : encode_text(&e, text, bytes);
    free(e.cache);
    free(e.scratch.sym);
    free(e.scratch.heap);
    if (rc == 0) *n_tokens = e.n;
    return rc;
}

int fkd_bpe_decode(uint8_t *out, size_t capacity, size_t *n_bytes, const fkd_bpe *bpe,
                   const int32_t *tokens, size_t n_tokens, fkd_error *err)
{
    size_t n = 0;
    *n_bytes = 0;
    for (size_t i = 0; i < n_tokens; i++) {
        int32_t id = tokens[i];
        if (id < 0 || id >= bpe->n_tokens)
            return fkd_error_set(err, FKD_E_INVALID_ARG, "token %d at %zu is outside the "
                                 "vocabulary of %d", id, i, bpe->n_tokens);
        size_t len = bpe->offsets[id + 1] - bpe->offsets[id];
        if (len > capacity - n)
            return fkd_error_set(err, FKD_E_LIMIT, "the decoded text is longer than %zu bytes",
                                 capacity);
        memcpy(out + n, bpe->bytes + bpe->offsets[id], len);
        n += len;
    }
    *n_bytes = n;
    return 0;
}

/* ---- building the tables ------------------------------------------------------ */

void fkd_bpe_free(fkd_bpe *b)
{
    if (!b) return;
    free(b->bytes);
    free(b->offsets);
    free(b->types);
    free(b->merges);
    free(b->specials);
    free(b);
}

/* Undoes GPT-2's spelling: out gets the raw bytes; -1 when some character is
 * not the spelling of a byte (the token is then kept as written). */
static int unspell(uint8_t *out, const int16_t *byte_of_cp, const uint8_t *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += (size_t)utf8_next(&cp, s + i, n - i);
        if (cp >= 512 || byte_of_cp[cp] < 0) return -1;
        out[k++] = (uint8_t)byte_of_cp[cp];
    }
    return (int)k;
}

/* Spelling -> id, for reading the merges (open addressing over the spellings). */
typedef struct {
    int32_t *slots;
    size_t mask;
    const char *const *strs;
    const uint32_t *lens;
} spell_index;

static int spell_find(const spell_index *ix, const char *s, size_t n)
{
    for (size_t i = hash_bytes((const uint8_t *)s, n) & ix->mask;; i = (i + 1) & ix->mask) {
        int32_t id = ix->slots[i];
        if (id < 0) return -1;
        if (ix->lens[id] == n && memcmp(ix->strs[id], s, n) == 0) return id;
    }
}

static int spell_index_build(spell_index *ix, const char *const *strs, const uint32_t *lens,
                             int n)
{
    size_t slots = 1;
    while (slots < 2 * (size_t)n) slots *= 2;
    ix->slots = malloc(slots * sizeof *ix->slots);
    if (!ix->slots) return -1;
    memset(ix->slots, 0xFF, slots * sizeof *ix->slots);
    ix->mask = slots - 1;
    ix->strs = strs;
    ix->lens = lens;
    for (int id = 0; id < n; id++) {
        if (spell_find(ix, strs[id], lens[id]) >= 0) continue;  /* the first one wins */
        size_t i = hash_bytes((const uint8_t *)strs[id], lens[id]) & ix->mask;
        while (ix->slots[i] >= 0) i = (i + 1) & ix->mask;
        ix->slots[i] = id;
    }
    return 0;
}

static int build_tokens(fkd_bpe *b, const char *const *tokens, const uint32_t *lens,
                        const int32_t *types, fkd_error *err)
{
    int16_t byte_of_cp[512];
    memset(byte_of_cp, 0xFF, sizeof byte_of_cp);
    for (int c = 0; c < 256; c++) byte_of_cp[byte_code_point((uint8_t)c)] = (int16_t)c;
    size_t total = 0;
    for (int i = 0; i < b->n_tokens; i++) {
        if (lens[i] == 0 || lens[i] > FKD_BPE_MAX_TOKEN_BYTES)
            return fkd_error_set(err, FKD_E_FORMAT, "token %d is %u bytes long; tokens take 1 to "
                                 "%d", i, lens[i], FKD_BPE_MAX_TOKEN_BYTES);
        total += lens[i];
    }
    b->bytes = malloc(total);
    b->offsets = malloc(((size_t)(uint32_t)b->n_tokens + 1) * sizeof *b->offsets);
    b->types = malloc((size_t)(uint32_t)b->n_tokens);
    if (!b->bytes || !b->offsets || !b->types)
        return fkd_error_set(err, FKD_E_NOMEM, "out of memory for %d tokens", b->n_tokens);
    size_t at = 0;
    for (int i = 0; i < b->n_tokens; i++) {
        int t = types ? types[i] : TT_NORMAL;
        b->types[i] = (uint8_t)(t >= TT_NORMAL && t <= TT_BYTE ? t : TT_NORMAL);
        b->offsets[i] = (uint32_t)at;
        int raw = b->types[i] == TT_CONTROL || b->types[i] == TT_USER;
        int k = raw ? -1 : unspell(b->bytes + at, byte_of_cp, (const uint8_t *)tokens[i], lens[i]);
        if (k < 0) {
            memcpy(b->bytes + at, tokens[i], lens[i]);
            k = (int)lens[i];
        }
        at += (size_t)k;
    }
    b->offsets[b->n_tokens] = (uint32_t)at;
    return 0;
}

/* The token of each single byte; -1 for bytes the vocabulary lacks (SmolLM2
 * has no token for 21 of them, 0x04 and 0xFF among them). */
static void build_bytes(fkd_bpe *b, const spell_index *ix)
{
    for (int c = 0; c < 256; c++) {
        char sp[2];
        int n = fkd_bpe_byte_spelling(sp, (uint8_t)c);
        b->byte_token[c] = spell_find(ix, sp, (size_t)n);
    }
}

static void merge_insert(fkd_bpe *b, int32_t left, int32_t right, int32_t rank, int32_t merged)
{
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t i = mix64(key) & b->merge_mask;
    while (b->merges[i].key != UINT64_MAX) {
        if (b->merges[i].key == key) return;  /* the first rank wins */
        i = (i + 1) & b->merge_mask;
    }
    b->merges[i] = (merge_slot){key, rank, merged};
}

/* Merges whose parts or result are not tokens are skipped: they can never fire. */
static int build_merges(fkd_bpe *b, const spell_index *ix, const char *const *merges,
                        const uint32_t *lens, int n, fkd_error *err)
{
    size_t slots = 1;
    while (slots < 2 * (size_t)n + 2) slots *= 2;
    b->merges = malloc(slots * sizeof *b->merges);
    char *joined = malloc(2 * FKD_BPE_MAX_TOKEN_BYTES + 1);
    if (!b->merges || !joined) {
        free(joined);
        return fkd_error_set(err, FKD_E_NOMEM, "out of memory for %d merges", n);
    }
    for (size_t i = 0; i < slots; i++) b->merges[i].key = UINT64_MAX;
    b->merge_mask = slots - 1;
    for (int r = 0; r < n; r++) {
        const char *m = merges[r];
        const char *sp = memchr(m, ' ', lens[r]);
        if (!sp || lens[r] > 2 * FKD_BPE_MAX_TOKEN_BYTES) continue;
        size_t la = (size_t)(sp - m), lb = lens[r] - la - 1;
        int32_t left = spell_find(ix, m, la), right = spell_find(ix, sp + 1, lb);
        memcpy(joined, m, la);
        memcpy(joined + la, sp + 1, lb);
        int32_t merged = spell_find(ix, joined, la + lb);
        if (left >= 0 && right >= 0 && merged >= 0) merge_insert(b, left, right, r, merged);
    }
    free(joined);
    return 0;
}

/* 1 when special a must come after c: shorter text, or as long and a later id. */
static int special_after(const fkd_bpe *b, int32_t a, int32_t c)
{
    size_t la = b->offsets[a + 1] - b->offsets[a], lc = b->offsets[c + 1] - b->offsets[c];
    return la != lc ? la < lc : a > c;
}

static int build_specials(fkd_bpe *b, fkd_error *err)
{
    b->specials = malloc((size_t)b->n_tokens * sizeof *b->specials);
    if (!b->specials) return fkd_error_set(err, FKD_E_NOMEM, "out of memory for special tokens");
    for (int32_t id = 0; id < b->n_tokens; id++) {
        if (b->types[id] != TT_CONTROL && b->types[id] != TT_USER) continue;
        b->specials[b->n_specials++] = id;
        b->special_first[b->bytes[b->offsets[id]]] = 1;
    }
    /* Longest first, so that a special token that prefixes another loses. */
    for (int i = 1; i < b->n_specials; i++)
        for (int j = i; j > 0 && special_after(b, b->specials[j - 1], b->specials[j]); j--) {
            int32_t t = b->specials[j];
            b->specials[j] = b->specials[j - 1];
            b->specials[j - 1] = t;
        }
    return 0;
}

static int pre_from_name(int *pre, const char *name, fkd_error *err)
{
    if (strcmp(name, "gpt2") == 0) *pre = PRE_GPT2;
    else if (strcmp(name, "smollm") == 0) *pre = PRE_SMOLLM;
    else
        return fkd_error_set(err, FKD_E_UNSUPPORTED, "pre-tokenizer \"%s\" is not implemented; "
                             "fedkd knows \"gpt2\" and \"smollm\"", name);
    return 0;
}

int fkd_tokenizer_init_bpe(fkd_tokenizer *tok, const char *const *tokens,
                           const uint32_t *token_lens, const int32_t *token_types, int n_tokens,
                           const char *const *merges, const uint32_t *merge_lens, int n_merges,
                           int32_t bos_id, int32_t eos_id, const char *pre, fkd_error *err)
{
    memset(tok, 0, sizeof *tok);
    if (n_tokens < 256 || n_tokens > (1 << 24) || n_merges < 0 || n_merges > (1 << 24))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "a byte-level BPE takes 256 to 2^24 tokens "
                             "and up to 2^24 merges, not %d and %d", n_tokens, n_merges);
    if (bos_id < -1 || bos_id >= n_tokens || eos_id < -1 || eos_id >= n_tokens)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "bos %d or eos %d is outside the vocabulary",
                             bos_id, eos_id);
    fkd_bpe *b = calloc(1, sizeof *b);
    if (!b) return fkd_error_set(err, FKD_E_NOMEM, "out of memory for a tokenizer");
    b->n_tokens = n_tokens;
    spell_index ix = {0};
    int rc = pre_from_name(&b->pre, pre, err);
    if (rc == 0) rc = build_tokens(b, tokens, token_lens, token_types, err);
    if (rc == 0 && spell_index_build(&ix, tokens, token_lens, n_tokens) != 0)
        rc = fkd_error_set(err, FKD_E_NOMEM, "out of memory indexing %d tokens", n_tokens);
    if (rc == 0) build_bytes(b, &ix);
    if (rc == 0) rc = build_merges(b, &ix, merges, merge_lens, n_merges, err);
    if (rc == 0) rc = build_specials(b, err);
    free(ix.slots);
    if (rc != 0) {
        fkd_bpe_free(b);
        return -1;
    }
    tok->kind = FKD_TOKENIZER_BPE;
    tok->vocab = n_tokens;
    tok->bos_id = bos_id;
    tok->eos_id = eos_id;
    tok->bpe = b;
    return 0;
}
