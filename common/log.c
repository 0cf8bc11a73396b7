/* log.c — one key=value line per event, with a UTC timestamp and a level, so
 * an operator can grep a coordinator's or a client's log and a test can parse
 * it. A line is written with one fprintf and flushed, so lines of several
 * processes sharing a file do not interleave mid-line. */
#include "fkd_common.h"

#include <stdarg.h>
#include <string.h>
#include <time.h>

#define LOG_LINE_MAX 1024

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void fkd_logger_init(fkd_logger *lg, FILE *f, int min_level, const char *comp)
{
    memset(lg, 0, sizeof *lg);
    lg->f = f;
    lg->min_level = min_level;
    snprintf(lg->comp, sizeof lg->comp, "%s", comp ? comp : "fedkd");
}

int fkd_log_level_parse(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, level_names[i]) == 0) return i;
    return -1;
}

void fkd_log(const fkd_logger *lg, int level, const char *event, const char *fmt, ...)
{
    if (!lg || !lg->f || level < lg->min_level) return;
    if (level < FKD_LOG_DEBUG) level = FKD_LOG_DEBUG;
    if (level > FKD_LOG_ERROR) level = FKD_LOG_ERROR;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char fields[LOG_LINE_MAX];
    fields[0] = '\0';
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(fields, sizeof fields, fmt, ap);
        va_end(ap);
    }
    fprintf(lg->f, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s comp=%s event=%s%s%s\n",
            tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
            ts.tv_nsec / 1000000, level_names[level], lg->comp, event, fields[0] ? " " : "",
            fields);
    fflush(lg->f);
}
