/* layers.c — the element-wise and matrix layers of the transformer, each a
 * forward/backward pair over flat buffers (attention is in attention.c,
 * losses in loss.c). Backward functions accumulate into their outputs unless
 * the header says otherwise. Rows are independent, so element-wise loops run
 * on OpenMP threads; matrix products run on BLIS. */
#include "internal.h"

#include <blis.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

float *fkd_alloc_floats(size_t n)
{
    /* calloc: large arenas come as untouched zero pages, so memory that a
     * run never uses (gradients during evaluation) is never resident. */
    return calloc(n > 0 ? n : 1, sizeof(float));
}

void fkd_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a,
               int lda, const float *b, int ldb, float beta, float *c, int ldc, int single_thread)
{
    /* BLIS takes any strides: a row-major matrix has row stride ld, column stride 1. */
    rntm_t rntm = BLIS_RNTM_INITIALIZER;
    if (single_thread) bli_rntm_set_num_threads(1, &rntm);
    bli_sgemm_ex(trans_a ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
                 trans_b ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE, m, n, k, &alpha, (float *)a, lda, 1,
                 (float *)b, ldb, 1, &beta, c, ldc, 1, NULL, single_thread ? &rntm : NULL);
}

/* ---- embedding ----------------------------------------------------------- */
void fkd_embedding_forward(float *out, const int32_t *tokens, const float *emb, int N, int C)
{
    /* out (N,C), tokens (N), emb (V,C) */
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++)
        memcpy(out + (size_t)i * C, emb + (size_t)tokens[i] * C, (size_t)C * sizeof(float));
}

void fkd_embedding_backward(float *demb, const float *dout, const int32_t *tokens, int N, int C)
{
    /* demb (V,C) += scatter of dout (N,C); serial over rows because two
     * positions may share a token, parallel over channels instead. */
#pragma omp parallel for schedule(static)
    for (int c0 = 0; c0 < C; c0 += 16) {
        int c1 = c0 + 16 < C ? c0 + 16 : C;
        for (int i = 0; i < N; i++) {
            float *d = demb + (size_t)tokens[i] * C;
            const float *g = dout + (size_t)i * C;
            for (int c = c0; c < c1; c++) d[c] += g[c];
        }
    }
}

/* ---- RMSNorm -------------------------------------------------------------- */
FKD_VECTOR_CLONES
static void rmsnorm_row(float *out, float *rstd, const float *x, const float *g, int C, float eps)
{
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int c = 0; c < C; c++) ss += x[c] * x[c];
    float r = 1.0f / sqrtf(ss / (float)C + eps);
    *rstd = r;
#pragma omp simd
    for (int c = 0; c < C; c++) out[c] = x[c] * r * g[c];
}

void fkd_rmsnorm_forward(float *out, float *rstd, const float *x, const float *g, int N, int C,
                         float eps)
{
    /* out (N,C) = x / sqrt(mean(x^2) + eps) * g ; rstd (N) */
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++)
        rmsnorm_row(out + (size_t)i * C, rstd + i, x + (size_t)i * C, g, C, eps);
}

FKD_VECTOR_CLONES
static void rmsnorm_backward_row(float *dx, const float *dout, const float *x, const float *g,
                                 float r, int C)
{
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int c = 0; c < C; c++) dot += dout[c] * g[c] * x[c];
    float k = dot * r * r * r / (float)C;
#pragma omp simd
    for (int c = 0; c < C; c++) dx[c] += r * dout[c] * g[c] - k * x[c];
}

FKD_VECTOR_CLONES
static void rmsnorm_dgain_rows(float *dg, const float *dout, const float *x, const float *rstd,
                               int N, int C, int c0, int c1)
{
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * C, *di = dout + (size_t)i * C;
        float r = rstd[i];
#pragma omp simd
        for (int c = c0; c < c1; c++) dg[c] += di[c] * xi[c] * r;
    }
}

void fkd_rmsnorm_backward(float *dx, float *dg, const float *dout, const float *x,
                          const float *g, const float *rstd, int N, int C)
{
    /* y = x*r*g with r = (mean(x^2)+eps)^-1/2:
     * dx += r*(dout*g) - x * r^3/C * sum(dout*g*x);  dg += sum_i dout*x*r.
     * dg is summed over rows by channel blocks, so threads never share a
     * channel and no scratch memory is needed. */
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++)
        rmsnorm_backward_row(dx + (size_t)i * C, dout + (size_t)i * C, x + (size_t)i * C, g,
                             rstd[i], C);
    if (!dg) return;
    int block = 64;
#pragma omp parallel for schedule(static)
    for (int c0 = 0; c0 < C; c0 += block)
        rmsnorm_dgain_rows(dg, dout, x, rstd, N, C, c0, c0 + block < C ? c0 + block : C);
}

/* ---- matmul --------------------------------------------------------------- */
void fkd_matmul_forward(float *out, const float *x, const float *w, int N, int C, int OC,
                        float beta)
{
    /* out (N,OC) = x (N,C) · wᵀ, w (OC,C) */
    fkd_sgemm(0, 1, N, OC, C, 1.0f, x, C, w, C, beta, out, OC, 0);
}

void fkd_matmul_backward(float *dx, float *dw, const float *dout, const float *x,
                         const float *w, int N, int C, int OC)
{
    /* dx (N,C) += dout (N,OC) · w (OC,C);  dw (OC,C) += doutᵀ · x (N,C) */
    if (dx) fkd_sgemm(0, 0, N, C, OC, 1.0f, dout, OC, w, C, 1.0f, dx, C, 0);
    if (dw) fkd_sgemm(1, 0, OC, C, N, 1.0f, dout, OC, x, C, 1.0f, dw, C, 0);
}

/* ---- RoPE (interleaved pairs, as GGUF llama) ----------------------------- */
void fkd_rope_tables(float *cos_table, float *sin_table, int max_seq, int hd, float theta)
{
    int half = hd / 2;
    for (int p = 0; p < max_seq; p++)
        for (int i = 0; i < half; i++) {
            double freq = pow((double)theta, -2.0 * i / (double)hd);
            double a = (double)p * freq;
            cos_table[(size_t)p * half + i] = (float)cos(a);
            sin_table[(size_t)p * half + i] = (float)sin(a);
        }
}

static void rope_rotate(float *x, const float *cos_table, const float *sin_table, int B, int T,
                        int nh, int hd, int pos0, float sign)
{
    /* x (B,T,nh,hd); pair (x[2i], x[2i+1]) rotated by sign*angle(pos, i) */
    int half = hd / 2;
#pragma omp parallel for schedule(static)
    for (int bt = 0; bt < B * T; bt++) {
        int pos = pos0 + bt % T;
        const float *cs = cos_table + (size_t)pos * half, *sn = sin_table + (size_t)pos * half;
        float *row = x + (size_t)bt * nh * hd;
        for (int h = 0; h < nh; h++) {
            float *v = row + (size_t)h * hd;
            for (int i = 0; i < half; i++) {
                float a = v[2 * i], b = v[2 * i + 1], c = cs[i], s = sign * sn[i];
                v[2 * i] = a * c - b * s;
                v[2 * i + 1] = a * s + b * c;
            }
        }
    }
}

void fkd_rope_forward(float *x, const float *cos_table, const float *sin_table, int B, int T,
                      int nh, int hd, int pos0)
{
    rope_rotate(x, cos_table, sin_table, B, T, nh, hd, pos0, 1.0f);
}

void fkd_rope_backward(float *dx, const float *cos_table, const float *sin_table, int B, int T,
                       int nh, int hd, int pos0)
{
    /* A rotation's Jacobian is the rotation; its transpose rotates back. */
    rope_rotate(dx, cos_table, sin_table, B, T, nh, hd, pos0, -1.0f);
}

/* ---- SwiGLU --------------------------------------------------------------- */
FKD_VECTOR_CLONES
static void swiglu_span(float *out, const float *a, const float *b, size_t n)
{
#pragma omp simd
    for (size_t i = 0; i < n; i++) out[i] = a[i] / (1.0f + fkd_expf(-a[i])) * b[i];
}

FKD_VECTOR_CLONES
static void swiglu_backward_span(float *da, float *db, const float *dout, const float *a,
                                 const float *b, size_t n)
{
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        float ai = a[i], d = dout[i], s = 1.0f / (1.0f + fkd_expf(-ai));
        float dai = d * b[i] * s * (1.0f + ai * (1.0f - s));
        float dbi = d * ai * s;
        da[i] = dai;
        db[i] = dbi;
    }
}

/* Spans of whole rows per thread: large enough to amortise the call. */
static size_t span_rows(int N, int F) { return F >= 4096 ? 1 : (size_t)(4096 / F + 1); }

void fkd_swiglu_forward(float *out, const float *a, const float *b, int N, int F)
{
    /* out (N,F) = a*sigmoid(a) * b */
    size_t rows = span_rows(N, F);
#pragma omp parallel for schedule(static)
    for (size_t r0 = 0; r0 < (size_t)N; r0 += rows) {
        size_t r1 = r0 + rows < (size_t)N ? r0 + rows : (size_t)N, off = r0 * F;
        swiglu_span(out + off, a + off, b + off, (r1 - r0) * F);
    }
}

void fkd_swiglu_backward(float *da, float *db, const float *dout, const float *a,
                         const float *b, int N, int F)
{
    /* da = dout*b*silu'(a), db = dout*silu(a); silu'(a) = s(1 + a(1-s)).
     * Each element is read before written, so da or db may alias dout. */
    size_t rows = span_rows(N, F);
#pragma omp parallel for schedule(static)
    for (size_t r0 = 0; r0 < (size_t)N; r0 += rows) {
        size_t r1 = r0 + rows < (size_t)N ? r0 + rows : (size_t)N, off = r0 * F;
        swiglu_backward_span(da + off, db + off, dout + off, a + off, b + off, (r1 - r0) * F);
    }
}

void fkd_residual_forward(float *x, const float *y, size_t n)
{
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}
