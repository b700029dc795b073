/* routes_admin.c - GET /health, /ready, /metrics and /v1/models, and the
 * gateway's metric registry (names in the style of vLLM's, "glmserve:").
 *
 * Several gateways (gs_gateway_params.metrics_dir, n_gateways > 1): a
 * scrape reaches one of them (they share the listening socket), so each
 * writes its registry as a snapshot to metrics_dir/metrics-gateway-I.json
 * once a second (written aside, then renamed: a reader sees a whole file)
 * and /metrics answers its own registry plus the latest snapshot of every
 * other gateway: counters and histograms summed, the per-gateway gauges
 * (streams_open, jobs_in_flight, request_body_bytes) summed, the worker gauges (each gateway
 * sees the same heartbeats) the largest. A gateway restarted after a crash
 * starts from its predecessor's last snapshot, so the sums never go back
 * (at most a second of the dead one's counts is lost).
 * Loop thread only; the file I/O is small and once a second. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/file.h"
#include "common/log.h"
#include "gateway/gateway_impl.h"

#define METRICS_FILE_MAX (64u << 20) /* bytes of one gateway's snapshot */

enum {
    G_WORKERS_UP,
    G_WORKERS,
    G_RUNNING,
    G_WAITING,
    G_QUEUED,
    G_KV_USED,
    G_KV_TOTAL,
    G_PREFIX_HIT,
    G_STREAMS,
    G_JOBS,
    G_BODY,
    N_GAUGES
};

static const struct {
    const char *name, *help;
} gauges[N_GAUGES] = {
    {"glmserve:workers_up", "Workers connected with a fresh heartbeat"},
    {"glmserve:workers", "Workers configured"},
    {"glmserve:num_requests_running", "Jobs running in the workers' engines"},
    {"glmserve:num_requests_waiting", "Jobs waiting in the workers' engines"},
    {"glmserve:num_requests_queued", "Jobs accepted by workers, still being prepared"},
    {"glmserve:kv_pages_used", "KV cache pages in use over the workers"},
    {"glmserve:kv_pages_total", "KV cache pages over the workers"},
    {"glmserve:prefix_cache_hit_rate", "Prompt tokens served by the prefix cache / queried"},
    {"glmserve:streams_open", "Requests in flight in this gateway"},
    {"glmserve:jobs_in_flight", "Jobs dispatched and not finished"},
    {"glmserve:request_body_bytes", "Request body bytes held by the gateway (max_body_memory_mb)"},
};

int gs_gw_metrics_init(gs_gw *gw, gs_diag *d)
{
    static const double lat[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                 2.5,   5,    10,    20,   40,  80,   160};
    static const double itl[] = {0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06,
                                 0.08,  0.1,    0.15,  0.2,  0.3,  0.5,  1};
    /* The gateway's own share: microseconds to tens of milliseconds. */
    static const double share[] = {5e-6,  1e-5,  2e-5,  5e-5, 1e-4, 2e-4, 5e-4,
                                   0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1};
#define N(a) (sizeof a / sizeof *a)
    const struct {
        gs_metric **out;
        const char *name, *help, *label0, *label1;
        const double *buckets; /* NULL: a counter */
        size_t n_buckets;
    } defs[] = {
        {&gw->m.requests, "glmserve:requests_total", "HTTP requests by route and status", "route",
         "status", NULL, 0},
        {&gw->m.finished, "glmserve:requests_finished_total",
         "Chat requests that reached a worker, by how they ended", "finish_reason", NULL, NULL, 0},
        {&gw->m.dispatch_s, "glmserve:gateway_dispatch_seconds",
         "Gateway share: request received to job sent to a worker", NULL, NULL, share, N(share)},
        {&gw->m.relay_s, "glmserve:gateway_relay_seconds",
         "Gateway share: worker event received to bytes to the client", NULL, NULL, share,
         N(share)},
        {&gw->m.ttft, "glmserve:time_to_first_token_seconds", "Request arrival to first token",
         NULL, NULL, lat, N(lat)},
        {&gw->m.itl, "glmserve:inter_token_latency_seconds", "Time between tokens", NULL, NULL, itl,
         N(itl)},
        {&gw->m.e2e, "glmserve:e2e_request_latency_seconds", "Request arrival to last token", NULL,
         NULL, lat, N(lat)},
        {&gw->m.prompt_tok, "glmserve:prompt_tokens_total", "Prompt tokens of finished requests",
         NULL, NULL, NULL, 0},
        {&gw->m.gen_tok, "glmserve:generation_tokens_total", "Tokens generated", NULL, NULL, NULL,
         0},
    };
#undef N
    int rc;
    if ((rc = gs_metrics_new(&gw->metrics)))
        return rc;
    for (size_t i = 0; i < sizeof defs / sizeof *defs; i++) {
        gs_metric_desc m = {.name = defs[i].name,
                            .help = defs[i].help,
                            .type = defs[i].buckets ? GS_METRIC_HISTOGRAM : GS_METRIC_COUNTER,
                            .buckets = defs[i].buckets,
                            .n_buckets = defs[i].n_buckets};
        if (defs[i].label0)
            m.labels[m.n_labels++] = defs[i].label0;
        if (defs[i].label1)
            m.labels[m.n_labels++] = defs[i].label1;
        if ((rc = gs_metrics_register(gw->metrics, &m, defs[i].out, d)))
            return rc;
    }
    for (int i = 0; i < N_GAUGES; i++) {
        /* Across gateways: their own streams and jobs add up; the workers'
         * figures are the same heartbeats seen by each. */
        gs_metric_desc g = {.name = gauges[i].name,
                            .help = gauges[i].help,
                            .type = GS_METRIC_GAUGE,
                            .merge = i == G_STREAMS || i == G_JOBS || i == G_BODY
                                         ? GS_METRIC_MERGE_SUM
                                         : GS_METRIC_MERGE_MAX};
        if ((rc = gs_metrics_register(gw->metrics, &g, &gw->m.gauges[i], d)))
            return rc;
    }
    return 0;
}

void gs_gw_finished(gs_gw *gw, const char *reason)
{
    gs_metric_series *s;
    const char *v[1] = {reason};
    if (!gs_metrics_series(gw->metrics, gw->m.finished, v, &s))
        gs_metrics_inc(s, 1);
}

void gs_gw_cancel(gs_gw *gw, gs_djob *job)
{
    gs_dispatch_cancel(job);
    gs_gw_finished(gw, "cancelled");
}

void gs_gw_share(gs_gw *gw, gs_metric *hist, uint64_t since)
{
    gs_metric_series *s;
    uint64_t now = gs_clock_now_ns();
    if (since && now >= since && !gs_metrics_series(gw->metrics, hist, NULL, &s))
        gs_metrics_observe(s, (double)(now - since) * 1e-9);
}

static void set_gauge(gs_gw *gw, int i, double v)
{
    gs_metric_series *s;
    if (!gs_metrics_series(gw->metrics, gw->m.gauges[i], NULL, &s))
        gs_metrics_set(s, v);
}

static void update_gauges(gs_gw *gw)
{
    gs_dispatch_stats st;
    gs_dispatch_get_stats(gw->ds, &st);
    set_gauge(gw, G_WORKERS_UP, st.workers_up);
    set_gauge(gw, G_WORKERS, st.workers_total);
    set_gauge(gw, G_RUNNING, (double)st.running);
    set_gauge(gw, G_WAITING, (double)st.waiting);
    set_gauge(gw, G_QUEUED, (double)st.queued);
    set_gauge(gw, G_KV_USED, (double)(st.kv_pages - st.kv_free_pages));
    set_gauge(gw, G_KV_TOTAL, (double)st.kv_pages);
    set_gauge(gw, G_PREFIX_HIT,
              st.prefix_query_tokens ? (double)st.prefix_hit_tokens / st.prefix_query_tokens : 0);
    set_gauge(gw, G_STREAMS, (double)gw->streams_open);
    set_gauge(gw, G_JOBS, st.jobs_in_flight);
    gs_http_stats hs;
    gs_http_server_stats(gw->http, &hs);
    set_gauge(gw, G_BODY, (double)hs.body_bytes);
}

static int shared(const gs_gw *gw)
{
    return gw->p.metrics_dir && gw->p.metrics_dir[0] && gw->p.n_gateways > 1;
}

static void metrics_path(const gs_gw *gw, int index, char *out, size_t n)
{
    snprintf(out, n, "%s/" GS_GW_METRICS_FILE, gw->p.metrics_dir, index);
}

/* Merges gateway index's latest snapshot into dst; 0, or 1 when it has
 * none yet; a bad file is logged and skipped. */
static int merge_file(gs_gw *gw, gs_metrics *dst, int index)
{
    char path[4200], *js = NULL;
    size_t len = 0;
    gs_diag d;
    gs_diag_clear(&d);
    metrics_path(gw, index, path, sizeof path);
    int rc = gs_read_file(path, METRICS_FILE_MAX, &js, &len, &d);
    if (rc == GS_ENOENT)
        return 1;
    if (!rc && (rc = gs_metrics_merge_snapshot(dst, js, len, &d)))
        gs_log_warn("metrics: gateway %d's snapshot %s not summed: %s", index, path, d.msg);
    else if (rc)
        gs_log_warn("metrics: %s", d.msg);
    free(js);
    return rc ? 1 : 0;
}

static void publish(uv_timer_t *t)
{
    gs_gw *gw = t->data;
    update_gauges(gw);
    char *js = NULL, path[4200], tmp[4210];
    size_t len = 0;
    if (gs_metrics_snapshot(gw->metrics, &js, &len))
        return;
    metrics_path(gw, gw->p.index, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    int ok = f && fwrite(js, 1, len, f) == len;
    if (f && fclose(f))
        ok = 0;
    ok = ok && rename(tmp, path) == 0;
    if (!ok && !gw->metrics_warned)
        gs_log_warn("metrics: cannot write %s: %s (the other gateways' /metrics lacks this one's "
                    "counts until it can)",
                    path, strerror(errno));
    gw->metrics_warned = !ok;
    free(js);
}

void gs_gw_metrics_share(gs_gw *gw)
{
    if (!shared(gw))
        return;
    if (!merge_file(gw, gw->metrics, gw->p.index))
        gs_log_info("metrics: counters continue from gateway %d's previous process", gw->p.index);
    uv_timer_start(&gw->metrics_timer, publish, 0, 1000);
}

/* The registry to render: gw's own, or (several gateways) a fresh one
 * holding the sum of gw's and the others' latest snapshots. *fresh says
 * which (free it then). NULL: out of memory. */
static gs_metrics *scrape(gs_gw *gw, int *fresh)
{
    *fresh = 0;
    if (!shared(gw))
        return gw->metrics;
    gs_metrics *sum = NULL;
    char *js = NULL;
    size_t len = 0;
    gs_diag d;
    if (gs_metrics_new(&sum) || gs_metrics_snapshot(gw->metrics, &js, &len) ||
        gs_metrics_merge_snapshot(sum, js, len, &d)) {
        free(js);
        gs_metrics_free(sum);
        return NULL;
    }
    free(js);
    for (int i = 0; i < gw->p.n_gateways; i++)
        if (i != gw->p.index)
            merge_file(gw, sum, i);
    *fresh = 1;
    return sum;
}

void gs_route_metrics(gs_gw *gw, gs_http_req *r)
{
    update_gauges(gw);
    gs_gw_count(gw, "/metrics", 200);
    char *text = NULL;
    size_t len = 0;
    int fresh;
    gs_metrics *m = scrape(gw, &fresh);
    int rc = m ? gs_metrics_render(m, &text, &len) : GS_ENOMEM;
    if (fresh)
        gs_metrics_free(m);
    if (rc) {
        gs_gw_error(gw, r, "/metrics", GS_ENOMEM, 503, "out of memory", NULL, 1);
        return;
    }
    gs_http_respond(r, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, text, len);
    free(text);
}

void gs_route_health(gs_gw *gw, gs_http_req *r)
{
    static const char body[] = "{\"status\":\"ok\"}";
    gs_gw_json(gw, r, "/health", 200, body, sizeof body - 1);
}

void gs_route_ready(gs_gw *gw, gs_http_req *r)
{
    gs_dispatch_stats st;
    gs_dispatch_get_stats(gw->ds, &st);
    int ready = gs_dispatch_ready(gw->ds) && !gw->draining;
    char body[160];
    int n = snprintf(body, sizeof body, "{\"ready\":%s,\"workers_up\":%d,\"workers\":%d}",
                     ready ? "true" : "false", st.workers_up, st.workers_total);
    gs_gw_json(gw, r, "/ready", ready ? 200 : 503, body, (size_t)n);
}

/* 200 with o (taken) as the body, or 503 when it cannot be built. */
static void respond(gs_gw *gw, gs_http_req *r, const char *route, json_t *o)
{
    char *js = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (js)
        gs_gw_json(gw, r, route, 200, js, strlen(js));
    else
        gs_gw_error(gw, r, route, GS_ENOMEM, 503, "out of memory", NULL, 1);
    free(js);
    json_decref(o);
}

/* What a client (the browser UI) needs before it asks: whether a key is
 * required and the request limits. No key needed; it names no model. */
void gs_route_info(gs_gw *gw, gs_http_req *r)
{
    gs_dispatch_stats st;
    gs_dispatch_get_stats(gw->ds, &st);
#ifdef GS_HAVE_WSLAY
    const int ws = 1;
#else
    const int ws = 0;
#endif
    json_t *o =
        json_pack("{s:s, s:b, s:i, s:i, s:i, s:b, s:b, s:b}", "version", GS_VERSION, "auth",
                  gw->auth != NULL, "max_images", gw->cfg.max_images, "max_body_mb",
                  gw->cfg.max_body_mb, "max_model_len", st.max_model_len, "ws", ws, "fetch_images",
                  gw->cfg.fetch_images, "ready", gs_dispatch_ready(gw->ds) && !gw->draining);
    respond(gw, r, "/v1/info", o);
}

void gs_route_models(gs_gw *gw, gs_http_req *r)
{
    gs_dispatch_stats st;
    gs_dispatch_get_stats(gw->ds, &st);
    json_t *data = json_array();
    if (st.model[0])
        json_array_append_new(data,
                              json_pack("{s:s, s:s, s:I, s:s, s:i}", "id", st.model, "object",
                                        "model", "created", (json_int_t)time(NULL), "owned_by",
                                        "glmserve", "max_model_len", st.max_model_len));
    json_t *o = json_pack("{s:s, s:o}", "object", "list", "data", data);
    respond(gw, r, "/v1/models", o);
}
