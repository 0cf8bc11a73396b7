/* qdot.c — dot products between quantized weight rows and a quantized
 * activation, the inner loop of the quantized student.
 *
 * A dot product is split in two: the integer sum of each block's 32 code
 * products (exact, in int32), then a float combination of those sums with
 * the blocks' scales. Only the first part has SIMD versions (AVX2 with the
 * maddubs/madd pair, AVX-512 VNNI with dpbusd); the second is one scalar
 * loop shared by every path. So scalar, AVX2 and VNNI results are identical
 * to the bit, and tests can demand equality rather than a tolerance.
 *
 * The SIMD functions carry target attributes and are only called after
 * __builtin_cpu_supports says the CPU has the instructions: the library is
 * built for the baseline x86-64 (or any other CPU) and still uses AVX2 here.
 *
 * Both SIMD paths multiply |w| (unsigned) by sign(w)*a (signed): the
 * activation codes are in [-127, 127] (fkd_q8_act_quantize guarantees it),
 * so no pair of products can saturate maddubs' int16, even for w = -128.
 */
#include "fkd_compress.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FKD_X86 1
#endif

#define SUM_CHUNK 64 /* blocks whose integer sums are gathered before combining */

/* fp16 -> fp32 for the scales, inlined on the hot path; the rare
 * subnormal / inf / nan cases go to common's full conversion. */
static inline float half_to_float(const uint8_t *p)
{
    uint32_t h = (uint32_t)p[0] | ((uint32_t)p[1] << 8);
    uint32_t exp = (h >> 10) & 0x1f;
    if (exp == 0 || exp == 0x1f) return fkd_fp16_to_fp32((uint16_t)h);
    uint32_t bits = ((h & 0x8000u) << 16) | ((exp + 112) << 23) | ((h & 0x3ffu) << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

void fkd_q8_act_quantize(fkd_q8_act *blocks, const float *x, size_t n)
{
    for (size_t b = 0; b < n / FKD_QK; b++, x += FKD_QK) {
        float amax = 0.0f;
        for (int j = 0; j < FKD_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        int32_t sum = 0;
        for (int j = 0; j < FKD_QK; j++) {
            float v = roundf(x[j] * id);
            if (!(v >= -127.0f && v <= 127.0f)) v = v > 0.0f ? 127.0f : (v < 0.0f ? -127.0f : 0.0f); /* NaN: 0 */
            blocks[b].qs[j] = (int8_t)v;
            sum += blocks[b].qs[j];
        }
        blocks[b].d = d;
        blocks[b].sum = sum;
    }
}

/* ---- integer block sums: scalar ----------------------------------------- */
typedef void (*block_sums_fn)(int32_t *sums, const uint8_t *row, const fkd_q8_act *x, size_t nb);

static void sums_q8_0_scalar(int32_t *sums, const uint8_t *row, const fkd_q8_act *x, size_t nb)
{
    for (size_t b = 0; b < nb; b++, row += FKD_Q8_0_BLOCK_BYTES) {
        const int8_t *w = (const int8_t *)(row + 2);
        int32_t s = 0;
        for (int j = 0; j < FKD_QK; j++) s += (int32_t)w[j] * x[b].qs[j];
        sums[b] = s;
    }
}

static void sums_q4_0_scalar(int32_t *sums, const uint8_t *row, const fkd_q8_act *x, size_t nb)
{
    for (size_t b = 0; b < nb; b++, row += FKD_Q4_0_BLOCK_BYTES) {
        const uint8_t *w = row + 2;
        int32_t s = 0;
        for (int j = 0; j < FKD_QK / 2; j++) {
            s += ((w[j] & 0x0f) - 8) * x[b].qs[j];
            s += ((w[j] >> 4) - 8) * x[b].qs[j + FKD_QK / 2];
        }
        sums[b] = s;
    }
}

static void sums_q4_1_scalar(int32_t *sums, const uint8_t *row, const fkd_q8_act *x, size_t nb)
{
    for (size_t b = 0; b < nb; b++, row += FKD_Q4_1_BLOCK_BYTES) {
        const uint8_t *w = row + 4;
        int32_t s = 0;
        for (int j = 0; j < FKD_QK / 2; j++) {
            s += (w[j] & 0x0f) * x[b].qs[j];
            s += (w[j] >> 4) * x[b].qs[j + FKD_QK / 2];
        }
        sums[b] = s;
    }
}

/* ---- integer block sums: AVX2 and AVX-512 VNNI ---------------------------- */
#ifdef FKD_X86
#define AVX2_FN __attribute__((target("avx2")))
#define VNNI_FN __attribute__((target("avx2,avx512f,avx512bw,avx512vl,avx512vnni")))

AVX2_FN static inline int32_t hsum_i32_avx2(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

/* 16 packed bytes -> 32 codes: low nibbles (values 0..15) then high (16..31). */
AVX2_FN static inline __m256i unpack_nibbles_avx2(const uint8_t *p)
{
    __m128i packed = _mm_loadu_si128((const __m128i *)p);
    __m128i mask = _mm_set1_epi8(0x0f);
    __m128i lo = _mm_and_si128(packed, mask);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
    return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
}

/* Sum of w[j]*a[j] over 32 signed codes. */
AVX2_FN static inline int32_t dot_i8_avx2(__m256i w, __m256i a)
{
    __m256i prod = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
    return hsum_i32_avx2(_mm256_madd_epi16(prod, _mm256_set1_epi16(1)));
}

AVX2_FN static void sums_q8_0_avx2(int32_t *sums, const uint8_t *row, const fkd_q8_act *x,
                                   size_t nb)
{
    for (size_t b = 0; b < nb; b++, row += FKD_Q8_0_BLOCK_BYTES) {
        __m256i w = _mm256_loadu_si256((const __m256i *)(row + 2));
        __m256i a = _mm256_loadu_si256((const __m256i *)x[b].qs);
        sums[b] = dot_i8_avx2(w, a);
    }
}

AVX2_FN static void sums_q4_0_avx2(int32_t *sums, const uint8_t *row, const fkd_q8_act *x,
                                   size_t nb)
{
    for (size_t b = 0; b < nb; b++, row += FKD_Q4_0_BLOCK_BYTES) {
        __m256i w = _mm256_sub_epi8(unpack_nibbles_avx2(row + 2), _mm256_set1_epi8(8));
        __m256i a = _mm256_loadu_si256((const __m256i *)x[b].qs);
        sums[b] = dot_i8_avx2(w, a);
    }
}

AVX2_FN static void sums_q4_1_avx2(int32_t *sums, const uint8_t *row, const fkd_q8_act *x,
                                   size_t nb)
{
    for (size_t b = 0; b < nb; b++, row += FKD_Q4_1_BLOCK_BYTES) {
        __m256i w = unpack_nibbles_avx2(row + 4); /* already unsigned */
        __m256i a = _mm256_loadu_si256((const __m256i *)x[b].qs);
        __m256i prod = _mm256_maddubs_epi16(w, a);
        sums[b] = hsum_i32_avx2(_mm256_madd_epi16(prod, _mm256_set1_epi16(1)));
    }
}

VNNI_FN static inline int32_t hsum_i32_vnni(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

VNNI_FN static inline __m256i unpack_nibbles_vnni(const uint8_t *p)
{
    __m128i packed = _mm_loadu_si128((const __m128i *)p);
    __m128i mask = _mm_set1_epi8(0x0f);
    __m128i lo = _mm_and_si128(packed, mask);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
    return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
}

VNNI_FN static inline int32_t dot_i8_vnni(__m256i w, __m256i a)
{
    __m256i acc = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(w, w),
                                      _mm256_sign_epi8(a, w));
    return hsum_i32_vnni(acc);
}

VNNI_FN static void sums_q8_0_vnni(int32_t *sums, const uint8_t *row, const fkd_q8_act *x,
                                   size_t nb)
{
    for (size_t b = 0; b < nb; b++, row += FKD_Q8_0_BLOCK_BYTES) {
        __m256i w = _mm256_loadu_si256((const __m256i *)(row + 2));
        __m256i a = _mm256_loadu_si256((const __m256i *)x[b].qs);
        sums[b] = dot_i8_vnni(w, a);
    }
}

VNNI_FN static void sums_q4_0_vnni(int32_t *sums, const uint8_t *row, const fkd_q8_act *x,
                                   size_t nb)
{
    for (size_t b = 0; b < nb; b++, row += FKD_Q4_0_BLOCK_BYTES) {
        __m256i w = _mm256_sub_epi8(unpack_nibbles_vnni(row + 2), _mm256_set1_epi8(8));
        __m256i a = _mm256_loadu_si256((const __m256i *)x[b].qs);
        sums[b] = dot_i8_vnni(w, a);
    }
}

VNNI_FN static void sums_q4_1_vnni(int32_t *sums, const uint8_t *row, const fkd_q8_act *x,
                                   size_t nb)
{
    for (size_t b = 0; b < nb; b++, row += FKD_Q4_1_BLOCK_BYTES) {
        __m256i w = unpack_nibbles_vnni(row + 4);
        __m256i a = _mm256_loadu_si256((const __m256i *)x[b].qs);
        __m256i acc = _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, a);
        sums[b] = hsum_i32_vnni(acc);
    }
}
#endif

/* ---- dispatch ---------------------------------------------------------------- */
int fkd_qkernel_supported(int kernel)
{
    switch (kernel) {
    case FKD_QKERNEL_AUTO:
    case FKD_QKERNEL_SCALAR: return 1;
#ifdef FKD_X86
    case FKD_QKERNEL_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2");
    case FKD_QKERNEL_VNNI:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512vnni");
#endif
    }
    return 0;
}

int fkd_qkernel_best(void)
{
    if (fkd_qkernel_supported(FKD_QKERNEL_VNNI)) return FKD_QKERNEL_VNNI;
    if (fkd_qkernel_supported(FKD_QKERNEL_AVX2)) return FKD_QKERNEL_AVX2;
    return FKD_QKERNEL_SCALAR;
}

const char *fkd_qkernel_name(int kernel)
{
    switch (kernel) {
    case FKD_QKERNEL_AUTO: return "auto";
    case FKD_QKERNEL_SCALAR: return "scalar";
    case FKD_QKERNEL_AVX2: return "avx2";
    case FKD_QKERNEL_VNNI: return "avx512vnni";
    }
    return "?";
}

/* The sums function for (kernel, type); an unsupported kernel falls back to
 * scalar, so a caller can never reach an illegal instruction. */
static block_sums_fn pick_sums(int kernel, int type)
{
    if (kernel == FKD_QKERNEL_AUTO) kernel = fkd_qkernel_best();
    if (!fkd_qkernel_supported(kernel)) kernel = FKD_QKERNEL_SCALAR;
#ifdef FKD_X86
    if (kernel == FKD_QKERNEL_VNNI) {
        if (type == FKD_QTYPE_Q8_0) return sums_q8_0_vnni;
        if (type == FKD_QTYPE_Q4_0) return sums_q4_0_vnni;
        if (type == FKD_QTYPE_Q4_1) return sums_q4_1_vnni;
    }
    if (kernel == FKD_QKERNEL_AVX2) {
        if (type == FKD_QTYPE_Q8_0) return sums_q8_0_avx2;
        if (type == FKD_QTYPE_Q4_0) return sums_q4_0_avx2;
        if (type == FKD_QTYPE_Q4_1) return sums_q4_1_avx2;
    }
#endif
    if (type == FKD_QTYPE_Q8_0) return sums_q8_0_scalar;
    if (type == FKD_QTYPE_Q4_0) return sums_q4_0_scalar;
    if (type == FKD_QTYPE_Q4_1) return sums_q4_1_scalar;
    return NULL;
}

/* The shared float half: acc += sum_b * d_w * d_a (+ m_w * d_a * sum(a)). */
static float combine(int type, float acc, const int32_t *sums, const uint8_t *row,
                     const fkd_q8_act *x, size_t nb)
{
    size_t stride = fkd_qtype_block_bytes(type);
    for (size_t b = 0; b < nb; b++, row += stride) {
        float d = half_to_float(row) * x[b].d;
        acc += (float)sums[b] * d;
        if (type == FKD_QTYPE_Q4_1) acc += half_to_float(row + 2) * (x[b].d * (float)x[b].sum);
    }
    return acc;
}

static float dot_blocks(block_sums_fn fn, int type, const uint8_t *row, const fkd_q8_act *x,
                        size_t n)
{
    int32_t sums[SUM_CHUNK];
    size_t nb = n / FKD_QK, stride = fkd_qtype_block_bytes(type);
    float acc = 0.0f;
    for (size_t b0 = 0; b0 < nb; b0 += SUM_CHUNK) {
        size_t m = nb - b0 < SUM_CHUNK ? nb - b0 : SUM_CHUNK;
        fn(sums, row + b0 * stride, x + b0, m);
        acc = combine(type, acc, sums, row + b0 * stride, x + b0, m);
    }
    return acc;
}

float fkd_qdot(int kernel, int type, const uint8_t *row, const fkd_q8_act *x, size_t n)
{
    block_sums_fn fn = pick_sums(kernel, type);
    return fn ? dot_blocks(fn, type, row, x, n) : 0.0f;
}

/* F32 / F16 rows: eight running sums (a fixed order, so still one result
 * per input) let the compiler keep them in vector registers. */
#define FLOAT_LANES 8
static float dot_float_row(int type, const uint8_t *row, const float *x, size_t n)
{
    float acc[FLOAT_LANES] = {0};
    size_t i = 0;
    for (; i + FLOAT_LANES <= n; i += FLOAT_LANES) {
        float w[FLOAT_LANES];
        if (type == FKD_QTYPE_F32) memcpy(w, row + 4 * i, sizeof w);
        else
            for (int j = 0; j < FLOAT_LANES; j++) w[j] = half_to_float(row + 2 * (i + j));
        for (int j = 0; j < FLOAT_LANES; j++) acc[j] += w[j] * x[i + j];
    }
    for (; i < n; i++) {
        float w;
        if (type == FKD_QTYPE_F32) memcpy(&w, row + 4 * i, 4);
        else w = half_to_float(row + 2 * i);
        acc[0] += w * x[i];
    }
    float sum = 0.0f;
    for (int j = 0; j < FLOAT_LANES; j++) sum += acc[j];
    return sum;
}

void fkd_qmatmul(int kernel, float *out, int type, const uint8_t *w, const float *xf,
                 const fkd_q8_act *xq, size_t B, size_t rows, size_t n)
{
    size_t row_bytes = fkd_qtype_row_bytes(type, n);
    block_sums_fn fn = pick_sums(kernel, type);
    for (size_t r = 0; r < rows; r++) {
        const uint8_t *row = w + r * row_bytes;
        for (size_t b = 0; b < B; b++) {
            out[b * rows + r] = fn ? dot_blocks(fn, type, row, xq + b * (n / FKD_QK), n)
                                   : dot_float_row(type, row, xf + b * n, n);
        }
    }
}

void fkd_qmatvec(int kernel, float *out, int type, const uint8_t *w, const float *xf,
                 const fkd_q8_act *xq, size_t rows, size_t n)
{
    fkd_qmatmul(kernel, out, type, w, xf, xq, 1, rows, n);
}
