/* kvconf.c — "key = value" configuration files (the coordinator's and the
 * client's). The parser only splits lines; what a key means is the caller's
 * business (its fn refuses unknown keys), so one format serves every tool. */
#include "fkd_common.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

static const char *skip_space(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r')) p++;
    return p;
}

static const char *trim_end(const char *start, const char *end)
{
    while (end > start && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r')) end--;
    return end;
}

/* Splits one line into key and value (NUL-terminated copies). Returns 1 for a
 * setting, 0 for a blank or comment line, -1 for a malformed one. */
static int split_line(char *key, char *value, const char *p, const char *end, const char **why)
{
    p = skip_space(p, end);
    if (p == end || *p == '#') return 0;
    const char *eq = memchr(p, '=', (size_t)(end - p));
    if (!eq) return *why = "no '=' (expected key = value)", -1;
    const char *kend = trim_end(p, eq);
    if (kend == p) return *why = "empty key", -1;
    for (const char *k = p; k < kend; k++)
        if (!isalnum((unsigned char)*k) && *k != '_' && *k != '.' && *k != '-')
            return *why = "a key has only letters, digits, '_', '.' and '-'", -1;
    memcpy(key, p, (size_t)(kend - p));
    key[kend - p] = '\0';
    const char *v = skip_space(eq + 1, end), *vend;
    if (v < end && *v == '"') {
        vend = memchr(v + 1, '"', (size_t)(end - v - 1));
        if (!vend) return *why = "unterminated quote", -1;
        const char *rest = skip_space(vend + 1, end);
        if (rest < end && *rest != '#') return *why = "text after a quoted value", -1;
        v++;
    } else {
        const char *hash = memchr(v, '#', (size_t)(end - v));
        vend = trim_end(v, hash ? hash : end);
    }
    memcpy(value, v, (size_t)(vend - v));
    value[vend - v] = '\0';
    return 1;
}

int fkd_kvconf_parse(const char *text, size_t len, const char *name, fkd_kvconf_fn fn, void *ctx,
                     fkd_error *err)
{
    const char *p = text, *end = text + len;
    char key[FKD_KVCONF_MAX_LINE], value[FKD_KVCONF_MAX_LINE];
    for (int line = 1; p < end; line++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *lend = nl ? nl : end;
        if (lend - p >= FKD_KVCONF_MAX_LINE)
            return fkd_error_set(err, FKD_E_LIMIT, "%s:%d: line longer than %d bytes", name, line,
                                 FKD_KVCONF_MAX_LINE - 1);
        if (memchr(p, '\0', (size_t)(lend - p)))
            return fkd_error_set(err, FKD_E_FORMAT, "%s:%d: NUL byte in a text file", name, line);
        const char *why = NULL;
        int rc = split_line(key, value, p, lend, &why);
        if (rc < 0) return fkd_error_set(err, FKD_E_FORMAT, "%s:%d: %s", name, line, why);
        if (rc > 0 && fn(ctx, key, value, err) != 0) {
            if (err && !err->code) err->code = FKD_E_FORMAT;
            return fkd_error_prefix(err, "%s:%d", name, line);
        }
        p = nl ? nl + 1 : end;
    }
    return 0;
}

int fkd_kvconf_load(const char *path, fkd_kvconf_fn fn, void *ctx, fkd_error *err)
{
    uint8_t *data;
    size_t bytes;
    if (fkd_file_read_all(&data, &bytes, path, FKD_KVCONF_MAX_BYTES, err) != 0) return -1;
    int rc = fkd_kvconf_parse((const char *)data, bytes, path, fn, ctx, err);
    free(data);
    return rc;
}
