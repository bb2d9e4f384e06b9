/* The downstream (client) side of HTTP/1.1: reading, strict parsing with llhttp, limits,
 * timeouts, keep-alive and pipelining. One request runs at a time; bytes of the next
 * pipelined request wait in the buffer until the current response is finished. */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "http/proxy_impl.h"
#include "io/stream_impl.h"
#include "sluice/tls.h"
#include "util/mem.h"
#include "util/timeout.h"

#define SL_LOG_TAG "http"
#include "sluice/log.h"

enum { TIMER_NONE, TIMER_HEADER, TIMER_BODY, TIMER_KEEPALIVE };

static const llhttp_settings_t *request_settings(void);
static void down_process(h1_down_t *d);
static bool wants_h2c(h1_down_t *d);
static void to_h2(h1_down_t *d, sl_iobuf_t *b);
/* hw->conns: the worker's HTTP/1.1 connections (for shutdown). */
static void conns_link(sl_http_worker_t *hw, h1_down_t *d)
{
    d->prev = NULL;
    d->next = hw->conns;
    if (hw->conns)
        hw->conns->prev = d;
    hw->conns = d;
}

static void conns_unlink(sl_http_worker_t *hw, h1_down_t *d)
{
    if (d->prev)
        d->prev->next = d->next;
    else
        hw->conns = d->next;
    if (d->next)
        d->next->prev = d->prev;
    d->prev = d->next = NULL;
}

static void down_close(h1_down_t *d, bool graceful);
static const sl_down_ops_t h1_down_ops;

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
    sl_timeout_start(d->base.hw->loop, &d->tmo, ms, on_timer);
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
        if (d->base.session) /* the session owns the connection: let it decide */
            sl__session_on_down_error(d->base.session, SL_EHEADER_READ_TIMEOUT);
        else if ((d->p && d->p->in.len > d->p->in.parsed) || d->state == DOWN_HEADERS)
            sl__session_reject(&d->base, SL_EHEADER_READ_TIMEOUT);
        else
            down_close(d, true);
        break;
    case TIMER_BODY:
        if (d->base.session)
            sl__session_on_down_error(d->base.session, SL_EBODY_READ_TIMEOUT);
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
    sl_http_worker_t *hw = d->base.hw;
    h1_parse_t *p = hw->free_parse;
    if (p) {
        hw->free_parse = p->next_free;
        hw->n_free_parse--;
        h1_hdrs_t h = p->h; /* keep the header array: it is sized for this traffic */
        memset(p, 0, sizeof(*p));
        p->h.v = h.v;
        p->h.cap = h.cap;
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
    sl_http_worker_t *hw = d->base.hw;
    d->p = NULL;
    if (!p)
        return;
    sl__iobuf_put(hw, &p->in);
    if (!hw->stopped && hw->n_free_parse < FREE_PARSE_MAX) {
        p->next_free = hw->free_parse;
        hw->free_parse = p;
        hw->n_free_parse++;
    } else {
        free(p->h.v);
        free(p);
    }
}

void sl__down_free_parse_list(sl_http_worker_t *hw)
{
    while (hw->free_parse) {
        h1_parse_t *p = hw->free_parse;
        hw->free_parse = p->next_free;
        free(p->h.v);
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
    sl_http_worker_t *hw = d->base.hw;
    atomic_fetch_sub_explicit(&hw->st_open, 1, memory_order_relaxed);
    conns_unlink(hw, d);
    if (d->base.session) {
        sl__session_release(hw, d->base.session);
        d->base.session = NULL;
    }
    parse_put(d);
    disarm(d);
    /* d lives in the stream's allocation and goes with it. While the stream lingers, write
     * callbacks still due find no data and return. */
    sl_stream_set_data(d->base.stream, NULL);
    if (graceful && !d->peer_eof)
        sl_stream_close_graceful(d->base.stream, 2000);
    else
        sl_stream_close(d->base.stream, NULL);
}

static void h1_abort(sl_down_t *base)
{
    down_close(sl_container_of(base, h1_down_t, base), false);
}

static void reset_parse_state(h1_down_t *d)
{
    d->p->url_off = d->p->url_len = d->p->method_off = d->p->method_len = 0;
    d->p->h.n = 0;
    d->p->h.phase = 0;
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
    if (!d->base.session) {
        if (d->p->msg_start > 0) {
            memmove(b->data, b->data + d->p->msg_start, b->len - d->p->msg_start);
            b->len -= d->p->msg_start;
            b->parsed -= d->p->msg_start;
            d->p->msg_start = 0;
            return 0;
        }
        size_t max =
            d->base.hw->svc->opts.max_header_size + d->base.hw->svc->opts.max_request_line + 1024;
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
        sl_stream_read_stop(d->base.stream);
        d->reading = false;
    }
}

static void on_read(sl_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void start_reading(h1_down_t *d)
{
    if (!d->reading && !d->peer_eof && d->state != DOWN_CLOSING) {
        if (sl_stream_read_start(d->base.stream, on_alloc, on_read) == 0)
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
            if (d->base.session)
                sl__session_on_down_error(d->base.session, rc);
            else
                sl__session_reject(&d->base, rc);
        }
        return;
    }
    if (nread < 0) {
        stop_reading(d);
        d->peer_eof = true;
        if (d->base.session) {
            /* A client that closes before its response started has left (like nginx, which
             * logs 499): the upstream request is abandoned instead of waiting for an answer
             * nobody reads. Once the response streams, EOF is a half-close: it goes on. */
            sl_session_t *ss = d->base.session;
            bool streaming = ss->resp_header_sent && ss->state != SS_FAILING;
            if (!ss->req_body_done || nread != UV_EOF || !streaming)
                sl__session_on_down_error(ss, nread == UV_EOF ? SL_EDOWNSTREAM_CLOSED : (int)nread);
            else
                d->base.close_after = true;
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
    if (d->p->url_len > d->base.hw->svc->opts.max_request_line) {
        d->p->parse_error = SL_EURI_TOO_LONG;
        return HPE_USER;
    }
    return 0;
}

static int header_bytes_check(h1_down_t *d, const char *at)
{
    if ((size_t)(at - d->p->in.data) - d->p->msg_start >
        d->base.hw->svc->opts.max_header_size + d->p->url_len + 64) {
        d->p->parse_error = SL_EHEADER_TOO_LARGE;
        return HPE_USER;
    }
    return 0;
}

/* Trailers are copied as they come: the body region they sit in may be reused. */
static int trailer_piece(h1_down_t *d, const char *at, size_t len, bool value)
{
    sl_session_t *s = d->base.session;
    if (!s || sl__h1_hdrs_trailer(&d->p->h, &s->req_trailers, &s->arena, at, len, value) == 0)
        return 0;
    d->p->parse_error = SL_EHEADER_TOO_LARGE;
    return HPE_USER;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    h1_down_t *d = from_parser(p);
    if (d->p->in_trailers)
        return trailer_piece(d, at, len, false);
    if (sl__h1_hdrs_field(&d->p->h, rel(d, at), len, d->base.hw->svc->opts.max_headers)) {
        d->p->parse_error = SL_EHEADER_TOO_LARGE;
        return HPE_USER;
    }
    return header_bytes_check(d, at + len);
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    h1_down_t *d = from_parser(p);
    if (d->p->in_trailers)
        return trailer_piece(d, at, len, true);
    if (sl__h1_hdrs_value(&d->p->h, rel(d, at), len)) {
        d->p->parse_error = SL_EPARSE;
        return HPE_USER;
    }
    return header_bytes_check(d, at + len);
}

static int on_header_value_complete(llhttp_t *p)
{
    h1_down_t *d = from_parser(p);
    d->p->h.phase = 0;
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
    d->base.hw->down_iov[d->p->n_body_iov++] = uv_buf_init((char *)at, (unsigned)len);
    return 0;
}

static int on_chunk_header(llhttp_t *p)
{
    h1_down_t *d = from_parser(p);
    if (p->content_length == 0)
        d->p->in_trailers = true;
    d->p->h.phase = 0;
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

/* The client's request from the parser's offsets. Returns 0 or SL_EPARSE (a request the spec
 * says to reject: no Host in HTTP/1.1, two Hosts, a bad target). */
static int build_request(h1_down_t *d, sl_session_t *s)
{
    const char *base = d->p->in.data + d->p->msg_start;
    sl_request_header_t *r = &s->req;
    r->method = (sl_str_t){base + d->p->method_off, d->p->method_len};
    r->uri = (sl_str_t){base + d->p->url_off, d->p->url_len};
    r->version = d->p->parser.http_major == 1 && d->p->parser.http_minor == 0 ? 10 : 11;
    if (d->p->parser.http_major != 1)
        return SL_EPARSE;
    sl__h1_hdrs_publish(&d->p->h, base, &r->headers, &s->arena);
    size_t hosts = 0;
    for (size_t i = 0; i < r->headers.n; i++)
        hosts += sl_str_ieq_cstr(r->headers.items[i].name, "host");
    if (hosts > 1 || (hosts == 0 && r->version == 11))
        return SL_EPARSE;
    /* Absolute form ("GET http://host/path"): the authority becomes Host. */
    if (r->uri.len && r->uri.ptr[0] != '/') {
        sl_str_t u = r->uri;
        size_t skip = sl_str_starts_with(u, "http://")    ? 7
                      : sl_str_starts_with(u, "https://") ? 8
                                                          : 0;
        if (!skip) {
            if (!(u.len == 1 && u.ptr[0] == '*'))
                return SL_EPARSE;
        } else {
            const char *auth = u.ptr + skip;
            const char *end = u.ptr + u.len;
            const char *path = memchr(auth, '/', (size_t)(end - auth));
            const char *q = memchr(auth, '?', (size_t)(end - auth));
            if (q && (!path || q < path))
                path = q;
            size_t alen = (size_t)((path ? path : end) - auth);
            if (alen == 0)
                return SL_EPARSE;
            sl_headers_set_n(&r->headers, "Host", 4, auth, alen);
            if (!path)
                r->uri = SL_STR("/");
            else if (*path == '?')
                r->uri = (sl_str_t){sl_arena_printf(&s->arena, "/%.*s", (int)(end - path), path),
                                    (size_t)(end - path) + 1};
            else
                r->uri = (sl_str_t){path, (size_t)(end - path)};
        }
    }
    uint64_t flags = d->p->parser.flags;
    if (flags & F_CHUNKED) {
        s->req_body = BODY_CHUNKED;
    } else if ((flags & F_CONTENT_LENGTH) && d->p->parser.content_length) {
        s->req_body = BODY_LENGTH;
        s->req_content_length = d->p->parser.content_length;
    } else {
        s->req_body = BODY_NONE;
        s->req_body_done = true;
    }
    s->head = sl_str_eq(r->method, SL_STR("HEAD"));
    s->client_wants_close = !llhttp_should_keep_alive(&d->p->parser);
    s->expect_continue = s->req_body != BODY_NONE && r->version == 11 &&
                         sl_headers_has_token(&r->headers, "expect", "100-continue");
    /* Upgrade (WebSocket, ...): the upstream may switch the connection to another protocol. */
    s->upgrade = r->version == 11 && sl_headers_get(&r->headers, "upgrade") &&
                 sl_headers_has_token(&r->headers, "connection", "upgrade");
    return 0;
}

/* ---- HTTP/2 on a plain connection --------------------------------------------------------- */

static const hdr_off_t *find_hdr(h1_down_t *d, const char *name)
{
    const char *base = d->p->in.data + d->p->msg_start;
    for (size_t i = 0; i < d->p->h.n; i++) {
        const hdr_off_t *h = &d->p->h.v[i];
        if (sl_str_ieq_cstr((sl_str_t){base + h->name_off, h->name_len}, name))
            return h;
    }
    return NULL;
}

static sl_str_t hdr_value(h1_down_t *d, const hdr_off_t *h)
{
    return (sl_str_t){d->p->in.data + d->p->msg_start + h->val_off, h->val_len};
}

/* Upgrade: h2c (RFC 7540 3.2) on a request without a body, in origin form. */
static bool wants_h2c(h1_down_t *d)
{
    if (!d->base.hw->svc->opts.h2c || sl_stream_is_tls(d->base.stream) ||
        d->p->parser.http_major != 1 || d->p->parser.http_minor != 1)
        return false;
    const hdr_off_t *up = find_hdr(d, "upgrade"), *set = find_hdr(d, "http2-settings"),
                    *conn = find_hdr(d, "connection");
    if (!up || !set || !conn || !find_hdr(d, "host"))
        return false;
    const char *url = d->p->in.data + d->p->msg_start + d->p->url_off;
    return d->p->url_len && url[0] == '/' && sl__str_has_token(hdr_value(d, up), SL_STR("h2c")) &&
           sl__str_has_token(hdr_value(d, conn), SL_STR("upgrade")) &&
           sl__str_has_token(hdr_value(d, conn), SL_STR("http2-settings"));
}

/* The connection becomes HTTP/2: by prior knowledge (b NULL: everything buffered is HTTP/2)
 * or by upgrade (the request just parsed is stream 1; what follows it is HTTP/2). */
static void to_h2(h1_down_t *d, sl_iobuf_t *b)
{
    sl_http_worker_t *hw = d->base.hw;
    struct sockaddr_storage peer;
    memset(&peer, 0, sizeof(peer));
    memcpy(&peer, &d->peer, sizeof(d->peer));
    /* This HTTP/1.1 state is done; the stream (and its memory) goes on as HTTP/2. */
    conns_unlink(hw, d);
    disarm(d);
    stop_reading(d);
    d->state = DOWN_CLOSING;
    sl_iobuf_t *in = &d->p->in;
    if (!b) {
        sl__h2_down_takeover(hw, d->base.stream, (const struct sockaddr *)&peer, in->data, in->len);
        parse_put(d);
        return;
    }
    const char *base = in->data + d->p->msg_start;
    sl_request_header_t req;
    memset(&req, 0, sizeof(req));
    req.method = (sl_str_t){base + d->p->method_off, d->p->method_len};
    req.uri = (sl_str_t){base + d->p->url_off, d->p->url_len};
    req.headers.n = req.headers.cap = d->p->h.n;
    req.headers.items = sl_xcalloc(d->p->h.n ? d->p->h.n : 1, sizeof(sl_header_t));
    for (size_t i = 0; i < d->p->h.n; i++) {
        const hdr_off_t *h = &d->p->h.v[i];
        req.headers.items[i].name = (sl_str_t){base + h->name_off, h->name_len};
        req.headers.items[i].value = hdr_value(d, h);
    }
    sl_str_t settings = hdr_value(d, find_hdr(d, "http2-settings"));
    int rc = sl__h2_down_upgrade(hw, d->base.stream, (const struct sockaddr *)&peer, settings, &req,
                                 in->data + in->parsed, in->len - in->parsed);
    free(req.headers.items);
    if (rc) {
        /* A bad HTTP2-Settings: the connection was not switched; refuse the request. */
        d->state = DOWN_ACTIVE;
        conns_link(hw, d);
        sl__session_reject(&d->base, SL_EPARSE);
        return;
    }
    parse_put(d);
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
        sl_session_t *s = d->base.session;
        if (s && (d->body_hold || d->p->message_done))
            break; /* the session is not ready for more */
        if (b->parsed == b->len)
            break;
        if (d->state == DOWN_IDLE && d->requests == 0 && b->parsed == 0 &&
            d->base.hw->svc->opts.h2c && !sl_stream_is_tls(d->base.stream)) {
            /* HTTP/2 by prior knowledge (RFC 9113 3.3) on a plain listener. */
            int m = sl__h2_preface_match(b->data, b->len);
            if (m == 0)
                break; /* a part of the preface: wait for the rest */
            if (m == 1) {
                to_h2(d, NULL);
                return;
            }
        }
        if (d->state == DOWN_IDLE) {
            d->state = DOWN_HEADERS;
            d->p->msg_start = b->parsed;
            reset_parse_state(d);
            arm(d, TIMER_HEADER, d->base.hw->svc->opts.header_timeout_ms);
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
                sl__session_reject(&d->base, err);
            return;
        }
        b->parsed += used;
        if (d->p->headers_done && !s && d->p->message_done && wants_h2c(d)) {
            to_h2(d, b);
            return;
        }
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
            sl_session_t *ns = sl__session_new(&d->base);
            int rc = build_request(d, ns);
            if (rc)
                sl__session_fail_request(ns, rc);
            else
                sl__session_begin(ns);
            /* The session holds the body until its upstream is ready (resume_body), unless
             * the request has none. It may also be over already (d->base.session is NULL). */
            continue;
        }
        if (s && (d->p->n_body_iov || d->p->message_done)) {
            size_t n = d->p->n_body_iov;
            d->p->n_body_iov = 0;
            if (d->p->message_done)
                disarm(d);
            else if (n)
                arm(d, TIMER_BODY, d->base.hw->svc->opts.body_timeout_ms);
            sl__session_on_request_body(s, d->base.hw->down_iov, n, d->p->message_done);
        }
    }
    if (d->state == DOWN_CLOSING)
        return;
    /* Read more unless the buffer is full; a full buffer resumes when writes complete. */
    int room = b->len < b->cap ? 0 : make_room(d);
    if (room == 0) {
        start_reading(d);
    } else if (room == SL_EHEADER_TOO_LARGE) {
        if (d->base.session)
            sl__session_on_down_error(d->base.session, room);
        else
            sl__session_reject(&d->base, room);
    } else {
        stop_reading(d);
    }
}

static void h1_resume_body(sl_down_t *base)
{
    h1_down_t *d = sl_container_of(base, h1_down_t, base);
    d->body_hold = false;
    if (d->base.session && !d->base.session->req_body_done)
        arm(d, TIMER_BODY, d->base.hw->svc->opts.body_timeout_ms);
    down_process(d);
}

static bool h1_owns(sl_down_t *base, const void *ptr)
{
    h1_down_t *d = sl_container_of(base, h1_down_t, base);
    const char *p = ptr;
    return d->p && p >= d->p->in.data && p < d->p->in.data + d->p->in.cap;
}

static void h1_hold(sl_down_t *base)
{
    sl_container_of(base, h1_down_t, base)->p->in.refs++;
}

static void h1_unhold(sl_down_t *base)
{
    h1_down_t *d = sl_container_of(base, h1_down_t, base);
    /* Writes that referenced our buffer finished: reading may continue. */
    if (d->p && --d->p->in.refs == 0 && d->state != DOWN_CLOSING && !d->reading && !d->peer_eof)
        down_process(d);
}

static bool h1_body_buffered(sl_down_t *base)
{
    h1_down_t *d = sl_container_of(base, h1_down_t, base);
    return d->p && d->p->in.parsed < d->p->in.len;
}

/* ---- writing ----------------------------------------------------------------------------- */

static void on_written(sl_stream_t *st, int status, void *arg)
{
    h1_down_t *d = sl_stream_data(st);
    if (!d)
        return;
    d->base.write_pending--;
    if (d->base.session)
        sl__session_on_down_write_done(d->base.session, status, (int)(intptr_t)arg);
}

static int down_write(h1_down_t *d, const uv_buf_t *bufs, unsigned n, int tag)
{
    if (d->state == DOWN_CLOSING)
        return UV_ECANCELED;
    int rc = sl_stream_write(d->base.stream, bufs, n, on_written, (void *)(intptr_t)tag);
    if (rc == 0)
        d->base.write_pending++;
    return rc;
}

/* ---- responses ----------------------------------------------------------------------------- */

/* Framing and connection handling for the client, and the serialized head. */
static void h1_response_head(sl_session_t *s, sl_response_header_t *r)
{
    h1_down_t *d = sl_container_of(s->down, h1_down_t, base);
    if (r->status == 101) { /* no body; the connection becomes the new protocol's */
        s->resp_body_down = BODY_NONE;
        r->version = 11;
        s->head_buf = sl__h1_serialize_response(&s->arena, r);
        s->head_pending = true;
        return;
    }
    /* gRPC's status comes in trailers: HTTP/1.1 carries them only in chunked framing. */
    const sl_str_t *ct = sl_headers_get(&r->headers, "content-type");
    bool grpc = ct && sl_str_starts_with(*ct, "application/grpc") && s->req.version >= 11;
    if (s->head || (s->resp_body_up == BODY_NONE && !grpc)) {
        s->resp_body_down = BODY_NONE;
    } else if (s->resp_body_up == BODY_LENGTH && !grpc &&
               sl_headers_get(&r->headers, "content-length")) {
        s->resp_body_down = BODY_LENGTH;
    } else if (s->req.version >= 11) {
        sl_headers_remove(&r->headers, "content-length");
        sl_headers_add(&r->headers, "Transfer-Encoding", "chunked");
        s->resp_body_down = BODY_CHUNKED;
    } else {
        sl_headers_remove(&r->headers, "content-length");
        s->resp_body_down = BODY_CLOSE;
        d->base.close_after = true;
    }
    if (s->client_wants_close || d->base.hw->shutting_down || !s->req_body_done)
        d->base.close_after = true;
    /* A response that names an Upgrade (426) lists it in Connection too (RFC 9110 7.8). */
    bool upgrade = sl_headers_get(&r->headers, "upgrade") != NULL;
    if (d->base.close_after)
        sl_headers_add(&r->headers, "Connection", upgrade ? "Upgrade, close" : "close");
    else if (s->req.version == 10)
        sl_headers_add(&r->headers, "Connection", upgrade ? "Upgrade, keep-alive" : "keep-alive");
    else if (upgrade)
        sl_headers_add(&r->headers, "Connection", "Upgrade");
    r->version = s->req.version == 10 ? 10 : 11;
    s->head_buf = sl__h1_serialize_response(&s->arena, r);
    s->head_pending = true;
}

static int h1_response_write(sl_session_t *s, const uv_buf_t *body, unsigned n, bool end, int tag)
{
    h1_down_t *d = sl_container_of(s->down, h1_down_t, base);
    uv_buf_t out[SL_MAX_BODY_IOV * 3 + 4];
    unsigned k = 0;
    if (s->head_pending) {
        s->head_pending = false;
        s->resp_header_sent = true;
        out[k++] = s->head_buf;
    }
    bool chunked = s->resp_body_down == BODY_CHUNKED;
    if (s->resp_body_down != BODY_NONE) {
        for (unsigned i = 0; i < n; i++) {
            if (chunked)
                out[k++] = sl__h1_chunk_header(&s->arena, body[i].len);
            out[k++] = body[i];
            if (chunked)
                out[k++] = uv_buf_init((char *)"\r\n", 2);
            s->body_bytes_sent += body[i].len;
        }
    }
    if (end && chunked)
        out[k++] = sl__h1_last_chunk(&s->arena, &s->up_trailers);
    if (k == 0) /* nothing to write: an empty write completes in order */
        out[k++] = uv_buf_init((char *)"", 0);
    return down_write(d, out, k, tag);
}

static int h1_send_continue(sl_session_t *s)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    uv_buf_t b = uv_buf_init((char *)cont, sizeof(cont) - 1);
    return down_write(sl_container_of(s->down, h1_down_t, base), &b, 1, WTAG_NONE);
}

/* Upgraded: the connection leaves HTTP/1.1 (the bytes after the request go along). */
static sl_stream_t *h1_take_stream(sl_down_t *base, char **lead, size_t *lead_len)
{
    h1_down_t *d = sl_container_of(base, h1_down_t, base);
    sl_http_worker_t *hw = d->base.hw;
    conns_unlink(hw, d);
    disarm(d);
    stop_reading(d);
    *lead = NULL;
    *lead_len = 0;
    if (d->p && d->p->in.len > d->p->in.parsed) {
        *lead_len = d->p->in.len - d->p->in.parsed;
        *lead = sl_xmalloc(*lead_len);
        memcpy(*lead, d->p->in.data + d->p->in.parsed, *lead_len);
    }
    parse_put(d);
    d->state = DOWN_CLOSING;
    d->base.session = NULL;
    return d->base.stream;
}

static const struct sockaddr *h1_peer_addr(const sl_down_t *base)
{
    return &sl_container_of(base, const h1_down_t, base)->peer.sa;
}

/* ---- the end of a request ---------------------------------------------------------------- */

static void h1_session_done(sl_down_t *base)
{
    h1_down_t *d = sl_container_of(base, h1_down_t, base);
    sl_session_t *s = d->base.session;
    d->base.session = NULL;
    sl__session_release(d->base.hw, s);
    d->requests++;
    bool keep = !d->base.close_after && !d->peer_eof && !d->base.hw->shutting_down &&
                d->base.hw->svc->opts.keepalive_timeout_ms > 0 &&
                (!d->base.hw->svc->opts.max_requests_per_conn ||
                 d->requests < d->base.hw->svc->opts.max_requests_per_conn);
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
    arm(d, TIMER_KEEPALIVE, d->base.hw->svc->opts.keepalive_timeout_ms);
    down_process(d);
}

/* ---- accepting --------------------------------------------------------------------------- */

void sl__down_new(sl_http_service_t *svc, sl_stream_t *stream)
{
    sl_http_worker_t *hw = sl__http_worker(svc, sl_stream_worker(stream));
    h1_down_t *d = sl_stream_extra(stream); /* zeroed, freed with the stream */
    d->base.ops = &h1_down_ops;
    atomic_fetch_add_explicit(&hw->st_accepted, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&hw->st_open, 1, memory_order_relaxed);
    d->base.stream = stream;
    d->base.hw = hw;
    d->base.hw->svc = svc;
    d->state = DOWN_IDLE;
    sl_stream_set_data(stream, d);
    struct sockaddr_storage peer;
    if (sl_stream_peer_addr(stream, &peer) == 0) {
        if (peer.ss_family == AF_INET6 || peer.ss_family == AF_INET)
            memcpy(&d->peer, &peer, sizeof(d->peer));
        else
            d->peer.sa.sa_family = peer.ss_family;
    }
    conns_link(hw, d);
    if (hw->shutting_down)
        d->base.close_after = true;
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
        d->base.close_after = true;
        if (expired)
            down_close(d, false);
        else if (d->state == DOWN_IDLE)
            down_close(d, true);
        d = next;
    }
}

static const sl_down_ops_t h1_down_ops = {
    .response_head = h1_response_head,
    .response_write = h1_response_write,
    .send_continue = h1_send_continue,
    .resume_body = h1_resume_body,
    .body_buffered = h1_body_buffered,
    .owns = h1_owns,
    .hold = h1_hold,
    .unhold = h1_unhold,
    .session_done = h1_session_done,
    .abort = h1_abort,
    .peer_addr = h1_peer_addr,
    .take_stream = h1_take_stream,
};
