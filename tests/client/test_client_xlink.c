/* test_client_xlink.c — two links joined by an inproc PAIR: a payload of
 * many chunks arrives whole; a sender restarted halfway (a reconnect)
 * resumes where the receiver is instead of sending everything again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zmq.h>

#include "fkd_client.h"

#define CHUNK 4096
#define PAYLOAD (CHUNK * 40 + 123)

typedef struct {
    void *ctx, *a, *b;
    fkd_client_xlink la, lb;
    uint8_t ida[FKD_WIRE_ID_BYTES], idb[FKD_WIRE_ID_BYTES];
} pair;

static void pair_open(pair *p)
{
    memset(p, 0, sizeof *p);
    p->ctx = zmq_ctx_new();
    p->a = zmq_socket(p->ctx, ZMQ_PAIR);
    p->b = zmq_socket(p->ctx, ZMQ_PAIR);
    assert_int_equal(zmq_bind(p->a, "inproc://xlink-test"), 0);
    assert_int_equal(zmq_connect(p->b, "inproc://xlink-test"), 0);
    p->ida[0] = 1;
    p->idb[0] = 2;
    fkd_client_xlink_init(&p->la, p->ida, NULL, 4);
    fkd_client_xlink_init(&p->lb, p->idb, NULL, 4);
}

static void pair_close(pair *p)
{
    fkd_client_xlink_free(&p->la);
    fkd_client_xlink_free(&p->lb);
    zmq_close(p->a);
    zmq_close(p->b);
    zmq_ctx_term(p->ctx);
}

/* Delivers every message waiting on sock to link l; returns a completed
 * payload, if any. max limits how many are delivered (-1: all). */
static uint8_t *deliver(void *sock, fkd_client_xlink *l, size_t *bytes, int max)
{
    uint8_t *done = NULL;
    for (int i = 0; max < 0 || i < max; i++) {
        uint8_t *buf;
        size_t len;
        if (fkd_wire_recv(sock, NULL, &buf, &len, 0, NULL, NULL) != 0) break;
        fkd_wire_msg m;
        assert_int_equal(fkd_wire_decode(&m, buf, len, NULL, NULL), 0);
        uint8_t *payload;
        size_t n;
        int r = fkd_client_xlink_on_msg(l, &m, &payload, &n, NULL);
        assert_true(r >= 0);
        if (r == 1) {
            done = payload;
            *bytes = n;
        }
        free(buf);
    }
    return done;
}

static uint8_t *make_payload(void)
{
    uint8_t *p = malloc(PAYLOAD);
    for (size_t i = 0; i < PAYLOAD; i++) p[i] = (uint8_t)(i * 131 + 7);
    return p;
}

/* An open pair whose side a has started sending a payload (the link owns a
 * copy); returns the payload, to compare with what b receives. */
static uint8_t *start_transfer(pair *p)
{
    pair_open(p);
    uint8_t *want = make_payload();
    uint8_t *copy = malloc(PAYLOAD);
    assert_non_null(copy);
    memcpy(copy, want, PAYLOAD);
    assert_int_equal(fkd_client_xlink_start(&p->la, copy, PAYLOAD, FKD_WIRE_TASK, CHUNK, 1, NULL), 0);
    return want;
}

static void test_whole_transfer(void **s)
{
    (void)s;
    pair p;
    uint8_t *want = start_transfer(&p);
    uint8_t *got = NULL;
    size_t n = 0;
    for (int turn = 0; turn < 1000 && !got; turn++) {
        assert_int_equal(fkd_client_xlink_pump(&p.la, p.a, NULL, NULL, NULL), 0);
        got = deliver(p.b, &p.lb, &n, -1);
        assert_int_equal(fkd_client_xlink_pump(&p.lb, p.b, NULL, NULL, NULL), 0);
        deliver(p.a, &p.la, &n, -1);
    }
    assert_non_null(got);
    assert_int_equal(n, PAYLOAD);
    assert_memory_equal(got, want, PAYLOAD);
    /* The final credit tells the sender it is done. */
    for (int turn = 0; turn < 10; turn++) {
        fkd_client_xlink_pump(&p.lb, p.b, NULL, NULL, NULL);
        deliver(p.a, &p.la, &n, -1);
    }
    assert_false(fkd_client_xlink_sending(&p.la));
    free(got);
    free(want);
    pair_close(&p);
}

static void test_restart_resumes(void **s)
{
    (void)s;
    pair p;
    uint8_t *want = start_transfer(&p);
    size_t n = 0;
    uint8_t *got = NULL;
    uint64_t sent_before = 0;
    for (int turn = 0; turn < 1000 && !got; turn++) {
        if (turn == 6) {
            /* "Reconnect": drop what is in flight, the sender starts over
             * with XFER_BEGIN and the receiver says where it is. */
            while (deliver(p.b, &p.lb, &n, 1)) {}
            uint8_t *drop;
            size_t dl;
            while (fkd_wire_recv(p.b, NULL, &drop, &dl, 0, NULL, NULL) == 0) free(drop);
            sent_before = p.la.bytes_out;
            fkd_client_xlink_restart(&p.la);
        }
        fkd_client_xlink_pump(&p.la, p.a, NULL, NULL, NULL);
        got = deliver(p.b, &p.lb, &n, -1);
        fkd_client_xlink_pump(&p.lb, p.b, NULL, NULL, NULL);
        deliver(p.a, &p.la, &n, -1);
    }
    assert_non_null(got);
    assert_memory_equal(got, want, PAYLOAD);
    assert_true(sent_before > 0);
    /* Resumed: far fewer than two whole payloads went out. */
    assert_true(p.la.bytes_out < (uint64_t)PAYLOAD * 3 / 2 + 20000);
    free(got);
    free(want);
    pair_close(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_transfer),
        cmocka_unit_test(test_restart_resumes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
