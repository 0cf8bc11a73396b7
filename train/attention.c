/* attention.c — causal grouped-query attention, forward and backward.
 *
 * Per (batch, head): S = q·kᵀ/sqrt(hd), P = causal softmax(S), out = P·v.
 * Query head h reads key/value head h / (H/KV). The probabilities P are kept
 * for backward. The products run on BLIS, one (batch, kv-group) per OpenMP
 * thread, each BLIS call single-threaded inside its thread. */
#include "internal.h"

#include <math.h>
#include <string.h>

FKD_VECTOR_CLONES
static void causal_softmax_rows(float *p, int T)
{
    /* p (T,T): row i keeps columns 0..i, softmax over them; the rest is 0. */
    for (int i = 0; i < T; i++) {
        float *row = p + (size_t)i * T;
        float mx = row[0];
        for (int j = 1; j <= i; j++) mx = row[j] > mx ? row[j] : mx;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j <= i; j++) {
            row[j] = fkd_expf(row[j] - mx);
            sum += row[j];
        }
        float inv = 1.0f / sum;
#pragma omp simd
        for (int j = 0; j <= i; j++) row[j] *= inv;
        for (int j = i + 1; j < T; j++) row[j] = 0.0f;
    }
}

/* Causal attention only needs columns j <= i: rows are taken in blocks of
 * ROW_BLOCK, and block [r0, r1) multiplies against keys [0, r1) only. For
 * T = 128 that skips 3/8 of the products. */
enum { ROW_BLOCK = 32 };

void fkd_attention_forward(float *out, float *att, const float *q, const float *k,
                           const float *v, int B, int T, int H, int KV, int hd)
{
    /* q, out (B,T,H,hd); k, v (B,T,KV,hd); att (B,H,T,T) */
    float scale = 1.0f / sqrtf((float)hd);
    int group = H / KV, ldq = H * hd, ldk = KV * hd;
#pragma omp parallel for schedule(dynamic, 1)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H, kvh = h / group;
        const float *qb = q + (size_t)b * T * ldq + (size_t)h * hd;
        const float *kb = k + (size_t)b * T * ldk + (size_t)kvh * hd;
        const float *vb = v + (size_t)b * T * ldk + (size_t)kvh * hd;
        float *ob = out + (size_t)b * T * ldq + (size_t)h * hd;
        float *p = att + (size_t)bh * T * T;
        for (int r0 = 0; r0 < T; r0 += ROW_BLOCK) {
            int r1 = r0 + ROW_BLOCK < T ? r0 + ROW_BLOCK : T, rows = r1 - r0;
            fkd_sgemm(0, 1, rows, r1, hd, scale, qb + (size_t)r0 * ldq, ldq, kb, ldk, 0.0f,
                      p + (size_t)r0 * T, T, 1);
        }
        causal_softmax_rows(p, T);
        for (int r0 = 0; r0 < T; r0 += ROW_BLOCK) {
            int r1 = r0 + ROW_BLOCK < T ? r0 + ROW_BLOCK : T, rows = r1 - r0;
            fkd_sgemm(0, 0, rows, hd, r1, 1.0f, p + (size_t)r0 * T, T, vb, ldk, 0.0f,
                      ob + (size_t)r0 * ldq, ldq, 1);
        }
    }
}

FKD_VECTOR_CLONES
static void softmax_backward_rows(float *dp, const float *p, int T, float scale)
{
    /* dS = P ⊙ (dP - rowsum(dP ⊙ P)) * scale, in place on dp (T,T). */
    for (int i = 0; i < T; i++) {
        float *d = dp + (size_t)i * T;
        const float *pr = p + (size_t)i * T;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int j = 0; j <= i; j++) dot += d[j] * pr[j];
#pragma omp simd
        for (int j = 0; j <= i; j++) d[j] = pr[j] * (d[j] - dot) * scale;
        for (int j = i + 1; j < T; j++) d[j] = 0.0f;
    }
}

void fkd_attention_backward(float *dq, float *dk, float *dv, float *datt, const float *dout,
                            const float *att, const float *q, const float *k, const float *v,
                            int B, int T, int H, int KV, int hd)
{
    float scale = 1.0f / sqrtf((float)hd);
    int group = H / KV, ldq = H * hd, ldk = KV * hd;
    /* One thread per (batch, kv head): the heads of a group all add into the
     * same dk and dv, so they run in sequence on that thread. */
#pragma omp parallel for schedule(dynamic, 1)
    for (int bk = 0; bk < B * KV; bk++) {
        int b = bk / KV, kvh = bk % KV;
        const float *kb = k + (size_t)b * T * ldk + (size_t)kvh * hd;
        const float *vb = v + (size_t)b * T * ldk + (size_t)kvh * hd;
        float *dkb = dk + (size_t)b * T * ldk + (size_t)kvh * hd;
        float *dvb = dv + (size_t)b * T * ldk + (size_t)kvh * hd;
        for (int t = 0; t < T; t++) {
            memset(dkb + (size_t)t * ldk, 0, (size_t)hd * sizeof(float));
            memset(dvb + (size_t)t * ldk, 0, (size_t)hd * sizeof(float));
        }
        for (int g = 0; g < group; g++) {
            int h = kvh * group + g;
            size_t bh = (size_t)b * H + h;
            const float *qb = q + (size_t)b * T * ldq + (size_t)h * hd;
            const float *dob = dout + (size_t)b * T * ldq + (size_t)h * hd;
            float *dqb = dq + (size_t)b * T * ldq + (size_t)h * hd;
            const float *p = att + bh * T * T;
            float *dp = datt + bh * T * T;
            for (int r0 = 0; r0 < T; r0 += ROW_BLOCK) {
                int r1 = r0 + ROW_BLOCK < T ? r0 + ROW_BLOCK : T, rows = r1 - r0;
                const float *pr = p + (size_t)r0 * T;
                float *dpr = dp + (size_t)r0 * T;
                /* dv[0:r1] += P[r0:r1, 0:r1]ᵀ · dout[r0:r1] */
                fkd_sgemm(1, 0, r1, hd, rows, 1.0f, pr, T, dob + (size_t)r0 * ldq, ldq, 1.0f,
                          dvb, ldk, 1);
                /* dP[r0:r1, 0:r1] = dout[r0:r1] · v[0:r1]ᵀ */
                fkd_sgemm(0, 1, rows, r1, hd, 1.0f, dob + (size_t)r0 * ldq, ldq, vb, ldk, 0.0f,
                          dpr, T, 1);
            }
            softmax_backward_rows(dp, p, T, scale);
            for (int r0 = 0; r0 < T; r0 += ROW_BLOCK) {
                int r1 = r0 + ROW_BLOCK < T ? r0 + ROW_BLOCK : T, rows = r1 - r0;
                const float *dsr = dp + (size_t)r0 * T;
                /* dq[r0:r1] = dS[r0:r1, 0:r1] · k[0:r1] ; dk[0:r1] += dS[r0:r1, 0:r1]ᵀ · q[r0:r1] */
                fkd_sgemm(0, 0, rows, hd, r1, 1.0f, dsr, T, kb, ldk, 0.0f, dqb + (size_t)r0 * ldq,
                          ldq, 1);
                fkd_sgemm(1, 0, r1, hd, rows, 1.0f, dsr, T, qb + (size_t)r0 * ldq, ldq, 1.0f, dkb,
                          ldk, 1);
            }
        }
    }
}
