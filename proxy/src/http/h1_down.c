/* The downstream (client) side of HTTP/1.1: reading, strict parsing with llhttp, limits,
 * timeouts, keep-alive and pipelining. One request runs at a time; bytes of the next
 * pipelined request wait in the buffer until the current response is finished. */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "http/proxy_impl.h"
#include "io/stream_impl.h"
#include "util/mem.h"
#include "util/timeout.h"

#define SL_LOG_TAG "http"
#include "sluice/log.h"

enum { TIMER_NONE, TIMER_HEADER, TIMER_BODY, TIMER_KEEPALIVE };

static const llhttp_settings_t *request_settings(void);
static void down_process(h1_down_t *d);
static void down_close(h1_down_t *d, bool graceful);

/* ---- buffers ----------------------------------------------------------------------------- */

#define FREE_BUFS_MAX 256

void sl__iobuf_get(sl_http_worker_t *hw, sl_iobuf_t *b, size_t size)
{
    char ***list = size == SL_IOBUF_SMALL ? &hw->free_small : &hw->free_bufs;
    size_t *n = size == SL_IOBUF_SMALL ? &hw->n_free_small : &hw->n_free_bufs;
    b->refs = 0;
    b->data = *n ? (*list)[--*n] : sl_xmalloc(size);
    b->cap = size;
    b->len = b->parsed = 0;
}

void sl__iobuf_put(sl_http_worker_t *hw, sl_iobuf_t *b)
{
    if (!b->data)
        return;
    bool small = b->cap == SL_IOBUF_SMALL;
    char ***list = small ? &hw->free_small : &hw->free_bufs;
    size_t *n = small ? &hw->n_free_small : &hw->n_free_bufs;
    if ((small || b->cap == SL_IOBUF_SIZE) && !hw->stopped && *n < FREE_BUFS_MAX) {
        if (!*list)
            *list = sl_xcalloc(FREE_BUFS_MAX, sizeof(char *));
        (*list)[(*n)++] = b->data;
    } else {
        free(b->data);
    }
    b->data = NULL;
    b->cap = b->len = b->parsed = 0;
    b->refs = 0;
}

int sl__iobuf_grow(sl_iobuf_t *b, size_t want, size_t max)
{
    if (want <= b->cap)
        return 0;
    if (b->cap >= max)
        return SL_ETOOLARGE;
    if (want > max)
        want = max;
    size_t cap = b->cap * 2;
    while (cap < want)
        cap *= 2;
    if (cap > max)
        cap = max;
    char *n = sl_xmalloc(cap);
    memcpy(n, b->data, b->len);
    /* The old buffer may be a pooled one: it is simply freed (the pool refills itself). */
    free(b->data);
    b->data = n;
    b->cap = cap;
    return 0;
}

/* ---- timers ------------------------------------------------------------------------------ */

static void on_timer(sl_timeout_t *t);

static void arm(h1_down_t *d, int mode, uint64_t ms)
{
    d->timer_mode = mode;
    sl_timeout_start(d->hw->loop, &d->tmo, ms, on_timer);
}

static void disarm(h1_down_t *d)
{
    sl_timeout_stop(&d->tmo);
}

static void on_timer(sl_timeout_t *t)
{
    h1_down_t *d = sl_container_of(t, h1_down_t, tmo);
    switch (d->timer_mode) {
    case TIMER_KEEPALIVE:
        SL_DEBUG("keep-alive timeout");
        down_close(d, true);
        break;
    case TIMER_HEADER:
        if (d->session) /* the session owns the connection: let it decide */
            sl__session_on_down_error(d->session, SL_EHEADER_READ_TIMEOUT);
        else if ((d->p && d->p->in.len > d->p->in.parsed) || d->state == DOWN_HEADERS)
            sl__session_reject(d, SL_EHEADER_READ_TIMEOUT);
        else
            down_close(d, true);
        break;
    case TIMER_BODY:
        if (d->session)
            sl__session_on_down_error(d->session, SL_EBODY_READ_TIMEOUT);
        else
            down_close(d, true);
        break;
    default:
        break;
    }
}

/* ---- parse state ------------------------------------------------------------------------- */

#define FREE_PARSE_MAX 256

static void parse_get(h1_down_t *d)
{
    sl_http_worker_t *hw = d->hw;
    h1_parse_t *p = hw->free_parse;
    if (p) {
        hw->free_parse = p->next_free;
        hw->n_free_parse--;
        hdr_off_t *hdrs = p->hdrs; /* keep the header array: it is sized for this traffic */
        size_t cap = p->cap_hdrs;
        memset(p, 0, sizeof(*p));
        p->hdrs = hdrs;
        p->cap_hdrs = cap;
    } else {
        p = sl_xcalloc(1, sizeof(*p));
    }
    sl__iobuf_get(hw, &p->in, SL_IOBUF_SMALL);
    llhttp_init(&p->parser, HTTP_REQUEST, request_settings());
    p->parser.data = d;
    d->p = p;
}

static void parse_put(h1_down_t *d)
{
    h1_parse_t *p = d->p;
    sl_http_worker_t *hw = d->hw;
    d->p = NULL;
    if (!p)
        return;
    sl__iobuf_put(hw, &p->in);
    if (!hw->stopped && hw->n_free_parse < FREE_PARSE_MAX) {
        p->next_free = hw->free_parse;
        hw->free_parse = p;
        hw->n_free_parse++;
    } else {
        free(p->hdrs);
        free(p);
    }
}

void sl__down_free_parse_list(sl_http_worker_t *hw)
{
    while (hw->free_parse) {
        h1_parse_t *p = hw->free_parse;
        hw->free_parse = p->next_free;
        free(p->hdrs);
        free(p);
    }
    hw->n_free_parse = 0;
}

/* ---- lifecycle --------------------------------------------------------------------------- */

static void down_close(h1_down_t *d, bool graceful)
{
    if (d->state == DOWN_CLOSING)
        return;
    d->state = DOWN_CLOSING;
    sl_http_worker_t *hw = d->hw;
    atomic_fetch_sub_explicit(&hw->st_open, 1, memory_order_relaxed);
    if (d->prev)
        d->prev->next = d->next;
    else
        hw->conns = d->next;
    if (d->next)
        d->next->prev = d->prev;
    if (d->session) {
        sl__session_release(hw, d->session);
        d->session = NULL;
    }
    parse_put(d);
    disarm(d);
    /* d lives in the stream's allocation and goes with it. While the stream lingers, write
     * callbacks still due find no data and return. */
    sl_stream_set_data(d->stream, NULL);
    if (graceful && !d->peer_eof)
        sl_stream_close_graceful(d->stream, 2000);
    else
        sl_stream_close(d->stream, NULL);
}

void sl__down_abort(h1_down_t *d)
{
    down_close(d, false);
}

static void reset_parse_state(h1_down_t *d)
{
    d->p->url_off = d->p->url_len = d->p->method_off = d->p->method_len = 0;
    d->p->n_hdrs = 0;
    d->p->hdr_phase = 0;
    d->p->headers_done = d->p->message_done = false;
    d->p->parse_error = 0;
    d->p->n_body_iov = 0;
    d->p->in_trailers = false;
}

/* ---- reading ----------------------------------------------------------------------------- */

/* Makes room at the end of the buffer when it is full: during a header block, the message is
 * moved to the front (its parse state is relative to msg_start) or the buffer grows up to the
 * header cap; during a body, consumed body bytes that no pending write references are dropped. */
static int make_room(h1_down_t *d)
{
    sl_iobuf_t *b = &d->p->in;
    if (b->len < b->cap)
        return 0;
    if (!d->session) {
        if (d->p->msg_start > 0) {
            memmove(b->data, b->data + d->p->msg_start, b->len - d->p->msg_start);
            b->len -= d->p->msg_start;
            b->parsed -= d->p->msg_start;
            d->p->msg_start = 0;
            return 0;
        }
        size_t max = d->hw->svc->opts.max_header_size + d->hw->svc->opts.max_request_line + 1024;
        return sl__iobuf_grow(b, b->cap * 2, max) == 0 ? 0 : SL_EHEADER_TOO_LARGE;
    }
    /* A session runs: its header views sit in [msg_start, body_base). */
    if (b->refs == 0 && b->parsed > d->p->body_base) {
        memmove(b->data + d->p->body_base, b->data + b->parsed, b->len - b->parsed);
        b->len -= b->parsed - d->p->body_base;
        b->parsed = d->p->body_base;
        return 0;
    }
    return UV_ENOBUFS; /* wait for writes to complete */
}

static void on_alloc(sl_stream_t *s, size_t suggested, uv_buf_t *buf)
{
    h1_down_t *d = sl_stream_data(s);
    if (!d->p)
        parse_get(d); /* with its buffer */
    if (make_room(d) != 0) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init(d->p->in.data + d->p->in.len, (unsigned)(d->p->in.cap - d->p->in.len));
}

static void stop_reading(h1_down_t *d)
{
    if (d->reading) {
        sl_stream_read_stop(d->stream);
        d->reading = false;
    }
}

static void on_read(sl_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void start_reading(h1_down_t *d)
{
    if (!d->reading && !d->peer_eof && d->state != DOWN_CLOSING) {
        if (sl_stream_read_start(d->stream, on_alloc, on_read) == 0)
            d->reading = true;
    }
}

static void on_read(sl_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    h1_down_t *d = sl_stream_data(s);
    if (nread == UV_ENOBUFS) {
        /* No room: a header block too large, or the body must wait for writes. */
        stop_reading(d);
        int rc = make_room(d);
        if (rc == SL_EHEADER_TOO_LARGE) {
            if (d->session)
                sl__session_on_down_error(d->session, rc);
            else
                sl__session_reject(d, rc);
        }
        return;
    }
    if (nread < 0) {
        stop_reading(d);
        d->peer_eof = true;
        if (d->session) {
            /* A client that half-closes after a request that already went upstream still gets
             * the response. Before that, EOF means it left: no upstream work for nobody. */
            sl_session_t *ss = d->session;
            bool sent = ss->state >= SS_SEND_REQUEST && ss->state != SS_FAILING;
            if (!ss->req_body_done || nread != UV_EOF || !sent)
                sl__session_on_down_error(ss, nread == UV_EOF ? SL_EDOWNSTREAM_CLOSED : (int)nread);
            else
                d->close_after = true;
            return;
        }
        if (d->p->in.len > d->p->in.parsed && nread == UV_EOF) {
            /* A truncated request: nothing to answer on a closed connection. */
            SL_DEBUG("connection closed mid-request");
        }
        down_close(d, false);
        return;
    }
    d->p->in.len += (size_t)nread;
    down_process(d);
}

/* ---- parsing ----------------------------------------------------------------------------- */

static h1_down_t *from_parser(llhttp_t *p)
{
    return p->data;
}

static uint32_t rel(h1_down_t *d, const char *at)
{
    return (uint32_t)(at - d->p->in.data - (ptrdiff_t)d->p->msg_start);
}

static int on_message_begin(llhttp_t *p)
{
    h1_down_t *d = from_parser(p);
    reset_parse_state(d);
    return 0;
}

static int on_method(llhttp_t *p, const char *at, size_t len)
{
    h1_down_t *d = from_parser(p);
    if (!d->p->method_len)
        d->p->method_off = rel(d, at);
    d->p->method_len += (uint32_t)len;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    h1_down_t *d = from_parser(p);
    if (!d->p->url_len)
        d->p->url_off = rel(d, at);
    d->p->url_len += (uint32_t)len;
    if (d->p->url_len > d->hw->svc->opts.max_request_line) {
        d->p->parse_error = SL_EURI_TOO_LONG;
        return HPE_USER;
    }
    return 0;
}

static int header_bytes_check(h1_down_t *d, const char *at)
{
    if ((size_t)(at - d->p->in.data) - d->p->msg_start >
        d->hw->svc->opts.max_header_size + d->p->url_len + 64) {
        d->p->parse_error = SL_EHEADER_TOO_LARGE;
        return HPE_USER;
    }
    return 0;
}

/* Trailers are copied as they come: the body region they sit in may be reused. */
static int trailer_piece(h1_down_t *d, const char *at, size_t len, bool value)
{
    sl_session_t *s = d->session;
    if (!s)
        return 0;
    sl_headers_t *t = &s->req_trailers;
    if (!t->arena)
        t->arena = &s->arena;
    if (!value && d->p->hdr_phase != 1) {
        if (t->n >= 64) {
            d->p->parse_error = SL_EHEADER_TOO_LARGE;
            return HPE_USER;
        }
        sl_headers_add_n(t, at, len, "", 0);
    } else {
        sl_header_t *h = &t->items[t->n - 1];
        sl_str_t *f = value ? &h->value : &h->name;
        if (f->len + len > 8192) {
            d->p->parse_error = SL_EHEADER_TOO_LARGE;
            return HPE_USER;
        }
        char *n = sl_arena_alloc(t->arena, f->len + len + 1);
        memcpy(n, f->ptr, f->len);
        memcpy(n + f->len, at, len);
        f->ptr = n;
        f->len += len;
    }
    d->p->hdr_phase = value ? 2 : 1;
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    h1_down_t *d = from_parser(p);
    if (d->p->in_trailers)
        return trailer_piece(d, at, len, false);
    if (d->p->hdr_phase != 1) {
        if (d->p->n_hdrs >= d->hw->svc->opts.max_headers) {
            d->p->parse_error = SL_EHEADER_TOO_LARGE;
            return HPE_USER;
        }
        if (d->p->n_hdrs == d->p->cap_hdrs) {
            d->p->cap_hdrs = d->p->cap_hdrs ? d->p->cap_hdrs * 2 : 32;
            d->p->hdrs = sl_xrealloc(d->p->hdrs, d->p->cap_hdrs * sizeof(*d->p->hdrs));
        }
        hdr_off_t *h = &d->p->hdrs[d->p->n_hdrs++];
        h->name_off = rel(d, at);
        h->name_len = 0;
        h->val_off = h->val_len = 0;
        d->p->hdr_phase = 1;
    }
    d->p->hdrs[d->p->n_hdrs - 1].name_len += (uint32_t)len;
    return header_bytes_check(d, at + len);
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    h1_down_t *d = from_parser(p);
    if (d->p->in_trailers)
        return trailer_piece(d, at, len, true);
    hdr_off_t *h = &d->p->hdrs[d->p->n_hdrs - 1];
    if (d->p->hdr_phase != 2) {
        h->val_off = rel(d, at);
        d->p->hdr_phase = 2;
    } else if (rel(d, at) != h->val_off + h->val_len) {
        /* Pieces of one value are adjacent in our buffer unless a line was folded
         * (obs-fold), which RFC 9112 says to reject. */
        d->p->parse_error = SL_EPARSE;
        return HPE_USER;
    }
    h->val_len += (uint32_t)len;
    return header_bytes_check(d, at + len);
}

static int on_header_value_complete(llhttp_t *p)
{
    h1_down_t *d = from_parser(p);
    d->p->hdr_phase = 0;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    h1_down_t *d = from_parser(p);
    d->p->headers_done = true;
    if ((p->flags & F_TRANSFER_ENCODING) && !(p->flags & F_CHUNKED)) {
        /* RFC 9112 6.3: a request whose last transfer coding is not chunked has no
         * determinable length. */
        d->p->parse_error = SL_EPARSE;
        return -1;
    }
    bool body = (p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length);
    /* Without a body the message completes here too (and pauses there), so the session starts
     * knowing the request is whole. */
    return body ? HPE_PAUSED : 1;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    h1_down_t *d = from_parser(p);
    if (d->p->n_body_iov == SL_MAX_BODY_IOV) {
        d->p->parse_error = SL_EINTERNAL;
        return HPE_USER;
    }
    d->hw->down_iov[d->p->n_body_iov++] = uv_buf_init((char *)at, (unsigned)len);
    return 0;
}

static int on_chunk_header(llhttp_t *p)
{
    h1_down_t *d = from_parser(p);
    if (p->content_length == 0)
        d->p->in_trailers = true;
    d->p->hdr_phase = 0;
    return 0;
}

static int on_chunk_complete(llhttp_t *p)
{
    h1_down_t *d = from_parser(p);
    /* Pause before the span array can overflow; delivery empties it. */
    return d->p->n_body_iov >= SL_MAX_BODY_IOV - 2 ? HPE_PAUSED : 0;
}

static int on_message_complete(llhttp_t *p)
{
    h1_down_t *d = from_parser(p);
    d->p->message_done = true;
    return HPE_PAUSED;
}

static const llhttp_settings_t *request_settings(void)
{
    static llhttp_settings_t s;
    static bool init;
    if (!init) {
        llhttp_settings_init(&s);
        s.on_message_begin = on_message_begin;
        s.on_method = on_method;
        s.on_url = on_url;
        s.on_header_field = on_header_field;
        s.on_header_value = on_header_value;
        s.on_header_value_complete = on_header_value_complete;
        s.on_headers_complete = on_headers_complete;
        s.on_body = on_body;
        s.on_chunk_header = on_chunk_header;
        s.on_chunk_complete = on_chunk_complete;
        s.on_message_complete = on_message_complete;
        init = true;
    }
    return &s;
}

static int map_parse_error(h1_down_t *d, llhttp_errno_t e)
{
    return d->p->parse_error ? d->p->parse_error : SL_EPARSE;
}

/* Runs the parser over buffered bytes until it needs the session (headers done, body
 * delivered, message done) or runs out of bytes. */
static void down_process(h1_down_t *d)
{
    if (!d->p) { /* idle, nothing buffered */
        start_reading(d);
        return;
    }
    sl_iobuf_t *b = &d->p->in;
    while (d->state != DOWN_CLOSING) {
        sl_session_t *s = d->session;
        if (s && (d->body_hold || d->p->message_done))
            break; /* the session is not ready for more */
        if (b->parsed == b->len)
            break;
        if (d->state == DOWN_IDLE) {
            d->state = DOWN_HEADERS;
            d->p->msg_start = b->parsed;
            reset_parse_state(d);
            arm(d, TIMER_HEADER, d->hw->svc->opts.header_timeout_ms);
        }
        llhttp_errno_t e = llhttp_execute(&d->p->parser, b->data + b->parsed, b->len - b->parsed);
        size_t used;
        if (e == HPE_OK) {
            used = b->len - b->parsed;
        } else if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
            used = (size_t)(llhttp_get_error_pos(&d->p->parser) - (b->data + b->parsed));
            if (e == HPE_PAUSED_UPGRADE)
                llhttp_resume_after_upgrade(&d->p->parser);
            else
                llhttp_resume(&d->p->parser);
        } else {
            int err = map_parse_error(d, e);
            SL_DEBUG("bad request: %s (%s)", llhttp_errno_name(e),
                     llhttp_get_error_reason(&d->p->parser));
            if (s)
                sl__session_on_down_error(s, err);
            else
                sl__session_reject(d, err);
            return;
        }
        b->parsed += used;
        if (d->p->headers_done && !s) {
            d->p->headers_done = false;
            if (!d->p->message_done && b->cap < SL_IOBUF_SIZE)
                /* A body follows: stream it through a full-size buffer. Views into the
                 * buffer are made after this. */
                sl__iobuf_grow(b, SL_IOBUF_SIZE, SL_IOBUF_SIZE);
            d->p->body_base = b->parsed;
            d->state = DOWN_ACTIVE;
            disarm(d);
            d->body_hold = true;
            d->session = sl__session_start(d);
            /* The session holds the body until its upstream is ready (sl__down_resume_body),
             * unless the request has none. */
            continue;
        }
        if (s && (d->p->n_body_iov || d->p->message_done)) {
            size_t n = d->p->n_body_iov;
            d->p->n_body_iov = 0;
            if (d->p->message_done)
                disarm(d);
            else if (n)
                arm(d, TIMER_BODY, d->hw->svc->opts.body_timeout_ms);
            sl__session_on_request_body(s, d->hw->down_iov, n, d->p->message_done);
        }
    }
    if (d->state == DOWN_CLOSING)
        return;
    /* Read more unless the buffer is full; a full buffer resumes when writes complete. */
    int room = b->len < b->cap ? 0 : make_room(d);
    if (room == 0) {
        start_reading(d);
    } else if (room == SL_EHEADER_TOO_LARGE) {
        if (d->session)
            sl__session_on_down_error(d->session, room);
        else
            sl__session_reject(d, room);
    } else {
        stop_reading(d);
    }
}

void sl__down_resume_body(h1_down_t *d)
{
    d->body_hold = false;
    if (d->session && !d->session->req_body_done)
        arm(d, TIMER_BODY, d->hw->svc->opts.body_timeout_ms);
    down_process(d);
}

void sl__down_buffer_released(h1_down_t *d)
{
    /* Writes that referenced our buffer finished: reading may continue. */
    if (d->state != DOWN_CLOSING && !d->reading && !d->peer_eof)
        down_process(d);
}

/* ---- writing ----------------------------------------------------------------------------- */

static void on_written(sl_stream_t *st, int status, void *arg)
{
    h1_down_t *d = sl_stream_data(st);
    if (!d)
        return;
    d->write_pending--;
    if (d->session)
        sl__session_on_down_write_done(d->session, status, (int)(intptr_t)arg);
}

int sl__down_write(h1_down_t *d, const uv_buf_t *bufs, unsigned n, int tag)
{
    if (d->state == DOWN_CLOSING)
        return UV_ECANCELED;
    int rc = sl_stream_write(d->stream, bufs, n, on_written, (void *)(intptr_t)tag);
    if (rc == 0)
        d->write_pending++;
    return rc;
}

/* ---- the end of a request ---------------------------------------------------------------- */

void sl__down_session_done(h1_down_t *d)
{
    sl_session_t *s = d->session;
    d->session = NULL;
    sl__session_release(d->hw, s);
    d->requests++;
    bool keep = !d->close_after && !d->peer_eof && !d->hw->shutting_down &&
                d->hw->svc->opts.keepalive_timeout_ms > 0 &&
                (!d->hw->svc->opts.max_requests_per_conn ||
                 d->requests < d->hw->svc->opts.max_requests_per_conn);
    if (!keep) {
        down_close(d, true);
        return;
    }
    /* Drop the finished message; keep what follows (a pipelined request). */
    sl_iobuf_t *b = &d->p->in;
    d->state = DOWN_IDLE;
    d->p->message_done = false;
    d->body_hold = false;
    if (b->parsed == b->len) {
        parse_put(d); /* idle connections hold no buffer and no parse state */
    } else {
        memmove(b->data, b->data + b->parsed, b->len - b->parsed);
        b->len -= b->parsed;
        b->parsed = 0;
        d->p->msg_start = 0;
    }
    arm(d, TIMER_KEEPALIVE, d->hw->svc->opts.keepalive_timeout_ms);
    down_process(d);
}

/* ---- accepting --------------------------------------------------------------------------- */

void sl__down_new(sl_http_service_t *svc, sl_stream_t *stream)
{
    sl_http_worker_t *hw = sl__http_worker(svc, sl_stream_worker(stream));
    h1_down_t *d = sl_stream_extra(stream); /* zeroed, freed with the stream */
    atomic_fetch_add_explicit(&hw->st_accepted, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&hw->st_open, 1, memory_order_relaxed);
    d->stream = stream;
    d->hw = hw;
    d->hw->svc = svc;
    d->state = DOWN_IDLE;
    sl_stream_set_data(stream, d);
    struct sockaddr_storage peer;
    if (sl_stream_peer_addr(stream, &peer) == 0) {
        if (peer.ss_family == AF_INET6 || peer.ss_family == AF_INET)
            memcpy(&d->peer, &peer, sizeof(d->peer));
        else
            d->peer.sa.sa_family = peer.ss_family;
    }
    d->next = hw->conns;
    if (hw->conns)
        hw->conns->prev = d;
    hw->conns = d;
    if (hw->shutting_down)
        d->close_after = true;
    /* A connection that sends nothing is closed after the header timeout. */
    arm(d, TIMER_HEADER, svc->opts.header_timeout_ms);
    start_reading(d);
}

/* Shutdown: idle connections close now; busy ones close after their response. */
void sl__down_shutdown_all(sl_http_worker_t *hw, bool expired)
{
    h1_down_t *d = hw->conns;
    while (d) {
        h1_down_t *next = d->next;
        d->close_after = true;
        if (expired)
            down_close(d, false);
        else if (d->state == DOWN_IDLE)
            down_close(d, true);
        d = next;
    }
}
