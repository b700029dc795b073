/* sdnotify.h - systemd's readiness protocol for a Type=notify unit
 * (sd_notify(3)), without libsystemd: the state is one datagram of
 * "KEY=VALUE" lines sent to the unix socket that systemd names in
 * $NOTIFY_SOCKET, a path ("/run/systemd/notify") or an abstract name
 * ("@..."). The master uses it to say READY=1 once /ready answers 200,
 * RELOADING=1 then READY=1 around a SIGHUP reload, and STOPPING=1 on a
 * graceful stop (deploy/systemd/glmserve.service).
 *
 * Threading: no state; each call opens and closes its own socket. */
#ifndef GS_SDNOTIFY_H
#define GS_SDNOTIFY_H

#include "common/err.h"

/* Sends state (e.g. "READY=1\nSTATUS=serving") to the socket named by
 * socket_name, as $NOTIFY_SOCKET spells it. socket_name NULL or "": nothing
 * to do (not started by systemd), 0. Returns 1 when the datagram was sent,
 * GS_EINVAL for a name that is neither an absolute path nor "@name" or is
 * too long for a socket address, GS_EIO when the socket cannot be reached.
 * Borrows both strings. */
int gs_sdnotify(const char *socket_name, const char *state);

/* Whether the service answers GET /ready with 200 on the address of
 * listen_fd (a bound, listening TCP socket; a wildcard address is probed on
 * the loopback address of its family), waiting at most timeout_ms for the
 * answer. 1: ready; 0: not yet (no answer, or another status); GS_EIO when
 * the socket's address cannot be read. */
int gs_sdnotify_probe_ready(int listen_fd, int timeout_ms);

#endif
