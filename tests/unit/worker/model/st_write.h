/* st_write.h - test helpers: write small safetensors files, config files
 * and temporary folders. Header-only, used by the worker/model tests.
 * The writer follows the format independently of the reader: 8-byte LE
 * header length, JSON header, data area; tensors laid out back to back in
 * the order given, data bytes filled with a position-dependent pattern. */
#ifndef GS_TEST_ST_WRITE_H
#define GS_TEST_ST_WRITE_H

#include <dirent.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    const char *name;
    const char *dtype; /* as written in the header */
    int ndim;
    int64_t shape[8];
} tw_tensor;

static inline size_t tw_dtype_size(const char *dt)
{
    if (!strcmp(dt, "F64") || !strcmp(dt, "I64") || !strcmp(dt, "U64"))
        return 8;
    if (!strcmp(dt, "F32") || !strcmp(dt, "I32") || !strcmp(dt, "U32"))
        return 4;
    if (!strcmp(dt, "F16") || !strcmp(dt, "BF16") || !strcmp(dt, "I16") || !strcmp(dt, "U16"))
        return 2;
    return 1;
}

/* Writes raw bytes: an 8-byte LE `hlen` field, `header[0..header_len)`,
 * then data[0..data_len) (NULL data: zeros). 0 or -1. */
static inline int tw_write_raw(const char *path, uint64_t hlen, const char *header,
                               size_t header_len, const void *data, size_t data_len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    unsigned char le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (unsigned char)(hlen >> (8 * i));
    int ok = fwrite(le, 1, 8, f) == 8 && fwrite(header, 1, header_len, f) == header_len;
    if (data_len) {
        unsigned char *z = data ? NULL : calloc(1, data_len);
        ok = ok && fwrite(data ? data : z, 1, data_len, f) == data_len;
        free(z);
    }
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

/* Writes a header string with its true length followed by data_len bytes. */
static inline int tw_write_header(const char *path, const char *header, size_t data_len)
{
    return tw_write_raw(path, strlen(header), header, strlen(header), NULL, data_len);
}

/* Writes a valid file with tensors t[0..n) back to back, optional
 * "__metadata__" JSON object text (NULL: none) and the header padded with
 * spaces to a multiple of `align` (1: no padding). Data byte i of the data
 * area is (i * 7 + 3) & 0xff unless fill is given (fill[i] per tensor,
 * each with the tensor's byte size). 0 or -1. */
static inline int tw_write(const char *path, const tw_tensor *t, int n, const char *meta,
                           size_t align, const void *const *fill)
{
    json_t *h = json_object();
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        json_t *e = json_object(), *sh = json_array();
        size_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) {
            json_array_append_new(sh, json_integer(t[i].shape[d]));
            numel *= (size_t)t[i].shape[d];
        }
        size_t nb = numel * tw_dtype_size(t[i].dtype);
        json_object_set_new(e, "dtype", json_string(t[i].dtype));
        json_object_set_new(e, "shape", sh);
        json_object_set_new(e, "data_offsets",
                            json_pack("[II]", (json_int_t)off, (json_int_t)(off + nb)));
        json_object_set_new(h, t[i].name, e);
        off += nb;
    }
    if (meta)
        json_object_set_new(h, "__metadata__", json_loads(meta, 0, NULL));
    char *js = json_dumps(h, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(h);
    size_t hl = strlen(js), padded = align > 1 ? (hl + align - 1) / align * align : hl;
    char *hb = malloc(padded);
    memcpy(hb, js, hl);
    memset(hb + hl, ' ', padded - hl);
    free(js);
    unsigned char *data = malloc(off ? off : 1);
    for (size_t i = 0; i < off; i++)
        data[i] = (unsigned char)((i * 7 + 3) & 0xff);
    if (fill) {
        size_t o = 0;
        for (int i = 0; i < n; i++) {
            size_t numel = 1;
            for (int d = 0; d < t[i].ndim; d++)
                numel *= (size_t)t[i].shape[d];
            size_t nb = numel * tw_dtype_size(t[i].dtype);
            if (fill[i])
                memcpy(data + o, fill[i], nb);
            o += nb;
        }
    }
    int rc = tw_write_raw(path, padded, hb, padded, data, off);
    free(hb);
    free(data);
    return rc;
}

static inline int tw_write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t n = strlen(text);
    int ok = fwrite(text, 1, n, f) == n;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

/* A fresh temporary folder; path in a static buffer per call site slot. */
static inline const char *tw_mkdtemp(char *buf, size_t cap)
{
    const char *base = getenv("TMPDIR");
    snprintf(buf, cap, "%s/gs_model_test_XXXXXX", base && *base ? base : "/tmp");
    return mkdtemp(buf);
}

/* Removes every plain file in dir (one level), then dir. */
static inline void tw_rmdir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char p[4096];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        int n = snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (n > 0 && (size_t)n < sizeof p)
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

/* dir + "/" + name in buf. */
static inline const char *tw_path(char *buf, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(buf, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap)
        buf[0] = 0;
    return buf;
}

#endif
