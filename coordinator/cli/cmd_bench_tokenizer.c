/* cmd_bench_tokenizer.c — `fedkd bench tokenizer`: encoding speed of the
 * byte-level BPE of a GGUF model on one core, with its peer, Hugging Face's
 * `tokenizers` (Rust) on the same vocabulary and text, run in the same
 * benchmark (tests/reference/bench_tokenizer_hf.py, one thread). Both encode
 * the text one document at a time (documents are separated by "\n%\n", as in
 * the fortune files), and both print a CRC-32 of their ids, so the run also
 * shows that the ids are the same. MB = 10^6 bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "fkd_compress.h"

#define MIN_BENCH_MS 1000.0   /* repeat until a run took this long, keep the best */
#define MIN_BENCH_RUNS 3
static const char doc_separator[] = "\n%\n";

typedef struct {
    double mb_per_s, tokens_per_s;
    size_t tokens;
    uint32_t ids_crc;
    int ok;
} tok_result;

/* One pass over the documents; the ids of each document go into ids. */
static int encode_docs(size_t *tokens, uint32_t *crc, const fkd_tokenizer *tok,
                       const uint8_t *text, size_t bytes, int32_t *ids, fkd_error *err)
{
    size_t start = 0, sep = sizeof doc_separator - 1;
    *tokens = 0;
    *crc = 0;
    for (size_t i = 0; i <= bytes; i++) {
        int at_sep = i + sep <= bytes && memcmp(text + i, doc_separator, sep) == 0;
        if (i < bytes && !at_sep) continue;
        size_t n;
        if (fkd_tokenizer_encode(ids, bytes, &n, tok, text + start, i - start, err) != 0)
            return -1;
        *crc = fkd_crc32(*crc, ids, n * sizeof *ids);
        *tokens += n;
        start = i + sep;
        i += sep - 1;
    }
    return 0;
}

static int bench_fedkd(tok_result *r, const fkd_tokenizer *tok, const uint8_t *text, size_t bytes,
                       fkd_error *err)
{
    int32_t *ids = malloc((bytes + 1) * sizeof *ids);
    if (!ids) return fkd_error_set(err, FKD_E_NOMEM, "out of memory for %zu ids", bytes);
    double best = 1e300, total = 0;
    for (int run = 0; run < MIN_BENCH_RUNS || total < MIN_BENCH_MS; run++) {
        double t0 = fkd_time_ms();
        if (encode_docs(&r->tokens, &r->ids_crc, tok, text, bytes, ids, err) != 0) {
            free(ids);
            return -1;
        }
        double ms = fkd_time_ms() - t0;
        total += ms;
        if (ms < best) best = ms;
    }
    free(ids);
    r->mb_per_s = (double)bytes / best / 1e3;
    r->tokens_per_s = (double)r->tokens / best * 1e3;
    r->ok = 1;
    return 0;
}

static void run_peer(tok_result *r, const char *python, const char *script, const char *model,
                     const char *text)
{
    memset(r, 0, sizeof *r);
    if (access(script, R_OK) != 0) return;
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false %s %s %s %s "
             "2>/dev/null", python, script, model, text);
    FILE *p = popen(cmd, "r");
    if (!p) return;
    char line[1024];
    while (fgets(line, sizeof line, p)) {
        const char *mb = strstr(line, "mb_per_s="), *tps = strstr(line, "tokens_per_s="),
                   *n = strstr(line, "tokens="), *crc = strstr(line, "ids_crc32=");
        if (!mb || !tps || !n || !crc) continue;
        r->mb_per_s = atof(mb + 9);
        r->tokens_per_s = atof(tps + 13);
        r->tokens = (size_t)strtoull(n + 7, NULL, 10);
        r->ids_crc = (uint32_t)strtoul(crc + 10, NULL, 16);
        r->ok = 1;
    }
    pclose(p);
}

int cmd_bench_tokenizer(int argc, char **argv)
{
    const char *model = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    const char *text_path = "/usr/share/games/fortunes/fortunes";
    const char *python = "/usr/bin/python3", *script = "tests/reference/bench_tokenizer_hf.py";
    int no_peer = 0;
    fkd_opt opts[] = {
        {"teacher", FKD_OPT_STR, &model, "GGUF model whose tokenizer is timed"},
        {"text", FKD_OPT_STR, &text_path, "text to encode (documents separated by \"\\n%\\n\")"},
        {"peer-python", FKD_OPT_STR, &python, "Python with `tokenizers` and `gguf` installed"},
        {"peer-script", FKD_OPT_STR, &script, "path of tests/reference/bench_tokenizer_hf.py"},
        {"no-peer", FKD_OPT_FLAG, &no_peer, "do not run the Hugging Face peer"},
    };
    int rc = fkd_cli_parse(argc, argv, opts, (int)(sizeof opts / sizeof opts[0]),
                           "usage: fedkd bench tokenizer [--teacher FILE.gguf] [--text FILE]\n"
                           "Times BPE encoding on one core, with Hugging Face tokenizers as the "
                           "peer;\nprints one key=value line.", NULL, 0, NULL);
    if (rc != 0) return rc > 0 ? 0 : 2;
    fkd_train_set_threads(1);
    fkd_error err;
    fkd_params params;
    fkd_tokenizer tok;
    uint8_t *text;
    size_t bytes;
    tok_result mine = {0}, peer = {0};
    if (fkd_gguf_load_model(&params, &tok, model, 1, &err) != 0 ||
        fkd_file_read_all(&text, &bytes, text_path, (size_t)1 << 30, &err) != 0) {
        fprintf(stderr, "fedkd bench tokenizer: %s\n", err.msg);
        return 1;
    }
    fkd_params_free(&params);
    rc = bench_fedkd(&mine, &tok, text, bytes, &err);
    if (rc == 0 && !no_peer) {
        if (access(script, R_OK) != 0)
            fprintf(stderr, "note: peer script %s not found (pass --peer-script PATH)\n", script);
        run_peer(&peer, python, script, model, text_path);
    }
    if (rc == 0) {
        printf("bench=tokenizer threads=1 bytes=%zu tokens=%zu mb_per_s=%.2f tokens_per_s=%.0f",
               bytes, mine.tokens, mine.mb_per_s, mine.tokens_per_s);
        if (!no_peer && peer.ok)
            printf(" peer=hf_tokenizers peer_mb_per_s=%.2f peer_tokens_per_s=%.0f "
                   "speed_ratio=%.2f same_ids=%d", peer.mb_per_s, peer.tokens_per_s,
                   mine.mb_per_s / peer.mb_per_s,
                   peer.tokens == mine.tokens && peer.ids_crc == mine.ids_crc);
        else if (!no_peer)
            printf(" peer=unavailable");
        printf("\n");
    } else {
        fprintf(stderr, "fedkd bench tokenizer: %s\n", err.msg);
    }
    free(text);
    fkd_tokenizer_free(&tok);
    return rc == 0 ? 0 : 1;
}
