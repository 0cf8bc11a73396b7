/* fuzz_wire_chunk.c — the transfer receiver and sender fed a sequence of
 * arbitrary frames. Input: frames, each a 2-byte big-endian length then that
 * many bytes; every frame goes through fkd_wire_decode, then XFER_BEGIN and
 * XFER_CHUNK to a receiver, XFER_CREDIT to a sender. A completed payload
 * must match the hash its BEGIN announced. */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "fkd_wire.h"

static const uint8_t id[FKD_WIRE_ID_BYTES] = {3};
static uint8_t payload[5000];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fkd_wire_limits lim;
    fkd_wire_limits_default(&lim);
    lim.max_message_bytes = 1 << 16;
    lim.max_chunk_bytes = 4096;
    fkd_wire_xrecv *r;
    fkd_wire_xsend *s;
    if (fkd_wire_xrecv_new(&r, &lim, 4, id, 1, NULL) ||
        fkd_wire_xsend_new(&s, payload, sizeof payload, FKD_WIRE_TASK, 512, id, 1, NULL))
        abort();
    uint8_t hash[FKD_WIRE_HASH_BYTES];
    size_t off = 0;
    while (off + 2 <= size) {
        size_t n = (size_t)data[off] << 8 | data[off + 1];
        off += 2;
        if (n > size - off) n = size - off;
        uint8_t *frame = malloc(n ? n : 1);
        memcpy(frame, data + off, n);
        off += n;
        fkd_wire_msg m;
        if (fkd_wire_decode(&m, frame, n, &lim, NULL) == 0) {
            if (m.env.type == FKD_WIRE_XFER_BEGIN) {
                if (fkd_wire_xrecv_on_begin(r, &m.u.xbegin, NULL) == 0)
                    memcpy(hash, m.u.xbegin.hash, sizeof hash);
            } else if (m.env.type == FKD_WIRE_XFER_CHUNK) {
                fkd_wire_xrecv_on_chunk(r, &m.u.xchunk, NULL);
            } else if (m.env.type == FKD_WIRE_XFER_CREDIT) {
                fkd_wire_xsend_on_credit(s, &m.u.xcredit, NULL);
            }
        }
        free(frame);
        uint8_t *out;
        size_t len;
        while (fkd_wire_xrecv_next(r, &out, &len, NULL) == 1) free(out);
        for (int i = 0; i < 4 && fkd_wire_xsend_next(s, &out, &len, NULL) == 1; i++) free(out);
    }
    if (fkd_wire_xrecv_done(r)) {
        uint8_t *p, got[FKD_WIRE_HASH_BYTES];
        size_t n;
        if (fkd_wire_xrecv_take(r, &p, &n, NULL)) abort();
        crypto_generichash(got, sizeof got, p, n, NULL, 0);
        if (memcmp(got, hash, sizeof got) != 0) abort();
        free(p);
    }
    fkd_wire_xrecv_free(&r);
    fkd_wire_xsend_free(&s);
    return 0;
}
