/* weights_read.c - the checkpoint readers (weights_load.h): look a
 * tensor up (and, in the binding pass, mark it used), then map it in
 * place, copy it, quantize it at load, or wrap its pre-quantized data and
 * scales; concatenations for fused weights and the permuted downsample
 * conv. What is mapped and what is copied: weights.c's header.
 * Single-threaded, but for the threads of gs_quantize_rows_mt. */
#include "weights_load.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "common/log.h"

/* A matrix found in the checkpoint: float (s NULL) or quantized (qdt
 * GS_DT_Q8 / Q4, s its NAME_scale). */
typedef struct {
    const gs_st_tensor *t, *s;
    gs_dtype qdt;
} mat_src;

static void tick(gs_wl_loader *L, size_t bytes)
{
    L->done += bytes;
    if (L->progress)
        L->progress(L->user, L->done, L->total);
}

static int to_gs_dtype(gs_st_dtype dt, gs_dtype *out)
{
    switch (dt) {
    case GS_ST_BF16:
        *out = GS_DT_BF16;
        return 0;
    case GS_ST_F16:
        *out = GS_DT_F16;
        return 0;
    case GS_ST_F32:
        *out = GS_DT_F32;
        return 0;
    default:
        return GS_EUNSUPPORTED;
    }
}

static const gs_st_tensor *find(gs_wl_loader *L, const char *name, int64_t numel)
{
    const gs_st_tensor *t = gs_st_get(L->st, name);
    if (!t) {
        gs_diag_set(L->d, GS_ENOENT, "weights: tensor %s is missing", name);
        return NULL;
    }
    if (t->numel != numel) {
        gs_diag_set(L->d, GS_EFORMAT, "weights: tensor %s has %lld elements, expected %lld", name,
                    (long long)t->numel, (long long)numel);
        return NULL;
    }
    gs_dtype dt = GS_DT_F32;
    if (to_gs_dtype(t->dtype, &dt)) {
        gs_diag_set(L->d, GS_EFORMAT, "weights: tensor %s has dtype %s (want BF16/F16/F32)", name,
                    gs_st_dtype_name(t->dtype));
        return NULL;
    }
    if (L->used)
        L->used[gs_st_index(L->st, t)] = 1;
    return t;
}

/* Matrix `name` [rows, cols]: a float tensor, or in a quantized folder a
 * quantized one (not for tables) with its NAME_scale. 0 or the diag's code. */
static int find_mat(gs_wl_loader *L, const char *name, int64_t rows, int64_t cols,
                    gs_weight_class c, mat_src *m)
{
    memset(m, 0, sizeof *m);
    if (L->dry && L->visit)
        L->visit(L->visit_user, name, rows, cols, c);
    const gs_st_tensor *t = gs_st_get(L->st, name);
    if (!t || !L->prequant || (t->dtype != GS_ST_I8 && t->dtype != GS_ST_U8)) {
        m->t = find(L, name, rows * cols);
        return m->t ? 0 : (L->d ? L->d->code : GS_EFORMAT);
    }
    if (c == GS_WCLASS_TABLE)
        return gs_diag_set(L->d, GS_EFORMAT,
                           "weights: tensor %s is quantized, but it is a table that stays in a "
                           "float dtype",
                           name);
    m->qdt = t->dtype == GS_ST_I8 ? GS_DT_Q8 : GS_DT_Q4;
    char sname[192];
    snprintf(sname, sizeof sname, "%s_scale", name);
    m->s = gs_st_get(L->st, sname);
    if (t->nbytes != gs_quant_q_bytes(m->qdt, rows, cols))
        return gs_diag_set(L->d, GS_EFORMAT, "weights: tensor %s has %zu bytes, expected %zu (%s)",
                           name, t->nbytes, gs_quant_q_bytes(m->qdt, rows, cols),
                           gs_dtype_name(m->qdt));
    if (!m->s || m->s->dtype != GS_ST_F32 ||
        (size_t)m->s->numel != gs_quant_n_scales(m->qdt, rows, cols))
        return gs_diag_set(L->d, GS_EFORMAT,
                           "weights: tensor %s is quantized (%s) but %s is %s (want F32 x %zu)",
                           name, gs_dtype_name(m->qdt), sname, m->s ? "mis-shaped" : "missing",
                           gs_quant_n_scales(m->qdt, rows, cols));
    m->t = t;
    if (L->used) {
        L->used[gs_st_index(L->st, t)] = 1;
        L->used[gs_st_index(L->st, m->s)] = 1;
    }
    return 0;
}

/* Makes a quantized weight from host q and s (borrowed), and counts it. */
static int new_quant(gs_wl_loader *L, const char *name, gs_dtype qdt, int64_t rows, int64_t cols,
                     const void *q, const float *s, gs_weight **out)
{
    int rc = gs_weight_new_quant(L->be, qdt, rows, cols, q, s, out);
    if (rc)
        return gs_diag_set(L->d, rc, "weights: %s: backend refused %s (%s)", name,
                           gs_dtype_name(qdt), gs_strerror(rc));
    L->w->quant_bytes += gs_weight_bytes(*out);
    return 0;
}

/* Quantizes a float host matrix (any alignment) to qdt and makes the weight. */
static int quantize_new(gs_wl_loader *L, const char *name, const void *src, gs_dtype dt,
                        gs_dtype qdt, int64_t rows, int64_t cols, gs_weight **out)
{
    size_t nq = gs_quant_q_bytes(qdt, rows, cols), ns = gs_quant_n_scales(qdt, rows, cols);
    void *q = malloc(nq);
    float *sc = malloc(ns * sizeof *sc);
    int rc = q && sc ? 0 : GS_ENOMEM;
    if (!rc && (rc = gs_quantize_rows_mt(qdt, src, dt, rows, cols, q, sc, 0)))
        gs_diag_set(L->d, rc, "weights: %s: cannot quantize to %s (a value is not finite?)", name,
                    gs_dtype_name(qdt));
    if (!rc)
        rc = new_quant(L, name, qdt, rows, cols, q, sc, out);
    free(q);
    free(sc);
    return rc;
}

/* A pre-quantized matrix: in place in the mapping when the backend can,
 * else copied (scales realigned when the file left them unaligned). */
static int load_prequant(gs_wl_loader *L, const char *name, const mat_src *m, int64_t rows,
                         int64_t cols, gs_weight **out)
{
    const float *s = m->s->data;
    if ((uintptr_t)s % 4 == 0) {
        int wr = gs_weight_wrap_quant(L->be, m->qdt, rows, cols, m->t->data, s, out);
        if (wr == 0) {
            if (!L->w->st)
                L->w->st = gs_st_ref(L->st);
            L->w->mapped_bytes += m->t->nbytes + m->s->nbytes;
            L->w->quant_bytes += gs_weight_bytes(*out);
            gs_st_prefetch(L->st, m->t);
            gs_st_prefetch(L->st, m->s);
            tick(L, m->t->nbytes + m->s->nbytes);
            return 0;
        }
        if (wr != GS_ENOTSUP)
            return gs_diag_set(L->d, wr, "weights: %s: backend refused (%s)", name,
                               gs_strerror(wr));
    }
    float *tmp = NULL;
    if ((uintptr_t)s % 4) {
        if (!(tmp = malloc(m->s->nbytes)))
            return GS_ENOMEM;
        memcpy(tmp, s, m->s->nbytes);
        s = tmp;
    }
    int rc = new_quant(L, name, m->qdt, rows, cols, m->t->data, s, out);
    free(tmp);
    if (rc)
        return rc;
    gs_st_evict(L->st, m->t);
    gs_st_evict(L->st, m->s);
    tick(L, m->t->nbytes + m->s->nbytes);
    return 0;
}

/* The first tensor of st that the binding pass did not use, and how many
 * there are: a config with fewer layers (or blocks) than the checkpoint
 * would otherwise load and run a different model without a word. */
int gs_wl_check_all_used(gs_wl_loader *L)
{
    size_t n = gs_st_count(L->st), n_unused = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (!L->used[i] && n_unused++ == 0)
            first = i;
    if (n_unused == 0)
        return 0;
    return gs_diag_set(L->d, GS_EFORMAT,
                       "weights: %zu tensor%s of the checkpoint not used by the model that "
                       "config.json describes (first: %s); do num_hidden_layers / depth match the "
                       "checkpoint?",
                       n_unused, n_unused == 1 ? "" : "s", gs_st_at(L->st, first)->name);
}

/* One [rows, cols] matrix: in place in the mapping when the backend can
 * compute from it as it is, else a copy (then the pages are evicted). */
int gs_wl_load_mat(gs_wl_loader *L, const char *name, int64_t rows, int64_t cols, gs_weight_class c,
                   gs_weight **out)
{
    mat_src m;
    int frc = find_mat(L, name, rows, cols, c, &m);
    if (frc || L->dry)
        return frc;
    if (m.s)
        return load_prequant(L, name, &m, rows, cols, out);
    const gs_st_tensor *t = m.t;
    gs_dtype dt = GS_DT_F32;
    to_gs_dtype(t->dtype, &dt);
    gs_dtype qdt = gs_weights_qdtype(L->fmt, c);
    if (gs_dtype_is_quant(qdt)) {
        int rc = quantize_new(L, name, t->data, dt, qdt, rows, cols, out);
        if (rc)
            return rc;
        gs_st_evict(L->st, t);
        tick(L, t->nbytes);
        return 0;
    }
    if ((uintptr_t)t->data % gs_dtype_size(dt) == 0) {
        int wr = gs_weight_wrap_host(L->be, t->data, dt, rows, cols, out);
        if (wr == 0) {
            if (!L->w->st)
                L->w->st = gs_st_ref(L->st); /* keeps the mapping while we use it */
            L->w->mapped_bytes += t->nbytes;
            gs_st_prefetch(L->st, t);
            tick(L, t->nbytes);
            return 0;
        }
        if (wr != GS_ENOTSUP)
            return gs_diag_set(L->d, wr, "weights: %s: backend refused (%s)", name,
                               gs_strerror(wr));
    }
    const void *src = t->data;
    void *tmp = NULL;
    if ((uintptr_t)src % gs_dtype_size(dt)) { /* unaligned in the file: copy */
        tmp = malloc(t->nbytes);
        if (!tmp)
            return GS_ENOMEM;
        memcpy(tmp, src, t->nbytes);
        src = tmp;
    }
    int rc = gs_weight_new(L->be, src, dt, rows, cols, out);
    free(tmp);
    if (rc)
        return gs_diag_set(L->d, rc, "weights: %s: backend refused (%s)", name, gs_strerror(rc));
    gs_st_evict(L->st, t);
    tick(L, t->nbytes);
    return 0;
}

/* Row-wise concatenation of n pre-quantized parts (same qdt): the q bytes
 * and the scales each concatenate, as the rows do. */
static int cat_prequant(gs_wl_loader *L, const char *const *names, const mat_src *m,
                        const int64_t *rows, int n, int64_t cols, int64_t total_rows,
                        gs_weight **out)
{
    gs_dtype qdt = m[0].qdt;
    size_t nq = gs_quant_q_bytes(qdt, total_rows, cols),
           ns = gs_quant_n_scales(qdt, total_rows, cols);
    char *q = malloc(nq);
    char *sc = malloc(ns * sizeof(float));
    if (!q || !sc) {
        free(q);
        free(sc);
        return GS_ENOMEM;
    }
    size_t oq = 0, os = 0;
    for (int i = 0; i < n; i++) {
        memcpy(q + oq, m[i].t->data, m[i].t->nbytes);
        memcpy(sc + os, m[i].s->data, m[i].s->nbytes);
        oq += m[i].t->nbytes;
        os += m[i].s->nbytes;
    }
    (void)rows;
    int rc = new_quant(L, names[0], qdt, total_rows, cols, q, (const float *)sc, out);
    free(q);
    free(sc);
    for (int i = 0; i < n && !rc; i++) {
        gs_st_evict(L->st, m[i].t);
        gs_st_evict(L->st, m[i].s);
        tick(L, m[i].t->nbytes + m[i].s->nbytes);
    }
    return rc;
}

/* Row-wise concatenation of n tensors with the same cols into one weight;
 * all parts must share a dtype. perm: optional element permutation applied
 * within each row of the single part (downsample), NULL for none. */
int gs_wl_load_cat(gs_wl_loader *L, const char *const *names, const int64_t *rows, int n,
                   int64_t cols, gs_weight **out)
{
    const gs_st_tensor *t[4];
    mat_src m[4];
    int64_t total_rows = 0;
    for (int i = 0; i < n; i++) {
        int frc = find_mat(L, names[i], rows[i], cols, GS_WCLASS_LINEAR, &m[i]);
        if (frc)
            return frc;
        t[i] = m[i].t;
        if (t[i]->dtype != t[0]->dtype)
            return gs_diag_set(L->d, GS_EFORMAT, "weights: %s and %s differ in dtype", names[0],
                               names[i]);
        total_rows += rows[i];
    }
    if (L->dry)
        return 0;
    if (m[0].s)
        return cat_prequant(L, names, m, rows, n, cols, total_rows, out);
    gs_dtype dt = GS_DT_F32;
    to_gs_dtype(t[0]->dtype, &dt);
    size_t es = gs_dtype_size(dt);
    char *buf = malloc((size_t)(total_rows * cols) * es);
    if (!buf)
        return GS_ENOMEM;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        memcpy(buf + off, t[i]->data, t[i]->nbytes);
        off += t[i]->nbytes;
    }
    gs_dtype qdt = gs_weights_qdtype(L->fmt, GS_WCLASS_LINEAR);
    int rc = gs_dtype_is_quant(qdt) /* rows are independent: quantize after fusing */
                 ? quantize_new(L, names[0], buf, dt, qdt, total_rows, cols, out)
                 : gs_weight_new(L->be, buf, dt, total_rows, cols, out);
    free(buf);
    if (rc)
        return L->d && L->d->code == rc ? rc
                                        : gs_diag_set(L->d, rc, "weights: %s: backend refused (%s)",
                                                      names[0], gs_strerror(rc));
    for (int i = 0; i < n; i++) {
        gs_st_evict(L->st, t[i]);
        tick(L, t[i]->nbytes);
    }
    return 0;
}

/* Concatenation of n F32-converted vectors into one gs_vec. A NULL name
 * contributes zeros (no bias). */
int gs_wl_load_vec_cat(gs_wl_loader *L, const char *const *names, const int64_t *lens, int n,
                       gs_vec *out)
{
    int64_t total = 0;
    for (int i = 0; i < n; i++)
        total += lens[i];
    if (L->dry) {
        for (int i = 0; i < n; i++)
            if (names[i] && !find(L, names[i], lens[i]))
                return L->d ? L->d->code : GS_EFORMAT;
        return 0;
    }
    float *buf = calloc((size_t)total, sizeof *buf);
    if (!buf)
        return GS_ENOMEM;
    int64_t off = 0;
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        if (names[i]) {
            const gs_st_tensor *t = find(L, names[i], lens[i]);
            rc = t ? gs_st_read_f32(L->st, names[i], buf + off, (size_t)lens[i], L->d)
                   : (L->d ? L->d->code : GS_EFORMAT);
            if (!rc) {
                gs_st_evict(L->st, t);
                tick(L, t->nbytes);
            }
        }
        off += lens[i];
    }
    if (!rc)
        rc = gs_vec_new(L->be, buf, total, out);
    free(buf);
    return rc;
}

int gs_wl_load_vec(gs_wl_loader *L, const char *name, int64_t n, gs_vec *out)
{
    return gs_wl_load_vec_cat(L, &name, &n, 1, out);
}

/* Downsample Conv2d [o, c, 2, 2] -> [o, (kh*2+kw)*c + ci]. */
int gs_wl_load_downsample(gs_wl_loader *L, const char *name, int64_t o, int64_t c, gs_weight **out)
{
    const gs_st_tensor *t = find(L, name, o * c * 4);
    if (!t)
        return L->d ? L->d->code : GS_EFORMAT;
    if (L->dry && L->visit)
        L->visit(L->visit_user, name, o, 4 * c, GS_WCLASS_TABLE);
    if (L->dry)
        return 0;
    gs_dtype dt = GS_DT_F32;
    to_gs_dtype(t->dtype, &dt);
    size_t es = gs_dtype_size(dt);
    char *buf = malloc(t->nbytes);
    if (!buf)
        return GS_ENOMEM;
    const char *src = t->data;
    for (int64_t r = 0; r < o; r++)
        for (int64_t ci = 0; ci < c; ci++)
            for (int k = 0; k < 4; k++) /* k = kh * 2 + kw */
                memcpy(buf + ((size_t)(r * 4 * c + k * c + ci)) * es,
                       src + ((size_t)((r * c + ci) * 4 + k)) * es, es);
    int rc = gs_weight_new(L->be, buf, dt, o, 4 * c, out);
    free(buf);
    if (rc)
        return gs_diag_set(L->d, rc, "weights: %s: backend refused", name);
    gs_st_evict(L->st, t);
    tick(L, t->nbytes);
    return 0;
}
