/* qdot_simd.h — the SIMD tile kernel of qdot.c, written once and included
 * once per instruction set (AVX2: maddubs + madd; AVX-512 VNNI: dpbusd).
 * The includer defines:
 *   SIMD_FN          the target attribute of the functions defined here;
 *   SIMD_NAME(x)     x with the instruction set's suffix;
 *   SIMD_DOT4(u, s)  eight int32 lanes, lane i = sum over bytes 4i..4i+3 of
 *                    u (unsigned) times s (signed).
 * It computes, for a tile of RT weight rows by CT activation columns, the
 * canonical block dot product of qdot.c (see "the canonical sum" there),
 * so each (row, column) gives the bits the scalar path gives it. */

/* 16 packed bytes -> 32 codes: low nibbles (values 0..15), then high (16..31). */
SIMD_FN static inline __m256i SIMD_NAME(unpack_nibbles)(const uint8_t *p)
{
    __m128i packed = _mm_loadu_si128((const __m128i *)p);
    __m128i mask = _mm_set1_epi8(0x0f);
    __m128i lo = _mm_and_si128(packed, mask);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
    return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
}

/* ((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7)): the order hsum8 uses in scalar. */
SIMD_FN static inline float SIMD_NAME(hsum8)(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

/* out[c * ldo + r] for r < RT, c < CT: rows of row_bytes at w, columns of
 * ldx blocks at x, nb blocks each. RT, CT and type are constants at every
 * call, so the loops unroll and the accumulators live in registers. */
SIMD_FN static inline __attribute__((always_inline)) void
SIMD_NAME(tile)(float *out, size_t ldo, int type, const uint8_t *w, size_t row_bytes,
                const fkd_q8_act *x, size_t ldx, size_t nb, const int RT, const int CT)
{
    __m256 acc[TILE_MAX][TILE_MAX];
    float accm[TILE_MAX][TILE_MAX];
    size_t stride = fkd_qtype_block_bytes(type);
#pragma GCC unroll 4
    for (int r = 0; r < RT; r++)
#pragma GCC unroll 4
        for (int c = 0; c < CT; c++) {
            acc[r][c] = _mm256_setzero_ps();
            accm[r][c] = 0.0f;
        }
    for (size_t b = 0; b < nb; b++) {
        __m256i wv[TILE_MAX], wabs[TILE_MAX];
        float dw[TILE_MAX], mw[TILE_MAX];
#pragma GCC unroll 4
        for (int r = 0; r < RT; r++) {
            const uint8_t *blk = w + (size_t)r * row_bytes + b * stride;
            dw[r] = _cvtsh_ss((unsigned short)(blk[0] | blk[1] << 8));
            if (type == FKD_QTYPE_Q4_1) mw[r] = _cvtsh_ss((unsigned short)(blk[2] | blk[3] << 8));
            if (type == FKD_QTYPE_Q8_0) {
                wv[r] = _mm256_loadu_si256((const __m256i *)(blk + 2));
                wabs[r] = _mm256_sign_epi8(wv[r], wv[r]);
            } else {
                wv[r] = SIMD_NAME(unpack_nibbles)(blk + (type == FKD_QTYPE_Q4_1 ? 4 : 2));
            }
        }
#pragma GCC unroll 4
        for (int c = 0; c < CT; c++) {
            const fkd_q8_act *xa = x + (size_t)c * ldx + b;
            __m256i a = _mm256_loadu_si256((const __m256i *)xa->qs);
            float da = xa->d;
            float extra = type == FKD_QTYPE_Q4_1 ? da * (float)xa->sum : (float)(-8 * xa->sum);
#pragma GCC unroll 4
            for (int r = 0; r < RT; r++) {
                __m256i p = type == FKD_QTYPE_Q8_0 ? SIMD_DOT4(wabs[r], _mm256_sign_epi8(a, wv[r]))
                                                   : SIMD_DOT4(wv[r], a);
                float dd = dw[r] * da;
                acc[r][c] = _mm256_add_ps(acc[r][c], _mm256_mul_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dd)));
                if (type == FKD_QTYPE_Q4_1) accm[r][c] += mw[r] * extra;
                if (type == FKD_QTYPE_Q4_0) accm[r][c] += extra * dd;
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < RT; r++)
#pragma GCC unroll 4
        for (int c = 0; c < CT; c++) out[(size_t)c * ldo + r] = SIMD_NAME(hsum8)(acc[r][c]) + accm[r][c];
}

/* The tile shapes qdot.c uses, one function per (type, shape): 4 rows x 1
 * column (matrix-vector), 2 x 4 (matrix-matrix) and 1 x 1 (the edges). */
#define SIMD_SHAPE(RT, CT)                                                                        \
    SIMD_FN static void SIMD_NAME(tile_##RT##x##CT)(float *out, size_t ldo, int type,              \
                                                     const uint8_t *w, size_t row_bytes,          \
                                                     const fkd_q8_act *x, size_t ldx, size_t nb)  \
    {                                                                                             \
        if (type == FKD_QTYPE_Q8_0) SIMD_NAME(tile)(out, ldo, FKD_QTYPE_Q8_0, w, row_bytes, x, ldx, nb, RT, CT); \
        else if (type == FKD_QTYPE_Q4_0) SIMD_NAME(tile)(out, ldo, FKD_QTYPE_Q4_0, w, row_bytes, x, ldx, nb, RT, CT); \
        else SIMD_NAME(tile)(out, ldo, FKD_QTYPE_Q4_1, w, row_bytes, x, ldx, nb, RT, CT);         \
    }
SIMD_SHAPE(1, 1)
SIMD_SHAPE(4, 1)
SIMD_SHAPE(2, 4)
#undef SIMD_SHAPE
