/* gateway.c - one gateway process (gateway.h): sets up the loop, the HTTP
 * server, the dispatcher and the policies; routes each request through
 * fixed phases (route -> method -> auth -> rate limit -> handler, as
 * nginx's phases) and reacts to signals.
 *
 * Owns everything in gs_gw. Loop thread only (signals arrive through
 * uv_signal_t, on the loop). */
#include "gateway/gateway.h"

#include <errno.h>
#include <jansson.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/file.h"
#include "common/ipc_msg.h"
#include "common/log.h"
#include "gateway/gateway_impl.h"

/* ---- responses and counting --------------------------------------------------------- */

void gs_gw_count(gs_gw *gw, const char *route, int status)
{
    char st[8];
    snprintf(st, sizeof st, "%d", status);
    const char *labels[2] = {route, st};
    gs_metric_series *s;
    if (!gs_metrics_series(gw->metrics, gw->m.requests, labels, &s))
        gs_metrics_inc(s, 1);
}

void gs_gw_json(gs_gw *gw, gs_http_req *r, const char *route, int status, const char *json,
                size_t len)
{
    gs_gw_count(gw, route, status);
    gs_http_respond(r, status, "application/json", NULL, json, len);
}

/* Length of the valid UTF-8 character at s (n bytes left), 0 when it is not
 * one (bad lead or continuation byte, truncated, overlong, surrogate, above
 * U+10FFFF): the rules jansson checks strings against. */
static size_t utf8_char(const unsigned char *s, size_t n)
{
    size_t len;
    unsigned cp, min;
    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xC2 && s[0] <= 0xDF)
        len = 2, cp = s[0] & 0x1Fu, min = 0x80;
    else if (s[0] >= 0xE0 && s[0] <= 0xEF)
        len = 3, cp = s[0] & 0x0Fu, min = 0x800;
    else if (s[0] >= 0xF0 && s[0] <= 0xF4)
        len = 4, cp = s[0] & 0x07u, min = 0x10000;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3Fu);
    }
    return cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) ? 0 : len;
}

/* msg as valid UTF-8: itself when it is, else a copy in buf (cap >= 4) with
 * each stray byte replaced by U+FFFD, cut to fit. */
static const char *utf8_clean(const char *msg, char *buf, size_t cap)
{
    const unsigned char *s = (const unsigned char *)msg;
    size_t n = strlen(msg), i = 0, k;
    while (i < n && (k = utf8_char(s + i, n - i)))
        i += k;
    if (i == n)
        return msg;
    size_t o = 0;
    for (i = 0; i < n && o + 4 <= cap;) {
        k = utf8_char(s + i, n - i);
        if (k && o + k + 1 > cap)
            break;
        if (k)
            memcpy(buf + o, s + i, k);
        else
            memcpy(buf + o, "\xEF\xBF\xBD", 3);
        o += k ? k : 3;
        i += k ? k : 1;
    }
    buf[o] = 0;
    return buf;
}

void gs_gw_error(gs_gw *gw, gs_http_req *r, const char *route, int code, int status,
                 const char *msg, const char *param, int retry_after)
{
    if (!status)
        status = gs_err_http_status(code);
    const char *type = gs_err_type(code);
    if (status == 404)
        type = "invalid_request_error";
    /* Messages quote client bytes (a path, a model name, cut to a length):
     * jansson refuses a string that is not valid UTF-8, and the answer
     * became a 'server_error: out of memory' body; replace the stray bytes. */
    char clean[1024];
    msg = utf8_clean(msg, clean, sizeof clean);
    json_t *o = json_pack("{s:{s:s, s:s, s:s?, s:s}}", "error", "message", msg, "type", type,
                          "param", param, "code", gs_err_name(code));
    char *js = o ? json_dumps(o, JSON_COMPACT) : NULL;
    char hdr[64] = "";
    if (retry_after > 0)
        snprintf(hdr, sizeof hdr, "Retry-After: %d\r\n", retry_after);
    gs_gw_count(gw, route, status);
    static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
                              "\"param\":null,\"code\":\"ENOMEM\"}}";
    gs_http_respond(r, status, "application/json", hdr[0] ? hdr : NULL, js ? js : oom,
                    js ? strlen(js) : sizeof oom - 1);
    free(js);
    json_decref(o);
}

int gs_gw_admit(gs_gw *gw, const char *key_id, const gs_auth_limits *limits, const char *ip,
                char *msg, size_t cap, int *retry_after)
{
    gs_ratelimit_who who = {key_id, limits, ip};
    gs_ratelimit_verdict v;
    int rc = gs_ratelimit_admit(gw->rl, &who, gs_clock_now_ns() / 1000000u, &v);
    if (!rc)
        return 0;
    snprintf(msg, cap, "rate limit reached (%s, per %s); retry after %u s",
             v.reason ? v.reason : "limit", v.scope ? v.scope : "key", v.retry_after_s);
    *retry_after = v.retry_after_s ? (int)v.retry_after_s : 1;
    return rc == GS_EBUSY ? GS_EBUSY : GS_ENOMEM;
}

/* ---- the phases ------------------------------------------------------------------------ */

typedef enum { AUTH_NONE, AUTH_KEY } auth_mode;

typedef struct {
    const char *path;
    const char *methods; /* "GET", "POST", "GET,HEAD" */
    auth_mode auth;
    int limited;                            /* goes through the drain check and the rate limits */
    void (*get)(gs_gw *gw, gs_http_req *r); /* or: */
    void (*with_key)(gs_gw *gw, gs_http_req *r, const gs_auth_key *key); /* limited routes */
} route;

static const route routes[] = {
    {"/health", "GET,HEAD", AUTH_NONE, 0, gs_route_health, NULL},
    {"/ready", "GET,HEAD", AUTH_NONE, 0, gs_route_ready, NULL},
    {"/metrics", "GET", AUTH_NONE, 0, gs_route_metrics, NULL},
    {"/v1/info", "GET,HEAD", AUTH_NONE, 0, gs_route_info, NULL},
    {"/v1/models", "GET", AUTH_KEY, 0, gs_route_models, NULL},
    {"/v1/chat/completions", "POST", AUTH_KEY, 1, NULL, gs_route_chat},
    {"/v1/ws", "GET", AUTH_NONE, 0, gs_route_ws, NULL}, /* auth and limits per ask: routes_ws.c */
};

static int method_allowed(const char *list, const char *m)
{
    size_t n = strlen(m);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, m, n))
            return 1;
        p = e ? e + 1 : p + len;
    }
    return 0;
}

/* Auth phase: 0 with *key set (NULL when keys are off), or answered. */
static int authenticate(gs_gw *gw, gs_http_req *r, const char *route_name, const gs_auth_key **key)
{
    *key = NULL;
    if (!gw->auth)
        return 0;
    const char *h = gs_http_req_header(r, "authorization");
    const char *tok = NULL;
    size_t tl = 0;
    if (!h || gs_auth_parse_bearer(h, strlen(h), &tok, &tl)) {
        gs_gw_error(gw, r, route_name, GS_EAUTH, 401,
                    "missing API key: send it as 'Authorization: Bearer <key>'", NULL, 0);
        return -1;
    }
    if (gs_auth_check(gw->auth, tok, tl, key)) {
        gs_gw_error(gw, r, route_name, GS_EAUTH, 401, "invalid API key", NULL, 0);
        return -1;
    }
    return 0;
}

static void handle(gs_http_req *r, void *user)
{
    gs_gw *gw = user;
    const char *path = gs_http_req_path(r), *method = gs_http_req_method(r);
    const route *rt = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof *routes; i++)
        if (!strcmp(path, routes[i].path))
            rt = &routes[i];
    if (!rt) {
        int get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
        if (get && !strncmp(path, "/vendor/", 8)) {
            /* One file name, no folders: the first vendor folder holding it. */
            if (!strchr(path + 8, '/'))
                for (int i = 0; i < gw->n_vendor; i++)
                    if (gs_static_serve_path(gw->vendor[i], r, path + 7) == 0) {
                        gs_gw_count(gw, "vendor", 200);
                        return;
                    }
        } else if (get && gw->st && gs_static_serve(gw->st, r) == 0) {
            gs_gw_count(gw, "static", 200);
            return;
        }
        char m[300];
        snprintf(m, sizeof m, "no route for %s %.200s", method, path);
        gs_gw_error(gw, r, "other", GS_ENOENT, 404, m, NULL, 0);
        return;
    }
    if (!method_allowed(rt->methods, method)) {
        char m[128], hdr[64];
        snprintf(m, sizeof m, "%s does not allow %s (allowed: %s)", rt->path, method, rt->methods);
        snprintf(hdr, sizeof hdr, "Allow: %s\r\n", rt->methods);
        json_t *o = json_pack("{s:{s:s, s:s, s:n, s:s}}", "error", "message", m, "type",
                              "invalid_request_error", "param", "code", "EMETHOD");
        char *js = o ? json_dumps(o, JSON_COMPACT) : NULL;
        gs_gw_count(gw, rt->path, 405);
        gs_http_respond(r, 405, "application/json", hdr, js ? js : "{}", js ? strlen(js) : 2);
        free(js);
        json_decref(o);
        return;
    }
    const gs_auth_key *key = NULL;
    if (rt->auth == AUTH_KEY && authenticate(gw, r, rt->path, &key))
        return;
    if (rt->limited) {
        if (gw->draining) {
            gs_gw_error(gw, r, rt->path, GS_ESHUTDOWN, 503, "the server is shutting down", NULL, 1);
            return;
        }
        char m[200];
        int retry = 0;
        int rc = gs_gw_admit(gw, key ? key->id : NULL, key ? &key->limits : NULL,
                             gs_http_req_peer(r), m, sizeof m, &retry);
        if (rc) {
            gs_gw_error(gw, r, rt->path, rc, rc == GS_EBUSY ? 429 : 503, m, NULL, retry);
            return;
        }
        rt->with_key(gw, r, key);
        return;
    }
    rt->get(gw, r);
}

/* ---- keys and limits (start and SIGHUP) ----------------------------------------------------- */

static void limits_of(const gs_config *c, gs_ratelimit_config *rc)
{
    memset(rc, 0, sizeof *rc);
    rc->key.rate_mrps = (uint32_t)(c->rate * 1000 + 0.5);
    rc->key.burst = (uint32_t)c->burst;
    rc->key.rpm = (uint32_t)c->rpm;
    rc->key.tpm = (uint64_t)c->tpm;
    rc->key.streams = (uint32_t)c->max_streams;
    rc->ip_rate_mrps = (uint32_t)(c->ip_rate * 1000 + 0.5);
    rc->ip_burst = (uint32_t)c->ip_burst;
    if (getrandom(&rc->seed, sizeof rc->seed, GRND_NONBLOCK) != (ssize_t)sizeof rc->seed)
        rc->seed = gs_clock_now_ns() ^ (uint64_t)getpid();
}

static int load_keys(const gs_config *c, gs_auth **out, gs_diag *d)
{
    *out = NULL;
    if (!c->api_key_file[0])
        return 0;
    int rc = gs_auth_load(c->api_key_file, out, d);
    if (!rc) {
        gs_auth_info info;
        gs_auth_get_info(*out, &info);
        if (info.n_plaintext)
            gs_log_warn("%s: %zu key(s) stored in plain text (first on line %u); store "
                        "sha256:<hex> instead",
                        c->api_key_file, info.n_plaintext, info.first_plaintext_line);
    }
    return rc;
}

static void on_hup(uv_signal_t *h, int sig)
{
    gs_gw *gw = h->data;
    gs_config n;
    char restart[512];
    gs_diag d;
    gs_diag_clear(&d);
    if (gs_config_reload(&gw->cfg, gw->p.argc, gw->p.argv, &n, restart, sizeof restart, &d)) {
        gs_log_error("reload refused, keeping the old configuration: %s", d.msg);
        return;
    }
    gs_auth *keys = NULL;
    if (load_keys(&n, &keys, &d)) {
        gs_log_error("reload refused, keeping the old keys: %s", d.msg);
        return;
    }
    gs_ratelimit_config rc;
    limits_of(&n, &rc);
    if (gs_ratelimit_reconfigure(gw->rl, &rc, &d)) {
        gs_auth_free(keys);
        gs_log_error("reload refused, keeping the old limits: %s", d.msg);
        return;
    }
    if (n.no_auth && !keys) {
        gs_auth_free(gw->auth);
        gw->auth = NULL;
    } else if (keys) {
        gs_auth_free(gw->auth); /* open streams hold key ids, not entries */
        gw->auth = keys;
    }
    gw->cfg = n;
    gs_http_server_set_body_limits(gw->http, (size_t)n.max_body_mb << 20,
                                   (size_t)n.max_body_memory_mb << 20);
    gs_log_info("reloaded keys and limits%s%s", restart[0] ? "; needs a restart to change: " : "",
                restart);
}

/* ---- drain and exit ------------------------------------------------------------------------- */

static void close_all(gs_gw *gw)
{
    if (gw->closed)
        return;
    gw->closed = 1;
    uv_close((uv_handle_t *)&gw->streams_timer, NULL);
    uv_close((uv_handle_t *)&gw->listen_timer, NULL);
    uv_close((uv_handle_t *)&gw->metrics_timer, NULL);
    uv_signal_stop(&gw->sig_hup);
    uv_signal_stop(&gw->sig_term);
    uv_signal_stop(&gw->sig_int);
    uv_signal_stop(&gw->sig_usr1);
    uv_close((uv_handle_t *)&gw->sig_hup, NULL);
    uv_close((uv_handle_t *)&gw->sig_term, NULL);
    uv_close((uv_handle_t *)&gw->sig_int, NULL);
    uv_close((uv_handle_t *)&gw->sig_usr1, NULL);
    uv_close((uv_handle_t *)&gw->drain_timer, NULL);
    gs_http_server_free(gw->http);
    gw->http = NULL;
    gs_dispatch_free(gw->ds);
    gw->ds = NULL;
    gs_fetcher_free(gw->fetcher);
    gw->fetcher = NULL;
}

/* Sockets handed over to the WebSocket layer are no HTTP connections any
 * more: their asks (counted in streams_open) are waited for here. */
static void streams_check(uv_timer_t *t)
{
    gs_gw *gw = t->data;
    if (gw->streams_open > 0)
        return;
    gs_log_info("drained: no connection or stream left");
    close_all(gw);
}

static void drained(void *user)
{
    gs_gw *gw = user;
    if (gw->streams_open > 0) {
        uv_timer_start(&gw->streams_timer, streams_check, 20, 20);
        return;
    }
    gs_log_info("drained: no connection left");
    close_all(gw);
}

static void drain_deadline(uv_timer_t *t)
{
    gs_gw *gw = t->data;
    gs_log_warn("drain deadline passed: closing the connections still open");
    close_all(gw);
}

static void on_term(uv_signal_t *h, int sig)
{
    gs_gw *gw = h->data;
    if (gw->draining) {
        gs_log_info("second stop signal: closing now");
        uv_timer_stop(&gw->drain_timer);
        close_all(gw);
        return;
    }
    gw->draining = 1;
    gs_log_info("%s: draining (%lld request(s) in flight, deadline %d s)",
                sig == SIGTERM ? "SIGTERM" : "SIGINT", (long long)gw->streams_open,
                gw->cfg.drain_timeout);
    uv_timer_start(&gw->drain_timer, drain_deadline, (uint64_t)gw->cfg.drain_timeout * 1000 + 500,
                   0);
    gs_http_server_drain(gw->http, drained, gw);
}

static void on_usr1(uv_signal_t *h, int sig)
{
    gs_gw *gw = h->data;
    if (!gw->cfg.log_file[0])
        return;
    if (gs_log_reopen(gw->cfg.log_file))
        gs_log_error("cannot reopen %s: %s", gw->cfg.log_file, strerror(errno));
}

/* Gateway i's URL for workers that dial in: the port + i (tcp), or the
 * path with "-i" (ipc), so every gateway has its own. */
static int worker_listen_url(const gs_config *c, int i, char *out, size_t cap)
{
    const char *u = c->worker_listen;
    if (!strncmp(u, "ipc://", 6)) {
        snprintf(out, cap, i ? "%s-%d" : "%s", u, i);
        return 0;
    }
    const char *colon = strrchr(u, ':');
    char *end;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (strncmp(u, "tcp://", 6) || !colon || colon < u + 6 || *end || port < 0 || port + i > 65535)
        return GS_ECONFIG;
    snprintf(out, cap, "%.*s:%ld", (int)(colon - u), u, port + i);
    return 0;
}

static void listen_when_ready(uv_timer_t *t)
{
    gs_gw *gw = t->data;
    if (gw->listening || gw->closed) {
        uv_timer_stop(t);
        return;
    }
    if (!gs_dispatch_ready(gw->ds) && uv_now(&gw->loop) < gw->listen_deadline)
        return;
    uv_timer_stop(t);
    gs_diag d;
    gs_diag_clear(&d);
    int rc = gs_http_server_listen_fd(gw->http, gw->p.listen_fd, &d);
    if (rc) {
        gs_log_error("fatal: %s", d.msg[0] ? d.msg : gs_strerror(rc));
        gw->exit_status = 1;
        close_all(gw);
        return;
    }
    gw->listening = 1;
}

/* The vendor folders (config vendor_dirs, ':'-separated): a missing one
 * is logged once (gateway 0) and skipped; the UI then renders plain text. */
static void open_vendor(gs_gw *gw)
{
    char list[sizeof gw->cfg.vendor_dirs];
    snprintf(list, sizeof list, "%s", gw->cfg.vendor_dirs);
    char *save = NULL;
    for (char *dir = strtok_r(list, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        gs_diag d;
        gs_diag_clear(&d);
        if (gw->n_vendor == GS_GW_MAX_VENDOR) {
            gs_log_warn("vendor_dirs: more than %d folders, %s and the rest ignored",
                        GS_GW_MAX_VENDOR, dir);
            break;
        }
        if (gs_static_new(dir, &gw->vendor[gw->n_vendor], &d) == 0)
            gw->n_vendor++;
        else if (gw->p.index == 0)
            gs_log_warn("vendor_dirs: %s (the UI falls back to plain text)", d.msg);
    }
}

/* Request bodies with images (megabytes), their decoded bytes and the job
 * frames are allocated and freed on every upload. Above glibc's mmap
 * threshold each is a fresh mapping: page faults to fill it, and a munmap
 * whose TLB shootdown interrupts every thread of the process. Keeping
 * them in the heap halved the gateway's dispatch time of a 1.45 MB image
 * (5.3-6.4 -> 3.0-3.2 ms, docs/benchmarks.md). The heap keeps up to
 * 64 MiB free at its top before it gives memory back. */
static void malloc_tuning(void)
{
#ifdef __GLIBC__
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
#endif
}

int gs_gateway_run(const gs_gateway_params *p)
{
    malloc_tuning();
    gs_gw *gw = calloc(1, sizeof *gw);
    if (!gw) {
        gs_log_error("fatal: out of memory");
        return 1;
    }
    gw->p = *p;
    gw->cfg = *p->cfg;
    snprintf(gw->name, sizeof gw->name, "g%d", p->index);
    int status = 1, rc;
    gs_diag d;
    gs_diag_clear(&d);
    uv_loop_init(&gw->loop);
    gs_ratelimit_config rlc;
    limits_of(&gw->cfg, &rlc);
    if ((rc = load_keys(&gw->cfg, &gw->auth, &d)) || (rc = gs_ratelimit_new(&rlc, &gw->rl, &d)) ||
        (rc = gs_gw_metrics_init(gw, &d))) {
        gs_log_error("fatal: %s", d.msg[0] ? d.msg : gs_strerror(rc));
        goto out;
    }
    if (gw->cfg.fetch_images) {
        gs_fetch_params fp = {(uint32_t)gw->cfg.fetch_timeout_ms, (size_t)gw->cfg.max_body_mb << 20,
                              gw->cfg.fetch_allow_private};
        if ((rc = gs_fetcher_new(&gw->loop, &fp, &gw->fetcher, &d))) {
            gs_log_error("fatal: fetch_images: %s", d.msg);
            goto out;
        }
    }
    if (gw->cfg.static_dir[0] && (rc = gs_static_new(gw->cfg.static_dir, &gw->st, &d)))
        gs_log_warn("no browser UI: %s", d.msg);
    open_vendor(gw);
    char name[64], wl[300] = "";
    snprintf(name, sizeof name, "gateway-%d", p->index);
    if (gw->cfg.worker_listen[0] && worker_listen_url(&gw->cfg, p->index, wl, sizeof wl)) {
        gs_log_error("fatal: worker_listen %s: expected tcp://host:port or ipc://path",
                     gw->cfg.worker_listen);
        goto out;
    }
    static char ckey[GS_IPC_MAX_NAME + 1];
    if (gw->cfg.cluster_key_file[0] &&
        gs_read_secret_file(gw->cfg.cluster_key_file, ckey, sizeof ckey, &d)) {
        gs_log_error("fatal: cluster_key_file: %s", d.msg);
        goto out;
    }
    gs_dispatch_params dp = {0};
    dp.loop = &gw->loop;
    dp.cluster_key = ckey[0] ? ckey : NULL;
    dp.urls = p->worker_urls;
    dp.n_urls = p->n_worker_urls;
    dp.heartbeat_timeout_ms = (uint32_t)gw->cfg.heartbeat_timeout_ms;
    dp.kill_stalled = 1;
    dp.name = name;
    dp.listen_url = wl;
    if ((rc = gs_dispatch_new(&dp, &gw->ds, &d))) {
        gs_log_error("fatal: %s", d.msg[0] ? d.msg : gs_strerror(rc));
        goto out;
    }
    gs_http_params hp = {0};
    hp.handler = handle;
    hp.user = gw;
    hp.max_body_bytes = (size_t)gw->cfg.max_body_mb << 20;
    hp.max_body_memory = (size_t)gw->cfg.max_body_memory_mb << 20;
    hp.send_timeout_ms = (uint32_t)gw->cfg.send_timeout * 1000u;
    if ((rc = gs_http_server_new(&gw->loop, &hp, &gw->http, &d))) {
        gs_log_error("fatal: %s", d.msg[0] ? d.msg : gs_strerror(rc));
        goto out;
    }
    if (p->listen_fd < 0) { /* a socket of its own: listens at once */
        if ((rc = gs_http_server_listen(gw->http, gw->cfg.host, gw->cfg.port, &d))) {
            gs_log_error("fatal: %s", d.msg[0] ? d.msg : gs_strerror(rc));
            goto out;
        }
        gw->listening = 1;
    }
    uv_signal_t *sigs[] = {&gw->sig_hup, &gw->sig_term, &gw->sig_int, &gw->sig_usr1};
    void (*cbs[])(uv_signal_t *, int) = {on_hup, on_term, on_term, on_usr1};
    const int nums[] = {SIGHUP, SIGTERM, SIGINT, SIGUSR1};
    for (int i = 0; i < 4; i++) {
        uv_signal_init(&gw->loop, sigs[i]);
        sigs[i]->data = gw;
        uv_signal_start(sigs[i], cbs[i], nums[i]);
    }
    uv_timer_init(&gw->loop, &gw->drain_timer);
    gw->drain_timer.data = gw;
    uv_timer_init(&gw->loop, &gw->streams_timer);
    gw->streams_timer.data = gw;
    /* On the master's shared socket, accepting waits for a worker, up to
     * the heartbeat timeout: a gateway restarted beside running workers
     * (they reconnect in milliseconds) lets the connections that queued
     * meanwhile wait in the listen backlog a moment instead of answering
     * them 503. A first start with the model still loading accepts at the
     * deadline (health checks must get answers). */
    uv_timer_init(&gw->loop, &gw->listen_timer);
    gw->listen_timer.data = gw;
    uv_timer_init(&gw->loop, &gw->metrics_timer);
    gw->metrics_timer.data = gw;
    gs_gw_metrics_share(gw);
    gw->listen_deadline = uv_now(&gw->loop) + (uint64_t)gw->cfg.heartbeat_timeout_ms;
    if (!gw->listening)
        uv_timer_start(&gw->listen_timer, listen_when_ready, 0, 10);
    gs_log_info("gateway %d serving on %s:%d (%d worker URL(s)%s)", p->index, gw->cfg.host,
                gw->cfg.port, p->n_worker_urls, gw->auth ? ", API keys on" : ", no API keys");
    uv_run(&gw->loop, UV_RUN_DEFAULT);
    status = gw->exit_status;
out:
    if (gw->http || gw->ds) {
        if (gw->drain_timer.data) {
            close_all(gw);
        } else {
            gs_http_server_free(gw->http);
            gs_dispatch_free(gw->ds);
        }
        uv_run(&gw->loop, UV_RUN_DEFAULT);
    }
    if (gw->fetcher) { /* made before a later start-up step failed */
        gs_fetcher_free(gw->fetcher);
        gw->fetcher = NULL;
        uv_run(&gw->loop, UV_RUN_DEFAULT);
    }
    if (uv_loop_close(&gw->loop))
        gs_log_warn("loop closed with handles still open");
    gs_static_free(gw->st);
    for (int i = 0; i < gw->n_vendor; i++)
        gs_static_free(gw->vendor[i]);
    gs_metrics_free(gw->metrics);
    gs_ratelimit_free(gw->rl);
    gs_auth_free(gw->auth);
    free(gw);
    if (!status)
        gs_log_info("gateway %d exits", p->index);
    return status;
}
