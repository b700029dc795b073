/* http_harness.h - what the gateway HTTP tests share: a gs_http_server on
 * a libuv loop, and a raw-socket HTTP client that runs that loop whenever
 * it waits (for bytes, for a close, for time to pass). One thread only: no
 * thread is started (threads are slow or broken under some qemu-user
 * builds), and the order of events is easier to reason about.
 * Every wait has a limit (5 s for a read), so a server bug fails a test
 * instead of hanging it. */
#ifndef GS_TEST_HTTP_HARNESS_H
#define GS_TEST_HTTP_HARNESS_H

#include <stddef.h>
#include <uv.h>

#include "gateway/http.h"

typedef struct th_server th_server;
typedef void (*th_fn)(th_server *h, void *arg);

struct th_server {
    uv_loop_t loop;
    gs_http_server *srv;
    int port;
    int stopped; /* th_stop ran: the loop is closed */
    void *user;  /* the test's */
};

/* Starts a server with p (handler and user set by the test; p->user is
 * replaced by h, the test's own pointer goes in h->user) on 127.0.0.1:0.
 * 0 or -1. */
int th_start(th_server *h, gs_http_params *p, void *user);
/* Runs fn(h, arg) (kept so tests read as "on the loop"). */
void th_call(th_server *h, th_fn fn, void *arg);
/* Frees the server, runs the loop until it has nothing left (at most 5 s)
 * and returns uv_loop_close's result (0: every handle was released). */
int th_stop(th_server *h);
/* A one-shot timer that closes and frees itself. */
void th_later(uv_loop_t *loop, unsigned ms, void (*cb)(void *data), void *data);
void th_stats(th_server *h, gs_http_stats *out);
/* Runs the loop for ms milliseconds. */
void th_sleep_ms(th_server *h, unsigned ms);
/* Runs the loop until *v == want or ms pass; 1 if it got there. */
int th_wait_int(th_server *h, const int *v, int want, int ms);

/* ---- the client ---------------------------------------------------------- */

typedef struct {
    th_server *h; /* its loop runs while the client waits */
    int fd;
    char *buf; /* bytes received, not yet consumed */
    size_t len, cap;
} th_cli;

typedef struct {
    int status;
    char head[16384]; /* status line and headers, NUL-terminated */
    char *body;       /* malloc'd, NUL-terminated */
    size_t body_len;
    int chunked;
} th_resp;

int cli_open(th_cli *c, th_server *h);  /* 0 or -1 */
void cli_close(th_cli *c);              /* no-op when closed */
int cli_send(th_cli *c, const char *s); /* whole string; 0 or -1 */
int cli_sendn(th_cli *c, const void *p, size_t n);
/* Reads one response. no_body: a HEAD answer (no body whatever the head
 * says). 0, or -1 on EOF / timeout / malformed. */
int cli_read(th_cli *c, th_resp *r, int no_body);
/* Receives until needle is in the unread bytes (binary-free responses
 * only). 0 or -1. */
int cli_wait(th_cli *c, const char *needle);
/* Reads exactly n raw bytes into out (NUL-terminated; cap > n). 0 or -1. */
int cli_read_raw(th_cli *c, char *out, size_t n);
/* 1 if bytes (or EOF) can be read within ms; reads nothing. */
int cli_readable(th_cli *c, int ms);
/* 1 if the server closes the connection within ms with no more bytes
 * (EOF or reset), 0 if bytes come or nothing happens. */
int cli_eof(th_cli *c, int ms);
/* A header's value from r->head (case-insensitive name) into out, or NULL. */
const char *resp_header(const th_resp *r, const char *name, char *out, size_t cap);
void resp_free(th_resp *r);

#endif
