/* sluice — the TCP proxy (layer 4): every accepted stream is piped to an upstream peer.
 *
 * A connection runs these hooks, in this order, on the worker thread that accepted it:
 *
 *   new_ctx                 per-connection context (free_ctx frees it after logging)
 *   upstream_peer           required: fill in the peer to connect to
 *   fail_to_connect         a connect failed; sl_tcp_session_set_retry() asks for another try
 *   connected_to_upstream   the upstream connection is ready (TLS done when peer.tls)
 *   logging                 always last, once, with the error that ended it (0: both sides
 *                           closed cleanly)
 *
 * Hooks return SL_CONTINUE (0), SL_PENDING (upstream_peer only: the hook calls
 * sl_tcp_session_resume() later, from its own callback), or a negative error that closes the
 * client connection.
 *
 * Once connected, bytes flow both ways through one fixed buffer per direction (read straight
 * into it, written straight from it): when a side does not read, its buffer fills and the other
 * side is no longer read (backpressure). An EOF from one side becomes a half-close (shutdown of
 * the write side) of the other once the buffered bytes are written; the connection closes when
 * both directions have ended. A read or write error on either side, or the idle timeout, closes
 * both. Listeners with TLS work too: the proxy then sees the decrypted bytes (TLS termination),
 * and a peer with `tls` set makes the upstream connection a TLS client. */
#ifndef SLUICE_TCP_H
#define SLUICE_TCP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "conf.h"
#include "peer.h"
#include "proxy.h"
#include "server.h"

typedef struct sl_tcp_session sl_tcp_session_t;

typedef struct sl_tcp_proxy_hooks {
    void *(*new_ctx)(sl_tcp_session_t *s);
    void (*free_ctx)(sl_tcp_session_t *s, void *ctx);
    /* peer arrives filled by sl_peer_init() and then the service's options: connect_timeout_ms
     * and idle_timeout_ms (for a TCP proxy: the longest time without a byte in either
     * direction). Set peer->addr (and addr_len); change the timeouts for this connection if
     * needed. */
    int (*upstream_peer)(sl_tcp_session_t *s, void *ctx, sl_peer_t *peer);
    /* Returns the error to continue with (usually err). */
    int (*fail_to_connect)(sl_tcp_session_t *s, void *ctx, const sl_peer_t *peer, int err);
    /* fd is the upstream socket. An error closes both sides. */
    int (*connected_to_upstream)(sl_tcp_session_t *s, void *ctx, const sl_peer_t *peer, int fd);
    void (*logging)(sl_tcp_session_t *s, void *ctx, int err);
} sl_tcp_proxy_hooks_t;

typedef struct sl_tcp_options {
    uint64_t connect_timeout_ms; /* default 10 s; 0: none (the kernel's own limit) */
    uint64_t idle_timeout_ms;    /* no byte either way for this long closes both (default
                                    10 min, as nginx's proxy_timeout; 0: never) */
    size_t buffer_size;          /* per direction, 4 KiB - 16 MiB (default 64 KiB) */
} sl_tcp_options_t;

/* A TCP proxy service: conf gives max_retries, client_bind_to_ipv4/6, ca_file and the thread
 * count (NULL: defaults); hooks is copied; app is what sl_tcp_session_app() returns (not owned).
 * Add endpoints with sl_service_add_listen() / sl_service_add_tls(). */
sl_service_t *sl_tcp_proxy_service_new(const sl_server_conf_t *conf,
                                       const sl_tcp_proxy_hooks_t *hooks, void *app);
/* The service's options, to change before the server runs (a buffer size out of range is
 * clamped). */
sl_tcp_options_t *sl_tcp_proxy_options(sl_service_t *service);

/* Counters of a TCP proxy service, summed over its workers (any thread; approximate while it
 * runs). Bytes are counted as they arrive, so long transfers show up while they run. */
typedef struct sl_tcp_stats {
    uint64_t accepted;       /* client connections accepted */
    uint64_t connect_failed; /* upstream connect attempts that failed (each retry counts) */
    uint64_t bytes_in;       /* received from clients (and sent on upstream) */
    uint64_t bytes_out;      /* received from upstreams (and sent on to clients) */
    long open;               /* client connections open */
    long active;             /* of which connected to an upstream */
} sl_tcp_stats_t;
void sl_tcp_proxy_stats(sl_service_t *service, sl_tcp_stats_t *out);

/* ---- session ----------------------------------------------------------------------------- */

void *sl_tcp_session_app(sl_tcp_session_t *s);
sl_worker_t *sl_tcp_session_worker(sl_tcp_session_t *s);
/* The client's connection (for its addresses and TLS details: sl_stream_sni(), ...). */
const sl_stream_t *sl_tcp_session_stream(const sl_tcp_session_t *s);
/* The service that accepted the connection (one per listener in the gateway). */
sl_service_t *sl_tcp_session_service(const sl_tcp_session_t *s);
/* "1.2.3.4:5678", "[::1]:80" or "unix:/path" of the client. */
const char *sl_tcp_session_client_str(const sl_tcp_session_t *s);

/* Finishes an upstream_peer hook that returned SL_PENDING with the code it would have returned.
 * Must be called exactly once, on the session's worker thread, even when the server is shutting
 * down (the session waits for it before it frees itself). */
void sl_tcp_session_resume(sl_tcp_session_t *s, int rc);

/* In fail_to_connect: try again (upstream_peer runs again), up to max_retries. */
void sl_tcp_session_set_retry(sl_tcp_session_t *s, bool retry);
int sl_tcp_session_retries(const sl_tcp_session_t *s);

/* For logging: the peer chosen last (NULL before upstream_peer), bytes received from the client
 * and from the upstream, nanoseconds since the client connection was accepted, and how long the
 * upstream connect took (0 when it did not succeed). */
const sl_peer_t *sl_tcp_session_peer(const sl_tcp_session_t *s);
uint64_t sl_tcp_session_bytes_in(const sl_tcp_session_t *s);
uint64_t sl_tcp_session_bytes_out(const sl_tcp_session_t *s);
uint64_t sl_tcp_session_elapsed_ns(const sl_tcp_session_t *s);
uint64_t sl_tcp_session_connect_ns(const sl_tcp_session_t *s);

#endif
