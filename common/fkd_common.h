/* fkd_common.h — the few things every fedkd library shares.
 *
 * One error convention for the whole project: a function that can fail
 * returns 0 on success and -1 on failure, and fills the caller's fkd_error
 * (which may be NULL) with a code and a sentence that says what went wrong and,
 * where it can, what to do. fkd_strerror() turns a bare code into a sentence.
 *
 * Also here: atomic file writes (write, fsync, rename), a seeded random number
 * generator (no hidden global state: every user owns its fkd_rng), a monotonic
 * clock, peak memory, a CRC-32 for file checksums, and a progress line that is
 * shown only on a terminal. Nothing here allocates behind the caller's back. */
#ifndef FKD_COMMON_H
#define FKD_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum fkd_error_code {
    FKD_OK = 0,
    FKD_E_INVALID_ARG,  /* a caller passed a value outside what the API accepts */
    FKD_E_NOMEM,        /* an allocation failed */
    FKD_E_IO,           /* the operating system refused a read, write or open */
    FKD_E_FORMAT,       /* input is not in the expected format (bad magic, bad field) */
    FKD_E_TRUNCATED,    /* input ends before its declared size */
    FKD_E_CHECKSUM,     /* input's checksum does not match its content */
    FKD_E_MISMATCH,     /* input is valid but does not fit (other config, other shape) */
    FKD_E_VERSION,      /* input was written by a newer, incompatible version */
    FKD_E_LIMIT,        /* a size is above a configured limit */
    FKD_E_AUTH,         /* authentication or decryption failed */
    FKD_E_REPLAY,       /* a message was seen before */
    FKD_E_TIMEOUT,      /* a peer did not answer in time */
    FKD_E_PROTOCOL,     /* a peer broke the protocol's state machine */
    FKD_E_NET,          /* a network call failed */
    FKD_E_UNSUPPORTED,  /* a valid request this build cannot serve */
    FKD_E_CODE_COUNT
};

typedef struct {
    int code;        /* one of enum fkd_error_code */
    char msg[320];   /* a sentence: what went wrong, and what to do */
} fkd_error;

/* Fills err (if not NULL) and returns -1, so callers write
 *     return fkd_error_set(err, FKD_E_IO, "cannot open %s: %s", path, strerror(errno)); */
int fkd_error_set(fkd_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Puts a prefix (printf format: a path, "file:line") and ": " before err's
 * message, keeping its code; returns -1. For a caller that adds where. */
int fkd_error_prefix(fkd_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void fkd_error_clear(fkd_error *err);
const char *fkd_strerror(int code);

/* ---- files ---------------------------------------------------------------
 * An atomic file: written to "<path>.tmp.<pid>", fsync'ed, then renamed over
 * path, and the directory fsync'ed; a crash leaves either the old file or the
 * new one, never half of one. */
typedef struct {
    FILE *f;
    char path[1024];
    char tmp_path[1040];
    int failed;      /* a write failed: commit will refuse */
} fkd_atomic_file;

int fkd_atomic_open(fkd_atomic_file *af, const char *path, fkd_error *err);
int fkd_atomic_write(fkd_atomic_file *af, const void *data, size_t bytes, fkd_error *err);
int fkd_atomic_commit(fkd_atomic_file *af, fkd_error *err);
void fkd_atomic_abort(fkd_atomic_file *af);
int fkd_file_write_atomic(const char *path, const void *data, size_t bytes, fkd_error *err);

/* Reads a whole file into a fresh malloc'ed buffer (NUL-terminated for
 * convenience, the NUL not counted); refuses files larger than max_bytes. */
int fkd_file_read_all(uint8_t **data, size_t *bytes, const char *path, size_t max_bytes,
                      fkd_error *err);
int fkd_mkdir_p(const char *path, fkd_error *err);

/* ---- random numbers (xoshiro256**, seeded by splitmix64) ---------------- */
typedef struct { uint64_t s[4]; } fkd_rng;

void fkd_rng_seed(fkd_rng *rng, uint64_t seed);
uint64_t fkd_rng_u64(fkd_rng *rng);
uint32_t fkd_rng_below(fkd_rng *rng, uint32_t n);   /* uniform in [0, n) */
float fkd_rng_uniform(fkd_rng *rng);                 /* uniform in [0, 1) */
float fkd_rng_normal(fkd_rng *rng);                  /* standard normal */
double fkd_rng_gamma(fkd_rng *rng, double shape);    /* Gamma(shape, 1) */

/* ---- time, memory, checksums --------------------------------------------- */
double fkd_time_ms(void);          /* monotonic clock */
/* CPU time of this process, all threads: rates per CPU-millisecond stay
 * meaningful on a machine that other work is sharing. */
double fkd_cpu_time_ms(void);
double fkd_peak_rss_mb(void);      /* peak resident set size of this process */
uint32_t fkd_crc32(uint32_t crc, const void *data, size_t bytes);

/* ---- fp16 <-> fp32 (IEEE half, round to nearest even) -------------------- */
uint16_t fkd_fp32_to_fp16(float f);
float fkd_fp16_to_fp32(uint16_t h);

/* ---- progress on a terminal --------------------------------------------- *
 * Redraws one line on stderr at most every 100 ms when stderr is a TTY;
 * prints nothing otherwise (logs stay clean in CI and under systemd). */
typedef struct {
    const char *label;
    double start_ms, last_draw_ms;
    int64_t total;
    int enabled;
} fkd_progress;

void fkd_progress_begin(fkd_progress *p, const char *label, int64_t total);
void fkd_progress_update(fkd_progress *p, int64_t done, const char *extra);
void fkd_progress_end(fkd_progress *p);

/* ---- command-line options ------------------------------------------------
 * Every command describes its options in a table; fkd_cli_parse() reads
 * "--name value", "--name=value" and flags, and prints the table as --help.
 * Unknown options and bad values get an error that names them. */
enum fkd_opt_type { FKD_OPT_INT, FKD_OPT_I64, FKD_OPT_FLOAT, FKD_OPT_STR, FKD_OPT_FLAG };

typedef struct {
    const char *name;    /* without the leading "--" */
    int type;            /* enum fkd_opt_type */
    void *value;         /* int*, int64_t*, float*, const char**, int* (flag) */
    const char *help;
} fkd_opt;

/* Returns 0 to go on, 1 when --help was printed (exit 0), -1 on a bad option
 * (message printed to stderr). Positional arguments are collected into
 * positional[] (up to max_positional) when it is not NULL. */
int fkd_cli_parse(int argc, char **argv, const fkd_opt *opts, int n_opts, const char *usage,
                  const char **positional, int max_positional, int *n_positional);

/* ---- event logs ------------------------------------------------------------
 * One line per event, key=value, so logs can be grepped and parsed:
 *   ts=2026-11-25T09:00:00.123Z level=info comp=coord event=round_end round=3 ppl=12.5
 * fkd_log's fmt gives the event's own fields ("round=%d ppl=%.3f"). */
enum fkd_log_level { FKD_LOG_DEBUG = 0, FKD_LOG_INFO = 1, FKD_LOG_WARN = 2, FKD_LOG_ERROR = 3 };

typedef struct {
    FILE *f;           /* NULL: nothing is written */
    int min_level;     /* enum fkd_log_level */
    char comp[24];     /* component name, e.g. "coord" or "client" */
} fkd_logger;

void fkd_logger_init(fkd_logger *lg, FILE *f, int min_level, const char *comp);
int fkd_log_level_parse(const char *name); /* "debug" | "info" | "warn" | "error"; -1 */
void fkd_log(const fkd_logger *lg, int level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- key = value configuration files ----------------------------------------
 * One setting per line, "key = value"; '#' starts a comment; blank lines are
 * ignored; a value may be quoted with "..." to keep spaces or '#'. The file's
 * settings are handed to fn in order; fn returns -1 (with err set) to refuse
 * one, and the error then names the file and line. */
#define FKD_KVCONF_MAX_BYTES ((size_t)1 << 20)
#define FKD_KVCONF_MAX_LINE 1024
typedef int (*fkd_kvconf_fn)(void *ctx, const char *key, const char *value, fkd_error *err);
int fkd_kvconf_parse(const char *text, size_t len, const char *name, fkd_kvconf_fn fn, void *ctx,
                     fkd_error *err);
int fkd_kvconf_load(const char *path, fkd_kvconf_fn fn, void *ctx, fkd_error *err);

#endif
