/* resolve.c - URL checks and name resolution (resolve.h). getaddrinfo
 * does the work, through the host's nsswitch (files, then DNS), so
 * /etc/hosts entries and a cluster's DNS both count. */
#include "common/resolve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

int gs_url_parse(const char *url, gs_url *out, gs_diag *d)
{
    gs_url u;
    memset(&u, 0, sizeof u);
    if (!url)
        return gs_diag_set(d, GS_EINVAL, "no URL");
    if (!strncmp(url, "ipc://", 6)) {
        const char *p = url + 6;
        if (!*p)
            return gs_diag_set(d, GS_EINVAL, "'%s': no socket path after ipc://", url);
        if (strlen(p) >= sizeof((struct sockaddr_un *)0)->sun_path)
            return gs_diag_set(d, GS_EINVAL, "'%s': socket path longer than %zu bytes", url,
                               sizeof((struct sockaddr_un *)0)->sun_path - 1);
        u.is_ipc = 1;
        snprintf(u.path, sizeof u.path, "%s", p);
        if (out)
            *out = u;
        return 0;
    }
    if (strncmp(url, "tcp://", 6))
        return gs_diag_set(d, GS_EINVAL, "'%s' is not an ipc:// or tcp:// URL", url);
    const char *h = url + 6, *hend, *colon;
    if (*h == '[') { /* [IPv6]:port */
        hend = strchr(h, ']');
        if (!hend)
            return gs_diag_set(d, GS_EINVAL, "'%s': '[' without ']'", url);
        colon = hend + 1;
        h++;
        if (*colon != ':')
            return gs_diag_set(d, GS_EINVAL, "'%s': no :PORT after the address", url);
    } else {
        colon = strrchr(h, ':');
        if (!colon)
            return gs_diag_set(d, GS_EINVAL, "'%s': no :PORT (tcp://HOST:PORT)", url);
        hend = colon;
        if (memchr(h, ':', (size_t)(hend - h)))
            return gs_diag_set(d, GS_EINVAL, "'%s': an IPv6 address goes in brackets", url);
    }
    size_t hlen = (size_t)(hend - h);
    if (hlen == 0)
        return gs_diag_set(d, GS_EINVAL, "'%s': no host (a worker dials a named host)", url);
    if (hlen >= sizeof u.host)
        return gs_diag_set(d, GS_EINVAL, "'%s': host longer than %zu bytes", url,
                           sizeof u.host - 1);
    for (size_t i = 0; i < hlen; i++) {
        unsigned char ch = (unsigned char)h[i];
        /* what a DNS name or a numeric address can hold: anything else is a
         * typo that would only show as "name not found" forever */
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '.' || ch == '_' || ch == ':' || ch == '%'))
            return gs_diag_set(d, GS_EINVAL, "'%s': character '%c' in the host", url,
                               ch >= 0x20 && ch < 0x7f ? ch : '?');
    }
    const char *p = colon + 1;
    char *end;
    errno = 0;
    long port = strtol(p, &end, 10);
    if (!*p || *end || errno || port < 1 || port > 65535 || *p == '+' || *p == '-' || *p == ' ')
        return gs_diag_set(d, GS_EINVAL, "'%s': port must be 1..65535", url);
    memcpy(u.host, h, hlen);
    u.port = (int)port;
    if (out)
        *out = u;
    return 0;
}

static int cmp_url(const void *a, const void *b)
{
    return strcmp(a, b);
}

static int eai_to_gs(int e)
{
    switch (e) {
    case EAI_NONAME:
#ifdef EAI_NODATA
    case EAI_NODATA:
#endif
#ifdef EAI_ADDRFAMILY
    case EAI_ADDRFAMILY:
#endif
        return GS_ENOENT;
    case EAI_AGAIN:
        return GS_EAGAIN;
    case EAI_MEMORY:
        return GS_ENOMEM;
    default:
        return GS_EIO;
    }
}

int gs_resolve_url(const char *url, gs_addr_set *out, gs_diag *d)
{
    out->n = 0;
    gs_url u;
    int rc = gs_url_parse(url, &u, d);
    if (rc)
        return rc;
    if (u.is_ipc) {
        snprintf(out->url[0], GS_URL_MAX, "%s", url);
        out->n = 1;
        return 0;
    }
    char port[8];
    snprintf(port, sizeof port, "%d", u.port);
    /* No AI_ADDRCONFIG: it hides IPv4 answers on a host whose only IPv4
     * address is loopback (a fresh network namespace, a pod before its
     * interface is up), and an address that cannot be reached only costs
     * a failed dial. */
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int e = getaddrinfo(u.host, port, &hints, &res);
    if (e) {
        const char *why = e == EAI_SYSTEM ? strerror(errno) : gai_strerror(e);
        return gs_diag_set(d, eai_to_gs(e), "cannot resolve '%s': %s", u.host, why);
    }
    /* One family: a dual-stack name lists each host twice (A and AAAA),
     * and each gateway must be dialed once, or it would count this worker
     * twice. IPv4 when the name has any, else IPv6. */
    int family = AF_INET6;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
        if (ai->ai_family == AF_INET)
            family = AF_INET;
    int dropped = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family != family)
            continue;
        char a[INET6_ADDRSTRLEN], buf[GS_URL_MAX];
        if (ai->ai_family == AF_INET) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, a, sizeof a);
            snprintf(buf, sizeof buf, "tcp://%s:%d", a, u.port);
        } else if (ai->ai_family == AF_INET6) {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, a, sizeof a);
            snprintf(buf, sizeof buf, "tcp://[%s]:%d", a, u.port);
        } else {
            continue;
        }
        int dup = 0;
        for (int i = 0; i < out->n && !dup; i++)
            dup = !strcmp(out->url[i], buf);
        if (dup)
            continue;
        if (out->n == GS_RESOLVE_MAX) {
            dropped++;
            continue;
        }
        memcpy(out->url[out->n++], buf, sizeof buf);
    }
    freeaddrinfo(res);
    if (out->n == 0)
        return gs_diag_set(d, GS_ENOENT, "cannot resolve '%s': no IPv4 or IPv6 address", u.host);
    qsort(out->url, (size_t)out->n, sizeof out->url[0], cmp_url);
    gs_diag_clear(d);
    if (dropped)
        gs_diag_set(d, 0, "'%s' has %d more addresses than the %d kept", u.host, dropped,
                    GS_RESOLVE_MAX);
    return 0;
}

int gs_addr_set_has(const gs_addr_set *set, const char *url)
{
    for (int i = 0; i < set->n; i++)
        if (!strcmp(set->url[i], url))
            return 1;
    return 0;
}
