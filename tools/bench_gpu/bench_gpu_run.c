/* bench_gpu_run.c - the timed model runs of bench_gpu: context fill,
 * batched decode, prefill, and image time-to-first-token. Owns only the
 * host arrays of each call. Single-threaded (the backend's one thread). */
#include "tools/bench_gpu/bench_gpu.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <turbojpeg.h>

#include "worker/image/decode.h"
#include "worker/model/rope_index.h"

double bg_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bg_median(double *v, int n)
{
    if (n <= 0)
        return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* An ordinary text token id: not one of the config's special ids. */
static int32_t text_id(const gs_model_config *cfg, int64_t i)
{
    int32_t V = cfg->text.vocab_size, base = V > 2000 ? 1000 : 0;
    int32_t id = base + (int32_t)((i * 7919) % (V - base));
    if (id == cfg->image_token_id || id == cfg->video_token_id || id == cfg->image_start_token_id ||
        id == cfg->image_end_token_id || id == cfg->video_start_token_id ||
        id == cfg->video_end_token_id)
        id = base;
    return id;
}

/* Host arrays of one forward of n_tok tokens in n_seqs sequences. */
typedef struct {
    int32_t *ids, *pos, *slots, *img_row, *cu_q, *kv_len, *bt, *lrows;
} fwd_arrays;

static void fwd_free(fwd_arrays *a)
{
    free(a->ids);
    free(a->pos);
    free(a->slots);
    free(a->img_row);
    free(a->cu_q);
    free(a->kv_len);
    free(a->bt);
    free(a->lrows);
    memset(a, 0, sizeof *a);
}

static int fwd_alloc(fwd_arrays *a, int64_t n_tok, int64_t n_seqs, int64_t max_blocks)
{
    memset(a, 0, sizeof *a);
    a->ids = malloc(sizeof(int32_t) * (size_t)n_tok);
    a->pos = malloc(sizeof(int32_t) * 3 * (size_t)n_tok);
    a->slots = malloc(sizeof(int32_t) * (size_t)n_tok);
    a->img_row = malloc(sizeof(int32_t) * (size_t)n_tok);
    a->cu_q = malloc(sizeof(int32_t) * (size_t)(n_seqs + 1));
    a->kv_len = malloc(sizeof(int32_t) * (size_t)n_seqs);
    a->bt = malloc(sizeof(int32_t) * (size_t)(n_seqs * max_blocks));
    a->lrows = malloc(sizeof(int32_t) * (size_t)n_seqs);
    if (!a->ids || !a->pos || !a->slots || !a->img_row || !a->cu_q || !a->kv_len || !a->bt ||
        !a->lrows) {
        fwd_free(a);
        return GS_ENOMEM;
    }
    return 0;
}

/* One sequence of n tokens at positions 0..n-1 (pos given by caller if
 * pos3 != NULL), pages 0.. of the cache; the last row's next token is
 * chosen greedily on the backend (gs_model_step, as the engine does). */
static int forward_one(bg_ctx *c, fwd_arrays *a, int32_t n, const int32_t *pos3, gs_mat img,
                       int use_img, gs_diag *d)
{
    int32_t nb = (n + c->page - 1) / c->page;
    if (nb > gs_kv_cache_pages(c->kv))
        return gs_diag_set(d, GS_EINVAL, "bench: %d tokens need %d KV pages, cache has %d", n, nb,
                           gs_kv_cache_pages(c->kv));
    for (int32_t i = 0; i < n; i++) {
        if (!pos3)
            a->pos[i] = a->pos[n + i] = a->pos[2 * n + i] = i;
        a->slots[i] = i; /* page i / page at offset i % page: pages 0.. in order */
    }
    if (pos3)
        memcpy(a->pos, pos3, sizeof(int32_t) * 3 * (size_t)n);
    for (int32_t b = 0; b < nb; b++)
        a->bt[b] = b;
    a->cu_q[0] = 0;
    a->cu_q[1] = n;
    a->kv_len[0] = n;
    a->lrows[0] = n - 1;
    gs_text_batch tb = {0};
    tb.n_tokens = n;
    tb.ids = a->ids;
    tb.pos = a->pos;
    tb.slots = a->slots;
    tb.img_row = use_img ? a->img_row : NULL;
    tb.img = img;
    tb.n_seqs = 1;
    tb.cu_q = a->cu_q;
    tb.kv_len = a->kv_len;
    tb.block_table = a->bt;
    tb.max_blocks = nb;
    tb.n_logits = 1;
    tb.logit_rows = a->lrows;
    gs_sample_row row = {0};
    row.top_p = 1.0f;
    row.repetition_penalty = 1.0f;
    const gs_sample_batch sb = {&row, NULL, NULL, NULL};
    int32_t next = -1;
    int rc = gs_model_step(c->m, c->kv, &tb, &sb, &next);
    if (rc)
        return gs_diag_set(d, rc, "bench: gs_model_step of %d tokens failed: %s", n,
                           gs_strerror(rc));
    return 0;
}

int bg_fill_context(bg_ctx *c, int32_t ctx, int32_t n_seqs, double *sec, gs_diag *d)
{
    const gs_model_config *cfg = gs_model_get_config(c->m);
    int32_t used = (ctx + c->page - 1) / c->page;
    if (used > c->pps || (int64_t)n_seqs * c->pps > gs_kv_cache_pages(c->kv))
        return gs_diag_set(d, GS_EINVAL, "bench: KV cache too small for %d x %d tokens", n_seqs,
                           ctx);
    fwd_arrays a;
    if (fwd_alloc(&a, ctx, 1, used))
        return gs_diag_set(d, GS_ENOMEM, "bench: out of host memory");
    for (int32_t i = 0; i < ctx; i++)
        a.ids[i] = text_id(cfg, i);
    double t0 = bg_now();
    int rc = forward_one(c, &a, ctx, NULL, (gs_mat){0}, 0, d);
    *sec = bg_now() - t0;
    fwd_free(&a);
    for (int32_t s = 1; s < n_seqs && !rc; s++)
        for (int32_t p = 0; p < used && !rc; p++)
            if ((rc = gs_kv_cache_copy_page(c->kv, s * c->pps + p, p)))
                gs_diag_set(d, rc, "bench: gs_kv_cache_copy_page failed: %s", gs_strerror(rc));
    if (!rc && (rc = gs_backend_sync(c->be)))
        gs_diag_set(d, rc, "bench: sync after the KV fill failed: %s", gs_strerror(rc));
    return rc;
}

int bg_decode(bg_ctx *c, int32_t batch, int32_t ctx, int graphs, double *ms, gs_diag *d)
{
    const gs_model_config *cfg = gs_model_get_config(c->m);
    int n_steps = c->warmup + c->steps;
    if ((int64_t)(ctx + n_steps) > (int64_t)c->pps * c->page ||
        (int64_t)batch * c->pps > gs_kv_cache_pages(c->kv))
        return gs_diag_set(d, GS_EINVAL, "bench: KV cache too small for decode batch %d", batch);
    fwd_arrays a;
    if (fwd_alloc(&a, batch, batch, c->pps))
        return gs_diag_set(d, GS_ENOMEM, "bench: out of host memory");
    double *t = malloc(sizeof(double) * (size_t)(c->steps > 0 ? c->steps : 1));
    gs_sample_row *rows = calloc((size_t)batch, sizeof *rows);
    int32_t *out = malloc(sizeof *out * (size_t)batch);
    int rc = t && rows && out ? 0 : gs_diag_set(d, GS_ENOMEM, "bench: out of host memory");
    for (int32_t s = 0; s < batch && !rc; s++) {
        a.cu_q[s] = s;
        a.lrows[s] = s;
        rows[s].top_p = 1.0f; /* greedy: temperature 0, every filter off */
        rows[s].repetition_penalty = 1.0f;
        for (int32_t b = 0; b < c->pps; b++)
            a.bt[(int64_t)s * c->pps + b] = s * c->pps + b;
    }
    a.cu_q[batch] = batch;
    if (!rc && graphs && (rc = gs_model_enable_graphs(c->m, c->kv, batch, c->pps * c->page)))
        gs_diag_set(d, rc, "bench: gs_model_enable_graphs(%d) failed: %s", batch, gs_strerror(rc));
    const gs_sample_batch sb = {rows, NULL, NULL, NULL};
    for (int k = 0; k < n_steps && !rc; k++) {
        int32_t p = ctx + k; /* this step's cache position */
        for (int32_t s = 0; s < batch; s++) {
            a.ids[s] = text_id(cfg, 31 * s + k);
            a.pos[s] = a.pos[batch + s] = a.pos[2 * batch + s] = p;
            a.slots[s] = (s * c->pps + p / c->page) * c->page + p % c->page;
            a.kv_len[s] = p + 1;
        }
        gs_text_batch tb = {0};
        tb.n_tokens = batch;
        tb.ids = a.ids;
        tb.pos = a.pos;
        tb.slots = a.slots;
        tb.n_seqs = batch;
        tb.cu_q = a.cu_q;
        tb.kv_len = a.kv_len;
        tb.block_table = a.bt;
        tb.max_blocks = c->pps;
        tb.n_logits = batch;
        tb.logit_rows = a.lrows;
        double t0 = bg_now();
        rc = gs_model_step(c->m, c->kv, &tb, &sb, out); /* returns after the ids are back */
        double dt = bg_now() - t0;
        if (rc)
            gs_diag_set(d, rc, "bench: decode step (batch %d) failed: %s", batch, gs_strerror(rc));
        else if (k >= c->warmup)
            t[k - c->warmup] = dt;
    }
    if (!rc && graphs) {
        gs_model_graph_stats st;
        gs_model_graph_stats_get(c->m, &st);
        if (st.replays < c->steps)
            rc = gs_diag_set(d, GS_EINTERNAL, "bench: only %lld of %d steps ran from a graph",
                             (long long)st.replays, c->steps);
    }
    if (graphs)
        gs_model_disable_graphs(c->m);
    if (!rc)
        *ms = 1e3 * bg_median(t, c->steps);
    free(out);
    free(rows);
    free(t);
    fwd_free(&a);
    return rc;
}

int bg_prefill(bg_ctx *c, int32_t n, double *sec, gs_diag *d)
{
    const gs_model_config *cfg = gs_model_get_config(c->m);
    fwd_arrays a;
    if (fwd_alloc(&a, n, 1, (n + c->page - 1) / c->page))
        return gs_diag_set(d, GS_ENOMEM, "bench: out of host memory");
    double *t = malloc(sizeof(double) * (size_t)c->reps);
    int rc = t ? 0 : gs_diag_set(d, GS_ENOMEM, "bench: out of host memory");
    for (int32_t i = 0; i < n; i++)
        a.ids[i] = text_id(cfg, i);
    for (int r = -1; r < c->reps && !rc; r++) {
        double t0 = bg_now();
        rc = forward_one(c, &a, n, NULL, (gs_mat){0}, 0, d);
        if (r >= 0)
            t[r] = bg_now() - t0;
    }
    if (!rc)
        *sec = bg_median(t, c->reps);
    free(t);
    fwd_free(&a);
    return rc;
}

/* ---- image time to first token ------------------------------------------ */

/* A w x h RGB test picture (gradients + hashed noise, so the JPEG has
 * realistic entropy) encoded as a 4:2:0 quality-90 JPEG. Returns a
 * tjAlloc'd buffer (tjFree) or NULL with d set. */
static unsigned char *make_jpeg(int32_t w, int32_t h, unsigned long *len, gs_diag *d)
{
    unsigned char *rgb = malloc((size_t)w * (size_t)h * 3), *jpg = NULL;
    if (!rgb) {
        gs_diag_set(d, GS_ENOMEM, "bench: out of host memory for a %dx%d image", w, h);
        return NULL;
    }
    for (int64_t y = 0; y < h; y++)
        for (int64_t x = 0; x < w; x++) {
            uint32_t z = (uint32_t)(y * w + x) * 2654435761u;
            z ^= z >> 13;
            unsigned char *p = rgb + 3 * (y * w + x);
            p[0] = (unsigned char)((x * 255) / w + (z & 15));
            p[1] = (unsigned char)((y * 255) / h + ((z >> 4) & 15));
            p[2] = (unsigned char)(((x + y) * 127) / (w + h) + ((z >> 8) & 31));
        }
    tjhandle tj = tjInitCompress();
    if (!tj) {
        gs_diag_set(d, GS_EIO, "bench: tjInitCompress failed");
    } else if (tjCompress2(tj, rgb, w, 0, h, TJPF_RGB, &jpg, len, TJSAMP_420, 90, 0) != 0) {
        gs_diag_set(d, GS_EIO, "bench: tjCompress2 failed: %s", tjGetErrorStr2(tj));
        tjFree(jpg);
        jpg = NULL;
    }
    if (tj)
        tjDestroy(tj);
    free(rgb);
    return jpg;
}

int bg_ttft_prompt_len(const gs_model_config *cfg, const gs_image_params *ip, int32_t w, int32_t h,
                       int32_t n_q, int32_t *n_prompt, gs_diag *d)
{
    int32_t rh = 0, rw = 0, f = ip->patch_size * ip->merge_size;
    int rc = gs_image_smart_resize(ip, h, w, &rh, &rw, d);
    if (rc)
        return rc;
    (void)cfg;
    /* 4 text tokens, <image_start>, the image tokens, <image_end>, the
     * question, 1 assistant token. */
    *n_prompt = 4 + 2 + (rh / f) * (rw / f) + n_q + 1;
    return 0;
}

int bg_ttft(bg_ctx *c, const gs_image_params *ip, int32_t w, int32_t h, int32_t n_q, double t[3],
            int32_t *n_prompt, int32_t *n_img, gs_diag *d)
{
    const gs_model_config *cfg = gs_model_get_config(c->m);
    unsigned long jlen = 0;
    unsigned char *jpg = make_jpeg(w, h, &jlen, d);
    if (!jpg)
        return d ? d->code : GS_EIO;
    int rc = 0, R = c->reps;
    double *tt = calloc((size_t)(3 * R), sizeof(double));
    fwd_arrays a = {0};
    int32_t *pos3 = NULL, n = 0;
    void *vis = NULL;
    if (!tt) {
        rc = gs_diag_set(d, GS_ENOMEM, "bench: out of host memory");
        goto done;
    }
    for (int r = -1; r < R && !rc; r++) {
        double t0 = bg_now();
        gs_image_rgb *img = NULL;
        gs_image_patches *pt = NULL;
        rc = gs_image_decode(jpg, jlen, NULL, &img, d);
        if (!rc)
            rc = gs_image_preprocess(img, ip, &pt, d);
        gs_image_rgb_free(img);
        double t1 = bg_now();
        if (rc)
            break;
        if (!vis) { /* first pass: the prompt and the vision output buffer */
            int32_t ni = pt->n_tokens;
            n = 4 + 2 + ni + n_q + 1;
            size_t vbytes = (size_t)ni * (size_t)cfg->vision.out_hidden_size *
                            gs_dtype_size(gs_backend_act_dtype(c->be));
            vis = gs_buf_alloc(c->be, vbytes);
            pos3 = malloc(sizeof(int32_t) * 3 * (size_t)n);
            if (!vis || !pos3 || fwd_alloc(&a, n, 1, (n + c->page - 1) / c->page)) {
                gs_image_patches_free(pt);
                rc = gs_diag_set(d, GS_ENOMEM, "bench: out of memory for the image prompt");
                break;
            }
            int32_t k = 0;
            for (int32_t i = 0; i < 4; i++)
                a.ids[k++] = text_id(cfg, i);
            a.ids[k++] = cfg->image_start_token_id;
            for (int32_t i = 0; i < ni; i++)
                a.ids[k++] = cfg->image_token_id;
            a.ids[k++] = cfg->image_end_token_id;
            for (int32_t i = 0; i < n_q; i++)
                a.ids[k++] = text_id(cfg, 100 + i);
            a.ids[k++] = text_id(cfg, 7);
            for (int32_t i = 0, row = 0; i < n; i++)
                a.img_row[i] = a.ids[i] == cfg->image_token_id ? row++ : -1;
            gs_rope_index_params rp = {cfg->image_token_id, cfg->video_start_token_id,
                                       cfg->video_end_token_id, cfg->vision.spatial_merge_size};
            int32_t grid[1][3] = {{pt->grid_t, pt->grid_h, pt->grid_w}}, delta = 0;
            rc = gs_rope_index(&rp, a.ids, n, (const int32_t(*)[3])grid, 1, pos3, &delta, d);
            *n_img = ni;
            *n_prompt = n;
        }
        gs_mat out =
            gs_mat_make(vis, gs_backend_act_dtype(c->be), *n_img, cfg->vision.out_hidden_size);
        int32_t grid[1][3] = {{pt->grid_t, pt->grid_h, pt->grid_w}};
        if (!rc) {
            rc = gs_model_encode_images(c->m, pt->pixels, pt->n_patches, (const int32_t(*)[3])grid,
                                        1, out);
            if (!rc)
                rc = gs_backend_sync(c->be);
            if (rc)
                gs_diag_set(d, rc, "bench: gs_model_encode_images (%dx%d patches) failed: %s",
                            pt->grid_h, pt->grid_w, gs_strerror(rc));
        }
        gs_image_patches_free(pt);
        double t2 = bg_now();
        if (!rc)
            rc = forward_one(c, &a, n, pos3, out, 1, d);
        double t3 = bg_now();
        if (!rc && r >= 0) {
            tt[r] = t1 - t0;
            tt[R + r] = t2 - t1;
            tt[2 * R + r] = t3 - t2;
        }
    }
    if (!rc)
        for (int j = 0; j < 3; j++)
            t[j] = bg_median(tt + j * R, R);
done:
    gs_buf_free(c->be, vis);
    free(pos3);
    fwd_free(&a);
    free(tt);
    tjFree(jpg);
    return rc;
}
