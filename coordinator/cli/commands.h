/* commands.h — the subcommands of the fedkd executable. Each lives in its
 * own cmd_*.c file, takes (argc, argv) with argv[0] = its name, and returns
 * the process exit code (0 ok, 1 failure, 2 usage error). */
#ifndef FKD_COMMANDS_H
#define FKD_COMMANDS_H

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} fkd_command;

int cmd_generate(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_teacher(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_simulate(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
int cmd_bench_wire(int argc, char **argv);
int cmd_bench_train(int argc, char **argv);
int cmd_bench_compress(int argc, char **argv);
int cmd_bench_quant(int argc, char **argv);
int cmd_bench_tokenizer(int argc, char **argv);
int cmd_bench_teacher(int argc, char **argv);
int cmd_bench_lora(int argc, char **argv);

/* Opens a model path: a GGUF file (weights dequantized, its tokenizer, a
 * context of max_seq) or a fedkd checkpoint (byte tokenizer). */
#include "fkd_train.h"
int fkd_cli_load_model(fkd_params *params, fkd_tokenizer *tok, const char *path, int max_seq,
                       fkd_error *err);

/* Runs the command named by argv[0] from the table, or prints the table. */
int fkd_dispatch(const fkd_command *table, int n, const char *program, int argc, char **argv);

#endif
