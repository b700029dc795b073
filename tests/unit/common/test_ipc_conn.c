/* test_ipc_conn.c - framed connections (common/ipc_conn.c) over real nng
 * streams: ipc:// in a temporary folder and tcp://127.0.0.1:0. Order, big
 * frames, concurrent senders, closes from both ends and from inside
 * on_frame, skipped oversized frames, garbage headers, stale sockets. */
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>

#include "common/ipc_conn.h"
#include "test.h"
#include "thread_probe.h"

#define NT 4 /* sender threads / order tracks */

/* What one end saw. Frames carry [u32 track][u32 seq][payload]. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    gs_ipc_conn *conn;     /* from the first on_open (one reference) */
    gs_ipc_conn *extra[4]; /* from later ones */
    int n_extra;
    gs_ipc_listener *listener;
    int n_open, n_frames, n_close, close_err, after_close;
    int order_bad;
    uint32_t next[NT];
    uint32_t last_track, last_len;
    int big_ok;
    int echo;           /* send every frame back */
    int close_in_frame; /* gs_ipc_conn_close from inside on_frame */
    int close_listener_in_open;
    uint8_t last_type;
    uint32_t types_seen; /* bit per type */
    uint32_t empty_len;  /* frames with an empty body */
    char hello_name[64];
} side;

static void side_init(side *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->close_err = 1;
}

static void side_fini(side *s)
{
    for (int i = 0; i < s->n_extra; i++)
        gs_ipc_conn_unref(s->extra[i]);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
}

/* Waits until *field >= target (10 s at most); returns 1 when reached. */
static int wait_for(side *s, const int *field, int target)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 10;
    pthread_mutex_lock(&s->mu);
    while (*field < target)
        if (pthread_cond_timedwait(&s->cv, &s->mu, &dl) != 0)
            break;
    int ok = *field >= target;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

/* Whether c's send queue drains within 10 s. Its count drops when nng's
 * completion callback runs, which may come after the peer has received
 * (and answered) the last frame: so it is waited for, not read once. */
static int wait_drained(gs_ipc_conn *c)
{
    for (int i = 0; i < 10000 && gs_ipc_conn_pending(c) != 0; i++)
        usleep(1000);
    return gs_ipc_conn_pending(c) == 0;
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint8_t pat(size_t i)
{
    return (uint8_t)(i * 31 + 7);
}

static void on_open(gs_ipc_conn *c, void *user)
{
    side *s = user;
    pthread_mutex_lock(&s->mu);
    if (!s->conn)
        s->conn = c;
    else if (s->n_extra < 4)
        s->extra[s->n_extra++] = c;
    else
        gs_ipc_conn_unref(c);
    s->n_open++;
    int close_l = s->close_listener_in_open;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (close_l)
        gs_ipc_listener_close(s->listener);
}

static void on_frame(gs_ipc_conn *c, const gs_ipc_header *h, const uint8_t *body, void *user)
{
    side *s = user;
    int big_ok = -1;
    if (h->body_len > (1u << 20)) {
        big_ok = 1;
        for (size_t i = 8; i < h->body_len; i++)
            if (body[i] != pat(i)) {
                big_ok = 0;
                break;
            }
    }
    if (((uintptr_t)body & 7) != 0)
        big_ok = 0;
    pthread_mutex_lock(&s->mu);
    if (s->n_close)
        s->after_close++;
    s->last_type = h->type;
    s->types_seen |= 1u << (h->type & 31);
    s->empty_len += h->body_len == 0;
    s->last_len = h->body_len;
    if (h->type == GS_IPC_HELLO) {
        gs_ipc_msg m;
        gs_diag d;
        if (gs_ipc_decode(h->type, body, h->body_len, &m, &d) == 0)
            snprintf(s->hello_name, sizeof s->hello_name, "%.*s", (int)m.u.hello.name.len,
                     m.u.hello.name.p);
    } else if (h->body_len >= 8) {
        uint32_t t = rd32(body), seq = rd32(body + 4);
        s->last_track = t;
        if (t >= NT || seq != s->next[t])
            s->order_bad++;
        else
            s->next[t]++;
    }
    if (big_ok >= 0)
        s->big_ok = big_ok;
    s->n_frames++;
    int echo = s->echo, close_now = s->close_in_frame;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (echo && h->body_len < (1u << 20)) {
        uint8_t *f;
        size_t len;
        if (gs_ipc_frame(h->type, body, h->body_len, &f, &len) == 0)
            gs_ipc_conn_send(c, f, len);
    }
    if (close_now)
        gs_ipc_conn_close(c);
}

static void on_close(gs_ipc_conn *c, int err, void *user)
{
    side *s = user;
    pthread_mutex_lock(&s->mu);
    s->n_close++;
    s->close_err = err;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static gs_ipc_conn_cbs cbs_for(side *s)
{
    gs_ipc_conn_cbs cb = {s, on_open, on_frame, on_close, 0};
    return cb;
}

/* Sends [track][seq][payload of extra bytes]. */
static int send_seq(gs_ipc_conn *c, uint32_t track, uint32_t seq, size_t extra)
{
    size_t n = 8 + extra;
    uint8_t *b = malloc(n);
    if (!b)
        return GS_ENOMEM;
    for (int i = 0; i < 4; i++) {
        b[i] = (uint8_t)(track >> (8 * i));
        b[4 + i] = (uint8_t)(seq >> (8 * i));
    }
    for (size_t i = 8; i < n; i++)
        b[i] = pat(i);
    uint8_t *f;
    size_t len;
    int rc = gs_ipc_frame(GS_IPC_EVENT, b, n, &f, &len);
    free(b);
    return rc ? rc : gs_ipc_conn_send(c, f, len);
}

static char tmpdir[256];

static const char *ipc_url(const char *name)
{
    static char url[512];
    snprintf(url, sizeof url, "ipc://%s/%s", tmpdir, name);
    return url;
}

/* Listens on url, dials it; srv/cli filled; returns the client conn. */
static gs_ipc_conn *pair(const char *url, side *srv, side *cli, gs_ipc_listener **l)
{
    gs_diag d;
    gs_ipc_conn_cbs scb = cbs_for(srv), ccb = cbs_for(cli);
    if (gs_ipc_listen(url, &scb, l, &d) != 0) {
        fprintf(stderr, "  listen %s: %s\n", url, d.msg);
        return NULL;
    }
    srv->listener = *l;
    char dial[512];
    snprintf(dial, sizeof dial, "%s", url);
    int port = gs_ipc_listener_port(*l);
    if (strncmp(url, "tcp://", 6) == 0)
        snprintf(dial, sizeof dial, "tcp://127.0.0.1:%d", port);
    gs_ipc_conn *c = NULL;
    if (gs_ipc_dial(dial, &ccb, 2000, &c, &d) != 0) {
        fprintf(stderr, "  dial %s: %s\n", dial, d.msg);
        return NULL;
    }
    if (!wait_for(srv, &srv->n_open, 1)) {
        gs_ipc_conn_close(c);
        gs_ipc_conn_unref(c);
        return NULL;
    }
    return c;
}

static void test_ipc_order_echo(void)
{
    side srv, cli;
    side_init(&srv);
    side_init(&cli);
    srv.echo = 1;
    gs_ipc_listener *l = NULL;
    gs_ipc_conn *c = pair(ipc_url("a.sock"), &srv, &cli, &l);
    GS_ASSERT(c != NULL);
    GS_ASSERT_STREQ(gs_ipc_conn_peer(srv.conn), "ipc");
    GS_ASSERT_EQ(gs_ipc_listener_port(l), 0);
    for (uint32_t i = 0; i < 1000; i++)
        GS_ASSERT_OK(send_seq(c, 0, i, i % 97));
    GS_ASSERT(wait_for(&srv, &srv.n_frames, 1000));
    GS_ASSERT(wait_for(&cli, &cli.n_frames, 1000));
    GS_ASSERT_EQ(srv.order_bad, 0);
    GS_ASSERT_EQ(cli.order_bad, 0);
    GS_ASSERT_EQ(srv.next[0], 1000);
    GS_ASSERT_EQ(cli.next[0], 1000);
    GS_ASSERT(wait_drained(c));
    /* a typed message, and a body-less one */
    gs_ipc_msg m = {.type = GS_IPC_HELLO};
    m.u.hello =
        (gs_ipc_hello){GS_IPC_ROLE_GATEWAY, 7, {"gateway-1", 9}, {"", 0}, 0, 0, 0, 0, {"", 0}};
    gs_diag d;
    GS_ASSERT_OK(gs_ipc_conn_send_msg(c, &m, &d));
    GS_ASSERT(wait_for(&srv, &srv.n_frames, 1001));
    GS_ASSERT_STREQ(srv.hello_name, "gateway-1");
    m.type = GS_IPC_DRAIN;
    GS_ASSERT_OK(gs_ipc_conn_send_msg(srv.conn, &m, &d));
    GS_ASSERT(wait_for(&cli, &cli.n_frames, 1002)); /* the hello's echo + the drain */
    GS_ASSERT(cli.types_seen & (1u << GS_IPC_DRAIN));
    GS_ASSERT(cli.types_seen & (1u << GS_IPC_HELLO));
    GS_ASSERT_EQ(cli.empty_len, 1);
    /* the client closes: it sees 0, the server GS_EIO; each exactly once */
    gs_ipc_conn_close(c);
    gs_ipc_conn_close(c); /* idempotent */
    GS_ASSERT(wait_for(&cli, &cli.n_close, 1));
    GS_ASSERT(wait_for(&srv, &srv.n_close, 1));
    GS_ASSERT_EQ(cli.close_err, 0);
    GS_ASSERT_EQ(srv.close_err, GS_EIO);
    GS_ASSERT_EQ(gs_ipc_conn_send(c, malloc(16), 16), GS_EIO);
    GS_ASSERT_EQ(send_seq(srv.conn, 0, 0, 0), GS_EIO);
    usleep(20000);
    GS_ASSERT_EQ(cli.n_close, 1);
    GS_ASSERT_EQ(srv.n_close, 1);
    GS_ASSERT_EQ(srv.after_close + cli.after_close, 0);
    gs_ipc_conn_unref(c);
    gs_ipc_conn_unref(srv.conn);
    gs_ipc_listener_close(l);
    side_fini(&srv);
    side_fini(&cli);
}

static void test_tcp_both_ways_big(void)
{
    side srv, cli;
    side_init(&srv);
    side_init(&cli);
    gs_ipc_listener *l = NULL;
    gs_ipc_conn *c = pair("tcp://127.0.0.1:0", &srv, &cli, &l);
    GS_ASSERT(c != NULL);
    GS_ASSERT(gs_ipc_listener_port(l) > 0);
    GS_ASSERT(strncmp(gs_ipc_conn_peer(srv.conn), "127.0.0.1:", 10) == 0);
    for (uint32_t i = 0; i < 50; i++) {
        GS_ASSERT_OK(send_seq(c, 1, i, 10));
        GS_ASSERT_OK(send_seq(srv.conn, 2, i, 1000));
    }
    GS_ASSERT(wait_for(&srv, &srv.n_frames, 50));
    GS_ASSERT(wait_for(&cli, &cli.n_frames, 50));
    GS_ASSERT_EQ(srv.next[1], 50);
    GS_ASSERT_EQ(cli.next[2], 50);
    /* 20 MiB in one frame, then a small one behind it */
    GS_ASSERT_OK(send_seq(c, 1, 50, (20u << 20) - 8));
    GS_ASSERT(gs_ipc_conn_pending(c) > 0 || srv.n_frames > 50);
    GS_ASSERT_OK(send_seq(c, 1, 51, 0));
    GS_ASSERT(wait_for(&srv, &srv.n_frames, 52));
    GS_ASSERT_EQ(srv.big_ok, 1);
    GS_ASSERT_EQ(srv.order_bad, 0);
    GS_ASSERT_EQ(srv.next[1], 52);
    /* the server closes this time */
    gs_ipc_conn_close(srv.conn);
    GS_ASSERT(wait_for(&srv, &srv.n_close, 1));
    GS_ASSERT(wait_for(&cli, &cli.n_close, 1));
    GS_ASSERT_EQ(srv.close_err, 0);
    GS_ASSERT_EQ(cli.close_err, GS_EIO);
    GS_ASSERT_EQ(send_seq(c, 1, 52, 0), GS_EIO);
    gs_ipc_conn_unref(c);
    gs_ipc_conn_unref(srv.conn);
    gs_ipc_listener_close(l);
    side_fini(&srv);
    side_fini(&cli);
}

typedef struct {
    gs_ipc_conn *c;
    uint32_t track;
    int fails;
} sender;

static void *send_thread(void *arg)
{
    sender *s = arg;
    for (uint32_t i = 0; i < 250; i++)
        if (send_seq(s->c, s->track, i, (i * 13) % 300) != 0)
            s->fails++;
    return NULL;
}

static void test_concurrent_senders(void)
{
    side srv, cli;
    side_init(&srv);
    side_init(&cli);
    gs_ipc_listener *l = NULL;
    gs_ipc_conn *c = pair(ipc_url("b.sock"), &srv, &cli, &l);
    GS_ASSERT(c != NULL);
    pthread_t th[NT];
    sender s[NT];
    for (int i = 0; i < NT; i++) {
        s[i] = (sender){c, (uint32_t)i, 0};
        pthread_create(&th[i], NULL, send_thread, &s[i]);
    }
    for (int i = 0; i < NT; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < NT; i++)
        GS_ASSERT_EQ(s[i].fails, 0);
    GS_ASSERT(wait_for(&srv, &srv.n_frames, NT * 250));
    GS_ASSERT_EQ(srv.order_bad, 0);
    for (int i = 0; i < NT; i++)
        GS_ASSERT_EQ(srv.next[i], 250);
    gs_ipc_conn_close(c);
    GS_ASSERT(wait_for(&srv, &srv.n_close, 1));
    GS_ASSERT(wait_for(&cli, &cli.n_close, 1));
    gs_ipc_conn_unref(c);
    gs_ipc_conn_unref(srv.conn);
    gs_ipc_listener_close(l);
    side_fini(&srv);
    side_fini(&cli);
}

static void *send_until_closed(void *arg)
{
    sender *s = arg;
    for (uint32_t i = 0; i < 100000; i++)
        if (send_seq(s->c, s->track, i, 512) != 0)
            return NULL;
    s->fails++; /* never saw the close */
    return NULL;
}

/* Both ends close while 4 threads send and the server echoes: on_close
 * exactly once per end, senders see GS_EIO, nothing is used after free. */
static void test_close_while_busy(void)
{
    side srv, cli;
    side_init(&srv);
    side_init(&cli);
    srv.echo = 1;
    gs_ipc_listener *l = NULL;
    gs_ipc_conn *c = pair("tcp://127.0.0.1:0", &srv, &cli, &l);
    GS_ASSERT(c != NULL);
    pthread_t th[NT];
    sender s[NT];
    for (int i = 0; i < NT; i++) {
        s[i] = (sender){c, (uint32_t)i, 0};
        pthread_create(&th[i], NULL, send_until_closed, &s[i]);
    }
    GS_ASSERT(wait_for(&srv, &srv.n_frames, 200));
    gs_ipc_conn_close(srv.conn);
    gs_ipc_conn_close(c);
    for (int i = 0; i < NT; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < NT; i++)
        GS_ASSERT_EQ(s[i].fails, 0);
    GS_ASSERT(wait_for(&srv, &srv.n_close, 1));
    GS_ASSERT(wait_for(&cli, &cli.n_close, 1));
    usleep(20000);
    GS_ASSERT_EQ(srv.n_close, 1);
    GS_ASSERT_EQ(cli.n_close, 1);
    GS_ASSERT_EQ(srv.order_bad + cli.order_bad, 0);
    GS_ASSERT_EQ(srv.after_close + cli.after_close, 0);
    gs_ipc_conn_unref(c);
    gs_ipc_conn_unref(srv.conn);
    gs_ipc_listener_close(l);
    side_fini(&srv);
    side_fini(&cli);
}

static void test_close_inside_on_frame(void)
{
    side srv, cli;
    side_init(&srv);
    side_init(&cli);
    srv.close_in_frame = 1;
    gs_ipc_listener *l = NULL;
    gs_ipc_conn *c = pair(ipc_url("c.sock"), &srv, &cli, &l);
    GS_ASSERT(c != NULL);
    for (uint32_t i = 0; i < 20; i++)
        send_seq(c, 0, i, 0); /* later ones may fail once the server is gone */
    GS_ASSERT(wait_for(&srv, &srv.n_close, 1));
    GS_ASSERT(wait_for(&cli, &cli.n_close, 1));
    usleep(20000);
    GS_ASSERT_EQ(srv.n_frames, 1); /* nothing delivered after the close */
    GS_ASSERT_EQ(srv.after_close, 0);
    GS_ASSERT_EQ(srv.n_close, 1);
    GS_ASSERT_EQ(srv.close_err, 0);
    GS_ASSERT_EQ(cli.close_err, GS_EIO);
    GS_ASSERT_EQ(send_seq(srv.conn, 0, 0, 0), GS_EIO);
    GS_ASSERT_EQ(send_seq(c, 0, 0, 0), GS_EIO);
    gs_ipc_conn_unref(c);
    gs_ipc_conn_unref(srv.conn);
    gs_ipc_listener_close(l);
    side_fini(&srv);
    side_fini(&cli);
}

static void test_oversized_skipped(void)
{
    side srv, cli;
    side_init(&srv);
    side_init(&cli);
    gs_ipc_listener *l = NULL;
    gs_diag d;
    gs_ipc_conn_cbs scb = cbs_for(&srv), ccb = cbs_for(&cli);
    scb.max_body = 1024;
    GS_ASSERT_OK(gs_ipc_listen(ipc_url("d.sock"), &scb, &l, &d));
    gs_ipc_conn *c = NULL;
    GS_ASSERT_OK(gs_ipc_dial(ipc_url("d.sock"), &ccb, 2000, &c, &d));
    GS_ASSERT(wait_for(&srv, &srv.n_open, 1));
    GS_ASSERT_OK(send_seq(c, 3, 0, 300000)); /* over 1024: skipped */
    GS_ASSERT_OK(send_seq(c, 1, 0, 1016));   /* exactly 1024: delivered */
    GS_ASSERT_OK(send_seq(c, 2, 0, 1017));   /* 1025: skipped */
    GS_ASSERT_OK(send_seq(c, 1, 1, 0));
    GS_ASSERT(wait_for(&srv, &srv.n_frames, 2));
    usleep(20000);
    GS_ASSERT_EQ(srv.n_frames, 2);
    GS_ASSERT_EQ(srv.next[1], 2);
    GS_ASSERT_EQ(srv.next[2] + srv.next[3], 0);
    GS_ASSERT_EQ(srv.order_bad, 0);
    GS_ASSERT_EQ(srv.n_close, 0);
    gs_ipc_conn_close(c);
    GS_ASSERT(wait_for(&srv, &srv.n_close, 1));
    GS_ASSERT(wait_for(&cli, &cli.n_close, 1));
    gs_ipc_conn_unref(c);
    gs_ipc_conn_unref(srv.conn);
    gs_ipc_listener_close(l);
    side_fini(&srv);
    side_fini(&cli);
}

/* Raw bytes on a plain nng stream into a listener: the header is refused
 * and the connection closes with GS_EPROTO. */
static void test_garbage_header(void)
{
    side srv;
    side_init(&srv);
    gs_ipc_listener *l = NULL;
    gs_diag d;
    gs_ipc_conn_cbs scb = cbs_for(&srv);
    GS_ASSERT_OK(gs_ipc_listen(ipc_url("e.sock"), &scb, &l, &d));
    nng_stream_dialer *dl;
    nng_aio *aio;
    GS_ASSERT_OK(nng_stream_dialer_alloc(&dl, ipc_url("e.sock")));
    GS_ASSERT_OK(nng_aio_alloc(&aio, NULL, NULL));
    nng_aio_set_timeout(aio, 2000);
    nng_stream_dialer_dial(dl, aio);
    nng_aio_wait(aio);
    GS_ASSERT_OK(nng_aio_result(aio));
    nng_stream *s = nng_aio_get_output(aio, 0);
    /* a header in two pieces: the first 5 bytes fine, then a bad version */
    uint8_t junk[16] = {'G', 'S', 'I', 'P', 9, 1, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0};
    nng_iov iov = {junk, 5};
    nng_aio_set_iov(aio, 1, &iov);
    nng_stream_send(s, aio);
    nng_aio_wait(aio);
    GS_ASSERT_OK(nng_aio_result(aio));
    usleep(10000);
    GS_ASSERT_EQ(srv.n_close, 0); /* still waiting for the rest of the header */
    iov = (nng_iov){junk + 5, 11};
    nng_aio_set_iov(aio, 1, &iov);
    nng_stream_send(s, aio);
    nng_aio_wait(aio);
    GS_ASSERT(wait_for(&srv, &srv.n_close, 1));
    GS_ASSERT_EQ(srv.close_err, GS_EPROTO);
    GS_ASSERT_EQ(srv.n_frames, 0);
    /* the raw end sees the stream go away */
    uint8_t buf[4];
    iov = (nng_iov){buf, sizeof buf};
    nng_aio_set_iov(aio, 1, &iov);
    nng_stream_recv(s, aio);
    nng_aio_wait(aio);
    GS_ASSERT(nng_aio_result(aio) != 0);
    nng_stream_free(s);
    nng_aio_free(aio);
    nng_stream_dialer_free(dl);
    gs_ipc_conn_unref(srv.conn);
    gs_ipc_listener_close(l);
    side_fini(&srv);
}

static void test_listen_paths(void)
{
    side srv;
    side_init(&srv);
    gs_diag d;
    gs_ipc_conn_cbs scb = cbs_for(&srv);
    gs_ipc_listener *l = NULL, *l2 = NULL;
    char path[512];

    /* a regular file is never removed */
    snprintf(path, sizeof path, "%s/file.sock", tmpdir);
    FILE *f = fopen(path, "w");
    GS_ASSERT(f != NULL);
    fclose(f);
    GS_ASSERT_EQ(gs_ipc_listen(ipc_url("file.sock"), &scb, &l, &d), GS_EIO);
    GS_ASSERT(access(path, F_OK) == 0);
    unlink(path);

    /* a stale socket (bound, never listened, closed) is replaced */
    snprintf(path, sizeof path, "%s/stale.sock", tmpdir);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    GS_ASSERT(strlen(path) < sizeof sa.sun_path);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    GS_ASSERT_OK(bind(fd, (struct sockaddr *)&sa, sizeof sa));
    close(fd);
    GS_ASSERT(access(path, F_OK) == 0);
    GS_ASSERT_OK(gs_ipc_listen(ipc_url("stale.sock"), &scb, &l, &d));
    /* a live one is not (its probe shows up as a connection that closes) */
    GS_ASSERT_EQ(gs_ipc_listen(ipc_url("stale.sock"), &scb, &l2, &d), GS_EIO);
    gs_ipc_conn *c = NULL;
    gs_ipc_conn_cbs ccb = cbs_for(&srv);
    GS_ASSERT_OK(gs_ipc_dial(ipc_url("stale.sock"), &ccb, 2000, &c, &d));
    GS_ASSERT(wait_for(&srv, &srv.n_open, 2));
    gs_ipc_listener_close(l);
    gs_ipc_conn_close(c);
    GS_ASSERT(wait_for(&srv, &srv.n_close, 3)); /* the probe, both ends of the dial */
    gs_ipc_conn_unref(c);
    gs_ipc_conn_unref(srv.conn);

    GS_ASSERT_EQ(gs_ipc_listen("bogus://x", &scb, &l, &d), GS_EINVAL);
    GS_ASSERT_EQ(gs_ipc_dial("bogus://x", &ccb, 100, &c, &d), GS_EINVAL);
    GS_ASSERT_EQ(gs_ipc_dial(ipc_url("nobody.sock"), &ccb, 1000, &c, &d), GS_EIO);
    gs_ipc_listener_close(NULL);
    gs_ipc_conn_unref(NULL);
    side_fini(&srv);
}

/* gs_ipc_listener_close from inside on_open: the accepted connection
 * works, and nothing more is accepted. */
static void test_listener_close_in_on_open(void)
{
    side srv, cli;
    side_init(&srv);
    side_init(&cli);
    srv.close_listener_in_open = 1;
    gs_ipc_listener *l = NULL;
    gs_ipc_conn *c = pair(ipc_url("f.sock"), &srv, &cli, &l);
    GS_ASSERT(c != NULL);
    GS_ASSERT_OK(send_seq(c, 0, 0, 0));
    GS_ASSERT(wait_for(&srv, &srv.n_frames, 1));
    gs_diag d;
    gs_ipc_conn *c2 = NULL;
    gs_ipc_conn_cbs ccb = cbs_for(&cli);
    GS_ASSERT_EQ(gs_ipc_dial(ipc_url("f.sock"), &ccb, 500, &c2, &d), GS_EIO);
    gs_ipc_conn_close(c);
    GS_ASSERT(wait_for(&srv, &srv.n_close, 1));
    GS_ASSERT(wait_for(&cli, &cli.n_close, 1));
    gs_ipc_conn_unref(c);
    gs_ipc_conn_unref(srv.conn);
    side_fini(&srv);
    side_fini(&cli);
}

int main(void)
{
    if (!gs_test_threads_work()) {
        fprintf(stderr, "SKIP: threads do not start in this environment (qemu-user?)\n");
        return GS_TEST_SKIP;
    }
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/gs_ipc_XXXXXX", t && *t ? t : P_tmpdir);
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    GS_RUN(test_ipc_order_echo);
    GS_RUN(test_tcp_both_ways_big);
    GS_RUN(test_concurrent_senders);
    GS_RUN(test_close_while_busy);
    GS_RUN(test_close_inside_on_frame);
    GS_RUN(test_oversized_skipped);
    GS_RUN(test_garbage_header);
    GS_RUN(test_listen_paths);
    GS_RUN(test_listener_close_in_on_open);
    rmdir(tmpdir);
    return gs_test_summary();
}
