/* data_corpus.c — reads a text corpus: a directory whose entries are its
 * natural partitions (a file, or a sub-directory of files), each cut into
 * documents.
 *
 * Documents are told apart per file, in this order (docs/data.md):
 *   1. a line holding only "%" (the fortune format)  -> FKD_DOCS_PERCENT
 *   2. else one or more blank lines                 -> FKD_DOCS_BLANK_LINE
 *   3. else the whole file is one document           -> FKD_DOCS_WHOLE_FILE
 * A document keeps its inner newlines; the whitespace-only lines around it
 * and its final newline are dropped (the token stream puts a separator there).
 *
 * All text lives in one buffer; documents are (offset, bytes) into it.
 * Exact duplicate documents are dropped, so a split at the document level
 * can never put the same text in two splits. */
#include "fkd_train.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The server's public corpus: broad, general categories (like a web crawl);
 * the rest are narrow domains that play the clients' private texts. */
const char fkd_data_default_public[] =
    "computers,cookie,definitions,fortunes,humorists,literature,miscellaneous,people,"
    "platitudes,politics,science,wisdom,work";
/* Not text a language model should learn from (pictures, other languages)
 * or too small for three splits. */
const char fkd_data_default_excluded[] = "ascii-art,pratchett,translate-me";

#define CORPUS_MAX_ENTRIES 4096
#define DEDUP_EMPTY UINT32_MAX

fkd_corpus_options fkd_corpus_defaults(int side)
{
    fkd_corpus_options o = {0};
    o.side = side;
    return o;
}

/* ---- document detection ------------------------------------------------- */

static int line_is(const uint8_t *line, size_t len, char c)
{
    if (len > 0 && line[len - 1] == '\r') len--;
    return len == 1 && line[0] == (uint8_t)c;
}

static int line_is_blank(const uint8_t *line, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (line[i] != ' ' && line[i] != '\t' && line[i] != '\r') return 0;
    return 1;
}

static int detect_format(const uint8_t *text, size_t bytes)
{
    int has_blank = 0;
    size_t start = 0;
    while (start < bytes) {
        const uint8_t *nl = memchr(text + start, '\n', bytes - start);
        size_t end = nl ? (size_t)(nl - text) : bytes;
        if (line_is(text + start, end - start, '%')) return FKD_DOCS_PERCENT;
        /* a blank line between two non-blank ones separates paragraphs */
        if (nl && line_is_blank(text + start, end - start) && start > 0 && end + 1 < bytes)
            has_blank = 1;
        start = end + 1;
    }
    return has_blank ? FKD_DOCS_BLANK_LINE : FKD_DOCS_WHOLE_FILE;
}

/* Trims whitespace-only lines at both ends and the final newline. */
static void trim_doc(const uint8_t **doc, size_t *bytes)
{
    const uint8_t *p = *doc;
    size_t n = *bytes;
    for (;;) { /* leading blank lines */
        const uint8_t *nl = memchr(p, '\n', n);
        if (!nl || !line_is_blank(p, (size_t)(nl - p))) break;
        n -= (size_t)(nl - p) + 1;
        p = nl + 1;
    }
    while (n > 0 && (p[n - 1] == '\n' || p[n - 1] == '\r' || p[n - 1] == ' ' ||
                     p[n - 1] == '\t'))
        n--;
    *doc = p;
    *bytes = n;
}

static int emit(int (*fn)(void *, const uint8_t *, size_t), void *ctx, const uint8_t *doc,
                size_t bytes)
{
    trim_doc(&doc, &bytes);
    return bytes ? fn(ctx, doc, bytes) : 0;
}

int fkd_docs_split(const uint8_t *text, size_t bytes,
                   int (*fn)(void *ctx, const uint8_t *doc, size_t doc_bytes), void *ctx)
{
    int format = detect_format(text, bytes);
    if (format == FKD_DOCS_WHOLE_FILE) return emit(fn, ctx, text, bytes) ? -1 : format;
    size_t doc_start = 0, start = 0;
    while (start < bytes) {
        const uint8_t *nl = memchr(text + start, '\n', bytes - start);
        size_t end = nl ? (size_t)(nl - text) : bytes;
        int sep = format == FKD_DOCS_PERCENT ? line_is(text + start, end - start, '%')
                                             : line_is_blank(text + start, end - start);
        if (sep) {
            if (emit(fn, ctx, text + doc_start, start - doc_start) != 0) return -1;
            doc_start = end + 1 < bytes ? end + 1 : bytes;
        }
        start = end + 1;
    }
    if (doc_start < bytes && emit(fn, ctx, text + doc_start, bytes - doc_start) != 0) return -1;
    return format;
}

/* ---- the corpus being built ---------------------------------------------- */

typedef struct {
    fkd_corpus *c;
    uint64_t text_cap;
    uint32_t docs_cap;
    uint32_t *dedup;        /* open-addressing table of document indices */
    uint32_t dedup_cap;     /* power of two */
    uint64_t max_bytes;
    int full;               /* max_bytes reached */
    fkd_error *err;
} builder;

static uint64_t hash_bytes(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

static int dedup_grow(builder *b)
{
    uint32_t cap = b->dedup_cap ? b->dedup_cap * 2 : 4096;
    uint32_t *t = malloc((size_t)cap * sizeof *t);
    if (!t) return fkd_error_set(b->err, FKD_E_NOMEM, "out of memory for the duplicate table");
    for (uint32_t i = 0; i < cap; i++) t[i] = DEDUP_EMPTY;
    for (uint32_t d = 0; d < b->c->n_docs; d++) {
        const fkd_doc *doc = &b->c->docs[d];
        uint32_t i = (uint32_t)hash_bytes(b->c->text + doc->offset, doc->bytes) & (cap - 1);
        while (t[i] != DEDUP_EMPTY) i = (i + 1) & (cap - 1);
        t[i] = d;
    }
    free(b->dedup);
    b->dedup = t;
    b->dedup_cap = cap;
    return 0;
}

/* Returns the slot where doc would go, or UINT32_MAX if an equal doc exists. */
static uint32_t dedup_find(const builder *b, const uint8_t *doc, size_t bytes)
{
    uint32_t mask = b->dedup_cap - 1;
    uint32_t i = (uint32_t)hash_bytes(doc, bytes) & mask;
    while (b->dedup[i] != DEDUP_EMPTY) {
        const fkd_doc *o = &b->c->docs[b->dedup[i]];
        if (o->bytes == bytes && memcmp(b->c->text + o->offset, doc, bytes) == 0)
            return UINT32_MAX;
        i = (i + 1) & mask;
    }
    return i;
}

static int reserve(builder *b, size_t bytes)
{
    fkd_corpus *c = b->c;
    if (c->text_bytes + bytes > b->text_cap) {
        uint64_t cap = b->text_cap ? b->text_cap : 1 << 20;
        while (cap < c->text_bytes + bytes) cap *= 2;
        uint8_t *t = realloc(c->text, cap);
        if (!t) return fkd_error_set(b->err, FKD_E_NOMEM, "out of memory for corpus text");
        c->text = t;
        b->text_cap = cap;
    }
    if (c->n_docs == b->docs_cap) {
        uint32_t cap = b->docs_cap ? b->docs_cap * 2 : 1024;
        fkd_doc *d = realloc(c->docs, (size_t)cap * sizeof *d);
        if (!d) return fkd_error_set(b->err, FKD_E_NOMEM, "out of memory for documents");
        c->docs = d;
        b->docs_cap = cap;
    }
    if ((uint64_t)(c->n_docs + 1) * 2 > b->dedup_cap) return dedup_grow(b);
    return 0;
}

static int add_doc(void *ctx, const uint8_t *doc, size_t bytes)
{
    builder *b = ctx;
    fkd_corpus *c = b->c;
    if (b->full) return 0;
    if (bytes > UINT32_MAX)
        return fkd_error_set(b->err, FKD_E_LIMIT, "a document of %zu bytes is too long", bytes);
    if (b->max_bytes && c->text_bytes + bytes > b->max_bytes) {
        b->full = 1;
        return 0;
    }
    if (reserve(b, bytes) != 0) return -1;
    uint32_t slot = dedup_find(b, doc, bytes);
    if (slot == UINT32_MAX) {
        c->n_duplicates++;
        return 0;
    }
    fkd_partition_info *part = &c->parts[c->n_parts - 1];
    memcpy(c->text + c->text_bytes, doc, bytes);
    c->docs[c->n_docs] = (fkd_doc){c->text_bytes, (uint32_t)bytes, (uint32_t)(c->n_parts - 1)};
    b->dedup[slot] = c->n_docs;
    c->text_bytes += bytes;
    c->n_docs++;
    part->n_docs++;
    part->bytes += bytes;
    return 0;
}

static int add_file(builder *b, const char *path, int *format)
{
    uint8_t *data;
    size_t bytes;
    if (fkd_file_read_all(&data, &bytes, path, FKD_DATA_MAX_FILE_BYTES, b->err) != 0) return -1;
    int f = fkd_docs_split(data, bytes, add_doc, b);
    free(data);
    if (f < 0) return -1;
    if (format && *format < 0) *format = f;
    return 0;
}

/* ---- directory listing ----------------------------------------------------- */

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int skipped_name(const char *name)
{
    return name[0] == '.' || has_suffix(name, ".dat") || has_suffix(name, ".u8") ||
           strstr(name, ".tmp.") != NULL;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **names, int n)
{
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* Sorted entry names of dir (skipping hidden and index files). */
static int list_dir(char ***names_out, int *n_out, const char *dir, fkd_error *err)
{
    *names_out = NULL;
    *n_out = 0;
    DIR *d = opendir(dir);
    if (!d)
        return fkd_error_set(err, FKD_E_IO, "cannot open corpus directory %s: %s", dir,
                             strerror(errno));
    char **names = calloc(CORPUS_MAX_ENTRIES, sizeof *names);
    int n = 0;
    struct dirent *e;
    while (names && (e = readdir(d)) != NULL) {
        if (skipped_name(e->d_name)) continue;
        if (n == CORPUS_MAX_ENTRIES || !(names[n] = strdup(e->d_name))) {
            closedir(d);
            free_names(names, n);
            return fkd_error_set(err, FKD_E_LIMIT, "%s has more than %d entries, or no memory",
                                 dir, CORPUS_MAX_ENTRIES);
        }
        n++;
    }
    closedir(d);
    if (!names) return fkd_error_set(err, FKD_E_NOMEM, "out of memory listing %s", dir);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    *names_out = names;
    *n_out = n;
    return 0;
}

static int in_list(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == n && strncmp(p, name, n) == 0) return 1;
        p = comma ? comma + 1 : NULL;
    }
    return 0;
}

static int wanted(const fkd_corpus_options *opt, const char *name)
{
    const char *pub = opt->public_list ? opt->public_list : fkd_data_default_public;
    const char *excl = opt->exclude_list ? opt->exclude_list : fkd_data_default_excluded;
    if (in_list(excl, name)) return 0;
    if (opt->side == FKD_SIDE_PUBLIC) return in_list(pub, name);
    if (opt->side == FKD_SIDE_PRIVATE) return !in_list(pub, name);
    return 1;
}

static int start_partition(builder *b, const char *name)
{
    fkd_corpus *c = b->c;
    fkd_partition_info *p = realloc(c->parts, (size_t)(c->n_parts + 1) * sizeof *p);
    if (!p) return fkd_error_set(b->err, FKD_E_NOMEM, "out of memory for partitions");
    c->parts = p;
    fkd_partition_info *part = &p[c->n_parts++];
    memset(part, 0, sizeof *part);
    snprintf(part->name, sizeof part->name, "%s", name);
    part->first_doc = c->n_docs;
    part->format = -1;
    return 0;
}

static int join_path(char *out, size_t cap, const char *dir, const char *name, fkd_error *err)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap)
        return fkd_error_set(err, FKD_E_LIMIT, "path %s/%s is too long", dir, name);
    return 0;
}

static int add_subdir(builder *b, const char *path, int *format)
{
    char **names;
    int n;
    if (list_dir(&names, &n, path, b->err) != 0) return -1;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        char file[2048];
        struct stat st;
        rc = join_path(file, sizeof file, path, names[i], b->err);
        if (rc == 0 && stat(file, &st) == 0 && S_ISREG(st.st_mode)) rc = add_file(b, file, format);
    }
    free_names(names, n);
    return rc;
}

static int add_entry(builder *b, const char *dir, const char *name)
{
    char path[2048];
    struct stat st;
    if (join_path(path, sizeof path, dir, name, b->err) != 0) return -1;
    if (stat(path, &st) != 0) return 0; /* a dangling link: not a partition */
    if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) return 0;
    if (start_partition(b, name) != 0) return -1;
    fkd_partition_info *part = &b->c->parts[b->c->n_parts - 1];
    int format = -1;
    int rc = S_ISDIR(st.st_mode) ? add_subdir(b, path, &format) : add_file(b, path, &format);
    part = &b->c->parts[b->c->n_parts - 1];
    part->format = format < 0 ? FKD_DOCS_WHOLE_FILE : format;
    if (rc == 0 && part->n_docs == 0) b->c->n_parts--; /* nothing in it */
    return rc;
}

/* Drops the first n_shadow partitions (and their documents), which were
 * loaded only so that private documents repeating public text are dropped. */
static void drop_shadow(fkd_corpus *c, int n_shadow)
{
    if (n_shadow == 0) return;
    uint32_t first = n_shadow < c->n_parts ? c->parts[n_shadow].first_doc : c->n_docs;
    uint64_t skip = first < c->n_docs ? c->docs[first].offset : c->text_bytes;
    memmove(c->text, c->text + skip, (size_t)(c->text_bytes - skip));
    c->text_bytes -= skip;
    memmove(c->docs, c->docs + first, (size_t)(c->n_docs - first) * sizeof *c->docs);
    c->n_docs -= first;
    for (uint32_t d = 0; d < c->n_docs; d++) {
        c->docs[d].offset -= skip;
        c->docs[d].partition -= (uint32_t)n_shadow;
    }
    memmove(c->parts, c->parts + n_shadow, (size_t)(c->n_parts - n_shadow) * sizeof *c->parts);
    c->n_parts -= n_shadow;
    for (int p = 0; p < c->n_parts; p++) c->parts[p].first_doc -= first;
}

/* Loads the entries of names[] that pass keep(); returns partitions added. */
static int load_entries(builder *b, const char *dir, char **names, int n,
                        const fkd_corpus_options *opt, int side)
{
    fkd_corpus_options o = *opt;
    o.side = side;
    int before = b->c->n_parts;
    for (int i = 0; i < n && !b->full; i++)
        if (wanted(&o, names[i]) && add_entry(b, dir, names[i]) != 0) return -1;
    return b->c->n_parts - before;
}

/* A single file is a corpus of one partition, named after the file. */
static int load_one_file(fkd_corpus *c, const char *path, fkd_error *err)
{
    char copy[1024];
    if (snprintf(copy, sizeof copy, "%s", path) >= (int)sizeof copy)
        return fkd_error_set(err, FKD_E_LIMIT, "path too long: %s", path);
    char *slash = strrchr(copy, '/');
    const char *dir = ".", *name = copy;
    if (slash) {
        *slash = 0;
        dir = slash == copy ? "/" : copy;
        name = slash + 1;
    }
    builder b = {.c = c, .err = err};
    int rc = add_entry(&b, dir, name);
    free(b.dedup);
    if (rc == 0 && c->n_docs == 0)
        rc = fkd_error_set(err, FKD_E_FORMAT, "%s holds no documents", path);
    if (rc != 0) fkd_corpus_free(c);
    return rc;
}

int fkd_corpus_load(fkd_corpus *c, const char *dir, const fkd_corpus_options *opt,
                    fkd_error *err)
{
    memset(c, 0, sizeof *c);
    fkd_corpus_options defaults = fkd_corpus_defaults(FKD_SIDE_ALL);
    if (!opt) opt = &defaults;
    struct stat st;
    if (stat(dir, &st) == 0 && S_ISREG(st.st_mode)) return load_one_file(c, dir, err);
    char **names;
    int n;
    if (list_dir(&names, &n, dir, err) != 0) return -1;
    builder b = {.c = c, .max_bytes = 0, .err = err};
    int rc = 0, n_shadow = 0;
    if (opt->side == FKD_SIDE_PRIVATE) { /* public text first, to be dropped below */
        n_shadow = load_entries(&b, dir, names, n, opt, FKD_SIDE_PUBLIC);
        rc = n_shadow < 0 ? -1 : 0;
    }
    uint32_t shadow_dups = c->n_duplicates;
    b.max_bytes = opt->max_bytes ? opt->max_bytes + c->text_bytes : 0;
    if (rc == 0 && load_entries(&b, dir, names, n, opt, opt->side) < 0) rc = -1;
    free_names(names, n);
    free(b.dedup);
    c->n_duplicates -= shadow_dups;
    if (rc == 0) drop_shadow(c, n_shadow);
    if (rc == 0 && c->n_docs == 0)
        rc = fkd_error_set(err, FKD_E_FORMAT,
                           "%s holds no documents for this side (check --data and the "
                           "public list)", dir);
    if (rc != 0) fkd_corpus_free(c);
    return rc;
}

void fkd_corpus_free(fkd_corpus *c)
{
    free(c->text);
    free(c->docs);
    free(c->parts);
    memset(c, 0, sizeof *c);
}

int fkd_corpus_find_partition(const fkd_corpus *c, const char *name)
{
    for (int i = 0; i < c->n_parts; i++)
        if (strcmp(c->parts[i].name, name) == 0) return i;
    return -1;
}
