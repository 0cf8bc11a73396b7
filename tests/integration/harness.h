/* harness.h — real processes for the integration tests: a scratch folder,
 * keys and allow-lists, fedkd serve and fedkd-client started with their logs
 * in files, waiting for a log line, killing, and reading rounds.jsonl. */
#ifndef FKD_HARNESS_H
#define FKD_HARNESS_H

#include <stdint.h>
#include <sys/types.h>

#define H_PATH 1024
#define H_MAX_ROUNDS 64

typedef struct {
    char dir[H_PATH];     /* scratch folder of this test */
    int port;
    char endpoint[64];
} h_env;

typedef struct {
    int round, selected, updates, late, vanished, rejected;
    double perplexity, seconds;
    unsigned long long bytes_down, bytes_up;
} h_round;

/* Fresh scratch folder FKD_TEST_TMP/<name>; port_offset keeps the tests of
 * one program on distinct ports. */
void h_init(h_env *e, const char *name, int port_offset);
void h_path(char *out, const h_env *e, const char *name);
/* Writes <dir>/<name>.key/.pub. */
void h_keygen(const h_env *e, const char *name);
/* Writes <dir>/<file> with the .pub lines of names[0..n). */
void h_allowlist(const h_env *e, const char *file, const char *const *names, int n);
/* The keys of a run: the coordinator's, one per names[i], and the allowlist
 * allow.txt of allowed[0..n_allowed). */
void h_keys(const h_env *e, const char *const *names, int n, const char *const *allowed,
            int n_allowed);
/* A bigram "teacher" over the public corpus: soft labels (k = 8) for the
 * first n_positions positions, written to <dir>/<file>. */
void h_softlabels(const h_env *e, const char *file, int64_t n_positions);

/* Starts fedkd serve: key coord.key, allow-list allow.txt, state_dir <state>,
 * endpoint e->endpoint, plus extra "key=value" settings (NULL-terminated). */
pid_t h_serve(const h_env *e, const char *state, const char *log, const char *const *extra);
/* Starts fedkd-client with key <name>.key, its state in <name>-state,
 * natural client number `client` of the default corpus. */
pid_t h_client(const h_env *e, const char *name, int client, const char *log,
               const char *const *extra);
/* Starts clients 0..n-1 as h_client, named names[i], logging to <name>.log. */
void h_clients(pid_t *pids, const h_env *e, const char *const *names, int n);

/* 0 once file contains needle, -1 after timeout_s. */
int h_wait_for(const char *path, const char *needle, double timeout_s);
int h_count(const char *path, const char *needle);
/* Waits for pid; kills it with SIGKILL after timeout_s. Returns the exit
 * status (0..255), 128+signal when killed, -1 on timeout. */
int h_wait_exit(pid_t pid, double timeout_s);
void h_kill(pid_t pid, int sig);

/* Reads <state>/rounds.jsonl; returns the number of rounds. */
int h_rounds(const h_env *e, const char *state, h_round *out, int max);
/* Prints the rounds as key=value lines (the figures of the report). */
void h_print_rounds(const char *label, const h_round *r, int n);
/* 1 when two files have the same bytes. */
int h_same_file(const char *a, const char *b);

#endif
