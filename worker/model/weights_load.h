/* weights_load.h - the checkpoint readers behind weights.c (internal to
 * worker/model): the loader state of one load or dry binding pass, and the
 * verbs that bind one tensor (or a concatenation of several) to a backend
 * weight, mapped in place, copied, quantized at load, or pre-quantized
 * (weights_read.c). weights.c walks the model's tensors with them. */
#ifndef GS_WEIGHTS_LOAD_H
#define GS_WEIGHTS_LOAD_H

#include "weights.h"

typedef struct {
    gs_backend *be;
    const gs_st *st;
    gs_diag *d;
    gs_weights_progress_fn progress;
    void *user;
    size_t done, total;
    gs_weights *w;
    /* Binding pass (dry = 1): the load_* helpers only look their tensors up
     * (find) and mark them in used[], by gs_st_at index; nothing is read or
     * made. Then tensors nobody looked up are an error, before any data is
     * touched. used is NULL for dummy weights. */
    int dry;
    unsigned char *used;       /* [gs_st_count] */
    gs_weight_format fmt;      /* load-time quantization (INT8 / INT4), else none */
    int prequant;              /* the folder holds quantized tensors (cfg->quant_bits) */
    gs_weights_visit_fn visit; /* gs_weights_plan: told of each matrix in the binding pass */
    void *visit_user;
} gs_wl_loader;

/* The first tensor of st that the binding pass did not use, and how many
 * there are: a config with fewer layers (or blocks) than the checkpoint
 * would otherwise load and run a different model without a word. */
int gs_wl_check_all_used(gs_wl_loader *L);
/* Row-wise concatenation of n tensors with the same cols into one weight;
 * all parts must share a dtype. perm: optional element permutation applied
 * within each row of the single part (downsample), NULL for none. */
int gs_wl_load_cat(gs_wl_loader *L, const char *const *names, const int64_t *rows, int n,
                   int64_t cols, gs_weight **out);
/* Downsample Conv2d [o, c, 2, 2] -> [o, (kh*2+kw)*c + ci]. */
int gs_wl_load_downsample(gs_wl_loader *L, const char *name, int64_t o, int64_t c, gs_weight **out);
/* One [rows, cols] matrix: in place in the mapping when the backend can
 * compute from it as it is, else a copy (then the pages are evicted). */
int gs_wl_load_mat(gs_wl_loader *L, const char *name, int64_t rows, int64_t cols, gs_weight_class c,
                   gs_weight **out);
int gs_wl_load_vec(gs_wl_loader *L, const char *name, int64_t n, gs_vec *out);
/* Concatenation of n F32-converted vectors into one gs_vec. A NULL name
 * contributes zeros (no bias). */
int gs_wl_load_vec_cat(gs_wl_loader *L, const char *const *names, const int64_t *lens, int n,
                       gs_vec *out);

#endif
