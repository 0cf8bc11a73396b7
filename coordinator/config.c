/* config.c — the coordinator's settings: one table maps each key of the
 * configuration file to a field, its type and its range, so parsing,
 * validation of ranges and printing all come from the same place. */
#include "fkd_coordinator.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum kind { K_INT, K_U64, K_I64, K_FLOAT, K_STR, K_LEVEL, K_UVAL, K_QTYPE, K_SIDE, K_U32, K_MODE,
            K_SCHED };

typedef struct {
    const char *key;
    int kind;
    size_t offset;
    double lo, hi;   /* numeric range (inclusive) */
} key_def;

#define F(field) offsetof(fkd_coord_config, field)
static const key_def keys[] = {
    {"endpoint", K_STR, F(endpoint), 0, 0},
    {"key", K_STR, F(key), 0, 0},
    {"allowlist", K_STR, F(allowlist), 0, 0},
    {"state_dir", K_STR, F(state_dir), 0, 0},
    {"require_transport_auth", K_INT, F(require_transport_auth), 0, 1},
    {"log_level", K_LEVEL, F(log_level), 0, 3},
    {"metrics_listen", K_STR, F(metrics_listen), 0, 0},
    {"metrics_stale_ms", K_I64, F(metrics_stale_ms), 0, 1e12},
    {"model.vocab", K_INT, F(model.vocab), 2, 1 << 20},
    {"model.dim", K_INT, F(model.dim), 8, 1 << 14},
    {"model.layers", K_INT, F(model.n_layers), 1, 256},
    {"model.heads", K_INT, F(model.n_heads), 1, 256},
    {"model.kv_heads", K_INT, F(model.n_kv_heads), 1, 256},
    {"model.ffn", K_INT, F(model.ffn_hidden), 8, 1 << 16},
    {"model.seq", K_INT, F(model.max_seq), 2, 1 << 16},
    {"model.tie", K_INT, F(model.tie_embeddings), 0, 1},
    {"model.rope_theta", K_FLOAT, F(model.rope_theta), 1, 1e9},
    {"init", K_STR, F(init), 0, 0},
    {"seed", K_U64, F(seed), 0, 0},
    {"rounds", K_INT, F(rounds), 1, 1e7},
    {"fraction", K_FLOAT, F(fraction), 1e-6, 1},
    {"min_clients", K_INT, F(min_clients), 1, FKD_COORD_MAX_CLIENTS},
    {"max_clients", K_INT, F(max_clients), 0, FKD_COORD_MAX_CLIENTS},
    {"over_select", K_FLOAT, F(over_select), 0, 10},
    {"min_updates", K_INT, F(min_updates), 1, FKD_COORD_MAX_CLIENTS},
    {"round_timeout_ms", K_INT, F(round_timeout_ms), 100, 1e9},
    {"start_timeout_ms", K_INT, F(start_timeout_ms), 0, 1e9},
    {"heartbeat_ms", K_INT, F(heartbeat_ms), 50, 600000},
    {"client_timeout_ms", K_INT, F(client_timeout_ms), 200, 1e9},
    {"aggregator", K_STR, F(aggregator), 0, 0},
    {"server_lr", K_FLOAT, F(server_lr), 1e-6, 100},
    {"beta1", K_FLOAT, F(beta1), 0, 0.999999},
    {"beta2", K_FLOAT, F(beta2), 0, 0.999999},
    {"tau", K_FLOAT, F(tau), 1e-12, 1},
    {"trim", K_FLOAT, F(trim), 0, 0.49},
    {"clip_norm", K_FLOAT, F(clip_norm), 0, 1e9},
    {"prox_mu", K_FLOAT, F(prox_mu), 0, 100},
    {"client_mode", K_MODE, F(client_mode), 0, 3},
    {"lora_rank", K_INT, F(lora_rank), 1, FKD_LORA_MAX_RANK},
    {"lora_alpha", K_FLOAT, F(lora_alpha), 1e-6, 1e6},
    {"local_steps", K_INT, F(local_steps), 1, 1000000},
    {"batch", K_INT, F(batch), 1, 4096},
    {"seq", K_INT, F(seq), 2, 1 << 16},
    {"warmup", K_INT, F(warmup), 0, 1000000},
    {"lr", K_FLOAT, F(lr), 1e-9, 0.99},
    {"lr_schedule", K_SCHED, F(lr_schedule), 0, 1},
    {"min_lr_ratio", K_FLOAT, F(min_lr_ratio), 0, 1},
    {"weight_decay", K_FLOAT, F(weight_decay), 0, 1},
    {"grad_clip", K_FLOAT, F(grad_clip), 0, 1e6},
    {"alpha", K_FLOAT, F(alpha), 0, 1},
    {"temperature", K_FLOAT, F(temperature), 0.01, 100},
    {"transfer_share", K_FLOAT, F(transfer_share), 0, 1},
    {"up_fraction", K_FLOAT, F(up_fraction), 1e-6, 1},
    {"up_format", K_UVAL, F(up_format), 0, FKD_UVAL_COUNT - 1},
    {"up_stochastic", K_INT, F(up_stochastic), 0, 1},
    {"task_quant", K_QTYPE, F(task_quant), 0, 0},
    {"deploy_quant", K_QTYPE, F(deploy_quant), 0, 0},
    {"chunk_bytes", K_U32, F(chunk_bytes), 1024, FKD_WIRE_DEFAULT_MAX_CHUNK},
    {"softlabels", K_STR, F(softlabels), 0, 0},
    {"eval_data", K_STR, F(eval_data), 0, 0},
    {"eval_side", K_SIDE, F(eval_side), 0, 2},
    {"eval_tokens", K_I64, F(eval_tokens), 0, 1e12},
    {"server_steps", K_INT, F(server_steps), 0, 1000000},
    {"server_alpha", K_FLOAT, F(server_alpha), 0, 1},
    {"server_train_lr", K_FLOAT, F(server_train_lr), 0, 0.99},
    {"server_seed", K_U64, F(server_seed), 0, 0},
    {"server_init", K_STR, F(server_init), 0, 0},
};
#undef F
#define N_KEYS (sizeof keys / sizeof keys[0])

static const char *const uval_names[] = {"f32", "int8", "int4", "ternary", "sign"};
static const char *const side_names[] = {"all", "public", "private"};
static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const char *const mode_names[] = {"full", "lora", "qlora8", "qlora4"};
static const char *const sched_names[] = {"constant", "cosine"}; /* = FKD_LR_CONSTANT, _COSINE */

void fkd_coord_config_defaults(fkd_coord_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->endpoint, sizeof c->endpoint, "tcp://127.0.0.1:7878");
    snprintf(c->key, sizeof c->key, "coordinator.key");
    snprintf(c->allowlist, sizeof c->allowlist, "allowlist.txt");
    snprintf(c->state_dir, sizeof c->state_dir, "fedkd-state");
    c->require_transport_auth = 1;
    c->log_level = FKD_LOG_INFO;
    snprintf(c->metrics_listen, sizeof c->metrics_listen, "127.0.0.1:9465");
    c->metrics_stale_ms = 0;
    c->model = (fkd_model_config){.vocab = 256, .dim = 64, .n_layers = 2, .n_heads = 4,
                                  .n_kv_heads = 4, .ffn_hidden = 192, .max_seq = 64,
                                  .tie_embeddings = 1, .rope_theta = 10000.0f,
                                  .norm_eps = 1e-5f};
    c->seed = 1;
    c->rounds = 10;
    c->fraction = 1.0f;
    c->min_clients = 2;
    c->max_clients = 0;
    c->over_select = 0;
    c->min_updates = 1;
    c->round_timeout_ms = 120000;
    c->start_timeout_ms = 0;
    c->heartbeat_ms = 1000;
    c->client_timeout_ms = 60000;
    snprintf(c->aggregator, sizeof c->aggregator, "fedavg");
    c->server_lr = 1.0f;
    c->lr_schedule = FKD_LR_CONSTANT;
    c->min_lr_ratio = 0.1f;
    c->beta1 = 0.9f;
    c->beta2 = 0.99f;
    c->tau = 1e-3f;
    c->trim = 0.2f;
    c->clip_norm = 0;
    c->prox_mu = 0.01f;
    c->client_mode = FKD_WIRE_MODE_FULL;
    c->lora_rank = FKD_LORA_DEFAULT_RANK;
    c->lora_alpha = FKD_LORA_DEFAULT_ALPHA;
    c->local_steps = 20;
    c->batch = 8;
    c->seq = 64;
    c->warmup = 0;
    c->lr = 3e-3f;
    c->weight_decay = 0;
    c->grad_clip = 1.0f;
    c->alpha = 0.5f;
    c->temperature = 1.0f;
    c->transfer_share = 0.5f;
    c->up_fraction = 0.1f;
    c->up_format = FKD_UVAL_INT8;
    c->up_stochastic = 0;
    c->task_quant = FKD_QTYPE_Q8_0;
    c->deploy_quant = FKD_QTYPE_Q8_0;
    c->chunk_bytes = 256u << 10;
    snprintf(c->eval_data, sizeof c->eval_data, "%s", FKD_DATA_DEFAULT_DIR);
    c->eval_side = FKD_SIDE_PUBLIC;
    c->eval_tokens = 16384;
    c->server_steps = 0;
    c->server_alpha = 1.0f;
    c->server_train_lr = 0;
    c->server_seed = 0;
}

static int name_index(const char *const *names, int n, const char *v)
{
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], v) == 0) return i;
    return -1;
}

static int parse_number(double *out, const char *v)
{
    errno = 0;
    char *end;
    double d = strtod(v, &end);
    if (end == v || *end != '\0' || errno || !isfinite(d)) return -1;
    *out = d;
    return 0;
}

static int set_numeric(void *field, const key_def *k, const char *value, fkd_error *err)
{
    double d;
    if (parse_number(&d, value) != 0)
        return fkd_error_set(err, FKD_E_FORMAT, "%s: '%s' is not a number", k->key, value);
    int integral = k->kind != K_FLOAT;
    if (integral && d != floor(d))
        return fkd_error_set(err, FKD_E_FORMAT, "%s: '%s' is not an integer", k->key, value);
    if (k->kind == K_U64) {
        if (d < 0 || d > 9007199254740992.0)
            return fkd_error_set(err, FKD_E_FORMAT, "%s: %s is out of range", k->key, value);
        *(uint64_t *)field = (uint64_t)d;
        return 0;
    }
    if (d < k->lo || d > k->hi)
        return fkd_error_set(err, FKD_E_FORMAT, "%s: %s is outside [%g, %g]", k->key, value,
                             k->lo, k->hi);
    switch (k->kind) {
    case K_INT: *(int *)field = (int)d; break;
    case K_U32: *(uint32_t *)field = (uint32_t)d; break;
    case K_I64: *(int64_t *)field = (int64_t)d; break;
    default: *(float *)field = (float)d; break;
    }
    return 0;
}

static int set_named(void *field, const key_def *k, const char *value, fkd_error *err)
{
    int i = -1;
    const char *choices = "";
    switch (k->kind) {
    case K_LEVEL: i = name_index(level_names, 4, value); choices = "debug info warn error"; break;
    case K_UVAL: i = name_index(uval_names, 5, value); choices = "f32 int8 int4 ternary sign"; break;
    case K_SIDE: i = name_index(side_names, 3, value); choices = "all public private"; break;
    case K_MODE: i = name_index(mode_names, 4, value); choices = "full lora qlora8 qlora4"; break;
    case K_SCHED: i = name_index(sched_names, 2, value); choices = "constant cosine"; break;
    case K_QTYPE:
        i = fkd_qtype_from_name(value);
        choices = "f32 f16 q8_0 q4_0 q4_1";
        break;
    }
    if (i < 0)
        return fkd_error_set(err, FKD_E_FORMAT, "%s: '%s' is not one of: %s", k->key, value,
                             choices);
    *(int *)field = i;
    return 0;
}

int fkd_coord_config_set(fkd_coord_config *cfg, const char *key, const char *value,
                         fkd_error *err)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        const key_def *k = &keys[i];
        if (strcmp(k->key, key) != 0) continue;
        void *field = (char *)cfg + k->offset;
        if (k->kind == K_STR) {
            size_t cap = strcmp(key, "aggregator") == 0 ? FKD_COORD_NAME_MAX : FKD_COORD_PATH_MAX;
            if (strlen(value) >= cap)
                return fkd_error_set(err, FKD_E_LIMIT, "%s: value longer than %zu bytes", key,
                                     cap - 1);
            memcpy(field, value, strlen(value) + 1);
            return 0;
        }
        if (k->kind == K_LEVEL || k->kind == K_UVAL || k->kind == K_SIDE || k->kind == K_QTYPE ||
            k->kind == K_MODE || k->kind == K_SCHED)
            return set_named(field, k, value, err);
        return set_numeric(field, k, value, err);
    }
    return fkd_error_set(err, FKD_E_FORMAT, "unknown setting '%s' (see docs/configuration.md)", key);
}

int fkd_coord_config_override(fkd_coord_config *cfg, const char *assignment, fkd_error *err)
{
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment || eq - assignment >= 64)
        return fkd_error_set(err, FKD_E_FORMAT, "override '%s' is not key=value", assignment);
    char key[64];
    memcpy(key, assignment, (size_t)(eq - assignment));
    key[eq - assignment] = '\0';
    return fkd_coord_config_set(cfg, key, eq + 1, err);
}

static int set_cb(void *ctx, const char *key, const char *value, fkd_error *err)
{
    return fkd_coord_config_set(ctx, key, value, err);
}

int fkd_coord_config_load(fkd_coord_config *cfg, const char *path, fkd_error *err)
{
    return fkd_kvconf_load(path, set_cb, cfg, err);
}

int fkd_coord_config_validate(const fkd_coord_config *c, fkd_error *err)
{
    if (fkd_config_validate(&c->model, err) != 0) return -1;
    if (!fkd_coord_agg_find(c->aggregator))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "aggregator '%s' unknown: use fedavg, "
                             "fedprox, fedadam, fedyogi, median, trimmed or clip", c->aggregator);
    if (c->client_mode != FKD_WIRE_MODE_FULL && strcmp(c->aggregator, "fedavg") != 0)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "client_mode %d merges adapters by FedAvg: "
                             "set aggregator = fedavg (not %s) or client_mode = full",
                             c->client_mode, c->aggregator);
    if (c->seq > c->model.max_seq)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "seq %d is longer than model.seq %d", c->seq,
                             c->model.max_seq);
    if (c->max_clients > 0 && c->max_clients < c->min_clients)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "max_clients %d is below min_clients %d",
                             c->max_clients, c->min_clients);
    if (c->min_updates > c->min_clients)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "min_updates %d is above min_clients %d: "
                             "no round could close", c->min_updates, c->min_clients);
    if (c->client_timeout_ms < 2 * c->heartbeat_ms)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "client_timeout_ms must be at least two "
                             "heartbeats (%d ms)", 2 * c->heartbeat_ms);
    if (!c->state_dir[0])
        return fkd_error_set(err, FKD_E_INVALID_ARG, "state_dir is required");
    if (c->server_steps > 0 && !c->softlabels[0])
        return fkd_error_set(err, FKD_E_INVALID_ARG, "server_steps %d trains the master on the "
                             "public text of the soft-label shards: set softlabels, or "
                             "server_steps = 0", c->server_steps);
    return 0;
}

float fkd_coord_lr_scale(const fkd_coord_config *cfg, uint64_t round)
{
    if (cfg->lr_schedule != FKD_LR_COSINE || cfg->rounds < 1 || round < 1) return 1.0f;
    double progress = (double)(round - 1) / cfg->rounds;
    if (progress > 1) progress = 1;
    double floor = cfg->min_lr_ratio;
    return (float)(floor + (1 - floor) * 0.5 * (1 + cos(M_PI * progress)));
}

void fkd_coord_config_print(FILE *f, const fkd_coord_config *cfg)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        const key_def *k = &keys[i];
        const void *field = (const char *)cfg + k->offset;
        fprintf(f, "%s = ", k->key);
        switch (k->kind) {
        case K_STR: fprintf(f, "\"%s\"\n", (const char *)field); break;
        case K_INT: fprintf(f, "%d\n", *(const int *)field); break;
        case K_U32: fprintf(f, "%u\n", *(const uint32_t *)field); break;
        case K_U64: fprintf(f, "%llu\n", (unsigned long long)*(const uint64_t *)field); break;
        case K_I64: fprintf(f, "%lld\n", (long long)*(const int64_t *)field); break;
        case K_FLOAT: fprintf(f, "%g\n", (double)*(const float *)field); break;
        case K_LEVEL: fprintf(f, "%s\n", level_names[*(const int *)field]); break;
        case K_UVAL: fprintf(f, "%s\n", uval_names[*(const int *)field]); break;
        case K_SIDE: fprintf(f, "%s\n", side_names[*(const int *)field]); break;
        case K_QTYPE: fprintf(f, "%s\n", fkd_qtype_name(*(const int *)field)); break;
        case K_MODE: fprintf(f, "%s\n", mode_names[*(const int *)field]); break;
        case K_SCHED: fprintf(f, "%s\n", sched_names[*(const int *)field]); break;
        }
    }
}
