/* seal.c — end-to-end sealed updates and the replay cache.
 *
 * Sealing (docs/protocol.md §Sealed updates has the byte layout):
 *   N   = 24 random bytes
 *   e   = fresh X25519 key pair, shared = X25519(e.secret, coordinator public)
 *   K   = BLAKE2b-256("fedkd-seal-v1" || shared || e.public || coordinator public)
 *   AD  = "fedkd-seal-v1" || round (u64 BE) || model version (u64 BE) || client id
 *   sig = Ed25519(client, "fedkd-update-v1" || round || version || client id ||
 *                 coordinator public || N || BLAKE2b-512(P))
 *   out = "FKS1" || e.public || N || XChaCha20-Poly1305(K, N, AD, P || sig)
 * The signature proves the client wrote it; the AEAD hides it from relays and
 * binds it to one round, version and client; N keys the replay cache.
 * Signing a hash of P rather than P itself keeps the 14 MB update to one
 * BLAKE2b pass instead of Ed25519's two SHA-512 passes. */
#include "fkd_wire.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

static const char seal_label[] = "fedkd-seal-v1";
static const char sig_label[] = "fedkd-update-v1";
#define LABEL_BYTES (sizeof seal_label - 1)
#define SIG_LABEL_BYTES (sizeof sig_label - 1)
#define AD_BYTES (LABEL_BYTES + 8 + 8 + FKD_WIRE_ID_BYTES)
#define SIGNED_BYTES (SIG_LABEL_BYTES + 8 + 8 + FKD_WIRE_ID_BYTES + FKD_WIRE_KEY_BYTES + \
                      FKD_WIRE_NONCE_BYTES + crypto_generichash_BYTES_MAX)

static void put_u64be(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

size_t fkd_wire_sealed_bytes(size_t plain_len) { return plain_len + FKD_WIRE_SEAL_OVERHEAD; }

size_t fkd_wire_open_bytes(size_t sealed_len)
{
    if (sealed_len < FKD_WIRE_SEAL_OVERHEAD) return 0;
    return sealed_len - FKD_WIRE_SEAL_HEADER_BYTES - FKD_WIRE_SEAL_TAG_BYTES;
}

static void make_ad(uint8_t ad[AD_BYTES], const fkd_wire_seal_ctx *ctx)
{
    memcpy(ad, seal_label, LABEL_BYTES);
    put_u64be(ad + LABEL_BYTES, ctx->round);
    put_u64be(ad + LABEL_BYTES + 8, ctx->model_version);
    memcpy(ad + LABEL_BYTES + 16, ctx->client_id, FKD_WIRE_ID_BYTES);
}

static void make_signed(uint8_t m[SIGNED_BYTES], const fkd_wire_seal_ctx *ctx,
                        const uint8_t coord_pk[FKD_WIRE_KEY_BYTES],
                        const uint8_t nonce[FKD_WIRE_NONCE_BYTES], const uint8_t *plain,
                        size_t plain_len)
{
    uint8_t *p = m;
    memcpy(p, sig_label, SIG_LABEL_BYTES), p += SIG_LABEL_BYTES;
    put_u64be(p, ctx->round), p += 8;
    put_u64be(p, ctx->model_version), p += 8;
    memcpy(p, ctx->client_id, FKD_WIRE_ID_BYTES), p += FKD_WIRE_ID_BYTES;
    memcpy(p, coord_pk, FKD_WIRE_KEY_BYTES), p += FKD_WIRE_KEY_BYTES;
    memcpy(p, nonce, FKD_WIRE_NONCE_BYTES), p += FKD_WIRE_NONCE_BYTES;
    crypto_generichash(p, crypto_generichash_BYTES_MAX, plain, plain_len, NULL, 0);
}

/* K from the X25519 shared secret; -1 for a low-order (all-zero) result. */
static int derive_key(uint8_t key[crypto_aead_xchacha20poly1305_ietf_KEYBYTES],
                      const uint8_t secret[32], const uint8_t point[32],
                      const uint8_t eph_pk[32], const uint8_t coord_pk[32])
{
    uint8_t shared[crypto_scalarmult_BYTES];
    if (crypto_scalarmult(shared, secret, point) != 0) return -1;
    crypto_generichash_state h;
    crypto_generichash_init(&h, NULL, 0, crypto_aead_xchacha20poly1305_ietf_KEYBYTES);
    crypto_generichash_update(&h, (const uint8_t *)seal_label, LABEL_BYTES);
    crypto_generichash_update(&h, shared, sizeof shared);
    crypto_generichash_update(&h, eph_pk, 32);
    crypto_generichash_update(&h, coord_pk, 32);
    crypto_generichash_final(&h, key, crypto_aead_xchacha20poly1305_ietf_KEYBYTES);
    sodium_memzero(shared, sizeof shared);
    sodium_memzero(&h, sizeof h);
    return 0;
}

int fkd_wire_seal(uint8_t *out, size_t cap, size_t *out_len, const uint8_t *plain,
                  size_t plain_len, const fkd_wire_seal_ctx *ctx,
                  const fkd_wire_identity *client, const uint8_t coord_curve_pk[FKD_WIRE_KEY_BYTES],
                  fkd_error *err)
{
    size_t need = fkd_wire_sealed_bytes(plain_len);
    if (need < plain_len || cap < need)
        return fkd_error_set(err, FKD_E_LIMIT, "sealing %zu bytes needs a %zu-byte buffer",
                             plain_len, need);
    if (sodium_memcmp(ctx->client_id, client->sign_pk, FKD_WIRE_ID_BYTES) != 0)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "seal context names another client than "
                             "the signing identity");
    if (sodium_init() < 0) return fkd_error_set(err, FKD_E_UNSUPPORTED, "libsodium init failed");
    uint8_t *eph_pk = out + 4, *nonce = out + 36, *body = out + FKD_WIRE_SEAL_HEADER_BYTES;
    uint8_t eph_sk[32], key[crypto_aead_xchacha20poly1305_ietf_KEYBYTES];
    memcpy(out, FKD_WIRE_SEAL_MAGIC, 4);
    randombytes_buf(nonce, FKD_WIRE_NONCE_BYTES);
    crypto_box_keypair(eph_pk, eph_sk);
    int rc = derive_key(key, eph_sk, coord_curve_pk, eph_pk, coord_curve_pk);
    sodium_memzero(eph_sk, sizeof eph_sk);
    if (rc) return fkd_error_set(err, FKD_E_AUTH, "coordinator public key is invalid");

    uint8_t m[SIGNED_BYTES], ad[AD_BYTES];
    make_signed(m, ctx, coord_curve_pk, nonce, plain, plain_len);
    make_ad(ad, ctx);
    memmove(body, plain, plain_len);
    crypto_sign_detached(body + plain_len, NULL, m, sizeof m, client->sign_sk);
    unsigned long long clen = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(body, &clen, body,
                                               plain_len + FKD_WIRE_SEAL_SIG_BYTES, ad,
                                               sizeof ad, NULL, nonce, key);
    sodium_memzero(key, sizeof key);
    *out_len = FKD_WIRE_SEAL_HEADER_BYTES + (size_t)clen;
    return 0;
}

int fkd_wire_open(uint8_t *out, size_t cap, size_t *out_len, const uint8_t *sealed,
                  size_t sealed_len, const fkd_wire_seal_ctx *ctx,
                  const fkd_wire_identity *coord, fkd_wire_replay *replay, fkd_error *err)
{
    size_t need = fkd_wire_open_bytes(sealed_len);
    if (need == 0 || memcmp(sealed, FKD_WIRE_SEAL_MAGIC, 4) != 0)
        return fkd_error_set(err, FKD_E_FORMAT, "sealed update of %zu bytes is not a sealed "
                             "update", sealed_len);
    if (cap < need)
        return fkd_error_set(err, FKD_E_LIMIT, "opening needs a %zu-byte buffer", need);
    if (sodium_init() < 0) return fkd_error_set(err, FKD_E_UNSUPPORTED, "libsodium init failed");
    const uint8_t *eph_pk = sealed + 4, *nonce = sealed + 36;
    const uint8_t *body = sealed + FKD_WIRE_SEAL_HEADER_BYTES;
    uint8_t key[crypto_aead_xchacha20poly1305_ietf_KEYBYTES], ad[AD_BYTES];
    if (derive_key(key, coord->curve_sk, eph_pk, eph_pk, coord->curve_pk))
        return fkd_error_set(err, FKD_E_AUTH, "sealed update has an invalid ephemeral key");
    make_ad(ad, ctx);
    unsigned long long mlen = 0;
    int rc = crypto_aead_xchacha20poly1305_ietf_decrypt(
        out, &mlen, NULL, body, sealed_len - FKD_WIRE_SEAL_HEADER_BYTES, ad, sizeof ad, nonce, key);
    sodium_memzero(key, sizeof key);
    if (rc != 0) {
        sodium_memzero(out, need);
        return fkd_error_set(err, FKD_E_AUTH, "sealed update does not decrypt: altered, sealed "
                             "to another coordinator, or for another round/version/client");
    }
    size_t plain_len = (size_t)mlen - FKD_WIRE_SEAL_SIG_BYTES;
    uint8_t m[SIGNED_BYTES];
    make_signed(m, ctx, coord->curve_pk, nonce, out, plain_len);
    if (crypto_sign_verify_detached(out + plain_len, m, sizeof m, ctx->client_id) != 0) {
        sodium_memzero(out, need);
        return fkd_error_set(err, FKD_E_AUTH, "sealed update's signature is not the client's");
    }
    if (replay && fkd_wire_replay_check(replay, ctx->round, ctx->client_id, nonce, err)) {
        sodium_memzero(out, need);
        return -1;
    }
    *out_len = plain_len;
    return 0;
}

/* ---- replay cache ------------------------------------------------------------
 * An open-addressing set of 16-byte keyed BLAKE2b digests of (round, client,
 * nonce), with the round kept beside each digest so old rounds can be dropped.
 * The digest key is random per cache, so a peer cannot aim collisions. */
#define DIGEST_BYTES 16

typedef struct {
    uint64_t round;
    uint8_t digest[DIGEST_BYTES];
    uint8_t used;
} slot;

struct fkd_wire_replay {
    slot *slots;
    size_t mask, count, capacity;
    uint8_t key[crypto_generichash_KEYBYTES];
};

int fkd_wire_replay_new(fkd_wire_replay **r, size_t capacity, fkd_error *err)
{
    *r = NULL;
    if (capacity == 0 || capacity > ((size_t)1 << 28))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "replay cache capacity must be 1..2^28");
    size_t size = 16;
    while (size < capacity * 2) size <<= 1;
    fkd_wire_replay *c = calloc(1, sizeof *c);
    if (c) c->slots = calloc(size, sizeof *c->slots);
    if (!c || !c->slots) {
        free(c);
        return fkd_error_set(err, FKD_E_NOMEM, "cannot allocate a replay cache of %zu", capacity);
    }
    c->mask = size - 1;
    c->capacity = capacity;
    randombytes_buf(c->key, sizeof c->key);
    *r = c;
    return 0;
}

static void insert(fkd_wire_replay *r, uint64_t round, const uint8_t digest[DIGEST_BYTES])
{
    size_t i;
    memcpy(&i, digest, sizeof i);
    for (;; i++) {
        slot *s = &r->slots[i & r->mask];
        if (s->used) continue;
        s->used = 1;
        s->round = round;
        memcpy(s->digest, digest, DIGEST_BYTES);
        r->count++;
        return;
    }
}

int fkd_wire_replay_check(fkd_wire_replay *r, uint64_t round,
                          const uint8_t client[FKD_WIRE_ID_BYTES],
                          const uint8_t nonce[FKD_WIRE_NONCE_BYTES], fkd_error *err)
{
    uint8_t in[8 + FKD_WIRE_ID_BYTES + FKD_WIRE_NONCE_BYTES], digest[DIGEST_BYTES];
    put_u64be(in, round);
    memcpy(in + 8, client, FKD_WIRE_ID_BYTES);
    memcpy(in + 8 + FKD_WIRE_ID_BYTES, nonce, FKD_WIRE_NONCE_BYTES);
    crypto_generichash(digest, sizeof digest, in, sizeof in, r->key, sizeof r->key);
    size_t i;
    memcpy(&i, digest, sizeof i);
    for (;; i++) {
        const slot *s = &r->slots[i & r->mask];
        if (!s->used) break;
        if (s->round == round && memcmp(s->digest, digest, DIGEST_BYTES) == 0)
            return fkd_error_set(err, FKD_E_REPLAY, "update for round %llu was already received "
                                 "(replayed message)", (unsigned long long)round);
    }
    if (r->count >= r->capacity)
        return fkd_error_set(err, FKD_E_LIMIT, "replay cache is full (%zu entries): the "
                             "coordinator must forget old rounds", r->capacity);
    insert(r, round, digest);
    return 0;
}

void fkd_wire_replay_forget_before(fkd_wire_replay *r, uint64_t round)
{
    size_t size = r->mask + 1;
    slot *old = r->slots, *fresh = calloc(size, sizeof *fresh);
    if (!fresh) return; /* keeping entries is the safe failure */
    r->slots = fresh;
    r->count = 0;
    for (size_t i = 0; i < size; i++)
        if (old[i].used && old[i].round >= round) insert(r, old[i].round, old[i].digest);
    free(old);
}

size_t fkd_wire_replay_count(const fkd_wire_replay *r) { return r->count; }

void fkd_wire_replay_free(fkd_wire_replay **r)
{
    if (!*r) return;
    sodium_memzero((*r)->key, sizeof (*r)->key);
    free((*r)->slots);
    free(*r);
    *r = NULL;
}
