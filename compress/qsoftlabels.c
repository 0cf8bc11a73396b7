/* qsoftlabels.c — the teacher pass on a quantized teacher: each window of
 * the transfer stream goes through fkd_qinfer_prompt_each (the file's own
 * blocks, batched prompt processing), and every position's logits become a
 * soft label through train's fkd_softlabel_pass, the code the fp32 teacher
 * uses (softmax at T, top-k, quantized probabilities, KL figures), so the
 * two passes differ only in where the logits come from.
 *
 * Logits are labelled in chunks of QSOFT_CHUNK positions: the pass never
 * holds a window's whole (W, V) matrix. */
#include "fkd_compress.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* 64 x 49,152 floats = 12.6 MB of logits at a time for SmolLM2; the head's
 * matrix product is as fast per row at 64 rows as at 512. */
#define QSOFT_CHUNK 64

typedef struct {
    fkd_softlabel_pass *ps;
    int64_t window_start;
} chunk_ctx;

static void label_chunk(void *ctx, const float *logits, int first, int rows)
{
    chunk_ctx *c = ctx;
    fkd_softlabel_pass_label(c->ps, c->window_start + first, logits, rows);
}

/* Every window of the stream through the quantized teacher's prompt path. */
typedef struct {
    const fkd_qmodel *teacher;
    const fkd_token_stream *transfer;
} q_teacher;

static int q_windows(fkd_softlabel_pass *ps, void *ctx, fkd_error *err)
{
    const q_teacher *q = ctx;
    const fkd_token_stream *s = q->transfer;
    fkd_qinfer st;
    if (fkd_qinfer_init(&st, q->teacher, FKD_QKERNEL_AUTO, err) != 0) return -1;
    int W = fkd_softlabel_pass_window(ps), rc = 0;
    chunk_ctx c = {ps, 0};
    for (int64_t w0 = 0; w0 < s->n && rc == 0; w0 += W) {
        int n = s->n - w0 < W ? (int)(s->n - w0) : W;
        c.window_start = w0;
        fkd_qinfer_reset(&st);
        rc = fkd_qinfer_prompt_each(&st, s->tokens + w0, n, QSOFT_CHUNK, label_chunk, &c, err);
    }
    fkd_qinfer_free(&st);
    return rc;
}

int fkd_qsoftlabels_make(fkd_softlabel_shard *shards, fkd_softlabel_stats *st,
                         const fkd_qmodel *teacher, const fkd_token_stream *transfer,
                         const fkd_teacher_config *cfg, fkd_error *err)
{
    q_teacher q = {teacher, transfer};
    return fkd_softlabel_pass_run(shards, st, transfer, teacher->cfg.vocab, teacher->cfg.max_seq,
                                  cfg, q_windows, &q, err);
}

/* Where b keeps id among its k, -1 when it does not. */
static int slot_of(const int32_t *ids, int k, int32_t id)
{
    for (int m = 0; m < k; m++)
        if (ids[m] == id) return m;
    return -1;
}

int fkd_qsoftlabels_compare(fkd_qsoft_agreement *out, const fkd_softlabel_shard *a,
                            const fkd_softlabel_shard *b, int n_shards, fkd_error *err)
{
    memset(out, 0, sizeof *out);
    int64_t agree = 0, n = 0, shared = 0, slots = 0;
    double sum = 0;
    for (int i = 0; i < n_shards; i++) {
        int k = a[i].k;
        if (a[i].n != b[i].n || b[i].k != k || a[i].first_position != b[i].first_position)
            return fkd_error_set(err, FKD_E_MISMATCH, "shard %d: the two label sets do not "
                                 "cover the same positions with the same k", i);
        for (int64_t p = 0; p < a[i].n; p++, n++) {
            const int32_t *ia = a[i].ids + p * k, *ib = b[i].ids + p * k;
            agree += ia[0] == ib[0];
            for (int j = 0; j < k; j++, slots++) {
                int m = slot_of(ib, k, ia[j]);
                if (m < 0) continue;
                double d = fabs((double)a[i].probs[p * k + j] - (double)b[i].probs[p * k + m]);
                out->max_prob_diff = d > out->max_prob_diff ? d : out->max_prob_diff;
                sum += d;
                shared++;
            }
        }
    }
    out->positions = n;
    out->top1_agreement = n ? (double)agree / (double)n : 0;
    out->topk_overlap = slots ? (double)shared / (double)slots : 0;
    out->mean_prob_diff = shared ? sum / (double)shared : 0;
    return 0;
}
