/* graph.c - gs_graph_* of kernels.h: the generic recorder for backends
 * without native graphs (the CPU), the wrapper around native ones (CUDA
 * stream capture), and the one place an op is run or recorded.
 *
 * A recording is a struct gs_graph hung on be->rec from gs_graph_begin to
 * gs_graph_end / gs_graph_abort, for both kinds of backend:
 *   - generic (vtable graph entries NULL): gs_op_submit appends each
 *     validated op (by value, graph_impl.h) to g->ops; gs_graph_launch
 *     replays them in order through the vtable and stops at the first error;
 *   - native: gs_op_submit runs the op (the backend is capturing its
 *     stream) and g->native receives the backend's handle at the end.
 * Frees asked for while recording (gs_buf_free, gs_weight_free,
 * gs_graph_free) are queued on the recording and done once it stops, so
 * that nothing in the middle of a capture touches the allocator and nothing
 * leaks (gs_buf_free has no way to report a refusal).
 * Threading: the backend's thread only, like every verb. */
#include <stdlib.h>

#include "common/log.h"
#include "kernels/graph_impl.h"

typedef struct {
    gs_defer_kind kind;
    void *p;
} deferred;

struct gs_graph {
    gs_backend *be; /* the backend that recorded it */
    void *native;   /* the backend's handle (native path), else NULL */
    gs_op *ops;     /* the recorded ops (generic path) */
    size_t n_ops, cap_ops;
    deferred *def; /* frees queued while this recording runs */
    size_t n_def, cap_def;
};

static const char *op_name(gs_op_kind k)
{
    static const char *const names[] = {
        [GS_OP_MATMUL] = "matmul",
        [GS_OP_RMSNORM] = "rmsnorm",
        [GS_OP_ADD_RMSNORM] = "add_rmsnorm",
        [GS_OP_LAYERNORM] = "layernorm",
        [GS_OP_ADD] = "add",
        [GS_OP_SILU_MUL] = "silu_mul",
        [GS_OP_GELU] = "gelu",
        [GS_OP_SOFTMAX] = "softmax",
        [GS_OP_EMBED] = "embed",
        [GS_OP_GATHER_ROWS] = "gather_rows",
        [GS_OP_COPY] = "copy",
        [GS_OP_ROPE_TEXT] = "rope_text",
        [GS_OP_ROPE_VISION] = "rope_vision",
        [GS_OP_POSEMBED_ADD] = "posembed_add",
        [GS_OP_ATTENTION] = "attention",
        [GS_OP_KV_STORE] = "kv_store",
        [GS_OP_ATTENTION_PAGED] = "attention_paged",
        [GS_OP_SAMPLE] = "sample",
    };
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}

static const gs_vec *opt_vec(const gs_vec *v)
{
    return v->data ? v : NULL;
}

/* Calls the backend's vtable entry for op. */
static int op_run(gs_backend *be, const gs_op *op)
{
    const gs_backend_ops *t = be->ops;
    switch (op->kind) {
    case GS_OP_MATMUL:
        return t->matmul(be, op->matmul.out, op->matmul.x, op->matmul.w, opt_vec(&op->matmul.bias),
                         op->matmul.flags);
    case GS_OP_RMSNORM:
        return t->rmsnorm(be, op->norm.out, op->norm.x, &op->norm.w, op->norm.eps);
    case GS_OP_ADD_RMSNORM:
        return t->add_rmsnorm(be, op->norm.out, op->norm.resid, op->norm.x, &op->norm.w,
                              op->norm.eps);
    case GS_OP_LAYERNORM:
        return t->layernorm(be, op->norm.out, op->norm.x, &op->norm.w, opt_vec(&op->norm.b),
                            op->norm.eps);
    case GS_OP_ADD:
        return t->add(be, op->ew.out, op->ew.a, op->ew.b);
    case GS_OP_SILU_MUL:
        return t->silu_mul(be, op->ew.out, op->ew.a);
    case GS_OP_GELU:
        return t->gelu(be, op->ew.out, op->ew.a);
    case GS_OP_SOFTMAX:
        return t->softmax(be, op->ew.out, op->ew.a);
    case GS_OP_COPY:
        return t->copy(be, op->ew.out, op->ew.a);
    case GS_OP_EMBED:
        return t->embed(be, op->gather.out, op->gather.table, op->gather.idx);
    case GS_OP_GATHER_ROWS:
        return t->gather_rows(be, op->gather.out, op->gather.x, op->gather.idx);
    case GS_OP_ROPE_TEXT:
        return t->rope_text(be, op->rope_text.qk, op->rope_text.pos, &op->rope_text.p);
    case GS_OP_ROPE_VISION:
        return t->rope_vision(be, op->rope_vision.qk, op->rope_vision.pos, &op->rope_vision.p);
    case GS_OP_POSEMBED_ADD:
        return t->posembed_add(be, op->posembed.x, op->posembed.table, op->posembed.side,
                               op->posembed.hw);
    case GS_OP_ATTENTION:
        return t->attention(be, op->attention.out, op->attention.q, op->attention.k,
                            op->attention.v, op->attention.cu, op->attention.n_seqs,
                            op->attention.max_len, &op->attention.p);
    case GS_OP_KV_STORE:
        return t->kv_store(be, &op->kv_store.kv, op->kv_store.k, op->kv_store.v,
                           op->kv_store.slots);
    case GS_OP_ATTENTION_PAGED:
        return t->attention_paged(be, op->paged.out, op->paged.q, &op->paged.kv, &op->paged.b,
                                  &op->paged.p);
    case GS_OP_SAMPLE:
        return t->sample(be, op->sample.out_ids, op->sample.logits, op->sample.rows,
                         op->sample.pen_off, op->sample.pen_ids, op->sample.pen_cnt);
    }
    gs_log_error("kernels: unknown op kind %d", (int)op->kind);
    return GS_EINVAL;
}

/* Grows an array of `size`-byte elements to hold at least n + 1. */
static int grow(void **arr, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return 0;
    size_t ncap = *cap ? 2 * *cap : 64;
    if (ncap > SIZE_MAX / size)
        return GS_ENOMEM;
    void *p = realloc(*arr, ncap * size);
    if (!p)
        return GS_ENOMEM;
    *arr = p;
    *cap = ncap;
    return 0;
}

int gs_op_submit(gs_backend *be, const gs_op *op)
{
    if (!be->recording || be->ops->graph_begin)
        return op_run(be, op);
    gs_graph *g = be->rec;
    if (grow((void **)&g->ops, &g->cap_ops, g->n_ops, sizeof *g->ops)) {
        gs_log_error("gs_graph: out of host memory recording op %zu (%s)", g->n_ops,
                     op_name(op->kind));
        return GS_ENOMEM;
    }
    g->ops[g->n_ops++] = *op;
    return 0;
}

/* ---- deferred frees ------------------------------------------------------ */

static void graph_destroy(gs_graph *g);

static void release(gs_backend *be, gs_defer_kind kind, void *p)
{
    switch (kind) {
    case GS_DEFER_BUF:
        be->ops->free(be, p);
        break;
    case GS_DEFER_WEIGHT:
        be->ops->weight_free(be, (gs_weight *)p);
        break;
    case GS_DEFER_GRAPH:
        graph_destroy((gs_graph *)p);
        break;
    }
}

void gs_graph_defer_free(gs_backend *be, gs_defer_kind kind, void *p)
{
    gs_graph *g = be->rec;
    if (grow((void **)&g->def, &g->cap_def, g->n_def, sizeof *g->def)) {
        gs_log_error("gs_graph: out of host memory deferring a free; freeing it now");
        release(be, kind, p);
        return;
    }
    g->def[g->n_def].kind = kind;
    g->def[g->n_def].p = p;
    g->n_def++;
}

/* Runs the frees queued on g (the recording has stopped), in order. */
static void run_deferred(gs_graph *g)
{
    for (size_t i = 0; i < g->n_def; i++)
        release(g->be, g->def[i].kind, g->def[i].p);
    free(g->def);
    g->def = NULL;
    g->n_def = g->cap_def = 0;
}

/* ---- the gs_graph_* verbs ------------------------------------------------ */

static void graph_destroy(gs_graph *g)
{
    if (g->native)
        g->be->ops->graph_free(g->be, g->native);
    free(g->ops);
    free(g->def); /* empty: a finished graph has run its deferred frees */
    free(g);
}

int gs_graph_begin(gs_backend *be)
{
    if (!be)
        return GS_EINVAL;
    if (be->recording) {
        gs_log_error("gs_graph_begin: a recording is already running");
        return GS_EBUSY;
    }
    gs_graph *g = calloc(1, sizeof *g);
    if (!g)
        return GS_ENOMEM;
    g->be = be;
    if (be->ops->graph_begin) {
        int rc = be->ops->graph_begin(be);
        if (rc) {
            free(g);
            return rc;
        }
    }
    be->rec = g;
    be->recording = 1;
    return 0;
}

/* Detaches the running recording from be (before anything is released). */
static gs_graph *detach(gs_backend *be)
{
    gs_graph *g = be->rec;
    be->rec = NULL;
    be->recording = 0;
    return g;
}

void gs_graph_abort(gs_backend *be)
{
    if (!be || !be->recording)
        return;
    gs_graph *g = detach(be);
    if (be->ops->graph_abort)
        be->ops->graph_abort(be);
    run_deferred(g);
    graph_destroy(g);
}

int gs_graph_end(gs_backend *be, gs_graph **out)
{
    if (out)
        *out = NULL;
    if (!be || !be->recording) {
        gs_log_error("gs_graph_end: nothing is recording");
        return GS_EINVAL;
    }
    if (!out) {
        gs_log_error("gs_graph_end: out is NULL; the recording is dropped");
        gs_graph_abort(be);
        return GS_EINVAL;
    }
    gs_graph *g = detach(be);
    int rc = be->ops->graph_end ? be->ops->graph_end(be, &g->native) : 0;
    run_deferred(g);
    if (rc) {
        g->native = NULL; /* a failed end leaves no handle */
        graph_destroy(g);
        return rc;
    }
    *out = g;
    return 0;
}

int gs_graph_recording(const gs_backend *be)
{
    return be ? be->recording : 0;
}

int gs_graph_launch(gs_backend *be, gs_graph *g)
{
    if (!be || !g) {
        gs_log_error("gs_graph_launch: NULL backend or graph");
        return GS_EINVAL;
    }
    if (be->recording) {
        gs_log_error("gs_graph_launch: not allowed while a graph is being recorded");
        return GS_EINVAL;
    }
    if (g->be != be) {
        gs_log_error("gs_graph_launch: the graph was recorded on another backend");
        return GS_EINVAL;
    }
    if (g->native)
        return be->ops->graph_launch(be, g->native);
    for (size_t i = 0; i < g->n_ops; i++) {
        int rc = op_run(be, &g->ops[i]);
        if (rc) {
            gs_log_error("gs_graph_launch: op %zu of %zu (%s) failed: %s", i, g->n_ops,
                         op_name(g->ops[i].kind), gs_err_name(rc));
            return rc;
        }
    }
    return 0;
}

void gs_graph_free(gs_backend *be, gs_graph *g)
{
    if (!g)
        return;
    if (be != g->be)
        gs_log_warn("gs_graph_free: the graph belongs to another backend; freeing it there");
    if (g->be->recording) {
        gs_log_warn("gs_graph_free: called while a graph is being recorded; freed when it ends");
        gs_graph_defer_free(g->be, GS_DEFER_GRAPH, g);
        return;
    }
    graph_destroy(g);
}
