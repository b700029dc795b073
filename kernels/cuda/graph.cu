/* graph.cu - the CUDA backend's native graphs behind gs_graph_* (kernels.h,
 * cuda_ops.h): stream capture of the context's stream, instantiated once
 * at the end, replayed with cudaGraphLaunch.
 *
 * A capture runs in cudaStreamCaptureModeThreadLocal, so only this thread's
 * unsafe calls could break it; the context's `capturing` flag makes
 * uploads, downloads, syncs, allocations, scratch growth and new bias copies
 * refuse instead (kernels.c refuses the host-side verbs before they get
 * here, for every backend alike). Each handle remembers the scratch
 * generation of its capture: growing the scratch buffer or dropping a BF16
 * bias copy bumps it (backend.cu), and a handle from an older generation is
 * stale: _launch returns GS_EAGAIN (and keeps returning it) until the caller
 * frees the handle and records again.
 * Threading: the backend's thread only. */
#include <stdlib.h>

#include "kernels/cuda/common.cuh"

/* The handle gs_cuda_graph_end returns (void * to kernels.c). */
typedef struct {
    cudaGraphExec_t exec; /* NULL for an empty capture: launch does nothing */
    unsigned gen;         /* c->scratch_gen at capture */
} cu_graph;

int gs_cuda_graph_begin(gs_cuda *c)
{
    if (c->capturing) {
        gs_log_error("cuda graph: a capture is already running");
        return GS_EBUSY;
    }
    cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
    GS_CU_TRY(cudaStreamIsCapturing(c->stream, &st));
    if (st != cudaStreamCaptureStatusNone) {
        gs_log_error("cuda graph: the stream is already being captured");
        return GS_EBUSY;
    }
    GS_CU_TRY(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal));
    c->capturing = 1;
    return 0;
}

/* Ends the running capture; on success *graph owns the captured graph.
 * The context is out of capture mode afterwards either way. */
static int end_capture(gs_cuda *c, cudaGraph_t *graph)
{
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

void gs_cuda_graph_abort(gs_cuda *c)
{
    if (!c->capturing)
        return;
    cudaGraph_t graph = NULL;
    if (end_capture(c, &graph) == 0 && graph)
        cudaGraphDestroy(graph);
}

int gs_cuda_graph_end(gs_cuda *c, void **native)
{
    *native = NULL;
    if (!c->capturing) {
        gs_log_error("cuda graph: end without begin");
        return GS_EINVAL;
    }
    cudaGraph_t graph = NULL;
    int rc = end_capture(c, &graph);
    if (rc)
        return rc;
    cu_graph *h = (cu_graph *)calloc(1, sizeof *h);
    if (!h) {
        cudaGraphDestroy(graph);
        return GS_ENOMEM;
    }
    /* An empty capture (no op issued, as on the CPU) needs no executable. */
    size_t n_nodes = 0;
    const char *what = "cudaGraphGetNodes";
    cudaError_t e = cudaGraphGetNodes(graph, NULL, &n_nodes);
    if (e == cudaSuccess && n_nodes > 0) {
        what = "cudaGraphInstantiate";
        e = cudaGraphInstantiate(&h->exec, graph, 0);
    }
    cudaGraphDestroy(graph); /* the executable keeps what it needs */
    if (e != cudaSuccess) {
        free(h);
        cudaGetLastError();
        return gs_cuda_err(e, what, __FILE__, __LINE__);
    }
    h->gen = c->scratch_gen;
    *native = h;
    return 0;
}

int gs_cuda_graph_launch(gs_cuda *c, void *native)
{
    cu_graph *h = (cu_graph *)native;
    if (c->capturing) {
        gs_log_error("cuda graph: launch during a capture");
        return GS_EINVAL;
    }
    if (!h->exec)
        return 0;
    if (h->gen != c->scratch_gen) {
        gs_log_info("cuda graph: scratch memory or a bias copy moved since the capture "
                    "(generation %u, now %u); record it again",
                    h->gen, c->scratch_gen);
        return GS_EAGAIN;
    }
    GS_CU_TRY(cudaGraphLaunch(h->exec, c->stream));
    return 0;
}

void gs_cuda_graph_free(gs_cuda *c, void *native)
{
    cu_graph *h = (cu_graph *)native;
    if (!h)
        return;
    /* A launch of it may still be queued: let the stream drain first
     * (never during a capture: kernels.c defers frees until it ends). */
    if (h->exec) {
        if (!c->capturing && cudaStreamSynchronize(c->stream) != cudaSuccess)
            cudaGetLastError(); /* reported by the next sync, if sticky */
        cudaGraphExecDestroy(h->exec);
    }
    free(h);
}
