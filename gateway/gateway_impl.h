/* gateway_impl.h - the gateway process's state, shared by gateway.c and
 * its route files. Internal to gateway/. Loop thread only. */
#ifndef GS_GATEWAY_IMPL_H
#define GS_GATEWAY_IMPL_H

#include <stdint.h>
#include <uv.h>

#include "gateway/auth.h"
#include "gateway/config.h"
#include "gateway/dispatch.h"
#include "gateway/fetch.h"
#include "gateway/gateway.h"
#include "gateway/http.h"
#include "gateway/metrics.h"
#include "gateway/ratelimit.h"
#include "gateway/static.h"

typedef struct {
    gs_metric *requests;   /* counter {route, status} */
    gs_metric *ttft;       /* histogram, seconds */
    gs_metric *itl;        /* histogram, seconds between tokens */
    gs_metric *e2e;        /* histogram, seconds */
    gs_metric *prompt_tok; /* counter */
    gs_metric *gen_tok;    /* counter */
    gs_metric *finished;   /* counter {finish_reason} */
    gs_metric *dispatch_s; /* histogram: request in -> job sent to a worker, seconds */
    gs_metric *relay_s;    /* histogram: worker event in -> bytes to the client, seconds */
    gs_metric *gauges[11]; /* set at scrape time (routes_admin.c) */
} gs_gw_metrics;

#define GS_GW_MAX_VENDOR 8

typedef struct gs_gw {
    gs_config cfg;
    gs_gateway_params p;
    uv_loop_t loop;
    gs_http_server *http;
    gs_dispatch *ds;
    gs_auth *auth; /* NULL: no keys (no_auth) */
    gs_ratelimit *rl;
    gs_metrics *metrics;
    gs_gw_metrics m;
    gs_static *st;                       /* NULL: no UI folder */
    gs_static *vendor[GS_GW_MAX_VENDOR]; /* /vendor/NAME: first folder holding NAME */
    int n_vendor;
    gs_fetcher *fetcher; /* NULL: remote image URLs are refused */
    uv_signal_t sig_hup, sig_term, sig_int, sig_usr1;
    uv_timer_t drain_timer;
    uv_timer_t streams_timer; /* drain: waits for WebSocket asks after the last HTTP connection */
    uv_timer_t listen_timer;  /* start: accept once a worker is up, or at a deadline */
    uv_timer_t metrics_timer; /* several gateways: writes this one's metrics once a second */
    int metrics_warned;       /* the last write failed (logged once) */
    uint64_t listen_deadline;
    int listening;
    int closed;
    int draining, exit_status;
    int64_t streams_open;
    char name[64];
} gs_gw;

/* An OpenAI-shaped error response ({"error": {"message", "type", "param",
 * "code"}}), the final call for r. status 0: from the code's table row.
 * retry_after > 0 adds Retry-After. */
void gs_gw_error(gs_gw *gw, gs_http_req *r, const char *route, int code, int status,
                 const char *msg, const char *param, int retry_after);
/* A JSON response (the final call for r); counts the request. */
void gs_gw_json(gs_gw *gw, gs_http_req *r, const char *route, int status, const char *json,
                size_t len);
/* The rate-limit phase for one request (HTTP or a WebSocket ask): 0, or
 * the code to refuse with (GS_EBUSY -> 429, GS_ENOMEM -> 503), msg saying
 * which limit and *retry_after the seconds to wait. key_id / limits NULL
 * without keys. */
int gs_gw_admit(gs_gw *gw, const char *key_id, const gs_auth_limits *limits, const char *ip,
                char *msg, size_t cap, int *retry_after);
/* Counts a finished request in glmserve:requests_total. */
void gs_gw_count(gs_gw *gw, const char *route, int status);
/* Counts a chat request (HTTP or WebSocket ask) that reached a worker in
 * glmserve:requests_finished_total: reason "stop", "length", "cancelled"
 * (by the client, or it went away) or "error". */
void gs_gw_finished(gs_gw *gw, const char *reason);
/* The client stopped a job (cancel, disconnect): gs_dispatch_cancel, and
 * counted as "cancelled". */
void gs_gw_cancel(gs_gw *gw, gs_djob *job);
/* The gateway's own share of a request: `since` (gs_clock_now_ns) to now
 * into the dispatch or relay histogram. */
void gs_gw_share(gs_gw *gw, gs_metric *hist, uint64_t since);

/* Routes (each makes the final call for r, now or later). */
void gs_route_chat(gs_gw *gw, gs_http_req *r, const gs_auth_key *key);
void gs_route_models(gs_gw *gw, gs_http_req *r);
void gs_route_health(gs_gw *gw, gs_http_req *r);
void gs_route_ready(gs_gw *gw, gs_http_req *r);
void gs_route_metrics(gs_gw *gw, gs_http_req *r);
void gs_route_info(gs_gw *gw, gs_http_req *r);
void gs_route_ws(gs_gw *gw, gs_http_req *r); /* routes_ws.c; 501 without libwslay */
int gs_gw_metrics_init(gs_gw *gw, gs_diag *d);
/* Several gateways (gs_gateway_params.metrics_dir): adds the last snapshot
 * of this gateway number's previous process (a restart) to the registry,
 * then writes this gateway's snapshot now and once a second on
 * gw->metrics_timer (initialised by the caller). One gateway: nothing. */
void gs_gw_metrics_share(gs_gw *gw);

#endif
