/* sim_eval.c — one evaluation for every method, on the private clients'
 * test text: perplexity, next-token accuracy and bits per byte (batched, on
 * eval_tokens_final tokens), the hallucination rate (sampled continuations
 * of held-out openings, train's fkd_eval_report_run), and the perplexity of
 * the student as a device runs it, quantized to int8 (Q8_0) and int4
 * (SIM_INT4_QTYPE by compress's deploy recipe, GPTQ calibrated on the
 * public transfer text: the model of student-q4_1.gguf):
 * compress/'s quantized forward pass on the blocks with 8-bit activations,
 * each window of the text fed as one prompt. The fp32 model is scored on
 * the same windows of the same tokens, so the quantization cost is a
 * like-for-like ratio.
 *
 * With a file teacher, the teacher reads the test text in its own tokens
 * and the students in theirs (a trimmed vocabulary cuts text differently),
 * so every perplexity is per teacher token: a model's total nats on the
 * text over the teacher's token count of the same text. Accuracy stays per
 * own token. */
#include "sim_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GEN_TOKENS 48

double sim_ppl_per_teacher_token(const sim_ctx *x, double ppl_own)
{
    double r = x->res->sum.teacher_from_file ? x->res->sum.own_per_teacher_token : 1.0;
    return r == 1.0 ? ppl_own : pow(ppl_own, r);
}

int sim_eval_ppl(double *ppl, double *acc, const fkd_params *p, const fkd_token_stream *s,
                 int64_t max_tokens, fkd_error *err)
{
    int64_t n = max_tokens > 0 && s->n > max_tokens ? max_tokens : s->n;
    int64_t bytes = (int64_t)((double)s->text_bytes * (double)n / (double)(s->n ? s->n : 1));
    fkd_eval_result r;
    if (fkd_eval_tokens(&r, p, s->tokens, n, bytes, p->cfg.max_seq, err) != 0) return -1;
    *ppl = r.perplexity;
    if (acc) *acc = r.accuracy;
    return 0;
}

static int eval_quant(double *ppl, const fkd_params *p, int type, const fkd_token_stream *calib,
                      const fkd_token_stream *s, int64_t n, fkd_error *err)
{
    fkd_qmodel qm;
    if (fkd_qmodel_quantize_deploy(&qm, p, type, NULL, calib, err) != 0) return -1;
    fkd_qinfer st;
    int rc = fkd_qinfer_init(&st, &qm, FKD_QKERNEL_AUTO, err);
    fkd_eval_result r;
    if (rc == 0) {
        rc = fkd_qinfer_eval_windows(&r, &st, s->tokens, n, 0, p->cfg.max_seq, err);
        fkd_qinfer_free(&st);
    }
    fkd_qmodel_free(&qm);
    if (rc == 0) *ppl = r.perplexity;
    return rc;
}

const fkd_token_stream *sim_method_calib(const fkd_sim_method *m)
{
    return m->calib.n > 0 ? &m->calib : NULL;
}

/* The deploy recipe's calibration text for p: the first tokens of the
 * public transfer set (no client's data reaches the deployed file), copied,
 * in the teacher's ids for a file teacher whose student was trimmed. */
static int transfer_calib(fkd_token_stream *out, const sim_ctx *x, int teacher, fkd_error *err)
{
    memset(out, 0, sizeof *out);
    int64_t n = x->transfer.n < FKD_QIMATRIX_DEFAULT_TOKENS ? x->transfer.n
                                                             : FKD_QIMATRIX_DEFAULT_TOKENS;
    out->tokens = malloc((size_t)(n ? n : 1) * sizeof *out->tokens);
    if (!out->tokens) return fkd_error_set(err, FKD_E_NOMEM, "no memory for calibration text");
    out->owned = 1;
    out->n = n;
    out->text_bytes = n;
    for (int64_t i = 0; i < n; i++) {
        int32_t t = x->transfer.tokens[i];
        out->tokens[i] = teacher && x->have_vmap ? x->vmap.new_to_old[t] : t;
    }
    return 0;
}

/* One token at a time is too little work to share between threads: the
 * synchronisation would cost more than it saves. */
static int single_thread(void)
{
    int before = fkd_train_get_threads();
    fkd_train_set_threads(1);
    return before;
}

/* The hallucination rate alone: the report's loss part is given 2 tokens,
 * since sim_eval_ppl scores the test text with batched (threaded) passes. */
static int eval_halluc(double *rate, const sim_ctx *x, const fkd_params *p,
                       const fkd_tokenizer *tok, fkd_error *err)
{
    *rate = 0;
    if (x->cfg.halluc_prompts == 0 || !x->es.known) return 0;
    fkd_eval_config ec = fkd_eval_defaults();
    ec.max_tokens = 2;
    ec.n_prompts = x->cfg.halluc_prompts;
    ec.gen_tokens = GEN_TOKENS;
    ec.seed = x->cfg.seed;
    fkd_eval_report r;
    if (fkd_eval_report_run(&r, p, tok, &x->es.corpus, x->es.docs, x->es.n_docs,
                            x->es.known, &ec, err) != 0)
        return -1;
    *rate = r.halluc_rate;
    return 0;
}

static double per_teacher_token(const sim_ctx *x, int teacher, double ppl)
{
    return teacher ? ppl : sim_ppl_per_teacher_token(x, ppl);
}

/* ---- a file teacher's figures, cached ------------------------------------------------------ */
/* A pretrained teacher is the same model in every run with its file: its
 * evaluation (minutes for an LLM) is kept under the cache, keyed by the
 * file's CRC-32 and everything the figures depend on. */
#define TEACHER_EVAL_FIELDS 8

static void teacher_eval_path(char *out, size_t cap, const sim_ctx *x)
{
    const fkd_sim_config *c = &x->cfg;
    char key[4 * FKD_SIM_PATH_MAX];
    /* v3: int8/int4 on the blocks by windows; the int4 figure the deploy recipe's, named */
    snprintf(key, sizeof key, "teacher-eval v3|crc=%08x|%s|%s|%s|seed=%llu|clients=%d|%d|%g|"
             "ctx=%d|test=%lld|quant=%lld|halluc=%d|int4=%s", x->res->sum.teacher_crc, c->data,
             c->public_dir, c->words, (unsigned long long)c->seed, c->clients, c->partition,
             (double)c->dirichlet_alpha, x->teacher.cfg.max_seq, (long long)x->test_t.n,
             (long long)c->quant_eval_tokens, c->halluc_prompts, x->res->sum.int4_recipe);
    snprintf(out, cap, "%s/teacher-eval-%08x.txt", c->cache, fkd_crc32(0, key, strlen(key)));
}

static int teacher_eval_load(fkd_sim_method *m, const sim_ctx *x)
{
    char path[FKD_SIM_PATH_MAX + 64];
    teacher_eval_path(path, sizeof path, x);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long long qt = 0;
    int n = fscanf(f, "%lf %lf %lf %lf %lf %lf %lf %lld", &m->ppl, &m->acc, &m->bpb, &m->halluc,
                   &m->ppl_fp32_steps, &m->ppl_int8, &m->ppl_int4, &qt);
    fclose(f);
    m->quant_tokens = qt;
    return n == TEACHER_EVAL_FIELDS ? 0 : -1;
}

static void teacher_eval_save(const fkd_sim_method *m, const sim_ctx *x)
{
    char path[FKD_SIM_PATH_MAX + 64], text[512];
    teacher_eval_path(path, sizeof path, x);
    int len = snprintf(text, sizeof text, "%.17g %.17g %.17g %.17g %.17g %.17g %.17g %lld\n",
                       m->ppl, m->acc, m->bpb, m->halluc, m->ppl_fp32_steps, m->ppl_int8,
                       m->ppl_int4, (long long)m->quant_tokens);
    /* A cache: a failed write only costs the next run the evaluation. */
    fkd_file_write_atomic(path, text, (size_t)len, NULL);
}

/* The teacher reads its own tokenization of the test text (a file
 * teacher's tokenizer may not be the students'), and a file teacher's
 * figures come from the cache when an earlier run made them. */
int sim_eval_final(fkd_sim_method *m, const sim_ctx *x, const fkd_params *p, fkd_error *err)
{
    double t0 = fkd_time_ms();
    /* One recipe for every method: GPTQ reads the same public tokens
     * (before the teacher's cache key, which names it). */
    fkd_qmodel_deploy_recipe(x->res->sum.int4_recipe, sizeof x->res->sum.int4_recipe,
                             SIM_INT4_QTYPE, fkd_qmodel_deploy_calib_tokens(&p->cfg, &x->transfer));
    int teacher = p == &x->teacher && x->res->sum.teacher_from_file;
    if (teacher && teacher_eval_load(m, x) == 0) {
        x->res->sum.teacher_eval_cached = 1;
        return 0;
    }
    const fkd_token_stream *test = teacher ? &x->test_t : &x->test;
    const fkd_tokenizer *tok = teacher ? &x->ttok : &x->tok;
    int64_t n = test->n;
    fkd_eval_result lm;
    if (fkd_eval_tokens(&lm, p, test->tokens, n, test->text_bytes, p->cfg.max_seq, err) != 0)
        return -1;
    m->ppl = per_teacher_token(x, teacher, lm.perplexity);
    m->acc = lm.accuracy;
    m->bpb = lm.bits_per_byte;
    int64_t qn = x->cfg.quant_eval_tokens;
    n = n < qn ? n : qn;
    m->quant_tokens = n;
    /* fp32 on the quantized figures' tokens: the same run when they are all */
    fkd_eval_result f32 = lm;
    int rc = 0;
    if (n >= 2 && n < test->n)
        rc = fkd_eval_tokens(&f32, p, test->tokens, n, 0, p->cfg.max_seq, err);
    fkd_token_stream_free(&m->calib);
    if (rc == 0 && n >= 2) rc = transfer_calib(&m->calib, x, teacher, err);
    double q8 = 0, q4 = 0;
    if (rc == 0 && n >= 2)
        rc = eval_quant(&q8, p, FKD_QTYPE_Q8_0, NULL, test, n, err) != 0 ||
             eval_quant(&q4, p, SIM_INT4_QTYPE, sim_method_calib(m), test, n, err) != 0 ? -1
                                                                                        : 0;
    int threads = single_thread();
    if (rc == 0) rc = eval_halluc(&m->halluc, x, p, tok, err);
    fkd_train_set_threads(threads);
    m->ppl_fp32_steps = per_teacher_token(x, teacher, n >= 2 ? f32.perplexity : 0);
    m->ppl_int8 = per_teacher_token(x, teacher, q8);
    m->ppl_int4 = per_teacher_token(x, teacher, q4);
    m->eval_seconds = (fkd_time_ms() - t0) / 1e3;
    if (rc == 0 && teacher) teacher_eval_save(m, x);
    return rc;
}

int sim_eval_clients(fkd_sim_method *m, const sim_ctx *x, const fkd_params *p, fkd_error *err)
{
    free(m->client_acc);
    m->n_client_acc = 0;
    m->client_acc = calloc((size_t)(x->n_client_test > 0 ? x->n_client_test : 1),
                           sizeof *m->client_acc);
    if (!m->client_acc) return fkd_error_set(err, FKD_E_NOMEM, "no memory for client accuracies");
    for (int i = 0; i < x->n_client_test; i++) {
        if (x->client_test[i].n < 2) continue;
        double ppl;
        if (sim_eval_ppl(&ppl, &m->client_acc[m->n_client_acc], p, &x->client_test[i], 0,
                         err) != 0)
            return -1;
        m->n_client_acc++;
    }
    return 0;
}

void sim_method_release(fkd_sim_method *m, int keep)
{
    if (!m->final.memory) return;
    m->final_crc = fkd_crc32(0, m->final.memory, m->final.n_params * sizeof(float));
    if (keep) return;
    fkd_params_free(&m->final); /* the figures are taken: the weights are done */
    fkd_token_stream_free(&m->calib);
}
