/* sdnotify.c - sd_notify(3) by hand (sdnotify.h): one SOCK_DGRAM sendto
 * to the path or abstract name of $NOTIFY_SOCKET, and the master's readiness
 * probe, a GET /ready on its own listening address. Owns nothing between
 * calls. */
#include "gateway/sdnotify.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/clock.h"

int gs_sdnotify(const char *socket_name, const char *state)
{
    if (!socket_name || !socket_name[0])
        return 0;
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    size_t n = strlen(socket_name);
    if ((socket_name[0] != '/' && socket_name[0] != '@') || n >= sizeof a.sun_path)
        return GS_EINVAL;
    memcpy(a.sun_path, socket_name, n);
    if (a.sun_path[0] == '@')
        a.sun_path[0] = 0; /* abstract: no terminating NUL in the length */
    socklen_t len =
        (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (socket_name[0] == '/' ? 1 : 0));
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return GS_EIO;
    ssize_t sent;
    do
        sent = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&a, len);
    while (sent < 0 && errno == EINTR);
    close(fd);
    return sent == (ssize_t)strlen(state) ? 1 : GS_EIO;
}

/* Waits until fd is ready for events or the deadline (ns) passes: 1 or 0. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        const uint64_t now = gs_clock_now_ns();
        if (now >= deadline)
            return 0;
        struct pollfd p = {fd, events, 0};
        int rc = poll(&p, 1, (int)((deadline - now) / 1000000u) + 1);
        if (rc > 0)
            return 1;
        if (rc < 0 && errno != EINTR)
            return 0;
    }
}

int gs_sdnotify_probe_ready(int listen_fd, int timeout_ms)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(listen_fd, (struct sockaddr *)&ss, &sl))
        return GS_EIO;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        if (in->sin_addr.s_addr == htonl(INADDR_ANY))
            in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr))
            in6->sin6_addr = in6addr_loopback;
    } else {
        return GS_EIO;
    }
    const uint64_t deadline = gs_clock_now_ns() + (uint64_t)timeout_ms * 1000000u;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    int ready = 0;
    int err = 0;
    socklen_t el = sizeof err;
    if (connect(fd, (struct sockaddr *)&ss, sl) && errno != EINPROGRESS)
        goto out;
    if (!wait_fd(fd, POLLOUT, deadline) || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) || err)
        goto out;
    static const char req[] = "GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if (send(fd, req, sizeof req - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof req - 1))
        goto out;
    /* Only the status line matters: "HTTP/1.1 200 " */
    char buf[64];
    size_t got = 0;
    while (got < 13 && wait_fd(fd, POLLIN, deadline)) {
        ssize_t r = recv(fd, buf + got, sizeof buf - got, 0);
        if (r <= 0 && !(r < 0 && (errno == EINTR || errno == EAGAIN)))
            break;
        if (r > 0)
            got += (size_t)r;
    }
    ready = got >= 13 && !memcmp(buf, "HTTP/1.", 7) && !memcmp(buf + 8, " 200 ", 5);
out:
    close(fd);
    return ready;
}
