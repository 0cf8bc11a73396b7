/* fuzz_wire_msg.c — fkd_wire_decode on arbitrary bytes. A message that
 * decodes must re-encode and decode to the same fields (blobs included). */
#include <stdlib.h>
#include <string.h>

#include "fkd_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy, so that ASan sees a read one byte past the end */
    uint8_t *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    fkd_wire_limits lim;
    fkd_wire_limits_default(&lim);
    lim.max_message_bytes = 1 << 20;
    fkd_wire_msg m, again;
    if (fkd_wire_decode(&m, buf, size, &lim, NULL) == 0) {
        uint8_t *out;
        size_t len;
        uint8_t nonce[FKD_WIRE_NONCE_BYTES];
        memcpy(nonce, m.env.nonce, sizeof nonce);
        if (fkd_wire_encode(&out, &len, &m, NULL) != 0) abort();
        if (fkd_wire_decode(&again, out, len, &lim, NULL) != 0) abort();
        if (again.env.type != m.env.type || again.env.round != m.env.round ||
            memcmp(again.env.sender, m.env.sender, FKD_WIRE_ID_BYTES) != 0)
            abort();
        if (m.env.type == FKD_WIRE_XFER_CHUNK &&
            (again.u.xchunk.data.len != m.u.xchunk.data.len ||
             memcmp(again.u.xchunk.data.data, m.u.xchunk.data.data, m.u.xchunk.data.len) != 0))
            abort();
        free(out);
    }
    free(buf);
    return 0;
}
