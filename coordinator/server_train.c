/* server_train.c — the server keeps training between rounds.
 *
 * A coordinator that distributes the teacher's soft labels holds them
 * itself: between two rounds it can distil into the master on the public
 * transfer set, as server-side distillation systems (FedDF and its kin) do,
 * instead of sitting idle while the clients train. After each round's
 * aggregation, and before the master is re-quantized for the next TASK,
 * the master takes server_steps AdamW steps on the shards back to back:
 * distillation on the soft labels weighted by server_alpha, cross-entropy
 * on the same text for the rest (server_alpha = 0 is plain cross-entropy,
 * a server without a teacher).
 *
 * The optimizer's moments and step stay in memory from round to round
 * (train/'s fkd_trainer_carry): the trainer goes on with them, keeping the
 * master's weights, which the aggregation moved in between. What a restart
 * needs, the moments and steps without the weights (the checkpoint holds
 * those), is written once per round, atomically, to the state directory:
 * to a .next file ahead of the round's checkpoint, renamed over the
 * committed one after it. Only a coordinator restarted reads it back. The
 * batches are a pure function of (seed, step), so a coordinator restarted
 * between rounds trains exactly as one never interrupted. The model
 * borrows the master: it trains it in place. */
#include "server_train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SERVER_SEED_TAG 0x7365727665724b44ULL /* "serverKD" */

/* The shards back to back, as one transfer set (the first shard's k,
 * vocabulary and temperature; the others must agree). */
static int concat_shards(fkd_softlabel_shard *out, uint8_t *const *encoded, const size_t *len,
                         int n, fkd_error *err)
{
    fkd_softlabel_shard *sh = calloc((size_t)(n > 0 ? n : 1), sizeof *sh);
    if (!sh) return fkd_error_set(err, FKD_E_NOMEM, "no memory for the server's transfer set");
    int rc = 0, decoded = 0;
    int64_t total = 0;
    for (; decoded < n && rc == 0; decoded++) {
        rc = fkd_softlabels_decode(&sh[decoded], encoded[decoded], len[decoded], err);
        if (rc != 0) break;
        total += sh[decoded].n;
        if (sh[decoded].k != sh[0].k || sh[decoded].vocab != sh[0].vocab)
            rc = fkd_error_set(err, FKD_E_MISMATCH, "soft-label shard %d has k %d and vocabulary "
                               "%d, shard 0 k %d and %d: the server trains on all of them as "
                               "one set (make them in one teacher pass)", decoded, sh[decoded].k,
                               sh[decoded].vocab, sh[0].k, sh[0].vocab);
    }
    if (rc == 0 && n > 0) rc = fkd_softlabels_alloc(out, total, sh[0].k, sh[0].vocab, err);
    if (rc == 0 && n > 0) {
        out->temperature = sh[0].temperature;
        out->quant = sh[0].quant;
        out->shard_count = 1;
        int64_t at = 0;
        for (int i = 0; i < n; i++) {
            size_t k = (size_t)sh[i].k;
            memcpy(out->tokens + at, sh[i].tokens, (size_t)sh[i].n * sizeof *out->tokens);
            memcpy(out->ids + at * (int64_t)k, sh[i].ids, (size_t)sh[i].n * k * sizeof *out->ids);
            memcpy(out->probs + at * (int64_t)k, sh[i].probs,
                   (size_t)sh[i].n * k * sizeof *out->probs);
            at += sh[i].n;
        }
    }
    for (int i = 0; i < decoded && i < n; i++) fkd_softlabels_free(&sh[i]);
    free(sh);
    return rc;
}

int fkd_coord_server_init(fkd_coord_server *s, const fkd_coord_config *cfg,
                          const fkd_params *master, uint8_t *const *encoded, const size_t *len,
                          int n, fkd_error *err)
{
    memset(s, 0, sizeof *s);
    if (cfg->server_steps <= 0) return 0;
    snprintf(s->path, sizeof s->path, "%s/%s", cfg->state_dir, FKD_COORD_SERVER_TRAIN_FILE);
    snprintf(s->next, sizeof s->next, "%s.next", s->path);
    remove(s->next); /* a round that never reached its checkpoint: it will run again */
    if (n <= 0)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "server_steps needs soft-label shards "
                             "(softlabels) to train on");
    if (concat_shards(&s->text, encoded, len, n, err) != 0) return -1;
    fkd_token_stream_from_shard(&s->stream, &s->text);
    if (s->stream.n < (int64_t)cfg->seq + 1) {
        fkd_softlabels_free(&s->text);
        return fkd_error_set(err, FKD_E_INVALID_ARG, "the soft-label shards hold %lld tokens, "
                             "fewer than one sequence of %d: the server cannot train on them",
                             (long long)s->stream.n, cfg->seq + 1);
    }
    if (fkd_model_init_borrowed(&s->model, master, cfg->batch, cfg->seq, 0, err) != 0) {
        fkd_softlabels_free(&s->text);
        return -1;
    }
    s->ready = 1;
    return 0;
}

static fkd_trainer_config trainer_config(const fkd_coord_config *cfg, fkd_trainer_carry *carry,
                                         const char *start_from)
{
    fkd_trainer_config tc = fkd_trainer_defaults();
    tc.steps = cfg->server_steps;
    tc.accum = 1;
    tc.opt.lr = cfg->server_train_lr > 0 ? cfg->server_train_lr : cfg->lr;
    tc.opt.schedule = FKD_LR_CONSTANT; /* rounds go on as long as the deployment runs */
    tc.opt.warmup_steps = 0;
    tc.opt.grad_clip = cfg->grad_clip;
    tc.opt.weight_decay = cfg->weight_decay;
    tc.loss.alpha = cfg->server_alpha;
    tc.loss.temperature = cfg->temperature;
    tc.transfer_share = 1.0f;
    tc.eval_every = 0;
    tc.ckpt_every = 0;
    tc.state_path = start_from;
    tc.carry_optimizer = 1;
    tc.carry = carry;
    tc.seed = cfg->server_seed ? cfg->server_seed : cfg->seed ^ SERVER_SEED_TAG;
    tc.label = "server";
    return tc;
}

static int exists(const char *path)
{
    struct stat st;
    return path[0] && stat(path, &st) == 0;
}

/* Where the optimizer starts when it is not going yet: the committed state
 * (a restart), else the configured one (read, never written), else none. */
static const char *start_from(const fkd_coord_server *s, const fkd_coord_config *cfg)
{
    if (s->opt.ready) return NULL;
    if (exists(s->path)) return s->path;
    return exists(cfg->server_init) ? cfg->server_init : NULL;
}

int fkd_coord_server_train(double *loss, fkd_coord_server *s, const fkd_coord_config *cfg,
                           fkd_error *err)
{
    *loss = 0;
    if (!s->ready || cfg->server_steps <= 0) return 0;
    fkd_trainer_config tc = trainer_config(cfg, &s->opt, start_from(s, cfg));
    fkd_trainer_result res;
    if (fkd_trainer_run(&res, &s->model, NULL, &s->stream, NULL, &tc, err) != 0) return -1;
    *loss = res.train_loss;
    return fkd_trainer_carry_save(s->next, &s->opt, err);
}

int fkd_coord_server_commit(fkd_coord_server *s, fkd_error *err)
{
    if (!s->ready) return 0;
    if (rename(s->next, s->path) != 0)
        return fkd_error_set(err, FKD_E_IO, "cannot rename %s to %s: the server's optimizer "
                             "state is lost (check the state directory)", s->next, s->path);
    return 0;
}

void fkd_coord_server_free(fkd_coord_server *s)
{
    if (s->ready) {
        fkd_trainer_carry_free(&s->opt);
        fkd_model_free(&s->model);
        fkd_softlabels_free(&s->text);
    }
    memset(s, 0, sizeof *s);
}
