/* test_wire_net.c — real CURVE sockets over TCP on 127.0.0.1: the ZAP
 * allow-list admits a listed key and gives an unknown key no connection at
 * all; a SIGHUP-triggered reload admits a newly listed key; and a chunked
 * transfer survives the client's connection being cut in the middle,
 * resuming from the last acknowledged chunk. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "fkd_wire.h"

#define SHORT_MS 400
#define LONG_MS 5000

typedef struct {
    void *ctx, *server;
    fkd_wire_zap *zap;
    fkd_wire_identity coord, alice, bob;
    char allow_path[600];
    char endpoint[128];
    void *clients[8];   /* closed by teardown even when a test fails midway */
} net;

static fkd_wire_zap *sighup_zap; /* the one thing a signal handler may reach */

static void on_sighup(int sig) { fkd_wire_zap_request_reload(sighup_zap); }

static void write_allowlist(net *n, int with_bob)
{
    char text[600], la[200], lb[200];
    fkd_wire_pubkey p;
    fkd_wire_identity_public(&p, &n->alice, "alice");
    assert_int_equal(fkd_wire_pubkey_format(la, sizeof la, &p, NULL), 0);
    fkd_wire_identity_public(&p, &n->bob, "bob");
    assert_int_equal(fkd_wire_pubkey_format(lb, sizeof lb, &p, NULL), 0);
    snprintf(text, sizeof text, "# test clients\n%s\n%s%s", la, with_bob ? lb : "",
             with_bob ? "\n" : "");
    assert_int_equal(fkd_file_write_atomic(n->allow_path, text, strlen(text), NULL), 0);
}

static int setup(void **state)
{
    net *n = calloc(1, sizeof *n);
    fkd_wire_identity_generate(&n->coord, NULL);
    fkd_wire_identity_generate(&n->alice, NULL);
    fkd_wire_identity_generate(&n->bob, NULL);
    const char *tmp = getenv("FKD_TEST_TMP");
    snprintf(n->allow_path, sizeof n->allow_path, "%s/allow-%ld.list", tmp ? tmp : "/tmp",
             (long)getpid());
    write_allowlist(n, 0);
    n->ctx = zmq_ctx_new();
    fkd_error err;
    if (fkd_wire_zap_start(&n->zap, n->ctx, n->allow_path, &err) ||
        fkd_wire_server_open(&n->server, n->ctx, &n->coord, n->zap, "tcp://127.0.0.1:*", NULL,
                             &err)) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return -1;
    }
    size_t sz = sizeof n->endpoint;
    zmq_getsockopt(n->server, ZMQ_LAST_ENDPOINT, n->endpoint, &sz);
    *state = n;
    return 0;
}

static int teardown(void **state)
{
    net *n = *state;
    for (int i = 0; i < 8; i++) fkd_wire_socket_close(&n->clients[i]);
    fkd_wire_socket_close(&n->server);
    fkd_wire_zap_stop(&n->zap);
    zmq_ctx_term(n->ctx);
    unlink(n->allow_path);
    free(n);
    return 0;
}

static void *client(net *n, const fkd_wire_identity *id)
{
    void *s;
    fkd_error err;
    if (fkd_wire_client_open(&s, n->ctx, id, n->coord.curve_pk, n->endpoint, NULL, &err))
        fail_msg("%s", err.msg);
    for (int i = 0; i < 8; i++)
        if (!n->clients[i]) {
            n->clients[i] = s;
            return s;
        }
    fail_msg("too many client sockets");
    return NULL;
}

static void client_close(net *n, void **s)
{
    for (int i = 0; i < 8; i++)
        if (n->clients[i] == *s) n->clients[i] = NULL;
    fkd_wire_socket_close(s);
}

static int send_msg(void *sock, const fkd_wire_peer *peer, fkd_wire_msg *m, int timeout,
                    fkd_error *err)
{
    uint8_t *buf;
    size_t len;
    assert_int_equal(fkd_wire_encode(&buf, &len, m, NULL), 0);
    int rc = fkd_wire_send(sock, peer, buf, len, timeout, err);
    free(buf);
    return rc;
}

static int recv_msg(void *sock, fkd_wire_peer *peer, fkd_wire_msg *m, uint8_t **keep,
                    int timeout, fkd_error *err)
{
    size_t len;
    if (fkd_wire_recv(sock, peer, keep, &len, timeout, NULL, err)) return -1;
    return fkd_wire_decode(m, *keep, len, NULL, err);
}

static void hello(fkd_wire_msg *m, const fkd_wire_identity *id)
{
    fkd_wire_msg_init(m, FKD_WIRE_HELLO, id->sign_pk, 0);
    m->u.hello.cores = 2;
    m->u.hello.memory_mb = 1024;
}

static void test_allowlist_admits_known_refuses_unknown(void **state)
{
    net *n = *state;
    fkd_error err;
    fkd_wire_msg m;
    fkd_wire_peer peer;
    uint8_t *buf = NULL;

    void *a = client(n, &n->alice);
    hello(&m, &n->alice);
    assert_int_equal(send_msg(a, NULL, &m, LONG_MS, &err), 0);
    assert_int_equal(recv_msg(n->server, &peer, &m, &buf, LONG_MS, &err), 0);
    assert_int_equal(m.env.type, FKD_WIRE_HELLO);
    assert_true(peer.authenticated);
    assert_memory_equal(peer.sign_pk, n->alice.sign_pk, 32); /* ZAP vouches for the sender */
    assert_int_equal(fkd_wire_check_sender(&peer, &m.env, &err), 0);
    free(buf);
    /* alice's connection speaking with bob's id is caught */
    hello(&m, &n->bob);
    assert_int_equal(send_msg(a, NULL, &m, LONG_MS, &err), 0);
    assert_int_equal(recv_msg(n->server, &peer, &m, &buf, LONG_MS, &err), 0);
    assert_int_equal(fkd_wire_check_sender(&peer, &m.env, &err), -1);
    assert_int_equal(err.code, FKD_E_AUTH);
    free(buf);
    fkd_wire_msg_init(&m, FKD_WIRE_WELCOME, n->coord.sign_pk, 0);
    m.u.welcome.session = 1;
    assert_int_equal(send_msg(n->server, &peer, &m, LONG_MS, &err), 0);
    assert_int_equal(recv_msg(a, NULL, &m, &buf, LONG_MS, &err), 0);
    assert_int_equal(m.env.type, FKD_WIRE_WELCOME);
    free(buf);

    /* bob is not listed: his handshake is refused, nothing gets through */
    void *b = client(n, &n->bob);
    hello(&m, &n->bob);
    assert_int_equal(send_msg(b, NULL, &m, SHORT_MS, &err), -1);
    assert_int_equal(err.code, FKD_E_TIMEOUT);
    assert_int_equal(recv_msg(n->server, &peer, &m, &buf, SHORT_MS, &err), -1);
    assert_int_equal(err.code, FKD_E_TIMEOUT);
    assert_true(fkd_wire_zap_denied(n->zap) >= 1);

    /* listed and reloaded by SIGHUP: bob is admitted when he tries again
     * (libzmq does not retry a connection refused by ZAP: a new socket is
     * how a client tries again) */
    write_allowlist(n, 1);
    uint64_t before = fkd_wire_zap_reloads(n->zap);
    sighup_zap = n->zap;
    signal(SIGHUP, on_sighup);
    raise(SIGHUP);
    for (int i = 0; i < 100 && fkd_wire_zap_reloads(n->zap) == before; i++) usleep(20000);
    signal(SIGHUP, SIG_DFL);
    assert_int_equal(fkd_wire_zap_reloads(n->zap), before + 1);
    client_close(n, &b);
    b = client(n, &n->bob);
    assert_int_equal(send_msg(b, NULL, &m, LONG_MS, &err), 0);
    assert_int_equal(recv_msg(n->server, &peer, &m, &buf, LONG_MS, &err), 0);
    assert_memory_equal(peer.sign_pk, n->bob.sign_pk, 32);
    free(buf);

    /* a broken allow-list does not replace the good one */
    assert_int_equal(fkd_file_write_atomic(n->allow_path, "garbage\n", 8, NULL), 0);
    assert_int_equal(fkd_wire_zap_reload(n->zap, &err), -1);
    client_close(n, &a);
    client_close(n, &b);
}

/* The probe tells admitted, refused, wrong server key and nobody apart. */
static void test_probe(void **state)
{
    net *n = *state;
    fkd_error err;
    assert_int_equal(fkd_wire_client_probe(n->ctx, &n->alice, n->coord.curve_pk, n->endpoint,
                                           LONG_MS, &err), 0);
    assert_int_equal(fkd_wire_client_probe(n->ctx, &n->bob, n->coord.curve_pk, n->endpoint,
                                           LONG_MS, &err), -1);
    assert_int_equal(err.code, FKD_E_AUTH);
    assert_non_null(strstr(err.msg, "allow-list"));
    assert_int_equal(fkd_wire_client_probe(n->ctx, &n->alice, n->bob.curve_pk, n->endpoint,
                                           SHORT_MS * 3, &err), -1);
    assert_int_equal(fkd_wire_client_probe(n->ctx, &n->alice, n->coord.curve_pk,
                                           "tcp://127.0.0.1:1", SHORT_MS, &err), -1);
    assert_int_equal(err.code, FKD_E_TIMEOUT);
}

/* A client holding the wrong coordinator key never completes a handshake. */
static void test_wrong_server_key(void **state)
{
    net *n = *state;
    void *s;
    fkd_error err;
    assert_int_equal(fkd_wire_client_open(&s, n->ctx, &n->alice, n->bob.curve_pk, n->endpoint,
                                          NULL, &err), 0);
    n->clients[0] = s;
    fkd_wire_msg m;
    hello(&m, &n->alice);
    assert_int_equal(send_msg(s, NULL, &m, SHORT_MS, &err), -1);
    client_close(n, &s);
}

/* ---- transfer with a cut connection --------------------------------------- */
#define XFER_CHUNK (64 * 1024)

typedef struct {
    net *n;
    fkd_wire_xsend *xs;
    fkd_wire_peer peer;
    int peer_ok;
    uint32_t sent_at_cut;
} coordinator;

static void coord_step(coordinator *c)
{
    fkd_error err;
    uint8_t *buf, *in;
    size_t len;
    while (c->peer_ok && fkd_wire_xsend_next(c->xs, &buf, &len, NULL) == 1) {
        int rc = fkd_wire_send(c->n->server, &c->peer, buf, len, LONG_MS, &err);
        free(buf);
        if (rc) { /* the peer is gone: wait for it to say HELLO again */
            c->peer_ok = 0;
            fkd_wire_xsend_restart(c->xs);
        }
    }
    fkd_wire_msg m;
    fkd_wire_peer from;
    if (recv_msg(c->n->server, &from, &m, &in, 5, &err)) {
        free(in);
        return;
    }
    if (m.env.type == FKD_WIRE_HELLO) {
        c->peer = from; /* a reconnect has a new routing id */
        c->peer_ok = 1;
        fkd_wire_xsend_restart(c->xs);
    } else if (m.env.type == FKD_WIRE_XFER_CREDIT) {
        assert_int_equal(fkd_wire_xsend_on_credit(c->xs, &m.u.xcredit, &err), 0);
    }
    free(in);
}

static void client_step(void *sock, fkd_wire_xrecv *r)
{
    fkd_error err;
    uint8_t *in, *out;
    size_t len;
    fkd_wire_msg m;
    if (recv_msg(sock, NULL, &m, &in, 5, &err) == 0) {
        if (m.env.type == FKD_WIRE_XFER_BEGIN) assert_int_equal(fkd_wire_xrecv_on_begin(r, &m.u.xbegin, &err), 0);
        if (m.env.type == FKD_WIRE_XFER_CHUNK) assert_int_equal(fkd_wire_xrecv_on_chunk(r, &m.u.xchunk, &err), 0);
    }
    free(in);
    while (fkd_wire_xrecv_next(r, &out, &len, NULL) == 1) {
        fkd_wire_send(sock, NULL, out, len, LONG_MS, &err);
        free(out);
    }
}

static void test_transfer_cut_and_resumed(void **state)
{
    net *n = *state;
    size_t bytes = 3u << 20;
    uint8_t *payload = malloc(bytes);
    fkd_rng rng;
    fkd_rng_seed(&rng, 11);
    for (size_t i = 0; i < bytes; i++) payload[i] = (uint8_t)fkd_rng_u64(&rng);
    coordinator c;
    memset(&c, 0, sizeof c);
    c.n = n;
    assert_int_equal(fkd_wire_xsend_new(&c.xs, payload, bytes, FKD_WIRE_TASK, XFER_CHUNK,
                                        n->coord.sign_pk, 1, NULL), 0);
    fkd_wire_xrecv *r;
    assert_int_equal(fkd_wire_xrecv_new(&r, NULL, 4, n->alice.sign_pk, 1, NULL), 0);

    void *sock = client(n, &n->alice);
    fkd_wire_msg m;
    hello(&m, &n->alice);
    fkd_error err;
    assert_int_equal(send_msg(sock, NULL, &m, LONG_MS, &err), 0);

    uint32_t done = 0, total = 0, done_at_cut = 0;
    int cut = 0;
    double start = fkd_time_ms();
    while (!fkd_wire_xsend_done(c.xs) && fkd_time_ms() - start < 8000) {
        coord_step(&c);
        client_step(sock, r);
        fkd_wire_xrecv_progress(r, &done, &total);
        if (!cut && total && done >= total / 2) {
            /* cut: the client's connection dies; it reconnects with a new socket */
            cut = 1;
            done_at_cut = done;
            c.sent_at_cut = fkd_wire_xsend_chunks_sent(c.xs);
            client_close(n, &sock);
            sock = client(n, &n->alice);
            hello(&m, &n->alice);
            assert_int_equal(send_msg(sock, NULL, &m, LONG_MS, &err), 0);
        }
    }
    assert_true(cut);
    assert_true(fkd_wire_xsend_done(c.xs));
    assert_true(fkd_wire_xrecv_done(r));
    uint8_t *got;
    size_t got_len;
    assert_int_equal(fkd_wire_xrecv_take(r, &got, &got_len, NULL), 0);
    assert_int_equal(got_len, bytes);
    assert_memory_equal(got, payload, bytes);
    /* resumed, not restarted: after the cut only the missing chunks (plus
     * those in flight at the cut) were sent again */
    uint32_t after = fkd_wire_xsend_chunks_sent(c.xs) - c.sent_at_cut;
    assert_true(done_at_cut > 0);
    assert_true(after < total - done_at_cut + 8);
    assert_true(fkd_wire_xsend_chunks_sent(c.xs) < total + total / 4);
    free(got);
    free(payload);
    fkd_wire_xrecv_free(&r);
    fkd_wire_xsend_free(&c.xs);
    client_close(n, &sock);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_allowlist_admits_known_refuses_unknown, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_wrong_server_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_probe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transfer_cut_and_resumed, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
