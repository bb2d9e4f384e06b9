/* The downstream (client) side of HTTP/2 (RFC 9113) on nghttp2: each stream is one
 * session's client side (sl_down_t), so the hooks and the upstream side do not know which
 * protocol the client spoke.
 *
 * Input: bytes read go straight through nghttp2_session_mem_recv from a per-worker buffer
 * (nothing is kept per connection). Request body DATA is copied into the stream's buffer and
 * handed to the session; the flow-control window opens again only when the upstream has taken
 * those bytes (no automatic WINDOW_UPDATE), so a slow upstream slows the client down instead of
 * filling memory.
 *
 * Output: frames are produced into the connection's output buffer (one socket write in flight
 * at a time); response body pieces wait in the stream's queue, pointing into the upstream's
 * buffer, and are copied into frames as the client's windows allow. A write batch of the session
 * completes when its last byte has been framed.
 *
 * Protection: limits on concurrent streams, header list size and count, CONTINUATION frames
 * (nghttp2), and a rate limit on streams the client resets (CVE-2023-44487) that ends the
 * connection with GOAWAY while the process keeps serving the others. */
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "http/h2_common.h"
#include "http/proxy_impl.h"
#include "util/mem.h"
#include "util/timeout.h"

#define SL_LOG_TAG "h2"
#include "sluice/log.h"

#define H2_READ_PAUSE (512 * 1024) /* stop reading while this much output waits */
#define H2_RBUF_SIZE  (64 * 1024)

enum { CT_NONE, CT_PREFACE, CT_IDLE, CT_GOAWAY };

typedef struct h2_conn h2_conn_t;
typedef struct h2_stream h2_stream_t;

struct h2_conn {
    h2_io_t io; /* first: nghttp2's user_data */
    sl_http_worker_t *hw;
    h2_conn_t *prev, *next; /* hw->h2conns */
    h2_stream_t *streams;   /* every live stream (ours to free) */
    sl_timeout_t tmo;
    int timer_mode;
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } peer;
    uint32_t open_streams;
    bool reading, read_paused;
    bool goaway; /* no new streams: shutting down or idle */
    bool peer_eof;
};

struct h2_stream {
    sl_down_t base;
    h2_conn_t *c;
    h2_stream_t *prev, *next;
    h2_sout_t out;    /* the response body */
    sl_timeout_t tmo; /* request body reads */
    h2_sin_t in;      /* the request body */
    size_t hdr_bytes;
    uint32_t n_hdrs;
    char *authority;
    size_t authority_len;
    bool too_large, bad;
    bool body_hold, recv_end, end_delivered;
    bool resp_submitted;
    bool ng_closed, session_gone;
};

static void conn_close(h2_conn_t *c, int err);
static void on_alloc(sl_stream_t *stream, size_t suggested, uv_buf_t *buf);
static void on_read(sl_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void stream_maybe_free(h2_stream_t *st);
static const sl_down_ops_t h2_down_ops;

/* ---- timers ------------------------------------------------------------------------------- */

static void on_conn_timer(sl_timeout_t *t)
{
    h2_conn_t *c = sl_container_of(t, h2_conn_t, tmo);
    switch (c->timer_mode) {
    case CT_PREFACE:
        SL_DEBUG("no HTTP/2 preface in time");
        conn_close(c, SL_EHEADER_READ_TIMEOUT);
        break;
    case CT_IDLE:
        SL_DEBUG("HTTP/2 connection idle: GOAWAY");
        c->goaway = true;
        nghttp2_submit_goaway(c->io.ng, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(c->io.ng), NGHTTP2_NO_ERROR,
                              NULL, 0);
        c->timer_mode = CT_GOAWAY;
        sl_timeout_start(c->hw->loop, &c->tmo, 2000, on_conn_timer);
        h2_io_flush(&c->io);
        break;
    case CT_GOAWAY: /* the client did not close after our GOAWAY */
        conn_close(c, 0);
        break;
    default:
        break;
    }
}

static void conn_arm(h2_conn_t *c, int mode, uint64_t ms)
{
    c->timer_mode = ms ? mode : CT_NONE;
    sl_timeout_start(c->hw->loop, &c->tmo, ms, on_conn_timer);
}

static void on_stream_timer(sl_timeout_t *t)
{
    h2_stream_t *st = sl_container_of(t, h2_stream_t, tmo);
    if (st->base.session)
        sl__session_on_down_error(st->base.session, SL_EBODY_READ_TIMEOUT);
}

/* ---- streams ------------------------------------------------------------------------------ */

static h2_stream_t *stream_new(h2_conn_t *c, int32_t id)
{
    h2_stream_t *st = sl_xcalloc(1, sizeof(*st));
    st->base.ops = &h2_down_ops;
    st->base.hw = c->hw;
    st->base.stream = c->io.stream;
    st->c = c;
    st->out.io = &c->io;
    st->out.id = id;
    st->body_hold = true;
    st->next = c->streams;
    if (c->streams)
        c->streams->prev = st;
    c->streams = st;
    c->open_streams++;
    if (c->timer_mode == CT_IDLE || c->timer_mode == CT_PREFACE)
        conn_arm(c, CT_NONE, 0);
    return st;
}

/* Frees a stream once nghttp2, the session and pending completions are all done with it. */
static void stream_maybe_free(h2_stream_t *st)
{
    if (!st->ng_closed || !st->session_gone || st->out.pins)
        return;
    h2_conn_t *c = st->c;
    if (st->prev)
        st->prev->next = st->next;
    else
        c->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    sl_timeout_stop(&st->tmo);
    sl__iobuf_put(c->hw, &st->in.in);
    h2_sout_free(&st->out);
    free(st->authority);
    free(st);
    if (--c->open_streams == 0 && !c->io.closing && !c->goaway)
        conn_arm(c, CT_IDLE, c->hw->svc->opts.keepalive_timeout_ms);
}

/* Tells nghttp2 the delivered body bytes are consumed (that opens the windows again) and drops
 * them from the buffer; only when no write points into it. */
static void stream_consume(h2_stream_t *st)
{
    h2_conn_t *c = st->c;
    if (h2_sin_consume(&st->in, c->io.closing ? NULL : c->io.ng, st->out.id, st->ng_closed)) {
        st->out.pins++;      /* the flush may close the stream: the caller frees it */
        h2_io_flush(&c->io); /* WINDOW_UPDATE */
        st->out.pins--;
    }
}

/* Hands buffered body bytes (and the end) to the session when it wants them. */
static void stream_deliver(h2_stream_t *st)
{
    sl_session_t *s = st->base.session;
    if (!s || st->body_hold)
        return;
    size_t n = st->in.in.len - st->in.delivered;
    bool end = st->recv_end && !st->end_delivered;
    if (!n && !end)
        return;
    uv_buf_t piece = uv_buf_init(st->in.in.data + st->in.delivered, (unsigned)n);
    st->in.delivered = st->in.in.len;
    if (end) {
        st->end_delivered = true;
        sl_timeout_stop(&st->tmo);
    } else if (st->c->hw->svc->opts.body_timeout_ms) {
        sl_timeout_start(st->c->hw->loop, &st->tmo, st->c->hw->svc->opts.body_timeout_ms,
                         on_stream_timer);
    }
    st->out.pins++; /* the session may end inside */
    sl__session_on_request_body(s, &piece, n ? 1 : 0, end);
    st->out.pins--;
    stream_consume(st);
    stream_maybe_free(st);
}

/* ---- request headers ---------------------------------------------------------------------- */

static h2_stream_t *stream_of(nghttp2_session *ng, int32_t id)
{
    return nghttp2_session_get_stream_user_data(ng, id);
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    h2_conn_t *c = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    if (c->goaway || c->hw->shutting_down) {
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    h2_stream_t *st = stream_new(c, f->hd.stream_id);
    nghttp2_session_set_stream_user_data(ng, f->hd.stream_id, st);
    sl_session_t *s = sl__session_new(&st->base);
    s->req.version = 20;
    s->req.headers.arena = &s->arena;
    return 0;
}

static sl_str_t arena_str(sl_session_t *s, const uint8_t *p, size_t n)
{
    return (sl_str_t){sl_arena_strndup(&s->arena, (const char *)p, n), n};
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    h2_conn_t *c = ud;
    h2_stream_t *st = stream_of(ng, f->hd.stream_id);
    if (!st || !st->base.session || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    sl_session_t *s = st->base.session;
    const sl_http_options_t *o = &c->hw->svc->opts;
    if (f->headers.cat == NGHTTP2_HCAT_HEADERS) { /* trailers */
        sl_headers_t *t = &s->req_trailers;
        if (!t->arena)
            t->arena = &s->arena;
        if (t->n < 64 && namelen + valuelen < 8192)
            sl_headers_add_n(t, sl_arena_strndup(&s->arena, (const char *)name, namelen), namelen,
                             sl_arena_strndup(&s->arena, (const char *)value, valuelen), valuelen);
        return 0;
    }
    st->hdr_bytes += namelen + valuelen + 32;
    if (st->too_large || st->hdr_bytes > o->max_header_size + o->max_request_line ||
        ++st->n_hdrs > o->max_headers + 4) {
        st->too_large = true;
        return 0;
    }
    sl_request_header_t *r = &s->req;
    if (namelen && name[0] == ':') {
        if (namelen == 7 && !memcmp(name, ":method", 7)) {
            r->method = arena_str(s, value, valuelen);
        } else if (namelen == 5 && !memcmp(name, ":path", 5)) {
            if (valuelen > o->max_request_line) {
                st->too_large = true;
                return 0;
            }
            r->uri = arena_str(s, value, valuelen);
        } else if (namelen == 10 && !memcmp(name, ":authority", 10)) {
            free(st->authority);
            st->authority = sl_xstrndup((const char *)value, valuelen);
            st->authority_len = valuelen;
        }
        /* :scheme is the client's business; :protocol is not enabled */
        return 0;
    }
    if (namelen == 6 && !memcmp(name, "cookie", 6)) {
        /* RFC 9113 8.2.3: crumbs are joined for HTTP/1.1 upstreams */
        const sl_str_t *prev = sl_headers_get(&r->headers, "cookie");
        if (prev) {
            char *j = sl_arena_printf(&s->arena, "%.*s; %.*s", (int)prev->len, prev->ptr,
                                      (int)valuelen, (const char *)value);
            sl_headers_set(&r->headers, "cookie", j);
            return 0;
        }
    }
    sl_headers_add_n(&r->headers, sl_arena_strndup(&s->arena, (const char *)name, namelen), namelen,
                     sl_arena_strndup(&s->arena, (const char *)value, valuelen), valuelen);
    return 0;
}

/* The request header block is complete: frame the body and start the session. */
static void request_ready(h2_stream_t *st, bool end_stream)
{
    sl_session_t *s = st->base.session;
    sl_request_header_t *r = &s->req;
    if (st->authority) {
        sl_headers_set_n(&r->headers, "Host", 4,
                         sl_arena_strndup(&s->arena, st->authority, st->authority_len),
                         st->authority_len);
    }
    s->head = sl_str_eq(r->method, SL_STR("HEAD"));
    if (end_stream) {
        st->recv_end = true;
        s->req_body = BODY_NONE;
        s->req_body_done = true;
    } else {
        const sl_str_t *cl = sl_headers_get(&r->headers, "content-length");
        uint64_t n = 0;
        bool ok = cl && cl->len && cl->len < 20;
        for (size_t i = 0; ok && i < cl->len; i++) {
            ok = cl->ptr[i] >= '0' && cl->ptr[i] <= '9';
            n = n * 10 + (uint64_t)(cl->ptr[i] - '0');
        }
        if (ok && n) {
            s->req_body = BODY_LENGTH;
            s->req_content_length = n;
        } else {
            s->req_body = BODY_CHUNKED; /* a body of unknown length */
        }
        s->expect_continue = sl_headers_has_token(&r->headers, "expect", "100-continue");
        uint64_t bt = st->c->hw->svc->opts.body_timeout_ms;
        if (bt)
            sl_timeout_start(st->c->hw->loop, &st->tmo, bt, on_stream_timer);
    }
    st->out.pins++;
    if (st->too_large)
        sl__session_fail_request(s, SL_EHEADER_TOO_LARGE);
    else if (!r->method.len || !r->uri.len)
        sl__session_fail_request(s, SL_EPARSE);
    else
        sl__session_begin(s);
    st->out.pins--;
    stream_maybe_free(st);
}

/* ---- frames received ---------------------------------------------------------------------- */

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    h2_conn_t *c = ud;
    if (c->timer_mode == CT_PREFACE)
        conn_arm(c, c->open_streams ? CT_NONE : CT_IDLE,
                 c->open_streams ? 0 : c->hw->svc->opts.keepalive_timeout_ms);
    h2_stream_t *st = f->hd.stream_id ? stream_of(ng, f->hd.stream_id) : NULL;
    if (!st)
        return 0;
    bool end = f->hd.flags & NGHTTP2_FLAG_END_STREAM;
    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        if (f->headers.cat == NGHTTP2_HCAT_REQUEST) {
            if (st->base.session)
                request_ready(st, end);
        } else if (end) { /* trailers end the body */
            st->recv_end = true;
            stream_deliver(st);
        }
        break;
    case NGHTTP2_DATA:
        if (end) {
            st->recv_end = true;
            stream_deliver(st);
        }
        break;
    default:
        break;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    h2_conn_t *c = ud;
    h2_stream_t *st = stream_of(ng, id);
    if (!st || st->session_gone || !st->base.session) {
        nghttp2_session_consume(ng, id, len); /* nobody wants it: open the windows again */
        return 0;
    }
    /* Sized by the window (the client cannot send more before we consume), or by the declared
     * length when smaller. */
    size_t cap = c->hw->svc->opts.h2_initial_window_size;
    sl_session_t *s = st->base.session;
    if (s->req_body == BODY_LENGTH && s->req_content_length < cap)
        cap = s->req_content_length;
    if (h2_sin_append(&st->in, data, len, cap) != 0) {
        SL_WARN("HTTP/2 client overran its flow-control window on stream %d", id);
        nghttp2_session_consume(ng, id, len);
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_FLOW_CONTROL_ERROR);
        return 0;
    }
    if (!(flags & NGHTTP2_FLAG_END_STREAM))
        stream_deliver(st);
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *ud)
{
    h2_conn_t *c = ud;
    h2_stream_t *st = stream_of(ng, id);
    if (!st)
        return 0;
    st->ng_closed = true;
    sl_timeout_stop(&st->tmo);
    h2_sin_drop(&st->in, ng); /* never delivered: give the connection window back */
    sl_session_t *s = st->base.session;
    if (s && !st->session_gone && (error_code != NGHTTP2_NO_ERROR || !st->out.all_framed)) {
        SL_DEBUG("stream %d closed by the client (%s)", id, nghttp2_http2_strerror(error_code));
        st->out.pins++;
        sl__session_on_down_error(s, SL_EDOWNSTREAM_CLOSED);
        st->out.pins--;
    }
    (void)c;
    stream_maybe_free(st);
    return 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    h2_conn_t *c = ud;
    if (f->hd.type == NGHTTP2_GOAWAY && f->goaway.error_code != NGHTTP2_NO_ERROR) {
        char addr[64] = "?";
        struct sockaddr_storage ss;
        memcpy(&ss, &c->peer, sizeof(c->peer));
        sl_sockaddr_str(&ss, addr, sizeof(addr));
        SL_WARN("HTTP/2 client %s: connection ended with GOAWAY %s", addr,
                nghttp2_http2_strerror(f->goaway.error_code));
    }
    return 0;
}

static int on_invalid_frame(nghttp2_session *ng, const nghttp2_frame *f, int lib_error, void *ud)
{
    SL_DEBUG("invalid HTTP/2 frame (type %d, stream %d): %s", f->hd.type, f->hd.stream_id,
             nghttp2_strerror(lib_error));
    return 0;
}

/* ---- the client side of a session (sl_down_ops_t) ----------------------------------------- */

static h2_stream_t *st_of(sl_down_t *d)
{
    return sl_container_of(d, h2_stream_t, base);
}

static void h2_response_head(sl_session_t *s, sl_response_header_t *r)
{
    s->resp_body_down = s->head || s->resp_body_up == BODY_NONE ? BODY_NONE : BODY_LENGTH;
    r->version = 20;
    s->head_pending = true;
}

/* The response header as HTTP/2 fields. */
static nghttp2_nv *response_nv(sl_session_t *s, const sl_response_header_t *r, size_t *n)
{
    nghttp2_nv *nv = sl_arena_alloc(&s->arena, (r->headers.n + 1) * sizeof(*nv));
    char *status = sl_arena_alloc(&s->arena, 4);
    int code = r->status >= 100 && r->status <= 999 ? r->status : 500;
    snprintf(status, 4, "%03d", code);
    nv[0] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status, 7, 3, NGHTTP2_NV_FLAG_NONE};
    *n = 1 + h2_nv_from_headers(&s->arena, &r->headers, nv + 1, false);
    return nv;
}

static int h2_response_write(sl_session_t *s, const uv_buf_t *body, unsigned n, bool end, int tag)
{
    h2_stream_t *st = st_of(s->down);
    h2_conn_t *c = st->c;
    if (c->io.closing || st->ng_closed)
        return UV_ECANCELED;
    bool has_body = s->resp_body_down != BODY_NONE;
    size_t bytes = 0;
    for (unsigned i = 0; has_body && i < n; i++)
        bytes += body[i].len;
    if (end && s->up_trailers.n && has_body)
        h2_trailers_copy(&st->out.trailers, &s->up_trailers);
    if (s->head_pending) {
        s->head_pending = false;
        s->resp_header_sent = true;
        size_t nvlen;
        nghttp2_nv *nv = response_nv(s, s->resp, &nvlen);
        if (end && !bytes && !st->out.trailers.n) {
            /* The whole response is this HEADERS frame (END_STREAM). */
            int rv = nghttp2_submit_response(c->io.ng, st->out.id, nv, nvlen, NULL);
            if (rv)
                return UV_ECANCELED;
            st->out.end = st->out.all_framed = true;
            st->base.write_pending++;
            h2_io_done(&c->io, &st->out, tag);
            h2_io_flush(&c->io);
            return 0;
        }
        nghttp2_data_provider prd = h2_sout_provider(&st->out);
        if (nghttp2_submit_response(c->io.ng, st->out.id, nv, nvlen, &prd))
            return UV_ECANCELED;
        st->resp_submitted = true;
    }
    s->body_bytes_sent += bytes;
    st->base.write_pending++;
    h2_sout_push(&st->out, body, has_body ? n : 0, tag, end);
    return 0;
}

static int h2_send_continue(sl_session_t *s)
{
    h2_stream_t *st = st_of(s->down);
    if (st->c->io.closing || st->ng_closed)
        return UV_ECANCELED;
    static const nghttp2_nv cont[] = {
        {(uint8_t *)":status", (uint8_t *)"100", 7, 3, NGHTTP2_NV_FLAG_NONE}};
    int rv =
        nghttp2_submit_headers(st->c->io.ng, NGHTTP2_FLAG_NONE, st->out.id, NULL, cont, 1, NULL);
    h2_io_flush(&st->c->io);
    return rv < 0 ? UV_ECANCELED : 0;
}

static void h2_resume_body(sl_down_t *d)
{
    h2_stream_t *st = st_of(d);
    st->body_hold = false;
    stream_deliver(st);
}

static bool h2_body_buffered(sl_down_t *d)
{
    h2_stream_t *st = st_of(d);
    return st->in.in.len > st->in.delivered;
}

static bool h2_owns(sl_down_t *d, const void *ptr)
{
    h2_stream_t *st = st_of(d);
    const char *p = ptr;
    return h2_sin_owns(&st->in, p);
}

static void h2_hold(sl_down_t *d)
{
    st_of(d)->in.in.refs++;
}

static void h2_unhold(sl_down_t *d)
{
    h2_stream_t *st = st_of(d);
    if (--st->in.in.refs == 0) {
        st->out.pins++;
        stream_consume(st);
        stream_deliver(st);
        st->out.pins--;
        stream_maybe_free(st);
    }
}

/* The session ended (normally, or cut): the stream lives on until nghttp2 closes it. */
static void stream_detach(h2_stream_t *st, bool cut)
{
    h2_conn_t *c = st->c;
    st->session_gone = true;
    st->base.session = NULL;
    st->body_hold = true;
    sl_timeout_stop(&st->tmo);
    if (cut)
        h2_sout_cut(&st->out);
    /* Body the session never took: consumed, so the windows do not shrink for nothing. */
    st->in.delivered = st->in.in.len;
    if (!c->io.closing && !st->ng_closed) {
        if (cut)
            nghttp2_submit_rst_stream(c->io.ng, NGHTTP2_FLAG_NONE, st->out.id,
                                      NGHTTP2_INTERNAL_ERROR);
        else if (!st->recv_end) /* the response is complete: stop the upload (RFC 9113 8.1) */
            nghttp2_submit_rst_stream(c->io.ng, NGHTTP2_FLAG_NONE, st->out.id, NGHTTP2_NO_ERROR);
    }
    st->out.pins++; /* the flush may close the stream (our RST_STREAM) */
    stream_consume(st);
    h2_io_flush(&c->io);
    st->out.pins--;
    stream_maybe_free(st);
}

static void h2_session_done(sl_down_t *d)
{
    h2_stream_t *st = st_of(d);
    sl_session_t *s = st->base.session;
    st->base.session = NULL;
    sl__session_release(st->c->hw, s);
    stream_detach(st, false);
}

static void h2_abort(sl_down_t *d)
{
    stream_detach(st_of(d), true);
}

static const struct sockaddr *h2_peer_addr(const sl_down_t *d)
{
    return &sl_container_of(d, const h2_stream_t, base)->c->peer.sa;
}

static const sl_down_ops_t h2_down_ops = {
    .response_head = h2_response_head,
    .response_write = h2_response_write,
    .send_continue = h2_send_continue,
    .resume_body = h2_resume_body,
    .body_buffered = h2_body_buffered,
    .owns = h2_owns,
    .hold = h2_hold,
    .unhold = h2_unhold,
    .session_done = h2_session_done,
    .abort = h2_abort,
    .peer_addr = h2_peer_addr,
};

/* ---- the connection core's events -------------------------------------------------------- */

static void io_framed(h2_io_t *io, h2_sout_t *so, int tag)
{
    h2_stream_t *st = sl_container_of(so, h2_stream_t, out);
    st->base.write_pending--;
    sl_session_t *s = st->base.session;
    if (s && !st->session_gone)
        sl__session_on_down_write_done(s, 0, tag);
    so->pins--;
    stream_maybe_free(st);
}

static void io_failed(h2_io_t *io, int err)
{
    SL_DEBUG("HTTP/2 client connection failed: %s", sl_strerror(err));
    conn_close((h2_conn_t *)io, err);
}

static void io_finished(h2_io_t *io)
{
    conn_close((h2_conn_t *)io, 0);
}

static void io_written(h2_io_t *io)
{
    h2_conn_t *c = (h2_conn_t *)io;
    if (c->read_paused && c->io.out.len < H2_READ_PAUSE && !c->peer_eof) {
        c->read_paused = false;
        c->reading = true;
        sl_stream_read_start(c->io.stream, on_alloc, on_read);
    }
}

static const h2_io_ops_t down_io_ops = {
    .framed = io_framed,
    .failed = io_failed,
    .finished = io_finished,
    .written = io_written,
};

/* ---- reading ------------------------------------------------------------------------------ */

static void on_alloc(sl_stream_t *stream, size_t suggested, uv_buf_t *buf)
{
    h2_conn_t *c = sl_stream_data(stream);
    if (!c->hw->h2_rbuf)
        c->hw->h2_rbuf = sl_xmalloc(H2_RBUF_SIZE);
    *buf = uv_buf_init(c->hw->h2_rbuf, H2_RBUF_SIZE);
}

static void conn_input(h2_conn_t *c, const char *data, size_t len)
{
    ssize_t rv = h2_io_input(&c->io, data, len);
    if (rv < 0) {
        SL_DEBUG("HTTP/2 client error: %s", nghttp2_strerror((int)rv));
        if (rv == NGHTTP2_ERR_BAD_CLIENT_MAGIC) {
            conn_close(c, SL_EPARSE);
            return;
        }
        /* nghttp2 queued a GOAWAY for protocol errors: send it, then close. */
        nghttp2_session_terminate_session(c->io.ng, NGHTTP2_PROTOCOL_ERROR);
    }
    h2_io_flush(&c->io);
    if (!c->io.closing && c->reading &&
        c->io.out.len + (c->io.out.writing ? c->io.out.fly_len : 0) > H2_READ_PAUSE) {
        sl_stream_read_stop(c->io.stream); /* the client does not read what it asked for */
        c->reading = false;
        c->read_paused = true;
    }
}

static void on_read(sl_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    h2_conn_t *c = sl_stream_data(stream);
    if (c->io.closing)
        return;
    if (nread < 0) {
        c->peer_eof = true;
        c->reading = false;
        sl_stream_read_stop(stream);
        conn_close(c, nread == UV_EOF ? SL_EDOWNSTREAM_CLOSED : (int)nread);
        return;
    }
    conn_input(c, buf->base, (size_t)nread);
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

static void free_conn(void *arg)
{
    h2_conn_t *c = arg;
    h2_out_free(&c->io.out);
    free(c);
}

static void conn_close(h2_conn_t *c, int err)
{
    if (c->io.closing)
        return;
    c->io.closing = true;
    sl_http_worker_t *hw = c->hw;
    atomic_fetch_sub_explicit(&hw->st_open, 1, memory_order_relaxed);
    if (c->prev)
        c->prev->next = c->next;
    else
        hw->h2conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    sl_timeout_stop(&c->tmo);
    /* Sessions still running end here (a pending hook keeps its session until it resumes). */
    while (c->streams) {
        h2_stream_t *st = c->streams;
        c->streams = st->next;
        sl_session_t *s = st->base.session;
        st->base.session = NULL;
        if (s) {
            if (!s->error)
                s->error = err ? err : SL_EDOWNSTREAM_CLOSED;
            sl__session_release(hw, s);
        }
        sl_timeout_stop(&st->tmo);
        sl__iobuf_put(hw, &st->in.in);
        h2_sout_free(&st->out);
        free(st->authority);
        free(st);
    }
    h2_io_release(&c->io);
    h2_io_close_socket(&c->io, !err && !c->peer_eof, free_conn, c);
}

static nghttp2_session_callbacks *callbacks(void)
{
    static nghttp2_session_callbacks *cbs;
    if (!cbs) { /* set up once per process, before workers share it (read-only after) */
        nghttp2_session_callbacks_new(&cbs);
        nghttp2_session_callbacks_set_send_callback(cbs, h2_io_on_send);
        nghttp2_session_callbacks_set_send_data_callback(cbs, h2_io_on_send_data);
        nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
        nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
        nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
        nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, on_invalid_frame);
    }
    return cbs;
}

void sl__h2_init(void)
{
    callbacks();
}

static h2_conn_t *conn_new(sl_http_worker_t *hw, sl_stream_t *stream, const struct sockaddr *peer)
{
    const sl_http_options_t *o = &hw->svc->opts;
    h2_conn_t *c = sl_xcalloc(1, sizeof(*c));
    c->io.ops = &down_io_ops;
    c->io.stream = stream;
    c->io.worker = hw->worker;
    c->hw = hw;
    if (peer && peer->sa_family == AF_INET)
        memcpy(&c->peer, peer, sizeof(struct sockaddr_in));
    else if (peer && peer->sa_family == AF_INET6)
        memcpy(&c->peer, peer, sizeof(struct sockaddr_in6));
    else if (peer)
        c->peer.sa.sa_family = peer->sa_family;
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_send_header_block_length(opt, 256 * 1024);
    /* Rapid reset (CVE-2023-44487): a client that keeps resetting streams gets GOAWAY. */
    nghttp2_option_set_stream_reset_rate_limit(opt, 200, 50);
    nghttp2_option_set_max_continuations(opt, 8);
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    nghttp2_option_set_max_settings(opt, 32);
    nghttp2_session_server_new2(&c->io.ng, callbacks(), c, opt);
    nghttp2_option_del(opt);
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, o->h2_max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, o->h2_initial_window_size},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
         (uint32_t)(o->max_header_size + o->max_request_line + 32 * (o->max_headers + 4))},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    nghttp2_submit_settings(c->io.ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    /* The connection window covers several streams' windows. */
    uint32_t conn_window = o->h2_initial_window_size * 16;
    if (conn_window > (1u << 30))
        conn_window = 1u << 30;
    nghttp2_session_set_local_window_size(c->io.ng, NGHTTP2_FLAG_NONE, 0, (int32_t)conn_window);
    c->next = hw->h2conns;
    if (hw->h2conns)
        hw->h2conns->prev = c;
    hw->h2conns = c;
    sl_stream_set_data(stream, c);
    sl_stream_set_nodelay(stream, true);
    conn_arm(c, CT_PREFACE, o->header_timeout_ms);
    return c;
}

static void conn_go(h2_conn_t *c, const char *pre, size_t pre_len)
{
    if (c->hw->shutting_down) {
        c->goaway = true;
        nghttp2_submit_goaway(c->io.ng, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
    }
    if (sl_stream_read_start(c->io.stream, on_alloc, on_read) == 0)
        c->reading = true;
    if (pre_len)
        conn_input(c, pre, pre_len);
    else
        h2_io_flush(&c->io);
}

void sl__h2_down_new(sl_http_service_t *svc, sl_stream_t *stream)
{
    sl_http_worker_t *hw = sl__http_worker(svc, sl_stream_worker(stream));
    atomic_fetch_add_explicit(&hw->st_accepted, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&hw->st_open, 1, memory_order_relaxed);
    struct sockaddr_storage peer;
    memset(&peer, 0, sizeof(peer));
    sl_stream_peer_addr(stream, &peer);
    h2_conn_t *c = conn_new(hw, stream, (const struct sockaddr *)&peer);
    conn_go(c, NULL, 0);
}

void sl__h2_down_takeover(sl_http_worker_t *hw, sl_stream_t *stream, const struct sockaddr *peer,
                          const char *pre, size_t pre_len)
{
    sl_stream_read_stop(stream);
    h2_conn_t *c = conn_new(hw, stream, peer);
    conn_go(c, pre, pre_len);
}

/* base64url (RFC 4648 §5), padding optional: for HTTP2-Settings. */
static int b64url_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *out_len)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = in[i];
        int v = ch >= 'A' && ch <= 'Z'   ? ch - 'A'
                : ch >= 'a' && ch <= 'z' ? ch - 'a' + 26
                : ch >= '0' && ch <= '9' ? ch - '0' + 52
                : ch == '-' || ch == '+' ? 62
                : ch == '_' || ch == '/' ? 63
                : ch == '='              ? -2
                                         : -1;
        if (v == -2)
            break;
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (k == cap)
                return -1;
            out[k++] = (uint8_t)(acc >> bits);
        }
    }
    *out_len = k;
    return 0;
}

int sl__h2_down_upgrade(sl_http_worker_t *hw, sl_stream_t *stream, const struct sockaddr *peer,
                        sl_str_t settings, const sl_request_header_t *req, const char *rest,
                        size_t rest_len)
{
    uint8_t payload[256];
    size_t plen;
    if (b64url_decode(settings.ptr, settings.len, payload, sizeof(payload), &plen) || plen % 6)
        return SL_EPARSE;
    static const char switching[] =
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
    uv_buf_t b = uv_buf_init((char *)switching, sizeof(switching) - 1);
    if (sl_stream_write(stream, &b, 1, NULL, NULL) != 0)
        return SL_EDOWNSTREAM_CLOSED;
    sl_stream_read_stop(stream);
    h2_conn_t *c = conn_new(hw, stream, peer);
    bool head = sl_str_eq(req->method, SL_STR("HEAD"));
    if (nghttp2_session_upgrade2(c->io.ng, payload, plen, head, NULL) != 0) {
        conn_close(c, SL_EPARSE);
        return 0;
    }
    /* Stream 1 is the request that asked for the upgrade (half-closed: it had no body). */
    h2_stream_t *st = stream_new(c, 1);
    nghttp2_session_set_stream_user_data(c->io.ng, 1, st);
    sl_session_t *s = sl__session_new(&st->base);
    sl_request_header_t *r = &s->req;
    r->version = 20;
    r->method =
        (sl_str_t){sl_arena_strndup(&s->arena, req->method.ptr, req->method.len), req->method.len};
    r->uri = (sl_str_t){sl_arena_strndup(&s->arena, req->uri.ptr, req->uri.len), req->uri.len};
    r->headers.arena = &s->arena;
    for (size_t i = 0; i < req->headers.n; i++) {
        const sl_header_t *h = &req->headers.items[i];
        if (sl_str_ieq_cstr(h->name, "http2-settings"))
            continue;
        sl_headers_add_n(&r->headers, sl_arena_strndup(&s->arena, h->name.ptr, h->name.len),
                         h->name.len, sl_arena_strndup(&s->arena, h->value.ptr, h->value.len),
                         h->value.len);
    }
    if (hw->shutting_down)
        c->goaway = true;
    if (sl_stream_read_start(c->io.stream, on_alloc, on_read) == 0)
        c->reading = true;
    request_ready(st, true);
    if (!c->io.closing && rest_len)
        conn_input(c, rest, rest_len);
    else
        h2_io_flush(&c->io);
    return 0;
}

/* Graceful shutdown: GOAWAY to every connection (streams in flight finish); expired: close. */
void sl__h2_down_shutdown_all(sl_http_worker_t *hw, bool expired)
{
    h2_conn_t *c = hw->h2conns;
    while (c) {
        h2_conn_t *next = c->next;
        if (expired) {
            conn_close(c, SL_EDOWNSTREAM_CLOSED);
        } else if (!c->goaway) {
            c->goaway = true;
            nghttp2_submit_goaway(c->io.ng, NGHTTP2_FLAG_NONE,
                                  nghttp2_session_get_last_proc_stream_id(c->io.ng),
                                  NGHTTP2_NO_ERROR, NULL, 0);
            h2_io_flush(&c->io);
        }
        c = next;
    }
}

/* Does the buffer start like the HTTP/2 client preface? 1: all of it, 0: so far, -1: no. */
int sl__h2_preface_match(const char *p, size_t n)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    size_t m = n < sizeof(preface) - 1 ? n : sizeof(preface) - 1;
    if (memcmp(p, preface, m) != 0)
        return -1;
    return m == sizeof(preface) - 1 ? 1 : 0;
}
