/* dispatch.h - the gateway's side of the workers: it dials every worker
 * URL and keeps the connections up, tracks each worker's load from its
 * heartbeats, sends each job to the least-loaded worker
 * (dispatch_policy.h), routes the worker's events back to the job, and
 * makes sure no job is lost:
 *   - a worker that refuses a job because it is full (GS_EOVERLOAD) or
 *     draining: the job goes to another worker; when none is left the job
 *     fails with GS_EOVERLOAD (the client gets 503 + Retry-After);
 *   - a worker that dies (connection lost, or no heartbeat for
 *     heartbeat_timeout_ms: a SIGSTOPped process, a hung GPU) before the
 *     job's first token: the job is resent to another worker (at most
 *     max_resends times); after its first token: the job fails with
 *     GS_EWORKER (an explicit error to the client);
 *   - a stalled local worker (ipc://, same host) is killed (SIGKILL) so
 *     that its supervisor restarts it.
 *
 * Workers are the URLs it dials, plus those that dial it (listen_url).
 * Threading: everything runs on the gateway's libuv loop; nng's threads
 * only queue what they receive and wake the loop (uv_async). Callbacks
 * run on the loop. */
#ifndef GS_DISPATCH_H
#define GS_DISPATCH_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/err.h"
#include "common/ipc_msg.h"

typedef struct gs_dispatch gs_dispatch; /* opaque */
typedef struct gs_djob gs_djob;         /* opaque: one job in flight */

typedef struct {
    /* Progress of the job: text / ids since the last event, then the final
     * event (ev->finish != GS_IPC_FINISH_NONE). ev is borrowed for the
     * call. After a final event the job is gone. */
    void (*on_event)(void *user, const gs_ipc_event *ev);
    /* The job ended without a final event: refused by every worker that
     * could take it (code GS_EOVERLOAD), refused for its content (the
     * worker's code and message: GS_EINVAL, GS_ECONTEXT, ...), or lost
     * with its worker after it started (GS_EWORKER). msg borrowed. After
     * it the job is gone. */
    void (*on_error)(void *user, int code, const char *msg);
} gs_djob_cbs;

typedef struct {
    uv_loop_t *loop;         /* borrowed */
    const char *const *urls; /* [n_urls] worker URLs to dial (copied) */
    int n_urls;
    uint32_t heartbeat_timeout_ms; /* 0: 2000 */
    int max_resends;               /* 0: 2; -1: none */
    int kill_stalled;              /* 1: SIGKILL a stalled ipc:// worker (its pid from hello) */
    const char *name;              /* sent in hello (copied); NULL: "gateway" */
    /* Also accept workers that dial in (glmserve-worker --connect URL) on
     * this URL; NULL or "": none. Such a worker is used like the others
     * while it is connected. */
    const char *listen_url;
    /* The cluster key (gs_read_secret_file; copied), or NULL / "": none.
     * With one, a worker must begin with a hello carrying the same key; a
     * worker that sends another key, none, or another frame first is
     * refused (logged) and its connection closed; it never gets a job.
     * The gateway's own hello carries it too. */
    const char *cluster_key;
} gs_dispatch_params;

int gs_dispatch_new(const gs_dispatch_params *p, gs_dispatch **out, gs_diag *d);
/* Closes every connection; jobs still in flight get on_error(GS_ESHUTDOWN).
 * The handles are released on the loop: run it until it has no work.
 * NULL: no-op. */
void gs_dispatch_free(gs_dispatch *ds);

/* Sends a job: the request JSON (worker/request.h's schema) and the raw
 * image bytes, both copied. On success *out names the job until its final
 * event or on_error; neither is called before this returns. Errors (no
 * callback then): GS_EOVERLOAD (no worker up, or all full or draining),
 * GS_EINVAL (too many images, too large), GS_ENOMEM. */
int gs_dispatch_submit(gs_dispatch *ds, const char *json, size_t len, const gs_ipc_str *images,
                       int n_images, const gs_djob_cbs *cbs, void *user, gs_djob **out);
/* The client is gone: the worker is told to stop (CANCEL) and the job is
 * forgotten; no callback is called after this returns. */
void gs_dispatch_cancel(gs_djob *j);

typedef struct {
    int32_t workers_total, workers_up;
    int32_t jobs_in_flight;
    int64_t kv_pages, kv_free_pages;
    int64_t running, waiting, queued; /* summed over the workers' last heartbeats */
    uint64_t prefix_query_tokens, prefix_hit_tokens;
    uint64_t resends, worker_deaths;
    char model[257]; /* the first worker's served model name ("" before any hello) */
    int32_t max_model_len;
} gs_dispatch_stats;
void gs_dispatch_get_stats(const gs_dispatch *ds, gs_dispatch_stats *out);
/* When the frame whose callback is running (on_event, on_error) was
 * received from the worker, by gs_clock_now_ns: the start of the
 * gateway's relay time. */
uint64_t gs_dispatch_frame_ns(const gs_dispatch *ds);
/* 1 when at least one worker is up (the gateway's /ready). */
int gs_dispatch_ready(const gs_dispatch *ds);

#endif
