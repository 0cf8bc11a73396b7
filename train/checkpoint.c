/* checkpoint.c — the model file: a small header, a tensor table, the fp32
 * weights, and a CRC-32 of everything before it. All integers little-endian.
 *
 *   offset  size  field
 *   0       8     magic "FKDCKPT\0"
 *   8       4     format version (FKD_CHECKPOINT_VERSION)
 *   12      40    config: vocab, dim, n_layers, n_heads, n_kv_heads,
 *                 ffn_hidden, max_seq, tie_embeddings (u32 each),
 *                 rope_theta, norm_eps (f32)
 *   52      4     n_tensors (= FKD_T_COUNT)
 *   56      64*n  tensor table: name (24 bytes, NUL-padded), ndim (u32),
 *                 shape[3] (u32), offset in floats (u64), count (u64)
 *   ...     4*P   P float32 weights, in table order
 *   end-4   4     CRC-32 (IEEE) of all bytes before it
 *
 * Loading recomputes the layout from the config and requires the table to
 * equal it, so a file can never point outside its data. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "checkpoint.c assumes a little-endian host; add byte swapping for this platform"
#endif

static const char MAGIC[8] = {'F', 'K', 'D', 'C', 'K', 'P', 'T', 0};
enum { HEADER_BYTES = 56, ENTRY_BYTES = 64, NAME_BYTES = 24 };

static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get_u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static size_t table_bytes(void) { return HEADER_BYTES + (size_t)FKD_T_COUNT * ENTRY_BYTES; }

/* Writes the header and table (table_bytes()) into out. */
static void encode_header(uint8_t *out, const fkd_params *params)
{
    const fkd_model_config *c = &params->cfg;
    memset(out, 0, table_bytes());
    memcpy(out, MAGIC, 8);
    put_u32(out + 8, FKD_CHECKPOINT_VERSION);
    uint32_t ints[8] = {(uint32_t)c->vocab, (uint32_t)c->dim, (uint32_t)c->n_layers,
                        (uint32_t)c->n_heads, (uint32_t)c->n_kv_heads, (uint32_t)c->ffn_hidden,
                        (uint32_t)c->max_seq, (uint32_t)c->tie_embeddings};
    for (int i = 0; i < 8; i++) put_u32(out + 12 + 4 * i, ints[i]);
    memcpy(out + 44, &c->rope_theta, 4);
    memcpy(out + 48, &c->norm_eps, 4);
    put_u32(out + 52, FKD_T_COUNT);
    for (int t = 0; t < FKD_T_COUNT; t++) {
        const fkd_tensor_info *ti = &params->tensors[t];
        uint8_t *e = out + HEADER_BYTES + (size_t)t * ENTRY_BYTES;
        strncpy((char *)e, ti->name, NAME_BYTES - 1);
        put_u32(e + 24, (uint32_t)ti->ndim);
        for (int k = 0; k < 3; k++) put_u32(e + 28 + 4 * k, (uint32_t)ti->shape[k]);
        put_u64(e + 40, ti->offset);
        put_u64(e + 48, ti->count);
    }
}

int fkd_checkpoint_encode(uint8_t **data, size_t *bytes, const fkd_params *params,
                          fkd_error *err)
{
    size_t head = table_bytes(), weights = params->n_params * sizeof(float);
    size_t total = head + weights + 4;
    uint8_t *buf = malloc(total);
    if (!buf) return fkd_error_set(err, FKD_E_NOMEM, "cannot allocate %zu bytes", total);
    encode_header(buf, params);
    memcpy(buf + head, params->memory, weights);
    put_u32(buf + head + weights, fkd_crc32(0, buf, head + weights));
    *data = buf;
    *bytes = total;
    return 0;
}

int fkd_checkpoint_save(const char *path, const fkd_params *params, fkd_error *err)
{
    /* Streams the weights instead of copying them: models can be large. */
    uint8_t head[HEADER_BYTES + FKD_T_COUNT * ENTRY_BYTES];
    encode_header(head, params);
    size_t weights = params->n_params * sizeof(float);
    uint32_t crc = fkd_crc32(fkd_crc32(0, head, sizeof head), params->memory, weights);
    uint8_t crc_bytes[4];
    put_u32(crc_bytes, crc);
    fkd_atomic_file af;
    if (fkd_atomic_open(&af, path, err) != 0) return -1;
    if (fkd_atomic_write(&af, head, sizeof head, err) != 0 ||
        fkd_atomic_write(&af, params->memory, weights, err) != 0 ||
        fkd_atomic_write(&af, crc_bytes, 4, err) != 0) {
        fkd_atomic_abort(&af);
        return -1;
    }
    return fkd_atomic_commit(&af, err);
}

static int check_table(const uint8_t *table, const fkd_params *params, fkd_error *err)
{
    for (int t = 0; t < FKD_T_COUNT; t++) {
        const uint8_t *e = table + (size_t)t * ENTRY_BYTES;
        const fkd_tensor_info *ti = &params->tensors[t];
        if (memchr(e, 0, NAME_BYTES) == NULL || strcmp((const char *)e, ti->name) != 0)
            return fkd_error_set(err, FKD_E_FORMAT, "checkpoint tensor %d: name is not '%s'", t,
                                 ti->name);
        int same = get_u32(e + 24) == (uint32_t)ti->ndim && get_u64(e + 40) == ti->offset &&
                   get_u64(e + 48) == ti->count;
        for (int k = 0; k < 3; k++) same = same && get_u32(e + 28 + 4 * k) == (uint32_t)ti->shape[k];
        if (!same)
            return fkd_error_set(err, FKD_E_FORMAT,
                                 "checkpoint tensor '%s': shape or offset disagrees with the config",
                                 ti->name);
    }
    return 0;
}

int fkd_checkpoint_decode(fkd_params *params, const uint8_t *data, size_t bytes, fkd_error *err)
{
    memset(params, 0, sizeof *params);
    if (bytes < HEADER_BYTES)
        return fkd_error_set(err, FKD_E_TRUNCATED, "checkpoint is %zu bytes, shorter than its "
                             "%d-byte header", bytes, HEADER_BYTES);
    if (memcmp(data, MAGIC, 8) != 0)
        return fkd_error_set(err, FKD_E_FORMAT, "not a fedkd checkpoint (bad magic)");
    uint32_t version = get_u32(data + 8);
    if (version != FKD_CHECKPOINT_VERSION)
        return fkd_error_set(err, version > FKD_CHECKPOINT_VERSION ? FKD_E_VERSION : FKD_E_FORMAT,
                             "checkpoint format version %u; this build reads version %d", version,
                             FKD_CHECKPOINT_VERSION);
    fkd_model_config c;
    c.vocab = (int)get_u32(data + 12);
    c.dim = (int)get_u32(data + 16);
    c.n_layers = (int)get_u32(data + 20);
    c.n_heads = (int)get_u32(data + 24);
    c.n_kv_heads = (int)get_u32(data + 28);
    c.ffn_hidden = (int)get_u32(data + 32);
    c.max_seq = (int)get_u32(data + 36);
    c.tie_embeddings = (int)get_u32(data + 40);
    memcpy(&c.rope_theta, data + 44, 4);
    memcpy(&c.norm_eps, data + 48, 4);
    fkd_error cfg_err;
    if (fkd_config_validate(&c, &cfg_err) != 0)
        return fkd_error_set(err, FKD_E_FORMAT, "checkpoint config: %s", cfg_err.msg);
    if (get_u32(data + 52) != FKD_T_COUNT)
        return fkd_error_set(err, FKD_E_FORMAT, "checkpoint has %u tensors, expected %d",
                             get_u32(data + 52), FKD_T_COUNT);
    fkd_tensor_info layout[FKD_T_COUNT];
    size_t n_params = fkd_param_layout(layout, &c);
    size_t head = table_bytes();
    if (n_params > (SIZE_MAX - head - 4) / sizeof(float))
        return fkd_error_set(err, FKD_E_FORMAT, "checkpoint config describes an impossible size");
    size_t expect = head + n_params * sizeof(float) + 4;
    if (bytes < expect)
        return fkd_error_set(err, FKD_E_TRUNCATED, "checkpoint is truncated: %zu of %zu bytes",
                             bytes, expect);
    if (bytes > expect)
        return fkd_error_set(err, FKD_E_FORMAT, "checkpoint has %zu trailing bytes", bytes - expect);
    if (fkd_crc32(0, data, expect - 4) != get_u32(data + expect - 4))
        return fkd_error_set(err, FKD_E_CHECKSUM, "checkpoint checksum mismatch: the file is "
                             "corrupted (restore it from a backup or retrain)");
    if (fkd_params_init(params, &c, err) != 0) return -1;
    if (check_table(data + HEADER_BYTES, params, err) != 0) {
        fkd_params_free(params);
        return -1;
    }
    memcpy(params->memory, data + head, n_params * sizeof(float));
    return 0;
}

int fkd_checkpoint_load(fkd_params *params, const char *path, fkd_error *err)
{
    uint8_t *data;
    size_t bytes;
    memset(params, 0, sizeof *params);
    if (fkd_file_read_all(&data, &bytes, path, (size_t)1 << 40, err) != 0) return -1;
    int rc = fkd_checkpoint_decode(params, data, bytes, err);
    free(data);
    if (rc != 0) {
        char inner[sizeof err->msg];
        if (err) {
            snprintf(inner, sizeof inner, "%s", err->msg);
            fkd_error_set(err, err->code, "%s: %s", path, inner);
        }
        return -1;
    }
    return 0;
}
