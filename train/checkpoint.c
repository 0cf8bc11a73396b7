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

static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint64_t get_u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static size_t table_bytes(void) { return HEADER_BYTES + (size_t)FKD_T_COUNT * ENTRY_BYTES; }

/* Writes the header and table (table_bytes()) into out. */
static void encode_header(uint8_t *out, const fkd_params *params)
{
    memset(out, 0, table_bytes());
    memcpy(out, MAGIC, 8);
    fkd_put_u32(out + 8, FKD_CHECKPOINT_VERSION);
    fkd_config_put(out + 12, &params->cfg);
    fkd_put_u32(out + 52, FKD_T_COUNT);
    for (int t = 0; t < FKD_T_COUNT; t++) {
        const fkd_tensor_info *ti = &params->tensors[t];
        uint8_t *e = out + HEADER_BYTES + (size_t)t * ENTRY_BYTES;
        strncpy((char *)e, ti->name, NAME_BYTES - 1);
        fkd_put_u32(e + 24, (uint32_t)ti->ndim);
        for (int k = 0; k < 3; k++) fkd_put_u32(e + 28 + 4 * k, (uint32_t)ti->shape[k]);
        put_u64(e + 40, ti->offset);
        put_u64(e + 48, ti->count);
    }
}

int fkd_checkpoint_encode(uint8_t **data, size_t *bytes, const fkd_params *params,
                          fkd_error *err)
{
    uint8_t head[HEADER_BYTES + FKD_T_COUNT * ENTRY_BYTES];
    encode_header(head, params);
    return fkd_frame_encode(data, bytes, head, sizeof head, params->memory, params->n_params, err);
}

int fkd_checkpoint_save(const char *path, const fkd_params *params, fkd_error *err)
{
    uint8_t head[HEADER_BYTES + FKD_T_COUNT * ENTRY_BYTES];
    encode_header(head, params);
    return fkd_frame_save(path, head, sizeof head, params->memory, params->n_params, err);
}

static int check_table(const uint8_t *table, const fkd_params *params, fkd_error *err)
{
    for (int t = 0; t < FKD_T_COUNT; t++) {
        const uint8_t *e = table + (size_t)t * ENTRY_BYTES;
        const fkd_tensor_info *ti = &params->tensors[t];
        if (memchr(e, 0, NAME_BYTES) == NULL || strcmp((const char *)e, ti->name) != 0)
            return fkd_error_set(err, FKD_E_FORMAT, "checkpoint tensor %d: name is not '%s'", t,
                                 ti->name);
        int same = fkd_get_u32(e + 24) == (uint32_t)ti->ndim && get_u64(e + 40) == ti->offset &&
                   get_u64(e + 48) == ti->count;
        for (int k = 0; k < 3; k++) same = same && fkd_get_u32(e + 28 + 4 * k) == (uint32_t)ti->shape[k];
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
    uint32_t version = fkd_get_u32(data + 8);
    if (version != FKD_CHECKPOINT_VERSION)
        return fkd_error_set(err, version > FKD_CHECKPOINT_VERSION ? FKD_E_VERSION : FKD_E_FORMAT,
                             "checkpoint format version %u; this build reads version %d", version,
                             FKD_CHECKPOINT_VERSION);
    fkd_model_config c;
    fkd_config_get(&c, data + 12);
    fkd_error cfg_err;
    if (fkd_config_validate(&c, &cfg_err) != 0)
        return fkd_error_set(err, FKD_E_FORMAT, "checkpoint config: %s", cfg_err.msg);
    if (fkd_get_u32(data + 52) != FKD_T_COUNT)
        return fkd_error_set(err, FKD_E_FORMAT, "checkpoint has %u tensors, expected %d",
                             fkd_get_u32(data + 52), FKD_T_COUNT);
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
    if (fkd_crc32(0, data, expect - 4) != fkd_get_u32(data + expect - 4))
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
    return rc != 0 ? fkd_error_prefix(err, "%s", path) : 0;
}
