/* dispatch_policy.h - which worker gets the next job: pure, no I/O, no
 * clock, so tests can pin every choice.
 *
 * Least loaded: among the workers that are up, not draining, not excluded
 * (already tried for this job) and below their admission bound, the one
 * with the fewest jobs (running + waiting + queued in its last heartbeat,
 * plus the jobs this gateway sent it since that heartbeat); ties go to the
 * most free KV pages, then to the lowest index (stable). A worker's
 * admission bound is its engine's running slots plus its queue bound, as
 * it stated them in its hello (max_seqs is not sent, so the bound used is
 * n_running + max_queue: a worker whose waiting + queued jobs reach its
 * max_queue is full). */
#ifndef GS_DISPATCH_POLICY_H
#define GS_DISPATCH_POLICY_H

#include <stdint.h>

typedef struct {
    int up;                                 /* connected, hello and a fresh heartbeat */
    int draining;                           /* said DRAIN: takes no new jobs */
    int excluded;                           /* already tried for this job */
    int32_t n_running, n_waiting, n_queued; /* last heartbeat */
    int32_t max_queue;                      /* from its hello / heartbeat */
    int32_t n_free_pages;                   /* last heartbeat */
    int32_t sent_since_heartbeat;           /* jobs sent after that heartbeat */
} gs_worker_load;

/* Index of the worker to use, or -1 when none can take a job. */
int gs_dispatch_pick(const gs_worker_load *w, int n);

#endif
