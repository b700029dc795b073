/* fuzz_http.c - libFuzzer target for the gateway's HTTP/1.1 server
 * (gateway/http.c, http_parse.c, http_write.c over llhttp): request line,
 * headers, bodies (plain and chunked), limits, pipelining, Expect,
 * upgrades, and the responses written for them.
 *
 * Input: one control byte, then the bytes a client sends on one
 * connection. The control byte is the size of each write to the socket
 * (1..255; 0: all at once), so requests split anywhere are tried. The
 * handler answers by the first letter after the path's "/":
 *   s  a chunked stream of the body in two writes (SSE-like)
 *   e  an OpenAI-shaped JSON error (404)
 *   d  nothing until later: answered after the input ends (with more
 *      requests pipelined behind it), or aborted by the client's EOF
 *   u  takes the socket (gs_http_upgrade) and closes it
 *   anything else: 200 with the body echoed.
 * Small limits (2 KiB of headers, 4 KiB of body) so that inputs reach
 * them. Any crash, sanitizer report, trap or hang is a finding. Built with
 * libFuzzer (GS_FUZZ=ON, tests/fuzz/run.sh) and as replay_http (ctest). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/fuzz_conn.h"

static gs_http_req *held; /* a 'd' request not answered yet */

static void on_abort(gs_http_req *r, void *user)
{
    (void)user;
    if (r == held)
        held = NULL;
    /* the final call after an abort only frees */
    if (gs_http_respond(r, 200, "text/plain", NULL, "late", 4) != GS_EIO)
        __builtin_trap();
}

static void on_closed(uv_handle_t *h)
{
    free(h);
}

static void handler(gs_http_req *r, void *user)
{
    (void)user;
    const char *path = gs_http_req_path(r);
    size_t n;
    const uint8_t *body = gs_http_req_body(r, &n);
    if (body[n] != 0) /* the promised NUL after the body */
        __builtin_trap();
    const char *host = gs_http_req_header(r, "host");
    size_t hl = host ? strlen(host) : 0;
    (void)gs_http_req_query(r);
    (void)gs_http_req_method(r);
    (void)gs_http_req_peer(r);
    char kind = path[0] == '/' ? path[1] : 0;
    switch (kind) {
    case 's':
        if (gs_http_stream_begin(r, 200, "text/event-stream", "Cache-Control: no-cache\r\n")) {
            gs_http_stream_end(r);
            return;
        }
        gs_http_stream_write(r, body, n / 2);
        gs_http_stream_write(r, body + n / 2, n - n / 2);
        gs_http_stream_end(r);
        return;
    case 'e':
        gs_http_respond_error(r, 404, NULL, path);
        return;
    case 'd':
        if (held) /* cannot be: one request at a time per connection */
            __builtin_trap();
        held = r;
        gs_http_req_on_abort(r, on_abort, NULL);
        return;
    case 'u': {
        uv_tcp_t *tcp;
        uint8_t *extra;
        size_t extra_len;
        static const char resp[] = "HTTP/1.1 101 Switching Protocols\r\n\r\n";
        if (gs_http_upgrade(r, resp, sizeof resp - 1, &tcp, &extra, &extra_len) == 0) {
            free(extra);
            uv_close((uv_handle_t *)tcp, on_closed);
        }
        return;
    }
    default:
        gs_http_respond(r, 200, hl % 2 ? "application/json" : "text/plain", "X-Fuzz: 1\r\n", body,
                        n);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uv_loop_t *loop = fz_loop_get();
    gs_http_params p = {.handler = handler, .max_header_bytes = 2048, .max_body_bytes = 4096};
    gs_http_server *s;
    gs_diag d;
    if (gs_http_server_new(loop, &p, &s, &d))
        abort();
    int client;
    if (fz_conn_open(s, &client))
        abort();
    held = NULL;
    fz_send(client, data + 1, size - 1, data[0]);
    /* answer the held requests: each may let the next pipelined one in */
    for (int i = 0; held && i < 1000; i++) {
        gs_http_req *r = held;
        held = NULL;
        gs_http_respond(r, 200, "text/plain", NULL, "done", 4);
        fz_pump(client);
    }
    fz_finish(s, client, NULL);
    if (held) /* the EOF aborted it, which answered it */
        __builtin_trap();
    return 0;
}
