/* serve.h - the worker's server: jobs in over IPC connections (ipc_conn.h),
 * prepared on a small thread pool, run by one engine, events out.
 *
 * Threads:
 *   - nng's callback threads decode frames: a job is admitted (or refused
 *     with an ERROR frame: GS_EOVERLOAD past the queue bound, GS_ESHUTDOWN
 *     while draining) and queued for preparation; a cancel marks its job.
 *   - prep threads (params.prep_threads) run gs_request_build: JSON, chat
 *     template, tokenizer, image decode and preprocessing, so a 4000x3000
 *     JPEG never stalls other streams' decode steps; the built job goes to
 *     the engine thread's inbox. A short text-only job (frame <= 4 KiB) is
 *     built on the receiving thread instead, which is quicker than waking
 *     a prep thread for it.
 *   - the engine thread (the caller of gs_server_run) owns the engine: it
 *     submits, cancels and steps, and sleeps on a condition variable when
 *     there is nothing to do. Events go straight from the engine's callback
 *     to the job's connection: one frame per job per step at most, fewer when
 *     steps come faster than params.stream_interval_us.
 *   - a heartbeat thread sends the load (gs_ipc_stats) to every connection
 *     every params.heartbeat_ms.
 *   - the dialer (dialer.h) keeps a connection up to every address each
 *     --connect URL resolves to (all the gateways behind a headless
 *     Service), resolving again every params.resolve_interval_ms; a
 *     gateway whose address leaves DNS is drained, then disconnected once
 *     its jobs here are done.
 * A job refused before it starts gets one ERROR frame; a job that started
 * gets exactly one final EVENT, whatever happens (cancel, client gone,
 * device error, drain deadline). */
#ifndef GS_SERVE_H
#define GS_SERVE_H

#include <stdint.h>

#include "common/err.h"
#include "worker/engine/engine.h"
#include "worker/request.h"

typedef struct gs_server gs_server; /* opaque */

typedef struct {
    gs_engine_params engine;   /* the engine to build (model etc.; borrowed) */
    gs_request_env env;        /* borrowed; must outlive the server */
    const char *const *listen; /* [n_listen] URLs to accept gateways on */
    int n_listen;
    const char *const *connect; /* [n_connect] gateway URLs to dial and keep */
    int n_connect;
    int resolve_interval_ms; /* --connect names resolved again this often; 0: 10000 */
    const char *name;        /* in hello: "worker-0@host" */
    const char *model_name;  /* in hello: the served model's name */
    int prep_threads;        /* 0: 2 */
    int max_queue;           /* jobs admitted beyond the engine's max_seqs; 0: 64 */
    int heartbeat_ms;        /* 0: 250 */
    int drain_timeout_ms;    /* after gs_server_drain (0: end the jobs at once); < 0: 30000 */
    /* A job's events leave at most once per stream_interval_us: its first
     * tokens and its final event at once, the tokens of steps in between
     * held and sent together (as vLLM's --stream-interval, by time). The
     * default, 10 ms, is 100 frames a second per stream, faster than a
     * screen refreshes. A real model's step takes about that or longer, so
     * there a frame carries a step's tokens or two; on a model whose steps
     * take a fraction of it (the tiny test model, 0.15-0.3 ms) this saves
     * a frame and the wake-ups on both ends per token, which on a small
     * machine are taken from the compute threads. 0: 10000 us; < 0: every
     * step. */
    int stream_interval_us;
    /* When it has nothing to do, the engine thread stays awake this long
     * (yielding the CPU) before it sleeps, so that a job arriving soon
     * after (a client's next turn) does not wait for a sleeping thread to
     * be woken. 0: 300 us; < 0: sleep at once. */
    int idle_spin_us;
    /* Bytes of prepared image pixels (F32 patches, 8 bytes per pixel and
     * channel) that jobs may hold at once, from their preprocessing until
     * the engine has encoded them. A job whose images would pass it waits
     * in the prep queue (jobs without images go past it) until encodes
     * free room; one job larger than the whole budget runs alone. 0: a
     * quarter of the machine's memory, at most 4 GiB. */
    size_t image_memory;
    /* The cluster key (gs_read_secret_file), or NULL / "": none. With one,
     * a gateway's connection must begin with a hello carrying the same key;
     * any other frame first, or another key, closes it (logged). The
     * worker's own hello carries it too. */
    const char *cluster_key;
} gs_server_params;

/* Builds the engine, starts the prep and heartbeat threads and the
 * listeners/dialers. *out owns the server (gs_server_free). GS_EINVAL /
 * GS_ECONFIG / GS_EIO (a URL that cannot be bound; d names it) /
 * GS_ENOMEM. */
int gs_server_new(const gs_server_params *p, gs_server **out, gs_diag *d);

/* Runs the engine loop on the calling thread until the server has drained
 * (0) or hit a fatal error: GS_EDEVICE / GS_EINTERNAL from a step (the
 * jobs got their error events; the process should exit non-zero so a
 * fresh one is started on a sound device). */
int gs_server_run(gs_server *s);

/* Stops taking jobs (DRAIN to every gateway), lets running ones finish
 * within drain_timeout_ms, then ends the rest with GS_ESHUTDOWN. Safe from
 * any thread (not from a signal handler: call it from a thread that waits
 * for signals). */
void gs_server_drain(gs_server *s);

/* Waits up to timeout_ms for queued frames to be written (before exit). */
void gs_server_flush(gs_server *s, int timeout_ms);

/* Stops every thread and frees everything. NULL: no-op. */
void gs_server_free(gs_server *s);

#endif
