/* st_writer.c - the safetensors writer (st_writer.h). Owns its copy of the
 * tensor list, the open descriptor and the two path strings. */
#include "worker/model/st_writer.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char *name;
    gs_st_dtype dtype;
    int ndim;
    int64_t shape[GS_ST_MAX_DIMS];
    size_t nbytes, off; /* off: from the start of the data area */
    int written;
} went;

struct gs_st_writer {
    went *t;
    size_t n;
    int fd;
    char *path, *tmp;
    size_t data_off; /* 8 + header length */
};

/* Element size first (largest first), then name: the data order. */
static int cmp_entry(const void *a, const void *b)
{
    const went *x = a, *y = b;
    size_t sx = gs_st_dtype_size(x->dtype), sy = gs_st_dtype_size(y->dtype);
    if (sx != sy)
        return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}

static void writer_free(gs_st_writer *w)
{
    for (size_t i = 0; i < w->n; i++)
        free(w->t[i].name);
    free(w->t);
    free(w->path);
    free(w->tmp);
    free(w);
}

void gs_st_writer_abort(gs_st_writer *w)
{
    if (!w)
        return;
    if (w->fd >= 0)
        close(w->fd);
    unlink(w->tmp);
    writer_free(w);
}

static int pwrite_all(int fd, const void *buf, size_t n, size_t off)
{
    const char *p = buf;
    while (n) {
        ssize_t k = pwrite(fd, p, n, (off_t)off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
        off += (size_t)k;
    }
    return 0;
}

/* The header JSON (offsets filled), owned; NULL when out of memory. */
static char *header_json(const gs_st_writer *w, const char *const *meta)
{
    json_t *root = json_object();
    int bad = !root;
    if (meta && !bad) {
        json_t *m = json_object();
        for (size_t i = 0; meta[i] && meta[i + 1] && m; i += 2)
            bad |= json_object_set_new(m, meta[i], json_string(meta[i + 1]));
        bad |= !m || json_object_set_new(root, "__metadata__", m);
    }
    for (size_t i = 0; i < w->n && !bad; i++) {
        const went *t = &w->t[i];
        json_t *shape = json_array();
        for (int k = 0; k < t->ndim && shape; k++)
            bad |= json_array_append_new(shape, json_integer(t->shape[k]));
        json_t *e =
            json_pack("{s:s, s:o, s:[I, I]}", "dtype", gs_st_dtype_name(t->dtype), "shape", shape,
                      "data_offsets", (json_int_t)t->off, (json_int_t)(t->off + t->nbytes));
        bad |= !e || json_object_set_new(root, t->name, e);
    }
    char *s = bad ? NULL : json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    return s;
}

int gs_st_writer_open(const char *path, const gs_st_wentry *e, size_t n, const char *const *meta,
                      gs_st_writer **out, gs_diag *d)
{
    *out = NULL;
    gs_st_writer *w = calloc(1, sizeof *w);
    if (!w)
        return GS_ENOMEM;
    w->fd = -1;
    w->t = calloc(n ? n : 1, sizeof *w->t);
    w->path = strdup(path);
    w->tmp = malloc(strlen(path) + 5);
    if (!w->t || !w->path || !w->tmp) {
        writer_free(w);
        return GS_ENOMEM;
    }
    sprintf(w->tmp, "%s.tmp", path);
    for (size_t i = 0; i < n; i++) {
        went *t = &w->t[i];
        size_t es = gs_st_dtype_size(e[i].dtype), numel = 1;
        if (!e[i].name || !e[i].name[0] || !es || e[i].ndim < 0 || e[i].ndim > GS_ST_MAX_DIMS) {
            writer_free(w);
            return gs_diag_set(d, GS_EINVAL, "%s: tensor %zu: empty name, bad dtype or rank", path,
                               i);
        }
        for (int k = 0; k < e[i].ndim; k++) {
            if (e[i].shape[k] < 0 || (e[i].shape[k] && numel > SIZE_MAX / (size_t)e[i].shape[k])) {
                writer_free(w);
                return gs_diag_set(d, GS_EINVAL, "%s: tensor %s: bad shape", path, e[i].name);
            }
            numel *= (size_t)e[i].shape[k];
        }
        if (!(t->name = strdup(e[i].name))) {
            writer_free(w);
            return GS_ENOMEM;
        }
        w->n = i + 1;
        t->dtype = e[i].dtype;
        t->ndim = e[i].ndim;
        memcpy(t->shape, e[i].shape, sizeof t->shape);
        t->nbytes = numel * es;
    }
    qsort(w->t, w->n, sizeof *w->t, cmp_entry);
    size_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        if (i && !strcmp(w->t[i].name, w->t[i - 1].name)) {
            int rc = gs_diag_set(d, GS_EINVAL, "%s: tensor %s given twice", path, w->t[i].name);
            writer_free(w);
            return rc;
        }
        w->t[i].off = off;
        off += w->t[i].nbytes;
    }
    char *hdr = header_json(w, meta);
    if (!hdr) {
        writer_free(w);
        return GS_ENOMEM;
    }
    size_t hlen = strlen(hdr), padded = (hlen + 7) & ~(size_t)7;
    char *buf = malloc(8 + padded);
    if (!buf) {
        free(hdr);
        writer_free(w);
        return GS_ENOMEM;
    }
    for (int i = 0; i < 8; i++)
        buf[i] = (char)((uint64_t)padded >> (8 * i));
    memcpy(buf + 8, hdr, hlen);
    memset(buf + 8 + hlen, ' ', padded - hlen);
    free(hdr);
    w->data_off = 8 + padded;
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = 0;
    if (w->fd < 0 || ftruncate(w->fd, (off_t)(w->data_off + off)) != 0 ||
        pwrite_all(w->fd, buf, w->data_off, 0) != 0)
        rc = gs_diag_set(d, GS_EIO, "%s: cannot write: %s", w->tmp, strerror(errno));
    free(buf);
    if (rc) {
        gs_st_writer_abort(w);
        return rc;
    }
    *out = w;
    return 0;
}

int gs_st_writer_put(gs_st_writer *w, const char *name, const void *data, size_t nbytes, gs_diag *d)
{
    went *t = NULL;
    for (size_t i = 0; i < w->n && !t; i++)
        if (!strcmp(w->t[i].name, name))
            t = &w->t[i];
    if (!t)
        return gs_diag_set(d, GS_ENOENT, "%s: tensor %s is not in the header", w->path, name);
    if (nbytes != t->nbytes)
        return gs_diag_set(d, GS_EINVAL, "%s: tensor %s: %zu bytes given, %zu expected", w->path,
                           name, nbytes, t->nbytes);
    if (pwrite_all(w->fd, data, nbytes, w->data_off + t->off) != 0)
        return gs_diag_set(d, GS_EIO, "%s: cannot write %s: %s", w->tmp, name, strerror(errno));
    t->written = 1;
    return 0;
}

int gs_st_writer_close(gs_st_writer *w, gs_diag *d)
{
    int rc = 0;
    for (size_t i = 0; i < w->n && !rc; i++)
        if (!w->t[i].written)
            rc =
                gs_diag_set(d, GS_EINVAL, "%s: tensor %s was never written", w->path, w->t[i].name);
    if (!rc && fsync(w->fd) != 0)
        rc = gs_diag_set(d, GS_EIO, "%s: cannot write: %s", w->tmp, strerror(errno));
    if (!rc) {
        int c = close(w->fd);
        w->fd = -1;
        if (c != 0)
            rc = gs_diag_set(d, GS_EIO, "%s: cannot write: %s", w->tmp, strerror(errno));
    }
    if (!rc) {
        if (rename(w->tmp, w->path) != 0)
            rc = gs_diag_set(d, GS_EIO, "%s: cannot rename to %s: %s", w->tmp, w->path,
                             strerror(errno));
    }
    if (rc) {
        gs_st_writer_abort(w);
        return rc;
    }
    writer_free(w);
    return 0;
}
