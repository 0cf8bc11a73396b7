/* fuzz_wire_keyfile.c — the key-file, public-key-line and allow-list parsers
 * on arbitrary text. A secret key file that parses must be self-consistent
 * (its public keys follow from its secret keys). */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "fkd_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size ? size : 1);
    memcpy(text, data, size);
    fkd_wire_identity id;
    if (fkd_wire_identity_parse(&id, text, size, NULL) == 0) {
        uint8_t pk[32];
        crypto_scalarmult_base(pk, id.curve_sk);
        if (memcmp(pk, id.curve_pk, 32) != 0) abort();
    }
    fkd_wire_identity_wipe(&id);
    fkd_wire_pubkey pub;
    if (fkd_wire_pubkey_parse(&pub, text, size, NULL) == 0) {
        char line[256];
        if (fkd_wire_pubkey_format(line, sizeof line, &pub, NULL)) abort();
    }
    fkd_wire_allowlist al;
    if (fkd_wire_allowlist_parse(&al, text, size, NULL) == 0) fkd_wire_allowlist_free(&al);
    free(text);
    return 0;
}
