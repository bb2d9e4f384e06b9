/* The upstream side of HTTP/2 (RFC 9113) on nghttp2: h2 by ALPN over TLS, h2c by prior
 * knowledge. Each request is one stream (an sl_up_t) of a connection shared by many sessions.
 *
 * Connections live per worker in a list keyed like the HTTP/1.1 pool (address, TLS context,
 * SNI, verification). A session that needs one takes a stream on a ready connection with a
 * free slot (the server's SETTINGS_MAX_CONCURRENT_STREAMS), or waits for a connection being
 * dialled, or dials a new one; when every connection of its key is full, it waits for a slot.
 * Dialling reuses the HTTP/1.1 side's connect and TLS code; ALPN then decides. An upstream
 * asked for h2 that answers http/1.1 fails with SL_EUPSTREAM_NO_H2, unless HTTP/1.1 was
 * allowed (SL_ALPN_H2H1): then the key is remembered as HTTP/1.1 for a while.
 *
 * Response body DATA is copied into the stream's buffer (bounded by the window we give) and
 * handed to the session; the window opens again when the client side has taken those bytes. */
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "http/h2_common.h"
#include "http/proxy_impl.h"
#include "io/tls.h"
#include "util/mem.h"
#include "util/timeout.h"

#define SL_LOG_TAG "h2-upstream"
#include "sluice/log.h"

#define H2U_MAX_CONNS_PER_KEY 8
#define H2U_H1_MEMORY_MS      60000 /* how long "this upstream speaks HTTP/1.1" is remembered */
#define H2U_MAX_HEADER_BYTES  (64 * 1024)
#define H2U_MAX_HEADERS       256

typedef enum { H2U_CONNECTING, H2U_READY, H2U_DRAINING, H2U_H1_ONLY } h2u_state_t;

typedef struct h2u_conn h2u_conn_t;
typedef struct h2u_stream h2u_stream_t;

struct h2u_conn {
    h2_io_t io; /* first: nghttp2's user_data (io.stream is NULL while dialling) */
    sl_http_worker_t *hw;
    h2u_conn_t *prev, *next; /* hw->h2up */
    h2u_state_t state;
    sl_pool_key_t key;
    sl_peer_t peer; /* for dialling, and :scheme */
    uint64_t h1_until;
    h1_up_t *dial;
    h2u_stream_t *streams;
    uint32_t n_streams;
    sl_session_t *wait_head, *wait_tail; /* sessions waiting for a stream */
    size_t n_wait;
    sl_timeout_t tmo; /* idle */
    uint64_t idle_timeout_ms;
};

struct h2u_stream {
    sl_up_t base;
    h2u_conn_t *c;
    h2u_stream_t *prev, *next;
    h2_sout_t out;    /* the request body */
    sl_timeout_t tmo; /* read timeout */
    uint64_t read_timeout_ms;
    /* response */
    int status;
    size_t hdr_bytes;
    uint32_t n_hdrs;
    h2_sin_t in; /* the response body */
    bool hold, final_seen, end_recv, end_delivered, head_request;
    bool has_provider;
    bool ng_closed, session_gone;
};

static void conn_close(h2u_conn_t *c, int err);
static void serve_waiters(h2u_conn_t *c);
static const sl_up_ops_t h2_up_ops;

/* ---- streams ------------------------------------------------------------------------------ */

static h2u_stream_t *stream_new(h2u_conn_t *c, sl_session_t *s)
{
    h2u_stream_t *st = sl_xcalloc(1, sizeof(*st));
    st->base.ops = &h2_up_ops;
    st->base.session = s;
    st->base.stream = c->io.stream;
    st->c = c;
    st->out.io = &c->io;
    st->hold = true;
    st->next = c->streams;
    if (c->streams)
        c->streams->prev = st;
    c->streams = st;
    c->n_streams++;
    sl_timeout_stop(&c->tmo);
    return st;
}

static void on_conn_idle(sl_timeout_t *t)
{
    h2u_conn_t *c = sl_container_of(t, h2u_conn_t, tmo);
    if (c->state == H2U_H1_ONLY || (!c->n_streams && !c->n_wait)) {
        SL_DEBUG("idle HTTP/2 upstream connection closed");
        conn_close(c, 0);
    }
}

static void stream_maybe_free(h2u_stream_t *st)
{
    if (!st->session_gone || st->out.pins || (!st->ng_closed && st->out.id && !st->c->io.closing))
        return;
    h2u_conn_t *c = st->c;
    if (st->prev)
        st->prev->next = st->next;
    else
        c->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    sl_timeout_stop(&st->tmo);
    sl__iobuf_put(c->hw, &st->in.in);
    h2_sout_free(&st->out);
    free(st);
    c->n_streams--;
    if (c->io.closing)
        return;
    serve_waiters(c);
    if (!c->n_streams && !c->n_wait) {
        if (!c->idle_timeout_ms || c->hw->shutting_down || c->state == H2U_DRAINING)
            conn_close(c, 0);
        else
            sl_timeout_start(c->hw->loop, &c->tmo, c->idle_timeout_ms, on_conn_idle);
    }
}

static void on_read_timeout(sl_timeout_t *t)
{
    h2u_stream_t *st = sl_container_of(t, h2u_stream_t, tmo);
    if (st->base.session && !st->session_gone)
        sl__session_on_up_error(st->base.session, SL_ETIMEDOUT_READ);
}

static void arm_read(h2u_stream_t *st)
{
    if (st->read_timeout_ms && !st->end_recv)
        sl_timeout_start(st->c->hw->loop, &st->tmo, st->read_timeout_ms, on_read_timeout);
}

/* Delivered body bytes no write points to any more: open the windows again. */
static void stream_consume(h2u_stream_t *st)
{
    h2u_conn_t *c = st->c;
    if (h2_sin_consume(&st->in, c->io.closing ? NULL : c->io.ng, st->out.id, st->ng_closed)) {
        st->out.pins++;      /* the flush may close the stream: the caller frees it */
        h2_io_flush(&c->io); /* WINDOW_UPDATE */
        st->out.pins--;
    }
}

static void stream_deliver(h2u_stream_t *st)
{
    sl_session_t *s = st->base.session;
    if (!s || st->session_gone || st->hold || !st->final_seen)
        return;
    size_t n = st->in.in.len - st->in.delivered;
    bool end = st->end_recv && !st->end_delivered;
    if (!n && !end)
        return;
    uv_buf_t piece = uv_buf_init(st->in.in.data + st->in.delivered, (unsigned)n);
    st->in.delivered = st->in.in.len;
    if (end) {
        st->end_delivered = true;
        sl_timeout_stop(&st->tmo);
    }
    st->out.pins++;
    sl__session_on_response_body(s, &piece, n ? 1 : 0, end);
    st->out.pins--;
    stream_consume(st);
    stream_maybe_free(st);
}

/* ---- the connection core's events -------------------------------------------------------- */

static void io_framed(h2_io_t *io, h2_sout_t *so, int tag)
{
    h2u_stream_t *st = sl_container_of(so, h2u_stream_t, out);
    sl_session_t *s = st->base.session;
    if (s && !st->session_gone)
        sl__session_on_up_write_done(s, 0, tag);
    so->pins--;
    stream_maybe_free(st);
}

static void io_failed(h2_io_t *io, int err)
{
    SL_WARN("HTTP/2 upstream connection failed: %s", sl_strerror(err));
    conn_close((h2u_conn_t *)io, err);
}

static void io_finished(h2_io_t *io)
{
    conn_close((h2u_conn_t *)io, 0);
}

static const h2_io_ops_t up_io_ops = {
    .framed = io_framed,
    .failed = io_failed,
    .finished = io_finished,
};

/* ---- nghttp2 callbacks -------------------------------------------------------------------- */

static h2u_stream_t *stream_of(nghttp2_session *ng, int32_t id)
{
    return nghttp2_session_get_stream_user_data(ng, id);
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    h2u_stream_t *st = stream_of(ng, f->hd.stream_id);
    if (!st || st->session_gone || !st->base.session || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    sl_session_t *s = st->base.session;
    st->base.got_bytes = true;
    if (st->final_seen) { /* trailers */
        sl_headers_t *t = &s->up_trailers;
        if (!t->arena)
            t->arena = &s->arena;
        if (t->n < 64 && namelen + valuelen < 8192)
            sl_headers_add_n(t, sl_arena_strndup(&s->arena, (const char *)name, namelen), namelen,
                             sl_arena_strndup(&s->arena, (const char *)value, valuelen), valuelen);
        return 0;
    }
    st->hdr_bytes += namelen + valuelen + 32;
    if (st->hdr_bytes > H2U_MAX_HEADER_BYTES || ++st->n_hdrs > H2U_MAX_HEADERS)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST_STREAM; the close reports it */
    if (namelen == 7 && !memcmp(name, ":status", 7)) {
        int code = 0;
        for (size_t i = 0; i < valuelen && i < 3; i++)
            code = code * 10 + (value[i] - '0');
        st->status = code;
        return 0;
    }
    if (namelen && name[0] == ':')
        return 0;
    sl_response_header_t *r = &s->up_resp;
    if (!r->headers.arena)
        r->headers.arena = &s->arena;
    sl_headers_add_n(&r->headers, sl_arena_strndup(&s->arena, (const char *)name, namelen), namelen,
                     sl_arena_strndup(&s->arena, (const char *)value, valuelen), valuelen);
    return 0;
}

/* The final response header arrived: the session runs its filters. */
static void response_ready(h2u_stream_t *st, bool end_stream)
{
    sl_session_t *s = st->base.session;
    sl_response_header_t *r = &s->up_resp;
    r->status = st->status;
    r->version = 20;
    r->reason = (sl_str_t){NULL, 0};
    if (!r->headers.arena)
        r->headers.arena = &s->arena;
    const sl_str_t *cl = sl_headers_get(&r->headers, "content-length");
    uint64_t n = 0;
    bool ok = cl && cl->len && cl->len < 20;
    for (size_t i = 0; ok && i < cl->len; i++) {
        ok = cl->ptr[i] >= '0' && cl->ptr[i] <= '9';
        n = n * 10 + (uint64_t)(cl->ptr[i] - '0');
    }
    if (end_stream || st->head_request || r->status == 204 || r->status == 304)
        s->resp_body_up = BODY_NONE;
    else if (ok)
        s->resp_body_up = n ? BODY_LENGTH : BODY_NONE;
    else
        s->resp_body_up = BODY_CHUNKED; /* a body of unknown length */
    s->resp_content_length = n;
    st->hold = true;
    st->out.pins++;
    sl__session_on_response_header(s);
    st->out.pins--;
    stream_maybe_free(st);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    h2u_conn_t *c = ud;
    if (f->hd.type == NGHTTP2_GOAWAY) {
        /* No new streams here; those above last_stream_id are closed by nghttp2 (refused). */
        if (c->state == H2U_READY)
            c->state = H2U_DRAINING;
        SL_DEBUG("upstream GOAWAY (%s, last stream %d)",
                 nghttp2_http2_strerror(f->goaway.error_code), f->goaway.last_stream_id);
        return 0;
    }
    if (f->hd.type == NGHTTP2_SETTINGS && !(f->hd.flags & NGHTTP2_FLAG_ACK)) {
        serve_waiters(c); /* the stream limit may have grown */
        return 0;
    }
    h2u_stream_t *st = f->hd.stream_id ? stream_of(ng, f->hd.stream_id) : NULL;
    if (!st || st->session_gone || !st->base.session)
        return 0;
    bool end = f->hd.flags & NGHTTP2_FLAG_END_STREAM;
    arm_read(st);
    if (f->hd.type == NGHTTP2_HEADERS) {
        if (!st->final_seen) {
            if (st->status >= 100 && st->status < 200) {
                /* 1xx: not forwarded; its fields are dropped, the final response follows */
                sl_headers_t *h = &st->base.session->up_resp.headers;
                h->n = 0;
                st->hdr_bytes = st->n_hdrs = 0;
                return 0;
            }
            st->final_seen = true;
            if (end)
                st->end_recv = true;
            response_ready(st, end);
            return 0;
        }
        if (end) { /* trailers */
            st->end_recv = true;
            stream_deliver(st);
        }
    } else if (f->hd.type == NGHTTP2_DATA && end) {
        st->end_recv = true;
        stream_deliver(st);
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    h2u_conn_t *c = ud;
    h2u_stream_t *st = stream_of(ng, id);
    if (!st || st->session_gone || !st->base.session) {
        nghttp2_session_consume(ng, id, len);
        return 0;
    }
    if (h2_sin_append(&st->in, data, len, c->hw->svc->opts.h2_initial_window_size) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* over its window: reset */
    arm_read(st);
    if (!(flags & NGHTTP2_FLAG_END_STREAM))
        stream_deliver(st);
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *ud)
{
    h2u_stream_t *st = stream_of(ng, id);
    if (!st)
        return 0;
    st->ng_closed = true;
    sl_timeout_stop(&st->tmo);
    h2_sin_drop(&st->in, ng);
    sl_session_t *s = st->base.session;
    if (s && !st->session_gone && !(st->end_recv && error_code == NGHTTP2_NO_ERROR)) {
        SL_DEBUG("upstream stream %d closed: %s", id, nghttp2_http2_strerror(error_code));
        /* Refused or reset before any answer: safe to retry elsewhere (nothing happened). */
        st->out.pins++;
        sl__session_on_up_error(s, !st->base.got_bytes || error_code == NGHTTP2_REFUSED_STREAM
                                       ? SL_EUPSTREAM_CLOSED
                                       : SL_EH2);
        st->out.pins--;
    }
    stream_maybe_free(st);
    return 0;
}

static nghttp2_session_callbacks *callbacks(void)
{
    static nghttp2_session_callbacks *cbs;
    if (!cbs) {
        nghttp2_session_callbacks_new(&cbs);
        nghttp2_session_callbacks_set_send_callback(cbs, h2_io_on_send);
        nghttp2_session_callbacks_set_send_data_callback(cbs, h2_io_on_send_data);
        nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    }
    return cbs;
}

/* ---- connection I/O ----------------------------------------------------------------------- */

static void on_alloc(sl_stream_t *stream, size_t suggested, uv_buf_t *buf)
{
    h2u_conn_t *c = sl_stream_data(stream);
    if (!c->hw->h2_rbuf)
        c->hw->h2_rbuf = sl_xmalloc(64 * 1024);
    *buf = uv_buf_init(c->hw->h2_rbuf, 64 * 1024);
}

static void on_read(sl_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    h2u_conn_t *c = sl_stream_data(stream);
    if (!c || c->io.closing)
        return;
    if (nread < 0) {
        conn_close(c, nread == UV_EOF ? SL_EUPSTREAM_CLOSED : (int)nread);
        return;
    }
    ssize_t rv = h2_io_input(&c->io, buf->base, (size_t)nread);
    if (rv < 0) {
        SL_WARN("HTTP/2 upstream protocol error: %s", nghttp2_strerror((int)rv));
        nghttp2_session_terminate_session(c->io.ng, NGHTTP2_PROTOCOL_ERROR);
    }
    h2_io_flush(&c->io);
}

/* ---- connections ------------------------------------------------------------------------------
 */

static void free_conn(void *arg)
{
    h2u_conn_t *c = arg;
    h2_out_free(&c->io.out);
    free(c);
}

static void fail_waiters(h2u_conn_t *c, int err)
{
    while (c->wait_head) {
        sl_session_t *s = c->wait_head;
        c->wait_head = s->h2_wait_next;
        c->n_wait--;
        s->h2_wait = NULL;
        s->h2_wait_next = NULL;
        sl__session_on_connected(s, NULL, err);
    }
    c->wait_tail = NULL;
}

static void conn_unlink(h2u_conn_t *c)
{
    sl_http_worker_t *hw = c->hw;
    if (c->prev)
        c->prev->next = c->next;
    else
        hw->h2up = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void conn_close(h2u_conn_t *c, int err)
{
    if (c->io.closing)
        return;
    c->io.closing = true;
    sl_http_worker_t *hw = c->hw;
    conn_unlink(c);
    sl_timeout_stop(&c->tmo);
    if (c->dial) {
        sl__up_dial_cancel(c->dial);
        c->dial = NULL;
    }
    /* Sessions still on a stream hear of it; then the streams go. */
    for (h2u_stream_t *st = c->streams; st; st = st->next) {
        sl_session_t *s = st->base.session;
        if (s && !st->session_gone) {
            st->out.pins++;
            sl__session_on_up_error(s, err ? err : SL_EUPSTREAM_CLOSED);
            st->out.pins--;
        }
    }
    while (c->streams) {
        h2u_stream_t *st = c->streams;
        c->streams = st->next;
        sl_timeout_stop(&st->tmo);
        /* A session still holding it (a hook pending) keeps a dead stream: detach it. */
        if (st->base.session && !st->session_gone)
            st->base.session->up = NULL;
        sl__iobuf_put(hw, &st->in.in);
        h2_sout_free(&st->out);
        free(st);
    }
    c->n_streams = 0;
    fail_waiters(c, err ? err : SL_EUPSTREAM_CLOSED);
    h2_io_release(&c->io);
    if (c->io.stream)
        atomic_fetch_sub_explicit(&hw->st_up_open, 1, memory_order_relaxed);
    h2_io_close_socket(&c->io, false, free_conn, c);
}

static uint32_t max_streams(h2u_conn_t *c)
{
    uint32_t m =
        nghttp2_session_get_remote_settings(c->io.ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    return m ? m : 1;
}

static bool has_slot(h2u_conn_t *c)
{
    return c->state == H2U_READY && c->n_streams < max_streams(c) &&
           nghttp2_session_check_request_allowed(c->io.ng);
}

/* Gives waiting sessions a stream while there are free slots. */
static void serve_waiters(h2u_conn_t *c)
{
    while (c->wait_head && has_slot(c) && !c->io.closing) {
        sl_session_t *s = c->wait_head;
        c->wait_head = s->h2_wait_next;
        if (!c->wait_head)
            c->wait_tail = NULL;
        c->n_wait--;
        s->h2_wait = NULL;
        s->h2_wait_next = NULL;
        h2u_stream_t *st = stream_new(c, s);
        sl__session_on_connected(s, &st->base, 0);
    }
}

static void enqueue_wait(h2u_conn_t *c, sl_session_t *s)
{
    s->connect_start_ns = uv_hrtime();
    s->h2_wait = c;
    s->h2_wait_next = NULL;
    if (c->wait_tail)
        c->wait_tail->h2_wait_next = s;
    else
        c->wait_head = s;
    c->wait_tail = s;
    c->n_wait++;
}

void sl__h2_up_unwait(sl_session_t *s)
{
    h2u_conn_t *c = s->h2_wait;
    if (!c)
        return;
    sl_session_t **pp = &c->wait_head, *prev = NULL;
    while (*pp && *pp != s) {
        prev = *pp;
        pp = &(*pp)->h2_wait_next;
    }
    if (*pp) {
        *pp = s->h2_wait_next;
        if (c->wait_tail == s)
            c->wait_tail = prev;
        c->n_wait--;
    }
    s->h2_wait = NULL;
    s->h2_wait_next = NULL;
}

static void on_dialed(void *arg, h1_up_t *u, int err)
{
    h2u_conn_t *c = arg;
    c->dial = NULL;
    if (err) {
        const char *why = sl__up_dial_reason(); /* a CONNECT proxy's refusal, say */
        for (sl_session_t *s = why ? c->wait_head : NULL; s; s = s->h2_wait_next)
            sl__up_set_reason(s, why);
        fail_waiters(c, err);
        conn_close(c, err);
        return;
    }
    sl_stream_t *stream = u->base.stream;
    const char *alpn = sl_stream_alpn(stream);
    bool tls = c->peer.tls;
    if (tls && !(alpn && !strcmp(alpn, "h2"))) {
        char addr[300];
        sl_peer_addr_str(&c->peer, addr, sizeof(addr));
        if (c->peer.options.alpn == SL_ALPN_H2H1) {
            /* Falls back: this and later requests of the key use HTTP/1.1 for a while. */
            SL_INFO("upstream %s chose %s over h2; using HTTP/1.1", addr, alpn ? alpn : "no ALPN");
            c->state = H2U_H1_ONLY;
            c->h1_until = uv_now(c->hw->loop) + H2U_H1_MEMORY_MS;
            /* The first waiter takes this connection; the others dial HTTP/1.1 themselves. */
            sl_session_t *first = c->wait_head;
            if (first) {
                c->wait_head = first->h2_wait_next;
                c->n_wait--;
                first->h2_wait = NULL;
                first->h2_wait_next = NULL;
                u->base.session = first;
                first->up = &u->base;
                sl__session_on_connected(first, &u->base, 0);
            } else {
                sl__up_dial_cancel(u);
            }
            while (c->wait_head) {
                sl_session_t *s = c->wait_head;
                c->wait_head = s->h2_wait_next;
                c->n_wait--;
                s->h2_wait = NULL;
                s->h2_wait_next = NULL;
                sl__up_connect(s);
            }
            c->wait_tail = NULL;
            sl_timeout_start(c->hw->loop, &c->tmo, H2U_H1_MEMORY_MS, on_conn_idle);
            return;
        }
        SL_WARN("upstream %s (%s) did not agree to HTTP/2 (ALPN: %s)", addr,
                c->peer.sni[0] ? c->peer.sni : "no SNI", alpn ? alpn : "none");
        sl__up_dial_cancel(u);
        fail_waiters(c, SL_EUPSTREAM_NO_H2);
        conn_close(c, SL_EUPSTREAM_NO_H2);
        return;
    }
    c->io.stream = sl__up_take_stream(u);
    sl_stream_set_data(c->io.stream, c);
    const sl_http_options_t *o = &c->hw->svc->opts;
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_peer_max_concurrent_streams(opt, 100);
    nghttp2_session_client_new2(&c->io.ng, callbacks(), c, opt);
    nghttp2_option_del(opt);
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, o->h2_initial_window_size},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H2U_MAX_HEADER_BYTES},
    };
    nghttp2_submit_settings(c->io.ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    uint32_t conn_window = o->h2_initial_window_size * 16;
    nghttp2_session_set_local_window_size(
        c->io.ng, NGHTTP2_FLAG_NONE, 0,
        (int32_t)(conn_window > (1u << 30) ? 1u << 30 : conn_window));
    c->state = H2U_READY;
    sl_stream_read_start(c->io.stream, on_alloc, on_read);
    serve_waiters(c);
    h2_io_flush(&c->io);
}

/* Count of connections (any state but HTTP/1.1 memory) for a key. */
static size_t key_conns(sl_http_worker_t *hw, const sl_pool_key_t *k)
{
    size_t n = 0;
    for (h2u_conn_t *c = hw->h2up; c; c = c->next)
        if (c->state != H2U_H1_ONLY && c->state != H2U_DRAINING && sl__pool_key_eq(&c->key, k))
            n++;
    return n;
}

int sl__h2_up_attach(sl_session_t *s)
{
    sl_http_worker_t *hw = s->hw;
    sl_pool_key_t k;
    sl__pool_key(&k, &s->peer, s->tls_ctx);
    h2u_conn_t *connecting = NULL, *busiest = NULL;
    uint64_t now = uv_now(hw->loop);
    for (h2u_conn_t *c = hw->h2up; c; c = c->next) {
        if (!sl__pool_key_eq(&c->key, &k))
            continue;
        if (c->state == H2U_H1_ONLY) {
            if (now < c->h1_until)
                return 1; /* this upstream speaks HTTP/1.1 */
            continue;
        }
        if (c->state == H2U_READY && has_slot(c)) {
            h2u_stream_t *st = stream_new(c, s);
            s->up = &st->base;
            s->reused = true;
            return 0;
        }
        if (c->state == H2U_CONNECTING && c->n_wait < 100 && !connecting)
            connecting = c;
        if (c->state == H2U_READY && (!busiest || c->n_wait < busiest->n_wait))
            busiest = c;
    }
    if (connecting) {
        enqueue_wait(connecting, s);
        return SL_PENDING;
    }
    if (busiest && key_conns(hw, &k) >= H2U_MAX_CONNS_PER_KEY) {
        enqueue_wait(busiest, s); /* every connection is full: wait for a slot */
        return SL_PENDING;
    }
    h2u_conn_t *c = sl_xcalloc(1, sizeof(*c));
    c->io.ops = &up_io_ops;
    c->io.worker = hw->worker;
    c->hw = hw;
    c->key = k;
    c->peer = s->peer;
    c->idle_timeout_ms = s->peer.options.idle_timeout_ms;
    c->state = H2U_CONNECTING;
    c->next = hw->h2up;
    if (hw->h2up)
        hw->h2up->prev = c;
    hw->h2up = c;
    enqueue_wait(c, s);
    int rc = sl__up_dial(hw, &c->peer, s->tls_ctx, on_dialed, c, &c->dial);
    if (rc) {
        sl__h2_up_unwait(s);
        conn_close(c, rc);
        return rc;
    }
    return SL_PENDING;
}

void sl__h2_up_close_all(sl_http_worker_t *hw)
{
    while (hw->h2up)
        conn_close(hw->h2up, SL_ESHUTDOWN);
}

/* ---- the upstream side of a session (sl_up_ops_t) ----------------------------------------- */

static h2u_stream_t *st_of(sl_up_t *u)
{
    return sl_container_of(u, h2u_stream_t, base);
}

static int h2_request_head(sl_session_t *s)
{
    h2u_stream_t *st = st_of(s->up);
    h2u_conn_t *c = st->c;
    if (c->io.closing || !c->io.ng)
        return SL_EUPSTREAM_CLOSED;
    sl_request_header_t *r = &s->up_req;
    r->version = 20;
    const sl_str_t *host = sl_headers_get(&r->headers, "host");
    char addr[300];
    sl_str_t authority;
    if (host) {
        authority = *host;
    } else {
        sl_peer_addr_str(&c->peer, addr, sizeof(addr));
        authority = (sl_str_t){c->peer.sni[0] ? c->peer.sni : addr,
                               strlen(c->peer.sni[0] ? c->peer.sni : addr)};
    }
    nghttp2_nv *nv = sl_arena_alloc(&s->arena, (r->headers.n + 6) * sizeof(*nv));
    size_t k = 0;
    const char *scheme = c->peer.tls ? "https" : "http";
    nv[k++] = (nghttp2_nv){(uint8_t *)":method", (uint8_t *)r->method.ptr, 7, r->method.len, 0};
    nv[k++] = (nghttp2_nv){(uint8_t *)":scheme", (uint8_t *)scheme, 7, strlen(scheme), 0};
    nv[k++] = (nghttp2_nv){(uint8_t *)":authority", (uint8_t *)authority.ptr, 10, authority.len, 0};
    nv[k++] = (nghttp2_nv){(uint8_t *)":path", (uint8_t *)r->uri.ptr, 5, r->uri.len, 0};
    k += h2_nv_from_headers(&s->arena, &r->headers, nv + k, true);
    /* te: trailers is how gRPC clients say they understand trailers; it goes on. */
    const sl_str_t *te = sl_headers_get(&s->req.headers, "te");
    if (te && sl__str_has_token(*te, SL_STR("trailers")))
        nv[k++] = (nghttp2_nv){(uint8_t *)"te", (uint8_t *)"trailers", 2, 8, 0};
    st->head_request = s->head;
    st->read_timeout_ms = s->peer.options.read_timeout_ms;
    bool body = s->req_body != BODY_NONE || !s->req_body_done;
    nghttp2_data_provider prd = h2_sout_provider(&st->out);
    int32_t id = nghttp2_submit_request(c->io.ng, NULL, nv, k, body ? &prd : NULL, st);
    if (id < 0) {
        SL_WARN("HTTP/2 upstream request: %s", nghttp2_strerror(id));
        return SL_EUPSTREAM_CLOSED;
    }
    st->out.id = id;
    st->has_provider = body;
    if (!body)
        st->out.end = true;
    arm_read(st);
    h2_io_flush(&c->io);
    return 0;
}

static int h2_request_write(sl_session_t *s, const uv_buf_t *body, unsigned n, bool end, int tag)
{
    h2u_stream_t *st = st_of(s->up);
    h2u_conn_t *c = st->c;
    if (c->io.closing || st->ng_closed)
        return SL_EUPSTREAM_CLOSED;
    if (!st->has_provider) {
        /* The request went without a body (END_STREAM on its HEADERS). */
        h2_io_done(&c->io, &st->out, tag);
        h2_io_flush(&c->io);
        return 0;
    }
    if (end && s->req_trailers.n)
        h2_trailers_copy(&st->out.trailers, &s->req_trailers);
    h2_sout_push(&st->out, body, n, tag, end);
    return 0;
}

static void h2_resume_reading(sl_up_t *u)
{
    h2u_stream_t *st = st_of(u);
    st->hold = false;
    st->out.pins++;
    stream_deliver(st);
    sl_session_t *s = st->base.session;
    if (s && !st->session_gone)
        sl__session_flush_head(s);
    st->out.pins--;
    stream_maybe_free(st);
}

static void h2_release(sl_up_t *u, bool reusable)
{
    h2u_stream_t *st = st_of(u);
    h2u_conn_t *c = st->c;
    st->session_gone = true;
    st->base.session = NULL;
    h2_sout_cut(&st->out);
    st->in.delivered = st->in.in.len;
    if (!c->io.closing && st->out.id && !st->ng_closed && !(st->end_recv && st->out.end))
        nghttp2_submit_rst_stream(c->io.ng, NGHTTP2_FLAG_NONE, st->out.id, NGHTTP2_CANCEL);
    st->out.pins++; /* the flush may close the stream (our RST_STREAM) */
    stream_consume(st);
    if (!c->io.closing)
        h2_io_flush(&c->io);
    st->out.pins--;
    stream_maybe_free(st);
}

static bool h2_owns(sl_up_t *u, const void *ptr)
{
    h2u_stream_t *st = st_of(u);
    const char *p = ptr;
    return h2_sin_owns(&st->in, p);
}

static void h2_hold(sl_up_t *u)
{
    st_of(u)->in.in.refs++;
}

static void h2_unhold(sl_up_t *u)
{
    h2u_stream_t *st = st_of(u);
    if (--st->in.in.refs == 0) {
        st->out.pins++;
        stream_consume(st);
        st->out.pins--;
        stream_maybe_free(st);
    }
}

static const sl_up_ops_t h2_up_ops = {
    .request_head = h2_request_head,
    .request_write = h2_request_write,
    .resume_reading = h2_resume_reading,
    .release = h2_release,
    .owns = h2_owns,
    .hold = h2_hold,
    .unhold = h2_unhold,
};

void sl__h2_up_init(void)
{
    callbacks();
}
