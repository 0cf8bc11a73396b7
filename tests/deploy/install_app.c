/* install_app.c — a program outside the fedkd tree, built by test_install.sh
 * against an installed fedkd with nothing but `pkg-config fedkd`. It touches
 * each installed library through its public header (and so each dependency
 * the .pc must bring: libsodium through wire, BLIS and OpenMP through train)
 * and prints what it got, for the script to compare. */
#include <stdio.h>
#include <string.h>

#include <fkd_common.h>
#include <fkd_compress.h>
#include <fkd_train.h>
#include <fkd_wire.h>
#ifdef FKD_INSTALL_HAVE_CLIENT
#include <fkd_client.h>
#endif

int main(void)
{
    /* common: the error sentences */
    printf("strerror=%s\n", fkd_strerror(FKD_E_AUTH));

    /* train: the byte tokenizer round trip, and a BLIS matmul (2x2 · I) */
    fkd_tokenizer tok;
    fkd_tokenizer_init_bytes(&tok);
    const char *text = "edge";
    int32_t ids[8];
    uint8_t back[8];
    size_t n_ids = 0, n_back = 0;
    fkd_error err;
    if (fkd_tokenizer_encode(ids, 8, &n_ids, &tok, (const uint8_t *)text, strlen(text), &err) ||
        fkd_tokenizer_decode(back, 8, &n_back, &tok, ids, n_ids, &err)) {
        fprintf(stderr, "tokenizer: %s\n", err.msg);
        return 1;
    }
    printf("tokens=%zu text=%.*s\n", n_ids, (int)n_back, (const char *)back);
    fkd_tokenizer_free(&tok);
    const float x[4] = {1, 2, 3, 4}, eye[4] = {1, 0, 0, 1};
    float out[4] = {0};
    fkd_matmul_forward(out, x, eye, 2, 2, 2, 0.0f);
    printf("matmul=%g,%g,%g,%g\n", out[0], out[1], out[2], out[3]);

    /* compress: one Q8_0 block round trip */
    float row[32], row_back[32];
    for (int i = 0; i < 32; i++) row[i] = (float)(i - 16) / 16.0f;
    uint8_t blocks[64];
    if (fkd_qtype_row_bytes(FKD_QTYPE_Q8_0, 32) > sizeof blocks ||
        fkd_quantize_row(blocks, FKD_QTYPE_Q8_0, row, 32) != 0 ||
        fkd_dequantize_row(row_back, FKD_QTYPE_Q8_0, blocks, 32) != 0)
        return 1;
    printf("q8_0=%s last=%.2f\n", fkd_qtype_name(FKD_QTYPE_Q8_0), row_back[31]);

    /* wire: a fresh identity (libsodium) and its public-key line */
    fkd_wire_identity id;
    fkd_wire_pubkey pub;
    char line[256];
    if (fkd_wire_identity_generate(&id, &err) != 0) {
        fprintf(stderr, "identity: %s\n", err.msg);
        return 1;
    }
    fkd_wire_identity_public(&pub, &id, "app");
    fkd_wire_identity_wipe(&id);
    if (fkd_wire_pubkey_format(line, sizeof line, &pub, &err) != 0) return 1;
    printf("pubkey_prefix=%.12s\n", line);

#ifdef FKD_INSTALL_HAVE_CLIENT
    /* client: the agent's defaults */
    fkd_client_config cfg = fkd_client_config_defaults();
    printf("client_state=%s auto_train=%d\n", fkd_client_state_name(FKD_CLIENT_IDLE),
           cfg.auto_train);
#endif
    return 0;
}
