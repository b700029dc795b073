/* http.c - the HTTP server's sockets: listening, accepting, the life of a
 * connection (reads, its one timer, closing), drain and free. Parsing is in
 * http_parse.c, the response writer in http_write.c; http_impl.h has the
 * structs and the lifetime rules.
 *
 * Timeouts, one uv_timer_t per connection, re-armed at each phase:
 * - new connection: the header timeout runs from the accept (not from the
 *   first byte), so a client that connects and says nothing is cut as soon
 *   as one that trickles; no byte at all: closed silently, else 408;
 * - keep-alive: the idle timeout from the end of the previous response
 *   (closed silently; while queued bytes are still being written it waits);
 * - headers: the header timeout from the first byte of a request (408);
 * - body: the body timeout from the end of the headers (408);
 * - while the handler works there is no timer (the handler owns the time),
 *   except while response bytes wait to be written: the send timeout,
 *   re-armed whenever the client took some, closes a connection whose
 *   client takes none (and aborts the request).
 *
 * Closing: a response that ends the connection (Connection: close, a
 * server-made error, a drain) is followed by a FIN once it is written, and
 * the connection reads and drops whatever the client still sends until it
 * closes or GS_HTTP_LINGER_MS pass (so the client reads the answer instead
 * of a reset). EOF or an error from the client, a failed write, free: the
 * handles are closed at once and a request in the handler is aborted.
 *
 * Reads go on while the handler works (to see the client leave), into the
 * same buffer, up to gs__http_in_cap bytes; past that reading pauses until
 * the buffer is parsed. Parsing itself waits while more than
 * GS_HTTP_PARSE_PENDING_MAX response bytes are queued (on_write resumes it),
 * so pipelining without reading the answers costs bounded memory.
 * Threading: the loop thread only. */
#include "gateway/http_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"

/* ---- connections -------------------------------------------------------- */

size_t gs__http_in_cap(const gs_http_server *s)
{
    return s->p.max_header_bytes + GS_HTTP_READ_CHUNK;
}

void gs__http_conn_maybe_free(gs_http_conn *c)
{
    if (c->handles > 0 || c->writes > 0)
        return;
    gs_http_server *s = c->s;
    if (!c->handed_over) {
        gs_queue_remove(&c->link);
        s->n_conns--;
        s->st.connections_open--;
        free(c->tcp);
    }
    free(c->in);
    free(c);
    if (s)
        gs__http_server_check(s);
}

static void on_conn_handle_close(uv_handle_t *h)
{
    gs_http_conn *c = h->data;
    c->handles--;
    gs__http_conn_maybe_free(c);
}

void gs__http_conn_close(gs_http_conn *c)
{
    if (c->closing || c->handed_over)
        return;
    c->closing = 1;
    c->phase = GS_PH_CLOSING;
    c->reading = 0;
    gs_queue_remove(&c->link);
    gs_queue_insert_tail(&c->s->closing, &c->link);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_close);
    uv_close((uv_handle_t *)c->tcp, on_conn_handle_close);
    gs_http_req *r = c->req;
    c->req = NULL;
    if (!r)
        return;
    r->c = NULL;
    if (!r->dispatched) {
        gs__http_req_free(r);
        return;
    }
    /* The handler keeps r (and its body) until its final call, which may
     * come after the server is gone: r stops being counted now. */
    gs__http_req_unaccount(r);
    /* The handler still owns r; tell it once (the callback may make its
     * final call and free r, so r is not touched after). */
    r->aborted = 1;
    void (*cb)(gs_http_req *, void *) = r->abort_cb;
    r->abort_cb = NULL;
    if (cb)
        cb(r, r->abort_user);
}

static void on_shutdown(uv_shutdown_t *sh, int status)
{
    gs_http_conn *c = sh->data;
    if (status < 0)
        gs__http_conn_close(c);
}

void gs__http_conn_close_after_write(gs_http_conn *c)
{
    if (c->closing || c->handed_over)
        return;
    c->phase = GS_PH_CLOSING;
    gs__http_conn_timer(c, GS_TM_LINGER);
    if (!c->shut_sent) {
        c->shut_sent = 1;
        c->shut.data = c;
        /* uv_shutdown waits for the queued writes, then sends the FIN. */
        if (uv_shutdown(&c->shut, (uv_stream_t *)c->tcp, on_shutdown) != 0) {
            gs__http_conn_close(c);
            return;
        }
    }
    gs__http_conn_read_start(c);
}

void gs__http_conn_finish(gs_http_conn *c, int keep_alive)
{
    c->req = NULL;
    if (c->closing || c->phase == GS_PH_CLOSING)
        return;
    if (!keep_alive || c->s->draining || c->s->freeing) {
        gs__http_conn_close_after_write(c);
        return;
    }
    c->phase = GS_PH_WAIT;
    gs__http_conn_process(c); /* the next pipelined request, if any */
}

static void on_conn_timer(uv_timer_t *t)
{
    gs_http_conn *c = t->data;
    switch (c->tmode) {
    case GS_TM_FIRST:
    case GS_TM_HEADERS:
        if (c->phase == GS_PH_HEADERS)
            gs__http_error(c, 408, "timed out reading the request headers");
        else
            gs__http_conn_close(c);
        break;
    case GS_TM_BODY:
        gs__http_error(c, 408, "timed out reading the request body");
        break;
    case GS_TM_IDLE:
        if (c->pending > 0 && c->written != c->written_at_arm) {
            gs__http_conn_timer(c, GS_TM_IDLE); /* still writing: wait on */
            break;
        }
        gs__http_conn_close(c);
        break;
    case GS_TM_SEND:
        if (c->pending == 0) {
            gs__http_conn_timer(c, GS_TM_NONE);
        } else if (c->written != c->written_at_arm) {
            gs__http_conn_timer(c, GS_TM_SEND); /* the client reads: wait on */
        } else {
            gs_log_warn("http: %s took none of %zu waiting response bytes in %u ms: closing",
                        c->peer, c->pending, c->s->p.send_timeout_ms);
            gs__http_conn_close(c); /* aborts the request in the handler */
        }
        break;
    case GS_TM_DROP:
    case GS_TM_LINGER:
    case GS_TM_NONE:
        gs__http_conn_close(c);
        break;
    }
}

void gs__http_conn_timer(gs_http_conn *c, gs_http_tmode mode)
{
    if (c->closing || c->handed_over)
        return; /* (after a hand-over the timer is closed and c->s is gone) */
    if (c->drop)
        mode = GS_TM_DROP; /* nothing postpones it */
    c->tmode = mode;
    uint64_t ms = 0;
    switch (mode) {
    case GS_TM_NONE:
        uv_timer_stop(&c->timer);
        return;
    case GS_TM_FIRST:
    case GS_TM_HEADERS:
        ms = c->s->p.header_timeout_ms;
        break;
    case GS_TM_IDLE:
        ms = c->s->p.idle_timeout_ms;
        c->written_at_arm = c->written;
        break;
    case GS_TM_BODY:
        ms = c->s->p.body_timeout_ms;
        break;
    case GS_TM_LINGER:
        ms = GS_HTTP_LINGER_MS;
        break;
    case GS_TM_SEND:
        ms = c->s->p.send_timeout_ms;
        c->written_at_arm = c->written;
        break;
    case GS_TM_DROP:
        break;
    }
    uv_timer_start(&c->timer, on_conn_timer, ms, 0);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    gs_http_conn *c = h->data;
    (void)suggested;
    if (c->in_off == c->in_len)
        c->in_off = c->in_len = 0;
    if (c->in_cap - c->in_len < GS_HTTP_READ_CHUNK / 4) {
        if (c->in_off > 0) { /* no pointer into the buffer lives between reads */
            memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
            c->in_len -= c->in_off;
            c->in_off = 0;
        }
        if (c->in_cap - c->in_len < GS_HTTP_READ_CHUNK / 4) {
            size_t cap = c->in_len + GS_HTTP_READ_CHUNK;
            char *p = realloc(c->in, cap);
            if (p) {
                c->in = p;
                c->in_cap = cap;
            }
        }
    }
    /* Nothing free: libuv reports UV_ENOBUFS to on_read, which closes. */
    *buf = uv_buf_init(c->in ? c->in + c->in_len : NULL, (unsigned)(c->in_cap - c->in_len));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    gs_http_conn *c = st->data;
    (void)buf;
    if (n == 0)
        return;
    if (n < 0) { /* EOF, reset, ENOBUFS: the client is gone or we cannot go on */
        gs__http_conn_close(c);
        return;
    }
    c->s->st.bytes_in += (uint64_t)n;
    if (c->phase == GS_PH_CLOSING)
        return; /* lingering: dropped */
    c->in_len += (size_t)n;
    if (c->phase == GS_PH_HANDLER) {
        /* Kept for after the response; only watched for the client leaving. */
        if (c->in_len - c->in_off >= gs__http_in_cap(c->s)) {
            uv_read_stop(st);
            c->reading = 0;
        }
        return;
    }
    gs__http_conn_process(c);
    /* Parsing waits (responses queued): do not buffer without end. */
    if (c->reading && !c->closing && !c->handed_over &&
        c->in_len - c->in_off >= gs__http_in_cap(c->s)) {
        uv_read_stop(st);
        c->reading = 0;
    }
}

void gs__http_conn_read_start(gs_http_conn *c)
{
    if (c->reading || c->closing || c->handed_over)
        return;
    if (uv_read_start((uv_stream_t *)c->tcp, on_alloc, on_read) != 0) {
        gs__http_conn_close(c);
        return;
    }
    c->reading = 1;
}

static void on_reject_close(uv_handle_t *h)
{
    free(h);
}

static void on_connection(uv_stream_t *l, int status)
{
    gs_http_server *s = l->data;
    if (status < 0)
        return; /* EMFILE and the like: libuv retries on the next readiness */
    uv_tcp_t *tcp = malloc(sizeof *tcp);
    if (!tcp)
        return;
    if (uv_tcp_init(s->loop, tcp) != 0) {
        free(tcp);
        return;
    }
    if (uv_accept(l, (uv_stream_t *)tcp) != 0) {
        uv_close((uv_handle_t *)tcp, on_reject_close);
        return;
    }
    gs_http_conn *c = NULL;
    if (!s->draining && !s->freeing && s->n_conns < s->p.max_connections)
        c = calloc(1, sizeof *c);
    if (!c || uv_timer_init(s->loop, &c->timer) != 0) {
        free(c);
        uv_close((uv_handle_t *)tcp, on_reject_close);
        return;
    }
    c->s = s;
    c->tcp = tcp;
    tcp->data = c;
    c->timer.data = c;
    c->handles = 2;
    gs_queue_insert_tail(&s->conns, &c->link);
    s->n_conns++;
    s->st.connections_open++;
    s->st.connections_total++;
    uv_tcp_nodelay(tcp, 1);
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)&ss, c->peer, sizeof c->peer);
        else if (ss.ss_family == AF_INET)
            uv_ip4_name((struct sockaddr_in *)&ss, c->peer, sizeof c->peer);
    }
    gs__http_parser_init(c);
    c->phase = GS_PH_WAIT;
    gs__http_conn_timer(c, GS_TM_FIRST);
    gs__http_conn_read_start(c);
}

/* ---- the server --------------------------------------------------------- */

int gs_http_server_new(uv_loop_t *loop, const gs_http_params *p, gs_http_server **out, gs_diag *d)
{
    if (out)
        *out = NULL;
    if (!loop || !p || !out || !p->handler)
        return gs_diag_set(d, GS_EINVAL, "http server: loop, params and a handler are required");
    gs_http_server *s = calloc(1, sizeof *s);
    if (!s)
        return gs_diag_set(d, GS_ENOMEM, "http server: out of memory");
    s->loop = loop;
    s->p = *p;
    if (!s->p.max_header_bytes)
        s->p.max_header_bytes = 16 * 1024;
    if (!s->p.max_body_bytes)
        s->p.max_body_bytes = 32u * 1024 * 1024;
    if (!s->p.header_timeout_ms)
        s->p.header_timeout_ms = 10 * 1000;
    if (!s->p.body_timeout_ms)
        s->p.body_timeout_ms = 60 * 1000;
    if (!s->p.idle_timeout_ms)
        s->p.idle_timeout_ms = 75 * 1000;
    if (!s->p.max_connections)
        s->p.max_connections = 10000;
    if (!s->p.max_body_memory)
        s->p.max_body_memory = (size_t)1 << 30;
    if (!s->p.send_timeout_ms)
        s->p.send_timeout_ms = 60 * 1000;
    if (!s->p.max_stream_pending)
        s->p.max_stream_pending = (size_t)8 << 20;
    if (!s->p.stream_sndbuf)
        s->p.stream_sndbuf = 64u << 10;
    const char *name = p->server_name ? p->server_name : "glmserve";
    if (strpbrk(name, "\r\n")) {
        free(s);
        return gs_diag_set(d, GS_EINVAL, "http server: server_name has a line break");
    }
    s->server_name = strdup(name);
    if (!s->server_name) {
        free(s);
        return gs_diag_set(d, GS_ENOMEM, "http server: out of memory");
    }
    s->p.server_name = s->server_name;
    if (uv_timer_init(loop, &s->tick) != 0) {
        free(s->server_name);
        free(s);
        return gs_diag_set(d, GS_EIO, "http server: uv_timer_init failed");
    }
    s->tick.data = s;
    s->handles = 1;
    s->date_sec = -1;
    gs_queue_init(&s->conns);
    gs_queue_init(&s->closing);
    *out = s;
    return 0;
}

static void on_server_handle_close(uv_handle_t *h);

/* Takes fd (a listening socket) into the listener handle. */
static int listen_on(gs_http_server *s, int fd, gs_diag *d)
{
    if (s->listener_open || s->draining || s->freeing) {
        close(fd);
        return gs_diag_set(d, GS_EINVAL, "http server: already listening or stopping");
    }
    int rc = uv_tcp_init(s->loop, &s->listener);
    if (rc != 0) {
        close(fd);
        return gs_diag_set(d, GS_EIO, "http server: uv_tcp_init: %s", uv_strerror(rc));
    }
    s->listener.data = s;
    s->listener_open = 1;
    s->handles++;
    rc = uv_tcp_open(&s->listener, fd);
    if (rc != 0)
        close(fd); /* not taken by the handle */
    else
        rc = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
    if (rc != 0) {
        uv_close((uv_handle_t *)&s->listener, on_server_handle_close);
        return gs_diag_set(d, GS_EIO, "http server: listen: %s", uv_strerror(rc));
    }
    return 0;
}

int gs_http_server_listen_fd(gs_http_server *s, int fd, gs_diag *d)
{
    if (!s || fd < 0)
        return gs_diag_set(d, GS_EINVAL, "http server: no server or fd");
    /* The handle closes what it holds: give it a duplicate, the caller's
     * fd stays open. */
    int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup_fd < 0)
        return gs_diag_set(d, GS_EIO, "http server: dup(%d): %s", fd, strerror(errno));
    int rc = listen_on(s, dup_fd, d);
    return rc ? GS_EIO : 0;
}

int gs_http_server_listen(gs_http_server *s, const char *host, int port, gs_diag *d)
{
    if (!s || !host || port < 0 || port > 65535)
        return gs_diag_set(d, GS_EIO, "http server: bad host or port");
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t sl;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) == 0)
        sl = sizeof(struct sockaddr_in);
    else if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) == 0)
        sl = sizeof(struct sockaddr_in6);
    else
        return gs_diag_set(d, GS_EIO, "http server: '%s' is not an IP address", host);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return gs_diag_set(d, GS_EIO, "http server: socket: %s", strerror(errno));
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, 511) != 0) {
        int e = errno;
        close(fd);
        return gs_diag_set(d, GS_EIO, "http server: %s:%d: %s", host, port, strerror(e));
    }
    int rc = listen_on(s, fd, d);
    return rc ? GS_EIO : 0;
}

int gs_http_server_port(const gs_http_server *s)
{
    if (!s || !s->listener_open)
        return 0;
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    if (uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &sl) != 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

void gs__http_server_check(gs_http_server *s)
{
    if (s->freeing) {
        if (s->n_conns == 0 && s->handles == 0) {
            free(s->server_name);
            free(s);
        }
        return;
    }
    if (s->drain_cb && s->draining && s->n_conns == 0 && !s->listener_open) {
        void (*cb)(void *) = s->drain_cb;
        s->drain_cb = NULL;
        cb(s->drain_user);
    }
}

static void on_server_handle_close(uv_handle_t *h)
{
    gs_http_server *s = h->data;
    if (h == (uv_handle_t *)&s->listener)
        s->listener_open = 0;
    s->handles--;
    gs__http_server_check(s);
}

static void on_tick(uv_timer_t *t)
{
    gs__http_server_check(t->data);
}

void gs__http_server_kick(gs_http_server *s)
{
    if (s->draining && !s->freeing)
        uv_timer_start(&s->tick, on_tick, 0, 0);
}

static void close_listener(gs_http_server *s)
{
    if (s->listener_open && !uv_is_closing((uv_handle_t *)&s->listener))
        uv_close((uv_handle_t *)&s->listener, on_server_handle_close);
}

void gs_http_server_drain(gs_http_server *s, void (*cb)(void *user), void *user)
{
    if (!s || s->freeing)
        return;
    s->draining = 1;
    s->drain_cb = cb;
    s->drain_user = user;
    close_listener(s);
    gs_queue *q, *next;
    for (q = s->conns.next; q != &s->conns; q = next) {
        next = q->next;
        gs_http_conn *c = gs_queue_data(q, gs_http_conn, link);
        if (c->phase == GS_PH_WAIT)
            gs__http_conn_close(c);
    }
    /* The callback never runs inside this call, even with nothing open. */
    uv_timer_start(&s->tick, on_tick, 0, 0);
}

void gs_http_server_set_body_limits(gs_http_server *s, size_t max_body_bytes,
                                    size_t max_body_memory)
{
    if (max_body_bytes)
        s->p.max_body_bytes = max_body_bytes;
    if (max_body_memory)
        s->p.max_body_memory = max_body_memory;
}

void gs_http_server_free(gs_http_server *s)
{
    if (!s || s->freeing)
        return;
    s->freeing = 1;
    s->drain_cb = NULL;
    close_listener(s);
    uv_close((uv_handle_t *)&s->tick, on_server_handle_close);
    /* Each close moves the connection to s->closing, whatever an abort
     * callback does meanwhile. */
    while (!gs_queue_empty(&s->conns))
        gs__http_conn_close(gs_queue_data(gs_queue_head(&s->conns), gs_http_conn, link));
}

void gs_http_server_stats(const gs_http_server *s, gs_http_stats *out)
{
    if (!out)
        return;
    if (!s) {
        memset(out, 0, sizeof *out);
        return;
    }
    *out = s->st;
    out->body_bytes = s->body_mem;
}
