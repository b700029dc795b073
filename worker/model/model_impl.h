/* model_impl.h - the inside of gs_model, shared by model.c, vision.c and
 * text.c only. */
#ifndef GS_MODEL_IMPL_H
#define GS_MODEL_IMPL_H

#include "worker/model/model.h"
#include "worker/model/weights.h"

struct gs_model {
    gs_model_config cfg;
    gs_backend *be;
    gs_weights *w;
    gs_model_tap_fn tap;
    void *tap_user;
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

static inline void gs_model_tap(gs_model *m, const char *name, gs_mat x)
{
    if (m->tap)
        m->tap(m->tap_user, name, x);
}

#endif
