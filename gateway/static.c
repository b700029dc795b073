/* static.c - static files (static.h): URL path to a file under the root,
 * the checks that keep it there, MIME types, ETag / 304, Cache-Control.
 *
 * Path checks, in order: percent-decode (a bad escape or a NUL refuses);
 * every segment must be non-empty-safe and not start with '.'; the file is
 * opened beneath the root's descriptor with openat2(RESOLVE_BENEATH), so a
 * symlink cannot lead out either (kernels without openat2: realpath and a
 * prefix check), without blocking on a FIFO; one fstat on that fd refuses
 * anything but a regular file and gives the size and the ETag. That is
 * open + fstat + read + close per GET (nginx does the same four).
 * Owns the root path and its descriptor. Threading: see static.h. */
#include "gateway/static.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <linux/openat2.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

struct gs_static {
    char *root;  /* realpath, no trailing '/' (except for "/" itself) */
    int root_fd; /* O_PATH of root: files are opened beneath it (openat2) */
    size_t root_len;
};

static const struct {
    const char *ext, *type;
} mime_types[] = {
    {"html", "text/html; charset=utf-8"},
    {"htm", "text/html; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"json", "application/json"},
    {"map", "application/json"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"ico", "image/x-icon"},
    {"woff2", "font/woff2"},
    {"txt", "text/plain; charset=utf-8"},
    {"wasm", "application/wasm"},
};

static const char *mime_of(const char *path, int *is_html)
{
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(slash ? slash : path, '.');
    *is_html = 0;
    if (!dot)
        return "application/octet-stream";
    for (size_t i = 0; i < sizeof mime_types / sizeof mime_types[0]; i++) {
        if (strcasecmp(dot + 1, mime_types[i].ext) == 0) {
            *is_html = strncmp(mime_types[i].type, "text/html", 9) == 0;
            return mime_types[i].type;
        }
    }
    return "application/octet-stream";
}

int gs_static_new(const char *root, gs_static **out, gs_diag *d)
{
    if (out)
        *out = NULL;
    if (!root || !out)
        return gs_diag_set(d, GS_EINVAL, "static: root and out are required");
    char *real = realpath(root, NULL);
    if (!real)
        return gs_diag_set(d, errno == ENOMEM ? GS_ENOMEM : GS_ENOENT, "static: %s: %s", root,
                           strerror(errno));
    struct stat st;
    if (stat(real, &st) != 0 || !S_ISDIR(st.st_mode)) {
        free(real);
        return gs_diag_set(d, GS_ENOENT, "static: %s: not a folder", root);
    }
    gs_static *s = calloc(1, sizeof *s);
    if (!s) {
        free(real);
        return gs_diag_set(d, GS_ENOMEM, "static: out of memory");
    }
    s->root = real;
    s->root_len = strlen(real);
    s->root_fd = open(real, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (s->root_len == 1) /* "/": prefix checks use root + '/' */
        s->root_len = 0;
    *out = s;
    return 0;
}

void gs_static_free(gs_static *s)
{
    if (!s)
        return;
    if (s->root_fd >= 0)
        close(s->root_fd);
    free(s->root);
    free(s);
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* URL path -> relative file path in out (cap bytes), "index.html" added
 * for folders. 0 or GS_ENOENT (refused). */
static int decode_path(const char *url, char *out, size_t cap)
{
    if (url[0] != '/')
        return GS_ENOENT;
    size_t n = 0;
    for (const char *p = url; *p; p++) {
        char ch = *p;
        if (ch == '%') {
            int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);
            if (lo < 0)
                return GS_ENOENT;
            ch = (char)(hi * 16 + lo);
            p += 2;
            if (ch == 0)
                return GS_ENOENT;
        }
        if (n + 1 >= cap)
            return GS_ENOENT;
        out[n++] = ch;
    }
    out[n] = 0;
    /* Segments: none may start with '.' (".", "..", hidden files); empty
     * ones ("//") are harmless and skipped by the file system. */
    for (const char *seg = out; seg;) {
        if (*seg == '/')
            seg++;
        if (*seg == '.')
            return GS_ENOENT;
        seg = strchr(seg, '/');
    }
    if (n == 0 || out[n - 1] == '/') {
        static const char idx[] = "index.html";
        if (n + sizeof idx > cap)
            return GS_ENOENT;
        memcpy(out + n, idx, sizeof idx);
    }
    return 0;
}

/* Does the If-None-Match list hold etag ("*", or a weak or strong match)? */
static int etag_matches(const char *inm, const char *etag)
{
    size_t el = strlen(etag);
    const char *p = inm;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '*')
            return 1;
        if (p[0] == 'W' && p[1] == '/')
            p += 2;
        size_t n = strcspn(p, ",");
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if (n == el && memcmp(p, etag, el) == 0)
            return 1;
        p += strcspn(p, ",");
    }
    return 0;
}

/* Opens rel (decoded, "/..." form) for reading only if it resolves
 * beneath the root: openat2 with RESOLVE_BENEATH on the root's fd (one
 * system call; symbolic links may not lead out), or where the kernel lacks
 * openat2, realpath and a prefix check. -1 when refused or absent. */
static int open_beneath(const gs_static *s, const char *rel)
{
    const int flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
    while (*rel == '/')
        rel++;
#ifdef SYS_openat2
    if (s->root_fd >= 0) {
        struct open_how how;
        memset(&how, 0, sizeof how);
        how.flags = (uint64_t)flags;
        how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
        long fd = syscall(SYS_openat2, s->root_fd, rel, &how, sizeof how);
        if (fd >= 0 || errno != ENOSYS)
            return (int)fd;
    }
#endif
    char full[PATH_MAX + 8];
    if ((size_t)snprintf(full, sizeof full, "%s/%s", s->root, rel) >= sizeof full)
        return -1;
    char *real = realpath(full, NULL);
    if (!real)
        return -1;
    int fd = -1;
    if (!strncmp(real, s->root, s->root_len) && real[s->root_len] == '/')
        fd = open(real, flags);
    free(real);
    return fd;
}

int gs_static_serve(gs_static *s, gs_http_req *r)
{
    if (!s || !r)
        return GS_EINVAL;
    return gs_static_serve_path(s, r, gs_http_req_path(r));
}

int gs_static_serve_path(gs_static *s, gs_http_req *r, const char *path)
{
    if (!s || !r || !path)
        return GS_EINVAL;
    const char *method = gs_http_req_method(r);
    int head = strcmp(method, "HEAD") == 0;
    if (!head && strcmp(method, "GET") != 0)
        return GS_ENOENT;
    char rel[PATH_MAX];
    if (decode_path(path, rel, sizeof rel) != 0)
        return GS_ENOENT;
    int fd = open_beneath(s, rel);
    if (fd < 0)
        return GS_ENOENT;
    /* One fstat: the kind (folders, FIFOs and devices are not served; the
     * open did not block on a FIFO: O_NONBLOCK), the size and the ETag. A
     * regular file ignores O_NONBLOCK when read. */
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return GS_ENOENT;
    }
    int html = 0;
    const char *type = mime_of(rel, &html);
    char etag[96];
    snprintf(etag, sizeof etag, "\"%llx-%llx-%llx\"", (unsigned long long)st.st_size,
             (unsigned long long)st.st_mtim.tv_sec * 1000000000ull +
                 (unsigned long long)st.st_mtim.tv_nsec,
             (unsigned long long)st.st_ino);
    /* Pages get a Content-Security-Policy: scripts, styles, fonts and
     * connections from this origin only, images also from data: and blob:
     * (previews), no plugins, no framing. Markdown rendered into the page
     * is sanitized as well; this is the second wall. */
    static const char csp[] =
        "Content-Security-Policy: default-src 'self'; script-src 'self'; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'\r\n"
        "X-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n";
    char headers[640];
    snprintf(headers, sizeof headers,
             "ETag: %s\r\nCache-Control: %s\r\nX-Content-Type-Options: nosniff\r\n%s", etag,
             html ? "no-cache" : "public, max-age=3600", html ? csp : "");
    const char *inm = gs_http_req_header(r, "If-None-Match");
    if (inm && etag_matches(inm, etag)) {
        close(fd);
        gs_http_respond(r, 304, NULL, headers, NULL, 0);
        return 0;
    }
    if (st.st_size > GS_STATIC_MAX_FILE) {
        close(fd);
        gs_http_respond_error(r, 500, "server_error", "static file too large to serve");
        return 0;
    }
    size_t size = (size_t)st.st_size;
    if (head) {
        close(fd);
        gs_http_respond(r, 200, type, headers, NULL, size);
        return 0;
    }
    char *buf = malloc(size ? size : 1);
    size_t got = 0;
    while (buf && got < size) {
        ssize_t k = read(fd, buf + got, size - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    close(fd);
    if (!buf || got != size) {
        free(buf);
        gs_http_respond_error(r, 500, "server_error", "cannot read the static file");
        return 0;
    }
    gs_http_respond(r, 200, type, headers, buf, size);
    free(buf);
    return 0;
}
