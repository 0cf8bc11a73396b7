/* sim_run.c — a whole simulation, in the order a reader would explain it:
 * load the data, get the teacher and its soft labels (cached), draw the
 * devices and judge which can take part, then run every method from the
 * same initial student with the same compute, evaluate each the same way,
 * and write the run directory. */
#include "sim_internal.h"
#include "agg_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Envelope and MessagePack framing of a TASK or UPDATE beyond its blobs. */
#define MSG_FRAMING_BYTES 512
/* File models: the context both run at, and the student made from the teacher. */
#define FILE_CONTEXT_DEFAULT 256
#define STUDENT_LAYERS_DEFAULT 4
/* The pruned student: a third of the teacher's parameters (-1) with the
 * pruning's default least blocks (0: 2/3 of them, narrower), the
 * recipe that healed best (docs/pruning.md). */
#define FILE_STUDENT_PARAMS (-1)
#define FILE_STUDENT_LAYERS 0
/* The quantized pass scores one token at a time: this many tokens keep it
 * to seconds per model. */
#define QUANT_EVAL_TOKENS_DEFAULT 16384 /* all of the final evaluation's test tokens */
/* q8_0 holds 32 weights in 34 bytes. */
#define Q8_BYTES_PER_WEIGHT (34.0 / 32.0)

void fkd_sim_config_defaults(fkd_sim_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->data, sizeof c->data, "%s", FKD_DATA_DEFAULT_DIR);
    snprintf(c->public_dir, sizeof c->public_dir, "%s", FKD_DATA_DEFAULT_DIR);
    snprintf(c->out, sizeof c->out, "runs/default");
    snprintf(c->cache, sizeof c->cache, "runs/cache");
    if (access(FKD_DATA_WORDS_PATH, R_OK) == 0)
        snprintf(c->words, sizeof c->words, "%s", FKD_DATA_WORDS_PATH);
    c->seed = 1;
    c->threads = 2;
    c->clients = 0;
    c->partition = FKD_PARTITION_DIRICHLET;
    c->dirichlet_alpha = 0.5f;
    c->rounds = 10;
    c->per_round = 4;
    c->over_select = 0.5f;
    c->deadline_s = 60;
    c->server_steps = -1;          /* as many as the federation's clients take */
    c->server_round_steps = -1;    /* as many as public-only distillation takes per round */
    c->local_steps = 6;
    c->batch = 8;
    c->seq = 64;
    c->lr = 3e-3f;
    c->lr_schedule = FKD_LR_COSINE;
    c->min_lr_ratio = 0.1f;
    c->alpha = 0.5f;
    c->transfer_share = 0.5f;
    /* At >= 100x below fp32 the bytes buy more entries, not more bits per
     * entry: 5 % of the update as 1-bit signs with Rice-coded indices
     * (docs/simulation.md, "The uplink"). */
    c->up_fraction = 0.05f;
    c->up_format = FKD_UVAL_SIGN;
    c->dense_reference = 0;        /* a diagnostic run: --dense-reference */
    c->methods = 0;                /* all */
    c->server_lr = 1.0f;
    c->teacher_steps = 256;        /* docs/data.md: ahead of every student budget here */
    c->teacher_batch = 8;
    c->soft_k = 8;
    c->soft_shards = 4;
    c->soft_temperature = 2.0f;
    c->transfer_tokens = 65536;
    c->eval_tokens_round = 4096;
    c->eval_tokens_final = 16384;
    c->halluc_prompts = 16;
    c->quant_eval_tokens = QUANT_EVAL_TOKENS_DEFAULT;
    c->student_layers = STUDENT_LAYERS_DEFAULT;
    c->context = FILE_CONTEXT_DEFAULT;
    c->client_mode = FKD_SIM_CLIENT_FULL;
    c->lora_rank = FKD_LORA_DEFAULT_RANK;
    c->lora_alpha = FKD_LORA_DEFAULT_ALPHA;
    c->client_eval_tokens = 1024;
    c->client_eval_max = 64;
    c->progress = 1;
}

void fkd_sim_config_file_defaults(fkd_sim_config *c)
{
    /* Sized to 30 minutes on 2 cores (3,600 CPU-seconds) from measured CPU
     * time (docs/simulation.md, "With SmolLM2-135M as the teacher"): the
     * teacher labels about 140 positions per CPU-second, the 45 M student
     * trains at about 150 tokens per CPU-second (docs/pruning.md), and the
     * evaluations and each federated round's work (quantize, seal, compress)
     * cost the rest: 16,384 training tokens per method (64 steps of
     * 2 x 128), as many in the server's phase, 65,536 labelled positions,
     * short evaluations. Healing is bound by steps on fresh labels: 4 rounds
     * on 16,384 positions gave fedkd 324, 16 rounds on them 427 (each label
     * seen four times over), 8 rounds on 65,536 gave 242 (docs/simulation.md,
     * 7 Dec). A pretrained student takes a fine-tuning learning rate; a round
     * ships tens of MB, so the deadline allows phone links. */
    c->rounds = 8;
    c->per_round = 2;
    c->local_steps = 4;
    c->batch = 2;
    c->seq = 128;
    c->lr = 3e-4f;
    c->deadline_s = 600;
    c->transfer_tokens = 65536;
    c->soft_shards = 4;
    c->eval_tokens_final = 2048;
    c->eval_tokens_round = 256;
    c->halluc_prompts = 4;
    c->quant_eval_tokens = 2048;
    /* At temperature 2 the teacher's softened labels healed the pruned
     * student less than cross-entropy on the same text did (public-only
     * distillation 445 against FedAvg's 355); at 1 they are the signal the
     * perplexity measures: public-only 357, fedkd 324 against FedAvg's 355
     * (docs/simulation.md, 7 Dec). */
    c->soft_temperature = 1.0f;
    c->client_eval_tokens = 256;
    c->client_eval_max = 8;
    c->student_layers = FILE_STUDENT_LAYERS;
    c->student_params = FILE_STUDENT_PARAMS;
}

int fkd_sim_config_validate(const fkd_sim_config *c, fkd_error *err)
{
    /* A file student's context is checked when it is loaded. */
    int max_seq = c->teacher[0] ? c->context : fkd_config_student_s().max_seq;
    if (c->rounds < 1 || c->rounds > 100000 || c->per_round < 1 || c->local_steps < 1 ||
        c->batch < 1 || c->seq < 2 || c->seq > max_seq)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "rounds, per-round, local-steps and batch "
                             "must be >= 1 and seq in [2, %d]", max_seq);
    if (c->server_steps < -1)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "server-steps >= 0, or -1 for as many as "
                             "the federation's clients take");
    if (c->server_round_steps < -1)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "server-round-steps >= 0 (0 = off), or -1 "
                             "for as many as public-only distillation takes per round");
    if (c->context < 2 || c->context > FKD_SIM_MAX_CONTEXT || c->student_layers < 0 ||
        c->student_params < -1 || c->quant_eval_tokens < 0)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "context in [2, %d], student-layers >= 0, "
                             "student-params >= -1, quant-eval-tokens >= 0", FKD_SIM_MAX_CONTEXT);
    if (c->student[0] && !c->teacher[0])
        return fkd_error_set(err, FKD_E_INVALID_ARG, "--student needs --teacher: the student "
                             "heals from a pretrained teacher");
    if (c->client_mode < 0 || c->client_mode >= FKD_SIM_CLIENT_MODE_COUNT || c->lora_rank < 1 ||
        c->lora_rank > FKD_LORA_MAX_RANK || !(c->lora_alpha > 0 && c->lora_alpha < 1e6f))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "client mode full, lora, qlora8 or qlora4; "
                             "lora-rank in [1, %d]; lora-alpha > 0", FKD_LORA_MAX_RANK);
    if (c->clients < 0 || c->clients > FKD_COORD_MAX_CLIENTS || c->threads < 1 ||
        c->threads > 256)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "clients in [0, %d] and threads in [1, 256]",
                             FKD_COORD_MAX_CLIENTS);
    if (!(c->over_select >= 0) || !(c->deadline_s > 0) || !(c->lr > 0) ||
        !(c->alpha >= 0 && c->alpha <= 1) || !(c->transfer_share >= 0 && c->transfer_share <= 1))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "over-select >= 0, deadline > 0, lr > 0, "
                             "alpha and transfer-share in [0, 1]");
    if (!(c->up_fraction > 0 && c->up_fraction <= 1) || c->up_format < FKD_UVAL_F32 ||
        c->up_format >= FKD_UVAL_COUNT)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "up-fraction in (0, 1], a known update format");
    if (c->teacher_steps < 1 || c->teacher_batch < 1 || c->soft_k < 1 ||
        c->soft_k > FKD_SOFT_MAX_K || c->soft_shards < 1 || !(c->soft_temperature > 0) ||
        c->transfer_tokens < 0 || c->eval_tokens_round < 0 || c->eval_tokens_final < 0 ||
        c->halluc_prompts < 0 || c->client_eval_max < 0)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "teacher, soft-label and evaluation "
                             "settings out of range");
    if ((c->lr_schedule != FKD_LR_CONSTANT && c->lr_schedule != FKD_LR_COSINE) ||
        !(c->min_lr_ratio >= 0 && c->min_lr_ratio <= 1))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "lr-schedule constant or cosine, "
                             "min-lr-ratio in [0, 1]");
    if (!(c->server_lr > 0 && c->server_lr <= 100))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "server-lr in (0, 100]");
    if (c->methods >> FKD_SIM_PRUNED)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "--methods names an unknown method");
    if (c->partition != FKD_PARTITION_DIRICHLET && c->partition != FKD_PARTITION_IID)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "--partition is dirichlet or iid");
    if (!(c->dirichlet_alpha > 0))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "the Dirichlet alpha must be > 0");
    return 0;
}

double sim_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
        fclose(f);
    }
    return (double)resident * (double)sysconf(_SC_PAGESIZE);
}

/* ---- progress ------------------------------------------------------------------------------- */
void sim_progress(sim_ctx *x, int64_t tokens, const char *what)
{
    x->units_done += tokens;
    if (!x->cfg.progress) return;
    fkd_progress_update(&x->bar, x->units_done, what);
}

int sim_method_add_round(fkd_sim_method *m, const fkd_sim_round *r, fkd_error *err)
{
    fkd_sim_round *nr = realloc(m->rounds, (size_t)(m->n_rounds + 1) * sizeof *nr);
    if (!nr) return fkd_error_set(err, FKD_E_NOMEM, "no memory for round records");
    m->rounds = nr;
    m->rounds[m->n_rounds++] = *r;
    return 0;
}

/* ---- the work of a client round, for the clock --------------------------------------------------- */
static int quantized_bytes(double *bytes, const fkd_params *p, int type, fkd_error *err)
{
    fkd_qmodel qm;
    if (fkd_qmodel_quantize(&qm, p, type, NULL, err) != 0) return -1;
    *bytes = (double)fkd_qmodel_encoded_bytes(&qm);
    fkd_qmodel_free(&qm);
    return 0;
}

/* One update of the run's mode: the encoded adapters (LoRA modes), or a
 * delta the size of the student compressed in the run's format. */
static int update_bytes(size_t *bytes, const sim_ctx *x, fkd_error *err)
{
    const fkd_sim_config *c = &x->cfg;
    if (c->client_mode != FKD_SIM_CLIENT_FULL) {
        fkd_lora_config lc = fkd_lora_defaults();
        lc.rank = c->lora_rank;
        lc.alpha = c->lora_alpha;
        fkd_lora lora;
        if (fkd_lora_init(&lora, &x->student_cfg, &lc, c->seed, err) != 0) return -1;
        *bytes = fkd_lora_encoded_bytes(&lora);
        fkd_lora_free(&lora);
        return 0;
    }
    size_t n = x->init.n_params;
    float *delta = malloc(n * sizeof *delta);
    if (!delta) return fkd_error_set(err, FKD_E_NOMEM, "no memory for an update estimate");
    fkd_rng rng;
    fkd_rng_seed(&rng, c->seed);
    for (size_t i = 0; i < n; i++) delta[i] = 1e-3f * fkd_rng_normal(&rng);
    fkd_update_config uc = {.fraction = c->up_fraction, .value_format = c->up_format};
    uint8_t *data;
    int rc = fkd_update_compress(&data, bytes, NULL, delta, NULL, n, &uc, err);
    free(delta);
    if (rc == 0) free(data);
    return rc;
}

static int estimate_work(sim_ctx *x, fkd_error *err)
{
    const fkd_sim_config *c = &x->cfg;
    double q8, task;
    if (quantized_bytes(&q8, &x->init, FKD_QTYPE_Q8_0, err) != 0 ||
        quantized_bytes(&task, &x->init, fkd_coord_mode_quant(c->client_mode, FKD_QTYPE_Q8_0),
                        err) != 0)
        return -1;
    x->res->sum.student_q8_bytes = (uint64_t)q8;
    double shard = 0;
    for (int i = 0; i < x->n_shards; i++)
        shard += (double)fkd_softlabels_encoded_bytes(x->shards[i].n, x->shards[i].k,
                                                      x->shards[i].vocab, x->shards[i].quant);
    shard /= x->n_shards > 0 ? x->n_shards : 1;
    size_t n = x->init.n_params, bytes;
    if (update_bytes(&bytes, x, err) != 0) return -1;
    double up = (double)fkd_wire_sealed_bytes(bytes) + MSG_FRAMING_BYTES;
    double up_dense = (double)fkd_wire_sealed_bytes(4 * n + FKD_UPDATE_HEADER_BYTES) +
                      MSG_FRAMING_BYTES;
    x->res->sum.update_bytes = (uint64_t)up;
    fkd_sim_work base = {.down_bytes = task + MSG_FRAMING_BYTES, .up_bytes = up,
                         .train_tokens = (double)c->local_steps * c->batch * c->seq,
                         .flops_per_token = fkd_config_flops_per_token(&x->student_cfg, c->seq)};
    x->work[0] = base;
    x->work[1] = base;
    x->work[1].down_bytes += shard;
    x->work[2] = x->work[1];
    x->work[2].up_bytes = up_dense;
    return 0;
}

/* ---- devices and accessibility ------------------------------------------------------------------- */
/* Every client mode judged on the same devices: what each would need and
 * who could train in it (the run itself trains in cfg.client_mode). */
static void judge_modes(sim_ctx *x)
{
    const fkd_sim_config *c = &x->cfg;
    fkd_sim_summary *s = &x->res->sum;
    fkd_lora_config lc = fkd_lora_defaults();
    lc.rank = c->lora_rank;
    lc.alpha = c->lora_alpha;
    s->lora_params = fkd_lora_param_count(&x->student_cfg, &lc);
    for (int mode = 0; mode < FKD_SIM_CLIENT_MODE_COUNT; mode++) {
        s->mode_min_train_bytes[mode] =
            (double)fkd_sim_train_min_bytes(&x->student_cfg, mode, c->lora_rank, c->seq);
        for (int i = 0; i < x->n_clients; i++) {
            fkd_sim_access a;
            fkd_sim_access_check(&a, &x->devs[i], &x->student_cfg, mode, c->lora_rank, c->batch,
                                 c->seq, &x->work[1], c->deadline_s,
                                 (double)s->student_q8_bytes);
            int both = a.can_train && a.can_run;
            s->mode_accessible[mode] += both;
            s->mode_class_both[mode][x->devs[i].cls] += both;
        }
    }
}

/* Which devices could take part in each method: the federated ones train
 * and run on them; the teacher and the centrally trained students only run
 * there (int8). And the largest training plan among a federation's clients. */
static void judge_methods(sim_ctx *x)
{
    const fkd_sim_config *c = &x->cfg;
    fkd_sim_summary *s = &x->res->sum;
    double peak = 0;
    for (int i = 0; i < x->n_clients; i++)
        if (x->access[i].can_train && x->access[i].can_run && x->access[i].train_bytes > peak)
            peak = x->access[i].train_bytes;
    for (int id = 0; id < FKD_SIM_METHOD_COUNT; id++) {
        fkd_sim_method *m = &x->res->m[id];
        int federated = id == FKD_SIM_FEDAVG || id == FKD_SIM_FEDKD || id == FKD_SIM_FEDKD_DENSE;
        int teacher = id == FKD_SIM_TEACHER;
        m->peak_client_bytes = federated ? peak : 0;
        const fkd_model_config *mc = teacher ? &x->teacher.cfg : &x->student_cfg;
        double q8 = teacher ? (double)x->teacher.n_params * Q8_BYTES_PER_WEIGHT
                            : (double)s->student_q8_bytes;
        for (int i = 0; i < x->n_clients; i++) {
            fkd_sim_access a = x->access[i];
            if (teacher)
                fkd_sim_access_check(&a, &x->devs[i], mc, c->client_mode, c->lora_rank, c->batch,
                                     c->seq, &x->work[1], c->deadline_s, q8);
            m->class_ok[x->devs[i].cls] += federated ? a.can_train && a.can_run : a.can_run;
        }
    }
}

static int draw_devices(sim_ctx *x, fkd_error *err)
{
    int n = x->n_clients;
    x->devs = calloc((size_t)n, sizeof *x->devs);
    x->access = calloc((size_t)n, sizeof *x->access);
    x->recompute = calloc((size_t)n, 1);
    if (!x->devs || !x->access || !x->recompute)
        return fkd_error_set(err, FKD_E_NOMEM, "no memory for %d devices", n);
    fkd_rng rng;
    fkd_rng_seed(&rng, x->cfg.seed ^ 0x646576696365ULL);
    fkd_sim_summary *s = &x->res->sum;
    for (int i = 0; i < n; i++) {
        fkd_sim_device_draw(&x->devs[i], &rng);
        fkd_sim_access *a = &x->access[i];
        fkd_sim_access_check(a, &x->devs[i], &x->student_cfg, x->cfg.client_mode,
                             x->cfg.lora_rank, x->cfg.batch, x->cfg.seq, &x->work[1],
                             x->cfg.deadline_s, (double)s->student_q8_bytes);
        x->recompute[i] = (uint8_t)a->recompute;
        int c = x->devs[i].cls;
        s->class_count[c]++;
        s->class_train[c] += a->can_train;
        s->class_run[c] += a->can_run;
        s->class_both[c] += a->can_train && a->can_run;
        s->n_accessible += a->can_train && a->can_run;
    }
    s->accessibility = n > 0 ? (double)s->n_accessible / n : 0;
    judge_modes(x);
    judge_methods(x);
    return 0;
}

/* ---- aggregation throughput ------------------------------------------------------------------------ */
#define AGG_UPDATES 32
#define AGG_GROUP 4   /* updates held dense at once, as a round of the default run holds */

int sim_measure_aggregation(sim_ctx *x, fkd_error *err)
{
    size_t n = x->init.n_params;
    fkd_wire_identity coord, client;
    if (fkd_wire_identity_generate(&coord, err) != 0 ||
        fkd_wire_identity_generate(&client, err) != 0)
        return -1;
    float *delta = malloc(n * sizeof *delta), *dense = malloc(AGG_GROUP * n * sizeof *dense);
    float *master = malloc(n * sizeof *master);
    uint8_t *sealed[AGG_UPDATES] = {0};
    size_t sealed_len[AGG_UPDATES] = {0};
    int rc = delta && dense && master ? 0 : fkd_error_set(err, FKD_E_NOMEM, "out of memory");
    fkd_rng rng;
    fkd_rng_seed(&rng, x->cfg.seed);
    fkd_wire_seal_ctx sc = {.round = 1, .model_version = 0};
    memcpy(sc.client_id, client.sign_pk, FKD_WIRE_ID_BYTES);
    fkd_update_config uc = {.fraction = x->cfg.up_fraction, .value_format = x->cfg.up_format};
    for (int u = 0; rc == 0 && u < AGG_UPDATES; u++) {
        for (size_t i = 0; i < n; i++) delta[i] = 1e-3f * fkd_rng_normal(&rng);
        uint8_t *plain;
        size_t plain_len;
        rc = fkd_update_compress(&plain, &plain_len, NULL, delta, NULL, n, &uc, err);
        if (rc != 0) break;
        sealed[u] = malloc(fkd_wire_sealed_bytes(plain_len));
        rc = sealed[u] ? fkd_wire_seal(sealed[u], fkd_wire_sealed_bytes(plain_len),
                                       &sealed_len[u], plain, plain_len, &sc, &client,
                                       coord.curve_pk, err)
                       : fkd_error_set(err, FKD_E_NOMEM, "out of memory");
        free(plain);
    }
    /* Timed: what the coordinator does per update, then one FedAvg step. */
    fkd_coord_config cc;
    fkd_coord_config_defaults(&cc);
    fkd_coord_agg agg;
    int agg_ready = rc == 0 && fkd_coord_agg_init(&agg, &cc, n, err) == 0;
    if (rc == 0 && !agg_ready) rc = -1;
    /* CPU time: on a shared machine the wall clock measures the load; the
     * pool has stopped, so the process's CPU time is this thread's. */
    double t0 = fkd_cpu_time_ms();
    /* In FedAvg steps of AGG_GROUP updates each: all 32 dense at once would
     * be the simulation's peak (5.7 GB for a 44.5 M student) for a figure
     * per update. */
    fkd_coord_update ups[AGG_GROUP];
    uint8_t *plain = rc == 0 ? malloc(fkd_wire_open_bytes(sealed_len[0]) + 64) : NULL;
    if (rc == 0) memcpy(master, x->init.memory, n * sizeof *master);
    for (int u = 0; rc == 0 && u < AGG_UPDATES; u++) {
        size_t cap = fkd_wire_open_bytes(sealed_len[u]) + 64, plain_len;
        uint8_t *p2 = realloc(plain, cap);
        if (!p2) {
            rc = fkd_error_set(err, FKD_E_NOMEM, "out of memory");
            break;
        }
        plain = p2;
        rc = fkd_wire_open(plain, cap, &plain_len, sealed[u], sealed_len[u], &sc, &coord, NULL,
                           err);
        float *d = dense + (size_t)(u % AGG_GROUP) * n;
        if (rc == 0) rc = fkd_update_decompress(d, n, plain, plain_len, err);
        ups[u % AGG_GROUP] = (fkd_coord_update){.delta = d, .weight = 1.0};
        if (rc == 0 && (u % AGG_GROUP == AGG_GROUP - 1 || u == AGG_UPDATES - 1))
            rc = fkd_coord_agg_apply(&agg, master, ups, u % AGG_GROUP + 1, err);
    }
    double s = (fkd_cpu_time_ms() - t0) / 1e3;
    if (rc == 0) x->res->sum.agg_updates_per_s = AGG_UPDATES / (s > 0 ? s : 1e-9);
    if (agg_ready) fkd_coord_agg_free(&agg);
    for (int u = 0; u < AGG_UPDATES; u++) free(sealed[u]);
    free(plain);
    free(delta);
    free(dense);
    free(master);
    fkd_wire_identity_wipe(&coord);
    fkd_wire_identity_wipe(&client);
    return rc;
}

/* ---- the run --------------------------------------------------------------------------------------- */
static const struct {
    const char *key, *name;
} method_names[FKD_SIM_METHOD_COUNT] = {
    [FKD_SIM_TEACHER] = {"teacher", "1. teacher"},
    [FKD_SIM_PUBLIC_KD] = {"public-kd", "2. public-only distillation"},
    [FKD_SIM_FEDAVG] = {"fedavg", "3. FedAvg (no distillation)"},
    [FKD_SIM_FEDKD] = {"fedkd", "4. fedkd (federated + KD)"},
    [FKD_SIM_CENTRAL] = {"central", "5. central, all data pooled"},
    [FKD_SIM_FEDKD_DENSE] = {"fedkd-dense", "   fedkd, dense fp32 uplink"},
    [FKD_SIM_PRUNED] = {"pruned", "   student before healing"},
};

int fkd_sim_methods_parse(unsigned *methods, const char *list, fkd_error *err)
{
    *methods = 0;
    if (strcmp(list, "all") == 0) return 0;
    const char *p = list;
    while (*p) {
        size_t len = strcspn(p, ",");
        int found = -1;
        for (int i = 0; i < FKD_SIM_PRUNED && found < 0; i++)
            if (strlen(method_names[i].key) == len && strncmp(method_names[i].key, p, len) == 0)
                found = i;
        if (found < 0)
            return fkd_error_set(err, FKD_E_INVALID_ARG, "--methods: unknown method '%.*s' (the "
                                 "keys are teacher, public-kd, fedavg, fedkd, central, "
                                 "fedkd-dense, or all)", (int)len, p);
        *methods |= 1u << found;
        p += len;
        if (*p == ',' && !*++p)
            return fkd_error_set(err, FKD_E_INVALID_ARG, "--methods ends with a comma");
    }
    return *methods ? 0 : fkd_error_set(err, FKD_E_INVALID_ARG, "--methods names no method");
}

int fkd_sim_runs_method(const fkd_sim_config *cfg, int id)
{
    /* the dense-uplink reference runs when asked for, by flag or by name */
    if (id == FKD_SIM_FEDKD_DENSE)
        return cfg->dense_reference || (cfg->methods >> id & 1u);
    if (id == FKD_SIM_PRUNED) return cfg->teacher[0] != 0;
    return cfg->methods == 0 || (cfg->methods >> id & 1u);
}

/* The student every method starts from, as it is: with a file teacher, the
 * pruned (or given) student before any training. */
static int run_pruned(sim_ctx *x, fkd_error *err)
{
    fkd_sim_method *m = &x->res->m[FKD_SIM_PRUNED];
    sim_progress(x, 0, "evaluating the student before healing");
    double t0 = fkd_time_ms();
    if (sim_params_copy(&m->final, &x->init, err) != 0 ||
        sim_eval_final(m, x, &m->final, err) != 0 || sim_eval_clients(m, x, &m->final, err) != 0)
        return -1;
    m->wall_seconds = (fkd_time_ms() - t0) / 1e3;
    m->ran = 1;
    return 0;
}

/* Per-round perplexities are measured per own token (sim_fed.c,
 * sim_baselines.c); the table's unit is the teacher's token. */
static void rounds_per_teacher_token(sim_ctx *x)
{
    for (int i = 0; i < FKD_SIM_METHOD_COUNT; i++)
        for (int r = 0; i != FKD_SIM_TEACHER && r < x->res->m[i].n_rounds; r++)
            x->res->m[i].rounds[r].ppl = sim_ppl_per_teacher_token(x, x->res->m[i].rounds[r].ppl);
}

/* The one initial student: random student-S for the byte teacher; the
 * student loaded or made with a file teacher (sim_models_load). */
static int init_student(sim_ctx *x, fkd_error *err)
{
    if (!x->res->sum.teacher_from_file) {
        x->student_cfg = fkd_config_student_s();
        x->student_cfg.vocab = x->tok.vocab;
        if (fkd_params_init(&x->init, &x->student_cfg, err) != 0) return -1;
        fkd_params_randomize(&x->init, x->cfg.seed ^ 0x73747564ULL);
    }
    x->res->sum.student_params = x->init.n_params;
    char path[FKD_SIM_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/init.ckpt", x->work_dir);
    return fkd_checkpoint_save(path, &x->init, err);
}

/* One method, with the CPU time it took (wall times are kept by each;
 * on a shared machine CPU time is the figure to scale from). */
static int run_method(sim_ctx *x, int id, fkd_error *err)
{
    double t0 = fkd_cpu_time_ms();
    int rc;
    switch (id) {
    case FKD_SIM_TEACHER: rc = sim_run_teacher(x, err); break;
    case FKD_SIM_PRUNED: rc = run_pruned(x, err); break;
    case FKD_SIM_PUBLIC_KD:
    case FKD_SIM_CENTRAL: rc = sim_run_central(x, id, err); break;
    default: rc = sim_run_federated(x, id, err); break;
    }
    x->res->m[id].cpu_seconds = (fkd_cpu_time_ms() - t0) / 1e3;
    fkd_train_set_threads(x->cfg.threads);
    if (rc == 0) sim_method_release(&x->res->m[id], id == FKD_SIM_FEDKD);
    return rc;
}

static int run_methods(sim_ctx *x, fkd_error *err)
{
    const fkd_sim_config *c = &x->cfg;
    static const int students[] = {FKD_SIM_PUBLIC_KD, FKD_SIM_FEDAVG, FKD_SIM_FEDKD,
                                   FKD_SIM_CENTRAL, FKD_SIM_FEDKD_DENSE};
    int n_students = 0, n_servers = 0;
    for (size_t i = 0; i < sizeof students / sizeof students[0]; i++)
        if (fkd_sim_runs_method(c, students[i])) {
            n_students++;
            /* the server trains every round in all but public-only distillation */
            n_servers += students[i] != FKD_SIM_PUBLIC_KD;
        }
    int server_runs = 1 + fkd_sim_runs_method(c, FKD_SIM_FEDAVG);
    x->units_total = ((int64_t)n_students * c->rounds * sim_matched_steps(c) +
                      (int64_t)n_servers * c->rounds * sim_server_round_steps(c) +
                      server_runs * sim_server_steps(c)) * c->batch * c->seq;
    if (c->progress) fkd_progress_begin(&x->bar, "simulate", x->units_total);
    fkd_train_set_threads(c->threads);
    static const int order[] = {FKD_SIM_TEACHER, FKD_SIM_PRUNED, FKD_SIM_PUBLIC_KD,
                                FKD_SIM_FEDAVG, FKD_SIM_FEDKD, FKD_SIM_FEDKD_DENSE,
                                FKD_SIM_CENTRAL};
    int rc = sim_run_server(x, err);
    for (size_t i = 0; rc == 0 && i < sizeof order / sizeof order[0]; i++)
        if (fkd_sim_runs_method(c, order[i])) rc = run_method(x, order[i], err);
    sim_server_free(x); /* every student has started from it */
    if (c->progress) fkd_progress_end(&x->bar);
    rounds_per_teacher_token(x);
    return rc;
}

int fkd_sim_run(fkd_sim_result *res, const fkd_sim_config *cfg, fkd_error *err)
{
    memset(res, 0, sizeof *res);
    res->cfg = *cfg;
    for (int i = 0; i < FKD_SIM_METHOD_COUNT; i++) {
        res->m[i].id = i;
        res->m[i].key = method_names[i].key;
        res->m[i].name = method_names[i].name;
    }
    if (fkd_sim_config_validate(cfg, err) != 0) return -1;
    double t0 = fkd_time_ms(), cpu0 = fkd_cpu_time_ms();
    sim_ctx *x = calloc(1, sizeof *x);
    if (!x) return fkd_error_set(err, FKD_E_NOMEM, "out of memory");
    x->cfg = *cfg;
    x->res = res;
    snprintf(x->work_dir, sizeof x->work_dir, "%s/work", cfg->out);
    fkd_train_set_threads(cfg->threads);
    int rc = fkd_mkdir_p(x->work_dir, err);
    if (rc == 0 && cfg->teacher[0]) rc = sim_models_load(x, err);
    if (rc == 0) rc = sim_data_load(x, err);
    if (rc == 0) rc = init_student(x, err);
    if (rc == 0) rc = sim_teacher_prepare(x, err);
    if (rc == 0) rc = estimate_work(x, err);
    if (rc == 0) rc = draw_devices(x, err);
    if (rc == 0) {
        res->sum.client_data_bytes = (double)x->pooled.n * sizeof(int32_t) / x->n_clients;
        rc = run_methods(x, err);
    }
    if (rc == 0) rc = sim_measure_aggregation(x, err);
    res->sum.wall_seconds = (fkd_time_ms() - t0) / 1e3;
    res->sum.cpu_seconds = (fkd_cpu_time_ms() - cpu0) / 1e3;
    if (rc == 0) rc = fkd_sim_write_outputs(res, err);
    if (rc == 0) rc = sim_write_student_gguf(x, err);
    if (rc == 0 && !cfg->keep_work) sim_work_prune(x->work_dir);
    sim_server_free(x);
    sim_data_free(x);
    free(x);
    return rc;
}

void fkd_sim_result_free(fkd_sim_result *res)
{
    for (int i = 0; i < FKD_SIM_METHOD_COUNT; i++) {
        free(res->m[i].rounds);
        free(res->m[i].client_acc);
        fkd_params_free(&res->m[i].final);
        fkd_token_stream_free(&res->m[i].calib);
    }
    memset(res, 0, sizeof *res);
}
