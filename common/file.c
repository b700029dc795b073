/* file.c - see file.h. Reads in growing chunks rather than trusting
 * fseek/ftell, so pipes and /proc files work too. */
#include "file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int gs_read_file(const char *path, size_t cap, char **out, size_t *len, gs_diag *d)
{
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return gs_diag_set(d, errno == ENOENT ? GS_ENOENT : GS_EIO, "%s: cannot open: %s", path,
                           strerror(errno));
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
        size_t r = fread(buf + n, 1, c - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f))
                rc = gs_diag_set(d, GS_EIO, "%s: read error", path);
            break;
        }
    }
    fclose(f);
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
