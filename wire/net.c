/* net.c — the ZeroMQ side: CURVE sockets, the ZAP handler thread that
 * admits clients by allow-list, and send/receive of one message with a
 * timeout.
 *
 * Why a thread: libzmq asks a ZAP handler (a REP socket on the in-process
 * endpoint "inproc://zeromq.zap.01") about every CURVE handshake, and waits
 * for the answer. Without a handler, libzmq admits EVERY client key; that is
 * why fkd_wire_server_open() will not run without a started fkd_wire_zap.
 * The handler answers 200 with the client's Ed25519 key (Z85) as User-Id, so
 * every message received on the ROUTER carries the identity ZAP vouched for;
 * fkd_wire_recv() hands it to the caller, who compares it to the envelope's
 * sender. */
#include "fkd_wire.h"

#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_POLL_MS 250
#define ZAP_MAX_FRAMES 8
#define LINGER_MS 500
#define HANDSHAKE_MS 10000

struct fkd_wire_zap {
    void *sock;
    pthread_t thread;
    char path[1024];
    pthread_mutex_t lock;
    fkd_wire_allowlist list;
    atomic_int stop;
    atomic_int reload_requested;
    atomic_ullong reloads;
    atomic_ullong denied;
};

static int zmq_fail(fkd_error *err, int code, const char *what)
{
    return fkd_error_set(err, code, "%s: %s", what, zmq_strerror(zmq_errno()));
}

/* ---- ZAP handler ------------------------------------------------------------- */
int fkd_wire_zap_reload(fkd_wire_zap *zap, fkd_error *err)
{
    fkd_wire_allowlist fresh;
    if (fkd_wire_allowlist_load(&fresh, zap->path, err)) return -1;
    pthread_mutex_lock(&zap->lock);
    fkd_wire_allowlist old = zap->list;
    zap->list = fresh;
    pthread_mutex_unlock(&zap->lock);
    fkd_wire_allowlist_free(&old);
    atomic_fetch_add(&zap->reloads, 1);
    return 0;
}

void fkd_wire_zap_request_reload(fkd_wire_zap *zap) { atomic_store(&zap->reload_requested, 1); }
uint64_t fkd_wire_zap_reloads(const fkd_wire_zap *zap) { return atomic_load(&zap->reloads); }
uint64_t fkd_wire_zap_denied(const fkd_wire_zap *zap) { return atomic_load(&zap->denied); }

static int frame_is(const zmq_msg_t *m, const char *s)
{
    size_t n = strlen(s);
    return zmq_msg_size((zmq_msg_t *)m) == n && memcmp(zmq_msg_data((zmq_msg_t *)m), s, n) == 0;
}

/* Decides one request: fills user_id (Z85 of the Ed25519 key) and returns 1
 * to admit. Frames (RFC 27): version, request id, domain, address, routing
 * id, mechanism, credentials... */
static int zap_decide(fkd_wire_zap *zap, zmq_msg_t *f, int n, char user_id[41])
{
    if (n < 7 || !frame_is(&f[0], "1.0") || !frame_is(&f[2], FKD_WIRE_ZAP_DOMAIN) ||
        !frame_is(&f[5], "CURVE") || zmq_msg_size(&f[6]) != FKD_WIRE_KEY_BYTES)
        return 0;
    int ok = 0;
    pthread_mutex_lock(&zap->lock);
    const fkd_wire_pubkey *k = fkd_wire_allowlist_find(&zap->list, zmq_msg_data(&f[6]));
    if (k) {
        zmq_z85_encode(user_id, k->sign_pk, FKD_WIRE_KEY_BYTES);
        ok = 1;
    }
    pthread_mutex_unlock(&zap->lock);
    return ok;
}

static void zap_send(void *sock, const void *data, size_t n, int more)
{
    zmq_send(sock, data, n, more ? ZMQ_SNDMORE : 0);
}

static void zap_handle(fkd_wire_zap *zap)
{
    zmq_msg_t f[ZAP_MAX_FRAMES];
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t tmp, *m = n < ZAP_MAX_FRAMES ? &f[n] : &tmp;
        zmq_msg_init(m);
        if (zmq_msg_recv(m, zap->sock, 0) < 0) {
            zmq_msg_close(m);
            break;
        }
        more = zmq_msg_more(m);
        if (m == &tmp) zmq_msg_close(m);
        else n++;
    }
    char user_id[41] = "";
    int ok = zap_decide(zap, f, n, user_id);
    if (!ok) atomic_fetch_add(&zap->denied, 1);
    /* A REP socket must answer every request, even a malformed one. */
    zap_send(zap->sock, "1.0", 3, 1);
    if (n >= 2) zap_send(zap->sock, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), 1);
    else zap_send(zap->sock, "", 0, 1);
    zap_send(zap->sock, ok ? "200" : "400", 3, 1);
    zap_send(zap->sock, ok ? "OK" : "key not in allow-list", ok ? 2 : 21, 1);
    zap_send(zap->sock, user_id, strlen(user_id), 1);
    zap_send(zap->sock, "", 0, 0);
    for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
}

static void *zap_main(void *arg)
{
    fkd_wire_zap *zap = arg;
    while (!atomic_load(&zap->stop)) {
        if (atomic_exchange(&zap->reload_requested, 0)) fkd_wire_zap_reload(zap, NULL);
        zmq_pollitem_t item = {zap->sock, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&item, 1, ZAP_POLL_MS);
        if (rc < 0 && zmq_errno() == ETERM) break;
        if (rc > 0 && (item.revents & ZMQ_POLLIN)) zap_handle(zap);
    }
    zmq_close(zap->sock);
    return NULL;
}

int fkd_wire_zap_start(fkd_wire_zap **out, void *ctx, const char *allowlist_path, fkd_error *err)
{
    *out = NULL;
    if (!zmq_has("curve"))
        return fkd_error_set(err, FKD_E_UNSUPPORTED, "this libzmq has no CURVE support");
    fkd_wire_zap *zap = calloc(1, sizeof *zap);
    if (!zap) return fkd_error_set(err, FKD_E_NOMEM, "cannot allocate the ZAP handler");
    if (strlen(allowlist_path) >= sizeof zap->path) {
        free(zap);
        return fkd_error_set(err, FKD_E_INVALID_ARG, "allow-list path is too long");
    }
    strcpy(zap->path, allowlist_path);
    pthread_mutex_init(&zap->lock, NULL);
    if (fkd_wire_allowlist_load(&zap->list, zap->path, err)) goto fail;
    zap->sock = zmq_socket(ctx, ZMQ_REP);
    int linger = 0;
    if (!zap->sock || zmq_setsockopt(zap->sock, ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_bind(zap->sock, ZAP_ENDPOINT)) {
        zmq_fail(err, FKD_E_NET, "cannot start the ZAP handler (is another one running in this "
                 "context?)");
        goto fail;
    }
    if (pthread_create(&zap->thread, NULL, zap_main, zap) != 0) {
        fkd_error_set(err, FKD_E_NOMEM, "cannot start the ZAP thread");
        goto fail;
    }
    *out = zap;
    return 0;
fail:
    if (zap->sock) zmq_close(zap->sock);
    fkd_wire_allowlist_free(&zap->list);
    pthread_mutex_destroy(&zap->lock);
    free(zap);
    return -1;
}

void fkd_wire_zap_stop(fkd_wire_zap **zap)
{
    if (!*zap) return;
    atomic_store(&(*zap)->stop, 1);
    pthread_join((*zap)->thread, NULL);
    fkd_wire_allowlist_free(&(*zap)->list);
    pthread_mutex_destroy(&(*zap)->lock);
    free(*zap);
    *zap = NULL;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int remaining_ms(double deadline)
{
    double r = deadline - now_ms();
    return r <= 0 ? 0 : (int)r + 1;
}

/* ---- sockets ------------------------------------------------------------------- */
static int set_common(void *s, const fkd_wire_limits *lim, fkd_error *err)
{
    fkd_wire_limits tmp;
    if (!lim) {
        fkd_wire_limits_default(&tmp);
        lim = &tmp;
    }
    int64_t max = (int64_t)lim->max_frame_bytes;
    int linger = LINGER_MS, hs = HANDSHAKE_MS;
    if (zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &max, sizeof max) ||
        zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_setsockopt(s, ZMQ_HANDSHAKE_IVL, &hs, sizeof hs))
        return zmq_fail(err, FKD_E_NET, "cannot configure socket");
    return 0;
}

int fkd_wire_server_open(void **sock, void *ctx, const fkd_wire_identity *id, fkd_wire_zap *zap,
                         const char *endpoint, const fkd_wire_limits *lim, fkd_error *err)
{
    *sock = NULL;
    if (!zap)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "a CURVE server needs a running ZAP handler "
                             "(without one, libzmq admits every key)");
    void *s = zmq_socket(ctx, ZMQ_ROUTER);
    if (!s) return zmq_fail(err, FKD_E_NET, "cannot create ROUTER socket");
    int one = 1;
    if (zmq_setsockopt(s, ZMQ_CURVE_SERVER, &one, sizeof one) ||
        zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, id->curve_sk, FKD_WIRE_KEY_BYTES) ||
        zmq_setsockopt(s, ZMQ_ZAP_DOMAIN, FKD_WIRE_ZAP_DOMAIN, strlen(FKD_WIRE_ZAP_DOMAIN)) ||
        zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &one, sizeof one) || set_common(s, lim, err)) {
        zmq_fail(err, FKD_E_NET, "cannot configure the CURVE server socket");
        zmq_close(s);
        return -1;
    }
    if (zmq_bind(s, endpoint)) {
        fkd_error_set(err, FKD_E_NET, "cannot bind %s: %s", endpoint, zmq_strerror(zmq_errno()));
        zmq_close(s);
        return -1;
    }
    *sock = s;
    return 0;
}

/* A CURVE client DEALER with every option set, not yet connected. */
static void *client_socket(void *ctx, const fkd_wire_identity *id,
                           const uint8_t server_curve_pk[FKD_WIRE_KEY_BYTES],
                           const fkd_wire_limits *lim, fkd_error *err)
{
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    if (!s) {
        zmq_fail(err, FKD_E_NET, "cannot create DEALER socket");
        return NULL;
    }
    int one = 1;
    if (zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, server_curve_pk, FKD_WIRE_KEY_BYTES) ||
        zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, id->curve_pk, FKD_WIRE_KEY_BYTES) ||
        zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, id->curve_sk, FKD_WIRE_KEY_BYTES) ||
        zmq_setsockopt(s, ZMQ_IMMEDIATE, &one, sizeof one) || set_common(s, lim, err)) {
        zmq_fail(err, FKD_E_NET, "cannot configure the CURVE client socket");
        zmq_close(s);
        return NULL;
    }
    return s;
}

static int client_connect(void *s, const char *endpoint, fkd_error *err)
{
    if (zmq_connect(s, endpoint) == 0) return 0;
    return fkd_error_set(err, FKD_E_NET, "cannot connect to %s: %s", endpoint,
                         zmq_strerror(zmq_errno()));
}

int fkd_wire_client_open(void **sock, void *ctx, const fkd_wire_identity *id,
                         const uint8_t server_curve_pk[FKD_WIRE_KEY_BYTES], const char *endpoint,
                         const fkd_wire_limits *lim, fkd_error *err)
{
    *sock = client_socket(ctx, id, server_curve_pk, lim, err);
    if (!*sock) return -1;
    if (client_connect(*sock, endpoint, err)) {
        fkd_wire_socket_close(sock);
        return -1;
    }
    return 0;
}

/* Waits for the first handshake verdict on a monitor socket. */
static int probe_wait(void *mon, int timeout_ms, fkd_error *err)
{
    double deadline = now_ms() + timeout_ms;
    for (;;) {
        zmq_pollitem_t item = {mon, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, remaining_ms(deadline)) <= 0 || !(item.revents & ZMQ_POLLIN))
            return fkd_error_set(err, FKD_E_TIMEOUT, "no CURVE handshake within %d ms (is the "
                                 "coordinator running at that address?)", timeout_ms);
        uint8_t ev[6];
        char addr[256];
        if (zmq_recv(mon, ev, sizeof ev, 0) < 6 || zmq_recv(mon, addr, sizeof addr, 0) < 0)
            continue;
        uint16_t event;
        memcpy(&event, ev, sizeof event);
        if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) return 0;
        if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
            return fkd_error_set(err, FKD_E_AUTH, "the coordinator refused this client's key "
                                 "(not in its allow-list: send it your .pub line)");
        if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ||
            event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)
            return fkd_error_set(err, FKD_E_AUTH, "CURVE handshake failed (wrong coordinator "
                                 "public key?)");
    }
}

int fkd_wire_client_probe(void *ctx, const fkd_wire_identity *id,
                          const uint8_t server_curve_pk[FKD_WIRE_KEY_BYTES], const char *endpoint,
                          int timeout_ms, fkd_error *err)
{
    void *s = client_socket(ctx, id, server_curve_pk, NULL, err);
    if (!s) return -1;
    char mon_ep[64];
    snprintf(mon_ep, sizeof mon_ep, "inproc://fkd-probe-%p", s);
    int events = ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                 ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL;
    void *mon = zmq_socket(ctx, ZMQ_PAIR);
    int rc = -1, linger = 0;
    if (!mon || zmq_socket_monitor(s, mon_ep, events) || zmq_connect(mon, mon_ep)) {
        zmq_fail(err, FKD_E_NET, "cannot monitor the probe socket");
    } else if (client_connect(s, endpoint, err) == 0) {
        rc = probe_wait(mon, timeout_ms, err);
    }
    zmq_socket_monitor(s, NULL, 0);
    if (mon) {
        zmq_setsockopt(mon, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(mon);
    }
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(s);
    return rc;
}

void fkd_wire_socket_close(void **sock)
{
    if (*sock) zmq_close(*sock);
    *sock = NULL;
}

int fkd_wire_check_sender(const fkd_wire_peer *peer, const fkd_wire_env *env, fkd_error *err)
{
    if (!peer->authenticated)
        return fkd_error_set(err, FKD_E_AUTH, "connection has no ZAP identity (is the ZAP "
                             "handler running?)");
    if (sodium_memcmp(peer->sign_pk, env->sender, FKD_WIRE_ID_BYTES) != 0)
        return fkd_error_set(err, FKD_E_AUTH, "%s claims another sender id than the key this "
                             "connection was admitted with", fkd_wire_type_name(env->type));
    return 0;
}

/* ---- one message with a timeout ---------------------------------------------- */
/* Sends all frames without blocking, retrying until the deadline while
 * libzmq has no room (high-water mark, or no completed connection yet). */
static int send_frames(void *sock, const void *const *data, const size_t *len, int n,
                       int timeout_ms, fkd_error *err)
{
    double deadline = now_ms() + (timeout_ms < 0 ? 1e12 : timeout_ms);
    for (;;) {
        zmq_pollitem_t item = {sock, 0, ZMQ_POLLOUT, 0};
        int rc = zmq_poll(&item, 1, remaining_ms(deadline));
        if (rc < 0 && zmq_errno() != EINTR) return zmq_fail(err, FKD_E_NET, "poll failed");
        if (rc > 0) {
            if (zmq_send(sock, data[0], len[0], n > 1 ? ZMQ_SNDMORE | ZMQ_DONTWAIT : ZMQ_DONTWAIT)
                >= 0) {
                /* Once the first frame is in, libzmq accepts the rest atomically. */
                for (int i = 1; i < n; i++)
                    if (zmq_send(sock, data[i], len[i], i + 1 < n ? ZMQ_SNDMORE : 0) < 0)
                        return zmq_fail(err, FKD_E_NET, "send failed");
                return 0;
            }
            if (zmq_errno() == EHOSTUNREACH)
                return fkd_error_set(err, FKD_E_NET, "peer is no longer connected");
            if (zmq_errno() != EAGAIN) return zmq_fail(err, FKD_E_NET, "send failed");
        }
        if (now_ms() >= deadline)
            return fkd_error_set(err, FKD_E_TIMEOUT, "could not send within %d ms (peer not "
                                 "connected or not reading)", timeout_ms);
        if (rc > 0) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
}

int fkd_wire_send(void *sock, const fkd_wire_peer *peer, const uint8_t *msg, size_t len,
                  int timeout_ms, fkd_error *err)
{
    if (peer) {
        const void *data[2] = {peer->routing_id, msg};
        size_t lens[2] = {peer->routing_len, len};
        return send_frames(sock, data, lens, 2, timeout_ms, err);
    }
    const void *data[1] = {msg};
    return send_frames(sock, data, &len, 1, timeout_ms, err);
}

static void drain(void *sock, zmq_msg_t *m)
{
    while (zmq_msg_more(m)) {
        zmq_msg_close(m);
        zmq_msg_init(m);
        if (zmq_msg_recv(m, sock, ZMQ_DONTWAIT) < 0) break;
    }
}

/* Takes the ZAP handler's User-Id (Z85 of the client's Ed25519 key). */
static void read_user_id(fkd_wire_peer *peer, zmq_msg_t *m)
{
    const char *uid = zmq_msg_gets(m, "User-Id");
    peer->authenticated = 0;
    if (uid && strlen(uid) == FKD_WIRE_Z85_KEY_CHARS && zmq_z85_decode(peer->sign_pk, uid))
        peer->authenticated = 1;
}

int fkd_wire_recv(void *sock, fkd_wire_peer *peer, uint8_t **msg, size_t *len, int timeout_ms,
                  const fkd_wire_limits *lim, fkd_error *err)
{
    *msg = NULL;
    fkd_wire_limits tmp;
    if (!lim) {
        fkd_wire_limits_default(&tmp);
        lim = &tmp;
    }
    zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
    int rc = zmq_poll(&item, 1, timeout_ms);
    if (rc < 0) return zmq_fail(err, zmq_errno() == EINTR ? FKD_E_TIMEOUT : FKD_E_NET, "poll");
    if (rc == 0) return fkd_error_set(err, FKD_E_TIMEOUT, "no message within %d ms", timeout_ms);
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m);
        return zmq_fail(err, FKD_E_NET, "receive failed");
    }
    if (peer) {
        memset(peer, 0, sizeof *peer);
        size_t n = zmq_msg_size(&m);
        if (!zmq_msg_more(&m) || n > FKD_WIRE_ROUTING_MAX) {
            drain(sock, &m);
            zmq_msg_close(&m);
            return fkd_error_set(err, FKD_E_PROTOCOL, "ROUTER frame without a routing id");
        }
        memcpy(peer->routing_id, zmq_msg_data(&m), n);
        peer->routing_len = n;
        zmq_msg_close(&m);
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return zmq_fail(err, FKD_E_NET, "receive failed");
        }
        read_user_id(peer, &m);
    }
    if (zmq_msg_more(&m)) {
        drain(sock, &m);
        zmq_msg_close(&m);
        return fkd_error_set(err, FKD_E_PROTOCOL, "peer sent a multi-frame message");
    }
    size_t n = zmq_msg_size(&m);
    if (n > lim->max_frame_bytes) {
        zmq_msg_close(&m);
        return fkd_error_set(err, FKD_E_LIMIT, "frame of %zu bytes is above the limit %zu", n,
                             lim->max_frame_bytes);
    }
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        zmq_msg_close(&m);
        return fkd_error_set(err, FKD_E_NOMEM, "cannot allocate %zu bytes", n);
    }
    memcpy(buf, zmq_msg_data(&m), n);
    zmq_msg_close(&m);
    *msg = buf;
    *len = n;
    return 0;
}
