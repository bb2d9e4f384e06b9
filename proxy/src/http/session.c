/* The proxy session: one request's journey through Pingora's hooks, from the client's header
 * to the last byte of the response. Every state change happens in advance()/state_result();
 * events from the two connections (connected, body pieces, writes done, errors) feed it. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "http/proxy_impl.h"
#include "io/pipe.h"
#include "io/tls.h"
#include "util/mem.h"

#define SL_LOG_TAG "proxy"
#include "sluice/log.h"

static void advance(sl_session_t *s);
static bool state_result(sl_session_t *s, int rc);
static void fail(sl_session_t *s, int err);
static void abort_session(sl_session_t *s, int err);
static void finish(sl_session_t *s);
static void prepare_response_head(sl_session_t *s);

static const char *const state_names[] = {
    "early_request_filter",
    "request_filter",
    "upstream_peer",
    "connect",
    "connecting",
    "connected_to_upstream",
    "upstream_request_filter",
    "send_request",
    "proxying",
    "upstream_response_filter",
    "response_filter",
    "response_body",
    "failing",
    "responding",
    "tunnel",
    "done",
};

static void set_state(sl_session_t *s, sess_state_t st)
{
    SL_TRACE("session %p: %s -> %s", (void *)s, state_names[s->state], state_names[st]);
    s->state = st;
}

/* ---- allocation -------------------------------------------------------------------------- */

static sl_session_t *session_alloc(sl_down_t *d)
{
    sl_http_worker_t *hw = d->hw;
    sl_session_t *s = hw->free_sessions;
    if (s) {
        hw->free_sessions = s->next_free;
        hw->n_free_sessions--;
    } else {
        s = sl_xmalloc(sizeof(*s));
    }
    /* Everything before the arena is per-request state; the arena keeps its first block. */
    memset(s, 0, offsetof(sl_session_t, arena));
    sl__arena_init(&s->arena);
    s->svc = d->hw->svc;
    s->hw = hw;
    s->down = d;
    const struct sockaddr *pa = d->ops->peer_addr(d);
    s->client_addr.ss_family = pa->sa_family;
    if (pa->sa_family == AF_INET)
        memcpy(&s->client_addr, pa, sizeof(struct sockaddr_in));
    else if (pa->sa_family == AF_INET6)
        memcpy(&s->client_addr, pa, sizeof(struct sockaddr_in6));
    s->start_ms = uv_now(hw->loop);
    s->start_ns = uv_hrtime();
    atomic_fetch_add_explicit(&hw->st_requests, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&hw->st_active, 1, memory_order_relaxed);
    return s;
}

static sl_str_t arena_copy(sl_session_t *s, sl_str_t v)
{
    return v.len ? (sl_str_t){sl_arena_strndup(&s->arena, v.ptr, v.len), v.len} : v;
}

/* Copies a request header's strings into the session's arena. */
static void internalize(sl_session_t *s, sl_request_header_t *r)
{
    r->method = arena_copy(s, r->method);
    r->uri = arena_copy(s, r->uri);
    for (size_t i = 0; i < r->headers.n; i++) {
        r->headers.items[i].name = arena_copy(s, r->headers.items[i].name);
        r->headers.items[i].value = arena_copy(s, r->headers.items[i].value);
    }
}

void sl__session_release(sl_http_worker_t *hw, sl_session_t *s)
{
    if (!s)
        return;
    if (s->h2_wait)
        sl__h2_up_unwait(s);
    if (s->pending && !s->detached) {
        /* A hook owes a resume: the session outlives its client side until it comes (the
         * hook's callback still holds s). Its request points into the client's read buffer,
         * which goes with the connection: copied first. */
        internalize(s, &s->req);
        internalize(s, &s->up_req);
        sl_response_header_t *ur = &s->up_resp; /* points into the upstream's buffer */
        ur->reason = arena_copy(s, ur->reason);
        for (size_t i = 0; i < ur->headers.n; i++) {
            ur->headers.items[i].name = arena_copy(s, ur->headers.items[i].name);
            ur->headers.items[i].value = arena_copy(s, ur->headers.items[i].value);
        }
        s->detached = true;
        s->down = NULL;
        if (s->up) {
            s->up->ops->release(s->up, false);
            s->up = NULL;
        }
        if (!s->error)
            s->error = SL_EDOWNSTREAM_CLOSED;
        return;
    }
    atomic_fetch_sub_explicit(&hw->st_active, 1, memory_order_relaxed);
    if (s->state != SS_DONE) {
        /* Torn down from outside (connection closed under us): hooks still get logging. */
        if (s->up) {
            s->up->ops->release(s->up, false);
            s->up = NULL;
        }
        if (s->ctx_made) {
            if (s->svc->hooks.logging)
                s->svc->hooks.logging(s, s->ctx, s->error ? s->error : SL_EDOWNSTREAM_CLOSED);
            if (s->svc->hooks.free_ctx)
                s->svc->hooks.free_ctx(s, s->ctx);
        }
        s->state = SS_DONE;
    }
    sl__arena_reset(&s->arena);
    if (!hw->stopped && hw->n_free_sessions < 64) {
        s->next_free = hw->free_sessions;
        hw->free_sessions = s;
        hw->n_free_sessions++;
    } else {
        free(s);
    }
}

/* ---- the request ------------------------------------------------------------------------- */

bool sl__is_hop_by_hop(sl_str_t name)
{
    static const char *const hop[] = {
        "connection", "keep-alive", "proxy-connection", "transfer-encoding",
        "te",         "upgrade",    "trailer",          "proxy-authenticate",
        NULL};
    for (const char *const *h = hop; *h; h++)
        if (sl_str_ieq_cstr(name, *h))
            return true;
    return false;
}

sl_session_t *sl__session_new(sl_down_t *d)
{
    sl_session_t *s = session_alloc(d);
    d->session = s;
    s->req.headers.arena = &s->arena;
    return s;
}

void sl__session_begin(sl_session_t *s)
{
    sl_down_t *d = s->down;
    if (sl_str_eq(s->req.method, SL_STR("CONNECT"))) {
        d->close_after = true;
        sl_session_respond_error(s, 405, "CONNECT is not supported here");
        return;
    }
    const sl_proxy_hooks_t *h = &s->svc->hooks;
    s->ctx = h->new_ctx ? h->new_ctx(s) : NULL;
    s->ctx_made = true;
    set_state(s, SS_EARLY_FILTER);
    advance(s);
}

void sl__session_fail_request(sl_session_t *s, int err)
{
    if (!s->req.version)
        s->req.version = 11;
    if (!s->req.method.len)
        s->req.method = SL_STR("GET");
    s->down->close_after = true;
    fail(s, err);
}

void sl__session_reject(sl_down_t *d, int err)
{
    sl_session_t *s = sl__session_new(d);
    s->req_body_done = false;
    sl__session_fail_request(s, err);
}

/* ---- hooks ------------------------------------------------------------------------------- */

/* Calls a hook; a hook that resumes itself before returning SL_PENDING counts as finished. */
#define CALL_HOOK(s, expr)                     \
    ({                                         \
        (s)->in_hook = true;                   \
        (s)->resumed = false;                  \
        int rc_ = (expr);                      \
        (s)->in_hook = false;                  \
        if (rc_ == SL_PENDING && (s)->resumed) \
            rc_ = (s)->resumed_rc;             \
        (s)->pending = rc_ == SL_PENDING;      \
        rc_;                                   \
    })

static void build_upstream_request(sl_session_t *s)
{
    const sl_request_header_t *r = &s->req;
    sl_request_header_t *u = &s->up_req;
    u->method = r->method;
    u->uri = r->uri;
    u->version = 11;
    u->headers.arena = &s->arena;
    u->headers.cap = r->headers.n + 4;
    u->headers.items = sl_arena_alloc(&s->arena, u->headers.cap * sizeof(sl_header_t));
    u->headers.n = 0;
    const sl_str_t *conn = sl_headers_get(&r->headers, "connection");
    for (size_t i = 0; i < r->headers.n; i++) {
        const sl_header_t *h = &r->headers.items[i];
        if (sl__is_hop_by_hop(h->name) || sl_str_ieq_cstr(h->name, "expect"))
            continue;
        /* Headers the client named in Connection are hop-by-hop too. */
        if (conn && sl__str_has_token(*conn, h->name))
            continue;
        u->headers.items[u->headers.n++] = *h;
    }
    if (s->upgrade) {
        /* The one hop-by-hop request that goes on: the upstream decides about the upgrade. */
        const sl_str_t *up = sl_headers_get(&r->headers, "upgrade");
        sl_headers_set_n(&u->headers, "Upgrade", 7, up->ptr, up->len);
        sl_headers_set(&u->headers, "Connection", "Upgrade");
    }
    if (!sl_headers_get(&u->headers, "host")) {
        /* HTTP/1.0 clients may omit Host; HTTP/1.1 upstreams need one. */
        char addr[300];
        sl_peer_addr_str(&s->peer, addr, sizeof(addr));
        sl_headers_set(&u->headers, "Host", s->peer.sni[0] ? s->peer.sni : addr);
    }
    if (s->svc->opts.add_forwarded_headers) {
        const char *ip = sl_session_client_ip(s);
        const sl_str_t *xff = sl_headers_get(&u->headers, "x-forwarded-for");
        if (xff) {
            char *v = sl_arena_printf(&s->arena, "%.*s, %s", (int)xff->len, xff->ptr, ip);
            sl_headers_set(&u->headers, "X-Forwarded-For", v);
        } else {
            sl_headers_add(&u->headers, "X-Forwarded-For", ip);
        }
        sl_headers_set(&u->headers, "X-Forwarded-Proto", sl_session_is_tls(s) ? "https" : "http");
        /* The verified client certificate (mTLS listeners); never what a client claims. */
        sl_headers_remove(&u->headers, "x-client-cert-subject");
        char subject[512];
        if (sl_session_is_tls(s) &&
            sl_stream_client_cert_subject(s->down->stream, subject, sizeof(subject)) == 0)
            sl_headers_add(&u->headers, "X-Client-Cert-Subject",
                           sl_arena_strndup(&s->arena, subject, strlen(subject)));
        const sl_str_t *host = sl_headers_get(&r->headers, "host");
        if (host)
            sl_headers_set_n(&u->headers, "X-Forwarded-Host", 16, host->ptr, host->len);
    }
}

/* Request body pieces through request_body_filter, then to the upstream's framing. */
static int write_request_body(sl_session_t *s, uv_buf_t *iov, size_t n, bool end)
{
    uv_buf_t out[SL_MAX_BODY_IOV + 1];
    unsigned k = 0;
    bool refs_down = false;
    size_t calls = n ? n : (end ? 1 : 0);
    for (size_t i = 0; i < calls; i++) {
        sl_body_t body = n ? (sl_body_t){iov[i].base, iov[i].len} : (sl_body_t){NULL, 0};
        if (s->svc->hooks.request_body_filter) {
            int rc = s->svc->hooks.request_body_filter(s, s->ctx, &body, end && i == calls - 1);
            if (rc < 0)
                return rc;
        }
        if (!body.len)
            continue;
        if (s->down->ops->owns(s->down, body.data))
            refs_down = true;
        out[k++] = uv_buf_init((char *)body.data, (unsigned)body.len);
    }
    if (k == 0 && !end)
        return 0;
    int tag = refs_down ? WTAG_DOWN_BUF : WTAG_NONE;
    /* Held before the write: its completion may come before the call returns. */
    if (refs_down)
        s->down->ops->hold(s->down);
    int rc = s->up->ops->request_write(s, out, k, end, tag);
    if (rc && refs_down)
        s->down->ops->unhold(s->down);
    return rc;
}

/* The upstream is ready: send the request head (the upstream side frames it). */
static int send_request(sl_session_t *s)
{
    int rc = s->up->ops->request_head(s);
    if (rc)
        return rc;
    if (s->expect_continue && !s->req_body_done && !s->down->ops->body_buffered(s->down) &&
        s->down->ops->send_continue(s) == 0)
        s->sent_continue = true;
    return 0;
}

/* Runs the current state's action; SL_PENDING means an event will call state_result. */
static int run_state(sl_session_t *s)
{
    const sl_proxy_hooks_t *h = &s->svc->hooks;
    switch (s->state) {
    case SS_EARLY_FILTER:
        return h->early_request_filter ? CALL_HOOK(s, h->early_request_filter(s, s->ctx)) : 0;
    case SS_REQUEST_FILTER:
        return h->request_filter ? CALL_HOOK(s, h->request_filter(s, s->ctx)) : 0;
    case SS_UPSTREAM_PEER:
        sl_peer_init(&s->peer);
        s->tls_ctx = NULL;
        if (!h->upstream_peer)
            return sl_session_error(s, "no upstream_peer hook");
        return CALL_HOOK(s, h->upstream_peer(s, s->ctx, &s->peer));
    case SS_CONNECT: {
        if (s->peer.tls && !s->tls_ctx) {
            sl_error_t err;
            s->tls_ctx = sl__tls_client_ctx(&s->peer, s->svc->ca_file, &err);
            if (!s->tls_ctx) {
                SL_ERROR("upstream TLS settings: %s", err.msg);
                return sl_session_error(s, "upstream TLS settings are invalid");
            }
        }
        const sl_peer_options_t *po = &s->peer.options;
        /* An upgrade needs an HTTP/1.1 connection of its own. */
        if (!s->upgrade && (po->alpn == SL_ALPN_H2 || (s->peer.tls && po->alpn == SL_ALPN_H2H1))) {
            s->reused = false;
            int rc = sl__h2_up_attach(s);
            if (rc == 0) {
                atomic_fetch_add_explicit(&s->hw->st_reused, 1, memory_order_relaxed);
                return 0;
            }
            if (rc == SL_PENDING) {
                set_state(s, SS_CONNECTING);
                return SL_PENDING;
            }
            if (rc < 0)
                return rc;
            /* rc 1: this upstream answers HTTP/1.1 */
        }
        sl_up_t *u = s->no_pool ? NULL : sl__up_pool_take(s->hw, &s->peer, s->tls_ctx);
        if (u) {
            s->up = u;
            u->session = s;
            s->reused = true;
            atomic_fetch_add_explicit(&s->hw->st_reused, 1, memory_order_relaxed);
            return 0;
        }
        s->reused = false;
        s->connect_start_ns = uv_hrtime();
        set_state(s, SS_CONNECTING);
        sl__up_connect(s);
        return SL_PENDING;
    }
    case SS_CONNECTED_HOOK:
        if (!h->connected_to_upstream)
            return 0;
        return CALL_HOOK(s, h->connected_to_upstream(s, s->ctx, s->reused, &s->peer,
                                                     sl_stream_fileno(s->up->stream)));
    case SS_UP_REQUEST_FILTER:
        build_upstream_request(s);
        return h->upstream_request_filter
                   ? CALL_HOOK(s, h->upstream_request_filter(s, s->ctx, &s->up_req))
                   : 0;
    case SS_SEND_REQUEST:
        return send_request(s);
    case SS_UP_RESPONSE_FILTER:
        return h->upstream_response_filter
                   ? CALL_HOOK(s, h->upstream_response_filter(s, s->ctx, &s->up_resp))
                   : 0;
    case SS_RESPONSE_FILTER:
        return h->response_filter ? CALL_HOOK(s, h->response_filter(s, s->ctx, &s->up_resp)) : 0;
    default:
        return SL_PENDING;
    }
}

static void advance(sl_session_t *s)
{
    for (;;) {
        int rc = run_state(s);
        if (rc == SL_PENDING)
            return; /* a hook (s->pending) or an I/O event continues */
        if (!state_result(s, rc))
            return;
    }
}

/* Handles what the current state returned and picks the next state. Returns false when the
 * session must stop here (it answered, failed, or waits for an event). */
static bool state_result(sl_session_t *s, int rc)
{
    if (s->deferred_err) {
        /* The client went away or the upstream failed while a hook was pending. */
        int err = s->deferred_err;
        s->deferred_err = 0;
        abort_session(s, err);
        return false;
    }
    if (rc < 0) {
        fail(s, rc);
        return false;
    }
    if (s->state == SS_RESPONDING || s->resp_header_sent)
        return false; /* a hook answered the client itself */
    switch (s->state) {
    case SS_EARLY_FILTER:
        if (rc == SL_DONE)
            return false;
        set_state(s, SS_REQUEST_FILTER);
        return true;
    case SS_REQUEST_FILTER:
        if (rc == SL_DONE)
            return false;
        set_state(s, SS_UPSTREAM_PEER);
        return true;
    case SS_UPSTREAM_PEER:
        if (s->peer.addr_len == 0) {
            fail(s, sl_session_error(s, "upstream_peer returned no address"));
            return false;
        }
        s->have_peer = true;
        set_state(s, SS_CONNECT);
        return true;
    case SS_CONNECT:
        set_state(s, SS_CONNECTED_HOOK);
        return true;
    case SS_CONNECTED_HOOK:
        set_state(s, SS_UP_REQUEST_FILTER);
        return true;
    case SS_UP_REQUEST_FILTER:
        set_state(s, SS_SEND_REQUEST);
        return true;
    case SS_SEND_REQUEST:
        set_state(s, SS_PROXYING);
        /* The body may flow now: parse what the client already sent, read the rest. */
        s->down->ops->resume_body(s->down);
        return false;
    case SS_UP_RESPONSE_FILTER:
        set_state(s, SS_RESPONSE_FILTER);
        return true;
    case SS_RESPONSE_FILTER:
        set_state(s, SS_RESPONSE_BODY);
        prepare_response_head(s);
        /* Parse on: body bytes already here go out with the head in one write. */
        s->up->ops->resume_reading(s->up);
        return false;
    default:
        return false;
    }
}

void sl_session_resume(sl_session_t *s, int rc)
{
    if (s->in_hook) {
        s->resumed = true;
        s->resumed_rc = rc;
        return;
    }
    if (!s->pending) {
        SL_ERROR("sl_session_resume called on a session that is not waiting");
        return;
    }
    s->pending = false;
    if (s->detached) { /* its client left meanwhile: only the ending hooks remain */
        sl__session_release(s->hw, s);
        return;
    }
    if (state_result(s, rc))
        advance(s);
}

/* ---- connecting ---------------------------------------------------------------------------- */

void sl__session_on_connected(sl_session_t *s, sl_up_t *u, int err)
{
    if (err == 0) {
        s->up = u;
        s->connect_ns = uv_hrtime() - s->connect_start_ns;
        set_state(s, SS_CONNECTED_HOOK);
        advance(s);
        return;
    }
    s->up = NULL;
    char addr[300];
    sl_peer_addr_str(&s->peer, addr, sizeof(addr));
    SL_DEBUG("connect to %s failed: %s", addr, sl_strerror(err));
    if (s->svc->hooks.fail_to_connect)
        err = s->svc->hooks.fail_to_connect(s, s->ctx, &s->peer, err);
    if (s->retry && s->retries < s->svc->max_retries && err < 0) {
        s->retry = false;
        s->retries++;
        s->error_reason = NULL; /* this attempt's explanation is not the answer's */
        set_state(s, SS_UPSTREAM_PEER);
        advance(s);
        return;
    }
    SL_WARN("%s %.*s: cannot connect to upstream %s: %s", sl_session_client_ip(s),
            (int)s->req.uri.len, s->req.uri.ptr, addr, sl_strerror(err));
    fail(s, err < 0 ? err : SL_EINTERNAL);
}

/* ---- request body -------------------------------------------------------------------------- */

void sl__session_on_request_body(sl_session_t *s, uv_buf_t *iov, size_t n, bool end)
{
    if (s->state == SS_DONE || s->state == SS_RESPONDING || s->state == SS_FAILING || !s->up) {
        /* Nobody to send it to (we answered already): the body is dropped. */
        if (end)
            s->req_body_done = true;
        return;
    }
    if (n)
        s->req_body_started = true;
    if (end)
        s->req_body_done = true;
    int rc = write_request_body(s, iov, n, end);
    if (rc < 0)
        fail(s, rc);
}

void sl__session_on_up_write_done(sl_session_t *s, int status, int tag)
{
    if (tag == WTAG_DOWN_BUF && s->down)
        s->down->ops->unhold(s->down);
    if (status < 0 && status != UV_ECANCELED && s->state != SS_DONE)
        sl__session_on_up_error(s, status);
}

/* ---- response ------------------------------------------------------------------------------ */

void sl__session_on_response_header(sl_session_t *s)
{
    if (s->state == SS_DONE)
        return;
    if (s->state != SS_PROXYING) {
        /* Still connecting hooks? Not possible: the request went first. Be safe. */
        abort_session(s, SL_EINTERNAL);
        return;
    }
    if (s->up_resp.status == 101 && !s->upgrade) {
        SL_WARN("upstream switched protocols without being asked (101)");
        sl__session_on_up_error(s, SL_EUPSTREAM_PROTO);
        return;
    }
    if (s->upgrade && s->up_resp.status != 101)
        s->down->close_after = true; /* refused: an ordinary response, then no more requests */
    s->resp = &s->up_resp;
    set_state(s, SS_UP_RESPONSE_FILTER);
    advance(s);
}

/* Removes the upstream hop's own fields; the client side frames the rest. */
static void strip_hop_by_hop(sl_response_header_t *r)
{
    const sl_str_t *connp = sl_headers_get(&r->headers, "connection");
    sl_str_t conn = connp ? *connp : (sl_str_t){NULL, 0}; /* the loop below overwrites items */
    size_t w = 0;
    for (size_t i = 0; i < r->headers.n; i++) {
        const sl_header_t *h = &r->headers.items[i];
        if (sl__is_hop_by_hop(h->name) || (conn.len && sl__str_has_token(conn, h->name)))
            continue;
        r->headers.items[w++] = *h;
    }
    r->headers.n = w;
}

static void prepare_response_head(sl_session_t *s)
{
    sl_response_header_t *r = &s->up_resp;
    /* 101 says what the connection switches to, 426 what the client must upgrade to
     * (RFC 9110 15.5.22): their Upgrade goes on to the client. */
    bool keep_upgrade = r->status == 101 || r->status == 426;
    const sl_str_t *upv = keep_upgrade ? sl_headers_get(&r->headers, "upgrade") : NULL;
    sl_str_t proto = upv ? *upv : (sl_str_t){NULL, 0};
    strip_hop_by_hop(r);
    if (proto.len)
        sl_headers_set_n(&r->headers, "Upgrade", 7, proto.ptr, proto.len);
    if (r->status == 101)
        sl_headers_set(&r->headers, "Connection", "Upgrade");
    s->status = r->status;
    s->down->ops->response_head(s, r);
}

static int write_down(sl_session_t *s, const uv_buf_t *out, unsigned k, bool end, bool refs_up)
{
    refs_up = refs_up && s->up;
    /* Held before the write: its completion may come before the call returns. */
    if (refs_up)
        s->up->ops->hold(s->up);
    int rc = s->down->ops->response_write(s, out, k, end, refs_up ? WTAG_UP_BUF : WTAG_NONE);
    if (rc && refs_up && s->up)
        s->up->ops->unhold(s->up);
    return rc;
}

void sl__session_flush_head(sl_session_t *s)
{
    if (!s->head_pending || s->state == SS_DONE)
        return;
    int rc = write_down(s, NULL, 0, false, false);
    if (rc)
        abort_session(s, rc);
}

void sl__session_on_response_body(sl_session_t *s, uv_buf_t *iov, size_t n, bool end)
{
    if (s->state != SS_RESPONSE_BODY)
        return;
    uv_buf_t out[SL_MAX_BODY_IOV + 1];
    unsigned k = 0;
    bool refs_up = false;
    size_t calls = n ? n : (end ? 1 : 0);
    for (size_t i = 0; i < calls; i++) {
        sl_body_t body = n ? (sl_body_t){iov[i].base, iov[i].len} : (sl_body_t){NULL, 0};
        bool last = end && i == calls - 1;
        if (s->svc->hooks.response_body_filter) {
            int rc = s->svc->hooks.response_body_filter(s, s->ctx, &body, last);
            if (rc < 0) {
                if (!s->resp_header_sent) {
                    s->head_pending = false;
                    fail(s, rc);
                } else {
                    abort_session(s, rc);
                }
                return;
            }
        }
        if (!body.len)
            continue;
        if (s->up && s->up->ops->owns(s->up, body.data))
            refs_up = true;
        out[k++] = uv_buf_init((char *)body.data, (unsigned)body.len);
    }
    if (end) {
        s->up_resp_done = true;
        s->resp_done = true;
        sl_headers_t *t = &s->up_trailers;
        if (t->n && s->svc->hooks.response_trailer_filter) {
            if (!t->arena)
                t->arena = &s->arena;
            s->svc->hooks.response_trailer_filter(s, s->ctx, t);
        }
    }
    if (k == 0 && !end && !s->head_pending)
        return;
    int rc = write_down(s, out, k, end, refs_up);
    if (rc)
        abort_session(s, rc);
}

void sl__session_on_down_write_done(sl_session_t *s, int status, int tag)
{
    if (tag == WTAG_UP_BUF && s->up)
        s->up->ops->unhold(s->up);
    if (s->state == SS_DONE)
        return;
    if (status < 0) {
        abort_session(s, status == UV_ECANCELED ? SL_EDOWNSTREAM_CLOSED : status);
        return;
    }
    if (s->resp_done && s->down->write_pending == 0)
        finish(s);
}

/* ---- errors -------------------------------------------------------------------------------- */

void sl__session_on_up_error(sl_session_t *s, int err)
{
    if (s->state == SS_DONE)
        return;
    if (s->pending) {
        s->deferred_err = err;
        return;
    }
    sl_up_t *u = s->up;
    if (!s->resp_header_sent && u && s->reused && !u->got_bytes && !s->req_body_started &&
        s->retries < (s->svc->max_retries > 0 ? s->svc->max_retries : 1) &&
        (err == SL_EUPSTREAM_CLOSED || err == UV_ECONNRESET || err == UV_EPIPE)) {
        /* A pooled connection the upstream had closed: try a fresh one, nothing was lost. */
        SL_DEBUG("reused upstream connection failed (%s); retrying on a new one", sl_strerror(err));
        u->ops->release(u, false);
        s->up = NULL;
        s->retries++;
        s->no_pool = true;
        set_state(s, SS_CONNECT);
        advance(s);
        return;
    }
    if (s->resp_header_sent) {
        SL_WARN("%s %.*s: upstream failed mid-response: %s; aborting the response",
                sl_session_client_ip(s), (int)s->req.uri.len, s->req.uri.ptr, sl_strerror(err));
        abort_session(s, err);
        return;
    }
    s->head_pending = false;
    SL_WARN("%s %.*s: upstream error: %s", sl_session_client_ip(s), (int)s->req.uri.len,
            s->req.uri.ptr, sl_strerror(err));
    fail(s, err);
}

void sl__session_on_down_error(sl_session_t *s, int err)
{
    if (s->state == SS_DONE)
        return;
    if (s->pending) {
        s->deferred_err = err;
        return;
    }
    if ((err == SL_EBODY_READ_TIMEOUT || err == SL_EHEADER_READ_TIMEOUT ||
         err == SL_EHEADER_TOO_LARGE || err == SL_EPARSE || err == SL_EURI_TOO_LONG) &&
        !s->resp_header_sent) {
        s->down->close_after = true;
        fail(s, err);
        return;
    }
    abort_session(s, err);
}

static int default_error_response(sl_session_t *s, int err)
{
    int status = sl_session_error_status(s, err);
    const char *msg = s->error_reason;
    if (!msg) {
        switch (status) {
        case 502:
            msg = (err == UV_ECONNREFUSED || err == UV_EHOSTUNREACH || err == UV_ENETUNREACH)
                      ? "upstream connect failed"
                      : sl_strerror(err);
            break;
        default:
            msg = sl_strerror(err);
        }
    }
    sl_session_respond_error(s, status, msg);
    return status;
}

/* An error ended the request before any response went out: answer with an error response
 * (fail_to_proxy's, or the default), then finish. Afterwards it can only abort. */
static void fail(sl_session_t *s, int err)
{
    if (!s->error)
        s->error = err;
    if (s->resp_header_sent || s->state == SS_RESPONDING) {
        abort_session(s, err);
        return;
    }
    s->head_pending = false;
    if (s->up) {
        s->up->ops->release(s->up, false);
        s->up = NULL;
    }
    if (!s->req_body_done)
        s->down->close_after = true;
    /* Upstream and client failures were logged where they were seen; hook errors here. */
    if (err == SL_ECUSTOM || err == SL_EINTERNAL)
        SL_ERROR("Fail to proxy: %s", s->error_reason ? s->error_reason : sl_strerror(err));
    if (s->ctx_made && s->svc->hooks.fail_to_proxy) {
        set_state(s, SS_FAILING); /* the hook may respond itself */
        int status = s->svc->hooks.fail_to_proxy(s, s->ctx, err);
        if (s->state != SS_RESPONDING) {
            /* It did not answer: the default answer, with the status it chose if any. */
            if (status >= 400 && status < 600 && status != sl_session_error_status(s, err))
                sl_session_respond_error(s, status, s->error_reason);
            else
                default_error_response(s, err);
        }
    } else {
        default_error_response(s, err);
    }
}

static void end_hooks(sl_session_t *s)
{
    if (!s->ctx_made)
        return;
    s->ctx_made = false;
    if (s->svc->hooks.logging)
        s->svc->hooks.logging(s, s->ctx, s->error);
    if (s->svc->hooks.free_ctx)
        s->svc->hooks.free_ctx(s, s->ctx);
}

static void abort_session(sl_session_t *s, int err)
{
    if (s->state == SS_DONE)
        return;
    if (s->pending) {
        s->deferred_err = err;
        return;
    }
    if (!s->error)
        s->error = err;
    set_state(s, SS_DONE);
    if (s->up) {
        s->up->ops->release(s->up, false);
        s->up = NULL;
    }
    end_hooks(s);
    sl_down_t *d = s->down;
    d->session = NULL;
    sl__session_release(s->hw, s);
    d->ops->abort(d);
}

static void start_tunnel(sl_session_t *s);

static void finish(sl_session_t *s)
{
    if (s->status == 101 && s->upgrade && s->up && !s->error) {
        start_tunnel(s);
        return;
    }
    set_state(s, SS_DONE);
    if (s->up) {
        bool reusable = s->up_resp_done && s->req_body_done && !s->error;
        s->up->ops->release(s->up, reusable);
        s->up = NULL;
    }
    if (!s->req_body_done)
        s->down->close_after = true;
    end_hooks(s);
    s->down->ops->session_done(s->down);
}

/* ---- upgraded connections ------------------------------------------------------------------ */

static void tunnel_unlink(sl_session_t *s)
{
    sl_http_worker_t *hw = s->hw;
    if (s->tunnel_prev)
        s->tunnel_prev->tunnel_next = s->tunnel_next;
    else if (hw->tunnels == s)
        hw->tunnels = s->tunnel_next;
    if (s->tunnel_next)
        s->tunnel_next->tunnel_prev = s->tunnel_prev;
    s->tunnel_prev = s->tunnel_next = NULL;
}

static void on_tunnel_done(void *arg, int err, uint64_t up_bytes, uint64_t down_bytes)
{
    sl_session_t *s = arg;
    sl_http_worker_t *hw = s->hw;
    tunnel_unlink(s);
    s->pipe = NULL;
    s->body_bytes_sent += down_bytes;
    if (err && !s->error)
        s->error = err;
    SL_DEBUG("tunnel ended (%s): %llu bytes up, %llu down", err ? sl_strerror(err) : "closed",
             (unsigned long long)up_bytes, (unsigned long long)down_bytes);
    atomic_fetch_sub_explicit(&hw->st_open, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&hw->st_up_open, 1, memory_order_relaxed);
    set_state(s, SS_DONE);
    end_hooks(s);
    sl__session_release(hw, s);
}

/* 101 went to the client: both connections become one byte pipe, with their own idle
 * timeout instead of the HTTP ones. The session ends (logging) when the pipe does. */
static void start_tunnel(sl_session_t *s)
{
    char *lead_down = NULL, *lead_up = NULL;
    size_t n_down = 0, n_up = 0;
    sl_down_t *d = s->down;
    if (!d->ops->take_stream || !s->up->ops->take_stream) { /* not over HTTP/2 */
        abort_session(s, SL_EINTERNAL);
        return;
    }
    sl_stream_t *cs = d->ops->take_stream(d, &lead_down, &n_down);
    sl_stream_t *us = s->up->ops->take_stream(s->up, &lead_up, &n_up);
    set_state(s, SS_TUNNEL);
    d->session = NULL;
    s->down = NULL;
    s->up = NULL;
    sl_http_worker_t *hw = s->hw;
    s->tunnel_next = hw->tunnels;
    if (hw->tunnels)
        hw->tunnels->tunnel_prev = s;
    hw->tunnels = s;
    s->pipe = sl__pipe_start(cs, us, lead_down, n_down, lead_up, n_up,
                             s->peer.options.tunnel_idle_timeout_ms, on_tunnel_done, s);
}

void sl__session_close_tunnels(sl_http_worker_t *hw)
{
    for (sl_session_t *s = hw->tunnels; s; s = s->tunnel_next)
        if (s->pipe)
            sl__pipe_close(s->pipe, SL_ESHUTDOWN);
}

/* ---- answering locally --------------------------------------------------------------------- */

sl_response_header_t *sl_session_response_new(sl_session_t *s, int status)
{
    sl_response_header_t *r = sl_arena_alloc(&s->arena, sizeof(*r));
    memset(r, 0, sizeof(*r));
    r->status = status;
    r->version = 11;
    r->headers.arena = &s->arena;
    return r;
}

int sl_session_respond_header(sl_session_t *s, sl_response_header_t *r, const void *body,
                              size_t len)
{
    if (!s->down)
        return SL_EDOWNSTREAM_CLOSED; /* detached: the client is gone */
    if (s->resp_header_sent || s->state == SS_RESPONDING || s->state == SS_DONE)
        return SL_EINTERNAL;
    s->head_pending = false;
    if (s->up) {
        s->up->ops->release(s->up, false);
        s->up = NULL;
    }
    strip_hop_by_hop(r);
    bool nobody = s->head || r->status == 204 || r->status == 304 || r->status < 200;
    if (!nobody || s->head) {
        char cl[24];
        snprintf(cl, sizeof(cl), "%zu", len);
        sl_headers_set(&r->headers, "Content-Length", cl);
    }
    /* Framed like an upstream response of known length. */
    s->resp_body_up = len && !nobody ? BODY_LENGTH : BODY_NONE;
    s->resp_content_length = len;
    s->resp = r;
    s->status = r->status;
    s->down->ops->response_head(s, r);
    uv_buf_t piece;
    unsigned k = 0;
    if (len && !nobody) {
        /* The caller's memory may be on its stack: the arena copy outlives the write. */
        piece = uv_buf_init(sl_arena_strndup(&s->arena, body, len), (unsigned)len);
        k = 1;
        s->body_bytes_sent = len;
    }
    set_state(s, SS_RESPONDING);
    s->resp_done = true;
    int rc = s->down->ops->response_write(s, &piece, k, true, WTAG_NONE);
    if (rc) {
        s->resp_done = false;
        set_state(s, SS_RESPONSE_BODY);
        abort_session(s, rc);
        return rc;
    }
    return 0;
}

int sl_session_respond(sl_session_t *s, int status, const char *content_type, const void *body,
                       size_t len)
{
    sl_response_header_t *r = sl_session_response_new(s, status);
    if (content_type)
        sl_headers_add(&r->headers, "Content-Type", content_type);
    return sl_session_respond_header(s, r, body, len);
}

int sl_session_respond_error(sl_session_t *s, int status, const char *message)
{
    const char *ctype;
    size_t len;
    const char *body =
        sl__error_body(&s->arena, s->error_format ? s->error_format : s->svc->opts.error_format,
                       status, message, &ctype, &len);
    sl_response_header_t *r = sl_session_response_new(s, status);
    sl_headers_add(&r->headers, "Content-Type", ctype);
    sl_headers_add(&r->headers, "Cache-Control", "private, no-store");
    return sl_session_respond_header(s, r, body, len);
}

/* ---- accessors ------------------------------------------------------------------------------- */

void *sl_session_app(sl_session_t *s)
{
    return s->svc->app;
}

sl_arena_t *sl_session_arena(sl_session_t *s)
{
    return &s->arena;
}

sl_request_header_t *sl_session_req(sl_session_t *s)
{
    return &s->req;
}

const sl_response_header_t *sl_session_resp(const sl_session_t *s)
{
    return s->resp;
}

const struct sockaddr *sl_session_client_addr(const sl_session_t *s)
{
    return (const struct sockaddr *)&s->client_addr;
}

const char *sl_session_client_ip(sl_session_t *s)
{
    if (!s->client_ip[0]) {
        const struct sockaddr *a = sl_session_client_addr(s);
        if (a->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)a)->sin_addr, s->client_ip,
                      sizeof(s->client_ip));
        else if (a->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)a)->sin6_addr, s->client_ip,
                      sizeof(s->client_ip));
        else
            snprintf(s->client_ip, sizeof(s->client_ip), "unix");
    }
    return s->client_ip;
}

const sl_str_t *sl_session_req_header(sl_session_t *s, const char *name)
{
    return sl_headers_get(&s->req.headers, name);
}

bool sl_session_is_tls(const sl_session_t *s)
{
    return s->down && s->down->stream && sl_stream_is_tls(s->down->stream);
}

const sl_stream_t *sl_session_stream(const sl_session_t *s)
{
    return s->down ? s->down->stream : NULL;
}

sl_worker_t *sl_session_worker(sl_session_t *s)
{
    return s->hw->worker;
}

int sl_session_error(sl_session_t *s, const char *reason)
{
    s->error_reason = reason;
    return SL_ECUSTOM;
}

const char *sl_session_error_reason(const sl_session_t *s)
{
    return s->error_reason;
}

int sl_session_error_status(const sl_session_t *s, int err)
{
    return sl_error_http_status(err);
}

void sl_session_set_retry(sl_session_t *s, bool retry)
{
    s->retry = retry;
}

int sl_session_retries(const sl_session_t *s)
{
    return s->retries;
}

int sl_session_status(const sl_session_t *s)
{
    return s->status;
}

bool sl_session_upstream_reused(const sl_session_t *s)
{
    return s->reused;
}

uint64_t sl_session_body_bytes_sent(const sl_session_t *s)
{
    return s->body_bytes_sent;
}

void sl_session_set_error_format(sl_session_t *s, const char *format)
{
    s->error_format = format;
}

uint64_t sl_session_elapsed_ns(const sl_session_t *s)
{
    return uv_hrtime() - s->start_ns;
}

uint64_t sl_session_connect_ns(const sl_session_t *s)
{
    return s->connect_ns;
}

uint64_t sl_session_duration_ms(const sl_session_t *s)
{
    return uv_now(s->hw->loop) - s->start_ms;
}

const sl_peer_t *sl_session_peer(const sl_session_t *s)
{
    return s->have_peer ? &s->peer : NULL;
}
