/* err.c - names, messages, HTTP statuses and API types of the GS_E* codes. */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>

const char *gs_err_name(int code)
{
    switch (code) {
    case GS_OK:
        return "OK";
#define XX(name, val, http, type, msg)                                                             \
    case (val):                                                                                    \
        return #name;
        GS_ERR_MAP(XX)
#undef XX
    }
    return "UNKNOWN";
}

const char *gs_strerror(int code)
{
    switch (code) {
    case GS_OK:
        return "success";
#define XX(name, val, http, type, msg)                                                             \
    case (val):                                                                                    \
        return msg;
        GS_ERR_MAP(XX)
#undef XX
    }
    return "unknown error";
}

int gs_err_http_status(int code)
{
    switch (code) {
    case GS_OK:
        return 200;
#define XX(name, val, http, type, msg)                                                             \
    case (val):                                                                                    \
        return http;
        GS_ERR_MAP(XX)
#undef XX
    }
    return 500;
}

const char *gs_err_type(int code)
{
    switch (code) {
#define XX(name, val, http, type, msg)                                                             \
    case (val):                                                                                    \
        return type;
        GS_ERR_MAP(XX)
#undef XX
    }
    return "server_error";
}

int gs_diag_set(gs_diag *d, int code, const char *fmt, ...)
{
    if (d) {
        va_list ap;
        d->code = code;
        va_start(ap, fmt);
        vsnprintf(d->msg, sizeof d->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

void gs_diag_clear(gs_diag *d)
{
    if (d) {
        d->code = 0;
        d->msg[0] = '\0';
    }
}
