/* static.h - files from one folder (the browser UI's static/) over HTTP.
 *
 * GET and HEAD only. "/" and any path ending in "/" serve index.html of
 * that folder. Content-Type by extension, a strong ETag (size, mtime and
 * inode) answered with 304 on If-None-Match, Cache-Control "no-cache" for
 * .html and "public, max-age=3600" for the rest, X-Content-Type-Options:
 * nosniff. Refused as "not a file" (GS_ENOENT): other methods, bad
 * percent-escapes, NUL, any segment starting with "." (so "..", "%2e%2e"
 * and hidden files), anything whose real path (symlinks resolved) is not
 * inside the folder, and anything that is not a regular file.
 * Files are read whole, synchronously, on the loop thread, up to
 * GS_STATIC_MAX_FILE bytes: meant for a small UI bundle on a local disk.
 * Threading: gs_static_serve on the loop thread; the handle is read-only
 * after gs_static_new. */
#ifndef GS_STATIC_H
#define GS_STATIC_H

#include "common/err.h"
#include "gateway/http.h"

typedef struct gs_static gs_static; /* opaque */

enum { GS_STATIC_MAX_FILE = 16 * 1024 * 1024 };

/* *out owns a server of the files under root (borrowed; resolved with
 * realpath now, so later renames of the path do not move it). GS_ENOENT
 * (root missing or not a folder; d names it), GS_EINVAL, GS_ENOMEM. */
int gs_static_new(const char *root, gs_static **out, gs_diag *d);
void gs_static_free(gs_static *s); /* NULL: no-op */

/* Answers r from the folder by its path (the query is ignored).
 * 0: answered; r is consumed (200, 304, or a 500 JSON error when the file
 *    cannot be read or is larger than GS_STATIC_MAX_FILE).
 * GS_ENOENT: not a file to serve (see above); r is NOT consumed, the
 *    caller answers (404).
 * GS_EINVAL: s or r NULL; r, if any, is not consumed.
 * HTML answers carry a Content-Security-Policy (same origin only; images
 * also from data: and blob:), X-Frame-Options DENY and no Referer. */
int gs_static_serve(gs_static *s, gs_http_req *r);

/* As gs_static_serve, for the URL path `path` (borrowed; "/name", may be
 * percent-encoded) instead of the request's: serves a mount such as
 * /vendor/NAME from another folder. */
int gs_static_serve_path(gs_static *s, gs_http_req *r, const char *path);

#endif
