/* lora_io.c — the adapter file: what a LoRA client uploads instead of its
 * model. A small header, the parameter arena as fp32, a CRC-32.
 *
 *   offset  size  field
 *   0       8     magic "FKDLORA\0"
 *   8       4     format version (FKD_LORA_VERSION)
 *   12      40    model config: vocab, dim, n_layers, n_heads, n_kv_heads,
 *                 ffn_hidden, max_seq, tie_embeddings (u32 each),
 *                 rope_theta, norm_eps (f32)
 *   52      4     rank (u32)
 *   56      4     alpha (f32)
 *   60      4     targets: bit t set = tensor t (enum FKD_T_*) adapted
 *   64      8     n: floats that follow (u64)
 *   72      4n    the arena (fkd_lora.params), layout of fkd_lora.tensors
 *   end-4   4     CRC-32 (IEEE) of all bytes before it
 *
 * The decoder recomputes the layout from the header and requires n and the
 * byte count to equal it before it allocates, so a forged header cannot ask
 * for memory its bytes do not carry.
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char MAGIC[8] = {'F', 'K', 'D', 'L', 'O', 'R', 'A', 0};
enum { HEADER_BYTES = 72, CRC_BYTES = 4 };

size_t fkd_lora_encoded_bytes(const fkd_lora *lora)
{
    return HEADER_BYTES + lora->n * sizeof(float) + CRC_BYTES;
}

static uint32_t target_bits(const fkd_lora *lora)
{
    uint32_t bits = 0;
    for (int t = 0; t < FKD_T_COUNT; t++)
        if (lora->tensors[t].count) bits |= 1u << t;
    return bits;
}

static void encode_header(uint8_t *out, const fkd_lora *lora)
{
    memcpy(out, MAGIC, 8);
    fkd_put_u32(out + 8, FKD_LORA_VERSION);
    fkd_config_put(out + 12, &lora->model);
    fkd_put_u32(out + 52, (uint32_t)lora->cfg.rank);
    memcpy(out + 56, &lora->cfg.alpha, 4);
    fkd_put_u32(out + 60, target_bits(lora));
    uint64_t n = lora->n;
    memcpy(out + 64, &n, 8);
}

int fkd_lora_encode(uint8_t **data, size_t *bytes, const fkd_lora *lora, fkd_error *err)
{
    uint8_t head[HEADER_BYTES];
    encode_header(head, lora);
    return fkd_frame_encode(data, bytes, head, sizeof head, lora->params, lora->n, err);
}

int fkd_lora_save(const char *path, const fkd_lora *lora, fkd_error *err)
{
    uint8_t head[HEADER_BYTES];
    encode_header(head, lora);
    return fkd_frame_save(path, head, sizeof head, lora->params, lora->n, err);
}

/* The header's config, rank, alpha and targets, each checked. */
static int decode_header(fkd_model_config *c, fkd_lora_config *lc, uint64_t *n,
                         const uint8_t *data, fkd_error *err)
{
    if (memcmp(data, MAGIC, 8) != 0)
        return fkd_error_set(err, FKD_E_FORMAT, "not a fedkd LoRA file (bad magic)");
    uint32_t version = fkd_get_u32(data + 8);
    if (version != FKD_LORA_VERSION)
        return fkd_error_set(err, version > FKD_LORA_VERSION ? FKD_E_VERSION : FKD_E_FORMAT,
                             "LoRA format version %u; this build reads version %d", version,
                             FKD_LORA_VERSION);
    for (int i = 0; i < 8; i++)
        if (fkd_get_u32(data + 12 + 4 * i) > (1u << 24))
            return fkd_error_set(err, FKD_E_FORMAT, "LoRA config field %d is out of range (%u)",
                                 i, fkd_get_u32(data + 12 + 4 * i));
    fkd_config_get(c, data + 12);
    fkd_error inner;
    if (fkd_config_validate(c, &inner) != 0)
        return fkd_error_set(err, FKD_E_FORMAT, "LoRA model config is invalid: %s", inner.msg);
    if (!isfinite(c->rope_theta) || !isfinite(c->norm_eps))
        return fkd_error_set(err, FKD_E_FORMAT, "LoRA model config: rope_theta or norm_eps "
                             "is not finite");
    uint32_t rank = fkd_get_u32(data + 52), bits = fkd_get_u32(data + 60);
    memset(lc, 0, sizeof *lc);
    lc->rank = rank > FKD_LORA_MAX_RANK ? 0 : (int)rank;
    memcpy(&lc->alpha, data + 56, 4);
    for (int t = 0; t < 32; t++) {
        if (!(bits & (1u << t))) continue;
        if (t >= FKD_T_COUNT || !fkd_tensor_is_block_matrix(t))
            return fkd_error_set(err, FKD_E_FORMAT, "LoRA targets tensor %d, not a block matrix",
                                 t);
        lc->targets[t] = 1;
    }
    memcpy(n, data + 64, 8);
    return 0;
}

int fkd_lora_decode(fkd_lora *lora, const fkd_model_config *expect, const uint8_t *data,
                    size_t bytes, fkd_error *err)
{
    memset(lora, 0, sizeof *lora);
    if (bytes < HEADER_BYTES + CRC_BYTES)
        return fkd_error_set(err, FKD_E_TRUNCATED, "LoRA file is %zu bytes, shorter than its "
                             "%d-byte header", bytes, HEADER_BYTES + CRC_BYTES);
    fkd_model_config c;
    fkd_lora_config lc;
    uint64_t n = 0;
    if (decode_header(&c, &lc, &n, data, err) != 0) return -1;
    if (expect && !fkd_config_same_blocks(&c, expect))
        return fkd_error_set(err, FKD_E_MISMATCH, "LoRA adapters are for dim %d, %d layers, "
                             "%d/%d heads, ffn %d; this model has dim %d, %d layers, %d/%d "
                             "heads, ffn %d", c.dim, c.n_layers, c.n_heads, c.n_kv_heads,
                             c.ffn_hidden, expect->dim, expect->n_layers, expect->n_heads,
                             expect->n_kv_heads, expect->ffn_hidden);
    fkd_tensor_info layout[FKD_T_COUNT];
    fkd_error inner;
    size_t want = fkd_lora_layout(layout, &c, &lc, &inner);
    if (want == 0) return fkd_error_set(err, FKD_E_FORMAT, "LoRA header: %s", inner.msg);
    if (n != want)
        return fkd_error_set(err, FKD_E_FORMAT, "LoRA header declares %llu floats; its rank and "
                             "targets make %zu", (unsigned long long)n, want);
    size_t expect_bytes = HEADER_BYTES + want * sizeof(float) + CRC_BYTES;
    if (bytes != expect_bytes)
        return fkd_error_set(err, bytes < expect_bytes ? FKD_E_TRUNCATED : FKD_E_FORMAT,
                             "LoRA file is %zu bytes; its header makes %zu", bytes, expect_bytes);
#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION /* let a fuzzer reach the checks below */
    if (fkd_crc32(0, data, bytes - CRC_BYTES) != fkd_get_u32(data + bytes - CRC_BYTES))
        return fkd_error_set(err, FKD_E_CHECKSUM, "LoRA checksum mismatch: the adapters were "
                             "corrupted in transit or on disk (send them again)");
#endif
    const uint8_t *body = data + HEADER_BYTES;
    for (size_t i = 0; i < want; i++) {
        float x;
        memcpy(&x, body + 4 * i, 4);
        if (!isfinite(x))
            return fkd_error_set(err, FKD_E_FORMAT, "LoRA value %zu is not finite", i);
    }
    if (fkd_lora_alloc(lora, &c, &lc, err) != 0) return -1;
    memcpy(lora->params, body, want * sizeof(float));
    return 0;
}

int fkd_lora_load(fkd_lora *lora, const fkd_model_config *expect, const char *path,
                  fkd_error *err)
{
    uint8_t *data;
    size_t bytes;
    memset(lora, 0, sizeof *lora);
    size_t most = HEADER_BYTES + FKD_LORA_MAX_FLOATS * sizeof(float) + CRC_BYTES;
    if (fkd_file_read_all(&data, &bytes, path, most, err) != 0) return -1;
    fkd_error inner;
    int rc = fkd_lora_decode(lora, expect, data, bytes, &inner);
    free(data);
    if (rc != 0) return fkd_error_set(err, inner.code, "%s: %s", path, inner.msg);
    return 0;
}
