/* http_harness.c - see http_harness.h. */
#include "http_harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- the server and its loop -------------------------------------------- */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* One turn of the loop, then a short nap so the waits do not spin. */
static void pump(th_server *h)
{
    if (h && !h->stopped)
        uv_run(&h->loop, UV_RUN_NOWAIT);
}

int th_start(th_server *h, gs_http_params *p, void *user)
{
    memset(h, 0, sizeof *h);
    h->user = user;
    if (uv_loop_init(&h->loop) != 0)
        return -1;
    p->user = h;
    gs_diag d;
    if (gs_http_server_new(&h->loop, p, &h->srv, &d) != 0 ||
        gs_http_server_listen(h->srv, "127.0.0.1", 0, &d) != 0)
        return -1;
    h->port = gs_http_server_port(h->srv);
    return h->port > 0 ? 0 : -1;
}

void th_call(th_server *h, th_fn fn, void *arg)
{
    fn(h, arg);
}

int th_stop(th_server *h)
{
    gs_http_server_free(h->srv);
    h->srv = NULL;
    double t0 = now_ms();
    while (uv_run(&h->loop, UV_RUN_NOWAIT) != 0 && now_ms() - t0 < 5000) {
        struct pollfd none;
        poll(&none, 0, 1);
    }
    h->stopped = 1;
    return uv_loop_close(&h->loop);
}

typedef struct {
    uv_timer_t t;
    void (*cb)(void *);
    void *data;
} later;

static void later_close(uv_handle_t *hd)
{
    free(hd->data);
}

static void later_fire(uv_timer_t *t)
{
    later *l = t->data;
    l->cb(l->data);
    uv_close((uv_handle_t *)t, later_close);
}

void th_later(uv_loop_t *loop, unsigned ms, void (*cb)(void *data), void *data)
{
    later *l = calloc(1, sizeof *l);
    l->cb = cb;
    l->data = data;
    uv_timer_init(loop, &l->t);
    l->t.data = l;
    uv_timer_start(&l->t, later_fire, ms, 0);
}

void th_stats(th_server *h, gs_http_stats *out)
{
    gs_http_server_stats(h->srv, out);
}

void th_sleep_ms(th_server *h, unsigned ms)
{
    double t0 = now_ms();
    do {
        pump(h);
        struct pollfd none;
        poll(&none, 0, 1);
    } while (now_ms() - t0 < ms);
}

int th_wait_int(th_server *h, const int *v, int want, int ms)
{
    double t0 = now_ms();
    while (*v != want && now_ms() - t0 < ms) {
        pump(h);
        struct pollfd none;
        poll(&none, 0, 1);
    }
    return *v == want;
}

/* Waits up to ms for fd to be readable, running the loop meanwhile. */
static int wait_readable(th_cli *c, int ms)
{
    double t0 = now_ms();
    for (;;) {
        pump(c->h);
        struct pollfd pf = {c->fd, POLLIN, 0};
        if (poll(&pf, 1, 1) > 0)
            return 1;
        if (now_ms() - t0 >= ms)
            return 0;
    }
}

/* ---- the client ------------------------------------------------------------ */

int cli_open(th_cli *c, th_server *h)
{
    memset(c, 0, sizeof *c);
    c->h = h;
    int port = h->port;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0)
        return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    return 0;
}

void cli_close(th_cli *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
    c->len = c->cap = 0;
}

int cli_sendn(th_cli *c, const void *p, size_t n)
{
    const char *s = p;
    double t0 = now_ms();
    while (n) {
        ssize_t k = send(c->fd, s, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k < 0 && (errno == EINTR || errno == EAGAIN) && now_ms() - t0 < 5000) {
            pump(c->h); /* the server must read for the send to go on */
            continue;
        }
        if (k <= 0)
            return -1;
        s += k;
        n -= (size_t)k;
    }
    return 0;
}

int cli_send(th_cli *c, const char *s)
{
    return cli_sendn(c, s, strlen(s));
}

/* Receives more bytes into the buffer; 0, or -1 on EOF / error / timeout. */
static int fill(th_cli *c)
{
    if (c->cap - c->len < 4096) {
        size_t cap = c->cap ? c->cap * 2 : 65536;
        char *p = realloc(c->buf, cap + 1);
        if (!p)
            return -1;
        c->buf = p;
        c->cap = cap;
    }
    if (!wait_readable(c, 5000))
        return -1;
    ssize_t k;
    do
        k = recv(c->fd, c->buf + c->len, c->cap - c->len, MSG_DONTWAIT);
    while (k < 0 && errno == EINTR);
    if (k <= 0)
        return -1;
    c->len += (size_t)k;
    c->buf[c->len] = 0;
    return 0;
}

static void consume(th_cli *c, size_t n)
{
    if (!c->buf)
        return;
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
    c->buf[c->len] = 0;
}

/* Index just past the first "\r\n" at or after from, or 0 when none yet. */
static size_t line_end(const th_cli *c, size_t from)
{
    for (size_t i = from; i + 1 < c->len; i++)
        if (c->buf[i] == '\r' && c->buf[i + 1] == '\n')
            return i + 2;
    return 0;
}

const char *resp_header(const th_resp *r, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *p = strstr(r->head, "\r\n");
    while (p && p[2]) {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            size_t n = strcspn(v, "\r");
            if (n >= cap)
                n = cap - 1;
            memcpy(out, v, n);
            out[n] = 0;
            return out;
        }
        p = strstr(p, "\r\n");
    }
    return NULL;
}

static int body_append(th_resp *r, const char *p, size_t n)
{
    char *b = realloc(r->body, r->body_len + n + 1);
    if (!b)
        return -1;
    memcpy(b + r->body_len, p, n);
    r->body = b;
    r->body_len += n;
    b[r->body_len] = 0;
    return 0;
}

int cli_read(th_cli *c, th_resp *r, int no_body)
{
    memset(r, 0, sizeof *r);
    r->body = calloc(1, 1);
    char *end;
    while (!c->buf || !(end = strstr(c->buf, "\r\n\r\n")))
        if (fill(c))
            return -1;
    size_t hl = (size_t)(end - c->buf) + 4;
    if (hl >= sizeof r->head)
        return -1;
    memcpy(r->head, c->buf, hl);
    r->head[hl] = 0;
    consume(c, hl);
    if (sscanf(r->head, "HTTP/1.%*d %d", &r->status) != 1)
        return -1;
    char v[64];
    if (no_body || r->status == 304 || r->status == 204 || r->status < 200)
        return 0;
    if (resp_header(r, "Transfer-Encoding", v, sizeof v) && strcasecmp(v, "chunked") == 0) {
        r->chunked = 1;
        for (;;) {
            size_t le;
            while (!(le = line_end(c, 0)))
                if (fill(c))
                    return -1;
            size_t n = strtoul(c->buf, NULL, 16);
            consume(c, le);
            while (c->len < n + 2)
                if (fill(c))
                    return -1;
            if (n == 0) {
                consume(c, 2);
                return 0;
            }
            if (body_append(r, c->buf, n))
                return -1;
            consume(c, n + 2);
        }
    }
    if (resp_header(r, "Content-Length", v, sizeof v)) {
        size_t n = strtoul(v, NULL, 10);
        while (c->len < n)
            if (fill(c))
                return -1;
        if (body_append(r, c->buf, n))
            return -1;
        consume(c, n);
        return 0;
    }
    /* Until the connection closes. */
    while (fill(c) == 0)
        ;
    if (body_append(r, c->buf ? c->buf : "", c->len))
        return -1;
    consume(c, c->len);
    return 0;
}

int cli_wait(th_cli *c, const char *needle)
{
    while (!c->buf || !strstr(c->buf, needle))
        if (fill(c))
            return -1;
    return 0;
}

int cli_read_raw(th_cli *c, char *out, size_t n)
{
    while (c->len < n)
        if (fill(c))
            return -1;
    memcpy(out, c->buf, n);
    out[n] = 0;
    consume(c, n);
    return 0;
}

int cli_readable(th_cli *c, int ms)
{
    if (c->len > 0)
        return 1;
    return wait_readable(c, ms);
}

int cli_eof(th_cli *c, int ms)
{
    if (c->len > 0 || !wait_readable(c, ms))
        return 0;
    char b[64];
    ssize_t k = recv(c->fd, b, sizeof b, MSG_DONTWAIT);
    return k == 0 || (k < 0 && errno == ECONNRESET);
}

void resp_free(th_resp *r)
{
    free(r->body);
    r->body = NULL;
}
