/* file.c — atomic writes (write, fsync, rename, fsync the directory) and
 * bounded whole-file reads. */
#define _GNU_SOURCE
#include "fkd_common.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fkd_atomic_open(fkd_atomic_file *af, const char *path, fkd_error *err)
{
    memset(af, 0, sizeof *af);
    if (strlen(path) >= sizeof af->path)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "path too long: %s", path);
    snprintf(af->path, sizeof af->path, "%s", path);
    snprintf(af->tmp_path, sizeof af->tmp_path, "%s.tmp.%ld", path, (long)getpid());
    af->f = fopen(af->tmp_path, "wb");
    if (!af->f)
        return fkd_error_set(err, FKD_E_IO, "cannot create %s: %s (is the directory writable?)",
                             af->tmp_path, strerror(errno));
    return 0;
}

int fkd_atomic_write(fkd_atomic_file *af, const void *data, size_t bytes, fkd_error *err)
{
    if (af->failed) return fkd_error_set(err, FKD_E_IO, "earlier write to %s failed", af->path);
    if (bytes && fwrite(data, 1, bytes, af->f) != bytes) {
        af->failed = 1;
        return fkd_error_set(err, FKD_E_IO, "cannot write %s: %s (disk full?)", af->tmp_path,
                             strerror(errno));
    }
    return 0;
}

static void fsync_parent_dir(const char *path)
{
    char copy[1024];
    snprintf(copy, sizeof copy, "%s", path);
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
    if (fd < 0) return;
    fsync(fd);
    close(fd);
}

int fkd_atomic_commit(fkd_atomic_file *af, fkd_error *err)
{
    if (!af->f) return fkd_error_set(err, FKD_E_INVALID_ARG, "atomic file is not open");
    int ok = !af->failed && fflush(af->f) == 0 && fsync(fileno(af->f)) == 0;
    int saved_errno = errno;
    ok = (fclose(af->f) == 0) && ok;
    af->f = NULL;
    if (!ok) {
        unlink(af->tmp_path);
        return fkd_error_set(err, FKD_E_IO, "cannot finish writing %s: %s", af->path,
                             strerror(saved_errno));
    }
    if (rename(af->tmp_path, af->path) != 0) {
        saved_errno = errno;
        unlink(af->tmp_path);
        return fkd_error_set(err, FKD_E_IO, "cannot rename %s to %s: %s", af->tmp_path, af->path,
                             strerror(saved_errno));
    }
    fsync_parent_dir(af->path);
    return 0;
}

void fkd_atomic_abort(fkd_atomic_file *af)
{
    if (!af->f) return;
    fclose(af->f);
    af->f = NULL;
    unlink(af->tmp_path);
}

int fkd_file_write_atomic(const char *path, const void *data, size_t bytes, fkd_error *err)
{
    fkd_atomic_file af;
    if (fkd_atomic_open(&af, path, err) != 0) return -1;
    if (fkd_atomic_write(&af, data, bytes, err) != 0) {
        fkd_atomic_abort(&af);
        return -1;
    }
    return fkd_atomic_commit(&af, err);
}

int fkd_file_read_all(uint8_t **data, size_t *bytes, const char *path, size_t max_bytes,
                      fkd_error *err)
{
    *data = NULL;
    *bytes = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return fkd_error_set(err, FKD_E_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return fkd_error_set(err, FKD_E_IO, "%s is not a regular file", path);
    }
    if ((uint64_t)st.st_size > max_bytes) {
        fclose(f);
        return fkd_error_set(err, FKD_E_LIMIT, "%s is %lld bytes, above the limit of %zu", path,
                             (long long)st.st_size, max_bytes);
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = malloc(n + 1);
    if (!buf) {
        fclose(f);
        return fkd_error_set(err, FKD_E_NOMEM, "cannot allocate %zu bytes for %s", n + 1, path);
    }
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    if (got != n) {
        free(buf);
        return fkd_error_set(err, FKD_E_IO, "short read of %s (%zu of %zu bytes)", path, got, n);
    }
    buf[n] = 0;
    *data = buf;
    *bytes = n;
    return 0;
}

int fkd_mkdir_p(const char *path, fkd_error *err)
{
    char buf[1024];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return fkd_error_set(err, FKD_E_INVALID_ARG, "path too long: %s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return fkd_error_set(err, FKD_E_IO, "cannot create directory %s: %s", buf,
                                 strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return fkd_error_set(err, FKD_E_IO, "cannot create directory %s: %s", buf, strerror(errno));
    return 0;
}
