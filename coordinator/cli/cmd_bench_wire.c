/* cmd_bench_wire.c — `fedkd bench wire`: the full path of a client update
 * through wire/: seal (BLAKE2b + Ed25519 sign + XChaCha20-Poly1305 encrypt),
 * encode as an UPDATE message, decode, open (decrypt + verify + replay check),
 * for a student-S-sized update (14 MB: 3.54 M fp32 parameters; and 1.4 MB, a
 * compressed one). Its peer is memcpy of the same bytes in the same run: the
 * bound no protocol can beat. MB = 10^6 bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "fkd_wire.h"

typedef struct {
    size_t bytes;
    uint8_t *plain, *sealed, *msg, *opened, *copy;
    size_t sealed_cap, msg_cap, opened_cap;
} buffers;

typedef struct {
    fkd_wire_identity client, coord;
    fkd_wire_replay *replay;
    uint64_t round;
} parties;

static int buffers_alloc(buffers *b, size_t bytes, uint64_t seed)
{
    memset(b, 0, sizeof *b);
    b->bytes = bytes;
    b->sealed_cap = fkd_wire_sealed_bytes(bytes);
    b->msg_cap = b->sealed_cap + 4096;
    b->opened_cap = fkd_wire_open_bytes(b->sealed_cap);
    b->plain = malloc(bytes);
    b->sealed = malloc(b->sealed_cap);
    b->msg = malloc(b->msg_cap);
    b->opened = malloc(b->opened_cap);
    b->copy = malloc(bytes);
    if (!b->plain || !b->sealed || !b->msg || !b->opened || !b->copy) return -1;
    fkd_rng rng;
    fkd_rng_seed(&rng, seed);
    for (size_t i = 0; i + 8 <= bytes; i += 8) {
        uint64_t v = fkd_rng_u64(&rng);
        memcpy(b->plain + i, &v, 8);
    }
    /* touch every page once so that no run pays for first faults */
    memset(b->sealed, 0, b->sealed_cap);
    memset(b->msg, 0, b->msg_cap);
    memset(b->opened, 0, b->opened_cap);
    memset(b->copy, 0, bytes);
    return 0;
}

static void buffers_free(buffers *b)
{
    free(b->plain);
    free(b->sealed);
    free(b->msg);
    free(b->opened);
    free(b->copy);
}

/* One update, client to coordinator and back to plaintext. */
static int one_update(parties *p, buffers *b, fkd_error *err)
{
    fkd_wire_seal_ctx ctx = {++p->round, 7, {0}};
    memcpy(ctx.client_id, p->client.sign_pk, FKD_WIRE_ID_BYTES);
    size_t sealed_len, msg_len, opened_len;
    if (fkd_wire_seal(b->sealed, b->sealed_cap, &sealed_len, b->plain, b->bytes, &ctx, &p->client,
                      p->coord.curve_pk, err))
        return -1;
    fkd_wire_msg m;
    fkd_wire_msg_init(&m, FKD_WIRE_UPDATE, p->client.sign_pk, ctx.round);
    m.u.update.model_version = ctx.model_version;
    m.u.update.samples = 4096;
    m.u.update.sealed = (fkd_wire_blob){b->sealed, sealed_len};
    fkd_wire_kv_set(&m.u.update.metrics, "loss", 2.5, NULL);
    if (fkd_wire_encode_into(b->msg, b->msg_cap, &msg_len, &m, err)) return -1;

    fkd_wire_msg d;
    if (fkd_wire_decode(&d, b->msg, msg_len, NULL, err)) return -1;
    fkd_wire_seal_ctx got = {d.env.round, d.u.update.model_version, {0}};
    memcpy(got.client_id, d.env.sender, FKD_WIRE_ID_BYTES);
    return fkd_wire_open(b->opened, b->opened_cap, &opened_len, d.u.update.sealed.data,
                         d.u.update.sealed.len, &got, &p->coord, p->replay, err);
}

static int bench_size(parties *p, double mb, int reps, uint64_t seed)
{
    buffers b;
    size_t bytes = (size_t)(mb * 1e6);
    if (buffers_alloc(&b, bytes, seed)) {
        fprintf(stderr, "fedkd bench wire: out of memory for %.1f MB\n", mb);
        buffers_free(&b);
        return 1;
    }
    fkd_error err = {0};
    if (one_update(p, &b, &err) || memcmp(b.opened, b.plain, bytes) != 0) { /* warm-up + check */
        fprintf(stderr, "fedkd bench wire: round trip failed: %s\n", err.msg);
        buffers_free(&b);
        return 1;
    }
    double t0 = fkd_time_ms(), c0 = fkd_cpu_time_ms();
    for (int i = 0; i < reps; i++)
        if (one_update(p, &b, &err)) {
            fprintf(stderr, "fedkd bench wire: %s\n", err.msg);
            buffers_free(&b);
            return 1;
        }
    double wire_ms = fkd_time_ms() - t0, wire_cpu = fkd_cpu_time_ms() - c0;
    t0 = fkd_time_ms();
    c0 = fkd_cpu_time_ms();
    for (int i = 0; i < reps; i++) {
        memcpy(b.copy, b.plain, bytes);
        /* keep the copy observable so it is not optimised away */
        b.plain[i % bytes] ^= b.copy[(i * 7919) % bytes] & 1;
    }
    double copy_ms = fkd_time_ms() - t0, copy_cpu = fkd_cpu_time_ms() - c0;
    double total_mb = mb * reps;
    double wire = total_mb / (wire_ms / 1e3), copy = total_mb / (copy_ms / 1e3);
    double wire_c = total_mb / (wire_cpu / 1e3), copy_c = total_mb / (copy_cpu / 1e3);
    printf("size_mb=%.2f reps=%d mb_per_s=%.1f memcpy_mb_per_s=%.1f ratio=%.4f "
           "cpu_mb_per_s=%.1f memcpy_cpu_mb_per_s=%.1f cpu_ratio=%.4f ms_per_update=%.2f\n",
           mb, reps, wire, copy, wire / copy, wire_c, copy_c, wire_c / copy_c, wire_ms / reps);
    buffers_free(&b);
    return 0;
}

int cmd_bench_wire(int argc, char **argv)
{
    float large = 14.0f, small = 1.4f;
    int reps = 10;
    int64_t seed = 1;
    const fkd_opt opts[] = {
        {"large-mb", FKD_OPT_FLOAT, &large, "fp32-dense student-S update size, MB"},
        {"small-mb", FKD_OPT_FLOAT, &small, "compressed update size, MB"},
        {"reps", FKD_OPT_INT, &reps, "updates per size"},
        {"seed", FKD_OPT_I64, &seed, "seed of the payload bytes"},
    };
    int rc = fkd_cli_parse(argc, argv, opts, 4,
                           "usage: fedkd bench wire [--large-mb 14] [--small-mb 1.4] [--reps N]\n"
                           "seal + encode + decode + open of one update, vs memcpy of it",
                           NULL, 0, NULL);
    if (rc) return rc > 0 ? 0 : 2;
    if (large <= 0 || small <= 0 || reps < 1) {
        fprintf(stderr, "fedkd bench wire: sizes must be > 0 and --reps >= 1\n");
        return 2;
    }
    parties p = {0};
    fkd_error err = {0};
    if (fkd_wire_identity_generate(&p.client, &err) || fkd_wire_identity_generate(&p.coord, &err) ||
        fkd_wire_replay_new(&p.replay, (size_t)reps * 11 + 4, &err)) {
        fprintf(stderr, "fedkd bench wire: %s\n", err.msg);
        return 1;
    }
    printf("# wire: seal (sign+encrypt) + encode UPDATE + decode + open (decrypt+verify), "
           "1 thread, MB = 1e6 bytes\n");
    rc = bench_size(&p, large, reps, (uint64_t)seed) || bench_size(&p, small, reps * 10,
                                                                   (uint64_t)seed + 1);
    fkd_wire_replay_free(&p.replay);
    fkd_wire_identity_wipe(&p.client);
    fkd_wire_identity_wipe(&p.coord);
    return rc ? 1 : 0;
}
