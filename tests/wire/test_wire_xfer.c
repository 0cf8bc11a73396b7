/* test_wire_xfer.c — the chunked-transfer state machines without sockets:
 * a clean transfer, chunks lost in flight, a cut connection resumed from the
 * last acknowledged chunk, a corrupted chunk, a receiver that lost its state,
 * and a sender whose whole-payload hash lies. Messages pass through
 * encode/decode, as they would on the wire. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "fkd_wire.h"

#define CHUNK 4096
#define WINDOW 4

static const uint8_t coord_id[32] = {7}, client_id[32] = {9};

typedef struct {
    fkd_wire_xsend *s;
    fkd_wire_xrecv *r;
    uint8_t *payload;
    size_t bytes;
    uint32_t delivered;     /* chunks the receiver accepted or saw */
    uint32_t max_index_seen;
    uint32_t produced;      /* messages the sender produced */
    uint32_t timeouts;      /* stalls resolved by the caller's timeout */
} link;

/* An encoded TASK of about `weights` bytes: the payload is a real message. */
static uint8_t *make_task(size_t *len, size_t weights)
{
    uint8_t *w = malloc(weights);
    fkd_rng rng;
    fkd_rng_seed(&rng, 5);
    for (size_t i = 0; i < weights; i++) w[i] = (uint8_t)fkd_rng_u64(&rng);
    fkd_wire_msg m;
    fkd_wire_msg_init(&m, FKD_WIRE_TASK, coord_id, 3);
    m.u.task.model_version = 1;
    m.u.task.weights = (fkd_wire_blob){w, weights};
    m.u.task.soft_labels = (fkd_wire_blob){w, 10};
    m.u.task.student_config = (fkd_wire_blob){w, 1};
    uint8_t *out;
    assert_int_equal(fkd_wire_encode(&out, len, &m, NULL), 0);
    free(w);
    return out;
}

static void link_open(link *l, size_t weights)
{
    memset(l, 0, sizeof *l);
    l->payload = make_task(&l->bytes, weights);
    assert_int_equal(fkd_wire_xsend_new(&l->s, l->payload, l->bytes, FKD_WIRE_TASK, CHUNK,
                                        coord_id, 3, NULL), 0);
    assert_int_equal(fkd_wire_xrecv_new(&l->r, NULL, WINDOW, client_id, 3, NULL), 0);
}

static void link_close(link *l)
{
    fkd_wire_xsend_free(&l->s);
    fkd_wire_xrecv_free(&l->r);
    free(l->payload);
}

/* Delivers one sender message to the receiver. Returns the receiver's rc. */
static int to_receiver(link *l, uint8_t *buf, size_t len, fkd_error *err)
{
    fkd_wire_msg m;
    assert_int_equal(fkd_wire_decode(&m, buf, len, NULL, NULL), 0);
    int rc;
    if (m.env.type == FKD_WIRE_XFER_BEGIN) {
        rc = fkd_wire_xrecv_on_begin(l->r, &m.u.xbegin, err);
    } else {
        assert_int_equal(m.env.type, FKD_WIRE_XFER_CHUNK);
        l->delivered++;
        if (m.u.xchunk.index > l->max_index_seen) l->max_index_seen = m.u.xchunk.index;
        rc = fkd_wire_xrecv_on_chunk(l->r, &m.u.xchunk, err);
    }
    free(buf);
    return rc;
}

static void credits_to_sender(link *l, int drop)
{
    uint8_t *buf;
    size_t len;
    while (fkd_wire_xrecv_next(l->r, &buf, &len, NULL) == 1) {
        fkd_wire_msg m;
        assert_int_equal(fkd_wire_decode(&m, buf, len, NULL, NULL), 0);
        assert_int_equal(m.env.type, FKD_WIRE_XFER_CREDIT);
        if (!drop) assert_int_equal(fkd_wire_xsend_on_credit(l->s, &m.u.xcredit, NULL), 0);
        free(buf);
    }
}

/* Runs until done or `steps` sender messages; drop(i) decides whether the
 * i-th message from the sender is lost. When nothing moves, the caller's
 * timeout fires: the sender restarts, as the API asks. */
static void run(link *l, int steps, int (*drop)(uint32_t n_sent, void *), void *arg)
{
    for (int i = 0; i < steps && !fkd_wire_xsend_done(l->s); i++) {
        uint8_t *buf;
        size_t len;
        int rc = fkd_wire_xsend_next(l->s, &buf, &len, NULL);
        assert_true(rc >= 0);
        if (rc == 0) {
            credits_to_sender(l, 0);
            if (fkd_wire_xsend_next(l->s, &buf, &len, NULL) == 0) {
                if (++l->timeouts > 10) fail_msg("transfer stalled");
                fkd_wire_xsend_restart(l->s);
                continue;
            }
        }
        if (drop && drop(l->produced++, arg)) free(buf);
        else assert_int_equal(to_receiver(l, buf, len, NULL), 0);
        credits_to_sender(l, 0);
    }
}

static void check_payload(link *l)
{
    assert_true(fkd_wire_xsend_done(l->s));
    assert_true(fkd_wire_xrecv_done(l->r));
    assert_int_equal(fkd_wire_xrecv_kind(l->r), FKD_WIRE_TASK);
    uint8_t *p;
    size_t n;
    assert_int_equal(fkd_wire_xrecv_take(l->r, &p, &n, NULL), 0);
    assert_int_equal(n, l->bytes);
    assert_memory_equal(p, l->payload, n);
    fkd_wire_msg m;
    assert_int_equal(fkd_wire_decode(&m, p, n, NULL, NULL), 0);
    assert_int_equal(m.env.type, FKD_WIRE_TASK);
    free(p);
    assert_int_equal(fkd_wire_xrecv_take(l->r, &p, &n, NULL), -1); /* only once */
}

static uint32_t n_chunks(const link *l) { return (uint32_t)((l->bytes + CHUNK - 1) / CHUNK); }

static void test_clean_transfer(void **state)
{
    link l;
    link_open(&l, 100000);
    run(&l, 10000, NULL, NULL);
    check_payload(&l);
    assert_int_equal(fkd_wire_xsend_chunks_sent(l.s), n_chunks(&l));
    link_close(&l);
}

/* Flow control: without credit the sender stops after the window. */
static void test_credit_limits_sender(void **state)
{
    link l;
    link_open(&l, 100000);
    uint8_t *buf;
    size_t len;
    uint8_t *none;
    size_t none_len;
    assert_int_equal(fkd_wire_xsend_next(l.s, &buf, &len, NULL), 1); /* BEGIN */
    assert_int_equal(fkd_wire_xsend_next(l.s, &none, &none_len, NULL), 0); /* waits for credit */
    assert_int_equal(to_receiver(&l, buf, len, NULL), 0);
    credits_to_sender(&l, 0);
    int sent = 0;
    while (fkd_wire_xsend_next(l.s, &buf, &len, NULL) == 1) {
        free(buf);
        sent++;
    }
    assert_int_equal(sent, WINDOW);
    link_close(&l);
}

static int drop_range(uint32_t n_sent, void *arg)
{
    const uint32_t *r = arg;
    return n_sent >= r[0] && n_sent < r[1];
}

static void test_lost_chunks_resync(void **state)
{
    link l;
    link_open(&l, 100000);
    uint32_t range[2] = {6, 9}; /* messages 6..8: chunks 5..7 vanish */
    run(&l, 10000, drop_range, range);
    check_payload(&l);
    /* resent from the gap, not from the start */
    assert_true(fkd_wire_xsend_chunks_sent(l.s) > n_chunks(&l));
    assert_true(fkd_wire_xsend_chunks_sent(l.s) <= n_chunks(&l) + 2 * WINDOW);
    link_close(&l);
}

/* The connection dies mid-transfer: everything in flight both ways is lost;
 * after the "reconnect" the sender restarts and resumes where the receiver is. */
static void test_cut_and_resume(void **state)
{
    link l;
    link_open(&l, 200000);
    uint32_t n = n_chunks(&l);
    run(&l, (int)n / 2, NULL, NULL);
    assert_false(fkd_wire_xsend_done(l.s));
    /* in flight: the sender's next chunks, and the receiver's credits */
    uint8_t *buf;
    size_t len;
    while (fkd_wire_xsend_next(l.s, &buf, &len, NULL) == 1) free(buf);
    credits_to_sender(&l, 1);
    uint32_t sent_before = fkd_wire_xsend_chunks_sent(l.s);
    uint32_t delivered_before = l.delivered;

    fkd_wire_xsend_restart(l.s);
    run(&l, 10000, NULL, NULL);
    check_payload(&l);
    uint32_t resent = fkd_wire_xsend_chunks_sent(l.s) - sent_before;
    /* after the cut, only the chunks the receiver lacked were sent */
    assert_int_equal(resent, n - delivered_before);
    link_close(&l);
}

static void test_corrupted_chunk(void **state)
{
    link l;
    link_open(&l, 50000);
    uint8_t *buf;
    size_t len;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(fkd_wire_xsend_next(l.s, &buf, &len, NULL), 1);
        if (i == 2) buf[len - 1] ^= 0xff; /* last byte of the chunk hash field */
        fkd_error err = {0};
        int rc = to_receiver(&l, buf, len, &err);
        if (i == 2) {
            assert_int_equal(rc, -1);
            assert_int_equal(err.code, FKD_E_CHECKSUM);
        }
        credits_to_sender(&l, 0);
    }
    run(&l, 10000, NULL, NULL);
    check_payload(&l);
    link_close(&l);
}

static void test_receiver_lost_state(void **state)
{
    link l;
    link_open(&l, 60000);
    run(&l, 6, NULL, NULL);
    fkd_wire_xrecv_free(&l.r);
    assert_int_equal(fkd_wire_xrecv_new(&l.r, NULL, WINDOW, client_id, 3, NULL), 0);
    run(&l, 10000, NULL, NULL);
    check_payload(&l);
    link_close(&l);
}

static void test_lying_hash_and_limits(void **state)
{
    link l;
    link_open(&l, 20000);
    fkd_wire_xrecv *r;
    fkd_wire_limits lim;
    fkd_wire_limits_default(&lim);
    lim.max_message_bytes = 1000;
    assert_int_equal(fkd_wire_xrecv_new(&r, &lim, 2, client_id, 3, NULL), 0);
    fkd_wire_xbegin b = {1, FKD_WIRE_TASK, 5000, 1000, 5, {0}};
    fkd_error err;
    assert_int_equal(fkd_wire_xrecv_on_begin(r, &b, &err), -1);
    assert_int_equal(err.code, FKD_E_LIMIT);
    b.total = 1000;
    b.n_chunks = 1;
    assert_int_equal(fkd_wire_xrecv_on_begin(r, &b, &err), 0); /* hash of zeros: a lie */
    uint8_t data[1000] = {0};
    fkd_wire_xchunk c = {1, 0, {data, sizeof data}, {0}};
    fkd_wire_xsend *s;
    assert_int_equal(fkd_wire_xsend_new(&s, data, sizeof data, FKD_WIRE_TASK, 1000, coord_id, 3,
                                        NULL), 0);
    uint8_t *buf;
    size_t len;
    fkd_wire_xsend_next(s, &buf, &len, NULL);
    free(buf);
    fkd_wire_xcredit cr = {fkd_wire_xsend_id(s), 0, 1, 0};
    fkd_wire_xsend_on_credit(s, &cr, NULL);
    assert_int_equal(fkd_wire_xsend_next(s, &buf, &len, NULL), 1);
    fkd_wire_msg m;
    assert_int_equal(fkd_wire_decode(&m, buf, len, NULL, NULL), 0);
    memcpy(c.hash, m.u.xchunk.hash, sizeof c.hash); /* a correct chunk hash */
    free(buf);
    fkd_wire_xsend_free(&s);
    assert_int_equal(fkd_wire_xrecv_on_chunk(r, &c, &err), -1);
    assert_int_equal(err.code, FKD_E_CHECKSUM);
    assert_false(fkd_wire_xrecv_done(r));
    fkd_wire_xrecv_free(&r);
    /* a credit for another transfer is a protocol error */
    fkd_wire_xcredit bad = {fkd_wire_xsend_id(l.s) + 1, 0, 1, 0};
    assert_int_equal(fkd_wire_xsend_on_credit(l.s, &bad, &err), -1);
    assert_int_equal(err.code, FKD_E_PROTOCOL);
    link_close(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clean_transfer),
        cmocka_unit_test(test_credit_limits_sender),
        cmocka_unit_test(test_lost_chunks_resync),
        cmocka_unit_test(test_cut_and_resume),
        cmocka_unit_test(test_corrupted_chunk),
        cmocka_unit_test(test_receiver_lost_state),
        cmocka_unit_test(test_lying_hash_and_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
