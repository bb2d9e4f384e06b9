/* Byte pipe between two streams (see pipe.h). */
#include "io/pipe.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/error.h"
#include "util/mem.h"
#include "util/timeout.h"

#define PIPE_BUF_SIZE (64 * 1024)

typedef struct pipe_dir {
    sl_pipe_t *p;
    sl_stream_t *src, *dst;
    char *buf;
    size_t len; /* bytes being written to dst */
    uint64_t bytes;
    bool reading, writing, eof, done;
} pipe_dir_t;

struct sl_pipe {
    pipe_dir_t d[2]; /* [0]: a -> b, [1]: b -> a */
    sl_timeout_t tmo;
    uint64_t idle_ms;
    uv_loop_t *loop;
    sl_pipe_done_cb cb;
    void *arg;
    int err;
    int closed; /* streams closed so far */
    bool ending;
};

static void dir_read(pipe_dir_t *d);

static pipe_dir_t *dir_of(sl_pipe_t *p, const sl_stream_t *src)
{
    return p->d[0].src == src ? &p->d[0] : &p->d[1];
}

static void on_closed(sl_stream_t *s)
{
    sl_pipe_t *p = sl_stream_data(s);
    if (++p->closed < 2)
        return;
    if (p->cb)
        p->cb(p->arg, p->err, p->d[0].bytes, p->d[1].bytes);
    free(p->d[0].buf);
    free(p->d[1].buf);
    free(p);
}

void sl__pipe_close(sl_pipe_t *p, int err)
{
    if (p->ending)
        return;
    p->ending = true;
    p->err = err;
    sl_timeout_stop(&p->tmo);
    sl_stream_close(p->d[0].src, on_closed);
    sl_stream_close(p->d[1].src, on_closed);
}

static void on_idle(sl_timeout_t *t)
{
    sl_pipe_t *p = sl_container_of(t, sl_pipe_t, tmo);
    sl__pipe_close(p, SL_ETIMEDOUT_READ);
}

static void touch(sl_pipe_t *p)
{
    if (p->idle_ms)
        sl_timeout_start(p->loop, &p->tmo, p->idle_ms, on_idle);
}

static void maybe_end(sl_pipe_t *p)
{
    if (p->d[0].done && p->d[1].done)
        sl__pipe_close(p, 0);
}

static void on_shutdown(sl_stream_t *s, int status)
{
    sl_pipe_t *p = sl_stream_data(s);
    if (!p || p->ending)
        return;
    /* s is the destination of the direction that ended */
    pipe_dir_t *d = p->d[0].dst == s ? &p->d[0] : &p->d[1];
    d->done = true;
    if (status < 0 && status != UV_ECANCELED)
        sl__pipe_close(p, status);
    else
        maybe_end(p);
}

/* The source ended and everything before its EOF was written: half-close the other side. */
static void dir_finish(pipe_dir_t *d)
{
    if (sl_stream_shutdown(d->dst, on_shutdown) != 0) {
        d->done = true;
        maybe_end(d->p);
    }
}

static void on_written(sl_stream_t *s, int status, void *arg)
{
    pipe_dir_t *d = arg;
    sl_pipe_t *p = d->p;
    if (p->ending)
        return;
    d->writing = false;
    if (status < 0) {
        sl__pipe_close(p, status);
        return;
    }
    d->bytes += d->len;
    d->len = 0;
    if (d->eof)
        dir_finish(d);
    else
        dir_read(d);
}

static void dir_write(pipe_dir_t *d)
{
    uv_buf_t b = uv_buf_init(d->buf, (unsigned)d->len);
    d->writing = true;
    int rc = sl_stream_write(d->dst, &b, 1, on_written, d);
    if (rc) {
        d->writing = false;
        sl__pipe_close(d->p, rc);
    }
}

static void on_alloc(sl_stream_t *s, size_t suggested, uv_buf_t *buf)
{
    sl_pipe_t *p = sl_stream_data(s);
    pipe_dir_t *d = dir_of(p, s);
    if (!d->buf)
        d->buf = sl_xmalloc(PIPE_BUF_SIZE);
    *buf = uv_buf_init(d->buf, PIPE_BUF_SIZE);
}

static void on_read(sl_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    sl_pipe_t *p = sl_stream_data(s);
    if (p->ending)
        return;
    pipe_dir_t *d = dir_of(p, s);
    if (nread < 0) {
        sl_stream_read_stop(s);
        d->reading = false;
        if (nread != UV_EOF) {
            sl__pipe_close(p, (int)nread); /* a reset ends both sides */
            return;
        }
        d->eof = true;
        if (!d->writing)
            dir_finish(d);
        return;
    }
    touch(p);
    /* One buffer per direction: stop reading until the other side took these bytes. */
    sl_stream_read_stop(s);
    d->reading = false;
    d->len = (size_t)nread;
    dir_write(d);
}

static void dir_read(pipe_dir_t *d)
{
    if (d->reading || d->eof || d->p->ending)
        return;
    if (sl_stream_read_start(d->src, on_alloc, on_read) == 0)
        d->reading = true;
    else
        sl__pipe_close(d->p, UV_ECANCELED);
}

sl_pipe_t *sl__pipe_start(sl_stream_t *a, sl_stream_t *b, char *lead_a, size_t lead_a_len,
                          char *lead_b, size_t lead_b_len, uint64_t idle_ms, sl_pipe_done_cb cb,
                          void *arg)
{
    sl_pipe_t *p = sl_xcalloc(1, sizeof(*p));
    p->loop = sl_stream_loop(a);
    p->idle_ms = idle_ms;
    p->cb = cb;
    p->arg = arg;
    p->d[0] = (pipe_dir_t){.p = p, .src = a, .dst = b};
    p->d[1] = (pipe_dir_t){.p = p, .src = b, .dst = a};
    sl_stream_set_data(a, p);
    sl_stream_set_data(b, p);
    touch(p);
    char *leads[2] = {lead_a, lead_b};
    size_t lens[2] = {lead_a_len, lead_b_len};
    for (int i = 0; i < 2; i++) {
        pipe_dir_t *d = &p->d[i];
        if (leads[i] && lens[i]) {
            /* Bytes that arrived with the upgrade go first (the buffer becomes this one). */
            d->buf = sl_xrealloc(leads[i], lens[i] > PIPE_BUF_SIZE ? lens[i] : PIPE_BUF_SIZE);
            d->len = lens[i];
            dir_write(d);
        } else {
            free(leads[i]);
            dir_read(d);
        }
        if (p->ending)
            break;
    }
    return p;
}
