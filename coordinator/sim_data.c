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
 * continues where it stopped.
 *
 * With --teacher FILE the teacher is pretrained (a GGUF file such as
 * SmolLM2, or a fedkd checkpoint) and its tokenizer encodes the transfer set
 * and a copy of the test text; the student (--student FILE, or made from the
 * teacher) brings its own tokenizer, which encodes every private stream. A
 * student with a trimmed vocabulary gets the teacher's soft labels through
 * the id map of both files' tokenizer tables. Without --student, the
 * student is cut out of the teacher by `fedkd prune`'s recipe
 * (fkd_prune_teacher, compress/prune_teacher.c) and kept in the cache as a
 * GGUF file. The pruned student and
 * the soft labels are cached under keys of the teacher file's CRC-32 and
 * every setting they depend on. */
#include "sim_internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TEACHER_LR 1e-3f /* docs/data.md: at 2e-3 the teacher stays behind the student */
#define MIN_CLIENT_DOCS_DIRICHLET 3
#define CRC_CHUNK_BYTES ((size_t)1 << 20)
/* Calibration of the pruning: windows of the public text the teacher reads. */
#define PRUNE_CALIB_TOKENS 512
#define PRUNE_CALIB_SEQ 128
/* Block score: KL (L/2 passes more than cosine, but it keeps the blocks
 * that matter to the output: docs/pruning.md). */
#define PRUNE_DEPTH_KL 1
/* --student-params -1: a third of the teacher's parameters (issue 11). */
#define STUDENT_SHARE_DEN 3

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

/* How many whole documents of a stream (SEP d0 SEP d1 ... SEP) end within
 * its first max tokens; at least one. */
static uint32_t docs_within(const fkd_token_stream *s, int32_t sep, int64_t max)
{
    if (max <= 0 || max >= s->n) return (uint32_t)s->n_docs;
    uint32_t seps = 0;
    for (int64_t i = 0; i < max; i++) seps += s->tokens[i] == sep;
    return seps > 1 ? seps - 1 : 1;
}

/* A file teacher: the test text is the same whole documents in both
 * tokenizations, as many as fit eval_tokens_final teacher tokens, so the
 * student's nats and the teacher's token count are over one text. */
static int load_test_by_documents(sim_ctx *x, fkd_error *err)
{
    fkd_token_stream all;
    if (fkd_token_stream_from_docs(&all, &x->es.corpus, x->es.docs, x->es.n_docs, &x->ttok,
                                   err) != 0)
        return -1;
    uint32_t n = docs_within(&all, fkd_data_separator(&x->ttok), x->cfg.eval_tokens_final);
    fkd_token_stream_free(&all);
    if (fkd_token_stream_from_docs(&x->test_t, &x->es.corpus, x->es.docs, n, &x->ttok, err) != 0)
        return -1;
    if (fkd_token_stream_from_docs(&x->test, &x->es.corpus, x->es.docs, n, &x->tok, err) != 0)
        return -1;
    if (x->test.n < 2 || x->test_t.n < 2)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "the private test text is empty");
    fkd_sim_summary *s = &x->res->sum;
    s->test_teacher_tokens = x->test_t.n;
    s->own_per_teacher_token = (double)(x->test.n - 1) / (double)(x->test_t.n - 1);
    return 0;
}

int sim_data_load(sim_ctx *x, fkd_error *err)
{
    const fkd_sim_config *cfg = &x->cfg;
    int from_file = x->res->sum.teacher_from_file;
    if (!from_file) fkd_tokenizer_init_bytes(&x->tok);
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
                                    &x->tok, err) != 0)
        return -1;
    if (from_file) {
        if (load_test_by_documents(x, err) != 0) return -1;
    } else {
        if (fkd_token_stream_from_docs(&x->test, &x->es.corpus, x->es.docs, x->es.n_docs,
                                       &x->tok, err) != 0)
            return -1;
        cap_stream(&x->test, cfg->eval_tokens_final);
    }
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
    tc.ckpt_every = 64; /* a quarter of the default run: minutes of work, 130 MB each */
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

/* ---- a teacher from a file, and the student healed from it ------------------------------ */
static int file_crc(uint32_t *crc, const char *path, fkd_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return fkd_error_set(err, FKD_E_IO, "cannot open %s", path);
    uint8_t *buf = malloc(CRC_CHUNK_BYTES);
    if (!buf) {
        fclose(f);
        return fkd_error_set(err, FKD_E_NOMEM, "no memory to hash %s", path);
    }
    uint32_t h = 0;
    size_t n;
    while ((n = fread(buf, 1, CRC_CHUNK_BYTES, f)) > 0) h = fkd_crc32(h, buf, n);
    int bad = ferror(f);
    free(buf);
    fclose(f);
    if (bad) return fkd_error_set(err, FKD_E_IO, "cannot read %s", path);
    *crc = h;
    return 0;
}

/* The tokenizer a model file brings: a GGUF file's BPE, bytes for a checkpoint. */
static int file_tokenizer(fkd_tokenizer *tok, const char *path, fkd_error *err)
{
    if (!fkd_gguf_is_gguf(path)) {
        fkd_tokenizer_init_bytes(tok);
        return 0;
    }
    fkd_gguf g;
    if (fkd_gguf_open(&g, path, err) != 0) return -1;
    int rc = fkd_gguf_tokenizer(tok, &g, err);
    fkd_gguf_close(&g);
    return rc;
}

static int vocab_map(sim_ctx *x, const char *student_path, fkd_error *err);

/* A model file at the run's context (RoPE has no learned positions, so a
 * checkpoint's context can be cut like a GGUF file's). */
static int load_model_file(fkd_params *p, const char *path, int context, fkd_error *err)
{
    if (fkd_gguf_is_gguf(path)) {
        fkd_gguf g;
        if (fkd_gguf_open(&g, path, err) != 0) return -1;
        int rc = fkd_gguf_llama_load(p, &g, context, err);
        fkd_gguf_close(&g);
        return rc;
    }
    if (fkd_checkpoint_load(p, path, err) != 0) return -1;
    if (p->cfg.max_seq > context) p->cfg.max_seq = context;
    return 0;
}

static int student_from_file(sim_ctx *x, const char *path, fkd_error *err)
{
    if (load_model_file(&x->init, path, x->cfg.context, err) != 0) return -1;
    if (fkd_gguf_is_gguf(path))
        return file_tokenizer(&x->tok, path, err) == 0 ? vocab_map(x, path, err) : -1;
    /* A checkpoint has no tokenizer: it must share the teacher's vocabulary. */
    if (x->init.cfg.vocab != x->teacher.cfg.vocab)
        return fkd_error_set(err, FKD_E_MISMATCH, "%s has a vocabulary of %d, the teacher %d: "
                             "a student with its own vocabulary comes as a GGUF file with its "
                             "tokenizer", path, x->init.cfg.vocab, x->teacher.cfg.vocab);
    return file_tokenizer(&x->tok, x->cfg.teacher, err);
}

/* x->vmap when the student's GGUF vocabulary was trimmed from the
 * teacher's (compress/prune_vocab.c): teacher ids to student ids, found by
 * the tokens' spellings. None when both vocabularies are one. */
static int vocab_map(sim_ctx *x, const char *student_path, fkd_error *err)
{
    if (!fkd_gguf_is_gguf(student_path) || !fkd_gguf_is_gguf(x->cfg.teacher)) return 0;
    fkd_gguf gt, gs;
    if (fkd_gguf_open(&gt, x->cfg.teacher, err) != 0) return -1;
    if (fkd_gguf_open(&gs, student_path, err) != 0) {
        fkd_gguf_close(&gt);
        return -1;
    }
    fkd_bpe_tables full = {0}, trimmed = {0};
    int rc = fkd_bpe_tables_from_gguf(&full, &gt, err);
    if (rc == 0) rc = fkd_bpe_tables_from_gguf(&trimmed, &gs, err);
    if (rc == 0) rc = fkd_vocab_map_from_tables(&x->vmap, &full, &trimmed, err);
    int identity = rc == 0 && x->vmap.new_vocab == x->vmap.old_vocab;
    for (int i = 0; identity && i < x->vmap.old_vocab; i++) identity = x->vmap.old_to_new[i] == i;
    if (rc == 0 && identity) fkd_vocab_map_free(&x->vmap);
    x->have_vmap = rc == 0 && !identity;
    fkd_bpe_tables_free(&trimmed);
    fkd_bpe_tables_free(&full);
    fkd_gguf_close(&gs);
    fkd_gguf_close(&gt);
    return rc;
}

/* The recipe of compress/prune_teacher.c with the run's settings: the
 * vocabulary trimmed to the public text the teacher will label (so every
 * transfer token keeps an id) and calibration windows of it; the shape from
 * the budget (--student-params, -1: a third of the teacher's) with at least
 * --student-layers blocks (0: the pruning's default share), or, without a
 * budget, --student-layers blocks at the teacher's width. */
static int prune_config(fkd_prune_config *pc, const sim_ctx *x, fkd_error *err)
{
    const fkd_model_config *t = &x->teacher.cfg;
    int64_t budget = x->cfg.student_params < 0 ? (int64_t)x->teacher.n_params / STUDENT_SHARE_DEN
                                               : x->cfg.student_params;
    if (x->cfg.student_layers > t->n_layers || (budget == 0 && x->cfg.student_layers < 1))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "--student-layers %d: the teacher has %d "
                             "blocks (and without --student-params give at least 1)",
                             x->cfg.student_layers, t->n_layers);
    *pc = fkd_prune_defaults();
    pc->calib_tokens = PRUNE_CALIB_TOKENS;
    pc->calib_seq = t->max_seq < PRUNE_CALIB_SEQ ? t->max_seq : PRUNE_CALIB_SEQ;
    pc->depth_kl = PRUNE_DEPTH_KL;
    pc->progress = x->cfg.progress;
    pc->target_params = (size_t)budget;
    if (budget > 0) pc->min_layers = x->cfg.student_layers;
    else pc->layers = x->cfg.student_layers;
    return 0;
}

static int prune_into(const char *path, sim_ctx *x, const fkd_token_stream *pub, fkd_error *err)
{
    fkd_prune_config pc;
    if (prune_config(&pc, x, err) != 0) return -1;
    fkd_gguf g;
    if (fkd_gguf_open(&g, x->cfg.teacher, err) != 0) return -1;
    fkd_bpe_tables full = {0};
    fkd_prune_result r = {0};
    int rc = fkd_bpe_tables_from_gguf(&full, &g, err);
    if (rc == 0) rc = fkd_prune_teacher(&r, &x->teacher, &full, pub, pub, &pc, err);
    if (rc == 0)
        rc = fkd_gguf_llama_save_bpe(path, &r.student, FKD_QTYPE_F32, &r.vocab, &g,
                                     "fedkd pruned student", err);
    fkd_prune_result_free(&r);
    fkd_bpe_tables_free(&full);
    fkd_gguf_close(&g);
    return rc;
}

/* The pruned student's GGUF file under the cache, made once per teacher
 * file and settings. */
static int pruned_student_path(char *path, size_t cap, sim_ctx *x, fkd_error *err)
{
    const fkd_sim_config *cfg = &x->cfg;
    char key[FKD_SIM_PATH_MAX + 256];
    snprintf(key, sizeof key, "student v4 %s|crc=%08x|%s|%s|seed=%llu|layers=%d|params=%lld|"
             "calib=%dx%d", PRUNE_DEPTH_KL ? "kl" : "cosine", x->res->sum.teacher_crc,
             cfg->public_dir,
             same_dir(cfg->data, cfg->public_dir) ? "public-split" : "all",
             (unsigned long long)cfg->seed, cfg->student_layers, (long long)cfg->student_params,
             PRUNE_CALIB_TOKENS, PRUNE_CALIB_SEQ);
    snprintf(path, cap, "%s/student-%08x.gguf", cfg->cache, hash_str(0, key));
    if (access(path, R_OK) == 0) {
        x->res->sum.student_cached = 1;
        return 0;
    }
    if (fkd_mkdir_p(cfg->cache, err) != 0) return -1;
    double t0 = fkd_time_ms(), cpu0 = fkd_cpu_time_ms();
    fkd_corpus c = {0};
    fkd_federation fed = {0};
    fkd_token_stream pub = {0};
    int rc = load_public(&c, &fed, x, err);
    if (rc == 0)
        rc = fkd_token_stream_from_split(&pub, &c, &fed, 0, FKD_SPLIT_TRAIN, &x->ttok, err);
    if (rc == 0) rc = prune_into(path, x, &pub, err);
    fkd_token_stream_free(&pub);
    if (c.docs) fkd_federation_free(&fed);
    if (c.docs) fkd_corpus_free(&c);
    x->res->sum.prune_seconds = (fkd_time_ms() - t0) / 1e3;
    x->res->sum.prune_cpu_seconds = (fkd_cpu_time_ms() - cpu0) / 1e3;
    return rc;
}

int sim_models_load(sim_ctx *x, fkd_error *err)
{
    const fkd_sim_config *cfg = &x->cfg;
    fkd_sim_summary *s = &x->res->sum;
    double t0 = fkd_time_ms();
    s->teacher_from_file = 1;
    if (file_crc(&s->teacher_crc, cfg->teacher, err) != 0 ||
        load_model_file(&x->teacher, cfg->teacher, cfg->context, err) != 0 ||
        file_tokenizer(&x->ttok, cfg->teacher, err) != 0)
        return -1;
    if (x->ttok.vocab != x->teacher.cfg.vocab)
        return fkd_error_set(err, FKD_E_MISMATCH, "%s: the tokenizer has %d tokens, the model %d",
                             cfg->teacher, x->ttok.vocab, x->teacher.cfg.vocab);
    s->load_seconds = (fkd_time_ms() - t0) / 1e3;
    /* Without --student, the pruned student's file in the cache. */
    char pruned[FKD_SIM_PATH_MAX + 32];
    const char *path = cfg->student;
    if (!path[0]) {
        if (!fkd_gguf_is_gguf(cfg->teacher))
            return fkd_error_set(err, FKD_E_INVALID_ARG, "a checkpoint teacher has no tokenizer "
                                 "tables to prune: give --student");
        if (pruned_student_path(pruned, sizeof pruned, x, err) != 0) return -1;
        path = pruned;
    }
    if (student_from_file(x, path, err) != 0) return -1;
    if (cfg->student[0]) snprintf(s->student_source, sizeof s->student_source, "%s", path);
    else
        snprintf(s->student_source, sizeof s->student_source, "pruned from the teacher: %d of %d "
                 "blocks (%s)", x->init.cfg.n_layers, x->teacher.cfg.n_layers, path);
    if (x->tok.vocab != x->init.cfg.vocab)
        return fkd_error_set(err, FKD_E_MISMATCH, "the student's tokenizer has %d tokens, the "
                             "model %d", x->tok.vocab, x->init.cfg.vocab);
    if (cfg->seq > x->init.cfg.max_seq)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "--seq %d is longer than the student's "
                             "context %d", cfg->seq, x->init.cfg.max_seq);
    if (!x->have_vmap && x->init.cfg.vocab != x->teacher.cfg.vocab)
        return fkd_error_set(err, FKD_E_MISMATCH, "the student's vocabulary (%d) differs from the "
                             "teacher's (%d) and is not trimmed from it", x->init.cfg.vocab,
                             x->teacher.cfg.vocab);
    x->student_cfg = x->init.cfg;
    s->teacher_vocab = x->teacher.cfg.vocab;
    s->student_vocab = x->init.cfg.vocab;
    s->teacher_params = x->teacher.n_params;
    return 0;
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

static int shards_save(const fkd_softlabel_shard *shards, int n, const char *dir,
                       fkd_error *err)
{
    char tmp[FKD_SIM_PATH_MAX + 80];
    snprintf(tmp, sizeof tmp, "%s.tmp", dir);
    if (fkd_mkdir_p(tmp, err) != 0) return -1;
    for (int i = 0; i < n; i++) {
        char path[FKD_SIM_PATH_MAX + 128];
        snprintf(path, sizeof path, "%s/shard-%03d.soft", tmp, i);
        if (fkd_softlabels_save(path, &shards[i], err) != 0) return -1;
    }
    /* The folder appears whole or not at all. */
    if (rename(tmp, dir) != 0)
        return fkd_error_set(err, FKD_E_IO, "cannot rename %s to %s", tmp, dir);
    return 0;
}

/* A GGUF teacher labels on its own blocks (compress/qsoftlabels.c): faster
 * than the fp32 forward, within 8-bit activation rounding of it
 * (docs/benchmarks.md, "Teacher"). */
static int file_teacher_labels(fkd_softlabel_stats *st, sim_ctx *x, const fkd_token_stream *t,
                               const fkd_teacher_config *tc, fkd_error *err)
{
    fkd_gguf g;
    fkd_qmodel qm;
    if (fkd_gguf_open(&g, x->cfg.teacher, err) != 0) return -1;
    int rc = fkd_gguf_llama_load_qmodel(&qm, &g, x->teacher.cfg.max_seq, err);
    fkd_gguf_close(&g);
    if (rc == 0) rc = fkd_qsoftlabels_make(x->shards, st, &qm, t, tc, err);
    fkd_qmodel_free(&qm);
    return rc;
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
    double cpu0 = fkd_cpu_time_ms();
    int blocks = x->res->sum.teacher_from_file && fkd_gguf_is_gguf(x->cfg.teacher);
    if ((blocks ? file_teacher_labels(&st, x, &t, &tc, err)
                : fkd_teacher_softlabels(x->shards, &st, &x->teacher, &t, &tc, err)) != 0)
        return -1;
    x->res->sum.soft_cpu_seconds = (fkd_cpu_time_ms() - cpu0) / 1e3;
    x->n_shards = tc.n_shards;
    x->res->sum.soft_seconds = st.seconds;
    x->res->sum.soft_tokens_per_s = st.seconds > 0 ? (double)st.positions / st.seconds : 0;
    return shards_save(x->shards, x->n_shards, dir, err);
}

/* A file teacher: soft labels over the public transfer set encoded with its
 * tokenizer, cached by the file's CRC-32 and the settings; remapped (and
 * written for the coordinator under the run's work folder) for a student
 * with another vocabulary. */
static int file_teacher_soft(sim_ctx *x, fkd_error *err)
{
    const fkd_sim_config *cfg = &x->cfg;
    char sk[FKD_SIM_PATH_MAX + 256], sdir[FKD_SIM_PATH_MAX + 32];
    /* v2: made on the file's blocks (v1 on fp32 weights) */
    snprintf(sk, sizeof sk, "soft-file v2|crc=%08x|%s|%s|seed=%llu|ctx=%d|k=%d|T=%g|shards=%d|"
             "tokens=%lld", x->res->sum.teacher_crc, cfg->public_dir,
             same_dir(cfg->data, cfg->public_dir) ? "public-split" : "all",
             (unsigned long long)cfg->seed, x->teacher.cfg.max_seq, cfg->soft_k,
             (double)cfg->soft_temperature, cfg->soft_shards, (long long)cfg->transfer_tokens);
    snprintf(sdir, sizeof sdir, "%s/soft-%08x", cfg->cache, hash_str(0, sk));
    snprintf(x->soft_dir, sizeof x->soft_dir, "%s", sdir);
    if (fkd_mkdir_p(cfg->cache, err) != 0) return -1;
    int rc = 0;
    x->res->sum.soft_cached = is_dir(sdir);
    if (x->res->sum.soft_cached) {
        rc = shards_load(x, sdir, err);
    } else {
        fkd_corpus c = {0};
        fkd_federation fed = {0};
        fkd_token_stream train = {0};
        rc = load_public(&c, &fed, x, err);
        if (rc == 0) rc = fkd_token_stream_from_split(&train, &c, &fed, 0, FKD_SPLIT_TRAIN,
                                                      &x->ttok, err);
        if (rc == 0) rc = shards_make(x, sdir, &train, err);
        fkd_token_stream_free(&train);
        if (c.docs) fkd_federation_free(&fed);
        if (c.docs) fkd_corpus_free(&c);
    }
    if (rc != 0 || !x->have_vmap) return rc;
    /* Dropped ids leave their mass to the rest (compress/prune_vocab.c). */
    for (int i = 0; i < x->n_shards; i++)
        if (fkd_vocab_remap_softlabels(&x->shards[i], &x->vmap, err) != 0) return -1;
    snprintf(x->soft_dir, sizeof x->soft_dir, "%s/soft-student", x->work_dir);
    char tmp[sizeof x->soft_dir + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", x->soft_dir);
    /* Left over by an interrupted run: the folder is rewritten whole. */
    for (int i = 0; i < x->n_shards; i++) {
        char path[sizeof x->soft_dir + 32];
        snprintf(path, sizeof path, "%s/shard-%03d.soft", x->soft_dir, i);
        remove(path);
        snprintf(path, sizeof path, "%s/shard-%03d.soft", tmp, i);
        remove(path);
    }
    remove(x->soft_dir);
    remove(tmp);
    return shards_save(x->shards, x->n_shards, x->soft_dir, err);
}

/* The shards back to back: the same transfer set the federation sees over
 * its rounds, for the methods that train in one place; the shards go. */
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
    /* The coordinators read the shards' files: the set is the one copy kept. */
    for (int i = 0; i < x->n_shards; i++) fkd_softlabels_free(&x->shards[i]);
    free(x->shards);
    x->shards = NULL;
    x->n_shards = 0;
    return 0;
}

int sim_teacher_prepare(sim_ctx *x, fkd_error *err)
{
    const fkd_sim_config *cfg = &x->cfg;
    if (x->res->sum.teacher_from_file) {
        x->res->sum.teacher_cached = 1;  /* pretrained: nothing to train */
        return file_teacher_soft(x, err) == 0 ? shards_concat(x, err) : -1;
    }
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
    fkd_token_stream_free(&x->test_t);
    fkd_tokenizer_free(&x->ttok);
    fkd_vocab_map_free(&x->vmap);
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
