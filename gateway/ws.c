/* ws.c - RFC 6455 WebSocket connections (ws.h): the handshake, and
 * libwslay's event API over a socket taken from the HTTP server.
 *
 * Owns each connection's socket (uv_tcp_t, malloc'd by the HTTP server and
 * freed here), its timer, its wslay context and its byte buffers. Does not
 * own what the callbacks do with the messages.
 *
 * Data path: uv_read_start reads into `in`; wslay_event_recv pulls from it
 * through recv_cb (WOULDBLOCK when empty), checks the frames (masking,
 * opcodes, UTF-8 of text, sizes), answers pings and closes by itself, and
 * hands whole messages to on_msg. wslay_event_send pushes frames through
 * send_cb into `out`, which goes to uv_write as one request per flush.
 * The connection ends when wslay wants neither to read nor to write (both
 * close frames exchanged, or a protocol error answered by its close),
 * when the peer disconnects, or when a timeout passes.
 *
 * Re-entrancy: the user's callbacks may call gs_ws_send_text and
 * gs_ws_close at any time, which only queue and flush; the connection is
 * torn down (on_close) only from libuv callbacks (read, write, timer), so
 * never under a caller's feet.
 *
 * Threading: the loop thread only. */
#include "gateway/ws.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <wslay/wslay.h>

#include "common/clock.h"
#include "common/log.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define READ_CHUNK (64u * 1024u)

/* ---- the handshake ------------------------------------------------------------------ */

int gs_ws_accept_key(const char *key, size_t len, char out[29])
{
    out[0] = 0;
    /* base64 of 16 bytes: 22 characters and "==" */
    if (!key || len != 24 || key[22] != '=' || key[23] != '=')
        return GS_EINVAL;
    unsigned char raw[24];
    if (EVP_DecodeBlock(raw, (const unsigned char *)key, 24) != 18)
        return GS_EINVAL;
    char cat[24 + sizeof WS_GUID];
    memcpy(cat, key, 24);
    memcpy(cat + 24, WS_GUID, sizeof WS_GUID - 1);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(cat, 24 + sizeof WS_GUID - 1, md, &mdlen, EVP_sha1(), NULL) || mdlen != 20)
        return GS_EINTERNAL;
    if (EVP_EncodeBlock((unsigned char *)out, md, 20) != 28)
        return GS_EINTERNAL;
    return 0;
}

/* 1 when the comma-separated token list v holds tok (case-insensitive). */
static int has_token(const char *v, const char *tok)
{
    size_t n = strlen(tok);
    while (v && *v) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        const char *e = v;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > v && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - v) == n && !strncasecmp(v, tok, n))
            return 1;
        v = e;
    }
    return 0;
}

int gs_ws_check_request(const gs_http_req *r, char accept[29], char *msg, size_t cap)
{
    accept[0] = 0;
    const char *up = gs_http_req_header(r, "upgrade");
    const char *conn = gs_http_req_header(r, "connection");
    const char *ver = gs_http_req_header(r, "sec-websocket-version");
    const char *key = gs_http_req_header(r, "sec-websocket-key");
    if (!up || !has_token(up, "websocket")) {
        snprintf(msg, cap, "this endpoint speaks WebSocket only: send 'Upgrade: websocket'");
        return 426;
    }
    if (!conn || !has_token(conn, "upgrade")) {
        snprintf(msg, cap, "a WebSocket handshake needs 'Connection: Upgrade'");
        return 400;
    }
    if (!ver || strcmp(ver, "13")) {
        snprintf(msg, cap, "unsupported Sec-WebSocket-Version '%.20s': only 13 is spoken",
                 ver ? ver : "");
        return 426;
    }
    if (!key || gs_ws_accept_key(key, strlen(key), accept)) {
        snprintf(msg, cap, "Sec-WebSocket-Key must be base64 of 16 bytes");
        return 400;
    }
    return 0;
}

/* ---- the connection ------------------------------------------------------------------- */

struct gs_ws {
    uv_tcp_t *tcp; /* owned (malloc'd by the HTTP server); freed in its close callback */
    uv_timer_t timer;
    wslay_event_context_ptr ctx; /* owned */
    gs_ws_params p;
    gs_ws_cbs cbs;
    void *user;
    uint8_t *in; /* read bytes not yet pulled by wslay: in[in_off..in_len) */
    size_t in_off, in_len, in_cap;
    uint8_t *out; /* frames from wslay not yet given to uv_write */
    size_t out_len, out_cap;
    size_t pending;        /* bytes in uv_write requests */
    uint64_t written;      /* bytes the socket took so far */
    uint64_t written_seen; /* `written` at the last tick */
    uint64_t progress_ms;  /* last tick with nothing waiting or something taken */
    uint64_t last_rx_ms;   /* when the peer last sent anything */
    uint64_t last_ping_ms; /* when we last pinged */
    uint64_t close_ms;     /* when our close frame was queued (0: not yet) */
    int finished;          /* on_close called; the handles are closing */
    int handles;           /* open uv handles (tcp, timer) */
    int io_error;          /* the socket failed or hit EOF */
    int in_recv;           /* inside wslay_event_recv: pump sends afterwards */
    int close_later;       /* a close asked for inside wslay_event_recv: queued after */
    int paused;            /* gs_ws_pause depth: wslay is given no input */
    char close_reason[124];
    char peer[64];
};

typedef struct {
    uv_write_t req;
    gs_ws *ws;
    uint8_t *buf; /* owned */
    size_t len;
} ws_write;

static uint64_t now_ms(void)
{
    return gs_clock_now_ns() / 1000000u;
}

static void ws_free(gs_ws *ws)
{
    if (ws->ctx)
        wslay_event_context_free(ws->ctx);
    free(ws->in);
    free(ws->out);
    free(ws);
}

static void on_handle_closed(uv_handle_t *h)
{
    gs_ws *ws = h->data;
    if (h == (uv_handle_t *)ws->tcp) {
        free(ws->tcp);
        ws->tcp = NULL;
    }
    if (--ws->handles == 0)
        ws_free(ws);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    gs_ws *ws = req->data;
    free(req);
    uv_close((uv_handle_t *)ws->tcp, on_handle_closed);
}

/* The close code to report: received, else sent, else abnormal. */
static int close_code(gs_ws *ws)
{
    if (wslay_event_get_close_received(ws->ctx)) {
        int c = wslay_event_get_status_code_received(ws->ctx);
        return c == WSLAY_CODE_NO_STATUS_RCVD ? GS_WS_NO_STATUS : c;
    }
    if (wslay_event_get_close_sent(ws->ctx))
        return wslay_event_get_status_code_sent(ws->ctx);
    return GS_WS_ABNORMAL;
}

/* Tears the connection down: on_close once, then the handles close (after
 * the writes still queued, through uv_shutdown). From libuv callbacks only. */
static void finish(gs_ws *ws)
{
    if (ws->finished)
        return;
    ws->finished = 1;
    int code = close_code(ws);
    if (ws->cbs.on_close)
        ws->cbs.on_close(ws, ws->user, code);
    uv_read_stop((uv_stream_t *)ws->tcp);
    uv_timer_stop(&ws->timer);
    uv_close((uv_handle_t *)&ws->timer, on_handle_closed);
    uv_shutdown_t *sr = ws->pending && !ws->io_error ? malloc(sizeof *sr) : NULL;
    if (sr) {
        sr->data = ws;
        if (uv_shutdown(sr, (uv_stream_t *)ws->tcp, on_shutdown) == 0)
            return;
        free(sr);
    }
    uv_close((uv_handle_t *)ws->tcp, on_handle_closed);
}

static void on_written(uv_write_t *req, int status)
{
    ws_write *w = (ws_write *)req;
    gs_ws *ws = w->ws;
    ws->pending -= w->len;
    if (status == 0)
        ws->written += w->len;
    free(w->buf);
    free(w);
    if (status < 0 && !ws->finished) {
        ws->io_error = 1;
        finish(ws);
    }
}

/* Hands `out` to uv_write. 0 or GS_EIO. */
static int flush(gs_ws *ws)
{
    if (!ws->out_len || ws->io_error)
        return ws->io_error ? GS_EIO : 0;
    ws_write *w = malloc(sizeof *w);
    if (!w)
        return GS_ENOMEM;
    w->ws = ws;
    w->buf = ws->out;
    w->len = ws->out_len;
    ws->out = NULL;
    ws->out_len = ws->out_cap = 0;
    uv_buf_t b = uv_buf_init((char *)w->buf, (unsigned)w->len);
    if (uv_write(&w->req, (uv_stream_t *)ws->tcp, &b, 1, on_written)) {
        free(w->buf);
        free(w);
        ws->io_error = 1;
        return GS_EIO;
    }
    ws->pending += w->len;
    return 0;
}

/* 1 when the session is over: nothing more to read or write. */
static int done(gs_ws *ws)
{
    return ws->io_error || (!wslay_event_want_read(ws->ctx) && !wslay_event_want_write(ws->ctx));
}

/* Sends what wslay has queued. 0, or nonzero when the session failed. */
static int send_queued(gs_ws *ws)
{
    if (wslay_event_want_write(ws->ctx) && wslay_event_send(ws->ctx))
        return -1;
    return flush(ws);
}

/* After a caller queued something: send it; when that ended the session,
 * let the timer tear it down (never under the caller's feet). */
static void on_timer(uv_timer_t *t);
static void kick(gs_ws *ws)
{
    if (ws->in_recv)
        return; /* a callback of wslay_event_recv: pump() sends once it returns */
    if (send_queued(ws) || done(ws))
        uv_timer_start(&ws->timer, on_timer, 0, 0); /* on_timer restores the period */
}

/* Feeds the bytes read to wslay, sends its answers, and ends the session
 * when it is over. From libuv callbacks only. */
static void pump(gs_ws *ws)
{
    if (ws->finished)
        return;
    if (wslay_event_want_read(ws->ctx)) {
        ws->in_recv = 1;
        int rc = wslay_event_recv(ws->ctx);
        ws->in_recv = 0;
        if (rc) {
            finish(ws);
            return;
        }
    }
    if (ws->in_off == ws->in_len || !wslay_event_want_read(ws->ctx))
        ws->in_off = ws->in_len = 0;
    if (ws->close_later) {
        /* the messages queued before the close go first (wslay sends
         * control frames ahead of data) */
        int rc = send_queued(ws);
        wslay_event_queue_close(ws->ctx, (uint16_t)ws->close_later,
                                (const uint8_t *)ws->close_reason, strlen(ws->close_reason));
        ws->close_later = 0;
        if (rc) {
            finish(ws);
            return;
        }
    }
    if (send_queued(ws) || done(ws))
        finish(ws);
}

/* ---- wslay's callbacks -------------------------------------------------------------- */

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
    gs_ws *ws = user;
    size_t have = ws->in_len - ws->in_off;
    if (!have || ws->paused) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (len > have)
        len = have;
    memcpy(buf, ws->in + ws->in_off, len);
    ws->in_off += len;
    return (ssize_t)len;
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    gs_ws *ws = user;
    if (ws->out_len + len > ws->out_cap) {
        size_t cap = ws->out_cap ? ws->out_cap : 4096;
        while (cap < ws->out_len + len)
            cap *= 2;
        uint8_t *t = realloc(ws->out, cap);
        if (!t) {
            wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
            return -1;
        }
        ws->out = t;
        ws->out_cap = cap;
    }
    memcpy(ws->out + ws->out_len, data, len);
    ws->out_len += len;
    return (ssize_t)len;
}

static void frame_start_cb(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_start_arg *arg, void *user)
{
    gs_ws *ws = user;
    if (arg->payload_length > ws->p.max_frame_bytes) {
        wslay_event_queue_close(ctx, GS_WS_TOO_BIG, (const uint8_t *)"frame too big", 13);
        wslay_event_shutdown_read(ctx);
    }
}

static void msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *user)
{
    gs_ws *ws = user;
    if (ws->close_ms || !wslay_event_get_read_enabled(ctx) || wslay_event_get_close_sent(ctx))
        return; /* closing: the rest of the input is not looked at */
    if (arg->opcode == WSLAY_TEXT_FRAME && ws->cbs.on_text) {
        /* wslay's flattened message has no room for a NUL: copy it */
        char *s = malloc(arg->msg_length + 1);
        if (!s) {
            wslay_event_queue_close(ctx, GS_WS_INTERNAL, NULL, 0);
            return;
        }
        if (arg->msg_length)
            memcpy(s, arg->msg, arg->msg_length);
        s[arg->msg_length] = 0;
        ws->cbs.on_text(ws, ws->user, s, arg->msg_length);
        free(s);
    } else if (arg->opcode == WSLAY_BINARY_FRAME && ws->cbs.on_binary) {
        ws->cbs.on_binary(ws, ws->user, arg->msg, arg->msg_length);
    }
}

/* ---- libuv's callbacks ------------------------------------------------------------------ */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    gs_ws *ws = h->data;
    if (ws->in_cap - ws->in_len < READ_CHUNK) {
        size_t cap = ws->in_len + READ_CHUNK;
        uint8_t *t = realloc(ws->in, cap);
        if (!t) {
            *b = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
            return;
        }
        ws->in = t;
        ws->in_cap = cap;
    }
    *b = uv_buf_init((char *)ws->in + ws->in_len, (unsigned)(ws->in_cap - ws->in_len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    gs_ws *ws = s->data;
    if (ws->finished)
        return;
    if (n < 0) {
        ws->io_error = 1;
        finish(ws);
        return;
    }
    if (n == 0)
        return;
    ws->last_rx_ms = now_ms();
    if (!wslay_event_want_read(ws->ctx))
        return; /* closing: input is dropped (the buffer is reused) */
    ws->in_len += (size_t)n;
    pump(ws);
}

static void on_timer(uv_timer_t *t)
{
    gs_ws *ws = t->data;
    if (ws->finished)
        return;
    if (!uv_timer_get_repeat(t))
        uv_timer_start(t, on_timer, ws->p.tick_ms, ws->p.tick_ms);
    pump(ws); /* the bytes that came with the handshake; sessions ended by kick */
    if (ws->finished)
        return;
    const uint64_t now = now_ms();
    if (!ws->pending || ws->written != ws->written_seen) {
        ws->progress_ms = now;
        ws->written_seen = ws->written;
    } else if (now - ws->progress_ms >= ws->p.send_timeout_ms) {
        gs_log_warn("ws: %s took none of %zu waiting bytes in %u ms: dropping it", ws->peer,
                    ws->pending, ws->p.send_timeout_ms);
        ws->io_error = 1;
        finish(ws);
        return;
    }
    if (ws->close_ms && now - ws->close_ms >= ws->p.close_timeout_ms) {
        finish(ws); /* the peer never answered our close */
        return;
    }
    if (!ws->close_ms && now - ws->last_rx_ms >= ws->p.idle_timeout_ms) {
        gs_ws_close(ws, GS_WS_GOING_AWAY, "idle timeout");
        return;
    }
    if (!ws->close_ms && now - ws->last_rx_ms >= ws->p.ping_interval_ms &&
        now - ws->last_ping_ms >= ws->p.ping_interval_ms) {
        struct wslay_event_msg m = {WSLAY_PING, (const uint8_t *)"gs", 2};
        wslay_event_queue_msg(ws->ctx, &m);
        ws->last_ping_ms = now;
        kick(ws);
    }
    if (ws->cbs.on_tick && !ws->finished)
        ws->cbs.on_tick(ws, ws->user);
}

/* ---- the verbs -------------------------------------------------------------------------- */

int gs_ws_accept(gs_http_req *r, const char accept[29], const gs_ws_params *p, const gs_ws_cbs *cbs,
                 void *user, gs_ws **out)
{
    *out = NULL;
    gs_ws *ws = calloc(1, sizeof *ws);
    if (!ws) {
        gs_http_respond_error(r, 503, NULL, "out of memory");
        return GS_ENOMEM;
    }
    if (p)
        ws->p = *p;
    if (!ws->p.max_message_bytes)
        ws->p.max_message_bytes = (size_t)32 << 20;
    if (!ws->p.max_frame_bytes || ws->p.max_frame_bytes > ws->p.max_message_bytes)
        ws->p.max_frame_bytes = ws->p.max_message_bytes;
    if (!ws->p.ping_interval_ms)
        ws->p.ping_interval_ms = 20000;
    if (!ws->p.idle_timeout_ms)
        ws->p.idle_timeout_ms = 60000;
    if (!ws->p.close_timeout_ms)
        ws->p.close_timeout_ms = 3000;
    if (!ws->p.tick_ms)
        ws->p.tick_ms = 1000;
    if (!ws->p.send_timeout_ms)
        ws->p.send_timeout_ms = 60000;
    if (!ws->p.max_pending)
        ws->p.max_pending = (size_t)8 << 20;
    if (!ws->p.sndbuf)
        ws->p.sndbuf = 64u << 10;
    ws->cbs = *cbs;
    ws->user = user;
    snprintf(ws->peer, sizeof ws->peer, "%s", gs_http_req_peer(r));
    struct wslay_event_callbacks wc = {recv_cb, send_cb, NULL, frame_start_cb, NULL, NULL, msg_cb};
    if (wslay_event_context_server_init(&ws->ctx, &wc, ws)) {
        free(ws);
        gs_http_respond_error(r, 503, NULL, "out of memory");
        return GS_ENOMEM;
    }
    wslay_event_config_set_max_recv_msg_length(ws->ctx, ws->p.max_message_bytes);
    char resp[160];
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %.28s\r\n\r\n",
                     accept);
    uv_tcp_t *tcp = NULL;
    uint8_t *extra = NULL;
    size_t extra_len = 0;
    int rc = gs_http_upgrade(r, resp, (size_t)n, &tcp, &extra, &extra_len);
    if (rc) {
        ws_free(ws);
        return rc;
    }
    ws->tcp = tcp;
    tcp->data = ws;
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)tcp, &fd) == 0) {
        int v = (int)ws->p.sndbuf;
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof v); /* best effort */
    }
    ws->in = extra; /* bytes sent right after the handshake: the first frames */
    ws->in_len = ws->in_cap = extra_len;
    ws->handles = 2;
    uv_timer_init(tcp->loop, &ws->timer);
    ws->timer.data = ws;
    ws->last_rx_ms = ws->last_ping_ms = ws->progress_ms = now_ms();
    /* The first tick at once: it feeds `extra` to wslay, after this returns. */
    uv_timer_start(&ws->timer, on_timer, 0, 0);
    if (uv_read_start((uv_stream_t *)tcp, on_alloc, on_read))
        ws->io_error = 1; /* the first tick ends it */
    *out = ws;
    return 0;
}

int gs_ws_send_text(gs_ws *ws, const char *s, size_t n)
{
    if (ws->finished || ws->close_ms || ws->io_error || !wslay_event_get_write_enabled(ws->ctx))
        return GS_EIO;
    if (ws->pending + ws->out_len + wslay_event_get_queued_msg_length(ws->ctx) + n >
        ws->p.max_pending) {
        gs_log_warn("ws: %s left %zu bytes unread (the cap is %zu): dropping it", ws->peer,
                    ws->pending, ws->p.max_pending);
        ws->io_error = 1;
        uv_timer_start(&ws->timer, on_timer, 0, 0); /* the tick ends it */
        return GS_EIO;
    }
    struct wslay_event_msg m = {WSLAY_TEXT_FRAME, (const uint8_t *)s, n};
    int rc = wslay_event_queue_msg(ws->ctx, &m);
    if (rc)
        return rc == WSLAY_ERR_NOMEM ? GS_ENOMEM : GS_EIO;
    kick(ws);
    return 0;
}

void gs_ws_close(gs_ws *ws, int code, const char *reason)
{
    if (ws->finished || ws->close_ms)
        return;
    ws->close_ms = now_ms();
    size_t n = reason ? strlen(reason) : 0;
    if (n > 123)
        n = 123;
    if (ws->in_recv) {
        ws->close_later = code;
        memcpy(ws->close_reason, reason ? reason : "", n);
        ws->close_reason[n] = 0;
        return;
    }
    wslay_event_queue_close(ws->ctx, (uint16_t)code, (const uint8_t *)reason, n);
    kick(ws);
}

size_t gs_ws_pending(const gs_ws *ws)
{
    return ws->pending + ws->out_len;
}

const char *gs_ws_peer(const gs_ws *ws)
{
    return ws->peer;
}

void gs_ws_pause(gs_ws *ws)
{
    if (ws->paused++ == 0 && !ws->finished)
        uv_read_stop((uv_stream_t *)ws->tcp);
}

void gs_ws_resume(gs_ws *ws)
{
    if (!ws->paused || --ws->paused || ws->finished)
        return;
    if (uv_read_start((uv_stream_t *)ws->tcp, on_alloc, on_read)) {
        ws->io_error = 1;
        uv_timer_start(&ws->timer, on_timer, 0, 0); /* tears it down outside the caller */
        return;
    }
    /* the bytes read before the pause, from the loop (not the caller's stack) */
    uv_timer_start(&ws->timer, on_timer, 0, 0);
}
