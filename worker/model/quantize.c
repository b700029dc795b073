/* quantize.c - a checkpoint folder to a quantized folder (quantize.h).
 * Streams tensor by tensor: each is quantized (or copied) from the
 * checkpoint's mapping into its place in the output file, and its pages
 * are evicted, so memory stays near one tensor's size.
 * Single-threaded, but for the threads of gs_quantize_rows_mt. */
#include "worker/model/quantize.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/file.h"
#include "common/log.h"
#include "kernels/kernels.h"
#include "worker/model/model_config.h"
#include "worker/model/st_writer.h"
#include "worker/model/weights.h"

#define MAX_COPY ((size_t)1 << 30)

/* ---- the plan: what becomes of each checkpoint tensor ------------------- */

typedef struct {
    const gs_st *st;
    signed char *cls; /* [count]: -1 copied as is (vectors), else gs_weight_class */
    int64_t *rows, *cols;
    int64_t tied_head; /* index of the embedding a tied lm_head comes from, or -1 */
} plan;

static void on_matrix(void *user, const char *name, int64_t rows, int64_t cols, gs_weight_class c)
{
    plan *p = user;
    const gs_st_tensor *t = gs_st_get(p->st, name);
    if (!t)
        return; /* gs_weights_plan reports it */
    size_t i = gs_st_index(p->st, t);
    if (p->cls[i] == GS_WCLASS_TABLE && c == GS_WCLASS_HEAD) {
        p->tied_head = (int64_t)i; /* the same tensor bound twice: a tied lm_head */
        return;
    }
    p->cls[i] = (signed char)c;
    p->rows[i] = rows;
    p->cols[i] = cols;
}

/* A quantized entry pair (q, scales) for [rows, cols] in qdt. */
static void quant_entries(const char *name, char *sname, size_t cap, gs_dtype qdt, int64_t rows,
                          int64_t cols, gs_st_wentry *e)
{
    snprintf(sname, cap, "%s_scale", name);
    int q4 = qdt == GS_DT_Q4;
    e[0] = (gs_st_wentry){name, q4 ? GS_ST_U8 : GS_ST_I8, 2, {rows, q4 ? (cols + 1) / 2 : cols}};
    e[1] = (gs_st_wentry){
        sname, GS_ST_F32, q4 ? 2 : 1, {rows, (cols + GS_Q4_GROUP - 1) / GS_Q4_GROUP}};
}

/* Quantizes t as [rows, cols] and writes it under name and name_scale. */
static int put_quant(gs_st_writer *w, const gs_st_tensor *t, const char *name, gs_dtype qdt,
                     int64_t rows, int64_t cols, int threads, gs_diag *d)
{
    gs_dtype sdt = t->dtype == GS_ST_BF16  ? GS_DT_BF16
                   : t->dtype == GS_ST_F16 ? GS_DT_F16
                                           : GS_DT_F32;
    size_t nq = gs_quant_q_bytes(qdt, rows, cols), ns = gs_quant_n_scales(qdt, rows, cols);
    void *q = malloc(nq);
    float *s = malloc(ns * sizeof *s);
    char sname[320];
    snprintf(sname, sizeof sname, "%s_scale", name);
    int rc = q && s ? 0 : gs_diag_set(d, GS_ENOMEM, "%s: out of memory", name);
    if (!rc && gs_quantize_rows_mt(qdt, t->data, sdt, rows, cols, q, s, threads))
        rc = gs_diag_set(d, GS_EINVAL, "tensor %s: cannot quantize (a value is not finite)",
                         t->name);
    if (!rc)
        rc = gs_st_writer_put(w, name, q, nq, d);
    if (!rc)
        rc = gs_st_writer_put(w, sname, s, ns * sizeof *s, d);
    free(q);
    free(s);
    return rc;
}

/* Writes DIR2/model.safetensors by the plan. */
static int write_weights(const gs_quantize_params *o, const gs_st *st, const plan *p,
                         const char *path, gs_diag *d)
{
    size_t n = gs_st_count(st), ne = 0;
    gs_st_wentry *e = calloc(2 * n + 2, sizeof *e);
    char(*snames)[320] = calloc(n + 1, sizeof *snames);
    int rc = e && snames ? 0 : GS_ENOMEM;
    const char *fmt_name = gs_weight_format_name(o->fmt);
    for (size_t i = 0; i < n && !rc; i++) {
        const gs_st_tensor *t = gs_st_at(st, i);
        gs_dtype qdt = p->cls[i] < 0 ? GS_DT_BF16 : gs_weights_qdtype(o->fmt, p->cls[i]);
        if (p->tied_head >= 0 && !strcmp(t->name, "lm_head.weight"))
            continue; /* ignored by the loader; ours is written below */
        if (gs_dtype_is_quant(qdt)) {
            quant_entries(t->name, snames[i], sizeof snames[i], qdt, p->rows[i], p->cols[i],
                          e + ne);
            ne += 2;
        } else {
            e[ne] = (gs_st_wentry){t->name, t->dtype, t->ndim, {0}};
            memcpy(e[ne++].shape, t->shape, sizeof t->shape);
        }
    }
    gs_dtype hq = gs_weights_qdtype(o->fmt, GS_WCLASS_HEAD);
    if (!rc && p->tied_head >= 0) {
        size_t i = (size_t)p->tied_head;
        quant_entries("lm_head.weight", snames[n], sizeof snames[n], hq, p->rows[i], p->cols[i],
                      e + ne);
        ne += 2;
    }
    const char *meta[] = {"format", "pt", "glmserve_weights", fmt_name, NULL};
    gs_st_writer *w = NULL;
    if (!rc)
        rc = gs_st_writer_open(path, e, ne, meta, &w, d);
    size_t done = 0, total = 0, next = 0;
    for (size_t i = 0; i < n; i++)
        total += gs_st_at(st, i)->nbytes;
    for (size_t i = 0; i < n && !rc; i++) {
        const gs_st_tensor *t = gs_st_at(st, i);
        gs_dtype qdt = p->cls[i] < 0 ? GS_DT_BF16 : gs_weights_qdtype(o->fmt, p->cls[i]);
        if (p->tied_head >= 0 && !strcmp(t->name, "lm_head.weight"))
            continue;
        rc = gs_dtype_is_quant(qdt)
                 ? put_quant(w, t, t->name, qdt, p->rows[i], p->cols[i], o->threads, d)
                 : gs_st_writer_put(w, t->name, t->data, t->nbytes, d);
        if (!rc && (int64_t)i == p->tied_head)
            rc = put_quant(w, t, "lm_head.weight", hq, p->rows[i], p->cols[i], o->threads, d);
        gs_st_evict(st, t);
        done += t->nbytes;
        if (done * 10 >= next * total) {
            gs_log_info("%3.0f%% of %.2f GB", 100.0 * (double)done / (double)total, total / 1e9);
            next = done * 10 / total + 1;
        }
    }
    if (!rc)
        rc = gs_st_writer_close(w, d); /* frees w */
    else
        gs_st_writer_abort(w); /* NULL: no-op */
    free(e);
    free(snames);
    return rc;
}

/* ---- the folder's other files ------------------------------------------- */

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static int copy_file(const char *src, const char *dst, gs_diag *d)
{
    char *buf = NULL;
    size_t len = 0;
    int rc = gs_read_file(src, MAX_COPY, &buf, &len, d);
    if (rc)
        return rc;
    FILE *f = fopen(dst, "wb");
    int ok = f && fwrite(buf, 1, len, f) == len;
    ok = (f && fclose(f) == 0) && ok;
    free(buf);
    return ok ? 0 : gs_diag_set(d, GS_EIO, "%s: cannot write: %s", dst, strerror(errno));
}

/* Every regular file of DIR but the weights, their index and config.json. */
static int copy_others(const gs_quantize_params *o, gs_diag *d)
{
    DIR *dir = opendir(o->model);
    if (!dir)
        return gs_diag_set(d, GS_EIO, "%s: cannot list: %s", o->model, strerror(errno));
    int rc = 0;
    struct dirent *de;
    char src[PATH_MAX], dst[PATH_MAX];
    while (!rc && (de = readdir(dir))) {
        const char *nm = de->d_name;
        struct stat sb;
        snprintf(src, sizeof src, "%s/%s", o->model, nm);
        if (nm[0] == '.' || ends_with(nm, ".safetensors") ||
            !strcmp(nm, "model.safetensors.index.json") || !strcmp(nm, "config.json") ||
            stat(src, &sb) != 0 || !S_ISREG(sb.st_mode))
            continue;
        snprintf(dst, sizeof dst, "%s/%s", o->out, nm);
        rc = copy_file(src, dst, d);
    }
    closedir(dir);
    return rc;
}

/* DIR/config.json with the quantization_config section, to DIR2. */
static int write_config(const gs_quantize_params *o, gs_diag *d)
{
    char path[PATH_MAX], tmp[PATH_MAX + 8];
    snprintf(path, sizeof path, "%s/config.json", o->model);
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return gs_diag_set(d, GS_ECONFIG, "%s: %s", path, je.text);
    const char *wn = gs_weight_format_name(o->fmt);
    json_t *q = json_pack(
        "{s:s, s:s, s:i, s:s, s:s}", "quant_method", "glmserve", "weights", wn, "group_size",
        GS_Q4_GROUP, "lm_head", "int8", "layout",
        "NAME: I8 [rows, cols] (int8) or U8 [rows, (cols+1)/2] (int4: column 2j in the low "
        "nibble of byte j, 2j+1 in the high one, each stored as q+8); NAME_scale: F32 [rows] "
        "(int8) or [rows, ceil(cols/group_size)] (int4); w = q * scale");
    snprintf(path, sizeof path, "%s/config.json", o->out);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int rc = !q || json_object_set_new(root, "quantization_config", q) ? GS_ENOMEM : 0;
    if (!rc && (json_dump_file(root, tmp, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0 ||
                rename(tmp, path) != 0))
        rc = gs_diag_set(d, GS_EIO, "%s: cannot write: %s", path, strerror(errno));
    json_decref(root);
    return rc;
}

int gs_quantize_folder(const gs_quantize_params *o, gs_diag *d)
{
    if (!o || !o->model || !o->out || (o->fmt != GS_WEIGHTS_INT8 && o->fmt != GS_WEIGHTS_INT4))
        return gs_diag_set(d, GS_EINVAL,
                           "quantize: need a model, an output folder and int8 or int4");
    char a[PATH_MAX], b[PATH_MAX], path[PATH_MAX];
    if (mkdir(o->out, 0755) != 0 && errno != EEXIST)
        return gs_diag_set(d, GS_EIO, "%s: cannot create: %s", o->out, strerror(errno));
    if (realpath(o->model, a) && realpath(o->out, b) && !strcmp(a, b))
        return gs_diag_set(d, GS_EINVAL,
                           "the output folder must be another folder than the model's");
    gs_model_config cfg;
    int rc = gs_model_config_load(o->model, &cfg, d);
    if (rc)
        return rc;
    if (cfg.quant_bits)
        return gs_diag_set(d, GS_EINVAL,
                           "%s is quantized already (config.json quantization_config); "
                           "quantize the original checkpoint",
                           o->model);
    gs_st *st = NULL;
    if ((rc = gs_st_open(o->model, d, &st)))
        return rc;
    size_t n = gs_st_count(st);
    plan p = {st, malloc(n + 1), calloc(n + 1, sizeof(int64_t)), calloc(n + 1, sizeof(int64_t)),
              -1};
    if (!p.cls || !p.rows || !p.cols)
        rc = GS_ENOMEM;
    else
        memset(p.cls, -1, n + 1);
    if (!rc)
        rc = gs_weights_plan(&cfg, st, on_matrix, &p, d);
    /* A stale index or shard set would shadow the new file when loading. */
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", o->out);
    if (!rc && unlink(path) != 0 && errno != ENOENT)
        rc = gs_diag_set(d, GS_EIO, "%s: cannot remove: %s", path, strerror(errno));
    snprintf(path, sizeof path, "%s/config.json", o->out);
    if (!rc && unlink(path) != 0 && errno != ENOENT) /* incomplete until written again */
        rc = gs_diag_set(d, GS_EIO, "%s: cannot remove: %s", path, strerror(errno));
    snprintf(path, sizeof path, "%s/model.safetensors", o->out);
    if (!rc)
        rc = write_weights(o, st, &p, path, d);
    if (!rc)
        rc = copy_others(o, d);
    if (!rc)
        rc = write_config(o, d);
    free(p.cls);
    free(p.rows);
    free(p.cols);
    gs_st_free(st);
    return rc;
}
