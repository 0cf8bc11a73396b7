/* error.c — the project's one error convention (see fkd_common.h). */
#include "fkd_common.h"

#include <stdarg.h>
#include <string.h>

int fkd_error_set(fkd_error *err, int code, const char *fmt, ...)
{
    if (!err) return -1;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int fkd_error_prefix(fkd_error *err, const char *fmt, ...)
{
    if (!err) return -1;
    char inner[sizeof err->msg];
    snprintf(inner, sizeof inner, "%s", err->msg);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    size_t at = n < 0 ? 0 : (size_t)n < sizeof err->msg ? (size_t)n : sizeof err->msg - 1;
    /* what does not fit is cut: the message stays a sentence's start */
    if (snprintf(err->msg + at, sizeof err->msg - at, ": %s", inner) < 0) err->msg[at] = '\0';
    return -1;
}

void fkd_error_clear(fkd_error *err)
{
    if (!err) return;
    err->code = FKD_OK;
    err->msg[0] = '\0';
}

const char *fkd_strerror(int code)
{
    static const char *const sentences[FKD_E_CODE_COUNT] = {
        [FKD_OK] = "success",
        [FKD_E_INVALID_ARG] = "invalid argument",
        [FKD_E_NOMEM] = "out of memory",
        [FKD_E_IO] = "input/output error",
        [FKD_E_FORMAT] = "malformed input",
        [FKD_E_TRUNCATED] = "input is truncated",
        [FKD_E_CHECKSUM] = "checksum mismatch: the data is corrupted",
        [FKD_E_MISMATCH] = "input does not match the expected configuration",
        [FKD_E_VERSION] = "unsupported (newer) version",
        [FKD_E_LIMIT] = "size above the configured limit",
        [FKD_E_AUTH] = "authentication failed",
        [FKD_E_REPLAY] = "replayed message",
        [FKD_E_TIMEOUT] = "timed out",
        [FKD_E_PROTOCOL] = "protocol violation",
        [FKD_E_NET] = "network error",
        [FKD_E_UNSUPPORTED] = "not supported by this build",
    };
    if (code < 0 || code >= FKD_E_CODE_COUNT) return "unknown error";
    return sentences[code];
}
