/* cmd_simulate.c — `fedkd simulate`: the coordinator and N virtual clients
 * in one process over inproc://, devices drawn from a table of real device
 * classes, and the comparison of federated distillation with the teacher,
 * public-only distillation, FedAvg and central training (fkd_sim.h). With
 * no arguments it runs the default job on the default corpus; with
 * --teacher FILE it heals a student of a pretrained LLM (a GGUF file) with
 * settings sized for it. */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "fkd_sim.h"

/* The value of --teacher, looked up before parsing: a file teacher brings
 * its own defaults, which --help should show. */
static const char *teacher_arg(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--teacher") == 0 && i + 1 < argc) return argv[i + 1];
        if (strncmp(argv[i], "--teacher=", 10) == 0) return argv[i] + 10;
    }
    return NULL;
}

int cmd_simulate(int argc, char **argv)
{
    fkd_sim_config cfg, dflt; /* string options point into dflt, are copied into cfg */
    fkd_sim_config_defaults(&cfg);
    if (teacher_arg(argc, argv)) fkd_sim_config_file_defaults(&cfg);
    dflt = cfg;
    const char *data = dflt.data, *pub = NULL, *out = dflt.out, *cache = dflt.cache;
    const char *words = dflt.words, *format = fkd_update_value_name(cfg.up_format), *partition = "dirichlet";
    const char *teacher = "", *student = "", *mode = fkd_sim_client_mode_name(cfg.client_mode);
    int64_t seed = (int64_t)cfg.seed, transfer = cfg.transfer_tokens;
    int64_t quant_tokens = cfg.quant_eval_tokens;
    int64_t student_params = cfg.student_params;
    int64_t eval_final = cfg.eval_tokens_final, eval_round = cfg.eval_tokens_round;
    float deadline = (float)cfg.deadline_s;
    int dense = 0, quiet = 0;
    const char *methods = "all", *schedule = cfg.lr_schedule == FKD_LR_COSINE ? "cosine" : "constant";
    const fkd_opt opts[] = {
        {"data", FKD_OPT_STR, &data, "private corpus: a folder, one file or sub-folder per natural client"},
        {"public", FKD_OPT_STR, &pub, "public corpus for the teacher and transfer set (default: the public categories of --data)"},
        {"out", FKD_OPT_STR, &out, "run directory: summary.json, rounds.jsonl/.csv, students, report.html"},
        {"cache", FKD_OPT_STR, &cache, "teacher and soft-label cache"},
        {"words", FKD_OPT_STR, &words, "word list for the hallucination rate (\"\" = none)"},
        {"teacher", FKD_OPT_STR, &teacher, "pretrained teacher: GGUF (its tokenizer encodes every stream) or checkpoint; \"\" = train the byte-level teacher"},
        {"student", FKD_OPT_STR, &student, "with --teacher: the student to heal (GGUF, e.g. from fedkd prune, or checkpoint; \"\" = pruned from the teacher and cached)"},
        {"student-layers", FKD_OPT_INT, &cfg.student_layers, "with --teacher and no --student: blocks the pruned student keeps (its least with a budget; 0 = 2/3 of the teacher's)"},
        {"student-params", FKD_OPT_I64, &student_params, "with --teacher and no --student: a parameter budget for the pruned shape (-1 = a third of the teacher's; 0 = none: the teacher's width)"},
        {"context", FKD_OPT_INT, &cfg.context, "with --teacher: context the teacher and student run at"},
        {"client-mode", FKD_OPT_STR, &mode, "how clients train: full | lora | qlora8 | qlora4 (adapters over a frozen base, int8/int4 in QLoRA)"},
        {"lora-rank", FKD_OPT_INT, &cfg.lora_rank, "adapter rank of the LoRA client modes"},
        {"lora-alpha", FKD_OPT_FLOAT, &cfg.lora_alpha, "adapter scale numerator (alpha / rank) of the LoRA client modes"},
        {"seed", FKD_OPT_I64, &seed, "seed of everything (devices, data, weights, selection)"},
        {"threads", FKD_OPT_INT, &cfg.threads, "worker pool size (cores)"},
        {"clients", FKD_OPT_INT, &cfg.clients, "0: natural partitions; N: Dirichlet split into N clients"},
        {"partition", FKD_OPT_STR, &partition, "with --clients N: dirichlet (skewed by category) | iid"},
        {"dirichlet-alpha", FKD_OPT_FLOAT, &cfg.dirichlet_alpha, "skew of the Dirichlet split (small = skewed)"},
        {"rounds", FKD_OPT_INT, &cfg.rounds, "federated rounds"},
        {"server-steps", FKD_OPT_INT, &cfg.server_steps, "server's steps on the public data before the federation (-1: as many as the clients take in all rounds)"},
        {"server-round-steps", FKD_OPT_INT, &cfg.server_round_steps, "server's steps on the public transfer set after each round's aggregation, as many for central (-1: as many as public-only distillation takes per round; 0: off)"},
        {"per-round", FKD_OPT_INT, &cfg.per_round, "updates a round waits for"},
        {"over-select", FKD_OPT_FLOAT, &cfg.over_select, "extra share of clients selected per round"},
        {"deadline", FKD_OPT_FLOAT, &deadline, "simulated round deadline, seconds"},
        {"local-steps", FKD_OPT_INT, &cfg.local_steps, "optimizer steps per client per round"},
        {"batch", FKD_OPT_INT, &cfg.batch, "sequences per step"},
        {"seq", FKD_OPT_INT, &cfg.seq, "tokens per sequence"},
        {"lr", FKD_OPT_FLOAT, &cfg.lr, "learning rate (AdamW)"},
        {"lr-schedule", FKD_OPT_STR, &schedule, "learning rate over the rounds, every method: constant | cosine (from lr down to --min-lr-ratio x lr)"},
        {"min-lr-ratio", FKD_OPT_FLOAT, &cfg.min_lr_ratio, "cosine's floor, as a share of lr"},
        {"alpha", FKD_OPT_FLOAT, &cfg.alpha, "weight of distillation where a soft label exists"},
        {"transfer-share", FKD_OPT_FLOAT, &cfg.transfer_share, "share of micro-batches from the transfer set (KD methods)"},
        {"up-fraction", FKD_OPT_FLOAT, &cfg.up_fraction, "top-k share of the uplink update"},
        {"up-format", FKD_OPT_STR, &format, "uplink values: f32 | int8 | int4 | ternary | sign"},
        {"dense-reference", FKD_OPT_FLAG, &dense, "also run fedkd with a dense fp32 uplink: the reference for the compression cost"},
        {"methods", FKD_OPT_STR, &methods, "methods to run, comma-separated: teacher,public-kd,fedavg,fedkd,central,fedkd-dense (or all: every one but fedkd-dense, which --dense-reference adds)"},
        {"server-lr", FKD_OPT_FLOAT, &cfg.server_lr, "the federated servers' step on the clients' mean update (1: FedAvg)"},
        {"teacher-steps", FKD_OPT_INT, &cfg.teacher_steps, "teacher training steps (cached by settings)"},
        {"soft-k", FKD_OPT_INT, &cfg.soft_k, "soft-label ids per position"},
        {"soft-temperature", FKD_OPT_FLOAT, &cfg.soft_temperature, "temperature of the soft labels and of the distillation loss (cached by it)"},
        {"soft-shards", FKD_OPT_INT, &cfg.soft_shards, "soft-label shards (round r uses shard r mod n)"},
        {"transfer-tokens", FKD_OPT_I64, &transfer, "transfer-set positions labelled by the teacher"},
        {"eval-tokens", FKD_OPT_I64, &eval_final, "test tokens of the final evaluation"},
        {"eval-tokens-round", FKD_OPT_I64, &eval_round, "test tokens evaluated after each round"},
        {"halluc-prompts", FKD_OPT_INT, &cfg.halluc_prompts, "held-out openings sampled for the hallucination rate"},
        {"quant-eval-tokens", FKD_OPT_I64, &quant_tokens, "test tokens of the int8 / int4 perplexity (on the blocks, 8-bit activations, as a device runs them)"},
        {"client-eval-max", FKD_OPT_INT, &cfg.client_eval_max, "clients in the per-client accuracy distribution"},
        {"quiet", FKD_OPT_FLAG, &quiet, "no progress line"},
        {"verbose", FKD_OPT_FLAG, &cfg.verbose, "coordinator and agent logs on stderr"},
        {"keep-work", FKD_OPT_FLAG, &cfg.keep_work, "keep the run's working checkpoints and states under OUT/work (by default a finished run keeps only the coordinators' round logs there)"},
    };
    int rc = fkd_cli_parse(argc, argv, opts, (int)(sizeof opts / sizeof opts[0]),
                           "usage: fedkd simulate [options]\n"
                           "Runs a coordinator and many virtual clients in one process and "
                           "compares fedkd with\nthe teacher, public-only distillation, FedAvg "
                           "and central training (docs/simulation.md).",
                           NULL, 0, NULL);
    if (rc != 0) return rc > 0 ? 0 : 2;
    cfg.up_format = fkd_update_value_parse(format);
    if (cfg.up_format < 0) {
        fprintf(stderr, "fedkd simulate: --up-format is f32, int8, int4, ternary or sign, not %s\n",
                format);
        return 2;
    }
    if (strcmp(schedule, "constant") != 0 && strcmp(schedule, "cosine") != 0) {
        fprintf(stderr, "fedkd simulate: --lr-schedule is constant or cosine, not %s\n", schedule);
        return 2;
    }
    cfg.lr_schedule = strcmp(schedule, "cosine") == 0 ? FKD_LR_COSINE : FKD_LR_CONSTANT;
    cfg.client_mode = fkd_sim_client_mode_parse(mode);
    if (cfg.client_mode < 0) {
        fprintf(stderr, "fedkd simulate: --client-mode is full, lora, qlora8 or qlora4, not %s\n",
                mode);
        return 2;
    }
    const char *paths[] = {data, pub ? pub : data, out, cache, words, teacher, student};
    for (int i = 0; i < 7; i++)
        if (strlen(paths[i]) >= FKD_SIM_PATH_MAX) {
            fprintf(stderr, "fedkd simulate: path longer than %d bytes: %s\n",
                    FKD_SIM_PATH_MAX - 1, paths[i]);
            return 2;
        }
    cfg.partition = fkd_partition_parse_kind(partition);
    if (cfg.partition != FKD_PARTITION_DIRICHLET && cfg.partition != FKD_PARTITION_IID) {
        fprintf(stderr, "fedkd simulate: --partition is dirichlet or iid, not %s\n", partition);
        return 2;
    }
    snprintf(cfg.data, sizeof cfg.data, "%s", data);
    snprintf(cfg.public_dir, sizeof cfg.public_dir, "%s", pub ? pub : data);
    snprintf(cfg.out, sizeof cfg.out, "%s", out);
    snprintf(cfg.cache, sizeof cfg.cache, "%s", cache);
    snprintf(cfg.words, sizeof cfg.words, "%s", words);
    snprintf(cfg.teacher, sizeof cfg.teacher, "%s", teacher);
    snprintf(cfg.student, sizeof cfg.student, "%s", student);
    cfg.quant_eval_tokens = quant_tokens;
    cfg.student_params = student_params;
    cfg.seed = (uint64_t)seed;
    cfg.transfer_tokens = transfer;
    cfg.eval_tokens_final = eval_final;
    cfg.eval_tokens_round = eval_round;
    cfg.deadline_s = deadline;
    cfg.dense_reference = dense;
    cfg.progress = !quiet;
    fkd_error err = {0};
    if (fkd_sim_methods_parse(&cfg.methods, methods, &err) != 0) {
        fprintf(stderr, "fedkd simulate: %s\n", err.msg);
        return 2;
    }
    if (fkd_sim_config_validate(&cfg, &err) != 0) {
        fprintf(stderr, "fedkd simulate: %s\n", err.msg);
        return 2;
    }
    fkd_sim_result res;
    rc = fkd_sim_run(&res, &cfg, &err);
    if (rc == 0) {
        fkd_sim_print_table(stdout, &res);
        printf("outputs: %s/{summary.json,rounds.jsonl,rounds.csv,report.html,"
               "student-fp32.ckpt,student-int8.qmdl,student-int4.qmdl,student-f32.gguf,"
               "student-q4_1.gguf}\n", cfg.out);
    } else {
        fprintf(stderr, "fedkd simulate: %s\n", err.msg);
    }
    fkd_sim_result_free(&res);
    return rc == 0 ? 0 : 1;
}
