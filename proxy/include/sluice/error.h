/* sluice — error codes.
 *
 * Functions return 0 on success or a negative code. The codes extend libuv's UV_E* (which are
 * negated errno values): SL_E* live below -4096 so the two never collide, and sl_strerror()
 * explains both. One table (sl_error_http_status) maps a code to the HTTP status the proxy
 * answers with when that error ends a request. */
#ifndef SLUICE_ERROR_H
#define SLUICE_ERROR_H

#include <stddef.h>

enum {
    SL_EBASE = -5000,
    SL_ECONFIG = SL_EBASE - 1, /* invalid configuration */
    SL_EPARSE = SL_EBASE - 2,  /* malformed input */
    SL_ETIMEDOUT_CONNECT = SL_EBASE - 3,
    SL_ETIMEDOUT_READ = SL_EBASE - 4,
    SL_ETIMEDOUT_WRITE = SL_EBASE - 5,
    SL_EUPSTREAM_PROTO = SL_EBASE - 6, /* upstream spoke garbage */
    SL_EUPSTREAM_CLOSED = SL_EBASE - 7,
    SL_EDOWNSTREAM_CLOSED = SL_EBASE - 8,
    SL_ETOOLARGE = SL_EBASE - 9, /* a cap was hit */
    SL_EHEADER_TOO_LARGE = SL_EBASE - 10,
    SL_EURI_TOO_LONG = SL_EBASE - 11,
    SL_EBODY_TOO_LARGE = SL_EBASE - 12,
    SL_ENOROUTE = SL_EBASE - 13,
    SL_ECUSTOM = SL_EBASE - 14, /* raised by a hook; see sl_session_error_reason() */
    SL_EINTERNAL = SL_EBASE - 15,
    SL_ETLS = SL_EBASE - 16,
    SL_EDNS = SL_EBASE - 17,
    SL_EUPSTREAM_HEADER_TOO_LARGE = SL_EBASE - 18,
    SL_EPENDING = SL_EBASE - 19, /* not an error: the operation completes later */
    SL_ESHUTDOWN = SL_EBASE - 20,
    SL_EHEADER_READ_TIMEOUT = SL_EBASE - 21,
    SL_EBODY_READ_TIMEOUT = SL_EBASE - 22,
    SL_ETUNNEL = SL_EBASE - 23,
    SL_ENOUPSTREAM = SL_EBASE - 24, /* no backend available */
    SL_EH2 = SL_EBASE - 25,
    SL_ECONFLICT = SL_EBASE - 26,       /* a change that conflicts with the current state */
    SL_EUPSTREAM_NO_H2 = SL_EBASE - 27, /* HTTP/2 was required; the upstream did not agree */
    SL_ELAST = SL_EBASE - 28,
};

/* Returns a static, human-readable description of an SL_E* or UV_E* code. */
const char *sl_strerror(int err);

/* Returns the short symbolic name ("SL_ETIMEDOUT_CONNECT", "ECONNREFUSED", ...). */
const char *sl_err_name(int err);

/* The HTTP status a proxy answers with when err ends a request (502, 504, 400, ...). */
int sl_error_http_status(int err);

/* An error with a message, for operations that must explain themselves (config loading). */
typedef struct sl_error {
    int code;
    char msg[1024];
} sl_error_t;

/* Sets e (when not NULL) to code and a printf-style message. Returns code. */
int sl_error_set(sl_error_t *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
