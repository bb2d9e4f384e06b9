/* sluice — streams: one asynchronous byte stream API over TCP, unix sockets (and TLS).
 *
 * All calls happen on the stream's worker thread. Reads are delivered into buffers the owner
 * provides (alloc callback), writes complete through a callback, and a stream is freed only
 * after its close completes. */
#ifndef SLUICE_STREAM_H
#define SLUICE_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <uv.h>

#include "server.h"

/* Provide a buffer for the next read (suggested is a hint). Setting buf->len = 0 stops. */
typedef void (*sl_stream_alloc_cb)(sl_stream_t *s, size_t suggested, uv_buf_t *buf);
/* nread > 0: bytes in buf; nread == UV_EOF: the peer closed its side; other negative: error. */
typedef void (*sl_stream_read_cb)(sl_stream_t *s, ssize_t nread, const uv_buf_t *buf);
/* status 0 or a negative error; arg is the one given to sl_stream_write. */
typedef void (*sl_stream_write_cb)(sl_stream_t *s, int status, void *arg);
typedef void (*sl_stream_shutdown_cb)(sl_stream_t *s, int status);
typedef void (*sl_stream_close_cb)(sl_stream_t *s);

int sl_stream_read_start(sl_stream_t *s, sl_stream_alloc_cb alloc, sl_stream_read_cb cb);
int sl_stream_read_stop(sl_stream_t *s);
/* Queues bufs (their memory must stay valid until cb). cb may be NULL. Returns 0 or an error
 * (then cb is not called). */
int sl_stream_write(sl_stream_t *s, const uv_buf_t bufs[], unsigned nbufs, sl_stream_write_cb cb,
                    void *arg);
/* Bytes queued but not yet written (for backpressure). */
size_t sl_stream_write_queue_size(const sl_stream_t *s);
/* Half-close: no more writes; the peer reads EOF once queued bytes are sent. */
int sl_stream_shutdown(sl_stream_t *s, sl_stream_shutdown_cb cb);
/* Closes and frees the stream; cb (may be NULL) runs when done. Safe to call once. */
void sl_stream_close(sl_stream_t *s, sl_stream_close_cb cb);
/* Closes gracefully: queued writes are sent, the write side is shut down, and what the peer
 * still sends is read and discarded until it closes too (or linger_ms pass), so the peer never
 * gets a reset that destroys the response it has not read yet. Then the stream is freed. */
void sl_stream_close_graceful(sl_stream_t *s, uint64_t linger_ms);
/* Ends an app's use of a stream given by process_new: reuse=false closes it gracefully;
 * reuse=true hands it back to its service, which calls process_new again at once (unless the
 * server is shutting down, then it is closed). */
void sl_stream_finish(sl_stream_t *s, bool reuse);

/* The service's per-stream memory (sl_server_app_t.stream_data_size bytes, zeroed), freed with
 * the stream; NULL when the service asked for none. */
void *sl_stream_extra(const sl_stream_t *s);
void sl_stream_set_data(sl_stream_t *s, void *data);
void *sl_stream_data(const sl_stream_t *s);
uv_loop_t *sl_stream_loop(const sl_stream_t *s);
sl_worker_t *sl_stream_worker(const sl_stream_t *s);
/* The service that accepted the stream (NULL for upstream streams). */
sl_service_t *sl_stream_service(const sl_stream_t *s);
bool sl_stream_is_closing(const sl_stream_t *s);

/* Addresses. Return 0 or a negative error. For unix sockets the address family is AF_UNIX. */
int sl_stream_peer_addr(const sl_stream_t *s, struct sockaddr_storage *out);
int sl_stream_local_addr(const sl_stream_t *s, struct sockaddr_storage *out);
/* "1.2.3.4:5678", "[::1]:80" or "unix:/path" into buf (always terminated). */
void sl_sockaddr_str(const struct sockaddr_storage *a, char *buf, size_t cap);
/* The address alone, without the port: "1.2.3.4", "::1". */
void sl_sockaddr_ip_str(const struct sockaddr_storage *a, char *buf, size_t cap);

/* Socket options (no-ops for streams without a socket). */
int sl_stream_set_nodelay(sl_stream_t *s, bool on);
int sl_stream_fileno(const sl_stream_t *s);

#endif
