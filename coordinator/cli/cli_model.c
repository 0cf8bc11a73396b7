/* cli_model.c — how every command that takes a model path opens it: a GGUF
 * file (a pretrained LLM such as SmolLM2, with its own BPE tokenizer) or a
 * fedkd checkpoint (byte-level). */
#include "commands.h"
#include "fkd_compress.h"

int fkd_cli_load_model(fkd_params *params, fkd_tokenizer *tok, const char *path, int max_seq,
                       fkd_error *err)
{
    if (fkd_gguf_is_gguf(path)) return fkd_gguf_load_model(params, tok, path, max_seq, err);
    fkd_tokenizer_init_bytes(tok);
    return fkd_checkpoint_load(params, path, err);
}
