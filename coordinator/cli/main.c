/* main.c — the fedkd executable: server side and tools, one subcommand each. */
#include <stdio.h>
#include <string.h>

#include "commands.h"

static const fkd_command commands[] = {
    {"generate", cmd_generate, "sample text from a model"},
    {"eval", cmd_eval, "perplexity, bits per byte and accuracy of a model on text"},
    {"teacher", cmd_teacher, "train the teacher on the public corpus; write its soft labels"},
    {"keygen", cmd_keygen, "write a key pair: PREFIX.key (secret, 0600) and PREFIX.pub"},
    {"serve", cmd_serve, "run the coordinator: federated rounds over the network"},
    {"simulate", cmd_simulate, "coordinator + many virtual clients in one process; compare methods"},
    {"prune", cmd_prune, "cut a compact student out of a GGUF teacher (depth, width, vocabulary)"},
    {"export", cmd_export, "write a student as a quantized llama GGUF file (what fedkd and llama.cpp run)"},
    {"bench", cmd_bench, "benchmarks against their peers (train, ...)"},
};

int fkd_dispatch(const fkd_command *table, int n, const char *program, int argc, char **argv)
{
    if (argc >= 1 && strcmp(argv[0], "--version") == 0) {
        printf("fedkd 0.1.0\n");
        return 0;
    }
    if (argc >= 1 && strcmp(argv[0], "--help") != 0 && strcmp(argv[0], "-h") != 0 &&
        strcmp(argv[0], "help") != 0) {
        for (int i = 0; i < n; i++)
            if (strcmp(argv[0], table[i].name) == 0) return table[i].run(argc, argv);
        fprintf(stderr, "%s: unknown command '%s' (see '%s --help')\n", program, argv[0], program);
        return 2;
    }
    FILE *out = argc >= 1 ? stdout : stderr;
    fprintf(out, "usage: %s COMMAND [options]   ('%s COMMAND --help' for its options)\n\n"
                 "Commands:\n", program, program);
    for (int i = 0; i < n; i++) fprintf(out, "  %-12s %s\n", table[i].name, table[i].summary);
    return argc >= 1 ? 0 : 2;
}

int main(int argc, char **argv)
{
    return fkd_dispatch(commands, (int)(sizeof commands / sizeof commands[0]), "fedkd", argc - 1,
                        argv + 1);
}
