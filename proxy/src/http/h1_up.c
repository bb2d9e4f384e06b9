/* The upstream side of HTTP/1.1: dialing, the per-worker keep-alive pool, response parsing,
 * and the connect/read/write/idle timeouts of the peer. */
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "core/core.h"
#include "http/proxy_impl.h"
#include "io/connect_tunnel.h"
#include "io/stream_impl.h"
#include "io/tls.h"
#include "util/mem.h"
#include "util/timeout.h"

#define SL_LOG_TAG "upstream"
#include "sluice/log.h"

enum { UTIMER_NONE, UTIMER_CONNECT, UTIMER_READ, UTIMER_WRITE, UTIMER_IDLE };

#define MAX_UP_HEADER_SIZE (64 * 1024)
#define MAX_UP_HEADERS     256
#define POOL_BUCKETS       256

struct sl_pool {
    sl_http_worker_t *hw;
    size_t max_idle, n_idle;
    h1_up_t *buckets[POOL_BUCKETS];
    h1_up_t *lru_head, *lru_tail; /* most recently pooled first */
};

static void up_close(h1_up_t *u);
static const sl_up_ops_t h1_up_ops;
static void dial_done(h1_up_t *u, int err);
static void arm(h1_up_t *u, int mode, uint64_t ms);
static void up_read(sl_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static void up_eof(h1_up_t *u);
static const llhttp_settings_t *response_settings(void);

/* ---- pool keys ----------------------------------------------------------------------------- */

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) {
        h ^= c[i];
        h *= 1099511628211ull;
    }
    return h;
}

static void key_from_peer(sl_pool_key_t *k, const sl_peer_t *p, void *tls_ctx)
{
    memset(k, 0, sizeof(*k));
    k->addr = p->addr;
    k->addr_len = p->addr_len;
    k->tls = p->tls;
    if (p->tls) {
        k->tls_ctx = tls_ctx;
        k->verify_name = p->options.verify_hostname;
    }
    memcpy(k->sni, p->sni, sizeof(k->sni));
    sl__ctun_key(p, k->tunnel); /* through a proxy: its address, the target, the credentials */
    uint64_t h = 14695981039346656037ull;
    h = fnv(h, &p->addr, p->addr_len);
    h = fnv(h, &k->tls, sizeof(k->tls));
    h = fnv(h, &k->tls_ctx, sizeof(k->tls_ctx));
    h = fnv(h, &k->verify_name, sizeof(k->verify_name));
    h = fnv(h, k->sni, strlen(k->sni));
    h = fnv(h, k->tunnel, sizeof(k->tunnel));
    k->hash = h;
}

static bool key_eq(const sl_pool_key_t *a, const sl_pool_key_t *b)
{
    return a->hash == b->hash && a->addr_len == b->addr_len &&
           memcmp(&a->addr, &b->addr, a->addr_len) == 0 && a->tls == b->tls &&
           a->tls_ctx == b->tls_ctx && a->verify_name == b->verify_name &&
           strcmp(a->sni, b->sni) == 0 && memcmp(a->tunnel, b->tunnel, sizeof(a->tunnel)) == 0;
}

void sl__pool_key(sl_pool_key_t *k, const sl_peer_t *peer, void *tls_ctx)
{
    key_from_peer(k, peer, tls_ctx);
}

bool sl__pool_key_eq(const sl_pool_key_t *a, const sl_pool_key_t *b)
{
    return key_eq(a, b);
}

/* ---- pool ------------------------------------------------------------------------------------ */

sl_pool_t *sl__pool_new(sl_http_worker_t *hw, size_t max_idle)
{
    sl_pool_t *p = sl_xcalloc(1, sizeof(*p));
    p->hw = hw;
    p->max_idle = max_idle;
    return p;
}

size_t sl__pool_idle_count(const sl_pool_t *p)
{
    return p->n_idle;
}

static void pool_unlink(sl_pool_t *p, h1_up_t *u)
{
    size_t b = u->key.hash % POOL_BUCKETS;
    if (u->bucket_prev)
        u->bucket_prev->bucket_next = u->bucket_next;
    else
        p->buckets[b] = u->bucket_next;
    if (u->bucket_next)
        u->bucket_next->bucket_prev = u->bucket_prev;
    if (u->lru_prev)
        u->lru_prev->lru_next = u->lru_next;
    else
        p->lru_head = u->lru_next;
    if (u->lru_next)
        u->lru_next->lru_prev = u->lru_prev;
    else
        p->lru_tail = u->lru_prev;
    u->bucket_next = u->bucket_prev = u->lru_next = u->lru_prev = NULL;
    p->n_idle--;
    atomic_fetch_sub_explicit(&p->hw->st_up_idle, 1, memory_order_relaxed);
}

static void pool_insert(sl_pool_t *p, h1_up_t *u)
{
    size_t b = u->key.hash % POOL_BUCKETS;
    u->bucket_prev = NULL;
    u->bucket_next = p->buckets[b];
    if (p->buckets[b])
        p->buckets[b]->bucket_prev = u;
    p->buckets[b] = u;
    u->lru_prev = NULL;
    u->lru_next = p->lru_head;
    if (p->lru_head)
        p->lru_head->lru_prev = u;
    p->lru_head = u;
    if (!p->lru_tail)
        p->lru_tail = u;
    p->n_idle++;
    atomic_fetch_add_explicit(&p->hw->st_up_idle, 1, memory_order_relaxed);
}

void sl__pool_free(sl_pool_t *p)
{
    while (p->lru_head) {
        h1_up_t *u = p->lru_head;
        pool_unlink(p, u);
        u->state = UP_ACTIVE; /* no longer pooled */
        up_close(u);
    }
    free(p);
}

sl_up_t *sl__up_pool_take(sl_http_worker_t *hw, const sl_peer_t *peer, void *tls_ctx)
{
    sl_pool_t *p = hw->pool;
    if (!p->n_idle || peer->options.idle_timeout_ms == 0)
        return NULL;
    sl_pool_key_t k;
    key_from_peer(&k, peer, tls_ctx);
    for (h1_up_t *u = p->buckets[k.hash % POOL_BUCKETS]; u; u = u->bucket_next) {
        if (u->state == UP_IDLE && key_eq(&u->key, &k)) {
            pool_unlink(p, u);
            arm(u, UTIMER_NONE, 0);
            u->state = UP_ACTIVE;
            u->reused = true;
            return &u->base;
        }
    }
    return NULL;
}

/* ---- timers ---------------------------------------------------------------------------------- */

static void on_timer(sl_timeout_t *t)
{
    h1_up_t *u = sl_container_of(t, h1_up_t, tmo);
    sl_session_t *s = u->base.session;
    int mode = u->timer_mode;
    u->timer_mode = UTIMER_NONE;
    switch (mode) {
    case UTIMER_IDLE:
        SL_DEBUG("pooled connection idle timeout");
        pool_unlink(u->hw->pool, u);
        u->state = UP_ACTIVE;
        up_close(u);
        break;
    case UTIMER_CONNECT:
        dial_done(u, SL_ETIMEDOUT_CONNECT);
        break;
    case UTIMER_READ:
        if (s)
            sl__session_on_up_error(s, SL_ETIMEDOUT_READ);
        break;
    case UTIMER_WRITE:
        if (s)
            sl__session_on_up_error(s, SL_ETIMEDOUT_WRITE);
        break;
    default:
        break;
    }
}

static void arm(h1_up_t *u, int mode, uint64_t ms)
{
    u->timer_mode = ms ? mode : UTIMER_NONE;
    sl_timeout_start(u->hw->loop, &u->tmo, ms, on_timer);
}

/* While a response is awaited: a pending write is bounded by the write timeout, silence by the
 * read timeout. */
static void arm_io(h1_up_t *u)
{
    sl_session_t *s = u->base.session;
    if (!s)
        return;
    if (u->write_pending && s->peer.options.write_timeout_ms)
        arm(u, UTIMER_WRITE, s->peer.options.write_timeout_ms);
    else if (!u->message_done)
        arm(u, UTIMER_READ, s->peer.options.read_timeout_ms);
    else
        arm(u, UTIMER_NONE, 0);
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

static void on_stream_closed(sl_stream_t *st)
{
    h1_up_t *u = sl_stream_data(st);
    free(u->h.v);
    free(u);
}

static void up_close(h1_up_t *u)
{
    if (u->state == UP_CLOSED)
        return;
    if (u->state == UP_IDLE)
        pool_unlink(u->hw->pool, u);
    u->state = UP_CLOSED;
    u->base.session = NULL;
    atomic_fetch_sub_explicit(&u->hw->st_up_open, 1, memory_order_relaxed);
    sl__iobuf_put(u->hw, &u->in);
    sl_timeout_stop(&u->tmo);
    sl_stream_close(u->base.stream, on_stream_closed);
}

static h1_up_t *up_alloc(sl_http_worker_t *hw, const sl_peer_t *peer, void *tls_ctx)
{
    h1_up_t *u = sl_xcalloc(1, sizeof(*u));
    u->base.ops = &h1_up_ops;
    u->hw = hw;
    atomic_fetch_add_explicit(&hw->st_up_open, 1, memory_order_relaxed);
    key_from_peer(&u->key, peer, tls_ctx);
    /* Through a proxy, the socket goes to the proxy. */
    const struct sockaddr_storage *to =
        peer->options.proxy.addr_len ? &peer->options.proxy.addr : &peer->addr;
    u->base.stream =
        sl__stream_new(hw->loop, to->ss_family == AF_UNIX ? SL_STREAM_PIPE : SL_STREAM_TCP, 0);
    sl_stream_set_data(u->base.stream, u);
    llhttp_init(&u->parser, HTTP_RESPONSE, response_settings());
    u->parser.data = u;
    return u;
}

/* Why the last dial of this thread failed, for its dial_cb (HTTP/2 connections); "" when the
 * error says it all. */
static __thread char dial_reason[512];

const char *sl__up_dial_reason(void)
{
    return dial_reason[0] ? dial_reason : NULL;
}

void sl__up_set_reason(sl_session_t *s, const char *why)
{
    size_t n = strlen(why);
    char *r = sl_arena_alloc(&s->arena, n + 1);
    memcpy(r, why, n + 1);
    s->error_reason = r;
}

/* A failure through a CONNECT proxy explains itself (the 502 names the proxy and its answer):
 * logged here, told to the session or kept for the dial's owner. */
static void note_tunnel_failure(h1_up_t *u, int err)
{
    const char *why = sl__ctun_why(u->base.stream, err);
    dial_reason[0] = '\0';
    if (!why)
        return;
    if (err != SL_ETUNNEL) /* the exchange logged its own failures */
        SL_WARN("%s", why);
    if (u->base.session)
        sl__up_set_reason(u->base.session, why);
    else
        snprintf(dial_reason, sizeof(dial_reason), "%s", why);
}

/* The dial ended: tell whoever asked (a session, or an HTTP/2 connection being set up). */
static void dial_done(h1_up_t *u, int err)
{
    sl_session_t *s = u->base.session;
    void (*cb)(void *, h1_up_t *, int) = u->dial_cb;
    void *arg = u->dial_arg;
    u->dial_cb = NULL;
    if (err)
        note_tunnel_failure(u, err);
    u->dial_peer = NULL;
    if (err)
        up_close(u);
    if (cb)
        cb(arg, err ? NULL : u, err);
    else if (s)
        sl__session_on_connected(s, err ? NULL : &u->base, err);
}

static void on_tls_handshake(sl_stream_t *st, int status)
{
    h1_up_t *u = sl_stream_data(st);
    if (u->state != UP_HANDSHAKE)
        return;
    if (status) {
        const sl_peer_t *peer = u->dial_peer;
        char addr[300];
        sl_peer_addr_str(peer, addr, sizeof(addr));
        SL_WARN("TLS handshake with upstream %s (%s) failed: %s", addr,
                peer->sni[0] ? peer->sni : "no SNI", sl__tls_error(st));
        dial_done(u, status == UV_ETIMEDOUT ? SL_ETIMEDOUT_CONNECT : SL_ETLS);
        return;
    }
    u->state = UP_ACTIVE;
    dial_done(u, 0);
}

/* Connected to the peer, directly or through a proxy's tunnel: TLS, or ready. */
static void connected(h1_up_t *u)
{
    arm(u, UTIMER_NONE, 0);
    const sl_peer_t *peer = u->dial_peer;
    if (peer->tls) {
        /* TLS inside the same connect budget: the total timeout if set, else connect's. */
        const sl_peer_options_t *o = &peer->options;
        uint64_t t =
            o->total_connection_timeout_ms ? o->total_connection_timeout_ms : o->connect_timeout_ms;
        u->state = UP_HANDSHAKE;
        const char *name = peer->sni[0] ? peer->sni : NULL;
        if (sl__tls_client_start(u->base.stream, u->key.tls_ctx, name, o->verify_hostname,
                                 (const struct sockaddr *)&peer->addr, t ? t : 10000,
                                 on_tls_handshake) != 0)
            dial_done(u, SL_ETLS);
        return;
    }
    u->state = UP_ACTIVE;
    dial_done(u, 0);
}

static void on_tunnel(sl_stream_t *st, int err)
{
    h1_up_t *u = sl_stream_data(st);
    if (u->state != UP_CONNECTING)
        return;
    if (err) {
        arm(u, UTIMER_NONE, 0);
        dial_done(u, err);
        return;
    }
    connected(u);
}

static void on_connect(uv_connect_t *req, int status)
{
    h1_up_t *u = req->data;
    if (u->state != UP_CONNECTING)
        return; /* timed out or abandoned: already reported */
    if (status < 0) {
        arm(u, UTIMER_NONE, 0);
        dial_done(u, status);
        return;
    }
    sl_stream_set_nodelay(u->base.stream, true);
    if (u->dial_peer->options.proxy.addr_len) {
        /* Connected to the proxy: CONNECT within the same connect timeout. */
        int rc = sl__ctun_start(u->base.stream, on_tunnel);
        if (rc) {
            arm(u, UTIMER_NONE, 0);
            dial_done(u, rc);
        }
        return;
    }
    connected(u);
}

/* The CONNECT exchange is prepared before dialling: the peer's strings are not read later. */
static int attach_tunnel(h1_up_t *u, const sl_peer_t *peer)
{
    int rc = sl__ctun_attach(u->base.stream, peer);
    if (rc) {
        char addr[300];
        sl_sockaddr_str(&peer->addr, addr, sizeof(addr));
        SL_ERROR("upstream %s (%s) cannot be reached through a CONNECT proxy: the target needs "
                 "an IP address and port, a valid host name and valid credentials",
                 addr, peer->sni[0] ? peer->sni : "no SNI");
    }
    return rc;
}

/* Dials peer (which must stay valid until the dial ends); returns 0 or an error (then u is
 * closed and nothing is reported). */
static int dial(h1_up_t *u, sl_http_service_t *svc, const sl_peer_t *peer)
{
    u->state = UP_CONNECTING;
    u->dial_peer = peer;
    u->idle_timeout_ms = peer->options.idle_timeout_ms;
    u->connect_req.data = u;
    uint64_t t = peer->options.connect_timeout_ms;
    if (peer->options.total_connection_timeout_ms &&
        (!t || peer->options.total_connection_timeout_ms < t))
        t = peer->options.total_connection_timeout_ms;
    int rc = 0;
    /* Through a proxy, the socket goes to the proxy. */
    const struct sockaddr_storage *to = &peer->addr;
    if (peer->options.proxy.addr_len) {
        to = &peer->options.proxy.addr;
        rc = attach_tunnel(u, peer);
    }
    if (rc == 0 && to->ss_family == AF_UNIX) {
        const char *path = ((const struct sockaddr_un *)to)->sun_path;
        uv_pipe_connect(&u->connect_req, &u->base.stream->u.pipe, path, on_connect);
    } else if (rc == 0) {
        /* client_bind_to_ipv4/ipv6: the source address, spread over the list. */
        bool v4 = to->ss_family == AF_INET;
        size_t nb = v4 ? svc->n_bind4 : svc->n_bind6;
        if (nb) {
            const struct sockaddr_storage *b =
                &(v4 ? svc->bind4 : svc->bind6)[u->hw->bind_next++ % nb];
            rc = uv_tcp_bind(&u->base.stream->u.tcp, (const struct sockaddr *)b, 0);
        }
        if (rc == 0)
            rc = uv_tcp_connect(&u->connect_req, &u->base.stream->u.tcp,
                                (const struct sockaddr *)to, on_connect);
    }
    if (rc) {
        u->dial_cb = NULL;
        up_close(u);
        return rc;
    }
    arm(u, UTIMER_CONNECT, t);
    return 0;
}

void sl__up_connect(sl_session_t *s)
{
    h1_up_t *u = up_alloc(s->hw, &s->peer, s->tls_ctx);
    u->base.session = s;
    s->up = &u->base;
    int rc = dial(u, s->svc, &s->peer);
    if (rc) {
        s->up = NULL;
        sl__session_on_connected(s, NULL, rc);
    }
}

int sl__up_dial(sl_http_worker_t *hw, const sl_peer_t *peer, void *tls_ctx,
                void (*cb)(void *arg, h1_up_t *u, int err), void *arg, h1_up_t **out)
{
    h1_up_t *u = up_alloc(hw, peer, tls_ctx);
    u->dial_cb = cb;
    u->dial_arg = arg;
    *out = u;
    int rc = dial(u, hw->svc, peer);
    if (rc)
        *out = NULL;
    return rc;
}

void sl__up_dial_cancel(h1_up_t *u)
{
    u->dial_cb = NULL;
    u->dial_peer = NULL;
    up_close(u);
}

sl_stream_t *sl__up_take_stream(h1_up_t *u)
{
    sl_stream_t *st = u->base.stream;
    arm(u, UTIMER_NONE, 0);
    sl_timeout_stop(&u->tmo);
    sl__iobuf_put(u->hw, &u->in);
    sl_stream_read_stop(st);
    sl_stream_set_data(st, NULL);
    free(u->h.v);
    free(u); /* the connection stays counted open: its new owner closes it */
    return st;
}

/* ---- writing --------------------------------------------------------------------------------- */

static void on_written(sl_stream_t *st, int status, void *arg)
{
    h1_up_t *u = sl_stream_data(st);
    u->write_pending--;
    sl_session_t *s = u->base.session;
    if (s) {
        if (status == 0)
            arm_io(u);
        sl__session_on_up_write_done(s, status, (int)(intptr_t)arg);
    }
}

static int up_write(h1_up_t *u, const uv_buf_t *bufs, unsigned n, int tag)
{
    if (u->state != UP_ACTIVE)
        return UV_ECANCELED;
    int rc = sl_stream_write(u->base.stream, bufs, n, on_written, (void *)(intptr_t)tag);
    if (rc)
        return rc;
    u->write_pending++;
    arm_io(u);
    return 0;
}

/* ---- reading and parsing --------------------------------------------------------------------- */

static void reset_response(h1_up_t *u)
{
    u->status_off = u->status_len = 0;
    u->h.n = 0;
    u->h.phase = 0;
    u->headers_done = u->message_done = false;
    u->informational = false;
    u->in_trailers = false;
    u->n_body_iov = 0;
    u->parse_error = 0;
}

static int make_room(h1_up_t *u)
{
    sl_iobuf_t *b = &u->in;
    if (b->len < b->cap)
        return 0;
    if (!u->headers_done) {
        if (u->msg_start > 0) {
            memmove(b->data, b->data + u->msg_start, b->len - u->msg_start);
            b->len -= u->msg_start;
            b->parsed -= u->msg_start;
            u->msg_start = 0;
            return 0;
        }
        return sl__iobuf_grow(b, b->cap * 2, MAX_UP_HEADER_SIZE + 1024) == 0
                   ? 0
                   : SL_EUPSTREAM_HEADER_TOO_LARGE;
    }
    if (b->refs == 0 && b->parsed > u->body_base) {
        memmove(b->data + u->body_base, b->data + b->parsed, b->len - b->parsed);
        b->len -= b->parsed - u->body_base;
        b->parsed = u->body_base;
        return 0;
    }
    return UV_ENOBUFS;
}

static void up_alloc_cb(sl_stream_t *st, size_t suggested, uv_buf_t *buf)
{
    h1_up_t *u = sl_stream_data(st);
    if (!u->in.data)
        sl__iobuf_get(u->hw, &u->in, SL_IOBUF_SIZE);
    if (make_room(u) != 0) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init(u->in.data + u->in.len, (unsigned)(u->in.cap - u->in.len));
}

static void stop_reading(h1_up_t *u)
{
    if (u->reading) {
        sl_stream_read_stop(u->base.stream);
        u->reading = false;
    }
}

static void start_reading(h1_up_t *u)
{
    if (!u->reading && u->state != UP_CLOSED) {
        if (sl_stream_read_start(u->base.stream, up_alloc_cb, up_read) == 0)
            u->reading = true;
    }
}

static h1_up_t *from_parser(llhttp_t *p)
{
    return p->data;
}

static uint32_t rel(h1_up_t *u, const char *at)
{
    return (uint32_t)(at - u->in.data - (ptrdiff_t)u->msg_start);
}

static int too_large(h1_up_t *u, const char *end)
{
    if ((size_t)(end - u->in.data) - u->msg_start > MAX_UP_HEADER_SIZE) {
        u->parse_error = SL_EUPSTREAM_HEADER_TOO_LARGE;
        return HPE_USER;
    }
    return 0;
}

static int r_on_message_begin(llhttp_t *p)
{
    h1_up_t *u = from_parser(p);
    reset_response(u);
    u->base.got_bytes = true;
    return 0;
}

static int r_on_status(llhttp_t *p, const char *at, size_t len)
{
    h1_up_t *u = from_parser(p);
    if (!u->status_len)
        u->status_off = rel(u, at);
    u->status_len += (uint32_t)len;
    return too_large(u, at + len);
}

static int trailer_piece(h1_up_t *u, const char *at, size_t len, bool value)
{
    sl_session_t *s = u->base.session;
    if (!s || sl__h1_hdrs_trailer(&u->h, &s->up_trailers, &s->arena, at, len, value) == 0)
        return 0;
    u->parse_error = SL_EUPSTREAM_HEADER_TOO_LARGE;
    return HPE_USER;
}

static int r_on_header_field(llhttp_t *p, const char *at, size_t len)
{
    h1_up_t *u = from_parser(p);
    if (u->in_trailers)
        return trailer_piece(u, at, len, false);
    if (sl__h1_hdrs_field(&u->h, rel(u, at), len, MAX_UP_HEADERS)) {
        u->parse_error = SL_EUPSTREAM_HEADER_TOO_LARGE;
        return HPE_USER;
    }
    return too_large(u, at + len);
}

static int r_on_header_value(llhttp_t *p, const char *at, size_t len)
{
    h1_up_t *u = from_parser(p);
    if (u->in_trailers)
        return trailer_piece(u, at, len, true);
    if (sl__h1_hdrs_value(&u->h, rel(u, at), len)) {
        u->parse_error = SL_EUPSTREAM_PROTO; /* a folded line */
        return HPE_USER;
    }
    return too_large(u, at + len);
}

static int r_on_header_value_complete(llhttp_t *p)
{
    from_parser(p)->h.phase = 0;
    return 0;
}

static int r_on_headers_complete(llhttp_t *p)
{
    h1_up_t *u = from_parser(p);
    int status = p->status_code;
    if (status >= 100 && status < 200 && status != 101) {
        /* 100 Continue, 103 Early Hints: not forwarded; the final response follows. */
        u->informational = true;
        return 0;
    }
    u->headers_done = true;
    if (u->head_request || status == 204 || status == 304)
        return 1; /* no body, whatever the headers say */
    return HPE_PAUSED;
}

static int r_on_body(llhttp_t *p, const char *at, size_t len)
{
    h1_up_t *u = from_parser(p);
    if (u->n_body_iov == SL_MAX_BODY_IOV) {
        u->parse_error = SL_EINTERNAL;
        return HPE_USER;
    }
    u->hw->up_iov[u->n_body_iov++] = uv_buf_init((char *)at, (unsigned)len);
    return 0;
}

static int r_on_chunk_header(llhttp_t *p)
{
    h1_up_t *u = from_parser(p);
    if (p->content_length == 0)
        u->in_trailers = true;
    u->h.phase = 0;
    return 0;
}

static int r_on_chunk_complete(llhttp_t *p)
{
    h1_up_t *u = from_parser(p);
    return u->n_body_iov >= SL_MAX_BODY_IOV - 2 ? HPE_PAUSED : 0;
}

static int r_on_message_complete(llhttp_t *p)
{
    h1_up_t *u = from_parser(p);
    if (u->informational) {
        reset_response(u);
        u->restart_msg = true; /* the caller moves msg_start past it */
        return HPE_PAUSED;
    }
    u->message_done = true;
    return HPE_PAUSED;
}

static const llhttp_settings_t *response_settings(void)
{
    static llhttp_settings_t s;
    static bool init;
    if (!init) {
        llhttp_settings_init(&s);
        s.on_message_begin = r_on_message_begin;
        s.on_status = r_on_status;
        s.on_header_field = r_on_header_field;
        s.on_header_value = r_on_header_value;
        s.on_header_value_complete = r_on_header_value_complete;
        s.on_headers_complete = r_on_headers_complete;
        s.on_body = r_on_body;
        s.on_chunk_header = r_on_chunk_header;
        s.on_chunk_complete = r_on_chunk_complete;
        s.on_message_complete = r_on_message_complete;
        init = true;
    }
    return &s;
}

/* Builds the session's view of the response header (pointers into the buffer, stable for the
 * rest of the session: compaction never touches the header block). */
static void publish_header(h1_up_t *u)
{
    sl_session_t *s = u->base.session;
    sl_response_header_t *r = &s->up_resp;
    const char *base = u->in.data + u->msg_start;
    r->status = u->parser.status_code;
    r->version = u->parser.http_major == 1 && u->parser.http_minor == 0 ? 10 : 11;
    r->reason = (sl_str_t){base + u->status_off, u->status_len};
    sl__h1_hdrs_publish(&u->h, base, &r->headers, &s->arena);
    uint64_t flags = u->parser.flags;
    if (r->status == 101) {
        /* Switched protocols: what follows the head is the new protocol's, not a body. */
        s->resp_body_up = BODY_NONE;
        u->message_done = true;
    } else if (u->head_request || r->status == 204 || r->status == 304)
        s->resp_body_up = BODY_NONE;
    else if (flags & F_CHUNKED)
        s->resp_body_up = BODY_CHUNKED;
    else if (flags & F_CONTENT_LENGTH)
        s->resp_body_up = u->parser.content_length ? BODY_LENGTH : BODY_NONE;
    else
        s->resp_body_up = BODY_CLOSE;
    s->resp_content_length = u->parser.content_length;
}

/* Parses what is buffered. Stops when the session must act (header, body pieces, end). */
static void up_process(h1_up_t *u)
{
    sl_iobuf_t *b = &u->in;
    while (u->state == UP_ACTIVE && u->base.session && !u->hold) {
        sl_session_t *s = u->base.session;
        if (u->header_published && !u->end_delivered && (u->n_body_iov || u->message_done)) {
            size_t n = u->n_body_iov;
            u->n_body_iov = 0;
            if (u->message_done) {
                u->end_delivered = true;
                arm(u, UTIMER_NONE, 0);
                u->timer_mode = UTIMER_NONE;
            }
            sl__session_on_response_body(s, u->hw->up_iov, n, u->message_done);
            continue;
        }
        if (u->message_done || b->parsed == b->len)
            break;
        llhttp_errno_t e = llhttp_execute(&u->parser, b->data + b->parsed, b->len - b->parsed);
        size_t used;
        if (e == HPE_OK) {
            used = b->len - b->parsed;
        } else if (e == HPE_PAUSED) {
            used = (size_t)(llhttp_get_error_pos(&u->parser) - (b->data + b->parsed));
            llhttp_resume(&u->parser);
        } else if (e == HPE_PAUSED_UPGRADE) {
            used = (size_t)(llhttp_get_error_pos(&u->parser) - (b->data + b->parsed));
            llhttp_resume_after_upgrade(&u->parser);
        } else {
            int err = (e == HPE_USER && u->parse_error) ? u->parse_error : SL_EUPSTREAM_PROTO;
            SL_WARN("invalid response from upstream: %s (%s)", llhttp_errno_name(e),
                    llhttp_get_error_reason(&u->parser));
            sl__session_on_up_error(s, err);
            return;
        }
        b->parsed += used;
        if (u->restart_msg) {
            /* An informational response ended: the next message starts here. */
            u->restart_msg = false;
            u->msg_start = b->parsed;
            continue;
        }
        if (u->headers_done && !u->header_published) {
            u->header_published = true;
            u->body_base = b->parsed;
            publish_header(u);
            /* The session runs its filters (maybe asynchronously) and resumes us. */
            u->hold = true;
            sl__session_on_response_header(s);
            return;
        }
    }
}

/* The upstream's end of stream, once every byte before it was parsed. */
static void up_eof(h1_up_t *u)
{
    sl_session_t *s = u->base.session;
    int status = u->eof_status;
    u->eof_status = 0;
    if (!s || u->message_done)
        return; /* the response was complete: the end only keeps it out of the pool */
    if (status == UV_EOF && u->headers_done && s->resp_body_up == BODY_CLOSE) {
        /* A body delimited by the connection's end: EOF completes it. */
        llhttp_finish(&u->parser);
        u->message_done = true;
        up_process(u);
        return;
    }
    sl__session_on_up_error(s, status == UV_EOF ? SL_EUPSTREAM_CLOSED : status);
}

static void up_resume_reading(h1_up_t *u)
{
    u->hold = false;
    if (u->state != UP_ACTIVE)
        return;
    up_process(u);
    if (u->state == UP_ACTIVE && u->base.session)
        sl__session_flush_head(u->base.session);
    if (u->eof_status && u->state == UP_ACTIVE && !u->hold && u->in.parsed == u->in.len) {
        up_eof(u);
        return;
    }
    if (u->state == UP_ACTIVE && u->base.session && !u->message_done && !u->peer_closed) {
        sl_iobuf_t *b = &u->in;
        if (!b->data || b->len < b->cap || make_room(u) == 0)
            start_reading(u);
        else
            stop_reading(u);
    }
}

static void h1_resume_reading(sl_up_t *base)
{
    up_resume_reading(sl_container_of(base, h1_up_t, base));
}

static bool h1_owns(sl_up_t *base, const void *ptr)
{
    h1_up_t *u = sl_container_of(base, h1_up_t, base);
    const char *p = ptr;
    return u->in.data && p >= u->in.data && p < u->in.data + u->in.cap;
}

static void h1_hold(sl_up_t *base)
{
    sl_container_of(base, h1_up_t, base)->in.refs++;
}

/* Writes that pointed into the buffer completed: parsing may continue. */
static void h1_unhold(sl_up_t *base)
{
    h1_up_t *u = sl_container_of(base, h1_up_t, base);
    if (--u->in.refs == 0 && u->state == UP_ACTIVE && u->base.session && !u->hold && !u->reading)
        up_resume_reading(u);
}

static void up_read(sl_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    h1_up_t *u = sl_stream_data(st);
    if (u->state == UP_IDLE) {
        /* An idle pooled connection that talks or closes is no longer usable. */
        SL_DEBUG("pooled connection closed by the upstream");
        up_close(u);
        return;
    }
    if (nread == UV_ENOBUFS) {
        stop_reading(u);
        if (make_room(u) == SL_EUPSTREAM_HEADER_TOO_LARGE && u->base.session)
            sl__session_on_up_error(u->base.session, SL_EUPSTREAM_HEADER_TOO_LARGE);
        return;
    }
    sl_session_t *s = u->base.session;
    if (!s) {
        up_close(u);
        return;
    }
    if (nread < 0) {
        stop_reading(u);
        u->peer_closed = true;
        u->eof_status = (int)nread;
        /* Bytes before the end are not all parsed yet (the session is busy with the header,
         * or writes hold the buffer; over TLS the end comes in the same read as the last
         * bytes): the end waits for them. */
        if (u->hold || u->in.parsed < u->in.len)
            return;
        up_eof(u);
        return;
    }
    u->in.len += (size_t)nread;
    if (s->peer.options.read_timeout_ms && !u->message_done && !u->write_pending)
        arm(u, UTIMER_READ, s->peer.options.read_timeout_ms);
    up_process(u);
    if (u->state == UP_ACTIVE && u->base.session && !u->hold && !u->message_done) {
        sl_iobuf_t *b = &u->in;
        if (b->len >= b->cap && make_room(u) != 0)
            stop_reading(u);
    }
}

static void up_start_response(h1_up_t *u)
{
    sl_session_t *s = u->base.session;
    reset_response(u);
    u->header_published = false;
    u->end_delivered = false;
    u->hold = false;
    u->base.got_bytes = false;
    u->head_request = s->head;
    u->msg_start = 0;
    if (u->in.data && u->in.len > u->in.parsed) {
        /* Bytes before we asked: an upstream that answers unasked is broken. */
        sl__session_on_up_error(s, SL_EUPSTREAM_PROTO);
        return;
    }
    if (u->in.data) {
        u->in.len = u->in.parsed = 0;
    }
    llhttp_init(&u->parser, HTTP_RESPONSE, response_settings());
    u->parser.data = u;
    arm_io(u);
    start_reading(u);
}

static void h1_release(sl_up_t *base, bool reusable)
{
    h1_up_t *u = sl_container_of(base, h1_up_t, base);
    sl_http_worker_t *hw = u->hw;
    if (u->state != UP_ACTIVE) {
        up_close(u);
        return;
    }
    u->base.session = NULL;
    u->requests++;
    bool ok = reusable && !u->peer_closed && u->in.parsed == u->in.len && u->in.refs == 0 &&
              u->idle_timeout_ms > 0 && !hw->shutting_down && hw->pool->max_idle > 0 &&
              llhttp_should_keep_alive(&u->parser);
    if (!ok) {
        up_close(u);
        return;
    }
    sl_pool_t *p = hw->pool;
    if (p->n_idle >= p->max_idle) {
        h1_up_t *old = p->lru_tail;
        pool_unlink(p, old);
        old->state = UP_ACTIVE;
        up_close(old);
    }
    sl__iobuf_put(hw, &u->in); /* idle connections hold no buffer */
    u->state = UP_IDLE;
    pool_insert(p, u);
    arm(u, UTIMER_IDLE, u->idle_timeout_ms);
    start_reading(u); /* to notice the upstream closing it */
}

/* ---- requests -------------------------------------------------------------------------------- */

static int h1_request_head(sl_session_t *s)
{
    h1_up_t *u = sl_container_of(s->up, h1_up_t, base);
    sl_request_header_t *r = &s->up_req;
    r->version = 11;
    sl_headers_remove(&r->headers, "transfer-encoding");
    s->up_req_chunked = false;
    if (s->req_body == BODY_CHUNKED) {
        sl_headers_remove(&r->headers, "content-length");
        sl_headers_add(&r->headers, "Transfer-Encoding", "chunked");
        s->up_req_chunked = true;
    } else if (s->req_body == BODY_LENGTH && !sl_headers_get(&r->headers, "content-length")) {
        /* A filter removed the length (it changes the body): frame it with chunks. */
        sl_headers_add(&r->headers, "Transfer-Encoding", "chunked");
        s->up_req_chunked = true;
    }
    uv_buf_t head = sl__h1_serialize_request(&s->arena, r);
    int rc = up_write(u, &head, 1, WTAG_NONE);
    if (rc)
        return rc;
    up_start_response(u);
    return 0;
}

static int h1_request_write(sl_session_t *s, const uv_buf_t *body, unsigned n, bool end, int tag)
{
    h1_up_t *u = sl_container_of(s->up, h1_up_t, base);
    uv_buf_t out[SL_MAX_BODY_IOV * 3 + 4];
    unsigned k = 0;
    bool chunked = s->up_req_chunked;
    for (unsigned i = 0; i < n; i++) {
        if (chunked)
            out[k++] = sl__h1_chunk_header(&s->arena, body[i].len);
        out[k++] = body[i];
        if (chunked)
            out[k++] = uv_buf_init((char *)"\r\n", 2);
    }
    if (end && chunked)
        out[k++] = sl__h1_last_chunk(&s->arena, &s->req_trailers);
    if (k == 0)
        out[k++] = uv_buf_init((char *)"", 0);
    return up_write(u, out, k, tag);
}

/* After a 101: the connection leaves HTTP/1.1 with the bytes after the response head. */
static sl_stream_t *h1_take_stream(sl_up_t *base, char **lead, size_t *lead_len)
{
    h1_up_t *u = sl_container_of(base, h1_up_t, base);
    *lead = NULL;
    *lead_len = 0;
    if (u->in.data && u->in.len > u->in.parsed) {
        *lead_len = u->in.len - u->in.parsed;
        *lead = sl_xmalloc(*lead_len);
        memcpy(*lead, u->in.data + u->in.parsed, *lead_len);
    }
    u->base.session = NULL;
    return sl__up_take_stream(u);
}

static const sl_up_ops_t h1_up_ops = {
    .request_head = h1_request_head,
    .request_write = h1_request_write,
    .resume_reading = h1_resume_reading,
    .release = h1_release,
    .owns = h1_owns,
    .hold = h1_hold,
    .unhold = h1_unhold,
    .take_stream = h1_take_stream,
};
