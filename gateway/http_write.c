/* http_write.c - responses out: the status line and headers (Date cached
 * per second, Server, Content-Length or chunked, Connection), whole
 * responses, chunked streams, the socket hand-over for upgrades, and the
 * server's own JSON error answers.
 *
 * Every write is one malloc'd gs_http_wreq (uv_write_t + the bytes) queued
 * with uv_write; libuv writes them in order. conn->pending counts the bytes
 * queued and not yet written. A failed write closes the connection (and so
 * aborts a request in the handler).
 * Threading: the loop thread only. */
#include "gateway/http_impl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "common/log.h"

typedef struct {
    uv_write_t w;
    gs_http_conn *c;
    size_t len, cap;
    char data[];
} gs_http_wreq;

const char *gs_http_status_text(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 416:
        return "Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Content";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 499:
        return "Client Closed Request";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    }
    return "Unknown";
}

/* "Date:" value, formatted once per second, without the locale. */
static const char *http_date(gs_http_server *s)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t now = time(NULL);
    if ((int64_t)now != s->date_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        snprintf(s->date, sizeof s->date, "%s, %02d %s %04d %02d:%02d:%02d GMT",
                 days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900,
                 tm.tm_hour, tm.tm_min, tm.tm_sec);
        s->date_sec = (int64_t)now;
    }
    return s->date;
}

/* ---- the write queue ---------------------------------------------------- */

static gs_http_wreq *wreq_new(size_t cap)
{
    gs_http_wreq *q = malloc(sizeof *q + cap + 1);
    if (q) {
        q->c = NULL;
        q->len = 0;
        q->cap = cap;
    }
    return q;
}

/* Appends n bytes; the caller sized the request for them. */
static void wput(gs_http_wreq *q, const void *p, size_t n)
{
    if (n > q->cap - q->len)
        n = q->cap - q->len; /* never: sizes are computed first */
    memcpy(q->data + q->len, p, n);
    q->len += n;
}

__attribute__((format(printf, 2, 3))) static void wprintf(gs_http_wreq *q, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(q->data + q->len, q->cap - q->len + 1, fmt, ap);
    va_end(ap);
    if (n > 0)
        q->len += (size_t)n < q->cap - q->len ? (size_t)n : q->cap - q->len;
}

static void on_write(uv_write_t *w, int status)
{
    gs_http_wreq *q = (gs_http_wreq *)w;
    gs_http_conn *c = q->c;
    c->writes--;
    c->pending -= q->len;
    if (status == 0) {
        c->written += q->len;
        if (c->s)
            c->s->st.bytes_out += q->len;
    } else if (!c->handed_over) {
        gs__http_conn_close(c); /* the client is gone: abort, close */
    }
    free(q);
    if (c->tmode == GS_TM_SEND && c->pending == 0 && !c->handed_over)
        gs__http_conn_timer(c, GS_TM_NONE); /* all taken: the handler owns the time again */
    if (!c->closing && !c->handed_over && c->phase <= GS_PH_BODY && c->in_off < c->in_len &&
        c->pending < GS_HTTP_PARSE_PENDING_MAX)
        gs__http_conn_process(c); /* pipelined requests held back by the queue */
    gs__http_conn_maybe_free(c);
}

/* Queues q (taken). 0 or GS_EIO (q freed, nothing queued). */
static int wsend(gs_http_conn *c, gs_http_wreq *q)
{
    if (c->closing || c->handed_over) {
        free(q);
        return GS_EIO;
    }
    q->c = c;
    uv_buf_t b = uv_buf_init(q->data, (unsigned)q->len);
    if (uv_write(&q->w, (uv_stream_t *)c->tcp, &b, 1, on_write) != 0) {
        free(q);
        return GS_EIO;
    }
    c->writes++;
    c->pending += q->len;
    if (c->phase == GS_PH_HANDLER && c->tmode == GS_TM_NONE)
        gs__http_conn_timer(c, GS_TM_SEND);
    return 0;
}

int gs__http_send_raw(gs_http_conn *c, const void *data, size_t len)
{
    gs_http_wreq *q = wreq_new(len);
    if (!q)
        return GS_ENOMEM;
    wput(q, data, len);
    return wsend(c, q);
}

/* ---- response heads ----------------------------------------------------- */

enum { BODY_LENGTH, BODY_CHUNKED, BODY_UNTIL_CLOSE, BODY_NONE };

/* Bytes the head needs besides content_type and headers. */
static size_t head_size(const gs_http_server *s)
{
    return 256 + strlen(s->server_name);
}

static void put_head(gs_http_wreq *q, gs_http_server *s, int status, const char *content_type,
                     const char *headers, int framing, size_t len, int keep_alive)
{
    wprintf(q, "HTTP/1.1 %d %s\r\nDate: %s\r\nServer: %s\r\n", status, gs_http_status_text(status),
            http_date(s), s->server_name);
    if (content_type)
        wprintf(q, "Content-Type: %s\r\n", content_type);
    if (framing == BODY_LENGTH)
        wprintf(q, "Content-Length: %zu\r\n", len);
    else if (framing == BODY_CHUNKED)
        wprintf(q, "Transfer-Encoding: chunked\r\n");
    wprintf(q, "Connection: %s\r\n", keep_alive ? "keep-alive" : "close");
    if (headers)
        wput(q, headers, strlen(headers));
    wput(q, "\r\n", 2);
}

/* Extra header lines: each ends in CRLF, no bare CR or LF, no empty line,
 * no NUL (strlen). */
static int headers_ok(const char *h)
{
    if (!h || !*h)
        return 1;
    size_t n = strlen(h);
    if (n < 2 || h[n - 2] != '\r' || h[n - 1] != '\n' || (h[0] == '\r'))
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (h[i] == '\r' && (i + 1 >= n || h[i + 1] != '\n'))
            return 0;
        if (h[i] == '\n' && (i == 0 || h[i - 1] != '\r'))
            return 0;
        if (h[i] == '\n' && i + 1 < n && h[i + 1] == '\r')
            return 0; /* an empty line would end the head early */
    }
    return 1;
}

static int args_ok(int status, const char *content_type, const char *headers)
{
    return status >= 200 && status <= 599 && (!content_type || !strpbrk(content_type, "\r\n")) &&
           headers_ok(headers);
}

/* JSON string body of a message (quotes, backslashes, controls escaped). */
static size_t json_escape(char *out, size_t cap, const char *msg)
{
    size_t n = 0;
    for (const char *p = msg; *p && n + 7 < cap; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '"' || ch == '\\') {
            out[n++] = '\\';
            out[n++] = (char)ch;
        } else if (ch < 0x20) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", ch);
        } else {
            out[n++] = (char)ch;
        }
    }
    out[n] = 0;
    return n;
}

/* The OpenAI-shaped error body into buf; returns its length. */
static size_t error_body(char *buf, size_t cap, int status, const char *type, const char *msg)
{
    char esc[512];
    json_escape(esc, sizeof esc, msg ? msg : gs_http_status_text(status));
    if (!type)
        type = status < 500 || status == 505 ? "invalid_request_error" : "server_error";
    int n = snprintf(buf, cap,
                     "{\"error\": {\"message\": \"%s\", \"type\": \"%s\", \"param\": null, "
                     "\"code\": null}}",
                     esc, type);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

void gs__http_error(gs_http_conn *c, int status, const char *msg)
{
    if (c->req) { /* never reached the handler */
        gs_http_req *r = c->req;
        c->req = NULL;
        gs__http_req_free(r);
    }
    char body[1024];
    size_t blen = error_body(body, sizeof body, status, NULL, msg);
    gs_http_wreq *q = wreq_new(head_size(c->s) + 64 + blen);
    /* 503 here is a momentary refusal (memory): the client may retry soon */
    const char *extra = status == 503 ? "Retry-After: 1\r\n" : NULL;
    if (!q || (put_head(q, c->s, status, "application/json", extra, BODY_LENGTH, blen, 0),
               wput(q, body, blen), wsend(c, q) != 0)) {
        gs__http_conn_close(c);
        return;
    }
    gs__http_conn_close_after_write(c);
}

/* ---- final calls -------------------------------------------------------- */

/* Detaches r from c, frees it, queues q (taken; may be NULL) and moves the
 * connection on. Returns 0 or GS_EIO. */
static int finish(gs_http_req *r, gs_http_wreq *q, int keep_alive)
{
    gs_http_conn *c = r->c;
    c->req = NULL;
    r->c = NULL;
    gs__http_req_free(r);
    if (q && wsend(c, q) != 0) {
        gs__http_conn_close(c);
        return GS_EIO;
    }
    gs__http_conn_finish(c, keep_alive);
    return 0;
}

/* r is gone (aborted) or misused: free it and say so. */
static int drop(gs_http_req *r, int rc)
{
    if (r->c) {
        gs_http_conn *c = r->c;
        c->req = NULL;
        r->c = NULL;
        gs__http_conn_close(c);
    }
    gs__http_req_free(r);
    return rc;
}

static int keep_alive_of(const gs_http_req *r)
{
    return r->keep_alive && !r->c->s->draining && !r->c->s->freeing;
}

static int respond(gs_http_req *r, int status, const char *content_type, const char *headers,
                   const void *body, size_t len)
{
    gs_http_server *s = r->c->s;
    int no_body = r->head || status == 204 || status == 304;
    int framing = status == 204 || status == 304 ? BODY_NONE : BODY_LENGTH;
    int keep = keep_alive_of(r);
    size_t cap = head_size(s) + (content_type ? strlen(content_type) : 0) +
                 (headers ? strlen(headers) : 0) + (no_body ? 0 : len);
    gs_http_wreq *q = wreq_new(cap);
    if (!q)
        return drop(r, GS_ENOMEM);
    put_head(q, s, status, content_type, headers, framing, len, keep);
    if (!no_body && len)
        wput(q, body, len);
    return finish(r, q, keep);
}

int gs_http_respond_error(gs_http_req *r, int status, const char *type, const char *message)
{
    if (!r)
        return GS_EINVAL;
    if (!r->c || r->aborted)
        return drop(r, GS_EIO);
    if (r->streaming)
        return gs_http_stream_end(r);
    if (status < 400 || status > 599)
        status = 500;
    char body[1024];
    size_t blen = error_body(body, sizeof body, status, type, message);
    return respond(r, status, "application/json", NULL, body, blen);
}

/* A handler passed bad arguments to a final call: answer 500 instead. */
static int misuse(gs_http_req *r)
{
    if (r->streaming) {
        gs_http_stream_end(r);
        return GS_EINVAL;
    }
    gs_http_respond_error(r, 500, "server_error", "the server built an invalid response");
    return GS_EINVAL;
}

int gs_http_respond(gs_http_req *r, int status, const char *content_type, const char *headers,
                    const void *body, size_t len)
{
    if (!r)
        return GS_EINVAL;
    if (!r->c || r->aborted)
        return drop(r, GS_EIO);
    if (r->streaming || !args_ok(status, content_type, headers) || (!body && len && !r->head))
        return misuse(r);
    return respond(r, status, content_type, headers, body, len);
}

int gs_http_stream_begin(gs_http_req *r, int status, const char *content_type, const char *headers)
{
    if (!r || r->streaming || !args_ok(status, content_type, headers) || status == 204 ||
        status == 304)
        return GS_EINVAL;
    if (!r->c || r->aborted)
        return GS_EIO;
    gs_http_conn *c = r->c;
    uv_os_fd_t fd;
    if (!c->sndbuf_set && uv_fileno((uv_handle_t *)c->tcp, &fd) == 0) {
        int v = (int)c->s->p.stream_sndbuf;
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof v); /* best effort */
        c->sndbuf_set = 1;
    }
    /* HTTP/1.0 has no chunks: the body runs until the connection closes. */
    r->chunked = r->http_minor >= 1;
    if (!r->chunked)
        r->keep_alive = 0;
    size_t cap = head_size(c->s) + (content_type ? strlen(content_type) : 0) +
                 (headers ? strlen(headers) : 0);
    gs_http_wreq *q = wreq_new(cap);
    if (!q)
        return GS_ENOMEM;
    put_head(q, c->s, status, content_type, headers, r->chunked ? BODY_CHUNKED : BODY_UNTIL_CLOSE,
             0, r->chunked && keep_alive_of(r));
    r->streaming = 1;
    if (wsend(c, q) != 0) {
        /* Gone at once: r is detached without its abort callback (the
         * caller learns it from this return). */
        r->aborted = 1;
        r->abort_cb = NULL;
        c->req = NULL;
        r->c = NULL;
        gs__http_conn_close(c);
        return GS_EIO;
    }
    return 0;
}

int gs_http_stream_write(gs_http_req *r, const void *data, size_t len)
{
    if (!r || !r->streaming || (!data && len))
        return GS_EINVAL;
    if (!r->c || r->aborted)
        return GS_EIO;
    if (len == 0 || r->head)
        return 0; /* an empty chunk would end the stream */
    gs_http_conn *c = r->c;
    if (c->drop || c->pending + len > c->s->p.max_stream_pending) {
        /* A reader that fell this far behind: dropped from the loop (its
         * abort callback runs there, never inside this call). */
        if (!c->drop) {
            gs_log_warn("http: %s left %zu bytes of a stream unread (the cap is %zu): closing",
                        c->peer, c->pending, c->s->p.max_stream_pending);
            c->drop = 1;
            gs__http_conn_timer(c, GS_TM_DROP);
        }
        return GS_EIO;
    }
    gs_http_wreq *q = wreq_new(len + 32);
    if (!q)
        return GS_ENOMEM;
    if (r->chunked)
        wprintf(q, "%zx\r\n", len);
    wput(q, data, len);
    if (r->chunked)
        wput(q, "\r\n", 2);
    if (wsend(c, q) != 0) {
        r->aborted = 1;
        r->abort_cb = NULL;
        c->req = NULL;
        r->c = NULL;
        gs__http_conn_close(c);
        return GS_EIO;
    }
    return 0;
}

int gs_http_stream_end(gs_http_req *r)
{
    if (!r)
        return GS_EINVAL;
    if (!r->c || r->aborted)
        return drop(r, GS_EIO);
    if (!r->streaming)
        return misuse(r);
    gs_http_wreq *q = NULL;
    if (r->chunked && !r->head) {
        q = wreq_new(8);
        if (!q)
            return drop(r, GS_ENOMEM);
        wput(q, "0\r\n\r\n", 5);
    }
    int keep = r->chunked && keep_alive_of(r);
    return finish(r, q, keep);
}

static void no_op_close(uv_handle_t *h)
{
    gs_http_conn *c = h->data;
    c->handles--;
    gs__http_conn_maybe_free(c);
}

int gs_http_upgrade(gs_http_req *r, const char *response, size_t len, uv_tcp_t **out,
                    uint8_t **extra, size_t *extra_len)
{
    if (out)
        *out = NULL;
    if (extra)
        *extra = NULL;
    if (extra_len)
        *extra_len = 0;
    if (!r)
        return GS_EINVAL;
    if (!r->c || r->aborted)
        return drop(r, GS_EIO);
    if (!out || !extra || !extra_len || (!response && len) || r->streaming)
        return misuse(r);
    gs_http_conn *c = r->c;
    gs_http_server *s = c->s;
    size_t n = c->in_len - c->in_off;
    uint8_t *x = NULL;
    if (n) {
        x = malloc(n);
        if (!x)
            return drop(r, GS_ENOMEM);
        memcpy(x, c->in + c->in_off, n);
    }
    if (len && gs__http_send_raw(c, response, len) != 0) {
        free(x);
        return drop(r, GS_EIO);
    }
    c->req = NULL;
    r->c = NULL;
    gs__http_req_free(r);
    /* Let go: no more reads or timers of ours; writes still queued keep the
     * connection struct (not the socket) alive until their callbacks. */
    uv_read_stop((uv_stream_t *)c->tcp);
    c->reading = 0;
    uv_timer_stop(&c->timer);
    c->handed_over = 1;
    gs_queue_remove(&c->link);
    s->n_conns--;
    s->st.connections_open--;
    uv_tcp_t *tcp = c->tcp;
    tcp->data = NULL;
    c->tcp = NULL;
    c->s = NULL;
    c->handles--; /* the tcp handle is the caller's now */
    uv_close((uv_handle_t *)&c->timer, no_op_close);
    *out = tcp;
    *extra = x;
    *extra_len = n;
    gs__http_server_kick(s); /* a drain may be waiting for this one */
    return 0;
}
