/* fkd_wire.h — everything that crosses a network in fedkd.
 *
 * A message is a fixed 76-byte envelope (magic, protocol version, type,
 * sender id, round id, 24-byte nonce, body length) followed by a MessagePack
 * map. fkd_wire_encode() turns a fkd_wire_msg into bytes; fkd_wire_decode()
 * checks every byte of untrusted input against fkd_wire_limits and fills a
 * fkd_wire_msg whose blob fields POINT INTO THE INPUT BUFFER (nothing is
 * allocated, nothing needs freeing; keep the input alive while you use them).
 *
 * Identities: every peer has an Ed25519 signing key pair (its id, the
 * envelope's sender) and an X25519 key pair (the CurveZMQ transport key, and
 * the key sealed updates are encrypted to). Key files are text (Z85).
 *
 * Transport: ZeroMQ CURVE; the coordinator binds a ROUTER, clients connect a
 * DEALER. A ZAP handler thread admits only clients whose transport key is in
 * an allow-list file; fkd_wire_zap_request_reload() (async-signal-safe, call
 * it from a SIGHUP handler) makes the thread re-read the file.
 *
 * Updates are sealed end to end (fkd_wire_seal/fkd_wire_open): signed with the
 * client's Ed25519 key, encrypted to the coordinator's X25519 key with
 * XChaCha20-Poly1305, with round, model version and client id as associated
 * data; fkd_wire_replay refuses a (round, client, nonce) seen before.
 *
 * Large messages travel in chunks (XFER_BEGIN / XFER_CHUNK / XFER_CREDIT) with
 * credit-based flow control and resume after a reconnect: fkd_wire_xsend and
 * fkd_wire_xrecv are state objects with no I/O of their own, driven by the
 * caller's event loop.
 *
 * The byte-exact specification is docs/protocol.md. Not here: what the blobs
 * mean (train/, compress/), or who talks to whom when (client/, coordinator/).
 */
#ifndef FKD_WIRE_H
#define FKD_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "fkd_common.h"

/* ======================================================================== *
 * Constants
 * ======================================================================== */
#define FKD_WIRE_VERSION_MAJOR 1
#define FKD_WIRE_VERSION_MINOR 0
#define FKD_WIRE_MAGIC "FKDW"          /* 4 bytes, no NUL on the wire */
#define FKD_WIRE_ENV_BYTES 76          /* fixed envelope before the body */
#define FKD_WIRE_ID_BYTES 32           /* sender id = Ed25519 public key */
#define FKD_WIRE_NONCE_BYTES 24        /* per-message random nonce */
#define FKD_WIRE_KEY_BYTES 32          /* X25519 / Ed25519 public key */
#define FKD_WIRE_SIGN_SECRET_BYTES 64  /* libsodium Ed25519 secret key (seed || public) */
#define FKD_WIRE_HASH_BYTES 32         /* BLAKE2b-256 whole-payload hash */
#define FKD_WIRE_CHUNK_HASH_BYTES 16   /* BLAKE2b-128 per-chunk hash */
#define FKD_WIRE_TEXT_MAX 256          /* longest text field (reason, error text), bytes */
#define FKD_WIRE_NAME_MAX 64           /* longest short text (software, key label) */
#define FKD_WIRE_KV_MAX 32             /* entries in a map of scalars */
#define FKD_WIRE_KV_KEY_MAX 31         /* longest key in a map of scalars, bytes */
#define FKD_WIRE_Z85_KEY_CHARS 40      /* a 32-byte key in Z85 */
#define FKD_WIRE_ZAP_DOMAIN "fedkd"

enum fkd_wire_type {
    FKD_WIRE_HELLO = 1,       /* client -> coordinator: who I am, what I can do */
    FKD_WIRE_WELCOME = 2,     /* coordinator -> client: admitted, session settings */
    FKD_WIRE_REJECT = 3,      /* coordinator -> client: not admitted now */
    FKD_WIRE_TASK = 4,        /* coordinator -> client: the round's work */
    FKD_WIRE_UPDATE = 5,      /* client -> coordinator: sealed model update */
    FKD_WIRE_ACK = 6,         /* either: message with this nonce was accepted */
    FKD_WIRE_ERROR = 7,       /* either: a request failed (code + text) */
    FKD_WIRE_HEARTBEAT = 8,   /* either: I am alive */
    FKD_WIRE_BYE = 9,         /* either: closing the session */
    FKD_WIRE_XFER_BEGIN = 10, /* sender -> receiver: a chunked message follows */
    FKD_WIRE_XFER_CHUNK = 11, /* sender -> receiver: one chunk */
    FKD_WIRE_XFER_CREDIT = 12,/* receiver -> sender: ack + flow-control credit */
    FKD_WIRE_TYPE_MAX = 12
};

/* Name of a message type ("HELLO"), or "?" for an unknown one. */
const char *fkd_wire_type_name(int type);

/* Hard ceilings on untrusted input. Every decoder takes one; NULL means the
 * defaults of fkd_wire_limits_default(). */
typedef struct {
    size_t max_message_bytes;  /* one message, envelope included (after reassembly) */
    size_t max_frame_bytes;    /* one ZeroMQ frame (a chunk message, or a small message) */
    size_t max_blob_bytes;     /* one binary field */
    uint32_t max_chunk_bytes;  /* data in one XFER_CHUNK */
    uint32_t max_objects;      /* MessagePack objects in one body (keys and values) */
} fkd_wire_limits;

#define FKD_WIRE_DEFAULT_MAX_MESSAGE (256u << 20)  /* 256 MiB */
#define FKD_WIRE_DEFAULT_MAX_FRAME (5u << 20)      /* 5 MiB: a 4 MiB chunk + slack */
#define FKD_WIRE_DEFAULT_MAX_CHUNK (4u << 20)      /* 4 MiB */
#define FKD_WIRE_DEFAULT_CHUNK (1u << 20)          /* chunk size a sender picks: 1 MiB */
#define FKD_WIRE_DEFAULT_WINDOW 8                  /* chunks in flight a receiver grants */
#define FKD_WIRE_DEFAULT_MAX_OBJECTS 1024
#define FKD_WIRE_XFER_THRESHOLD (1u << 20)         /* larger messages go as a transfer */

void fkd_wire_limits_default(fkd_wire_limits *lim);

/* ======================================================================== *
 * Messages
 * ======================================================================== */
typedef struct {
    uint8_t major, minor;             /* protocol version of the sender */
    uint8_t type;                     /* enum fkd_wire_type */
    uint8_t sender[FKD_WIRE_ID_BYTES];/* sender's Ed25519 public key */
    uint64_t round;                   /* round id (0 outside a round) */
    uint8_t nonce[FKD_WIRE_NONCE_BYTES]; /* fresh random per message */
} fkd_wire_env;

/* Bytes that live in someone else's buffer (decoded: in the input). */
typedef struct {
    const uint8_t *data;
    size_t len;
} fkd_wire_blob;

/* A small map of named numbers (hyper-parameters, metrics, settings).
 * Numbers travel as MessagePack float64; integers up to 2^53 are exact. */
typedef struct {
    char key[FKD_WIRE_KV_KEY_MAX + 1];
    double value;
} fkd_wire_kv;

typedef struct {
    uint32_t n;
    fkd_wire_kv kv[FKD_WIRE_KV_MAX];
} fkd_wire_kvmap;

/* Adds or replaces key (-1 if the map is full or the key too long). */
int fkd_wire_kv_set(fkd_wire_kvmap *m, const char *key, double value, fkd_error *err);
/* 1 and *value if key is present, else 0. */
int fkd_wire_kv_get(const fkd_wire_kvmap *m, const char *key, double *value);

typedef struct {
    uint32_t cores;              /* CPU cores the client will use */
    uint32_t memory_mb;          /* memory it can spend on training */
    double train_tokens_per_s;   /* measured training speed (student-S) */
    double link_kbps;            /* estimated link bandwidth */
    uint64_t local_tokens;       /* tokens of local training text */
    uint64_t model_version;      /* global model version it holds (0: none) */
    char software[FKD_WIRE_NAME_MAX + 1]; /* optional, e.g. "fedkd-client 0.1.0" */
} fkd_wire_hello;

typedef struct {
    uint64_t session;            /* coordinator's id for this session */
    uint64_t model_version;      /* current global model version */
    uint32_t heartbeat_ms;       /* send a HEARTBEAT at least this often */
    uint32_t chunk_bytes;        /* chunk size the coordinator uses */
    uint32_t window;             /* chunks in flight the coordinator grants */
} fkd_wire_welcome;

typedef struct {
    uint32_t code;               /* enum fkd_error_code */
    uint32_t retry_after_ms;     /* optional; 0 = do not retry */
    char reason[FKD_WIRE_TEXT_MAX + 1];
} fkd_wire_reject;

typedef struct {
    uint64_t model_version;      /* version of the weights (or of the client's copy) */
    uint64_t deadline_ms;        /* UNIX time in ms by which the UPDATE must arrive */
    fkd_wire_blob student_config;/* opaque (train/) */
    fkd_wire_blob weights;       /* opaque quantized weights (compress/); empty = keep yours */
    fkd_wire_blob soft_labels;   /* opaque soft-label shard for this round */
    fkd_wire_kvmap hparams;      /* training hyper-parameters */
    fkd_wire_kvmap compression;  /* update compression settings */
} fkd_wire_task;

typedef struct {
    uint64_t model_version;      /* base model version the update is against */
    uint64_t samples;            /* local training samples (aggregation weight) */
    fkd_wire_kvmap metrics;      /* local training metrics */
    fkd_wire_blob sealed;        /* fkd_wire_seal() of the compressed update */
    uint32_t kind;               /* enum fkd_wire_update_kind (optional; 0 = a delta) */
} fkd_wire_update;

/* What an UPDATE's sealed plaintext holds: the compressed sparse delta of
 * the whole student, or LoRA adapters (train/'s adapter encoding). */
enum fkd_wire_update_kind { FKD_WIRE_UPDATE_DELTA = 0, FKD_WIRE_UPDATE_LORA = 1 };
/* A TASK's hparams "mode": how the client trains (docs/protocol.md). */
enum fkd_wire_client_mode {
    FKD_WIRE_MODE_FULL = 0,   /* every weight; uploads a delta */
    FKD_WIRE_MODE_LORA = 1,   /* adapters over the base in fp32; uploads adapters */
    FKD_WIRE_MODE_QLORA8 = 2, /* adapters over the base held int8 */
    FKD_WIRE_MODE_QLORA4 = 3  /* adapters over the base held int4 */
};

typedef struct {
    uint32_t acked_type;
    uint8_t acked_nonce[FKD_WIRE_NONCE_BYTES];
} fkd_wire_ack;

typedef struct {
    uint32_t code;               /* enum fkd_error_code */
    char text[FKD_WIRE_TEXT_MAX + 1];
} fkd_wire_errmsg;

typedef struct {
    uint64_t seq;
    double progress;             /* optional, 0..1 of the current task */
} fkd_wire_heartbeat;

typedef struct {
    char reason[FKD_WIRE_TEXT_MAX + 1]; /* optional */
} fkd_wire_bye;

typedef struct {
    uint64_t xfer;               /* transfer id, chosen at random by the sender */
    uint32_t kind;               /* type of the message carried (e.g. FKD_WIRE_TASK) */
    uint64_t total;              /* payload bytes */
    uint32_t chunk_bytes;        /* bytes per chunk (the last may be shorter) */
    uint32_t n_chunks;           /* ceil(total / chunk_bytes) */
    uint8_t hash[FKD_WIRE_HASH_BYTES]; /* BLAKE2b-256 of the payload */
} fkd_wire_xbegin;

typedef struct {
    uint64_t xfer;
    uint32_t index;              /* 0-based chunk number */
    fkd_wire_blob data;
    uint8_t hash[FKD_WIRE_CHUNK_HASH_BYTES]; /* BLAKE2b-128 of data */
} fkd_wire_xchunk;

enum fkd_wire_xstatus {
    FKD_WIRE_XFER_CONTINUE = 0,  /* send chunks [next, next + credit) */
    FKD_WIRE_XFER_COMPLETE = 1,  /* all chunks in, whole-payload hash verified */
    FKD_WIRE_XFER_RESYNC = 2     /* unknown transfer or a gap: send XFER_BEGIN again */
};

typedef struct {
    uint64_t xfer;
    uint32_t next;               /* chunks [0, next) are received and verified */
    uint32_t credit;             /* sender may send chunks below next + credit */
    uint32_t status;             /* enum fkd_wire_xstatus */
} fkd_wire_xcredit;

typedef struct {
    fkd_wire_env env;
    union {
        fkd_wire_hello hello;
        fkd_wire_welcome welcome;
        fkd_wire_reject reject;
        fkd_wire_task task;
        fkd_wire_update update;
        fkd_wire_ack ack;
        fkd_wire_errmsg error;
        fkd_wire_heartbeat heartbeat;
        fkd_wire_bye bye;
        fkd_wire_xbegin xbegin;
        fkd_wire_xchunk xchunk;
        fkd_wire_xcredit xcredit;
    } u;
} fkd_wire_msg;

/* Zeroes msg and fills its envelope: current version, type, sender, round. */
void fkd_wire_msg_init(fkd_wire_msg *msg, int type, const uint8_t sender[FKD_WIRE_ID_BYTES],
                       uint64_t round);

/* Exact encoded size of msg (0 if msg is invalid). */
size_t fkd_wire_encoded_bytes(const fkd_wire_msg *msg);

/* Encodes msg with a FRESH random nonce, which is also written back to
 * msg->env.nonce (so the caller can match the ACK). The _into form writes to
 * the caller's buffer (-1 FKD_E_LIMIT if cap is too small); the other
 * returns a malloc'ed buffer the caller frees with free(). */
int fkd_wire_encode_into(uint8_t *out, size_t cap, size_t *out_len, fkd_wire_msg *msg,
                         fkd_error *err);
int fkd_wire_encode(uint8_t **out, size_t *out_len, fkd_wire_msg *msg, fkd_error *err);

/* Reads only the envelope (for routing before a full decode). Checks magic,
 * version (newer major -> FKD_E_VERSION), type and body length. */
int fkd_wire_decode_env(fkd_wire_env *env, const uint8_t *buf, size_t len,
                        const fkd_wire_limits *lim, fkd_error *err);

/* Decodes and validates one message. Blobs point into buf. Unknown body keys
 * are ignored; missing required keys, wrong types, over-long fields, sizes
 * above lim, trailing bytes -> -1 with FKD_E_FORMAT / FKD_E_TRUNCATED /
 * FKD_E_LIMIT / FKD_E_VERSION and a sentence naming the field. */
int fkd_wire_decode(fkd_wire_msg *msg, const uint8_t *buf, size_t len,
                    const fkd_wire_limits *lim, fkd_error *err);

/* ======================================================================== *
 * Keys
 * ======================================================================== */
typedef struct {
    uint8_t sign_pk[FKD_WIRE_KEY_BYTES];          /* Ed25519: the peer's id */
    uint8_t sign_sk[FKD_WIRE_SIGN_SECRET_BYTES];
    uint8_t curve_pk[FKD_WIRE_KEY_BYTES];         /* X25519: CURVE + sealing */
    uint8_t curve_sk[FKD_WIRE_KEY_BYTES];
} fkd_wire_identity;

typedef struct {
    uint8_t sign_pk[FKD_WIRE_KEY_BYTES];
    uint8_t curve_pk[FKD_WIRE_KEY_BYTES];
    char label[FKD_WIRE_NAME_MAX + 1];            /* free text, may be empty */
} fkd_wire_pubkey;

int fkd_wire_identity_generate(fkd_wire_identity *id, fkd_error *err);
void fkd_wire_identity_wipe(fkd_wire_identity *id);   /* sodium_memzero */
void fkd_wire_identity_public(fkd_wire_pubkey *pub, const fkd_wire_identity *id,
                              const char *label);

/* Writes PREFIX.key (secret, mode 0600) and PREFIX.pub (one line, fit for an
 * allow-list). Refuses to overwrite an existing PREFIX.key unless force. */
int fkd_wire_identity_save(const char *prefix, const fkd_wire_identity *id, const char *label,
                           int force, fkd_error *err);
/* Loads a secret key file; refuses one readable by group or others, and one
 * whose public halves do not match its secret halves. */
int fkd_wire_identity_load(fkd_wire_identity *id, const char *path, fkd_error *err);
/* Parses the text of a secret key file (the fuzzed part of _load). */
int fkd_wire_identity_parse(fkd_wire_identity *id, const char *text, size_t len, fkd_error *err);

/* Parses one public-key line "fedkd-pub-v1 <sign Z85> <curve Z85> [label]". */
int fkd_wire_pubkey_parse(fkd_wire_pubkey *pub, const char *line, size_t len, fkd_error *err);
int fkd_wire_pubkey_load(fkd_wire_pubkey *pub, const char *path, fkd_error *err);
/* Formats the line (NUL-terminated, no newline) into out[cap]. */
int fkd_wire_pubkey_format(char *out, size_t cap, const fkd_wire_pubkey *pub, fkd_error *err);

/* An allow-list: a text file of public-key lines ('#' lines and blank lines
 * ignored). */
typedef struct {
    fkd_wire_pubkey *keys;
    size_t n;
} fkd_wire_allowlist;

int fkd_wire_allowlist_parse(fkd_wire_allowlist *al, const char *text, size_t len,
                             fkd_error *err);
int fkd_wire_allowlist_load(fkd_wire_allowlist *al, const char *path, fkd_error *err);
/* The entry whose transport (curve) key is curve_pk, or NULL. */
const fkd_wire_pubkey *fkd_wire_allowlist_find(const fkd_wire_allowlist *al,
                                               const uint8_t curve_pk[FKD_WIRE_KEY_BYTES]);
void fkd_wire_allowlist_free(fkd_wire_allowlist *al);

/* ======================================================================== *
 * Sealed updates
 * ======================================================================== */
#define FKD_WIRE_SEAL_MAGIC "FKS1"
#define FKD_WIRE_SEAL_HEADER_BYTES (4 + 32 + 24)   /* magic, ephemeral key, nonce */
#define FKD_WIRE_SEAL_SIG_BYTES 64
#define FKD_WIRE_SEAL_TAG_BYTES 16
#define FKD_WIRE_SEAL_OVERHEAD \
    (FKD_WIRE_SEAL_HEADER_BYTES + FKD_WIRE_SEAL_SIG_BYTES + FKD_WIRE_SEAL_TAG_BYTES)

/* What a sealed update is bound to (associated data). */
typedef struct {
    uint64_t round;
    uint64_t model_version;                    /* base version of the update */
    uint8_t client_id[FKD_WIRE_ID_BYTES];      /* client's Ed25519 public key */
} fkd_wire_seal_ctx;

/* Bytes fkd_wire_seal writes for plain_len bytes, and bytes fkd_wire_open
 * needs in its output buffer for a sealed_len-byte input (plaintext plus room
 * for the signature; 0 if sealed_len is too short to be sealed). */
size_t fkd_wire_sealed_bytes(size_t plain_len);
size_t fkd_wire_open_bytes(size_t sealed_len);

/* Signs plain with client->sign_sk, encrypts it to coord_curve_pk. ctx->client_id
 * must be client->sign_pk. out needs fkd_wire_sealed_bytes(plain_len). */
int fkd_wire_seal(uint8_t *out, size_t cap, size_t *out_len, const uint8_t *plain,
                  size_t plain_len, const fkd_wire_seal_ctx *ctx,
                  const fkd_wire_identity *client, const uint8_t coord_curve_pk[FKD_WIRE_KEY_BYTES],
                  fkd_error *err);

typedef struct fkd_wire_replay fkd_wire_replay;

/* Decrypts with coord->curve_sk and verifies the signature of ctx->client_id.
 * Any change to the bytes, another key, round, version or client -> -1
 * FKD_E_AUTH. With replay != NULL, a (round, client, nonce) already opened ->
 * -1 FKD_E_REPLAY (checked after authentication, so forgeries cannot fill the
 * cache). out needs fkd_wire_open_bytes(sealed_len); *out_len is the plaintext. */
int fkd_wire_open(uint8_t *out, size_t cap, size_t *out_len, const uint8_t *sealed,
                  size_t sealed_len, const fkd_wire_seal_ctx *ctx,
                  const fkd_wire_identity *coord, fkd_wire_replay *replay, fkd_error *err);

/* Replay cache of (round, client, nonce), held by the coordinator. capacity
 * is the number of entries; when full, check fails with FKD_E_LIMIT until
 * fkd_wire_replay_forget_before() drops old rounds. */
int fkd_wire_replay_new(fkd_wire_replay **r, size_t capacity, fkd_error *err);
/* -1 FKD_E_REPLAY if seen before, else records it and returns 0. */
int fkd_wire_replay_check(fkd_wire_replay *r, uint64_t round,
                          const uint8_t client[FKD_WIRE_ID_BYTES],
                          const uint8_t nonce[FKD_WIRE_NONCE_BYTES], fkd_error *err);
void fkd_wire_replay_forget_before(fkd_wire_replay *r, uint64_t round);
size_t fkd_wire_replay_count(const fkd_wire_replay *r);
void fkd_wire_replay_free(fkd_wire_replay **r);

/* ======================================================================== *
 * Chunked transfers (no I/O: the caller moves the bytes)
 *
 * Sender:  new -> loop { next() gives a message to send (BEGIN, then chunks
 *          while credit lasts); on_credit() for each XFER_CREDIT received }
 *          until done(). After a reconnect, or when no credit arrived for a
 *          timeout, call restart(): the next message is BEGIN again and the
 *          receiver's answer tells where to resume.
 * Receiver: on_begin() / on_chunk() for each message received; next() gives
 *          the XFER_CREDIT to send, if one is due; done() when the payload is
 *          complete and its hash verified; then take() the payload (a whole
 *          encoded message of type kind: decode it with fkd_wire_decode).
 * ======================================================================== */
typedef struct fkd_wire_xsend fkd_wire_xsend;
typedef struct fkd_wire_xrecv fkd_wire_xrecv;

/* payload is borrowed and must stay alive until the sender is freed. Messages
 * produced carry sender and round in their envelope. */
int fkd_wire_xsend_new(fkd_wire_xsend **s, const uint8_t *payload, size_t bytes, uint32_t kind,
                       uint32_t chunk_bytes, const uint8_t sender[FKD_WIRE_ID_BYTES],
                       uint64_t round, fkd_error *err);
/* 1: *msg (malloc'ed, free()) is to be sent; 0: nothing to send now. */
int fkd_wire_xsend_next(fkd_wire_xsend *s, uint8_t **msg, size_t *len, fkd_error *err);
int fkd_wire_xsend_on_credit(fkd_wire_xsend *s, const fkd_wire_xcredit *c, fkd_error *err);
void fkd_wire_xsend_restart(fkd_wire_xsend *s);
int fkd_wire_xsend_done(const fkd_wire_xsend *s);
uint64_t fkd_wire_xsend_id(const fkd_wire_xsend *s);
uint32_t fkd_wire_xsend_chunks_sent(const fkd_wire_xsend *s); /* including resends */
void fkd_wire_xsend_free(fkd_wire_xsend **s);

/* window: chunks in flight to grant (0 -> FKD_WIRE_DEFAULT_WINDOW). */
int fkd_wire_xrecv_new(fkd_wire_xrecv **r, const fkd_wire_limits *lim, uint32_t window,
                       const uint8_t sender[FKD_WIRE_ID_BYTES], uint64_t round, fkd_error *err);
int fkd_wire_xrecv_on_begin(fkd_wire_xrecv *r, const fkd_wire_xbegin *b, fkd_error *err);
/* A chunk with a bad hash, or for another transfer, is an error; an
 * out-of-order chunk is dropped and a credit with the resume point is queued. */
int fkd_wire_xrecv_on_chunk(fkd_wire_xrecv *r, const fkd_wire_xchunk *c, fkd_error *err);
/* 1: *msg (malloc'ed) is an XFER_CREDIT to send; 0: nothing due. */
int fkd_wire_xrecv_next(fkd_wire_xrecv *r, uint8_t **msg, size_t *len, fkd_error *err);
int fkd_wire_xrecv_done(const fkd_wire_xrecv *r);
uint32_t fkd_wire_xrecv_kind(const fkd_wire_xrecv *r);
/* Chunks received and verified so far, of how many (0 of 0 before a BEGIN). */
void fkd_wire_xrecv_progress(const fkd_wire_xrecv *r, uint32_t *chunks_done,
                             uint32_t *chunks_total);
/* Hands the completed payload to the caller (free() it) and forgets the transfer. */
int fkd_wire_xrecv_take(fkd_wire_xrecv *r, uint8_t **payload, size_t *bytes, fkd_error *err);
void fkd_wire_xrecv_free(fkd_wire_xrecv **r);

/* ======================================================================== *
 * ZeroMQ transport
 * ======================================================================== */
typedef struct fkd_wire_zap fkd_wire_zap;

/* Starts the ZAP handler thread in zmq context ctx, admitting the transport
 * keys listed in allowlist_path. Must run before fkd_wire_server_open.
 * Shutdown order: close the server socket, fkd_wire_zap_stop, zmq_ctx_term. */
int fkd_wire_zap_start(fkd_wire_zap **zap, void *ctx, const char *allowlist_path,
                       fkd_error *err);
/* Re-reads the allow-list now (from any thread). On a bad file the old list
 * stays in force and -1 is returned. */
int fkd_wire_zap_reload(fkd_wire_zap *zap, fkd_error *err);
/* Async-signal-safe: asks the ZAP thread to re-read the file (within 250 ms). */
void fkd_wire_zap_request_reload(fkd_wire_zap *zap);
/* Counters for tests and status pages. */
uint64_t fkd_wire_zap_reloads(const fkd_wire_zap *zap);
uint64_t fkd_wire_zap_denied(const fkd_wire_zap *zap);
void fkd_wire_zap_stop(fkd_wire_zap **zap);

/* The peer a ROUTER frame came from (or goes to). */
#define FKD_WIRE_ROUTING_MAX 256
typedef struct {
    uint8_t routing_id[FKD_WIRE_ROUTING_MAX];
    size_t routing_len;
    int authenticated;                      /* ZAP admitted it: sign_pk is valid */
    uint8_t sign_pk[FKD_WIRE_KEY_BYTES];    /* from the allow-list entry */
} fkd_wire_peer;

/* Coordinator: a CURVE server ROUTER bound to endpoint, authenticated by zap. */
int fkd_wire_server_open(void **sock, void *ctx, const fkd_wire_identity *id, fkd_wire_zap *zap,
                         const char *endpoint, const fkd_wire_limits *lim, fkd_error *err);
/* Client: a CURVE client DEALER connected to endpoint, expecting the server
 * transport key server_curve_pk. */
int fkd_wire_client_open(void **sock, void *ctx, const fkd_wire_identity *id,
                         const uint8_t server_curve_pk[FKD_WIRE_KEY_BYTES], const char *endpoint,
                         const fkd_wire_limits *lim, fkd_error *err);
void fkd_wire_socket_close(void **sock);
/* Client: one CURVE handshake and nothing else, to tell an operator why no
 * session opens: 0 admitted; -1 FKD_E_AUTH (key not in the coordinator's
 * allow-list, or wrong coordinator key); -1 FKD_E_TIMEOUT (nobody answered).
 * A refused DEALER is never retried by libzmq: reopen the socket to retry. */
int fkd_wire_client_probe(void *ctx, const fkd_wire_identity *id,
                          const uint8_t server_curve_pk[FKD_WIRE_KEY_BYTES], const char *endpoint,
                          int timeout_ms, fkd_error *err);

/* Coordinator: 0 if the envelope's sender is the Ed25519 key ZAP vouched for
 * on this connection, else -1 FKD_E_AUTH (answer ERROR and drop the message). */
int fkd_wire_check_sender(const fkd_wire_peer *peer, const fkd_wire_env *env, fkd_error *err);

/* Sends one message (to peer on a ROUTER; peer NULL on a DEALER), waiting at
 * most timeout_ms for room (-1 FKD_E_TIMEOUT). */
int fkd_wire_send(void *sock, const fkd_wire_peer *peer, const uint8_t *msg, size_t len,
                  int timeout_ms, fkd_error *err);
/* Receives one message into a malloc'ed buffer (free()); fills peer on a
 * ROUTER (pass NULL on a DEALER). -1 FKD_E_TIMEOUT after timeout_ms. */
int fkd_wire_recv(void *sock, fkd_wire_peer *peer, uint8_t **msg, size_t *len, int timeout_ms,
                  const fkd_wire_limits *lim, fkd_error *err);

#endif
