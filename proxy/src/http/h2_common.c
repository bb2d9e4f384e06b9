/* HTTP/2 helpers shared by the client and upstream sides (see h2_common.h). */
#include "http/h2_common.h"

#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "http/proxy_impl.h"
#include "util/mem.h"

/* ---- output -------------------------------------------------------------------------------- */

void h2_out_put(h2_out_t *o, const void *p, size_t n)
{
    if (o->len + n > o->cap) {
        size_t cap = o->cap ? o->cap : 16384;
        while (cap < o->len + n)
            cap *= 2;
        o->buf = sl_xrealloc(o->buf, cap);
        o->cap = cap;
    }
    memcpy(o->buf + o->len, p, n);
    o->len += n;
}

const char *h2_out_swap(h2_out_t *o, size_t *n)
{
    if (o->writing || !o->len)
        return NULL;
    char *b = o->fly;
    size_t cap = o->fly_cap;
    o->fly = o->buf;
    o->fly_cap = o->cap;
    o->fly_len = o->len;
    o->buf = b;
    o->cap = cap;
    o->len = 0;
    o->writing = true;
    *n = o->fly_len;
    return o->fly;
}

void h2_out_free(h2_out_t *o)
{
    free(o->buf);
    free(o->fly);
    memset(o, 0, sizeof(*o));
}

/* ---- body pieces ----------------------------------------------------------------------------- */

static void push(h2_queue_t *q, const char *p, size_t len, int tag, bool end)
{
    if (q->len == q->cap) {
        q->cap = q->cap ? q->cap * 2 : 8;
        q->q = sl_xrealloc(q->q, q->cap * sizeof(*q->q));
    }
    q->q[q->len++] = (h2_piece_t){p, len, tag, end};
    q->bytes += len;
}

void h2_queue_batch(h2_queue_t *q, const uv_buf_t *body, unsigned n, int tag)
{
    size_t first = q->len;
    for (unsigned i = 0; i < n; i++)
        if (body[i].len)
            push(q, body[i].base, body[i].len, tag, false);
    if (q->len == first)
        push(q, NULL, 0, tag, true);
    else
        q->q[q->len - 1].batch_end = true;
}

void h2_queue_pop_markers(h2_queue_t *q, void (*done)(void *arg, int tag), void *arg)
{
    while (q->head < q->len && q->q[q->head].len == 0) {
        if (q->q[q->head].batch_end)
            done(arg, q->q[q->head].tag);
        q->head++;
    }
    if (q->head == q->len)
        q->head = q->len = 0;
}

void h2_queue_take(h2_queue_t *q, h2_out_t *o, size_t n, void (*done)(void *arg, int tag),
                   void *arg)
{
    while (n && q->head < q->len) {
        h2_piece_t *pc = &q->q[q->head];
        size_t k = pc->len < n ? pc->len : n;
        h2_out_put(o, pc->p, k);
        pc->p += k;
        pc->len -= k;
        n -= k;
        q->bytes -= k;
        if (pc->len == 0) {
            if (pc->batch_end)
                done(arg, pc->tag);
            q->head++;
        }
    }
    h2_queue_pop_markers(q, done, arg);
}

void h2_queue_clear(h2_queue_t *q)
{
    q->head = q->len = 0;
    q->bytes = 0;
}

void h2_queue_free(h2_queue_t *q)
{
    free(q->q);
    memset(q, 0, sizeof(*q));
}

/* ---- the connection core ------------------------------------------------------------------- */

void h2_io_done(h2_io_t *io, h2_sout_t *so, int tag)
{
    if (io->n_done == io->cap_done) {
        io->cap_done = io->cap_done ? io->cap_done * 2 : 16;
        io->done = sl_xrealloc(io->done, io->cap_done * sizeof(*io->done));
    }
    io->done[io->n_done++] = (h2_done_t){so, tag};
    so->pins++;
}

static void batch_done(void *arg, int tag)
{
    h2_sout_t *so = arg;
    h2_io_done(so->io, so, tag);
}

/* Tells the sides their batches are framed (outside nghttp2: they may submit more). */
static void dispatch_done(h2_io_t *io)
{
    while (io->n_done && !io->closing) {
        h2_done_t *list = io->done;
        size_t n = io->n_done, cap = io->cap_done;
        io->done = NULL;
        io->n_done = io->cap_done = 0;
        for (size_t i = 0; i < n && !io->closing; i++)
            io->ops->framed(io, list[i].so, list[i].tag);
        if (!io->done) { /* keep the array for next time */
            io->done = list;
            io->cap_done = cap;
        } else {
            free(list);
        }
    }
}

static void flush_now(h2_io_t *io);

static void on_written(sl_stream_t *stream, int status, void *arg)
{
    h2_io_t *io = arg;
    if (io->closing)
        return;
    io->out.writing = false;
    if (status < 0) {
        io->ops->failed(io, status);
        return;
    }
    if (io->ops->written)
        io->ops->written(io);
    if (!io->closing)
        h2_io_flush(io);
}

static void start_write(h2_io_t *io)
{
    if (io->closing || !io->stream)
        return;
    size_t n;
    const char *p = h2_out_swap(&io->out, &n);
    if (!p)
        return;
    uv_buf_t buf = uv_buf_init((char *)p, (unsigned)n);
    int rc = sl_stream_write(io->stream, &buf, 1, on_written, io);
    if (rc) {
        io->out.writing = false;
        io->ops->failed(io, rc);
    }
}

static void flush_deferred(void *arg)
{
    h2_io_t *io = arg;
    io->flush_scheduled = false;
    flush_now(io);
}

void h2_io_flush(h2_io_t *io)
{
    if (io->closing || io->flush_scheduled || !io->ng)
        return;
    io->flush_scheduled = true;
    sl__worker_defer(io->worker, flush_deferred, io);
}

static void flush_now(h2_io_t *io)
{
    if (io->closing || !io->ng)
        return;
    if (io->in_ng || io->flushing) {
        io->want_flush = true;
        return;
    }
    io->flushing = true;
    do {
        io->want_flush = false;
        io->in_ng++;
        int rv = nghttp2_session_send(io->ng);
        io->in_ng--;
        if (rv) {
            io->flushing = false;
            io->ops->failed(io, SL_EH2);
            return;
        }
        dispatch_done(io);
        start_write(io);
    } while (io->want_flush && !io->closing);
    io->flushing = false;
    if (!io->closing && !io->out.writing && !io->out.len && !nghttp2_session_want_read(io->ng) &&
        !nghttp2_session_want_write(io->ng))
        io->ops->finished(io);
}

ssize_t h2_io_input(h2_io_t *io, const char *data, size_t len)
{
    io->in_ng++;
    ssize_t rv = nghttp2_session_mem_recv(io->ng, (const uint8_t *)data, len);
    io->in_ng--;
    return rv;
}

void h2_io_release(h2_io_t *io)
{
    if (io->ng) {
        nghttp2_session_del(io->ng);
        io->ng = NULL;
    }
    free(io->done);
    io->done = NULL;
    io->n_done = io->cap_done = 0;
}

typedef struct io_free {
    void (*fn)(void *);
    void *obj;
    struct sl_worker *worker;
} io_free_t;

static void run_free(void *arg)
{
    io_free_t *f = arg;
    f->fn(f->obj);
    free(f);
}

static void on_socket_closed(sl_stream_t *stream)
{
    io_free_t *f = sl_stream_data(stream);
    if (f) /* after a flush that may still be queued */
        sl__worker_defer(f->worker, run_free, f);
}

void h2_io_close_socket(h2_io_t *io, bool graceful, void (*free_fn)(void *), void *obj)
{
    io_free_t *f = sl_xmalloc(sizeof(*f));
    f->fn = free_fn;
    f->obj = obj;
    f->worker = io->worker;
    if (!io->stream) {
        sl__worker_defer(io->worker, run_free, f);
        return;
    }
    if (io->out.writing) {
        /* The write in flight still points at the output buffer: freed with the socket. */
        sl_stream_set_data(io->stream, f);
        sl_stream_close(io->stream, on_socket_closed);
        return;
    }
    sl_stream_set_data(io->stream, NULL);
    if (graceful)
        sl_stream_close_graceful(io->stream, 2000);
    else
        sl_stream_close(io->stream, NULL);
    /* Freed on the next loop iteration: callers up the stack may still look at io->closing. */
    sl__worker_defer(io->worker, run_free, f);
}

ssize_t h2_io_on_send(nghttp2_session *ng, const uint8_t *data, size_t len, int flags, void *ud)
{
    h2_io_t *io = ud;
    if (h2_out_full(&io->out))
        return NGHTTP2_ERR_WOULDBLOCK;
    h2_out_put(&io->out, data, len);
    return (ssize_t)len;
}

int h2_io_on_send_data(nghttp2_session *ng, nghttp2_frame *f, const uint8_t *framehd, size_t length,
                       nghttp2_data_source *src, void *ud)
{
    h2_io_t *io = ud;
    h2_sout_t *so = src->ptr;
    if (h2_out_full(&io->out))
        return NGHTTP2_ERR_WOULDBLOCK;
    h2_out_put(&io->out, framehd, 9);
    h2_queue_take(&so->q, &io->out, length, batch_done, so);
    return 0;
}

static void set_end(nghttp2_session *ng, h2_sout_t *so, uint32_t *flags)
{
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (so->trailers.n) {
        *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        nghttp2_submit_trailer(ng, so->id, so->trailers.nv, so->trailers.n);
    }
    so->all_framed = true;
}

static ssize_t data_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    h2_sout_t *so = src->ptr;
    if (so->gone && !so->end)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* cut: RST_STREAM */
    h2_queue_pop_markers(&so->q, batch_done, so);
    if (!so->q.bytes) {
        if (so->end) {
            set_end(ng, so, flags);
            return 0;
        }
        so->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = so->q.bytes < length ? so->q.bytes : length;
    *flags |= NGHTTP2_DATA_FLAG_NO_COPY; /* h2_io_on_send_data copies the pieces */
    if (n == so->q.bytes && so->end)
        set_end(ng, so, flags);
    return (ssize_t)n;
}

nghttp2_data_provider h2_sout_provider(h2_sout_t *so)
{
    nghttp2_data_provider prd = {.source.ptr = so, .read_callback = data_read};
    return prd;
}

void h2_sout_push(h2_sout_t *so, const uv_buf_t *body, unsigned n, int tag, bool end)
{
    h2_queue_batch(&so->q, body, n, tag);
    if (end)
        so->end = true;
    if (so->deferred && so->io->ng) {
        so->deferred = false;
        nghttp2_session_resume_data(so->io->ng, so->id);
    }
    h2_io_flush(so->io);
}

void h2_sout_cut(h2_sout_t *so)
{
    so->gone = true;
    h2_queue_clear(&so->q);
}

int h2_sin_append(h2_sin_t *si, const uint8_t *data, size_t len, size_t cap)
{
    sl_iobuf_t *b = &si->in;
    if (!b->data) {
        if (cap < len)
            cap = len;
        b->data = sl_xmalloc(cap);
        b->cap = cap;
    }
    if (b->len + len > b->cap) {
        if (b->refs)
            return -1; /* a peer over its window, and writes point into the buffer */
        size_t ncap = b->cap * 2 > b->len + len ? b->cap * 2 : b->len + len;
        b->data = sl_xrealloc(b->data, ncap);
        b->cap = ncap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

bool h2_sin_owns(const h2_sin_t *si, const void *ptr)
{
    const char *p = ptr;
    return si->in.data && p >= si->in.data && p < si->in.data + si->in.cap;
}

bool h2_sin_consume(h2_sin_t *si, nghttp2_session *ng, int32_t id, bool stream_closed)
{
    if (si->in.refs || !si->delivered)
        return false;
    if (ng) {
        if (stream_closed || !id)
            nghttp2_session_consume_connection(ng, si->delivered);
        else
            nghttp2_session_consume(ng, id, si->delivered);
    }
    memmove(si->in.data, si->in.data + si->delivered, si->in.len - si->delivered);
    si->in.len -= si->delivered;
    si->delivered = 0;
    return true;
}

void h2_sin_drop(h2_sin_t *si, nghttp2_session *ng)
{
    if (si->in.len > si->delivered) {
        nghttp2_session_consume_connection(ng, si->in.len - si->delivered);
        si->in.len = si->delivered;
    }
}

void h2_sout_free(h2_sout_t *so)
{
    h2_queue_free(&so->q);
    h2_trailers_free(&so->trailers);
}

/* ---- fields ---------------------------------------------------------------------------------- */

bool h2_field_forbidden(sl_str_t name, sl_str_t value)
{
    if (sl_str_ieq_cstr(name, "te"))
        return !sl_str_ieq_cstr(value, "trailers");
    return sl__is_hop_by_hop(name);
}

static char *lower(sl_arena_t *a, sl_str_t s)
{
    char *out = sl_arena_alloc(a, s.len + 1);
    for (size_t i = 0; i < s.len; i++) {
        char ch = s.ptr[i];
        out[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);
    }
    out[s.len] = '\0';
    return out;
}

size_t h2_nv_from_headers(sl_arena_t *a, const sl_headers_t *h, nghttp2_nv *nv, bool skip_host)
{
    size_t k = 0;
    for (size_t i = 0; i < h->n; i++) {
        const sl_header_t *e = &h->items[i];
        if (!e->name.len || h2_field_forbidden(e->name, e->value) ||
            (skip_host && sl_str_ieq_cstr(e->name, "host")))
            continue;
        nv[k++] = (nghttp2_nv){(uint8_t *)lower(a, e->name), (uint8_t *)e->value.ptr, e->name.len,
                               e->value.len, NGHTTP2_NV_FLAG_NONE};
    }
    return k;
}

void h2_trailers_copy(h2_trailers_t *t, const sl_headers_t *h)
{
    size_t bytes = 0;
    for (size_t i = 0; i < h->n; i++)
        bytes += h->items[i].name.len + h->items[i].value.len;
    t->nv = sl_xcalloc(h->n ? h->n : 1, sizeof(nghttp2_nv));
    t->mem = sl_xmalloc(bytes ? bytes : 1);
    char *p = t->mem;
    size_t k = 0;
    for (size_t i = 0; i < h->n; i++) {
        const sl_header_t *e = &h->items[i];
        if (!e->name.len || h2_field_forbidden(e->name, e->value))
            continue;
        char *name = p;
        for (size_t j = 0; j < e->name.len; j++) {
            char ch = e->name.ptr[j];
            *p++ = (char)(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);
        }
        char *value = p;
        memcpy(p, e->value.ptr, e->value.len);
        p += e->value.len;
        t->nv[k++] = (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, e->name.len, e->value.len,
                                  NGHTTP2_NV_FLAG_NONE};
    }
    t->n = k;
}

void h2_trailers_free(h2_trailers_t *t)
{
    free(t->nv);
    free(t->mem);
    memset(t, 0, sizeof(*t));
}
