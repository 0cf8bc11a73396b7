/* framed.c — the frame shared by train/'s fp32 files (checkpoints, LoRA
 * adapters): a header, a body of float32 values, and a CRC-32 of both,
 * built in memory or streamed atomically to a file; and the model config
 * as those headers store it. Little-endian hosts only (the files are). */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "framed.c assumes a little-endian host; add byte swapping for this platform"
#endif

int fkd_frame_encode(uint8_t **data, size_t *bytes, const uint8_t *head, size_t head_bytes,
                     const float *body, size_t n, fkd_error *err)
{
    size_t body_bytes = n * sizeof(float), total = head_bytes + body_bytes + 4;
    uint8_t *buf = malloc(total);
    if (!buf) return fkd_error_set(err, FKD_E_NOMEM, "cannot allocate %zu bytes", total);
    memcpy(buf, head, head_bytes);
    if (body_bytes) memcpy(buf + head_bytes, body, body_bytes);
    fkd_put_u32(buf + head_bytes + body_bytes, fkd_crc32(0, buf, head_bytes + body_bytes));
    *data = buf;
    *bytes = total;
    return 0;
}

int fkd_frame_save(const char *path, const uint8_t *head, size_t head_bytes, const float *body,
                   size_t n, fkd_error *err)
{
    /* Streams the body instead of copying it: models can be large. */
    size_t body_bytes = n * sizeof(float);
    uint8_t crc[4];
    fkd_put_u32(crc, fkd_crc32(fkd_crc32(0, head, head_bytes), body, body_bytes));
    fkd_atomic_file af;
    if (fkd_atomic_open(&af, path, err) != 0) return -1;
    if (fkd_atomic_write(&af, head, head_bytes, err) != 0 ||
        fkd_atomic_write(&af, body, body_bytes, err) != 0 ||
        fkd_atomic_write(&af, crc, sizeof crc, err) != 0) {
        fkd_atomic_abort(&af);
        return -1;
    }
    return fkd_atomic_commit(&af, err);
}

void fkd_config_put(uint8_t out[FKD_CONFIG_BYTES], const fkd_model_config *c)
{
    uint32_t ints[8] = {(uint32_t)c->vocab, (uint32_t)c->dim, (uint32_t)c->n_layers,
                        (uint32_t)c->n_heads, (uint32_t)c->n_kv_heads, (uint32_t)c->ffn_hidden,
                        (uint32_t)c->max_seq, (uint32_t)c->tie_embeddings};
    for (int i = 0; i < 8; i++) fkd_put_u32(out + 4 * i, ints[i]);
    memcpy(out + 32, &c->rope_theta, 4);
    memcpy(out + 36, &c->norm_eps, 4);
}

void fkd_config_get(fkd_model_config *c, const uint8_t in[FKD_CONFIG_BYTES])
{
    int *ints[8] = {&c->vocab, &c->dim, &c->n_layers, &c->n_heads, &c->n_kv_heads,
                    &c->ffn_hidden, &c->max_seq, &c->tie_embeddings};
    for (int i = 0; i < 8; i++) *ints[i] = (int)fkd_get_u32(in + 4 * i);
    memcpy(&c->rope_theta, in + 32, 4);
    memcpy(&c->norm_eps, in + 36, 4);
}
