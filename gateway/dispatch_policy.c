/* dispatch_policy.c - least-loaded worker choice (dispatch_policy.h). */
#include "gateway/dispatch_policy.h"

int gs_dispatch_pick(const gs_worker_load *w, int n)
{
    int best = -1;
    int64_t best_load = 0;
    int32_t best_free = 0;
    for (int i = 0; i < n; i++) {
        const gs_worker_load *x = &w[i];
        if (!x->up || x->draining || x->excluded)
            continue;
        const int64_t backlog = (int64_t)x->n_waiting + x->n_queued + x->sent_since_heartbeat;
        if (x->max_queue > 0 && backlog >= x->max_queue)
            continue; /* full: it would refuse */
        const int64_t load = backlog + x->n_running;
        if (best < 0 || load < best_load || (load == best_load && x->n_free_pages > best_free)) {
            best = i;
            best_load = load;
            best_free = x->n_free_pages;
        }
    }
    return best;
}
