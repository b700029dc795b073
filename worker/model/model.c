/* model.c - gs_model load/free, the KV cache and the scratch allocator.
 * The forward passes are in vision.c and text.c. Single-threaded. */
#include "model_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "worker/model/safetensors.h"

/* ---- scratch ----------------------------------------------------------- */

int gs_scratch_init(gs_scratch *s, gs_backend *be, size_t cap)
{
    s->be = be;
    s->used = 0;
    s->cap = cap;
    s->base = gs_buf_alloc(be, cap);
    return s->base ? 0 : GS_ENOMEM;
}

void *gs_scratch_take(gs_scratch *s, size_t bytes)
{
    size_t b = (bytes + 255) & ~(size_t)255;
    if (s->used + b > s->cap)
        return NULL;
    void *p = s->base + s->used;
    s->used += b;
    return p;
}

void gs_scratch_release(gs_scratch *s)
{
    gs_buf_free(s->be, s->base);
    s->base = NULL;
}

gs_mat gs_scratch_mat(gs_scratch *s, gs_dtype dt, int64_t rows, int64_t cols)
{
    return gs_mat_make(gs_scratch_take(s, (size_t)(rows * cols) * gs_dtype_size(dt)), dt, rows,
                       cols);
}

/* ---- load -------------------------------------------------------------- */

typedef struct {
    int tty;
    double t0, last;
} progress_state;

static double now_s(void)
{
    return (double)gs_clock_now_ns() * 1e-9;
}

static void progress_cb(void *user, size_t done, size_t total)
{
    progress_state *ps = user;
    double t = now_s();
    if (!ps->tty || (t - ps->last < 0.1 && done < total))
        return;
    ps->last = t;
    int width = 40, fill = total ? (int)((double)done / (double)total * width) : width;
    char bar[64];
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : ' ';
    bar[width] = 0;
    fprintf(stderr, "\rloading weights [%s] %3.0f%% %.2f/%.2f GB %.1fs", bar,
            total ? 100.0 * (double)done / (double)total : 100.0, done / 1e9, total / 1e9,
            t - ps->t0);
    if (done >= total)
        fputc('\n', stderr);
    fflush(stderr);
}

/* The folder's own format: BF16 for a checkpoint, else quantization_config's. */
static gs_weight_format folder_format(const gs_model_config *cfg)
{
    return cfg->quant_bits == 8   ? GS_WEIGHTS_INT8
           : cfg->quant_bits == 4 ? GS_WEIGHTS_INT4
                                  : GS_WEIGHTS_BF16;
}

/* --weights auto for a float checkpoint (or dummy weights): the first of
 * bf16, int8, int4 that fits the backend's free memory with the reserve. */
static gs_weight_format auto_format(const gs_model_params *p, const gs_model_config *cfg)
{
    size_t fr = 0, tot = 0;
    if (gs_backend_mem_info(p->be, &fr, &tot) != 0) {
        gs_log_warn("weights auto: the backend reports no memory size: bf16");
        return GS_WEIGHTS_BF16;
    }
    size_t reserve = p->reserve;
    if (!reserve)
        reserve = tot / 8 > ((size_t)256 << 20) ? tot / 8 : (size_t)256 << 20;
    static const gs_weight_format order[] = {GS_WEIGHTS_BF16, GS_WEIGHTS_INT8, GS_WEIGHTS_INT4};
    char why[256];
    int n = 0;
    for (int i = 0; i < 3; i++) {
        size_t need = gs_weights_estimate(cfg, order[i]);
        n += snprintf(why + n, sizeof why - (size_t)n, "%s%s %.2f GB", i ? ", " : "",
                      gs_weight_format_name(order[i]), need / 1e9);
        if (n >= (int)sizeof why)
            n = (int)sizeof why - 1;
        if (need + reserve <= fr || i == 2) {
            int fits = need + reserve <= fr;
            gs_log(fits ? GS_LOG_INFO : GS_LOG_WARN,
                   "weights auto: %s: weights %s; %.2f GB free of %.2f GB on %s, %.2f GB kept in "
                   "reserve%s",
                   gs_weight_format_name(order[i]), why, fr / 1e9, tot / 1e9,
                   gs_backend_name(p->be), reserve / 1e9,
                   fits ? "" : "; even int4 does not fit, loading may fail");
            return order[i];
        }
    }
    return GS_WEIGHTS_INT4;
}

/* The format to load in (model.h, gs_model_params.weights). */
static int choose_format(const gs_model_params *p, const gs_model_config *cfg,
                         gs_weight_format *out, gs_diag *d)
{
    gs_weight_format f = p->weights, own = folder_format(cfg);
    if (cfg->quant_bits && !p->dummy_weights) {
        if (f != GS_WEIGHTS_ASIS && f != GS_WEIGHTS_AUTO && f != own)
            return gs_diag_set(d, GS_ECONFIG,
                               "model: weights %s asked for, but the folder holds %s weights "
                               "(config.json quantization_config, written by glmserve-quantize); "
                               "ask for %s or auto, or load the original checkpoint",
                               gs_weight_format_name(f), gs_weight_format_name(own),
                               gs_weight_format_name(own));
        *out = own;
        return 0;
    }
    *out = f == GS_WEIGHTS_AUTO ? auto_format(p, cfg) : f == GS_WEIGHTS_ASIS ? own : f;
    return 0;
}

int gs_model_load(const gs_model_params *p, gs_model **out, gs_diag *d)
{
    *out = NULL;
    if (!p || !p->dir || !p->be)
        return gs_diag_set(d, GS_EINVAL, "model: no folder or backend given");
    struct stat sb;
    if (stat(p->dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return gs_diag_set(d, GS_ENOENT, "model: %s is not a folder", p->dir);
    gs_model *m = calloc(1, sizeof *m);
    if (!m)
        return GS_ENOMEM;
    m->be = p->be;
    int rc = gs_model_config_load(p->dir, &m->cfg, d);
    if (rc) {
        free(m);
        return rc;
    }
    double t0 = now_s();
    gs_weight_format fmt = GS_WEIGHTS_BF16;
    rc = choose_format(p, &m->cfg, &fmt, d);
    if (rc) {
        /* nothing loaded */
    } else if (p->dummy_weights) {
        rc = gs_weights_dummy(p->be, &m->cfg, fmt, p->seed, &m->w, d);
    } else {
        gs_st *st = NULL;
        rc = gs_st_open(p->dir, d, &st);
        if (!rc) {
            progress_state ps = {p->progress && isatty(STDERR_FILENO), t0, 0};
            rc = gs_weights_load(p->be, &m->cfg, st, fmt, progress_cb, &ps, &m->w, d);
            gs_st_free(st);
        }
    }
    if (rc) {
        free(m);
        return rc;
    }
    gs_log_info("model: %s %s weights ready: %.2f GB on %s in %.2fs",
                p->dummy_weights ? "dummy" : "checkpoint", gs_weight_format_name(m->w->fmt),
                m->w->bytes / 1e9, gs_backend_name(p->be), now_s() - t0);
    *out = m;
    return 0;
}

void gs_model_free(gs_model *m)
{
    if (!m)
        return;
    gs_model_disable_graphs(m);
    gs_weights_free(m->be, m->w);
    free(m);
}

const gs_model_config *gs_model_get_config(const gs_model *m)
{
    return &m->cfg;
}

gs_backend *gs_model_backend(const gs_model *m)
{
    return m->be;
}

size_t gs_model_weight_bytes(const gs_model *m)
{
    return m->w->bytes;
}

gs_weight_format gs_model_weight_format(const gs_model *m)
{
    return m->w->fmt;
}

void gs_model_set_tap(gs_model *m, gs_model_tap_fn fn, void *user)
{
    m->tap = fn;
    m->tap_user = user;
}

void gs_model_set_abort(gs_model *m, int (*fn)(void *user), void *user)
{
    m->abort_fn = fn;
    m->abort_user = user;
}

/* ---- image embedding buffers -------------------------------------------- */

struct gs_model_emb {
    gs_backend *be;
    gs_mat m; /* [rows, out_hidden] act dtype, owns data */
};

int gs_model_emb_new(gs_model *m, int64_t rows, gs_model_emb **out)
{
    *out = NULL;
    if (rows < 1)
        return GS_EINVAL;
    gs_model_emb *e = malloc(sizeof *e);
    if (!e)
        return GS_ENOMEM;
    gs_dtype act = gs_backend_act_dtype(m->be);
    int64_t cols = m->cfg.vision.out_hidden_size;
    e->be = m->be;
    e->m = gs_mat_make(gs_buf_alloc(m->be, (size_t)(rows * cols) * gs_dtype_size(act)), act, rows,
                       cols);
    if (!e->m.data) {
        free(e);
        return GS_ENOMEM;
    }
    *out = e;
    return 0;
}

void gs_model_emb_free(gs_model_emb *e)
{
    if (!e)
        return;
    gs_buf_free(e->be, e->m.data);
    free(e);
}

int64_t gs_model_emb_rows(const gs_model_emb *e)
{
    return e->m.rows;
}

size_t gs_model_emb_bytes(const gs_model_emb *e)
{
    return (size_t)(e->m.rows * e->m.cols) * gs_dtype_size(e->m.dt);
}

gs_mat gs_model_emb_mat(const gs_model_emb *e)
{
    return e->m;
}

int gs_model_emb_copy_rows(gs_model_emb *dst, int64_t dst_row, const gs_model_emb *src,
                           int64_t src_row, int64_t n)
{
    if (n < 1 || dst_row < 0 || src_row < 0 || dst_row + n > dst->m.rows ||
        src_row + n > src->m.rows || dst->be != src->be)
        return GS_EINVAL;
    return gs_k_copy(dst->be, gs_mat_rows(dst->m, dst_row, n), gs_mat_rows(src->m, src_row, n));
}

int gs_model_mem_info(const gs_model *m, size_t *free_bytes, size_t *total_bytes)
{
    return gs_backend_mem_info(m->be, free_bytes, total_bytes);
}

size_t gs_model_act_bytes(const gs_model *m, int32_t n_tokens, int32_t n_logits)
{
    const gs_text_config *tc = &m->cfg.text;
    const size_t es = gs_dtype_size(gs_backend_act_dtype(m->be));
    const size_t n = (size_t)(n_tokens > 0 ? n_tokens : 1),
                 nl = (size_t)(n_logits > 0 ? n_logits : 1);
    const size_t H = (size_t)tc->hidden_size, I = (size_t)tc->intermediate_size;
    const size_t qd = (size_t)tc->num_attention_heads * (size_t)tc->head_dim;
    const size_t kvd = (size_t)tc->num_key_value_heads * (size_t)tc->head_dim;
    /* text.c's forward: embeddings (image rows included), the layer
     * activations, the last hidden rows and F32 logits. */
    size_t text = 2 * n * H * es + n * (3 * H + qd + 2 * kvd + qd + 2 * I + I) * es + nl * H * es +
                  nl * (size_t)tc->vocab_size * 4 + 64 * n + (1 << 16);
    const int64_t mm = (int64_t)m->cfg.vision.spatial_merge_size * m->cfg.vision.spatial_merge_size;
    size_t vision = gs_vision_acts_bytes(m, (int64_t)n * mm) + n * H * es;
    return text + vision;
}

int gs_model_graphs_pay(const gs_model *m)
{
    return gs_backend_get_kind(m->be) == GS_BACKEND_CUDA;
}

/* ---- KV cache ---------------------------------------------------------- */

static size_t kv_layer_bytes(const gs_model *m, int32_t n_pages, int32_t page_size)
{
    const gs_text_config *tc = &m->cfg.text;
    return (size_t)n_pages * (size_t)page_size * (size_t)tc->num_key_value_heads *
           (size_t)tc->head_dim * gs_dtype_size(gs_backend_act_dtype(m->be));
}

size_t gs_kv_cache_page_bytes(const gs_model *m, int32_t page_size)
{
    return 2 * kv_layer_bytes(m, 1, page_size) * (size_t)m->cfg.text.num_hidden_layers;
}

int gs_kv_cache_new(gs_model *m, int32_t n_pages, int32_t page_size, gs_kv_cache **out)
{
    *out = NULL;
    if (n_pages <= 0 || page_size <= 0)
        return GS_EINVAL;
    gs_kv_cache *kv = calloc(1, sizeof *kv);
    int L = m->cfg.text.num_hidden_layers;
    if (!kv || !(kv->layers = calloc((size_t)L, sizeof *kv->layers))) {
        free(kv);
        return GS_ENOMEM;
    }
    kv->m = m;
    kv->n_pages = n_pages;
    kv->page_size = page_size;
    size_t bytes = kv_layer_bytes(m, n_pages, page_size);
    for (int l = 0; l < L; l++) {
        gs_kv_layer *ly = &kv->layers[l];
        ly->n_pages = n_pages;
        ly->page_size = page_size;
        ly->n_kv_heads = m->cfg.text.num_key_value_heads;
        ly->head_dim = m->cfg.text.head_dim;
        ly->k = gs_buf_alloc(m->be, bytes);
        ly->v = gs_buf_alloc(m->be, bytes);
        if (!ly->k || !ly->v) {
            gs_kv_cache_free(kv);
            return GS_ENOMEM;
        }
        /* Unwritten slots are never read, but zeroed pages keep NaN
         * garbage out of any kernel that reads a whole tile. */
        gs_buf_zero(m->be, ly->k, bytes);
        gs_buf_zero(m->be, ly->v, bytes);
    }
    *out = kv;
    return 0;
}

void gs_kv_cache_free(gs_kv_cache *kv)
{
    if (!kv)
        return;
    for (int l = 0; l < kv->m->cfg.text.num_hidden_layers; l++) {
        gs_buf_free(kv->m->be, kv->layers[l].k);
        gs_buf_free(kv->m->be, kv->layers[l].v);
    }
    free(kv->layers);
    free(kv);
}

int32_t gs_kv_cache_pages(const gs_kv_cache *kv)
{
    return kv->n_pages;
}

int32_t gs_kv_cache_page_size(const gs_kv_cache *kv)
{
    return kv->page_size;
}

int gs_kv_cache_copy_page(gs_kv_cache *kv, int32_t dst, int32_t src)
{
    if (dst < 0 || src < 0 || dst >= kv->n_pages || src >= kv->n_pages)
        return GS_EINVAL;
    if (dst == src)
        return 0;
    gs_dtype dt = gs_backend_act_dtype(kv->m->be);
    int64_t row = (int64_t)kv->layers[0].n_kv_heads * kv->layers[0].head_dim;
    for (int l = 0; l < kv->m->cfg.text.num_hidden_layers; l++) {
        void *bufs[2] = {kv->layers[l].k, kv->layers[l].v};
        for (int j = 0; j < 2; j++) {
            gs_mat all = gs_mat_make(bufs[j], dt, (int64_t)kv->n_pages * kv->page_size, row);
            int rc =
                gs_k_copy(kv->m->be, gs_mat_rows(all, (int64_t)dst * kv->page_size, kv->page_size),
                          gs_mat_rows(all, (int64_t)src * kv->page_size, kv->page_size));
            if (rc)
                return rc;
        }
    }
    return 0;
}
