/* fuzz_wire_open.c — fkd_wire_open on arbitrary bytes, with fixed keys. The
 * first 8 bytes pick the round; the rest is the sealed blob. Nothing but
 * a genuine seal may open, so any success aborts unless the input is the
 * seal this target made itself (its own seed, see below). */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "fkd_wire.h"

static fkd_wire_identity client, coord;
static fkd_wire_replay *replay;

static void keys_from_seed(fkd_wire_identity *id, uint8_t tag)
{
    uint8_t seed[32];
    memset(seed, tag, sizeof seed);
    crypto_sign_seed_keypair(id->sign_pk, id->sign_sk, seed);
    crypto_box_seed_keypair(id->curve_pk, id->curve_sk, seed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!replay) {
        if (sodium_init() < 0) abort();
        keys_from_seed(&client, 1);
        keys_from_seed(&coord, 2);
        if (fkd_wire_replay_new(&replay, 1 << 16, NULL)) abort();
    }
    if (size < 8) return 0;
    fkd_wire_seal_ctx ctx = {0};
    memcpy(&ctx.round, data, 8);
    ctx.model_version = 1;
    memcpy(ctx.client_id, client.sign_pk, FKD_WIRE_ID_BYTES);
    size_t n = size - 8;
    uint8_t *sealed = malloc(n ? n : 1);
    memcpy(sealed, data + 8, n);
    size_t cap = fkd_wire_open_bytes(n);
    uint8_t *out = malloc(cap ? cap : 1);
    size_t out_len = 0;
    if (fkd_wire_open(out, cap, &out_len, sealed, n, &ctx, &coord, replay, NULL) == 0)
        abort(); /* a forgery opened */
    free(out);
    free(sealed);
    return 0;
}
