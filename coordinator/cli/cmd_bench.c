/* cmd_bench.c — `fedkd bench WHAT`: each benchmark prints its figure and its
 * peer's figure from the same run. */
#include "commands.h"

static const fkd_command benches[] = {
    {"wire", cmd_bench_wire, "seal+encode+decode+open of a student-S update vs memcpy (MB/s)"},
    {"train", cmd_bench_train, "training step of student-S vs PyTorch (tokens/s, memory)"},
    {"compress", cmd_bench_compress, "a real client update under each compression setting (bytes, ratio, error)"},
    {"quant", cmd_bench_quant, "the quantized student per format (bytes, perplexity vs fp32, tokens/s at 1 thread)"},
    {"tokenizer", cmd_bench_tokenizer, "BPE encoding of a GGUF model's tokenizer on one core vs HF tokenizers (MB/s)"},
    {"lora", cmd_bench_lora, "the student trained in each client mode: full, LoRA, QLoRA int8/int4 (peak RSS, tokens/s)"},
    {"teacher", cmd_bench_teacher, "a GGUF teacher's prompt processing and generation vs llama.cpp (tokens/s, memory)"},
};

int cmd_bench(int argc, char **argv)
{
    return fkd_dispatch(benches, (int)(sizeof benches / sizeof benches[0]), "fedkd bench",
                        argc - 1, argv + 1);
}
