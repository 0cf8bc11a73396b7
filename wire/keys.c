/* keys.c — identities (Ed25519 + X25519 key pairs), their text files, and
 * allow-lists of public keys.
 *
 * Secret key file (PREFIX.key, mode 0600), lines in this order:
 *     fedkd-key-v1
 *     sign-public <40 Z85 chars>
 *     sign-secret <80 Z85 chars>
 *     curve-public <40 Z85 chars>
 *     curve-secret <40 Z85 chars>
 * Public key line (PREFIX.pub, and each line of an allow-list):
 *     fedkd-pub-v1 <sign-public Z85> <curve-public Z85> [label]
 * A secret file whose public halves do not follow from its secret halves is
 * refused: a hand-edited or corrupted file never yields a half-right key.
 * Every buffer that held secret text is wiped before it is freed. */
#include "fkd_wire.h"

#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#define SECRET_FILE_MAX 4096
#define ALLOWLIST_FILE_MAX (16u << 20)
#define PUB_TAG "fedkd-pub-v1"
#define KEY_TAG "fedkd-key-v1"

/* ---- Z85 ------------------------------------------------------------------ */
static int z85_char_ok(char c)
{
    static const char alphabet[] =
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
    return c && strchr(alphabet, c) != NULL;
}

/* Decodes exactly chars Z85 characters (a multiple of 5) into bytes. */
static int z85_decode(uint8_t *out, size_t bytes, const char *text, size_t chars)
{
    char tmp[96];
    if (chars != bytes * 5 / 4 || chars % 5 || chars >= sizeof tmp) return -1;
    for (size_t i = 0; i < chars; i++)
        if (!z85_char_ok(text[i])) return -1;
    memcpy(tmp, text, chars);
    tmp[chars] = 0;
    /* Z85 can express 5-char groups above 2^32; libzmq wraps them silently,
     * so a round trip decides whether the text was canonical. */
    int ok = zmq_z85_decode(out, tmp) != NULL;
    char back[96];
    ok = ok && zmq_z85_encode(back, out, bytes) && memcmp(back, tmp, chars) == 0;
    sodium_memzero(tmp, sizeof tmp);
    sodium_memzero(back, sizeof back);
    return ok ? 0 : -1;
}

static void z85_encode(char *out, const uint8_t *bytes, size_t n)
{
    zmq_z85_encode(out, bytes, n);
}

/* ---- identities ----------------------------------------------------------- */
/* X25519 ignores five bits of a secret key (it clamps them before use), so
 * an unclamped secret has equivalent spellings and an edit of those bits
 * would go unnoticed. Secrets are stored clamped, and only clamped secrets
 * are read back: one key, one spelling. */
static void curve_secret_clamp(uint8_t *sk)
{
    sk[0] &= 248;
    sk[31] &= 127;
    sk[31] |= 64;
}

static int curve_secret_is_clamped(const uint8_t *sk)
{
    return (sk[0] & 7) == 0 && (sk[31] & 192) == 64;
}

int fkd_wire_identity_generate(fkd_wire_identity *id, fkd_error *err)
{
    if (sodium_init() < 0)
        return fkd_error_set(err, FKD_E_UNSUPPORTED, "libsodium cannot initialise");
    if (crypto_sign_keypair(id->sign_pk, id->sign_sk) || crypto_box_keypair(id->curve_pk,
                                                                            id->curve_sk))
        return fkd_error_set(err, FKD_E_UNSUPPORTED, "key generation failed");
    curve_secret_clamp(id->curve_sk);
    return 0;
}

void fkd_wire_identity_wipe(fkd_wire_identity *id) { sodium_memzero(id, sizeof *id); }

void fkd_wire_identity_public(fkd_wire_pubkey *pub, const fkd_wire_identity *id,
                              const char *label)
{
    memset(pub, 0, sizeof *pub);
    memcpy(pub->sign_pk, id->sign_pk, FKD_WIRE_KEY_BYTES);
    memcpy(pub->curve_pk, id->curve_pk, FKD_WIRE_KEY_BYTES);
    if (label) snprintf(pub->label, sizeof pub->label, "%s", label);
}

/* The public halves must follow from the secret halves. */
static int identity_consistent(const fkd_wire_identity *id)
{
    uint8_t pk[FKD_WIRE_KEY_BYTES];
    if (crypto_sign_ed25519_sk_to_pk(pk, id->sign_sk) ||
        sodium_memcmp(pk, id->sign_pk, sizeof pk) != 0)
        return 0;
    uint8_t seed[crypto_sign_SEEDBYTES], spk[crypto_sign_PUBLICKEYBYTES];
    uint8_t ssk[crypto_sign_SECRETKEYBYTES];
    crypto_sign_ed25519_sk_to_seed(seed, id->sign_sk);
    crypto_sign_seed_keypair(spk, ssk, seed);
    int ok = sodium_memcmp(ssk, id->sign_sk, sizeof ssk) == 0;
    sodium_memzero(seed, sizeof seed);
    sodium_memzero(ssk, sizeof ssk);
    if (!ok || !curve_secret_is_clamped(id->curve_sk) ||
        crypto_scalarmult_base(pk, id->curve_sk) ||
        sodium_memcmp(pk, id->curve_pk, sizeof pk) != 0)
        return 0;
    return 1;
}

/* Splits text into the next line; returns its length, or -1 at the end. */
static long next_line(const char **cur, const char *end, const char **line)
{
    if (*cur >= end) return -1;
    const char *p = *cur, *nl = memchr(p, '\n', (size_t)(end - p));
    const char *stop = nl ? nl : end;
    *cur = nl ? nl + 1 : end;
    *line = p;
    size_t n = (size_t)(stop - p);
    if (n && p[n - 1] == '\r') n--;
    return (long)n;
}

/* Reads "<name> <Z85>" into out. */
static int read_key_line(uint8_t *out, size_t bytes, const char *line, long n, const char *name)
{
    size_t nl = strlen(name), chars = bytes * 5 / 4;
    if (n < 0 || (size_t)n != nl + 1 + chars) return -1;
    if (memcmp(line, name, nl) != 0 || line[nl] != ' ') return -1;
    return z85_decode(out, bytes, line + nl + 1, chars);
}

int fkd_wire_identity_parse(fkd_wire_identity *id, const char *text, size_t len, fkd_error *err)
{
    memset(id, 0, sizeof *id);
    const char *cur = text, *end = text + len, *line = NULL;
    long n = next_line(&cur, end, &line);
    if (n != (long)strlen(KEY_TAG) || memcmp(line, KEY_TAG, (size_t)n) != 0)
        return fkd_error_set(err, FKD_E_FORMAT, "not a fedkd secret key file (first line must "
                             "be '%s')", KEY_TAG);
    static const struct { const char *name; size_t off, bytes; } rows[] = {
        {"sign-public", offsetof(fkd_wire_identity, sign_pk), FKD_WIRE_KEY_BYTES},
        {"sign-secret", offsetof(fkd_wire_identity, sign_sk), FKD_WIRE_SIGN_SECRET_BYTES},
        {"curve-public", offsetof(fkd_wire_identity, curve_pk), FKD_WIRE_KEY_BYTES},
        {"curve-secret", offsetof(fkd_wire_identity, curve_sk), FKD_WIRE_KEY_BYTES},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        n = next_line(&cur, end, &line);
        if (read_key_line((uint8_t *)id + rows[i].off, rows[i].bytes, line, n, rows[i].name)) {
            fkd_wire_identity_wipe(id);
            return fkd_error_set(err, FKD_E_FORMAT, "key file line %zu must be '%s' and a "
                                 "Z85 key", i + 2, rows[i].name);
        }
    }
    while ((n = next_line(&cur, end, &line)) >= 0)
        if (n > 0) {
            fkd_wire_identity_wipe(id);
            return fkd_error_set(err, FKD_E_FORMAT, "key file has extra lines after "
                                 "curve-secret");
        }
    if (!identity_consistent(id)) {
        fkd_wire_identity_wipe(id);
        return fkd_error_set(err, FKD_E_FORMAT, "key file's public keys do not match its secret "
                             "keys (corrupted or edited file: run 'fedkd keygen' again)");
    }
    return 0;
}

int fkd_wire_identity_load(fkd_wire_identity *id, const char *path, fkd_error *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return fkd_error_set(err, FKD_E_IO, "cannot open key file %s: %s", path, strerror(errno));
    if (st.st_mode & (S_IRWXG | S_IRWXO))
        return fkd_error_set(err, FKD_E_AUTH, "key file %s is readable by others (mode %03o): "
                             "run 'chmod 600 %s'", path, (unsigned)(st.st_mode & 0777), path);
    uint8_t *text = NULL;
    size_t len = 0;
    if (fkd_file_read_all(&text, &len, path, SECRET_FILE_MAX, err)) return -1;
    int rc = fkd_wire_identity_parse(id, (const char *)text, len, err);
    sodium_memzero(text, len);
    free(text);
    return rc;
}

/* Writes text to path through an atomic file whose mode is 0600 before a
 * byte is written. */
static int write_file_mode(const char *path, const char *text, size_t len, mode_t mode,
                           fkd_error *err)
{
    fkd_atomic_file af;
    if (fkd_atomic_open(&af, path, err)) return -1;
    if (fchmod(fileno(af.f), mode) != 0) {
        fkd_atomic_abort(&af);
        return fkd_error_set(err, FKD_E_IO, "cannot set mode of %s: %s", path, strerror(errno));
    }
    if (fkd_atomic_write(&af, text, len, err)) {
        fkd_atomic_abort(&af);
        return -1;
    }
    return fkd_atomic_commit(&af, err);
}

int fkd_wire_identity_save(const char *prefix, const fkd_wire_identity *id, const char *label,
                           int force, fkd_error *err)
{
    char key_path[1024], pub_path[1024];
    if (snprintf(key_path, sizeof key_path, "%s.key", prefix) >= (int)sizeof key_path ||
        snprintf(pub_path, sizeof pub_path, "%s.pub", prefix) >= (int)sizeof pub_path)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "key path prefix is too long");
    if (!force && access(key_path, F_OK) == 0)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "%s exists; refusing to overwrite a key "
                             "(pass --force to replace it)", key_path);
    char sp[41], ss[81], cp[41], cs[41];
    z85_encode(sp, id->sign_pk, 32);
    z85_encode(ss, id->sign_sk, 64);
    z85_encode(cp, id->curve_pk, 32);
    z85_encode(cs, id->curve_sk, 32);
    char text[512];
    int n = snprintf(text, sizeof text, KEY_TAG "\nsign-public %s\nsign-secret %s\n"
                     "curve-public %s\ncurve-secret %s\n", sp, ss, cp, cs);
    int rc = write_file_mode(key_path, text, (size_t)n, 0600, err);
    sodium_memzero(ss, sizeof ss);
    sodium_memzero(cs, sizeof cs);
    sodium_memzero(text, sizeof text);
    if (rc) return -1;
    fkd_wire_pubkey pub;
    fkd_wire_identity_public(&pub, id, label);
    char line[256];
    if (fkd_wire_pubkey_format(line, sizeof line - 1, &pub, err)) return -1;
    strcat(line, "\n");
    return write_file_mode(pub_path, line, strlen(line), 0644, err);
}

/* ---- public keys and allow-lists ------------------------------------------- */
int fkd_wire_pubkey_format(char *out, size_t cap, const fkd_wire_pubkey *pub, fkd_error *err)
{
    char sp[41], cp[41];
    z85_encode(sp, pub->sign_pk, 32);
    z85_encode(cp, pub->curve_pk, 32);
    int n = snprintf(out, cap, PUB_TAG " %s %s%s%s", sp, cp, pub->label[0] ? " " : "",
                     pub->label);
    if (n < 0 || (size_t)n >= cap)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "public key line needs %d bytes", n + 1);
    return 0;
}

int fkd_wire_pubkey_parse(fkd_wire_pubkey *pub, const char *line, size_t len, fkd_error *err)
{
    memset(pub, 0, sizeof *pub);
    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
    size_t tag = strlen(PUB_TAG), k = FKD_WIRE_Z85_KEY_CHARS;
    size_t min = tag + 1 + k + 1 + k;
    if (len < min || memcmp(line, PUB_TAG, tag) != 0 || line[tag] != ' ' ||
        line[tag + 1 + k] != ' ')
        return fkd_error_set(err, FKD_E_FORMAT, "a public key line is '%s <sign Z85> "
                             "<curve Z85> [label]'", PUB_TAG);
    if (z85_decode(pub->sign_pk, 32, line + tag + 1, k) ||
        z85_decode(pub->curve_pk, 32, line + tag + 2 + k, k))
        return fkd_error_set(err, FKD_E_FORMAT, "public key line holds a key that is not "
                             "40 valid Z85 characters");
    if (len == min) return 0;
    if (line[min] != ' ')
        return fkd_error_set(err, FKD_E_FORMAT, "public key line: a space must follow the keys");
    size_t lab = len - min - 1;
    if (lab > FKD_WIRE_NAME_MAX)
        return fkd_error_set(err, FKD_E_LIMIT, "public key label is %zu bytes (max %d)", lab,
                             FKD_WIRE_NAME_MAX);
    if (memchr(line + min + 1, 0, lab))
        return fkd_error_set(err, FKD_E_FORMAT, "public key label contains a NUL byte");
    memcpy(pub->label, line + min + 1, lab);
    pub->label[lab] = 0;
    return 0;
}

int fkd_wire_pubkey_load(fkd_wire_pubkey *pub, const char *path, fkd_error *err)
{
    uint8_t *text = NULL;
    size_t len = 0;
    if (fkd_file_read_all(&text, &len, path, 1024, err)) return -1;
    fkd_error e;
    int rc = fkd_wire_pubkey_parse(pub, (const char *)text, len, &e);
    free(text);
    if (rc) return fkd_error_set(err, e.code, "%s: %s", path, e.msg);
    return 0;
}

static int blank_or_comment(const char *line, size_t n)
{
    if (n && line[0] == '#') return 1;
    for (size_t i = 0; i < n; i++)
        if (line[i] != ' ' && line[i] != '\t') return 0;
    return 1;
}

int fkd_wire_allowlist_parse(fkd_wire_allowlist *al, const char *text, size_t len,
                             fkd_error *err)
{
    memset(al, 0, sizeof *al);
    size_t cap = 0, lineno = 0;
    const char *cur = text, *end = text + len, *line = NULL;
    long n;
    while ((n = next_line(&cur, end, &line)) >= 0) {
        lineno++;
        if (blank_or_comment(line, (size_t)n)) continue;
        if (al->n == cap) {
            cap = cap ? cap * 2 : 16;
            fkd_wire_pubkey *k = realloc(al->keys, cap * sizeof *k);
            if (!k) {
                fkd_wire_allowlist_free(al);
                return fkd_error_set(err, FKD_E_NOMEM, "allow-list: out of memory");
            }
            al->keys = k;
        }
        fkd_error e;
        if (fkd_wire_pubkey_parse(&al->keys[al->n], line, (size_t)n, &e)) {
            fkd_wire_allowlist_free(al);
            return fkd_error_set(err, e.code, "allow-list line %zu: %s", lineno, e.msg);
        }
        al->n++;
    }
    return 0;
}

int fkd_wire_allowlist_load(fkd_wire_allowlist *al, const char *path, fkd_error *err)
{
    memset(al, 0, sizeof *al);
    uint8_t *text = NULL;
    size_t len = 0;
    if (fkd_file_read_all(&text, &len, path, ALLOWLIST_FILE_MAX, err)) return -1;
    fkd_error e;
    int rc = fkd_wire_allowlist_parse(al, (const char *)text, len, &e);
    free(text);
    if (rc) return fkd_error_set(err, e.code, "%s: %s", path, e.msg);
    return 0;
}

const fkd_wire_pubkey *fkd_wire_allowlist_find(const fkd_wire_allowlist *al,
                                               const uint8_t curve_pk[FKD_WIRE_KEY_BYTES])
{
    for (size_t i = 0; i < al->n; i++)
        if (sodium_memcmp(al->keys[i].curve_pk, curve_pk, FKD_WIRE_KEY_BYTES) == 0)
            return &al->keys[i];
    return NULL;
}

void fkd_wire_allowlist_free(fkd_wire_allowlist *al)
{
    free(al->keys);
    al->keys = NULL;
    al->n = 0;
}
