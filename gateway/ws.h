/* ws.h - RFC 6455 WebSocket connections on sockets taken over from the
 * HTTP server (gs_http_upgrade).
 *
 * The handshake (Sec-WebSocket-Key -> Sec-WebSocket-Accept: SHA-1 and
 * base64 from OpenSSL, version 13 only) and the framing, done by libwslay's
 * event API: masking of client frames (an unmasked one: close 1002),
 * fragmented messages (delivered whole), ping/pong, close handshake with
 * status codes, UTF-8 checks of text messages (1007), frame and message
 * size limits (1009), and an idle timeout with pings.
 *
 * Knows nothing of the JSON protocol spoken over it (routes_ws.c).
 * Built only with libwslay (GS_HAVE_WSLAY); gs_ws_accept_key needs only
 * OpenSSL.
 *
 * Threading: everything on the loop thread that owns the socket. */
#ifndef GS_WS_H
#define GS_WS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/err.h"
#include "gateway/http.h"

/* Close codes (RFC 6455 section 7.4.1). */
enum {
    GS_WS_NORMAL = 1000,
    GS_WS_GOING_AWAY = 1001, /* server drain */
    GS_WS_PROTOCOL = 1002,
    GS_WS_UNSUPPORTED = 1003,
    GS_WS_NO_STATUS = 1005,
    GS_WS_ABNORMAL = 1006, /* the TCP connection ended without a close frame */
    GS_WS_BAD_DATA = 1007, /* invalid UTF-8 in a text message */
    GS_WS_POLICY = 1008,   /* e.g. a bad API key */
    GS_WS_TOO_BIG = 1009,
    GS_WS_INTERNAL = 1011,
};

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key (borrowed, len bytes):
 * base64(SHA-1(key + the RFC's GUID)), 28 characters and a NUL into out.
 * 0, or GS_EINVAL for a key that is not base64 of 16 bytes. Pure. */
int gs_ws_accept_key(const char *key, size_t len, char out[29]);

/* Checks an upgrade request's headers (borrowed from r): Upgrade:
 * websocket, Connection: upgrade, Sec-WebSocket-Version: 13 and a valid
 * Sec-WebSocket-Key. 0 with accept filled; or the HTTP status to answer
 * (400, or 426 for a missing Upgrade or another version: answer it with
 * "Sec-WebSocket-Version: 13") and msg filled. Answers nothing itself. */
int gs_ws_check_request(const gs_http_req *r, char accept[29], char *msg, size_t cap);

typedef struct gs_ws gs_ws; /* opaque: one connection */

typedef struct {
    size_t max_message_bytes;  /* a whole (reassembled) message; 0: 32 MiB */
    size_t max_frame_bytes;    /* one frame's payload; 0: max_message_bytes */
    uint32_t ping_interval_ms; /* a ping after this long without input; 0: 20 s */
    uint32_t idle_timeout_ms;  /* nothing received (pongs count): close 1001; 0: 60 s */
    uint32_t close_timeout_ms; /* wait for the peer's close frame; 0: 3 s */
    uint32_t tick_ms;          /* on_tick period; 0: 1 s */
    /* A peer that stops reading: bytes wait to be written and none is
     * taken for send_timeout_ms (checked each tick), or more than
     * max_pending bytes wait: the connection is dropped (no close
     * handshake: the peer reads nothing). 0: 60 s, 8 MiB. The socket's
     * send buffer is capped at sndbuf so that the kernel does
     * not absorb megabytes first (0: 64 KiB). */
    uint32_t send_timeout_ms;
    size_t max_pending;
    uint32_t sndbuf;
} gs_ws_params;

typedef struct {
    /* One whole text message (valid UTF-8; s borrowed for the call, a NUL
     * follows its n bytes). */
    void (*on_text)(gs_ws *ws, void *user, const char *s, size_t n);
    /* One whole binary message (borrowed for the call). */
    void (*on_binary)(gs_ws *ws, void *user, const uint8_t *p, size_t n);
    /* Every tick_ms while the connection is open (may be NULL). */
    void (*on_tick)(gs_ws *ws, void *user);
    /* Once, when the connection is gone (after the close handshake, an
     * error or the peer's disconnect). code: the close code sent or
     * received (GS_WS_ABNORMAL when none). ws is freed after it returns. */
    void (*on_close)(gs_ws *ws, void *user, int code);
} gs_ws_cbs;

/* Answers r with 101 Switching Protocols (accept from
 * gs_ws_check_request), takes its socket over (gs_http_upgrade) and starts
 * the WebSocket on it. The final call for r, whatever it returns. On
 * success *out is the connection; on_close will be called exactly once
 * (never before this returns). On error no callback is called and nothing
 * is left open: GS_EIO (the client is gone), GS_ENOMEM (answered 503).
 * cbs is copied; p may be NULL. */
int gs_ws_accept(gs_http_req *r, const char accept[29], const gs_ws_params *p, const gs_ws_cbs *cbs,
                 void *user, gs_ws **out);

/* Queues one text message (s: n bytes of UTF-8, copied). 0; GS_EIO once
 * the connection is closing, or when the message would put it past
 * max_pending (the connection is then dropped); GS_ENOMEM. */
int gs_ws_send_text(gs_ws *ws, const char *s, size_t n);
/* Starts the close handshake with code and a reason (UTF-8, <= 123 bytes,
 * may be NULL). Later messages are dropped (GS_EIO). Repeated calls do
 * nothing. on_close follows once the peer answers (or close_timeout_ms). */
void gs_ws_close(gs_ws *ws, int code, const char *reason);
/* Stops reading from the peer (the handler is busy with a message, e.g.
 * parsing it off the loop) until as many gs_ws_resume calls. Messages
 * whose bytes were already read may still be delivered meanwhile (at most
 * a few KiB). */
void gs_ws_pause(gs_ws *ws);
void gs_ws_resume(gs_ws *ws);
/* Bytes queued for the socket and not yet written (back-pressure). */
size_t gs_ws_pending(const gs_ws *ws);
/* The client's address as text (copied at accept). */
const char *gs_ws_peer(const gs_ws *ws);

#endif
