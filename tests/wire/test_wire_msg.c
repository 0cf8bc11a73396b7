/* test_wire_msg.c — every message type round-trips through encode/decode,
 * and broken input (truncated at every byte, wrong types, lying sizes,
 * missing fields, newer versions, limits) is refused with the right code. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "fkd_wire.h"

static const uint8_t sender[FKD_WIRE_ID_BYTES] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
static uint8_t big_blob[3000];

/* Fills msg with distinctive values for its type. */
static void fill(fkd_wire_msg *m, int type)
{
    fkd_wire_msg_init(m, type, sender, 42);
    switch (type) {
    case FKD_WIRE_HELLO:
        m->u.hello = (fkd_wire_hello){4, 2048, 1234.5, 800.25, 99999, 7, "fedkd-client 0.1.0"};
        break;
    case FKD_WIRE_WELCOME: m->u.welcome = (fkd_wire_welcome){77, 8, 5000, 1 << 20, 8}; break;
    case FKD_WIRE_REJECT:
        m->u.reject.code = FKD_E_LIMIT;
        m->u.reject.retry_after_ms = 60000;
        strcpy(m->u.reject.reason, "round is full");
        break;
    case FKD_WIRE_TASK:
        m->u.task.model_version = 8;
        m->u.task.deadline_ms = 1790000000000ull;
        m->u.task.student_config = (fkd_wire_blob){(const uint8_t *)"cfg", 3};
        m->u.task.weights = (fkd_wire_blob){big_blob, sizeof big_blob};
        m->u.task.soft_labels = (fkd_wire_blob){big_blob + 10, 100};
        fkd_wire_kv_set(&m->u.task.hparams, "lr", 3e-4, NULL);
        fkd_wire_kv_set(&m->u.task.hparams, "steps", 200, NULL);
        fkd_wire_kv_set(&m->u.task.compression, "topk", 0.01, NULL);
        break;
    case FKD_WIRE_UPDATE:
        m->u.update.model_version = 8;
        m->u.update.samples = 4096;
        fkd_wire_kv_set(&m->u.update.metrics, "loss", 2.5, NULL);
        m->u.update.sealed = (fkd_wire_blob){big_blob, 500};
        break;
    case FKD_WIRE_ACK:
        m->u.ack.acked_type = FKD_WIRE_UPDATE;
        memset(m->u.ack.acked_nonce, 0xab, FKD_WIRE_NONCE_BYTES);
        break;
    case FKD_WIRE_ERROR:
        m->u.error.code = FKD_E_AUTH;
        strcpy(m->u.error.text, "sealed update does not decrypt");
        break;
    case FKD_WIRE_HEARTBEAT: m->u.heartbeat = (fkd_wire_heartbeat){12, 0.5}; break;
    case FKD_WIRE_BYE: strcpy(m->u.bye.reason, "shutting down"); break;
    case FKD_WIRE_XFER_BEGIN:
        m->u.xbegin = (fkd_wire_xbegin){0x1122334455667788ull, FKD_WIRE_TASK, 3000, 1024, 3, {0}};
        memset(m->u.xbegin.hash, 0x5a, FKD_WIRE_HASH_BYTES);
        break;
    case FKD_WIRE_XFER_CHUNK:
        m->u.xchunk.xfer = 9;
        m->u.xchunk.index = 2;
        m->u.xchunk.data = (fkd_wire_blob){big_blob, 952};
        memset(m->u.xchunk.hash, 0x33, FKD_WIRE_CHUNK_HASH_BYTES);
        break;
    case FKD_WIRE_XFER_CREDIT:
        m->u.xcredit = (fkd_wire_xcredit){9, 3, 8, FKD_WIRE_XFER_CONTINUE};
        break;
    }
}

static void assert_blob_equal(fkd_wire_blob a, fkd_wire_blob b)
{
    assert_int_equal(a.len, b.len);
    if (a.len) assert_memory_equal(a.data, b.data, a.len);
}

static void assert_kv_equal(const fkd_wire_kvmap *a, const fkd_wire_kvmap *b)
{
    assert_int_equal(a->n, b->n);
    for (uint32_t i = 0; i < a->n; i++) {
        assert_string_equal(a->kv[i].key, b->kv[i].key);
        assert_true(a->kv[i].value == b->kv[i].value);
    }
}

static void assert_same(const fkd_wire_msg *a, const fkd_wire_msg *b)
{
    assert_memory_equal(&a->env, &b->env, sizeof a->env);
    switch (a->env.type) {
    case FKD_WIRE_TASK:
        assert_int_equal(a->u.task.model_version, b->u.task.model_version);
        assert_int_equal(a->u.task.deadline_ms, b->u.task.deadline_ms);
        assert_blob_equal(a->u.task.student_config, b->u.task.student_config);
        assert_blob_equal(a->u.task.weights, b->u.task.weights);
        assert_blob_equal(a->u.task.soft_labels, b->u.task.soft_labels);
        assert_kv_equal(&a->u.task.hparams, &b->u.task.hparams);
        assert_kv_equal(&a->u.task.compression, &b->u.task.compression);
        break;
    case FKD_WIRE_UPDATE:
        assert_int_equal(a->u.update.samples, b->u.update.samples);
        assert_int_equal(a->u.update.model_version, b->u.update.model_version);
        assert_kv_equal(&a->u.update.metrics, &b->u.update.metrics);
        assert_blob_equal(a->u.update.sealed, b->u.update.sealed);
        break;
    case FKD_WIRE_XFER_CHUNK:
        assert_int_equal(a->u.xchunk.xfer, b->u.xchunk.xfer);
        assert_int_equal(a->u.xchunk.index, b->u.xchunk.index);
        assert_blob_equal(a->u.xchunk.data, b->u.xchunk.data);
        assert_memory_equal(a->u.xchunk.hash, b->u.xchunk.hash, FKD_WIRE_CHUNK_HASH_BYTES);
        break;
    default:
        /* no pointers in these: the whole union compares */
        assert_memory_equal(&a->u, &b->u, sizeof a->u);
    }
}

static void test_round_trip_every_type(void **state)
{
    for (size_t i = 0; i < sizeof big_blob; i++) big_blob[i] = (uint8_t)(i * 7 + 1);
    for (int t = 1; t <= FKD_WIRE_TYPE_MAX; t++) {
        fkd_wire_msg m, d;
        fill(&m, t);
        uint8_t *buf = NULL;
        size_t len = 0;
        fkd_error err;
        assert_int_equal(fkd_wire_encode(&buf, &len, &m, &err), 0);
        assert_int_equal(len, fkd_wire_encoded_bytes(&m));
        if (fkd_wire_decode(&d, buf, len, NULL, &err)) fail_msg("%s: %s", fkd_wire_type_name(t),
                                                                err.msg);
        assert_same(&m, &d);
        /* a fresh nonce per encoding */
        uint8_t first[FKD_WIRE_NONCE_BYTES];
        memcpy(first, m.env.nonce, sizeof first);
        uint8_t *buf2 = NULL;
        assert_int_equal(fkd_wire_encode(&buf2, &len, &m, &err), 0);
        assert_memory_not_equal(first, m.env.nonce, sizeof first);
        free(buf);
        free(buf2);
    }
}

static void test_blobs_point_into_input(void **state)
{
    fkd_wire_msg m, d;
    fill(&m, FKD_WIRE_TASK);
    uint8_t *buf;
    size_t len;
    assert_int_equal(fkd_wire_encode(&buf, &len, &m, NULL), 0);
    assert_int_equal(fkd_wire_decode(&d, buf, len, NULL, NULL), 0);
    assert_true(d.u.task.weights.data > buf && d.u.task.weights.data + d.u.task.weights.len <= buf + len);
    free(buf);
}

static void test_encode_into_small_buffer(void **state)
{
    fkd_wire_msg m;
    fill(&m, FKD_WIRE_HELLO);
    uint8_t small[40];
    size_t len;
    fkd_error err;
    assert_int_equal(fkd_wire_encode_into(small, sizeof small, &len, &m, &err), -1);
    assert_int_equal(err.code, FKD_E_LIMIT);
}

/* Every proper prefix of every message is refused, never crashes. */
static void test_truncation_at_every_byte(void **state)
{
    for (int t = 1; t <= FKD_WIRE_TYPE_MAX; t++) {
        fkd_wire_msg m, d;
        fill(&m, t);
        uint8_t *buf;
        size_t len;
        assert_int_equal(fkd_wire_encode(&buf, &len, &m, NULL), 0);
        for (size_t cut = 0; cut < len; cut++) {
            uint8_t *copy = malloc(cut ? cut : 1); /* exact size: ASan sees any over-read */
            memcpy(copy, buf, cut);
            fkd_error err;
            assert_int_equal(fkd_wire_decode(&d, copy, cut, NULL, &err), -1);
            free(copy);
        }
        /* and a body length that lies about the bytes present */
        fkd_error err;
        buf[75]++;
        assert_int_equal(fkd_wire_decode(&d, buf, len, NULL, &err), -1);
        assert_int_equal(err.code, FKD_E_TRUNCATED);
        free(buf);
    }
}

/* ---- hand-built bodies ---------------------------------------------------- */
typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} body;

static void body_init(body *b)
{
    msgpack_sbuffer_init(&b->sb);
    msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
}

static void key(body *b, const char *k)
{
    msgpack_pack_str(&b->pk, strlen(k));
    msgpack_pack_str_body(&b->pk, k, strlen(k));
}

/* Envelope of the given type and major version + the body's bytes. */
static uint8_t *wrap(size_t *len, body *b, int type, int major)
{
    fkd_wire_msg m;
    fill(&m, FKD_WIRE_BYE);
    m.u.bye.reason[0] = 0;
    uint8_t *env;
    size_t elen;
    assert_int_equal(fkd_wire_encode(&env, &elen, &m, NULL), 0);
    *len = FKD_WIRE_ENV_BYTES + b->sb.size;
    uint8_t *out = malloc(*len);
    memcpy(out, env, FKD_WIRE_ENV_BYTES);
    memcpy(out + FKD_WIRE_ENV_BYTES, b->sb.data, b->sb.size);
    out[4] = (uint8_t)major;
    out[6] = (uint8_t)type;
    uint32_t n = (uint32_t)b->sb.size;
    out[72] = (uint8_t)(n >> 24), out[73] = (uint8_t)(n >> 16), out[74] = (uint8_t)(n >> 8),
    out[75] = (uint8_t)n;
    free(env);
    msgpack_sbuffer_destroy(&b->sb);
    return out;
}

static int decode_code(uint8_t *buf, size_t len, const fkd_wire_limits *lim)
{
    fkd_wire_msg d;
    fkd_error err = {0};
    int rc = fkd_wire_decode(&d, buf, len, lim, &err);
    free(buf);
    return rc == 0 ? 0 : err.code;
}

/* Wraps and decodes a hand-built body; returns 0 or the error code. */
static int body_code(body *b, int type, const fkd_wire_limits *lim)
{
    size_t len;
    uint8_t *buf = wrap(&len, b, type, 1);
    return decode_code(buf, len, lim);
}

static void heartbeat_body(body *b, int extra)
{
    body_init(b);
    msgpack_pack_map(&b->pk, 1 + extra);
    key(b, "seq");
    msgpack_pack_uint64(&b->pk, 5);
}

static void test_unknown_fields_ignored(void **state)
{
    body b;
    heartbeat_body(&b, 2);
    key(&b, "future_field");
    msgpack_pack_array(&b.pk, 2);
    msgpack_pack_int(&b.pk, -3);
    msgpack_pack_str(&b.pk, 0);
    key(&b, "another");
    msgpack_pack_nil(&b.pk);
    size_t len;
    uint8_t *buf = wrap(&len, &b, FKD_WIRE_HEARTBEAT, 1);
    fkd_wire_msg d;
    assert_int_equal(fkd_wire_decode(&d, buf, len, NULL, NULL), 0);
    assert_int_equal(d.u.heartbeat.seq, 5);
    free(buf);
}

static void test_newer_major_refused_newer_minor_accepted(void **state)
{
    body b;
    heartbeat_body(&b, 0);
    size_t len;
    uint8_t *buf = wrap(&len, &b, FKD_WIRE_HEARTBEAT, 2);
    fkd_wire_msg d;
    fkd_error err;
    assert_int_equal(fkd_wire_decode(&d, buf, len, NULL, &err), -1);
    assert_int_equal(err.code, FKD_E_VERSION);
    assert_non_null(strstr(err.msg, "upgrade"));
    buf[4] = 1;
    buf[5] = 9; /* minor 9: extras it might add are ignored */
    assert_int_equal(fkd_wire_decode(&d, buf, len, NULL, &err), 0);
    free(buf);
}

static void test_unknown_type_and_bad_magic(void **state)
{
    body b;
    heartbeat_body(&b, 0);
    size_t len;
    uint8_t *buf = wrap(&len, &b, 99, 1);
    fkd_wire_msg d;
    fkd_error err;
    assert_int_equal(fkd_wire_decode(&d, buf, len, NULL, &err), -1);
    assert_int_equal(err.code, FKD_E_FORMAT);
    buf[6] = FKD_WIRE_HEARTBEAT;
    buf[0] = 'X';
    assert_int_equal(fkd_wire_decode(&d, buf, len, NULL, &err), -1);
    assert_int_equal(err.code, FKD_E_FORMAT);
    free(buf);
}

static void test_wrong_types_and_missing_fields(void **state)
{
    body b;
    /* seq as a string */
    body_init(&b);
    msgpack_pack_map(&b.pk, 1);
    key(&b, "seq");
    key(&b, "5");
    assert_int_equal(body_code(&b, FKD_WIRE_HEARTBEAT, NULL), FKD_E_FORMAT);
    /* seq negative */
    body_init(&b);
    msgpack_pack_map(&b.pk, 1);
    key(&b, "seq");
    msgpack_pack_int(&b.pk, -1);
    assert_int_equal(body_code(&b, FKD_WIRE_HEARTBEAT, NULL), FKD_E_FORMAT);
    /* missing seq */
    body_init(&b);
    msgpack_pack_map(&b.pk, 0);
    assert_int_equal(body_code(&b, FKD_WIRE_HEARTBEAT, NULL), FKD_E_FORMAT);
    /* body not a map */
    body_init(&b);
    msgpack_pack_array(&b.pk, 0);
    assert_int_equal(body_code(&b, FKD_WIRE_HEARTBEAT, NULL), FKD_E_FORMAT);
    /* u32 field above 2^32 */
    body_init(&b);
    msgpack_pack_map(&b.pk, 2);
    key(&b, "code");
    msgpack_pack_uint64(&b.pk, 1ull << 33);
    key(&b, "text");
    key(&b, "x");
    assert_int_equal(body_code(&b, FKD_WIRE_ERROR, NULL), FKD_E_FORMAT);
    /* repeated field */
    heartbeat_body(&b, 1);
    key(&b, "seq");
    msgpack_pack_uint64(&b.pk, 6);
    assert_int_equal(body_code(&b, FKD_WIRE_HEARTBEAT, NULL), FKD_E_FORMAT);
    /* fixed-size bytes of the wrong size */
    body_init(&b);
    msgpack_pack_map(&b.pk, 2);
    key(&b, "acked_type");
    msgpack_pack_uint32(&b.pk, 5);
    key(&b, "acked_nonce");
    msgpack_pack_bin(&b.pk, 23);
    msgpack_pack_bin_body(&b.pk, big_blob, 23);
    assert_int_equal(body_code(&b, FKD_WIRE_ACK, NULL), FKD_E_FORMAT);
    /* text with a NUL inside */
    body_init(&b);
    msgpack_pack_map(&b.pk, 1);
    key(&b, "reason");
    msgpack_pack_str(&b.pk, 3);
    msgpack_pack_str_body(&b.pk, "a\0b", 3);
    assert_int_equal(body_code(&b, FKD_WIRE_BYE, NULL), FKD_E_FORMAT);
    /* non-finite progress */
    heartbeat_body(&b, 1);
    key(&b, "progress");
    msgpack_pack_double(&b.pk, 1.0 / 0.0);
    assert_int_equal(body_code(&b, FKD_WIRE_HEARTBEAT, NULL), FKD_E_FORMAT);
}

static void test_over_long_and_over_limit(void **state)
{
    body b;
    size_t len;
    /* text above FKD_WIRE_TEXT_MAX */
    char text[FKD_WIRE_TEXT_MAX + 2];
    memset(text, 'a', sizeof text);
    body_init(&b);
    msgpack_pack_map(&b.pk, 1);
    key(&b, "reason");
    msgpack_pack_str(&b.pk, sizeof text);
    msgpack_pack_str_body(&b.pk, text, sizeof text);
    assert_int_equal(body_code(&b, FKD_WIRE_BYE, NULL), FKD_E_LIMIT);
    /* a map of scalars with too many entries */
    fkd_wire_msg m;
    fill(&m, FKD_WIRE_UPDATE);
    uint8_t *buf;
    assert_int_equal(fkd_wire_encode(&buf, &len, &m, NULL), 0);
    free(buf);
    body_init(&b);
    msgpack_pack_map(&b.pk, 4);
    key(&b, "model_version");
    msgpack_pack_uint64(&b.pk, 1);
    key(&b, "samples");
    msgpack_pack_uint64(&b.pk, 1);
    key(&b, "sealed");
    msgpack_pack_bin(&b.pk, 0);
    key(&b, "metrics");
    msgpack_pack_map(&b.pk, FKD_WIRE_KV_MAX + 1);
    for (int i = 0; i <= FKD_WIRE_KV_MAX; i++) {
        char k[8];
        snprintf(k, sizeof k, "m%d", i);
        key(&b, k);
        msgpack_pack_double(&b.pk, i);
    }
    assert_int_equal(body_code(&b, FKD_WIRE_UPDATE, NULL), FKD_E_LIMIT);
    /* a blob above the configured limit */
    fkd_wire_limits lim;
    fkd_wire_limits_default(&lim);
    lim.max_blob_bytes = 100;
    fill(&m, FKD_WIRE_UPDATE);
    assert_int_equal(fkd_wire_encode(&buf, &len, &m, NULL), 0);
    assert_int_equal(decode_code(buf, len, &lim), FKD_E_LIMIT);
    /* a message above the configured limit */
    lim.max_blob_bytes = 1 << 20;
    lim.max_message_bytes = 200;
    assert_int_equal(fkd_wire_encode(&buf, &len, &m, NULL), 0);
    assert_int_equal(decode_code(buf, len, &lim), FKD_E_LIMIT);
    /* an XFER_BEGIN promising a payload above the limit */
    fill(&m, FKD_WIRE_XFER_BEGIN);
    m.u.xbegin.total = 1ull << 40;
    m.u.xbegin.n_chunks = (uint32_t)((m.u.xbegin.total + 1023) / 1024);
    assert_int_equal(fkd_wire_encode(&buf, &len, &m, NULL), 0);
    assert_int_equal(decode_code(buf, len, NULL), FKD_E_LIMIT);
}

/* Declared sizes far above the bytes present: refused before any allocation. */
static void test_huge_declared_sizes(void **state)
{
    static const uint8_t bodies[][8] = {
        {0xdd, 0xff, 0xff, 0xff, 0xff},       /* array32 of 4G elements */
        {0xdf, 0x7f, 0xff, 0xff, 0xff},       /* map32 of 2G pairs */
        {0xc6, 0xff, 0xff, 0xff, 0xf0, 1},    /* bin32 of 4 GB */
        {0xdb, 0x00, 0x10, 0x00, 0x00, 'a'},  /* str32 of 1 MB */
        {0x81, 0xa3, 's', 'e', 'q', 0xdc, 0xff, 0xff}, /* map: seq = array16 of 65535 */
    };
    static const size_t lens[] = {5, 5, 6, 6, 8};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        body b;
        body_init(&b);
        msgpack_sbuffer_write(&b.sb, (const char *)bodies[i], lens[i]);
        int code = body_code(&b, FKD_WIRE_HEARTBEAT, NULL);
        assert_int_equal(code, FKD_E_TRUNCATED);
    }
    /* too deep a nesting */
    body b;
    body_init(&b);
    for (int i = 0; i < 40; i++) msgpack_pack_array(&b.pk, 1);
    msgpack_pack_nil(&b.pk);
    assert_int_equal(body_code(&b, FKD_WIRE_HEARTBEAT, NULL), FKD_E_LIMIT);
    /* trailing bytes after the body map */
    heartbeat_body(&b, 0);
    msgpack_pack_nil(&b.pk);
    assert_int_equal(body_code(&b, FKD_WIRE_HEARTBEAT, NULL), FKD_E_FORMAT);
}

static void test_kv_api(void **state)
{
    fkd_wire_kvmap m = {0};
    fkd_error err;
    assert_int_equal(fkd_wire_kv_set(&m, "lr", 1.0, &err), 0);
    assert_int_equal(fkd_wire_kv_set(&m, "lr", 2.0, &err), 0);
    double v = 0;
    assert_int_equal(fkd_wire_kv_get(&m, "lr", &v), 1);
    assert_true(v == 2.0);
    assert_int_equal(fkd_wire_kv_get(&m, "nope", &v), 0);
    assert_int_equal(fkd_wire_kv_set(&m, "a_key_that_is_way_too_long_for_the_map", 1, &err), -1);
    for (int i = 0; i < FKD_WIRE_KV_MAX - 1; i++) {
        char k[8];
        snprintf(k, sizeof k, "k%d", i);
        assert_int_equal(fkd_wire_kv_set(&m, k, i, &err), 0);
    }
    assert_int_equal(fkd_wire_kv_set(&m, "full", 1, &err), -1);
    assert_int_equal(err.code, FKD_E_LIMIT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_every_type),
        cmocka_unit_test(test_blobs_point_into_input),
        cmocka_unit_test(test_encode_into_small_buffer),
        cmocka_unit_test(test_truncation_at_every_byte),
        cmocka_unit_test(test_unknown_fields_ignored),
        cmocka_unit_test(test_newer_major_refused_newer_minor_accepted),
        cmocka_unit_test(test_unknown_type_and_bad_magic),
        cmocka_unit_test(test_wrong_types_and_missing_fields),
        cmocka_unit_test(test_over_long_and_over_limit),
        cmocka_unit_test(test_huge_declared_sizes),
        cmocka_unit_test(test_kv_api),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
