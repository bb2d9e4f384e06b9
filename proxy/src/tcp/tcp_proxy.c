/* The TCP proxy service: each accepted stream is connected to an upstream peer and the two are
 * piped together, one fixed ring buffer per direction.
 *
 * A direction reads from one side straight into its ring and writes each read straight out of
 * it (no copy). Bytes stay counted in the ring until their write completes; when the ring has
 * no room for another read, reading that side stops (backpressure) until the writes drain it
 * below half. Writes that the socket takes at once complete from the next loop iteration, so a
 * full ring whose writes are already in the kernel keeps reading armed instead of toggling it. */
#include <arpa/inet.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "core/core.h"
#include "io/connect_tunnel.h"
#include "io/stream_impl.h"
#include "io/tls.h"
#include "sluice/tcp.h"
#include "util/mem.h"
#include "util/timeout.h"

#define SL_LOG_TAG "tcp"
#include "sluice/log.h"

#define MIN_BUFFER     (4u << 10)
#define MAX_BUFFER     (16u << 20)
#define MAX_FREE_BUFS  64
#define MAX_WORKERS    1024
#define DEFAULT_IDLE   (10u * 60 * 1000)
#define DEFAULT_CONN   10000
#define DEFAULT_BUFFER (64u << 10)

enum { DIR_UP = 0, DIR_DOWN = 1 }; /* client -> upstream, upstream -> client */

typedef struct tcp_service tcp_service_t;
typedef struct tcp_worker tcp_worker_t;

struct tcp_worker {
    tcp_service_t *svc;
    sl_worker_t *worker;
    uv_loop_t *loop;
    sl_tcp_session_t *sessions; /* every session of this worker, for shutdown */
    char *free_bufs[MAX_FREE_BUFS];
    size_t n_free_bufs;
    size_t bind_next;
    uint32_t buf_size; /* the service's buffer_size, clamped, read when the worker started */
    bool stopped;
    sl_shutdown_sub_t on_expired;
    _Atomic uint64_t st_accepted, st_connect_failed, st_bytes_in, st_bytes_out;
    _Atomic long st_open, st_active;
};

struct tcp_service {
    sl_service_t *service;
    sl_tcp_proxy_hooks_t hooks;
    void *app;
    sl_tcp_options_t opts;
    int max_retries;
    char *ca_file;
    struct sockaddr_storage *bind4, *bind6;
    size_t n_bind4, n_bind6;
    tcp_worker_t **workers; /* by worker id */
};

typedef enum tcp_state {
    TS_PEER,       /* upstream_peer runs */
    TS_PENDING,    /* upstream_peer returned SL_PENDING */
    TS_CONNECTING, /* TCP or unix connect */
    TS_TUNNEL,     /* HTTP CONNECT through the peer's forward proxy */
    TS_HANDSHAKE,  /* upstream TLS */
    TS_PIPING,
    TS_CLOSING,
} tcp_state_t;

/* One direction's ring: bytes read but not yet known to be written are [start, gap) and then
 * [0, rd) when the ring wrapped (gap < cap), else [start, rd). */
typedef struct tcp_dir {
    char *buf; /* NULL while the direction holds no bytes */
    uint32_t start, used, rd, gap;
    bool reading;
    bool starved; /* a read found the ring full while its writes were only awaiting callbacks */
    bool eof;     /* the source side ended */
    bool shut;    /* the other side's write side is shut down (or being) */
    bool done;
} tcp_dir_t;

typedef struct tcp_connect {
    uv_connect_t req;
    sl_tcp_session_t *s;
} tcp_connect_t;

struct sl_tcp_session {
    tcp_worker_t *tw;
    sl_tcp_session_t *prev, *next;
    sl_stream_t *client, *upstream;
    void *ctx;
    sl_peer_t peer;
    tcp_connect_t *connecting; /* the current attempt's request (stale ones are ignored) */
    sl_timeout_t timer;        /* connect, then idle */
    tcp_dir_t dir[2];
    uint64_t bytes[2];
    uint64_t t_start, t_connect, connect_ns;
    uint64_t idle_ms, idle_armed_at;
    int retries;
    int err;
    uint8_t state;
    uint8_t handles; /* streams not yet closed */
    bool has_peer : 1;
    bool retry : 1;
    bool active : 1;  /* counted in st_active */
    bool in_hook : 1; /* closed while upstream_peer is pending: wait for the resume */
    char client_str[128];
};

static const char *state_str(tcp_state_t st)
{
    switch (st) {
    case TS_PEER:
        return "peer";
    case TS_PENDING:
        return "pending";
    case TS_CONNECTING:
        return "connecting";
    case TS_TUNNEL:
        return "tunnel";
    case TS_HANDSHAKE:
        return "handshake";
    case TS_PIPING:
        return "piping";
    case TS_CLOSING:
        return "closing";
    }
    return "?";
}

static void set_state(sl_tcp_session_t *s, tcp_state_t st)
{
    SL_TRACE("%s: %s -> %s", s->client_str, state_str((tcp_state_t)s->state), state_str(st));
    s->state = (uint8_t)st;
}

/* ---- buffers ----------------------------------------------------------------------------- */

static char *buf_get(tcp_worker_t *tw)
{
    if (tw->n_free_bufs)
        return tw->free_bufs[--tw->n_free_bufs];
    return sl_xmalloc(tw->buf_size);
}

static void buf_put(tcp_worker_t *tw, char *b)
{
    if (!tw->stopped && tw->n_free_bufs < MAX_FREE_BUFS)
        tw->free_bufs[tw->n_free_bufs++] = b;
    else
        free(b);
}

/* The contiguous free region for the next read, or false when the ring is full. */
static bool dir_region(tcp_worker_t *tw, tcp_dir_t *d, uint32_t *off, uint32_t *len)
{
    uint32_t cap = tw->buf_size, min = cap / 4;
    if (!d->buf)
        d->buf = buf_get(tw);
    if (d->used == 0) {
        d->start = d->rd = 0;
        d->gap = cap;
    }
    if (d->gap == cap) {
        if (cap - d->rd >= min || d->used == 0) {
            *off = d->rd;
            *len = cap - d->rd;
            return true;
        }
        if (d->start < min)
            return false;
        d->gap = d->rd; /* wrap: the tail stays unused until start passes it */
        d->rd = 0;
    }
    if (d->start - d->rd < min)
        return false;
    *off = d->rd;
    *len = d->start - d->rd;
    return true;
}

/* n bytes were written. Completions may arrive out of order (a write the socket took at once
 * reports from the next iteration), but any completion means every earlier byte is in the
 * kernel too: releasing the oldest n bytes is always safe. */
static void dir_ack(tcp_dir_t *d, uint32_t n, uint32_t cap)
{
    d->used -= n;
    if (d->gap != cap && d->start + n >= d->gap) {
        n -= d->gap - d->start;
        d->start = 0;
        d->gap = cap;
    }
    d->start += n;
}

/* ---- life cycle -------------------------------------------------------------------------- */

static void session_free(sl_tcp_session_t *s)
{
    tcp_worker_t *tw = s->tw;
    tcp_service_t *svc = tw->svc;
    if (sl_log_enabled(SL_LOG_DEBUG)) {
        char up[300] = "-";
        if (s->has_peer)
            sl_peer_addr_str(&s->peer, up, sizeof(up));
        SL_DEBUG("%s -> %s: closed after %.3f s, %llu bytes in, %llu bytes out%s%s", s->client_str,
                 up, (double)(uv_hrtime() - s->t_start) / 1e9, (unsigned long long)s->bytes[DIR_UP],
                 (unsigned long long)s->bytes[DIR_DOWN], s->err ? ": " : "",
                 s->err ? sl_strerror(s->err) : "");
    }
    if (svc->hooks.logging)
        svc->hooks.logging(s, s->ctx, s->err);
    if (svc->hooks.free_ctx)
        svc->hooks.free_ctx(s, s->ctx);
    for (int i = 0; i < 2; i++)
        if (s->dir[i].buf)
            buf_put(tw, s->dir[i].buf);
    if (s->prev)
        s->prev->next = s->next;
    else
        tw->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    atomic_fetch_sub_explicit(&tw->st_open, 1, memory_order_relaxed);
    if (s->active)
        atomic_fetch_sub_explicit(&tw->st_active, 1, memory_order_relaxed);
    free(s);
}

static void maybe_free(sl_tcp_session_t *s)
{
    if (s->state == TS_CLOSING && s->handles == 0 && !s->in_hook)
        session_free(s);
}

static void on_client_closed(sl_stream_t *st)
{
    sl_tcp_session_t *s = sl_stream_data(st);
    s->client = NULL;
    s->handles--;
    maybe_free(s);
}

static void on_upstream_closed(sl_stream_t *st)
{
    sl_tcp_session_t *s = sl_stream_data(st);
    if (s->upstream == st)
        s->upstream = NULL;
    s->handles--;
    maybe_free(s);
}

/* A side that reset its connection gets its peer reset too, as if there were no proxy. */
static void close_with_reset(sl_stream_t *st, sl_stream_close_cb cb, bool reset)
{
    int fd = sl_stream_fileno(st);
    if (reset && fd >= 0) {
        struct linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    sl_stream_close(st, cb);
}

/* Ends the session with err (0: both directions ended cleanly): closes both sides. */
static void finish(sl_tcp_session_t *s, int err)
{
    if (s->state == TS_CLOSING)
        return;
    if (s->state == TS_PENDING)
        s->in_hook = true;
    if (!s->err)
        s->err = err;
    set_state(s, TS_CLOSING);
    s->connecting = NULL;
    sl_timeout_stop(&s->timer);
    bool reset = err == UV_ECONNRESET;
    if (s->upstream && !sl_stream_is_closing(s->upstream))
        close_with_reset(s->upstream, on_upstream_closed, reset);
    if (s->client && !sl_stream_is_closing(s->client))
        close_with_reset(s->client, on_client_closed, reset);
    maybe_free(s);
}

static void close_all(tcp_worker_t *tw)
{
    for (sl_tcp_session_t *s = tw->sessions; s; s = s->next)
        if (s->state != TS_CLOSING)
            finish(s, SL_ESHUTDOWN);
}

/* ---- piping ------------------------------------------------------------------------------ */

static void pipe_alloc(sl_stream_t *st, size_t suggested, uv_buf_t *buf);
static void pipe_read(sl_stream_t *st, ssize_t nread, const uv_buf_t *buf);

static sl_stream_t *dir_from(sl_tcp_session_t *s, int di)
{
    return di == DIR_UP ? s->client : s->upstream;
}

static sl_stream_t *dir_to(sl_tcp_session_t *s, int di)
{
    return di == DIR_UP ? s->upstream : s->client;
}

static void on_idle(sl_timeout_t *t)
{
    sl_tcp_session_t *s = SL_CONTAINER_OF(t, sl_tcp_session_t, timer);
    SL_DEBUG("%s: idle for %llu ms, closing", s->client_str, (unsigned long long)s->idle_ms);
    finish(s, UV_ETIMEDOUT);
}

/* Bytes moved: the idle timeout starts over (at most once per loop iteration). */
static void touch(sl_tcp_session_t *s)
{
    uint64_t now = uv_now(s->tw->loop);
    if (s->idle_ms && now != s->idle_armed_at) {
        s->idle_armed_at = now;
        sl_timeout_start(s->tw->loop, &s->timer, s->idle_ms, on_idle);
    }
}

static void dir_read_start(sl_tcp_session_t *s, int di)
{
    tcp_dir_t *d = &s->dir[di];
    if (d->reading || d->eof || s->state != TS_PIPING)
        return;
    int rc = sl_stream_read_start(dir_from(s, di), pipe_alloc, pipe_read);
    /* EALREADY: a TLS stream still reads its socket for the handshake; it now delivers to us. */
    if (rc && rc != UV_EALREADY) {
        finish(s, rc);
        return;
    }
    d->reading = true;
}

static void dir_read_stop(sl_tcp_session_t *s, int di)
{
    tcp_dir_t *d = &s->dir[di];
    if (d->reading) {
        sl_stream_read_stop(dir_from(s, di));
        d->reading = false;
    }
}

static void on_shutdown(sl_stream_t *st, int status)
{
    sl_tcp_session_t *s = sl_stream_data(st);
    if (s->state != TS_PIPING)
        return;
    if (status < 0) {
        finish(s, status);
        return;
    }
    s->dir[st == s->upstream ? DIR_UP : DIR_DOWN].done = true;
    if (s->dir[DIR_UP].done && s->dir[DIR_DOWN].done)
        finish(s, 0);
}

/* The source ended and every byte of it was written: pass the end on (half-close). */
static void dir_end(sl_tcp_session_t *s, int di)
{
    tcp_dir_t *d = &s->dir[di];
    if (d->shut)
        return;
    d->shut = true;
    SL_TRACE("%s: %s ended, shutting down the other side", s->client_str,
             di == DIR_UP ? "client" : "upstream");
    int rc = sl_stream_shutdown(dir_to(s, di), on_shutdown);
    if (rc)
        finish(s, rc);
}

static void on_written(sl_stream_t *st, int status, void *arg)
{
    sl_tcp_session_t *s = sl_stream_data(st);
    uintptr_t a = (uintptr_t)arg;
    int di = (int)(a & 1);
    tcp_dir_t *d = &s->dir[di];
    dir_ack(d, (uint32_t)(a >> 1), s->tw->buf_size);
    d->starved = false;
    if (s->state != TS_PIPING)
        return;
    if (status < 0) {
        finish(s, status);
        return;
    }
    touch(s);
    if (d->used == 0) {
        buf_put(s->tw, d->buf);
        d->buf = NULL;
        if (d->eof) {
            dir_end(s, di);
            return;
        }
    }
    if (!d->reading && !d->eof && d->used <= s->tw->buf_size / 2)
        dir_read_start(s, di);
}

static void pipe_alloc(sl_stream_t *st, size_t suggested, uv_buf_t *buf)
{
    sl_tcp_session_t *s = sl_stream_data(st);
    tcp_dir_t *d = &s->dir[st == s->client ? DIR_UP : DIR_DOWN];
    uint32_t off, len;
    if (!dir_region(s->tw, d, &off, &len)) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init(d->buf + off, len);
}

static void on_full(sl_tcp_session_t *s, int di)
{
    tcp_dir_t *d = &s->dir[di];
    sl_stream_t *from = dir_from(s, di);
    /* Writes already in the kernel free the ring from the next iteration, before the next
     * poll: reading can stay armed (a plain socket is simply read again then). TLS may hold
     * decrypted bytes that no socket event would bring back: stop and restart it. */
    if (!d->starved && !sl_stream_is_tls(from) && sl_stream_write_queue_size(dir_to(s, di)) == 0) {
        d->starved = true;
        return;
    }
    dir_read_stop(s, di);
}

static void pipe_read(sl_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    sl_tcp_session_t *s = sl_stream_data(st);
    if (s->state != TS_PIPING)
        return;
    int di = st == s->client ? DIR_UP : DIR_DOWN;
    tcp_dir_t *d = &s->dir[di];
    if (nread > 0) {
        uint32_t n = (uint32_t)nread;
        d->used += n;
        d->rd = (uint32_t)(buf->base - d->buf) + n;
        s->bytes[di] += n;
        tcp_worker_t *tw = s->tw;
        atomic_fetch_add_explicit(di == DIR_UP ? &tw->st_bytes_in : &tw->st_bytes_out, n,
                                  memory_order_relaxed);
        touch(s);
        uv_buf_t b = uv_buf_init(buf->base, n);
        int rc = sl_stream_write(dir_to(s, di), &b, 1, on_written,
                                 (void *)(((uintptr_t)n << 1) | (uintptr_t)di));
        if (rc)
            finish(s, rc);
        return;
    }
    if (nread == UV_ENOBUFS) {
        on_full(s, di);
        return;
    }
    if (nread == UV_EOF) {
        d->eof = true;
        dir_read_stop(s, di);
        if (d->used == 0)
            dir_end(s, di);
        return;
    }
    SL_DEBUG("%s: %s: %s", s->client_str, di == DIR_UP ? "client" : "upstream",
             sl_strerror((int)nread));
    finish(s, (int)nread);
}

/* ---- connecting -------------------------------------------------------------------------- */

static void run_peer(sl_tcp_session_t *s);

static void connected(sl_tcp_session_t *s)
{
    tcp_service_t *svc = s->tw->svc;
    s->connect_ns = uv_hrtime() - s->t_connect;
    if (svc->hooks.connected_to_upstream) {
        int rc =
            svc->hooks.connected_to_upstream(s, s->ctx, &s->peer, sl_stream_fileno(s->upstream));
        if (rc < 0) {
            finish(s, rc);
            return;
        }
    }
    set_state(s, TS_PIPING);
    s->active = true;
    atomic_fetch_add_explicit(&s->tw->st_active, 1, memory_order_relaxed);
    s->idle_ms = s->peer.options.idle_timeout_ms;
    touch(s);
    dir_read_start(s, DIR_UP);
    dir_read_start(s, DIR_DOWN);
}

static void connect_failed(sl_tcp_session_t *s, int err)
{
    tcp_service_t *svc = s->tw->svc;
    atomic_fetch_add_explicit(&s->tw->st_connect_failed, 1, memory_order_relaxed);
    s->connecting = NULL;
    sl_timeout_stop(&s->timer);
    /* Through a CONNECT proxy, failures say which stage and what the proxy answered. */
    const char *why = s->upstream ? sl__ctun_why(s->upstream, err) : NULL;
    if (why && err != SL_ETUNNEL) /* the exchange logged its own */
        SL_WARN("%s: %s", s->client_str, why);
    if (s->upstream) {
        sl_stream_close(s->upstream, on_upstream_closed);
        s->upstream = NULL;
    }
    char up[300];
    sl_peer_addr_str(&s->peer, up, sizeof(up));
    s->retry = false;
    int e = svc->hooks.fail_to_connect ? svc->hooks.fail_to_connect(s, s->ctx, &s->peer, err) : err;
    if (s->retry && s->retries < svc->max_retries) {
        s->retries++;
        SL_INFO("%s -> %s: connect failed (%s); retry %d", s->client_str, up, sl_strerror(err),
                s->retries);
        run_peer(s);
        return;
    }
    SL_WARN("%s -> %s: upstream connect failed: %s; closing the client connection", s->client_str,
            up, sl_strerror(err));
    finish(s, e < 0 ? e : err);
}

static void on_connect_timeout(sl_timeout_t *t)
{
    sl_tcp_session_t *s = SL_CONTAINER_OF(t, sl_tcp_session_t, timer);
    if (s->state == TS_CONNECTING || s->state == TS_TUNNEL)
        connect_failed(s, SL_ETIMEDOUT_CONNECT);
}

static void on_handshake(sl_stream_t *st, int status)
{
    sl_tcp_session_t *s = sl_stream_data(st);
    if (s->state != TS_HANDSHAKE || st != s->upstream)
        return;
    if (status) {
        SL_WARN("%s: TLS handshake with upstream %s failed: %s", s->client_str,
                s->peer.sni[0] ? s->peer.sni : "(no SNI)", sl__tls_error(st));
        connect_failed(s, status == UV_ETIMEDOUT ? SL_ETIMEDOUT_CONNECT : SL_ETLS);
        return;
    }
    connected(s);
}

static void start_tls(sl_tcp_session_t *s)
{
    const sl_peer_options_t *o = &s->peer.options;
    sl_error_t err = {0};
    SSL_CTX *ctx = sl__tls_client_ctx(&s->peer, s->tw->svc->ca_file, &err);
    if (!ctx) {
        SL_ERROR("%s: upstream TLS: %s", s->client_str, err.msg);
        finish(s, SL_ETLS);
        return;
    }
    uint64_t t =
        o->total_connection_timeout_ms ? o->total_connection_timeout_ms : o->connect_timeout_ms;
    set_state(s, TS_HANDSHAKE);
    if (sl__tls_client_start(s->upstream, ctx, s->peer.sni[0] ? s->peer.sni : NULL,
                             o->verify_hostname, (const struct sockaddr *)&s->peer.addr,
                             t ? t : DEFAULT_CONN, on_handshake) != 0)
        connect_failed(s, SL_ETLS);
}

static void on_tunnel(sl_stream_t *st, int err)
{
    sl_tcp_session_t *s = sl_stream_data(st);
    if (s->state != TS_TUNNEL || st != s->upstream)
        return;
    if (err) {
        connect_failed(s, err);
        return;
    }
    sl_timeout_stop(&s->timer);
    if (s->peer.tls)
        start_tls(s);
    else
        connected(s); /* bytes the proxy sent after its answer are read first */
}

static void on_connect(uv_connect_t *req, int status)
{
    tcp_connect_t *cr = SL_CONTAINER_OF(req, tcp_connect_t, req);
    sl_tcp_session_t *s = cr->s;
    bool current = s->connecting == cr;
    free(cr);
    if (!current || s->state != TS_CONNECTING)
        return; /* timed out, or the session ended: already handled */
    s->connecting = NULL;
    if (status < 0) {
        connect_failed(s, status);
        return;
    }
    sl_stream_set_nodelay(s->upstream, true);
    if (s->peer.options.proxy.addr_len) {
        /* Connected to the proxy: CONNECT within the same connect timeout. */
        set_state(s, TS_TUNNEL);
        int rc = sl__ctun_start(s->upstream, on_tunnel);
        if (rc)
            connect_failed(s, rc);
        return;
    }
    sl_timeout_stop(&s->timer);
    if (s->peer.tls)
        start_tls(s);
    else
        connected(s);
}

/* client_bind_to_ipv4/ipv6: the source address of upstream connections, spread over the list. */
static int bind_source(sl_tcp_session_t *s, const struct sockaddr_storage *to)
{
    tcp_service_t *svc = s->tw->svc;
    bool v4 = to->ss_family == AF_INET;
    size_t n = v4 ? svc->n_bind4 : svc->n_bind6;
    if (!n)
        return 0;
    const struct sockaddr_storage *b = &(v4 ? svc->bind4 : svc->bind6)[s->tw->bind_next++ % n];
    return uv_tcp_bind(&s->upstream->u.tcp, (const struct sockaddr *)b, 0);
}

static void do_connect(sl_tcp_session_t *s)
{
    tcp_worker_t *tw = s->tw;
    /* Through a forward proxy, the socket goes to the proxy. */
    bool tunnel = s->peer.options.proxy.addr_len != 0;
    const struct sockaddr_storage *to = tunnel ? &s->peer.options.proxy.addr : &s->peer.addr;
    bool is_unix = to->ss_family == AF_UNIX;
    s->upstream = sl__stream_new(tw->loop, is_unix ? SL_STREAM_PIPE : SL_STREAM_TCP, 0);
    s->upstream->worker = tw->worker;
    sl_stream_set_data(s->upstream, s);
    s->handles++;
    set_state(s, TS_CONNECTING);
    tcp_connect_t *cr = sl_xcalloc(1, sizeof(*cr));
    cr->s = s;
    s->connecting = cr;
    s->t_connect = uv_hrtime();
    /* The CONNECT request is made now: the peer's strings are not read later. */
    int rc = tunnel ? sl__ctun_attach(s->upstream, &s->peer) : 0;
    if (rc) {
        SL_ERROR("%s: the upstream cannot be reached through a CONNECT proxy: the target needs "
                 "an IP address and port, a valid host name and valid credentials",
                 s->client_str);
    } else if (is_unix) {
        const char *path = ((const struct sockaddr_un *)to)->sun_path;
        uv_pipe_connect(&cr->req, &s->upstream->u.pipe, path, on_connect);
    } else if ((rc = bind_source(s, to)) == 0) {
        rc = uv_tcp_connect(&cr->req, &s->upstream->u.tcp, (const struct sockaddr *)to, on_connect);
    }
    if (rc) {
        free(cr);
        connect_failed(s, rc);
        return;
    }
    sl_timeout_start(tw->loop, &s->timer, s->peer.options.connect_timeout_ms, on_connect_timeout);
}

static void peer_done(sl_tcp_session_t *s, int rc)
{
    if (rc < 0) {
        SL_WARN("%s: no upstream: %s; closing the client connection", s->client_str,
                sl_strerror(rc));
        finish(s, rc);
        return;
    }
    if (s->peer.addr.ss_family != AF_INET && s->peer.addr.ss_family != AF_INET6 &&
        s->peer.addr.ss_family != AF_UNIX) {
        SL_ERROR("%s: upstream_peer set no address", s->client_str);
        finish(s, SL_ENOUPSTREAM);
        return;
    }
    do_connect(s);
}

static void run_peer(sl_tcp_session_t *s)
{
    tcp_service_t *svc = s->tw->svc;
    set_state(s, TS_PEER);
    sl_peer_init(&s->peer);
    s->peer.options.connect_timeout_ms = svc->opts.connect_timeout_ms;
    s->peer.options.idle_timeout_ms = svc->opts.idle_timeout_ms;
    s->has_peer = true;
    int rc = svc->hooks.upstream_peer(s, s->ctx, &s->peer);
    if (rc == SL_PENDING) {
        set_state(s, TS_PENDING);
        return;
    }
    peer_done(s, rc);
}

void sl_tcp_session_resume(sl_tcp_session_t *s, int rc)
{
    if (s->in_hook) {
        /* The session was closed meanwhile (shutdown): now it can go. */
        s->in_hook = false;
        maybe_free(s);
        return;
    }
    if (s->state != TS_PENDING) {
        SL_ERROR("%s: sl_tcp_session_resume() without a pending hook", s->client_str);
        return;
    }
    peer_done(s, rc);
}

/* ---- the service ------------------------------------------------------------------------- */

static void process_new(void *data, sl_stream_t *stream, sl_shutdown_watch_t *shutdown)
{
    tcp_service_t *svc = data;
    tcp_worker_t *tw = svc->workers[sl_worker_id(sl_stream_worker(stream))];
    sl_tcp_session_t *s = sl_xcalloc(1, sizeof(*s));
    s->tw = tw;
    s->client = stream;
    s->handles = 1;
    s->t_start = uv_hrtime();
    s->next = tw->sessions;
    if (s->next)
        s->next->prev = s;
    tw->sessions = s;
    sl_stream_set_data(stream, s);
    struct sockaddr_storage a;
    if (sl_stream_peer_addr(stream, &a) == 0)
        sl_sockaddr_str(&a, s->client_str, sizeof(s->client_str));
    else
        snprintf(s->client_str, sizeof(s->client_str), "-");
    atomic_fetch_add_explicit(&tw->st_accepted, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&tw->st_open, 1, memory_order_relaxed);
    if (svc->hooks.new_ctx)
        s->ctx = svc->hooks.new_ctx(s);
    run_peer(s);
}

static void on_expired(sl_shutdown_sub_t *sub)
{
    tcp_worker_t *tw = sl_container_of(sub, tcp_worker_t, on_expired);
    if (tw->sessions)
        SL_INFO("grace period over: closing the remaining TCP connections");
    close_all(tw);
}

static void worker_start(void *data, sl_worker_t *w)
{
    tcp_service_t *svc = data;
    tcp_worker_t *tw = sl_xcalloc(1, sizeof(*tw));
    tw->svc = svc;
    tw->worker = w;
    tw->loop = sl_worker_loop(w);
    size_t b = svc->opts.buffer_size;
    tw->buf_size = (uint32_t)(b < MIN_BUFFER ? MIN_BUFFER : b > MAX_BUFFER ? MAX_BUFFER : b);
    svc->workers[sl_worker_id(w)] = tw;
    sl_shutdown_subscribe_expired(sl_worker_shutdown_watch(w), &tw->on_expired, on_expired);
}

static void worker_stop(void *data, sl_worker_t *w)
{
    tcp_service_t *svc = data;
    tcp_worker_t *tw = svc->workers[sl_worker_id(w)];
    if (!tw)
        return;
    sl_shutdown_unsubscribe(&tw->on_expired);
    close_all(tw);
    /* Sessions still closing return their buffers after this point: freed, not pooled. */
    tw->stopped = true;
    for (size_t i = 0; i < tw->n_free_bufs; i++)
        free(tw->free_bufs[i]);
    tw->n_free_bufs = 0;
}

static void service_free(void *data)
{
    tcp_service_t *svc = data;
    for (size_t i = 0; i < MAX_WORKERS; i++)
        free(svc->workers[i]);
    free(svc->workers);
    free(svc->ca_file);
    free(svc->bind4);
    free(svc->bind6);
    free(svc);
}

/* Addresses of one family from client_bind_to_ipv4/6; other entries are skipped with a
 * warning. */
static struct sockaddr_storage *source_addrs(char *const *list, size_t n, int family, size_t *out_n)
{
    *out_n = 0;
    if (!n)
        return NULL;
    struct sockaddr_storage *out = sl_xcalloc(n, sizeof(*out));
    for (size_t i = 0; i < n; i++) {
        struct sockaddr_storage *a = &out[*out_n];
        void *dst = family == AF_INET ? (void *)&((struct sockaddr_in *)a)->sin_addr
                                      : (void *)&((struct sockaddr_in6 *)a)->sin6_addr;
        if (inet_pton(family, list[i], dst) == 1) {
            a->ss_family = (sa_family_t)family;
            (*out_n)++;
        } else {
            SL_WARN("client_bind_to_ipv%d: \"%s\" is not an address; ignored",
                    family == AF_INET ? 4 : 6, list[i]);
        }
    }
    return out;
}

sl_service_t *sl_tcp_proxy_service_new(const sl_server_conf_t *conf,
                                       const sl_tcp_proxy_hooks_t *hooks, void *app)
{
    tcp_service_t *svc = sl_xcalloc(1, sizeof(*svc));
    svc->hooks = *hooks;
    svc->app = app;
    svc->max_retries = conf ? conf->max_retries : 16;
    svc->workers = sl_xcalloc(MAX_WORKERS, sizeof(*svc->workers));
    svc->opts.connect_timeout_ms = DEFAULT_CONN;
    svc->opts.idle_timeout_ms = DEFAULT_IDLE;
    svc->opts.buffer_size = DEFAULT_BUFFER;
    if (conf) {
        svc->ca_file = conf->ca_file ? sl_xstrdup(conf->ca_file) : NULL;
        svc->bind4 = source_addrs(conf->client_bind_to_ipv4, conf->n_client_bind_to_ipv4, AF_INET,
                                  &svc->n_bind4);
        svc->bind6 = source_addrs(conf->client_bind_to_ipv6, conf->n_client_bind_to_ipv6, AF_INET6,
                                  &svc->n_bind6);
    }
    static const sl_server_app_t app_vt = {
        .process_new = process_new,
        .worker_start = worker_start,
        .worker_stop = worker_stop,
        .free = service_free,
    };
    svc->service = sl_listening_service_new("tcp-proxy", &app_vt, svc);
    return svc->service;
}

sl_tcp_options_t *sl_tcp_proxy_options(sl_service_t *service)
{
    tcp_service_t *svc = sl_service_app_data(service);
    return &svc->opts;
}

void sl_tcp_proxy_stats(sl_service_t *service, sl_tcp_stats_t *out)
{
    tcp_service_t *svc = sl_service_app_data(service);
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < MAX_WORKERS; i++) {
        tcp_worker_t *tw = svc->workers[i];
        if (!tw)
            continue;
        out->accepted += atomic_load_explicit(&tw->st_accepted, memory_order_relaxed);
        out->connect_failed += atomic_load_explicit(&tw->st_connect_failed, memory_order_relaxed);
        out->bytes_in += atomic_load_explicit(&tw->st_bytes_in, memory_order_relaxed);
        out->bytes_out += atomic_load_explicit(&tw->st_bytes_out, memory_order_relaxed);
        out->open += atomic_load_explicit(&tw->st_open, memory_order_relaxed);
        out->active += atomic_load_explicit(&tw->st_active, memory_order_relaxed);
    }
}

/* ---- session accessors ------------------------------------------------------------------- */

void *sl_tcp_session_app(sl_tcp_session_t *s)
{
    return s->tw->svc->app;
}

sl_worker_t *sl_tcp_session_worker(sl_tcp_session_t *s)
{
    return s->tw->worker;
}

const sl_stream_t *sl_tcp_session_stream(const sl_tcp_session_t *s)
{
    return s->client;
}

sl_service_t *sl_tcp_session_service(const sl_tcp_session_t *s)
{
    return s->tw->svc->service;
}

const char *sl_tcp_session_client_str(const sl_tcp_session_t *s)
{
    return s->client_str;
}

void sl_tcp_session_set_retry(sl_tcp_session_t *s, bool retry)
{
    s->retry = retry;
}

int sl_tcp_session_retries(const sl_tcp_session_t *s)
{
    return s->retries;
}

const sl_peer_t *sl_tcp_session_peer(const sl_tcp_session_t *s)
{
    return s->has_peer ? &s->peer : NULL;
}

uint64_t sl_tcp_session_bytes_in(const sl_tcp_session_t *s)
{
    return s->bytes[DIR_UP];
}

uint64_t sl_tcp_session_bytes_out(const sl_tcp_session_t *s)
{
    return s->bytes[DIR_DOWN];
}

uint64_t sl_tcp_session_elapsed_ns(const sl_tcp_session_t *s)
{
    return uv_hrtime() - s->t_start;
}

uint64_t sl_tcp_session_connect_ns(const sl_tcp_session_t *s)
{
    return s->connect_ns;
}
