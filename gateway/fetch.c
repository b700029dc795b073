/* fetch.c - remote image downloads over libcurl's multi interface on the
 * gateway's libuv loop (fetch.h): curl says which sockets to watch and
 * when to wake (socket and timer callbacks); uv_poll_t and uv_timer_t
 * report back with curl_multi_socket_action; finished transfers are
 * collected with curl_multi_info_read and handed to their callbacks.
 * Owns the multi handle, one easy handle and buffer per download, one
 * uv_poll_t per socket curl watches. Loop thread only. */
#include "gateway/fetch.h"

#include <stdlib.h>
#include <string.h>

#ifdef GS_HAVE_CURL

#include <arpa/inet.h>
#include <curl/curl.h>

struct gs_fetcher {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    gs_fetch_params p;
    gs_fetch *active; /* list of downloads in flight */
};

struct gs_fetch {
    gs_fetch *prev, *next;
    gs_fetcher *f;
    CURL *easy;
    gs_fetch_cb cb;
    void *user;
    uint8_t *buf;
    size_t len, cap;
    int too_big, refused;
    char err[CURL_ERROR_SIZE];
};

typedef struct {
    uv_poll_t poll;
    curl_socket_t fd;
    gs_fetcher *f;
} sock_ctx;

static void unlink_fetch(gs_fetch *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        x->f->active = x->next;
    if (x->next)
        x->next->prev = x->prev;
}

static void fetch_free(gs_fetch *x)
{
    unlink_fetch(x);
    curl_multi_remove_handle(x->f->multi, x->easy);
    curl_easy_cleanup(x->easy);
    free(x->buf);
    free(x);
}

/* Finished transfers -> their callbacks. */
static void collect(gs_fetcher *f)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(f->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        gs_fetch *x = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        CURLcode res = m->data.result;
        long code = 0;
        curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &code);
        int rc = 0;
        char msg[CURL_ERROR_SIZE + 64];
        msg[0] = 0;
        if (x->too_big) {
            rc = GS_ETOOBIG;
            snprintf(msg, sizeof msg, "the image is over %zu bytes", f->p.max_bytes);
        } else if (x->refused) {
            rc = GS_EINVAL;
            snprintf(msg, sizeof msg, "the URL's address is not allowed (loopback or private)");
        } else if (res == CURLE_OPERATION_TIMEDOUT) {
            rc = GS_ETIMEDOUT;
            snprintf(msg, sizeof msg, "no answer within %u ms", f->p.timeout_ms);
        } else if (res != CURLE_OK) {
            rc = GS_EIO;
            snprintf(msg, sizeof msg, "%s", x->err[0] ? x->err : curl_easy_strerror(res));
        } else if (code < 200 || code >= 300) {
            rc = GS_EIO;
            snprintf(msg, sizeof msg, "the server answered HTTP %ld", code);
        }
        gs_fetch_cb cb = x->cb;
        void *user = x->user;
        uint8_t *buf = rc ? NULL : x->buf;
        size_t len = x->len;
        if (!rc)
            x->buf = NULL;
        fetch_free(x);
        cb(user, rc, msg, buf, rc ? 0 : len);
    }
}

static void poll_cb(uv_poll_t *h, int status, int events)
{
    sock_ctx *s = h->data;
    int flags = status < 0 ? CURL_CSELECT_ERR : 0, running;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    gs_fetcher *f = s->f;
    curl_multi_socket_action(f->multi, s->fd, flags, &running);
    collect(f);
}

static void sock_closed(uv_handle_t *h)
{
    free(h->data);
}

static int socket_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
    gs_fetcher *f = userp;
    sock_ctx *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            uv_poll_stop(&s->poll);
            uv_close((uv_handle_t *)&s->poll, sock_closed);
            curl_multi_assign(f->multi, fd, NULL);
        }
        return 0;
    }
    if (!s) {
        if (!(s = calloc(1, sizeof *s)))
            return -1;
        s->fd = fd;
        s->f = f;
        if (uv_poll_init_socket(f->loop, &s->poll, fd)) {
            free(s);
            return -1;
        }
        s->poll.data = s;
        curl_multi_assign(f->multi, fd, s);
    }
    int ev = (what & CURL_POLL_IN ? UV_READABLE : 0) | (what & CURL_POLL_OUT ? UV_WRITABLE : 0);
    uv_poll_start(&s->poll, ev, poll_cb);
    return 0;
}

static void timeout_cb(uv_timer_t *t)
{
    gs_fetcher *f = t->data;
    int running;
    curl_multi_socket_action(f->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    collect(f);
}

static int timer_cb(CURLM *m, long ms, void *userp)
{
    gs_fetcher *f = userp;
    if (ms < 0)
        uv_timer_stop(&f->timer);
    else
        uv_timer_start(&f->timer, timeout_cb, (uint64_t)ms, 0);
    return 0;
}

static size_t write_cb(char *p, size_t size, size_t n, void *user)
{
    gs_fetch *x = user;
    size_t k = size * n;
    if (x->len + k > x->f->p.max_bytes) {
        x->too_big = 1;
        return 0; /* aborts the transfer */
    }
    if (x->len + k > x->cap) {
        size_t cap = x->cap ? x->cap : 65536;
        while (cap < x->len + k)
            cap *= 2;
        uint8_t *b = realloc(x->buf, cap);
        if (!b)
            return 0;
        x->buf = b;
        x->cap = cap;
    }
    memcpy(x->buf + x->len, p, k);
    x->len += k;
    return k;
}

/* 1 for addresses a fetch may not reach: loopback, private, link-local,
 * unspecified, multicast (IPv4 and IPv6, and IPv4 mapped in IPv6). */
static int private_address(const char *ip)
{
    unsigned char a[16];
    if (inet_pton(AF_INET, ip, a) == 1) {
        return a[0] == 0 || a[0] == 10 || a[0] == 127 || (a[0] == 169 && a[1] == 254) ||
               (a[0] == 172 && (a[1] & 0xf0) == 16) || (a[0] == 192 && a[1] == 168) ||
               (a[0] == 100 && (a[1] & 0xc0) == 64) || a[0] >= 224;
    }
    if (inet_pton(AF_INET6, ip, a) != 1)
        return 1;
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (!memcmp(a, mapped, 12)) {
        char v4[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, a + 12, v4, sizeof v4);
        return private_address(v4);
    }
    static const unsigned char zero[15] = {0};
    return !memcmp(a, zero, 15) /* :: and ::1 */ || (a[0] & 0xfe) == 0xfc /* fc00::/7 */ ||
           (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) /* fe80::/10 */ || a[0] == 0xff;
}

static int prereq_cb(void *user, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
    gs_fetch *x = user;
    if (!x->f->p.allow_private && private_address(primary_ip)) {
        x->refused = 1;
        return CURL_PREREQFUNC_ABORT;
    }
    return CURL_PREREQFUNC_OK;
}

int gs_fetcher_new(uv_loop_t *loop, const gs_fetch_params *p, gs_fetcher **out, gs_diag *d)
{
    *out = NULL;
    static int curl_ready;
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT))
            return gs_diag_set(d, GS_EINTERNAL, "fetch: libcurl did not initialise");
        curl_ready = 1;
    }
    gs_fetcher *f = calloc(1, sizeof *f);
    if (!f || !(f->multi = curl_multi_init())) {
        free(f);
        return gs_diag_set(d, GS_ENOMEM, "fetch: out of memory");
    }
    f->loop = loop;
    f->p = *p;
    if (!f->p.timeout_ms)
        f->p.timeout_ms = 10000;
    if (!f->p.max_bytes)
        f->p.max_bytes = (size_t)64 << 20;
    uv_timer_init(loop, &f->timer);
    f->timer.data = f;
    curl_multi_setopt(f->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(f->multi, CURLMOPT_SOCKETDATA, f);
    curl_multi_setopt(f->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(f->multi, CURLMOPT_TIMERDATA, f);
    *out = f;
    return 0;
}

static void timer_closed(uv_handle_t *h)
{
    free(h->data);
}

void gs_fetcher_free(gs_fetcher *f)
{
    if (!f)
        return;
    while (f->active)
        fetch_free(f->active);
    curl_multi_cleanup(f->multi);
    uv_timer_stop(&f->timer);
    uv_close((uv_handle_t *)&f->timer, timer_closed);
}

int gs_fetch_start(gs_fetcher *f, const char *url, gs_fetch_cb cb, void *user, gs_fetch **out)
{
    *out = NULL;
    if (strncmp(url, "http://", 7) && strncmp(url, "https://", 8))
        return GS_EINVAL;
    gs_fetch *x = calloc(1, sizeof *x);
    if (!x || !(x->easy = curl_easy_init())) {
        free(x);
        return GS_ENOMEM;
    }
    x->f = f;
    x->cb = cb;
    x->user = user;
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)x);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->err);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, 3L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)f->p.timeout_ms);
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)f->p.max_bytes);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "glmserve");
    curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, prereq_cb);
    curl_easy_setopt(e, CURLOPT_PREREQDATA, x);
    x->next = f->active;
    if (f->active)
        f->active->prev = x;
    f->active = x;
    if (curl_multi_add_handle(f->multi, e) != CURLM_OK) {
        unlink_fetch(x);
        curl_easy_cleanup(e);
        free(x);
        return GS_ENOMEM;
    }
    *out = x;
    return 0;
}

void gs_fetch_cancel(gs_fetch *x)
{
    if (x)
        fetch_free(x);
}

#else /* no libcurl */

int gs_fetcher_new(uv_loop_t *loop, const gs_fetch_params *p, gs_fetcher **out, gs_diag *d)
{
    *out = NULL;
    return gs_diag_set(d, GS_ENOTSUP, "fetching remote images needs a build with libcurl");
}

void gs_fetcher_free(gs_fetcher *f) {}

int gs_fetch_start(gs_fetcher *f, const char *url, gs_fetch_cb cb, void *user, gs_fetch **out)
{
    *out = NULL;
    return GS_ENOTSUP;
}

void gs_fetch_cancel(gs_fetch *x) {}

#endif
