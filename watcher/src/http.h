/* HTTP client on libcurl's multi interface, driven by a libuv loop (uv_poll per socket, one
 * uv_timer for curl's timeouts). Everything runs on the loop's thread.
 *
 * A request either accumulates its body (bounded by max_body) or, with on_line and a 200
 * answer, streams it as lines (each bounded by max_line: a longer line is reported once with
 * oversize=true and skipped up to its end). on_done is called exactly once per request unless
 * the request was cancelled. */
#ifndef WT_HTTP_H
#define WT_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

typedef struct wt_http wt_http_t;
typedef struct wt_http_req wt_http_req_t;

/* TLS settings of a peer: files or in-memory PEM (kubeconfig *-data). */
typedef struct wt_tls {
    char *ca_file, *ca_pem;
    char *cert_file, *cert_pem;
    char *key_file, *key_pem;
    bool insecure; /* do not verify the peer (kubeconfig insecure-skip-tls-verify) */
} wt_tls_t;

void wt_tls_free(wt_tls_t *t);

typedef struct wt_http_resp {
    long status;       /* 0 when no answer came */
    int curl_code;     /* CURLE_OK, or why the transfer failed */
    const char *error; /* readable reason when curl_code != 0 */
    bool aborted;      /* on_line asked to stop */
    bool too_large;    /* the body passed max_body */
    const char *body;  /* accumulated body (NUL-terminated), "" when streamed */
    size_t len;
    const char *etag; /* ETag header value or NULL */
    long retry_after; /* Retry-After seconds, -1 when absent */
    double seconds;   /* total time */
} wt_http_resp_t;

typedef void (*wt_http_done_cb)(wt_http_req_t *r, const wt_http_resp_t *resp, void *arg);
/* One line of a streamed body (without the newline). Return 0 to go on, -1 to stop the
 * transfer (on_done then sees aborted). Runs inside a curl callback: start or cancel no
 * request from here. */
typedef int (*wt_http_line_cb)(const char *line, size_t len, bool oversize, void *arg);

typedef struct wt_http_opts {
    const char *method; /* "GET" by default */
    const char *url;
    const char *const *headers; /* NULL-terminated "Name: value" list */
    const char *body;
    size_t body_len;
    long timeout_ms;         /* whole transfer; 0: none */
    long connect_timeout_ms; /* 0: 10 s */
    size_t max_body;         /* 0: 16 MiB */
    bool discard_body;       /* do not keep the body (only status and headers matter) */
    size_t max_line;         /* 0: 8 MiB */
    wt_http_line_cb on_line;
    wt_http_done_cb on_done;
    void *arg;
    const wt_tls_t *tls;
} wt_http_opts_t;

wt_http_t *wt_http_new(uv_loop_t *loop);
/* Cancels every request (no callbacks), then frees the client once its handles closed. */
void wt_http_free(wt_http_t *h);
/* Starts a request; NULL only when curl refuses the options (logged). */
wt_http_req_t *wt_http_start(wt_http_t *h, const wt_http_opts_t *o);
/* Stops a request; its on_done is not called. Not from inside its own on_line. */
void wt_http_cancel(wt_http_req_t *r);
/* Percent-encodes s for a URL query (caller frees). */
char *wt_http_escape(const char *s);

#endif
