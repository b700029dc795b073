/* bench_gateway.c - a client of glmserve's gateway that measures its cost
 * per streamed request: the same jobs as bench_worker --url, sent over
 * HTTP (POST /v1/chat/completions, "stream": true, Server-Sent Events) or
 * over the WebSocket (GET /v1/ws, "ask" messages).
 *
 *   bench_gateway --url http://HOST:PORT --mode sse|ws [--levels 1,64]
 *       [--requests N] [--max-tokens N] [--prompt TEXT] [--tag STR]
 *       [--temperature T]
 *
 * For each concurrency level C: a closed loop with C requests in flight, a
 * new one sent as soon as one ends, until --requests (default max(2C, 8))
 * have ended. Request i's text is "Request i. " + the tag + the prompt,
 * the text bench_worker's jobs have (its --prompt can carry the same tag),
 * so the rows compare with bench_worker's. It prints one markdown row per
 * level: jobs ok / failed, output tokens/s (the completion_tokens of the
 * final usage, over the level's wall time) and TTFT p50 / p99: send -> the
 * first non-empty content (an SSE chunk's delta.content, a ws delta's
 * content).
 *
 * Connections: C slots, each its own socket, opened (and for ws upgraded)
 * before the level's clock starts. SSE: one keep-alive connection per
 * slot, one request after another on it (a connection the server closed
 * is opened again, inside the next request's time). ws: one socket per
 * slot, asks sent one after another on it.
 *
 * Minimal HTTP/1.1 (chunked transfer decoding of the event stream) and
 * minimal WebSocket client (RFC 6455: the upgrade with Sec-WebSocket-Accept
 * checked, masked text frames out, 7/16/64-bit lengths in, fragments
 * joined, pings answered). A bad or unexpected answer fails its request
 * with a one-line reason on stderr and closes its socket; every request
 * has a 60 s timeout, so the tool never hangs.
 *
 * Exit status: 0 when every request ended ok, 1 when one failed or the
 * server could not be reached, 2 for bad options.
 *
 * Threading: one thread; non-blocking sockets and poll().
 *
 * One file past the usual 800 lines on purpose: a benchmark client meant
 * to be read in one go, whose HTTP, SSE, WebSocket and loop parts all work
 * on the same slot struct and are not used elsewhere. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BG_MAX_LEVELS 16
#define BG_TIMEOUT_NS (60ull * 1000000000ull)
#define BG_MAX_MESSAGE (16u << 20) /* a longer ws message or SSE event fails */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

typedef struct {
    const char *url, *prompt, *tag;
    int ws;
    int levels[BG_MAX_LEVELS], n_levels;
    int requests, max_tokens;
    double temperature;
    char host[256], port[16];
} options;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- byte buffers ------------------------------------------------------------------- */

typedef struct {
    char *p;
    size_t off, n, cap; /* live bytes: p[off .. n) */
} buf;

static int buf_put(buf *b, const void *s, size_t len)
{
    if (b->off && b->n + len > b->cap) {
        memmove(b->p, b->p + b->off, b->n - b->off);
        b->n -= b->off;
        b->off = 0;
    }
    if (b->n + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + len + 1)
            cap *= 2;
        char *t = realloc(b->p, cap);
        if (!t)
            return -1;
        b->p = t;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = 0;
    return 0;
}

static size_t buf_len(const buf *b)
{
    return b->n - b->off;
}

static char *buf_data(const buf *b)
{
    return b->p ? b->p + b->off : NULL;
}

static void buf_eat(buf *b, size_t len)
{
    b->off += len;
    if (b->off == b->n)
        b->off = b->n = 0;
}

static void buf_clear(buf *b)
{
    b->off = b->n = 0;
}

/* ---- one request's result and one connection slot ----------------------------------- */

typedef struct {
    uint64_t sent_ns, first_ns;
    long completion_tokens;
    int ok, ended;
} result;

enum { S_CLOSED, S_CONNECTING, S_HANDSHAKE, S_READY };
enum { CH_SIZE, CH_DATA, CH_CRLF, CH_TRAILER, CH_END };

typedef struct {
    int fd, state;
    buf in, out;
    int req; /* the request in flight, or -1 */
    int queued;
    char accept[29]; /* ws: the Sec-WebSocket-Accept we expect */
    /* SSE: the response being read */
    int hdr_done, chunked, conn_close, ch_state, saw_done, saw_usage;
    unsigned long long ch_left;
    buf body; /* de-chunked event stream */
    /* ws: a fragmented message being joined */
    buf frag;
    int frag_on;
} slot;

typedef struct {
    options o;
    struct addrinfo *addr;
    slot *slots;
    int *which; /* poll_once: the slot of each pollfd */
    int n_slots;
    result *res;
    const char *phase; /* for reasons: "connect" before the level starts */
} bench;

static void slot_close(slot *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    s->state = S_CLOSED;
    s->queued = 0;
    buf_clear(&s->in);
    buf_clear(&s->out);
    buf_clear(&s->body);
    buf_clear(&s->frag);
    s->frag_on = 0;
}

/* One line on stderr, newlines flattened. */
static void say(int req, const char *fmt, const char *a, const char *b)
{
    char line[512];
    snprintf(line, sizeof line, fmt, a ? a : "", b ? b : "");
    for (char *p = line; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    if (req >= 0)
        fprintf(stderr, "bench_gateway: request %d: %s\n", req, line);
    else
        fprintf(stderr, "bench_gateway: %s\n", line);
}

/* Ends the slot's request: ok, or failed with a reason (the socket closes). */
static void finish(bench *B, slot *s, int ok, const char *fmt, const char *a, const char *b)
{
    if (!ok) {
        say(s->req, fmt, a, b);
        slot_close(s);
    }
    if (s->req >= 0) {
        result *r = &B->res[s->req];
        r->ok = ok;
        r->ended = 1;
    }
    s->req = -1;
    s->queued = 0;
}

/* ---- the text of a request ---------------------------------------------------------- */

static json_t *messages_json(const options *o, int i)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "Request %d. ", i);
    size_t n = strlen(prefix) + strlen(o->tag) + strlen(o->prompt) + 1;
    char *text = malloc(n);
    if (!text)
        return NULL;
    snprintf(text, n, "%s%s%s", prefix, o->tag, o->prompt);
    json_t *m = json_pack("[{s:s, s:[{s:s, s:s}]}]", "role", "user", "content", "type", "text",
                          "text", text);
    free(text);
    return m;
}

/* The HTTP request (SSE) or the ask frame's JSON (ws) of request i; owned. */
static char *request_json(const options *o, int i)
{
    json_t *m = messages_json(o, i);
    json_t *j;
    if (o->ws) {
        char id[32];
        snprintf(id, sizeof id, "r%d", i);
        j = json_pack("{s:s, s:s, s:o, s:i, s:f}", "type", "ask", "id", id, "messages", m,
                      "max_tokens", o->max_tokens, "temperature", o->temperature);
    } else {
        j = json_pack("{s:o, s:i, s:f, s:b, s:{s:b}}", "messages", m, "max_tokens", o->max_tokens,
                      "temperature", o->temperature, "stream", 1, "stream_options", "include_usage",
                      1);
    }
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

/* ---- WebSocket frames --------------------------------------------------------------- */

/* Appends one masked frame (FIN set) to out; 0 or -1. */
static int ws_frame(buf *out, int opcode, const char *p, size_t n)
{
    unsigned char h[14];
    size_t hn = 0;
    h[hn++] = (unsigned char)(0x80 | opcode);
    if (n < 126) {
        h[hn++] = (unsigned char)(0x80 | n);
    } else if (n < 65536) {
        h[hn++] = 0x80 | 126;
        h[hn++] = (unsigned char)(n >> 8);
        h[hn++] = (unsigned char)n;
    } else {
        h[hn++] = 0x80 | 127;
        for (int k = 7; k >= 0; k--)
            h[hn++] = (unsigned char)((uint64_t)n >> (8 * k));
    }
    unsigned char mask[4];
    if (RAND_bytes(mask, 4) != 1)
        return -1;
    memcpy(h + hn, mask, 4);
    hn += 4;
    if (buf_put(out, h, hn))
        return -1;
    size_t at = out->n;
    if (buf_put(out, p, n))
        return -1;
    for (size_t k = 0; k < n; k++)
        out->p[at + k] ^= (char)mask[k & 3];
    return 0;
}

static int ws_handshake(bench *B, slot *s)
{
    unsigned char raw[16], sha[SHA_DIGEST_LENGTH];
    char key[32], cat[96];
    if (RAND_bytes(raw, sizeof raw) != 1)
        return -1;
    EVP_EncodeBlock((unsigned char *)key, raw, sizeof raw);
    snprintf(cat, sizeof cat, "%s%s", key, WS_GUID);
    SHA1((const unsigned char *)cat, strlen(cat), sha);
    EVP_EncodeBlock((unsigned char *)s->accept, sha, sizeof sha);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /v1/ws HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     B->o.host, B->o.port, key);
    return buf_put(&s->out, req, (size_t)n);
}

/* ---- HTTP headers ------------------------------------------------------------------- */

/* The value of header name in the head (NUL-terminated, CRLF lines) copied
 * to v; 1 found, 0 not. */
static int header(const char *head, const char *name, char *v, size_t cap)
{
    size_t nl = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
        const char *l = p + 2;
        if (!strncasecmp(l, name, nl) && l[nl] == ':') {
            const char *a = l + nl + 1, *e = strstr(a, "\r\n");
            while (*a == ' ' || *a == '\t')
                a++;
            size_t n = e ? (size_t)(e - a) : strlen(a);
            while (n && (a[n - 1] == ' ' || a[n - 1] == '\t'))
                n--;
            if (n >= cap)
                n = cap - 1;
            memcpy(v, a, n);
            v[n] = 0;
            return 1;
        }
    }
    return 0;
}

/* Splits off the response head if whole: its length (the blank line
 * included) with the status in *status, 0 when more bytes are needed, -1
 * when it is not HTTP/1.x. */
static long head_of(slot *s, int *status, char *head, size_t cap)
{
    char *d = buf_data(&s->in);
    size_t n = buf_len(&s->in);
    char *e = d ? memmem(d, n, "\r\n\r\n", 4) : NULL;
    if (!e)
        return n > 65536 ? -1 : 0;
    size_t hl = (size_t)(e - d) + 4;
    if (strncmp(d, "HTTP/1.", 7) || hl < 12)
        return -1;
    *status = atoi(d + 9);
    size_t c = hl < cap ? hl : cap - 1;
    memcpy(head, d, c);
    head[c] = 0;
    return (long)hl;
}

/* A short printable sample of what came, for a reason. */
static void sample(const char *p, size_t n, char out[161])
{
    size_t k = 0;
    for (size_t i = 0; i < n && k < 160; i++)
        out[k++] = (p[i] >= 32 && p[i] < 127) ? p[i] : ' ';
    out[k] = 0;
}

/* ---- SSE ---------------------------------------------------------------------------- */

/* One `data:` payload of the event stream: 0 go on, -1 the request failed
 * (said and closed). */
static int sse_data(bench *B, slot *s, const char *d, size_t n)
{
    result *r = &B->res[s->req];
    if (n == 6 && !memcmp(d, "[DONE]", 6)) {
        s->saw_done = 1;
        return 0;
    }
    if (s->saw_done) {
        finish(B, s, 0, "data after [DONE]", NULL, NULL);
        return -1;
    }
    json_error_t err;
    json_t *j = json_loadb(d, n, 0, &err);
    if (!json_is_object(j)) {
        char smp[161];
        sample(d, n, smp);
        finish(B, s, 0, "an SSE chunk is not a JSON object: %s", smp, NULL);
        json_decref(j);
        return -1;
    }
    json_t *e = json_object_get(j, "error");
    if (e) {
        const char *m = json_string_value(json_object_get(e, "message"));
        finish(B, s, 0, "error in the stream: %s", m ? m : "(no message)", NULL);
        json_decref(j);
        return -1;
    }
    json_t *u = json_object_get(j, "usage");
    if (json_is_object(u)) {
        json_t *ct = json_object_get(u, "completion_tokens");
        if (!json_is_integer(ct)) {
            finish(B, s, 0, "usage without completion_tokens", NULL, NULL);
            json_decref(j);
            return -1;
        }
        r->completion_tokens = (long)json_integer_value(ct);
        s->saw_usage = 1;
    }
    json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
    const char *c = json_string_value(json_object_get(json_object_get(ch, "delta"), "content"));
    if (c && *c && !r->first_ns)
        r->first_ns = now_ns();
    json_decref(j);
    return 0;
}

/* Handles the whole events in s->body; 0 go on, -1 failed. */
static int sse_events(bench *B, slot *s)
{
    for (;;) {
        char *d = buf_data(&s->body);
        size_t n = buf_len(&s->body);
        char *e = d ? memmem(d, n, "\n\n", 2) : NULL;
        if (!e) {
            if (n > BG_MAX_MESSAGE) {
                finish(B, s, 0, "an SSE event over 16 MiB", NULL, NULL);
                return -1;
            }
            return 0;
        }
        for (char *l = d; l < e;) {
            char *le = memchr(l, '\n', (size_t)(e - l));
            if (!le)
                le = e;
            if (le - l >= 5 && !memcmp(l, "data:", 5)) {
                char *v = l + 5;
                if (v < le && *v == ' ')
                    v++;
                size_t vn = (size_t)(le - v);
                if (vn && v[vn - 1] == '\r')
                    vn--;
                if (sse_data(B, s, v, vn))
                    return -1;
            }
            l = le + 1;
        }
        buf_eat(&s->body, (size_t)(e - d) + 2);
    }
}

/* The end of a response body: ok when [DONE] and a usage came. */
static void sse_end(bench *B, slot *s)
{
    if (buf_len(&s->body)) {
        finish(B, s, 0, "the stream ends inside an event", NULL, NULL);
    } else if (!s->saw_done || !s->saw_usage) {
        finish(B, s, 0, "the stream ended without %s", s->saw_done ? "a usage chunk" : "[DONE]",
               NULL);
    } else {
        int close_it = s->conn_close;
        finish(B, s, 1, NULL, NULL, NULL);
        if (close_it)
            slot_close(s);
    }
}

/* Reads what s->in holds of the SSE response. */
static void sse_input(bench *B, slot *s)
{
    if (s->req < 0) {
        if (buf_len(&s->in)) {
            char smp[161];
            sample(buf_data(&s->in), buf_len(&s->in), smp);
            say(-1, "bytes with no request in flight: %s%s", smp, NULL);
            slot_close(s);
        }
        return;
    }
    if (!s->hdr_done) {
        char head[4096], v[256];
        int status = 0;
        long hl = head_of(s, &status, head, sizeof head);
        if (hl == 0)
            return;
        if (hl < 0) {
            char smp[161];
            sample(buf_data(&s->in), buf_len(&s->in), smp);
            finish(B, s, 0, "not an HTTP response: %s%s", smp, NULL);
            return;
        }
        buf_eat(&s->in, (size_t)hl);
        if (status != 200) {
            char smp[161], st[16];
            sample(buf_data(&s->in), buf_len(&s->in), smp);
            snprintf(st, sizeof st, "%d", status);
            finish(B, s, 0, "HTTP %s: %s", st, smp);
            return;
        }
        if (!header(head, "Content-Type", v, sizeof v) || strncmp(v, "text/event-stream", 17)) {
            finish(B, s, 0, "Content-Type '%s' is not text/event-stream", v, NULL);
            return;
        }
        if (!header(head, "Transfer-Encoding", v, sizeof v) || strcasecmp(v, "chunked")) {
            finish(B, s, 0, "the event stream is not chunked", NULL, NULL);
            return;
        }
        s->conn_close = header(head, "Connection", v, sizeof v) && !strcasecmp(v, "close");
        s->hdr_done = 1;
        s->ch_state = CH_SIZE;
    }
    for (;;) {
        char *d = buf_data(&s->in);
        size_t n = buf_len(&s->in);
        if (s->ch_state == CH_DATA) {
            if (!n)
                return;
            size_t take = n < s->ch_left ? n : (size_t)s->ch_left;
            if (buf_put(&s->body, d, take)) {
                finish(B, s, 0, "out of memory", NULL, NULL);
                return;
            }
            buf_eat(&s->in, take);
            s->ch_left -= take;
            if (!s->ch_left)
                s->ch_state = CH_CRLF;
            if (sse_events(B, s))
                return;
            continue;
        }
        char *e = d ? memmem(d, n, "\r\n", 2) : NULL;
        if (!e) {
            if (n > 4096)
                finish(B, s, 0, "a chunk line over 4096 bytes", NULL, NULL);
            return;
        }
        size_t ln = (size_t)(e - d);
        if (s->ch_state == CH_CRLF) {
            if (ln) {
                finish(B, s, 0, "no CRLF after a chunk's data", NULL, NULL);
                return;
            }
            s->ch_state = CH_SIZE;
        } else if (s->ch_state == CH_SIZE) {
            char *end;
            errno = 0;
            unsigned long long size = strtoull(d, &end, 16);
            if (end == d || errno || (end != e && *end != ';' && *end != ' ')) {
                char smp[161];
                sample(d, ln, smp);
                finish(B, s, 0, "a bad chunk size line: %s%s", smp, NULL);
                return;
            }
            s->ch_left = size;
            s->ch_state = size ? CH_DATA : CH_TRAILER;
        } else if (s->ch_state == CH_TRAILER && ln == 0) {
            buf_eat(&s->in, 2);
            s->hdr_done = 0;
            if (buf_len(&s->in)) {
                finish(B, s, 0, "bytes after the end of the response", NULL, NULL);
                return;
            }
            sse_end(B, s);
            return;
        }
        buf_eat(&s->in, ln + 2);
    }
}

/* ---- ws ----------------------------------------------------------------------------- */

/* One whole text message from the server; 0 go on, -1 failed. */
static int ws_message(bench *B, slot *s, const char *d, size_t n)
{
    if (s->req < 0) {
        char smp[161];
        sample(d, n, smp);
        say(-1, "a ws message with no ask in flight: %s%s", smp, NULL);
        slot_close(s);
        return -1;
    }
    result *r = &B->res[s->req];
    json_error_t err;
    json_t *j = json_loadb(d, n, 0, &err);
    const char *type = json_string_value(json_object_get(j, "type"));
    const char *id = json_string_value(json_object_get(j, "id"));
    char want[32];
    snprintf(want, sizeof want, "r%d", s->req);
    int rc = 0;
    if (!type) {
        char smp[161];
        sample(d, n, smp);
        finish(B, s, 0, "a ws message without a type: %s%s", smp, NULL);
        rc = -1;
    } else if (!strcmp(type, "error")) {
        const char *m = json_string_value(json_object_get(j, "message"));
        finish(B, s, 0, "ws error: %s", m ? m : "(no message)", NULL);
        rc = -1;
    } else if (!id || strcmp(id, want)) {
        finish(B, s, 0, "a ws '%s' for id '%s', not this ask", type, id ? id : "(none)");
        rc = -1;
    } else if (!strcmp(type, "delta")) {
        const char *c = json_string_value(json_object_get(j, "content"));
        if (c && *c && !r->first_ns)
            r->first_ns = now_ns();
    } else if (!strcmp(type, "done")) {
        const char *f = json_string_value(json_object_get(j, "finish_reason"));
        json_t *ct = json_object_get(json_object_get(j, "usage"), "completion_tokens");
        if (!f || (strcmp(f, "stop") && strcmp(f, "length"))) {
            finish(B, s, 0, "done with finish_reason '%s'", f ? f : "(none)", NULL);
            rc = -1;
        } else if (!json_is_integer(ct)) {
            finish(B, s, 0, "done without usage.completion_tokens", NULL, NULL);
            rc = -1;
        } else {
            r->completion_tokens = (long)json_integer_value(ct);
            finish(B, s, 1, NULL, NULL, NULL);
        }
    } else {
        finish(B, s, 0, "an unexpected ws message type '%s'", type, NULL);
        rc = -1;
    }
    json_decref(j);
    return rc;
}

/* Reads what s->in holds of ws frames (after the upgrade). */
static void ws_input(bench *B, slot *s)
{
    for (;;) {
        unsigned char *d = (unsigned char *)buf_data(&s->in);
        size_t n = buf_len(&s->in);
        if (n < 2)
            return;
        int fin = d[0] & 0x80, op = d[0] & 0x0f, masked = d[1] & 0x80;
        uint64_t len = d[1] & 0x7f;
        size_t hl = 2;
        if (len == 126) {
            if (n < 4)
                return;
            len = (uint64_t)d[2] << 8 | d[3];
            hl = 4;
        } else if (len == 127) {
            if (n < 10)
                return;
            len = 0;
            for (int k = 0; k < 8; k++)
                len = len << 8 | d[2 + k];
            hl = 10;
        }
        if (len > BG_MAX_MESSAGE) {
            if (s->req >= 0)
                finish(B, s, 0, "a ws frame over 16 MiB", NULL, NULL);
            else
                slot_close(s);
            return;
        }
        unsigned char mask[4] = {0};
        if (masked) {
            if (n < hl + 4)
                return;
            memcpy(mask, d + hl, 4);
            hl += 4;
        }
        if (n < hl + len)
            return;
        char *p = (char *)d + hl;
        for (size_t k = 0; masked && k < len; k++)
            p[k] ^= (char)mask[k & 3];
        if (op == 0x9) { /* ping: pong with its payload */
            if (ws_frame(&s->out, 0xA, p, (size_t)len)) {
                finish(B, s, 0, "out of memory", NULL, NULL);
                return;
            }
        } else if (op == 0x8) {
            char code[16] = "none";
            if (len >= 2)
                snprintf(code, sizeof code, "%d", (unsigned char)p[0] << 8 | (unsigned char)p[1]);
            if (s->req >= 0)
                finish(B, s, 0, "the server closed the ws (code %s)", code, NULL);
            else
                slot_close(s);
            return;
        } else if (op == 0x1 || op == 0x2 || op == 0x0) {
            if (op != 0 && s->frag_on) {
                finish(B, s, 0, "a new ws message inside a fragmented one", NULL, NULL);
                return;
            }
            if (op == 0 && !s->frag_on) {
                finish(B, s, 0, "a ws continuation frame with nothing to continue", NULL, NULL);
                return;
            }
            if (op != 0)
                s->frag_on = op; /* 1 text, 2 binary */
            if (buf_put(&s->frag, p, (size_t)len) || buf_len(&s->frag) > BG_MAX_MESSAGE) {
                finish(B, s, 0, "a ws message over 16 MiB", NULL, NULL);
                return;
            }
            buf_eat(&s->in, hl + (size_t)len);
            if (fin) {
                int kind = s->frag_on;
                s->frag_on = 0;
                if (kind == 1 && ws_message(B, s, buf_data(&s->frag), buf_len(&s->frag)))
                    return;
                if (kind == 2 && s->req >= 0) {
                    finish(B, s, 0, "a binary ws message", NULL, NULL);
                    return;
                }
                buf_clear(&s->frag);
            }
            continue;
        } /* a pong, or an unknown opcode: skipped */
        buf_eat(&s->in, hl + (size_t)len);
    }
}

/* ---- sockets ------------------------------------------------------------------------ */

static int slot_connect(bench *B, slot *s)
{
    slot_close(s);
    const struct addrinfo *a = B->addr;
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, a->ai_addr, a->ai_addrlen) && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    s->fd = fd;
    s->state = S_CONNECTING;
    s->hdr_done = 0;
    return 0;
}

/* Queues the slot's request once the socket is ready for it. */
static int slot_queue(bench *B, slot *s)
{
    if (s->req < 0 || s->queued || s->state != S_READY)
        return 0;
    char *js = request_json(&B->o, s->req);
    if (!js)
        return -1;
    int rc;
    if (B->o.ws) {
        rc = ws_frame(&s->out, 0x1, js, strlen(js));
    } else {
        char head[512];
        int n = snprintf(head, sizeof head,
                         "POST /v1/chat/completions HTTP/1.1\r\nHost: %s:%s\r\n"
                         "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
                         "Content-Length: %zu\r\n\r\n",
                         B->o.host, B->o.port, strlen(js));
        rc = buf_put(&s->out, head, (size_t)n) || buf_put(&s->out, js, strlen(js));
        s->hdr_done = s->saw_done = s->saw_usage = 0;
        buf_clear(&s->body);
    }
    free(js);
    s->queued = 1;
    return rc ? -1 : 0;
}

/* Moves a ready-to-write socket on: connect done, bytes out. */
static void slot_write(bench *B, slot *s)
{
    if (s->state == S_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            if (s->req >= 0)
                finish(B, s, 0, "connect: %s", strerror(err), NULL);
            else {
                say(-1, "%s: connect: %s", B->phase, strerror(err));
                slot_close(s);
            }
            return;
        }
        if (B->o.ws) {
            if (ws_handshake(B, s)) {
                say(-1, "out of memory%s%s", NULL, NULL);
                slot_close(s);
                return;
            }
            s->state = S_HANDSHAKE;
        } else {
            s->state = S_READY;
        }
        if (slot_queue(B, s)) {
            finish(B, s, 0, "out of memory", NULL, NULL);
            return;
        }
    }
    while (buf_len(&s->out)) {
        ssize_t w = send(s->fd, buf_data(&s->out), buf_len(&s->out), MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (w < 0) {
            if (s->req >= 0)
                finish(B, s, 0, "send: %s", strerror(errno), NULL);
            else
                slot_close(s);
            return;
        }
        buf_eat(&s->out, (size_t)w);
    }
}

/* Reads the socket and hands the bytes to the protocol. */
static void slot_read(bench *B, slot *s)
{
    char tmp[65536];
    for (;;) {
        ssize_t r = recv(s->fd, tmp, sizeof tmp, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (r <= 0) {
            const char *why = r ? strerror(errno) : "the server closed the connection";
            if (s->req >= 0)
                finish(B, s, 0, "%s", why, NULL);
            else if (s->state != S_READY)
                say(-1, "%s: %s", B->phase, why), slot_close(s);
            else
                slot_close(s); /* an idle keep-alive connection the server closed */
            return;
        }
        if (buf_put(&s->in, tmp, (size_t)r)) {
            finish(B, s, 0, "out of memory", NULL, NULL);
            return;
        }
        if ((size_t)r < sizeof tmp)
            break;
    }
    if (s->state == S_HANDSHAKE) {
        char head[4096], v[64];
        int status = 0;
        long hl = head_of(s, &status, head, sizeof head);
        if (hl == 0)
            return;
        const char *why = NULL;
        char st[16] = "";
        if (hl < 0)
            why = "the upgrade's answer is not HTTP%s%s";
        else if (status != 101)
            snprintf(st, sizeof st, "%d", status), why = "the upgrade answered HTTP %s%s";
        else if (!header(head, "Sec-WebSocket-Accept", v, sizeof v) || strcmp(v, s->accept))
            why = "a wrong Sec-WebSocket-Accept%s%s";
        if (why) {
            if (s->req >= 0)
                finish(B, s, 0, why, st, NULL);
            else
                say(-1, why, st, NULL), slot_close(s);
            return;
        }
        buf_eat(&s->in, (size_t)hl);
        s->state = S_READY;
        if (slot_queue(B, s)) {
            finish(B, s, 0, "out of memory", NULL, NULL);
            return;
        }
    }
    if (s->state != S_READY)
        return;
    if (B->o.ws)
        ws_input(B, s);
    else
        sse_input(B, s);
}

/* One poll() round over the open slots, at most timeout_ms. */
static void poll_once(bench *B, struct pollfd *pf, int timeout_ms)
{
    int n = 0;
    int *which = B->which;
    for (int i = 0; i < B->n_slots; i++) {
        slot *s = &B->slots[i];
        if (s->fd < 0)
            continue;
        pf[n].fd = s->fd;
        pf[n].events = POLLIN;
        if (s->state == S_CONNECTING || buf_len(&s->out))
            pf[n].events |= POLLOUT;
        pf[n].revents = 0;
        which[n++] = i;
    }
    if (poll(pf, (nfds_t)n, timeout_ms) <= 0)
        return;
    for (int k = 0; k < n; k++) {
        slot *s = &B->slots[which[k]];
        if (s->fd != pf[k].fd)
            continue;
        if (pf[k].revents & (POLLOUT | POLLERR | POLLHUP) && s->state == S_CONNECTING)
            slot_write(B, s);
        else if (pf[k].revents & POLLOUT)
            slot_write(B, s);
        if (s->fd >= 0 && s->state != S_CONNECTING && pf[k].revents & (POLLIN | POLLERR | POLLHUP))
            slot_read(B, s);
        if (s->fd >= 0 && buf_len(&s->out))
            slot_write(B, s);
    }
}

/* ---- the closed loop ---------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(uint64_t *v, int n, double p)
{
    if (n == 0)
        return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_u64);
    int i = (int)(p * (n - 1) + 0.5);
    return v[i] * 1e-6;
}

/* Opens (and upgrades) C slots before the clock starts; 0 or -1. */
static int open_slots(bench *B, int C, struct pollfd *pf)
{
    B->phase = "opening the connections";
    for (int i = 0; i < C; i++) {
        slot *s = &B->slots[i];
        if (s->fd < 0 && slot_connect(B, s)) {
            say(-1, "connect: %s%s", strerror(errno), NULL);
            return -1;
        }
    }
    const uint64_t end = now_ns() + BG_TIMEOUT_NS;
    for (;;) {
        int ready = 0;
        for (int i = 0; i < C; i++) {
            if (B->slots[i].fd < 0)
                return -1; /* said why */
            ready += B->slots[i].state == S_READY;
        }
        if (ready == C)
            return 0;
        if (now_ns() > end) {
            char a[16], b[16];
            snprintf(a, sizeof a, "%d", ready);
            snprintf(b, sizeof b, "%d", C);
            say(-1, "%s of %s connections not ready in 60 s", a, b);
            return -1;
        }
        poll_once(B, pf, 100);
    }
}

/* Runs one level; prints its row; 0 all ok, 1 some failed, -1 unreachable. */
static int run_level(bench *B, int C, int N, struct pollfd *pf)
{
    if (open_slots(B, C, pf))
        return -1;
    B->phase = "request";
    memset(B->res, 0, (size_t)N * sizeof *B->res);
    const uint64_t t0 = now_ns();
    int sent = 0, done = 0;
    while (done < N) {
        for (int i = 0; i < C && sent < N; i++) {
            slot *s = &B->slots[i];
            if (s->req >= 0)
                continue;
            s->req = sent++;
            s->queued = 0;
            B->res[s->req].sent_ns = now_ns();
            if (s->fd < 0 && slot_connect(B, s)) {
                finish(B, s, 0, "connect: %s", strerror(errno), NULL);
            } else if (slot_queue(B, s)) {
                finish(B, s, 0, "out of memory", NULL, NULL);
            } else if (buf_len(&s->out)) {
                slot_write(B, s);
            }
        }
        poll_once(B, pf, 50);
        const uint64_t now = now_ns();
        for (int i = 0; i < C; i++) {
            slot *s = &B->slots[i];
            if (s->req >= 0 && now - B->res[s->req].sent_ns > BG_TIMEOUT_NS)
                finish(B, s, 0, "no answer within 60 s", NULL, NULL);
        }
        done = 0;
        for (int i = 0; i < sent; i++)
            done += B->res[i].ended;
    }
    const uint64_t t1 = now_ns();
    uint64_t *ttft = calloc((size_t)N, sizeof *ttft);
    if (!ttft)
        return -1;
    int ok = 0, nt = 0;
    long long toks = 0;
    for (int i = 0; i < N; i++) {
        const result *r = &B->res[i];
        if (!r->ok)
            continue;
        ok++;
        toks += r->completion_tokens;
        if (r->first_ns)
            ttft[nt++] = r->first_ns - r->sent_ns;
    }
    const double secs = (double)(t1 - t0) * 1e-9, tps = secs > 0 ? (double)toks / secs : 0;
    const double p50 = pct(ttft, nt, 0.5), p99 = pct(ttft, nt, 0.99);
    printf("| gateway (%s) | %d | %d / %d | %.1f | %.2f / %.2f |\n", B->o.ws ? "WS" : "SSE", C, ok,
           N - ok, tps, p50, p99);
    fflush(stdout);
    free(ttft);
    return ok == N ? 0 : 1;
}

/* ---- options ------------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_gateway --url http://HOST:PORT --mode sse|ws [--levels 1,64]\n"
               "       [--requests N] [--max-tokens N] [--prompt TEXT] [--tag STR]\n"
               "       [--temperature T]\n");
}

static int num(const char *flag, const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x >= lo && x <= hi)) {
        fprintf(stderr, "bench_gateway: %s: expected a number in [%g, %g], got '%s'\n", flag, lo,
                hi, v);
        return -1;
    }
    *out = x;
    return 0;
}

/* Parses argv; 0, 1 (--help printed), -1 (error printed). */
static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->levels[0] = 1;
    o->n_levels = 1;
    o->max_tokens = 32;
    o->prompt = "Describe what you see in detail.";
    o->tag = "";
    o->ws = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double x;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        }
        if (!v) {
            fprintf(stderr, "bench_gateway: %s needs a value (or is unknown)\n", a);
            return -1;
        }
        i++;
        if (!strcmp(a, "--url")) {
            o->url = v;
        } else if (!strcmp(a, "--mode")) {
            o->ws = !strcmp(v, "ws") ? 1 : !strcmp(v, "sse") ? 0 : -2;
            if (o->ws == -2) {
                fprintf(stderr, "bench_gateway: --mode: sse or ws, got '%s'\n", v);
                return -1;
            }
        } else if (!strcmp(a, "--prompt")) {
            o->prompt = v;
        } else if (!strcmp(a, "--tag")) {
            o->tag = v;
        } else if (!strcmp(a, "--levels")) {
            o->n_levels = 0;
            for (const char *p = v; *p;) {
                char *end;
                long l = strtol(p, &end, 10);
                if (end == p || l < 1 || l > 4096 || o->n_levels == BG_MAX_LEVELS ||
                    (*end && *end != ',')) {
                    fprintf(stderr, "bench_gateway: --levels: expected N,N,... got '%s'\n", v);
                    return -1;
                }
                o->levels[o->n_levels++] = (int)l;
                p = *end ? end + 1 : end;
            }
        } else if (!strcmp(a, "--requests")) {
            if (num(a, v, 1, 1e6, &x))
                return -1;
            o->requests = (int)x;
        } else if (!strcmp(a, "--max-tokens")) {
            if (num(a, v, 1, 1e6, &x))
                return -1;
            o->max_tokens = (int)x;
        } else if (!strcmp(a, "--temperature")) {
            if (num(a, v, 0, 100, &x))
                return -1;
            o->temperature = x;
        } else {
            fprintf(stderr, "bench_gateway: unknown option '%s'\n", a);
            return -1;
        }
    }
    if (!o->url || o->ws < 0) {
        fprintf(stderr, "bench_gateway: give --url and --mode\n");
        usage(stderr);
        return -1;
    }
    /* http://HOST[:PORT][/...] */
    const char *h = o->url;
    if (strncmp(h, "http://", 7)) {
        fprintf(stderr, "bench_gateway: --url: expected http://HOST:PORT, got '%s'\n", o->url);
        return -1;
    }
    h += 7;
    size_t hl = strcspn(h, ":/");
    if (!hl || hl >= sizeof o->host) {
        fprintf(stderr, "bench_gateway: --url: no host in '%s'\n", o->url);
        return -1;
    }
    memcpy(o->host, h, hl);
    o->host[hl] = 0;
    snprintf(o->port, sizeof o->port, "80");
    if (h[hl] == ':') {
        size_t pl = strcspn(h + hl + 1, "/");
        if (!pl || pl >= sizeof o->port) {
            fprintf(stderr, "bench_gateway: --url: a bad port in '%s'\n", o->url);
            return -1;
        }
        memcpy(o->port, h + hl + 1, pl);
        o->port[pl] = 0;
    }
    return 0;
}

int main(int argc, char **argv)
{
    bench B;
    memset(&B, 0, sizeof B);
    int pa = parse_args(argc, argv, &B.o);
    if (pa)
        return pa > 0 ? 0 : 2;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int gai = getaddrinfo(B.o.host, B.o.port, &hints, &B.addr);
    if (gai) {
        fprintf(stderr, "bench_gateway: %s: %s\n", B.o.host, gai_strerror(gai));
        return 1;
    }
    int max_c = 1, max_n = 0;
    for (int i = 0; i < B.o.n_levels; i++) {
        const int C = B.o.levels[i], N = B.o.requests ? B.o.requests : (2 * C > 8 ? 2 * C : 8);
        max_c = C > max_c ? C : max_c;
        max_n = N > max_n ? N : max_n;
    }
    B.slots = calloc((size_t)max_c, sizeof *B.slots);
    B.res = calloc((size_t)max_n, sizeof *B.res);
    B.which = calloc((size_t)max_c, sizeof *B.which);
    struct pollfd *pf = calloc((size_t)max_c, sizeof *pf);
    int status = 0;
    if (!B.slots || !B.res || !B.which || !pf) {
        fprintf(stderr, "bench_gateway: out of memory\n");
        status = 1;
    }
    for (int i = 0; i < max_c && !status; i++) {
        B.slots[i].fd = -1;
        B.slots[i].req = -1;
    }
    B.n_slots = max_c;
    if (!status)
        printf("| path | concurrency | jobs ok / failed | output tok/s | TTFT p50 / p99 (ms) |\n"
               "|---|---|---|---|---|\n");
    int unreachable = 0;
    for (int li = 0; li < B.o.n_levels && !unreachable && B.slots && B.res && B.which && pf; li++) {
        const int C = B.o.levels[li];
        const int N = B.o.requests ? B.o.requests : (2 * C > 8 ? 2 * C : 8);
        int rc = run_level(&B, C, N, pf);
        unreachable = rc < 0;
        if (rc)
            status = 1;
    }
    for (int i = 0; B.slots && i < B.n_slots; i++) {
        slot *s = &B.slots[i];
        slot_close(s);
        free(s->in.p);
        free(s->out.p);
        free(s->body.p);
        free(s->frag.p);
    }
    free(B.slots);
    free(B.which);
    free(B.res);
    free(pf);
    freeaddrinfo(B.addr);
    return status;
}
