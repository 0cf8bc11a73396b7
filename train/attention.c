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
        float *p = att + (size_t)bh * T * T;
        fkd_sgemm(0, 1, T, T, hd, scale, qb, ldq, kb, ldk, 0.0f, p, T, 1);
        causal_softmax_rows(p, T);
        fkd_sgemm(0, 0, T, hd, T, 1.0f, p, T, vb, ldk, 0.0f,
                  out + (size_t)b * T * ldq + (size_t)h * hd, ldq, 1);
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
        for (int g = 0; g < group; g++) {
            int h = kvh * group + g;
            size_t bh = (size_t)b * H + h;
            const float *qb = q + (size_t)b * T * ldq + (size_t)h * hd;
            const float *dob = dout + (size_t)b * T * ldq + (size_t)h * hd;
            float *dqb = dq + (size_t)b * T * ldq + (size_t)h * hd;
            const float *p = att + bh * T * T;
            float *dp = datt + bh * T * T;
            float first = g == 0 ? 0.0f : 1.0f; /* the first head overwrites dk, dv */
            /* dv (T,hd) += Pᵀ · dout */
            fkd_sgemm(1, 0, T, hd, T, 1.0f, p, T, dob, ldq, first, dvb, ldk, 1);
            /* dP (T,T) = dout · vᵀ */
            fkd_sgemm(0, 1, T, T, hd, 1.0f, dob, ldq, vb, ldk, 0.0f, dp, T, 1);
            softmax_backward_rows(dp, p, T, scale);
            /* dq (T,hd) = dS · k ;  dk (T,hd) += dSᵀ · q */
            fkd_sgemm(0, 0, T, hd, T, 1.0f, dp, T, kb, ldk, 0.0f, dqb, ldq, 1);
            fkd_sgemm(1, 0, T, hd, T, 1.0f, dp, T, qb, ldq, first, dkb, ldk, 1);
        }
    }
}
