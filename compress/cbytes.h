/* cbytes.h — private to compress/: little-endian writers and a bounds-checked
 * reader for the library's formats (quantized model, compressed update,
 * residual file). Every read goes through rd_take(), which refuses to move
 * past the end, so a decoder cannot over-read however the input is forged. */
#ifndef FKD_CBYTES_H
#define FKD_CBYTES_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    uint8_t *p;
} fkd_wr;

static inline void wr_bytes(fkd_wr *w, const void *src, size_t n)
{
    if (n) memcpy(w->p, src, n);
    w->p += n;
}
static inline void wr_u8(fkd_wr *w, uint8_t v) { *w->p++ = v; }
static inline void wr_u32(fkd_wr *w, uint32_t v)
{
    for (int i = 0; i < 4; i++) *w->p++ = (uint8_t)(v >> (8 * i));
}
static inline void wr_u64(fkd_wr *w, uint64_t v)
{
    for (int i = 0; i < 8; i++) *w->p++ = (uint8_t)(v >> (8 * i));
}
static inline void wr_f32(fkd_wr *w, float f)
{
    uint32_t v;
    memcpy(&v, &f, 4);
    wr_u32(w, v);
}

typedef struct {
    const uint8_t *p;
    size_t left;
} fkd_rd;

/* Returns a pointer to the next n bytes and advances, or NULL (and does not
 * move) when fewer than n remain. */
static inline const uint8_t *rd_take(fkd_rd *r, size_t n)
{
    if (n > r->left) return NULL;
    const uint8_t *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}
static inline uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}
static inline uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | ((uint64_t)le32(p + 4) << 32);
}
static inline float lef32(const uint8_t *p)
{
    uint32_t v = le32(p);
    float f;
    memcpy(&f, &v, 4);
    return f;
}
static inline int rd_u8(fkd_rd *r, uint8_t *v)
{
    const uint8_t *p = rd_take(r, 1);
    if (!p) return -1;
    *v = p[0];
    return 0;
}
static inline int rd_u32(fkd_rd *r, uint32_t *v)
{
    const uint8_t *p = rd_take(r, 4);
    if (!p) return -1;
    *v = le32(p);
    return 0;
}
static inline int rd_u64(fkd_rd *r, uint64_t *v)
{
    const uint8_t *p = rd_take(r, 8);
    if (!p) return -1;
    *v = le64(p);
    return 0;
}
static inline int rd_f32(fkd_rd *r, float *v)
{
    const uint8_t *p = rd_take(r, 4);
    if (!p) return -1;
    *v = lef32(p);
    return 0;
}

#endif
