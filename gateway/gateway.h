/* gateway.h - one gateway process: the HTTP server (http.h) on a libuv
 * loop, routed to the OpenAI API (routes_openai.c), the probes and
 * metrics (routes_admin.c) and the static UI, with API keys (auth.h),
 * rate limits (ratelimit.h) and the workers behind dispatch.h.
 *
 * Signals (handled on the loop): SIGHUP reloads the keys file and the
 * reloadable limits (a bad new file is refused and the old one kept, with
 * a log line; open streams are never dropped); SIGTERM / SIGINT drain
 * (no new connections, streams in flight finish within drain_timeout);
 * SIGUSR1 reopens the log file.
 * Threading: the loop thread, plus nng's threads inside dispatch.c. */
#ifndef GS_GATEWAY_H
#define GS_GATEWAY_H

#include "gateway/config.h"

/* A gateway's metrics file in gs_gateway_params.metrics_dir (printf: index). */
#define GS_GW_METRICS_FILE "metrics-gateway-%d.json"

typedef struct {
    const gs_config *cfg; /* borrowed; copied at start */
    int listen_fd;        /* listening socket from the master; -1: bind host:port itself */
    const char *const *worker_urls; /* [n] every worker to use (local and remote) */
    int n_worker_urls;
    int index; /* gateway number (names, logs) */
    int argc;  /* the master's command line, for reloads */
    char **argv;
    /* Several gateways: each writes its metrics to metrics_dir once a
     * second (metrics-gateway-INDEX.json) and /metrics answers the sum of
     * all n_gateways (routes_admin.c). NULL or n_gateways < 2: its own. */
    const char *metrics_dir;
    int n_gateways;
} gs_gateway_params;

/* Runs until drained; returns the process exit status (0 after a clean
 * drain, 1 after a fatal error, logged). */
int gs_gateway_run(const gs_gateway_params *p);

#endif
