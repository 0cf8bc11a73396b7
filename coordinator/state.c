/* state.c — the coordinator's checkpoint: everything a restarted coordinator
 * needs to continue as if it had never stopped, in one file written
 * atomically (fkd_atomic_*) after every round.
 *
 * Layout, little-endian:
 *   "FKDCOST\0", u32 version, u32 reserved, u64 completed rounds,
 *   u64 rng[4], i64 server-optimizer steps, u64 moment floats (0 or n),
 *   u64 master checkpoint bytes, u32 clients, u32 history entries   (88 bytes)
 *   the master as an fkd_checkpoint (train/), m and v (f32 each),
 *   per client { id[32], rounds, last_round, bytes_up, bytes_down }   (64 bytes)
 *   per round  { round u64, selected target updates late vanished rejected i32,
 *                perplexity eval_loss bpb accuracy client_loss f64,
 *                bytes_down bytes_up u64, seconds clip_bound f64,
 *                server_seconds server_loss f64 }   (120 bytes; version 1: 104, without
 *                the server's training, which it did not have)
 *   CRC-32 of everything before it.
 * The decoder checks every count against the bytes present before reading. */
#include "fkd_coordinator.h"

#include <stdlib.h>
#include <string.h>

#define STATE_MAGIC "FKDCOST"
#define STATE_VERSION 2
#define STATE_VERSION_V1 1   /* still read: history entries without the server's training */
#define STATE_HEADER_BYTES 88
#define CLIENT_BYTES 64
#define HISTORY_BYTES 120
#define HISTORY_BYTES_V1 104
#define STATE_MAX_BYTES ((size_t)16 << 30)

typedef struct {
    uint8_t *p;
    size_t len, cap;
    int failed;
} wbuf;

static void w_bytes(wbuf *b, const void *d, size_t n)
{
    if (b->failed) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void w_u64(wbuf *b, uint64_t v)
{
    uint8_t t[8];
    for (int i = 0; i < 8; i++) t[i] = (uint8_t)(v >> (8 * i));
    w_bytes(b, t, 8);
}
static void w_u32(wbuf *b, uint32_t v)
{
    uint8_t t[4];
    for (int i = 0; i < 4; i++) t[i] = (uint8_t)(v >> (8 * i));
    w_bytes(b, t, 4);
}
static void w_f64(wbuf *b, double d)
{
    uint64_t v;
    memcpy(&v, &d, 8);
    w_u64(b, v);
}
static void w_f32s(wbuf *b, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t v;
        memcpy(&v, &x[i], 4);
        w_u32(b, v);
    }
}

typedef struct {
    const uint8_t *p;
    size_t len, pos;
} rbuf;

static int r_has(const rbuf *r, size_t n) { return r->len - r->pos >= n; }
static uint64_t r_u64(rbuf *r)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | r->p[r->pos + i];
    r->pos += 8;
    return v;
}
static uint32_t r_u32(rbuf *r)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = v << 8 | r->p[r->pos + i];
    r->pos += 4;
    return v;
}
static double r_f64(rbuf *r)
{
    uint64_t v = r_u64(r);
    double d;
    memcpy(&d, &v, 8);
    return d;
}
static void r_f32s(rbuf *r, float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t v = r_u32(r);
        memcpy(&x[i], &v, 4);
    }
}

static void write_history(wbuf *b, const fkd_coord_round_stats *h)
{
    w_u64(b, h->round);
    int ints[6] = {h->selected, h->target, h->updates, h->late, h->vanished, h->rejected};
    for (int i = 0; i < 6; i++) w_u32(b, (uint32_t)ints[i]);
    double d[5] = {h->perplexity, h->eval_loss, h->bits_per_byte, h->accuracy, h->client_loss};
    for (int i = 0; i < 5; i++) w_f64(b, d[i]);
    w_u64(b, h->bytes_down);
    w_u64(b, h->bytes_up);
    w_f64(b, h->seconds);
    w_f64(b, h->clip_bound);
    w_f64(b, h->server_seconds);
    w_f64(b, h->server_loss);
}

static void read_history(rbuf *r, fkd_coord_round_stats *h, uint32_t version)
{
    memset(h, 0, sizeof *h);
    h->round = r_u64(r);
    int *ints[6] = {&h->selected, &h->target, &h->updates, &h->late, &h->vanished, &h->rejected};
    for (int i = 0; i < 6; i++) *ints[i] = (int)r_u32(r);
    double *d[5] = {&h->perplexity, &h->eval_loss, &h->bits_per_byte, &h->accuracy,
                    &h->client_loss};
    for (int i = 0; i < 5; i++) *d[i] = r_f64(r);
    h->bytes_down = r_u64(r);
    h->bytes_up = r_u64(r);
    h->seconds = r_f64(r);
    h->clip_bound = r_f64(r);
    if (version == STATE_VERSION_V1) return;
    h->server_seconds = r_f64(r);
    h->server_loss = r_f64(r);
}

int fkd_coord_state_save(const char *path, const fkd_coord_state *s, fkd_error *err)
{
    uint8_t *ckpt;
    size_t ckpt_bytes;
    if (fkd_checkpoint_encode(&ckpt, &ckpt_bytes, &s->master, err) != 0) return -1;
    wbuf b = {0};
    w_bytes(&b, STATE_MAGIC, 8);
    w_u32(&b, STATE_VERSION);
    w_u32(&b, 0);
    w_u64(&b, s->round);
    for (int i = 0; i < 4; i++) w_u64(&b, s->rng.s[i]);
    w_u64(&b, (uint64_t)s->agg_step);
    w_u64(&b, s->n_moments);
    w_u64(&b, ckpt_bytes);
    w_u32(&b, s->n_clients);
    w_u32(&b, s->n_history);
    w_bytes(&b, ckpt, ckpt_bytes);
    free(ckpt);
    if (s->n_moments) {
        w_f32s(&b, s->m, s->n_moments);
        w_f32s(&b, s->v, s->n_moments);
    }
    for (uint32_t i = 0; i < s->n_clients; i++) {
        const fkd_coord_client_record *c = &s->clients[i];
        w_bytes(&b, c->sign_pk, FKD_WIRE_ID_BYTES);
        w_u64(&b, c->rounds);
        w_u64(&b, c->last_round);
        w_u64(&b, c->bytes_up);
        w_u64(&b, c->bytes_down);
    }
    for (uint32_t i = 0; i < s->n_history; i++) write_history(&b, &s->history[i]);
    if (!b.failed) w_u32(&b, fkd_crc32(0, b.p, b.len));
    if (b.failed) {
        free(b.p);
        return fkd_error_set(err, FKD_E_NOMEM, "no memory to encode the coordinator state");
    }
    int rc = fkd_file_write_atomic(path, b.p, b.len, err);
    free(b.p);
    return rc;
}

void fkd_coord_state_free(fkd_coord_state *s)
{
    fkd_params_free(&s->master);
    free(s->m);
    free(s->v);
    free(s->clients);
    free(s->history);
    memset(s, 0, sizeof *s);
}

static int decode_tables(fkd_coord_state *s, rbuf *r, uint32_t version, fkd_error *err)
{
    if (s->n_moments) {
        if (s->n_moments != s->master.n_params)
            return fkd_error_set(err, FKD_E_FORMAT, "coordinator state: %zu moment floats for "
                                 "a %zu-parameter master", s->n_moments, s->master.n_params);
        if (!r_has(r, s->n_moments * 8))
            return fkd_error_set(err, FKD_E_TRUNCATED, "coordinator state ends in the moments");
        s->m = malloc(s->n_moments * sizeof *s->m);
        s->v = malloc(s->n_moments * sizeof *s->v);
        if (!s->m || !s->v) return fkd_error_set(err, FKD_E_NOMEM, "no memory for moments");
        r_f32s(r, s->m, s->n_moments);
        r_f32s(r, s->v, s->n_moments);
    }
    size_t history_bytes = version == STATE_VERSION_V1 ? HISTORY_BYTES_V1 : HISTORY_BYTES;
    if (!r_has(r, (size_t)s->n_clients * CLIENT_BYTES + (size_t)s->n_history * history_bytes))
        return fkd_error_set(err, FKD_E_TRUNCATED, "coordinator state ends in its tables");
    s->clients = calloc(s->n_clients ? s->n_clients : 1, sizeof *s->clients);
    s->history = calloc(s->n_history ? s->n_history : 1, sizeof *s->history);
    if (!s->clients || !s->history) return fkd_error_set(err, FKD_E_NOMEM, "no memory for tables");
    for (uint32_t i = 0; i < s->n_clients; i++) {
        fkd_coord_client_record *c = &s->clients[i];
        memcpy(c->sign_pk, r->p + r->pos, FKD_WIRE_ID_BYTES);
        r->pos += FKD_WIRE_ID_BYTES;
        c->rounds = r_u64(r);
        c->last_round = r_u64(r);
        c->bytes_up = r_u64(r);
        c->bytes_down = r_u64(r);
    }
    for (uint32_t i = 0; i < s->n_history; i++) read_history(r, &s->history[i], version);
    if (r->pos != r->len)
        return fkd_error_set(err, FKD_E_FORMAT, "coordinator state has %zu unexpected bytes",
                             r->len - r->pos);
    return 0;
}

int fkd_coord_state_decode(fkd_coord_state *s, const uint8_t *data, size_t bytes, fkd_error *err)
{
    memset(s, 0, sizeof *s);
    if (bytes < STATE_HEADER_BYTES + 4)
        return fkd_error_set(err, FKD_E_TRUNCATED, "coordinator state is %zu bytes, too short",
                             bytes);
    if (memcmp(data, STATE_MAGIC, 8) != 0)
        return fkd_error_set(err, FKD_E_FORMAT, "not a coordinator state file (bad magic)");
    uint32_t stored = 0;
    for (int i = 3; i >= 0; i--) stored = stored << 8 | data[bytes - 4 + i];
    if (fkd_crc32(0, data, bytes - 4) != stored)
        return fkd_error_set(err, FKD_E_CHECKSUM, "coordinator state checksum mismatch (a "
                             "damaged file: restore a backup or start a new state_dir)");
    rbuf r = {data, bytes - 4, 8};
    uint32_t version = r_u32(&r);
    if (version != STATE_VERSION && version != STATE_VERSION_V1)
        return fkd_error_set(err, FKD_E_VERSION, "coordinator state version %u, this build reads "
                             "%u and %u", version, STATE_VERSION_V1, STATE_VERSION);
    r_u32(&r);
    s->round = r_u64(&r);
    for (int i = 0; i < 4; i++) s->rng.s[i] = r_u64(&r);
    s->agg_step = (int64_t)r_u64(&r);
    uint64_t n_moments = r_u64(&r), ckpt_bytes = r_u64(&r);
    s->n_clients = r_u32(&r);
    s->n_history = r_u32(&r);
    if (ckpt_bytes > r.len - r.pos || n_moments > FKD_QMODEL_MAX_PARAMS ||
        s->n_clients > FKD_COORD_MAX_CLIENTS || s->n_history > 100000000u)
        return fkd_error_set(err, FKD_E_FORMAT, "coordinator state: sizes do not fit the file");
    s->n_moments = (size_t)n_moments;
    if (fkd_checkpoint_decode(&s->master, r.p + r.pos, (size_t)ckpt_bytes, err) != 0) return -1;
    r.pos += (size_t)ckpt_bytes;
    if (decode_tables(s, &r, version, err) != 0) {
        fkd_coord_state_free(s);
        return -1;
    }
    return 0;
}

int fkd_coord_state_load(fkd_coord_state *s, const char *path, fkd_error *err)
{
    uint8_t *data;
    size_t bytes;
    if (fkd_file_read_all(&data, &bytes, path, STATE_MAX_BYTES, err) != 0) return -1;
    int rc = fkd_coord_state_decode(s, data, bytes, err);
    free(data);
    return rc;
}
