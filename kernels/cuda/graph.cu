/* graph.cu - capture / replay of stream work as CUDA graphs (graph.h).
 *
 * Owns the instantiated graph executables (one per key) of one backend.
 * A capture runs in cudaStreamCaptureModeThreadLocal on the backend's
 * stream; the context's `capturing` flag makes uploads, downloads, syncs,
 * allocations and scratch growth refuse instead of breaking the capture.
 * Each graph remembers the scratch generation it was captured with; scratch
 * reallocation makes it stale (GS_EAGAIN at launch). */
#include <stdlib.h>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/graph.h"

typedef struct {
    int32_t key;
    cudaGraphExec_t exec;
    unsigned gen;
} gentry;

struct gs_cuda_graphs {
    gs_cuda *c;
    gentry *e;
    int n, cap;
    int capturing;
};

int gs_cuda_graphs_new(gs_backend *be, gs_cuda_graphs **out)
{
    *out = NULL;
    gs_cuda *c = gs_cuda_of(be);
    if (!c) {
        gs_log_error("cuda graphs: not a CUDA backend");
        return GS_ENOTSUP;
    }
    gs_cuda_graphs *g = (gs_cuda_graphs *)calloc(1, sizeof *g);
    if (!g)
        return GS_ENOMEM;
    g->c = c;
    *out = g;
    return 0;
}

static int find(const gs_cuda_graphs *g, int32_t key)
{
    for (int i = 0; i < g->n; i++)
        if (g->e[i].key == key)
            return i;
    return -1;
}

static void drop(gs_cuda_graphs *g, int i)
{
    cudaGraphExecDestroy(g->e[i].exec);
    g->e[i] = g->e[--g->n];
}

void gs_cuda_graph_invalidate(gs_cuda_graphs *g, int32_t key)
{
    if (!g)
        return;
    if (key < 0) {
        while (g->n > 0)
            drop(g, g->n - 1);
        return;
    }
    int i = find(g, key);
    if (i >= 0)
        drop(g, i);
}

void gs_cuda_graphs_free(gs_cuda_graphs *g)
{
    if (!g)
        return;
    if (g->capturing)
        gs_cuda_graph_abort(g);
    gs_cuda_graph_invalidate(g, -1);
    free(g->e);
    free(g);
}

int32_t gs_cuda_graph_bucket(int32_t n)
{
    if (n <= 1)
        return 1;
    if (n <= 2)
        return 2;
    if (n <= 4)
        return 4;
    if (n <= 64)
        return (n + 7) / 8 * 8;
    if (n <= 256)
        return (n + 31) / 32 * 32;
    if (n > INT32_MAX - 127)
        return INT32_MAX;
    return (n + 127) / 128 * 128;
}

int gs_cuda_graph_begin(gs_cuda_graphs *g, int32_t key)
{
    gs_cuda *c = g->c;
    if (g->capturing || c->capturing) {
        gs_log_error("cuda graph %d: a capture is already running", key);
        return GS_EBUSY;
    }
    GS_CU_TRY(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal));
    g->capturing = 1;
    c->capturing = 1;
    return 0;
}

static int end_capture(gs_cuda_graphs *g, cudaGraph_t *graph)
{
    gs_cuda *c = g->c;
    g->capturing = 0;
    c->capturing = 0;
    *graph = NULL;
    cudaError_t e = cudaStreamEndCapture(c->stream, graph);
    if (e != cudaSuccess) {
        if (*graph)
            cudaGraphDestroy(*graph);
        *graph = NULL;
        cudaGetLastError(); /* capture invalidation is not sticky */
        return gs_cuda_err(e, "cudaStreamEndCapture", __FILE__, __LINE__);
    }
    return 0;
}

void gs_cuda_graph_abort(gs_cuda_graphs *g)
{
    if (!g || !g->capturing)
        return;
    cudaGraph_t graph;
    if (end_capture(g, &graph) == 0 && graph)
        cudaGraphDestroy(graph);
}

int gs_cuda_graph_end(gs_cuda_graphs *g, int32_t key)
{
    if (!g->capturing) {
        gs_log_error("cuda graph %d: end without begin", key);
        return GS_EINVAL;
    }
    cudaGraph_t graph;
    int rc = end_capture(g, &graph);
    if (rc)
        return rc;
    cudaGraphExec_t exec;
    cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return gs_cuda_err(e, "cudaGraphInstantiate", __FILE__, __LINE__);
    }
    int i = find(g, key);
    if (i >= 0) {
        cudaGraphExecDestroy(g->e[i].exec);
    } else {
        if (g->n == g->cap) {
            int ncap = g->cap ? 2 * g->cap : 16;
            gentry *ne = (gentry *)realloc(g->e, sizeof *ne * (size_t)ncap);
            if (!ne) {
                cudaGraphExecDestroy(exec);
                return GS_ENOMEM;
            }
            g->e = ne;
            g->cap = ncap;
        }
        i = g->n++;
    }
    g->e[i].key = key;
    g->e[i].exec = exec;
    g->e[i].gen = g->c->scratch_gen;
    return 0;
}

int gs_cuda_graph_has(const gs_cuda_graphs *g, int32_t key)
{
    return g && find(g, key) >= 0;
}

int gs_cuda_graph_launch(gs_cuda_graphs *g, int32_t key)
{
    if (g->capturing) {
        gs_log_error("cuda graph %d: launch during a capture", key);
        return GS_EINVAL;
    }
    int i = find(g, key);
    if (i < 0)
        return GS_ENOENT;
    if (g->e[i].gen != g->c->scratch_gen) {
        gs_log_info("cuda graph %d: scratch memory moved since capture; dropping it", key);
        drop(g, i);
        return GS_EAGAIN;
    }
    GS_CU_TRY(cudaGraphLaunch(g->e[i].exec, g->c->stream));
    return 0;
}
