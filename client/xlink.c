/* xlink.c — one peer's chunked transfers, both directions, on top of wire's
 * I/O-free fkd_wire_xsend / fkd_wire_xrecv. The coordinator keeps one link
 * per client (TASK down, large UPDATEs up); a client keeps one link to the
 * coordinator. The incoming side survives reconnects, so a TASK download
 * resumes where it stopped when the sender repeats XFER_BEGIN. */
#include "fkd_client.h"

#include <stdlib.h>
#include <string.h>

void fkd_client_xlink_init(fkd_client_xlink *l, const uint8_t self[FKD_WIRE_ID_BYTES],
                           const fkd_wire_limits *lim, uint32_t window)
{
    memset(l, 0, sizeof *l);
    memcpy(l->self, self, FKD_WIRE_ID_BYTES);
    if (lim)
        l->lim = *lim;
    else
        fkd_wire_limits_default(&l->lim);
    l->window = window ? window : FKD_WIRE_DEFAULT_WINDOW;
}

static void drop_tx(fkd_client_xlink *l)
{
    fkd_wire_xsend_free(&l->tx);
    if (l->tx_owned) free(l->tx_payload);
    l->tx_payload = NULL;
    l->tx_owned = 0;
    l->tx_bytes = 0;
}

void fkd_client_xlink_drop_send(fkd_client_xlink *l) { drop_tx(l); }

void fkd_client_xlink_free(fkd_client_xlink *l)
{
    drop_tx(l);
    fkd_wire_xrecv_free(&l->rx);
}

int fkd_client_xlink_start_borrowed(fkd_client_xlink *l, const uint8_t *payload, size_t bytes,
                                    uint32_t kind, uint32_t chunk_bytes, uint64_t round,
                                    fkd_error *err)
{
    drop_tx(l);
    if (chunk_bytes == 0 || chunk_bytes > l->lim.max_chunk_bytes) chunk_bytes = FKD_WIRE_DEFAULT_CHUNK;
    if (fkd_wire_xsend_new(&l->tx, payload, bytes, kind, chunk_bytes, l->self, round, err) != 0)
        return -1;
    l->tx_payload = (uint8_t *)payload;
    l->tx_bytes = bytes;
    l->tx_last_ms = fkd_time_ms();
    return 0;
}

int fkd_client_xlink_start(fkd_client_xlink *l, uint8_t *payload, size_t bytes, uint32_t kind,
                           uint32_t chunk_bytes, uint64_t round, fkd_error *err)
{
    if (fkd_client_xlink_start_borrowed(l, payload, bytes, kind, chunk_bytes, round, err) != 0) {
        free(payload);
        return -1;
    }
    l->tx_owned = 1;
    return 0;
}

int fkd_client_xlink_sending(const fkd_client_xlink *l)
{
    return l->tx && !fkd_wire_xsend_done(l->tx);
}

void fkd_client_xlink_restart(fkd_client_xlink *l)
{
    if (!fkd_client_xlink_sending(l)) return;
    fkd_wire_xsend_restart(l->tx);
    l->tx_last_ms = fkd_time_ms();
}

static int send_owned(fkd_client_xlink *l, void *sock, const fkd_wire_peer *peer, uint8_t *msg,
                      size_t len, uint64_t *sent, fkd_error *err)
{
    int rc = fkd_wire_send(sock, peer, msg, len, FKD_CLIENT_SEND_TIMEOUT_MS, err);
    free(msg);
    if (rc != 0) return -1;
    l->bytes_out += len;
    if (sent) *sent += len;
    return 0;
}

int fkd_client_xlink_pump(fkd_client_xlink *l, void *sock, const fkd_wire_peer *peer,
                          uint64_t *sent_bytes, fkd_error *err)
{
    uint8_t *msg;
    size_t len;
    if (l->rx) {
        int due = fkd_wire_xrecv_next(l->rx, &msg, &len, err);
        if (due < 0) return -1;
        if (due && send_owned(l, sock, peer, msg, len, sent_bytes, err) != 0) return -1;
    }
    if (!fkd_client_xlink_sending(l)) return 0;
    if (fkd_time_ms() - l->tx_last_ms > FKD_CLIENT_XFER_STALL_MS) {
        /* The receiver went quiet (lost frames, a reconnect): ask where it is. */
        fkd_wire_xsend_restart(l->tx);
        l->tx_last_ms = fkd_time_ms();
    }
    for (;;) {
        int more = fkd_wire_xsend_next(l->tx, &msg, &len, err);
        if (more < 0) return -1;
        if (!more) return 0;
        if (send_owned(l, sock, peer, msg, len, sent_bytes, err) != 0) return -1;
    }
}

int fkd_client_xlink_on_msg(fkd_client_xlink *l, const fkd_wire_msg *msg, uint8_t **payload,
                            size_t *bytes, fkd_error *err)
{
    *payload = NULL;
    *bytes = 0;
    switch (msg->env.type) {
    case FKD_WIRE_XFER_CREDIT:
        if (!l->tx) return 0; /* a credit for a transfer we already dropped */
        if (msg->u.xcredit.xfer != fkd_wire_xsend_id(l->tx)) return 0;
        l->tx_last_ms = fkd_time_ms();
        return fkd_wire_xsend_on_credit(l->tx, &msg->u.xcredit, err);
    case FKD_WIRE_XFER_BEGIN:
        if (!l->rx && fkd_wire_xrecv_new(&l->rx, &l->lim, l->window, l->self, msg->env.round,
                                         err) != 0)
            return -1;
        return fkd_wire_xrecv_on_begin(l->rx, &msg->u.xbegin, err);
    case FKD_WIRE_XFER_CHUNK:
        if (!l->rx && fkd_wire_xrecv_new(&l->rx, &l->lim, l->window, l->self, msg->env.round,
                                         err) != 0)
            return -1;
        if (fkd_wire_xrecv_on_chunk(l->rx, &msg->u.xchunk, err) != 0) return -1;
        if (!fkd_wire_xrecv_done(l->rx)) return 0;
        return fkd_wire_xrecv_take(l->rx, payload, bytes, err) == 0 ? 1 : -1;
    default:
        return fkd_error_set(err, FKD_E_INVALID_ARG, "%s is not a transfer message",
                             fkd_wire_type_name(msg->env.type));
    }
}
