/* file.c - see file.h. Opens without blocking (O_NONBLOCK, so a FIFO with
 * no writer cannot hang the caller in open()), refuses anything fstat does
 * not call a regular file, then reads in growing chunks rather than
 * trusting st_size, so a file that grows or shrinks while it is read (or a
 * /proc file, which reports size 0) still reads correctly.
 * Owns nothing past a call. Thread-safe: touches only caller memory. */
#include "file.h"

#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int gs_open_regular(const char *path, gs_diag *d)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return gs_diag_set(d, errno == ENOENT ? GS_ENOENT : GS_EIO, "%s: cannot open: %s", path,
                           strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return gs_diag_set(d, GS_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        const char *kind = S_ISDIR(st.st_mode)    ? "a directory"
                           : S_ISFIFO(st.st_mode) ? "a FIFO"
                           : S_ISCHR(st.st_mode)  ? "a character device"
                           : S_ISBLK(st.st_mode)  ? "a block device"
                           : S_ISSOCK(st.st_mode) ? "a socket"
                                                  : "a special file";
        return gs_diag_set(d, GS_EIO, "%s: not a regular file (%s)", path, kind);
    }
    /* Back to blocking reads: a regular file never blocks for long, and
     * callers expect read() to return data, not EAGAIN. */
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
        int e = errno;
        close(fd);
        return gs_diag_set(d, GS_EIO, "%s: fcntl: %s", path, strerror(e));
    }
    return fd;
}

int gs_read_file(const char *path, size_t cap, char **out, size_t *len, gs_diag *d)
{
    *out = NULL;
    *len = 0;
    int fd = gs_open_regular(path, d);
    if (fd < 0)
        return fd;
    char *buf = NULL;
    size_t n = 0, c = 0;
    int rc = 0;
    for (;;) {
        if (n == c) {
            if (n > cap) {
                rc = gs_diag_set(d, GS_ETOOBIG, "%s: larger than %zu bytes", path, cap);
                break;
            }
            /* Grow by doubling, but never past cap + 1 bytes. */
            size_t nc = c ? c * 2 : 65536;
            if (nc > cap + 1 || nc < c)
                nc = cap + 1;
            char *nb = realloc(buf, nc + 1);
            if (!nb) {
                rc = gs_diag_set(d, GS_ENOMEM, "%s: out of memory", path);
                break;
            }
            buf = nb;
            c = nc;
        }
        ssize_t r = read(fd, buf + n, c - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = gs_diag_set(d, GS_EIO, "%s: read error: %s", path, strerror(errno));
            break;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (!rc && n > cap)
        rc = gs_diag_set(d, GS_ETOOBIG, "%s: larger than %zu bytes", path, cap);
    if (rc) {
        free(buf);
        return rc;
    }
    if (!buf && !(buf = malloc(1)))
        return gs_diag_set(d, GS_ENOMEM, "%s: out of memory", path);
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
}

int gs_read_secret_file(const char *path, char *out, size_t cap, gs_diag *d)
{
    char *t = NULL;
    size_t n = 0;
    out[0] = 0;
    int rc = gs_read_file(path, 4096, &t, &n, d);
    if (rc)
        return rc;
    size_t a = 0;
    while (a < n && isspace((unsigned char)t[a]))
        a++;
    while (n > a && isspace((unsigned char)t[n - 1]))
        n--;
    rc = 0;
    if (n - a < 16 || n - a >= cap)
        rc = gs_diag_set(d, GS_ECONFIG, "%s: a key of %zu bytes; it must have 16 to %zu", path,
                         n - a, cap - 1);
    for (size_t i = a; !rc && i < n; i++)
        if (t[i] < 0x21 || t[i] > 0x7e)
            rc = gs_diag_set(d, GS_ECONFIG,
                             "%s: byte %zu of the key is not printable ASCII (no spaces)", path, i);
    if (!rc) {
        memcpy(out, t + a, n - a);
        out[n - a] = 0;
        struct stat st;
        if (!stat(path, &st) && (st.st_mode & 077))
            gs_log_warn("%s: the key file is readable by others than its owner (chmod 600)", path);
    }
    free(t);
    return rc;
}

int gs_key_equal(const char *p, size_t n, const char *key)
{
    const size_t k = strlen(key);
    if (n != k)
        return 0;
    unsigned char diff = 0;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(p[i] ^ key[i]);
    return diff == 0;
}
