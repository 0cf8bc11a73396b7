/* sim_data.c — everything the methods train and are judged on.
 *
 * Private side: the corpus under --data split into clients (its natural
 * partitions, or a Dirichlet split into --clients N), each client's training
 * text, the pooled text (for the central upper bound) and the test text of
 * all clients, which every method is evaluated on.
 *
 * Public side: the teacher, trained on the public corpus only, and its soft
 * labels on the public transfer set. Both are cached under --cache, in files
 * whose names hash every setting they depend on, so a second run with the
 * same settings skips them and a run with other settings never reuses them.
 * The teacher trains with a resumable state, so an interrupted first run
 * continues where it stopped. */
#include "sim_internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TEACHER_LR 1e-3f /* docs/data.md: at 2e-3 the teacher stays behind the student */
#define MIN_CLIENT_DOCS_DIRICHLET 3

int sim_params_copy(fkd_params *dst, const fkd_params *src, fkd_error *err)
{
    if (fkd_params_init(dst, &src->cfg, err) != 0) return -1;
    memcpy(dst->memory, src->memory, src->n_params * sizeof(float));
    return 0;
}

static int same_dir(const char *a, const char *b)
{
    struct stat sa, sb;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0) return strcmp(a, b) == 0;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* ---- the private side ---------------------------------------------------------- */
static fkd_partition_config partition_of(const fkd_sim_config *cfg)
{
    fkd_partition_config pc = fkd_partition_defaults();
    pc.seed = cfg->seed;
    if (cfg->clients > 0) {
        pc.kind = cfg->partition;
        pc.n_clients = cfg->clients;
        pc.alpha = cfg->dirichlet_alpha;
        pc.min_docs = MIN_CLIENT_DOCS_DIRICHLET;
    }
    return pc;
}

/* Caps a stream at max tokens (a view: text bytes scaled alike). */
static void cap_stream(fkd_token_stream *s, int64_t max)
{
    if (max <= 0 || s->n <= max) return;
    s->text_bytes = (int64_t)((double)s->text_bytes * (double)max / (double)s->n);
    s->n = max;
}

static int load_client_streams(sim_ctx *x, fkd_error *err)
{
    const fkd_federation *fed = &x->es.fed;
    x->n_clients = fed->n_clients;
    x->client_train = calloc((size_t)x->n_clients, sizeof *x->client_train);
    int n_test = x->n_clients < x->cfg.client_eval_max ? x->n_clients : x->cfg.client_eval_max;
    x->client_test = calloc((size_t)(n_test > 0 ? n_test : 1), sizeof *x->client_test);
    x->client_test_id = calloc((size_t)(n_test > 0 ? n_test : 1), sizeof *x->client_test_id);
    if (!x->client_train || !x->client_test || !x->client_test_id)
        return fkd_error_set(err, FKD_E_NOMEM, "no memory for %d clients", x->n_clients);
    for (int i = 0; i < x->n_clients; i++)
        if (fkd_token_stream_from_split(&x->client_train[i], &x->es.corpus, fed, i,
                                        FKD_SPLIT_TRAIN, &x->tok, err) != 0)
            return -1;
    /* Evenly spaced clients, so the distribution covers the whole population. */
    for (int j = 0; j < n_test; j++) {
        int i = (int)((int64_t)j * x->n_clients / n_test);
        if (fed->clients[i].n_docs[FKD_SPLIT_TEST] == 0) continue;
        if (fkd_token_stream_from_split(&x->client_test[x->n_client_test], &x->es.corpus, fed, i,
                                        FKD_SPLIT_TEST, &x->tok, err) != 0)
            return -1;
        cap_stream(&x->client_test[x->n_client_test], x->cfg.client_eval_tokens);
        x->client_test_id[x->n_client_test++] = i;
    }
    return 0;
}

int sim_data_load(sim_ctx *x, fkd_error *err)
{
    const fkd_sim_config *cfg = &x->cfg;
    fkd_tokenizer_init_bytes(&x->tok);
    if (!is_dir(cfg->data))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "--data %s is not a folder: give a folder "
                             "with one file or sub-folder per natural client", cfg->data);
    int side = same_dir(cfg->data, cfg->public_dir) ? FKD_SIDE_PRIVATE : FKD_SIDE_ALL;
    fkd_partition_config pc = partition_of(cfg);
    if (fkd_eval_set_load(&x->es, cfg->data, side, FKD_SPLIT_TEST, &pc,
                          cfg->words[0] ? cfg->words : NULL, err) != 0)
        return -1;
    if (x->es.fed.n_clients < 2)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "%s gives %d client(s); a federation needs "
                             "at least 2 (more files, or --clients N)", cfg->data,
                             x->es.fed.n_clients);
    if (load_client_streams(x, err) != 0) return -1;
    if (fkd_token_stream_from_split(&x->pooled, &x->es.corpus, &x->es.fed, -1, FKD_SPLIT_TRAIN,
                                    &x->tok, err) != 0 ||
        fkd_token_stream_from_docs(&x->test, &x->es.corpus, x->es.docs, x->es.n_docs, &x->tok,
                                   err) != 0)
        return -1;
    cap_stream(&x->test, cfg->eval_tokens_final);
    x->res->sum.n_clients = x->n_clients;
    x->res->sum.private_train_tokens = (uint64_t)x->pooled.n;
    x->res->sum.test_tokens = x->test.n;
    return 0;
}

/* ---- the public side ------------------------------------------------------------ */
/* The public corpus as one client with held-out splits: the fortunes
 * default uses the public categories of the shared folder; another folder
 * is public as a whole. */
static int load_public(fkd_corpus *c, fkd_federation *fed, const sim_ctx *x, fkd_error *err)
{
    const fkd_sim_config *cfg = &x->cfg;
    if (same_dir(cfg->data, cfg->public_dir))
        return fkd_data_load_public(c, fed, cfg->public_dir, NULL, cfg->seed, err);
    fkd_corpus_options o = fkd_corpus_defaults(FKD_SIDE_ALL);
    if (fkd_corpus_load(c, cfg->public_dir, &o, err) != 0) return -1;
    fkd_partition_config pc = fkd_partition_defaults();
    pc.kind = FKD_PARTITION_IID;
    pc.n_clients = 1;
    pc.val_share = FKD_DATA_PUBLIC_HELDOUT;
    pc.test_share = FKD_DATA_PUBLIC_HELDOUT;
    pc.min_docs = 1;
    pc.seed = cfg->seed;
    if (fkd_federation_build(fed, c, &pc, err) != 0) {
        fkd_corpus_free(c);
        return -1;
    }
    return 0;
}

static uint32_t hash_str(uint32_t h, const char *s) { return fkd_crc32(h, s, strlen(s)); }

static uint32_t teacher_key(const sim_ctx *x, const fkd_model_config *tc)
{
    char buf[FKD_SIM_PATH_MAX + 256];
    snprintf(buf, sizeof buf, "teacher v1|%s|%s|seed=%llu|steps=%d|batch=%d|lr=%g",
             x->cfg.public_dir, same_dir(x->cfg.data, x->cfg.public_dir) ? "public-split" : "all",
             (unsigned long long)x->cfg.seed, x->cfg.teacher_steps, x->cfg.teacher_batch,
             (double)TEACHER_LR);
    uint32_t h = hash_str(0, buf);
    return fkd_crc32(h, tc, sizeof *tc);
}

static int train_teacher(sim_ctx *x, const char *path, const fkd_token_stream *train,
                         fkd_error *err)
{
    fkd_model_config mc = fkd_config_teacher_default();
    mc.vocab = x->tok.vocab;
    fkd_params p;
    if (fkd_params_init(&p, &mc, err) != 0) return -1;
    fkd_params_randomize(&p, x->cfg.seed ^ 0x7465616368ULL);
    fkd_model m;
    if (fkd_model_init(&m, &p, x->cfg.teacher_batch, mc.max_seq, 0, err) != 0) {
        fkd_params_free(&p);
        return -1;
    }
    char state[FKD_SIM_PATH_MAX + 64];
    snprintf(state, sizeof state, "%s.state", path);
    fkd_trainer_config tc = fkd_trainer_defaults();
    tc.steps = x->cfg.teacher_steps;
    tc.opt.lr = TEACHER_LR;
    tc.opt.schedule = FKD_LR_COSINE;
    tc.opt.warmup_steps = x->cfg.teacher_steps / 16;
    tc.eval_every = 0;
    tc.ckpt_every = 8;
    tc.state_path = state;
    tc.seed = x->cfg.seed;
    tc.progress = x->cfg.progress;
    tc.label = "teacher (once; cached)";
    fkd_trainer_result r;
    /* No validation pass: the teacher is judged on the private test text
     * with every other method. */
    int rc = fkd_trainer_run(&r, &m, train, NULL, NULL, &tc, err);
    if (rc == 0) rc = fkd_checkpoint_save(path, &m.params, err);
    if (rc == 0) {
        remove(state);
        x->res->sum.teacher_seconds = r.seconds;
    }
    fkd_model_free(&m);
    return rc;
}

static int shards_load(sim_ctx *x, const char *dir, fkd_error *err)
{
    x->shards = calloc((size_t)x->cfg.soft_shards, sizeof *x->shards);
    if (!x->shards) return fkd_error_set(err, FKD_E_NOMEM, "no memory for soft labels");
    for (int i = 0; i < x->cfg.soft_shards; i++) {
        char path[FKD_SIM_PATH_MAX + 128];
        snprintf(path, sizeof path, "%s/shard-%03d.soft", dir, i);
        if (fkd_softlabels_load(&x->shards[i], path, err) != 0) return -1;
        x->n_shards = i + 1;
    }
    return 0;
}

static int shards_make(sim_ctx *x, const char *dir, const fkd_token_stream *transfer,
                       fkd_error *err)
{
    fkd_teacher_config tc = fkd_teacher_defaults();
    tc.k = x->cfg.soft_k;
    tc.temperature = x->cfg.soft_temperature;
    tc.n_shards = x->cfg.soft_shards;
    fkd_token_stream t = *transfer;
    cap_stream(&t, x->cfg.transfer_tokens);
    x->shards = calloc((size_t)tc.n_shards, sizeof *x->shards);
    if (!x->shards) return fkd_error_set(err, FKD_E_NOMEM, "no memory for soft labels");
    fkd_softlabel_stats st;
    if (fkd_teacher_softlabels(x->shards, &st, &x->teacher, &t, &tc, err) != 0) return -1;
    x->n_shards = tc.n_shards;
    char tmp[FKD_SIM_PATH_MAX + 80];
    snprintf(tmp, sizeof tmp, "%s.tmp", dir);
    if (fkd_mkdir_p(tmp, err) != 0) return -1;
    for (int i = 0; i < x->n_shards; i++) {
        char path[FKD_SIM_PATH_MAX + 128];
        snprintf(path, sizeof path, "%s/shard-%03d.soft", tmp, i);
        if (fkd_softlabels_save(path, &x->shards[i], err) != 0) return -1;
    }
    /* The folder appears whole or not at all. */
    if (rename(tmp, dir) != 0)
        return fkd_error_set(err, FKD_E_IO, "cannot rename %s to %s", tmp, dir);
    return 0;
}

/* The shards back to back: the same transfer set the federation sees over
 * its rounds, for the methods that train in one place. */
static int shards_concat(sim_ctx *x, fkd_error *err)
{
    int64_t n = 0;
    for (int i = 0; i < x->n_shards; i++) n += x->shards[i].n;
    const fkd_softlabel_shard *s0 = &x->shards[0];
    if (fkd_softlabels_alloc(&x->all_soft, n, s0->k, s0->vocab, err) != 0) return -1;
    x->all_soft.temperature = s0->temperature;
    x->all_soft.quant = s0->quant;
    x->all_soft.shard_count = 1;
    int64_t at = 0;
    for (int i = 0; i < x->n_shards; i++) {
        const fkd_softlabel_shard *s = &x->shards[i];
        memcpy(x->all_soft.tokens + at, s->tokens, (size_t)s->n * sizeof(int32_t));
        memcpy(x->all_soft.ids + at * s->k, s->ids, (size_t)(s->n * s->k) * sizeof(int32_t));
        memcpy(x->all_soft.probs + at * s->k, s->probs, (size_t)(s->n * s->k) * sizeof(float));
        at += s->n;
    }
    fkd_token_stream_from_shard(&x->transfer, &x->all_soft);
    x->res->sum.public_transfer_tokens = (uint64_t)n;
    return 0;
}

int sim_teacher_prepare(sim_ctx *x, fkd_error *err)
{
    const fkd_sim_config *cfg = &x->cfg;
    fkd_model_config tcfg = fkd_config_teacher_default();
    tcfg.vocab = x->tok.vocab;
    uint32_t tkey = teacher_key(x, &tcfg);
    char tpath[FKD_SIM_PATH_MAX + 32], sdir[FKD_SIM_PATH_MAX + 32];
    snprintf(tpath, sizeof tpath, "%s/teacher-%08x.ckpt", cfg->cache, tkey);
    char sk[128];
    snprintf(sk, sizeof sk, "soft v1|%08x|k=%d|T=%g|shards=%d|tokens=%lld", tkey, cfg->soft_k,
             (double)cfg->soft_temperature, cfg->soft_shards, (long long)cfg->transfer_tokens);
    snprintf(sdir, sizeof sdir, "%s/soft-%08x", cfg->cache, hash_str(0, sk));
    snprintf(x->soft_dir, sizeof x->soft_dir, "%s", sdir);
    if (fkd_mkdir_p(cfg->cache, err) != 0) return -1;

    fkd_corpus c = {0};
    fkd_federation fed = {0};
    fkd_token_stream train = {0};
    int have_teacher = fkd_checkpoint_load(&x->teacher, tpath, NULL) == 0;
    int have_soft = is_dir(sdir);
    x->res->sum.teacher_cached = have_teacher;
    int rc = 0;
    if (!have_teacher || !have_soft) {
        rc = load_public(&c, &fed, x, err);
        if (rc == 0) rc = fkd_token_stream_from_split(&train, &c, &fed, 0, FKD_SPLIT_TRAIN,
                                                      &x->tok, err);
    }
    if (rc == 0 && !have_teacher) {
        rc = train_teacher(x, tpath, &train, err);
        if (rc == 0) rc = fkd_checkpoint_load(&x->teacher, tpath, err);
    }
    if (rc == 0) rc = have_soft ? shards_load(x, sdir, err) : shards_make(x, sdir, &train, err);
    if (rc == 0) rc = shards_concat(x, err);
    x->res->sum.teacher_params = x->teacher.n_params;
    fkd_token_stream_free(&train);
    if (c.docs) fkd_federation_free(&fed);
    if (c.docs) fkd_corpus_free(&c);
    return rc;
}

void sim_data_free(sim_ctx *x)
{
    for (int i = 0; x->client_train && i < x->n_clients; i++)
        fkd_token_stream_free(&x->client_train[i]);
    for (int i = 0; x->client_test && i < x->n_client_test; i++)
        fkd_token_stream_free(&x->client_test[i]);
    free(x->client_train);
    free(x->client_test);
    free(x->client_test_id);
    fkd_token_stream_free(&x->pooled);
    fkd_token_stream_free(&x->test);
    for (int i = 0; x->shards && i < x->n_shards; i++) fkd_softlabels_free(&x->shards[i]);
    free(x->shards);
    fkd_softlabels_free(&x->all_soft);
    fkd_params_free(&x->teacher);
    fkd_params_free(&x->init);
    fkd_eval_set_free(&x->es);
    free(x->devs);
    free(x->access);
    free(x->recompute);
    fkd_tokenizer_free(&x->tok);
}
