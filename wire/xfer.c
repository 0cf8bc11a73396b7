/* xfer.c — chunked transfers with credit-based flow control and resume.
 *
 * A payload (an encoded message too large for one frame) is cut into
 * fixed-size chunks. The sender announces it with XFER_BEGIN (id, kind,
 * size, chunk size, BLAKE2b-256 of the whole); the receiver answers with
 * XFER_CREDIT(next, credit): "I hold chunks [0, next), you may send up to
 * next + credit". Chunks are accepted strictly in order, each checked against
 * its BLAKE2b-128; the receiver grants more credit every half window, so a
 * slow receiver throttles the sender instead of drowning in queued frames.
 *
 * Resume: the receiver keeps the partial payload. After a reconnect the sender
 * sends XFER_BEGIN again (restart()); the receiver recognises the id, size
 * and hash, and its credit says where to continue. A receiver that sees a gap
 * (chunks lost with an old connection) or an unknown id answers RESYNC, which
 * also makes the sender start over with XFER_BEGIN. Neither side does I/O:
 * messages go in and out as byte buffers through the caller's event loop. */
#include "fkd_wire.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

struct fkd_wire_xsend {
    const uint8_t *payload;
    size_t bytes;
    uint64_t xfer, round;
    uint32_t kind, chunk_bytes, n_chunks;
    uint8_t hash[FKD_WIRE_HASH_BYTES];
    uint8_t sender[FKD_WIRE_ID_BYTES];
    int need_begin;       /* the next message is XFER_BEGIN */
    int awaiting_reply;   /* BEGIN sent: the next credit sets the resume point */
    int complete;
    uint32_t cursor;      /* next chunk to send */
    uint32_t limit;       /* chunks below this may be sent */
    uint32_t sent;        /* chunks sent, resends included */
};

struct fkd_wire_xrecv {
    fkd_wire_limits lim;
    uint32_t window;
    uint64_t round;
    uint8_t sender[FKD_WIRE_ID_BYTES];
    int active, complete;
    fkd_wire_xbegin begin;
    uint8_t *buf;
    uint32_t next;         /* chunks [0, next) are in buf */
    uint32_t since_credit; /* chunks accepted since the last credit */
    int gap_reported;      /* a RESYNC for a gap was queued since the last BEGIN */
    int due;               /* a credit is to be sent */
    uint32_t due_status;
    uint64_t due_xfer;
};

static void chunk_hash(uint8_t out[FKD_WIRE_CHUNK_HASH_BYTES], const uint8_t *data, size_t len)
{
    crypto_generichash(out, FKD_WIRE_CHUNK_HASH_BYTES, data, len, NULL, 0);
}

static size_t chunk_len(uint64_t total, uint32_t chunk_bytes, uint32_t n_chunks, uint32_t index)
{
    if (index + 1 < n_chunks) return chunk_bytes;
    return (size_t)(total - (uint64_t)index * chunk_bytes);
}

/* ---- sender ------------------------------------------------------------------ */
int fkd_wire_xsend_new(fkd_wire_xsend **s, const uint8_t *payload, size_t bytes, uint32_t kind,
                       uint32_t chunk_bytes, const uint8_t sender[FKD_WIRE_ID_BYTES],
                       uint64_t round, fkd_error *err)
{
    *s = NULL;
    if (bytes == 0 || chunk_bytes == 0)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "transfer needs a payload and a chunk size");
    uint64_t n = ((uint64_t)bytes + chunk_bytes - 1) / chunk_bytes;
    if (n > UINT32_MAX)
        return fkd_error_set(err, FKD_E_LIMIT, "transfer of %zu bytes in %u-byte chunks has too "
                             "many chunks", bytes, chunk_bytes);
    if (kind < 1 || kind >= FKD_WIRE_XFER_BEGIN)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "transfer kind %u is not a message type",
                             kind);
    fkd_wire_xsend *x = calloc(1, sizeof *x);
    if (!x) return fkd_error_set(err, FKD_E_NOMEM, "cannot allocate a transfer");
    x->payload = payload;
    x->bytes = bytes;
    x->kind = kind;
    x->chunk_bytes = chunk_bytes;
    x->n_chunks = (uint32_t)n;
    x->round = round;
    memcpy(x->sender, sender, FKD_WIRE_ID_BYTES);
    randombytes_buf(&x->xfer, sizeof x->xfer);
    crypto_generichash(x->hash, FKD_WIRE_HASH_BYTES, payload, bytes, NULL, 0);
    x->need_begin = 1;
    *s = x;
    return 0;
}

int fkd_wire_xsend_next(fkd_wire_xsend *s, uint8_t **msg, size_t *len, fkd_error *err)
{
    *msg = NULL;
    if (s->complete) return 0;
    fkd_wire_msg m;
    if (s->need_begin) {
        fkd_wire_msg_init(&m, FKD_WIRE_XFER_BEGIN, s->sender, s->round);
        fkd_wire_xbegin *b = &m.u.xbegin;
        b->xfer = s->xfer;
        b->kind = s->kind;
        b->total = s->bytes;
        b->chunk_bytes = s->chunk_bytes;
        b->n_chunks = s->n_chunks;
        memcpy(b->hash, s->hash, FKD_WIRE_HASH_BYTES);
        if (fkd_wire_encode(msg, len, &m, err)) return -1;
        s->need_begin = 0;
        s->awaiting_reply = 1;
        s->limit = 0;
        return 1;
    }
    if (s->awaiting_reply || s->cursor >= s->limit || s->cursor >= s->n_chunks) return 0;
    fkd_wire_msg_init(&m, FKD_WIRE_XFER_CHUNK, s->sender, s->round);
    fkd_wire_xchunk *c = &m.u.xchunk;
    c->xfer = s->xfer;
    c->index = s->cursor;
    c->data.data = s->payload + (size_t)s->cursor * s->chunk_bytes;
    c->data.len = chunk_len(s->bytes, s->chunk_bytes, s->n_chunks, s->cursor);
    chunk_hash(c->hash, c->data.data, c->data.len);
    if (fkd_wire_encode(msg, len, &m, err)) return -1;
    s->cursor++;
    s->sent++;
    return 1;
}

int fkd_wire_xsend_on_credit(fkd_wire_xsend *s, const fkd_wire_xcredit *c, fkd_error *err)
{
    if (c->xfer != s->xfer)
        return fkd_error_set(err, FKD_E_PROTOCOL, "credit for transfer %016llx, sending %016llx",
                             (unsigned long long)c->xfer, (unsigned long long)s->xfer);
    if (c->next > s->n_chunks)
        return fkd_error_set(err, FKD_E_PROTOCOL, "credit acknowledges chunk %u of %u", c->next,
                             s->n_chunks);
    switch (c->status) {
    case FKD_WIRE_XFER_COMPLETE:
        if (c->next != s->n_chunks)
            return fkd_error_set(err, FKD_E_PROTOCOL, "transfer reported complete at chunk %u "
                                 "of %u", c->next, s->n_chunks);
        s->complete = 1;
        return 0;
    case FKD_WIRE_XFER_RESYNC: fkd_wire_xsend_restart(s); return 0;
    case FKD_WIRE_XFER_CONTINUE: break;
    default: return fkd_error_set(err, FKD_E_PROTOCOL, "credit status %u unknown", c->status);
    }
    uint64_t limit = (uint64_t)c->next + c->credit;
    if (limit > s->n_chunks) limit = s->n_chunks;
    if (s->awaiting_reply) {
        /* The answer to BEGIN: resume exactly where the receiver is. */
        s->awaiting_reply = 0;
        s->cursor = c->next;
        s->limit = (uint32_t)limit;
        return 0;
    }
    /* Credits within one connection only move forward; an older one is stale. */
    if (limit > s->limit) s->limit = (uint32_t)limit;
    return 0;
}

void fkd_wire_xsend_restart(fkd_wire_xsend *s)
{
    if (s->complete) return;
    s->need_begin = 1;
    s->awaiting_reply = 0;
    s->limit = 0;
}

int fkd_wire_xsend_done(const fkd_wire_xsend *s) { return s->complete; }
uint64_t fkd_wire_xsend_id(const fkd_wire_xsend *s) { return s->xfer; }
uint32_t fkd_wire_xsend_chunks_sent(const fkd_wire_xsend *s) { return s->sent; }

void fkd_wire_xsend_free(fkd_wire_xsend **s)
{
    free(*s);
    *s = NULL;
}

/* ---- receiver ----------------------------------------------------------------- */
int fkd_wire_xrecv_new(fkd_wire_xrecv **r, const fkd_wire_limits *lim, uint32_t window,
                       const uint8_t sender[FKD_WIRE_ID_BYTES], uint64_t round, fkd_error *err)
{
    *r = NULL;
    fkd_wire_xrecv *x = calloc(1, sizeof *x);
    if (!x) return fkd_error_set(err, FKD_E_NOMEM, "cannot allocate a transfer receiver");
    if (lim) x->lim = *lim;
    else fkd_wire_limits_default(&x->lim);
    x->window = window ? window : FKD_WIRE_DEFAULT_WINDOW;
    x->round = round;
    memcpy(x->sender, sender, FKD_WIRE_ID_BYTES);
    *r = x;
    return 0;
}

static void queue_credit(fkd_wire_xrecv *r, uint32_t status, uint64_t xfer)
{
    r->due = 1;
    r->due_status = status;
    r->due_xfer = xfer;
    r->since_credit = 0;
}

static void drop_transfer(fkd_wire_xrecv *r)
{
    free(r->buf);
    r->buf = NULL;
    r->active = r->complete = 0;
    r->next = 0;
}

static int same_transfer(const fkd_wire_xbegin *a, const fkd_wire_xbegin *b)
{
    return a->xfer == b->xfer && a->kind == b->kind && a->total == b->total &&
           a->chunk_bytes == b->chunk_bytes && a->n_chunks == b->n_chunks &&
           memcmp(a->hash, b->hash, FKD_WIRE_HASH_BYTES) == 0;
}

int fkd_wire_xrecv_on_begin(fkd_wire_xrecv *r, const fkd_wire_xbegin *b, fkd_error *err)
{
    if (b->chunk_bytes == 0 || b->chunk_bytes > r->lim.max_chunk_bytes || b->total == 0 ||
        b->total > r->lim.max_message_bytes ||
        b->n_chunks != (b->total + b->chunk_bytes - 1) / b->chunk_bytes)
        return fkd_error_set(err, FKD_E_LIMIT, "transfer of %llu bytes in %u-byte chunks is "
                             "outside the limits", (unsigned long long)b->total, b->chunk_bytes);
    r->gap_reported = 0;
    if (r->active && same_transfer(&r->begin, b)) {
        queue_credit(r, r->complete ? FKD_WIRE_XFER_COMPLETE : FKD_WIRE_XFER_CONTINUE, b->xfer);
        return 0;
    }
    drop_transfer(r);
    r->buf = malloc((size_t)b->total);
    if (!r->buf)
        return fkd_error_set(err, FKD_E_NOMEM, "cannot allocate %llu bytes for a transfer",
                             (unsigned long long)b->total);
    r->begin = *b;
    r->active = 1;
    queue_credit(r, FKD_WIRE_XFER_CONTINUE, b->xfer);
    return 0;
}

int fkd_wire_xrecv_on_chunk(fkd_wire_xrecv *r, const fkd_wire_xchunk *c, fkd_error *err)
{
    if (!r->active || c->xfer != r->begin.xfer) {
        queue_credit(r, FKD_WIRE_XFER_RESYNC, c->xfer);
        return 0;
    }
    if (r->complete || c->index < r->next) return 0; /* a duplicate after a resend */
    if (c->index > r->next) {
        /* Chunks were lost with an old connection: have the sender start over.
         * One request per gap is enough; the next BEGIN clears it. */
        if (!r->gap_reported) queue_credit(r, FKD_WIRE_XFER_RESYNC, c->xfer);
        r->gap_reported = 1;
        return 0;
    }
    const fkd_wire_xbegin *b = &r->begin;
    size_t want = chunk_len(b->total, b->chunk_bytes, b->n_chunks, c->index);
    if (c->data.len != want)
        return fkd_error_set(err, FKD_E_FORMAT, "chunk %u has %zu bytes, expected %zu", c->index,
                             c->data.len, want);
    uint8_t h[FKD_WIRE_CHUNK_HASH_BYTES];
    chunk_hash(h, c->data.data, c->data.len);
    if (memcmp(h, c->hash, sizeof h) != 0) {
        queue_credit(r, FKD_WIRE_XFER_RESYNC, c->xfer);
        return fkd_error_set(err, FKD_E_CHECKSUM, "chunk %u of transfer %016llx fails its "
                             "checksum", c->index, (unsigned long long)c->xfer);
    }
    memcpy(r->buf + (size_t)c->index * b->chunk_bytes, c->data.data, c->data.len);
    r->next++;
    r->since_credit++;
    if (r->next < b->n_chunks) {
        if (r->since_credit * 2 >= r->window) queue_credit(r, FKD_WIRE_XFER_CONTINUE, b->xfer);
        return 0;
    }
    uint8_t whole[FKD_WIRE_HASH_BYTES];
    crypto_generichash(whole, sizeof whole, r->buf, (size_t)b->total, NULL, 0);
    if (memcmp(whole, b->hash, sizeof whole) != 0) {
        uint64_t id = b->xfer;
        drop_transfer(r);
        queue_credit(r, FKD_WIRE_XFER_RESYNC, id);
        return fkd_error_set(err, FKD_E_CHECKSUM, "transfer %016llx is complete but its payload "
                             "hash does not match", (unsigned long long)id);
    }
    r->complete = 1;
    queue_credit(r, FKD_WIRE_XFER_COMPLETE, b->xfer);
    return 0;
}

int fkd_wire_xrecv_next(fkd_wire_xrecv *r, uint8_t **msg, size_t *len, fkd_error *err)
{
    *msg = NULL;
    if (!r->due) return 0;
    fkd_wire_msg m;
    fkd_wire_msg_init(&m, FKD_WIRE_XFER_CREDIT, r->sender, r->round);
    fkd_wire_xcredit *c = &m.u.xcredit;
    c->xfer = r->due_xfer;
    c->status = r->due_status;
    int ours = r->active && r->due_xfer == r->begin.xfer;
    c->next = ours ? r->next : 0;
    c->credit = r->due_status == FKD_WIRE_XFER_CONTINUE ? r->window : 0;
    if (fkd_wire_encode(msg, len, &m, err)) return -1;
    r->due = 0;
    return 1;
}

int fkd_wire_xrecv_done(const fkd_wire_xrecv *r) { return r->active && r->complete && r->buf; }
uint32_t fkd_wire_xrecv_kind(const fkd_wire_xrecv *r) { return r->active ? r->begin.kind : 0; }

void fkd_wire_xrecv_progress(const fkd_wire_xrecv *r, uint32_t *chunks_done,
                             uint32_t *chunks_total)
{
    *chunks_done = r->active ? r->next : 0;
    *chunks_total = r->active ? r->begin.n_chunks : 0;
}

int fkd_wire_xrecv_take(fkd_wire_xrecv *r, uint8_t **payload, size_t *bytes, fkd_error *err)
{
    *payload = NULL;
    if (!fkd_wire_xrecv_done(r))
        return fkd_error_set(err, FKD_E_PROTOCOL, "no completed transfer to take");
    *payload = r->buf;
    *bytes = (size_t)r->begin.total;
    r->buf = NULL;
    /* Keep the id so a late BEGIN resend is answered COMPLETE, not restarted. */
    return 0;
}

void fkd_wire_xrecv_free(fkd_wire_xrecv **r)
{
    if (!*r) return;
    free((*r)->buf);
    free(*r);
    *r = NULL;
}
