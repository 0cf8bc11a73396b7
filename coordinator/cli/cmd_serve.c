/* cmd_serve.c — `fedkd serve`: the coordinator as a service. Reads the
 * configuration file, applies key=value overrides from the command line,
 * binds the endpoint (CURVE + allow-list over tcp:// and ipc://), and runs
 * the round engine until the configured rounds are done or a signal stops
 * it. SIGHUP re-reads the allow-list. A stopped or killed coordinator
 * started again with the same state_dir resumes from its last checkpoint. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "commands.h"
#include "fkd_coordinator.h"

#define POLL_MS 100
#define BYE_FLUSH_MS 300

static volatile sig_atomic_t g_stop;
static fkd_wire_zap *volatile g_zap;

static void on_stop(int sig) { g_stop = sig; }
static void on_hup(int sig)
{
    (void)sig;
    if (g_zap) fkd_wire_zap_request_reload(g_zap);
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_hup;
    sigaction(SIGHUP, &sa, NULL);
}

static int is_network(const char *endpoint)
{
    return strncmp(endpoint, "tcp://", 6) == 0 || strncmp(endpoint, "ipc://", 6) == 0;
}

/* A CURVE ROUTER with the ZAP allow-list for a network endpoint; a plain
 * ROUTER for inproc:// (the engine then checks ids against the list). */
static int open_socket(void **sock, void *ctx, fkd_coord_config *cfg,
                       const fkd_wire_identity *id, fkd_error *err)
{
    if (is_network(cfg->endpoint)) {
        fkd_wire_zap *zap;
        if (fkd_wire_zap_start(&zap, ctx, cfg->allowlist, err) != 0) return -1;
        g_zap = zap;
        return fkd_wire_server_open(sock, ctx, id, zap, cfg->endpoint, NULL, err);
    }
    cfg->require_transport_auth = 0;
    *sock = zmq_socket(ctx, ZMQ_ROUTER);
    int one = 1;
    if (!*sock || zmq_setsockopt(*sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one) ||
        zmq_bind(*sock, cfg->endpoint))
        return fkd_error_set(err, FKD_E_NET, "cannot bind %s: %s", cfg->endpoint,
                             zmq_strerror(zmq_errno()));
    return 0;
}

static int configure(fkd_coord_config *cfg, const char *path, const char **sets, int n_sets)
{
    fkd_error err;
    fkd_coord_config_defaults(cfg);
    if (path && fkd_coord_config_load(cfg, path, &err) != 0) {
        fprintf(stderr, "fedkd serve: %s\n", err.msg);
        return -1;
    }
    for (int i = 0; i < n_sets; i++)
        if (fkd_coord_config_override(cfg, sets[i], &err) != 0) {
            fprintf(stderr, "fedkd serve: %s\n", err.msg);
            return -1;
        }
    if (fkd_coord_config_validate(cfg, &err) != 0) {
        fprintf(stderr, "fedkd serve: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int serve(fkd_coord_config *cfg)
{
    fkd_logger log;
    fkd_logger_init(&log, stderr, cfg->log_level, "coord");
    fkd_wire_identity id;
    fkd_error err;
    if (fkd_wire_identity_load(&id, cfg->key, &err) != 0) {
        fkd_log(&log, FKD_LOG_ERROR, "start_failed", "error=\"%s\"", err.msg);
        return 1;
    }
    void *ctx = zmq_ctx_new(), *sock = NULL;
    fkd_coord *c = NULL;
    fkd_coord_metrics_service *metrics = NULL; /* NULL: metrics off, calls do nothing */
    int rc = open_socket(&sock, ctx, cfg, &id, &err);
    if (rc == 0) rc = fkd_coord_new(&c, cfg, &id, &log, &err);
    if (rc == 0 && cfg->metrics_listen[0])
        rc = fkd_coord_metrics_service_start(&metrics, cfg->metrics_listen, cfg->metrics_stale_ms,
                                             &err);
    if (rc == 0) {
        fkd_coord_attach(c, sock);
        fkd_log(&log, FKD_LOG_INFO, "listening", "endpoint=%s metrics_port=%d", cfg->endpoint,
                fkd_coord_metrics_service_port(metrics));
        install_signals();
        while (!g_stop && fkd_coord_phase(c) != FKD_COORD_DONE) {
            rc = fkd_coord_poll(c, POLL_MS, &err);
            fkd_coord_metrics_service_update(metrics, c);
            if (rc != 0) break;
        }
    }
    if (rc != 0) {
        fkd_log(&log, FKD_LOG_ERROR, "stopped", "error=\"%s\"", err.msg);
        fkd_coord_metrics_service_fail(metrics, err.msg);
    }
    if (c) {
        fkd_coord_say_bye(c);
        double until = fkd_time_ms() + BYE_FLUSH_MS;
        fkd_error perr;
        while (fkd_time_ms() < until && fkd_coord_poll(c, 50, &perr) == 0) {}
        fkd_log(&log, FKD_LOG_INFO, "exit", "round=%llu signal=%d",
                (unsigned long long)fkd_coord_round(c), (int)g_stop);
        fkd_coord_free(&c);
    }
    fkd_coord_metrics_service_stop(&metrics);
    fkd_wire_socket_close(&sock);
    fkd_wire_zap *zap = g_zap;
    g_zap = NULL;
    if (zap) fkd_wire_zap_stop(&zap);
    zmq_ctx_term(ctx);
    fkd_wire_identity_wipe(&id);
    return rc == 0 ? 0 : 1;
}

int cmd_serve(int argc, char **argv)
{
    const char *config = NULL;
    int print = 0;
    fkd_opt opts[] = {
        {"config", FKD_OPT_STR, &config, "configuration file (key = value lines)"},
        {"print-config", FKD_OPT_FLAG, &print, "print the effective configuration and exit"},
    };
    const char *sets[64];
    int n_sets = 0;
    int r = fkd_cli_parse(argc, argv, opts, 2,
                          "usage: fedkd serve [--config FILE] [key=value ...]\n"
                          "Runs the federated rounds; every configuration key can be given as "
                          "key=value\n(docs/configuration.md lists them). Keys: 'fedkd keygen'.",
                          sets, 64, &n_sets);
    if (r != 0) return r > 0 ? 0 : 2;
    fkd_coord_config cfg;
    if (configure(&cfg, config, sets, n_sets) != 0) return 2;
    if (print) {
        fkd_coord_config_print(stdout, &cfg);
        return 0;
    }
    return serve(&cfg);
}
