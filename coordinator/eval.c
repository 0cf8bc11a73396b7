/* eval.c — the held-out text the coordinator scores the master on after
 * every round. A corpus folder (fkd_corpus_load) gives the test split of its
 * natural partition (the same partition clients train on, so the test
 * documents are ones no client trained on); a plain file is used whole. */
#include "fkd_coordinator.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int load_file(fkd_token_stream *s, const char *path, fkd_error *err)
{
    uint8_t *text;
    size_t bytes;
    if (fkd_file_read_all(&text, &bytes, path, FKD_DATA_MAX_FILE_BYTES, err) != 0) return -1;
    memset(s, 0, sizeof *s);
    s->tokens = malloc((bytes ? bytes : 1) * sizeof *s->tokens);
    if (!s->tokens) {
        free(text);
        return fkd_error_set(err, FKD_E_NOMEM, "no memory for the evaluation text");
    }
    for (size_t i = 0; i < bytes; i++) s->tokens[i] = text[i];
    s->n = (int64_t)bytes;
    s->text_bytes = (int64_t)bytes;
    s->n_docs = 1;
    s->owned = 1;
    free(text);
    return 0;
}

static int load_corpus(fkd_token_stream *s, const fkd_coord_config *cfg, fkd_error *err)
{
    fkd_corpus c;
    fkd_corpus_options o = fkd_corpus_defaults(cfg->eval_side);
    if (fkd_corpus_load(&c, cfg->eval_data, &o, err) != 0) return -1;
    fkd_federation fed;
    fkd_partition_config pc = fkd_partition_defaults();
    int rc = fkd_federation_build(&fed, &c, &pc, err);
    if (rc == 0) {
        fkd_tokenizer tok;
        fkd_tokenizer_init_bytes(&tok);
        rc = fkd_token_stream_from_split(s, &c, &fed, -1, FKD_SPLIT_TEST, &tok, err);
        fkd_federation_free(&fed);
    }
    fkd_corpus_free(&c);
    return rc;
}

int fkd_coord_eval_load(fkd_token_stream *s, const fkd_coord_config *cfg, fkd_error *err)
{
    memset(s, 0, sizeof *s);
    if (!cfg->eval_data[0]) return 0;
    if (cfg->model.vocab != 256)
        return fkd_error_set(err, FKD_E_UNSUPPORTED, "held-out evaluation reads bytes: it needs "
                             "model.vocab = 256 (or eval_data = \"\")");
    struct stat st;
    if (stat(cfg->eval_data, &st) != 0)
        return fkd_error_set(err, FKD_E_IO, "eval_data %s does not exist", cfg->eval_data);
    int rc = S_ISDIR(st.st_mode) ? load_corpus(s, cfg, err) : load_file(s, cfg->eval_data, err);
    if (rc != 0) return -1;
    if (cfg->eval_tokens > 0 && s->n > cfg->eval_tokens) {
        s->text_bytes = (int64_t)((double)s->text_bytes * (double)cfg->eval_tokens / (double)s->n);
        s->n = cfg->eval_tokens;
    }
    return 0;
}
