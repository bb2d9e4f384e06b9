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

typedef struct h2u_done {
    h2u_stream_t *st;
    int tag;
} h2u_done_t;

struct h2u_conn {
    sl_http_worker_t *hw;
    h2u_conn_t *prev, *next; /* hw->h2up */
    h2u_state_t state;
    sl_pool_key_t key;
    sl_peer_t peer; /* for dialling, and :scheme */
    uint64_t h1_until;
    h1_up_t *dial;
    sl_stream_t *stream;
    nghttp2_session *ng;
    h2_out_t out;
    h2u_done_t *done;
    size_t n_done, cap_done;
    h2u_stream_t *streams;
    uint32_t n_streams;
    sl_session_t *wait_head, *wait_tail; /* sessions waiting for a stream */
    size_t n_wait;
    sl_timeout_t tmo; /* idle */
    uint64_t idle_timeout_ms;
    int in_ng;
    bool flushing, want_flush, flush_scheduled, closing;
};

struct h2u_stream {
    sl_up_t base;
    h2u_conn_t *c;
    h2u_stream_t *prev, *next;
    int32_t id;
    sl_timeout_t tmo; /* read timeout */
    uint64_t read_timeout_ms;
    /* response */
    int status;
    size_t hdr_bytes;
    uint32_t n_hdrs;
    sl_iobuf_t in;
    size_t delivered;
    bool hold, final_seen, end_recv, end_delivered, head_request;
    /* request body */
    h2_queue_t q;
    h2_trailers_t trailers;
    bool has_provider, req_end, deferred;
    int pins;
    bool ng_closed, session_gone;
};

static void conn_flush(h2u_conn_t *c);
static void conn_close(h2u_conn_t *c, int err);
static void serve_waiters(h2u_conn_t *c);
static const sl_up_ops_t h2_up_ops;

/* ---- streams ------------------------------------------------------------------------------ */

static h2u_stream_t *stream_new(h2u_conn_t *c, sl_session_t *s)
{
    h2u_stream_t *st = sl_xcalloc(1, sizeof(*st));
    st->base.ops = &h2_up_ops;
    st->base.session = s;
    st->base.stream = c->stream;
    st->c = c;
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
    if (!st->session_gone || st->pins || (!st->ng_closed && st->id && !st->c->closing))
        return;
    h2u_conn_t *c = st->c;
    if (st->prev)
        st->prev->next = st->next;
    else
        c->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    sl_timeout_stop(&st->tmo);
    sl__iobuf_put(c->hw, &st->in);
    h2_queue_free(&st->q);
    h2_trailers_free(&st->trailers);
    free(st);
    c->n_streams--;
    if (c->closing)
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
    if (st->in.refs || !st->delivered)
        return;
    h2u_conn_t *c = st->c;
    if (!c->closing) {
        if (st->ng_closed || !st->id)
            nghttp2_session_consume_connection(c->ng, st->delivered);
        else
            nghttp2_session_consume(c->ng, st->id, st->delivered);
    }
    memmove(st->in.data, st->in.data + st->delivered, st->in.len - st->delivered);
    st->in.len -= st->delivered;
    st->delivered = 0;
    st->pins++; /* the flush may close the stream: the caller frees it */
    conn_flush(c);
    st->pins--;
}

static void stream_deliver(h2u_stream_t *st)
{
    sl_session_t *s = st->base.session;
    if (!s || st->session_gone || st->hold || !st->final_seen)
        return;
    size_t n = st->in.len - st->delivered;
    bool end = st->end_recv && !st->end_delivered;
    if (!n && !end)
        return;
    uv_buf_t piece = uv_buf_init(st->in.data + st->delivered, (unsigned)n);
    st->delivered = st->in.len;
    if (end) {
        st->end_delivered = true;
        sl_timeout_stop(&st->tmo);
    }
    st->pins++;
    sl__session_on_response_body(s, &piece, n ? 1 : 0, end);
    st->pins--;
    stream_consume(st);
    stream_maybe_free(st);
}

/* ---- completions -------------------------------------------------------------------------- */

static void record_done(h2u_conn_t *c, h2u_stream_t *st, int tag)
{
    if (c->n_done == c->cap_done) {
        c->cap_done = c->cap_done ? c->cap_done * 2 : 16;
        c->done = sl_xrealloc(c->done, c->cap_done * sizeof(*c->done));
    }
    c->done[c->n_done++] = (h2u_done_t){st, tag};
    st->pins++;
}

static void batch_done(void *arg, int tag)
{
    h2u_stream_t *st = arg;
    record_done(st->c, st, tag);
}

static void dispatch_done(h2u_conn_t *c)
{
    while (c->n_done && !c->closing) {
        h2u_done_t *list = c->done;
        size_t n = c->n_done, cap = c->cap_done;
        c->done = NULL;
        c->n_done = c->cap_done = 0;
        for (size_t i = 0; i < n && !c->closing; i++) {
            h2u_stream_t *st = list[i].st;
            sl_session_t *s = st->base.session;
            if (s && !st->session_gone)
                sl__session_on_up_write_done(s, 0, list[i].tag);
            st->pins--;
            stream_maybe_free(st);
        }
        if (!c->done) {
            c->done = list;
            c->cap_done = cap;
        } else {
            free(list);
        }
    }
}

/* ---- nghttp2 callbacks -------------------------------------------------------------------- */

static h2u_stream_t *stream_of(nghttp2_session *ng, int32_t id)
{
    return nghttp2_session_get_stream_user_data(ng, id);
}

static ssize_t on_send(nghttp2_session *ng, const uint8_t *data, size_t len, int flags, void *ud)
{
    h2u_conn_t *c = ud;
    if (h2_out_full(&c->out))
        return NGHTTP2_ERR_WOULDBLOCK;
    h2_out_put(&c->out, data, len);
    return (ssize_t)len;
}

static int on_send_data(nghttp2_session *ng, nghttp2_frame *f, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *src, void *ud)
{
    h2u_conn_t *c = ud;
    h2u_stream_t *st = src->ptr;
    if (h2_out_full(&c->out))
        return NGHTTP2_ERR_WOULDBLOCK;
    h2_out_put(&c->out, framehd, 9);
    h2_queue_take(&st->q, &c->out, length, batch_done, st);
    return 0;
}

static void set_end(nghttp2_session *ng, h2u_stream_t *st, uint32_t *flags)
{
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (st->trailers.n) {
        *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        nghttp2_submit_trailer(ng, st->id, st->trailers.nv, st->trailers.n);
    }
}

static ssize_t data_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    h2u_stream_t *st = src->ptr;
    if (st->session_gone && !st->req_end)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    h2_queue_pop_markers(&st->q, batch_done, st);
    if (!st->q.bytes) {
        if (st->req_end) {
            set_end(ng, st, flags);
            return 0;
        }
        st->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = st->q.bytes < length ? st->q.bytes : length;
    *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (n == st->q.bytes && st->req_end)
        set_end(ng, st, flags);
    return (ssize_t)n;
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
    st->pins++;
    sl__session_on_response_header(s);
    st->pins--;
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
    if (!st->in.data) {
        size_t cap = c->hw->svc->opts.h2_initial_window_size;
        if (cap < len)
            cap = len;
        st->in.data = sl_xmalloc(cap);
        st->in.cap = cap;
    }
    if (st->in.len + len > st->in.cap) {
        if (st->in.refs)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* over its window: reset */
        size_t cap = st->in.cap * 2 > st->in.len + len ? st->in.cap * 2 : st->in.len + len;
        st->in.data = sl_xrealloc(st->in.data, cap);
        st->in.cap = cap;
    }
    memcpy(st->in.data + st->in.len, data, len);
    st->in.len += len;
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
    if (st->in.len > st->delivered) {
        nghttp2_session_consume_connection(ng, st->in.len - st->delivered);
        st->in.len = st->delivered;
    }
    sl_session_t *s = st->base.session;
    if (s && !st->session_gone && !(st->end_recv && error_code == NGHTTP2_NO_ERROR)) {
        SL_DEBUG("upstream stream %d closed: %s", id, nghttp2_http2_strerror(error_code));
        /* Refused or reset before any answer: safe to retry elsewhere (nothing happened). */
        st->pins++;
        sl__session_on_up_error(s, !st->base.got_bytes || error_code == NGHTTP2_REFUSED_STREAM
                                       ? SL_EUPSTREAM_CLOSED
                                       : SL_EH2);
        st->pins--;
    }
    stream_maybe_free(st);
    return 0;
}

static nghttp2_session_callbacks *callbacks(void)
{
    static nghttp2_session_callbacks *cbs;
    if (!cbs) {
        nghttp2_session_callbacks_new(&cbs);
        nghttp2_session_callbacks_set_send_callback(cbs, on_send);
        nghttp2_session_callbacks_set_send_data_callback(cbs, on_send_data);
        nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    }
    return cbs;
}

/* ---- connection I/O ----------------------------------------------------------------------- */

static void start_write(h2u_conn_t *c);

static void on_written(sl_stream_t *stream, int status, void *arg)
{
    h2u_conn_t *c = arg;
    if (c->closing)
        return;
    c->out.writing = false;
    if (status < 0) {
        conn_close(c, status);
        return;
    }
    conn_flush(c);
}

static void start_write(h2u_conn_t *c)
{
    if (c->closing || !c->stream)
        return;
    size_t n;
    const char *p = h2_out_swap(&c->out, &n);
    if (!p)
        return;
    uv_buf_t buf = uv_buf_init((char *)p, (unsigned)n);
    int rc = sl_stream_write(c->stream, &buf, 1, on_written, c);
    if (rc) {
        c->out.writing = false;
        conn_close(c, rc);
    }
}

/* Frames go out once per loop iteration: the responses (and WINDOW_UPDATEs) of every stream
 * that progressed in this iteration share one write (one TLS record run, one syscall). */
static void flush_now(h2u_conn_t *c);

static void flush_deferred(void *arg)
{
    h2u_conn_t *c = arg;
    c->flush_scheduled = false;
    flush_now(c);
}

static void conn_flush(h2u_conn_t *c)
{
    if (c->closing || c->flush_scheduled)
        return;
    c->flush_scheduled = true;
    sl__worker_defer(c->hw->worker, flush_deferred, c);
}

static void flush_now(h2u_conn_t *c)
{
    if (c->closing || !c->ng)
        return;
    if (c->in_ng || c->flushing) {
        c->want_flush = true;
        return;
    }
    c->flushing = true;
    do {
        c->want_flush = false;
        c->in_ng++;
        int rv = nghttp2_session_send(c->ng);
        c->in_ng--;
        if (rv) {
            SL_WARN("HTTP/2 upstream send: %s", nghttp2_strerror(rv));
            c->flushing = false;
            conn_close(c, SL_EH2);
            return;
        }
        dispatch_done(c);
        start_write(c);
    } while (c->want_flush && !c->closing);
    c->flushing = false;
    if (!c->closing && !c->out.writing && !c->out.len && !nghttp2_session_want_read(c->ng) &&
        !nghttp2_session_want_write(c->ng))
        conn_close(c, 0);
}

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
    if (!c || c->closing)
        return;
    if (nread < 0) {
        conn_close(c, nread == UV_EOF ? SL_EUPSTREAM_CLOSED : (int)nread);
        return;
    }
    c->in_ng++;
    ssize_t rv = nghttp2_session_mem_recv(c->ng, (const uint8_t *)buf->base, (size_t)nread);
    c->in_ng--;
    if (rv < 0) {
        SL_WARN("HTTP/2 upstream protocol error: %s", nghttp2_strerror((int)rv));
        nghttp2_session_terminate_session(c->ng, NGHTTP2_PROTOCOL_ERROR);
    }
    conn_flush(c);
}

/* ---- connections ------------------------------------------------------------------------------
 */

static void free_conn(void *arg)
{
    h2u_conn_t *c = arg;
    h2_out_free(&c->out);
    free(c);
}

static void on_socket_closed(sl_stream_t *stream)
{
    h2u_conn_t *c = sl_stream_data(stream);
    if (c) /* after a flush that may still be queued */
        sl__worker_defer(c->hw->worker, free_conn, c);
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
    if (c->closing)
        return;
    c->closing = true;
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
            st->pins++;
            sl__session_on_up_error(s, err ? err : SL_EUPSTREAM_CLOSED);
            st->pins--;
        }
    }
    while (c->streams) {
        h2u_stream_t *st = c->streams;
        c->streams = st->next;
        sl_timeout_stop(&st->tmo);
        /* A session still holding it (a hook pending) keeps a dead stream: detach it. */
        if (st->base.session && !st->session_gone)
            st->base.session->up = NULL;
        sl__iobuf_put(hw, &st->in);
        h2_queue_free(&st->q);
        h2_trailers_free(&st->trailers);
        free(st);
    }
    c->n_streams = 0;
    fail_waiters(c, err ? err : SL_EUPSTREAM_CLOSED);
    if (c->ng) {
        nghttp2_session_del(c->ng);
        c->ng = NULL;
    }
    free(c->done);
    c->done = NULL;
    c->n_done = 0;
    if (!c->stream) {
        sl__worker_defer(hw->worker, free_conn, c);
        return;
    }
    atomic_fetch_sub_explicit(&hw->st_up_open, 1, memory_order_relaxed);
    if (c->out.writing) {
        sl_stream_close(c->stream, on_socket_closed);
        return;
    }
    sl_stream_set_data(c->stream, NULL);
    sl_stream_close(c->stream, NULL);
    /* Freed on the next loop iteration: callers up the stack may still look at c->closing. */
    sl__worker_defer(hw->worker, free_conn, c);
}

static uint32_t max_streams(h2u_conn_t *c)
{
    uint32_t m =
        nghttp2_session_get_remote_settings(c->ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    return m ? m : 1;
}

static bool has_slot(h2u_conn_t *c)
{
    return c->state == H2U_READY && c->n_streams < max_streams(c) &&
           nghttp2_session_check_request_allowed(c->ng);
}

/* Gives waiting sessions a stream while there are free slots. */
static void serve_waiters(h2u_conn_t *c)
{
    while (c->wait_head && has_slot(c) && !c->closing) {
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
    c->stream = sl__up_take_stream(u);
    sl_stream_set_data(c->stream, c);
    const sl_http_options_t *o = &c->hw->svc->opts;
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_peer_max_concurrent_streams(opt, 100);
    nghttp2_session_client_new2(&c->ng, callbacks(), c, opt);
    nghttp2_option_del(opt);
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, o->h2_initial_window_size},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H2U_MAX_HEADER_BYTES},
    };
    nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    uint32_t conn_window = o->h2_initial_window_size * 16;
    nghttp2_session_set_local_window_size(
        c->ng, NGHTTP2_FLAG_NONE, 0, (int32_t)(conn_window > (1u << 30) ? 1u << 30 : conn_window));
    c->state = H2U_READY;
    sl_stream_read_start(c->stream, on_alloc, on_read);
    serve_waiters(c);
    conn_flush(c);
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
    if (c->closing || !c->ng)
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
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = data_read};
    int32_t id = nghttp2_submit_request(c->ng, NULL, nv, k, body ? &prd : NULL, st);
    if (id < 0) {
        SL_WARN("HTTP/2 upstream request: %s", nghttp2_strerror(id));
        return SL_EUPSTREAM_CLOSED;
    }
    st->id = id;
    st->has_provider = body;
    if (!body)
        st->req_end = true;
    arm_read(st);
    conn_flush(c);
    return 0;
}

static int h2_request_write(sl_session_t *s, const uv_buf_t *body, unsigned n, bool end, int tag)
{
    h2u_stream_t *st = st_of(s->up);
    h2u_conn_t *c = st->c;
    if (c->closing || st->ng_closed)
        return SL_EUPSTREAM_CLOSED;
    if (!st->has_provider) {
        /* The request went without a body (END_STREAM on its HEADERS). */
        record_done(c, st, tag);
        conn_flush(c);
        return 0;
    }
    if (end && s->req_trailers.n)
        h2_trailers_copy(&st->trailers, &s->req_trailers);
    h2_queue_batch(&st->q, body, n, tag);
    if (end)
        st->req_end = true;
    if (st->deferred) {
        st->deferred = false;
        nghttp2_session_resume_data(c->ng, st->id);
    }
    conn_flush(c);
    return 0;
}

static void h2_resume_reading(sl_up_t *u)
{
    h2u_stream_t *st = st_of(u);
    st->hold = false;
    st->pins++;
    stream_deliver(st);
    sl_session_t *s = st->base.session;
    if (s && !st->session_gone)
        sl__session_flush_head(s);
    st->pins--;
    stream_maybe_free(st);
}

static void h2_release(sl_up_t *u, bool reusable)
{
    h2u_stream_t *st = st_of(u);
    h2u_conn_t *c = st->c;
    st->session_gone = true;
    st->base.session = NULL;
    h2_queue_clear(&st->q);
    st->delivered = st->in.len;
    if (!c->closing && st->id && !st->ng_closed && !(st->end_recv && st->req_end))
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
    st->pins++; /* the flush may close the stream (our RST_STREAM) */
    stream_consume(st);
    if (!c->closing)
        conn_flush(c);
    st->pins--;
    stream_maybe_free(st);
}

static bool h2_owns(sl_up_t *u, const void *ptr)
{
    h2u_stream_t *st = st_of(u);
    const char *p = ptr;
    return st->in.data && p >= st->in.data && p < st->in.data + st->in.cap;
}

static void h2_hold(sl_up_t *u)
{
    st_of(u)->in.refs++;
}

static void h2_unhold(sl_up_t *u)
{
    h2u_stream_t *st = st_of(u);
    if (--st->in.refs == 0) {
        st->pins++;
        stream_consume(st);
        st->pins--;
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
