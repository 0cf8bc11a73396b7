/* qdot_simd.h — the SIMD tile kernels of qdot.c, written once and included
 * once per instruction set (AVX2: maddubs + madd; AVX-512 VNNI: dpbusd).
 * The includer defines:
 *   SIMD_FN          the target attribute of the functions defined here;
 *   SIMD_NAME(x)     x with the instruction set's suffix;
 *   SIMD_DOT4(u, s)  eight int32 lanes, lane i = sum over bytes 4i..4i+3 of
 *                    u (unsigned) times s (signed).
 * A tile is RT weight rows by CT activation columns with RT * CT = 8: the
 * eight (row, column) pairs of a block are reduced to their exact integer
 * totals in one register, lane k = pair (k / CT, k % CT), and the float
 * part of qdot.c's canonical rule then runs on the eight lanes at once. */

/* 16 packed bytes -> 32 codes: low nibbles (values 0..15), then high (16..31). */
SIMD_FN static inline __m256i SIMD_NAME(unpack_nibbles)(const uint8_t *p)
{
    __m128i packed = _mm_loadu_si128((const __m128i *)p);
    __m128i mask = _mm_set1_epi8(0x0f);
    __m128i lo = _mm_and_si128(packed, mask);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
    return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
}

/* The weight codes of a block as unsigned bytes, and the activation's sign
 * fix-up for signed (Q8_0) codes: |w| * (sign(w) * a) = w * a. */
SIMD_FN static inline __m256i SIMD_NAME(block_codes)(int type, const uint8_t *blk)
{
    if (type == FKD_QTYPE_Q8_0) return _mm256_loadu_si256((const __m256i *)(blk + 2));
    return SIMD_NAME(unpack_nibbles)(blk + (type == FKD_QTYPE_Q4_1 ? 4 : 2));
}

SIMD_FN static inline __m256i SIMD_NAME(pair_dot)(int type, __m256i w, __m256i a)
{
    if (type == FKD_QTYPE_Q8_0) return SIMD_DOT4(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
    return SIMD_DOT4(w, a);
}

/* Eight vectors of int32 lanes -> one vector of their eight totals. */
SIMD_FN static inline __m256i SIMD_NAME(totals8)(const __m256i *p)
{
    __m256i q0 = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
    __m256i q1 = _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(q0, q1, 0x20), _mm256_permute2x128_si256(q0, q1, 0x31));
}

SIMD_FN static inline int32_t SIMD_NAME(total1)(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

static inline unsigned short SIMD_NAME(half_bits)(const uint8_t *p)
{
    return (unsigned short)(p[0] | p[1] << 8);
}

/* out[c * ldo + r] for the tile's 8 pairs; RT, CT and type are constants at
 * every call, so the loops unroll and everything stays in registers. */
SIMD_FN static inline __attribute__((always_inline)) void
SIMD_NAME(tile)(float *out, size_t ldo, int type, const uint8_t *w, size_t row_bytes,
                const fkd_q8_act *x, size_t ldx, size_t nb, const int RT, const int CT)
{
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    size_t stride = fkd_qtype_block_bytes(type);
    /* The tile's rows are read side by side, 8 short streams the hardware
     * prefetcher does not follow; so each block step asks for its share of
     * the rows PREFETCH_TILES tiles ahead (contiguous; past the end is
     * harmless: a prefetch never faults). */
    const char *ahead = (const char *)w + (size_t)RT * row_bytes * PREFETCH_TILES;
    size_t lines = ((size_t)RT * row_bytes + CACHE_LINE - 1) / CACHE_LINE, per_block = (lines + nb - 1) / nb;
    for (size_t b = 0; b < nb; b++) {
        for (size_t i = 0; i < per_block; i++) _mm_prefetch(ahead + (b * per_block + i) * CACHE_LINE, _MM_HINT_T0);
        __m256i wv[8], av[8], p[8];
        unsigned short dh[8], mh[8];
        float da[8], extra[8];
#pragma GCC unroll 8
        for (int r = 0; r < RT; r++) {
            const uint8_t *blk = w + (size_t)r * row_bytes + b * stride;
            wv[r] = SIMD_NAME(block_codes)(type, blk);
            dh[r] = SIMD_NAME(half_bits)(blk);
            mh[r] = SIMD_NAME(half_bits)(blk + 2);
        }
#pragma GCC unroll 8
        for (int c = 0; c < CT; c++) {
            const fkd_q8_act *xa = x + (size_t)c * ldx + b;
            av[c] = _mm256_loadu_si256((const __m256i *)xa->qs);
            da[c] = xa->d;
            extra[c] = type == FKD_QTYPE_Q4_1 ? xa->d * (float)xa->sum : (float)(-8 * xa->sum);
        }
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) p[k] = SIMD_NAME(pair_dot)(type, wv[k / CT], av[k % CT]);
        __m256 dw = _mm256_cvtph_ps(_mm_setr_epi16((short)dh[0 / CT], (short)dh[1 / CT], (short)dh[2 / CT],
                                                   (short)dh[3 / CT], (short)dh[4 / CT], (short)dh[5 / CT],
                                                   (short)dh[6 / CT], (short)dh[7 / CT]));
        __m256 dav = _mm256_setr_ps(da[0 % CT], da[1 % CT], da[2 % CT], da[3 % CT], da[4 % CT], da[5 % CT],
                                    da[6 % CT], da[7 % CT]);
        __m256 ev = _mm256_setr_ps(extra[0 % CT], extra[1 % CT], extra[2 % CT], extra[3 % CT],
                                   extra[4 % CT], extra[5 % CT], extra[6 % CT], extra[7 % CT]);
        __m256 dd = _mm256_mul_ps(dw, dav);
        acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_cvtepi32_ps(SIMD_NAME(totals8)(p)), dd));
        if (type == FKD_QTYPE_Q4_1) {
            __m256 mw = _mm256_cvtph_ps(_mm_setr_epi16((short)mh[0 / CT], (short)mh[1 / CT], (short)mh[2 / CT],
                                                       (short)mh[3 / CT], (short)mh[4 / CT], (short)mh[5 / CT],
                                                       (short)mh[6 / CT], (short)mh[7 / CT]));
            accm = _mm256_add_ps(accm, _mm256_mul_ps(mw, ev));
        }
        if (type == FKD_QTYPE_Q4_0) accm = _mm256_add_ps(accm, _mm256_mul_ps(ev, dd));
    }
    float res[8];
    _mm256_storeu_ps(res, _mm256_add_ps(acc, accm));
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++) out[(size_t)(k % CT) * ldo + (size_t)(k / CT)] = res[k];
}

/* One pair: the integer total in SIMD, the float part as the scalar rule. */
SIMD_FN static inline __attribute__((always_inline)) void
SIMD_NAME(one)(float *out, int type, const uint8_t *w, const fkd_q8_act *x, size_t nb)
{
    float acc = 0.0f, accm = 0.0f;
    size_t stride = fkd_qtype_block_bytes(type);
    for (size_t b = 0; b < nb; b++, w += stride) {
        __m256i a = _mm256_loadu_si256((const __m256i *)x[b].qs);
        int32_t s = SIMD_NAME(total1)(SIMD_NAME(pair_dot)(type, SIMD_NAME(block_codes)(type, w), a));
        float dd = _cvtsh_ss(SIMD_NAME(half_bits)(w)) * x[b].d;
        acc += (float)s * dd;
        if (type == FKD_QTYPE_Q4_1) accm += _cvtsh_ss(SIMD_NAME(half_bits)(w + 2)) * (x[b].d * (float)x[b].sum);
        if (type == FKD_QTYPE_Q4_0) accm += (float)(-8 * x[b].sum) * dd;
    }
    *out = acc + accm;
}

/* The shapes qdot.c uses, one function each with the type folded in:
 * 8 rows x 1 column (matrix-vector), 2 x 4 (matrix-matrix), 1 x 1 (edges). */
#define SIMD_BY_TYPE(CALL_Q8, CALL_Q40, CALL_Q41) \
    if (type == FKD_QTYPE_Q8_0) CALL_Q8;          \
    else if (type == FKD_QTYPE_Q4_0) CALL_Q40;    \
    else CALL_Q41;

SIMD_FN static void SIMD_NAME(tile_1x1)(float *out, size_t ldo, int type, const uint8_t *w,
                                         size_t row_bytes, const fkd_q8_act *x, size_t ldx, size_t nb)
{
    SIMD_BY_TYPE(SIMD_NAME(one)(out, FKD_QTYPE_Q8_0, w, x, nb), SIMD_NAME(one)(out, FKD_QTYPE_Q4_0, w, x, nb),
                 SIMD_NAME(one)(out, FKD_QTYPE_Q4_1, w, x, nb))
}

#define SIMD_SHAPE(RT, CT)                                                                               \
    SIMD_FN static void SIMD_NAME(tile_##RT##x##CT)(float *out, size_t ldo, int type, const uint8_t *w, \
                                                     size_t row_bytes, const fkd_q8_act *x, size_t ldx,  \
                                                     size_t nb)                                          \
    {                                                                                                    \
        SIMD_BY_TYPE(SIMD_NAME(tile)(out, ldo, FKD_QTYPE_Q8_0, w, row_bytes, x, ldx, nb, RT, CT),        \
                     SIMD_NAME(tile)(out, ldo, FKD_QTYPE_Q4_0, w, row_bytes, x, ldx, nb, RT, CT),        \
                     SIMD_NAME(tile)(out, ldo, FKD_QTYPE_Q4_1, w, row_bytes, x, ldx, nb, RT, CT))        \
    }
SIMD_SHAPE(8, 1)
SIMD_SHAPE(2, 4)
#undef SIMD_SHAPE
#undef SIMD_BY_TYPE
