/* test_corpus.c — corpus reading, document detection, partitioners, splits
 * and token streams / batches. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fkd_train.h"

static const char *tmp_root(void)
{
    const char *t = getenv("FKD_TEST_TMP");
    return t ? t : "/tmp";
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    fkd_error err;
    assert_int_equal(fkd_file_write_atomic(path, text, strlen(text), &err), 0);
}

typedef struct {
    char docs[16][128];
    int n;
} collected;

static int collect(void *ctx, const uint8_t *doc, size_t bytes)
{
    collected *c = ctx;
    assert_true(c->n < 16 && bytes < 128);
    memcpy(c->docs[c->n], doc, bytes);
    c->docs[c->n][bytes] = 0;
    c->n++;
    return 0;
}

static int split_text(collected *c, const char *text)
{
    memset(c, 0, sizeof *c);
    return fkd_docs_split((const uint8_t *)text, strlen(text), collect, c);
}

static void test_document_detection(void **state)
{
    collected c;
    assert_int_equal(split_text(&c, "one\nline\n%\ntwo\n%\n\n%\nthree"), FKD_DOCS_PERCENT);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.docs[0], "one\nline");
    assert_string_equal(c.docs[1], "two");
    assert_string_equal(c.docs[2], "three");
    /* a '%' inside a line is text, and blank lines inside a fortune are kept */
    assert_int_equal(split_text(&c, "50% off\n\nstill one\n%\nb\n"), FKD_DOCS_PERCENT);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.docs[0], "50% off\n\nstill one");
    assert_int_equal(split_text(&c, "para one\nmore\n\n \n\npara two\n"), FKD_DOCS_BLANK_LINE);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.docs[1], "para two");
    assert_int_equal(split_text(&c, "\njust one document\nof two lines\n\n"),
                     FKD_DOCS_WHOLE_FILE);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.docs[0], "just one document\nof two lines");
    assert_int_equal(split_text(&c, "\n\n%\n%\n"), FKD_DOCS_PERCENT);
    assert_int_equal(c.n, 0);
}

/* A corpus of 6 categories x 40 documents; "pub*" are public. */
static void make_corpus(char *dir, size_t cap)
{
    snprintf(dir, cap, "%s/corpus.%d", tmp_root(), (int)getpid());
    fkd_error err;
    assert_int_equal(fkd_mkdir_p(dir, &err), 0);
    const char *cats[] = {"pub_a", "pub_b", "priv_c", "priv_d", "priv_e", "priv_f"};
    for (int k = 0; k < 6; k++) {
        char text[16384] = "";
        for (int d = 0; d < 40; d++) {
            char doc[128];
            snprintf(doc, sizeof doc, "%s document %d says %c%c%c\n%%\n", cats[k], d,
                     'a' + k, 'a' + d % 26, 'a' + d / 26);
            strcat(text, doc);
        }
        if (k == 2) strcat(text, "pub_a document 3 says ada\n%\n"); /* a repeat of public text */
        write_file(dir, cats[k], text);
    }
    char sub[1100];
    snprintf(sub, sizeof sub, "%s/priv_g", dir);
    assert_int_equal(fkd_mkdir_p(sub, &err), 0);
    for (int d = 0; d < 12; d++) {
        char name[32], doc[64];
        snprintf(name, sizeof name, "f%02d.txt", d);
        snprintf(doc, sizeof doc, "a file document %d\n", d);
        write_file(sub, name, doc);
    }
    write_file(dir, "pub_a.dat", "index file, skipped");
    write_file(dir, ".hidden", "skipped");
}

static const char *PUBLIC = "pub_a,pub_b";

static void load(fkd_corpus *c, const char *dir, int side)
{
    fkd_corpus_options o = fkd_corpus_defaults(side);
    o.public_list = PUBLIC;
    o.exclude_list = "";
    fkd_error err;
    int rc = fkd_corpus_load(c, dir, &o, &err);
    if (rc) fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(rc, 0);
}

static void test_corpus_sides(void **state)
{
    char dir[1024];
    make_corpus(dir, sizeof dir);
    fkd_corpus all, pub, priv;
    load(&all, dir, FKD_SIDE_ALL);
    load(&pub, dir, FKD_SIDE_PUBLIC);
    load(&priv, dir, FKD_SIDE_PRIVATE);
    assert_int_equal(all.n_parts, 7);
    assert_int_equal(pub.n_parts, 2);
    assert_int_equal(priv.n_parts, 5);
    assert_int_equal(pub.n_docs, 80);
    assert_int_equal(priv.n_docs, 4 * 40 + 12); /* the repeat of public text is dropped */
    assert_int_equal(all.n_docs, pub.n_docs + priv.n_docs);
    assert_int_equal(all.n_duplicates, 1);
    int g = fkd_corpus_find_partition(&priv, "priv_g");
    assert_true(g >= 0);
    assert_int_equal(priv.parts[g].n_docs, 12);
    assert_int_equal(priv.parts[g].format, FKD_DOCS_WHOLE_FILE);
    assert_int_equal(priv.parts[0].format, FKD_DOCS_PERCENT);
    assert_int_equal(fkd_corpus_find_partition(&priv, "pub_a"), -1);
    /* no private document has the text of a public one */
    for (uint32_t i = 0; i < priv.n_docs; i++)
        for (uint32_t j = 0; j < pub.n_docs; j++)
            assert_false(priv.docs[i].bytes == pub.docs[j].bytes &&
                         memcmp(priv.text + priv.docs[i].offset, pub.text + pub.docs[j].offset,
                                pub.docs[j].bytes) == 0);
    fkd_corpus_free(&all);
    fkd_corpus_free(&pub);
    fkd_corpus_free(&priv);
    fkd_corpus none;
    fkd_error err;
    assert_int_equal(fkd_corpus_load(&none, "/nonexistent/dir", NULL, &err), -1);
    assert_int_equal(err.code, FKD_E_IO);
}

/* Every document in at most one (client, split), and all of a client's
 * documents come from the corpus. Returns how many are assigned. */
static uint32_t check_no_leak(const fkd_federation *fed, const fkd_corpus *c)
{
    uint8_t *seen = calloc(c->n_docs, 1);
    uint32_t assigned = 0;
    for (int k = 0; k < fed->n_clients; k++)
        for (int s = 0; s < FKD_SPLIT_COUNT; s++)
            for (uint32_t i = 0; i < fed->clients[k].n_docs[s]; i++) {
                uint32_t d = fed->clients[k].docs[s][i];
                assert_true(d < c->n_docs);
                assert_int_equal(seen[d], 0);
                seen[d] = 1;
                assigned++;
            }
    free(seen);
    return assigned;
}

static int same_federation(const fkd_federation *a, const fkd_federation *b)
{
    if (a->n_clients != b->n_clients) return 0;
    for (int k = 0; k < a->n_clients; k++)
        for (int s = 0; s < FKD_SPLIT_COUNT; s++) {
            if (a->clients[k].n_docs[s] != b->clients[k].n_docs[s]) return 0;
            if (memcmp(a->clients[k].docs[s], b->clients[k].docs[s],
                       a->clients[k].n_docs[s] * sizeof(uint32_t)) != 0)
                return 0;
        }
    return 1;
}

/* Mean over clients of the share of its documents from its largest label. */
static double dominant_share(const fkd_federation *fed)
{
    double sum = 0;
    for (int k = 0; k < fed->n_clients; k++) {
        uint32_t total = 0, top = 0;
        for (int p = 0; p < fed->n_parts; p++) {
            total += fed->clients[k].label_docs[p];
            if (fed->clients[k].label_docs[p] > top) top = fed->clients[k].label_docs[p];
        }
        sum += total ? (double)top / total : 0;
    }
    return sum / fed->n_clients;
}

static void build(fkd_federation *fed, const fkd_corpus *c, int kind, uint64_t seed)
{
    fkd_partition_config pc = fkd_partition_defaults();
    pc.kind = kind;
    pc.n_clients = 5;
    pc.alpha = 0.1f;
    pc.min_docs = 3;
    pc.seed = seed;
    pc.max_client_bytes = 600;
    fkd_error err;
    int rc = fkd_federation_build(fed, c, &pc, &err);
    if (rc) fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(rc, 0);
}

static void test_partitioners(void **state)
{
    char dir[1024];
    make_corpus(dir, sizeof dir);
    fkd_corpus c;
    load(&c, dir, FKD_SIDE_PRIVATE);
    int kinds[] = {FKD_PARTITION_NATURAL, FKD_PARTITION_IID, FKD_PARTITION_DIRICHLET};
    for (int i = 0; i < 3; i++) {
        fkd_federation a, b, other;
        build(&a, &c, kinds[i], 7);
        build(&b, &c, kinds[i], 7);
        build(&other, &c, kinds[i], 8);
        assert_int_equal(check_no_leak(&a, &c), c.n_docs); /* every document is used once */
        assert_true(same_federation(&a, &b));               /* same seed, same partition */
        if (kinds[i] != FKD_PARTITION_NATURAL) assert_false(same_federation(&a, &other));
        for (int k = 0; k < a.n_clients; k++)
            for (int s = 0; s < FKD_SPLIT_COUNT; s++) assert_true(a.clients[k].n_docs[s] > 0);
        fkd_federation_free(&a);
        fkd_federation_free(&b);
        fkd_federation_free(&other);
    }
    /* natural: partitions above max_client_bytes become several clients,
     * each with documents of one label only */
    fkd_federation nat;
    build(&nat, &c, FKD_PARTITION_NATURAL, 1);
    assert_true(nat.n_clients > c.n_parts);
    assert_float_equal(dominant_share(&nat), 1.0, 1e-9);
    assert_string_equal(nat.clients[0].name, "priv_c.1");
    fkd_federation_free(&nat);
    /* Dirichlet(0.1) label skew is far from IID */
    fkd_federation iid, dir_fed;
    build(&iid, &c, FKD_PARTITION_IID, 3);
    build(&dir_fed, &c, FKD_PARTITION_DIRICHLET, 3);
    double s_iid = dominant_share(&iid), s_dir = dominant_share(&dir_fed);
    assert_true(s_iid < 0.45);
    assert_true(s_dir > 0.6);
    assert_true(s_dir > s_iid + 0.25);
    fkd_federation_free(&iid);
    fkd_federation_free(&dir_fed);
    fkd_corpus_free(&c);
}

static void test_stream_and_batches(void **state)
{
    char dir[1024];
    make_corpus(dir, sizeof dir);
    fkd_corpus c;
    load(&c, dir, FKD_SIDE_PUBLIC);
    fkd_tokenizer tok;
    fkd_tokenizer_init_bytes(&tok);
    int32_t sep = fkd_data_separator(&tok);
    assert_int_equal(sep, FKD_DATA_SEPARATOR_BYTE);
    uint32_t docs[3] = {0, 5, 9};
    fkd_token_stream s;
    fkd_error err;
    assert_int_equal(fkd_token_stream_from_docs(&s, &c, docs, 3, &tok, &err), 0);
    int64_t bytes = 0;
    for (int i = 0; i < 3; i++) bytes += c.docs[docs[i]].bytes;
    assert_int_equal(s.n, bytes + 4);
    assert_int_equal(s.text_bytes, bytes + 4);
    /* SEP d0 SEP d5 SEP d9 SEP */
    int64_t at = 0;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(s.tokens[at++], sep);
        const fkd_doc *d = &c.docs[docs[i]];
        for (uint32_t j = 0; j < d->bytes; j++) assert_int_equal(s.tokens[at++], c.text[d->offset + j]);
    }
    assert_int_equal(s.tokens[at++], sep);
    assert_int_equal(at, s.n);

    fkd_batch b, b2;
    assert_int_equal(fkd_batch_init(&b, 4, 16, 0, &err), 0);
    assert_int_equal(fkd_batch_init(&b2, 4, 16, 0, &err), 0);
    assert_int_equal(fkd_batch_random(&b, &s, 42, 5, &err), 0);
    assert_int_equal(fkd_batch_random(&b2, &s, 42, 5, &err), 0);
    assert_memory_equal(b.inputs, b2.inputs, 64 * sizeof(int32_t));
    assert_int_equal(fkd_batch_random(&b2, &s, 42, 6, &err), 0);
    assert_memory_not_equal(b.inputs, b2.inputs, 64 * sizeof(int32_t));
    for (int i = 0; i < 64; i++) {
        if (i % 16 != 15) assert_int_equal(b.targets[i], b.inputs[i + 1]); /* next token */
        assert_true(b.targets[i] >= 0);
    }
    /* sequential windows cover every target exactly once, then pad */
    int64_t windows = fkd_batch_window_count(&s, 16), counted = 0;
    for (int64_t w = 0; w < windows; w += 4) {
        int rows = fkd_batch_sequential(&b, &s, w);
        assert_true(rows >= 1 && rows <= 4);
        for (int i = 0; i < 64; i++) {
            if (b.targets[i] < 0) continue;
            int64_t pos = (w + i / 16) * 16 + i % 16;
            assert_int_equal(b.targets[i], s.tokens[pos + 1]);
            counted++;
        }
    }
    assert_int_equal(counted, s.n - 1);
    fkd_batch_free(&b);
    fkd_batch_free(&b2);
    fkd_token_stream_free(&s);

    /* an evenly spread subset: every other document for half the bytes */
    uint32_t all[80], *sel, n_sel;
    uint64_t total = 0;
    for (uint32_t i = 0; i < 80; i++) {
        all[i] = i;
        total += c.docs[i].bytes + 1;
    }
    assert_int_equal(fkd_docs_spread(&sel, &n_sel, &c, all, 80, total / 2, &err), 0);
    assert_int_equal(n_sel, 40);
    for (uint32_t i = 0; i < n_sel; i++) assert_int_equal(sel[i], 2 * i);
    free(sel);
    assert_int_equal(fkd_docs_spread(&sel, &n_sel, &c, all, 80, 0, &err), 0);
    assert_int_equal(n_sel, 80);
    free(sel);
    fkd_corpus_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_document_detection),
        cmocka_unit_test(test_corpus_sides),
        cmocka_unit_test(test_partitioners),
        cmocka_unit_test(test_stream_and_batches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
