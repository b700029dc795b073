/* fuzz_conn.h - drives the gateway's HTTP server (gateway/http*.c) on one
 * connection without a listening socket, for fuzz_http and fuzz_ws
 * (header only).
 *
 * The connection is what gateway/http.c's on_connection makes of an
 * accepted socket, here one end of a socketpair: the fuzz input is written
 * into the other end (the "client") in chunks, with the loop run between
 * them, so the server's real read, parse and write paths see it as from a
 * socket, split as the first input byte says. The client's end is drained
 * of whatever the server answers. Then the client half-closes (EOF), and
 * the loop runs until every connection is gone; more than FZ_HANG_MS of
 * that is a hang, reported by a trap.
 * Threading: one loop, the calling thread. */
#ifndef GS_FUZZ_CONN_H
#define GS_FUZZ_CONN_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.h"
#include "gateway/http_impl.h"

#define FZ_HANG_MS 5000

static uv_loop_t fz_loop;

static uv_loop_t *fz_loop_get(void)
{
    static int init;
    if (!init) {
        signal(SIGPIPE, SIG_IGN);
        if (uv_loop_init(&fz_loop) != 0)
            abort();
        init = 1;
    }
    return &fz_loop;
}

/* A connection of server s on a new socketpair; *client gets the other
 * end (non-blocking). 0 or -1. */
static int fz_conn_open(gs_http_server *s, int *client)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return -1;
    fcntl(sv[1], F_SETFL, fcntl(sv[1], F_GETFL) | O_NONBLOCK);
    uv_tcp_t *tcp = malloc(sizeof *tcp);
    gs_http_conn *c = calloc(1, sizeof *c);
    if (!tcp || !c || uv_tcp_init(s->loop, tcp) != 0) {
        free(tcp);
        free(c);
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    if (uv_tcp_open(tcp, sv[0]) != 0 || uv_timer_init(s->loop, &c->timer) != 0)
        abort(); /* fresh handles on a fresh socket: cannot fail */
    /* as gateway/http.c on_connection */
    c->s = s;
    c->tcp = tcp;
    tcp->data = c;
    c->timer.data = c;
    c->handles = 2;
    gs_queue_insert_tail(&s->conns, &c->link);
    s->n_conns++;
    s->st.connections_open++;
    s->st.connections_total++;
    snprintf(c->peer, sizeof c->peer, "192.0.2.7");
    gs__http_parser_init(c);
    c->phase = GS_PH_WAIT;
    gs__http_conn_timer(c, GS_TM_FIRST);
    gs__http_conn_read_start(c);
    *client = sv[1];
    return 0;
}

/* Reads and drops what the server wrote to the client's end. */
static void fz_drain(int client)
{
    char buf[65536];
    while (read(client, buf, sizeof buf) > 0)
        ;
}

static void fz_pump(int client)
{
    for (int i = 0; i < 4; i++) {
        uv_run(&fz_loop, UV_RUN_NOWAIT);
        fz_drain(client);
    }
}

/* Writes data[0..len) to the client's end, chunk bytes at a time (0:
 * all at once), running the loop after each write. */
static void fz_send(int client, const uint8_t *data, size_t len, size_t chunk)
{
    if (!chunk)
        chunk = len;
    while (len) {
        size_t n = len < chunk ? len : chunk;
        ssize_t w = write(client, data, n);
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            break; /* the server closed its end */
        if (w > 0) {
            data += w;
            len -= (size_t)w;
        }
        fz_pump(client);
    }
}

/* Half-closes the client, runs the loop until done() says so (or no
 * connection is left when done is NULL), frees the server and closes the
 * client. A trap after FZ_HANG_MS. */
static void fz_finish(gs_http_server *s, int client, int (*done)(gs_http_server *s))
{
    shutdown(client, SHUT_WR);
    uint64_t t0 = gs_clock_now_ns();
    while (done ? !done(s) : s->n_conns > 0) {
        fz_pump(client);
        if (gs_clock_now_ns() - t0 > (uint64_t)FZ_HANG_MS * 1000000u) {
            fprintf(stderr, "fuzz: the connection did not end in %d ms after EOF\n", FZ_HANG_MS);
            __builtin_trap();
        }
    }
    gs_http_server_free(s);
    uv_run(&fz_loop, UV_RUN_DEFAULT);
    close(client);
}

#endif
