/* cli.c — one option parser for every fedkd command, driven by a table. */
#include "fkd_common.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void print_help(const fkd_opt *opts, int n_opts, const char *usage)
{
    printf("%s\n\nOptions:\n", usage);
    for (int i = 0; i < n_opts; i++) {
        const fkd_opt *o = &opts[i];
        char left[64];
        const char *arg = o->type == FKD_OPT_FLAG ? "" : o->type == FKD_OPT_STR ? " TEXT" : " N";
        snprintf(left, sizeof left, "--%s%s", o->name, arg);
        char def[96] = "";
        switch (o->type) {
        case FKD_OPT_INT: snprintf(def, sizeof def, " (default %d)", *(int *)o->value); break;
        case FKD_OPT_I64:
            snprintf(def, sizeof def, " (default %lld)", (long long)*(int64_t *)o->value);
            break;
        case FKD_OPT_FLOAT: snprintf(def, sizeof def, " (default %g)", *(float *)o->value); break;
        case FKD_OPT_STR: {
            const char *text = *(const char **)o->value;
            if (text && *text) snprintf(def, sizeof def, " (default %s)", text);
            break;
        }
        default: break;
        }
        printf("  %-26s %s%s\n", left, o->help, def);
    }
    printf("  %-26s %s\n", "--help", "show this help and exit");
}

static int set_value(const fkd_opt *o, const char *text)
{
    char *end = NULL;
    errno = 0;
    switch (o->type) {
    case FKD_OPT_INT: {
        long v = strtol(text, &end, 10);
        if (errno || *end || end == text || v < -2147483647L || v > 2147483647L) return -1;
        *(int *)o->value = (int)v;
        return 0;
    }
    case FKD_OPT_I64: {
        long long v = strtoll(text, &end, 10);
        if (errno || *end || end == text) return -1;
        *(int64_t *)o->value = v;
        return 0;
    }
    case FKD_OPT_FLOAT: {
        float v = strtof(text, &end);
        if (errno || *end || end == text) return -1;
        *(float *)o->value = v;
        return 0;
    }
    case FKD_OPT_STR: *(const char **)o->value = text; return 0;
    default: return -1;
    }
}

int fkd_cli_parse(int argc, char **argv, const fkd_opt *opts, int n_opts, const char *usage,
                  const char **positional, int max_positional, int *n_positional)
{
    int n_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            print_help(opts, n_opts, usage);
            return 1;
        }
        if (strncmp(a, "--", 2) != 0) {
            if (!positional || n_pos >= max_positional) {
                fprintf(stderr, "error: unexpected argument '%s' (see --help)\n", a);
                return -1;
            }
            positional[n_pos++] = a;
            continue;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        const fkd_opt *o = NULL;
        for (int k = 0; k < n_opts; k++)
            if (strlen(opts[k].name) == name_len && strncmp(opts[k].name, name, name_len) == 0)
                o = &opts[k];
        if (!o) {
            fprintf(stderr, "error: unknown option '%s' (see --help)\n", a);
            return -1;
        }
        if (o->type == FKD_OPT_FLAG) {
            if (eq) {
                fprintf(stderr, "error: option --%s takes no value\n", o->name);
                return -1;
            }
            *(int *)o->value = 1;
            continue;
        }
        const char *text = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!text || set_value(o, text) != 0) {
            fprintf(stderr, "error: option --%s needs a %s value%s%s\n", o->name,
                    o->type == FKD_OPT_STR ? "text" : "numeric", text ? ", not " : "",
                    text ? text : "");
            return -1;
        }
    }
    if (n_positional) *n_positional = n_pos;
    return 0;
}
