/* routes_openai.c - POST /v1/chat/completions: an OpenAI request ->
 * validated job JSON (worker/request.h's schema) + raw image bytes ->
 * dispatch -> one JSON body, or Server-Sent Events shaped as OpenAI's
 * chunks ending with "data: [DONE]".
 *
 * Images come as base64 data: URLs in image_url parts and travel raw;
 * remote URLs are refused. The answer's <think> part is returned as
 * reasoning_content (think_split.h); "chat_template_kwargs":
 * {"enable_thinking": false} (or a top-level "enable_thinking": false)
 * turns thinking off. A client that goes away cancels its job.
 * Loop thread only. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/sbuf.h"
#include "gateway/chat_job.h"
#include "gateway/fetch.h"
#include "gateway/gateway_impl.h"
#include "gateway/think_split.h"

#define ROUTE "/v1/chat/completions"

struct chat;
typedef struct {
    struct chat *c;
    int k; /* image index */
} fetch_slot;

/* One chat request in flight. */
typedef struct chat {
    gs_gw *gw;
    gs_http_req *r;
    gs_djob *job;
    const char *key_id; /* rate-limit identity (owned copy), NULL without keys */
    int stream, include_usage, streaming_started;
    char id[112], model[GS_IPC_MAX_NAME + 1];
    int64_t created;
    gs_think_split split;
    gs_sbuf content, reasoning; /* non-streaming: the whole answer */
    gs_sbuf chunk;              /* streaming: the SSE bytes of one event */
    gs_sbuf head;               /* streaming: a delta chunk's fixed start */
    /* Remote images being fetched before the job is sent (fetch_images). */
    gs_chat_job jd;
    gs_fetch *fetches[GS_IPC_MAX_IMAGES];
    fetch_slot slots[GS_IPC_MAX_IMAGES];
    int fetch_pending, fetch_rc;
    char fetch_msg[400];
    uint64_t t0, t_first, t_last;
    uint64_t t_in; /* the handler started: the request is all in */
    int fetched;   /* some image was downloaded by the gateway */
    int32_t n_tokens;
    /* A large body is parsed and built into jd on libuv's thread pool
     * (parse_work), so the loop serves other connections meanwhile. */
    uv_work_t work;
    gs_chat_job_params jp;
    char jp_model[GS_IPC_MAX_NAME + 1]; /* jp.model's copy (the loop may change its own) */
    int parsing;       /* the work is queued or running: it reads r's body and writes jd */
    int abort_pending; /* the client went away meanwhile */
    int parse_status;
    const char *parse_param;
    char parse_msg[512];
} chat;

static void chat_free(chat *c)
{
    free((char *)c->key_id);
    free(c->content.p);
    free(c->reasoning.p);
    free(c->chunk.p);
    free(c->head.p);
    for (int i = 0; i < GS_IPC_MAX_IMAGES; i++)
        gs_fetch_cancel(c->fetches[i]);
    gs_chat_job_free(&c->jd);
    free(c);
}

/* Ends c's request accounting (stream slot, gauge). */
static void chat_end(chat *c)
{
    gs_gw *gw = c->gw;
    if (c->key_id)
        gs_ratelimit_release(gw->rl, c->key_id);
    gw->streams_open--;
}

/* ---- events -> the client ---------------------------------------------------------- */

/* One SSE chunk with a delta {kind: text} (or {} with a finish reason). */
/* Appends `data: <o as compact JSON>` and the blank line to the pending
 * SSE bytes; takes o (NULL: nothing, out of memory). */
static void sse_event(chat *c, json_t *o)
{
    char *js = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (js) {
        GS_SBUF_LIT(&c->chunk, "data: ");
        gs_sbuf_puts(&c->chunk, js);
        GS_SBUF_LIT(&c->chunk, "\n\n");
    }
    free(js);
    json_decref(o);
}

/* Appends s[0..n) (valid UTF-8: the wire decoder checked it) as a JSON
 * string: quotes, backslashes and control characters escaped. */
static void sb_json_string(gs_sbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    gs_sbuf_put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        gs_sbuf_put(b, s + run, i - run);
        run = i + 1;
        char esc[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
        if (ch == '"' || ch == '\\') {
            esc[1] = (char)ch;
            gs_sbuf_put(b, esc, 2);
        } else if (ch == '\n' || ch == '\t' || ch == '\r') {
            esc[1] = ch == '\n' ? 'n' : ch == '\t' ? 't' : 'r';
            gs_sbuf_put(b, esc, 2);
        } else {
            gs_sbuf_put(b, esc, 6);
        }
    }
    gs_sbuf_put(b, s + run, n - run);
    gs_sbuf_put(b, "\"", 1);
}

/* One SSE chunk with a delta {kind: text} (or {} with a finish reason).
 * A plain delta, one per token event of every stream, is written from a
 * head made once per request (id, created, model) without building a
 * JSON tree; the first and the last chunk go through jansson. */
static void sse_chunk(chat *c, const char *kind, const char *s, size_t n, const char *finish,
                      int with_role)
{
    if (kind && !finish && !with_role) {
        if (!c->head.n) {
            json_t *id = json_string(c->id), *model = json_string(c->model);
            char *ids = id ? json_dumps(id, JSON_ENCODE_ANY) : NULL;
            char *ms = model ? json_dumps(model, JSON_ENCODE_ANY) : NULL;
            char created[32];
            snprintf(created, sizeof created, "%lld", (long long)c->created);
            GS_SBUF_LIT(&c->head, "data: {\"id\":");
            if (ids)
                gs_sbuf_put(&c->head, ids, strlen(ids));
            GS_SBUF_LIT(&c->head, ",\"object\":\"chat.completion.chunk\",\"created\":");
            gs_sbuf_put(&c->head, created, strlen(created));
            GS_SBUF_LIT(&c->head, ",\"model\":");
            if (ms)
                gs_sbuf_put(&c->head, ms, strlen(ms));
            GS_SBUF_LIT(&c->head, ",\"choices\":[{\"index\":0,\"delta\":{\"");
            free(ids);
            free(ms);
            json_decref(id);
            json_decref(model);
            if (!ids || !ms)
                c->head.oom = 1;
        }
        static const char tail[] = "},\"logprobs\":null,\"finish_reason\":null}]}\n\n";
        gs_sbuf_put(&c->chunk, c->head.p, c->head.n);
        gs_sbuf_put(&c->chunk, kind, strlen(kind));
        gs_sbuf_put(&c->chunk, "\":", 2);
        sb_json_string(&c->chunk, s, n);
        gs_sbuf_put(&c->chunk, tail, sizeof tail - 1);
        if (c->head.oom)
            c->chunk.oom = 1;
        return;
    }
    json_t *delta = json_object();
    if (with_role)
        json_object_set_new(delta, "role", json_string("assistant"));
    if (kind)
        json_object_set_new(delta, kind, json_stringn(s, n));
    json_t *o =
        json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:o, s:n, s:s?}]}", "id", c->id, "object",
                  "chat.completion.chunk", "created", (json_int_t)c->created, "model", c->model,
                  "choices", "index", 0, "delta", delta, "logprobs", "finish_reason", finish);
    sse_event(c, o);
}

static void sink(void *user, int reasoning, const char *s, size_t n)
{
    chat *c = user;
    if (c->stream)
        sse_chunk(c, reasoning ? "reasoning_content" : "content", s, n, NULL, 0);
    else
        gs_sbuf_put(reasoning ? &c->reasoning : &c->content, s, n);
}

static json_t *usage_json(const gs_ipc_event *e)
{
    return json_pack("{s:i, s:i, s:i, s:{s:i}}", "prompt_tokens", e->prompt_tokens,
                     "completion_tokens", e->completion_tokens, "total_tokens",
                     e->prompt_tokens + e->completion_tokens, "prompt_tokens_details",
                     "cached_tokens", e->cached_prompt_tokens);
}

static void observe(chat *c, const gs_ipc_event *e, uint64_t now)
{
    gs_gw *gw = c->gw;
    if (e->n_ids) {
        if (!c->t_first) {
            c->t_first = now;
            gs_metric_series *s;
            if (!gs_metrics_series(gw->metrics, gw->m.ttft, NULL, &s))
                gs_metrics_observe(s, (now - c->t0) * 1e-9);
        } else if (c->t_last) {
            gs_metric_series *s;
            if (!gs_metrics_series(gw->metrics, gw->m.itl, NULL, &s))
                gs_metrics_observe(s, (now - c->t_last) * 1e-9 / e->n_ids);
        }
        c->t_last = now;
        c->n_tokens += (int32_t)e->n_ids;
    }
    if (e->finish) {
        gs_metric_series *s;
        if (!gs_metrics_series(gw->metrics, gw->m.e2e, NULL, &s))
            gs_metrics_observe(s, (now - c->t0) * 1e-9);
        if (!gs_metrics_series(gw->metrics, gw->m.prompt_tok, NULL, &s))
            gs_metrics_inc(s, (uint64_t)e->prompt_tokens);
        if (!gs_metrics_series(gw->metrics, gw->m.gen_tok, NULL, &s))
            gs_metrics_inc(s, (uint64_t)e->completion_tokens);
        if (c->key_id)
            gs_ratelimit_charge_tokens(gw->rl, c->key_id, (uint64_t)e->completion_tokens,
                                       now / 1000000u);
    }
}

static void stream_error(chat *c, int code, const char *msg)
{
    json_t *o = json_pack("{s:{s:s, s:s, s:n, s:i}}", "error", "message", msg, "type",
                          gs_err_type(code), "param", "code", gs_err_http_status(code));
    /* A message jansson refuses (not UTF-8) must not make the error event
     * vanish from the stream: say the code's own message instead. */
    if (!o)
        o = json_pack("{s:{s:s, s:s, s:n, s:i}}", "error", "message", gs_strerror(code), "type",
                      gs_err_type(code), "param", "code", gs_err_http_status(code));
    sse_event(c, o);
}

static void flush_chunk(chat *c)
{
    if (c->chunk.n && !c->chunk.oom)
        gs_http_stream_write(c->r, c->chunk.p, c->chunk.n);
    c->chunk.n = 0;
}

static void on_event(void *user, const gs_ipc_event *e)
{
    chat *c = user;
    if (e->queue_report)
        return; /* a place in the worker's queue: the WebSocket shows it, SSE has no field */
    const uint64_t now = gs_clock_now_ns();
    if (c->stream && !c->streaming_started && e->finish != GS_IPC_FINISH_ERROR) {
        gs_http_stream_begin(c->r, 200, "text/event-stream",
                             "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
        c->streaming_started = 1;
        sse_chunk(c, "content", "", 0, NULL, 1);
    }
    observe(c, e, now);
    gs_think_split_push(&c->split, e->text.p, e->text.len, sink, c);
    if (!e->finish) {
        if (c->stream) {
            flush_chunk(c);
            gs_gw_share(c->gw, c->gw->m.relay_s, gs_dispatch_frame_ns(c->gw->ds));
        }
        return;
    }
    c->job = NULL;
    gs_gw_finished(c->gw, gs_ipc_finish_name(e->finish));
    gs_think_split_flush(&c->split, sink, c);
    gs_gw *gw = c->gw;
    if (c->stream && c->streaming_started) {
        if (e->finish == GS_IPC_FINISH_ERROR) {
            char m[GS_IPC_MAX_MESSAGE + 1];
            snprintf(m, sizeof m, "%.*s", (int)e->message.len, e->message.p);
            stream_error(c, e->error, m);
        } else {
            sse_chunk(c, NULL, NULL, 0, gs_ipc_finish_name(e->finish), 0);
            if (c->include_usage) {
                json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:[], s:o}", "id", c->id, "object",
                                      "chat.completion.chunk", "created", (json_int_t)c->created,
                                      "model", c->model, "choices", "usage", usage_json(e));
                sse_event(c, o);
            }
        }
        gs_sbuf_put(&c->chunk, "data: [DONE]\n\n", 14);
        flush_chunk(c);
        gs_http_stream_end(c->r);
        gs_gw_count(gw, ROUTE, 200);
    } else if (e->finish == GS_IPC_FINISH_ERROR) {
        char m[GS_IPC_MAX_MESSAGE + 1];
        snprintf(m, sizeof m, "%.*s", (int)e->message.len, e->message.p);
        gs_gw_error(gw, c->r, ROUTE, e->error, 0, m, NULL, 0);
    } else {
        json_t *msg = json_pack("{s:s, s:s%}", "role", "assistant", "content",
                                c->content.p ? c->content.p : "", c->content.n);
        if (c->reasoning.n) {
            size_t n = c->reasoning.n;
            while (n && c->reasoning.p[n - 1] == '\n')
                n--; /* the template's rstrip('\n') before </think> */
            json_object_set_new(msg, "reasoning_content", json_stringn(c->reasoning.p, n));
        }
        json_t *o =
            json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:o, s:n, s:s}], s:o}", "id", c->id, "object",
                      "chat.completion", "created", (json_int_t)c->created, "model", c->model,
                      "choices", "index", 0, "message", msg, "logprobs", "finish_reason",
                      gs_ipc_finish_name(e->finish), "usage", usage_json(e));
        char *js = o ? json_dumps(o, JSON_COMPACT) : NULL;
        if (js)
            gs_gw_json(gw, c->r, ROUTE, 200, js, strlen(js));
        else
            gs_gw_error(gw, c->r, ROUTE, GS_ENOMEM, 0, "out of memory", NULL, 0);
        free(js);
        json_decref(o);
    }
    gs_gw_share(gw, gw->m.relay_s, gs_dispatch_frame_ns(gw->ds));
    chat_end(c);
    chat_free(c);
}

static void on_error(void *user, int code, const char *msg)
{
    chat *c = user;
    c->job = NULL;
    gs_gw_finished(c->gw, "error");
    if (c->stream && c->streaming_started) {
        stream_error(c, code, msg);
        gs_sbuf_put(&c->chunk, "data: [DONE]\n\n", 14);
        flush_chunk(c);
        gs_http_stream_end(c->r);
        gs_gw_count(c->gw, ROUTE, 200);
    } else {
        gs_gw_error(c->gw, c->r, ROUTE, code, 0, msg, NULL, code == GS_EOVERLOAD ? 1 : 0);
    }
    chat_end(c);
    chat_free(c);
}

/* The client went away: stop the job, make the final call. */
static void on_abort(gs_http_req *r, void *user)
{
    chat *c = user;
    if (c->parsing) { /* parse_done answers once the thread is done with r's body */
        c->abort_pending = 1;
        return;
    }
    if (c->job)
        gs_gw_cancel(c->gw, c->job);
    c->job = NULL;
    if (c->stream && c->streaming_started)
        gs_http_stream_end(r);
    else
        gs_http_respond(r, 499, "application/json", NULL, "{}", 2);
    gs_gw_count(c->gw, ROUTE, 499);
    chat_end(c);
    chat_free(c);
}

/* Content-Type ct names type (parameters after ';' allowed). A prefix is
 * not enough: "application/jsonx" is another type. */
static int media_type_is(const char *ct, const char *type)
{
    size_t n = strlen(type);
    if (strncasecmp(ct, type, n))
        return 0;
    ct += n;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == 0 || *ct == ';';
}

/* Sends the job (images all in hand) to a worker. */
static void submit(chat *c)
{
    gs_gw *gw = c->gw;
    gs_djob_cbs cbs = {on_event, on_error};
    int rc = gs_dispatch_submit(gw->ds, c->jd.json, strlen(c->jd.json), c->jd.images,
                                c->jd.n_images, &cbs, c, &c->job);
    gs_chat_job_free(&c->jd);
    if (!rc && !c->fetched)
        gs_gw_share(gw, gw->m.dispatch_s, c->t_in);
    if (rc) {
        gs_gw_error(gw, c->r, ROUTE, rc, 0,
                    rc == GS_EOVERLOAD ? "no worker can take the request now; retry later"
                                       : gs_strerror(rc),
                    NULL, rc == GS_EOVERLOAD || rc == GS_ESHUTDOWN ? 1 : 0);
        chat_end(c);
        chat_free(c);
    }
}

/* A remote image could not be fetched: the request ends with a status
 * that says why (400 refused URL, 413 too large, 504 timeout, 502 else). */
static void fetch_failed(chat *c, int rc, const char *why)
{
    int status = rc == GS_ETOOBIG     ? 413
                 : rc == GS_ETIMEDOUT ? 504
                 : rc == GS_EINVAL    ? 400
                 : rc == GS_ENOMEM    ? 503
                                      : 502;
    char msg[600];
    snprintf(msg, sizeof msg, "cannot fetch image: %s", why);
    gs_gw_error(c->gw, c->r, ROUTE, rc == GS_EIO ? GS_EWORKER : rc, status, msg, "messages", 0);
    chat_end(c);
    chat_free(c); /* cancels the other downloads */
}

static void on_fetched(void *user, int rc, const char *msg, uint8_t *bytes, size_t len)
{
    fetch_slot *f = user;
    chat *c = f->c;
    c->fetches[f->k] = NULL; /* the fetcher has freed it */
    c->fetch_pending--;
    if (rc) {
        char why[500];
        snprintf(why, sizeof why, "image %d: %s", f->k, msg);
        fetch_failed(c, rc, why);
        return;
    }
    gs_chat_job_set_image(&c->jd, f->k, bytes, len);
    if (!c->fetch_pending)
        submit(c);
}

static void parse(chat *c)
{
    size_t len = 0;
    const char *body = (const char *)gs_http_req_body(c->r, &len);
    c->parse_status = gs_chat_job_from_body(&c->jp, body, len, &c->jd, c->parse_msg,
                                            sizeof c->parse_msg, &c->parse_param);
}

/* The job is built (or refused): start its downloads, or send it. */
static void parsed(chat *c)
{
    gs_gw *gw = c->gw;
    gs_http_req_body_done(c->r); /* the job holds its own copies */
    if (c->parse_status) {
        gs_gw_error(gw, c->r, ROUTE, gs_chat_job_err_code(c->parse_status), c->parse_status,
                    c->parse_msg, c->parse_param, 0);
        chat_end(c);
        chat_free(c);
        return;
    }
    c->stream = c->jd.stream;
    c->include_usage = c->jd.include_usage;
    snprintf(c->model, sizeof c->model, "%s", c->jd.model);
    for (int i = 0; i < c->jd.n_images; i++) {
        if (!c->jd.urls[i])
            continue;
        c->slots[i] = (fetch_slot){c, i};
        int rc =
            gs_fetch_start(gw->fetcher, c->jd.urls[i], on_fetched, &c->slots[i], &c->fetches[i]);
        if (rc) {
            fetch_failed(c, rc, "cannot start the download");
            return;
        }
        c->fetch_pending++;
        c->fetched = 1; /* its dispatch time holds a download: not the gateway's share */
    }
    if (!c->fetch_pending)
        submit(c);
}

static void parse_work(uv_work_t *w)
{
    parse(w->data);
}

static void parse_done(uv_work_t *w, int status)
{
    chat *c = w->data;
    c->parsing = 0;
    if (c->abort_pending || !c->gw->ds) { /* gone, or the gateway is closing */
        gs_http_respond(c->r, 499, "application/json", NULL, "{}", 2);
        gs_gw_count(c->gw, ROUTE, 499);
        chat_end(c);
        chat_free(c);
        return;
    }
    (void)status; /* never cancelled: nothing calls uv_cancel */
    parsed(c);
}

void gs_route_chat(gs_gw *gw, gs_http_req *r, const gs_auth_key *key)
{
    const uint64_t t_in = gs_clock_now_ns(); /* the whole request is in */
    size_t len = 0;
    gs_http_req_body(r, &len);
    const char *ct = gs_http_req_header(r, "content-type");
    /* The request holds a stream slot of its key from here (gateway.c
     * admitted it): every way out below ends with chat_end. */
    chat *c = calloc(1, sizeof *c);
    if (!c || (key && !(c->key_id = strdup(key->id)))) {
        if (key)
            gs_ratelimit_release(gw->rl, key->id);
        if (c)
            chat_free(c);
        gs_gw_error(gw, r, ROUTE, GS_ENOMEM, 503, "out of memory", NULL, 1);
        return;
    }
    c->gw = gw;
    c->r = r;
    c->t_in = t_in;
    c->t0 = gs_http_req_start_ns(r);
    c->created = (int64_t)time(NULL);
    gs_think_split_init(&c->split);
    snprintf(c->id, sizeof c->id, "chatcmpl-%s-%llx%06llx", gw->name,
             (unsigned long long)c->created, (unsigned long long)(c->t0 % 0xffffff));
    gw->streams_open++;
    /* JSON, or no type, or curl's default form type (its -d sends JSON bodies
     * under it); anything else (multipart uploads, text) is refused. */
    if (ct && !media_type_is(ct, "application/json") &&
        !media_type_is(ct, "application/x-www-form-urlencoded")) {
        gs_gw_error(gw, r, ROUTE, GS_EUNSUPPORTED, 415, "Content-Type must be application/json",
                    NULL, 0);
        chat_end(c);
        chat_free(c);
        return;
    }
    /* The job (JSON, template inputs, images decoded), then the state of
     * the response. A stream starts with the first event, so that a job
     * the worker refuses (bad messages, context too long) still gets its
     * HTTP status. */
    gs_dispatch_stats ds;
    gs_dispatch_get_stats(gw->ds, &ds);
    snprintf(c->jp_model, sizeof c->jp_model, "%s", ds.model);
    c->jp = (gs_chat_job_params){gw->cfg.max_images, c->jp_model, gw->fetcher != NULL, NULL};
    gs_http_req_on_abort(r, on_abort, c);
    if (len > GS_CHAT_JOB_PARSE_INLINE_MAX) {
        c->work.data = c;
        c->parsing = 1;
        if (!uv_queue_work(&gw->loop, &c->work, parse_work, parse_done))
            return;
        c->parsing = 0;
    }
    parse(c);
    parsed(c);
}
