/* server_train.h — the coordinator's own training between rounds (private
 * to coordinator/): what coord.c calls after a round's aggregation. */
#ifndef FKD_SERVER_TRAIN_H
#define FKD_SERVER_TRAIN_H

#include "fkd_coordinator.h"

typedef struct {
    fkd_softlabel_shard text;  /* every shard back to back: the public transfer set */
    fkd_token_stream stream;   /* view of text */
    fkd_model model;           /* (batch, seq) training buffers over the master */
    fkd_trainer_carry opt;     /* the optimizer, from round to round while the process lives */
    char path[FKD_COORD_PATH_MAX + 64];  /* the optimizer's state: FKD_COORD_SERVER_TRAIN_FILE */
    char next[FKD_COORD_PATH_MAX + 72];  /* this round's, until the round's checkpoint is written */
    int ready;                 /* 1 once init allocated the above (server_steps > 0) */
} fkd_coord_server;

/* Decodes the shards (encoded[i], len[i]; n of them) into one transfer set
 * and sizes a training model over the master (borrowed: it must outlive s),
 * and drops a round's state the coordinator did not commit. Does nothing
 * when cfg->server_steps is 0. */
int fkd_coord_server_init(fkd_coord_server *s, const fkd_coord_config *cfg,
                          const fkd_params *master, uint8_t *const *encoded, const size_t *len,
                          int n, fkd_error *err);
/* master += cfg->server_steps optimizer steps on the transfer set. The
 * optimizer is kept in s from round to round; the first round after init
 * starts it from the committed state (s->path), else from cfg->server_init,
 * else fresh. Its new state (moments and steps, no weights) is written once,
 * to s->next, where it waits for fkd_coord_server_commit. *loss is the
 * steps' mean training loss. A no-op (loss 0) when the server does not train. */
int fkd_coord_server_train(double *loss, fkd_coord_server *s, const fkd_coord_config *cfg,
                           fkd_error *err);
/* After the round's checkpoint: the round's state becomes the one resumed
 * (one rename), so a restart never resumes an optimizer a round ahead of
 * the master. */
int fkd_coord_server_commit(fkd_coord_server *s, fkd_error *err);
void fkd_coord_server_free(fkd_coord_server *s);

#endif
