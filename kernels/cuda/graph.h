/* graph.h - CUDA graph capture and replay of decode steps (CUDA backend
 * only), keyed by a batch-size bucket.
 *
 * A decode step issues ~300-360 kernels; replaying them as one graph
 * removes the per-launch gaps (CUDA-NOTES sec. 5). Usage by the engine:
 *
 *     key = gs_cuda_graph_bucket(n_seqs);           // 1 2 4 8 16 24 32 48 64 ...
 *     if (!gs_cuda_graph_has(g, key)) {
 *         run the step once eagerly at the padded size (allocates scratch,
 *         fills the cuBLASLt caches);
 *         gs_cuda_graph_begin(g, key);
 *         issue the same ops again (kernels.h verbs only: no upload,
 *         download, sync, alloc or free inside);
 *         gs_cuda_graph_end(g, key);                  // or _abort on error
 *     }
 *     upload this step's ids / positions / slots / block tables / kv_len
 *     into the SAME device buffers the capture used, then
 *     gs_cuda_graph_launch(g, key);  gs_buf_download(...logits or ids...);
 *
 * A graph bakes in every pointer and every host-side value of the captured
 * calls: buffer addresses, shapes (the padded batch), max_q / max_kv (the
 * split-KV grid) and the rows of each GEMM. Everything that changes per step
 * must therefore live in device memory at fixed addresses, and padded rows
 * must be harmless (slot -1, kv_len that covers at least the query rows).
 * gs_cuda_graph_launch returns GS_EAGAIN (and drops the graph) when the
 * backend's scratch memory moved since the capture; capture again.
 * Graphs must be invalidated by the caller when the buffers they captured
 * are freed or re-allocated (gs_cuda_graph_invalidate).
 *
 * Threading: the backend's thread only. */
#ifndef GS_CUDA_GRAPH_H
#define GS_CUDA_GRAPH_H

#include <stdint.h>

#include "kernels/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gs_cuda_graphs gs_cuda_graphs; /* opaque */

/* On success *out owns an empty graph set for backend be (free with
 * gs_cuda_graphs_free before the backend). GS_ENOTSUP when be is not CUDA. */
int gs_cuda_graphs_new(gs_backend *be, gs_cuda_graphs **out);
void gs_cuda_graphs_free(gs_cuda_graphs *g); /* NULL: no-op; aborts a capture */

/* The bucket a batch of n (>= 1) sequences pads to: 1, 2, 4, 8, then
 * multiples of 8 up to 64, then of 32 up to 256, then of 128. */
int32_t gs_cuda_graph_bucket(int32_t n);

/* Starts capturing the backend's stream for `key`. Until _end/_abort,
 * kernels.h ops are recorded, not run; uploads, downloads, syncs and
 * allocations fail (GS_EINVAL / NULL). GS_EBUSY if a capture is running. */
int gs_cuda_graph_begin(gs_cuda_graphs *g, int32_t key);
/* Ends the capture and instantiates it under `key` (replacing an older
 * one). GS_EDEVICE if the capture was invalidated by an illegal call; the
 * set is then unchanged and the stream usable again. */
int gs_cuda_graph_end(gs_cuda_graphs *g, int32_t key);
/* Ends a capture without keeping it (after an op failed mid-capture). */
void gs_cuda_graph_abort(gs_cuda_graphs *g);

/* 1 when a graph is stored under key. */
int gs_cuda_graph_has(const gs_cuda_graphs *g, int32_t key);
/* Queues the graph for key on the backend's stream (asynchronous, like any
 * op). GS_ENOENT when none is stored, GS_EAGAIN when it went stale. */
int gs_cuda_graph_launch(gs_cuda_graphs *g, int32_t key);
/* Drops the graph for key; key < 0 drops all. */
void gs_cuda_graph_invalidate(gs_cuda_graphs *g, int32_t key);

#ifdef __cplusplus
}
#endif

#endif
