/* test_static.c - gateway/static.c through the HTTP server: MIME types,
 * Cache-Control, ETag and 304, HEAD, "/" -> index.html, and traversal
 * attempts answered 404 (by the caller, as gs_static_serve leaves them). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gateway/http.h"
#include "gateway/static.h"
#include "http_harness.h"
#include "test.h"

static char base[256], root[300];

static void put(const char *rel, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", base, rel);
    FILE *f = fopen(p, "wb");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* base/www (the root) with files, base/outside/secret.txt beside it. */
static int make_tree(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(base, sizeof base, "%s/gs_static_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(base))
        return -1;
    snprintf(root, sizeof root, "%s/www", base);
    char p[512];
    mkdir(root, 0755);
    snprintf(p, sizeof p, "%s/www/sub", base);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/www/empty", base);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/outside", base);
    mkdir(p, 0755);
    put("www/index.html", "<h1>hi</h1>");
    put("www/app.js", "console.log(1);");
    put("www/app.mjs", "export {};");
    put("www/style.css", "body{}");
    put("www/data.json", "{}");
    put("www/img.png", "PNG");
    put("www/logo.svg", "<svg/>");
    put("www/a.jpg", "J");
    put("www/favicon.ico", "I");
    put("www/font.woff2", "W");
    put("www/notes.txt", "t");
    put("www/app.js.map", "{}");
    put("www/mod.wasm", "A");
    put("www/blob.bin", "B");
    put("www/sub/page.html", "<p>sub</p>");
    put("www/sub/index.html", "<p>subindex</p>");
    put("www/.hidden", "h");
    put("outside/secret.txt", "secret");
    char link[512];
    snprintf(link, sizeof link, "%s/www/link.txt", base);
    snprintf(p, sizeof p, "%s/outside/secret.txt", base);
    return symlink(p, link);
}

static void remove_tree(void)
{
    static const char *files[] = {
        "www/index.html",  "www/app.js",         "www/app.mjs",       "www/style.css",
        "www/data.json",   "www/img.png",        "www/logo.svg",      "www/a.jpg",
        "www/favicon.ico", "www/font.woff2",     "www/notes.txt",     "www/app.js.map",
        "www/mod.wasm",    "www/blob.bin",       "www/sub/page.html", "www/sub/index.html",
        "www/.hidden",     "outside/secret.txt", "www/link.txt",
    };
    char p[512];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", base, files[i]);
        unlink(p);
    }
    static const char *dirs[] = {"www/sub", "www/empty", "www", "outside", ""};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", base, dirs[i]);
        rmdir(p);
    }
}

static void handler(gs_http_req *r, void *user)
{
    gs_static *st = ((th_server *)user)->user;
    if (gs_static_serve(st, r) == GS_ENOENT)
        gs_http_respond_error(r, 404, NULL, "not found");
}

/* GET (or HEAD) path with extra header lines on connection c. */
static int get(th_cli *c, const char *method, const char *path, const char *extra, th_resp *r)
{
    char req[1024];
    snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: t\r\n%s\r\n", method, path,
             extra ? extra : "");
    if (cli_send(c, req))
        return -1;
    return cli_read(c, r, strcmp(method, "HEAD") == 0);
}

static gs_static *st;
static th_server srv;
static th_cli cli;

static void test_new_errors(void)
{
    gs_static *s = NULL;
    gs_diag d;
    char p[512];
    snprintf(p, sizeof p, "%s/nope", base);
    GS_ASSERT_EQ(gs_static_new(p, &s, &d), GS_ENOENT);
    snprintf(p, sizeof p, "%s/www/app.js", base);
    GS_ASSERT_EQ(gs_static_new(p, &s, &d), GS_ENOENT);
    GS_ASSERT(s == NULL);
    GS_ASSERT_EQ(gs_static_new(NULL, &s, &d), GS_EINVAL);
    gs_static_free(NULL);
}

static void test_index_and_mime(void)
{
    th_resp r;
    char hv[128];
    GS_ASSERT_OK(get(&cli, "GET", "/", NULL, &r));
    GS_ASSERT_EQ(r.status, 200);
    GS_ASSERT_STREQ(r.body, "<h1>hi</h1>");
    GS_ASSERT_STREQ(resp_header(&r, "Content-Type", hv, sizeof hv), "text/html; charset=utf-8");
    GS_ASSERT_STREQ(resp_header(&r, "Cache-Control", hv, sizeof hv), "no-cache");
    GS_ASSERT(resp_header(&r, "ETag", hv, sizeof hv) && hv[0] == '"');
    resp_free(&r);
    GS_ASSERT_OK(get(&cli, "GET", "/sub/", NULL, &r));
    GS_ASSERT_STREQ(r.body, "<p>subindex</p>");
    resp_free(&r);
    static const struct {
        const char *path, *type;
    } cases[] = {
        {"/app.js", "text/javascript; charset=utf-8"},
        {"/app.mjs", "text/javascript; charset=utf-8"},
        {"/style.css", "text/css; charset=utf-8"},
        {"/data.json", "application/json"},
        {"/img.png", "image/png"},
        {"/logo.svg", "image/svg+xml"},
        {"/a.jpg", "image/jpeg"},
        {"/favicon.ico", "image/x-icon"},
        {"/font.woff2", "font/woff2"},
        {"/notes.txt", "text/plain; charset=utf-8"},
        {"/app.js.map", "application/json"},
        {"/mod.wasm", "application/wasm"},
        {"/blob.bin", "application/octet-stream"},
        {"/sub/page.html", "text/html; charset=utf-8"},
        {"/sub/page%2ehtml", "text/html; charset=utf-8"}, /* a lone %2e is fine */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        GS_ASSERT_OK(get(&cli, "GET", cases[i].path, NULL, &r));
        GS_ASSERT_MSG(r.status == 200, "%s: %d", cases[i].path, r.status);
        GS_ASSERT_STREQ(resp_header(&r, "Content-Type", hv, sizeof hv), cases[i].type);
        const char *cc = strstr(cases[i].type, "html") ? "no-cache" : "public, max-age=3600";
        GS_ASSERT_STREQ(resp_header(&r, "Cache-Control", hv, sizeof hv), cc);
        resp_free(&r);
    }
}

static void test_etag_304_and_head(void)
{
    th_resp r;
    char hv[128], etag[128], extra[256];
    GS_ASSERT_OK(get(&cli, "GET", "/app.js?v=3", NULL, &r));
    GS_ASSERT_EQ(r.status, 200);
    GS_ASSERT(resp_header(&r, "ETag", etag, sizeof etag) != NULL);
    resp_free(&r);
    snprintf(extra, sizeof extra, "If-None-Match: %s\r\n", etag);
    GS_ASSERT_OK(get(&cli, "GET", "/app.js", extra, &r));
    GS_ASSERT_EQ(r.status, 304);
    GS_ASSERT(resp_header(&r, "Content-Length", hv, sizeof hv) == NULL);
    GS_ASSERT_STREQ(resp_header(&r, "ETag", hv, sizeof hv), etag);
    resp_free(&r);
    snprintf(extra, sizeof extra, "If-None-Match: \"nope\", W/%s\r\n", etag);
    GS_ASSERT_OK(get(&cli, "GET", "/app.js", extra, &r));
    GS_ASSERT_EQ(r.status, 304);
    resp_free(&r);
    GS_ASSERT_OK(get(&cli, "GET", "/app.js", "If-None-Match: \"nope\"\r\n", &r));
    GS_ASSERT_EQ(r.status, 200);
    GS_ASSERT_STREQ(r.body, "console.log(1);");
    resp_free(&r);
    /* Another file has another tag. */
    GS_ASSERT_OK(get(&cli, "GET", "/style.css", NULL, &r));
    GS_ASSERT(strcmp(resp_header(&r, "ETag", hv, sizeof hv), etag) != 0);
    resp_free(&r);
    /* HEAD: the length, no body; the connection goes on. */
    GS_ASSERT_OK(get(&cli, "HEAD", "/app.js", NULL, &r));
    GS_ASSERT_EQ(r.status, 200);
    GS_ASSERT_STREQ(resp_header(&r, "Content-Length", hv, sizeof hv), "15");
    GS_ASSERT_STREQ(resp_header(&r, "ETag", hv, sizeof hv), etag);
    resp_free(&r);
    GS_ASSERT_OK(get(&cli, "GET", "/notes.txt", NULL, &r));
    GS_ASSERT_STREQ(r.body, "t");
    resp_free(&r);
}

static void test_refused_paths(void)
{
    static const char *paths[] = {
        "/../outside/secret.txt",
        "/%2e%2e/outside/secret.txt",
        "/%2E%2E/outside/secret.txt",
        "/sub/../../outside/secret.txt",
        "/sub/..%2f..%2foutside%2fsecret.txt",
        "/%2e%2e%2foutside%2fsecret.txt",
        "/app.js%00.png",
        "/.hidden",
        "/sub/./page.html",
        "/link.txt", /* a symlink out of the root */
        "/empty/",   /* a folder without index.html */
        "/empty",
        "/nope.js",
        "/%zz",
        "/%2",
        "//outside/secret.txt",
    };
    th_resp r;
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        GS_ASSERT_OK(get(&cli, "GET", paths[i], NULL, &r));
        GS_ASSERT_MSG(r.status == 404, "%s: %d", paths[i], r.status);
        GS_ASSERT(strstr(r.body, "secret") == NULL);
        resp_free(&r);
    }
    /* Other methods are not the module's either. */
    GS_ASSERT_OK(cli_send(&cli, "POST /app.js HTTP/1.1\r\nContent-Length: 0\r\n\r\n"));
    GS_ASSERT_OK(cli_read(&cli, &r, 0));
    GS_ASSERT_EQ(r.status, 404);
    resp_free(&r);
}

int main(void)
{
    if (make_tree() != 0) {
        fprintf(stderr, "cannot make the test tree\n");
        return 1;
    }
    gs_diag d;
    if (gs_static_new(root, &st, &d) != 0) {
        fprintf(stderr, "gs_static_new: %s\n", d.msg);
        return 1;
    }
    gs_http_params p = {0};
    p.handler = handler;
    if (th_start(&srv, &p, st) != 0 || cli_open(&cli, &srv) != 0) {
        fprintf(stderr, "cannot start the server\n");
        return 1;
    }
    GS_RUN(test_new_errors);
    GS_RUN(test_index_and_mime);
    GS_RUN(test_etag_304_and_head);
    GS_RUN(test_refused_paths);
    cli_close(&cli);
    int rc = th_stop(&srv);
    gs_static_free(st);
    remove_tree();
    if (rc != 0) {
        fprintf(stderr, "uv_loop_close: %d\n", rc);
        return 1;
    }
    return gs_test_summary();
}
