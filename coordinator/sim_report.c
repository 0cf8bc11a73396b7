/* sim_report.c — the run directory of `fedkd simulate`:
 *   summary.json        per method: perplexity, accuracy, hallucination rate,
 *                       int8 / int4 perplexity, bytes up and down as sent and
 *                       as dense fp32; the devices and accessibility; the
 *                       settings; wall time
 *   rounds.jsonl, .csv  one record per method and round
 *   student-fp32.ckpt, student-int8.qmdl, student-int4.qmdl
 *                       fedkd's final student, as trained and as shipped
 *   student-f32.gguf, student-q4_1.gguf
 *                       the same as llama GGUF files with the student's
 *                       tokenizer, for llama.cpp and `fedkd bench teacher`
 *                       (sim_write_student_gguf: it needs the run's context)
 *   report.html         one self-contained page: tables and inline SVG
 *                       charts (no script, no external file)
 * and the comparison table printed on the terminal. Every file is written
 * atomically. */
#include "sim_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- a growing text buffer, written atomically at the end ------------------------------------ */
typedef struct {
    char *buf;
    size_t len;
    FILE *f;
} text;

static int text_open(text *t, fkd_error *err)
{
    memset(t, 0, sizeof *t);
    t->f = open_memstream(&t->buf, &t->len);
    return t->f ? 0 : fkd_error_set(err, FKD_E_NOMEM, "no memory for a report");
}

static int text_commit(text *t, const char *dir, const char *name, fkd_error *err)
{
    fclose(t->f);
    char path[FKD_SIM_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int rc = fkd_file_write_atomic(path, t->buf, t->len, err);
    free(t->buf);
    return rc;
}

/* JSON has no NaN or infinity. */
static void jnum(FILE *f, double v)
{
    if (isfinite(v)) fprintf(f, "%.6g", v);
    else fputs("null", f);
}

static void jstr(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

/* ---- summary.json --------------------------------------------------------------------------------- */
static void json_method(FILE *f, const fkd_sim_method *m)
{
    fprintf(f, "    ");
    jstr(f, m->key);
    fprintf(f, ": {\"name\": ");
    jstr(f, m->name);
    fprintf(f, ", \"perplexity\": ");
    jnum(f, m->ppl);
    fprintf(f, ", \"accuracy\": ");
    jnum(f, m->acc);
    fprintf(f, ", \"bits_per_byte\": ");
    jnum(f, m->bpb);
    fprintf(f, ", \"hallucination_rate\": ");
    jnum(f, m->halluc);
    fprintf(f, ", \"int8_perplexity\": ");
    jnum(f, m->ppl_int8);
    fprintf(f, ", \"int4_perplexity\": ");
    jnum(f, m->ppl_int4);
    fprintf(f, ", \"fp32_perplexity_same_tokens\": ");
    jnum(f, m->ppl_fp32_steps);
    fprintf(f, ", \"quant_eval_tokens\": %lld", (long long)m->quant_tokens);
    fprintf(f, ", \"bytes_up\": %llu, \"bytes_down\": %llu", (unsigned long long)m->bytes_up,
            (unsigned long long)m->bytes_down);
    fprintf(f, ", \"bytes_up_dense_fp32\": %llu, \"bytes_down_dense_fp32\": %llu",
            (unsigned long long)m->bytes_up_dense, (unsigned long long)m->bytes_down_dense);
    fprintf(f, ", \"train_tokens\": %lld, \"rounds\": %d, \"wall_seconds\": ",
            (long long)m->train_tokens, m->n_rounds);
    jnum(f, m->wall_seconds);
    fprintf(f, ", \"eval_seconds\": ");
    jnum(f, m->eval_seconds);
    fprintf(f, ", \"cpu_seconds\": ");
    jnum(f, m->cpu_seconds);
    fprintf(f, ", \"peak_client_bytes\": ");
    jnum(f, m->peak_client_bytes);
    fprintf(f, ", \"devices_taking_part\": {");
    for (int c = 0; c < FKD_SIM_CLASS_COUNT; c++)
        fprintf(f, "%s\"%s\": %d", c ? ", " : "", fkd_sim_classes[c].key, m->class_ok[c]);
    fprintf(f, "}}");
}

static void json_settings(FILE *f, const fkd_sim_config *c, const fkd_sim_summary *s)
{
    fprintf(f, "  \"settings\": {\"data\": ");
    jstr(f, c->data);
    fprintf(f, ", \"public\": ");
    jstr(f, c->public_dir);
    fprintf(f, ", \"seed\": %llu, \"threads\": %d, \"clients\": %d, \"partition\": \"%s\", \"dirichlet_alpha\": %g, "
               "\"rounds\": %d, \"per_round\": %d, \"over_select\": %g, \"deadline_s\": %g, "
               "\"local_steps\": %d, \"batch\": %d, \"seq\": %d, \"lr\": %g, \"lr_schedule\": \"%s\", \"min_lr_ratio\": %g, \"server_lr\": %g, \"alpha\": %g, "
               "\"transfer_share\": %g, \"up_fraction\": %g, \"up_format\": \"%s\", "
               "\"teacher_steps\": %d, \"soft_k\": %d, \"soft_temperature\": %g, "
               "\"soft_shards\": %d, \"transfer_tokens\": %lld, \"eval_tokens_final\": %lld, "
               "\"eval_tokens_round\": %lld, \"quant_eval_tokens\": %lld, \"client_mode\": \"%s\", "
               "\"lora_rank\": %d, \"context\": %d, \"student_layers\": %d, \"teacher\": ",
            (unsigned long long)c->seed, c->threads, c->clients,
            c->clients == 0 ? "natural" : c->partition == FKD_PARTITION_IID ? "iid" : "dirichlet",
            (double)c->dirichlet_alpha,
            c->rounds, c->per_round, (double)c->over_select, c->deadline_s, c->local_steps,
            c->batch, c->seq, (double)c->lr, c->lr_schedule == FKD_LR_COSINE ? "cosine" : "constant", (double)c->min_lr_ratio, (double)c->server_lr, (double)c->alpha, (double)c->transfer_share,
            (double)c->up_fraction, fkd_update_value_name(c->up_format), c->teacher_steps, c->soft_k,
            (double)c->soft_temperature, c->soft_shards, (long long)c->transfer_tokens,
            (long long)c->eval_tokens_final, (long long)c->eval_tokens_round,
            (long long)c->quant_eval_tokens, fkd_sim_client_mode_name(c->client_mode),
            c->lora_rank, c->context, c->student_layers);
    jstr(f, c->teacher);
    fprintf(f, ", \"student\": ");
    jstr(f, c->student);
    fprintf(f, ", \"int4_recipe\": ");
    jstr(f, s->int4_recipe);
    fprintf(f, "},\n");
}

/* Memory and accessibility in every client mode, for the same devices. */
static void json_client_modes(FILE *f, const fkd_sim_summary *s)
{
    fprintf(f, "  \"client_modes\": {");
    for (int m = 0; m < FKD_SIM_CLIENT_MODE_COUNT; m++) {
        fprintf(f, "%s\"%s\": {\"min_train_bytes\": ", m ? ", " : "",
                fkd_sim_client_mode_name(m));
        jnum(f, s->mode_min_train_bytes[m]);
        fprintf(f, ", \"accessible\": %d, \"classes\": {", s->mode_accessible[m]);
        for (int c = 0; c < FKD_SIM_CLASS_COUNT; c++)
            fprintf(f, "%s\"%s\": %d", c ? ", " : "", fkd_sim_classes[c].key,
                    s->mode_class_both[m][c]);
        fprintf(f, "}}");
    }
    fprintf(f, ", \"lora_params\": %zu},\n", s->lora_params);
}

/* What a file teacher changes: the unit of perplexity, the vocabularies,
 * the student's origin, and where the time went. */
static void json_teacher(FILE *f, const fkd_sim_summary *s)
{
    fprintf(f, "  \"tokens\": {\"perplexity_per\": \"%s\", \"test_teacher_tokens\": %lld, "
               "\"own_per_teacher_token\": ",
            s->teacher_from_file ? "teacher token" : "token", (long long)s->test_teacher_tokens);
    jnum(f, s->teacher_from_file ? s->own_per_teacher_token : 1.0);
    fprintf(f, ", \"teacher_vocab\": %d, \"student_vocab\": %d, \"student_source\": ",
            s->teacher_vocab, s->student_vocab);
    jstr(f, s->student_source);
    fprintf(f, ", \"teacher_crc32\": \"%08x\"},\n", s->teacher_crc);
    fprintf(f, "  \"phases\": {\"load_seconds\": ");
    jnum(f, s->load_seconds);
    static const char *const keys[] = {"prune_seconds", "prune_cpu_seconds",
                                       "soft_label_seconds", "soft_label_tokens_per_s",
                                       "soft_label_cpu_seconds", "cpu_seconds"};
    const double v[] = {s->prune_seconds, s->prune_cpu_seconds, s->soft_seconds,
                        s->soft_tokens_per_s, s->soft_cpu_seconds, s->cpu_seconds};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        fprintf(f, ", \"%s\": ", keys[i]);
        jnum(f, v[i]);
    }
    fprintf(f, ", \"student_cached\": %s, \"teacher_eval_cached\": %s, "
               "\"soft_labels_cached\": %s},\n", s->student_cached ? "true" : "false",
            s->teacher_eval_cached ? "true" : "false", s->soft_cached ? "true" : "false");
}

static void json_devices(FILE *f, const fkd_sim_summary *s)
{
    fprintf(f, "  \"devices\": {\"clients\": %d, \"accessible\": %d, \"accessibility\": ",
            s->n_clients, s->n_accessible);
    jnum(f, s->accessibility);
    fprintf(f, ", \"classes\": {");
    for (int c = 0; c < FKD_SIM_CLASS_COUNT; c++)
        fprintf(f, "%s\"%s\": {\"count\": %d, \"can_train\": %d, \"can_run\": %d, \"both\": %d}",
                c ? ", " : "", fkd_sim_classes[c].key, s->class_count[c], s->class_train[c],
                s->class_run[c], s->class_both[c]);
    fprintf(f, "}},\n");
}

static int write_summary(const fkd_sim_result *res, fkd_error *err)
{
    const fkd_sim_summary *s = &res->sum;
    text t;
    if (text_open(&t, err) != 0) return -1;
    FILE *f = t.f;
    fprintf(f, "{\n  \"methods\": {\n");
    int first = 1;
    for (int i = 0; i < FKD_SIM_METHOD_COUNT; i++) {
        if (!res->m[i].ran) continue;
        if (!first) fprintf(f, ",\n");
        json_method(f, &res->m[i]);
        first = 0;
    }
    fprintf(f, "\n  },\n");
    json_settings(f, &res->cfg, s);
    json_devices(f, s);
    json_client_modes(f, s);
    json_teacher(f, s);
    fprintf(f, "  \"scale\": {\"idle_client_bytes\": ");
    jnum(f, s->idle_client_bytes);
    fprintf(f, ", \"client_data_bytes\": ");
    jnum(f, s->client_data_bytes);
    fprintf(f, ", \"aggregation_updates_per_s\": ");
    jnum(f, s->agg_updates_per_s);
    fprintf(f, "},\n  \"model\": {\"student_params\": %zu, \"teacher_params\": %zu, "
               "\"student_q8_bytes\": %llu, \"update_bytes\": %llu},\n",
            s->student_params, s->teacher_params, (unsigned long long)s->student_q8_bytes,
            (unsigned long long)s->update_bytes);
    fprintf(f, "  \"data\": {\"private_train_tokens\": %llu, \"public_transfer_tokens\": %llu, "
               "\"test_tokens\": %lld},\n",
            (unsigned long long)s->private_train_tokens,
            (unsigned long long)s->public_transfer_tokens, (long long)s->test_tokens);
    fprintf(f, "  \"teacher_cached\": %s, \"teacher_train_seconds\": ",
            s->teacher_cached ? "true" : "false");
    jnum(f, s->teacher_seconds);
    fprintf(f, ",\n  \"server\": {\"steps\": %lld, \"seconds\": ", (long long)sim_server_steps(&res->cfg));
    jnum(f, s->server_seconds);
    fprintf(f, ", \"distilled_perplexity\": ");
    jnum(f, s->server_kd_ppl);
    fprintf(f, ", \"cross_entropy_perplexity\": ");
    jnum(f, s->server_ce_ppl);
    fprintf(f, "},\n  \"wall_seconds\": ");
    jnum(f, s->wall_seconds);
    fprintf(f, "\n}\n");
    return text_commit(&t, res->cfg.out, "summary.json", err);
}

/* ---- rounds.jsonl and rounds.csv -------------------------------------------------------------------- */
static int write_rounds(const fkd_sim_result *res, fkd_error *err)
{
    text j, c;
    if (text_open(&j, err) != 0) return -1;
    if (text_open(&c, err) != 0) {
        fclose(j.f);
        free(j.buf);
        return -1;
    }
    fprintf(c.f, "method,round,perplexity,accuracy,bytes_up,bytes_down,bytes_up_dense_fp32,"
                 "bytes_down_dense_fp32,sim_seconds,wall_seconds,selected,delivered,surplus,"
                 "stragglers,dropouts\n");
    for (int i = 0; i < FKD_SIM_METHOD_COUNT; i++) {
        const fkd_sim_method *m = &res->m[i];
        for (int k = 0; k < m->n_rounds; k++) {
            const fkd_sim_round *r = &m->rounds[k];
            fprintf(j.f, "{\"method\": \"%s\", \"round\": %d, \"perplexity\": ", m->key,
                    r->round);
            jnum(j.f, r->ppl);
            fprintf(j.f, ", \"accuracy\": ");
            jnum(j.f, r->acc);
            fprintf(j.f, ", \"bytes_up\": %llu, \"bytes_down\": %llu, \"bytes_up_dense_fp32\": "
                         "%llu, \"bytes_down_dense_fp32\": %llu, \"sim_seconds\": ",
                    (unsigned long long)r->bytes_up, (unsigned long long)r->bytes_down,
                    (unsigned long long)r->bytes_up_dense, (unsigned long long)r->bytes_down_dense);
            jnum(j.f, r->sim_seconds);
            fprintf(j.f, ", \"wall_seconds\": ");
            jnum(j.f, r->wall_seconds);
            fprintf(j.f, ", \"selected\": %d, \"delivered\": %d, \"surplus\": %d, "
                         "\"stragglers\": %d, \"dropouts\": %d}\n",
                    r->selected, r->delivered, r->surplus, r->stragglers, r->dropouts);
            fprintf(c.f, "%s,%d,%.6g,%.6g,%llu,%llu,%llu,%llu,%.6g,%.6g,%d,%d,%d,%d,%d\n", m->key,
                    r->round, r->ppl, r->acc, (unsigned long long)r->bytes_up,
                    (unsigned long long)r->bytes_down, (unsigned long long)r->bytes_up_dense,
                    (unsigned long long)r->bytes_down_dense, r->sim_seconds, r->wall_seconds,
                    r->selected, r->delivered, r->surplus, r->stragglers, r->dropouts);
        }
    }
    if (text_commit(&j, res->cfg.out, "rounds.jsonl", err) != 0) {
        fclose(c.f);
        free(c.buf);
        return -1;
    }
    return text_commit(&c, res->cfg.out, "rounds.csv", err);
}

/* ---- the final student ------------------------------------------------------------------------------ */
static int write_students(const fkd_sim_result *res, fkd_error *err)
{
    const fkd_sim_method *m = &res->m[FKD_SIM_FEDKD];
    if (!m->ran) return 0;
    char path[FKD_SIM_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/student-fp32.ckpt", res->cfg.out);
    if (fkd_checkpoint_save(path, &m->final, err) != 0) return -1;
    static const struct {
        int type;
        const char *name;
    } q[] = {{FKD_QTYPE_Q8_0, "student-int8.qmdl"}, {SIM_INT4_QTYPE, "student-int4.qmdl"}};
    for (int i = 0; i < 2; i++) {
        fkd_qmodel qm;
        if (fkd_qmodel_quantize_deploy(&qm, &m->final, q[i].type, NULL, sim_method_calib(m),
                                       err) != 0)
            return -1;
        snprintf(path, sizeof path, "%s/%s", res->cfg.out, q[i].name);
        int rc = fkd_qmodel_save(path, &qm, err);
        fkd_qmodel_free(&qm);
        if (rc != 0) return -1;
    }
    return 0;
}

/* The tokenizer of the final student for its GGUF file: the teacher file's
 * tables, trimmed again to the student's ids when its vocabulary was
 * trimmed. The kept ids are closed under merge ancestry already, so
 * trimming to exactly them gives back the student's own tables (checked). */
static int student_tables(fkd_bpe_tables *out, const sim_ctx *x, const fkd_gguf *teacher,
                          fkd_error *err)
{
    fkd_bpe_tables full;
    if (fkd_bpe_tables_from_gguf(&full, teacher, err) != 0) return -1;
    if (!x->have_vmap) {
        *out = full;
        return 0;
    }
    fkd_vocab_map again;
    int rc = fkd_vocab_trim(&again, out, &full, x->vmap.new_to_old, (size_t)x->vmap.new_vocab,
                            err);
    fkd_bpe_tables_free(&full);
    if (rc != 0) return -1;
    if (again.new_vocab != x->vmap.new_vocab ||
        memcmp(again.new_to_old, x->vmap.new_to_old,
               (size_t)again.new_vocab * sizeof *again.new_to_old) != 0)
        rc = fkd_error_set(err, FKD_E_MISMATCH, "the student's vocabulary is not one trimmed "
                           "from the teacher's tokenizer; export it with fedkd export "
                           "--tokenizer");
    fkd_vocab_map_free(&again);
    if (rc != 0) fkd_bpe_tables_free(out);
    return rc;
}

int sim_write_student_gguf(const sim_ctx *x, fkd_error *err)
{
    const fkd_sim_method *m = &x->res->m[FKD_SIM_FEDKD];
    if (!m->ran) return 0;
    static const struct {
        int type;
        const char *name;
    } q[] = {{FKD_QTYPE_F32, "student-f32.gguf"}, {SIM_INT4_QTYPE, "student-q4_1.gguf"}};
    int file_teacher = x->cfg.teacher[0] && fkd_gguf_is_gguf(x->cfg.teacher);
    fkd_gguf g;
    fkd_bpe_tables tables = {0};
    if (file_teacher && fkd_gguf_open(&g, x->cfg.teacher, err) != 0) return -1;
    int rc = file_teacher ? student_tables(&tables, x, &g, err) : 0;
    for (size_t i = 0; rc == 0 && i < sizeof q / sizeof q[0]; i++) {
        char path[FKD_SIM_PATH_MAX + 64];
        snprintf(path, sizeof path, "%s/%s", x->cfg.out, q[i].name);
        rc = fkd_gguf_llama_export(path, &m->final, q[i].type, sim_method_calib(m),
                                   file_teacher ? &tables : NULL, file_teacher ? &g : NULL,
                                   "fedkd student", err);
    }
    if (file_teacher) {
        fkd_bpe_tables_free(&tables);
        fkd_gguf_close(&g);
    }
    return rc;
}

int fkd_sim_write_outputs(const fkd_sim_result *res, fkd_error *err)
{
    char path[FKD_SIM_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/report.html", res->cfg.out);
    if (fkd_mkdir_p(res->cfg.out, err) != 0 || write_summary(res, err) != 0 ||
        write_rounds(res, err) != 0 || write_students(res, err) != 0)
        return -1;
    return fkd_sim_write_html(path, res, err);
}

/* ---- the terminal table ------------------------------------------------------------------------------- */
static void human_bytes(char *out, size_t cap, double b)
{
    static const char *u[] = {"B", "KB", "MB", "GB", "TB"};
    int i = 0;
    while (b >= 1000 && i < 4) {
        b /= 1000;
        i++;
    }
    snprintf(out, cap, i == 0 ? "%.0f %s" : "%.1f %s", b, u[i]);
}

/* Rows in the order a reader compares them: the teacher, the student it
 * starts from, then the methods. */
const int fkd_sim_display_order[FKD_SIM_METHOD_COUNT] = {
    FKD_SIM_TEACHER, FKD_SIM_PRUNED, FKD_SIM_PUBLIC_KD, FKD_SIM_FEDAVG,
    FKD_SIM_FEDKD,   FKD_SIM_CENTRAL, FKD_SIM_FEDKD_DENSE};

/* "L/H/S/E" counts of the devices per class that could take part. */
void fkd_sim_format_classes(char *out, size_t cap, const int class_ok[FKD_SIM_CLASS_COUNT])
{
    snprintf(out, cap, "%d/%d/%d/%d", class_ok[FKD_SIM_PHONE_LOW], class_ok[FKD_SIM_PHONE_HIGH],
             class_ok[FKD_SIM_SBC], class_ok[FKD_SIM_EDGE]);
}

void fkd_sim_print_table(FILE *f, const fkd_sim_result *res)
{
    const fkd_sim_summary *s = &res->sum;
    fprintf(f, "\nOn the private clients' test text (%lld tokens; int8/int4 on the first %lld, "
               "run as on a device):\n",
            (long long)s->test_tokens, (long long)res->m[FKD_SIM_FEDKD].quant_tokens);
    if (s->teacher_from_file)
        fprintf(f, "perplexity per teacher token (total nats / %lld teacher tokens of the same "
                   "text; the student reads %.3f of its own tokens per teacher token); accuracy "
                   "per own token.\n", (long long)s->test_teacher_tokens,
                s->own_per_teacher_token);
    fprintf(f, "\n%-30s %8s %7s %7s %8s %8s %10s %10s %10s %10s %9s %11s\n", "method", "ppl",
            "acc", "halluc", "int8 ppl", "int4 ppl", "up", "up fp32", "down", "down fp32",
            "client", "devices");
    for (int o = 0; o < FKD_SIM_METHOD_COUNT; o++) {
        const fkd_sim_method *m = &res->m[fkd_sim_display_order[o]];
        if (!m->ran) continue;
        char up[16] = "-", upd[16] = "-", dn[16] = "-", dnd[16] = "-", mem[16] = "-", cls[48];
        if (m->n_rounds > 0 && (m->bytes_up || m->bytes_down)) {
            human_bytes(up, sizeof up, (double)m->bytes_up);
            human_bytes(upd, sizeof upd, (double)m->bytes_up_dense);
            human_bytes(dn, sizeof dn, (double)m->bytes_down);
            human_bytes(dnd, sizeof dnd, (double)m->bytes_down_dense);
        }
        if (m->peak_client_bytes > 0) human_bytes(mem, sizeof mem, m->peak_client_bytes);
        fkd_sim_format_classes(cls, sizeof cls, m->class_ok);
        fprintf(f, "%-30s %8.3f %7.4f %7.4f %8.3f %8.3f %10s %10s %10s %10s %9s %11s\n", m->name,
                m->ppl, m->acc, m->halluc, m->ppl_int8, m->ppl_int4, up, upd, dn, dnd, mem, cls);
    }
    fprintf(f, "(client: the largest training plan of a federated client, %s mode; devices: "
               "phone-low/phone-high/sbc/edge that could take part: train and run for the "
               "federated methods, run (int8) for the others)\n",
            fkd_sim_client_mode_name(res->cfg.client_mode));
    const fkd_sim_method *kd = &res->m[FKD_SIM_FEDKD], *dense = &res->m[FKD_SIM_FEDKD_DENSE];
    if (kd->ran && kd->bytes_up > 0) {
        fprintf(f, "\nfedkd uplink: %.0fx below dense fp32 updates", (double)kd->bytes_up_dense /
                (double)kd->bytes_up);
        if (dense->ran && dense->ppl > 0)
            fprintf(f, "; perplexity %+.2f%% against the dense-uplink run",
                    100.0 * (kd->ppl / dense->ppl - 1.0));
        else
            fprintf(f, " (--dense-reference measures what the compression costs)");
        fprintf(f, ". int8 %+.2f%%, int4 %+.2f%% against fp32 on the same tokens.\n",
                100.0 * (kd->ppl_int8 / kd->ppl_fp32_steps - 1.0),
                100.0 * (kd->ppl_int4 / kd->ppl_fp32_steps - 1.0));
    }
    fprintf(f, "accessibility: %d of %d devices (%.0f%%) can train and run the student;",
            s->n_accessible, s->n_clients, 100.0 * s->accessibility);
    for (int c = 0; c < FKD_SIM_CLASS_COUNT; c++)
        fprintf(f, " %s %d/%d", fkd_sim_classes[c].key, s->class_both[c], s->class_count[c]);
    fprintf(f, "\nscale: %.1f KB resident per idle virtual client (+ %.1f KB of its text), "
               "aggregation %.0f updates/s; wall time %.1f s%s\n",
            s->idle_client_bytes / 1e3, s->client_data_bytes / 1e3, s->agg_updates_per_s,
            s->wall_seconds, s->teacher_cached && !s->teacher_from_file ? " (teacher from cache)" : "");
    fprintf(f, "client modes (least training memory; devices that could train and run):");
    for (int m = 0; m < FKD_SIM_CLIENT_MODE_COUNT; m++)
        fprintf(f, " %s %.0f MB %d/%d;", fkd_sim_client_mode_name(m),
                s->mode_min_train_bytes[m] / 1048576.0, s->mode_accessible[m], s->n_clients);
    fprintf(f, "\n");
    if (!s->teacher_from_file) return;
    fprintf(f, "teacher %s (%zu parameters, vocabulary %d); student %zu parameters (%.2f of the "
               "teacher's), vocabulary %d, from %s\n", res->cfg.teacher, s->teacher_params,
            s->teacher_vocab, s->student_params,
            (double)s->student_params / (double)(s->teacher_params ? s->teacher_params : 1),
            s->student_vocab, s->student_source);
    fprintf(f, "phases, wall (CPU): load %.1f s; pruning%s %.1f s (%.1f s); soft labels%s %.1f s "
               "(%.1f s; %.1f tokens/s over %llu positions)", s->load_seconds,
            s->student_cached ? " cached" : "", s->prune_seconds, s->prune_cpu_seconds,
            s->soft_cached ? " cached" : "",
            s->soft_seconds, s->soft_cpu_seconds, s->soft_tokens_per_s,
            (unsigned long long)s->public_transfer_tokens);
    for (int o = 0; o < FKD_SIM_METHOD_COUNT; o++) {
        const fkd_sim_method *m = &res->m[fkd_sim_display_order[o]];
        if (m->ran)
            fprintf(f, "; %s %.1f s (%.1f s), of which evaluation %.1f s", m->key,
                    m->wall_seconds + (m->n_rounds > 0 ? m->eval_seconds : 0), m->cpu_seconds,
                    m->eval_seconds);
    }
    fprintf(f, "; whole run %.1f s (%.1f s CPU)\n", s->wall_seconds, s->cpu_seconds);
}
