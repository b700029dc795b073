/* resolve.h - the URLs of gateway <-> worker connections: checked, split,
 * and a tcp:// host name resolved to every address it has.
 *
 * Why every address: behind a Kubernetes headless Service one name has an
 * A (or AAAA) record per gateway pod, and a worker must reach each of
 * them. nng's own dialer resolves a name to its first address only, so the
 * worker resolves here and dials the numeric URLs this returns
 * ("tcp://10.1.2.3:7500", "tcp://[fd00::5]:7500"), which nng takes as they
 * are.
 *
 * getaddrinfo may block for seconds (DNS timeouts): call gs_resolve_url
 * from a thread that may wait, never from the engine thread or an event
 * loop. Thread-safe: nothing here keeps state. */
#ifndef GS_RESOLVE_H
#define GS_RESOLVE_H

#include "common/err.h"

#define GS_URL_MAX 128    /* a numeric tcp:// URL or an ipc:// URL, with its NUL */
#define GS_RESOLVE_MAX 64 /* addresses kept per name; more are logged and left out */

typedef struct {
    int is_ipc;     /* ipc://PATH: path holds PATH, port is 0 */
    char host[256]; /* tcp://: the name or numeric address, without [] */
    char path[GS_URL_MAX];
    int port; /* tcp://: 1..65535 */
} gs_url;

/* Checks url: "ipc://PATH" (PATH not empty, short enough for a socket
 * address) or "tcp://HOST:PORT" (HOST a name, an IPv4 address or an IPv6
 * address in brackets; PORT 1..65535). Fills *out when not NULL. 0 or
 * GS_EINVAL, with d saying what is wrong. */
int gs_url_parse(const char *url, gs_url *out, gs_diag *d);

typedef struct {
    int n;
    char url[GS_RESOLVE_MAX][GS_URL_MAX]; /* sorted, no duplicates */
} gs_addr_set;

/* Every address url's host has now, as numeric URLs with url's port,
 * sorted and without duplicates (so two answers compare entry by entry):
 * its IPv4 addresses, or its IPv6 ones if it has none (a dual-stack host
 * has both, and must be dialed once).
 * An ipc:// URL, or a tcp:// one with a numeric host, gives itself.
 * 0; GS_EINVAL (a malformed url); GS_ENOENT (the name has no address:
 * not in DNS yet, or no such name); GS_EAGAIN (a temporary DNS failure);
 * GS_ENOMEM; GS_EIO (anything else). d says which; on success d->msg
 * is empty, or says how many addresses past GS_RESOLVE_MAX were left out. */
int gs_resolve_url(const char *url, gs_addr_set *out, gs_diag *d);

/* 1 when set holds url (exactly as written), else 0. */
int gs_addr_set_has(const gs_addr_set *set, const char *url);

#endif
