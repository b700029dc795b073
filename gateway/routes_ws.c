/* routes_ws.c - GET /v1/ws: the browser UI's WebSocket protocol (docs/api.md,
 * "WebSocket /v1/ws"): JSON text messages (auth, ask, cancel) in; delta,
 * done and error messages out; images as binary frames after their ask.
 *
 * Owns one wsconn per socket and one ws_ask per ask in flight (each its
 * own dispatch job, through the same rate limits as the HTTP route). The
 * framing and the handshake are ws.c's; the request -> job conversion is
 * chat_job.c's. Closing the socket cancels every ask on it. Without
 * libwslay (GS_HAVE_WSLAY undefined) the route answers 501.
 *
 * Loop thread only. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/queue.h"
#include "common/sbuf.h"
#include "gateway/chat_job.h"
#include "gateway/gateway_impl.h"
#include "gateway/think_split.h"

#define ROUTE "/v1/ws"

#ifndef GS_HAVE_WSLAY

void gs_route_ws(gs_gw *gw, gs_http_req *r)
{
    gs_gw_error(gw, r, ROUTE, GS_ENOTSUP, 501,
                "this server was built without WebSocket support (libwslay); stream with POST "
                "/v1/chat/completions and \"stream\": true instead",
                NULL, 0);
}

#else

#include "gateway/ws.h"

#define MAX_ID 128 /* bytes of a client-chosen ask id */
/* Bytes of messages kept while one is parsed (wslay had read them). */
#define BACKLOG_MAX (1u << 20)
#define MAX_ASKS_PER_SOCKET 64

typedef struct wsconn wsconn;

/* One ask in flight (a dispatch job). */
typedef struct {
    gs_queue link; /* in wsconn.asks */
    wsconn *wc;
    gs_djob *job;
    char id[MAX_ID + 1];
    gs_think_split split;
    gs_sbuf content, reasoning; /* the text of the current event */
    uint64_t t0, t_first, t_last;
} ws_ask;

/* A message that came while another was parsed (see handle_text). */
typedef struct ws_msg {
    struct ws_msg *next;
    int binary;
    size_t n;
    uint64_t t0;
    char data[]; /* n bytes and a NUL */
} ws_msg;

/* A text message parsed on libuv's thread pool. */
typedef struct {
    uv_work_t work;
    wsconn *wc;
    char *text; /* owned copy, NUL-terminated */
    size_t n;
    uint64_t t0;
    gs_json_lift lift; /* into text */
    json_t *msg;
    json_error_t je;
} ws_parse;

/* One socket. */
struct wsconn {
    gs_gw *gw;
    gs_ws *ws;
    int authed; /* keys off, a valid Bearer header, or a valid auth message */
    char key_id[sizeof(((gs_auth_key *)0)->id)]; /* "" without a key */
    gs_auth_limits limits;                       /* the key's, copied (a SIGHUP may free the key) */
    gs_queue asks;                               /* ws_ask */
    int n_asks;
    /* an ask waiting for its binary frames */
    json_t *pending; /* owned */
    char pending_id[MAX_ID + 1];
    int need, have;
    uint8_t *frames[GS_IPC_MAX_IMAGES]; /* owned */
    size_t frame_len[GS_IPC_MAX_IMAGES];
    int going_away;
    ws_parse *parsing;              /* a parse in flight (the socket is paused) */
    ws_msg *backlog, *backlog_tail; /* what came meanwhile, in order */
    size_t backlog_bytes;
    int paused; /* reading paused (gs_ws_pause) until the backlog is through */
    int closed; /* on_close came while parsing: parse_done frees this */
};

/* ---- messages to the client ----------------------------------------------------------- */

/* Sends o (taken). */
static void send_json(wsconn *wc, json_t *o)
{
    char *js = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (js)
        gs_ws_send_text(wc->ws, js, strlen(js));
    free(js);
    json_decref(o);
}

/* {"type": "error", "id", "status", "code", "message"[, "retry_after"]};
 * id NULL: null; retry_after > 0: the seconds to wait (429, 503), as the
 * HTTP route's Retry-After header. */
static void send_error_retry(wsconn *wc, const char *id, int status, int code, const char *msg,
                             int retry_after)
{
    json_t *o = json_pack("{s:s, s:s?, s:i, s:s, s:s}", "type", "error", "id", id, "status", status,
                          "code", gs_err_name(code), "message", msg);
    if (o && retry_after > 0)
        json_object_set_new(o, "retry_after", json_integer(retry_after));
    send_json(wc, o);
}

static void send_error(wsconn *wc, const char *id, int status, int code, const char *msg)
{
    send_error_retry(wc, id, status, code, msg, 0);
}

/* ---- asks --------------------------------------------------------------------------------- */

static ws_ask *find_ask(wsconn *wc, const char *id)
{
    gs_queue *q;
    GS_QUEUE_FOREACH(q, &wc->asks)
    {
        ws_ask *a = gs_queue_data(q, ws_ask, link);
        if (!strcmp(a->id, id))
            return a;
    }
    return NULL;
}

/* Ends a's accounting and frees it (its job is over or cancelled). */
static void ask_end(ws_ask *a)
{
    wsconn *wc = a->wc;
    gs_queue_remove(&a->link);
    wc->n_asks--;
    if (wc->key_id[0])
        gs_ratelimit_release(wc->gw->rl, wc->key_id);
    wc->gw->streams_open--;
    free(a->content.p);
    free(a->reasoning.p);
    free(a);
}

static void sink(void *user, int reasoning, const char *s, size_t n)
{
    ws_ask *a = user;
    gs_sbuf_put(reasoning ? &a->reasoning : &a->content, s, n);
}

/* Sends the text gathered since the last delta, if any. */
static void send_delta(ws_ask *a)
{
    if (!a->content.n && !a->reasoning.n)
        return;
    json_t *o = json_pack("{s:s, s:s}", "type", "delta", "id", a->id);
    if (o && a->content.n)
        json_object_set_new(o, "content", json_stringn(a->content.p, a->content.n));
    if (o && a->reasoning.n)
        json_object_set_new(o, "reasoning", json_stringn(a->reasoning.p, a->reasoning.n));
    send_json(a->wc, o);
    /* Flushed: a piece lost to a failed allocation stays lost, the rest goes on. */
    a->content.n = a->reasoning.n = 0;
    a->content.oom = a->reasoning.oom = 0;
}

/* The gateway's latency and token metrics, as for the HTTP route. */
static void observe(ws_ask *a, const gs_ipc_event *e, uint64_t now)
{
    gs_gw *gw = a->wc->gw;
    gs_metric_series *s;
    if (e->n_ids) {
        if (!a->t_first) {
            a->t_first = now;
            if (!gs_metrics_series(gw->metrics, gw->m.ttft, NULL, &s))
                gs_metrics_observe(s, (now - a->t0) * 1e-9);
        } else if (a->t_last && !gs_metrics_series(gw->metrics, gw->m.itl, NULL, &s)) {
            gs_metrics_observe(s, (now - a->t_last) * 1e-9 / e->n_ids);
        }
        a->t_last = now;
    }
    if (!e->finish)
        return;
    if (!gs_metrics_series(gw->metrics, gw->m.e2e, NULL, &s))
        gs_metrics_observe(s, (now - a->t0) * 1e-9);
    if (!gs_metrics_series(gw->metrics, gw->m.prompt_tok, NULL, &s))
        gs_metrics_inc(s, (uint64_t)e->prompt_tokens);
    if (!gs_metrics_series(gw->metrics, gw->m.gen_tok, NULL, &s))
        gs_metrics_inc(s, (uint64_t)e->completion_tokens);
    if (a->wc->key_id[0])
        gs_ratelimit_charge_tokens(gw->rl, a->wc->key_id, (uint64_t)e->completion_tokens,
                                   now / 1000000u);
}

static void on_event(void *user, const gs_ipc_event *e)
{
    ws_ask *a = user;
    gs_gw *gw = a->wc->gw;
    if (e->queue_report) {
        send_json(a->wc, json_pack("{s:s, s:s, s:i}", "type", "queued", "id", a->id, "position",
                                   (int)e->queue_position));
        return;
    }
    observe(a, e, gs_clock_now_ns());
    gs_think_split_push(&a->split, e->text.p, e->text.len, sink, a);
    if (!e->finish) {
        send_delta(a);
        gs_gw_share(gw, gw->m.relay_s, gs_dispatch_frame_ns(gw->ds));
        return;
    }
    a->job = NULL;
    gs_gw_finished(gw, gs_ipc_finish_name(e->finish));
    gs_think_split_flush(&a->split, sink, a);
    send_delta(a);
    if (e->finish == GS_IPC_FINISH_ERROR) {
        char m[GS_IPC_MAX_MESSAGE + 1];
        snprintf(m, sizeof m, "%.*s", (int)e->message.len, e->message.p);
        send_error(a->wc, a->id, gs_err_http_status(e->error), e->error, m);
    } else {
        send_json(a->wc,
                  json_pack("{s:s, s:s, s:s, s:{s:i, s:i, s:i, s:i}, s:{s:f, s:f, s:f}}", "type",
                            "done", "id", a->id, "finish_reason", gs_ipc_finish_name(e->finish),
                            "usage", "prompt_tokens", e->prompt_tokens, "completion_tokens",
                            e->completion_tokens, "total_tokens",
                            e->prompt_tokens + e->completion_tokens, "cached_tokens",
                            e->cached_prompt_tokens, "timings", "queue_ms", e->queue_ns * 1e-6,
                            "ttft_ms", e->ttft_ns * 1e-6, "decode_ms", e->decode_ns * 1e-6));
    }
    gs_gw_share(gw, gw->m.relay_s, gs_dispatch_frame_ns(gw->ds));
    ask_end(a);
}

static void on_error(void *user, int code, const char *msg)
{
    ws_ask *a = user;
    a->job = NULL;
    gs_gw_finished(a->wc->gw, "error");
    send_error_retry(a->wc, a->id, gs_err_http_status(code), code, msg,
                     code == GS_EOVERLOAD ? 1 : 0);
    ask_end(a);
}

/* image_ref parts -> placeholder image_url parts that chat_job.c counts in
 * order; slot_frame[slot] = the binary frame for that image slot (-1: a
 * data URL of the request's own). 0 or 400 with msg. */
static int resolve_refs(json_t *req, int n_frames, int slot_frame[GS_IPC_MAX_IMAGES], char *msg,
                        size_t cap)
{
    int slot = 0;
    size_t mi, pi;
    json_t *m, *part;
    json_array_foreach(json_object_get(req, "messages"), mi, m)
    {
        json_t *content = json_is_object(m) ? json_object_get(m, "content") : NULL;
        if (!json_is_array(content))
            continue;
        json_array_foreach(content, pi, part)
        {
            const char *type = json_string_value(json_object_get(part, "type"));
            if (!type || (strcmp(type, "image_url") && strcmp(type, "image_ref")))
                continue;
            if (slot >= GS_IPC_MAX_IMAGES)
                return 0; /* chat_job.c refuses the count */
            slot_frame[slot] = -1;
            if (!strcmp(type, "image_ref")) {
                const json_t *ix = json_object_get(part, "index");
                if (!json_is_integer(ix) || json_integer_value(ix) < 0 ||
                    json_integer_value(ix) >= n_frames) {
                    snprintf(msg, cap,
                             "messages[%zu].content[%zu].index must be an integer in [0, %d): "
                             "the binary frames sent after this ask",
                             mi, pi, n_frames);
                    return 400;
                }
                slot_frame[slot] = (int)json_integer_value(ix);
                json_object_clear(part);
                json_object_set_new(part, "type", json_string("image_url"));
                json_object_set_new(part, "image_url",
                                    json_pack("{s:s}", "url", "data:image/png;base64,AA=="));
            }
            slot++;
        }
    }
    return 0;
}

/* The text of the message an ask came in, and the data: URL payloads
 * lifted out of it before the parse (json_lift.h; lift NULL: none). */
typedef struct {
    const char *p;
    size_t n;
    const gs_json_lift *lift;
    uint64_t t0; /* when the message arrived */
} ask_text;

/* The ask's job from req (borrowed; its image_ref parts are rewritten)
 * and the binary frames frames[0..n) (borrowed, copied into the job); t
 * (may be NULL) as above. 0, or an HTTP status with msg (job freed). */
static int build_job(wsconn *wc, json_t *req, const ask_text *t, uint8_t **frames,
                     const size_t *frame_len, int n, gs_chat_job *job, char *msg, size_t cap)
{
    gs_gw *gw = wc->gw;
    memset(job, 0, sizeof *job);
    int slot_frame[GS_IPC_MAX_IMAGES];
    int status = resolve_refs(req, n, slot_frame, msg, cap);
    if (status)
        return status;
    gs_dispatch_stats ds;
    gs_dispatch_get_stats(gw->ds, &ds);
    /* asks carry bytes: no remote fetch */
    gs_chat_job_params jp = {gw->cfg.max_images, ds.model, 0, t ? t->lift : NULL};
    const char *param = NULL;
    status = gs_chat_job_build(&jp, req, job, msg, cap, &param);
    if (!status && jp.lift && gs_chat_job_marker_leaked(job)) {
        /* Built from the plain parse instead, as gs_chat_job_from_body
         * does. That parse cannot fail but for memory: the lifted one
         * succeeded. */
        gs_chat_job_free(job);
        json_t *plain = json_loadb(t->p, t->n, JSON_REJECT_DUPLICATES, NULL);
        if (!plain) {
            snprintf(msg, cap, "out of memory");
            return 503;
        }
        status = build_job(wc, plain, NULL, frames, frame_len, n, job, msg, cap);
        json_decref(plain);
        return status;
    }
    for (int i = 0; !status && i < job->n_images; i++) {
        if (slot_frame[i] < 0)
            continue;
        size_t len = frame_len[slot_frame[i]];
        uint8_t *b = malloc(len ? len : 1);
        if (!b) {
            status = 503;
            snprintf(msg, cap, "out of memory");
            break;
        }
        memcpy(b, frames[slot_frame[i]], len);
        gs_chat_job_set_image(job, i, b, len);
    }
    if (status)
        gs_chat_job_free(job);
    return status;
}

/* Starts an ask that arrived whole at t0 (its message, and its last
 * frame, received: the clock of its metrics, as a request's over HTTP)
 * (req borrowed; t as build_job's; frames[0..n) borrowed, copied into the
 * job). */
static void start_ask(wsconn *wc, const char *id, json_t *req, const ask_text *t, uint64_t t0,
                      uint8_t **frames, const size_t *frame_len, int n)
{
    gs_gw *gw = wc->gw;
    if (wc->going_away || gw->draining || !gw->ds) {
        send_error(wc, id, 503, GS_ESHUTDOWN, "the server is shutting down");
        return;
    }
    if (wc->n_asks >= MAX_ASKS_PER_SOCKET) {
        send_error(wc, id, 429, GS_EBUSY, "too many asks in flight on this socket");
        return;
    }
    char m[200];
    int retry = 0;
    int rc = gs_gw_admit(gw, wc->key_id[0] ? wc->key_id : NULL, wc->key_id[0] ? &wc->limits : NULL,
                         gs_ws_peer(wc->ws), m, sizeof m, &retry);
    if (rc) {
        send_error_retry(wc, id, rc == GS_EBUSY ? 429 : 503, rc, m, retry);
        return;
    }
    ws_ask *a = calloc(1, sizeof *a);
    if (!a) {
        if (wc->key_id[0])
            gs_ratelimit_release(gw->rl, wc->key_id);
        send_error(wc, id, 503, GS_ENOMEM, "out of memory");
        return;
    }
    a->wc = wc;
    a->t0 = t0;
    snprintf(a->id, sizeof a->id, "%s", id);
    gs_think_split_init(&a->split);
    gs_queue_insert_tail(&wc->asks, &a->link);
    wc->n_asks++;
    gw->streams_open++;

    char msg[512];
    gs_chat_job job;
    int status = build_job(wc, req, t, frames, frame_len, n, &job, msg, sizeof msg);
    if (status) {
        send_error(wc, id, status, gs_chat_job_err_code(status), msg);
        ask_end(a);
        return;
    }
    gs_djob_cbs cbs = {on_event, on_error};
    rc = gs_dispatch_submit(gw->ds, job.json, strlen(job.json), job.images, job.n_images, &cbs, a,
                            &a->job);
    gs_chat_job_free(&job);
    if (!rc)
        gs_gw_share(gw, gw->m.dispatch_s, a->t0);
    if (rc) {
        send_error_retry(wc, id, gs_err_http_status(rc), rc,
                         rc == GS_EOVERLOAD ? "no worker can take the request now; retry later"
                                            : gs_strerror(rc),
                         rc == GS_EOVERLOAD || rc == GS_ESHUTDOWN ? 1 : 0);
        ask_end(a);
    }
}

static void drop_pending(wsconn *wc)
{
    json_decref(wc->pending);
    wc->pending = NULL;
    for (int i = 0; i < wc->have; i++)
        free(wc->frames[i]);
    wc->need = wc->have = 0;
}

/* ---- messages from the client ------------------------------------------------------------ */

/* A key (borrowed) -> authed, or an error and close 1008. */
static void on_auth(wsconn *wc, const json_t *msg)
{
    gs_gw *gw = wc->gw;
    const char *key = json_string_value(json_object_get(msg, "key"));
    if (!gw->auth) {
        wc->authed = 1;
    } else {
        const gs_auth_key *k = NULL;
        if (!key || gs_auth_check(gw->auth, key, strlen(key), &k)) {
            send_error(wc, NULL, 401, GS_EAUTH, "invalid API key");
            gs_ws_close(wc->ws, GS_WS_POLICY, "invalid API key");
            return;
        }
        wc->authed = 1;
        snprintf(wc->key_id, sizeof wc->key_id, "%s", k->id);
        wc->limits = k->limits;
    }
    send_json(wc, json_pack("{s:s, s:b}", "type", "auth", "ok", 1));
}

static void on_ask(wsconn *wc, json_t *msg, const ask_text *t)
{
    gs_gw *gw = wc->gw;
    const json_t *jid = json_object_get(msg, "id");
    const char *id = json_string_value(jid);
    if (!id || !id[0] || strlen(id) > MAX_ID) {
        send_error(wc, NULL, 400, GS_EINVAL, "an ask needs an \"id\": a string of 1 to 128 bytes");
        return;
    }
    if (gw->auth && !wc->authed) {
        send_error(wc, id, 401, GS_EAUTH,
                   "missing API key: send {\"type\": \"auth\", \"key\": ...} first");
        gs_ws_close(wc->ws, GS_WS_POLICY, "missing API key");
        return;
    }
    if (find_ask(wc, id)) {
        send_error(wc, id, 400, GS_EINVAL, "an ask with this id is already in flight");
        return;
    }
    const json_t *ni = json_object_get(msg, "images");
    json_int_t n = json_is_integer(ni) ? json_integer_value(ni) : 0;
    int max = gw->cfg.max_images < GS_IPC_MAX_IMAGES ? gw->cfg.max_images : GS_IPC_MAX_IMAGES;
    if ((ni && !json_is_null(ni) && !json_is_integer(ni)) || n < 0 || n > max) {
        char m[128];
        snprintf(m, sizeof m, "\"images\" must be an integer from 0 to %d", max);
        send_error(wc, id, 400, GS_EINVAL, m);
        return;
    }
    if (!n) {
        start_ask(wc, id, msg, t, t->t0, NULL, NULL, 0);
        return;
    }
    /* The ask outlives its message's text, which lifted payloads point
     * into: a lifted one waits as a plain parse. */
    wc->pending = t->lift ? json_loadb(t->p, t->n, JSON_REJECT_DUPLICATES, NULL) : json_incref(msg);
    if (!wc->pending) {
        send_error(wc, id, 503, GS_ENOMEM, "out of memory");
        return;
    }
    snprintf(wc->pending_id, sizeof wc->pending_id, "%s", id);
    wc->need = (int)n;
    wc->have = 0;
}

static void on_cancel(wsconn *wc, const json_t *msg)
{
    const char *id = json_string_value(json_object_get(msg, "id"));
    ws_ask *a = id ? find_ask(wc, id) : NULL;
    if (!a) {
        send_error(wc, id, 404, GS_ENOENT, "no ask in flight with this id");
        return;
    }
    if (a->job)
        gs_gw_cancel(wc->gw, a->job); /* no callback after this */
    a->job = NULL;
    gs_think_split_flush(&a->split, sink, a);
    send_delta(a);
    send_json(wc, json_pack("{s:s, s:s, s:s}", "type", "done", "id", a->id, "finish_reason",
                            "cancelled"));
    ask_end(a);
}

/* A parsed text message (msg taken; t: its text and lifted payloads). */
static void dispatch_text(wsconn *wc, json_t *msg, const json_error_t *je, const ask_text *t)
{
    const char *type = json_string_value(json_object_get(msg, "type"));
    if (!msg || !json_is_object(msg) || !type) {
        char m[300];
        if (!msg)
            snprintf(m, sizeof m, "invalid JSON at byte %d: %s", je->position, je->text);
        else
            snprintf(m, sizeof m, "a message must be a JSON object with a \"type\"");
        send_error(wc, NULL, 400, GS_EINVAL, m);
    } else if (!strcmp(type, "auth")) {
        on_auth(wc, msg);
    } else if (!strcmp(type, "ask")) {
        on_ask(wc, msg, t);
    } else if (!strcmp(type, "cancel")) {
        on_cancel(wc, msg);
    } else {
        char m[160];
        snprintf(m, sizeof m, "unknown message type '%.64s' (auth, ask, cancel)", type);
        send_error(wc, json_string_value(json_object_get(msg, "id")), 400, GS_EINVAL, m);
    }
    json_decref(msg);
}

static void parse_work(uv_work_t *w)
{
    ws_parse *p = w->data;
    p->msg = gs_json_load_lifted(p->text, p->n, JSON_REJECT_DUPLICATES, &p->lift, &p->je);
}

static void handle_text(wsconn *wc, const char *s, size_t n, uint64_t t0);
static void handle_binary(wsconn *wc, const uint8_t *p, size_t n, uint64_t t0);

/* The messages that came while a parse ran, in order, until one starts
 * another parse; then reading resumes. */
static void replay(wsconn *wc)
{
    while (wc->backlog && !wc->parsing) {
        ws_msg *m = wc->backlog;
        wc->backlog = m->next;
        if (!wc->backlog)
            wc->backlog_tail = NULL;
        wc->backlog_bytes -= m->n;
        if (m->binary)
            handle_binary(wc, (const uint8_t *)m->data, m->n, m->t0);
        else
            handle_text(wc, m->data, m->n, m->t0);
        free(m);
    }
    if (!wc->parsing && wc->paused) {
        wc->paused = 0;
        gs_ws_resume(wc->ws);
    }
}

static void parse_done(uv_work_t *w, int status)
{
    (void)status; /* never cancelled */
    ws_parse *p = w->data;
    wsconn *wc = p->wc;
    wc->parsing = NULL;
    if (wc->closed) { /* on_close came meanwhile and left wc to us */
        json_decref(p->msg);
        free(p->text);
        free(p);
        free(wc);
        return;
    }
    const ask_text t = {p->text, p->n, p->lift.n ? &p->lift : NULL, p->t0};
    dispatch_text(wc, p->msg, &p->je, &t);
    free(p->text);
    free(p);
    replay(wc);
}

/* A text message (s borrowed). One over GS_CHAT_JOB_PARSE_INLINE_MAX is parsed on
 * libuv's thread pool, the socket paused meanwhile, so that a message of
 * megabytes does not hold up the gateway's other connections. */
static void handle_text(wsconn *wc, const char *s, size_t n, uint64_t t0)
{
    if (wc->pending) {
        char m[160];
        snprintf(m, sizeof m, "expected %d more binary frame(s) with this ask's images",
                 wc->need - wc->have);
        send_error(wc, wc->pending_id, 400, GS_EINVAL, m);
        drop_pending(wc);
    }
    if (n > GS_CHAT_JOB_PARSE_INLINE_MAX) {
        ws_parse *p = calloc(1, sizeof *p);
        char *copy = p ? malloc(n + 1) : NULL;
        if (copy) {
            memcpy(copy, s, n + 1); /* with its NUL */
            *p = (ws_parse){.wc = wc, .text = copy, .n = n, .t0 = t0};
            p->work.data = p;
            if (!uv_queue_work(&wc->gw->loop, &p->work, parse_work, parse_done)) {
                wc->parsing = p;
                if (!wc->paused) {
                    wc->paused = 1;
                    gs_ws_pause(wc->ws);
                }
                return;
            }
        }
        free(copy);
        free(p); /* parsed here instead */
    }
    json_error_t je;
    gs_json_lift lift;
    json_t *msg = gs_json_load_lifted(s, n, JSON_REJECT_DUPLICATES, &lift, &je);
    const ask_text t = {s, n, lift.n ? &lift : NULL, t0};
    dispatch_text(wc, msg, &je, &t);
}

static void handle_binary(wsconn *wc, const uint8_t *p, size_t n, uint64_t t0)
{
    if (!wc->pending) {
        send_error(wc, NULL, 400, GS_EINVAL,
                   "unexpected binary frame: send an ask with \"images\": N first");
        return;
    }
    uint8_t *b = n ? malloc(n) : NULL;
    if (!n || !b) {
        send_error(wc, wc->pending_id, n ? 503 : 400, n ? GS_ENOMEM : GS_EINVAL,
                   n ? "out of memory" : "empty image frame");
        drop_pending(wc);
        return;
    }
    memcpy(b, p, n);
    wc->frames[wc->have] = b;
    wc->frame_len[wc->have++] = n;
    if (wc->have < wc->need)
        return;
    start_ask(wc, wc->pending_id, wc->pending, NULL, t0, wc->frames, wc->frame_len, wc->have);
    drop_pending(wc);
}

/* A message that arrived while a parse ran waits (copied) for its turn. */
static void backlog_push(wsconn *wc, int binary, const void *data, size_t n)
{
    ws_msg *m = malloc(sizeof *m + n + 1);
    if (!m || wc->backlog_bytes + n > BACKLOG_MAX) {
        free(m);
        gs_ws_close(wc->ws, GS_WS_TOO_BIG, "too many messages while one is parsed");
        return;
    }
    m->next = NULL;
    m->binary = binary;
    m->n = n;
    m->t0 = gs_clock_now_ns();
    memcpy(m->data, data, n);
    m->data[n] = 0;
    if (wc->backlog_tail)
        wc->backlog_tail->next = m;
    else
        wc->backlog = m;
    wc->backlog_tail = m;
    wc->backlog_bytes += n;
}

static void on_text(gs_ws *ws, void *user, const char *s, size_t n)
{
    wsconn *wc = user;
    if (wc->parsing || wc->backlog)
        backlog_push(wc, 0, s, n);
    else
        handle_text(wc, s, n, gs_clock_now_ns());
}

static void on_binary(gs_ws *ws, void *user, const uint8_t *p, size_t n)
{
    wsconn *wc = user;
    if (wc->parsing || wc->backlog)
        backlog_push(wc, 1, p, n);
    else
        handle_binary(wc, p, n, gs_clock_now_ns());
}

/* Drain: no new asks; once the last one has ended, close with 1001. */
static void on_tick(gs_ws *ws, void *user)
{
    wsconn *wc = user;
    if (wc->gw->draining)
        wc->going_away = 1;
    if (wc->going_away && !wc->n_asks)
        gs_ws_close(ws, GS_WS_GOING_AWAY, "server shutting down");
}

/* The socket is gone: cancel every ask on it. */
static void on_close(gs_ws *ws, void *user, int code)
{
    wsconn *wc = user;
    while (!gs_queue_empty(&wc->asks)) {
        ws_ask *a = gs_queue_data(gs_queue_head(&wc->asks), ws_ask, link);
        if (a->job)
            gs_gw_cancel(wc->gw, a->job);
        ask_end(a);
    }
    drop_pending(wc);
    while (wc->backlog) {
        ws_msg *m = wc->backlog;
        wc->backlog = m->next;
        free(m);
    }
    if (wc->parsing) { /* its parse_done frees wc */
        wc->closed = 1;
        return;
    }
    free(wc);
}

void gs_route_ws(gs_gw *gw, gs_http_req *r)
{
    char accept[29], msg[200];
    int status = gs_ws_check_request(r, accept, msg, sizeof msg);
    if (status == 426) {
        json_t *o = json_pack("{s:{s:s, s:s, s:n, s:s}}", "error", "message", msg, "type",
                              "invalid_request_error", "param", "code", "EUPGRADE");
        char *js = o ? json_dumps(o, JSON_COMPACT) : NULL;
        gs_gw_count(gw, ROUTE, 426);
        gs_http_respond(r, 426, "application/json",
                        "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n", js ? js : "{}",
                        js ? strlen(js) : 2);
        free(js);
        json_decref(o);
        return;
    }
    if (status) {
        gs_gw_error(gw, r, ROUTE, GS_EINVAL, status, msg, NULL, 0);
        return;
    }
    if (gw->draining) {
        gs_gw_error(gw, r, ROUTE, GS_ESHUTDOWN, 503, "the server is shutting down", NULL, 1);
        return;
    }
    wsconn *wc = calloc(1, sizeof *wc);
    if (!wc) {
        gs_gw_error(gw, r, ROUTE, GS_ENOMEM, 503, "out of memory", NULL, 1);
        return;
    }
    wc->gw = gw;
    gs_queue_init(&wc->asks);
    /* Keys: an Authorization header on the upgrade (non-browser clients),
     * else an auth message first. */
    const char *h = gs_http_req_header(r, "authorization");
    if (!gw->auth) {
        wc->authed = 1;
    } else if (h) {
        const char *tok = NULL;
        size_t tl = 0;
        const gs_auth_key *k = NULL;
        if (gs_auth_parse_bearer(h, strlen(h), &tok, &tl) || gs_auth_check(gw->auth, tok, tl, &k)) {
            free(wc);
            gs_gw_error(gw, r, ROUTE, GS_EAUTH, 401, "invalid API key", NULL, 0);
            return;
        }
        wc->authed = 1;
        snprintf(wc->key_id, sizeof wc->key_id, "%s", k->id);
        wc->limits = k->limits;
    }
    gs_ws_params wp = {0};
    wp.max_message_bytes = (size_t)gw->cfg.max_body_mb << 20;
    wp.send_timeout_ms = (uint32_t)gw->cfg.send_timeout * 1000u;
    gs_ws_cbs cbs = {on_text, on_binary, on_tick, on_close};
    int rc = gs_ws_accept(r, accept, &wp, &cbs, wc, &wc->ws);
    if (rc) {
        free(wc);
        gs_gw_count(gw, ROUTE, 499);
        return;
    }
    gs_gw_count(gw, ROUTE, 101);
}

#endif
