/* http_impl.h - internals of the HTTP server shared by its three files:
 * http.c (server, connections, timers, closing), http_parse.c (llhttp
 * callbacks, the parse loop, request accessors) and http_write.c (the
 * response writer, upgrade, server-made errors). Not a public header:
 * only gateway/http*.c include it.
 *
 * Lifetimes, in one place:
 * - gs_http_server: freed by gs_http_server_free once every handle it
 *   owns (listener, tick timer, connections) is closed.
 * - gs_http_conn: freed once its handles are closed (tcp, timer; or only the
 *   timer after a hand-over) AND no uv_write of it is in flight.
 * - gs_http_req: created at the first byte of a request; the server frees
 *   it if it never reached the handler; once handed to the handler only the
 *   handler's final call frees it. r->c is NULL once the request is detached
 *   (answered, aborted or its connection gone).
 * Threading: the loop thread only. */
#ifndef GS_HTTP_IMPL_H
#define GS_HTTP_IMPL_H

#include <llhttp.h>
#include <stdint.h>
#include <uv.h>

#include "common/queue.h"
#include "gateway/http.h"

enum {
    GS_HTTP_MAX_HEADERS = 256,  /* header lines per request; more: 431 */
    GS_HTTP_LINGER_MS = 2000,   /* read-and-discard after a closing response */
    GS_HTTP_READ_CHUNK = 65536, /* bytes offered to each read */
    /* Pipelined requests wait while this many response bytes are queued
     * (a client that sends and never reads cannot grow our queue). */
    GS_HTTP_PARSE_PENDING_MAX = 1024 * 1024,
};

/* Where a connection is in its request cycle. */
typedef enum {
    GS_PH_WAIT,    /* no request begun (new or keep-alive idle) */
    GS_PH_HEADERS, /* request line and headers being read */
    GS_PH_BODY,    /* body being read */
    GS_PH_HANDLER, /* request handed out, waiting for its final call */
    GS_PH_CLOSING, /* closing: lingering after the last response, or handles closing */
} gs_http_phase;

/* What the connection timer is counting. */
typedef enum {
    GS_TM_NONE,
    GS_TM_FIRST,   /* new connection: header timeout from the accept */
    GS_TM_IDLE,    /* keep-alive: idle timeout */
    GS_TM_HEADERS, /* header timeout from the first byte */
    GS_TM_BODY,    /* body timeout from the end of the headers */
    GS_TM_LINGER,  /* lingering close */
    GS_TM_SEND,    /* handler phase, bytes waiting: send timeout while none is written */
    GS_TM_DROP,    /* a stream past its cap: closed from the loop at once (sticky) */
} gs_http_tmode;

/* A growable byte buffer, always NUL-terminated when p != NULL. */
typedef struct {
    char *p;
    size_t len, cap;
} gs_hbuf;
int gs__hbuf_append(gs_hbuf *b, const void *data, size_t n); /* 0 or GS_ENOMEM */
void gs__hbuf_free(gs_hbuf *b);

typedef struct {
    char *name, *value; /* owned; NUL-terminated */
} gs_http_hdr;

typedef struct gs_http_conn gs_http_conn;

struct gs_http_req {
    gs_http_conn *c;    /* NULL once detached */
    const char *method; /* static (llhttp's names) */
    gs_hbuf url;        /* the raw request target */
    char *path, *query; /* owned, split from url */
    gs_http_hdr *hdrs;  /* owned, n_hdrs entries; repeated names joined */
    int n_hdrs, cap_hdrs;
    gs_hbuf field, value; /* header line being read */
    gs_hbuf body;
    size_t body_acct;              /* bytes of it counted in acct_s->body_mem */
    struct gs_http_server *acct_s; /* NULL: nothing counted (or the connection is gone) */
    char peer[48];
    uint64_t start_ns;
    int http_major, http_minor;
    unsigned head : 1;       /* HEAD: answers carry no body */
    unsigned keep_alive : 1; /* the client allows another request after this one */
    unsigned upgrade : 1;    /* Upgrade / CONNECT: no more HTTP on this connection */
    unsigned dispatched : 1; /* given to the handler */
    unsigned aborted : 1;
    unsigned streaming : 1; /* gs_http_stream_begin done */
    unsigned chunked : 1;   /* the stream is chunked (HTTP/1.1) or raw until close (1.0) */
    void *data;
    void (*abort_cb)(gs_http_req *r, void *user);
    void *abort_user;
};

struct gs_http_conn {
    gs_queue link;     /* in server->conns, then ->closing; unlinked at hand-over */
    gs_http_server *s; /* NULL after hand-over */
    uv_tcp_t *tcp;     /* malloc'd; NULL after hand-over (the new owner frees it) */
    uv_timer_t timer;
    uv_shutdown_t shut;
    llhttp_t parser;
    char *in; /* bytes read: [in_off, in_len) not parsed yet */
    size_t in_off, in_len, in_cap;
    gs_http_req *req; /* being read or in the handler; NULL between requests */
    gs_http_phase phase;
    gs_http_tmode tmode;
    int handles;      /* uv handles of ours still open (tcp, timer) */
    int writes;       /* uv_write requests in flight */
    size_t pending;   /* bytes queued, not yet written */
    uint64_t written; /* bytes written so far (idle-timer progress check) */
    uint64_t written_at_arm;
    size_t hdr_bytes;     /* header bytes of the current request before hdr_mark */
    const char *hdr_mark; /* in the buffer being parsed: where counting resumed */
    int err_status;       /* set by a parser callback: the answer (413, 431, ...); -1: just close */
    const char *err_msg;  /* static */
    unsigned reading : 1; /* uv_read_start in effect */
    unsigned closing : 1; /* uv_close called on the handles */
    unsigned handed_over : 1;
    unsigned in_process : 1; /* inside gs__http_conn_process */
    unsigned req_done : 1;   /* on_message_complete ran; dispatch after llhttp_execute */
    unsigned shut_sent : 1;
    unsigned sndbuf_set : 1; /* a stream capped SO_SNDBUF (gs_http_params.stream_sndbuf) */
    unsigned drop : 1;       /* GS_TM_DROP is due: no other timer mode replaces it */
    char peer[48];
};

struct gs_http_server {
    uv_loop_t *loop;
    gs_http_params p; /* defaults filled; p.server_name points at server_name */
    char *server_name;
    uv_tcp_t listener;
    uv_timer_t tick;  /* runs the drain check outside of the caller's stack */
    gs_queue conns;   /* live connections */
    gs_queue closing; /* connections whose handles are closing */
    uint32_t n_conns; /* both lists */
    int handles;      /* listener + tick while open */
    unsigned listener_open : 1;
    unsigned draining : 1;
    unsigned freeing : 1;
    void (*drain_cb)(void *user);
    void *drain_user;
    gs_http_stats st;
    size_t body_mem; /* request body bytes counted (max_body_memory) */
    char date[40];   /* "Sun, 06 Nov 1994 08:49:37 GMT" */
    int64_t date_sec;
};

/* http_parse.c: r's body stops being counted (its server is still alive). */
void gs__http_req_unaccount(gs_http_req *r);

/* http.c */
void gs__http_conn_close(gs_http_conn *c);             /* now; aborts a request in flight */
void gs__http_conn_close_after_write(gs_http_conn *c); /* FIN after the queued writes, linger */
/* After the final call of a request: next request or close. */
void gs__http_conn_finish(gs_http_conn *c, int keep_alive);
void gs__http_conn_timer(gs_http_conn *c, gs_http_tmode mode);
void gs__http_conn_read_start(gs_http_conn *c);
void gs__http_conn_maybe_free(gs_http_conn *c);
void gs__http_server_check(gs_http_server *s);
void gs__http_server_kick(gs_http_server *s); /* server_check from the loop, soon */
size_t gs__http_in_cap(const gs_http_server *s);

/* http_parse.c */
void gs__http_parser_init(gs_http_conn *c);
void gs__http_conn_process(gs_http_conn *c);
void gs__http_req_free(gs_http_req *r);

/* http_write.c */
/* Queues a server-made JSON error (no request may be in the handler) and
 * closes the connection after it. */
void gs__http_error(gs_http_conn *c, int status, const char *msg);
/* Queues raw bytes (copied). 0 or GS_EIO / GS_ENOMEM (nothing queued). */
int gs__http_send_raw(gs_http_conn *c, const void *data, size_t len);

#endif
