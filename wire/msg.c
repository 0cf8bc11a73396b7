/* msg.c — the envelope and the MessagePack bodies of every message.
 *
 * Each message type is described once, by a table of fields (key, kind,
 * required, where it lives in the C struct); one encoder and one decoder walk
 * those tables, so the format of a type is its table and nothing else.
 *
 * Decoding untrusted bytes happens in two steps. First scan_object() walks
 * the body with explicit bounds: every declared length and element count must
 * fit in the bytes that are left, depth and object count are capped. Only
 * then is msgpack-c asked to build its object tree; the scan is what keeps
 * msgpack-c from allocating for an array of 4 billion elements declared in
 * five bytes. Blob fields then point into the caller's buffer. */
#include "fkd_wire.h"

#include <math.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 8

/* ---- limits, names, key/value maps --------------------------------------- */
void fkd_wire_limits_default(fkd_wire_limits *lim)
{
    lim->max_message_bytes = FKD_WIRE_DEFAULT_MAX_MESSAGE;
    lim->max_frame_bytes = FKD_WIRE_DEFAULT_MAX_FRAME;
    lim->max_blob_bytes = FKD_WIRE_DEFAULT_MAX_MESSAGE;
    lim->max_chunk_bytes = FKD_WIRE_DEFAULT_MAX_CHUNK;
    lim->max_objects = FKD_WIRE_DEFAULT_MAX_OBJECTS;
}

static const fkd_wire_limits *limits_or_default(const fkd_wire_limits *lim, fkd_wire_limits *tmp)
{
    if (lim) return lim;
    fkd_wire_limits_default(tmp);
    return tmp;
}

static const char *const type_names[FKD_WIRE_TYPE_MAX + 1] = {
    "?",     "HELLO",     "WELCOME",   "REJECT",      "TASK",       "UPDATE",      "ACK",
    "ERROR", "HEARTBEAT", "BYE",       "XFER_BEGIN",  "XFER_CHUNK", "XFER_CREDIT",
};

const char *fkd_wire_type_name(int type)
{
    return type >= 1 && type <= FKD_WIRE_TYPE_MAX ? type_names[type] : "?";
}

int fkd_wire_kv_set(fkd_wire_kvmap *m, const char *key, double value, fkd_error *err)
{
    size_t klen = strlen(key);
    if (klen == 0 || klen > FKD_WIRE_KV_KEY_MAX)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "map key '%s' must be 1 to %d bytes", key,
                             FKD_WIRE_KV_KEY_MAX);
    for (uint32_t i = 0; i < m->n; i++)
        if (strcmp(m->kv[i].key, key) == 0) {
            m->kv[i].value = value;
            return 0;
        }
    if (m->n >= FKD_WIRE_KV_MAX)
        return fkd_error_set(err, FKD_E_LIMIT, "map is full (%d entries); cannot add '%s'",
                             FKD_WIRE_KV_MAX, key);
    memcpy(m->kv[m->n].key, key, klen + 1);
    m->kv[m->n].value = value;
    m->n++;
    return 0;
}

int fkd_wire_kv_get(const fkd_wire_kvmap *m, const char *key, double *value)
{
    for (uint32_t i = 0; i < m->n; i++)
        if (strcmp(m->kv[i].key, key) == 0) {
            *value = m->kv[i].value;
            return 1;
        }
    return 0;
}

void fkd_wire_msg_init(fkd_wire_msg *msg, int type, const uint8_t sender[FKD_WIRE_ID_BYTES],
                       uint64_t round)
{
    memset(msg, 0, sizeof *msg);
    msg->env.major = FKD_WIRE_VERSION_MAJOR;
    msg->env.minor = FKD_WIRE_VERSION_MINOR;
    msg->env.type = (uint8_t)type;
    if (sender) memcpy(msg->env.sender, sender, FKD_WIRE_ID_BYTES);
    msg->env.round = round;
}

/* ---- field tables ----------------------------------------------------------- */
enum kind { K_U64, K_U32, K_F64, K_BLOB, K_BYTES, K_TEXT, K_KV };

typedef struct {
    const char *key;
    uint8_t kind;
    uint8_t required;
    uint16_t size;     /* K_BYTES: exact length; K_TEXT: longest text */
    size_t offset;     /* in the fkd_wire_msg union */
} field;

#define F(st, member, key, kind, req, size) {key, kind, req, size, offsetof(st, member)}

static const field hello_fields[] = {
    F(fkd_wire_hello, cores, "cores", K_U32, 1, 0),
    F(fkd_wire_hello, memory_mb, "memory_mb", K_U32, 1, 0),
    F(fkd_wire_hello, train_tokens_per_s, "train_tokens_per_s", K_F64, 1, 0),
    F(fkd_wire_hello, link_kbps, "link_kbps", K_F64, 1, 0),
    F(fkd_wire_hello, local_tokens, "local_tokens", K_U64, 1, 0),
    F(fkd_wire_hello, model_version, "model_version", K_U64, 1, 0),
    F(fkd_wire_hello, software, "software", K_TEXT, 0, FKD_WIRE_NAME_MAX),
};
static const field welcome_fields[] = {
    F(fkd_wire_welcome, session, "session", K_U64, 1, 0),
    F(fkd_wire_welcome, model_version, "model_version", K_U64, 1, 0),
    F(fkd_wire_welcome, heartbeat_ms, "heartbeat_ms", K_U32, 1, 0),
    F(fkd_wire_welcome, chunk_bytes, "chunk_bytes", K_U32, 1, 0),
    F(fkd_wire_welcome, window, "window", K_U32, 1, 0),
};
static const field reject_fields[] = {
    F(fkd_wire_reject, code, "code", K_U32, 1, 0),
    F(fkd_wire_reject, reason, "reason", K_TEXT, 1, FKD_WIRE_TEXT_MAX),
    F(fkd_wire_reject, retry_after_ms, "retry_after_ms", K_U32, 0, 0),
};
static const field task_fields[] = {
    F(fkd_wire_task, model_version, "model_version", K_U64, 1, 0),
    F(fkd_wire_task, deadline_ms, "deadline_ms", K_U64, 1, 0),
    F(fkd_wire_task, student_config, "student_config", K_BLOB, 1, 0),
    F(fkd_wire_task, weights, "weights", K_BLOB, 1, 0),
    F(fkd_wire_task, soft_labels, "soft_labels", K_BLOB, 1, 0),
    F(fkd_wire_task, hparams, "hparams", K_KV, 1, 0),
    F(fkd_wire_task, compression, "compression", K_KV, 1, 0),
};
static const field update_fields[] = {
    F(fkd_wire_update, model_version, "model_version", K_U64, 1, 0),
    F(fkd_wire_update, samples, "samples", K_U64, 1, 0),
    F(fkd_wire_update, metrics, "metrics", K_KV, 1, 0),
    F(fkd_wire_update, sealed, "sealed", K_BLOB, 1, 0),
    F(fkd_wire_update, kind, "kind", K_U32, 0, 0),
};
static const field ack_fields[] = {
    F(fkd_wire_ack, acked_type, "acked_type", K_U32, 1, 0),
    F(fkd_wire_ack, acked_nonce, "acked_nonce", K_BYTES, 1, FKD_WIRE_NONCE_BYTES),
};
static const field error_fields[] = {
    F(fkd_wire_errmsg, code, "code", K_U32, 1, 0),
    F(fkd_wire_errmsg, text, "text", K_TEXT, 1, FKD_WIRE_TEXT_MAX),
};
static const field heartbeat_fields[] = {
    F(fkd_wire_heartbeat, seq, "seq", K_U64, 1, 0),
    F(fkd_wire_heartbeat, progress, "progress", K_F64, 0, 0),
};
static const field bye_fields[] = {
    F(fkd_wire_bye, reason, "reason", K_TEXT, 0, FKD_WIRE_TEXT_MAX),
};
static const field xbegin_fields[] = {
    F(fkd_wire_xbegin, xfer, "xfer", K_U64, 1, 0),
    F(fkd_wire_xbegin, kind, "kind", K_U32, 1, 0),
    F(fkd_wire_xbegin, total, "total", K_U64, 1, 0),
    F(fkd_wire_xbegin, chunk_bytes, "chunk_bytes", K_U32, 1, 0),
    F(fkd_wire_xbegin, n_chunks, "n_chunks", K_U32, 1, 0),
    F(fkd_wire_xbegin, hash, "hash", K_BYTES, 1, FKD_WIRE_HASH_BYTES),
};
static const field xchunk_fields[] = {
    F(fkd_wire_xchunk, xfer, "xfer", K_U64, 1, 0),
    F(fkd_wire_xchunk, index, "index", K_U32, 1, 0),
    F(fkd_wire_xchunk, data, "data", K_BLOB, 1, 0),
    F(fkd_wire_xchunk, hash, "hash", K_BYTES, 1, FKD_WIRE_CHUNK_HASH_BYTES),
};
static const field xcredit_fields[] = {
    F(fkd_wire_xcredit, xfer, "xfer", K_U64, 1, 0),
    F(fkd_wire_xcredit, next, "next", K_U32, 1, 0),
    F(fkd_wire_xcredit, credit, "credit", K_U32, 1, 0),
    F(fkd_wire_xcredit, status, "status", K_U32, 1, 0),
};

typedef struct {
    const field *fields;
    int n;
} schema;

#define S(t) {t, (int)(sizeof t / sizeof t[0])}
static const schema schemas[FKD_WIRE_TYPE_MAX + 1] = {
    {NULL, 0},           S(hello_fields),  S(welcome_fields),   S(reject_fields),
    S(task_fields),      S(update_fields), S(ack_fields),       S(error_fields),
    S(heartbeat_fields), S(bye_fields),    S(xbegin_fields),    S(xchunk_fields),
    S(xcredit_fields),
};

static int type_known(int type) { return type >= 1 && type <= FKD_WIRE_TYPE_MAX; }

/* ---- envelope ----------------------------------------------------------------- */
static void put_u64be(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

static uint64_t get_u64be(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | p[i];
    return v;
}

static void put_env(uint8_t *p, const fkd_wire_env *env, uint32_t body_len)
{
    memcpy(p, FKD_WIRE_MAGIC, 4);
    p[4] = env->major;
    p[5] = env->minor;
    p[6] = env->type;
    p[7] = 0; /* flags, reserved */
    memcpy(p + 8, env->sender, FKD_WIRE_ID_BYTES);
    put_u64be(p + 40, env->round);
    memcpy(p + 48, env->nonce, FKD_WIRE_NONCE_BYTES);
    for (int i = 3; i >= 0; i--, body_len >>= 8) p[72 + i] = (uint8_t)body_len;
}

int fkd_wire_decode_env(fkd_wire_env *env, const uint8_t *buf, size_t len,
                        const fkd_wire_limits *lim, fkd_error *err)
{
    fkd_wire_limits tmp;
    lim = limits_or_default(lim, &tmp);
    if (len < FKD_WIRE_ENV_BYTES)
        return fkd_error_set(err, FKD_E_TRUNCATED,
                             "message of %zu bytes is shorter than the %d-byte envelope", len,
                             FKD_WIRE_ENV_BYTES);
    if (memcmp(buf, FKD_WIRE_MAGIC, 4) != 0)
        return fkd_error_set(err, FKD_E_FORMAT, "not a fedkd message (bad magic)");
    if (len > lim->max_message_bytes)
        return fkd_error_set(err, FKD_E_LIMIT, "message of %zu bytes is above the limit of %zu",
                             len, lim->max_message_bytes);
    memset(env, 0, sizeof *env);
    env->major = buf[4];
    env->minor = buf[5];
    env->type = buf[6];
    if (env->major > FKD_WIRE_VERSION_MAJOR)
        return fkd_error_set(err, FKD_E_VERSION,
                             "peer speaks protocol %u.%u; this build speaks %d.%d: upgrade fedkd",
                             env->major, env->minor, FKD_WIRE_VERSION_MAJOR,
                             FKD_WIRE_VERSION_MINOR);
    if (env->major < 1)
        return fkd_error_set(err, FKD_E_VERSION, "protocol version 0.%u is not supported",
                             env->minor);
    if (!type_known(env->type))
        return fkd_error_set(err, FKD_E_FORMAT, "unknown message type %u", env->type);
    memcpy(env->sender, buf + 8, FKD_WIRE_ID_BYTES);
    env->round = get_u64be(buf + 40);
    memcpy(env->nonce, buf + 48, FKD_WIRE_NONCE_BYTES);
    uint32_t body = (uint32_t)buf[72] << 24 | (uint32_t)buf[73] << 16 | (uint32_t)buf[74] << 8 |
                    buf[75];
    if (body > len - FKD_WIRE_ENV_BYTES)
        return fkd_error_set(err, FKD_E_TRUNCATED,
                             "%s body declares %u bytes but only %zu are present",
                             fkd_wire_type_name(env->type), body, len - FKD_WIRE_ENV_BYTES);
    if (body < len - FKD_WIRE_ENV_BYTES)
        return fkd_error_set(err, FKD_E_FORMAT, "%zu stray bytes after the %s body",
                             len - FKD_WIRE_ENV_BYTES - body, fkd_wire_type_name(env->type));
    return 0;
}

/* ---- encoding ------------------------------------------------------------------ */
/* A msgpack write target: counts bytes, and copies them when dst is set. */
typedef struct {
    uint8_t *dst;
    size_t cap, len;
} sink;

static int sink_write(void *data, const char *buf, size_t len)
{
    sink *s = data;
    if (s->dst && len > 0) { /* an empty blob may come with a NULL buffer */
        if (len > s->cap - s->len) return -1;
        memcpy(s->dst + s->len, buf, len);
    }
    s->len += len;
    return 0;
}

static int pack_str(msgpack_packer *pk, const char *s, size_t len)
{
    return msgpack_pack_str(pk, len) || msgpack_pack_str_body(pk, s, len);
}

static int pack_field(msgpack_packer *pk, const field *f, const uint8_t *base)
{
    const void *p = base + f->offset;
    switch (f->kind) {
    case K_U64: return msgpack_pack_uint64(pk, *(const uint64_t *)p);
    case K_U32: return msgpack_pack_uint32(pk, *(const uint32_t *)p);
    case K_F64: return msgpack_pack_double(pk, *(const double *)p);
    case K_BLOB: {
        const fkd_wire_blob *b = p;
        return msgpack_pack_bin(pk, b->len) || msgpack_pack_bin_body(pk, b->data, b->len);
    }
    case K_BYTES: return msgpack_pack_bin(pk, f->size) || msgpack_pack_bin_body(pk, p, f->size);
    case K_TEXT: return pack_str(pk, p, strnlen(p, f->size));
    case K_KV: {
        const fkd_wire_kvmap *m = p;
        int rc = msgpack_pack_map(pk, m->n);
        for (uint32_t i = 0; i < m->n && !rc; i++)
            rc = pack_str(pk, m->kv[i].key, strnlen(m->kv[i].key, FKD_WIRE_KV_KEY_MAX)) ||
                 msgpack_pack_double(pk, m->kv[i].value);
        return rc;
    }
    default: return -1;
    }
}

/* Optional fields are left out when they hold their zero value. */
static int field_present(const field *f, const uint8_t *base)
{
    if (f->required) return 1;
    const uint8_t *p = base + f->offset;
    switch (f->kind) {
    case K_U32: return *(const uint32_t *)p != 0;
    case K_U64: return *(const uint64_t *)p != 0;
    case K_F64: return *(const double *)p != 0.0;
    case K_TEXT: return p[0] != 0;
    default: return 1;
    }
}

static int pack_body(sink *s, const fkd_wire_msg *msg)
{
    const schema *sc = &schemas[msg->env.type];
    const uint8_t *base = (const uint8_t *)&msg->u;
    msgpack_packer pk;
    msgpack_packer_init(&pk, s, sink_write);
    uint32_t n = 0;
    for (int i = 0; i < sc->n; i++) n += (uint32_t)field_present(&sc->fields[i], base);
    if (msgpack_pack_map(&pk, n)) return -1;
    for (int i = 0; i < sc->n; i++) {
        const field *f = &sc->fields[i];
        if (!field_present(f, base)) continue;
        if (pack_str(&pk, f->key, strlen(f->key)) || pack_field(&pk, f, base)) return -1;
    }
    return 0;
}

/* Checks the fields the encoder cannot represent, so that a message we
 * encode is always one we would decode. */
static int check_encodable(const fkd_wire_msg *msg, fkd_error *err)
{
    if (!type_known(msg->env.type))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "cannot encode message type %u",
                             msg->env.type);
    const schema *sc = &schemas[msg->env.type];
    const uint8_t *base = (const uint8_t *)&msg->u;
    for (int i = 0; i < sc->n; i++) {
        const field *f = &sc->fields[i];
        const void *p = base + f->offset;
        if (f->kind == K_BLOB) {
            const fkd_wire_blob *b = p;
            if (b->len > UINT32_MAX || (b->len && !b->data))
                return fkd_error_set(err, FKD_E_INVALID_ARG, "field '%s' has no data or is "
                                     "above 4 GiB", f->key);
        } else if (f->kind == K_KV) {
            const fkd_wire_kvmap *m = p;
            if (m->n > FKD_WIRE_KV_MAX)
                return fkd_error_set(err, FKD_E_INVALID_ARG, "map '%s' has %u entries (max %d)",
                                     f->key, m->n, FKD_WIRE_KV_MAX);
        }
    }
    return 0;
}

size_t fkd_wire_encoded_bytes(const fkd_wire_msg *msg)
{
    if (check_encodable(msg, NULL)) return 0;
    sink s = {0};
    if (pack_body(&s, msg)) return 0;
    return FKD_WIRE_ENV_BYTES + s.len;
}

int fkd_wire_encode_into(uint8_t *out, size_t cap, size_t *out_len, fkd_wire_msg *msg,
                         fkd_error *err)
{
    if (check_encodable(msg, err)) return -1;
    size_t need = fkd_wire_encoded_bytes(msg);
    if (need - FKD_WIRE_ENV_BYTES > UINT32_MAX)
        return fkd_error_set(err, FKD_E_LIMIT, "%s body is above 4 GiB",
                             fkd_wire_type_name(msg->env.type));
    if (cap < need)
        return fkd_error_set(err, FKD_E_LIMIT, "%s needs %zu bytes, buffer has %zu",
                             fkd_wire_type_name(msg->env.type), need, cap);
    randombytes_buf(msg->env.nonce, FKD_WIRE_NONCE_BYTES);
    sink s = {out + FKD_WIRE_ENV_BYTES, cap - FKD_WIRE_ENV_BYTES, 0};
    if (pack_body(&s, msg))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "cannot encode %s",
                             fkd_wire_type_name(msg->env.type));
    put_env(out, &msg->env, (uint32_t)s.len);
    *out_len = FKD_WIRE_ENV_BYTES + s.len;
    return 0;
}

int fkd_wire_encode(uint8_t **out, size_t *out_len, fkd_wire_msg *msg, fkd_error *err)
{
    *out = NULL;
    if (check_encodable(msg, err)) return -1;
    size_t need = fkd_wire_encoded_bytes(msg);
    uint8_t *buf = malloc(need ? need : 1);
    if (!buf) return fkd_error_set(err, FKD_E_NOMEM, "cannot allocate %zu bytes", need);
    if (fkd_wire_encode_into(buf, need, out_len, msg, err)) {
        free(buf);
        return -1;
    }
    *out = buf;
    return 0;
}

/* ---- the bounds scan ----------------------------------------------------------- */
typedef struct {
    const uint8_t *p, *end;
    uint32_t objects, max_objects;
} scanner;

static int take(scanner *s, size_t n, size_t *v)
{
    if ((size_t)(s->end - s->p) < n) return -1;
    size_t x = 0;
    for (size_t i = 0; i < n; i++) x = x << 8 | s->p[i];
    s->p += n;
    *v = x;
    return 0;
}

static size_t left(const scanner *s) { return (size_t)(s->end - s->p); }

/* Skips one object. Returns 0, or the error code to report. */
static int scan_object(scanner *s, int depth)
{
    if (depth > MAX_DEPTH) return FKD_E_LIMIT;
    if (++s->objects > s->max_objects) return FKD_E_LIMIT;
    if (s->p >= s->end) return FKD_E_TRUNCATED;
    uint8_t t = *s->p++;
    size_t n = 0, skip = 0, items = 0;
    int is_map = 0, is_container = 0;
    if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) return 0;
    if ((t & 0xf0) == 0x80) { items = t & 0x0f; is_map = is_container = 1; }
    else if ((t & 0xf0) == 0x90) { items = t & 0x0f; is_container = 1; }
    else if ((t & 0xe0) == 0xa0) skip = t & 0x1f;
    else {
        switch (t) {
        case 0xc4: case 0xd9: if (take(s, 1, &skip)) return FKD_E_TRUNCATED; break; /* bin8 str8 */
        case 0xc5: case 0xda: if (take(s, 2, &skip)) return FKD_E_TRUNCATED; break;
        case 0xc6: case 0xdb: if (take(s, 4, &skip)) return FKD_E_TRUNCATED; break;
        case 0xc7: if (take(s, 1, &n)) return FKD_E_TRUNCATED; skip = n + 1; break; /* ext */
        case 0xc8: if (take(s, 2, &n)) return FKD_E_TRUNCATED; skip = n + 1; break;
        case 0xc9: if (take(s, 4, &n)) return FKD_E_TRUNCATED; skip = n + 1; break;
        case 0xca: case 0xce: case 0xd2: skip = 4; break;
        case 0xcb: case 0xcf: case 0xd3: skip = 8; break;
        case 0xcc: case 0xd0: skip = 1; break;
        case 0xcd: case 0xd1: skip = 2; break;
        case 0xd4: skip = 2; break; /* fixext 1..16: type byte + data */
        case 0xd5: skip = 3; break;
        case 0xd6: skip = 5; break;
        case 0xd7: skip = 9; break;
        case 0xd8: skip = 17; break;
        case 0xdc: if (take(s, 2, &items)) return FKD_E_TRUNCATED; is_container = 1; break;
        case 0xdd: if (take(s, 4, &items)) return FKD_E_TRUNCATED; is_container = 1; break;
        case 0xde: if (take(s, 2, &items)) return FKD_E_TRUNCATED; is_map = is_container = 1; break;
        case 0xdf: if (take(s, 4, &items)) return FKD_E_TRUNCATED; is_map = is_container = 1; break;
        default: return FKD_E_FORMAT; /* 0xc1 is never used */
        }
    }
    if (!is_container) {
        if (skip > left(s)) return FKD_E_TRUNCATED;
        s->p += skip;
        return 0;
    }
    /* Every element takes at least one byte: a count above the bytes left
     * is a lie, refused before anyone allocates for it. */
    if (is_map) {
        if (items > left(s) / 2) return FKD_E_TRUNCATED;
        items *= 2;
    } else if (items > left(s)) {
        return FKD_E_TRUNCATED;
    }
    if (items > s->max_objects) return FKD_E_LIMIT;
    for (size_t i = 0; i < items; i++) {
        int rc = scan_object(s, depth + 1);
        if (rc) return rc;
    }
    return 0;
}

/* ---- decoding ------------------------------------------------------------------- */
static int key_is(const msgpack_object *k, const char *name)
{
    size_t n = strlen(name);
    return k->via.str.size == n && memcmp(k->via.str.ptr, name, n) == 0;
}

static int get_uint(uint64_t *v, const msgpack_object *o)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) return -1;
    *v = o->via.u64;
    return 0;
}

static int get_number(double *v, const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: *v = o->via.f64; return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: *v = (double)o->via.u64; return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: *v = (double)o->via.i64; return 0;
    default: return -1;
    }
}

/* A text field: UTF-8 is the peer's business, but an embedded NUL would
 * silently shorten the C string, so it is refused. */
static int get_text(char *dst, size_t max, const msgpack_object *o, const char *key,
                    fkd_error *err)
{
    if (o->type != MSGPACK_OBJECT_STR)
        return fkd_error_set(err, FKD_E_FORMAT, "field '%s' must be a string", key);
    size_t n = o->via.str.size;
    if (n > max)
        return fkd_error_set(err, FKD_E_LIMIT, "field '%s' is %zu bytes long (max %zu)", key, n,
                             max);
    if (n && memchr(o->via.str.ptr, 0, n))
        return fkd_error_set(err, FKD_E_FORMAT, "field '%s' contains a NUL byte", key);
    memcpy(dst, o->via.str.ptr, n);
    dst[n] = 0;
    return 0;
}

static int get_kv(fkd_wire_kvmap *m, const msgpack_object *o, const char *key, fkd_error *err)
{
    if (o->type != MSGPACK_OBJECT_MAP)
        return fkd_error_set(err, FKD_E_FORMAT, "field '%s' must be a map", key);
    if (o->via.map.size > FKD_WIRE_KV_MAX)
        return fkd_error_set(err, FKD_E_LIMIT, "map '%s' has %u entries (max %d)", key,
                             o->via.map.size, FKD_WIRE_KV_MAX);
    m->n = 0;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        fkd_wire_kv *e = &m->kv[m->n];
        if (get_text(e->key, FKD_WIRE_KV_KEY_MAX, &kv->key, key, err)) return -1;
        if (!e->key[0]) return fkd_error_set(err, FKD_E_FORMAT, "map '%s' has an empty key", key);
        if (get_number(&e->value, &kv->val))
            return fkd_error_set(err, FKD_E_FORMAT, "map '%s' entry '%s' must be a number", key,
                                 e->key);
        if (!isfinite(e->value))
            return fkd_error_set(err, FKD_E_FORMAT, "map '%s' entry '%s' is not finite", key,
                                 e->key);
        for (uint32_t j = 0; j < m->n; j++)
            if (strcmp(m->kv[j].key, e->key) == 0)
                return fkd_error_set(err, FKD_E_FORMAT, "map '%s' repeats key '%s'", key,
                                     e->key);
        m->n++;
    }
    return 0;
}

static int get_field(uint8_t *base, const field *f, const msgpack_object *o,
                     const fkd_wire_limits *lim, fkd_error *err)
{
    void *p = base + f->offset;
    uint64_t u;
    switch (f->kind) {
    case K_U64:
        if (get_uint(&u, o))
            return fkd_error_set(err, FKD_E_FORMAT, "field '%s' must be an unsigned integer",
                                 f->key);
        *(uint64_t *)p = u;
        return 0;
    case K_U32:
        if (get_uint(&u, o) || u > UINT32_MAX)
            return fkd_error_set(err, FKD_E_FORMAT,
                                 "field '%s' must be an unsigned 32-bit integer", f->key);
        *(uint32_t *)p = (uint32_t)u;
        return 0;
    case K_F64:
        if (get_number((double *)p, o) || !isfinite(*(double *)p))
            return fkd_error_set(err, FKD_E_FORMAT, "field '%s' must be a finite number",
                                 f->key);
        return 0;
    case K_BLOB: {
        if (o->type != MSGPACK_OBJECT_BIN)
            return fkd_error_set(err, FKD_E_FORMAT, "field '%s' must be binary", f->key);
        if (o->via.bin.size > lim->max_blob_bytes)
            return fkd_error_set(err, FKD_E_LIMIT, "field '%s' is %u bytes (limit %zu)", f->key,
                                 o->via.bin.size, lim->max_blob_bytes);
        fkd_wire_blob *b = p;
        b->data = (const uint8_t *)o->via.bin.ptr;
        b->len = o->via.bin.size;
        return 0;
    }
    case K_BYTES:
        if (o->type != MSGPACK_OBJECT_BIN || o->via.bin.size != f->size)
            return fkd_error_set(err, FKD_E_FORMAT, "field '%s' must be %u binary bytes",
                                 f->key, f->size);
        memcpy(p, o->via.bin.ptr, f->size);
        return 0;
    case K_TEXT: return get_text(p, f->size, o, f->key, err);
    case K_KV: return get_kv(p, o, f->key, err);
    default: return fkd_error_set(err, FKD_E_FORMAT, "internal: bad field kind");
    }
}

static int decode_body(fkd_wire_msg *msg, const msgpack_object *root, const fkd_wire_limits *lim,
                       fkd_error *err)
{
    const char *tname = fkd_wire_type_name(msg->env.type);
    if (root->type != MSGPACK_OBJECT_MAP)
        return fkd_error_set(err, FKD_E_FORMAT, "%s body must be a map", tname);
    const schema *sc = &schemas[msg->env.type];
    uint32_t seen = 0; /* bit i: field i was present */
    uint8_t *base = (uint8_t *)&msg->u;
    for (uint32_t i = 0; i < root->via.map.size; i++) {
        const msgpack_object_kv *kv = &root->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR)
            return fkd_error_set(err, FKD_E_FORMAT, "%s body has a key that is not a string",
                                 tname);
        for (int j = 0; j < sc->n; j++) {
            if (!key_is(&kv->key, sc->fields[j].key)) continue;
            if (seen & (1u << j))
                return fkd_error_set(err, FKD_E_FORMAT, "%s repeats field '%s'", tname,
                                     sc->fields[j].key);
            seen |= 1u << j;
            if (get_field(base, &sc->fields[j], &kv->val, lim, err)) return -1;
            break;
        }
        /* keys no field matched: a newer minor version's extras, ignored */
    }
    for (int j = 0; j < sc->n; j++)
        if (sc->fields[j].required && !(seen & (1u << j)))
            return fkd_error_set(err, FKD_E_FORMAT, "%s lacks required field '%s'", tname,
                                 sc->fields[j].key);
    return 0;
}

/* Rules a single field cannot express. */
static int check_semantics(const fkd_wire_msg *msg, const fkd_wire_limits *lim, fkd_error *err)
{
    switch (msg->env.type) {
    case FKD_WIRE_XFER_BEGIN: {
        const fkd_wire_xbegin *b = &msg->u.xbegin;
        if (!type_known((int)b->kind) || b->kind >= FKD_WIRE_XFER_BEGIN)
            return fkd_error_set(err, FKD_E_FORMAT, "XFER_BEGIN carries unknown kind %u",
                                 b->kind);
        if (b->chunk_bytes == 0 || b->chunk_bytes > lim->max_chunk_bytes)
            return fkd_error_set(err, FKD_E_LIMIT, "XFER_BEGIN chunk of %u bytes (limit %u)",
                                 b->chunk_bytes, lim->max_chunk_bytes);
        if (b->total == 0 || b->total > lim->max_message_bytes)
            return fkd_error_set(err, FKD_E_LIMIT, "XFER_BEGIN payload of %llu bytes "
                                 "(limit %zu)", (unsigned long long)b->total,
                                 lim->max_message_bytes);
        if (b->n_chunks != (b->total + b->chunk_bytes - 1) / b->chunk_bytes)
            return fkd_error_set(err, FKD_E_FORMAT, "XFER_BEGIN n_chunks %u does not match "
                                 "total and chunk size", b->n_chunks);
        return 0;
    }
    case FKD_WIRE_XFER_CHUNK:
        if (msg->u.xchunk.data.len > lim->max_chunk_bytes || msg->u.xchunk.data.len == 0)
            return fkd_error_set(err, FKD_E_LIMIT, "XFER_CHUNK of %zu bytes (1 to %u allowed)",
                                 msg->u.xchunk.data.len, lim->max_chunk_bytes);
        return 0;
    case FKD_WIRE_XFER_CREDIT:
        if (msg->u.xcredit.status > FKD_WIRE_XFER_RESYNC)
            return fkd_error_set(err, FKD_E_FORMAT, "XFER_CREDIT status %u is unknown",
                                 msg->u.xcredit.status);
        return 0;
    case FKD_WIRE_HEARTBEAT:
        if (msg->u.heartbeat.progress < 0 || msg->u.heartbeat.progress > 1)
            return fkd_error_set(err, FKD_E_FORMAT, "HEARTBEAT progress must be in [0, 1]");
        return 0;
    default: return 0;
    }
}

static const char *scan_error_text(int code)
{
    switch (code) {
    case FKD_E_TRUNCATED: return "declares more bytes or elements than are present";
    case FKD_E_LIMIT: return "is nested too deeply or has too many objects";
    default: return "is not valid MessagePack";
    }
}

int fkd_wire_decode(fkd_wire_msg *msg, const uint8_t *buf, size_t len,
                    const fkd_wire_limits *lim, fkd_error *err)
{
    fkd_wire_limits tmp;
    lim = limits_or_default(lim, &tmp);
    memset(msg, 0, sizeof *msg);
    if (fkd_wire_decode_env(&msg->env, buf, len, lim, err)) return -1;
    const char *tname = fkd_wire_type_name(msg->env.type);
    scanner s = {buf + FKD_WIRE_ENV_BYTES, buf + len, 0, lim->max_objects};
    int rc = scan_object(&s, 0);
    if (rc) return fkd_error_set(err, rc, "%s body %s", tname, scan_error_text(rc));
    if (s.p != s.end)
        return fkd_error_set(err, FKD_E_FORMAT, "%s body is followed by %zu stray bytes", tname,
                             (size_t)(s.end - s.p));

    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack_next(&up, (const char *)buf + FKD_WIRE_ENV_BYTES,
                                                   len - FKD_WIRE_ENV_BYTES, &off);
    if (ur != MSGPACK_UNPACK_SUCCESS) {
        msgpack_unpacked_destroy(&up);
        return fkd_error_set(err, ur == MSGPACK_UNPACK_NOMEM_ERROR ? FKD_E_NOMEM : FKD_E_FORMAT,
                             "%s body cannot be parsed (msgpack error %d)", tname, (int)ur);
    }
    rc = decode_body(msg, &up.data, lim, err);
    msgpack_unpacked_destroy(&up);
    if (rc) return -1;
    return check_semantics(msg, lim, err);
}
