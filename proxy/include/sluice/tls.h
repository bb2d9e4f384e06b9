/* sluice — TLS (OpenSSL 3): listener settings with SNI certificate selection, session tickets
 * with rotating keys, ALPN and client certificates; upstream TLS lives in the peer options.
 *
 * Settings are built on one thread before the server runs; the certificate set of a settings
 * object can be replaced at any time (sl_tls_settings_set_certs) and new handshakes use the new
 * set while existing connections keep theirs. */
#ifndef SLUICE_TLS_H
#define SLUICE_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"
#include "server.h"

typedef struct sl_tls_settings sl_tls_settings_t;
typedef struct sl_tls_certs sl_tls_certs_t;

/* A certificate set: each certificate serves the names of its SANs (exact and "*." wildcard);
 * the first one added is the default for an absent or unknown SNI. */
sl_tls_certs_t *sl_tls_certs_new(void);
/* From files (chain + key). Returns 0 or SL_ETLS with err explaining. */
int sl_tls_certs_add_file(sl_tls_certs_t *c, const char *cert, const char *key, sl_error_t *err);
/* From PEM text (chain + key), as the Kubernetes watcher sends them. */
int sl_tls_certs_add_pem(sl_tls_certs_t *c, const char *cert_pem, const char *key_pem,
                         sl_error_t *err);
size_t sl_tls_certs_count(const sl_tls_certs_t *c);
void sl_tls_certs_free(sl_tls_certs_t *c);

/* Pingora's TlsSettings::intermediate(cert, key): TLS 1.2 and 1.3, Mozilla "intermediate"
 * ciphers, session tickets. */
int sl_tls_settings_intermediate(const char *cert, const char *key, sl_tls_settings_t **out,
                                 sl_error_t *err);
/* Settings with no certificate yet (add them with sl_tls_settings_set_certs). */
sl_tls_settings_t *sl_tls_settings_new(void);
/* ALPN: offer h2 and http/1.1 (enable_h2) — without it only http/1.1 is negotiated. */
void sl_tls_settings_enable_h2(sl_tls_settings_t *t);
/* Requires client certificates signed by the CAs in ca_file (mTLS). */
int sl_tls_settings_set_client_ca(sl_tls_settings_t *t, const char *ca_file, sl_error_t *err);
/* Replaces the certificate set (takes ownership; thread-safe). An empty set refuses
 * handshakes. */
void sl_tls_settings_set_certs(sl_tls_settings_t *t, sl_tls_certs_t *certs);
void sl_tls_settings_free(sl_tls_settings_t *t);

/* A TLS listener: accepted streams finish their handshake before process_new sees them.
 * The service keeps a reference to settings (free them after the server ends). */
int sl_service_add_tls(sl_service_t *service, const char *addr, sl_tls_settings_t *settings);

/* On a TLS stream: the negotiated ALPN protocol ("h2", "http/1.1") or NULL, the SNI the
 * client sent or NULL, the TLS version ("TLSv1.3"), and the verified client certificate's
 * subject (RFC 2253 text) into buf (returns 0, or -1 without one). */
const char *sl_stream_alpn(const sl_stream_t *s);
const char *sl_stream_sni(const sl_stream_t *s);
const char *sl_stream_tls_version(const sl_stream_t *s);
bool sl_stream_is_tls(const sl_stream_t *s);
bool sl_stream_tls_resumed(const sl_stream_t *s);
int sl_stream_client_cert_subject(const sl_stream_t *s, char *buf, size_t cap);

#endif
