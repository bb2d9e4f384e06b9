/* What both HTTP/2 sides share: the output buffer of a connection (frames are produced into
 * one buffer while the previous one is on the socket), the queue of body pieces a stream has
 * yet to frame, and header conversions to nghttp2's name/value form. */
#ifndef SL_HTTP_H2_COMMON_H
#define SL_HTTP_H2_COMMON_H

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "sluice/http.h"
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

#endif
