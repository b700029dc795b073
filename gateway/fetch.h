/* fetch.h - downloads of remote images (http:// and https:// image_url
 * parts) for the gateway, when the configuration allows them
 * (fetch_images). libcurl's multi interface driven by the gateway's libuv
 * loop: nothing blocks.
 *
 * Each download has a deadline, a size cap, at most 3 redirects, http and
 * https only (also after a redirect), and - unless allow_private is set -
 * refuses to connect to loopback, private, link-local and unspecified
 * addresses (a server that fetches URLs for its clients must not become
 * their way into its own network).
 *
 * Built only with libcurl (GS_HAVE_CURL); without it gs_fetcher_new
 * returns GS_ENOTSUP. Threading: the loop thread. */
#ifndef GS_FETCH_H
#define GS_FETCH_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/err.h"

typedef struct gs_fetcher gs_fetcher; /* opaque */
typedef struct gs_fetch gs_fetch;     /* opaque: one download */

typedef struct {
    uint32_t timeout_ms; /* per download; 0: 10000 */
    size_t max_bytes;    /* per download; 0: 64 MiB */
    int allow_private;   /* 1: loopback and private addresses too */
} gs_fetch_params;

/* rc 0: bytes (owned by the callee: free()) of len; else a GS_E* code
 * (GS_ETIMEDOUT, GS_ETOOBIG, GS_EIO, GS_EINVAL for a refused address or
 * scheme) with msg (borrowed) saying why. Called once, on the loop. */
typedef void (*gs_fetch_cb)(void *user, int rc, const char *msg, uint8_t *bytes, size_t len);

/* *out owns a fetcher on loop (borrowed). GS_ENOTSUP without libcurl. */
int gs_fetcher_new(uv_loop_t *loop, const gs_fetch_params *p, gs_fetcher **out, gs_diag *d);
/* Cancels every download (no callback) and frees the fetcher once libuv
 * has released its handles. NULL: no-op. */
void gs_fetcher_free(gs_fetcher *f);

/* Starts downloading url (copied). On success *out names the download
 * until cb runs or gs_fetch_cancel; cb is never called before this
 * returns. GS_EINVAL (not http/https), GS_ENOMEM. */
int gs_fetch_start(gs_fetcher *f, const char *url, gs_fetch_cb cb, void *user, gs_fetch **out);
/* Stops a download; cb is not called. NULL: no-op. */
void gs_fetch_cancel(gs_fetch *x);

#endif
