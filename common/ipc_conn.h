/* ipc_conn.h - framed, ordered, reliable connections between gateways and
 * workers over nng byte streams (nng_stream: ipc:// on one host, tcp://
 * across hosts). One connection carries the frames of ipc_msg.h both ways;
 * nothing is ever dropped silently: a frame is delivered whole, in order,
 * or the connection closes (and both ends learn it through on_close).
 *
 * Why streams and not an nng socket protocol: pair1 in polyamorous mode is
 * best-effort (it drops when a peer's queue is full) and the other
 * patterns do not route replies to the sender; a stream per peer gives
 * back-pressure and an immediate "peer gone".
 *
 * Receiving: each connection reads a header, checks it
 * (gs_ipc_decode_header), reads the body into an 8-aligned buffer and
 * hands the frame to on_frame. A body over the limit is read and
 * discarded with a log line (the stream stays in sync); a bad header
 * closes the connection with a log line (it cannot be resynchronised).
 *
 * Sending: gs_ipc_conn_send queues a frame; frames are written in the
 * order queued, one at a time. Any thread may send.
 *
 * Lifetime: a connection is reference-counted. The creator (dial) or
 * on_open (listen) receives one reference; gs_ipc_conn_unref drops it.
 * The connection itself holds one until on_close has returned. on_close
 * is called exactly once per connection, after the last on_frame.
 *
 * Threading: callbacks run on nng's threads, one at a time per
 * connection (different connections may call back concurrently). They
 * may call gs_ipc_conn_send / _close / _unref, but must not block long. */
#ifndef GS_IPC_CONN_H
#define GS_IPC_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/ipc_msg.h"

typedef struct gs_ipc_conn gs_ipc_conn;         /* opaque */
typedef struct gs_ipc_listener gs_ipc_listener; /* opaque */

typedef struct {
    void *user; /* passed to every callback */
    /* A new connection (accepted, or dialed). The callee owns one
     * reference (gs_ipc_conn_unref when done with it). May be NULL for
     * dial, which returns the connection instead. */
    void (*on_open)(gs_ipc_conn *c, void *user);
    /* One whole frame; body (h->body_len bytes, 8-byte aligned) is
     * borrowed for the call. */
    void (*on_frame)(gs_ipc_conn *c, const gs_ipc_header *h, const uint8_t *body, void *user);
    /* The connection is gone: err is 0 after gs_ipc_conn_close, GS_EIO when
     * the peer closed or the stream failed, GS_EPROTO after a bad header. */
    void (*on_close)(gs_ipc_conn *c, int err, void *user);
    uint32_t max_body; /* bodies above this are skipped (0: GS_IPC_MAX_BODY) */
} gs_ipc_conn_cbs;

/* Listens on url ("ipc:///path", "tcp://host:port"; borrowed). Accepted
 * connections call cbs->on_open (required here). An ipc:// path that
 * exists is removed first only if it is a socket nobody listens on (the
 * check connects to it, so a live listener sees a connection that closes
 * at once).
 * *out owns the listener (gs_ipc_listener_close). GS_EINVAL (bad url),
 * GS_EIO (address in use, permission; d says which). */
int gs_ipc_listen(const char *url, const gs_ipc_conn_cbs *cbs, gs_ipc_listener **out, gs_diag *d);
/* Stops accepting; connections already open stay open. NULL: no-op.
 * From outside the listener's on_open it waits for a running on_open to
 * return, so on_open is never called after it; from inside on_open it
 * returns at once and the listener is freed when that on_open returns. */
void gs_ipc_listener_close(gs_ipc_listener *l);
/* The bound port of a tcp:// listener given port 0, else 0. */
int gs_ipc_listener_port(const gs_ipc_listener *l);

/* Dials url, waiting at most timeout_ms. On success *out is a connection
 * with one reference for the caller; on_open is not called. GS_EINVAL,
 * GS_EIO (refused / unreachable), GS_ETIMEDOUT. */
int gs_ipc_dial(const char *url, const gs_ipc_conn_cbs *cbs, int timeout_ms, gs_ipc_conn **out,
                gs_diag *d);

/* Queues frame (takes it: freed with free() once written or when the
 * connection closes). 0, or GS_EIO when the connection is closed (the
 * frame is freed), or GS_ENOMEM (likewise). */
int gs_ipc_conn_send(gs_ipc_conn *c, uint8_t *frame, size_t len);
/* gs_ipc_encode + gs_ipc_conn_send; encoding errors are returned. */
int gs_ipc_conn_send_msg(gs_ipc_conn *c, const gs_ipc_msg *m, gs_diag *d);
/* Bytes queued and not yet written (back-pressure signal). */
size_t gs_ipc_conn_pending(gs_ipc_conn *c);
/* Starts closing: pending frames are dropped, on_close(.., 0) follows.
 * Idempotent. */
void gs_ipc_conn_close(gs_ipc_conn *c);
void gs_ipc_conn_ref(gs_ipc_conn *c);
void gs_ipc_conn_unref(gs_ipc_conn *c); /* NULL: no-op */
/* A per-connection user pointer (NULL at first). */
void gs_ipc_conn_set_data(gs_ipc_conn *c, void *data);
void *gs_ipc_conn_get_data(gs_ipc_conn *c);
/* The peer's address as text ("ipc", "127.0.0.1:5000"); borrowed. */
const char *gs_ipc_conn_peer(gs_ipc_conn *c);

#endif
