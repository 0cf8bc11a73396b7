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
 * label, KD. The mean is over positions that carry either. */
#include "internal.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#define FKD_KD_MAX_K 256

typedef struct {
    double ce, kd, loss;
    int64_t n_ce, n_kd, n_pos, n_correct;
} loss_sums;

static int soft_present(const float *probs, int k)
{
    for (int j = 0; j < k; j++)
        if (probs[j] > 0.0f) return 1;
    return 0;
}

/* One position: fills the row's gradient (unscaled, weights applied) and
 * returns its contribution in *sums. z and dz may alias. */
static void loss_row(float *dz, loss_sums *sums, const float *z, int32_t target,
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

    float mx = z[0];
    int argmax = 0;
    for (int j = 1; j < V; j++)
        if (z[j] > mx) { mx = z[j]; argmax = j; }
    int unit_T = T == 1.0f;
    double sum1 = 0.0, sumT = 0.0;
    for (int j = 0; j < V; j++) {
        sum1 += exp((double)(z[j] - mx));
        if (!unit_T && has_kd) sumT += exp((double)(z[j] - mx) / T);
    }
    double lse1 = log(sum1), lseT = unit_T ? lse1 : log(sumT);
    double row_loss = 0.0;

    if (has_ce) {
        double ce = lse1 - (double)(z[target] - mx);
        sums->ce += ce;
        sums->n_ce++;
        sums->n_correct += argmax == target;
        row_loss += w_ce * ce;
    }

    float q_top[FKD_KD_MAX_K];
    double rest_scale = 0.0; /* r / q_rest: the gradient's weight on the rest */
    if (has_kd) {
        double p_sum = 0.0, q_sum = 0.0, kl = 0.0;
        for (int j = 0; j < k; j++) {
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

    /* Gradient: w_ce*(p - onehot) + w_kd*T*(q - p~), written in place. */
    float kd_coef = w_kd * T;
    for (int j = 0; j < V; j++) {
        float p1 = (float)exp((double)(z[j] - mx) - lse1);
        float g = w_ce * p1;
        if (has_kd) {
            float qT = unit_T ? p1 : (float)exp((double)(z[j] - mx) / T - lseT);
            g += kd_coef * qT * (float)(1.0 - rest_scale);
        }
        dz[j] = g * row_scale;
    }
    if (has_ce) dz[target] -= w_ce * row_scale;
    if (has_kd)
        for (int j = 0; j < k; j++) {
            /* undo the rest-bucket term for the k ids and use p_j instead */
            float qj = q_top[j];
            dz[ids[j]] += kd_coef * row_scale * ((float)rest_scale * qj - probs[j]);
        }
}

void fkd_loss_forward_backward(float *dlogits, fkd_loss_stats *stats, const float *logits,
                               const int32_t *targets, const fkd_soft_labels *soft,
                               const fkd_loss_config *lc, int N, int V)
{
    int k = soft ? soft->k : 0;
    if (k > FKD_KD_MAX_K) k = FKD_KD_MAX_K;
    /* First count the positions that carry a target or a soft label, so the
     * gradient is the gradient of the mean. */
    int64_t n_pos = 0;
    for (int i = 0; i < N; i++) {
        int has_ce = targets && targets[i] >= 0 && targets[i] < V;
        int has_kd = soft && soft_present(soft->probs + (size_t)i * soft->k, k);
        n_pos += has_ce || has_kd;
    }
    float row_scale = n_pos > 0 ? 1.0f / (float)n_pos : 0.0f;
    /* Per-thread sums added in thread order: the same result on every run. */
    enum { MAX_THREADS = 256 };
    loss_sums partial[MAX_THREADS];
    memset(partial, 0, sizeof partial);
    int n_threads = 1;
#pragma omp parallel num_threads(omp_get_max_threads() < MAX_THREADS ? omp_get_max_threads() : MAX_THREADS)
    {
        loss_sums *mine_p = &partial[omp_get_thread_num()];
#pragma omp single
        n_threads = omp_get_num_threads();
#pragma omp for schedule(static)
        for (int i = 0; i < N; i++) {
            const int32_t *ids = soft ? soft->ids + (size_t)i * soft->k : NULL;
            const float *probs = soft ? soft->probs + (size_t)i * soft->k : NULL;
            loss_row(dlogits ? dlogits + (size_t)i * V : NULL, mine_p, logits + (size_t)i * V,
                     targets ? targets[i] : -1, ids, probs, k, lc, V, row_scale);
        }
    }
    loss_sums total = {0};
    for (int t = 0; t < n_threads; t++) {
        total.ce += partial[t].ce;
        total.kd += partial[t].kd;
        total.loss += partial[t].loss;
        total.n_ce += partial[t].n_ce;
        total.n_kd += partial[t].n_kd;
        total.n_pos += partial[t].n_pos;
        total.n_correct += partial[t].n_correct;
    }
    if (!stats) return;
    stats->loss = total.n_pos ? total.loss / (double)total.n_pos : 0.0;
    stats->ce = total.n_ce ? total.ce / (double)total.n_ce : 0.0;
    stats->kd = total.n_kd ? total.kd / (double)total.n_kd : 0.0;
    stats->n_ce = total.n_ce;
    stats->n_kd = total.n_kd;
    stats->n_correct = total.n_correct;
}
