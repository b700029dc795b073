/* model_impl.h - the inside of gs_model, shared by model.c, vision.c and
 * text.c only. */
#ifndef GS_MODEL_IMPL_H
#define GS_MODEL_IMPL_H

#include "worker/model/model.h"
#include "worker/model/weights.h"

typedef struct gs_decode_ws gs_decode_ws; /* decode.c */
typedef struct gs_vision_ws gs_vision_ws; /* vision_graph.c */

struct gs_model {
    gs_model_config cfg;
    gs_backend *be;
    gs_weights *w;
    gs_model_tap_fn tap;
    void *tap_user;
    gs_decode_ws *dec; /* graph workspace (gs_model_enable_graphs), or NULL */
    gs_vision_ws *vis; /* vision graph workspace, grown on demand, or NULL */
    int graphs;        /* gs_model_enable_graphs was called */
    gs_model_graph_stats gstats;
    int (*abort_fn)(void *user); /* gs_model_set_abort, or NULL */
    void *abort_user;
};

struct gs_kv_cache {
    gs_model *m;
    int32_t n_pages, page_size;
    gs_kv_layer *layers; /* [n_layers] */
};

/* A bump allocator over one backend buffer, for the activations of one
 * call. gs_scratch_take returns NULL when the reserved size is exceeded. */
typedef struct {
    gs_backend *be;
    char *base;
    size_t used, cap;
} gs_scratch;

int gs_scratch_init(gs_scratch *s, gs_backend *be, size_t cap);
void *gs_scratch_take(gs_scratch *s, size_t bytes);
void gs_scratch_release(gs_scratch *s);
/* A [rows, cols] act-dtype matrix from the scratch (data NULL if full). */
gs_mat gs_scratch_mat(gs_scratch *s, gs_dtype dt, int64_t rows, int64_t cols);

/* In the forward passes: rc = x; on an error jump to the function's
 * `done:` cleanup. */
#define CK(x)                                                                                      \
    do {                                                                                           \
        rc = (x);                                                                                  \
        if (rc)                                                                                    \
            goto done;                                                                             \
    } while (0)

/* Recorded graphs keyed by two ints, and the replay-or-record step the
 * decode and vision graph paths share (graph_cache.c). */
typedef int (*gs_graph_body_fn)(gs_model *m, void *ctx); /* kernels.h verbs only */
typedef struct {
    int32_t a, b;
    gs_graph *g;
} gs_graph_cache_entry;
typedef struct {
    gs_graph_cache_entry *e;
    int n, cap;
    int no_record; /* a recording failed: op by op from now on */
} gs_graph_cache;
typedef enum { GS_GRAPH_REPLAYED, GS_GRAPH_RECORDED, GS_GRAPH_EAGER } gs_graph_run_how;
/* Replays the graph of (a, b); without one (or a stale one) runs body op
 * by op and records it under (a, b) unless recording stopped. *how says
 * which happened (set when 0 is returned). what names the ops in the log
 * line of a failed recording. */
int gs_graph_cache_run(gs_model *m, gs_graph_cache *c, int32_t a, int32_t b, gs_graph_body_fn body,
                       void *ctx, const char *what, gs_graph_run_how *how);
/* Frees every graph (keeps no_record); _free also frees the array. */
void gs_graph_cache_clear(gs_backend *be, gs_graph_cache *c);
void gs_graph_cache_free(gs_backend *be, gs_graph_cache *c);

/* The text decoder's activations for n = x.rows tokens (text.c). */
typedef struct {
    gs_mat x, h, o; /* [n, hidden] */
    gs_mat qkv;     /* [n, q + 2 kv] */
    gs_mat at;      /* [n, q] */
    gs_mat gu;      /* [n, 2 intermediate] */
    gs_mat a;       /* [n, intermediate] */
} gs_text_acts;

/* Host-side checks of a batch (ids, slots, pages, rows in range). */
int gs_text_check_batch(const gs_model *m, const gs_kv_cache *kv, const gs_text_batch *b);
/* Every decoder layer over t->x (the input embeddings, then the residual
 * stream); t->h ends as the final-normed hidden states. pos / slots and the
 * arrays of pb in backend memory. Kernels.h verbs only: recordable. */
int gs_text_layers(gs_model *m, gs_kv_cache *kv, const gs_text_acts *t, const int32_t *pos,
                   const int32_t *slots, const gs_paged_batch *pb);
/* Samples the rows of lg (F32 logits in backend memory, overwritten) with
 * sb (host, already checked by gs_model_step) and downloads the ids
 * (text.c). */
int gs_model__sample(gs_model *m, gs_mat lg, const gs_sample_batch *sb, int32_t *ids);
/* Runs b through a decode graph when it qualifies (*handled = 1, returns
 * the step's code); else *handled = 0 (decode.c). */
int gs_decode_step(gs_model *m, gs_kv_cache *kv, const gs_text_batch *b, const gs_sample_batch *s,
                   int32_t *ids, int *handled);
void gs_decode_ws_free(gs_model *m);

/* The vision tower's activations for N patches (vision.c). */
typedef struct {
    gs_mat px32;                 /* [N, patch_dim] F32: the pixels as uploaded */
    gs_mat px;                   /* px32 in the act dtype (px32 itself on F32 backends) */
    gs_mat x, h, qkv, at, gu, a; /* per patch */
    gs_mat dn, y, mgu, ma;       /* per merged token */
} gs_vision_acts;
size_t gs_vision_acts_bytes(const gs_model *m, int64_t N);
int gs_vision_acts_make(const gs_model *m, gs_scratch *s, int64_t N, gs_vision_acts *v);
/* Per-patch coordinates hw4 [4, N] (h, w, gh, gw) and segments cu
 * [n_seg + 1] of the images' grids; GS_EINVAL if they do not add up to N. */
int gs_vision_coords(const int32_t (*grids)[3], int32_t n_images, int32_t merge, int64_t N,
                     int32_t *hw4, int32_t *cu, int32_t *n_seg, int32_t *max_len);
/* The tower's ops from v->px32 (uploaded) to out. Recordable. */
int gs_vision_body(gs_model *m, const gs_vision_acts *v, const int32_t *d_hw4, const int32_t *d_cu,
                   int32_t n_seg, int32_t max_len, gs_mat out);
/* Runs a batch through a vision graph when graphs are on and it fits
 * (*handled = 1, returns the code); else *handled = 0 (vision_graph.c). */
int gs_vision_graph_run(gs_model *m, const float *pixels, int64_t N, const int32_t *hw4,
                        const int32_t *cu, int32_t n_seg, int32_t max_len, gs_mat out,
                        int *handled);
void gs_vision_ws_free(gs_model *m);
int gs_vision_ws_graphs(const gs_model *m);
size_t gs_vision_ws_bytes(const gs_model *m);

/* GS_ECANCELED when the abort hook fires (not while recording a graph:
 * a recorded graph must hold every op), else 0. */
static inline int gs_model__check_abort(gs_model *m)
{
    return m->abort_fn && !gs_graph_recording(m->be) && m->abort_fn(m->abort_user) ? GS_ECANCELED
                                                                                   : 0;
}

static inline void gs_model_tap(gs_model *m, const char *name, gs_mat x)
{
    if (m->tap)
        m->tap(m->tap_user, name, x);
}

#endif
