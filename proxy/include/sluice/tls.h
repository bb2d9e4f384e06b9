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
#include <stdint.h>

#include "error.h"
#include "peer.h"
#include "server.h"

typedef struct sl_tls_settings sl_tls_settings_t;
typedef struct sl_tls_certs sl_tls_certs_t;
typedef struct sl_tls_cert sl_tls_cert_t;

/* A loaded certificate: chain, private key (checked to match) and the names it serves (its
 * SAN DNS and IPv4 entries, else its CN). Reference-counted and immutable once shared, so one
 * loaded certificate can be added to many sets without parsing it again. */
int sl_tls_cert_load_file(const char *cert, const char *key, sl_tls_cert_t **out, sl_error_t *err);
int sl_tls_cert_load_pem(const char *cert_pem, const char *key_pem, sl_tls_cert_t **out,
                         sl_error_t *err);
/* Serve these names ("a.example.com", "*.example.com") instead of the certificate's own
 * (Kubernetes' spec.tls[].hosts). Call before adding it to a set. */
void sl_tls_cert_set_hosts(sl_tls_cert_t *c, const char *const *hosts, size_t n);
size_t sl_tls_cert_names(const sl_tls_cert_t *c, const char *const **names);
/* The end of validity (Unix time). */
int64_t sl_tls_cert_not_after(const sl_tls_cert_t *c);
sl_tls_cert_t *sl_tls_cert_ref(sl_tls_cert_t *c);
void sl_tls_cert_release(sl_tls_cert_t *c);

/* A certificate set: each certificate serves the names of its SANs (exact and "*." wildcard);
 * the first one added is the default for an absent or unknown SNI. */
sl_tls_certs_t *sl_tls_certs_new(void);
/* Adds a loaded certificate (the set takes its own reference). */
int sl_tls_certs_add(sl_tls_certs_t *c, sl_tls_cert_t *cert, sl_error_t *err);
/* The certificate for an absent or unknown SNI (default: the first added). */
void sl_tls_certs_set_default(sl_tls_certs_t *c, size_t index);
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
/* How long a client has to complete the handshake (default 10 s). */
void sl_tls_settings_set_handshake_timeout(sl_tls_settings_t *t, uint64_t ms);
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

/* Loads the trust store and client certificate a peer's options name (as a connection would),
 * so a configuration can be refused before any request needs them. Returns 0 or SL_ETLS. */
int sl_tls_client_check(const sl_peer_options_t *options, const char *default_ca, sl_error_t *err);

#endif
