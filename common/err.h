/* err.h - the one error table of glmserve.
 *
 * Every fallible function returns 0 on success or a negative GS_E* code
 * from GS_ERR_MAP. The table gives each code a name, a message, the HTTP
 * status the gateway answers with, and the OpenAI-style error type.
 * Parsers of outside input also fill a gs_diag: the code plus a message
 * naming the key, offset or line that was wrong.
 * Thread-safe: everything here is pure or writes only caller memory. */
#ifndef GS_ERR_H
#define GS_ERR_H

#include <stddef.h>

/* XX(name, value, http status, openai type, message) */
#define GS_ERR_MAP(XX)                                                                             \
    XX(EINVAL, -1, 400, "invalid_request_error", "invalid argument")                               \
    XX(ENOMEM, -2, 503, "server_error", "out of memory")                                           \
    XX(EIO, -3, 500, "server_error", "i/o error")                                                  \
    XX(ENOENT, -4, 404, "invalid_request_error", "no such file or entry")                          \
    XX(EFORMAT, -5, 400, "invalid_request_error", "malformed data")                                \
    XX(ERANGE, -6, 400, "invalid_request_error", "value out of range")                             \
    XX(ETOOBIG, -7, 413, "invalid_request_error", "input too large")                               \
    XX(EUNSUPPORTED, -8, 415, "invalid_request_error", "unsupported format")                       \
    XX(EUTF8, -9, 400, "invalid_request_error", "invalid UTF-8 text")                              \
    XX(EAGAIN, -10, 503, "server_error", "resource temporarily unavailable")                       \
    XX(EBUSY, -11, 429, "rate_limit_error", "busy, try again later")                               \
    XX(ECANCELED, -12, 499, "server_error", "operation canceled")                                  \
    XX(EINTERNAL, -13, 500, "server_error", "internal error")                                      \
    XX(EDEVICE, -14, 500, "server_error", "device error")                                          \
    XX(ECONFIG, -15, 400, "invalid_request_error", "invalid configuration")                        \
    XX(ENOTSUP, -16, 501, "server_error", "not supported by this build")                           \
    XX(ETIMEDOUT, -17, 504, "server_error", "timed out")                                           \
    XX(EAUTH, -18, 401, "authentication_error", "invalid or missing API key")                      \
    XX(ECONTEXT, -19, 400, "invalid_request_error", "context length exceeded")                     \
    XX(EOVERLOAD, -20, 503, "server_error", "server overloaded, retry later")                      \
    XX(EWORKER, -21, 502, "server_error", "the worker serving the request failed")                 \
    XX(EPROTO, -22, 500, "server_error", "malformed message between processes")                    \
    XX(EMODEL, -23, 500, "server_error", "model or numeric failure")                               \
    XX(ESHUTDOWN, -24, 503, "server_error", "shutting down")

typedef enum {
    GS_OK = 0,
#define GS__ERR_ENUM(name, val, http, type, msg) GS_##name = (val),
    GS_ERR_MAP(GS__ERR_ENUM)
#undef GS__ERR_ENUM
} gs_err;

/* "EINVAL" etc.; "UNKNOWN" for codes outside the table. Static strings. */
const char *gs_err_name(int code);
/* Human message; static string. */
const char *gs_strerror(int code);
/* HTTP status for the code (200 for GS_OK, 500 for unknown codes). */
int gs_err_http_status(int code);
/* OpenAI error "type" for the code; static string. */
const char *gs_err_type(int code);

/* A diagnostic: a code plus a message that says what exactly was wrong.
 * Caller-owned (usually on the stack); always NUL-terminated. */
typedef struct {
    int code;
    char msg[256];
} gs_diag;

/* Sets d->code and a printf-formatted d->msg (d may be NULL); returns code
 * so that `return gs_diag_set(d, GS_EFORMAT, "...")` reads naturally. */
int gs_diag_set(gs_diag *d, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Clears d (code 0, empty message). d may be NULL. */
void gs_diag_clear(gs_diag *d);

#endif
