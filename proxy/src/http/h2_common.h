/* What both HTTP/2 sides share: the output buffer of a connection (frames are produced into
 * one buffer while the previous one is on the socket), the queue of body pieces a stream has
 * yet to frame, and header conversions to nghttp2's name/value form. */
#ifndef SL_HTTP_H2_COMMON_H
#define SL_HTTP_H2_COMMON_H

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "http/proxy_impl.h"
#include "sluice/http.h"
#include "sluice/stream.h"
#include "util/arena.h"

#define H2_OUT_HIGH (64 * 1024) /* stop framing when this much output waits */

/* ---- output -------------------------------------------------------------------------------- */

typedef struct h2_out {
    char *buf, *fly; /* buf fills while fly is on the socket */
    size_t len, cap, fly_len, fly_cap;
    bool writing;
} h2_out_t;

void h2_out_put(h2_out_t *o, const void *p, size_t n);
/* True when framing should wait (the buffer is full enough). */
static inline bool h2_out_full(const h2_out_t *o)
{
    return o->len >= H2_OUT_HIGH;
}
/* Moves what was produced to the socket side; returns its buffer (len in *n) or NULL. */
const char *h2_out_swap(h2_out_t *o, size_t *n);
void h2_out_free(h2_out_t *o);

/* ---- body pieces ----------------------------------------------------------------------------- */

typedef struct h2_piece {
    const char *p;
    size_t len;
    int tag;
    bool batch_end; /* the last piece of one write call */
} h2_piece_t;

typedef struct h2_queue {
    h2_piece_t *q;
    size_t head, len, cap;
    size_t bytes; /* queued, not yet framed */
} h2_queue_t;

/* Queues one write call's pieces (none: a marker that completes in order). */
void h2_queue_batch(h2_queue_t *q, const uv_buf_t *body, unsigned n, int tag);
/* Calls done(arg, tag) for zero-length batches at the front. */
void h2_queue_pop_markers(h2_queue_t *q, void (*done)(void *arg, int tag), void *arg);
/* Copies n framed bytes into o, calling done for each batch whose last byte went. */
void h2_queue_take(h2_queue_t *q, h2_out_t *o, size_t n, void (*done)(void *arg, int tag),
                   void *arg);
void h2_queue_clear(h2_queue_t *q);
void h2_queue_free(h2_queue_t *q);

/* ---- fields ---------------------------------------------------------------------------------- */

/* Connection-specific fields (RFC 9113 8.2.2) never cross to HTTP/2 (te only as "trailers"). */
bool h2_field_forbidden(sl_str_t name, sl_str_t value);
/* Appends headers as lowercase nghttp2 fields (names copied into the arena), skipping the
 * forbidden ones and, when skip_host, Host. */
size_t h2_nv_from_headers(sl_arena_t *a, const sl_headers_t *h, nghttp2_nv *nv, bool skip_host);

/* A private copy of trailers as fields (they are sent after the session may be gone). */
typedef struct h2_trailers {
    nghttp2_nv *nv;
    size_t n;
    char *mem;
} h2_trailers_t;
void h2_trailers_copy(h2_trailers_t *t, const sl_headers_t *h);
void h2_trailers_free(h2_trailers_t *t);

/* ---- the connection core both sides share ------------------------------------------------ */

typedef struct h2_io h2_io_t;
typedef struct h2_sout h2_sout_t;

/* What each side does with the core's events. */
typedef struct h2_io_ops {
    /* A write batch of so was framed (called outside nghttp2): tell its session, then drop
     * the pin the batch held (so->pins--) and free the stream if it is done. */
    void (*framed)(h2_io_t *io, h2_sout_t *so, int tag);
    /* A socket write or nghttp2 failed: close the connection. */
    void (*failed)(h2_io_t *io, int err);
    /* nghttp2 wants to neither read nor write, and the output is out: close. */
    void (*finished)(h2_io_t *io);
    /* A socket write completed (NULL: nothing to do). */
    void (*written)(h2_io_t *io);
} h2_io_ops_t;

/* A stream's outgoing body (the response on the client side, the request body upstream): its
 * pieces wait in q until the windows let them be framed. */
struct h2_sout {
    h2_io_t *io;
    int32_t id;
    h2_queue_t q;
    h2_trailers_t trailers; /* sent after the last DATA */
    int pins;               /* references that keep the stream: completions, calls in flight */
    bool end;               /* the last piece is queued */
    bool all_framed;        /* END_STREAM (or the trailers) framed */
    bool deferred;          /* nghttp2 waits for data */
    bool gone;              /* the session left: no more data comes */
};

/* A stream's incoming body (the request body on the client side, the response body upstream):
 * [0, delivered) was handed to the session, [delivered, len) waits. The window opens again only
 * as delivered bytes are consumed (no write points into them any more). */
typedef struct h2_sin {
    sl_iobuf_t in;
    size_t delivered;
} h2_sin_t;

/* Appends a DATA chunk (the buffer is sized cap on first use: the window, or less when the
 * body's length is known). Returns 0, or -1 when it would have to move bytes still held. */
int h2_sin_append(h2_sin_t *si, const uint8_t *data, size_t len, size_t cap);
bool h2_sin_owns(const h2_sin_t *si, const void *p);
/* Consumes what was delivered once nothing holds it (id 0 or a closed stream: only the
 * connection's window) and drops it from the buffer. Returns true when something opened. */
bool h2_sin_consume(h2_sin_t *si, nghttp2_session *ng, int32_t id, bool stream_closed);
/* The stream closed with bytes never delivered: give the connection window back. */
void h2_sin_drop(h2_sin_t *si, nghttp2_session *ng);

typedef struct h2_done {
    h2_sout_t *so;
    int tag;
} h2_done_t;

/* The first member of each side's connection (nghttp2's user_data). */
struct h2_io {
    const h2_io_ops_t *ops;
    nghttp2_session *ng;
    sl_stream_t *stream;
    struct sl_worker *worker;
    h2_out_t out;
    h2_done_t *done;
    size_t n_done, cap_done;
    int in_ng; /* inside nghttp2 (mem_recv or send): no send from here */
    bool flushing, want_flush, flush_scheduled;
    bool closing; /* torn down; the socket close is pending */
};

/* Frames go out once per loop iteration (deferred): the progress of every stream in this
 * iteration shares one socket write. */
void h2_io_flush(h2_io_t *io);
/* Feeds bytes read from the socket to nghttp2; returns nghttp2's result. */
ssize_t h2_io_input(h2_io_t *io, const char *data, size_t len);
/* Records a batch of so as framed (pins so until dispatched). */
void h2_io_done(h2_io_t *io, h2_sout_t *so, int tag);
/* Drops nghttp2 and the completion list (the connection is closing). */
void h2_io_release(h2_io_t *io);
/* Closes the socket (gracefully when asked and nothing is in flight) and frees obj with
 * free_fn once nothing can reach it any more. */
void h2_io_close_socket(h2_io_t *io, bool graceful, void (*free_fn)(void *), void *obj);
/* nghttp2 callbacks both sides install (user_data: the h2_io_t; data source: the h2_sout_t). */
ssize_t h2_io_on_send(nghttp2_session *ng, const uint8_t *data, size_t len, int flags, void *ud);
int h2_io_on_send_data(nghttp2_session *ng, nghttp2_frame *f, const uint8_t *framehd, size_t length,
                       nghttp2_data_source *src, void *ud);
nghttp2_data_provider h2_sout_provider(h2_sout_t *so);
/* Queues one write batch (end: the body's last piece, the trailers follow it) and wakes the
 * data provider. */
void h2_sout_push(h2_sout_t *so, const uv_buf_t *body, unsigned n, int tag, bool end);
/* The session left before its body was all framed: what is queued goes. */
void h2_sout_cut(h2_sout_t *so);
void h2_sout_free(h2_sout_t *so);

#endif
