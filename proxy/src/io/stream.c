/* Streams over libuv TCP and pipe handles. */
#include "io/stream_impl.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "core/core.h"
#include "io/connect_tunnel.h"
#include "io/tls.h"
#include "util/mem.h"

#define SL_LOG_TAG "stream"
#include "sluice/log.h"

/* A stream closing gracefully: the timer bounds how long we wait for the peer's EOF. */
typedef struct sl_linger {
    uv_timer_t timer;
    sl_stream_t *stream;
    size_t discarded;
} sl_linger_t;

#define LINGER_MAX_DISCARD (1u << 20)
static __thread char discard_buf[16384];

static void linger_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

/* Write requests are recycled per thread: no malloc per write on the hot path. */
static __thread sl_write_req_t *free_reqs;
static __thread size_t n_free_reqs;

static sl_write_req_t *req_get(void)
{
    sl_write_req_t *r = free_reqs;
    if (r) {
        free_reqs = r->next_free;
        n_free_reqs--;
        return r;
    }
    return sl_xmalloc(sizeof(*r));
}

static void req_put(sl_write_req_t *r)
{
    if (n_free_reqs >= 1024) {
        free(r);
        return;
    }
    r->next_free = free_reqs;
    free_reqs = r;
    n_free_reqs++;
}

/* Writes that completed at once (uv_try_write took everything) still report through their
 * callback, but from the next loop iteration: never from inside sl_stream_write. An idle
 * handle runs them; it is active only while some are due. */
static __thread sl_write_req_t *done_head, *done_tail;
static __thread uv_idle_t done_idle;
static __thread uv_loop_t *done_loop;

static void stream_maybe_free(sl_stream_t *s);
static void deliver_leads(void);

static void on_done_idle(uv_idle_t *h)
{
    sl_write_req_t *list = done_head;
    done_head = done_tail = NULL;
    uv_idle_stop(h);
    while (list) {
        sl_write_req_t *r = list;
        list = r->next_free;
        sl_stream_t *s = r->stream;
        sl_stream_write_cb cb = r->cb;
        void *arg = r->arg;
        req_put(r);
        s->deferred--;
        if (cb)
            cb(s, 0, arg);
        if (s->closed && s->deferred == 0)
            stream_maybe_free(s);
    }
    deliver_leads();
}

/* True when this thread can defer completions for s's loop (not after its cleanup). */
static bool can_defer(sl_stream_t *s)
{
    if (done_loop == s->u.handle.loop)
        return true;
    if (done_loop != NULL)
        return false; /* closed at thread cleanup, or another loop: use the queued path */
    uv_idle_init(s->u.handle.loop, &done_idle);
    done_loop = s->u.handle.loop;
    return true;
}

static void defer_done(sl_stream_t *s, sl_write_req_t *r)
{
    r->next_free = NULL;
    if (done_tail)
        done_tail->next_free = r;
    else
        done_head = r;
    done_tail = r;
    s->deferred++;
    uv_idle_start(&done_idle, on_done_idle);
}

static __thread char done_sentinel;

void sl__stream_thread_cleanup(void)
{
    if (done_loop && done_loop != (uv_loop_t *)&done_sentinel &&
        !uv_is_closing((uv_handle_t *)&done_idle)) {
        on_done_idle(&done_idle); /* due callbacks run before the handle goes */
        uv_close((uv_handle_t *)&done_idle, NULL);
    }
    done_loop = (uv_loop_t *)&done_sentinel; /* never matches a loop again */
}

void sl__stream_free_thread_reqs(void)
{
    while (free_reqs) {
        sl_write_req_t *r = free_reqs;
        free_reqs = r->next_free;
        free(r);
    }
    n_free_reqs = 0;
}

sl_stream_t *sl__stream_new(uv_loop_t *loop, sl_stream_kind_t kind, size_t extra)
{
    size_t size =
        offsetof(sl_stream_t, u) + (kind == SL_STREAM_TCP ? sizeof(uv_tcp_t) : sizeof(uv_pipe_t));
    size = (size + 15) & ~(size_t)15;
    sl_stream_t *s = sl_xcalloc(1, size + extra);
    if (extra)
        s->extra_off = (uint16_t)size;
    s->kind = (uint8_t)kind;
    s->worker = sl_worker_current();
    if (kind == SL_STREAM_TCP)
        uv_tcp_init(loop, &s->u.tcp);
    else
        uv_pipe_init(loop, &s->u.pipe, 0);
    s->u.handle.data = s;
    return s;
}

int sl__stream_accept(sl_listener_handle_t *lh, sl_stream_t **out)
{
    sl_stream_kind_t kind = lh->endpoint->kind == SL_EP_TCP ? SL_STREAM_TCP : SL_STREAM_PIPE;
    sl_stream_t *s =
        sl__stream_new(lh->u.handle.loop, kind, lh->endpoint->service->app.stream_data_size);
    s->worker = lh->worker;
    s->service = lh->endpoint->service;
    int rc = uv_accept(&lh->u.stream, &s->u.stream);
    if (rc) {
        sl_stream_close(s, NULL);
        return rc;
    }
    if (kind == SL_STREAM_TCP)
        uv_tcp_nodelay(&s->u.tcp, 1);
    s->counted = true;
    sl_worker_ref(s->worker);
    *out = s;
    return 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    sl_stream_t *s = h->data;
    s->raw_alloc_cb(s, suggested, buf);
}

static void on_read(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf)
{
    sl_stream_t *s = h->data;
    if (nread == 0)
        return; /* EAGAIN: the buffer is returned unused */
    s->raw_read_cb(s, nread, buf);
}

/* ---- lead bytes (sl__stream_unread) ------------------------------------------------------ */

/* Streams whose lead bytes are due, delivered by done_idle (never from inside a read start). */
static __thread sl_stream_t *lead_head;

static bool lead_schedule(sl_stream_t *s)
{
    if (s->lead_due)
        return true;
    if (!can_defer(s))
        return false;
    s->lead_next = lead_head;
    lead_head = s;
    s->lead_due = true;
    uv_idle_start(&done_idle, on_done_idle);
    return true;
}

static void lead_drop(sl_stream_t *s)
{
    if (s->lead_due) {
        for (sl_stream_t **pp = &lead_head; *pp; pp = &(*pp)->lead_next) {
            if (*pp == s) {
                *pp = s->lead_next;
                break;
            }
        }
        s->lead_due = false;
        s->lead_next = NULL;
    }
    free(s->lead);
    s->lead = NULL;
    s->lead_len = s->lead_off = 0;
}

void sl__stream_unread(sl_stream_t *s, const char *data, size_t len)
{
    if (!len || s->closing)
        return;
    size_t rest = s->lead ? s->lead_len - s->lead_off : 0;
    char *b = sl_xmalloc(len + rest);
    memcpy(b, data, len);
    if (rest)
        memcpy(b + len, s->lead + s->lead_off, rest);
    free(s->lead);
    s->lead = b;
    s->lead_len = (uint32_t)(len + rest);
    s->lead_off = 0;
    if (s->raw_reading) {
        uv_read_stop(&s->u.stream);
        if (!lead_schedule(s)) {
            lead_drop(s); /* the thread is ending: nobody will read them */
            uv_read_start(&s->u.stream, on_alloc, on_read);
        }
    }
}

/* One piece of s's lead bytes to its reader; then the socket's turn when they are all read. */
static void lead_deliver(sl_stream_t *s)
{
    if (s->closing || !s->raw_reading)
        return;
    if (s->lead) {
        uv_buf_t buf = uv_buf_init(NULL, 0);
        size_t left = s->lead_len - s->lead_off;
        s->raw_alloc_cb(s, left, &buf);
        if (!buf.base || !buf.len) {
            s->raw_read_cb(s, UV_ENOBUFS, &buf);
        } else {
            size_t n = buf.len < left ? buf.len : left;
            memcpy(buf.base, s->lead + s->lead_off, n);
            s->lead_off += (uint32_t)n;
            if (s->lead_off == s->lead_len)
                lead_drop(s);
            s->raw_read_cb(s, (ssize_t)n, &buf);
        }
        if (s->closing || !s->raw_reading)
            return;
        if (s->lead && lead_schedule(s))
            return;
        lead_drop(s);
    }
    uv_read_start(&s->u.stream, on_alloc, on_read);
}

static void deliver_leads(void)
{
    /* Streams stay allocated until their close callback, which runs in a later loop phase:
     * a snapshot of the list is safe to walk whatever the readers do. Streams scheduled again
     * meanwhile wait for the next iteration. */
    size_t n = 0;
    for (sl_stream_t *s = lead_head; s; s = s->lead_next)
        n++;
    if (!n)
        return;
    sl_stream_t *few[16];
    sl_stream_t **all = n <= SL_ARRAY_LEN(few) ? few : sl_xmalloc(n * sizeof(*all));
    size_t i = 0;
    for (sl_stream_t *s = lead_head, *next; s; s = next) {
        next = s->lead_next;
        s->lead_next = NULL;
        s->lead_due = false;
        all[i++] = s;
    }
    lead_head = NULL;
    for (i = 0; i < n; i++)
        lead_deliver(all[i]);
    if (all != few)
        free(all);
}

int sl__stream_raw_read_start(sl_stream_t *s, sl_stream_alloc_cb alloc, sl_stream_read_cb cb)
{
    if (s->closing)
        return UV_ECANCELED;
    s->raw_alloc_cb = alloc;
    s->raw_read_cb = cb;
    s->raw_reading = true;
    if (s->lead) {
        if (lead_schedule(s))
            return 0;
        lead_drop(s); /* the thread is ending: nobody will read them */
    }
    return uv_read_start(&s->u.stream, on_alloc, on_read);
}

int sl__stream_raw_read_stop(sl_stream_t *s)
{
    if (s->closing)
        return 0;
    s->raw_reading = false;
    return uv_read_stop(&s->u.stream);
}

int sl_stream_read_start(sl_stream_t *s, sl_stream_alloc_cb alloc, sl_stream_read_cb cb)
{
    if (s->closing)
        return UV_ECANCELED;
    s->alloc_cb = alloc;
    s->read_cb = cb;
    if (s->tls)
        return sl__tls_read_start(s);
    return sl__stream_raw_read_start(s, alloc, cb);
}

int sl_stream_read_stop(sl_stream_t *s)
{
    if (s->closing)
        return 0;
    return s->tls ? sl__tls_read_stop(s) : sl__stream_raw_read_stop(s);
}

static void on_write(uv_write_t *wr, int status)
{
    sl_write_req_t *r = SL_CONTAINER_OF(wr, sl_write_req_t, req);
    sl_stream_t *s = r->stream;
    sl_stream_write_cb cb = r->cb;
    void *arg = r->arg;
    req_put(r);
    if (cb)
        cb(s, status, arg);
}

int sl_stream_write(sl_stream_t *s, const uv_buf_t bufs[], unsigned nbufs, sl_stream_write_cb cb,
                    void *arg)
{
    if (s->closing)
        return UV_ECANCELED;
    if (s->tls)
        return sl__tls_write(s, bufs, nbufs, cb, arg);
    return sl__stream_raw_write(s, bufs, nbufs, cb, arg);
}

int sl__stream_raw_write(sl_stream_t *s, const uv_buf_t bufs[], unsigned nbufs,
                         sl_stream_write_cb cb, void *arg)
{
    if (s->closing)
        return UV_ECANCELED;
    sl_write_req_t *r = req_get();
    r->stream = s;
    r->cb = cb;
    r->arg = arg;
    /* Most writes fit in the socket buffer: write now, without queueing a request (libuv's
     * queued path costs an epoll_ctl per write). */
    uv_buf_t rest[64];
    const uv_buf_t *out = bufs;
    unsigned nout = nbufs;
    if (s->u.stream.write_queue_size == 0 && nbufs <= 64 && can_defer(s)) {
        size_t total = 0;
        for (unsigned i = 0; i < nbufs; i++)
            total += bufs[i].len;
        if (total == 0) { /* nothing to send: only the completion, in order, no syscall */
            defer_done(s, r);
            return 0;
        }
        int w = uv_try_write(&s->u.stream, bufs, nbufs);
        if (w >= 0 && (size_t)w == total) {
            defer_done(s, r);
            return 0;
        }
        if (w < 0 && w != UV_EAGAIN) {
            req_put(r);
            return w;
        }
        if (w > 0) {
            /* Partly written: queue what is left. */
            size_t skip = (size_t)w;
            unsigned k = 0;
            for (unsigned i = 0; i < nbufs; i++) {
                if (skip >= bufs[i].len) {
                    skip -= bufs[i].len;
                    continue;
                }
                rest[k++] = uv_buf_init(bufs[i].base + skip, (unsigned)(bufs[i].len - skip));
                skip = 0;
            }
            out = rest;
            nout = k;
        }
    }
    int rc = uv_write(&r->req, &s->u.stream, out, nout, on_write);
    if (rc)
        req_put(r);
    return rc;
}

size_t sl_stream_write_queue_size(const sl_stream_t *s)
{
    return s->u.stream.write_queue_size;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    sl_stream_t *s = req->data;
    free(req);
    if (s) {
        s->shutdown_req = NULL;
        if (s->shutdown_cb)
            s->shutdown_cb(s, status);
    }
}

int sl_stream_shutdown(sl_stream_t *s, sl_stream_shutdown_cb cb)
{
    if (s->closing || s->shutdown_req)
        return UV_ECANCELED;
    return s->tls ? sl__tls_shutdown(s, cb) : sl__stream_raw_shutdown(s, cb);
}

int sl__stream_raw_shutdown(sl_stream_t *s, sl_stream_shutdown_cb cb)
{
    if (s->closing || s->shutdown_req)
        return UV_ECANCELED;
    s->shutdown_cb = cb;
    s->shutdown_req = sl_xmalloc(sizeof(*s->shutdown_req));
    s->shutdown_req->data = s;
    int rc = uv_shutdown(s->shutdown_req, &s->u.stream, on_shutdown);
    if (rc) {
        free(s->shutdown_req);
        s->shutdown_req = NULL;
    }
    return rc;
}

static void stream_maybe_free(sl_stream_t *s)
{
    if (!s->reusing && s->deferred == 0) {
        sl__tls_free(s->tls);
        sl__ctun_free(s->ctun);
        free(s);
    }
}

void sl__stream_release_if_done(sl_stream_t *s)
{
    if (s->closed)
        stream_maybe_free(s);
}

/* A closing stream's due write callbacks run before its close callback, as libuv runs the
 * cancelled ones: owners free their state in the close callback. */
static void run_due_callbacks(sl_stream_t *s)
{
    sl_write_req_t **pp = &done_head, *prev = NULL;
    while (*pp && s->deferred) {
        sl_write_req_t *r = *pp;
        if (r->stream != s) {
            prev = r;
            pp = &r->next_free;
            continue;
        }
        *pp = r->next_free;
        if (done_tail == r)
            done_tail = prev;
        sl_stream_write_cb cb = r->cb;
        void *arg = r->arg;
        req_put(r);
        s->deferred--;
        if (cb)
            cb(s, 0, arg);
    }
}

static void on_close(uv_handle_t *h)
{
    sl_stream_t *s = h->data;
    if (s->deferred)
        run_due_callbacks(s);
    if (s->shutdown_req)
        s->shutdown_req->data = NULL; /* its callback (ECANCELED) must not touch us */
    if (s->close_cb)
        s->close_cb(s);
    if (s->counted)
        sl_worker_unref(s->worker);
    /* Deferred write callbacks or a pending reuse still point here: they free it. */
    s->closed = true;
    stream_maybe_free(s);
}

void sl_stream_close(sl_stream_t *s, sl_stream_close_cb cb)
{
    if (s->closing)
        return;
    if (s->linger) {
        sl_linger_t *l = s->linger;
        s->linger = NULL;
        uv_close((uv_handle_t *)&l->timer, linger_timer_closed);
    }
    s->closing = true;
    s->close_cb = cb;
    lead_drop(s);
    uv_close(&s->u.handle, on_close);
}

bool sl_stream_is_closing(const sl_stream_t *s)
{
    return s->closing;
}

/* ---- graceful close ------------------------------------------------------------------------ */

static void linger_end(sl_stream_t *s)
{
    sl_linger_t *l = s->linger;
    s->linger = NULL;
    if (l)
        uv_close((uv_handle_t *)&l->timer, linger_timer_closed);
    sl_stream_close(s, NULL);
}

static void linger_alloc(sl_stream_t *s, size_t suggested, uv_buf_t *buf)
{
    *buf = uv_buf_init(discard_buf, sizeof(discard_buf));
}

static void linger_read(sl_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    if (nread < 0 || !s->linger || (s->linger->discarded += (size_t)nread) > LINGER_MAX_DISCARD)
        linger_end(s);
}

static void linger_timeout(uv_timer_t *t)
{
    sl_linger_t *l = t->data;
    linger_end(l->stream);
}

static void linger_shutdown_done(sl_stream_t *s, int status)
{
    if (status < 0 || s->closing) {
        if (!s->closing)
            linger_end(s);
        return;
    }
    if (sl_stream_read_start(s, linger_alloc, linger_read) != 0)
        linger_end(s);
}

void sl_stream_close_graceful(sl_stream_t *s, uint64_t linger_ms)
{
    if (s->closing || s->linger)
        return;
    sl_stream_read_stop(s);
    sl_linger_t *l = sl_xcalloc(1, sizeof(*l));
    l->stream = s;
    uv_timer_init(s->u.handle.loop, &l->timer);
    l->timer.data = l;
    s->linger = l;
    uv_timer_start(&l->timer, linger_timeout, linger_ms, 0);
    if (sl_stream_shutdown(s, linger_shutdown_done) != 0)
        linger_end(s);
}

/* ---- reuse (Pingora's process_new returning Some(stream)) -------------------------------- */

static void reuse_again(void *arg)
{
    sl_stream_t *s = arg;
    s->reusing = false;
    if (s->closed) {
        stream_maybe_free(s);
        return;
    }
    if (s->closing)
        return;
    sl_service_t *svc = s->service;
    sl_shutdown_watch_t *watch = sl_worker_shutdown_watch(s->worker);
    if (sl_shutdown_requested(watch)) {
        sl_stream_close(s, NULL);
        return;
    }
    svc->app.process_new(svc->app_data, s, watch);
}

void sl_stream_finish(sl_stream_t *s, bool reuse)
{
    if (s->closing)
        return;
    if (!reuse || !s->service || !s->worker) {
        sl_stream_close_graceful(s, 5000);
        return;
    }
    sl_stream_read_stop(s);
    s->reusing = true;
    sl__worker_defer(s->worker, reuse_again, s);
}

/* ---- accessors --------------------------------------------------------------------------- */

void *sl_stream_extra(const sl_stream_t *s)
{
    return s->extra_off ? (char *)s + s->extra_off : NULL;
}

void sl_stream_set_data(sl_stream_t *s, void *data)
{
    s->data = data;
}

void *sl_stream_data(const sl_stream_t *s)
{
    return s->data;
}

uv_loop_t *sl_stream_loop(const sl_stream_t *s)
{
    return s->u.handle.loop;
}

sl_worker_t *sl_stream_worker(const sl_stream_t *s)
{
    return s->worker;
}

sl_service_t *sl_stream_service(const sl_stream_t *s)
{
    return s->service;
}

int sl_stream_fileno(const sl_stream_t *s)
{
    uv_os_fd_t fd;
    if (uv_fileno(&s->u.handle, &fd))
        return -1;
    return fd;
}

int sl_stream_set_nodelay(sl_stream_t *s, bool on)
{
    return s->kind == SL_STREAM_TCP ? uv_tcp_nodelay(&s->u.tcp, on) : 0;
}

int sl_stream_peer_addr(const sl_stream_t *s, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof(*out));
    int len = sizeof(*out);
    if (s->kind == SL_STREAM_TCP)
        return uv_tcp_getpeername(&s->u.tcp, (struct sockaddr *)out, &len);
    struct sockaddr_un *un = (struct sockaddr_un *)out;
    un->sun_family = AF_UNIX;
    size_t n = sizeof(un->sun_path);
    int rc = uv_pipe_getpeername(&s->u.pipe, un->sun_path, &n);
    if (rc == UV_ENOBUFS || rc == 0)
        return 0;
    return rc;
}

int sl_stream_local_addr(const sl_stream_t *s, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof(*out));
    int len = sizeof(*out);
    if (s->kind == SL_STREAM_TCP)
        return uv_tcp_getsockname(&s->u.tcp, (struct sockaddr *)out, &len);
    struct sockaddr_un *un = (struct sockaddr_un *)out;
    un->sun_family = AF_UNIX;
    size_t n = sizeof(un->sun_path);
    int rc = uv_pipe_getsockname(&s->u.pipe, un->sun_path, &n);
    return (rc == UV_ENOBUFS || rc == 0) ? 0 : rc;
}

void sl_sockaddr_ip_str(const struct sockaddr_storage *a, char *buf, size_t cap)
{
    if (cap == 0)
        return;
    buf[0] = '\0';
    if (a->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)a)->sin_addr, buf, (socklen_t)cap);
    else if (a->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)a)->sin6_addr, buf, (socklen_t)cap);
    else if (a->ss_family == AF_UNIX)
        snprintf(buf, cap, "unix:%s", ((const struct sockaddr_un *)a)->sun_path);
}

void sl_sockaddr_str(const struct sockaddr_storage *a, char *buf, size_t cap)
{
    char ip[128]; /* fits an IPv6 address and "unix:" + a socket path */
    sl_sockaddr_ip_str(a, ip, sizeof(ip));
    if (a->ss_family == AF_INET)
        snprintf(buf, cap, "%s:%u", ip, ntohs(((const struct sockaddr_in *)a)->sin_port));
    else if (a->ss_family == AF_INET6)
        snprintf(buf, cap, "[%s]:%u", ip, ntohs(((const struct sockaddr_in6 *)a)->sin6_port));
    else if (a->ss_family == AF_UNIX)
        snprintf(buf, cap, "%s", ip);
    else
        snprintf(buf, cap, "-");
}
