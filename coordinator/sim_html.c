/* sim_html.c — report.html of `fedkd simulate`: one self-contained page
 * (inline CSS and SVG, no script, nothing fetched) with the comparison
 * table, four charts — perplexity per round for each method, bytes per
 * round, per-client accuracy, simulated round time — the devices and their
 * accessibility, and the settings. Charts are drawn by two small functions:
 * a line chart (optionally log-scaled) and a strip chart of points. */
#include "sim_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define W 640
#define H 300
#define ML 70   /* margins: room for tick labels */
#define MR 160  /* room for the legend */
#define MT 30
#define MB 45
#define MAX_SERIES 12

static const char *palette[] = {"#444444", "#e69f00", "#56b4e9", "#009e73", "#cc79a7",
                                "#0072b2", "#d55e00", "#999999"};

typedef struct {
    const char *name;
    const char *color;
    int n;
    const double *x, *y;
    int dashed;
} series;

typedef struct {
    double lo, hi;
    int log;
} axis;

static double ax_map(const axis *a, double v, double p0, double p1)
{
    double t;
    if (a->log) t = (log10(v) - log10(a->lo)) / (log10(a->hi) - log10(a->lo));
    else t = (v - a->lo) / (a->hi - a->lo);
    return p0 + t * (p1 - p0);
}

static void ax_fit(axis *a, const series *s, int ns, int use_y)
{
    a->lo = INFINITY;
    a->hi = -INFINITY;
    for (int i = 0; i < ns; i++)
        for (int k = 0; k < s[i].n; k++) {
            double v = use_y ? s[i].y[k] : s[i].x[k];
            if (!isfinite(v) || (a->log && v <= 0)) continue;
            if (v < a->lo) a->lo = v;
            if (v > a->hi) a->hi = v;
        }
    if (!isfinite(a->lo)) {
        a->lo = a->log ? 1 : 0;
        a->hi = a->log ? 10 : 1;
    }
    if (a->hi <= a->lo) a->hi = a->lo + (a->log ? a->lo : 1);
    if (a->log) {
        a->lo /= 1.3;
        a->hi *= 1.3;
    } else {
        double pad = (a->hi - a->lo) * 0.06;
        a->lo -= pad;
        a->hi += pad;
    }
}

static void fmt_tick(char *out, size_t cap, double v)
{
    double a = fabs(v);
    if (a >= 1e9) snprintf(out, cap, "%.3gG", v / 1e9);
    else if (a >= 1e6) snprintf(out, cap, "%.3gM", v / 1e6);
    else if (a >= 1e4) snprintf(out, cap, "%.3gk", v / 1e3);
    else snprintf(out, cap, "%.3g", v);
}

static void frame(FILE *f, const char *title, const char *xl, const char *yl, const axis *ax,
                  const axis *ay)
{
    fprintf(f, "<figure><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"%s\">\n", W, H, W, H, title);
    fprintf(f, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
    fprintf(f, "<text x=\"%d\" y=\"18\" class=\"t\">%s</text>\n", ML, title);
    int x0 = ML, x1 = W - MR, y0 = H - MB, y1 = MT;
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" "
               "stroke=\"#888\"/>\n", x0, y1, x1 - x0, y0 - y1);
    for (int i = 0; i <= 4; i++) {
        char lab[32];
        double v = ay->log ? pow(10, log10(ay->lo) + i * (log10(ay->hi) - log10(ay->lo)) / 4)
                           : ay->lo + i * (ay->hi - ay->lo) / 4;
        double py = ax_map(ay, v, y0, y1);
        fmt_tick(lab, sizeof lab, v);
        fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>"
                   "<text x=\"%d\" y=\"%.1f\" class=\"l\" text-anchor=\"end\">%s</text>\n",
                x0, x1, py, py, x0 - 4, py + 4, lab);
    }
    /* x ticks: whole rounds */
    int step = (int)ceil((ax->hi - ax->lo) / 6);
    if (step < 1) step = 1;
    for (int r = (int)ceil(ax->lo); xl && r <= (int)floor(ax->hi); r += step) {
        double px = ax_map(ax, r, x0, x1);
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" class=\"l\" text-anchor=\"middle\">%d</text>\n",
                px, y0 + 16, r);
    }
    if (xl) fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"l\" text-anchor=\"middle\">%s</text>\n",
                    (x0 + x1) / 2, H - 8, xl);
    fprintf(f, "<text x=\"14\" y=\"%d\" class=\"l\" transform=\"rotate(-90 14 %d)\" "
               "text-anchor=\"middle\">%s</text>\n", (y0 + y1) / 2, (y0 + y1) / 2, yl);
}

static void legend(FILE *f, const series *s, int ns)
{
    for (int i = 0; i < ns; i++)
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"4\" fill=\"%s\"/>"
                   "<text x=\"%d\" y=\"%d\" class=\"l\">%s</text>\n",
                W - MR + 10, MT + 8 + 16 * i, s[i].color, W - MR + 26, MT + 13 + 16 * i,
                s[i].name);
}

static void line_chart(FILE *f, const char *title, const char *xl, const char *yl,
                       const series *s, int ns, int log_y)
{
    axis ax = {0}, ay = {.log = log_y};
    ax_fit(&ax, s, ns, 0);
    ay.log = log_y;
    ax_fit(&ay, s, ns, 1);
    frame(f, title, xl, yl, &ax, &ay);
    for (int i = 0; i < ns; i++) {
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"",
                s[i].color, s[i].dashed ? " stroke-dasharray=\"6 4\"" : "");
        for (int k = 0; k < s[i].n; k++)
            if (isfinite(s[i].y[k]) && (!log_y || s[i].y[k] > 0))
                fprintf(f, "%.1f,%.1f ", ax_map(&ax, s[i].x[k], ML, W - MR),
                        ax_map(&ay, s[i].y[k], H - MB, MT));
        fprintf(f, "\"/>\n");
        for (int k = 0; k < s[i].n && !s[i].dashed; k++)
            if (isfinite(s[i].y[k]) && (!log_y || s[i].y[k] > 0))
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>\n",
                        ax_map(&ax, s[i].x[k], ML, W - MR), ax_map(&ay, s[i].y[k], H - MB, MT),
                        s[i].color);
    }
    legend(f, s, ns);
    fprintf(f, "</svg></figure>\n");
}

/* One column of points per series (x = series index, jittered). */
static void strip_chart(FILE *f, const char *title, const char *yl, const series *s, int ns)
{
    axis ax = {.lo = -0.5, .hi = ns - 0.5}, ay = {0};
    ax_fit(&ay, s, ns, 1);
    frame(f, title, NULL, yl, &ax, &ay);
    fkd_rng rng;
    fkd_rng_seed(&rng, 7);
    for (int i = 0; i < ns; i++) {
        double cx = ax_map(&ax, i, ML, W - MR);
        for (int k = 0; k < s[i].n; k++)
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\" "
                       "fill-opacity=\"0.6\"/>\n",
                    cx + (fkd_rng_uniform(&rng) - 0.5) * 40, ax_map(&ay, s[i].y[k], H - MB, MT),
                    s[i].color);
        double mean = 0;
        for (int k = 0; k < s[i].n; k++) mean += s[i].y[k] / s[i].n;
        if (s[i].n > 0)
            fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"black\" "
                       "stroke-width=\"2\"/>\n", cx - 25, cx + 25,
                    ax_map(&ay, mean, H - MB, MT), ax_map(&ay, mean, H - MB, MT));
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" class=\"l\" text-anchor=\"middle\">%s</text>\n",
                cx, H - MB + 16, s[i].name);
    }
    fprintf(f, "</svg></figure>\n");
}

/* ---- the charts of a run ----------------------------------------------------------------------------- */
typedef struct {
    double *v;
    int n, cap;
} pool_d;

static double *take(pool_d *p, int n)
{
    if (p->n + n > p->cap) return NULL;
    double *r = p->v + p->n;
    p->n += n;
    return r;
}

static int round_series(series *s, pool_d *p, const fkd_sim_method *m, const char *color,
                        int what)
{
    double *x = take(p, m->n_rounds), *y = take(p, m->n_rounds);
    if (!x || !y) return -1;
    for (int k = 0; k < m->n_rounds; k++) {
        const fkd_sim_round *r = &m->rounds[k];
        x[k] = r->round;
        y[k] = what == 0 ? r->ppl : what == 1 ? (double)r->bytes_up : what == 2 ?
               (double)r->bytes_down : what == 3 ? (double)r->bytes_up_dense : r->sim_seconds;
    }
    *s = (series){.name = m->key, .color = color, .n = m->n_rounds, .x = x, .y = y};
    return 0;
}

static void charts(FILE *f, const fkd_sim_result *res, pool_d *p)
{
    series s[MAX_SERIES];
    int ns = 0;
    /* 1. perplexity per round */
    for (int i = 0; i < FKD_SIM_METHOD_COUNT && ns < MAX_SERIES; i++) {
        const fkd_sim_method *m = &res->m[i];
        if (!m->ran) continue;
        if (i == FKD_SIM_TEACHER || i == FKD_SIM_PRUNED) {
            /* Not trained in rounds: a level line. */
            double *x = take(p, 2), *y = take(p, 2);
            if (!x || !y) continue;
            x[0] = 1;
            x[1] = res->cfg.rounds;
            y[0] = y[1] = m->ppl;
            s[ns++] = (series){.name = m->key, .color = palette[i % 8], .n = 2, .x = x, .y = y,
                               .dashed = 1};
        } else if (round_series(&s[ns], p, m, palette[i % 8], 0) == 0) {
            ns++;
        }
    }
    line_chart(f, "Perplexity on the private test text, per round", "round", "perplexity", s,
               ns, 1);
    /* 2. bytes per round: federated methods, as sent and dense */
    ns = 0;
    static const int fed[] = {FKD_SIM_FEDAVG, FKD_SIM_FEDKD, FKD_SIM_FEDKD_DENSE};
    for (int j = 0; j < 3; j++) {
        const fkd_sim_method *m = &res->m[fed[j]];
        if (!m->ran) continue;
        static char names[3][2][40];
        if (round_series(&s[ns], p, m, palette[fed[j] % 8], 1) == 0) {
            snprintf(names[j][0], sizeof names[j][0], "%s up", m->key);
            s[ns++].name = names[j][0];
        }
        if (round_series(&s[ns], p, m, palette[fed[j] % 8], 2) == 0) {
            snprintf(names[j][1], sizeof names[j][1], "%s down", m->key);
            s[ns].dashed = 1;
            s[ns++].name = names[j][1];
        }
    }
    if (res->m[FKD_SIM_FEDKD].ran && round_series(&s[ns], p, &res->m[FKD_SIM_FEDKD],
                                                  palette[7], 3) == 0) {
        s[ns].dashed = 1;
        s[ns++].name = "dense fp32 up";
    }
    line_chart(f, "Bytes per round (solid: uplink, dashed: downlink)", "round", "bytes", s, ns,
               1);
    /* 3. per-client accuracy */
    ns = 0;
    for (int i = 0; i < FKD_SIM_METHOD_COUNT; i++) {
        const fkd_sim_method *m = &res->m[i];
        if (!m->ran || m->n_client_acc == 0 || i == FKD_SIM_FEDKD_DENSE) continue;
        s[ns++] = (series){.name = m->key, .color = palette[i % 8], .n = m->n_client_acc,
                           .y = m->client_acc};
    }
    strip_chart(f, "Next-token accuracy per client (bar: mean)", "accuracy", s, ns);
    /* 4. simulated round time */
    ns = 0;
    for (int j = 0; j < 3; j++) {
        const fkd_sim_method *m = &res->m[fed[j]];
        if (m->ran && round_series(&s[ns], p, m, palette[fed[j] % 8], 4) == 0) ns++;
    }
    line_chart(f, "Simulated round time (devices, links, stragglers, deadline)", "round",
               "seconds", s, ns, 0);
}

/* ---- tables ---------------------------------------------------------------------------------------------- */
static void table_methods(FILE *f, const fkd_sim_result *res)
{
    fprintf(f, "<table><tr><th>method</th><th>perplexity</th><th>accuracy</th>"
               "<th>hallucination</th><th>int8 ppl</th><th>int4 ppl</th><th>bytes up</th>"
               "<th>up, dense fp32</th><th>bytes down</th><th>down, dense fp32</th>"
               "<th>client MB</th><th>devices L/H/S/E</th></tr>\n");
    for (int o = 0; o < FKD_SIM_METHOD_COUNT; o++) {
        int i = fkd_sim_display_order[o];
        const fkd_sim_method *m = &res->m[i];
        if (!m->ran) continue;
        char cls[48];
        fkd_sim_format_classes(cls, sizeof cls, m->class_ok);
        fprintf(f, "<tr%s><td>%s</td><td>%.3f</td><td>%.4f</td><td>%.4f</td><td>%.3f</td>"
                   "<td>%.3f</td><td>%llu</td><td>%llu</td><td>%llu</td><td>%llu</td>"
                   "<td>%.0f</td><td>%s</td></tr>\n",
                i == FKD_SIM_FEDKD ? " class=\"hi\"" : "", m->name, m->ppl, m->acc, m->halluc,
                m->ppl_int8, m->ppl_int4, (unsigned long long)m->bytes_up,
                (unsigned long long)m->bytes_up_dense, (unsigned long long)m->bytes_down,
                (unsigned long long)m->bytes_down_dense, m->peak_client_bytes / 1048576.0, cls);
    }
    fprintf(f, "</table>\n<p>Client MB: the largest training plan of a federated client (%s "
               "mode). Devices: phone-low / phone-high / single-board / edge devices that could "
               "take part (train and run for the federated methods, run int8 for the others).",
            fkd_sim_client_mode_name(res->cfg.client_mode));
    if (res->sum.teacher_from_file)
        fprintf(f, " Perplexity is per teacher token: a model's total nats on the test text "
                   "over the teacher's %lld tokens of it; accuracy per own token.",
                (long long)res->sum.test_teacher_tokens);
    fprintf(f, "</p>\n");
}

static void table_devices(FILE *f, const fkd_sim_summary *s)
{
    fprintf(f, "<table><tr><th>class</th><th>GFLOP/s</th><th>memory MiB</th><th>up Mbit/s</th>"
               "<th>down Mbit/s</th><th>dropout</th><th>devices</th><th>can train</th>"
               "<th>can run</th><th>both</th></tr>\n");
    for (int c = 0; c < FKD_SIM_CLASS_COUNT; c++) {
        const fkd_sim_class_info *k = &fkd_sim_classes[c];
        fprintf(f, "<tr><td>%s</td><td>%g–%g</td><td>%g–%g</td><td>%g–%g</td><td>%g–%g</td>"
                   "<td>%g</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td></tr>\n",
                k->name, k->gflops[0], k->gflops[1], k->mem_mb[0], k->mem_mb[1], k->up_mbps[0],
                k->up_mbps[1], k->down_mbps[0], k->down_mbps[1], k->dropout, s->class_count[c],
                s->class_train[c], s->class_run[c], s->class_both[c]);
    }
    fprintf(f, "</table><p>Accessibility: <b>%d of %d devices (%.1f%%)</b> can both train the "
               "student within their memory budget and the round deadline, and run it (int8) "
               "fast enough.</p>\n", s->n_accessible, s->n_clients, 100 * s->accessibility);
}

/* Text from outside (a file name) as HTML. */
static void html_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* What a client needs in each mode, and who could train in it. */
static void table_client_modes(FILE *f, const fkd_sim_result *res)
{
    const fkd_sim_summary *s = &res->sum;
    fprintf(f, "<table><tr><th>client mode</th><th>least training memory, MB</th>"
               "<th>devices that could train and run</th><th>L/H/S/E</th></tr>\n");
    for (int m = 0; m < FKD_SIM_CLIENT_MODE_COUNT; m++) {
        char cls[48];
        fkd_sim_format_classes(cls, sizeof cls, s->mode_class_both[m]);
        fprintf(f, "<tr%s><td>%s</td><td>%.0f</td><td>%d of %d</td><td>%s</td></tr>\n",
                m == res->cfg.client_mode ? " class=\"hi\"" : "", fkd_sim_client_mode_name(m),
                s->mode_min_train_bytes[m] / 1048576.0, s->mode_accessible[m], s->n_clients, cls);
    }
    fprintf(f, "</table><p>The run's clients train in the highlighted mode; LoRA modes use rank "
               "%d (%zu adapter parameters).</p>\n", res->cfg.lora_rank, s->lora_params);
}

static void table_rounds(FILE *f, const fkd_sim_result *res)
{
    fprintf(f, "<table><tr><th>method</th><th>round</th><th>perplexity</th><th>selected</th>"
               "<th>delivered</th><th>surplus</th><th>stragglers</th><th>dropouts</th>"
               "<th>simulated s</th><th>wall s</th></tr>\n");
    static const int fed[] = {FKD_SIM_FEDAVG, FKD_SIM_FEDKD, FKD_SIM_FEDKD_DENSE};
    for (int j = 0; j < 3; j++) {
        const fkd_sim_method *m = &res->m[fed[j]];
        for (int k = 0; k < m->n_rounds; k++) {
            const fkd_sim_round *r = &m->rounds[k];
            fprintf(f, "<tr><td>%s</td><td>%d</td><td>%.3f</td><td>%d</td><td>%d</td><td>%d</td>"
                       "<td>%d</td><td>%d</td><td>%.1f</td><td>%.1f</td></tr>\n",
                    m->key, r->round, r->ppl, r->selected, r->delivered, r->surplus,
                    r->stragglers, r->dropouts, r->sim_seconds, r->wall_seconds);
        }
    }
    fprintf(f, "</table>\n");
}

int fkd_sim_write_html(const char *path, const fkd_sim_result *res, fkd_error *err)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return fkd_error_set(err, FKD_E_NOMEM, "no memory for the report");
    int cap = 64;
    for (int i = 0; i < FKD_SIM_METHOD_COUNT; i++) cap += 12 * res->m[i].n_rounds + 16;
    pool_d p = {.v = calloc((size_t)cap, sizeof(double)), .cap = cap};
    const fkd_sim_summary *s = &res->sum;
    const fkd_sim_config *c = &res->cfg;
    fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
               "<title>fedkd simulation</title>\n<style>body{font-family:sans-serif;"
               "max-width:1000px;margin:2em auto;color:#222}table{border-collapse:collapse;"
               "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
               "td:first-child,th:first-child{text-align:left}tr.hi{background:#eef6ff}"
               "figure{margin:1em 0}.t{font:bold 14px sans-serif}.l{font:11px sans-serif}"
               "</style></head><body>\n<h1>fedkd simulation</h1>\n");
    fprintf(f, "<p>%d clients (%s), %d rounds of %d updates (over-selection %g), %d local "
               "steps of %d×%d tokens, simulated deadline %g s, seed %llu. Wall time %.1f s%s."
               "</p>\n", s->n_clients, c->clients == 0 ? "natural partitions" : c->partition ==
            FKD_PARTITION_IID ? "IID split" : "Dirichlet split",
            c->rounds, c->per_round, (double)c->over_select, c->local_steps, c->batch, c->seq,
            c->deadline_s, (unsigned long long)c->seed, s->wall_seconds,
            s->teacher_cached && !s->teacher_from_file ? ", teacher from cache" : "");
    fprintf(f, "<h2>Comparison on the private clients' test text</h2>\n");
    table_methods(f, res);
    if (p.v) charts(f, res, &p);
    if (s->teacher_from_file) {
        fprintf(f, "<p>Teacher: %zu parameters, vocabulary %d. Student: %zu parameters (%.2f of "
                   "the teacher's), vocabulary %d, ", s->teacher_params, s->teacher_vocab,
                s->student_params,
                (double)s->student_params / (double)(s->teacher_params ? s->teacher_params : 1),
                s->student_vocab);
        html_text(f, s->student_source);
        fprintf(f, ".</p>\n");
    }
    fprintf(f, "<h2>Devices</h2>\n");
    table_devices(f, s);
    table_client_modes(f, res);
    fprintf(f, "<p>Scale: %.1f KB resident per idle virtual client (plus %.1f KB of its "
               "private tokens); aggregation %.0f updates/s (open, decompress, FedAvg).</p>\n",
            s->idle_client_bytes / 1e3, s->client_data_bytes / 1e3, s->agg_updates_per_s);
    fprintf(f, "<h2>Rounds</h2>\n");
    table_rounds(f, res);
    fprintf(f, "<p>Files: summary.json, rounds.jsonl, rounds.csv, student-fp32.ckpt, "
               "student-int8.qmdl, student-int4.qmdl, student-f32.gguf, student-q4_1.gguf. "
               "See docs/simulation.md.</p>\n"
               "</body></html>\n");
    fclose(f);
    free(p.v);
    int rc = fkd_file_write_atomic(path, buf, len, err);
    free(buf);
    return rc;
}
