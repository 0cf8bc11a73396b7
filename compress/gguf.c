/* gguf.c — GGUF v3 files, the model format of llama.cpp and the other GGUF
 * tools: a reader that memory-maps a file and validates all of it before
 * anyone looks at a value, and a writer.
 *
 * Layout (all little-endian):
 *   "GGUF", u32 version (3), u64 tensor count, u64 key/value count,
 *   key/values:   string key, u32 value type, value
 *                 (string = u64 length + bytes; array = u32 element type,
 *                 u64 count, elements),
 *   tensor infos: string name, u32 n_dims, u64 ne[n_dims] (ne[0] innermost),
 *                 u32 ggml type, u64 offset within the data section,
 *   padding to general.alignment (default 32), then the data section.
 *
 * The parse walks the file once through a bounds-checked cursor (cbytes.h),
 * so a forged count or length can only produce an error naming the field,
 * never a read past the end. Counts are checked against the bytes left before
 * anything is allocated. Afterwards every value and tensor points into the
 * mapping; keys and tensor names are copied once with a terminating NUL.
 *
 * Not here: what the keys mean for a model (gguf_llama.c does the llama
 * architecture) and the block formats themselves (quant.c). */
#include "fkd_compress.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cbytes.h"

static const uint8_t gguf_magic[4] = {'G', 'G', 'U', 'F'};

/* ---- types ---------------------------------------------------------------- */

/* Bytes of one scalar of a value type; 0 for string/array/unknown. */
static size_t vtype_size(int t)
{
    switch (t) {
    case FKD_GGUF_U8: case FKD_GGUF_I8: case FKD_GGUF_BOOL: return 1;
    case FKD_GGUF_U16: case FKD_GGUF_I16: return 2;
    case FKD_GGUF_U32: case FKD_GGUF_I32: case FKD_GGUF_F32: return 4;
    case FKD_GGUF_U64: case FKD_GGUF_I64: case FKD_GGUF_F64: return 8;
    default: return 0;
    }
}

const char *fkd_gguf_vtype_name(int t)
{
    static const char *const names[FKD_GGUF_VTYPE_COUNT] = {
        "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
        "bool", "string", "array", "uint64", "int64", "float64"};
    return t >= 0 && t < FKD_GGUF_VTYPE_COUNT ? names[t] : "unknown";
}

/* ggml's type ids and names, so that a type we do not read is refused by its
 * name rather than a number. */
const char *fkd_ggml_type_name(int t)
{
    static const char *const names[] = {
        [0] = "f32", [1] = "f16", [2] = "q4_0", [3] = "q4_1", [6] = "q5_0", [7] = "q5_1",
        [8] = "q8_0", [9] = "q8_1", [10] = "q2_K", [11] = "q3_K", [12] = "q4_K",
        [13] = "q5_K", [14] = "q6_K", [15] = "q8_K", [16] = "iq2_xxs", [17] = "iq2_xs",
        [18] = "iq3_xxs", [19] = "iq1_s", [20] = "iq4_nl", [21] = "iq3_s", [22] = "iq2_s",
        [23] = "iq4_xs", [24] = "i8", [25] = "i16", [26] = "i32", [27] = "i64", [28] = "f64",
        [29] = "iq1_m", [30] = "bf16", [34] = "tq1_0", [35] = "tq2_0", [39] = "mxfp4"};
    if (t < 0 || t >= (int)(sizeof names / sizeof names[0]) || !names[t]) return "unknown";
    return names[t];
}

int fkd_gguf_tensor_type_supported(int t)
{
    return t == FKD_GGML_BF16 || fkd_qtype_valid(t);
}

static size_t ttype_block_values(int t) { return t == FKD_GGML_BF16 ? 1 : fkd_qtype_block_values(t); }
static size_t ttype_block_bytes(int t) { return t == FKD_GGML_BF16 ? 2 : fkd_qtype_block_bytes(t); }

int fkd_gguf_tensor_bytes(uint64_t *bytes, int type, const uint64_t *ne, int n_dims,
                          fkd_error *err)
{
    if (!fkd_gguf_tensor_type_supported(type))
        return fkd_error_set(err, FKD_E_UNSUPPORTED,
                             "tensor type %s (%d) is not supported; fedkd reads f32, f16, bf16, "
                             "q8_0, q4_0 and q4_1", fkd_ggml_type_name(type), type);
    if (n_dims < 1 || n_dims > FKD_GGUF_MAX_DIMS)
        return fkd_error_set(err, FKD_E_FORMAT, "n_dims %d is outside 1..%d", n_dims,
                             FKD_GGUF_MAX_DIMS);
    uint64_t n = 1;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] == 0 || __builtin_mul_overflow(n, ne[d], &n) || n > FKD_GGUF_MAX_VALUES)
            return fkd_error_set(err, FKD_E_FORMAT, "dimension %d (%llu) is zero or makes the "
                                 "tensor larger than %llu values", d,
                                 (unsigned long long)ne[d], (unsigned long long)FKD_GGUF_MAX_VALUES);
    }
    size_t bv = ttype_block_values(type);
    if (ne[0] % bv != 0)
        return fkd_error_set(err, FKD_E_FORMAT, "row length %llu is not a multiple of %s's block "
                             "of %zu", (unsigned long long)ne[0], fkd_ggml_type_name(type), bv);
    *bytes = n / bv * ttype_block_bytes(type);  /* n <= 2^40, no overflow */
    return 0;
}

/* ---- parsing ---------------------------------------------------------------- */

typedef struct {
    fkd_rd rd;
    const uint8_t *base;
    fkd_error *err;
} parser;

static size_t pos_of(const parser *p) { return (size_t)(p->rd.p - p->base); }

static int truncated(parser *p, const char *what)
{
    return fkd_error_set(p->err, FKD_E_TRUNCATED, "GGUF file ends at byte %zu inside %s; the "
                         "file is truncated or damaged", pos_of(p), what);
}

static int take_u32(parser *p, uint32_t *v, const char *what)
{
    return rd_u32(&p->rd, v) == 0 ? 0 : truncated(p, what);
}

static int take_u64(parser *p, uint64_t *v, const char *what)
{
    return rd_u64(&p->rd, v) == 0 ? 0 : truncated(p, what);
}

/* A string: u64 length + bytes, the length checked against the bytes left. */
static int take_string(parser *p, const uint8_t **s, uint64_t *len, uint64_t max_len,
                       const char *what)
{
    if (take_u64(p, len, what) != 0) return -1;
    if (*len > p->rd.left)
        return fkd_error_set(p->err, FKD_E_FORMAT, "%s at byte %zu claims %llu bytes but only %zu "
                             "remain in the file", what, pos_of(p) - 8,
                             (unsigned long long)*len, p->rd.left);
    if (*len > max_len)
        return fkd_error_set(p->err, FKD_E_LIMIT, "%s is %llu bytes long, above the limit of %llu",
                             what, (unsigned long long)*len, (unsigned long long)max_len);
    *s = rd_take(&p->rd, (size_t)*len);
    return 0;
}

/* Copies a name with a terminating NUL; refuses embedded NULs, which would
 * make two names compare equal. */
static int name_copy(parser *p, const char **out, const uint8_t *s, size_t len, const char *what)
{
    if (memchr(s, 0, len))
        return fkd_error_set(p->err, FKD_E_FORMAT, "%s contains a NUL byte", what);
    char *dst = malloc(len + 1);
    if (!dst) return fkd_error_set(p->err, FKD_E_NOMEM, "out of memory for %s", what);
    memcpy(dst, s, len);
    dst[len] = 0;
    *out = dst;
    return 0;
}

/* A value of type t (not an array): advances past it. */
static int skip_scalar(parser *p, int t, const char *key)
{
    if (t == FKD_GGUF_STR) {
        const uint8_t *s;
        uint64_t len;
        return take_string(p, &s, &len, UINT64_MAX, key);
    }
    size_t n = vtype_size(t);
    if (!n)
        return fkd_error_set(p->err, FKD_E_FORMAT, "key %s has unknown value type %d", key, t);
    if (!rd_take(&p->rd, n)) return truncated(p, key);
    return 0;
}

static int parse_value(parser *p, fkd_gguf_kv *kv)
{
    const uint8_t *start = p->rd.p;
    kv->count = 1;
    kv->elem_type = kv->type;
    if (kv->type == FKD_GGUF_STR) {
        uint64_t len;
        if (take_string(p, &kv->data, &len, UINT64_MAX, kv->key) != 0) return -1;
        kv->bytes = len;
        return 0;
    }
    if (kv->type != FKD_GGUF_ARR) {
        kv->data = start;
        if (skip_scalar(p, kv->type, kv->key) != 0) return -1;
        kv->bytes = (uint64_t)(p->rd.p - start);
        return 0;
    }
    uint32_t et;
    if (take_u32(p, &et, kv->key) != 0 || take_u64(p, &kv->count, kv->key) != 0) return -1;
    kv->elem_type = (int)et;
    if (et == FKD_GGUF_ARR)
        return fkd_error_set(p->err, FKD_E_UNSUPPORTED, "key %s is an array of arrays, which "
                             "fedkd does not read", kv->key);
    size_t min_elem = et == FKD_GGUF_STR ? 8 : vtype_size((int)et);
    if (!min_elem)
        return fkd_error_set(p->err, FKD_E_FORMAT, "key %s is an array of unknown type %u",
                             kv->key, et);
    if (kv->count > p->rd.left / min_elem)
        return fkd_error_set(p->err, FKD_E_FORMAT, "key %s claims %llu elements but only %zu "
                             "bytes remain in the file", kv->key,
                             (unsigned long long)kv->count, p->rd.left);
    kv->data = p->rd.p;
    if (et != FKD_GGUF_STR) {
        rd_take(&p->rd, (size_t)kv->count * min_elem);
    } else {
        for (uint64_t i = 0; i < kv->count; i++)
            if (skip_scalar(p, FKD_GGUF_STR, kv->key) != 0) return -1;
    }
    kv->bytes = (uint64_t)(p->rd.p - kv->data);
    return 0;
}

static int parse_kvs(parser *p, fkd_gguf *g)
{
    for (uint64_t i = 0; i < g->n_kv; i++) {
        fkd_gguf_kv *kv = &g->kv[i];
        const uint8_t *s;
        uint64_t len;
        uint32_t t;
        char what[48];
        snprintf(what, sizeof what, "the key of key/value %llu", (unsigned long long)i);
        if (take_string(p, &s, &len, FKD_GGUF_MAX_NAME, what) != 0) return -1;
        if (name_copy(p, &kv->key, s, (size_t)len, what) != 0) return -1;
        if (take_u32(p, &t, kv->key) != 0) return -1;
        if (t >= FKD_GGUF_VTYPE_COUNT)
            return fkd_error_set(p->err, FKD_E_FORMAT, "key %s has unknown value type %u",
                                 kv->key, t);
        kv->type = (int)t;
        if (parse_value(p, kv) != 0) return -1;
    }
    return 0;
}

static int parse_tensor_info(parser *p, fkd_gguf *g, fkd_gguf_tensor *t, uint64_t i)
{
    const uint8_t *s;
    uint64_t len;
    uint32_t n_dims, type;
    char what[48];
    snprintf(what, sizeof what, "the name of tensor %llu", (unsigned long long)i);
    if (take_string(p, &s, &len, FKD_GGUF_MAX_NAME, what) != 0) return -1;
    if (name_copy(p, &t->name, s, (size_t)len, what) != 0) return -1;
    if (take_u32(p, &n_dims, t->name) != 0) return -1;
    if (n_dims < 1 || n_dims > FKD_GGUF_MAX_DIMS)
        return fkd_error_set(p->err, FKD_E_FORMAT, "tensor %s has %u dimensions; 1 to %d are "
                             "allowed", t->name, n_dims, FKD_GGUF_MAX_DIMS);
    t->n_dims = (int)n_dims;
    for (int d = 0; d < FKD_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < n_dims; d++)
        if (take_u64(p, &t->ne[d], t->name) != 0) return -1;
    if (take_u32(p, &type, t->name) != 0 || take_u64(p, &t->offset, t->name) != 0) return -1;
    t->type = (int)type;
    fkd_error sub;
    if (fkd_gguf_tensor_bytes(&t->bytes, t->type, t->ne, t->n_dims, &sub) != 0)
        return fkd_error_set(p->err, sub.code, "tensor %s: %s", t->name, sub.msg);
    t->n_values = 1;
    for (int d = 0; d < t->n_dims; d++) t->n_values *= t->ne[d];
    if (t->offset % g->alignment != 0)
        return fkd_error_set(p->err, FKD_E_FORMAT, "tensor %s: offset %llu is not a multiple of "
                             "the alignment %u", t->name, (unsigned long long)t->offset,
                             g->alignment);
    return 0;
}

static int cmp_offset(const void *a, const void *b)
{
    const fkd_gguf_tensor *x = *(const fkd_gguf_tensor *const *)a;
    const fkd_gguf_tensor *y = *(const fkd_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Every tensor inside the data section, no two overlapping, no two names alike. */
static int place_tensors(fkd_gguf *g, size_t size, fkd_error *err)
{
    if (g->n_tensors == 0) return 0;
    if (g->data_offset > size)
        return fkd_error_set(err, FKD_E_TRUNCATED, "the data section would start at byte %llu, "
                             "past the end of the %zu-byte file",
                             (unsigned long long)g->data_offset, size);
    uint64_t data_bytes = size - g->data_offset;
    const fkd_gguf_tensor **order = malloc(g->n_tensors * sizeof *order);
    if (!order) return fkd_error_set(err, FKD_E_NOMEM, "out of memory sorting tensors");
    int rc = 0;
    for (uint64_t i = 0; i < g->n_tensors && rc == 0; i++) {
        fkd_gguf_tensor *t = &g->tensors[i];
        order[i] = t;
        if (t->offset > data_bytes || t->bytes > data_bytes - t->offset)
            rc = fkd_error_set(err, FKD_E_TRUNCATED, "tensor %s: bytes %llu..%llu of the data "
                               "section lie past its end (%llu bytes)", t->name,
                               (unsigned long long)t->offset,
                               (unsigned long long)(t->offset + t->bytes),
                               (unsigned long long)data_bytes);
        else
            t->data = g->base + g->data_offset + t->offset;
    }
    if (rc == 0) qsort(order, g->n_tensors, sizeof *order, cmp_offset);
    for (uint64_t i = 1; i < g->n_tensors && rc == 0; i++)
        if (order[i - 1]->offset + order[i - 1]->bytes > order[i]->offset)
            rc = fkd_error_set(err, FKD_E_FORMAT, "tensors %s and %s overlap in the data section",
                               order[i - 1]->name, order[i]->name);
    free(order);
    return rc;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* No name twice among n names found at stride bytes apart (sorted copy, so
 * that a file with many names costs n log n, not n²). */
static int check_unique(const void *first, size_t stride, uint64_t n, const char *what,
                        fkd_error *err)
{
    if (n < 2) return 0;
    const char **names = malloc(n * sizeof *names);
    if (!names) return fkd_error_set(err, FKD_E_NOMEM, "out of memory checking %s names", what);
    for (uint64_t i = 0; i < n; i++)
        names[i] = *(const char *const *)((const uint8_t *)first + i * stride);
    qsort(names, n, sizeof *names, cmp_name);
    int rc = 0;
    for (uint64_t i = 1; i < n && rc == 0; i++)
        if (strcmp(names[i - 1], names[i]) == 0)
            rc = fkd_error_set(err, FKD_E_FORMAT, "%s %s appears twice", what, names[i]);
    free(names);
    return rc;
}

static int read_alignment(fkd_gguf *g, fkd_error *err)
{
    g->alignment = FKD_GGUF_DEFAULT_ALIGNMENT;
    const fkd_gguf_kv *kv = fkd_gguf_find(g, "general.alignment");
    if (!kv) return 0;
    if (kv->type != FKD_GGUF_U32)
        return fkd_error_set(err, FKD_E_FORMAT, "general.alignment is a %s, not a uint32",
                             fkd_gguf_vtype_name(kv->type));
    uint32_t a = le32(kv->data);
    if (a == 0 || (a & (a - 1)) != 0 || a > FKD_GGUF_MAX_ALIGNMENT)
        return fkd_error_set(err, FKD_E_FORMAT, "general.alignment %u is not a power of two up "
                             "to %d", a, FKD_GGUF_MAX_ALIGNMENT);
    g->alignment = a;
    return 0;
}

static int parse_header(parser *p, fkd_gguf *g)
{
    const uint8_t *magic = rd_take(&p->rd, 4);
    if (!magic) return truncated(p, "the magic");
    if (memcmp(magic, gguf_magic, 4) != 0)
        return fkd_error_set(p->err, FKD_E_FORMAT, "not a GGUF file: the magic is not \"GGUF\"");
    if (take_u32(p, &g->version, "the version") != 0) return -1;
    if (g->version != FKD_GGUF_VERSION)
        return fkd_error_set(p->err, FKD_E_VERSION, "GGUF version %u; fedkd reads version %d "
                             "(convert the file with a current llama.cpp)", g->version,
                             FKD_GGUF_VERSION);
    if (take_u64(p, &g->n_tensors, "the tensor count") != 0 ||
        take_u64(p, &g->n_kv, "the key/value count") != 0)
        return -1;
    /* The smallest key/value takes 13 bytes, the smallest tensor info 32. */
    if (g->n_kv > p->rd.left / 13)
        return fkd_error_set(p->err, FKD_E_FORMAT, "the key/value count %llu cannot fit in the "
                             "%zu bytes left", (unsigned long long)g->n_kv, p->rd.left);
    if (g->n_tensors > p->rd.left / 32)
        return fkd_error_set(p->err, FKD_E_FORMAT, "the tensor count %llu cannot fit in the "
                             "%zu bytes left", (unsigned long long)g->n_tensors, p->rd.left);
    return 0;
}

int fkd_gguf_parse(fkd_gguf *g, const uint8_t *data, size_t bytes, fkd_error *err)
{
    memset(g, 0, sizeof *g);
    g->base = data;
    g->size = bytes;
    parser p = {.rd = {data, bytes}, .base = data, .err = err};
    if (parse_header(&p, g) != 0) return -1;
    g->kv = calloc(g->n_kv ? g->n_kv : 1, sizeof *g->kv);
    g->tensors = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *g->tensors);
    if (!g->kv || !g->tensors) {
        fkd_gguf_close(g);
        return fkd_error_set(err, FKD_E_NOMEM, "out of memory for the GGUF tables");
    }
    int rc = parse_kvs(&p, g);
    if (rc == 0) rc = check_unique(&g->kv[0].key, sizeof *g->kv, g->n_kv, "key", err);
    if (rc == 0) rc = read_alignment(g, err);
    for (uint64_t i = 0; i < g->n_tensors && rc == 0; i++)
        rc = parse_tensor_info(&p, g, &g->tensors[i], i);
    if (rc == 0) {
        uint64_t end = pos_of(&p);
        g->data_offset = (end + g->alignment - 1) / g->alignment * g->alignment;
        rc = place_tensors(g, bytes, err);
    }
    if (rc == 0)
        rc = check_unique(&g->tensors[0].name, sizeof *g->tensors, g->n_tensors, "tensor", err);
    if (rc != 0) {
        fkd_gguf_close(g);
        return -1;
    }
    return 0;
}

int fkd_gguf_open(fkd_gguf *g, const char *path, fkd_error *err)
{
    memset(g, 0, sizeof *g);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return fkd_error_set(err, FKD_E_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size <= 0) {
        close(fd);
        return fkd_error_set(err, st.st_size == 0 ? FKD_E_TRUNCATED : FKD_E_IO,
                             "%s is empty or unreadable", path);
    }
    size_t size = (size_t)st.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return fkd_error_set(err, FKD_E_IO, "cannot map %s: %s", path, strerror(errno));
    fkd_error sub;
    if (fkd_gguf_parse(g, map, size, &sub) != 0) {
        munmap(map, size);
        return fkd_error_set(err, sub.code, "%s: %s", path, sub.msg);
    }
    g->mapped = 1;
    return 0;
}

void fkd_gguf_close(fkd_gguf *g)
{
    if (g->mapped) munmap((void *)g->base, g->size);
    for (uint64_t i = 0; g->kv && i < g->n_kv; i++) free((char *)g->kv[i].key);
    for (uint64_t i = 0; g->tensors && i < g->n_tensors; i++) free((char *)g->tensors[i].name);
    free(g->kv);
    free(g->tensors);
    memset(g, 0, sizeof *g);
}

/* ---- lookups ---------------------------------------------------------------- */

const fkd_gguf_kv *fkd_gguf_find(const fkd_gguf *g, const char *key)
{
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].key && strcmp(g->kv[i].key, key) == 0) return &g->kv[i];
    return NULL;
}

const fkd_gguf_tensor *fkd_gguf_find_tensor(const fkd_gguf *g, const char *name)
{
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].name && strcmp(g->tensors[i].name, name) == 0) return &g->tensors[i];
    return NULL;
}

static int find_typed(const fkd_gguf_kv **kv, const fkd_gguf *g, const char *key,
                      fkd_error *err)
{
    *kv = fkd_gguf_find(g, key);
    if (!*kv)
        return fkd_error_set(err, FKD_E_FORMAT, "the GGUF file has no key %s", key);
    return 0;
}

/* Any integer scalar, as a signed 64-bit value (uint64 above INT64_MAX refused). */
static int kv_integer(int64_t *v, const fkd_gguf_kv *kv, fkd_error *err)
{
    const uint8_t *d = kv->data;
    switch (kv->type) {
    case FKD_GGUF_U8: *v = d[0]; return 0;
    case FKD_GGUF_I8: *v = (int8_t)d[0]; return 0;
    case FKD_GGUF_U16: *v = (uint16_t)(d[0] | d[1] << 8); return 0;
    case FKD_GGUF_I16: *v = (int16_t)(uint16_t)(d[0] | d[1] << 8); return 0;
    case FKD_GGUF_U32: *v = le32(d); return 0;
    case FKD_GGUF_I32: *v = (int32_t)le32(d); return 0;
    case FKD_GGUF_I64: *v = (int64_t)le64(d); return 0;
    case FKD_GGUF_U64:
        if (le64(d) > INT64_MAX) break;
        *v = (int64_t)le64(d);
        return 0;
    default:
        return fkd_error_set(err, FKD_E_FORMAT, "key %s is a %s, not an integer", kv->key,
                             fkd_gguf_vtype_name(kv->type));
    }
    return fkd_error_set(err, FKD_E_FORMAT, "key %s is out of range", kv->key);
}

int fkd_gguf_get_int(int64_t *v, const fkd_gguf *g, const char *key, int64_t min, int64_t max,
                     fkd_error *err)
{
    const fkd_gguf_kv *kv;
    if (find_typed(&kv, g, key, err) != 0 || kv_integer(v, kv, err) != 0) return -1;
    if (*v < min || *v > max)
        return fkd_error_set(err, FKD_E_FORMAT, "key %s is %lld, outside %lld..%lld", key,
                             (long long)*v, (long long)min, (long long)max);
    return 0;
}

int fkd_gguf_get_f32(float *v, const fkd_gguf *g, const char *key, fkd_error *err)
{
    const fkd_gguf_kv *kv;
    if (find_typed(&kv, g, key, err) != 0) return -1;
    if (kv->type == FKD_GGUF_F32) {
        *v = lef32(kv->data);
    } else if (kv->type == FKD_GGUF_F64) {
        uint64_t bits = le64(kv->data);
        double d;
        memcpy(&d, &bits, 8);
        *v = (float)d;
    } else {
        return fkd_error_set(err, FKD_E_FORMAT, "key %s is a %s, not a float", key,
                             fkd_gguf_vtype_name(kv->type));
    }
    if (*v != *v || *v - *v != 0)
        return fkd_error_set(err, FKD_E_FORMAT, "key %s is not a finite number", key);
    return 0;
}

int fkd_gguf_get_bool(int *v, const fkd_gguf *g, const char *key, fkd_error *err)
{
    const fkd_gguf_kv *kv;
    if (find_typed(&kv, g, key, err) != 0) return -1;
    if (kv->type != FKD_GGUF_BOOL)
        return fkd_error_set(err, FKD_E_FORMAT, "key %s is a %s, not a bool", key,
                             fkd_gguf_vtype_name(kv->type));
    *v = kv->data[0] != 0;
    return 0;
}

int fkd_gguf_get_str(const char **s, size_t *len, const fkd_gguf *g, const char *key,
                     fkd_error *err)
{
    const fkd_gguf_kv *kv;
    if (find_typed(&kv, g, key, err) != 0) return -1;
    if (kv->type != FKD_GGUF_STR)
        return fkd_error_set(err, FKD_E_FORMAT, "key %s is a %s, not a string", key,
                             fkd_gguf_vtype_name(kv->type));
    *s = (const char *)kv->data;
    *len = (size_t)kv->bytes;
    return 0;
}

int fkd_gguf_get_array(const fkd_gguf_kv **kv, const fkd_gguf *g, const char *key,
                       int elem_type, fkd_error *err)
{
    if (find_typed(kv, g, key, err) != 0) return -1;
    if ((*kv)->type != FKD_GGUF_ARR || (*kv)->elem_type != elem_type)
        return fkd_error_set(err, FKD_E_FORMAT, "key %s is not an array of %s", key,
                             fkd_gguf_vtype_name(elem_type));
    return 0;
}

int fkd_gguf_array_strings(const char **strs, uint32_t *lens, const fkd_gguf_kv *kv,
                           fkd_error *err)
{
    if (kv->type != FKD_GGUF_ARR || kv->elem_type != FKD_GGUF_STR)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "key %s is not an array of strings",
                             kv->key);
    /* The parse checked every length against the file, so this walk stays inside. */
    const uint8_t *p = kv->data;
    for (uint64_t i = 0; i < kv->count; i++) {
        uint64_t len = le64(p);
        if (len > UINT32_MAX)
            return fkd_error_set(err, FKD_E_LIMIT, "string %llu of %s is %llu bytes long",
                                 (unsigned long long)i, kv->key, (unsigned long long)len);
        strs[i] = (const char *)(p + 8);
        lens[i] = (uint32_t)len;
        p += 8 + len;
    }
    return 0;
}

/* ---- tensor data ------------------------------------------------------------ */

int fkd_gguf_tensor_to_f32(float *out, const fkd_gguf_tensor *t, fkd_error *err)
{
    if (t->type == FKD_GGML_BF16) {
        for (uint64_t i = 0; i < t->n_values; i++) {
            uint32_t bits = (uint32_t)(t->data[2 * i] | t->data[2 * i + 1] << 8) << 16;
            memcpy(&out[i], &bits, 4);
        }
        return 0;
    }
    if (fkd_dequantize_row(out, t->type, t->data, (size_t)t->n_values) != 0)
        return fkd_error_set(err, FKD_E_UNSUPPORTED, "tensor %s has type %s, which fedkd "
                             "cannot convert to f32", t->name, fkd_ggml_type_name(t->type));
    return 0;
}

/* ---- writer ----------------------------------------------------------------- */

typedef struct {
    char *name;
    int type;
    int n_dims;
    uint64_t ne[FKD_GGUF_MAX_DIMS];
    uint64_t bytes;
    const void *data;  /* the caller's, until write */
} wtensor;

struct fkd_gguf_writer {
    uint8_t *meta;           /* serialized key/values */
    size_t meta_len, meta_cap;
    uint64_t n_kv;
    wtensor *tensors;
    size_t n_tensors, tensors_cap;
    int failed;              /* an add failed: write refuses */
};

int fkd_gguf_writer_new(fkd_gguf_writer **w, fkd_error *err)
{
    *w = calloc(1, sizeof **w);
    if (!*w) return fkd_error_set(err, FKD_E_NOMEM, "out of memory for a GGUF writer");
    return 0;
}

void fkd_gguf_writer_free(fkd_gguf_writer **w)
{
    if (!*w) return;
    for (size_t i = 0; i < (*w)->n_tensors; i++) free((*w)->tensors[i].name);
    free((*w)->tensors);
    free((*w)->meta);
    free(*w);
    *w = NULL;
}

static int fail(fkd_gguf_writer *w, fkd_error *err, int code, const char *what)
{
    w->failed = 1;
    return fkd_error_set(err, code, "GGUF writer: %s", what);
}

/* Room for n more metadata bytes. */
static uint8_t *meta_grow(fkd_gguf_writer *w, size_t n, fkd_error *err)
{
    if (n > SIZE_MAX / 2 - w->meta_len) {
        fail(w, err, FKD_E_LIMIT, "metadata too large");
        return NULL;
    }
    if (w->meta_len + n > w->meta_cap) {
        size_t cap = w->meta_cap ? w->meta_cap : 4096;
        while (cap < w->meta_len + n) cap *= 2;
        uint8_t *m = realloc(w->meta, cap);
        if (!m) {
            fail(w, err, FKD_E_NOMEM, "out of memory for metadata");
            return NULL;
        }
        w->meta = m;
        w->meta_cap = cap;
    }
    uint8_t *p = w->meta + w->meta_len;
    w->meta_len += n;
    return p;
}

static int meta_put(fkd_gguf_writer *w, const void *src, size_t n, fkd_error *err)
{
    uint8_t *p = meta_grow(w, n, err);
    if (!p) return -1;
    if (n) memcpy(p, src, n);
    return 0;
}

static int meta_u32(fkd_gguf_writer *w, uint32_t v, fkd_error *err)
{
    uint8_t *p = meta_grow(w, 4, err);
    if (!p) return -1;
    fkd_wr wr = {p};
    wr_u32(&wr, v);
    return 0;
}

static int meta_u64(fkd_gguf_writer *w, uint64_t v, fkd_error *err)
{
    uint8_t *p = meta_grow(w, 8, err);
    if (!p) return -1;
    fkd_wr wr = {p};
    wr_u64(&wr, v);
    return 0;
}

static int meta_string(fkd_gguf_writer *w, const void *s, size_t len, fkd_error *err)
{
    return meta_u64(w, len, err) == 0 && meta_put(w, s, len, err) == 0 ? 0 : -1;
}

static int begin_kv(fkd_gguf_writer *w, const char *key, int type, fkd_error *err)
{
    size_t len = strlen(key);
    if (len == 0 || len > FKD_GGUF_MAX_NAME)
        return fail(w, err, FKD_E_INVALID_ARG, "a key is empty or too long");
    w->n_kv++;
    return meta_string(w, key, len, err) == 0 && meta_u32(w, (uint32_t)type, err) == 0 ? 0 : -1;
}

int fkd_gguf_writer_add(fkd_gguf_writer *w, const char *key, int type, const void *value,
                        fkd_error *err)
{
    size_t n = vtype_size(type);
    if (!n) return fail(w, err, FKD_E_INVALID_ARG, "add takes scalar types only");
    /* Values are little-endian in the file and in memory on the hosts we build for. */
    return begin_kv(w, key, type, err) == 0 && meta_put(w, value, n, err) == 0 ? 0 : -1;
}

int fkd_gguf_writer_add_u32(fkd_gguf_writer *w, const char *key, uint32_t v, fkd_error *err)
{
    return fkd_gguf_writer_add(w, key, FKD_GGUF_U32, &v, err);
}

int fkd_gguf_writer_add_f32(fkd_gguf_writer *w, const char *key, float v, fkd_error *err)
{
    return fkd_gguf_writer_add(w, key, FKD_GGUF_F32, &v, err);
}

int fkd_gguf_writer_add_str(fkd_gguf_writer *w, const char *key, const char *s, size_t len,
                            fkd_error *err)
{
    return begin_kv(w, key, FKD_GGUF_STR, err) == 0 && meta_string(w, s, len, err) == 0 ? 0 : -1;
}

int fkd_gguf_writer_add_array(fkd_gguf_writer *w, const char *key, int elem_type,
                              const void *values, uint64_t count, fkd_error *err)
{
    size_t n = vtype_size(elem_type);
    if (!n) return fail(w, err, FKD_E_INVALID_ARG, "add_array takes scalar element types");
    if (count > SIZE_MAX / n) return fail(w, err, FKD_E_LIMIT, "array too large");
    if (begin_kv(w, key, FKD_GGUF_ARR, err) != 0 || meta_u32(w, (uint32_t)elem_type, err) != 0 ||
        meta_u64(w, count, err) != 0)
        return -1;
    return meta_put(w, values, (size_t)count * n, err);
}

int fkd_gguf_writer_add_str_array(fkd_gguf_writer *w, const char *key, const char *const *strs,
                                  const uint32_t *lens, uint64_t count, fkd_error *err)
{
    if (begin_kv(w, key, FKD_GGUF_ARR, err) != 0 || meta_u32(w, FKD_GGUF_STR, err) != 0 ||
        meta_u64(w, count, err) != 0)
        return -1;
    for (uint64_t i = 0; i < count; i++)
        if (meta_string(w, strs[i], lens[i], err) != 0) return -1;
    return 0;
}

int fkd_gguf_writer_copy_kv(fkd_gguf_writer *w, const fkd_gguf_kv *kv, fkd_error *err)
{
    if (begin_kv(w, kv->key, kv->type, err) != 0) return -1;
    if (kv->type == FKD_GGUF_STR) return meta_string(w, kv->data, (size_t)kv->bytes, err);
    if (kv->type == FKD_GGUF_ARR &&
        (meta_u32(w, (uint32_t)kv->elem_type, err) != 0 || meta_u64(w, kv->count, err) != 0))
        return -1;
    return meta_put(w, kv->data, (size_t)kv->bytes, err);
}

int fkd_gguf_writer_add_tensor(fkd_gguf_writer *w, const char *name, int type,
                               const uint64_t *ne, int n_dims, const void *data, uint64_t bytes,
                               fkd_error *err)
{
    uint64_t want;
    fkd_error sub;
    if (fkd_gguf_tensor_bytes(&want, type, ne, n_dims, &sub) != 0) {
        w->failed = 1;
        return fkd_error_set(err, sub.code, "GGUF writer: tensor %s: %s", name, sub.msg);
    }
    if (want != bytes) return fail(w, err, FKD_E_INVALID_ARG, "tensor bytes do not match its shape");
    if (strlen(name) == 0 || strlen(name) > FKD_GGUF_MAX_NAME)
        return fail(w, err, FKD_E_INVALID_ARG, "a tensor name is empty or too long");
    if (w->n_tensors == w->tensors_cap) {
        size_t cap = w->tensors_cap ? 2 * w->tensors_cap : 64;
        wtensor *t = realloc(w->tensors, cap * sizeof *t);
        if (!t) return fail(w, err, FKD_E_NOMEM, "out of memory for tensors");
        w->tensors = t;
        w->tensors_cap = cap;
    }
    wtensor *t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name) return fail(w, err, FKD_E_NOMEM, "out of memory for tensor names");
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < n_dims; d++) t->ne[d] = ne[d];
    t->bytes = bytes;
    t->data = data;
    w->n_tensors++;
    return 0;
}

static uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

/* Header, key/values and tensor infos in one buffer (tensor offsets laid out
 * back to back at the default alignment, as llama.cpp expects). */
static int build_head(uint8_t **out, size_t *len, const fkd_gguf_writer *w, fkd_error *err)
{
    size_t n = 24 + w->meta_len;
    for (size_t i = 0; i < w->n_tensors; i++)
        n += 8 + strlen(w->tensors[i].name) + 4 + 8 * (size_t)w->tensors[i].n_dims + 4 + 8;
    size_t padded = (size_t)align_up(n, FKD_GGUF_DEFAULT_ALIGNMENT);
    uint8_t *buf = calloc(1, padded);
    if (!buf) return fkd_error_set(err, FKD_E_NOMEM, "out of memory for the GGUF header");
    fkd_wr wr = {buf};
    wr_bytes(&wr, gguf_magic, 4);
    wr_u32(&wr, FKD_GGUF_VERSION);
    wr_u64(&wr, w->n_tensors);
    wr_u64(&wr, w->n_kv);
    wr_bytes(&wr, w->meta, w->meta_len);
    uint64_t offset = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        const wtensor *t = &w->tensors[i];
        wr_u64(&wr, strlen(t->name));
        wr_bytes(&wr, t->name, strlen(t->name));
        wr_u32(&wr, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) wr_u64(&wr, t->ne[d]);
        wr_u32(&wr, (uint32_t)t->type);
        wr_u64(&wr, offset);
        offset = align_up(offset + t->bytes, FKD_GGUF_DEFAULT_ALIGNMENT);
    }
    *out = buf;
    *len = padded;
    return 0;
}

int fkd_gguf_writer_write(const fkd_gguf_writer *w, const char *path, fkd_error *err)
{
    if (w->failed)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "GGUF writer: an earlier add failed; "
                             "nothing written to %s", path);
    uint8_t *head = NULL;
    size_t head_len = 0;
    if (build_head(&head, &head_len, w, err) != 0) return -1;
    static const uint8_t zeros[FKD_GGUF_DEFAULT_ALIGNMENT];
    fkd_atomic_file af;
    int rc = fkd_atomic_open(&af, path, err);
    if (rc == 0) rc = fkd_atomic_write(&af, head, head_len, err);
    for (size_t i = 0; i < w->n_tensors && rc == 0; i++) {
        const wtensor *t = &w->tensors[i];
        size_t pad = (size_t)(align_up(t->bytes, FKD_GGUF_DEFAULT_ALIGNMENT) - t->bytes);
        rc = fkd_atomic_write(&af, t->data, (size_t)t->bytes, err);
        /* The last tensor is padded too: llama.cpp reads the padded size. */
        if (rc == 0) rc = fkd_atomic_write(&af, zeros, pad, err);
    }
    free(head);
    if (rc == 0) return fkd_atomic_commit(&af, err);
    fkd_atomic_abort(&af);
    return -1;
}
