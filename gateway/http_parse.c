/* http_parse.c - requests in: the llhttp callbacks that build a
 * gs_http_req, the limits checked while parsing, the parse loop that hands
 * one request at a time to the handler, and the request accessors.
 *
 * Pipelining: on_message_complete pauses llhttp, so llhttp_execute returns
 * right after a request; the bytes past it stay in the connection buffer
 * and are parsed only after that request's final call
 * (gs__http_conn_finish). The handler is called after llhttp_execute
 * returns, never from inside a callback, and the loop (not recursion)
 * goes on to the next request when the handler answers at once.
 *
 * Header bytes are counted from the first byte of the request line to the
 * end of the last header, including what llhttp skips without a callback
 * (spaces before a value): each span callback measures from hdr_mark, a
 * point in the buffer being parsed, and what is left at the end of a
 * buffer is added to hdr_bytes before the next one.
 * Threading: the loop thread only. */
#include "gateway/http_impl.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/clock.h"

/* ---- small helpers ------------------------------------------------------ */

int gs__hbuf_append(gs_hbuf *b, const void *data, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return GS_ENOMEM;
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = 0;
    return 0;
}

void gs__hbuf_free(gs_hbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* Room for n bytes in all (and the NUL). */
static int hbuf_reserve(gs_hbuf *b, size_t n)
{
    if (n + 1 <= b->cap)
        return 0;
    char *p = realloc(b->p, n + 1);
    if (!p)
        return GS_ENOMEM;
    if (!b->p)
        p[0] = 0;
    b->p = p;
    b->cap = n + 1;
    return 0;
}

/* The buffer's string, owned by the caller (""-copy when empty); b reset. */
static char *hbuf_take(gs_hbuf *b)
{
    char *p = b->p ? b->p : strdup("");
    b->p = NULL;
    b->len = b->cap = 0;
    return p;
}

void gs__http_req_unaccount(gs_http_req *r)
{
    if (r->acct_s)
        r->acct_s->body_mem -= r->body_acct;
    r->acct_s = NULL;
    r->body_acct = 0;
}

/* Counts n more body bytes of c's request; -1 past max_body_memory. */
static int body_account(gs_http_conn *c, size_t n)
{
    gs_http_server *s = c->s;
    if (n > s->p.max_body_memory || s->body_mem > s->p.max_body_memory - n)
        return -1;
    s->body_mem += n;
    c->req->body_acct += n;
    c->req->acct_s = s;
    return 0;
}

void gs__http_req_free(gs_http_req *r)
{
    if (!r)
        return;
    gs__http_req_unaccount(r);
    gs__hbuf_free(&r->url);
    gs__hbuf_free(&r->field);
    gs__hbuf_free(&r->value);
    gs__hbuf_free(&r->body);
    free(r->path);
    free(r->query);
    for (int i = 0; i < r->n_hdrs; i++) {
        free(r->hdrs[i].name);
        free(r->hdrs[i].value);
    }
    free(r->hdrs);
    free(r);
}

static int fail(gs_http_conn *c, int status, const char *msg)
{
    if (!c->err_status) {
        c->err_status = status;
        c->err_msg = msg;
    }
    return -1;
}

/* Counts header bytes up to the end of the span [at, at+len). */
static int hdr_account(gs_http_conn *c, const char *at, size_t len)
{
    if (c->phase != GS_PH_HEADERS)
        return 0;
    if (!c->hdr_mark)
        c->hdr_mark = at;
    if (c->hdr_bytes + (size_t)(at + len - c->hdr_mark) > c->s->p.max_header_bytes)
        return fail(c, 431, "request headers too large");
    return 0;
}

/* ---- llhttp callbacks --------------------------------------------------- */

static int on_message_begin(llhttp_t *p)
{
    gs_http_conn *c = p->data;
    gs_http_req *r = calloc(1, sizeof *r);
    if (!r)
        return fail(c, 503, "out of memory");
    r->c = c;
    r->start_ns = gs_clock_now_ns();
    memcpy(r->peer, c->peer, sizeof r->peer);
    c->req = r;
    c->phase = GS_PH_HEADERS;
    c->hdr_bytes = 0;
    c->hdr_mark = NULL;
    c->s->st.requests_total++;
    if (c->tmode != GS_TM_FIRST)
        gs__http_conn_timer(c, GS_TM_HEADERS);
    return 0;
}

static int on_method(llhttp_t *p, const char *at, size_t len)
{
    return hdr_account(p->data, at, len);
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    gs_http_conn *c = p->data;
    if (hdr_account(c, at, len))
        return -1;
    if (gs__hbuf_append(&c->req->url, at, len))
        return fail(c, 503, "out of memory");
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    gs_http_conn *c = p->data;
    if (hdr_account(c, at, len))
        return -1;
    if (gs__hbuf_append(&c->req->field, at, len))
        return fail(c, 503, "out of memory");
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    gs_http_conn *c = p->data;
    if (hdr_account(c, at, len))
        return -1;
    if (gs__hbuf_append(&c->req->value, at, len))
        return fail(c, 503, "out of memory");
    return 0;
}

/* One header line read: joined to an earlier one of the same name, or
 * added. */
static int on_header_value_complete(llhttp_t *p)
{
    gs_http_conn *c = p->data;
    gs_http_req *r = c->req;
    const char *name = r->field.p ? r->field.p : "";
    for (int i = 0; i < r->n_hdrs; i++) {
        if (strcasecmp(r->hdrs[i].name, name) != 0)
            continue;
        size_t a = strlen(r->hdrs[i].value), b = r->value.len;
        char *v = realloc(r->hdrs[i].value, a + 2 + b + 1);
        if (!v)
            return fail(c, 503, "out of memory");
        memcpy(v + a, ", ", 2);
        if (b)
            memcpy(v + a + 2, r->value.p, b);
        v[a + 2 + b] = 0;
        r->hdrs[i].value = v;
        gs__hbuf_free(&r->field);
        gs__hbuf_free(&r->value);
        return 0;
    }
    if (r->n_hdrs >= GS_HTTP_MAX_HEADERS)
        return fail(c, 431, "too many request headers");
    if (r->n_hdrs == r->cap_hdrs) {
        int cap = r->cap_hdrs ? r->cap_hdrs * 2 : 16;
        gs_http_hdr *h = realloc(r->hdrs, (size_t)cap * sizeof *h);
        if (!h)
            return fail(c, 503, "out of memory");
        r->hdrs = h;
        r->cap_hdrs = cap;
    }
    char *n = hbuf_take(&r->field), *v = hbuf_take(&r->value);
    if (!n || !v) {
        free(n);
        free(v);
        return fail(c, 503, "out of memory");
    }
    r->hdrs[r->n_hdrs].name = n;
    r->hdrs[r->n_hdrs].value = v;
    r->n_hdrs++;
    return 0;
}

/* url -> path and query. An absolute-form target ("http://host/p?q")
 * loses its scheme and authority. */
static int split_url(gs_http_req *r)
{
    const char *u = r->url.p ? r->url.p : "";
    if (strncasecmp(u, "http://", 7) == 0 || strncasecmp(u, "https://", 8) == 0) {
        const char *slash = strchr(strstr(u, "//") + 2, '/');
        u = slash ? slash : "/";
    }
    size_t plen = strcspn(u, "?#");
    const char *q = u[plen] == '?' ? u + plen + 1 : u + plen;
    size_t qlen = strcspn(q, "#");
    r->path = strndup(u, plen);
    r->query = strndup(q, qlen);
    return r->path && r->query ? 0 : GS_ENOMEM;
}

static int on_headers_complete(llhttp_t *p)
{
    gs_http_conn *c = p->data;
    gs_http_req *r = c->req;
    c->hdr_mark = NULL;
    r->method = llhttp_method_name((llhttp_method_t)p->method);
    r->http_major = p->http_major;
    r->http_minor = p->http_minor;
    r->head = p->method == HTTP_HEAD;
    if (split_url(r))
        return fail(c, 503, "out of memory");
    if (r->http_major != 1 || r->http_minor > 1)
        return fail(c, 505, "HTTP version not supported (HTTP/1.0 and HTTP/1.1 are)");
    int chunked = (p->flags & F_CHUNKED) != 0;
    int has_len = (p->flags & F_CONTENT_LENGTH) != 0;
    if (has_len && p->content_length > c->s->p.max_body_bytes)
        return fail(c, 413, "request body too large");
    int has_body = chunked || (has_len && p->content_length > 0);
    const char *expect = gs_http_req_header(r, "expect");
    if (expect) {
        if (strcasecmp(expect, "100-continue") != 0)
            return fail(c, 417, "unsupported Expect header (only 100-continue is)");
        if (has_body && r->http_minor >= 1) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            if (gs__http_send_raw(c, cont, sizeof cont - 1))
                return fail(c, -1, NULL);
        }
    }
    if (has_len && p->content_length > 0 && body_account(c, (size_t)p->content_length))
        return fail(c, 503, "the server holds too many request bytes now; retry later");
    if (has_body) {
        /* Room for a small body at once; a large one grows as it comes. */
        if (has_len &&
            hbuf_reserve(&r->body, p->content_length < 65536 ? (size_t)p->content_length : 65536))
            return fail(c, 503, "out of memory");
        c->phase = GS_PH_BODY;
        gs__http_conn_timer(c, GS_TM_BODY);
    } else {
        c->phase = GS_PH_BODY; /* on_message_complete follows at once */
        gs__http_conn_timer(c, GS_TM_NONE);
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    gs_http_conn *c = p->data;
    gs_http_req *r = c->req;
    if (r->body.len + len > c->s->p.max_body_bytes)
        return fail(c, 413, "request body too large");
    if (r->body.len + len > r->body_acct && body_account(c, r->body.len + len - r->body_acct))
        return fail(c, 503, "the server holds too many request bytes now; retry later");
    if (gs__hbuf_append(&r->body, at, len))
        return fail(c, 503, "out of memory");
    return 0;
}

static int on_chunk_header(llhttp_t *p)
{
    gs_http_conn *c = p->data;
    if (c->req->body.len + p->content_length > c->s->p.max_body_bytes)
        return fail(c, 413, "request body too large");
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    gs_http_conn *c = p->data;
    gs_http_req *r = c->req;
    r->keep_alive = llhttp_should_keep_alive(p) != 0;
    /* After an Upgrade or CONNECT the bytes are not HTTP any more: unless
     * the handler takes the socket, the connection ends with its answer. */
    r->upgrade = p->upgrade != 0 || p->method == HTTP_CONNECT;
    if (r->upgrade)
        r->keep_alive = 0;
    gs__http_conn_timer(c, GS_TM_NONE);
    c->req_done = 1;
    return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_method = on_method,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_chunk_header = on_chunk_header,
    .on_message_complete = on_message_complete,
};

void gs__http_parser_init(gs_http_conn *c)
{
    llhttp_init(&c->parser, HTTP_REQUEST, &settings);
    c->parser.data = c;
}

/* ---- the parse loop ----------------------------------------------------- */

static void parse_error(gs_http_conn *c, llhttp_errno_t e)
{
    if (c->err_status < 0) {
        gs__http_conn_close(c);
        return;
    }
    if (c->err_status) {
        gs__http_error(c, c->err_status, c->err_msg);
        return;
    }
    if (e == HPE_INVALID_VERSION) {
        gs__http_error(c, 505, "HTTP version not supported (HTTP/1.0 and HTTP/1.1 are)");
        return;
    }
    gs__http_error(c, 400, "malformed HTTP request");
}

static void dispatch(gs_http_conn *c)
{
    gs_http_req *r = c->req;
    r->dispatched = 1;
    c->phase = GS_PH_HANDLER;
    gs__http_conn_timer(c, GS_TM_NONE);
    c->s->p.handler(r, c->s->p.user);
}

void gs__http_conn_process(gs_http_conn *c)
{
    if (c->in_process)
        return; /* an outer call is looping: it picks the rest up */
    c->in_process = 1;
    while (!c->closing && !c->handed_over && c->phase <= GS_PH_BODY && c->in_off < c->in_len &&
           c->pending < GS_HTTP_PARSE_PENDING_MAX) {
        const char *data = c->in + c->in_off;
        size_t avail = c->in_len - c->in_off;
        c->hdr_mark = c->phase == GS_PH_HEADERS ? data : NULL;
        llhttp_errno_t e = llhttp_execute(&c->parser, data, avail);
        size_t used = avail;
        if (e != HPE_OK)
            used = (size_t)(llhttp_get_error_pos(&c->parser) - data);
        c->in_off += used;
        if (e == HPE_PAUSED) {
            llhttp_resume(&c->parser);
        } else if (e != HPE_OK) {
            parse_error(c, e);
            break;
        }
        if (c->phase == GS_PH_HEADERS && c->hdr_mark) {
            c->hdr_bytes += (size_t)(data + used - c->hdr_mark);
            c->hdr_mark = NULL;
            if (c->hdr_bytes > c->s->p.max_header_bytes) {
                gs__http_error(c, 431, "request headers too large");
                break;
            }
        }
        if (c->req_done) {
            c->req_done = 0;
            dispatch(c); /* may answer at once: the loop goes on */
        }
    }
    if (c->in_off == c->in_len)
        c->in_off = c->in_len = 0;
    c->in_process = 0;
    if (c->closing || c->handed_over || c->phase == GS_PH_CLOSING)
        return;
    if (c->phase == GS_PH_WAIT) {
        if (c->s->draining) {
            gs__http_conn_close(c);
            return;
        }
        if (c->tmode != GS_TM_IDLE && c->tmode != GS_TM_FIRST)
            gs__http_conn_timer(c, GS_TM_IDLE);
    }
    if (c->in_len - c->in_off < gs__http_in_cap(c->s))
        gs__http_conn_read_start(c);
}

/* ---- request accessors -------------------------------------------------- */

const char *gs_http_req_method(const gs_http_req *r)
{
    return r && r->method ? r->method : "";
}

const char *gs_http_req_path(const gs_http_req *r)
{
    return r && r->path ? r->path : "";
}

const char *gs_http_req_query(const gs_http_req *r)
{
    return r && r->query ? r->query : "";
}

const char *gs_http_req_header(const gs_http_req *r, const char *name)
{
    if (!r || !name)
        return NULL;
    for (int i = 0; i < r->n_hdrs; i++)
        if (strcasecmp(r->hdrs[i].name, name) == 0)
            return r->hdrs[i].value;
    return NULL;
}

void gs_http_req_body_done(gs_http_req *r)
{
    if (!r)
        return;
    gs__http_req_unaccount(r);
    gs__hbuf_free(&r->body);
}

const uint8_t *gs_http_req_body(const gs_http_req *r, size_t *len)
{
    if (len)
        *len = r ? r->body.len : 0;
    return r && r->body.p ? (const uint8_t *)r->body.p : (const uint8_t *)"";
}

const char *gs_http_req_peer(const gs_http_req *r)
{
    return r ? r->peer : "";
}

uint64_t gs_http_req_start_ns(const gs_http_req *r)
{
    return r ? r->start_ns : 0;
}

int gs_http_req_aborted(const gs_http_req *r)
{
    return r ? r->aborted : 1;
}

void gs_http_req_set_data(gs_http_req *r, void *data)
{
    if (r)
        r->data = data;
}

void *gs_http_req_get_data(const gs_http_req *r)
{
    return r ? r->data : NULL;
}

void gs_http_req_on_abort(gs_http_req *r, void (*cb)(gs_http_req *r, void *user), void *user)
{
    if (!r)
        return;
    r->abort_cb = cb;
    r->abort_user = user;
}

size_t gs_http_req_pending(const gs_http_req *r)
{
    return r && r->c ? r->c->pending : 0;
}
