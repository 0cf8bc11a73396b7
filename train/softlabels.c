/* softlabels.c — the soft-label shard format: a piece of the transfer set
 * (its tokens) with the teacher's top-k next-token ids and quantized
 * probabilities at every position. The same bytes are a file on the
 * coordinator and a payload inside a TASK message, so the decoder treats
 * them as hostile: every size is checked before it is used, every id is
 * below the vocabulary, every position's mass is at most 1.
 *
 * Layout (little-endian; docs/data.md has the table):
 *   0  "FKDSOFT\0"      8  version u32      12 header bytes u32 (64)
 *   16 vocab u32        20 k u16            22 id bytes u8 (1, 2 or 4)
 *   23 quant u8         24 temperature f32  28 shard index u32
 *   32 shard count u32  36 reserved u32 (0) 40 first position u64
 *   48 positions n u64  56 reserved u64 (0)
 *   64 tokens  n x id bytes
 *      ids     n x k x id bytes
 *      probs   n x k x (1 or 2) bytes
 *      CRC-32 of all bytes before it, u32
 * The rest mass of a position (1 - sum of its probs) is implied. */
#include "fkd_train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SOFT_MAX_FILE_BYTES ((size_t)4 << 30)
#define SOFT_MASS_TOLERANCE 1e-3f /* decoder: sum of probs <= 1 + this */

static int id_width(int vocab) { return vocab <= 256 ? 1 : vocab <= 65536 ? 2 : 4; }
static int prob_width(int quant) { return quant == FKD_SOFT_Q16 ? 2 : 1; }
static int quant_valid(int quant) { return quant == FKD_SOFT_Q8_SQRT || quant == FKD_SOFT_Q16; }

size_t fkd_softlabels_encoded_bytes(int64_t n, int k, int vocab, int quant)
{
    size_t iw = (size_t)id_width(vocab), pw = (size_t)prob_width(quant);
    return FKD_SOFT_HEADER_BYTES + (size_t)n * iw + (size_t)n * (size_t)k * (iw + pw) + 4;
}

int fkd_softlabels_alloc(fkd_softlabel_shard *s, int64_t n, int k, int vocab, fkd_error *err)
{
    memset(s, 0, sizeof *s);
    if (n < 0 || n > FKD_SOFT_MAX_POSITIONS || k < 1 || k > FKD_SOFT_MAX_K || vocab < 1 ||
        vocab > FKD_SOFT_MAX_VOCAB || k > vocab)
        return fkd_error_set(err, FKD_E_INVALID_ARG,
                             "soft labels of %lld positions, k=%d, vocab %d are out of range",
                             (long long)n, k, vocab);
    s->n = n;
    s->k = k;
    s->vocab = vocab;
    s->quant = FKD_SOFT_Q8_SQRT;
    s->temperature = 1.0f;
    s->shard_count = 1;
    s->tokens = calloc((size_t)n + 1, sizeof *s->tokens);
    s->ids = calloc((size_t)n * (size_t)k + 1, sizeof *s->ids);
    s->probs = calloc((size_t)n * (size_t)k + 1, sizeof *s->probs);
    if (!s->tokens || !s->ids || !s->probs) {
        fkd_softlabels_free(s);
        return fkd_error_set(err, FKD_E_NOMEM, "out of memory for %lld soft labels",
                             (long long)n);
    }
    return 0;
}

void fkd_softlabels_free(fkd_softlabel_shard *s)
{
    free(s->tokens);
    free(s->ids);
    free(s->probs);
    memset(s, 0, sizeof *s);
}

/* ---- quantization ----------------------------------------------------------
 * Q8_SQRT stores round(255 sqrt(p)): the step in p shrinks with p, so the
 * small probabilities that carry the "dark knowledge" keep their size.
 * Q16 stores round(65535 p). After rounding, the code rounded up the most
 * is lowered by one until the position's mass is at most 1, so the rest
 * mass stays >= 0 and every code stays within one step of its value. */
static uint32_t quant_max(int quant) { return quant == FKD_SOFT_Q16 ? 65535u : 255u; }

static float dequant(uint32_t q, int quant)
{
    if (quant == FKD_SOFT_Q16) return (float)q / 65535.0f;
    float r = (float)q / 255.0f;
    return r * r;
}

static uint32_t quant_one(float p, int quant)
{
    if (!(p > 0)) return 0;
    if (p > 1) p = 1;
    float x = quant == FKD_SOFT_Q16 ? p * 65535.0f : sqrtf(p) * 255.0f;
    uint32_t q = (uint32_t)lrintf(x);
    return q > quant_max(quant) ? quant_max(quant) : q;
}

static float mass_of(const uint32_t *q, int k, int quant)
{
    float sum = 0;
    for (int j = 0; j < k; j++) sum += dequant(q[j], quant);
    return sum;
}

static void quantize_codes(uint32_t *q, const float *probs, int k, int quant)
{
    for (int j = 0; j < k; j++) q[j] = quant_one(probs[j], quant);
    while (mass_of(q, k, quant) > 1.0f) { /* lower the code rounded up the most */
        int top = -1;
        float worst = -2.0f;
        for (int j = 0; j < k; j++) {
            float up = dequant(q[j], quant) - probs[j];
            if (q[j] > 0 && up > worst) worst = up, top = j;
        }
        q[top]--;
    }
}

void fkd_softlabels_quantize(float *probs, int k, int quant)
{
    uint32_t q[FKD_SOFT_MAX_K];
    if (k > FKD_SOFT_MAX_K) k = FKD_SOFT_MAX_K;
    quantize_codes(q, probs, k, quant);
    for (int j = 0; j < k; j++) probs[j] = dequant(q[j], quant);
}

/* ---- little-endian fields --------------------------------------------------- */
static void put_u16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}
static void put_uint(uint8_t *p, uint32_t v, int width)
{
    if (width == 1) p[0] = (uint8_t)v;
    else if (width == 2) put_u16(p, v);
    else put_u32(p, v);
}
static uint32_t get_uint(const uint8_t *p, int width)
{
    return width == 1 ? p[0] : width == 2 ? get_u16(p) : get_u32(p);
}

/* ---- encode ------------------------------------------------------------------- */

static int check_shard(const fkd_softlabel_shard *s, fkd_error *err)
{
    if (s->n < 0 || s->n > FKD_SOFT_MAX_POSITIONS || s->k < 1 || s->k > FKD_SOFT_MAX_K ||
        s->vocab < 1 || s->vocab > FKD_SOFT_MAX_VOCAB || !quant_valid(s->quant) ||
        !(s->temperature > 0) || !isfinite(s->temperature) || s->shard_count == 0 ||
        s->shard_index >= s->shard_count)
        return fkd_error_set(err, FKD_E_INVALID_ARG,
                             "soft-label shard fields are out of range (n %lld, k %d, vocab %d, "
                             "quant %d, shard %u/%u)", (long long)s->n, s->k, s->vocab, s->quant,
                             s->shard_index, s->shard_count);
    for (int64_t i = 0; i < s->n; i++)
        if (s->tokens[i] < 0 || s->tokens[i] >= s->vocab)
            return fkd_error_set(err, FKD_E_INVALID_ARG, "token %d at %lld is not in the vocab",
                                 s->tokens[i], (long long)i);
    for (int64_t i = 0; i < s->n * s->k; i++)
        if (s->ids[i] < 0 || s->ids[i] >= s->vocab)
            return fkd_error_set(err, FKD_E_INVALID_ARG, "soft id %d at %lld is not in the vocab",
                                 s->ids[i], (long long)(i / s->k));
    return 0;
}

static void encode_header(uint8_t *p, const fkd_softlabel_shard *s)
{
    memset(p, 0, FKD_SOFT_HEADER_BYTES);
    memcpy(p, FKD_SOFT_MAGIC, 8);
    put_u32(p + 8, FKD_SOFT_VERSION);
    put_u32(p + 12, FKD_SOFT_HEADER_BYTES);
    put_u32(p + 16, (uint32_t)s->vocab);
    put_u16(p + 20, (uint32_t)s->k);
    p[22] = (uint8_t)id_width(s->vocab);
    p[23] = (uint8_t)s->quant;
    uint32_t t;
    memcpy(&t, &s->temperature, 4);
    put_u32(p + 24, t);
    put_u32(p + 28, s->shard_index);
    put_u32(p + 32, s->shard_count);
    put_u64(p + 40, s->first_position);
    put_u64(p + 48, (uint64_t)s->n);
}

int fkd_softlabels_encode(uint8_t **data, size_t *bytes, const fkd_softlabel_shard *s,
                          fkd_error *err)
{
    *data = NULL;
    *bytes = 0;
    if (check_shard(s, err) != 0) return -1;
    size_t total = fkd_softlabels_encoded_bytes(s->n, s->k, s->vocab, s->quant);
    uint8_t *buf = malloc(total);
    if (!buf) return fkd_error_set(err, FKD_E_NOMEM, "out of memory for %zu bytes", total);
    encode_header(buf, s);
    int iw = id_width(s->vocab), pw = prob_width(s->quant);
    uint8_t *p = buf + FKD_SOFT_HEADER_BYTES;
    for (int64_t i = 0; i < s->n; i++, p += iw) put_uint(p, (uint32_t)s->tokens[i], iw);
    for (int64_t i = 0; i < s->n * s->k; i++, p += iw) put_uint(p, (uint32_t)s->ids[i], iw);
    uint32_t q[FKD_SOFT_MAX_K];
    for (int64_t i = 0; i < s->n; i++) {
        quantize_codes(q, s->probs + i * s->k, s->k, s->quant);
        for (int j = 0; j < s->k; j++, p += pw) put_uint(p, q[j], pw);
    }
    put_u32(p, fkd_crc32(0, buf, total - 4));
    *data = buf;
    *bytes = total;
    return 0;
}

int fkd_softlabels_save(const char *path, const fkd_softlabel_shard *s, fkd_error *err)
{
    uint8_t *data;
    size_t bytes;
    if (fkd_softlabels_encode(&data, &bytes, s, err) != 0) return -1;
    int rc = fkd_file_write_atomic(path, data, bytes, err);
    free(data);
    return rc;
}

/* ---- decode ------------------------------------------------------------------- */

typedef struct {
    int vocab, k, iw, quant;
    float temperature;
    uint32_t shard_index, shard_count;
    uint64_t first, n;
} header;

static int decode_header(header *h, const uint8_t *d, size_t bytes, fkd_error *err)
{
    if (bytes < FKD_SOFT_HEADER_BYTES + 4)
        return fkd_error_set(err, FKD_E_TRUNCATED, "soft labels: %zu bytes is shorter than "
                             "the header", bytes);
    if (memcmp(d, FKD_SOFT_MAGIC, 8) != 0)
        return fkd_error_set(err, FKD_E_FORMAT, "not a soft-label file (bad magic)");
    uint32_t version = get_u32(d + 8);
    if (version > FKD_SOFT_VERSION)
        return fkd_error_set(err, FKD_E_VERSION, "soft labels are format version %u; this "
                             "build reads up to %d: upgrade fedkd", version, FKD_SOFT_VERSION);
    if (version == 0 || get_u32(d + 12) != FKD_SOFT_HEADER_BYTES || get_u32(d + 36) != 0 ||
        get_u64(d + 56) != 0)
        return fkd_error_set(err, FKD_E_FORMAT, "soft labels: malformed header");
    h->vocab = (int)get_u32(d + 16);
    h->k = (int)get_u16(d + 20);
    h->iw = d[22];
    h->quant = d[23];
    uint32_t t = get_u32(d + 24);
    memcpy(&h->temperature, &t, 4);
    h->shard_index = get_u32(d + 28);
    h->shard_count = get_u32(d + 32);
    h->first = get_u64(d + 40);
    h->n = get_u64(d + 48);
    if (h->vocab < 1 || get_u32(d + 16) > FKD_SOFT_MAX_VOCAB || h->k < 1 ||
        h->k > FKD_SOFT_MAX_K || h->k > h->vocab || h->iw != id_width(h->vocab) ||
        !quant_valid(h->quant) || !isfinite(h->temperature) || !(h->temperature > 0) ||
        h->shard_count == 0 || h->shard_index >= h->shard_count)
        return fkd_error_set(err, FKD_E_FORMAT, "soft labels: header field out of range "
                             "(vocab %d, k %d, id bytes %d, quant %d, shard %u/%u)", h->vocab,
                             h->k, h->iw, h->quant, h->shard_index, h->shard_count);
    if (h->n > (uint64_t)FKD_SOFT_MAX_POSITIONS)
        return fkd_error_set(err, FKD_E_LIMIT, "soft labels: %llu positions is above the "
                             "limit of %lld", (unsigned long long)h->n,
                             (long long)FKD_SOFT_MAX_POSITIONS);
    size_t want = fkd_softlabels_encoded_bytes((int64_t)h->n, h->k, h->vocab, h->quant);
    if (bytes < want)
        return fkd_error_set(err, FKD_E_TRUNCATED, "soft labels: %zu bytes, the header "
                             "declares %zu (file cut short?)", bytes, want);
    if (bytes > want)
        return fkd_error_set(err, FKD_E_FORMAT, "soft labels: %zu bytes, the header declares "
                             "%zu (trailing data)", bytes, want);
    if (get_u32(d + want - 4) != fkd_crc32(0, d, want - 4))
        return fkd_error_set(err, FKD_E_CHECKSUM, "soft labels: checksum mismatch (file "
                             "damaged; regenerate it with `fedkd teacher softlabels`)");
    return 0;
}

static int decode_ids(int32_t *out, const uint8_t **p, uint64_t count, const header *h,
                      const char *what, fkd_error *err)
{
    for (uint64_t i = 0; i < count; i++, *p += h->iw) {
        uint32_t v = get_uint(*p, h->iw);
        if (v >= (uint32_t)h->vocab)
            return fkd_error_set(err, FKD_E_FORMAT, "soft labels: %s %u at %llu is not below "
                                 "the vocabulary size %d", what, v, (unsigned long long)i,
                                 h->vocab);
        out[i] = (int32_t)v;
    }
    return 0;
}

static int decode_probs(fkd_softlabel_shard *s, const uint8_t *p, const header *h,
                        fkd_error *err)
{
    int pw = prob_width(h->quant);
    uint32_t qmax = quant_max(h->quant);
    for (int64_t i = 0; i < s->n; i++) {
        float *pr = s->probs + i * s->k;
        const int32_t *ids = s->ids + i * s->k;
        float sum = 0;
        for (int j = 0; j < s->k; j++, p += pw) {
            uint32_t q = get_uint(p, pw);
            if (q > qmax)
                return fkd_error_set(err, FKD_E_FORMAT, "soft labels: bad probability code");
            sum += pr[j] = dequant(q, h->quant);
            for (int m = 0; m < j && q; m++)
                if (ids[m] == ids[j] && pr[m] > 0)
                    return fkd_error_set(err, FKD_E_FORMAT, "soft labels: id %d repeated at "
                                         "position %lld", ids[j], (long long)i);
        }
        if (sum > 1.0f + SOFT_MASS_TOLERANCE)
            return fkd_error_set(err, FKD_E_FORMAT, "soft labels: position %lld has mass %g "
                                 "above 1", (long long)i, (double)sum);
    }
    return 0;
}

int fkd_softlabels_decode(fkd_softlabel_shard *s, const uint8_t *data, size_t bytes,
                          fkd_error *err)
{
    memset(s, 0, sizeof *s);
    header h;
    if (decode_header(&h, data, bytes, err) != 0) return -1;
    if (fkd_softlabels_alloc(s, (int64_t)h.n, h.k, h.vocab, err) != 0) return -1;
    s->quant = h.quant;
    s->temperature = h.temperature;
    s->shard_index = h.shard_index;
    s->shard_count = h.shard_count;
    s->first_position = h.first;
    const uint8_t *p = data + FKD_SOFT_HEADER_BYTES;
    if (decode_ids(s->tokens, &p, h.n, &h, "token", err) != 0 ||
        decode_ids(s->ids, &p, h.n * (uint64_t)h.k, &h, "id", err) != 0 ||
        decode_probs(s, p, &h, err) != 0) {
        fkd_softlabels_free(s);
        return -1;
    }
    return 0;
}

int fkd_softlabels_load(fkd_softlabel_shard *s, const char *path, fkd_error *err)
{
    memset(s, 0, sizeof *s);
    uint8_t *data;
    size_t bytes;
    if (fkd_file_read_all(&data, &bytes, path, SOFT_MAX_FILE_BYTES, err) != 0) return -1;
    int rc = fkd_softlabels_decode(s, data, bytes, err);
    free(data);
    return rc != 0 ? fkd_error_prefix(err, "%s", path) : 0;
}
