/* Internal layout of a stream. A stream owns one libuv handle (TCP or pipe); layers such as
 * TLS hook in through `layer` and see the raw socket bytes first. */
#ifndef SL_IO_STREAM_IMPL_H
#define SL_IO_STREAM_IMPL_H

#include "sluice/stream.h"

typedef enum sl_stream_kind { SL_STREAM_TCP, SL_STREAM_PIPE } sl_stream_kind_t;

typedef struct sl_write_req {
    uv_write_t req;
    sl_stream_t *stream;
    sl_stream_write_cb cb;
    void *arg;
    struct sl_write_req *next_free;
} sl_write_req_t;

struct sl_stream {
    sl_worker_t *worker;
    sl_service_t *service; /* accepting service, NULL for upstream connections */
    void *data;
    sl_stream_alloc_cb alloc_cb; /* the application's */
    sl_stream_read_cb read_cb;
    sl_stream_alloc_cb raw_alloc_cb; /* the socket's: the application's, or TLS's */
    sl_stream_read_cb raw_read_cb;
    sl_stream_close_cb close_cb;
    sl_stream_shutdown_cb shutdown_cb;
    uv_shutdown_t *shutdown_req;
    struct sl_linger *linger;
    struct sl_tls *tls; /* TLS on this stream, NULL for plain */
    /* An HTTP CONNECT exchange in progress, or failed (connect_tunnel.c). */
    struct sl_ctun *ctun;
    uint32_t deferred;  /* completed writes whose callbacks have not run yet */
    uint16_t extra_off; /* offset of the app's per-stream memory, 0: none */
    uint8_t kind;       /* sl_stream_kind_t */
    bool closing : 1;
    bool counted : 1; /* holds a worker ref (accepted streams) */
    bool reusing : 1; /* handed back with sl_stream_finish(reuse), process_new not yet called */
    bool closed : 1;  /* the handle closed while reusing or with callbacks due: freed later */

    /* Bytes read ahead by a layer that is done (sl__stream_unread): the next raw reads deliver
     * them before the socket's. raw_reading: raw reads are on (lead bytes first); lead_due: on
     * the thread's list of lead deliveries (linked by lead_next). */
    char *lead;
    uint32_t lead_len, lead_off;
    struct sl_stream *lead_next;
    bool raw_reading : 1;
    bool lead_due : 1;

    /* Last: a TCP stream is allocated without the (larger) pipe part of the union, and the
     * app's memory follows the handle actually used. */
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } u;
};

/* Initialises a TCP or pipe stream on loop with `extra` bytes of zeroed app memory; the caller
 * connects (or accepts into) u.tcp / u.pipe. Close it with sl_stream_close. */
sl_stream_t *sl__stream_new(uv_loop_t *loop, sl_stream_kind_t kind, size_t extra);

/* Gives bytes back: the next raw reads deliver them (copied) before anything from the socket,
 * from the next loop iteration on. For a layer that read past its end (the answer to CONNECT
 * and the tunnel's first bytes in one read). */
void sl__stream_unread(sl_stream_t *s, const char *data, size_t len);

/* Frees a closed stream once nothing deferred points at it any more. */
void sl__stream_release_if_done(sl_stream_t *s);

/* At worker exit: runs due write callbacks and closes the thread's completion handle, then
 * (after the loop's last run) frees its recycled write requests. */
void sl__stream_thread_cleanup(void);
void sl__stream_free_thread_reqs(void);

#endif
