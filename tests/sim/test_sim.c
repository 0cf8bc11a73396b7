/* test_sim.c — `fedkd simulate`'s parts and one tiny simulation end to end.
 *
 * Parts: the device table (shares sum to 1, draws land in their ranges and
 * repeat with the seed), the clock (seconds from bytes and FLOPs, dropouts,
 * stragglers, the round's time), accessibility (a device with too little
 * memory cannot train; a slow one misses the deadline).
 *
 * End to end: a small corpus of 4 natural clients and a public folder is
 * written to a temporary folder; a simulation with a teacher of 2 steps,
 * 2 rounds and tiny evaluations runs through the real coordinator engine
 * and client agents over inproc://. Its run directory must hold a
 * summary.json that parses and has every method's figures, a CSV with one
 * row per method and round, the three student files, and a report.html
 * whose structure is sound and which has its four SVG charts. When
 * Chromium is installed, the report is also rendered headless: the DOM it
 * builds must contain the charts and the screenshot must be a PNG of the
 * window's size. */
#include <ctype.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "fkd_sim.h"
#include "../compress/prune_test_util.h" /* a small BPE vocabulary with merges */

/* ---- the device table ------------------------------------------------------------------------------ */
static void test_device_table(void **state)
{
    (void)state;
    double share = 0;
    for (int c = 0; c < FKD_SIM_CLASS_COUNT; c++) {
        const fkd_sim_class_info *k = &fkd_sim_classes[c];
        share += k->share;
        assert_true(k->gflops[0] > 0 && k->gflops[0] <= k->gflops[1]);
        assert_true(k->mem_mb[0] > 0 && k->mem_mb[0] <= k->mem_mb[1]);
        assert_true(k->dropout >= 0 && k->dropout < 1);
    }
    assert_true(fabs(share - 1.0) < 1e-9);
    fkd_rng a, b;
    fkd_rng_seed(&a, 42);
    fkd_rng_seed(&b, 42);
    int count[FKD_SIM_CLASS_COUNT] = {0};
    for (int i = 0; i < 20000; i++) {
        fkd_sim_device d, e;
        memset(&d, 0, sizeof d); /* compared whole, padding included */
        memset(&e, 0, sizeof e);
        fkd_sim_device_draw(&d, &a);
        fkd_sim_device_draw(&e, &b);
        assert_memory_equal(&d, &e, sizeof d);
        const fkd_sim_class_info *k = &fkd_sim_classes[d.cls];
        assert_true(d.flops >= k->gflops[0] * 1e9 * 0.999 && d.flops <= k->gflops[1] * 1e9 * 1.001);
        assert_true(d.up_Bps >= k->up_mbps[0] * 1e6 / 8 * 0.999);
        count[d.cls]++;
    }
    for (int c = 0; c < FKD_SIM_CLASS_COUNT; c++)
        assert_true(fabs(count[c] / 20000.0 - fkd_sim_classes[c].share) < 0.02);
}

/* ---- the clock ------------------------------------------------------------------------------------------- */
static fkd_sim_device device(double gflops, double mbps, double dropout)
{
    return (fkd_sim_device){.cls = FKD_SIM_SBC, .flops = gflops * 1e9, .mem_bytes = 1e9,
                            .up_Bps = mbps * 1e6 / 8, .down_Bps = mbps * 1e6 / 8, .rtt_s = 0,
                            .dropout = dropout};
}

static void test_clock_seconds(void **state)
{
    (void)state;
    fkd_sim_device d = device(1, 8, 0); /* 1 GFLOP/s, 1 MB/s */
    fkd_sim_work w = {.down_bytes = 2e6, .up_bytes = 1e6, .train_tokens = 1000,
                      .flops_per_token = 1e6};
    /* 2 s down + 1000 * 1e6 * 3 / 1e9 = 3 s compute + 1 s up */
    assert_true(fabs(fkd_sim_client_seconds(&d, &w, 0) - 6.0) < 1e-9);
    /* recomputation adds one forward: 4 s compute */
    assert_true(fabs(fkd_sim_client_seconds(&d, &w, 1) - 7.0) < 1e-9);
}

static void test_clock_round(void **state)
{
    (void)state;
    /* clients 0..4: fast, fast, slow (straggler), gone (dropout), slower;
     * 4 stays behind 0 and 1 even at the largest load factor of theirs. */
    fkd_sim_device devs[5] = {device(10, 80, 0), device(5, 80, 0), device(0.01, 80, 0),
                              device(10, 80, 1.0), device(0.3, 80, 0)};
    uint8_t rec[5] = {0};
    fkd_sim_work w = {.down_bytes = 1e6, .up_bytes = 1e5, .train_tokens = 1000,
                      .flops_per_token = 1e6};
    fkd_rng rng;
    fkd_rng_seed(&rng, 1);
    fkd_sim_slot slots[5];
    for (int i = 0; i < 5; i++) slots[i] = (fkd_sim_slot){.client = i};
    double t = fkd_sim_round_plan(slots, 5, 2, 60, devs, rec, &w, &rng);
    int outcome[5];
    for (int i = 0; i < 5; i++) outcome[slots[i].client] = slots[i].outcome;
    assert_int_equal(outcome[0], FKD_SIM_DELIVERED);
    assert_int_equal(outcome[1], FKD_SIM_DELIVERED);
    assert_int_equal(outcome[4], FKD_SIM_SURPLUS);
    assert_int_equal(outcome[2], FKD_SIM_STRAGGLER);
    assert_int_equal(outcome[3], FKD_SIM_DROPOUT);
    /* the round closes at the second arrival, within its load range */
    double last = 0;
    for (int i = 0; i < 5; i++)
        if (slots[i].outcome == FKD_SIM_DELIVERED && slots[i].finish_s > last)
            last = slots[i].finish_s;
    assert_true(t == last);
    double base = fkd_sim_client_seconds(&devs[0], &w, 0);
    assert_true(t >= base && t <= FKD_SIM_LOAD_MAX * fkd_sim_client_seconds(&devs[1], &w, 0));
    /* waiting for 4 when only 3 can arrive in time: the deadline */
    for (int i = 0; i < 5; i++) slots[i] = (fkd_sim_slot){.client = i};
    assert_true(fkd_sim_round_plan(slots, 5, 4, 60, devs, rec, &w, &rng) == 60);
}

static void test_access(void **state)
{
    (void)state;
    fkd_model_config cfg = fkd_config_student_s();
    fkd_sim_work w = {.down_bytes = 4e6, .up_bytes = 1e5, .train_tokens = 8 * 64 * 6,
                      .flops_per_token = fkd_config_flops_per_token(&cfg, 64)};
    fkd_sim_device big = device(20, 100, 0), tiny = big, slow = big;
    tiny.mem_bytes = 16 << 20;    /* below the runtime alone */
    slow.flops = 1e7;             /* 10 MFLOP/s */
    fkd_sim_access a;
    fkd_sim_access_check(&a, &big, &cfg, FKD_SIM_CLIENT_FULL, 8, 8, 64, &w, 60, 4e6);
    assert_true(a.can_train && a.can_run);
    fkd_sim_access_check(&a, &tiny, &cfg, FKD_SIM_CLIENT_FULL, 8, 8, 64, &w, 60, 4e6);
    assert_false(a.fits_train_memory);
    assert_false(a.can_train || a.can_run);
    fkd_sim_access_check(&a, &slow, &cfg, FKD_SIM_CLIENT_FULL, 8, 8, 64, &w, 60, 4e6);
    assert_true(a.fits_train_memory);
    assert_false(a.can_train);
}

/* ---- a small JSON checker: syntax only, enough to say the file parses -------------------------------- */
static const char *json_value(const char *p);

static const char *ws(const char *p)
{
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++;
    return p;
}

static const char *json_string(const char *p)
{
    if (*p++ != '"') return NULL;
    while (*p && *p != '"') {
        if ((unsigned char)*p < 0x20) return NULL;
        if (*p == '\\') p++;
        if (*p) p++;
    }
    return *p == '"' ? p + 1 : NULL;
}

static const char *json_number(const char *p)
{
    if (*p != '-' && !isdigit((unsigned char)*p)) return NULL; /* no nan, inf, +1, .5 */
    char *end;
    strtod(p, &end);
    return end > p ? end : NULL;
}

static const char *json_list(const char *p, char close, int object)
{
    p = ws(p + 1);
    if (*p == close) return p + 1;
    for (;;) {
        if (object) {
            if (!(p = json_string(ws(p)))) return NULL;
            p = ws(p);
            if (*p++ != ':') return NULL;
        }
        if (!(p = json_value(p))) return NULL;
        p = ws(p);
        if (*p == close) return p + 1;
        if (*p++ != ',') return NULL;
    }
}

static const char *json_value(const char *p)
{
    p = ws(p);
    if (*p == '{') return json_list(p, '}', 1);
    if (*p == '[') return json_list(p, ']', 0);
    if (*p == '"') return json_string(p);
    if (!strncmp(p, "true", 4) || !strncmp(p, "null", 4)) return p + 4;
    if (!strncmp(p, "false", 5)) return p + 5;
    return json_number(p);
}

static int json_valid(const char *text)
{
    const char *end = json_value(text);
    return end && *ws(end) == 0;
}

static void test_methods_parse(void **state)
{
    (void)state;
    fkd_sim_config cfg;
    fkd_sim_config_defaults(&cfg);
    fkd_error err = {0};
    assert_int_equal(fkd_sim_methods_parse(&cfg.methods, "all", &err), 0);
    for (int i = 0; i < FKD_SIM_PRUNED; i++)
        assert_int_equal(fkd_sim_runs_method(&cfg, i), i != FKD_SIM_FEDKD_DENSE);
    cfg.dense_reference = 1; /* --dense-reference adds it */
    assert_true(fkd_sim_runs_method(&cfg, FKD_SIM_FEDKD_DENSE));
    cfg.dense_reference = 0;
    assert_false(fkd_sim_runs_method(&cfg, FKD_SIM_PRUNED)); /* no file teacher */
    assert_int_equal(fkd_sim_methods_parse(&cfg.methods, "fedkd,public-kd", &err), 0);
    assert_true(fkd_sim_runs_method(&cfg, FKD_SIM_FEDKD));
    assert_true(fkd_sim_runs_method(&cfg, FKD_SIM_PUBLIC_KD));
    assert_false(fkd_sim_runs_method(&cfg, FKD_SIM_FEDAVG));
    assert_false(fkd_sim_runs_method(&cfg, FKD_SIM_FEDKD_DENSE));
    assert_int_equal(fkd_sim_methods_parse(&cfg.methods, "fedkd-dense", &err), 0);
    assert_true(fkd_sim_runs_method(&cfg, FKD_SIM_FEDKD_DENSE)); /* named: runs */
    assert_false(fkd_sim_runs_method(&cfg, FKD_SIM_FEDKD));
    static const char *bad[] = {"", "fedkd,", "fedk", "fedkd,,central", "pruned", ",fedkd"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err.msg[0] = 0;
        assert_int_equal(fkd_sim_methods_parse(&cfg.methods, bad[i], &err), -1);
        assert_non_null(strstr(err.msg, "--methods"));
    }
}

static void test_json_checker(void **state)
{
    (void)state;
    assert_true(json_valid("{\"a\": [1, 2.5e3, null, true], \"b\": {\"c\": \"x\\\"y\"}}"));
    assert_false(json_valid("{\"a\": nan}"));
    assert_false(json_valid("{\"a\": 1,}"));
    assert_false(json_valid("{\"a\": 1} x"));
}

/* ---- end to end --------------------------------------------------------------------------------------- */
static char tmp_dir[256];

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) n = 0;
    if (buf) buf[n] = 0;
    fclose(f);
    return buf;
}

/* A file of n fortune-style documents ("%" lines between them) built from
 * a topic's words, so each client's text differs from the others'. */
static void write_corpus_file(const char *path, const char *const *words, int n_words, int docs,
                              unsigned seed)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int d = 0; d < docs; d++) {
        int len = 12 + (int)((seed + 7u * d) % 20);
        for (int i = 0; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            fprintf(f, "%s%s", i ? " " : "", words[(seed >> 16) % (unsigned)n_words]);
        }
        fprintf(f, ".\n%%\n");
    }
    fclose(f);
}

static void make_corpus(const char *root)
{
    static const char *const topics[5][8] = {
        {"the", "court", "law", "judge", "rules", "case", "appeal", "order"},
        {"the", "kernel", "linux", "boots", "driver", "module", "patch", "system"},
        {"the", "cat", "dog", "runs", "garden", "food", "sleeps", "warm"},
        {"the", "ship", "sea", "storm", "sails", "harbor", "wind", "night"},
        {"the", "wise", "man", "said", "time", "life", "truth", "world"},
    };
    char path[700];
    snprintf(path, sizeof path, "%s/private", root);
    mkdir(root, 0755);
    mkdir(path, 0755);
    for (int t = 0; t < 4; t++) {
        snprintf(path, sizeof path, "%s/private/topic%d", root, t);
        write_corpus_file(path, topics[t], 8, 60, 11u + (unsigned)t);
    }
    snprintf(path, sizeof path, "%s/public", root);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/public/general", root);
    write_corpus_file(path, topics[4], 8, 200, 99);
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

/* Every opening tag of these names has its closing tag, in order. */
static int tags_balanced(const char *html)
{
    static const char *names[] = {"html", "head", "body", "table", "tr", "svg", "figure", "h1",
                                  "h2", "p", "style", "title"};
    const char *stack[256];
    int depth = 0;
    for (const char *p = html; (p = strchr(p, '<')); p++) {
        int closing = p[1] == '/';
        const char *name = p + 1 + closing;
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            size_t len = strlen(names[i]);
            if (strncmp(name, names[i], len) != 0 || isalnum((unsigned char)name[len])) continue;
            if (!closing) {
                if (depth == 256) return 0;
                stack[depth++] = names[i];
            } else if (depth == 0 || strcmp(stack[--depth], names[i]) != 0) {
                return 0;
            }
            break;
        }
    }
    return depth == 0;
}

static int run_cmd(const char *cmd)
{
    int rc = system(cmd);
    return rc == -1 ? -1 : WEXITSTATUS(rc);
}

/* Renders the report with headless Chromium when it is installed: the DOM
 * it builds must hold the charts, and the screenshot must be a PNG of the
 * window size. Returns 0 when Chromium is not there (the structural checks
 * above stand alone then). */
static int check_in_browser(const char *out)
{
    if (run_cmd("command -v chromium >/dev/null 2>&1") != 0) {
        fprintf(stderr, "note: chromium not installed; the report was checked structurally\n");
        return 0;
    }
    char cmd[2400], png[700], dom[700];
    snprintf(png, sizeof png, "%s/report.png", out);
    snprintf(dom, sizeof dom, "%s/report.dom.html", out);
    const char *flags = "--headless --no-sandbox --disable-gpu --disable-dev-shm-usage "
                        "--no-first-run --hide-scrollbars --user-data-dir=%s/chromium-profile";
    char f2[800];
    snprintf(f2, sizeof f2, flags, out);
    snprintf(cmd, sizeof cmd, "chromium %s --dump-dom file://%s/report.html > %s 2>/dev/null",
             f2, out, dom);
    assert_int_equal(run_cmd(cmd), 0);
    char *d = read_text(dom);
    assert_non_null(d);
    assert_int_equal(count(d, "<svg"), 4);
    assert_true(count(d, "<polyline") >= 3);
    free(d);
    snprintf(cmd, sizeof cmd, "chromium %s --window-size=1000,1400 --screenshot=%s "
             "file://%s/report.html >/dev/null 2>&1", f2, png, out);
    assert_int_equal(run_cmd(cmd), 0);
    FILE *f = fopen(png, "rb");
    assert_non_null(f);
    unsigned char h[24];
    assert_int_equal(fread(h, 1, 24, f), 24);
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    fclose(f);
    assert_memory_equal(h, "\x89PNG\r\n\x1a\n", 8);
    unsigned w = (unsigned)h[16] << 24 | (unsigned)h[17] << 16 | (unsigned)h[18] << 8 | h[19];
    unsigned ht = (unsigned)h[20] << 24 | (unsigned)h[21] << 16 | (unsigned)h[22] << 8 | h[23];
    assert_int_equal(w, 1000);
    assert_int_equal(ht, 1400);
    assert_true(bytes > 20000); /* charts and tables, not a blank page */
    return 1;
}

static void tiny_config(fkd_sim_config *c, const char *root)
{
    fkd_sim_config_defaults(c);
    snprintf(c->data, sizeof c->data, "%s/private", root);
    snprintf(c->public_dir, sizeof c->public_dir, "%s/public", root);
    snprintf(c->out, sizeof c->out, "%s/run", root);
    snprintf(c->cache, sizeof c->cache, "%s/cache", root);
    c->words[0] = 0;
    c->threads = 1; /* ctest may run tests side by side */
    c->rounds = 2;
    c->per_round = 2;
    c->over_select = 0.5f;
    c->deadline_s = 600;
    c->local_steps = 1;
    c->batch = 2;
    c->seq = 32;
    c->teacher_steps = 2;
    c->teacher_batch = 1;
    c->soft_shards = 2;
    c->transfer_tokens = 1024;
    c->eval_tokens_round = 256;
    c->eval_tokens_final = 256;
    c->halluc_prompts = 2;
    c->client_eval_tokens = 128;
    c->client_eval_max = 4;
    c->progress = 0;
}

static void test_end_to_end(void **state)
{
    (void)state;
    const char *base = getenv("FKD_TEST_TMP") ? getenv("FKD_TEST_TMP") : "/tmp";
    snprintf(tmp_dir, sizeof tmp_dir, "%s/sim-e2e-%d", base, (int)getpid());
    make_corpus(tmp_dir);
    fkd_sim_config cfg;
    tiny_config(&cfg, tmp_dir);
    cfg.dense_reference = 1; /* the compression's reference and its row */
    fkd_sim_result res;
    fkd_error err = {0};
    int rc = fkd_sim_run(&res, &cfg, &err);
    if (rc != 0) fprintf(stderr, "simulation failed: %s\n", err.msg);
    assert_int_equal(rc, 0);
    for (int i = 0; i < FKD_SIM_METHOD_COUNT; i++)
        fprintf(stderr, "note: %-12s %6.1f s wall, ppl %.3f\n", res.m[i].key,
                res.m[i].wall_seconds, res.m[i].ppl);
    fprintf(stderr, "note: whole run %.1f s wall\n", res.sum.wall_seconds);
    /* the byte teacher's student starts random: no "before healing" row */
    assert_false(res.m[FKD_SIM_PRUNED].ran);
    for (int i = 0; i < FKD_SIM_METHOD_COUNT; i++) {
        if (i == FKD_SIM_PRUNED) continue;
        assert_true(res.m[i].ran);
        assert_true(res.m[i].ppl > 1 && res.m[i].ppl < 300);
        assert_true(res.m[i].ppl_int8 > 1 && res.m[i].ppl_int4 > 1);
    }
    /* the federated methods moved bytes, compressed below dense */
    assert_int_equal(res.m[FKD_SIM_FEDKD].n_rounds, 2);
    /* The server's phase ran, and its students are what the others start from. */
    assert_true(res.sum.server_kd_ppl > 1 && res.sum.server_ce_ppl > 1);
    assert_true(res.m[FKD_SIM_FEDKD].bytes_up > 0);
    assert_true(res.m[FKD_SIM_FEDKD].bytes_up * 10 < res.m[FKD_SIM_FEDKD].bytes_up_dense);
    assert_true(res.m[FKD_SIM_FEDKD_DENSE].bytes_up > res.m[FKD_SIM_FEDKD].bytes_up * 10);
    assert_int_equal(res.sum.n_clients, 4);

    char path[700];
    snprintf(path, sizeof path, "%s/summary.json", cfg.out);
    char *json = read_text(path);
    assert_non_null(json);
    assert_true(json_valid(json));
    static const char *keys[] = {"\"methods\"", "\"teacher\"", "\"public-kd\"", "\"fedavg\"",
                                 "\"fedkd\"", "\"central\"", "\"perplexity\"", "\"accuracy\"",
                                 "\"hallucination_rate\"", "\"int8_perplexity\"",
                                 "\"int4_perplexity\"", "\"bytes_up\"", "\"bytes_down\"",
                                 "\"bytes_up_dense_fp32\"", "\"settings\"", "\"wall_seconds\"",
                                 "\"accessibility\"", "\"idle_client_bytes\"",
                                 "\"aggregation_updates_per_s\"", "\"int4_recipe\": \"q4_1 gptq, "};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        assert_non_null(strstr(json, keys[i]));
    free(json);

    snprintf(path, sizeof path, "%s/rounds.csv", cfg.out);
    char *csv = read_text(path);
    assert_non_null(csv);
    /* header + 2 rounds x (public-kd, fedavg, fedkd, fedkd-dense, central) */
    assert_int_equal(count(csv, "\n"), 1 + 2 * 5);
    for (char *line = csv; *line;) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        int commas = 0;
        for (char *q = line; q < nl; q++) commas += *q == ',';
        assert_int_equal(commas, 14);
        line = nl + 1;
    }
    free(csv);
    snprintf(path, sizeof path, "%s/rounds.jsonl", cfg.out);
    char *jl = read_text(path);
    assert_non_null(jl);
    for (char *line = jl; *line;) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = 0;
        assert_true(json_valid(line));
        line = nl + 1;
    }
    free(jl);
    /* Every federated method's server trained after each aggregation: its
     * distillation (fedkd) or cross-entropy (FedAvg) on the transfer set. */
    static const char *feds[] = {"fedavg", "fedkd"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/work/%s/coordinator/rounds.jsonl", cfg.out, feds[i]);
        char *log = read_text(path);
        assert_non_null(log);
        assert_int_equal(count(log, "\"server_loss\":"), 2);
        assert_int_equal(count(log, "\"server_loss\":0.000000"), 0);
        free(log);
        /* a finished run keeps the logs of work/, not its checkpoints */
        snprintf(path, sizeof path, "%s/work/%s/coordinator/master.ckpt", cfg.out, feds[i]);
        assert_int_not_equal(access(path, F_OK), 0);
    }
    snprintf(path, sizeof path, "%s/work/init.ckpt", cfg.out);
    assert_int_not_equal(access(path, F_OK), 0);

    static const char *files[] = {"student-fp32.ckpt", "student-int8.qmdl", "student-int4.qmdl",
                                  "student-f32.gguf", "student-q4_1.gguf"};
    for (int i = 0; i < 5; i++) {
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", cfg.out, files[i]);
        assert_int_equal(stat(path, &st), 0);
        assert_true(st.st_size > 100000);
    }
    /* Only fedkd's student is still held (for the files above); the others
     * were freed once evaluated, their CRC-32 kept. */
    for (int i = FKD_SIM_PUBLIC_KD; i < FKD_SIM_METHOD_COUNT; i++) {
        const fkd_sim_method *m = &res.m[i];
        if (!m->ran) continue;
        assert_int_not_equal(m->final_crc, 0);
        if (i == FKD_SIM_FEDKD)
            assert_int_equal(m->final_crc, fkd_crc32(0, m->final.memory,
                                                     m->final.n_params * sizeof(float)));
        else
            assert_null(m->final.memory);
    }
    fkd_params back;
    snprintf(path, sizeof path, "%s/student-fp32.ckpt", cfg.out);
    assert_int_equal(fkd_checkpoint_load(&back, path, &err), 0);
    assert_memory_equal(back.memory, res.m[FKD_SIM_FEDKD].final.memory,
                        back.n_params * sizeof(float));
    fkd_params_free(&back);
    /* the GGUF file holds the blocks of the int4 column: the deploy recipe
     * calibrated on the public transfer text */
    const fkd_sim_method *kd = &res.m[FKD_SIM_FEDKD];
    assert_true(fkd_qmodel_deploy_calib_tokens(&kd->final.cfg, &kd->calib) > 0);
    snprintf(path, sizeof path, "%s/student-q4_1.gguf", cfg.out);
    fkd_gguf g;
    fkd_qmodel qm, want;
    assert_int_equal(fkd_gguf_open(&g, path, &err), 0);
    assert_int_equal(fkd_gguf_llama_load_qmodel(&qm, &g, 0, &err), 0);
    assert_int_equal(fkd_qmodel_quantize_deploy(&want, &kd->final, FKD_QTYPE_Q4_1, NULL,
                                                &kd->calib, &err), 0);
    assert_int_equal(qm.q[FKD_T_WQ].type, FKD_QTYPE_Q4_1);
    assert_int_equal(qm.q[FKD_T_W2].type, FKD_QTYPE_Q8_0);
    assert_int_equal(qm.q[FKD_T_WO].type, FKD_QTYPE_Q8_0);
    assert_int_equal(qm.data_bytes, want.data_bytes);
    assert_memory_equal(qm.memory, want.memory, want.data_bytes);
    fkd_qmodel_free(&want);
    fkd_qmodel_free(&qm);
    fkd_gguf_close(&g);

    snprintf(path, sizeof path, "%s/report.html", cfg.out);
    char *html = read_text(path);
    assert_non_null(html);
    assert_true(strncmp(html, "<!DOCTYPE html>", 15) == 0);
    assert_int_equal(count(html, "<svg"), 4);
    assert_int_equal(count(html, "<script"), 0);
    assert_int_equal(count(html, "src="), 0);      /* self-contained */
    assert_int_equal(count(html, "nan"), 0);
    assert_true(tags_balanced(html));
    free(html);
    check_in_browser(cfg.out);

    /* The same seed gives the same students (the dense reference is left
     * out: it is the same code as fedkd with other settings). */
    fkd_sim_config again = cfg;
    again.dense_reference = 0;
    snprintf(again.out, sizeof again.out, "%s/run2", tmp_dir);
    fkd_sim_result res2;
    assert_int_equal(fkd_sim_run(&res2, &again, &err), 0);
    assert_true(res2.sum.teacher_cached);
    for (int i = FKD_SIM_PUBLIC_KD; i < FKD_SIM_METHOD_COUNT; i++)
        if (res2.m[i].ran) assert_int_equal(res2.m[i].final_crc, res.m[i].final_crc);
    assert_memory_equal(res2.m[FKD_SIM_FEDKD].final.memory, res.m[FKD_SIM_FEDKD].final.memory,
                        res.m[FKD_SIM_FEDKD].final.n_params * sizeof(float));
    fkd_sim_result_free(&res2);
    fkd_sim_result_free(&res);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    run_cmd(cmd);
}

/* ---- a pretrained teacher from a GGUF file ------------------------------------------------------------ */
/* A tiny random llama written as GGUF, with the byte vocabulary as a
 * merge-free BPE: the simulation must take its tokenizer, prune a one-block
 * student out of it, cache the student and the soft labels by the file's
 * hash, and put the student before healing in the table. */
static void write_tiny_gguf(const char *path, const fkd_bpe_tables *bpe)
{
    fkd_model_config c = {.vocab = bpe ? bpe->n_tokens : 256, .dim = 64, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2,
                          .ffn_hidden = 128, .max_seq = 64, .tie_embeddings = 1,
                          .rope_theta = 10000.0f, .norm_eps = 1e-5f};
    fkd_params p;
    fkd_error err = {0};
    assert_int_equal(fkd_params_init(&p, &c, &err), 0);
    fkd_params_randomize(&p, 7);
    if (bpe)
        assert_int_equal(fkd_gguf_llama_save_bpe(path, &p, FKD_QTYPE_F32, bpe, NULL, "tiny", &err),
                         0);
    else
        assert_int_equal(fkd_gguf_llama_save(path, &p, FKD_QTYPE_F32, NULL, "tiny", &err), 0);
    fkd_params_free(&p);
}

static void tiny_gguf_config(fkd_sim_config *c, const char *root)
{
    tiny_config(c, root);
    fkd_sim_config_file_defaults(c);
    c->progress = 0;
    c->threads = 1;
    snprintf(c->teacher, sizeof c->teacher, "%s/teacher.gguf", root);
    c->student_layers = 1;
    c->student_params = 0; /* 1 of the 2 blocks at full width */
    c->context = 64;
    c->rounds = 2;
    c->local_steps = 1;
    c->batch = 2;
    c->seq = 32;
    c->transfer_tokens = 1024;
    c->soft_shards = 2;
    c->eval_tokens_final = 512;
    c->eval_tokens_round = 128;
    c->quant_eval_tokens = 64;
    c->halluc_prompts = 1;
    c->client_eval_max = 2;
}

/* QLoRA int4 clients (from the cache of the full run before): they train
 * adapters over the int4 base and upload only those; the coordinator merges
 * them into the master, so fedkd moves away from where it started. */
static void check_qlora4_run(fkd_sim_config *cfg, const fkd_sim_result *full, const char *root)
{
    cfg->client_mode = FKD_SIM_CLIENT_QLORA4;
    cfg->lora_rank = 2;
    snprintf(cfg->out, sizeof cfg->out, "%s/run-qlora4", root);
    fkd_error err = {0};
    fkd_sim_result res;
    int rc = fkd_sim_run(&res, cfg, &err);
    if (rc != 0) fprintf(stderr, "qlora4 simulation failed: %s\n", err.msg);
    assert_int_equal(rc, 0);
    const fkd_sim_method *q = &res.m[FKD_SIM_FEDKD], *start = &res.m[FKD_SIM_PRUNED];
    assert_true(q->ran && isfinite(q->ppl));
    size_t n = q->final.n_params;
    fkd_lora_config lc = fkd_lora_defaults();
    lc.rank = cfg->lora_rank;
    lc.alpha = cfg->lora_alpha;
    size_t adapter = fkd_lora_param_count(&q->final.cfg, &lc) * sizeof(float);
    assert_true(adapter > 0 && adapter < n * sizeof(float) / 2);
    /* bytes_up_dense counts one fp32 student per aggregated update */
    uint64_t updates = q->bytes_up_dense / (n * sizeof(float));
    assert_true(updates > 0);
    double per_update = (double)q->bytes_up / (double)updates;
    assert_true(per_update > (double)adapter);
    assert_true(per_update < (double)adapter + 4096); /* header, seal, framing */
    assert_int_not_equal(start->final_crc, q->final_crc);
    assert_memory_not_equal(full->m[FKD_SIM_FEDKD].final.memory, q->final.memory,
                            n * sizeof(float));
    /* memory and accessibility are the mode's: less than full fine-tuning needs */
    assert_true(q->peak_client_bytes > 0);
    assert_true(q->peak_client_bytes < full->m[FKD_SIM_FEDKD].peak_client_bytes);
    fkd_sim_result_free(&res);
}

static void test_file_teacher(void **state)
{
    (void)state;
    const char *base = getenv("FKD_TEST_TMP") ? getenv("FKD_TEST_TMP") : "/tmp";
    char root[300], path[700];
    snprintf(root, sizeof root, "%s/sim-gguf-%d", base, (int)getpid());
    make_corpus(root);
    snprintf(path, sizeof path, "%s/teacher.gguf", root);
    write_tiny_gguf(path, NULL);
    fkd_sim_config cfg;
    tiny_gguf_config(&cfg, root);
    cfg.keep_work = 1; /* work/init.ckpt is read below */
    fkd_error err = {0};
    fkd_sim_result res;
    int rc = fkd_sim_run(&res, &cfg, &err);
    if (rc != 0) fprintf(stderr, "simulation failed: %s\n", err.msg);
    assert_int_equal(rc, 0);
    fkd_sim_print_table(stderr, &res);
    const fkd_sim_summary *s = &res.sum;
    assert_true(s->teacher_from_file);
    assert_false(s->soft_cached);
    assert_false(s->teacher_eval_cached);
    assert_false(s->student_cached); /* pruned now, kept for the next run */
    assert_int_equal(s->teacher_vocab, 256);
    assert_int_equal(s->student_vocab, 256);
    /* one of two blocks, the embeddings shared */
    assert_true(s->student_params < s->teacher_params);
    assert_true(s->test_teacher_tokens > 2);
    assert_true(fabs(s->own_per_teacher_token - 1.0) < 1e-12); /* one tokenizer */
    static const int ran[] = {FKD_SIM_TEACHER, FKD_SIM_PRUNED, FKD_SIM_PUBLIC_KD,
                              FKD_SIM_FEDAVG,  FKD_SIM_FEDKD,  FKD_SIM_CENTRAL};
    for (size_t i = 0; i < sizeof ran / sizeof ran[0]; i++) {
        const fkd_sim_method *m = &res.m[ran[i]];
        assert_true(m->ran);
        assert_true(isfinite(m->ppl) && m->ppl > 1);
        assert_true(isfinite(m->ppl_int8) && isfinite(m->ppl_int4));
    }
    assert_false(res.m[FKD_SIM_FEDKD_DENSE].ran);
    /* the pruned student is where every student started: training moved fedkd */
    fkd_params init;
    snprintf(path, sizeof path, "%s/work/init.ckpt", cfg.out);
    assert_int_equal(fkd_checkpoint_load(&init, path, &err), 0);
    assert_int_equal(res.m[FKD_SIM_PRUNED].final_crc,
                     fkd_crc32(0, init.memory, init.n_params * sizeof(float)));
    fkd_params_free(&init);
    assert_int_not_equal(res.m[FKD_SIM_PRUNED].final_crc, res.m[FKD_SIM_FEDKD].final_crc);
    /* the federated methods report a client's memory and who took part */
    assert_true(res.m[FKD_SIM_FEDKD].peak_client_bytes > 0);
    int took_part = 0;
    for (int c = 0; c < FKD_SIM_CLASS_COUNT; c++) took_part += res.m[FKD_SIM_FEDKD].class_ok[c];
    assert_int_equal(took_part, s->n_accessible);
    /* LoRA over a q4 base needs less than full fine-tuning */
    assert_true(s->mode_min_train_bytes[FKD_SIM_CLIENT_QLORA4] <
                s->mode_min_train_bytes[FKD_SIM_CLIENT_FULL]);
    snprintf(path, sizeof path, "%s/summary.json", cfg.out);
    char *json = read_text(path);
    assert_non_null(json);
    assert_true(json_valid(json));
    assert_non_null(strstr(json, "\"perplexity_per\": \"teacher token\""));
    assert_non_null(strstr(json, "\"pruned\""));
    assert_non_null(strstr(json, "\"client_modes\""));
    free(json);
    snprintf(path, sizeof path, "%s/report.html", cfg.out);
    char *html = read_text(path);
    assert_non_null(html);
    assert_true(tags_balanced(html));
    assert_int_equal(count(html, "nan"), 0);
    free(html);

    /* Again: the soft labels come from the cache and the students repeat. */
    fkd_sim_config again = cfg;
    snprintf(again.out, sizeof again.out, "%s/run2", root);
    /* ... and fedkd alone is the fedkd of the whole run. */
    assert_int_equal(fkd_sim_methods_parse(&again.methods, "teacher,fedkd", &err), 0);
    fkd_sim_result res2;
    assert_int_equal(fkd_sim_run(&res2, &again, &err), 0);
    assert_true(res2.m[FKD_SIM_FEDKD].ran && res2.m[FKD_SIM_TEACHER].ran);
    assert_true(res2.m[FKD_SIM_PRUNED].ran); /* a file teacher's row always */
    assert_false(res2.m[FKD_SIM_PUBLIC_KD].ran || res2.m[FKD_SIM_FEDAVG].ran ||
                 res2.m[FKD_SIM_CENTRAL].ran);
    assert_true(res2.sum.server_ce_ppl == 0); /* FedAvg's server phase skipped */
    assert_true(res2.sum.soft_cached);
    assert_true(res2.sum.teacher_eval_cached); /* the same figures, read back */
    assert_true(res2.m[FKD_SIM_TEACHER].ppl == res.m[FKD_SIM_TEACHER].ppl);
    assert_true(res2.m[FKD_SIM_TEACHER].ppl_int4 == res.m[FKD_SIM_TEACHER].ppl_int4);
    assert_true(res2.sum.student_cached);
    assert_memory_equal(res2.m[FKD_SIM_FEDKD].final.memory, res.m[FKD_SIM_FEDKD].final.memory,
                        res.m[FKD_SIM_FEDKD].final.n_params * sizeof(float));
    fkd_sim_result_free(&res2);

    check_qlora4_run(&again, &res, root);
    fkd_sim_result_free(&res);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    run_cmd(cmd);
}

/* A teacher whose BPE vocabulary has merges: the pruned student keeps only
 * what the public text uses, so the private text (other words) falls apart
 * into more, shorter tokens for it. Its soft labels must be remapped, and
 * its perplexity counted per teacher token. */
static void test_file_teacher_trimmed(void **state)
{
    (void)state;
    const char *base = getenv("FKD_TEST_TMP") ? getenv("FKD_TEST_TMP") : "/tmp";
    char root[300], path[700];
    snprintf(root, sizeof root, "%s/sim-trim-%d", base, (int)getpid());
    make_corpus(root);
    fkd_bpe_tables bpe;
    test_tables(&bpe);
    snprintf(path, sizeof path, "%s/teacher.gguf", root);
    write_tiny_gguf(path, &bpe);
    fkd_sim_config cfg;
    tiny_gguf_config(&cfg, root);
    cfg.rounds = 1;
    fkd_error err = {0};
    fkd_sim_result res;
    int rc = fkd_sim_run(&res, &cfg, &err);
    if (rc != 0) fprintf(stderr, "simulation failed: %s\n", err.msg);
    assert_int_equal(rc, 0);
    const fkd_sim_summary *s = &res.sum;
    fprintf(stderr, "note: vocabulary %d -> %d, %.3f student tokens per teacher token; "
            "ppl teacher %.1f, before healing %.1f, fedkd %.1f\n", s->teacher_vocab,
            s->student_vocab, s->own_per_teacher_token, res.m[FKD_SIM_TEACHER].ppl,
            res.m[FKD_SIM_PRUNED].ppl, res.m[FKD_SIM_FEDKD].ppl);
    assert_int_equal(s->teacher_vocab, bpe.n_tokens);
    assert_true(s->student_vocab >= TEST_N_BYTES && s->student_vocab < s->teacher_vocab);
    assert_true(s->own_per_teacher_token > 1.0);
    for (int i = 0; i < FKD_SIM_METHOD_COUNT; i++) {
        const fkd_sim_method *m = &res.m[i];
        if (!m->ran) continue;
        assert_true(isfinite(m->ppl) && m->ppl > 1);
        /* students are freed once evaluated; fedkd's is kept for its files */
        if (i != FKD_SIM_TEACHER && m->final.memory)
            assert_int_equal(m->final.cfg.vocab, s->student_vocab);
    }
    assert_int_equal(res.m[FKD_SIM_FEDKD].final.cfg.vocab, s->student_vocab);
    /* the coordinator read the remapped shards: fedkd trained on them */
    assert_true(res.m[FKD_SIM_FEDKD].ran && res.m[FKD_SIM_FEDKD].n_rounds == 1);
    fkd_sim_result_free(&res);
    fkd_bpe_tables_free(&bpe);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    run_cmd(cmd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_device_table), cmocka_unit_test(test_clock_seconds),
        cmocka_unit_test(test_clock_round),  cmocka_unit_test(test_access),
        cmocka_unit_test(test_json_checker), cmocka_unit_test(test_methods_parse),
        cmocka_unit_test(test_file_teacher),
        cmocka_unit_test(test_file_teacher_trimmed),
        cmocka_unit_test(test_end_to_end),
    };
    /* One test by name while working on it (e.g. FKD_TEST_FILTER=test_file_teacher*). */
    if (getenv("FKD_TEST_FILTER")) cmocka_set_test_filter(getenv("FKD_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
