/* harness.c — see harness.h. Processes are started with fork/execv so the
 * tests exercise the shipped executables, not the libraries. */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fkd_train.h"
#include "fkd_wire.h"

#define MAX_ARGS 48
#define SOFT_K 8

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "harness: %s: %s\n", what, detail);
    exit(99);
}

/* Ports below Linux's ephemeral range (32768 and up), where no outgoing
 * connection of a test running beside this one can be holding them. */
#define PORT_BASE 21000
#define PORT_SLOTS 2900
#define PORTS_PER_TEST 4

static int port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* The first slot from this process's own whose port is free right now. */
static int pick_port(int port_offset)
{
    for (int i = 0; i < PORT_SLOTS; i++) {
        int slot = (int)((getpid() + i) % PORT_SLOTS);
        int port = PORT_BASE + slot * PORTS_PER_TEST + port_offset;
        if (port_free(port)) return port;
    }
    die("no free loopback port", "every test port is taken");
    return -1;
}

void h_init(h_env *e, const char *name, int port_offset)
{
    const char *tmp = getenv("FKD_TEST_TMP");
    int len = snprintf(e->dir, sizeof e->dir, "%.900s/%.100s", tmp ? tmp : "/tmp", name);
    if (len < 0 || (size_t)len >= sizeof e->dir) die("scratch path too long", name);
    char cmd[H_PATH + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", e->dir);
    if (system(cmd) != 0) die("cannot clean", e->dir);
    fkd_error err;
    if (fkd_mkdir_p(e->dir, &err) != 0) die("mkdir", err.msg);
    e->port = pick_port(port_offset);
    snprintf(e->endpoint, sizeof e->endpoint, "tcp://127.0.0.1:%d", e->port);
}

void h_path(char *out, const h_env *e, const char *name)
{
    int len = snprintf(out, H_PATH, "%s/%s", e->dir, name);
    if (len < 0 || len >= H_PATH) die("path too long", name);
}

void h_keygen(const h_env *e, const char *name)
{
    char prefix[H_PATH];
    h_path(prefix, e, name);
    fkd_wire_identity id;
    fkd_error err;
    if (fkd_wire_identity_generate(&id, &err) != 0 ||
        fkd_wire_identity_save(prefix, &id, name, 1, &err) != 0)
        die("keygen", err.msg);
}

void h_allowlist(const h_env *e, const char *file, const char *const *names, int n)
{
    char path[H_PATH];
    h_path(path, e, file);
    FILE *f = fopen(path, "w");
    if (!f) die("cannot write", path);
    for (int i = 0; i < n; i++) {
        char pub[H_PATH + 8];
        snprintf(pub, sizeof pub, "%s/%s.pub", e->dir, names[i]);
        uint8_t *data;
        size_t len;
        fkd_error err;
        if (fkd_file_read_all(&data, &len, pub, 4096, &err) != 0) die("read", err.msg);
        fwrite(data, 1, len, f);
        free(data);
    }
    fclose(f);
}

/* ---- a bigram teacher ------------------------------------------------------------ */
static void top_k(int32_t *ids, float *probs, const uint32_t *row, double total)
{
    for (int j = 0; j < SOFT_K; j++) {
        ids[j] = j;
        probs[j] = 0;
    }
    for (int t = 0; t < 256; t++) {
        float p = total > 0 ? (float)(row[t] / total) : 0;
        if (p <= probs[SOFT_K - 1]) continue;
        int j = SOFT_K - 1;
        while (j > 0 && probs[j - 1] < p) {
            probs[j] = probs[j - 1];
            ids[j] = ids[j - 1];
            j--;
        }
        probs[j] = p;
        ids[j] = t;
    }
}

void h_softlabels(const h_env *e, const char *file, int64_t n_positions)
{
    fkd_error err;
    fkd_corpus c;
    fkd_corpus_options o = fkd_corpus_defaults(FKD_SIDE_PUBLIC);
    if (fkd_corpus_load(&c, FKD_DATA_DEFAULT_DIR, &o, &err) != 0) die("corpus", err.msg);
    uint32_t *docs = malloc(c.n_docs * sizeof *docs);
    for (uint32_t i = 0; i < c.n_docs; i++) docs[i] = i;
    fkd_tokenizer tok;
    fkd_tokenizer_init_bytes(&tok);
    fkd_token_stream s;
    if (fkd_token_stream_from_docs(&s, &c, docs, c.n_docs, &tok, &err) != 0) die("stream", err.msg);
    uint32_t(*counts)[256] = calloc(256, sizeof *counts);
    for (int64_t i = 0; i + 1 < s.n; i++) counts[s.tokens[i]][s.tokens[i + 1]]++;
    int64_t n = s.n - 1 < n_positions ? s.n - 1 : n_positions;
    fkd_softlabel_shard sh;
    if (fkd_softlabels_alloc(&sh, n, SOFT_K, 256, &err) != 0) die("alloc", err.msg);
    sh.quant = FKD_SOFT_Q8_SQRT;
    sh.temperature = 1.0f;
    sh.shard_index = 0;
    sh.shard_count = 1;
    for (int64_t i = 0; i < n; i++) {
        const uint32_t *row = counts[s.tokens[i]];
        double total = 0;
        for (int t = 0; t < 256; t++) total += row[t];
        sh.tokens[i] = s.tokens[i];
        top_k(sh.ids + i * SOFT_K, sh.probs + i * SOFT_K, row, total);
        fkd_softlabels_quantize(sh.probs + i * SOFT_K, SOFT_K, sh.quant);
    }
    char path[H_PATH];
    h_path(path, e, file);
    if (fkd_softlabels_save(path, &sh, &err) != 0) die("save soft labels", err.msg);
    fkd_softlabels_free(&sh);
    free(counts);
    fkd_token_stream_free(&s);
    free(docs);
    fkd_corpus_free(&c);
}

/* ---- processes ---------------------------------------------------------------------- */
static pid_t spawn(const char *log, char **argv)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) die("fork", strerror(errno));
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd < 0) _exit(98);
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
        setenv("OMP_NUM_THREADS", "1", 1);
        execv(argv[0], argv);
        _exit(97);
    }
    return pid;
}

static char *dupf(const char *fmt, const char *a, const char *b)
{
    char buf[H_PATH * 2];
    snprintf(buf, sizeof buf, fmt, a, b);
    return strdup(buf);
}

static void free_args(char **argv)
{
    for (int i = 1; argv[i]; i++) free(argv[i]);
}

/* Spawns argv[0..n) followed by extra (NULL-terminated, may be NULL), its
 * output in the environment's file log; frees the arguments it was given. */
static pid_t spawn_args(const h_env *e, char **argv, int n, const char *const *extra,
                        const char *log)
{
    for (int i = 0; extra && extra[i] && n < MAX_ARGS - 1; i++) argv[n++] = strdup(extra[i]);
    argv[n] = NULL;
    char path[H_PATH];
    h_path(path, e, log);
    pid_t pid = spawn(path, argv);
    free_args(argv);
    return pid;
}

pid_t h_serve(const h_env *e, const char *state, const char *log, const char *const *extra)
{
    char *argv[MAX_ARGS];
    int n = 0;
    argv[n++] = FKD_BINARY_DIR "/fedkd";
    argv[n++] = strdup("serve");
    argv[n++] = dupf("key=%s/%s", e->dir, "coord.key");
    argv[n++] = dupf("allowlist=%s/%s", e->dir, "allow.txt");
    argv[n++] = dupf("state_dir=%s/%s", e->dir, state);
    argv[n++] = dupf("endpoint=%s%s", e->endpoint, "");
    argv[n++] = strdup("metrics_listen="); /* tests may run side by side: no fixed port */
    return spawn_args(e, argv, n, extra, log);
}

pid_t h_client(const h_env *e, const char *name, int client, const char *log,
               const char *const *extra)
{
    char *argv[MAX_ARGS], num[16];
    int n = 0;
    snprintf(num, sizeof num, "%d", client);
    argv[n++] = FKD_BINARY_DIR "/fedkd-client";
    argv[n++] = dupf("key=%s/%s.key", e->dir, name);
    argv[n++] = dupf("coordinator=%s/%s", e->dir, "coord.pub");
    argv[n++] = dupf("state_dir=%s/%s-state", e->dir, name);
    argv[n++] = dupf("endpoint=%s%s", e->endpoint, "");
    argv[n++] = dupf("client=%s%s", num, "");
    argv[n++] = strdup("backoff_max_ms=1000");
    return spawn_args(e, argv, n, extra, log);
}

void h_clients(pid_t *pids, const h_env *e, const char *const *names, int n)
{
    for (int i = 0; i < n; i++) {
        char log[H_PATH];
        snprintf(log, sizeof log, "%s.log", names[i]);
        pids[i] = h_client(e, names[i], i, log, NULL);
    }
}

void h_keys(const h_env *e, const char *const *names, int n, const char *const *allowed,
            int n_allowed)
{
    h_keygen(e, "coord");
    for (int i = 0; i < n; i++) h_keygen(e, names[i]);
    h_allowlist(e, "allow.txt", allowed, n_allowed);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int h_count(const char *path, const char *needle)
{
    uint8_t *data;
    size_t len;
    if (fkd_file_read_all(&data, &len, path, (size_t)64 << 20, NULL) != 0) return 0;
    int n = 0;
    for (const char *p = (const char *)data; (p = strstr(p, needle)); p += strlen(needle)) n++;
    free(data);
    return n;
}

int h_wait_for(const char *path, const char *needle, double timeout_s)
{
    double end = now_s() + timeout_s;
    while (now_s() < end) {
        if (h_count(path, needle) > 0) return 0;
        nap_ms(20);
    }
    return -1;
}

int h_wait_exit(pid_t pid, double timeout_s)
{
    double end = now_s() + timeout_s;
    int status;
    while (now_s() < end) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        nap_ms(20);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

void h_kill(pid_t pid, int sig)
{
    kill(pid, sig);
    if (sig == SIGKILL) waitpid(pid, NULL, 0);
}

/* ---- results ------------------------------------------------------------------------------ */
static double field_num(const char *line, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    return p ? strtod(p + strlen(pat), NULL) : -1;
}

int h_rounds(const h_env *e, const char *state, h_round *out, int max)
{
    char path[H_PATH];
    int len = snprintf(path, sizeof path, "%s/%s/rounds.jsonl", e->dir, state);
    if (len < 0 || len >= (int)sizeof path) die("path too long", state);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[2048];
    int n = 0;
    while (n < max && fgets(line, sizeof line, f)) {
        h_round *r = &out[n++];
        r->round = (int)field_num(line, "round");
        r->selected = (int)field_num(line, "selected");
        r->updates = (int)field_num(line, "updates");
        r->late = (int)field_num(line, "late");
        r->vanished = (int)field_num(line, "vanished");
        r->rejected = (int)field_num(line, "rejected");
        r->perplexity = field_num(line, "perplexity");
        r->seconds = field_num(line, "seconds");
        r->bytes_down = (unsigned long long)field_num(line, "bytes_down");
        r->bytes_up = (unsigned long long)field_num(line, "bytes_up");
    }
    fclose(f);
    return n;
}

void h_print_rounds(const char *label, const h_round *r, int n)
{
    for (int i = 0; i < n; i++)
        printf("run=%s round=%d updates=%d selected=%d vanished=%d late=%d ppl=%.3f "
               "bytes_down=%llu bytes_up=%llu seconds=%.2f\n",
               label, r[i].round, r[i].updates, r[i].selected, r[i].vanished, r[i].late,
               r[i].perplexity, r[i].bytes_down, r[i].bytes_up, r[i].seconds);
    fflush(stdout);
}

int h_same_file(const char *a, const char *b)
{
    uint8_t *x, *y;
    size_t nx, ny;
    if (fkd_file_read_all(&x, &nx, a, (size_t)1 << 30, NULL) != 0) return 0;
    if (fkd_file_read_all(&y, &ny, b, (size_t)1 << 30, NULL) != 0) {
        free(x);
        return 0;
    }
    int same = nx == ny && memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return same;
}
