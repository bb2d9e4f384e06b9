/* TLS over a stream: OpenSSL with memory BIOs between the socket and the application. */
#ifndef SL_IO_TLS_H
#define SL_IO_TLS_H

#include <openssl/ssl.h>

#include "sluice/peer.h"
#include "sluice/tls.h"
#include "io/stream_impl.h"

typedef struct sl_tls sl_tls_t;

/* Called once when the handshake ends: status 0, or SL_ETLS / UV_ETIMEDOUT / a read error. */
typedef void (*sl_tls_handshake_cb)(sl_stream_t *s, int status);

/* Server side, on an accepted stream. */
int sl__tls_server_start(sl_stream_t *s, sl_tls_settings_t *settings, uint64_t timeout_ms,
                         sl_tls_handshake_cb cb);
uint64_t sl__tls_handshake_timeout(const sl_tls_settings_t *t);
/* Client side, on a connected stream: sni may be NULL; verify_name checks the certificate
 * against sni, or without one against addr's IP (a unix socket has no name to check). */
int sl__tls_client_start(sl_stream_t *s, SSL_CTX *ctx, const char *sni, bool verify_name,
                         const struct sockaddr *addr, uint64_t timeout_ms, sl_tls_handshake_cb cb);

/* The client context for a peer's TLS options (cached per distinct options; the cache holds
 * a reference). default_ca is the server's ca_file (NULL: the system's trust store). */
SSL_CTX *sl__tls_client_ctx(const sl_peer_t *peer, const char *default_ca, sl_error_t *err);

/* upstream_debug_ssl_keylog: client contexts made from now on log keys to $SSLKEYLOGFILE. */
void sl__tls_keylog_enable(void);

/* Stream operations while TLS is on (stream.c dispatches here). */
int sl__tls_read_start(sl_stream_t *s);
int sl__tls_read_stop(sl_stream_t *s);
int sl__tls_write(sl_stream_t *s, const uv_buf_t bufs[], unsigned nbufs, sl_stream_write_cb cb,
                  void *arg);
int sl__tls_shutdown(sl_stream_t *s, sl_stream_shutdown_cb cb);
void sl__tls_free(sl_tls_t *t);
/* Why the last handshake of s failed (for logs), or "". */
const char *sl__tls_error(const sl_stream_t *s);

/* Raw socket operations (stream.c), used under TLS. */
int sl__stream_raw_read_start(sl_stream_t *s, sl_stream_alloc_cb alloc, sl_stream_read_cb cb);
int sl__stream_raw_read_stop(sl_stream_t *s);
int sl__stream_raw_write(sl_stream_t *s, const uv_buf_t bufs[], unsigned nbufs,
                         sl_stream_write_cb cb, void *arg);
int sl__stream_raw_shutdown(sl_stream_t *s, sl_stream_shutdown_cb cb);

#endif
