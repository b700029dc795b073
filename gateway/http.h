/* http.h - the gateway's HTTP/1.1 server on libuv + llhttp.
 *
 * One server per gateway process, on the process's one libuv loop.
 * Connections: keep-alive; pipelined requests are parsed one at a time
 * and answered in order (the next request is not handed out before the
 * previous response has ended); request bodies plain or chunked.
 * Limits (gs_http_params): header bytes, body bytes, and timeouts for the
 * headers, the body and an idle keep-alive connection; a client that
 * stops taking a response's bytes (send timeout, or a stream's unwritten
 * bytes past a cap) is closed and its request aborted;
 * a request over a limit is answered by the server itself (400, 408, 413,
 * 417, 431, 505) with a JSON error body and the connection is closed.
 *
 * A complete request (headers and body) goes to the handler. The handler
 * answers now or later (the request stays valid until it does) with
 * exactly ONE of: gs_http_respond (a whole response), or
 * gs_http_stream_begin + any number of gs_http_stream_write +
 * gs_http_stream_end (a chunked stream, e.g. Server-Sent Events), or
 * gs_http_upgrade (hands the socket over, e.g. to a WebSocket). The
 * request is freed by that final call. If the client goes away first, the
 * abort callback (gs_http_req_on_abort) runs once, so the handler can stop
 * work (cancel a job); the handler must still make its final call, which
 * then only frees the request (writes after an abort return GS_EIO and
 * send nothing).
 *
 * Threading: everything on the loop thread. Nothing here blocks. */
#ifndef GS_HTTP_H
#define GS_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/err.h"

typedef struct gs_http_server gs_http_server; /* opaque */
typedef struct gs_http_req gs_http_req;       /* opaque; one request in flight */

typedef void (*gs_http_handler)(gs_http_req *r, void *user);

typedef struct {
    gs_http_handler handler; /* required */
    void *user;
    size_t max_header_bytes; /* request line + headers; 0: 16 KiB */
    size_t max_body_bytes;   /* 0: 32 MiB */
    /* From the first byte to the end of the headers (on a new connection
     * from the accept: one that sends nothing is closed silently); 0: 10 s */
    uint32_t header_timeout_ms;
    uint32_t body_timeout_ms; /* from the end of the headers to the end of the body; 0: 60 s */
    uint32_t idle_timeout_ms; /* keep-alive connection with no request; 0: 75 s */
    /* A response's bytes wait to be written and the client takes none of
     * them for this long (a reader that stopped reading): the connection
     * is closed and the request aborted, as nginx's send_timeout. 0: 60 s */
    uint32_t send_timeout_ms;
    /* A stream (gs_http_stream_write) with more unwritten bytes than this
     * is closed and aborted the same way: a slow reader costs bounded
     * memory. 0: 8 MiB */
    size_t max_stream_pending;
    /* A stream's socket send buffer (SO_SNDBUF, set when it begins), so
     * that the kernel does not absorb megabytes for a reader that stopped
     * (its autotuning grows to tcp_wmem's maximum) before the two limits
     * above can see it. Plenty for tokens (the kernel doubles it: 128 KiB
     * hold seconds of a fast stream). 0: 64 KiB */
    uint32_t stream_sndbuf;
    uint32_t max_connections; /* beyond this, new connections are closed at once; 0: 10000 */
    /* Request body bytes held at once over all connections, counted from
     * each body's Content-Length (or as a chunked one arrives) until the
     * handler calls gs_http_req_body_done or its final call: a request that
     * would pass it is answered 503 with Retry-After: 1 and its connection
     * closed, so many large uploads at once cannot take the memory. 0: 1 GiB */
    size_t max_body_memory;
    const char *server_name; /* "Server:" header; NULL: "glmserve" */
} gs_http_params;

/* *out owns a new server on loop (borrowed; must outlive it). GS_EINVAL,
 * GS_ENOMEM. */
int gs_http_server_new(uv_loop_t *loop, const gs_http_params *p, gs_http_server **out, gs_diag *d);
/* The body limits (max_body_bytes, max_body_memory; 0 keeps one) of the
 * requests that start from now on (a reload). */
void gs_http_server_set_body_limits(gs_http_server *s, size_t max_body_bytes,
                                    size_t max_body_memory);
/* Accepts on an already listening socket fd (inherited from the master;
 * the server does not close it). GS_EIO (d says why). */
int gs_http_server_listen_fd(gs_http_server *s, int fd, gs_diag *d);
/* Binds and listens on host:port itself (tests, tools); port 0 picks a free
 * one (gs_http_server_port). GS_EIO. */
int gs_http_server_listen(gs_http_server *s, const char *host, int port, gs_diag *d);
int gs_http_server_port(const gs_http_server *s);
/* Graceful stop: no new connections, idle keep-alive connections closed,
 * requests in flight finish (their connections close after the response).
 * cb (may be NULL) runs once no connection is left. */
void gs_http_server_drain(gs_http_server *s, void (*cb)(void *user), void *user);
/* Closes everything now (aborting requests in flight) and frees the
 * server once libuv has released the handles; the loop must run until
 * then. NULL: no-op. */
void gs_http_server_free(gs_http_server *s);

typedef struct {
    uint64_t connections_open, connections_total, requests_total;
    uint64_t bytes_in, bytes_out;
    uint64_t body_bytes; /* request body bytes held now (max_body_memory) */
} gs_http_stats;
void gs_http_server_stats(const gs_http_server *s, gs_http_stats *out);

/* ---- request accessors (borrowed strings, valid until the final call) ---- */

const char *gs_http_req_method(const gs_http_req *r); /* "GET", "POST", ... */
/* As sent (not percent-decoded); an absolute-form target loses its
 * scheme and host. */
const char *gs_http_req_path(const gs_http_req *r);  /* "/v1/models" (no query) */
const char *gs_http_req_query(const gs_http_req *r); /* "a=1&b=2", "" when none */
/* The value of a header by case-insensitive name (repeated headers joined
 * with ", "), or NULL. */
const char *gs_http_req_header(const gs_http_req *r, const char *name);
/* Never NULL; a NUL follows the len bytes (not counted), so a text body
 * can be read as a string. */
const uint8_t *gs_http_req_body(const gs_http_req *r, size_t *len);
/* The handler is done with the body (it has parsed or copied what it
 * needs): its memory is freed and no longer counted in max_body_memory; the
 * body reads as empty from here on. */
void gs_http_req_body_done(gs_http_req *r);
const char *gs_http_req_peer(const gs_http_req *r);  /* client IP as text */
uint64_t gs_http_req_start_ns(const gs_http_req *r); /* when its first byte arrived */
int gs_http_req_aborted(const gs_http_req *r);       /* 1 once the client is gone */
/* A per-request user pointer for the handler. */
void gs_http_req_set_data(gs_http_req *r, void *data);
void *gs_http_req_get_data(const gs_http_req *r);

/* Called once if the client disconnects before the final call. */
void gs_http_req_on_abort(gs_http_req *r, void (*cb)(gs_http_req *r, void *user), void *user);

/* ---- responses ---------------------------------------------------------- */

/* A whole response. headers: extra header lines, each ending in "\r\n"
 * (NULL: none); Content-Length, Date, Server and Connection are added.
 * body is copied. The final call: r is freed, whatever it returns.
 * A HEAD request gets the head only (Content-Length still says len, and
 * body may be NULL); 204 and 304 get neither body nor Content-Length.
 * Returns 0; GS_EIO after an abort (nothing sent); GS_EINVAL for a status
 * outside 200..599, a line break in content_type, malformed headers or a
 * NULL body with len > 0 (a 500 JSON error is sent instead); GS_ENOMEM
 * (the connection is closed). */
int gs_http_respond(gs_http_req *r, int status, const char *content_type, const char *headers,
                    const void *body, size_t len);
/* The same as gs_http_respond with an OpenAI-shaped JSON body:
 * {"error": {"message": message, "type": type, "param": null, "code": null}}
 * (message is escaped; type NULL: "invalid_request_error" below 500,
 * "server_error" from 500). A status outside 400..599 becomes 500. On a
 * streaming request it ends the stream instead. The final call. */
int gs_http_respond_error(gs_http_req *r, int status, const char *type, const char *message);

/* A chunked streaming response (Transfer-Encoding: chunked). To an
 * HTTP/1.0 client the body is sent raw and ends with the connection. Not a
 * final call: on GS_EINVAL (bad arguments, already streaming, 204/304) or
 * GS_EIO (aborted) r stays the caller's, to be ended. */
int gs_http_stream_begin(gs_http_req *r, int status, const char *content_type, const char *headers);
/* Queues one chunk (copied; len 0 sends nothing). GS_EIO after an abort,
 * or when the chunk would put the stream past max_stream_pending (the
 * connection is then dropped from the loop, and the abort callback runs
 * there, not inside this call); GS_EINVAL before stream_begin. Bytes
 * queued but not yet written: gs_http_req_pending (back-pressure). */
int gs_http_stream_write(gs_http_req *r, const void *data, size_t len);
size_t gs_http_req_pending(const gs_http_req *r);
/* Ends the stream (the final call: r is freed). GS_EIO after an abort.
 * Called without stream_begin it answers 500 and returns GS_EINVAL. */
int gs_http_stream_end(gs_http_req *r);

/* Hands the connection's socket to the caller after writing `response`
 * (e.g. the 101 Switching Protocols of a WebSocket handshake), with any
 * bytes already read past this request in *extra / *extra_len (owned by
 * the caller; free()). *out is the uv_tcp_t, no longer read or timed by the
 * server; the caller closes it with uv_close and frees it (malloc'd) in
 * the close callback. The final call: r is freed. GS_EIO after an abort;
 * GS_EINVAL for NULL out pointers or after stream_begin (a 500 or the
 * stream's end is sent instead). */
int gs_http_upgrade(gs_http_req *r, const char *response, size_t len, uv_tcp_t **out,
                    uint8_t **extra, size_t *extra_len);

/* Reason phrase of a status ("OK", "Not Found"); static. */
const char *gs_http_status_text(int status);

#endif
