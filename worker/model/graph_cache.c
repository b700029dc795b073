/* graph_cache.c - recorded graphs keyed by two ints, and the
 * replay-or-record step that the decode and vision graph paths share
 * (model_impl.h).
 *
 * A key without a graph runs its ops op by op first (which also creates
 * lazily made backend state: split-KV scratch, bias copies, GEMM plans),
 * then records them; a stale graph (GS_EAGAIN) is dropped and made again
 * the same way. A failed recording never fails the call (the ops already
 * ran): it is logged, the cache is emptied and stops recording for good.
 * Owns the graphs in it. Single-threaded, as the model. */
#include "model_impl.h"

#include <stdlib.h>

#include "common/log.h"

void gs_graph_cache_clear(gs_backend *be, gs_graph_cache *c)
{
    for (int i = 0; i < c->n; i++)
        gs_graph_free(be, c->e[i].g);
    c->n = 0;
}

void gs_graph_cache_free(gs_backend *be, gs_graph_cache *c)
{
    gs_graph_cache_clear(be, c);
    free(c->e);
    c->e = NULL;
    c->cap = 0;
}

static gs_graph_cache_entry *find(gs_graph_cache *c, int32_t a, int32_t b)
{
    for (int i = 0; i < c->n; i++)
        if (c->e[i].a == a && c->e[i].b == b)
            return &c->e[i];
    return NULL;
}

/* Records body's ops under (a, b); see the file comment for failures. */
static int record(gs_model *m, gs_graph_cache *c, int32_t a, int32_t b, gs_graph_body_fn body,
                  void *ctx, const char *what)
{
    if (c->n == c->cap) {
        int ncap = c->cap ? 2 * c->cap : 16;
        gs_graph_cache_entry *ne = realloc(c->e, sizeof *ne * (size_t)ncap);
        if (!ne)
            return 0;
        c->e = ne;
        c->cap = ncap;
    }
    gs_graph *g = NULL;
    int rc = gs_graph_begin(m->be);
    if (!rc) {
        rc = body(m, ctx);
        if (rc)
            gs_graph_abort(m->be);
        else
            rc = gs_graph_end(m->be, &g);
    }
    if (rc) {
        gs_log_warn("model: recording %s (%d, %d) failed (%s); it runs op by op from now on", what,
                    a, b, gs_err_name(rc));
        c->no_record = 1;
        gs_graph_cache_clear(m->be, c);
        return 0;
    }
    c->e[c->n++] = (gs_graph_cache_entry){a, b, g};
    return 1;
}

int gs_graph_cache_run(gs_model *m, gs_graph_cache *c, int32_t a, int32_t b, gs_graph_body_fn body,
                       void *ctx, const char *what, gs_graph_run_how *how)
{
    gs_graph_cache_entry *e = find(c, a, b);
    if (e) {
        int rc = gs_graph_launch(m->be, e->g);
        if (rc != GS_EAGAIN) {
            *how = GS_GRAPH_REPLAYED;
            return rc;
        }
        gs_graph_free(m->be, e->g); /* stale: run and record again */
        *e = c->e[--c->n];
    }
    int rc = body(m, ctx);
    if (rc)
        return rc;
    *how = GS_GRAPH_EAGER;
    if (!c->no_record && record(m, c, a, b, body, ctx, what))
        *how = GS_GRAPH_RECORDED;
    return 0;
}
