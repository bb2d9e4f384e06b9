/* sluice — the HTTP proxy: Pingora's ProxyHttp hooks and the session they act on.
 *
 * Each request runs these hooks, in this order, on the worker thread of its connection:
 *
 *   new_ctx                   per-request context (free_ctx frees it after logging)
 *   early_request_filter      before anything else looks at the request
 *   request_filter            may answer itself (sl_session_respond*) and return SL_DONE
 *   upstream_peer             required: fill in the peer to forward to
 *   connected_to_upstream     once a connection is ready (fresh or reused)
 *   fail_to_connect           a connect failed; sl_session_set_retry() asks for another try
 *   upstream_request_filter   edit the request sent upstream
 *   request_body_filter       each chunk of the request body on its way upstream
 *   upstream_response_filter  the upstream's response header, as received
 *   response_filter           the response header about to go to the client
 *   response_body_filter      each chunk of the response body on its way to the client
 *   response_trailer_filter   trailers of a chunked response
 *   fail_to_proxy             an error ended the request; shape the error response
 *   logging                   always last, with the error (0 when none)
 *
 * Hooks return SL_CONTINUE (0), SL_DONE (only request filters: the response was sent),
 * SL_PENDING (the hook calls sl_session_resume() later, from its own callback), or a negative
 * error (SL_E*; sl_session_error() makes a custom one with a reason). A hook never blocks. */
#ifndef SLUICE_PROXY_H
#define SLUICE_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"
#include "peer.h"
#include "server.h"

enum { SL_CONTINUE = 0, SL_DONE = 1, SL_PENDING = 2 };

typedef struct sl_session sl_session_t;

/* A piece of body. Filters may point data elsewhere (arena memory) or set len to 0 to drop
 * it; a filter that changes the length must remove Content-Length in response_filter (or
 * upstream_request_filter) so the body is sent chunked. */
typedef struct sl_body {
    const char *data;
    size_t len;
} sl_body_t;

typedef struct sl_proxy_hooks {
    void *(*new_ctx)(sl_session_t *s);
    void (*free_ctx)(sl_session_t *s, void *ctx);
    int (*early_request_filter)(sl_session_t *s, void *ctx);
    int (*request_filter)(sl_session_t *s, void *ctx);
    int (*upstream_peer)(sl_session_t *s, void *ctx, sl_peer_t *peer);
    int (*connected_to_upstream)(sl_session_t *s, void *ctx, bool reused, const sl_peer_t *peer,
                                 int fd);
    /* Returns the error to continue with (usually err). */
    int (*fail_to_connect)(sl_session_t *s, void *ctx, const sl_peer_t *peer, int err);
    int (*upstream_request_filter)(sl_session_t *s, void *ctx, sl_request_header_t *req);
    int (*request_body_filter)(sl_session_t *s, void *ctx, sl_body_t *body, bool end_of_stream);
    int (*upstream_response_filter)(sl_session_t *s, void *ctx, sl_response_header_t *resp);
    int (*response_filter)(sl_session_t *s, void *ctx, sl_response_header_t *resp);
    int (*response_body_filter)(sl_session_t *s, void *ctx, sl_body_t *body, bool end_of_stream);
    int (*response_trailer_filter)(sl_session_t *s, void *ctx, sl_headers_t *trailers);
    /* Sends the error response (with sl_session_respond*) and returns the status it sent;
     * without this hook, the default JSON error body of SPEC §4 is sent. */
    int (*fail_to_proxy)(sl_session_t *s, void *ctx, int err);
    void (*logging)(sl_session_t *s, void *ctx, int err);
} sl_proxy_hooks_t;

/* Limits and timeouts of the downstream side. */
typedef struct sl_http_options {
    size_t max_request_line;       /* 414 beyond (default 8 KiB) */
    size_t max_header_size;        /* whole header block, 431 beyond (default 32 KiB) */
    size_t max_headers;            /* header count, 431 beyond (default 100) */
    uint64_t header_timeout_ms;    /* first byte to end of headers, 408 beyond (default 10 s) */
    uint64_t body_timeout_ms;      /* between two reads of a request body (default 60 s) */
    uint64_t keepalive_timeout_ms; /* idle between requests (default 60 s; 0 disables keep-alive) */
    size_t max_requests_per_conn;  /* 0: unlimited */
    bool add_forwarded_headers;    /* X-Forwarded-For/-Proto/-Host (default true) */
    const char *error_format;      /* "json" (default), "html" or "text" */
    /* HTTP/2 clients: over TLS when ALPN chose h2; on plain listeners by prior knowledge or
     * Upgrade: h2c when h2c is set (default true). */
    bool h2c;
    uint32_t h2_max_concurrent_streams; /* SETTINGS_MAX_CONCURRENT_STREAMS (default 128) */
    uint32_t h2_initial_window_size;    /* per stream receive window (default 256 KiB) */
} sl_http_options_t;

/* An HTTP proxy service (Pingora's http_proxy_service): conf gives the pool size and retry
 * count; hooks is copied; app is what sl_session_app() returns. */
sl_service_t *sl_http_proxy_service_new(const sl_server_conf_t *conf, const sl_proxy_hooks_t *hooks,
                                        void *app);
/* The service's options, to change before the server runs. */
sl_http_options_t *sl_http_proxy_options(sl_service_t *service);

/* Counters of a proxy service, summed over its workers (any thread, approximate while it runs). */
typedef struct sl_http_stats {
    uint64_t accepted;        /* client connections accepted */
    uint64_t requests;        /* requests started */
    long open;                /* client connections open */
    long active;              /* of which in a request */
    long upstream_open;       /* upstream connections open */
    long upstream_idle;       /* of which idle in the pool */
    uint64_t upstream_reused; /* requests that reused a pooled connection */
} sl_http_stats_t;
void sl_http_proxy_stats(sl_service_t *service, sl_http_stats_t *out);

/* ---- session ----------------------------------------------------------------------------- */

void *sl_session_app(sl_session_t *s);
sl_arena_t *sl_session_arena(sl_session_t *s);
/* The client's request. Changes made in early_request_filter/request_filter are seen by the
 * rest of the chain and sent upstream. */
sl_request_header_t *sl_session_req(sl_session_t *s);
/* The response header sent (or being sent) to the client, NULL before. */
const sl_response_header_t *sl_session_resp(const sl_session_t *s);
/* Client address and its text form ("1.2.3.4"; "unix" for unix sockets). */
const struct sockaddr *sl_session_client_addr(const sl_session_t *s);
const char *sl_session_client_ip(sl_session_t *s);
/* The value of request header name, or NULL. */
const sl_str_t *sl_session_req_header(sl_session_t *s, const char *name);
/* True over TLS. */
bool sl_session_is_tls(const sl_session_t *s);
/* The client's connection (for its TLS details: sl_stream_sni(), sl_stream_alpn(), ...). */
const sl_stream_t *sl_session_stream(const sl_session_t *s);
sl_worker_t *sl_session_worker(sl_session_t *s);

/* Answers the client directly (request filters, fail_to_proxy). content_type may be NULL.
 * Returns 0, then the hook returns SL_DONE. */
int sl_session_respond(sl_session_t *s, int status, const char *content_type, const void *body,
                       size_t len);
/* A response header to fill and send with sl_session_respond_header(). */
sl_response_header_t *sl_session_response_new(sl_session_t *s, int status);
int sl_session_respond_header(sl_session_t *s, sl_response_header_t *resp, const void *body,
                              size_t len);
/* The standard error response: status with the configured error format's body. */
int sl_session_respond_error(sl_session_t *s, int status, const char *message);
/* Overrides the error body format ("json", "html", "text") for this request; the string must
 * outlive the request. */
void sl_session_set_error_format(sl_session_t *s, const char *format);

/* Makes a custom error (Pingora's ErrorType::Custom): returns SL_ECUSTOM and remembers reason
 * (a static string) for fail_to_proxy and logging. */
int sl_session_error(sl_session_t *s, const char *reason);
const char *sl_session_error_reason(const sl_session_t *s);
/* The HTTP status an error maps to (SPEC §4), for fail_to_proxy. */
int sl_session_error_status(const sl_session_t *s, int err);

/* Finishes a hook that returned SL_PENDING with the code it would have returned. */
void sl_session_resume(sl_session_t *s, int rc);

/* In fail_to_connect: try again (upstream_peer runs again), up to max_retries. */
void sl_session_set_retry(sl_session_t *s, bool retry);
int sl_session_retries(const sl_session_t *s);

/* For logging: status sent to the client (0 if none), whether the upstream connection was
 * reused, bytes of body sent to the client, request duration so far (ms). */
int sl_session_status(const sl_session_t *s);
bool sl_session_upstream_reused(const sl_session_t *s);
uint64_t sl_session_body_bytes_sent(const sl_session_t *s);
uint64_t sl_session_duration_ms(const sl_session_t *s);
/* Nanoseconds since the request's header was complete (monotonic clock). */
uint64_t sl_session_elapsed_ns(const sl_session_t *s);
/* How long the upstream connect took, in ns (0 for a reused connection or none). */
uint64_t sl_session_connect_ns(const sl_session_t *s);
/* The peer chosen for this request (NULL before upstream_peer). */
const sl_peer_t *sl_session_peer(const sl_session_t *s);

#endif
