/* quant.c — block quantization in ggml's layouts (Q8_0, Q4_0, Q4_1) and the
 * F16/F32 row formats, so that a tensor quantized here can be written into a
 * GGUF file byte for byte.
 *
 * The rounding rules follow ggml's reference quantizers: Q8_0 scales by
 * max|x|/127 and rounds to nearest; Q4_0 divides by the value of largest
 * magnitude over -8 (so that value lands on code 0 and the rest use [-8, 7]);
 * Q4_1 spans [min, max] with 15 steps. Scales are stored as fp16, and the
 * codes are computed from the fp32 scale as ggml does.
 */
#include "fkd_compress.h"

#include <math.h>
#include <string.h>

static void put_f16(uint8_t *p, float v)
{
    uint16_t h = fkd_fp32_to_fp16(v);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

static float get_f16(const uint8_t *p)
{
    return fkd_fp16_to_fp32((uint16_t)(p[0] | (p[1] << 8)));
}

int fkd_qtype_is_int4(int t)
{
    return t == FKD_QTYPE_Q4_0 || t == FKD_QTYPE_Q4_1;
}

int fkd_qtype_valid(int t)
{
    return t == FKD_QTYPE_F32 || t == FKD_QTYPE_F16 || t == FKD_QTYPE_Q8_0 ||
           t == FKD_QTYPE_Q4_0 || t == FKD_QTYPE_Q4_1;
}

static const struct {
    int type;
    const char *name;
    size_t values, bytes;
} qtypes[] = {
    {FKD_QTYPE_F32, "f32", 1, 4},
    {FKD_QTYPE_F16, "f16", 1, 2},
    {FKD_QTYPE_Q8_0, "q8_0", FKD_QK, FKD_Q8_0_BLOCK_BYTES},
    {FKD_QTYPE_Q4_0, "q4_0", FKD_QK, FKD_Q4_0_BLOCK_BYTES},
    {FKD_QTYPE_Q4_1, "q4_1", FKD_QK, FKD_Q4_1_BLOCK_BYTES},
};
#define N_QTYPES (sizeof qtypes / sizeof qtypes[0])

static int qtype_index(int t)
{
    for (size_t i = 0; i < N_QTYPES; i++)
        if (qtypes[i].type == t) return (int)i;
    return -1;
}

const char *fkd_qtype_name(int t)
{
    int i = qtype_index(t);
    return i < 0 ? "?" : qtypes[i].name;
}

int fkd_qtype_from_name(const char *name)
{
    for (size_t i = 0; i < N_QTYPES; i++)
        if (strcmp(qtypes[i].name, name) == 0) return qtypes[i].type;
    return -1;
}

size_t fkd_qtype_block_values(int t)
{
    int i = qtype_index(t);
    return i < 0 ? 0 : qtypes[i].values;
}

size_t fkd_qtype_block_bytes(int t)
{
    int i = qtype_index(t);
    return i < 0 ? 0 : qtypes[i].bytes;
}

size_t fkd_qtype_row_bytes(int t, size_t n)
{
    int i = qtype_index(t);
    if (i < 0 || n % qtypes[i].values != 0) return 0;
    return n / qtypes[i].values * qtypes[i].bytes;
}

/* Code of v clamped to [lo, hi]; NaN gives 0 (casting NaN or an
 * out-of-range float to int is undefined). Truncates toward zero, which
 * after ggml's +offset is its rounding. */
static int clamp_code(float v, int lo, int hi)
{
    if (v != v) return 0;
    if (v < (float)lo) return lo;
    if (v > (float)hi) return hi;
    return (int)v;
}

/* ---- Q8_0 ---------------------------------------------------------------- */
void fkd_q8_0_quantize_row(uint8_t *blocks, const float *x, size_t n)
{
    for (size_t b = 0; b < n / FKD_QK; b++, x += FKD_QK, blocks += FKD_Q8_0_BLOCK_BYTES) {
        float amax = 0.0f;
        for (int j = 0; j < FKD_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        put_f16(blocks, d);
        int8_t *qs = (int8_t *)(blocks + 2);
        for (int j = 0; j < FKD_QK; j++) qs[j] = (int8_t)clamp_code(roundf(x[j] * id), -127, 127);
    }
}

void fkd_q8_0_dequantize_row(float *x, const uint8_t *blocks, size_t n)
{
    for (size_t b = 0; b < n / FKD_QK; b++, x += FKD_QK, blocks += FKD_Q8_0_BLOCK_BYTES) {
        float d = get_f16(blocks);
        const int8_t *qs = (const int8_t *)(blocks + 2);
        for (int j = 0; j < FKD_QK; j++) x[j] = (float)qs[j] * d;
    }
}

/* ---- Q4_0 ---------------------------------------------------------------- */
void fkd_q4_0_quantize_row(uint8_t *blocks, const float *x, size_t n)
{
    for (size_t b = 0; b < n / FKD_QK; b++, x += FKD_QK, blocks += FKD_Q4_0_BLOCK_BYTES) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < FKD_QK; j++) {
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        float d = max / -8.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        put_f16(blocks, d);
        uint8_t *qs = blocks + 2;
        for (int j = 0; j < FKD_QK / 2; j++) {
            uint8_t lo = (uint8_t)clamp_code(x[j] * id + 8.5f, 0, 15);
            uint8_t hi = (uint8_t)clamp_code(x[j + FKD_QK / 2] * id + 8.5f, 0, 15);
            qs[j] = (uint8_t)(lo | (hi << 4));
        }
    }
}

void fkd_q4_0_dequantize_row(float *x, const uint8_t *blocks, size_t n)
{
    for (size_t b = 0; b < n / FKD_QK; b++, x += FKD_QK, blocks += FKD_Q4_0_BLOCK_BYTES) {
        float d = get_f16(blocks);
        const uint8_t *qs = blocks + 2;
        for (int j = 0; j < FKD_QK / 2; j++) {
            x[j] = (float)((qs[j] & 0x0f) - 8) * d;
            x[j + FKD_QK / 2] = (float)((qs[j] >> 4) - 8) * d;
        }
    }
}

/* ---- Q4_1 ---------------------------------------------------------------- */
void fkd_q4_1_quantize_row(uint8_t *blocks, const float *x, size_t n)
{
    for (size_t b = 0; b < n / FKD_QK; b++, x += FKD_QK, blocks += FKD_Q4_1_BLOCK_BYTES) {
        float min = INFINITY, max = -INFINITY;
        for (int j = 0; j < FKD_QK; j++) {
            min = fminf(min, x[j]);
            max = fmaxf(max, x[j]);
        }
        float d = (max - min) / 15.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        put_f16(blocks, d);
        put_f16(blocks + 2, min);
        uint8_t *qs = blocks + 4;
        for (int j = 0; j < FKD_QK / 2; j++) {
            uint8_t lo = (uint8_t)clamp_code((x[j] - min) * id + 0.5f, 0, 15);
            uint8_t hi = (uint8_t)clamp_code((x[j + FKD_QK / 2] - min) * id + 0.5f, 0, 15);
            qs[j] = (uint8_t)(lo | (hi << 4));
        }
    }
}

void fkd_q4_1_dequantize_row(float *x, const uint8_t *blocks, size_t n)
{
    for (size_t b = 0; b < n / FKD_QK; b++, x += FKD_QK, blocks += FKD_Q4_1_BLOCK_BYTES) {
        float d = get_f16(blocks), m = get_f16(blocks + 2);
        const uint8_t *qs = blocks + 4;
        for (int j = 0; j < FKD_QK / 2; j++) {
            x[j] = (float)(qs[j] & 0x0f) * d + m;
            x[j + FKD_QK / 2] = (float)(qs[j] >> 4) * d + m;
        }
    }
}

/* ---- any format ------------------------------------------------------------ */
int fkd_quantize_row(uint8_t *out, int type, const float *x, size_t n)
{
    if (fkd_qtype_row_bytes(type, n) == 0 && n != 0) return -1;
    switch (type) {
    case FKD_QTYPE_F32:
        for (size_t i = 0; i < n; i++) memcpy(out + 4 * i, &x[i], 4); /* host is little-endian */
        return 0;
    case FKD_QTYPE_F16:
        for (size_t i = 0; i < n; i++) put_f16(out + 2 * i, x[i]);
        return 0;
    case FKD_QTYPE_Q8_0: fkd_q8_0_quantize_row(out, x, n); return 0;
    case FKD_QTYPE_Q4_0: fkd_q4_0_quantize_row(out, x, n); return 0;
    case FKD_QTYPE_Q4_1: fkd_q4_1_quantize_row(out, x, n); return 0;
    }
    return -1;
}

int fkd_dequantize_row(float *x, int type, const uint8_t *data, size_t n)
{
    if (fkd_qtype_row_bytes(type, n) == 0 && n != 0) return -1;
    switch (type) {
    case FKD_QTYPE_F32: memcpy(x, data, 4 * n); return 0;
    case FKD_QTYPE_F16:
        for (size_t i = 0; i < n; i++) x[i] = get_f16(data + 2 * i);
        return 0;
    case FKD_QTYPE_Q8_0: fkd_q8_0_dequantize_row(x, data, n); return 0;
    case FKD_QTYPE_Q4_0: fkd_q4_0_dequantize_row(x, data, n); return 0;
    case FKD_QTYPE_Q4_1: fkd_q4_1_dequantize_row(x, data, n); return 0;
    }
    return -1;
}
