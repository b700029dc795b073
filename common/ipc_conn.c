/* ipc_conn.c - framed connections over nng byte streams (ipc_conn.h).
 *
 * Owns the nng stream of each connection, its read loop, its send queue
 * and its lifetime; knows nothing of what the frames mean (ipc_msg.c
 * checks headers, the gateway and the worker decode bodies).
 *
 * Each connection has two nng aios, one for reading and one for writing,
 * each with at most one operation in flight:
 *   - rx: header (16 bytes, in as many reads as the stream takes), then
 *     the body into an 8-aligned malloc buffer, then on_frame; a body over
 *     the limit is read into a scratch buffer and thrown away.
 *   - tx: a FIFO of owned frames under the mutex; the head is written,
 *     resubmitting the rest after a partial write, then the next one.
 *
 * Closing: the first of gs_ipc_conn_close (err 0), a stream error (GS_EIO)
 * or a bad header (GS_EPROTO) sets `closing` under the mutex, drops the
 * queued frames and closes the nng stream (still under the mutex), which
 * aborts the aios in flight.
 * A new read or write is only ever submitted under the mutex after
 * checking `closing`, so nothing is submitted to a closed stream (nng
 * would leave it pending for ever). When the rx side has stopped and no
 * write is in flight, the callback that saw it last calls on_close, then
 * drops the connection's own reference. nng never runs an aio callback
 * inline, so close is safe from any thread and from inside callbacks.
 *
 * Freeing: the last unref may happen inside one of our aio callbacks, where
 * nng_aio_free would wait for itself; the aios are handed to nng's reaper
 * (nng_aio_reap) instead, and nng_stream_free reaps internally too.
 *
 * Threading: the mutex guards the queue, the reference count and the
 * closing state; rx state is touched only by the rx callback (one at a
 * time). Callbacks run without the mutex held. */
#include "common/ipc_conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <nng/nng.h>

#include "common/log.h"

#define SKIP_CHUNK (64u << 10)
#define RBUF_SIZE (64u << 10)

typedef struct frame {
    struct frame *next;
    uint8_t *data; /* owned */
    size_t len;
} frame;

enum { RX_HDR, RX_BODY, RX_SKIP };

struct gs_ipc_conn {
    pthread_mutex_t mu;
    nng_stream *s;
    nng_aio *rxa, *txa;
    gs_ipc_conn_cbs cbs;
    uint32_t max_body;
    char peer[64];

    /* rx: only the rx callback touches these */
    int rx_phase;
    uint8_t hdr[GS_IPC_HEADER_SIZE];
    gs_ipc_header h;
    uint8_t *body; /* [h.body_len], owned while reading */
    size_t rx_off; /* bytes of the header or body read so far */
    size_t skip_left;
    uint8_t *skip; /* [SKIP_CHUNK] scratch, allocated on first use */
    /* Reads go into rbuf (many small frames per read) except the rest of a
     * body that is larger than it, which is read in place. */
    uint8_t *rbuf;    /* [RBUF_SIZE], allocated on first use */
    int rx_into_rbuf; /* the read in flight targets rbuf */

    /* under mu */
    int refs;
    frame *q_head, *q_tail; /* queued, not yet started */
    frame *tx_cur;          /* being written (owned) */
    size_t tx_off;
    size_t pending; /* bytes queued or in flight and not yet written */
    int closing, close_err;
    int rx_done;  /* the rx side has stopped for good */
    int finished; /* on_close has been scheduled */
    void *data;
};

struct gs_ipc_listener {
    pthread_mutex_t mu;
    nng_stream_listener *ls;
    nng_aio *aio;
    gs_ipc_conn_cbs cbs;
    int closed;
    int in_cb;           /* the accept callback is running */
    pthread_t cb_thread; /* ... on this thread */
    int free_in_cb;      /* closed from inside that callback: it frees */
};

static const uint64_t empty_body[1]; /* what on_frame gets for len 0 */

static int nng_to_gs(int rv)
{
    switch (rv) {
    case 0:
        return 0;
    case NNG_EINVAL:
    case NNG_EADDRINVAL:
    case NNG_ENOTSUP:
        return GS_EINVAL;
    case NNG_ENOMEM:
        return GS_ENOMEM;
    case NNG_ETIMEDOUT:
        return GS_ETIMEDOUT;
    default:
        return GS_EIO;
    }
}

/* ---- lifetime --------------------------------------------------------- */

static void free_queue(frame *f)
{
    while (f) {
        frame *n = f->next;
        free(f->data);
        free(f);
        f = n;
    }
}

static void conn_destroy(gs_ipc_conn *c)
{
    free_queue(c->q_head);
    if (c->tx_cur)
        free_queue(c->tx_cur);
    free(c->body);
    free(c->skip);
    free(c->rbuf);
    /* Both may run inside one of c's own aio callbacks: reap, not free. */
    if (c->s)
        nng_stream_free(c->s);
    if (c->rxa)
        nng_aio_reap(c->rxa);
    if (c->txa)
        nng_aio_reap(c->txa);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

void gs_ipc_conn_ref(gs_ipc_conn *c)
{
    pthread_mutex_lock(&c->mu);
    c->refs++;
    pthread_mutex_unlock(&c->mu);
}

void gs_ipc_conn_unref(gs_ipc_conn *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    int last = --c->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if (last)
        conn_destroy(c);
}

/* Under mu: on_close is due once closing, the rx side has stopped and no
 * write is in flight. Returns 1 (once) when the caller must finish. */
static int due_locked(gs_ipc_conn *c)
{
    if (c->closing && c->rx_done && !c->tx_cur && !c->finished) {
        c->finished = 1;
        return 1;
    }
    return 0;
}

/* Calls on_close and drops the connection's own reference; no lock held. */
static void finish(gs_ipc_conn *c)
{
    if (c->cbs.on_close)
        c->cbs.on_close(c, c->close_err, c->cbs.user);
    gs_ipc_conn_unref(c);
}

/* Under mu: the first cause of closing sets err, drops the queue and
 * closes the nng stream. Closing under the mutex orders it with every
 * submission (also under the mutex), and c cannot be freed meanwhile:
 * nng only aborts the aios here, their callbacks run later on its own
 * threads. */
static void shut_locked(gs_ipc_conn *c, int err)
{
    if (c->closing)
        return;
    c->closing = 1;
    c->close_err = err;
    for (frame *f = c->q_head; f; f = f->next)
        c->pending -= f->len;
    free_queue(c->q_head);
    c->q_head = c->q_tail = NULL;
    nng_stream_close(c->s);
}

void gs_ipc_conn_close(gs_ipc_conn *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    shut_locked(c, 0); /* aborts the aios in flight; never calls back inline */
    pthread_mutex_unlock(&c->mu);
}

/* ---- receiving -------------------------------------------------------- */

/* The rx side stops with err (kept only if it is the first cause). */
static void rx_stop(gs_ipc_conn *c, int err)
{
    pthread_mutex_lock(&c->mu);
    shut_locked(c, err);
    c->rx_done = 1;
    int due = due_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (due)
        finish(c);
}

/* Submits the next read for the current phase unless closing: into rbuf,
 * or straight into a body whose rest is at least as large as rbuf. */
static void rx_next(gs_ipc_conn *c)
{
    nng_iov iov;
    if (c->rx_phase == RX_BODY && c->h.body_len - c->rx_off >= RBUF_SIZE) {
        iov.iov_buf = c->body + c->rx_off;
        iov.iov_len = c->h.body_len - c->rx_off;
        c->rx_into_rbuf = 0;
    } else if (c->rbuf || (c->rbuf = malloc(RBUF_SIZE))) {
        iov.iov_buf = c->rbuf;
        iov.iov_len = RBUF_SIZE;
        c->rx_into_rbuf = 1;
    } else { /* no memory for the buffer: read what the phase needs */
        c->rx_into_rbuf = 0;
        if (c->rx_phase == RX_HDR) {
            iov.iov_buf = c->hdr + c->rx_off;
            iov.iov_len = GS_IPC_HEADER_SIZE - c->rx_off;
        } else if (c->rx_phase == RX_BODY) {
            iov.iov_buf = c->body + c->rx_off;
            iov.iov_len = c->h.body_len - c->rx_off;
        } else {
            iov.iov_buf = c->skip;
            iov.iov_len = c->skip_left < SKIP_CHUNK ? c->skip_left : SKIP_CHUNK;
        }
    }
    pthread_mutex_lock(&c->mu);
    if (c->closing) {
        pthread_mutex_unlock(&c->mu);
        rx_stop(c, 0);
        return;
    }
    nng_aio_set_iov(c->rxa, 1, &iov);
    nng_stream_recv(c->s, c->rxa);
    pthread_mutex_unlock(&c->mu);
}

/* A whole header is in c->hdr: sets up the body phase. 0, or a GS_E* code
 * that stops the connection. */
static int rx_header(gs_ipc_conn *c)
{
    gs_diag d;
    gs_diag_clear(&d);
    int rc = gs_ipc_decode_header(c->hdr, c->max_body, &c->h, &d);
    c->rx_off = 0;
    if (rc == GS_ETOOBIG) {
        gs_log_warn("ipc %s: skipping a frame: %s", c->peer, d.msg);
        if (!c->skip && !(c->skip = malloc(SKIP_CHUNK))) {
            gs_log_error("ipc %s: no memory to skip a frame; closing", c->peer);
            return GS_EIO;
        }
        c->skip_left = c->h.body_len;
        c->rx_phase = RX_SKIP;
        return 0;
    }
    if (rc) {
        gs_log_warn("ipc %s: closing: %s", c->peer, d.msg);
        return GS_EPROTO;
    }
    c->rx_phase = RX_BODY;
    if (c->h.body_len == 0)
        return 0;
    /* malloc's alignment (max_align_t) is at least 8 on every host we build. */
    if (!(c->body = malloc(c->h.body_len))) {
        gs_log_error("ipc %s: no memory for a %s body of %u bytes; closing", c->peer,
                     gs_ipc_type_name(c->h.type), c->h.body_len);
        return GS_EIO;
    }
    return 0;
}

/* Delivers the frame in c->h / c->body unless closing; frees the body. */
static void rx_deliver(gs_ipc_conn *c)
{
    uint8_t *body = c->body;
    c->body = NULL;
    c->rx_phase = RX_HDR;
    c->rx_off = 0;
    pthread_mutex_lock(&c->mu);
    int closing = c->closing;
    pthread_mutex_unlock(&c->mu);
    if (!closing && c->cbs.on_frame)
        c->cbs.on_frame(c, &c->h, body ? body : (const uint8_t *)empty_body, c->cbs.user);
    free(body);
}

/* Takes n bytes (src: from rbuf, or NULL when they were read in place)
 * into the current phase; completes headers and frames. 0 or a GS_E*
 * code that stops the connection. *used: bytes taken. */
static int rx_feed(gs_ipc_conn *c, const uint8_t *src, size_t n, size_t *used)
{
    size_t take = 0;
    int rc = 0;
    switch (c->rx_phase) {
    case RX_HDR:
        take = GS_IPC_HEADER_SIZE - c->rx_off < n ? GS_IPC_HEADER_SIZE - c->rx_off : n;
        if (src)
            memcpy(c->hdr + c->rx_off, src, take);
        c->rx_off += take;
        if (c->rx_off == GS_IPC_HEADER_SIZE) {
            rc = rx_header(c);
            if (rc == 0 && c->rx_phase == RX_BODY && c->h.body_len == 0)
                rx_deliver(c);
        }
        break;
    case RX_BODY:
        take = c->h.body_len - c->rx_off < n ? c->h.body_len - c->rx_off : n;
        if (src)
            memcpy(c->body + c->rx_off, src, take);
        c->rx_off += take;
        if (c->rx_off == c->h.body_len)
            rx_deliver(c);
        break;
    default:
        take = c->skip_left < n ? c->skip_left : n;
        c->skip_left -= take;
        if (c->skip_left == 0) {
            c->rx_phase = RX_HDR;
            c->rx_off = 0;
        }
        break;
    }
    *used = take;
    return rc;
}

static void rx_cb(void *arg)
{
    gs_ipc_conn *c = arg;
    int rv = nng_aio_result(c->rxa);
    if (rv != 0) {
        rx_stop(c, GS_EIO); /* kept only if we were not closing already */
        return;
    }
    size_t n = nng_aio_count(c->rxa), used;
    int rc = 0;
    if (!c->rx_into_rbuf) {
        rc = rx_feed(c, NULL, n, &used);
    } else {
        /* Every frame the read brought, in order. */
        for (size_t off = 0; off < n && !rc; off += used) {
            pthread_mutex_lock(&c->mu);
            int closing = c->closing;
            pthread_mutex_unlock(&c->mu);
            if (closing)
                break;
            rc = rx_feed(c, c->rbuf + off, n - off, &used);
        }
    }
    if (rc) {
        rx_stop(c, rc);
        return;
    }
    rx_next(c);
}

/* ---- sending ---------------------------------------------------------- */

/* Under mu: writes the rest of tx_cur. */
static void tx_submit_locked(gs_ipc_conn *c)
{
    nng_iov iov = {.iov_buf = c->tx_cur->data + c->tx_off, .iov_len = c->tx_cur->len - c->tx_off};
    nng_aio_set_iov(c->txa, 1, &iov);
    nng_stream_send(c->s, c->txa);
}

/* Small frames queued together (a step's events for many jobs) go out in
 * one write: they are copied into one buffer of at most BATCH_BYTES, which
 * saves a system call and a completion per frame. */
#define BATCH_SMALL (16u << 10)
#define BATCH_BYTES (256u << 10)

/* Under mu: pops the queue's head, or a batch of its small frames as one
 * frame. NULL when the queue is empty. */
static frame *tx_take_locked(gs_ipc_conn *c)
{
    frame *f = c->q_head;
    if (!f)
        return NULL;
    size_t total = 0, n = 0;
    for (frame *g = f; g && g->len <= BATCH_SMALL && total + g->len <= BATCH_BYTES; g = g->next) {
        total += g->len;
        n++;
    }
    uint8_t *buf = n > 1 ? malloc(total) : NULL;
    if (!buf) { /* one frame (or no memory for a batch: send them one by one) */
        c->q_head = f->next;
        if (!c->q_head)
            c->q_tail = NULL;
        f->next = NULL;
        return f;
    }
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        frame *g = c->q_head;
        c->q_head = g->next;
        memcpy(buf + off, g->data, g->len);
        off += g->len;
        free(g->data);
        if (i)
            free(g);
    }
    if (!c->q_head)
        c->q_tail = NULL;
    f->next = NULL;
    f->data = buf;
    f->len = total;
    return f;
}

/* Under mu: starts the next queued frame (or batch), if any. */
static void tx_start_locked(gs_ipc_conn *c)
{
    frame *f = tx_take_locked(c);
    if (!f)
        return;
    c->tx_cur = f;
    c->tx_off = 0;
    tx_submit_locked(c);
}

static void tx_cb(void *arg)
{
    gs_ipc_conn *c = arg;
    int rv = nng_aio_result(c->txa);
    size_t n = nng_aio_count(c->txa);
    int due = 0;
    pthread_mutex_lock(&c->mu);
    frame *f = c->tx_cur;
    size_t left = f->len - c->tx_off;
    if (n > left)
        n = left;
    c->tx_off += n;
    c->pending -= n;
    if (rv != 0 || c->closing) {
        shut_locked(c, GS_EIO);
        c->pending -= f->len - c->tx_off;
        c->tx_cur = NULL;
        free_queue(f);
        due = due_locked(c);
    } else if (c->tx_off < f->len) {
        tx_submit_locked(c); /* a partial write: the rest */
    } else {
        c->tx_cur = NULL;
        free_queue(f);
        tx_start_locked(c);
    }
    pthread_mutex_unlock(&c->mu);
    if (due)
        finish(c);
}

int gs_ipc_conn_send(gs_ipc_conn *c, uint8_t *frame_bytes, size_t len)
{
    frame *f = malloc(sizeof *f);
    if (!f) {
        free(frame_bytes);
        return GS_ENOMEM;
    }
    f->next = NULL;
    f->data = frame_bytes;
    f->len = len;
    pthread_mutex_lock(&c->mu);
    if (c->closing) {
        pthread_mutex_unlock(&c->mu);
        free(frame_bytes);
        free(f);
        return GS_EIO;
    }
    if (c->q_tail)
        c->q_tail->next = f;
    else
        c->q_head = f;
    c->q_tail = f;
    c->pending += len;
    if (!c->tx_cur)
        tx_start_locked(c);
    pthread_mutex_unlock(&c->mu);
    return 0;
}

int gs_ipc_conn_send_msg(gs_ipc_conn *c, const gs_ipc_msg *m, gs_diag *d)
{
    uint8_t *p;
    size_t len;
    int rc = gs_ipc_encode(m, &p, &len, d);
    if (rc)
        return rc;
    rc = gs_ipc_conn_send(c, p, len);
    if (rc)
        gs_diag_set(d, rc, "ipc %s: %s frame not sent: %s", c->peer, gs_ipc_type_name(m->type),
                    gs_strerror(rc));
    return rc;
}

size_t gs_ipc_conn_pending(gs_ipc_conn *c)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->pending;
    pthread_mutex_unlock(&c->mu);
    return n;
}

void gs_ipc_conn_set_data(gs_ipc_conn *c, void *data)
{
    pthread_mutex_lock(&c->mu);
    c->data = data;
    pthread_mutex_unlock(&c->mu);
}

void *gs_ipc_conn_get_data(gs_ipc_conn *c)
{
    pthread_mutex_lock(&c->mu);
    void *p = c->data;
    pthread_mutex_unlock(&c->mu);
    return p;
}

const char *gs_ipc_conn_peer(gs_ipc_conn *c)
{
    return c->peer;
}

/* ---- creation --------------------------------------------------------- */

static void peer_name(nng_stream *s, char *out, size_t n)
{
    nng_sockaddr sa;
    char ip[INET6_ADDRSTRLEN];
    snprintf(out, n, "ipc");
    if (nng_stream_get_addr(s, NNG_OPT_REMADDR, &sa) != 0)
        return;
    if (sa.s_family == NNG_AF_INET) {
        struct in_addr a = {.s_addr = sa.s_in.sa_addr};
        if (inet_ntop(AF_INET, &a, ip, sizeof ip))
            snprintf(out, n, "%s:%u", ip, (unsigned)ntohs(sa.s_in.sa_port));
    } else if (sa.s_family == NNG_AF_INET6) {
        if (inet_ntop(AF_INET6, sa.s_in6.sa_addr, ip, sizeof ip))
            snprintf(out, n, "[%s]:%u", ip, (unsigned)ntohs(sa.s_in6.sa_port));
    }
}

/* A connection over s (taken, also on failure) with two references: its
 * own and the caller's. Reading starts with conn_start. */
static int conn_new(nng_stream *s, const gs_ipc_conn_cbs *cbs, gs_ipc_conn **out)
{
    gs_ipc_conn *c = calloc(1, sizeof *c);
    if (!c) {
        nng_stream_free(s);
        return GS_ENOMEM;
    }
    c->s = s;
    c->cbs = *cbs;
    c->max_body =
        cbs->max_body && cbs->max_body < GS_IPC_MAX_BODY ? cbs->max_body : GS_IPC_MAX_BODY;
    c->refs = 2;
    pthread_mutex_init(&c->mu, NULL);
    peer_name(s, c->peer, sizeof c->peer);
    if (nng_aio_alloc(&c->rxa, rx_cb, c) != 0 || nng_aio_alloc(&c->txa, tx_cb, c) != 0) {
        conn_destroy(c);
        return GS_ENOMEM;
    }
    *out = c;
    return 0;
}

static void conn_start(gs_ipc_conn *c)
{
    c->rx_phase = RX_HDR;
    c->rx_off = 0;
    rx_next(c);
}

/* Refuses an ipc:// path that exists and is not a socket, or one somebody
 * listens on; removes a socket file nobody listens on. 0 or GS_EIO. */
static int ipc_prepare(const char *path, gs_diag *d)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return 0;
    if (!S_ISSOCK(st.st_mode))
        return gs_diag_set(d, GS_EIO, "ipc listen: %s exists and is not a socket", path);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return gs_diag_set(d, GS_EIO, "ipc listen: path too long: %s", path);
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return gs_diag_set(d, GS_EIO, "ipc listen: socket: %s", strerror(errno));
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    int err = errno;
    close(fd);
    if (rc == 0)
        return gs_diag_set(d, GS_EIO, "ipc listen: %s: address in use (a listener answers)", path);
    if (err == ECONNREFUSED && unlink(path) == 0) {
        gs_log_info("ipc listen: removed stale socket %s", path);
        return 0;
    }
    return gs_diag_set(d, GS_EIO, "ipc listen: %s: cannot reuse: %s", path, strerror(err));
}

/* ---- listener --------------------------------------------------------- */

static void listener_destroy(gs_ipc_listener *l)
{
    if (l->ls)
        nng_stream_listener_free(l->ls);
    if (l->aio)
        nng_aio_reap(l->aio);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

static void accept_cb(void *arg)
{
    gs_ipc_listener *l = arg;
    int rv = nng_aio_result(l->aio);
    pthread_mutex_lock(&l->mu);
    l->in_cb = 1;
    l->cb_thread = pthread_self();
    int closed = l->closed;
    pthread_mutex_unlock(&l->mu);

    if (rv == 0) {
        nng_stream *s = nng_aio_get_output(l->aio, 0);
        gs_ipc_conn *c;
        if (closed) {
            nng_stream_free(s);
        } else if (conn_new(s, &l->cbs, &c) != 0) {
            gs_log_error("ipc: no memory for an accepted connection; dropped it");
        } else {
            l->cbs.on_open(c, l->cbs.user);
            conn_start(c);
        }
    } else if (rv != NNG_ECLOSED && !closed) {
        gs_log_warn("ipc: accept failed: %s", nng_strerror(rv));
    }

    pthread_mutex_lock(&l->mu);
    l->in_cb = 0;
    closed = l->closed;
    int free_now = l->free_in_cb;
    if (!closed && rv != NNG_ECLOSED)
        nng_stream_listener_accept(l->ls, l->aio);
    pthread_mutex_unlock(&l->mu);
    if (free_now)
        listener_destroy(l);
}

int gs_ipc_listen(const char *url, const gs_ipc_conn_cbs *cbs, gs_ipc_listener **out, gs_diag *d)
{
    if (!url || !cbs || !cbs->on_open || !out)
        return gs_diag_set(d, GS_EINVAL, "ipc listen: NULL url, callbacks or on_open");
    if (strncmp(url, "ipc://", 6) == 0) {
        int rc = ipc_prepare(url + 6, d);
        if (rc)
            return rc;
    }
    gs_ipc_listener *l = calloc(1, sizeof *l);
    if (!l)
        return gs_diag_set(d, GS_ENOMEM, "ipc listen: no memory");
    pthread_mutex_init(&l->mu, NULL);
    l->cbs = *cbs;
    int rv = nng_stream_listener_alloc(&l->ls, url);
    if (rv) {
        l->ls = NULL;
        listener_destroy(l);
        return gs_diag_set(d, nng_to_gs(rv) == GS_ENOMEM ? GS_ENOMEM : GS_EINVAL,
                           "ipc listen: bad url %s: %s", url, nng_strerror(rv));
    }
    if ((rv = nng_aio_alloc(&l->aio, accept_cb, l)) != 0) {
        l->aio = NULL;
        listener_destroy(l);
        return gs_diag_set(d, GS_ENOMEM, "ipc listen: no memory");
    }
    if ((rv = nng_stream_listener_listen(l->ls)) != 0) {
        listener_destroy(l);
        int code = rv == NNG_EADDRINVAL || rv == NNG_EINVAL ? GS_EINVAL : GS_EIO;
        return gs_diag_set(d, code, "ipc listen: %s: %s", url, nng_strerror(rv));
    }
    nng_stream_listener_accept(l->ls, l->aio);
    *out = l;
    return 0;
}

void gs_ipc_listener_close(gs_ipc_listener *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    l->closed = 1;
    int self = l->in_cb && pthread_equal(l->cb_thread, pthread_self());
    if (self)
        l->free_in_cb = 1; /* inside on_open: the accept callback frees */
    pthread_mutex_unlock(&l->mu);
    nng_stream_listener_close(l->ls);
    if (self)
        return;
    nng_aio_stop(l->aio); /* waits for a running accept callback */
    listener_destroy(l);
}

int gs_ipc_listener_port(const gs_ipc_listener *l)
{
    int port = 0;
    if (!l || nng_stream_listener_get_int(l->ls, NNG_OPT_TCP_BOUND_PORT, &port) != 0)
        return 0;
    return port;
}

/* ---- dialer ----------------------------------------------------------- */

int gs_ipc_dial(const char *url, const gs_ipc_conn_cbs *cbs, int timeout_ms, gs_ipc_conn **out,
                gs_diag *d)
{
    if (!url || !cbs || !out)
        return gs_diag_set(d, GS_EINVAL, "ipc dial: NULL url or callbacks");
    nng_stream_dialer *dl;
    nng_aio *aio;
    int rv = nng_stream_dialer_alloc(&dl, url);
    if (rv)
        return gs_diag_set(d, nng_to_gs(rv) == GS_ENOMEM ? GS_ENOMEM : GS_EINVAL,
                           "ipc dial: bad url %s: %s", url, nng_strerror(rv));
    if ((rv = nng_aio_alloc(&aio, NULL, NULL)) != 0) {
        nng_stream_dialer_free(dl);
        return gs_diag_set(d, GS_ENOMEM, "ipc dial: no memory");
    }
    nng_aio_set_timeout(aio, timeout_ms > 0 ? timeout_ms : NNG_DURATION_DEFAULT);
    nng_stream_dialer_dial(dl, aio);
    nng_aio_wait(aio);
    rv = nng_aio_result(aio);
    nng_stream *s = rv == 0 ? nng_aio_get_output(aio, 0) : NULL;
    nng_aio_free(aio);
    nng_stream_dialer_free(dl); /* the stream keeps what it needs of it */
    if (rv) {
        int code = nng_to_gs(rv);
        if (code != GS_ETIMEDOUT && code != GS_ENOMEM && code != GS_EINVAL)
            code = GS_EIO;
        return gs_diag_set(d, code, "ipc dial: %s: %s", url, nng_strerror(rv));
    }
    gs_ipc_conn *c;
    int rc = conn_new(s, cbs, &c);
    if (rc)
        return gs_diag_set(d, rc, "ipc dial: %s: no memory", url);
    conn_start(c);
    *out = c;
    return 0;
}
