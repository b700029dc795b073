/* dialer.h - the worker's --connect side: keeps a connection up to every
 * gateway that the --connect URLs name.
 *
 * One URL may name many gateways: behind a Kubernetes headless Service a
 * name has one address per gateway pod. Each address gets a connection of
 * its own, because a gateway dispatches only to the workers connected to
 * it: a worker that reached one address of the name would serve one
 * gateway and leave the others without it.
 *
 * Threads: one per URL resolves it (gs_resolve_url) every
 * resolve_interval_ms, and again about a second after one of its
 * connections drops (the gateway may have moved); one per address dials
 * it, keeps the connection and redials with backoff (100 ms doubling to
 * 5 s). DNS waits and dials block only these threads, never the engine.
 *
 * Addresses follow DNS:
 *   - a new address gets a thread and a connection;
 *   - an address missing from two successful answers in a row is retired
 *     (one partial answer changes nothing): without a
 *     connection its thread ends; with one, hooks.retire(c, 1) has the
 *     server tell that gateway to send no more jobs (DRAIN), the
 *     connection stays until hooks.busy(c) says no job of that gateway is
 *     left (their final events go out as usual), then it is closed and
 *     the thread ends. If the address comes back before that,
 *     hooks.retire(c, 0) takes it back.
 *   - a failed answer (no such name yet, a DNS timeout) changes nothing:
 *     pods start before their DNS records exist, and a DNS outage must not
 *     cut a worker from gateways it reaches. It is logged once per outage
 *     and retried (after 0.5 s, doubling up to resolve_interval_ms).
 * An ipc:// URL or a numeric tcp:// one is its own single address. */
#ifndef GS_DIALER_H
#define GS_DIALER_H

#include "common/err.h"
#include "common/ipc_conn.h"
#include "common/resolve.h"

typedef struct gs_dialer gs_dialer; /* opaque */

typedef struct {
    const char *const *urls; /* [n_urls] checked with gs_url_parse; borrowed, outlive the dialer */
    int n_urls;
    int resolve_interval_ms; /* 0: 10000 */
    int dial_timeout_ms;     /* one dial attempt; 0: 2000 */
    /* The server's callbacks. on_open gets each new connection and takes
     * one reference (as a listener's on_open); on_frame and on_close as in
     * ipc_conn.h. cbs.user is passed to these and to the hooks below. */
    gs_ipc_conn_cbs cbs;
    /* c's address left DNS (on 1) or came back (on 0). Required. */
    void (*retire)(gs_ipc_conn *c, int on, void *user);
    /* Jobs of c's gateway still on this worker (0: c may be closed). */
    int (*busy)(gs_ipc_conn *c, void *user);
    /* Resolver (tests script it); NULL: gs_resolve_url. */
    int (*resolve)(const char *url, gs_addr_set *out, gs_diag *d);
} gs_dialer_params;

/* Starts the threads (p is copied; the strings it points to are
 * borrowed). *out owns the dialer (gs_dialer_free). GS_EINVAL (a
 * malformed URL: d names it) / GS_ENOMEM. */
int gs_dialer_new(const gs_dialer_params *p, gs_dialer **out, gs_diag *d);

/* Connections up now (opened and not yet closed). */
int gs_dialer_connected(gs_dialer *dl);

/* Stops resolving and dialing and joins the threads; open connections
 * stay open (their owner closes them). Idempotent. */
void gs_dialer_stop(gs_dialer *dl);

/* Stops, then waits up to 5 s for the connections it opened to finish
 * their on_close (it must outlive them: it forwards their callbacks), and
 * frees it; if some do not, it stays allocated and the count is logged.
 * Close the connections first. NULL: no-op. */
void gs_dialer_free(gs_dialer *dl);

#endif
