/* loss.c — cross-entropy on hard targets and distillation on a teacher's
 * top-k soft labels, mixed per position, with their gradient.
 *
 * Distillation with a truncated teacher. The teacher gives, per position, k
 * token ids with probabilities p_j at temperature T; the mass it puts
 * elsewhere, r = 1 - sum p_j, is unknown per token. We compare the two
 * distributions coarsened to k+1 outcomes {the k ids, "rest"}:
 *     KD = T^2 * [ sum_j p_j log(p_j / q_j) + r log(r / q_rest) ]
 * with q = softmax(z / T) the student's distribution and q_rest its mass
 * outside the k ids. This is an exact KL divergence (>= 0, 0 iff the
 * coarsened distributions agree) and needs no guess about the teacher's tail.
 * Its gradient is T * (q_j - p~_j), where p~_j = p_j on the k ids and
 * p~_j = r * q_j / q_rest elsewhere: inside the rest the student keeps its own
 * shape and only the rest's total is pulled toward r.
 *
 * Mixing: a position with a target and a soft label counts
 * alpha*KD + (1-alpha)*CE; one with only a target, CE; one with only a soft
 * label, KD. The mean is over positions that carry either.
 *
 * Rows are independent once the number of counted positions is known, so the
 * model computes the loss over chunks of positions (fkd_loss_rows) and never
 * holds every position's logits at once. */
#include "internal.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#define FKD_KD_MAX_K 256
/* Exponentials of a row are summed in float over blocks of this many
 * entries, and the blocks in double: vector speed, and a 49k-entry row
 * keeps about 7 significant digits. */
#define LOSS_SUM_BLOCK 1024

static int soft_present(const float *probs, int k)
{
    for (int j = 0; j < k; j++)
        if (probs[j] > 0.0f) return 1;
    return 0;
}

/* ---- vector kernels over one row of V logits ------------------------------ */
FKD_VECTOR_CLONES
static float row_max(const float *z, int V)
{
    float mx = z[0];
#pragma omp simd reduction(max : mx)
    for (int j = 0; j < V; j++) mx = z[j] > mx ? z[j] : mx;
    return mx;
}

/* sum_j exp((z_j - mx) * inv_t) */
FKD_VECTOR_CLONES
static double row_exp_sum(const float *z, float mx, float inv_t, int V)
{
    double total = 0.0;
    for (int j0 = 0; j0 < V; j0 += LOSS_SUM_BLOCK) {
        int j1 = j0 + LOSS_SUM_BLOCK < V ? j0 + LOSS_SUM_BLOCK : V;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int j = j0; j < j1; j++) s += fkd_expf((z[j] - mx) * inv_t);
        total += s;
    }
    return total;
}

/* dz_j = a * exp(z_j - mx - lse1) + b * exp((z_j - mx) * inv_t - lse_t); z and dz may alias. */
FKD_VECTOR_CLONES
static void row_softmax_mix(float *dz, const float *z, float mx, float lse1, float a, float inv_t,
                            float lse_t, float b, int V)
{
    if (b == 0.0f) {
#pragma omp simd
        for (int j = 0; j < V; j++) dz[j] = a * fkd_expf(z[j] - mx - lse1);
        return;
    }
#pragma omp simd
    for (int j = 0; j < V; j++) {
        float u = z[j] - mx;
        dz[j] = a * fkd_expf(u - lse1) + b * fkd_expf(u * inv_t - lse_t);
    }
}

static int row_argmax(const float *z, float mx, int V)
{
    for (int j = 0; j < V; j++)
        if (z[j] == mx) return j;
    return 0; /* a NaN row */
}

/* One position: fills the row's gradient (unscaled, weights applied) and
 * returns its contribution in *sums. z and dz may alias. */
static void loss_row(float *dz, fkd_loss_sums *sums, const float *z, int32_t target,
                     const int32_t *ids, const float *probs, int k, const fkd_loss_config *lc,
                     int V, float row_scale)
{
    int has_ce = target >= 0 && target < V;
    int has_kd = ids && soft_present(probs, k);
    if (!has_ce && !has_kd) {
        if (dz) memset(dz, 0, (size_t)V * sizeof(float));
        return;
    }
    float alpha = lc ? lc->alpha : 0.0f, T = (lc && lc->temperature > 0) ? lc->temperature : 1.0f;
    float w_ce = has_ce ? (has_kd ? 1.0f - alpha : 1.0f) : 0.0f;
    float w_kd = has_kd ? (has_ce ? alpha : 1.0f) : 0.0f;

    float mx = row_max(z, V);
    int unit_T = T == 1.0f;
    double lse1 = log(row_exp_sum(z, mx, 1.0f, V));
    double lseT = unit_T || !has_kd ? lse1 : log(row_exp_sum(z, mx, 1.0f / T, V));
    double row_loss = 0.0;

    if (has_ce) {
        double ce = lse1 - (double)(z[target] - mx);
        sums->ce += ce;
        sums->n_ce++;
        sums->n_correct += row_argmax(z, mx, V) == target;
        row_loss += w_ce * ce;
    }

    float q_top[FKD_KD_MAX_K];
    double rest_scale = 0.0; /* r / q_rest: the gradient's weight on the rest */
    if (has_kd) {
        double p_sum = 0.0, q_sum = 0.0, kl = 0.0;
        for (int j = 0; j < k; j++) {
            /* A slot with p = 0 (a vocabulary remap folds dropped ids into
             * the rest) belongs to the rest bucket, not to the top k. */
            q_top[j] = 0.0f;
            if (probs[j] <= 0.0f) continue;
            double qj = exp((double)(z[ids[j]] - mx) / T - lseT);
            q_top[j] = (float)qj;
            q_sum += qj;
            double pj = probs[j];
            p_sum += pj;
            if (pj > 0) kl += pj * log(pj / (qj > 1e-30 ? qj : 1e-30));
        }
        double r = 1.0 - p_sum > 0 ? 1.0 - p_sum : 0.0;
        double q_rest = 1.0 - q_sum > 1e-12 ? 1.0 - q_sum : 1e-12;
        if (r > 0) kl += r * log(r / q_rest);
        rest_scale = r / q_rest;
        double kd = (double)T * T * kl;
        sums->kd += kd;
        sums->n_kd++;
        row_loss += w_kd * kd;
    }
    sums->loss += row_loss;
    sums->n_pos++;
    if (!dz) return; /* evaluation: the loss only */

    /* Gradient: w_ce*(p - onehot) + w_kd*T*(q - p~), written in place. The
     * k ids' logits are read before the row is overwritten (q_top holds them). */
    float kd_coef = w_kd * T;
    float a = w_ce * row_scale, b = has_kd ? kd_coef * (float)(1.0 - rest_scale) * row_scale : 0.0f;
    if (unit_T) { /* one softmax serves both terms */
        a += b;
        b = 0.0f;
    }
    row_softmax_mix(dz, z, mx, (float)lse1, a, 1.0f / T, (float)lseT, b, V);
    if (has_ce) dz[target] -= w_ce * row_scale;
    if (has_kd)
        for (int j = 0; j < k; j++) {
            /* undo the rest-bucket term for the k ids and use p_j instead */
            if (probs[j] <= 0.0f) continue;
            float qj = q_top[j];
            dz[ids[j]] += kd_coef * row_scale * ((float)rest_scale * qj - probs[j]);
        }
}

int64_t fkd_loss_count(const int32_t *targets, const fkd_soft_labels *soft, int N, int V)
{
    int k = soft ? (soft->k < FKD_KD_MAX_K ? soft->k : FKD_KD_MAX_K) : 0;
    int64_t n_pos = 0;
    for (int i = 0; i < N; i++) {
        int has_ce = targets && targets[i] >= 0 && targets[i] < V;
        int has_kd = soft && soft_present(soft->probs + (size_t)i * soft->k, k);
        n_pos += has_ce || has_kd;
    }
    return n_pos;
}

void fkd_loss_rows(float *dlogits, fkd_loss_sums *sums, const float *logits,
                   const int32_t *targets, const fkd_soft_labels *soft,
                   const fkd_loss_config *lc, int i0, int n, int V, float row_scale)
{
    int k = soft ? (soft->k < FKD_KD_MAX_K ? soft->k : FKD_KD_MAX_K) : 0;
    /* Per-thread sums added in thread order: the same result on every run. */
    enum { MAX_THREADS = 256 };
    fkd_loss_sums partial[MAX_THREADS];
    memset(partial, 0, sizeof partial);
    int n_threads = 1;
#pragma omp parallel num_threads(omp_get_max_threads() < MAX_THREADS ? omp_get_max_threads() : MAX_THREADS)
    {
        fkd_loss_sums *mine_p = &partial[omp_get_thread_num()];
#pragma omp single
        n_threads = omp_get_num_threads();
#pragma omp for schedule(static)
        for (int r = 0; r < n; r++) {
            size_t i = (size_t)i0 + r;
            const int32_t *ids = soft ? soft->ids + i * soft->k : NULL;
            const float *probs = soft ? soft->probs + i * soft->k : NULL;
            loss_row(dlogits ? dlogits + (size_t)r * V : NULL, mine_p, logits + (size_t)r * V,
                     targets ? targets[i] : -1, ids, probs, k, lc, V, row_scale);
        }
    }
    for (int t = 0; t < n_threads; t++) {
        sums->ce += partial[t].ce;
        sums->kd += partial[t].kd;
        sums->loss += partial[t].loss;
        sums->n_ce += partial[t].n_ce;
        sums->n_kd += partial[t].n_kd;
        sums->n_pos += partial[t].n_pos;
        sums->n_correct += partial[t].n_correct;
    }
}

void fkd_loss_stats_from_sums(fkd_loss_stats *stats, const fkd_loss_sums *s)
{
    if (!stats) return;
    stats->loss = s->n_pos ? s->loss / (double)s->n_pos : 0.0;
    stats->ce = s->n_ce ? s->ce / (double)s->n_ce : 0.0;
    stats->kd = s->n_kd ? s->kd / (double)s->n_kd : 0.0;
    stats->n_ce = s->n_ce;
    stats->n_kd = s->n_kd;
    stats->n_correct = s->n_correct;
}

void fkd_loss_forward_backward(float *dlogits, fkd_loss_stats *stats, const float *logits,
                               const int32_t *targets, const fkd_soft_labels *soft,
                               const fkd_loss_config *lc, int N, int V)
{
    /* Count first, so the gradient is the gradient of the mean. */
    int64_t n_pos = fkd_loss_count(targets, soft, N, V);
    float row_scale = n_pos > 0 ? 1.0f / (float)n_pos : 0.0f;
    fkd_loss_sums total = {0};
    fkd_loss_rows(dlogits, &total, logits, targets, soft, lc, 0, N, V, row_scale);
    fkd_loss_stats_from_sums(stats, &total);
}
