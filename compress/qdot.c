/* qdot.c — dot products between quantized weight rows and quantized
 * activations, the inner loop of the quantized student and of the teacher's
 * prompt processing.
 *
 * Every (row, activation) pair is computed by one canonical rule (below):
 * an exact int32 total per block, combined with the block scales in float
 * in a fixed order. The scalar code spells the rule out; the SIMD tiles
 * (qdot_simd.h, AVX2 and AVX-512 VNNI) run it on eight pairs at once, one a
 * lane, without fusing multiplies into adds (-ffp-contract=off here). So
 * scalar, AVX2 and VNNI, matrix-vector and matrix-matrix give identical
 * bits, and tests demand equality rather than a tolerance.
 *
 * A matrix product runs in tiles of several rows by several activations so
 * that each unpacked weight block is used for several columns, over row
 * chunks small enough to stay in L1, chunks shared among OpenMP threads.
 *
 * The SIMD functions carry target attributes and are only called after
 * __builtin_cpu_supports says the CPU has the instructions: the library is
 * built for the baseline x86-64 (or any other CPU) and still uses AVX2 here.
 * Signed weights (Q8_0) multiply |w| (unsigned) by sign(w)*a; Q4 codes are
 * unsigned already. Activation codes are in [-127, 127]
 * (fkd_q8_act_quantize guarantees it), so no pair of products can saturate
 * maddubs' int16, even for w = -128.
 */
#include "fkd_compress.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define FKD_X86 1
#endif

#define ROW_CHUNK 16   /* weight rows whose blocks stay in L1 while every column passes */
#define MATVEC_ROWS 8  /* tile shapes: rows x columns (qdot_simd.h) */
#define MATMUL_ROWS 2
#define MATMUL_COLS 4
#define PARALLEL_MIN_MACS (1 << 20) /* smaller products are not worth waking threads */
#define CACHE_LINE 64
#define PREFETCH_TILES 2 /* how far ahead the tiles prefetch their rows */

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

static void q8_act_quantize_scalar(fkd_q8_act *blocks, const float *x, size_t n)
{
    for (size_t b = 0; b < n / FKD_QK; b++, x += FKD_QK) {
        float amax = 0.0f;
        for (int j = 0; j < FKD_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        int32_t sum = 0;
        for (int j = 0; j < FKD_QK; j++) {
            float v = nearbyintf(x[j] * id); /* ties to even, as SIMD rounds */
            if (!(v >= -127.0f && v <= 127.0f)) v = v > 0.0f ? 127.0f : (v < 0.0f ? -127.0f : 0.0f); /* NaN: 0 */
            blocks[b].qs[j] = (int8_t)v;
            sum += blocks[b].qs[j];
        }
        blocks[b].d = d;
        blocks[b].sum = sum;
    }
}

/* ---- the canonical sum --------------------------------------------------- *
 * For one weight row and one activation, block by block: the exact int32
 * total s of the block's 32 code products (Q4 codes taken unsigned, 0..15),
 * then in float acc += s * (d_w * d_a), and a second running sum for the
 * part that does not depend on the codes: Q4_1's minimum, m_w * (d_a sum_a),
 * or Q4_0's offset, (-8 sum_a) * (d_w d_a). The result is acc + that sum.
 * The SIMD tiles run the float part on eight (row, column) pairs at once,
 * one pair a lane, and never fuse a multiply with an add, so they give these
 * bits exactly. */
static float dot_scalar(int type, const uint8_t *row, const fkd_q8_act *x, size_t nb)
{
    size_t stride = fkd_qtype_block_bytes(type);
    const int q4 = type != FKD_QTYPE_Q8_0, off = type == FKD_QTYPE_Q4_1 ? 4 : 2;
    float acc = 0.0f, accm = 0.0f;
    for (size_t b = 0; b < nb; b++, row += stride) {
        int32_t s = 0;
        if (q4) {
            for (int j = 0; j < FKD_QK / 2; j++)
                s += (row[off + j] & 0x0f) * x[b].qs[j] + (row[off + j] >> 4) * x[b].qs[j + FKD_QK / 2];
        } else {
            for (int j = 0; j < FKD_QK; j++) s += ((const int8_t *)(row + 2))[j] * x[b].qs[j];
        }
        float dd = half_to_float(row) * x[b].d;
        acc += (float)s * dd;
        if (type == FKD_QTYPE_Q4_1) accm += half_to_float(row + 2) * (x[b].d * (float)x[b].sum);
        if (type == FKD_QTYPE_Q4_0) accm += (float)(-8 * x[b].sum) * dd;
    }
    return acc + accm;
}

/* A tile: out[c * ldo + r] for its rows r and columns c (qdot_simd.h). */
typedef void (*tile_fn)(float *out, size_t ldo, int type, const uint8_t *w, size_t row_bytes,
                        const fkd_q8_act *x, size_t ldx, size_t nb);

static void scalar_tile_1x1(float *out, size_t ldo, int type, const uint8_t *w, size_t row_bytes,
                            const fkd_q8_act *x, size_t ldx, size_t nb)
{
    out[0] = dot_scalar(type, w, x, nb);
}

#ifdef FKD_X86
#define SIMD_FN __attribute__((target("avx2,f16c")))
#define SIMD_NAME(x) x##_avx2
#define SIMD_DOT4(u, s) _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
#include "qdot_simd.h"
#undef SIMD_FN
#undef SIMD_NAME
#undef SIMD_DOT4
#define SIMD_FN __attribute__((target("avx2,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define SIMD_NAME(x) x##_vnni
#define SIMD_DOT4(u, s) _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
#include "qdot_simd.h"
#undef SIMD_FN
#undef SIMD_NAME
#undef SIMD_DOT4

/* Activation quantization, 8 values a step, the scalar code's bits. */
__attribute__((target("avx2"))) static void q8_act_quantize_avx2(fkd_q8_act *blocks, const float *x, size_t n)
{
    const __m256 signbit = _mm256_set1_ps(-0.0f), lim = _mm256_set1_ps(127.0f);
    for (size_t b = 0; b < n / FKD_QK; b++, x += FKD_QK) {
        __m256 v[4], amax = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(x + 8 * k);
            amax = _mm256_max_ps(_mm256_andnot_ps(signbit, v[k]), amax); /* a NaN is skipped */
        }
        __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
        float d = _mm_cvtss_f32(m) / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        __m256i codes[4];
        for (int k = 0; k < 4; k++) {
            __m256 q = _mm256_round_ps(_mm256_mul_ps(v[k], _mm256_set1_ps(id)),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            q = _mm256_and_ps(q, _mm256_cmp_ps(q, q, _CMP_ORD_Q)); /* NaN: 0 */
            q = _mm256_min_ps(_mm256_max_ps(q, _mm256_sub_ps(_mm256_setzero_ps(), lim)), lim);
            codes[k] = _mm256_cvtps_epi32(q);
        }
        __m256i sum = _mm256_add_epi32(_mm256_add_epi32(codes[0], codes[1]), _mm256_add_epi32(codes[2], codes[3]));
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
        /* int32 -> int8 keeping the order: packs work within 128-bit halves */
        __m256i p16 = _mm256_packs_epi32(codes[0], codes[1]), p16b = _mm256_packs_epi32(codes[2], codes[3]);
        __m256i p8 = _mm256_packs_epi16(p16, p16b);
        p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)blocks[b].qs, p8);
        blocks[b].d = d;
        blocks[b].sum = _mm_cvtsi128_si32(s);
    }
}
#endif

/* ---- dispatch ---------------------------------------------------------------- */
#ifdef FKD_X86
/* F16C from CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports does
 * not know the name "f16c". */
static int cpu_has_f16c(void)
{
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) != 0;
}
#endif

static int kernel_supported(int kernel)
{
    switch (kernel) {
    case FKD_QKERNEL_AUTO:
    case FKD_QKERNEL_SCALAR: return 1;
#ifdef FKD_X86
    case FKD_QKERNEL_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && cpu_has_f16c();
    case FKD_QKERNEL_VNNI:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && cpu_has_f16c() &&
               __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#endif
    }
    return 0;
}

/* CPUID is asked once per kernel: under a hypervisor every CPUID traps to
 * it (microseconds), and every matrix product asks which kernel to use
 * (in a small student's generation that was 3 % of the time). The answer
 * never changes, so a race writes the same value. */
#define KERNELS (FKD_QKERNEL_VNNI + 1)
int fkd_qkernel_supported(int kernel)
{
    static int known[KERNELS]; /* 0: not asked yet; else 1 + the answer */
    if (kernel < 0 || kernel >= KERNELS) return 0;
    if (!known[kernel]) known[kernel] = 1 + kernel_supported(kernel);
    return known[kernel] - 1;
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

/* An unsupported kernel falls back to scalar, so a caller can never reach
 * an illegal instruction. */
static int usable_kernel(int kernel)
{
    if (kernel == FKD_QKERNEL_AUTO) kernel = fkd_qkernel_best();
    return fkd_qkernel_supported(kernel) ? kernel : FKD_QKERNEL_SCALAR;
}

void fkd_q8_act_quantize(fkd_q8_act *blocks, const float *x, size_t n)
{
#ifdef FKD_X86
    static int simd = -1; /* the answer never changes; a race writes the same value */
    if (simd < 0) simd = fkd_qkernel_supported(FKD_QKERNEL_AVX2);
    if (simd) {
        q8_act_quantize_avx2(blocks, x, n);
        return;
    }
#endif
    q8_act_quantize_scalar(blocks, x, n);
}

/* The tiles of one kernel: 1x1, matrix-vector and matrix-matrix shapes. */
typedef struct {
    tile_fn one, matvec, matmul;
} tile_set;

static tile_set pick_tiles(int kernel)
{
    switch (usable_kernel(kernel)) {
#ifdef FKD_X86
    case FKD_QKERNEL_VNNI: return (tile_set){tile_1x1_vnni, tile_8x1_vnni, tile_2x4_vnni};
    case FKD_QKERNEL_AVX2: return (tile_set){tile_1x1_avx2, tile_8x1_avx2, tile_2x4_avx2};
#endif
    }
    return (tile_set){scalar_tile_1x1, NULL, NULL};
}

static int is_block_type(int type)
{
    return type == FKD_QTYPE_Q8_0 || type == FKD_QTYPE_Q4_0 || type == FKD_QTYPE_Q4_1;
}

float fkd_qdot(int kernel, int type, const uint8_t *row, const fkd_q8_act *x, size_t n)
{
    if (!is_block_type(type)) return 0.0f;
    float out;
    pick_tiles(kernel).one(&out, 1, type, row, 0, x, 0, n / FKD_QK);
    return out;
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

/* Rows [r0, r1) of out (B, rows) = x (B, n) · Wᵀ for block types: tiles of
 * the largest shape that fits, 1x1 for what is left at the edges. */
static void block_rows(const tile_set *ts, float *out, int type, const uint8_t *w,
                       const fkd_q8_act *xq, size_t B, size_t rows, size_t n, size_t r0, size_t r1)
{
    size_t rb = fkd_qtype_row_bytes(type, n), nb = n / FKD_QK;
    size_t rt = B >= MATMUL_COLS ? MATMUL_ROWS : MATVEC_ROWS, ct = B >= MATMUL_COLS ? MATMUL_COLS : 1;
    tile_fn big = B >= MATMUL_COLS ? ts->matmul : ts->matvec;
    for (size_t r = r0; r < r1;) {
        size_t take = big && r + rt <= r1 ? rt : 1;
        size_t c = 0;
        if (take > 1)
            for (; c + ct <= B; c += ct) big(out + c * rows + r, rows, type, w + r * rb, rb, xq + c * nb, nb, nb);
        for (; c < B; c++)
            for (size_t i = r; i < r + take; i++)
                ts->one(out + c * rows + i, rows, type, w + i * rb, rb, xq + c * nb, nb, nb);
        r += take;
    }
}

/* Row chunk ch: ROW_CHUNK rows, whose blocks stay in L1 while every column
 * passes over them. */
static void chunk_rows(const tile_set *ts, float *out, int type, const uint8_t *w,
                       const fkd_q8_act *xq, size_t B, size_t rows, size_t n, size_t ch)
{
    size_t r1 = (ch + 1) * ROW_CHUNK < rows ? (ch + 1) * ROW_CHUNK : rows;
    block_rows(ts, out, type, w, xq, B, rows, n, ch * ROW_CHUNK, r1);
}

void fkd_qmatmul(int kernel, float *out, int type, const uint8_t *w, const float *xf,
                 const fkd_q8_act *xq, size_t B, size_t rows, size_t n)
{
    if (!is_block_type(type)) {
        size_t rb = fkd_qtype_row_bytes(type, n);
        for (size_t r = 0; r < rows; r++)
            for (size_t b = 0; b < B; b++) out[b * rows + r] = dot_float_row(type, w + r * rb, xf + b * n, n);
        return;
    }
    tile_set ts = pick_tiles(kernel);
    size_t chunks = (rows + ROW_CHUNK - 1) / ROW_CHUNK;
    if (omp_get_max_threads() == 1 || omp_in_parallel() || B * rows * n < PARALLEL_MIN_MACS) {
        /* no parallel construct at all: one thread pays nothing for the runtime */
        for (size_t ch = 0; ch < chunks; ch++) chunk_rows(&ts, out, type, w, xq, B, rows, n, ch);
        return;
    }
    /* dynamic: on a shared machine a thread that loses its core mid-product
     * leaves its chunks to the others instead of holding up the barrier */
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t ch = 0; ch < chunks; ch++) chunk_rows(&ts, out, type, w, xq, B, rows, n, ch);
}

void fkd_qmatvec(int kernel, float *out, int type, const uint8_t *w, const float *xf,
                 const fkd_q8_act *xq, size_t rows, size_t n)
{
    fkd_qmatmul(kernel, out, type, w, xf, xq, 1, rows, n);
}
