/* Internal structures of the HTTP proxy engine.
 *
 *   downstream (sl_down_t: an HTTP/1.1 connection, or one stream of an HTTP/2 connection)
 *       --owns--> session (one request)
 *   session --borrows--> upstream (sl_up_t: an HTTP/1.1 connection from the worker's pool or
 *       freshly dialled, or one stream of a multiplexed HTTP/2 connection)
 *
 * The session is protocol-free: it runs the hooks and moves header structures and body pieces;
 * each side's ops frame them for its protocol.
 *
 * Buffers: each connection reads into one buffer that is taken from a per-worker free list when
 * bytes arrive and given back when the connection goes idle, so idle keep-alive connections
 * hold no buffer. Header and body views point into these buffers; a buffer is compacted only
 * when no view or pending write refers to it. */
#ifndef SL_HTTP_PROXY_IMPL_H
#define SL_HTTP_PROXY_IMPL_H

#include <llhttp.h>
#include <stdatomic.h>
#include <stdint.h>

#include "sluice/proxy.h"
#include "sluice/stream.h"
#include "util/arena.h"
#include "util/timeout.h"

#define SL_IOBUF_SIZE   16384 /* upstream reads, request bodies */
#define SL_IOBUF_SMALL  4096  /* a client's first read: most header blocks fit */
#define SL_MAX_BODY_IOV 64

typedef struct sl_http_worker sl_http_worker_t;
typedef struct sl_http_service sl_http_service_t;
typedef struct sl_down sl_down_t;
typedef struct sl_up sl_up_t;
typedef struct h1_down h1_down_t;
typedef struct h1_up h1_up_t;
typedef struct h1_parse h1_parse_t;

/* ---- buffers ----------------------------------------------------------------------------- */

typedef struct sl_iobuf {
    char *data;
    size_t cap;
    size_t len;    /* bytes held: [0, len) */
    size_t parsed; /* bytes the parser consumed */
    int refs;      /* pending writes (on the other connection) that point into data */
} sl_iobuf_t;

/* Takes a buffer of size SL_IOBUF_SIZE or SL_IOBUF_SMALL from the worker's free lists. */
void sl__iobuf_get(sl_http_worker_t *hw, sl_iobuf_t *b, size_t size);
/* Gives it back (or frees a grown one). */
void sl__iobuf_put(sl_http_worker_t *hw, sl_iobuf_t *b);
/* Grows to at least want bytes (content preserved), up to max. Returns 0 or SL_ETOOLARGE. */
int sl__iobuf_grow(sl_iobuf_t *b, size_t want, size_t max);

/* ---- service and worker state ------------------------------------------------------------ */

struct sl_http_service {
    sl_proxy_hooks_t hooks;
    char *ca_file; /* the server's ca_file: default trust store for upstream TLS */
    /* client_bind_to_ipv4/ipv6: source addresses for upstream connections (port 0) */
    struct sockaddr_storage *bind4, *bind6;
    size_t n_bind4, n_bind6;
    void *app;
    sl_http_options_t opts;
    size_t pool_size;
    int max_retries;
    sl_http_worker_t **workers; /* by worker id */
    size_t n_workers;
    sl_service_t *service;
};

typedef struct sl_pool sl_pool_t;

struct sl_http_worker {
    sl_http_service_t *svc;
    sl_worker_t *worker;
    uv_loop_t *loop;
    char **free_bufs, **free_small;
    size_t n_free_bufs, n_free_small;
    sl_session_t *free_sessions;
    size_t n_free_sessions;
    sl_pool_t *pool;
    h1_down_t *conns;        /* every HTTP/1.1 client connection, for shutdown */
    struct h2_conn *h2conns; /* every HTTP/2 client connection */
    struct h2u_conn *h2up;   /* HTTP/2 upstream connections (and HTTP/1.1-only memories) */
    sl_session_t *tunnels;   /* sessions in SS_TUNNEL */
    char *h2_rbuf;           /* HTTP/2 reads (nghttp2 consumes them at once) */
    h1_parse_t *free_parse;
    size_t n_free_parse;
    size_t bind_next; /* rotation over client_bind_to addresses */
    sl_shutdown_sub_t on_shutdown;
    sl_shutdown_sub_t on_expired;
    /* Counters read by other threads (metrics). */
    _Atomic uint64_t st_accepted, st_requests, st_reused;
    _Atomic long st_open, st_active, st_up_open, st_up_idle;
    bool shutting_down;
    bool stopped; /* worker_stop ran: buffers and sessions are freed, not recycled */
    /* Body spans found by one parser run; delivered before anything else runs. */
    uv_buf_t down_iov[SL_MAX_BODY_IOV];
    uv_buf_t up_iov[SL_MAX_BODY_IOV];
};

/* ---- framing ----------------------------------------------------------------------------- */

typedef enum body_mode {
    BODY_NONE,    /* no body */
    BODY_LENGTH,  /* Content-Length */
    BODY_CHUNKED, /* chunked transfer coding */
    BODY_CLOSE,   /* until the connection closes (responses only) */
} body_mode_t;

/* ---- the two sides, as the session sees them -------------------------------------------- */

/* The client side of one request. */
typedef struct sl_down_ops {
    /* The response header is final (hop-by-hop fields removed): frame it for the protocol and
     * keep it pending (s->head_pending); the first write takes it along. */
    void (*response_head)(sl_session_t *s, sl_response_header_t *r);
    /* Writes the pending head (if any), body pieces, and at end the end of the response (with
     * s->up_trailers where the framing carries them). Exactly one sl__session_on_down_write_done
     * with tag follows a call that returns 0. */
    int (*response_write)(sl_session_t *s, const uv_buf_t *body, unsigned n, bool end, int tag);
    /* 100 Continue (returns 0 when sent). */
    int (*send_continue)(sl_session_t *s);
    /* The session is ready for request body pieces. */
    void (*resume_body)(sl_down_t *d);
    /* Request body bytes are already buffered (no 100 Continue needed). */
    bool (*body_buffered)(sl_down_t *d);
    /* Body pieces handed to the session point into the side's buffer: writes that reference
     * it hold it (hold/unhold) so it is not reused under them. */
    bool (*owns)(sl_down_t *d, const void *p);
    void (*hold)(sl_down_t *d);
    void (*unhold)(sl_down_t *d);
    /* The session finished (every write completed) / must end now (the response is cut). */
    void (*session_done)(sl_down_t *d);
    void (*abort)(sl_down_t *d);
    const struct sockaddr *(*peer_addr)(const sl_down_t *d);
    /* After an upgrade: gives the connection up (NULL when the protocol cannot), with the bytes
     * that followed the request (malloc'd, may be NULL). */
    sl_stream_t *(*take_stream)(sl_down_t *d, char **lead, size_t *lead_len);
} sl_down_ops_t;

struct sl_down {
    const sl_down_ops_t *ops;
    sl_http_worker_t *hw;
    sl_stream_t *stream; /* the client's connection (shared by HTTP/2 streams) */
    sl_session_t *session;
    uint16_t write_pending; /* response writes not yet completed */
    bool close_after;       /* HTTP/1.1: no keep-alive after this response */
};

/* The upstream side of one request. */
typedef struct sl_up_ops {
    /* Sends s->up_req (framing decided here) and starts awaiting the response. */
    int (*request_head)(sl_session_t *s);
    /* Body pieces (and at end, s->req_trailers where the framing carries them); one
     * sl__session_on_up_write_done with tag per call that returns 0. */
    int (*request_write)(sl_session_t *s, const uv_buf_t *body, unsigned n, bool end, int tag);
    /* Continues delivering the response after the session's filters ran. */
    void (*resume_reading)(sl_up_t *u);
    /* The session is done with it: reuse it when reusable, else close it. */
    void (*release)(sl_up_t *u, bool reusable);
    bool (*owns)(sl_up_t *u, const void *p);
    void (*hold)(sl_up_t *u);
    void (*unhold)(sl_up_t *u);
    /* After a 101: gives the connection up (NULL when the protocol cannot), with the bytes that
     * followed the response head (malloc'd, may be NULL). */
    sl_stream_t *(*take_stream)(sl_up_t *u, char **lead, size_t *lead_len);
} sl_up_ops_t;

struct sl_up {
    const sl_up_ops_t *ops;
    sl_session_t *session;
    sl_stream_t *stream;
    bool got_bytes; /* any response byte seen: a failure after this is not retryable */
};

/* ---- downstream HTTP/1.1 connection ------------------------------------------------------ */

typedef enum h1_down_state {
    DOWN_IDLE,    /* keep-alive, waiting for a request */
    DOWN_HEADERS, /* reading a request's header block */
    DOWN_ACTIVE,  /* a session runs */
    DOWN_CLOSING,
} h1_down_state_t;

typedef struct hdr_off {
    uint32_t name_off, name_len, val_off, val_len;
} hdr_off_t;

/* The header lines of one HTTP/1.x message being parsed, as offsets from its first byte (a
 * request in h1_down, a response in h1_up): llhttp hands fields and values over in pieces. */
typedef struct h1_hdrs {
    hdr_off_t *v;
    size_t n, cap; /* the array is kept across messages: it is sized for the traffic */
    int phase;     /* 0 none, 1 in a field, 2 in a value */
} h1_hdrs_t;

/* Parse state of a client connection, held only while it has bytes to parse: idle keep-alive
 * connections give it back (with their buffer) to the worker's free list. */
struct h1_parse {
    sl_iobuf_t in; /* the bytes being parsed */
    llhttp_t parser;
    size_t msg_start; /* the current request's first byte in `in` */
    size_t body_base; /* end of its header block */
    uint32_t url_off, url_len, method_off, method_len;
    h1_hdrs_t h;
    size_t n_body_iov; /* body spans of one llhttp_execute, in hw->down_iov */
    int parse_error;
    bool headers_done, message_done, in_trailers;
    struct h1_parse *next_free;
};

struct h1_down {
    sl_down_t base;
    h1_parse_t *p; /* buffer and parse state; NULL while idle */
    sl_timeout_t tmo;
    h1_down_t *prev, *next; /* hw->conns */
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } peer; /* AF_UNIX peers keep only the family */
    uint32_t requests;
    uint8_t state; /* h1_down_state_t */
    uint8_t timer_mode;
    bool reading;
    bool peer_eof;  /* the client half-closed */
    bool body_hold; /* the session is not ready for request body bytes yet */
};

/* ---- upstream connection ----------------------------------------------------------------- */

typedef enum h1_up_state {
    UP_CONNECTING,
    UP_HANDSHAKE, /* TLS */
    UP_ACTIVE,    /* serving a session */
    UP_IDLE,      /* in the pool */
    UP_CLOSED,
} h1_up_state_t;

typedef struct sl_pool_key {
    uint64_t hash;
    struct sockaddr_storage addr;
    unsigned addr_len;
    bool tls;
    bool verify_name;
    void *tls_ctx; /* the client context: trust store, client certificate, ALPN, verification */
    char sni[256];
    unsigned char tunnel[32]; /* through a CONNECT proxy: digest of proxy, target, credentials */
} sl_pool_key_t;

struct h1_up {
    sl_up_t base;
    sl_http_worker_t *hw;
    /* while dialing: the peer, and who hears the outcome when not a session */
    const sl_peer_t *dial_peer;
    void (*dial_cb)(void *arg, h1_up_t *u, int err);
    void *dial_arg;
    h1_up_state_t state;
    sl_pool_key_t key;
    llhttp_t parser;
    sl_iobuf_t in;
    sl_timeout_t tmo;
    int timer_mode;
    uv_connect_t connect_req;
    uint64_t idle_timeout_ms;
    uint64_t requests;
    bool reused;
    bool reading;
    bool hold;        /* the session is busy with the header: do not parse on */
    bool peer_closed; /* the upstream sent EOF */
    int eof_status;   /* the end (UV_EOF or an error) not handled yet: bytes before it wait */
    int write_pending;
    /* pool links */
    h1_up_t *bucket_next, *bucket_prev;
    h1_up_t *lru_next, *lru_prev;
    /* response parse state */
    uint32_t status_off, status_len;
    h1_hdrs_t h;
    bool headers_done, message_done, head_request;
    bool informational, restart_msg, header_published, end_delivered;
    int parse_error;
    size_t msg_start, body_base;
    size_t n_body_iov; /* body spans of one llhttp_execute, in hw->up_iov */
    bool in_trailers;
};

/* ---- session ----------------------------------------------------------------------------- */

typedef enum sess_state {
    SS_EARLY_FILTER,
    SS_REQUEST_FILTER,
    SS_UPSTREAM_PEER,
    SS_CONNECT,
    SS_CONNECTING,
    SS_CONNECTED_HOOK,
    SS_UP_REQUEST_FILTER,
    SS_SEND_REQUEST,
    SS_PROXYING, /* request sent; body going up; waiting for the response header */
    SS_UP_RESPONSE_FILTER,
    SS_RESPONSE_FILTER,
    SS_RESPONSE_BODY, /* streaming the response to the client */
    SS_FAILING,       /* fail_to_proxy runs */
    SS_RESPONDING,    /* a locally generated response is being written */
    SS_TUNNEL,        /* upgraded: a byte pipe between the two connections */
    SS_DONE,
} sess_state_t;

struct sl_session {
    sl_http_service_t *svc;
    sl_http_worker_t *hw;
    sl_down_t *down;
    sl_up_t *up;
    sess_state_t state;
    void *ctx;
    bool ctx_made;
    sl_request_header_t req;
    sl_request_header_t up_req;
    sl_response_header_t *resp;   /* sent / being sent to the client */
    sl_response_header_t up_resp; /* as received from upstream */
    sl_peer_t peer;
    void *tls_ctx; /* SSL_CTX for a TLS peer */
    bool have_peer;
    int error;
    const char *error_reason;
    int deferred_err; /* an error that arrived while a hook was pending */
    bool in_hook;
    bool pending; /* a hook returned SL_PENDING and owes a resume */
    int resumed_rc;
    bool resumed;
    int retries;
    bool retry;
    bool reused;
    bool no_pool;
    /* request body */
    body_mode_t req_body;
    uint64_t req_content_length;
    bool req_body_done;    /* the whole request body was read from the client */
    bool req_body_started; /* some body went upstream: no retry any more */
    bool up_req_chunked;
    bool expect_continue;
    bool sent_continue;
    /* response */
    body_mode_t resp_body_up; /* how the upstream frames it */
    uint64_t resp_content_length;
    body_mode_t resp_body_down; /* how we frame it to the client */
    uv_buf_t head_buf;
    bool head_pending; /* serialized, not yet written (waits for the first body) */
    bool resp_header_sent;
    bool resp_done; /* the whole response was handed to the client stream */
    bool up_resp_done;
    bool client_wants_close;
    bool head;
    int status;
    uint64_t body_bytes_sent;
    uint64_t start_ms;
    uint64_t start_ns, connect_start_ns, connect_ns;
    const char *error_format;
    sl_headers_t up_trailers;
    sl_headers_t req_trailers;
    char client_ip[48];
    struct sockaddr_storage client_addr; /* a copy: the session may outlive its client side */
    struct h2u_conn *h2_wait;            /* waiting for a stream of this HTTP/2 connection */
    sl_session_t *h2_wait_next;
    bool detached;                           /* the client side is gone; a hook owes a resume */
    bool upgrade;                            /* the client asked for Upgrade (WebSocket, ...) */
    struct sl_pipe *pipe;                    /* SS_TUNNEL */
    sl_session_t *tunnel_prev, *tunnel_next; /* hw->tunnels */
    sl_session_t *next_free;
    sl_arena_t arena; /* last: everything before it is reset per request */
};

/* ---- functions between the files -------------------------------------------------------- */

/* proxy_service.c */
sl_http_worker_t *sl__http_worker(sl_http_service_t *svc, sl_worker_t *w);

/* h1_down.c */
void sl__down_new(sl_http_service_t *svc, sl_stream_t *stream);
/* Graceful shutdown (expired=false: idle connections close, busy ones after the response;
 * expired=true: everything closes now). */
void sl__down_shutdown_all(sl_http_worker_t *hw, bool expired);
/* Frees the worker's recycled parse states (worker stop). */
void sl__down_free_parse_list(sl_http_worker_t *hw);

/* h2_down.c */
void sl__h2_init(void); /* once, before workers run */
/* A client that chose h2 by ALPN. */
void sl__h2_down_new(sl_http_service_t *svc, sl_stream_t *stream);
/* A plain connection that started with the HTTP/2 preface (pre: the bytes read so far). */
void sl__h2_down_takeover(sl_http_worker_t *hw, sl_stream_t *stream, const struct sockaddr *peer,
                          const char *pre, size_t pre_len);
/* Upgrade: h2c on a bodiless HTTP/1.1 request: answers 101 and serves req as stream 1; rest are
 * bytes that followed the request. Returns 0, or SL_EPARSE for a bad HTTP2-Settings. */
int sl__h2_down_upgrade(sl_http_worker_t *hw, sl_stream_t *stream, const struct sockaddr *peer,
                        sl_str_t settings, const sl_request_header_t *req, const char *rest,
                        size_t rest_len);
void sl__h2_down_shutdown_all(sl_http_worker_t *hw, bool expired);
/* 1: p starts with the whole client preface, 0: with a part of it, -1: not at all. */
int sl__h2_preface_match(const char *p, size_t n);

/* h2_up.c */
void sl__h2_up_init(void);
/* A stream for the session's peer over HTTP/2: 0 (s->up is set), SL_PENDING (a connection is
 * being dialled or has no free slot yet: sl__session_on_connected follows), 1 (the peer speaks
 * HTTP/1.1: use the HTTP/1.1 side), or an error. */
int sl__h2_up_attach(sl_session_t *s);
void sl__h2_up_unwait(sl_session_t *s);
void sl__h2_up_close_all(sl_http_worker_t *hw);

/* h1_up.c */
/* Takes an idle pooled connection for the session's peer (and TLS context), or NULL. */
sl_up_t *sl__up_pool_take(sl_http_worker_t *hw, const sl_peer_t *peer, void *tls_ctx);
/* Dials the session's peer; sl__session_on_connected() reports the outcome. */
void sl__up_connect(sl_session_t *s);
/* Dials peer (valid until cb) for another owner: cb(arg, u or NULL, err) reports. Returns 0, or
 * an error at once (cb is not called). */
int sl__up_dial(sl_http_worker_t *hw, const sl_peer_t *peer, void *tls_ctx,
                void (*cb)(void *arg, h1_up_t *u, int err), void *arg, h1_up_t **out);
void sl__up_dial_cancel(h1_up_t *u);
/* Takes a dialed connection's socket (TLS included) for another protocol; u is freed. */
sl_stream_t *sl__up_take_stream(h1_up_t *u);
/* Why the dial that just failed failed, when it says more than its error (a CONNECT proxy's
 * refusal); for dial callbacks, NULL otherwise. */
const char *sl__up_dial_reason(void);
/* Sets the session's error reason (the error response's message) to a copy of why. */
void sl__up_set_reason(sl_session_t *s, const char *why);
/* The pool key of a peer. */
void sl__pool_key(sl_pool_key_t *k, const sl_peer_t *peer, void *tls_ctx);
bool sl__pool_key_eq(const sl_pool_key_t *a, const sl_pool_key_t *b);
void sl__pool_free(sl_pool_t *pool);
sl_pool_t *sl__pool_new(sl_http_worker_t *hw, size_t max_idle);
size_t sl__pool_idle_count(const sl_pool_t *pool);

/* session.c */
/* A new session on the client side d (d->session is set). The protocol fills s->req and the
 * request framing fields, then calls sl__session_begin, or sl__session_fail_request for a
 * request it could not accept. */
sl_session_t *sl__session_new(sl_down_t *d);
void sl__session_begin(sl_session_t *s);
void sl__session_fail_request(sl_session_t *s, int err);
void sl__session_release(sl_http_worker_t *hw, sl_session_t *s);
void sl__session_on_connected(sl_session_t *s, sl_up_t *u, int err);
void sl__session_on_request_body(sl_session_t *s, uv_buf_t *iov, size_t n, bool end);
/* Write tags: which side's buffer a write's data points into. */
enum { WTAG_NONE = 0, WTAG_DOWN_BUF = 1, WTAG_UP_BUF = 2 };
void sl__session_on_down_write_done(sl_session_t *s, int status, int tag);
void sl__session_on_up_write_done(sl_session_t *s, int status, int tag);
void sl__session_on_response_header(sl_session_t *s);
void sl__session_on_response_body(sl_session_t *s, uv_buf_t *iov, size_t n, bool end);
void sl__session_on_up_error(sl_session_t *s, int err);
void sl__session_on_down_error(sl_session_t *s, int err);
/* Writes the response head if no body piece took it along. */
void sl__session_flush_head(sl_session_t *s);
/* Shutdown: every tunnel ends now. */
void sl__session_close_tunnels(sl_http_worker_t *hw);
/* A request the protocol rejected before a session ran: answer with the error's status. */
void sl__session_reject(sl_down_t *d, int err);
/* True when the header is hop-by-hop (RFC 9110 7.6.1 and the usual extras). */
bool sl__is_hop_by_hop(sl_str_t name);

/* headers.c: true when the comma-separated list holds token (case-insensitive). */
bool sl__str_has_token(sl_str_t list, sl_str_t token);

/* h1_hdrs.c: llhttp's header callbacks, shared by requests and responses. Each returns 0 or
 * -1 (the caller names the error). */
/* A piece of a field name at off: starts a header unless in a field already; -1 when that
 * would make more than max. */
int sl__h1_hdrs_field(h1_hdrs_t *h, uint32_t off, size_t len, size_t max);
/* A piece of a value at off; -1 when it does not follow the previous piece (only a folded line,
 * obs-fold, which RFC 9112 rejects, would do that). */
int sl__h1_hdrs_value(h1_hdrs_t *h, uint32_t off, size_t len);
/* A piece of a trailer field (value false) or value, copied into t (its arena: a): trailers
 * sit in body bytes that may be reused. -1 past 64 trailers or 8 KiB in one name or value. */
int sl__h1_hdrs_trailer(h1_hdrs_t *h, sl_headers_t *t, sl_arena_t *a, const char *at, size_t len,
                        bool value);
/* The headers as strings into the message at base (values without trailing blanks), in an
 * array from a. */
void sl__h1_hdrs_publish(const h1_hdrs_t *h, const char *base, sl_headers_t *out, sl_arena_t *a);

/* h1_write.c */
/* Serializes a request header (request line + headers + blank line) into the arena. */
uv_buf_t sl__h1_serialize_request(sl_arena_t *a, const sl_request_header_t *req);
uv_buf_t sl__h1_serialize_response(sl_arena_t *a, const sl_response_header_t *resp);
/* "1a2f\r\n" for a chunk of n bytes. */
uv_buf_t sl__h1_chunk_header(sl_arena_t *a, size_t n);
/* The last chunk with the trailers (or none) and the final CRLF. */
uv_buf_t sl__h1_last_chunk(sl_arena_t *a, const sl_headers_t *trailers);
/* The default error body for status in format (json|html|text); sets *ctype. */
const char *sl__error_body(sl_arena_t *a, const char *format, int status, const char *message,
                           const char **ctype, size_t *len);

#endif
