/* TLS for streams and listeners (OpenSSL 3, memory BIOs).
 *
 * Bytes from the socket go into the connection's read BIO; SSL_read turns them into plaintext
 * in the application's buffers. Plaintext the application writes goes through SSL_write into
 * the write BIO, whose ciphertext is written to the socket in one write with the
 * application's callback attached. Small buffers are coalesced into full records. */
#include "io/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <openssl/pem.h>
#include <stdatomic.h>
#include <time.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "core/core.h"
#include "util/hmap.h"
#include "util/mem.h"
#include "util/timeout.h"

#define SL_LOG_TAG "tls"
#include "sluice/log.h"

#define RECORD_MAX 16384

/* Mozilla's "intermediate" (TLS 1.2 suites; TLS 1.3 suites are OpenSSL's defaults). */
static const char intermediate_ciphers[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/* ---- session ticket keys ------------------------------------------------------------------ */

/* Stateless resumption: tickets are encrypted with a key that rotates every 12 hours; the
 * previous key still decrypts (and the ticket is renewed), so a rotation costs no full
 * handshake. One key ring for the process: every listener and SNI context shares it. */
typedef struct ticket_key {
    unsigned char name[16], aes[32], hmac[32];
    time_t created;
} ticket_key_t;

static pthread_mutex_t ticket_lock = PTHREAD_MUTEX_INITIALIZER;
static ticket_key_t ticket_keys[2]; /* [0] current, [1] previous */
static bool ticket_ready;
#define TICKET_ROTATE_S (12 * 3600)

static void ticket_new(ticket_key_t *k)
{
    RAND_bytes(k->name, sizeof(k->name));
    RAND_bytes(k->aes, sizeof(k->aes));
    RAND_bytes(k->hmac, sizeof(k->hmac));
    k->created = time(NULL);
}

static int ticket_cb(SSL *ssl, unsigned char *name, unsigned char *iv, EVP_CIPHER_CTX *ectx,
                     EVP_MAC_CTX *hctx, int enc)
{
    pthread_mutex_lock(&ticket_lock);
    time_t now = time(NULL);
    if (!ticket_ready || now - ticket_keys[0].created > TICKET_ROTATE_S) {
        ticket_keys[1] = ticket_keys[0];
        ticket_new(&ticket_keys[0]);
        if (!ticket_ready)
            ticket_keys[1] = ticket_keys[0];
        ticket_ready = true;
    }
    ticket_key_t k;
    int rc;
    if (enc) {
        k = ticket_keys[0];
        memcpy(name, k.name, 16);
        rc = RAND_bytes(iv, EVP_MAX_IV_LENGTH) == 1 ? 1 : -1;
    } else if (!memcmp(name, ticket_keys[0].name, 16)) {
        k = ticket_keys[0];
        /* TLS 1.3 clients use a ticket once (RFC 8446 C.4): send a fresh one on every
         * resumption, or every other connection would be a full handshake. */
        rc = SSL_version(ssl) == TLS1_3_VERSION ? 2 : 1;
    } else if (!memcmp(name, ticket_keys[1].name, 16)) {
        k = ticket_keys[1];
        rc = 2; /* valid, but renew with the current key */
    } else {
        rc = 0; /* unknown key: full handshake */
    }
    pthread_mutex_unlock(&ticket_lock);
    if (rc <= 0)
        return rc;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string("key", k.hmac, sizeof(k.hmac)),
        OSSL_PARAM_construct_utf8_string("digest", (char *)"sha256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (!EVP_MAC_CTX_set_params(hctx, params))
        return -1;
    int ok = enc ? EVP_EncryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k.aes, iv)
                 : EVP_DecryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k.aes, iv);
    return ok ? rc : -1;
}

/* ---- loaded certificates ----------------------------------------------------------------- */

struct sl_tls_cert {
    _Atomic long refs;
    X509 *leaf;
    STACK_OF(X509) * chain; /* the rest of the chain (may be empty) */
    EVP_PKEY *key;
    char **names; /* lowercase SAN DNS names (and IPs as text); "*.x" for wildcards */
    size_t n_names;
    bool explicit_hosts;
};

static const char *ssl_error_text(void)
{
    static __thread char buf[256];
    unsigned long e = ERR_get_error();
    if (!e)
        return "unknown TLS error";
    ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    return buf;
}

static void add_name(sl_tls_cert_t *c, const char *name, size_t len)
{
    char *n = sl_xstrndup(name, len);
    for (char *p = n; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    c->names = sl_xrealloc(c->names, (c->n_names + 1) * sizeof(char *));
    c->names[c->n_names++] = n;
}

static void clear_names(sl_tls_cert_t *c)
{
    for (size_t i = 0; i < c->n_names; i++)
        free(c->names[i]);
    free(c->names);
    c->names = NULL;
    c->n_names = 0;
}

/* The names a certificate serves: its SAN DNS and IP entries, else its CN. */
static void collect_names(sl_tls_cert_t *c)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(c->leaf, NID_subject_alt_name, NULL, NULL);
    int n = sans ? sk_GENERAL_NAME_num(sans) : 0;
    for (int i = 0; i < n; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type == GEN_DNS) {
            const unsigned char *d = ASN1_STRING_get0_data(g->d.dNSName);
            add_name(c, (const char *)d, (size_t)ASN1_STRING_length(g->d.dNSName));
        } else if (g->type == GEN_IPADD && ASN1_STRING_length(g->d.iPAddress) == 4) {
            char ip[32];
            const unsigned char *d = ASN1_STRING_get0_data(g->d.iPAddress);
            snprintf(ip, sizeof(ip), "%u.%u.%u.%u", d[0], d[1], d[2], d[3]);
            add_name(c, ip, strlen(ip));
        }
    }
    GENERAL_NAMES_free(sans);
    if (c->n_names)
        return;
    char cn[256];
    int l =
        X509_NAME_get_text_by_NID(X509_get_subject_name(c->leaf), NID_commonName, cn, sizeof(cn));
    if (l > 0)
        add_name(c, cn, (size_t)l);
}

/* Encrypted keys are not supported: refuse instead of OpenSSL's terminal prompt. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
    return 0;
}

/* Reads a chain (leaf first) and a key from BIOs; checks that they belong together. */
static int load_bios(BIO *cb, BIO *kb, const char *what_cert, const char *what_key,
                     sl_tls_cert_t **out, sl_error_t *err)
{
    sl_tls_cert_t *c = sl_xcalloc(1, sizeof(*c));
    atomic_init(&c->refs, 1);
    int rc = 0;
    c->leaf = cb ? PEM_read_bio_X509_AUX(cb, NULL, no_password, NULL) : NULL;
    if (!c->leaf) {
        rc = sl_error_set(err, SL_ETLS, "%s: no PEM certificate (%s)", what_cert, ssl_error_text());
        goto out;
    }
    c->chain = sk_X509_new_null();
    X509 *extra;
    while ((extra = PEM_read_bio_X509(cb, NULL, no_password, NULL)) != NULL)
        sk_X509_push(c->chain, extra);
    ERR_clear_error(); /* the end of the chain reads as an error */
    c->key = kb ? PEM_read_bio_PrivateKey(kb, NULL, no_password, NULL) : NULL;
    if (!c->key) {
        rc = sl_error_set(err, SL_ETLS, "%s: no PEM private key (%s)", what_key, ssl_error_text());
        goto out;
    }
    if (X509_check_private_key(c->leaf, c->key) != 1) {
        ERR_clear_error();
        rc =
            sl_error_set(err, SL_ETLS, "%s does not match the certificate %s", what_key, what_cert);
        goto out;
    }
    if (X509_cmp_current_time(X509_get0_notAfter(c->leaf)) < 0)
        SL_WARN("%s has expired (it is still served; clients will refuse it)", what_cert);
    collect_names(c);
out:
    if (rc) {
        sl_tls_cert_release(c);
        c = NULL;
    }
    *out = c;
    return rc;
}

int sl_tls_cert_load_file(const char *cert, const char *key, sl_tls_cert_t **out, sl_error_t *err)
{
    BIO *cb = BIO_new_file(cert, "r");
    if (!cb) {
        ERR_clear_error();
        *out = NULL;
        return sl_error_set(err, SL_ETLS, "certificate %s: %s", cert, strerror(errno));
    }
    BIO *kb = BIO_new_file(key, "r");
    if (!kb) {
        ERR_clear_error();
        BIO_free(cb);
        *out = NULL;
        return sl_error_set(err, SL_ETLS, "key %s: %s", key, strerror(errno));
    }
    char wc[PATH_MAX + 16], wk[PATH_MAX + 16];
    snprintf(wc, sizeof(wc), "certificate %s", cert);
    snprintf(wk, sizeof(wk), "key %s", key);
    int rc = load_bios(cb, kb, wc, wk, out, err);
    BIO_free(cb);
    BIO_free(kb);
    return rc;
}

int sl_tls_cert_load_pem(const char *cert_pem, const char *key_pem, sl_tls_cert_t **out,
                         sl_error_t *err)
{
    BIO *cb = BIO_new_mem_buf(cert_pem, -1), *kb = BIO_new_mem_buf(key_pem, -1);
    int rc = load_bios(cb, kb, "cert_pem", "key_pem", out, err);
    BIO_free(cb);
    BIO_free(kb);
    return rc;
}

void sl_tls_cert_set_hosts(sl_tls_cert_t *c, const char *const *hosts, size_t n)
{
    clear_names(c);
    for (size_t i = 0; i < n; i++)
        add_name(c, hosts[i], strlen(hosts[i]));
    c->explicit_hosts = true;
}

size_t sl_tls_cert_names(const sl_tls_cert_t *c, const char *const **names)
{
    *names = (const char *const *)c->names;
    return c->n_names;
}

int64_t sl_tls_cert_not_after(const sl_tls_cert_t *c)
{
    struct tm tm;
    if (ASN1_TIME_to_tm(X509_get0_notAfter(c->leaf), &tm) != 1)
        return 0;
    return (int64_t)timegm(&tm);
}

sl_tls_cert_t *sl_tls_cert_ref(sl_tls_cert_t *c)
{
    atomic_fetch_add(&c->refs, 1);
    return c;
}

void sl_tls_cert_release(sl_tls_cert_t *c)
{
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    X509_free(c->leaf);
    sk_X509_pop_free(c->chain, X509_free);
    EVP_PKEY_free(c->key);
    clear_names(c);
    free(c);
}

/* ---- certificate sets -------------------------------------------------------------------- */

struct sl_tls_certs {
    SSL_CTX **ctxs;
    sl_tls_cert_t **certs;
    size_t n, default_index;
    sl_hmap_t exact;    /* name -> SSL_CTX* */
    sl_hmap_t wildcard; /* ".domain" -> SSL_CTX* */
};

struct sl_tls_settings {
    pthread_rwlock_t lock; /* guards certs: handshakes read, a swap writes */
    sl_tls_certs_t *certs;
    SSL_CTX *empty; /* used when the set is empty: every handshake fails */
    bool h2;
    uint64_t handshake_timeout_ms;
    X509_STORE *client_ca; /* mTLS: verify client certificates against it */
    STACK_OF(X509_NAME) * client_ca_names;
};

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    sl_tls_settings_t *t = arg;
    static const unsigned char h2_h1[] = "\x02h2\x08http/1.1";
    static const unsigned char h1[] = "\x08http/1.1";
    const unsigned char *ours = t->h2 ? h2_h1 : h1;
    unsigned ours_len = t->h2 ? sizeof(h2_h1) - 1 : sizeof(h1) - 1;
    if (SSL_select_next_proto((unsigned char **)out, outlen, ours, ours_len, in, inlen) ==
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_OK;
    return SSL_TLSEXT_ERR_NOACK; /* no common protocol: carry on without ALPN (HTTP/1.1) */
}

static int servername_cb(SSL *ssl, int *alert, void *arg);

/* Settings every server context shares: versions, ciphers, ALPN, tickets, SNI, client CA. */
static void configure_server_ctx(SSL_CTX *ctx, sl_tls_settings_t *t)
{
    static const unsigned char sid_ctx[] = "sluice";
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_cipher_list(ctx, intermediate_ciphers);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF); /* tickets only: no shared cache */
    /* Without a session id context, resuming a session that verified a client certificate
     * fails the handshake. */
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, t);
    SSL_CTX_set_tlsext_servername_callback(ctx, servername_cb);
    SSL_CTX_set_tlsext_servername_arg(ctx, t);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (t->client_ca) {
        X509_STORE_up_ref(t->client_ca);
        SSL_CTX_set_cert_store(ctx, t->client_ca);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        if (t->client_ca_names)
            SSL_CTX_set_client_CA_list(ctx, SSL_dup_CA_list(t->client_ca_names));
    }
}

sl_tls_certs_t *sl_tls_certs_new(void)
{
    sl_tls_certs_t *c = sl_xcalloc(1, sizeof(*c));
    sl_hmap_init(&c->exact);
    sl_hmap_init(&c->wildcard);
    return c;
}

size_t sl_tls_certs_count(const sl_tls_certs_t *c)
{
    return c ? c->n : 0;
}

void sl_tls_certs_free(sl_tls_certs_t *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++) {
        SSL_CTX_free(c->ctxs[i]);
        sl_tls_cert_release(c->certs[i]);
    }
    free(c->ctxs);
    free(c->certs);
    sl_hmap_free(&c->exact);
    sl_hmap_free(&c->wildcard);
    free(c);
}

static SSL_CTX *new_server_ctx(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        sl_oom();
    return ctx;
}

static bool same_names(const sl_tls_cert_t *a, const sl_tls_cert_t *b)
{
    if (a->n_names != b->n_names)
        return false;
    for (size_t i = 0; i < a->n_names; i++) {
        bool found = false;
        for (size_t k = 0; k < b->n_names && !found; k++)
            found = !strcmp(a->names[i], b->names[k]);
        if (!found)
            return false;
    }
    return true;
}

/* A context already serving these names with a certificate of another key type: both go in
 * one context, and OpenSSL gives each client the one its signature algorithms accept (an
 * ECDSA certificate for modern clients, RSA for the others). */
static SSL_CTX *dual_ctx(sl_tls_certs_t *c, const sl_tls_cert_t *cert)
{
    int type = EVP_PKEY_get_base_id(cert->key);
    for (size_t i = 0; i < c->n; i++) {
        if (!same_names(c->certs[i], cert))
            continue;
        bool taken = false; /* this key type already in that context? */
        for (size_t k = 0; k < c->n && !taken; k++)
            taken = c->ctxs[k] == c->ctxs[i] && EVP_PKEY_get_base_id(c->certs[k]->key) == type;
        if (!taken)
            return c->ctxs[i];
    }
    return NULL;
}

int sl_tls_certs_add(sl_tls_certs_t *c, sl_tls_cert_t *cert, sl_error_t *err)
{
    SSL_CTX *ctx = dual_ctx(c, cert);
    bool shared = ctx != NULL;
    if (shared)
        SSL_CTX_up_ref(ctx);
    else
        ctx = new_server_ctx();
    if (SSL_CTX_use_certificate(ctx, cert->leaf) != 1 ||
        SSL_CTX_use_PrivateKey(ctx, cert->key) != 1) {
        SSL_CTX_free(ctx);
        return sl_error_set(err, SL_ETLS, "certificate: %s", ssl_error_text());
    }
    for (int i = 0; i < sk_X509_num(cert->chain); i++)
        if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(cert->chain, i)) != 1) {
            SSL_CTX_free(ctx);
            return sl_error_set(err, SL_ETLS, "certificate chain: %s", ssl_error_text());
        }
    c->ctxs = sl_xrealloc(c->ctxs, (c->n + 1) * sizeof(*c->ctxs));
    c->certs = sl_xrealloc(c->certs, (c->n + 1) * sizeof(*c->certs));
    c->ctxs[c->n] = ctx;
    c->certs[c->n] = sl_tls_cert_ref(cert);
    c->n++;
    for (size_t i = 0; !shared && i < cert->n_names; i++) {
        const char *nm = cert->names[i];
        bool wild = nm[0] == '*' && nm[1] == '.';
        sl_hmap_t *m = wild ? &c->wildcard : &c->exact;
        const char *key = wild ? nm + 1 : nm;
        void **slot = sl_hmap_put(m, key, strlen(key));
        if (!*slot)
            *slot = ctx; /* the first certificate for a name wins */
    }
    return 0;
}

void sl_tls_certs_set_default(sl_tls_certs_t *c, size_t index)
{
    if (index < c->n)
        c->default_index = index;
}

static int add_loaded(sl_tls_certs_t *c, sl_tls_cert_t *cert, sl_error_t *err)
{
    int rc = sl_tls_certs_add(c, cert, err);
    sl_tls_cert_release(cert);
    return rc;
}

int sl_tls_certs_add_file(sl_tls_certs_t *c, const char *cert, const char *key, sl_error_t *err)
{
    sl_tls_cert_t *x = NULL;
    int rc = sl_tls_cert_load_file(cert, key, &x, err);
    return rc ? rc : add_loaded(c, x, err);
}

int sl_tls_certs_add_pem(sl_tls_certs_t *c, const char *cert_pem, const char *key_pem,
                         sl_error_t *err)
{
    sl_tls_cert_t *x = NULL;
    int rc = sl_tls_cert_load_pem(cert_pem, key_pem, &x, err);
    return rc ? rc : add_loaded(c, x, err);
}

/* ---- settings ---------------------------------------------------------------------------- */

sl_tls_settings_t *sl_tls_settings_new(void)
{
    sl_tls_settings_t *t = sl_xcalloc(1, sizeof(*t));
    pthread_rwlock_init(&t->lock, NULL);
    t->handshake_timeout_ms = 10000;
    t->empty = new_server_ctx();
    configure_server_ctx(t->empty, t);
    return t;
}

static void configure_set(sl_tls_settings_t *t, sl_tls_certs_t *c)
{
    for (size_t i = 0; c && i < c->n; i++)
        configure_server_ctx(c->ctxs[i], t);
}

void sl_tls_settings_set_certs(sl_tls_settings_t *t, sl_tls_certs_t *certs)
{
    configure_set(t, certs);
    pthread_rwlock_wrlock(&t->lock);
    sl_tls_certs_t *old = t->certs;
    t->certs = certs;
    pthread_rwlock_unlock(&t->lock);
    /* Connections that picked a context from the old set hold their own reference to it. */
    sl_tls_certs_free(old);
}

int sl_tls_settings_intermediate(const char *cert, const char *key, sl_tls_settings_t **out,
                                 sl_error_t *err)
{
    sl_tls_certs_t *c = sl_tls_certs_new();
    int rc = sl_tls_certs_add_file(c, cert, key, err);
    if (rc) {
        sl_tls_certs_free(c);
        return rc;
    }
    sl_tls_settings_t *t = sl_tls_settings_new();
    sl_tls_settings_set_certs(t, c);
    *out = t;
    return 0;
}

void sl_tls_settings_set_handshake_timeout(sl_tls_settings_t *t, uint64_t ms)
{
    t->handshake_timeout_ms = ms ? ms : 10000;
}

uint64_t sl__tls_handshake_timeout(const sl_tls_settings_t *t)
{
    return t->handshake_timeout_ms;
}

void sl_tls_settings_enable_h2(sl_tls_settings_t *t)
{
    t->h2 = true;
}

int sl_tls_settings_set_client_ca(sl_tls_settings_t *t, const char *ca_file, sl_error_t *err)
{
    X509_STORE *store = X509_STORE_new();
    if (!store || X509_STORE_load_file(store, ca_file) != 1) {
        X509_STORE_free(store);
        return sl_error_set(err, SL_ETLS, "client CA %s: %s", ca_file, ssl_error_text());
    }
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca_file);
    t->client_ca = store;
    t->client_ca_names = names;
    /* Contexts made from now on verify clients; reconfigure the current ones too. */
    configure_server_ctx(t->empty, t);
    pthread_rwlock_wrlock(&t->lock);
    configure_set(t, t->certs);
    pthread_rwlock_unlock(&t->lock);
    return 0;
}

void sl_tls_settings_free(sl_tls_settings_t *t)
{
    if (!t)
        return;
    sl_tls_certs_free(t->certs);
    SSL_CTX_free(t->empty);
    X509_STORE_free(t->client_ca);
    if (t->client_ca_names)
        sk_X509_NAME_pop_free(t->client_ca_names, X509_NAME_free);
    pthread_rwlock_destroy(&t->lock);
    free(t);
}

/* Picks the context whose certificate names the SNI: exact, then one-label wildcard, else the
 * default (first) certificate. */
static SSL_CTX *pick_ctx(sl_tls_settings_t *t, const char *sni)
{
    sl_tls_certs_t *c = t->certs;
    if (!c || !c->n)
        return t->empty;
    if (sni) {
        char lower[256];
        size_t n = strlen(sni);
        if (n < sizeof(lower)) {
            for (size_t i = 0; i < n; i++)
                lower[i] = (char)((sni[i] >= 'A' && sni[i] <= 'Z') ? sni[i] - 'A' + 'a' : sni[i]);
            SSL_CTX *ctx = sl_hmap_get(&c->exact, lower, n);
            if (ctx)
                return ctx;
            const char *dot = memchr(lower, '.', n);
            if (dot && (ctx = sl_hmap_get(&c->wildcard, dot, n - (size_t)(dot - lower))))
                return ctx;
        }
    }
    return c->ctxs[c->default_index];
}

static int servername_cb(SSL *ssl, int *alert, void *arg)
{
    sl_tls_settings_t *t = arg;
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    pthread_rwlock_rdlock(&t->lock);
    SSL_CTX *ctx = pick_ctx(t, sni);
    if (ctx != SSL_get_SSL_CTX(ssl))
        SSL_set_SSL_CTX(ssl, ctx); /* takes its own reference */
    pthread_rwlock_unlock(&t->lock);
    return SSL_TLSEXT_ERR_OK;
}

/* ---- per connection ---------------------------------------------------------------------- */

struct sl_tls {
    SSL *ssl;
    BIO *rbio, *wbio;
    sl_stream_t *stream;
    sl_tls_handshake_cb hs_cb;
    sl_timeout_t hs_timeout;
    bool server, hs_done, hs_reported, app_reading, eof_seen, failed;
    int pending_status;           /* EOF or error to deliver after buffered plaintext */
    sl_stream_alloc_cb app_alloc; /* the application's read callbacks */
    sl_stream_read_cb app_read;
    char err[160];
};

void sl__tls_free(sl_tls_t *t)
{
    if (!t)
        return;
    sl_timeout_stop(&t->hs_timeout);
    SSL_free(t->ssl); /* frees the BIOs */
    free(t);
}

const char *sl__tls_error(const sl_stream_t *s)
{
    return s->tls ? s->tls->err : "";
}

static __thread char raw_buf[RECORD_MAX * 4 + 512];

static void raw_alloc(sl_stream_t *s, size_t suggested, uv_buf_t *buf)
{
    *buf = uv_buf_init(raw_buf, sizeof(raw_buf));
}

typedef struct tls_wreq {
    sl_stream_write_cb cb;
    void *arg;
    char data[];
} tls_wreq_t;

static void raw_written(sl_stream_t *s, int status, void *arg)
{
    tls_wreq_t *w = arg;
    sl_stream_write_cb cb = w->cb;
    void *cb_arg = w->arg;
    free(w);
    if (cb)
        cb(s, status, cb_arg);
}

/* Sends what SSL put in the write BIO, with cb called once it is on the socket. */
static int flush_wbio(sl_tls_t *t, sl_stream_write_cb cb, void *arg)
{
    size_t n = (size_t)BIO_pending(t->wbio);
    if (n == 0) {
        if (!cb)
            return 0;
        /* Nothing to send (an empty write): still complete in order, through the socket. */
    }
    tls_wreq_t *w = sl_xmalloc(sizeof(*w) + (n ? n : 1));
    w->cb = cb;
    w->arg = arg;
    if (n)
        BIO_read(t->wbio, w->data, (int)n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    int rc = sl__stream_raw_write(t->stream, &b, 1, raw_written, w);
    if (rc)
        free(w);
    return rc;
}

static void report_handshake(sl_tls_t *t, int status)
{
    if (t->hs_reported)
        return;
    t->hs_reported = true;
    sl_timeout_stop(&t->hs_timeout);
    t->hs_cb(t->stream, status);
}

static void fail(sl_tls_t *t, const char *why)
{
    if (!t->err[0])
        snprintf(t->err, sizeof(t->err), "%s", why);
    t->failed = true;
    flush_wbio(t, NULL, NULL); /* the alert, if SSL made one */
}

static void deliver(sl_tls_t *t);

static void do_handshake(sl_tls_t *t)
{
    ERR_clear_error();
    int rc = SSL_do_handshake(t->ssl);
    flush_wbio(t, NULL, NULL);
    if (rc == 1) {
        t->hs_done = true;
        report_handshake(t, 0);
        return;
    }
    int e = SSL_get_error(t->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return;
    const char *why = ssl_error_text();
    if (!t->server) {
        long v = SSL_get_verify_result(t->ssl);
        if (v != X509_V_OK)
            why = X509_verify_cert_error_string(v);
    }
    fail(t, why);
    report_handshake(t, SL_ETLS);
}

/* Plaintext to the application while it reads; stops when it stops. */
static void deliver(sl_tls_t *t)
{
    sl_stream_t *s = t->stream;
    while (t->app_reading && !s->closing && t->hs_done) {
        uv_buf_t buf = uv_buf_init(NULL, 0);
        t->app_alloc(s, 65536, &buf);
        if (!buf.base || !buf.len) {
            t->app_read(s, UV_ENOBUFS, &buf);
            return;
        }
        ERR_clear_error();
        int n = SSL_read(t->ssl, buf.base, (int)buf.len);
        if (n > 0) {
            t->app_read(s, n, &buf);
            continue;
        }
        int e = SSL_get_error(t->ssl, n);
        flush_wbio(t, NULL, NULL); /* post-handshake messages (tickets, key updates) */
        if (e == SSL_ERROR_WANT_READ) {
            if (t->pending_status) {
                int st = t->pending_status;
                t->pending_status = 0;
                t->app_read(s, st, &buf);
            }
            return;
        }
        if (e == SSL_ERROR_ZERO_RETURN) {
            t->app_read(s, UV_EOF, &buf);
            return;
        }
        fail(t, ssl_error_text());
        t->app_read(s, SL_ETLS, &buf);
        return;
    }
}

static void raw_read(sl_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    sl_tls_t *t = s->tls;
    if (nread < 0) {
        sl__stream_raw_read_stop(s);
        if (!t->hs_done) {
            fail(t, nread == UV_EOF ? "the peer closed the connection during the handshake"
                                    : uv_strerror((int)nread));
            report_handshake(t, nread == UV_EOF ? SL_ETLS : (int)nread);
            return;
        }
        /* Plaintext still buffered goes first, then the end. */
        t->pending_status = (int)nread;
        t->eof_seen = true;
        deliver(t);
        return;
    }
    BIO_write(t->rbio, buf->base, (int)nread);
    if (!t->hs_done) {
        do_handshake(t);
        if (!t->hs_done)
            return;
    }
    deliver(t);
    /* Ciphertext not yet turned into plaintext is bounded by one socket read: stop reading
     * the socket while the application does not read. */
    if (!t->app_reading && BIO_pending(t->rbio) > 0 && !s->closing)
        sl__stream_raw_read_stop(s);
}

static void hs_timeout(sl_timeout_t *tm)
{
    sl_tls_t *t = sl_container_of(tm, sl_tls_t, hs_timeout);
    fail(t, "handshake timed out");
    report_handshake(t, UV_ETIMEDOUT);
}

static sl_tls_t *tls_new(sl_stream_t *s, SSL_CTX *ctx, bool server, sl_tls_handshake_cb cb)
{
    sl_tls_t *t = sl_xcalloc(1, sizeof(*t));
    t->ssl = SSL_new(ctx);
    if (!t->ssl)
        sl_oom();
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(t->rbio, -1); /* "no data yet", not EOF */
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    t->stream = s;
    t->server = server;
    t->hs_cb = cb;
    s->tls = t;
    return t;
}

int sl__tls_server_start(sl_stream_t *s, sl_tls_settings_t *settings, uint64_t timeout_ms,
                         sl_tls_handshake_cb cb)
{
    pthread_rwlock_rdlock(&settings->lock);
    SSL_CTX *ctx = pick_ctx(settings, NULL);
    sl_tls_t *t = tls_new(s, ctx, true, cb);
    pthread_rwlock_unlock(&settings->lock);
    SSL_set_accept_state(t->ssl);
    sl_timeout_start(s->u.handle.loop, &t->hs_timeout, timeout_ms, hs_timeout);
    return sl__stream_raw_read_start(s, raw_alloc, raw_read);
}

int sl__tls_client_start(sl_stream_t *s, SSL_CTX *ctx, const char *sni, bool verify_name,
                         const struct sockaddr *addr, uint64_t timeout_ms, sl_tls_handshake_cb cb)
{
    sl_tls_t *t = tls_new(s, ctx, false, cb);
    SSL_set_connect_state(t->ssl);
    unsigned char tmp[16];
    bool sni_is_ip =
        sni && *sni && (inet_pton(AF_INET, sni, tmp) == 1 || inet_pton(AF_INET6, sni, tmp) == 1);
    if (sni && *sni && !sni_is_ip)
        SSL_set_tlsext_host_name(t->ssl, sni); /* SNI is for names, not addresses (RFC 6066) */
    if (verify_name) {
        /* The name the certificate must carry: the SNI, an IP given as the SNI, else the
         * address connected to (a SAN IP entry). */
        X509_VERIFY_PARAM *vp = SSL_get0_param(t->ssl);
        char ip[64] = "";
        if (sni && *sni && !sni_is_ip) {
            if (SSL_set1_host(t->ssl, sni) != 1) {
                fail(t, "invalid name to verify");
                return SL_ETLS;
            }
        } else if (sni_is_ip) {
            snprintf(ip, sizeof(ip), "%s", sni);
        } else if (addr && addr->sa_family == AF_INET) {
            inet_ntop(AF_INET, &((const struct sockaddr_in *)addr)->sin_addr, ip, sizeof(ip));
        } else if (addr && addr->sa_family == AF_INET6) {
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)addr)->sin6_addr, ip, sizeof(ip));
        }
        if (ip[0] && X509_VERIFY_PARAM_set1_ip_asc(vp, ip) != 1) {
            fail(t, "invalid address to verify");
            return SL_ETLS;
        }
    }
    sl_timeout_start(s->u.handle.loop, &t->hs_timeout, timeout_ms, hs_timeout);
    int rc = sl__stream_raw_read_start(s, raw_alloc, raw_read);
    if (rc == 0)
        do_handshake(t);
    return rc;
}

/* ---- stream operations ------------------------------------------------------------------- */

static void deliver_later(void *arg)
{
    sl_stream_t *s = arg;
    s->deferred--;
    if (s->closed) {
        sl__stream_release_if_done(s);
        return;
    }
    if (s->tls && s->tls->app_reading && !s->closing) {
        deliver(s->tls);
        if (s->tls->app_reading && !s->tls->eof_seen && !s->closing)
            sl__stream_raw_read_start(s, raw_alloc, raw_read);
    }
}

int sl__tls_read_start(sl_stream_t *s)
{
    sl_tls_t *t = s->tls;
    t->app_alloc = s->alloc_cb;
    t->app_read = s->read_cb;
    t->app_reading = true;
    if (!t->hs_done)
        return 0; /* the handshake reads already */
    if (BIO_pending(t->rbio) > 0 || SSL_pending(t->ssl) > 0 || t->pending_status) {
        /* Plaintext waiting: from the next loop iteration, never re-entrantly. */
        s->deferred++;
        sl__worker_defer(s->worker, deliver_later, s);
        return 0;
    }
    if (t->eof_seen)
        return 0;
    return sl__stream_raw_read_start(s, raw_alloc, raw_read);
}

int sl__tls_read_stop(sl_stream_t *s)
{
    s->tls->app_reading = false;
    /* The socket keeps being read only while the handshake runs. */
    return s->tls->hs_done ? sl__stream_raw_read_stop(s) : 0;
}

int sl__tls_write(sl_stream_t *s, const uv_buf_t bufs[], unsigned nbufs, sl_stream_write_cb cb,
                  void *arg)
{
    sl_tls_t *t = s->tls;
    if (!t->hs_done || t->failed)
        return UV_ENOTCONN;
    /* Small pieces (a head, chunk framing) are gathered into full records. */
    static __thread char rec[RECORD_MAX];
    size_t used = 0;
    ERR_clear_error();
    for (unsigned i = 0; i < nbufs; i++) {
        const char *p = bufs[i].base;
        size_t left = bufs[i].len;
        while (left) {
            if (used == 0 && left >= RECORD_MAX) {
                size_t n = left > RECORD_MAX ? RECORD_MAX : left;
                if (SSL_write(t->ssl, p, (int)n) <= 0) {
                    fail(t, ssl_error_text());
                    return SL_ETLS;
                }
                p += n;
                left -= n;
                continue;
            }
            size_t n = RECORD_MAX - used < left ? RECORD_MAX - used : left;
            memcpy(rec + used, p, n);
            used += n;
            p += n;
            left -= n;
            if (used == RECORD_MAX) {
                if (SSL_write(t->ssl, rec, (int)used) <= 0) {
                    fail(t, ssl_error_text());
                    return SL_ETLS;
                }
                used = 0;
            }
        }
    }
    if (used && SSL_write(t->ssl, rec, (int)used) <= 0) {
        fail(t, ssl_error_text());
        return SL_ETLS;
    }
    return flush_wbio(t, cb, arg);
}

int sl__tls_shutdown(sl_stream_t *s, sl_stream_shutdown_cb cb)
{
    sl_tls_t *t = s->tls;
    if (t->hs_done && !t->failed) {
        SSL_shutdown(t->ssl); /* close_notify, then the TCP half-close */
        flush_wbio(t, NULL, NULL);
    }
    return sl__stream_raw_shutdown(s, cb);
}

/* ---- information ------------------------------------------------------------------------- */

bool sl_stream_is_tls(const sl_stream_t *s)
{
    return s->tls != NULL;
}

const char *sl_stream_alpn(const sl_stream_t *s)
{
    if (!s->tls)
        return NULL;
    const unsigned char *p;
    unsigned len;
    SSL_get0_alpn_selected(s->tls->ssl, &p, &len);
    if (!len)
        return NULL;
    if (len == 2 && !memcmp(p, "h2", 2))
        return "h2";
    if (len == 8 && !memcmp(p, "http/1.1", 8))
        return "http/1.1";
    return "other";
}

const char *sl_stream_sni(const sl_stream_t *s)
{
    return s->tls ? SSL_get_servername(s->tls->ssl, TLSEXT_NAMETYPE_host_name) : NULL;
}

const char *sl_stream_tls_version(const sl_stream_t *s)
{
    return s->tls ? SSL_get_version(s->tls->ssl) : NULL;
}

bool sl_stream_tls_resumed(const sl_stream_t *s)
{
    return s->tls && SSL_session_reused(s->tls->ssl);
}

int sl_stream_client_cert_subject(const sl_stream_t *s, char *buf, size_t cap)
{
    if (!s->tls || !cap)
        return -1;
    X509 *x = SSL_get0_peer_certificate(s->tls->ssl);
    if (!x || SSL_get_verify_result(s->tls->ssl) != X509_V_OK)
        return -1;
    BIO *b = BIO_new(BIO_s_mem());
    X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_RFC2253);
    int n = BIO_read(b, buf, (int)cap - 1);
    BIO_free(b);
    buf[n > 0 ? n : 0] = '\0';
    return n > 0 ? 0 : -1;
}

/* ---- client contexts --------------------------------------------------------------------- */

static pthread_mutex_t client_lock = PTHREAD_MUTEX_INITIALIZER;

/* upstream_debug_ssl_keylog: session secrets of upstream connections go to $SSLKEYLOGFILE (NSS
 * key log format, for Wireshark). Off unless asked; a debugging aid, never for production. */
static _Atomic bool keylog_on;
static pthread_mutex_t keylog_lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *keylog_file;

void sl__tls_keylog_enable(void)
{
    const char *path = getenv("SSLKEYLOGFILE");
    if (!path || !*path) {
        SL_WARN("upstream_debug_ssl_keylog is set but SSLKEYLOGFILE is not: no key log");
        return;
    }
    pthread_mutex_lock(&keylog_lock);
    if (!keylog_file) {
        keylog_file = fopen(path, "a");
        if (keylog_file)
            setvbuf(keylog_file, NULL, _IOLBF, 0);
        else
            SL_WARN("SSLKEYLOGFILE %s: %s", path, strerror(errno));
    }
    pthread_mutex_unlock(&keylog_lock);
    if (keylog_file) {
        SL_WARN("writing upstream TLS session keys to %s (upstream_debug_ssl_keylog)", path);
        atomic_store(&keylog_on, true);
    }
}

static void keylog_cb(const SSL *ssl, const char *line)
{
    pthread_mutex_lock(&keylog_lock);
    if (keylog_file)
        fprintf(keylog_file, "%s\n", line);
    pthread_mutex_unlock(&keylog_lock);
}

static long long file_mtime_ns(const char *path)
{
    struct stat st;
    if (!path || stat(path, &st) != 0)
        return 0;
    return (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
}
static sl_hmap_t client_ctxs; /* options key -> SSL_CTX* (process lifetime) */

SSL_CTX *sl__tls_client_ctx(const sl_peer_t *peer, const char *default_ca, sl_error_t *err)
{
    const sl_peer_options_t *o = &peer->options;
    const char *ca = o->ca_file ? o->ca_file : default_ca;
    char key[1400];
    /* Keyed by the files' change times too: a renewed client certificate or trust store is
     * picked up by the next connection, without a restart. */
    int kl = snprintf(key, sizeof(key), "%s@%lld|%s@%lld|%s@%lld|%d|%d|%d", ca ? ca : "-",
                      file_mtime_ns(ca), o->client_cert ? o->client_cert : "-",
                      file_mtime_ns(o->client_cert), o->client_key ? o->client_key : "-",
                      file_mtime_ns(o->client_key), o->verify_cert, (int)o->alpn,
                      (int)atomic_load(&keylog_on));
    if (kl < 0 || (size_t)kl >= sizeof(key)) {
        sl_error_set(err, SL_ETLS, "TLS file names too long");
        return NULL;
    }
    pthread_mutex_lock(&client_lock);
    SSL_CTX *ctx = sl_hmap_get(&client_ctxs, key, (size_t)kl);
    if (ctx) {
        pthread_mutex_unlock(&client_lock);
        return ctx;
    }
    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        sl_oom();
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (atomic_load(&keylog_on))
        SSL_CTX_set_keylog_callback(ctx, keylog_cb);
    SSL_CTX_set_default_passwd_cb(ctx, no_password);
    int rc = 0;
    if (o->verify_cert) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (ca ? SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1
               : SSL_CTX_set_default_verify_paths(ctx) != 1)
            rc = sl_error_set(err, SL_ETLS, "trust store %s: %s", ca ? ca : "(system)",
                              ssl_error_text());
    }
    if (!rc && o->client_cert) {
        if (SSL_CTX_use_certificate_chain_file(ctx, o->client_cert) != 1)
            rc = sl_error_set(err, SL_ETLS, "client certificate %s: %s", o->client_cert,
                              ssl_error_text());
        else if (SSL_CTX_use_PrivateKey_file(ctx, o->client_key ? o->client_key : o->client_cert,
                                             SSL_FILETYPE_PEM) != 1)
            rc = sl_error_set(err, SL_ETLS, "client key %s: %s",
                              o->client_key ? o->client_key : o->client_cert, ssl_error_text());
    }
    if (!rc && o->alpn != SL_ALPN_NONE) {
        static const unsigned char h2[] = "\x02h2", h1[] = "\x08http/1.1",
                                   both[] = "\x02h2\x08http/1.1";
        const unsigned char *p = o->alpn == SL_ALPN_H2 ? h2 : o->alpn == SL_ALPN_H1 ? h1 : both;
        size_t n = o->alpn == SL_ALPN_H2 ? 3 : o->alpn == SL_ALPN_H1 ? 9 : 12;
        SSL_CTX_set_alpn_protos(ctx, p, (unsigned)n);
    }
    if (rc) {
        SSL_CTX_free(ctx);
        pthread_mutex_unlock(&client_lock);
        return NULL;
    }
    *sl_hmap_put(&client_ctxs, key, (size_t)kl) = ctx;
    pthread_mutex_unlock(&client_lock);
    return ctx;
}

int sl_tls_client_check(const sl_peer_options_t *options, const char *default_ca, sl_error_t *err)
{
    sl_peer_t p;
    memset(&p, 0, sizeof(p));
    p.options = *options;
    return sl__tls_client_ctx(&p, default_ca, err) ? 0 : SL_ETLS;
}
