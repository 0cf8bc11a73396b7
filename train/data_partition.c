/* data_partition.c — deals a corpus's documents out to simulated clients and
 * cuts each client's documents into train / validation / test splits.
 *
 * The "label" of a document is the partition (file) it came from. Three
 * partitioners, each a pure function of the corpus and the seed:
 *   natural    one client per partition; a partition above max_client_bytes
 *              is cut into ceil(bytes / max) clients of consecutive documents
 *   iid        all documents shuffled and dealt round-robin to n clients
 *   dirichlet  per label, proportions over clients drawn from Dir(alpha) and
 *              that label's shuffled documents cut accordingly (the label
 *              skew of Hsu et al. 2019); small alpha = few labels per client
 * Splits are made per client at the document level from a shuffled order, so
 * a document (and, with the corpus's de-duplication, its text) is in exactly
 * one split. */
#include "fkd_train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DIRICHLET_MAX_DRAWS 100 /* re-draws until every client has min_docs */

fkd_partition_config fkd_partition_defaults(void)
{
    fkd_partition_config c = {0};
    c.kind = FKD_PARTITION_NATURAL;
    c.n_clients = 16;
    c.alpha = 0.5f;
    c.max_client_bytes = 64 << 10;
    c.val_share = 0.1f;
    c.test_share = 0.1f;
    c.min_docs = 10;
    c.seed = 1;
    return c;
}

int fkd_partition_parse_kind(const char *name)
{
    if (strcmp(name, "natural") == 0) return FKD_PARTITION_NATURAL;
    if (strcmp(name, "iid") == 0) return FKD_PARTITION_IID;
    if (strcmp(name, "dirichlet") == 0) return FKD_PARTITION_DIRICHLET;
    return -1;
}

static void shuffle(uint32_t *a, uint32_t n, fkd_rng *rng)
{
    for (uint32_t i = n; i > 1; i--) {
        uint32_t j = fkd_rng_below(rng, i);
        uint32_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Client assignment of every document: owner[d] in [0, n) or -1 (dropped). */
typedef struct {
    int32_t *owner;
    int n_clients;
    char (*names)[FKD_DATA_MAX_NAME];
} assignment;

static int assignment_init(assignment *a, const fkd_corpus *c, int n_clients, fkd_error *err)
{
    a->n_clients = n_clients;
    a->owner = malloc((size_t)c->n_docs * sizeof *a->owner);
    a->names = calloc((size_t)(n_clients > 0 ? n_clients : 1), sizeof *a->names);
    if (!a->owner || !a->names) {
        free(a->owner);
        free(a->names);
        return fkd_error_set(err, FKD_E_NOMEM, "out of memory partitioning %u documents",
                             c->n_docs);
    }
    for (uint32_t d = 0; d < c->n_docs; d++) a->owner[d] = -1;
    return 0;
}

static void assignment_free(assignment *a)
{
    free(a->owner);
    free(a->names);
}

static int assign_natural(assignment *a, const fkd_corpus *c, const fkd_partition_config *cfg,
                          fkd_error *err)
{
    int n = 0;
    uint64_t max = cfg->max_client_bytes;
    for (int p = 0; p < c->n_parts; p++)
        if (c->parts[p].n_docs >= cfg->min_docs)
            n += max ? (int)((c->parts[p].bytes + max - 1) / max) : 1;
    if (assignment_init(a, c, n, err) != 0) return -1;
    int client = 0;
    for (int p = 0; p < c->n_parts; p++) {
        const fkd_partition_info *part = &c->parts[p];
        if (part->n_docs < cfg->min_docs) continue;
        int pieces = max ? (int)((part->bytes + max - 1) / max) : 1;
        /* cut at equal byte shares of the partition, documents kept whole */
        uint64_t seen = 0;
        for (uint32_t i = 0; i < part->n_docs; i++) {
            uint32_t d = part->first_doc + i;
            int piece = (int)(seen * (uint64_t)pieces / (part->bytes ? part->bytes : 1));
            a->owner[d] = client + piece;
            seen += c->docs[d].bytes;
        }
        for (int k = 0; k < pieces; k++) {
            if (pieces == 1)
                snprintf(a->names[client + k], FKD_DATA_MAX_NAME, "%s", part->name);
            else
                snprintf(a->names[client + k], FKD_DATA_MAX_NAME, "%.50s.%d", part->name, k + 1);
        }
        client += pieces;
    }
    return 0;
}

static int assign_iid(assignment *a, const fkd_corpus *c, const fkd_partition_config *cfg,
                      fkd_error *err)
{
    if (assignment_init(a, c, cfg->n_clients, err) != 0) return -1;
    uint32_t *order = malloc((size_t)c->n_docs * sizeof *order);
    if (!order) return fkd_error_set(err, FKD_E_NOMEM, "out of memory shuffling documents");
    for (uint32_t d = 0; d < c->n_docs; d++) order[d] = d;
    fkd_rng rng;
    fkd_rng_seed(&rng, cfg->seed ^ 0x11d0c5ULL);
    shuffle(order, c->n_docs, &rng);
    for (uint32_t i = 0; i < c->n_docs; i++) a->owner[order[i]] = (int32_t)(i % (uint32_t)cfg->n_clients);
    for (int k = 0; k < cfg->n_clients; k++) snprintf(a->names[k], FKD_DATA_MAX_NAME, "iid.%d", k + 1);
    free(order);
    return 0;
}

/* One Dirichlet draw: every label's shuffled documents cut by proportions. */
static void dirichlet_draw(assignment *a, const fkd_corpus *c, const fkd_partition_config *cfg,
                           fkd_rng *rng, uint32_t *order, double *prop, uint32_t *counts)
{
    int n = cfg->n_clients;
    memset(counts, 0, (size_t)n * sizeof *counts);
    for (int p = 0; p < c->n_parts; p++) {
        const fkd_partition_info *part = &c->parts[p];
        double sum = 0;
        for (int k = 0; k < n; k++) sum += prop[k] = fkd_rng_gamma(rng, cfg->alpha);
        for (uint32_t i = 0; i < part->n_docs; i++) order[i] = part->first_doc + i;
        shuffle(order, part->n_docs, rng);
        double cum = 0;
        uint32_t i = 0;
        for (int k = 0; k < n; k++) {
            cum += sum > 0 ? prop[k] / sum : 1.0 / n;
            uint32_t end = k == n - 1 ? part->n_docs : (uint32_t)llround(cum * part->n_docs);
            if (end > part->n_docs) end = part->n_docs;
            for (; i < end; i++) {
                a->owner[order[i]] = k;
                counts[k]++;
            }
        }
    }
}

static int assign_dirichlet(assignment *a, const fkd_corpus *c, const fkd_partition_config *cfg,
                            fkd_error *err)
{
    if (!(cfg->alpha > 0))
        return fkd_error_set(err, FKD_E_INVALID_ARG, "Dirichlet alpha must be > 0, not %g",
                             (double)cfg->alpha);
    if (assignment_init(a, c, cfg->n_clients, err) != 0) return -1;
    int n = cfg->n_clients;
    uint32_t max_part = 0;
    for (int p = 0; p < c->n_parts; p++)
        if (c->parts[p].n_docs > max_part) max_part = c->parts[p].n_docs;
    uint32_t *order = malloc(((size_t)max_part + 1) * sizeof *order);
    double *prop = malloc((size_t)n * sizeof *prop);
    uint32_t *counts = malloc((size_t)n * sizeof *counts);
    if (!order || !prop || !counts) {
        free(order);
        free(prop);
        free(counts);
        return fkd_error_set(err, FKD_E_NOMEM, "out of memory for the Dirichlet partition");
    }
    fkd_rng rng;
    fkd_rng_seed(&rng, cfg->seed ^ 0xd1c41e7ULL);
    int ok = 0;
    for (int draw = 0; draw < DIRICHLET_MAX_DRAWS && !ok; draw++) {
        dirichlet_draw(a, c, cfg, &rng, order, prop, counts);
        ok = 1;
        for (int k = 0; k < n; k++) ok &= counts[k] >= cfg->min_docs;
    }
    free(order);
    free(prop);
    free(counts);
    for (int k = 0; k < n; k++) snprintf(a->names[k], FKD_DATA_MAX_NAME, "dir.%d", k + 1);
    if (!ok)
        return fkd_error_set(err, FKD_E_LIMIT,
                             "no Dirichlet(%g) draw in %d gave all %d clients %u documents: "
                             "use fewer clients, a larger alpha or a smaller --min-docs",
                             (double)cfg->alpha, DIRICHLET_MAX_DRAWS, n, cfg->min_docs);
    return 0;
}

/* Cuts one client's documents (ascending in docs) into the three splits. */
static int split_client(fkd_client_data *cl, uint32_t *docs, uint32_t n, const fkd_corpus *c,
                        const fkd_partition_config *cfg, int client, fkd_error *err)
{
    fkd_rng rng;
    fkd_rng_seed(&rng, cfg->seed * 0x9e3779b97f4a7c15ULL + (uint64_t)client + 1);
    shuffle(docs, n, &rng);
    uint32_t n_val = (uint32_t)llround(cfg->val_share * n);
    uint32_t n_test = (uint32_t)llround(cfg->test_share * n);
    if (cfg->val_share > 0 && n_val == 0 && n >= 3) n_val = 1;
    if (cfg->test_share > 0 && n_test == 0 && n >= 3) n_test = 1;
    if (n_val + n_test >= n) n_val = n_test = 0; /* too few: all train */
    uint32_t counts[FKD_SPLIT_COUNT] = {n - n_val - n_test, n_val, n_test};
    uint32_t at = 0;
    for (int s = 0; s < FKD_SPLIT_COUNT; s++) {
        cl->n_docs[s] = counts[s];
        cl->docs[s] = malloc(((size_t)counts[s] + 1) * sizeof(uint32_t));
        if (!cl->docs[s]) return fkd_error_set(err, FKD_E_NOMEM, "out of memory for splits");
        memcpy(cl->docs[s], docs + at, (size_t)counts[s] * sizeof(uint32_t));
        qsort(cl->docs[s], counts[s], sizeof(uint32_t), cmp_u32);
        for (uint32_t i = 0; i < counts[s]; i++) {
            const fkd_doc *d = &c->docs[cl->docs[s][i]];
            cl->bytes[s] += d->bytes;
            cl->label_docs[d->partition]++;
        }
        at += counts[s];
    }
    return 0;
}

static int build_clients(fkd_federation *fed, const assignment *a, const fkd_corpus *c,
                         const fkd_partition_config *cfg, fkd_error *err)
{
    fed->clients = calloc((size_t)(a->n_clients > 0 ? a->n_clients : 1), sizeof *fed->clients);
    uint32_t *docs = malloc(((size_t)c->n_docs + 1) * sizeof *docs);
    int rc = 0;
    if (!fed->clients || !docs)
        rc = fkd_error_set(err, FKD_E_NOMEM, "out of memory for %d clients", a->n_clients);
    fed->n_clients = fed->clients ? a->n_clients : 0;
    fed->n_parts = c->n_parts;
    for (int k = 0; rc == 0 && k < a->n_clients; k++) {
        fkd_client_data *cl = &fed->clients[k];
        snprintf(cl->name, sizeof cl->name, "%s", a->names[k]);
        cl->label_docs = calloc((size_t)c->n_parts + 1, sizeof *cl->label_docs);
        if (!cl->label_docs) {
            rc = fkd_error_set(err, FKD_E_NOMEM, "out of memory for client labels");
            break;
        }
        uint32_t n = 0;
        for (uint32_t d = 0; d < c->n_docs; d++)
            if (a->owner[d] == k) docs[n++] = d;
        rc = split_client(cl, docs, n, c, cfg, k, err);
    }
    free(docs);
    return rc;
}

int fkd_federation_build(fkd_federation *fed, const fkd_corpus *c,
                         const fkd_partition_config *cfg, fkd_error *err)
{
    memset(fed, 0, sizeof *fed);
    if (cfg->kind != FKD_PARTITION_NATURAL && cfg->n_clients <= 0)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "the partition needs n_clients > 0");
    if (cfg->val_share < 0 || cfg->test_share < 0 || cfg->val_share + cfg->test_share >= 1)
        return fkd_error_set(err, FKD_E_INVALID_ARG,
                             "validation and test shares must be >= 0 and sum below 1");
    assignment a = {0};
    int rc;
    switch (cfg->kind) {
    case FKD_PARTITION_NATURAL: rc = assign_natural(&a, c, cfg, err); break;
    case FKD_PARTITION_IID: rc = assign_iid(&a, c, cfg, err); break;
    case FKD_PARTITION_DIRICHLET: rc = assign_dirichlet(&a, c, cfg, err); break;
    default: return fkd_error_set(err, FKD_E_INVALID_ARG, "unknown partitioner %d", cfg->kind);
    }
    if (rc == 0 && a.n_clients == 0)
        rc = fkd_error_set(err, FKD_E_LIMIT, "no partition has %u documents", cfg->min_docs);
    if (rc == 0) rc = build_clients(fed, &a, c, cfg, err);
    assignment_free(&a);
    if (rc != 0) fkd_federation_free(fed);
    return rc;
}

void fkd_federation_free(fkd_federation *fed)
{
    for (int k = 0; fed->clients && k < fed->n_clients; k++) {
        for (int s = 0; s < FKD_SPLIT_COUNT; s++) free(fed->clients[k].docs[s]);
        free(fed->clients[k].label_docs);
    }
    free(fed->clients);
    memset(fed, 0, sizeof *fed);
}

int fkd_federation_docs(uint32_t **docs, uint32_t *n_docs, const fkd_federation *fed, int split,
                        fkd_error *err)
{
    *docs = NULL;
    *n_docs = 0;
    if (split < 0 || split >= FKD_SPLIT_COUNT)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "split %d does not exist", split);
    uint64_t n = 0;
    for (int k = 0; k < fed->n_clients; k++) n += fed->clients[k].n_docs[split];
    uint32_t *out = malloc((size_t)(n + 1) * sizeof *out);
    if (!out) return fkd_error_set(err, FKD_E_NOMEM, "out of memory for %llu documents",
                                   (unsigned long long)n);
    uint64_t at = 0;
    for (int k = 0; k < fed->n_clients; k++) {
        memcpy(out + at, fed->clients[k].docs[split],
               (size_t)fed->clients[k].n_docs[split] * sizeof *out);
        at += fed->clients[k].n_docs[split];
    }
    qsort(out, (size_t)n, sizeof *out, cmp_u32);
    *docs = out;
    *n_docs = (uint32_t)n;
    return 0;
}

int fkd_data_load_public(fkd_corpus *c, fkd_federation *fed, const char *dir,
                         const char *public_list, uint64_t seed, fkd_error *err)
{
    memset(fed, 0, sizeof *fed);
    fkd_corpus_options o = fkd_corpus_defaults(FKD_SIDE_PUBLIC);
    o.public_list = public_list;
    if (fkd_corpus_load(c, dir ? dir : FKD_DATA_DEFAULT_DIR, &o, err) != 0) return -1;
    fkd_partition_config pc = fkd_partition_defaults();
    pc.kind = FKD_PARTITION_IID;
    pc.n_clients = 1;
    pc.val_share = FKD_DATA_PUBLIC_HELDOUT;
    pc.test_share = FKD_DATA_PUBLIC_HELDOUT;
    pc.min_docs = 1;
    pc.seed = seed;
    if (fkd_federation_build(fed, c, &pc, err) != 0) {
        fkd_corpus_free(c);
        return -1;
    }
    snprintf(fed->clients[0].name, sizeof fed->clients[0].name, "public");
    return 0;
}

int fkd_docs_spread(uint32_t **out, uint32_t *n_out, const fkd_corpus *c, const uint32_t *docs,
                    uint32_t n_docs, uint64_t max_bytes, fkd_error *err)
{
    *out = NULL;
    *n_out = 0;
    uint64_t total = 0;
    for (uint32_t i = 0; i < n_docs; i++) {
        if (docs[i] >= c->n_docs)
            return fkd_error_set(err, FKD_E_INVALID_ARG, "document %u does not exist", docs[i]);
        total += c->docs[docs[i]].bytes + 1;
    }
    uint32_t m = n_docs;
    if (max_bytes > 0 && total > max_bytes) m = (uint32_t)((double)n_docs * max_bytes / total);
    if (m == 0 && n_docs > 0) m = 1;
    uint32_t *sel = malloc(((size_t)m + 1) * sizeof *sel);
    if (!sel) return fkd_error_set(err, FKD_E_NOMEM, "out of memory selecting documents");
    for (uint32_t j = 0; j < m; j++) sel[j] = docs[(uint64_t)j * n_docs / m];
    *out = sel;
    *n_out = m;
    return 0;
}
