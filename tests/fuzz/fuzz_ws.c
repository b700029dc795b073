/* fuzz_ws.c - libFuzzer target for the WebSocket layer (gateway/ws.c over
 * libwslay): frames after a valid handshake, as a client would send them
 * on one connection of the gateway's HTTP server.
 *
 * Input: one control byte (the size of each write to the socket, 1..255;
 * 0: all at once), then the bytes sent after the fixed upgrade request
 * below: frames, masked or not, fragmented, control frames, close codes,
 * bad UTF-8, oversized lengths. The first write carries the handshake and
 * the first frames together (they reach ws.c as the upgrade's extra
 * bytes). The application echoes each text message, closes (1000) on the
 * text "close", and closes (1008) on a binary message starting with 'c'.
 * Limits: 4 KiB per message. The session must end (on_close exactly once)
 * after the client's EOF; a crash, sanitizer report, trap or hang is a
 * finding. Built with libFuzzer (GS_FUZZ=ON) and as replay_ws (ctest). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/ws.h"
#include "tests/fuzz/fuzz_conn.h"

static const char handshake[] = "GET /v1/ws HTTP/1.1\r\n"
                                "Host: fuzz\r\n"
                                "Upgrade: websocket\r\n"
                                "Connection: Upgrade\r\n"
                                "Sec-WebSocket-Version: 13\r\n"
                                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                "\r\n";

static int n_open, n_closed;

static void on_text(gs_ws *ws, void *user, const char *s, size_t n)
{
    (void)user;
    if (s[n] != 0)
        __builtin_trap();
    if (n == 5 && memcmp(s, "close", 5) == 0)
        gs_ws_close(ws, GS_WS_NORMAL, "bye");
    else
        gs_ws_send_text(ws, s, n);
}

static void on_binary(gs_ws *ws, void *user, const uint8_t *p, size_t n)
{
    (void)user;
    if (n && p[0] == 'c')
        gs_ws_close(ws, GS_WS_POLICY, NULL);
}

static void on_close(gs_ws *ws, void *user, int code)
{
    (void)ws;
    (void)user;
    if (code < 1000 || code > 4999)
        __builtin_trap();
    n_closed++;
}

static void handler(gs_http_req *r, void *user)
{
    (void)user;
    char accept[29], msg[160];
    int st = gs_ws_check_request(r, accept, msg, sizeof msg);
    if (st) {
        gs_http_respond_error(r, st, NULL, msg);
        return;
    }
    gs_ws_params wp = {.max_message_bytes = 4096};
    gs_ws_cbs cbs = {on_text, on_binary, NULL, on_close};
    gs_ws *ws;
    if (gs_ws_accept(r, accept, &wp, &cbs, NULL, &ws) == 0)
        n_open++;
}

static int done(gs_http_server *s)
{
    return s->n_conns == 0 && n_closed == n_open;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uv_loop_t *loop = fz_loop_get();
    gs_http_params p = {.handler = handler};
    gs_http_server *s;
    gs_diag d;
    if (gs_http_server_new(loop, &p, &s, &d))
        abort();
    int client;
    if (fz_conn_open(s, &client))
        abort();
    n_open = n_closed = 0;
    size_t chunk = data[0];
    size_t first = size - 1 < chunk || !chunk ? size - 1 : chunk;
    uint8_t *buf = malloc(sizeof handshake - 1 + first);
    if (!buf)
        abort();
    memcpy(buf, handshake, sizeof handshake - 1);
    memcpy(buf + sizeof handshake - 1, data + 1, first);
    fz_send(client, buf, sizeof handshake - 1 + first, 0);
    free(buf);
    fz_send(client, data + 1 + first, size - 1 - first, chunk);
    fz_finish(s, client, done);
    if (n_open != 1 || n_closed != 1)
        __builtin_trap();
    return 0;
}
