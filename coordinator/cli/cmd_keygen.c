/* cmd_keygen.c — `fedkd keygen --out PREFIX`: a new fedkd identity (an
 * Ed25519 signing key pair and an X25519 transport key pair), written as
 * PREFIX.key (secret, mode 0600) and PREFIX.pub (one line, to append to the
 * coordinator's allow-list). Formats: docs/protocol.md §Keys. The secret
 * never reaches the terminal; only the public line is printed. */
#include <stdio.h>

#include "commands.h"
#include "fkd_wire.h"

int cmd_keygen(int argc, char **argv)
{
    const char *out = NULL, *label = "";
    int force = 0;
    const fkd_opt opts[] = {
        {"out", FKD_OPT_STR, &out, "write PREFIX.key (secret, 0600) and PREFIX.pub"},
        {"label", FKD_OPT_STR, &label, "free-text name stored in the .pub line (max 64 bytes)"},
        {"force", FKD_OPT_FLAG, &force, "replace an existing PREFIX.key"},
    };
    int rc = fkd_cli_parse(argc, argv, opts, 3, "usage: fedkd keygen --out PREFIX [--label TEXT]",
                           NULL, 0, NULL);
    if (rc) return rc > 0 ? 0 : 2;
    if (!out) {
        fprintf(stderr, "fedkd keygen: --out PREFIX is required (see --help)\n");
        return 2;
    }
    fkd_error err = {0};
    fkd_wire_identity id;
    if (fkd_wire_identity_generate(&id, &err) ||
        fkd_wire_identity_save(out, &id, label, force, &err)) {
        fkd_wire_identity_wipe(&id);
        fprintf(stderr, "fedkd keygen: %s\n", err.msg);
        return 1;
    }
    fkd_wire_pubkey pub;
    fkd_wire_identity_public(&pub, &id, label);
    fkd_wire_identity_wipe(&id);
    char line[256];
    if (fkd_wire_pubkey_format(line, sizeof line, &pub, &err)) {
        fprintf(stderr, "fedkd keygen: %s\n", err.msg);
        return 1;
    }
    printf("wrote %s.key (secret, mode 0600) and %s.pub\n%s\n", out, out, line);
    return 0;
}
