/* test_http.c - gateway/http*.c: the HTTP/1.1 server against a raw-socket
 * client. Each test starts its own server on 127.0.0.1:0 on a loop thread
 * and ends by freeing it and checking that uv_loop_close returns 0. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gateway/http.h"
#include "http_harness.h"
#include "test.h"

typedef struct {
    int aborts;      /* abort callbacks run */
    int eio;         /* writes after an abort that returned GS_EIO */
    int finals;      /* final calls made after an abort */
    int final_rc;    /* what that final call returned */
    int got_never;   /* /never reached the handler */
    int drained;     /* drain callbacks run */
    int upgraded_rc; /* gs_http_upgrade's result */
} tstate;

static tstate *state_of(gs_http_req *r, void *user)
{
    (void)r;
    return ((th_server *)user)->user;
}

static int qint(const char *query, const char *key)
{
    size_t kl = strlen(key);
    for (const char *p = query; p && *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL)
        if (strncmp(p, key, kl) == 0 && p[kl] == '=')
            return atoi(p + kl + 1);
    return -1;
}

static void reply_text(gs_http_req *r, const char *text)
{
    gs_http_respond(r, 200, "text/plain", NULL, text, strlen(text));
}

/* ---- handlers (loop thread) ---------------------------------------------- */

static void slow_done(void *data)
{
    gs_http_req *r = data;
    char id[16];
    snprintf(id, sizeof id, "%d", qint(gs_http_req_query(r), "id"));
    reply_text(r, id);
}

static void stream_end_later(void *data)
{
    gs_http_stream_write(data, "part2", 5);
    gs_http_stream_end(data);
}

typedef struct {
    uv_timer_t t;
    gs_http_req *r;
    tstate *st;
    size_t tick_bytes; /* written per tick (0: "tick") */
} hang_ctx;

static void hang_close(uv_handle_t *h)
{
    free(h->data);
}

static void hang_tick(uv_timer_t *t)
{
    hang_ctx *x = t->data;
    if (!gs_http_req_aborted(x->r)) {
        if (!x->tick_bytes) {
            gs_http_stream_write(x->r, "tick", 4);
            return;
        }
        char *b = malloc(x->tick_bytes);
        memset(b, 'f', x->tick_bytes);
        gs_http_stream_write(x->r, b, x->tick_bytes);
        free(b);
        return;
    }
    if (gs_http_stream_write(x->r, "late", 4) == GS_EIO)
        x->st->eio++;
    x->st->final_rc = gs_http_stream_end(x->r);
    x->st->finals++;
    uv_close((uv_handle_t *)t, hang_close);
}

static void on_abort_count(gs_http_req *r, void *user)
{
    tstate *st = user;
    st->aborts++;
    (void)r;
}

static void on_abort_final(gs_http_req *r, void *user)
{
    tstate *st = user;
    st->aborts++;
    st->final_rc = gs_http_respond(r, 200, NULL, NULL, "x", 1);
    st->finals++;
}

static void up_close(uv_handle_t *h)
{
    free(h);
}

static void up_written(uv_write_t *w, int status)
{
    (void)status;
    uv_close((uv_handle_t *)w->handle, up_close);
    free(w->data);
    free(w);
}

static void do_upgrade(gs_http_req *r, tstate *st)
{
    static const char resp[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\n"
                               "Connection: Upgrade\r\n\r\n";
    uv_tcp_t *tcp;
    uint8_t *extra;
    size_t n;
    int rc = gs_http_upgrade(r, resp, sizeof resp - 1, &tcp, &extra, &n);
    st->upgraded_rc = rc;
    if (rc != 0)
        return;
    char *msg = malloc(n + 8);
    memcpy(msg, "got:", 4);
    if (n)
        memcpy(msg + 4, extra, n);
    free(extra);
    uv_write_t *w = malloc(sizeof *w);
    w->data = msg;
    uv_buf_t b = uv_buf_init(msg, (unsigned)(n + 4));
    uv_write(w, (uv_stream_t *)tcp, &b, 1, up_written);
}

static void handler(gs_http_req *r, void *user)
{
    tstate *st = state_of(r, user);
    th_server *h = user;
    const char *path = gs_http_req_path(r);
    if (strcmp(path, "/hello") == 0) {
        reply_text(r, "hello");
    } else if (strcmp(path, "/echo") == 0) {
        size_t n;
        const uint8_t *b = gs_http_req_body(r, &n);
        char hdr[128];
        snprintf(hdr, sizeof hdr, "X-Method: %s\r\nX-Peer: %s\r\n", gs_http_req_method(r),
                 gs_http_req_peer(r));
        gs_http_respond(r, 200, "application/octet-stream", hdr, b, n);
    } else if (strcmp(path, "/slow") == 0) {
        th_later(&h->loop, (unsigned)qint(gs_http_req_query(r), "ms"), slow_done, r);
    } else if (strcmp(path, "/fast") == 0) {
        slow_done(r);
    } else if (strcmp(path, "/stream") == 0) {
        gs_http_stream_begin(r, 200, "text/plain", "X-Stream: 1\r\n");
        gs_http_stream_write(r, "part0", 5);
        gs_http_stream_write(r, "part1", 5);
        th_later(&h->loop, 20, stream_end_later, r);
    } else if (strcmp(path, "/hang") == 0) {
        gs_http_req_on_abort(r, on_abort_count, st);
        gs_http_stream_begin(r, 200, "text/event-stream", NULL);
        gs_http_stream_write(r, "first", 5);
        hang_ctx *x = calloc(1, sizeof *x);
        x->r = r;
        x->st = st;
        uv_timer_init(&h->loop, &x->t);
        x->t.data = x;
        uv_timer_start(&x->t, hang_tick, 20, 20);
    } else if (strcmp(path, "/flood") == 0) { /* 8 KiB every 2 ms until aborted */
        gs_http_req_on_abort(r, on_abort_count, st);
        gs_http_stream_begin(r, 200, "text/event-stream", NULL);
        hang_ctx *x = calloc(1, sizeof *x);
        x->r = r;
        x->st = st;
        x->tick_bytes = 8192;
        uv_timer_init(&h->loop, &x->t);
        x->t.data = x;
        uv_timer_start(&x->t, hang_tick, 2, 2);
    } else if (strcmp(path, "/never") == 0) {
        gs_http_req_on_abort(r, on_abort_final, st);
        st->got_never = 1;
    } else if (strcmp(path, "/big") == 0) {
        size_t n = 128 * 1024;
        char *b = malloc(n);
        memset(b, 'a' + qint(gs_http_req_query(r), "id") % 26, n);
        gs_http_respond(r, 200, "application/octet-stream", NULL, b, n);
        free(b);
    } else if (strcmp(path, "/upgrade") == 0) {
        do_upgrade(r, st);
    } else {
        gs_http_respond_error(r, 404, NULL, "no such route");
    }
}

/* ---- helpers (test thread) ----------------------------------------------- */

static gs_http_params params(void)
{
    gs_http_params p = {0};
    p.handler = handler;
    p.max_header_bytes = 4096;
    p.max_body_bytes = 1024;
    p.header_timeout_ms = 300;
    p.body_timeout_ms = 300;
    p.idle_timeout_ms = 2000;
    return p;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

#define START(h, st, p)                                                                            \
    tstate st;                                                                                     \
    memset(&st, 0, sizeof st);                                                                     \
    th_server h;                                                                                   \
    GS_ASSERT_OK(th_start(&h, &p, &st))

#define HDR(resp, name) resp_header(&(resp), name, hv, sizeof hv)

/* Sends req on a new connection and reads the answer: 0 or -1. */
static int one_shot(th_server *h, const char *req, th_resp *out, int *closed)
{
    th_cli c;
    if (cli_open(&c, h))
        return -1;
    cli_send(&c, req);
    int rc = cli_read(&c, out, 0);
    if (closed)
        *closed = cli_eof(&c, 2000);
    cli_close(&c);
    return rc;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_get(void)
{
    gs_http_params p = params();
    START(h, st, p);
    th_cli c;
    th_resp r;
    char hv[128];
    GS_ASSERT_OK(cli_open(&c, &h));
    cli_send(&c, "GET /hello?x=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    GS_ASSERT_OK(cli_read(&c, &r, 0));
    GS_ASSERT_EQ(r.status, 200);
    GS_ASSERT_STREQ(r.body, "hello");
    GS_ASSERT_STREQ(HDR(r, "Content-Length"), "5");
    GS_ASSERT_STREQ(HDR(r, "Content-Type"), "text/plain");
    GS_ASSERT_STREQ(HDR(r, "Connection"), "keep-alive");
    GS_ASSERT_STREQ(HDR(r, "Server"), "glmserve");
    GS_ASSERT(HDR(r, "Date") && strstr(hv, " GMT"));
    GS_ASSERT(strncmp(r.head, "HTTP/1.1 200 OK\r\n", 17) == 0);
    resp_free(&r);
    /* An unknown route through gs_http_respond_error: OpenAI-shaped JSON. */
    cli_send(&c, "GET /nope HTTP/1.1\r\n\r\n");
    GS_ASSERT_OK(cli_read(&c, &r, 0));
    GS_ASSERT_EQ(r.status, 404);
    GS_ASSERT(strstr(r.body, "\"type\": \"invalid_request_error\"") != NULL);
    GS_ASSERT(strstr(r.body, "\"message\": \"no such route\"") != NULL);
    resp_free(&r);
    cli_close(&c);
    GS_ASSERT_EQ(th_stop(&h), 0);
}

static void test_keepalive_reuse(void)
{
    gs_http_params p = params();
    START(h, st, p);
    th_cli c;
    th_resp r;
    GS_ASSERT_OK(cli_open(&c, &h));
    for (int i = 0; i < 3; i++) {
        cli_send(&c, "GET /hello HTTP/1.1\r\n\r\n");
        GS_ASSERT_OK(cli_read(&c, &r, 0));
        GS_ASSERT_EQ(r.status, 200);
        resp_free(&r);
    }
    /* HEAD on the same connection: the head only, the next answer intact. */
    char hv[64];
    cli_send(&c, "HEAD /hello HTTP/1.1\r\n\r\nGET /hello HTTP/1.1\r\n\r\n");
    GS_ASSERT_OK(cli_read(&c, &r, 1));
    GS_ASSERT_STREQ(HDR(r, "Content-Length"), "5");
    resp_free(&r);
    GS_ASSERT_OK(cli_read(&c, &r, 0));
    GS_ASSERT_STREQ(r.body, "hello");
    resp_free(&r);
    gs_http_stats s;
    th_stats(&h, &s);
    GS_ASSERT_EQ(s.connections_total, 1);
    GS_ASSERT_EQ(s.connections_open, 1);
    GS_ASSERT_EQ(s.requests_total, 5);
    GS_ASSERT(s.bytes_in > 0 && s.bytes_out > 0);
    cli_close(&c);
    GS_ASSERT_EQ(th_stop(&h), 0);
}

static void test_pipelined_in_order(void)
{
    gs_http_params p = params();
    START(h, st, p);
    th_cli c;
    th_resp r;
    GS_ASSERT_OK(cli_open(&c, &h));
    /* The first answers 150 ms later, the others at once: order holds. */
    cli_send(&c, "GET /slow?ms=150&id=1 HTTP/1.1\r\n\r\n"
                 "GET /fast?id=2 HTTP/1.1\r\n\r\n"
                 "POST /echo HTTP/1.1\r\nContent-Length: 1\r\n\r\n3");
    const char *want[] = {"1", "2", "3"};
    for (int i = 0; i < 3; i++) {
        GS_ASSERT_OK(cli_read(&c, &r, 0));
        GS_ASSERT_STREQ(r.body, want[i]);
        resp_free(&r);
    }
    cli_close(&c);
    GS_ASSERT_EQ(th_stop(&h), 0);
}

static void test_chunked_request_body(void)
{
    gs_http_params p = params();
    START(h, st, p);
    th_cli c;
    th_resp r;
    char hv[64];
    GS_ASSERT_OK(cli_open(&c, &h));
    cli_send(&c, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
    th_sleep_ms(&h, 20);
    cli_send(&c, "lo\r\n6\r\n world\r\n");
    th_sleep_ms(&h, 20);
    cli_send(&c, "0\r\n\r\n");
    GS_ASSERT_OK(cli_read(&c, &r, 0));
    GS_ASSERT_EQ(r.status, 200);
    GS_ASSERT_STREQ(r.body, "hello world");
    GS_ASSERT_STREQ(HDR(r, "X-Method"), "POST");
    GS_ASSERT_STREQ(HDR(r, "X-Peer"), "127.0.0.1");
    resp_free(&r);
    /* Chunks past max_body_bytes (1024): 413 while reading, then close. */
    cli_send(&c, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n");
    char big[1100];
    memset(big, 'a', 1024);
    memcpy(big + 1024, "\r\n400\r\n", 7);
    cli_sendn(&c, big, 1031);
    GS_ASSERT_OK(cli_read(&c, &r, 0));
    GS_ASSERT_EQ(r.status, 413);
    GS_ASSERT_STREQ(HDR(r, "Connection"), "close");
    resp_free(&r);
    GS_ASSERT(cli_eof(&c, 2000));
    cli_close(&c);
    GS_ASSERT_EQ(th_stop(&h), 0);
}

static void test_streamed_response(void)
{
    gs_http_params p = params();
    START(h, st, p);
    th_cli c;
    th_resp r;
    char hv[64];
    GS_ASSERT_OK(cli_open(&c, &h));
    cli_send(&c, "GET /stream HTTP/1.1\r\n\r\nGET /hello HTTP/1.1\r\n\r\n");
    GS_ASSERT_OK(cli_read(&c, &r, 0));
    GS_ASSERT_EQ(r.status, 200);
    GS_ASSERT(r.chunked);
    GS_ASSERT(HDR(r, "Content-Length") == NULL);
    GS_ASSERT_STREQ(HDR(r, "X-Stream"), "1");
    GS_ASSERT_STREQ(r.body, "part0part1part2");
    resp_free(&r);
    GS_ASSERT_OK(cli_read(&c, &r, 0));
    GS_ASSERT_STREQ(r.body, "hello");
    resp_free(&r);
    cli_close(&c);
    GS_ASSERT_EQ(th_stop(&h), 0);
}

static void test_limits_and_malformed(void)
{
    gs_http_params p = params();
    START(h, st, p);
    th_resp r;
    char hv[128];
    int closed;
    /* Content-Length over the limit: 413 before any body byte is sent. */
    GS_ASSERT_OK(one_shot(&h, "POST /echo HTTP/1.1\r\nContent-Length: 5000\r\n\r\n", &r, &closed));
    GS_ASSERT_EQ(r.status, 413);
    GS_ASSERT(closed);
    GS_ASSERT_STREQ(HDR(r, "Content-Type"), "application/json");
    GS_ASSERT_STREQ(HDR(r, "Connection"), "close");
    GS_ASSERT(strstr(r.body, "{\"error\": {\"message\": \"") == r.body);
    GS_ASSERT(strstr(r.body, "\"type\": \"invalid_request_error\", \"param\": null, "
                             "\"code\": null}}") != NULL);
    resp_free(&r);
    /* Huge headers: 431. */
    size_t n = 9000;
    char *req = malloc(n + 64);
    strcpy(req, "GET /hello HTTP/1.1\r\nX-Big: ");
    size_t l = strlen(req);
    memset(req + l, 'a', n);
    strcpy(req + l + n, "\r\n\r\n");
    GS_ASSERT_OK(one_shot(&h, req, &r, &closed));
    free(req);
    GS_ASSERT_EQ(r.status, 431);
    GS_ASSERT(closed);
    resp_free(&r);
    /* Just under the limit is fine; many short headers are counted too. */
    GS_ASSERT_OK(one_shot(&h, "GET /hello HTTP/1.1\r\nA: 1\r\nA: 2\r\n\r\n", &r, NULL));
    GS_ASSERT_EQ(r.status, 200);
    resp_free(&r);
    /* Spaces llhttp skips without a callback still count. */
    req = malloc(n + 64);
    strcpy(req, "GET /hello HTTP/1.1\r\nX-Pad:");
    l = strlen(req);
    memset(req + l, ' ', n);
    strcpy(req + l + n, "v\r\n\r\n");
    GS_ASSERT_OK(one_shot(&h, req, &r, &closed));
    free(req);
    GS_ASSERT_EQ(r.status, 431);
    resp_free(&r);
    /* Malformed: 400 and close. */
    GS_ASSERT_OK(one_shot(&h, "GARBAGE\r\n\r\n", &r, &closed));
    GS_ASSERT_EQ(r.status, 400);
    GS_ASSERT(closed);
    GS_ASSERT(strstr(r.body, "invalid_request_error") != NULL);
    resp_free(&r);
    GS_ASSERT_OK(one_shot(&h, "GET /hello HTTP/1.1\r\nBad Header\r\n\r\n", &r, &closed));
    GS_ASSERT_EQ(r.status, 400);
    resp_free(&r);
    GS_ASSERT_OK(one_shot(&h, "POST /echo HTTP/1.1\r\nContent-Length: x\r\n\r\n", &r, NULL));
    GS_ASSERT_EQ(r.status, 400);
    resp_free(&r);
    /* Unsupported versions: 505. */
    GS_ASSERT_OK(one_shot(&h, "GET /hello HTTP/2.0\r\n\r\n", &r, &closed));
    GS_ASSERT_EQ(r.status, 505);
    GS_ASSERT(closed);
    resp_free(&r);
    GS_ASSERT_OK(one_shot(&h, "GET /hello HTTP/1.2\r\n\r\n", &r, NULL));
    GS_ASSERT_EQ(r.status, 505);
    resp_free(&r);
    /* An expectation other than 100-continue: 417. */
    GS_ASSERT_OK(one_shot(&h, "GET /hello HTTP/1.1\r\nExpect: magic\r\n\r\n", &r, NULL));
    GS_ASSERT_EQ(r.status, 417);
    resp_free(&r);
    GS_ASSERT_EQ(th_stop(&h), 0);
}

static void test_timeouts(void)
{
    gs_http_params p = params();
    p.idle_timeout_ms = 300;
    START(h, st, p);
    th_cli c;
    th_resp r;
    /* Headers never finished: 408 after the header timeout (300 ms). */
    GS_ASSERT_OK(cli_open(&c, &h));
    double t0 = now_ms();
    cli_send(&c, "GET /hello HTTP/1.1\r\nHost: x\r\n");
    GS_ASSERT_OK(cli_read(&c, &r, 0));
    double dt = now_ms() - t0;
    GS_ASSERT_EQ(r.status, 408);
    GS_ASSERT_MSG(dt > 200 && dt < 3000, "408 after %.0f ms", dt);
    GS_ASSERT(cli_eof(&c, 2000));
    resp_free(&r);
    cli_close(&c);
    /* Slowloris: a byte every 40 ms keeps nothing alive past the timeout. */
    GS_ASSERT_OK(cli_open(&c, &h));
    const char *drip = "GET /hello HTTP/1.1\r\nX-A: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    t0 = now_ms();
    for (size_t i = 0; drip[i]; i++) {
        if (cli_sendn(&c, drip + i, 1) || cli_readable(&c, 40) || now_ms() - t0 > 1500)
            break;
    }
    GS_ASSERT_OK(cli_read(&c, &r, 0));
    GS_ASSERT_EQ(r.status, 408);
    dt = now_ms() - t0;
    GS_ASSERT_MSG(dt < 1500, "slowloris cut after %.0f ms", dt);
    resp_free(&r);
    cli_close(&c);
    /* Body never finished: 408 after the body timeout. */
    GS_ASSERT_OK(cli_open(&c, &h));
    cli_send(&c, "POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
    GS_ASSERT_OK(cli_read(&c, &r, 0));
    GS_ASSERT_EQ(r.status, 408);
    GS_ASSERT(strstr(r.body, "body") != NULL);
    resp_free(&r);
    cli_close(&c);
    /* Idle keep-alive: closed silently after the idle timeout. */
    GS_ASSERT_OK(cli_open(&c, &h));
    cli_send(&c, "GET /hello HTTP/1.1\r\n\r\n");
    GS_ASSERT_OK(cli_read(&c, &r, 0));
    resp_free(&r);
    t0 = now_ms();
    GS_ASSERT(cli_eof(&c, 3000));
    dt = now_ms() - t0;
    GS_ASSERT_MSG(dt > 200, "idle close after %.0f ms", dt);
    cli_close(&c);
    /* A connection that never sends a byte: closed silently too. */
    GS_ASSERT_OK(cli_open(&c, &h));
    GS_ASSERT(cli_eof(&c, 3000));
    cli_close(&c);
    GS_ASSERT_EQ(th_stop(&h), 0);
}

static void test_client_abort_mid_stream(void)
{
    gs_http_params p = params();
    START(h, st, p);
    th_cli c;
    GS_ASSERT_OK(cli_open(&c, &h));
    cli_send(&c, "GET /hang HTTP/1.1\r\n\r\n");
    GS_ASSERT_OK(cli_wait(&c, "first"));
    cli_close(&c);
    GS_ASSERT(th_wait_int(&h, &st.finals, 1, 3000));
    GS_ASSERT_EQ(st.aborts, 1);
    GS_ASSERT_EQ(st.eio, 1);
    GS_ASSERT_EQ(st.final_rc, GS_EIO);
    th_sleep_ms(&h, 50);
    GS_ASSERT_EQ(st.aborts, 1);
    gs_http_stats s;
    th_stats(&h, &s);
    GS_ASSERT_EQ(s.connections_open, 0);
    GS_ASSERT_EQ(th_stop(&h), 0);
}

static void test_expect_continue(void)
{
    gs_http_params p = params();
    START(h, st, p);
    th_cli c;
    th_resp r;
    char raw[64];
    GS_ASSERT_OK(cli_open(&c, &h));
    cli_send(&c, "POST /echo HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    GS_ASSERT_OK(cli_read_raw(&c, raw, 25));
    GS_ASSERT_STREQ(raw, "HTTP/1.1 100 Continue\r\n\r\n");
    cli_send(&c, "hello");
    GS_ASSERT_OK(cli_read(&c, &r, 0));
    GS_ASSERT_EQ(r.status, 200);
    GS_ASSERT_STREQ(r.body, "hello");
    resp_free(&r);
    /* Over the limit: 413 straight away, no 100. */
    cli_send(&c, "POST /echo HTTP/1.1\r\nContent-Length: 99999\r\nExpect: 100-continue\r\n\r\n");
    GS_ASSERT_OK(cli_read(&c, &r, 0));
    GS_ASSERT_EQ(r.status, 413);
    resp_free(&r);
    cli_close(&c);
    GS_ASSERT_EQ(th_stop(&h), 0);
}

static void test_http10_and_close(void)
{
    gs_http_params p = params();
    START(h, st, p);
    th_cli c;
    th_resp r;
    char hv[64];
    int closed;
    /* HTTP/1.0 closes by default. */
    GS_ASSERT_OK(one_shot(&h, "GET /hello HTTP/1.0\r\n\r\n", &r, &closed));
    GS_ASSERT_EQ(r.status, 200);
    GS_ASSERT_STREQ(HDR(r, "Connection"), "close");
    GS_ASSERT(closed);
    resp_free(&r);
    /* HTTP/1.0 with Connection: keep-alive stays open. */
    GS_ASSERT_OK(cli_open(&c, &h));
    for (int i = 0; i < 2; i++) {
        cli_send(&c, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        GS_ASSERT_OK(cli_read(&c, &r, 0));
        GS_ASSERT_STREQ(HDR(r, "Connection"), "keep-alive");
        GS_ASSERT_STREQ(r.body, "hello");
        resp_free(&r);
    }
    cli_close(&c);
    /* A stream to HTTP/1.0: raw body, ended by the close. */
    GS_ASSERT_OK(one_shot(&h, "GET /stream HTTP/1.0\r\n\r\n", &r, NULL));
    GS_ASSERT(!r.chunked);
    GS_ASSERT_STREQ(HDR(r, "Connection"), "close");
    GS_ASSERT_STREQ(r.body, "part0part1part2");
    resp_free(&r);
    /* HTTP/1.1 Connection: close is honoured. */
    GS_ASSERT_OK(one_shot(&h, "GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n", &r, &closed));
    GS_ASSERT_STREQ(HDR(r, "Connection"), "close");
    GS_ASSERT(closed);
    resp_free(&r);
    GS_ASSERT_EQ(th_stop(&h), 0);
}

static void drained_cb(void *user)
{
    ((tstate *)user)->drained++;
}

static void drain_fn(th_server *h, void *arg)
{
    (void)arg;
    gs_http_server_drain(h->srv, drained_cb, h->user);
}

static void test_drain(void)
{
    gs_http_params p = params();
    START(h, st, p);
    th_cli a, b, x;
    th_resp r;
    char hv[64];
    GS_ASSERT_OK(cli_open(&a, &h));
    GS_ASSERT_OK(cli_open(&b, &h));
    cli_send(&a, "GET /hello HTTP/1.1\r\n\r\n");
    GS_ASSERT_OK(cli_read(&a, &r, 0));
    resp_free(&r);
    cli_send(&b, "GET /slow?ms=300&id=9 HTTP/1.1\r\n\r\n");
    th_sleep_ms(&h, 60);
    th_call(&h, drain_fn, NULL);
    GS_ASSERT(cli_eof(&a, 2000)); /* idle: closed at once */
    GS_ASSERT_OK(cli_read(&b, &r, 0));
    GS_ASSERT_EQ(r.status, 200);
    GS_ASSERT_STREQ(r.body, "9");
    GS_ASSERT_STREQ(HDR(r, "Connection"), "close");
    resp_free(&r);
    GS_ASSERT(cli_eof(&b, 2000));
    cli_close(&a);
    cli_close(&b);
    GS_ASSERT(th_wait_int(&h, &st.drained, 1, 3000));
    GS_ASSERT(cli_open(&x, &h) != 0); /* no longer listening */
    cli_close(&x);
    GS_ASSERT_EQ(th_stop(&h), 0);
    GS_ASSERT_EQ(st.drained, 1);
}

static void test_upgrade(void)
{
    gs_http_params p = params();
    START(h, st, p);
    th_cli c;
    th_resp r;
    char raw[16];
    GS_ASSERT_OK(cli_open(&c, &h));
    cli_send(&c, "GET /upgrade HTTP/1.1\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\nEXTRA");
    GS_ASSERT_OK(cli_read(&c, &r, 1));
    GS_ASSERT_EQ(r.status, 101);
    resp_free(&r);
    GS_ASSERT_OK(cli_read_raw(&c, raw, 9));
    GS_ASSERT_STREQ(raw, "got:EXTRA");
    GS_ASSERT(cli_eof(&c, 2000));
    GS_ASSERT_EQ(st.upgraded_rc, 0);
    cli_close(&c);
    gs_http_stats s;
    th_stats(&h, &s);
    GS_ASSERT_EQ(s.connections_open, 0);
    GS_ASSERT_EQ(th_stop(&h), 0);
}

static void test_max_connections(void)
{
    gs_http_params p = params();
    p.max_connections = 2;
    START(h, st, p);
    th_cli c[3];
    th_resp r;
    for (int i = 0; i < 3; i++)
        GS_ASSERT_OK(cli_open(&c[i], &h));
    GS_ASSERT(cli_eof(&c[2], 2000)); /* the third is closed at once */
    for (int i = 0; i < 2; i++) {
        cli_send(&c[i], "GET /hello HTTP/1.1\r\n\r\n");
        GS_ASSERT_OK(cli_read(&c[i], &r, 0));
        GS_ASSERT_EQ(r.status, 200);
        resp_free(&r);
    }
    for (int i = 0; i < 3; i++)
        cli_close(&c[i]);
    GS_ASSERT_EQ(th_stop(&h), 0);
}

static void test_free_with_request_in_flight(void)
{
    gs_http_params p = params();
    START(h, st, p);
    th_cli c;
    GS_ASSERT_OK(cli_open(&c, &h));
    cli_send(&c, "GET /never HTTP/1.1\r\n\r\n");
    GS_ASSERT(th_wait_int(&h, &st.got_never, 1, 3000));
    GS_ASSERT_EQ(th_stop(&h), 0); /* the abort callback made the final call */
    GS_ASSERT_EQ(st.aborts, 1);
    GS_ASSERT_EQ(st.finals, 1);
    GS_ASSERT_EQ(st.final_rc, GS_EIO);
    GS_ASSERT(cli_eof(&c, 2000));
    cli_close(&c);
}

/* Many pipelined requests for large answers, sent before any is read: the
 * server holds parsing back while answers are queued and resumes as they
 * are written; every answer arrives whole and in order. */
/* A client that stops reading a stream: dropped (and the request aborted)
 * by the send timeout, or by the cap on a stream's unwritten bytes. */
static void flood_unread(gs_http_params p)
{
    p.stream_sndbuf = 4096;
    START(h, st, p);
    th_cli c;
    GS_ASSERT_OK(cli_open(&c, &h));
    cli_send(&c, "GET /flood HTTP/1.1\r\n\r\n");
    double t0 = now_ms();
    GS_ASSERT(th_wait_int(&h, &st.finals, 1, 5000)); /* never read: the server gives up */
    GS_ASSERT_EQ(st.aborts, 1);
    GS_ASSERT_EQ(st.final_rc, GS_EIO);
    GS_ASSERT(now_ms() - t0 < 4000);
    cli_close(&c);
    th_sleep_ms(&h, 50);
    gs_http_stats s;
    th_stats(&h, &s);
    GS_ASSERT_EQ(s.connections_open, 0);
    GS_ASSERT_EQ(th_stop(&h), 0);
}

static void test_send_timeout(void)
{
    gs_http_params p = params();
    p.send_timeout_ms = 200;
    flood_unread(p);
}

static void test_stream_pending_cap(void)
{
    gs_http_params p = params();
    p.send_timeout_ms = 60000;
    p.max_stream_pending = 64 * 1024;
    flood_unread(p);
}

/* A slow reader that keeps taking bytes is never cut by the send timeout. */
static void test_slow_reader_that_reads_stays(void)
{
    gs_http_params p = params();
    p.send_timeout_ms = 1000;
    p.stream_sndbuf = 4096;
    p.max_stream_pending = 64u << 20; /* not the cap: the timeout is what is tested */
    START(h, st, p);
    th_cli c;
    GS_ASSERT_OK(cli_open(&c, &h));
    cli_send(&c, "GET /flood HTTP/1.1\r\n\r\n");
    char buf[16384];
    double t0 = now_ms();
    size_t got = 0;
    while (now_ms() - t0 < 1500) { /* 4 KiB every 100 ms: far slower than the flood */
        th_sleep_ms(&h, 100);      /* the server's loop runs meanwhile */
        ssize_t n = recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
        GS_ASSERT(n > 0);
        got += (size_t)n;
    }
    GS_ASSERT(got > 0);
    GS_ASSERT_EQ(st.aborts, 0); /* within the pending cap and still reading */
    cli_close(&c);
    GS_ASSERT(th_wait_int(&h, &st.finals, 1, 3000));
    GS_ASSERT_EQ(th_stop(&h), 0);
}

static void test_pipeline_backpressure(void)
{
    gs_http_params p = params();
    START(h, st, p);
    th_cli c;
    th_resp r;
    GS_ASSERT_OK(cli_open(&c, &h));
    char req[64];
    for (int i = 0; i < 24; i++) {
        snprintf(req, sizeof req, "GET /big?id=%d HTTP/1.1\r\n\r\n", i);
        GS_ASSERT_OK(cli_send(&c, req));
    }
    for (int i = 0; i < 24; i++) {
        GS_ASSERT_OK(cli_read(&c, &r, 0));
        GS_ASSERT_EQ(r.body_len, 128 * 1024);
        GS_ASSERT_EQ(r.body[0], 'a' + i % 26);
        GS_ASSERT_EQ(r.body[r.body_len - 1], 'a' + i % 26);
        resp_free(&r);
    }
    cli_close(&c);
    GS_ASSERT_EQ(th_stop(&h), 0);
}

/* An inherited listening fd: served, and still open after the free. */
static void test_listen_fd(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    GS_ASSERT_OK(bind(fd, (struct sockaddr *)&a, sizeof a));
    GS_ASSERT_OK(listen(fd, 16));
    tstate st;
    memset(&st, 0, sizeof st);
    th_server h;
    memset(&h, 0, sizeof h);
    h.user = &st;
    GS_ASSERT_OK(uv_loop_init(&h.loop));
    gs_http_params p = params();
    p.user = &h;
    gs_diag d;
    GS_ASSERT_OK(gs_http_server_new(&h.loop, &p, &h.srv, &d));
    GS_ASSERT_OK(gs_http_server_listen_fd(h.srv, fd, &d));
    GS_ASSERT_EQ(gs_http_server_listen_fd(h.srv, fd, &d), GS_EIO); /* one listener */
    h.port = gs_http_server_port(h.srv);
    GS_ASSERT(h.port > 0);
    th_cli c;
    th_resp r;
    GS_ASSERT_OK(cli_open(&c, &h));
    cli_send(&c, "GET /hello HTTP/1.1\r\n\r\n");
    GS_ASSERT_OK(cli_read(&c, &r, 0));
    GS_ASSERT_STREQ(r.body, "hello");
    resp_free(&r);
    cli_close(&c);
    GS_ASSERT_EQ(th_stop(&h), 0);
    GS_ASSERT(fcntl(fd, F_GETFD) != -1);
    close(fd);
}

static void test_bad_args(void)
{
    uv_loop_t loop;
    GS_ASSERT_OK(uv_loop_init(&loop));
    gs_http_server *s = NULL;
    gs_http_params p = {0};
    gs_diag d;
    GS_ASSERT_EQ(gs_http_server_new(&loop, &p, &s, &d), GS_EINVAL);
    GS_ASSERT(s == NULL);
    p.handler = handler;
    GS_ASSERT_OK(gs_http_server_new(&loop, &p, &s, &d));
    GS_ASSERT_EQ(gs_http_server_listen(s, "not-an-ip", 0, &d), GS_EIO);
    GS_ASSERT_EQ(gs_http_server_port(s), 0);
    GS_ASSERT_STREQ(gs_http_status_text(404), "Not Found");
    gs_http_server_free(s);
    gs_http_server_free(NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    GS_ASSERT_EQ(uv_loop_close(&loop), 0);
}

int main(void)
{
    GS_RUN(test_bad_args);
    GS_RUN(test_get);
    GS_RUN(test_keepalive_reuse);
    GS_RUN(test_pipelined_in_order);
    GS_RUN(test_chunked_request_body);
    GS_RUN(test_streamed_response);
    GS_RUN(test_limits_and_malformed);
    GS_RUN(test_timeouts);
    GS_RUN(test_client_abort_mid_stream);
    GS_RUN(test_send_timeout);
    GS_RUN(test_stream_pending_cap);
    GS_RUN(test_slow_reader_that_reads_stays);
    GS_RUN(test_expect_continue);
    GS_RUN(test_http10_and_close);
    GS_RUN(test_drain);
    GS_RUN(test_upgrade);
    GS_RUN(test_max_connections);
    GS_RUN(test_free_with_request_in_flight);
    GS_RUN(test_pipeline_backpressure);
    GS_RUN(test_listen_fd);
    return gs_test_summary();
}
