/* Error codes: names, messages and the one table mapping them to HTTP statuses. */
#include "sluice/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <uv.h>

typedef struct err_info {
    int code;
    const char *name;
    const char *msg;
    int http_status;
} err_info_t;

static const err_info_t sl_errors[] = {
    {SL_ECONFIG, "SL_ECONFIG", "invalid configuration", 500},
    {SL_EPARSE, "SL_EPARSE", "malformed request", 400},
    {SL_ETIMEDOUT_CONNECT, "SL_ETIMEDOUT_CONNECT", "upstream connect timed out", 504},
    {SL_ETIMEDOUT_READ, "SL_ETIMEDOUT_READ", "upstream read timed out", 504},
    {SL_ETIMEDOUT_WRITE, "SL_ETIMEDOUT_WRITE", "upstream write timed out", 504},
    {SL_EUPSTREAM_PROTO, "SL_EUPSTREAM_PROTO", "invalid response from upstream", 502},
    {SL_EUPSTREAM_CLOSED, "SL_EUPSTREAM_CLOSED", "upstream closed the connection", 502},
    {SL_EDOWNSTREAM_CLOSED, "SL_EDOWNSTREAM_CLOSED", "client closed the connection", 499},
    {SL_ETOOLARGE, "SL_ETOOLARGE", "size limit exceeded", 400},
    {SL_EHEADER_TOO_LARGE, "SL_EHEADER_TOO_LARGE", "request header fields too large", 431},
    {SL_EURI_TOO_LONG, "SL_EURI_TOO_LONG", "URI too long", 414},
    {SL_EBODY_TOO_LARGE, "SL_EBODY_TOO_LARGE", "request body too large", 413},
    {SL_ENOROUTE, "SL_ENOROUTE", "no route", 404},
    {SL_ECUSTOM, "SL_ECUSTOM", "request failed", 500},
    {SL_EINTERNAL, "SL_EINTERNAL", "internal error", 500},
    {SL_ETLS, "SL_ETLS", "upstream TLS handshake failed", 502},
    {SL_EDNS, "SL_EDNS", "upstream name resolution failed", 502},
    {SL_EUPSTREAM_HEADER_TOO_LARGE, "SL_EUPSTREAM_HEADER_TOO_LARGE",
     "upstream response header too large", 502},
    {SL_EPENDING, "SL_EPENDING", "pending", 500},
    {SL_ESHUTDOWN, "SL_ESHUTDOWN", "server shutting down", 503},
    {SL_EHEADER_READ_TIMEOUT, "SL_EHEADER_READ_TIMEOUT", "request header read timed out", 408},
    {SL_EBODY_READ_TIMEOUT, "SL_EBODY_READ_TIMEOUT", "request body read timed out", 408},
    {SL_ETUNNEL, "SL_ETUNNEL", "upstream proxy tunnel failed", 502},
    {SL_ENOUPSTREAM, "SL_ENOUPSTREAM", "no upstream available", 502},
    {SL_EH2, "SL_EH2", "HTTP/2 protocol error", 502},
    {SL_EUPSTREAM_NO_H2, "SL_EUPSTREAM_NO_H2", "upstream does not speak HTTP/2", 502},
    {SL_ECONFLICT, "SL_ECONFLICT", "conflicts with the current state", 409},
};

static const err_info_t *find(int err)
{
    for (size_t i = 0; i < sizeof(sl_errors) / sizeof(sl_errors[0]); i++)
        if (sl_errors[i].code == err)
            return &sl_errors[i];
    return NULL;
}

const char *sl_strerror(int err)
{
    const err_info_t *e = find(err);
    if (e)
        return e->msg;
    if (err < 0 && err > SL_EBASE)
        return uv_strerror(err);
    return "unknown error";
}

const char *sl_err_name(int err)
{
    const err_info_t *e = find(err);
    if (e)
        return e->name;
    if (err < 0 && err > SL_EBASE)
        return uv_err_name(err);
    return "EUNKNOWN";
}

int sl_error_http_status(int err)
{
    const err_info_t *e = find(err);
    if (e)
        return e->http_status;
    switch (err) {
    case UV_ETIMEDOUT:
        return 504;
    case UV_ECONNREFUSED:
    case UV_ECONNRESET:
    case UV_EHOSTUNREACH:
    case UV_ENETUNREACH:
    case UV_ECONNABORTED:
    case UV_EPIPE:
    case UV_EOF:
    case UV_EAI_NONAME:
    case UV_EAI_AGAIN:
    case UV_EADDRNOTAVAIL:
    case UV_ENOENT:
    case UV_EACCES:
        return 502;
    default:
        return err < 0 ? 502 : 500;
    }
}

int sl_error_set(sl_error_t *e, int code, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        e->code = code;
        vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
        va_end(ap);
    }
    return code;
}
