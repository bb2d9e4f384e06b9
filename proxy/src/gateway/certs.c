/* Certificates in the configuration: listeners[].tls.certificates and the dynamic top-level
 * `certificates` (what the Kubernetes watcher sends), and the per-listener sets built from
 * them.
 *
 * Loaded certificates are cached by the digest of what defines them (the PEM text and hosts,
 * or the file names with their change times and hosts), so a PUT /config that repeats 1,000
 * certificates does not parse 1,000 keys again. The cache keeps what the current
 * configuration uses. */
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gateway/runtime.h"
#include "util/cfg.h"
#include "util/hmap.h"
#include "util/mem.h"

#define SL_LOG_TAG "gateway"
#include "sluice/log.h"

static const char *const cert_keys[] = {"hosts", "cert", "key", "cert_pem", "key_pem", NULL};

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static sl_hmap_t cache; /* digest -> sl_tls_cert_t* (the cache's reference) */
static bool cache_ready;

typedef struct digest {
    EVP_MD_CTX *md;
} digest_t;

static void dg_add(digest_t *d, const char *tag, const void *p, size_t n)
{
    EVP_DigestUpdate(d->md, tag, strlen(tag) + 1);
    uint64_t len = n;
    EVP_DigestUpdate(d->md, &len, sizeof(len));
    EVP_DigestUpdate(d->md, p, n);
}

static void dg_file(digest_t *d, const char *tag, const char *path)
{
    struct stat st;
    long long stamp[3] = {0, 0, 0};
    if (stat(path, &st) == 0) {
        stamp[0] = (long long)st.st_mtim.tv_sec;
        stamp[1] = st.st_mtim.tv_nsec;
        stamp[2] = (long long)st.st_ino;
    }
    dg_add(d, tag, path, strlen(path));
    dg_add(d, "stamp", stamp, sizeof(stamp));
}

static sl_tls_cert_t *cache_get(const unsigned char key[32])
{
    pthread_mutex_lock(&cache_lock);
    sl_tls_cert_t *c = cache_ready ? sl_hmap_get(&cache, (const char *)key, 32) : NULL;
    if (c)
        sl_tls_cert_ref(c);
    pthread_mutex_unlock(&cache_lock);
    return c;
}

static void cache_put(const unsigned char key[32], sl_tls_cert_t *c)
{
    pthread_mutex_lock(&cache_lock);
    if (!cache_ready) {
        sl_hmap_init(&cache);
        cache_ready = true;
    }
    void **slot = sl_hmap_put(&cache, (const char *)key, 32);
    if (!*slot)
        *slot = sl_tls_cert_ref(c);
    pthread_mutex_unlock(&cache_lock);
}

/* With cache_lock held: releases every cached certificate and empties the cache. */
static void cache_drop(void)
{
    if (!cache_ready)
        return;
    for (size_t i = 0; i < cache.cap; i++)
        if (cache.slots[i].key)
            sl_tls_cert_release(cache.slots[i].value);
    sl_hmap_free(&cache);
    cache_ready = false;
}

static void keep(sl_hmap_t *next, const gw_cert_t *certs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        void **slot = sl_hmap_put(next, (const char *)certs[i].digest, 32);
        if (!*slot)
            *slot = sl_tls_cert_ref(certs[i].cert);
    }
}

void gw_certs_cache_keep(const gw_config_t *c)
{
    sl_hmap_t next;
    sl_hmap_init(&next);
    keep(&next, c->certs, c->n_certs);
    for (size_t i = 0; i < c->n_listeners; i++)
        if (c->listeners[i].tls)
            keep(&next, c->listeners[i].tls->certs, c->listeners[i].tls->n_certs);
    pthread_mutex_lock(&cache_lock);
    cache_drop();
    cache = next;
    cache_ready = true;
    pthread_mutex_unlock(&cache_lock);
}

void gw_certs_cache_clear(void)
{
    pthread_mutex_lock(&cache_lock);
    cache_drop();
    pthread_mutex_unlock(&cache_lock);
}

void gw_cert_free(gw_cert_t *c)
{
    sl_tls_cert_release(c->cert);
    c->cert = NULL;
}

static bool valid_cert_host(const char *h)
{
    size_t n = strlen(h);
    if (!n || n > 253)
        return false;
    const char *p = h;
    if (p[0] == '*') {
        if (p[1] != '.' || !p[2])
            return false;
        p += 2;
    }
    for (; *p; p++) {
        char ch = *p;
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '-' || ch == '.';
        if (!ok)
            return false;
    }
    return true;
}

int gw_cert_parse(const cJSON *v, const char *path, bool allow_hosts, gw_cert_t *out,
                  sl_error_t *err)
{
    memset(out, 0, sizeof(*out));
    int rc = sl__cfg_check_keys(v, path, cert_keys, err);
    if (rc)
        return rc;
    char *cert = NULL, *key = NULL, *cert_pem = NULL, *key_pem = NULL, **hosts = NULL;
    size_t n_hosts = 0;
    const cJSON *hv = cJSON_GetObjectItemCaseSensitive(v, "hosts");
    if ((rc = sl__cfg_get_str(v, path, "cert", false, &cert, err)) ||
        (rc = sl__cfg_get_str(v, path, "key", false, &key, err)) ||
        (rc = sl__cfg_get_str(v, path, "cert_pem", false, &cert_pem, err)) ||
        (rc = sl__cfg_get_str(v, path, "key_pem", false, &key_pem, err)))
        goto done;
    if (hv && !cJSON_IsNull(hv)) {
        if (!allow_hosts) {
            rc = sl_error_set(err, SL_ECONFIG,
                              "%s.hosts: a listener's certificates serve the names they carry "
                              "(hosts is for the top-level certificates)",
                              path);
            goto done;
        }
        if ((rc = sl__cfg_get_str_list(v, path, "hosts", &hosts, &n_hosts, err)))
            goto done;
        for (size_t i = 0; i < n_hosts; i++)
            if (!valid_cert_host(hosts[i])) {
                rc = sl_error_set(err, SL_ECONFIG, "%s.hosts[%zu]: \"%s\" is not a host name", path,
                                  i, hosts[i]);
                goto done;
            }
    }
    if (!cert == !cert_pem) {
        rc = sl_error_set(err, SL_ECONFIG, "%s: give either cert (a file) or cert_pem (inline)",
                          path);
        goto done;
    }
    if (cert ? !key || key_pem : !key_pem || key) {
        rc = sl_error_set(err, SL_ECONFIG, "%s: %s needs %s", path, cert ? "cert" : "cert_pem",
                          cert ? "key (a file)" : "key_pem (inline)");
        goto done;
    }
    digest_t d = {EVP_MD_CTX_new()};
    if (!d.md)
        sl_oom();
    EVP_DigestInit_ex(d.md, EVP_sha256(), NULL);
    if (cert) {
        dg_file(&d, "cert", cert);
        dg_file(&d, "key", key);
    } else {
        dg_add(&d, "cert_pem", cert_pem, strlen(cert_pem));
        dg_add(&d, "key_pem", key_pem, strlen(key_pem));
    }
    for (size_t i = 0; i < n_hosts; i++)
        dg_add(&d, "host", hosts[i], strlen(hosts[i]));
    dg_add(&d, "hosts", &n_hosts, sizeof(n_hosts));
    unsigned len = 0;
    EVP_DigestFinal_ex(d.md, out->digest, &len);
    EVP_MD_CTX_free(d.md);
    out->any_host = n_hosts == 0;
    out->cert = cache_get(out->digest);
    if (!out->cert) {
        sl_error_t e2 = {0};
        rc = cert ? sl_tls_cert_load_file(cert, key, &out->cert, &e2)
                  : sl_tls_cert_load_pem(cert_pem, key_pem, &out->cert, &e2);
        if (rc) {
            rc = sl_error_set(err, SL_ECONFIG, "%s: %s", path, e2.msg);
            goto done;
        }
        if (n_hosts)
            sl_tls_cert_set_hosts(out->cert, (const char *const *)hosts, n_hosts);
        cache_put(out->digest, out->cert);
    }
done:
    free(cert);
    free(key);
    free(cert_pem);
    free(key_pem);
    sl__cfg_free_str_list(hosts, n_hosts);
    return rc;
}

int gw_certs_parse_list(const cJSON *list, const char *path, bool allow_hosts, gw_cert_t **out,
                        size_t *n_out, sl_error_t *err)
{
    *out = NULL;
    *n_out = 0;
    if (!list || cJSON_IsNull(list))
        return 0;
    if (!cJSON_IsArray(list))
        return sl_error_set(err, SL_ECONFIG, "%s: expected a list of certificates, got %s", path,
                            sl__cfg_type_name(list));
    size_t n = (size_t)cJSON_GetArraySize(list), i = 0;
    *out = sl_xcalloc(n ? n : 1, sizeof(gw_cert_t));
    for (const cJSON *v = list->child; v; v = v->next, i++) {
        char p[SL_CFG_PATH_MAX];
        sl__cfg_path_index(p, sizeof(p), path, i);
        int rc = gw_cert_parse(v, p, allow_hosts, &(*out)[*n_out], err);
        if (rc)
            return rc;
        (*n_out)++;
    }
    return 0;
}

/* A listener's set: its own certificates first (the first is the default), then the dynamic
 * ones with hosts, then those without (the first of which is the default when the listener
 * has none of its own). The first certificate to claim a name serves it. */
sl_tls_certs_t *gw_listener_certs(const gw_listener_t *l, const gw_config_t *c, sl_error_t *err)
{
    sl_tls_certs_t *set = sl_tls_certs_new();
    size_t dflt = SIZE_MAX;
    int rc = 0;
    for (size_t i = 0; !rc && i < l->tls->n_certs; i++)
        rc = sl_tls_certs_add(set, l->tls->certs[i].cert, err);
    if (l->tls->n_certs)
        dflt = 0;
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; !rc && i < c->n_certs; i++) {
            if (c->certs[i].any_host != (pass == 1))
                continue;
            if (pass == 1 && dflt == SIZE_MAX)
                dflt = sl_tls_certs_count(set);
            rc = sl_tls_certs_add(set, c->certs[i].cert, err);
        }
    if (rc) {
        sl_tls_certs_free(set);
        return NULL;
    }
    if (dflt != SIZE_MAX)
        sl_tls_certs_set_default(set, dflt);
    return set;
}

static bool same_list(const gw_cert_t *a, size_t na, const gw_cert_t *b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (a[i].cert != b[i].cert)
            return false;
    return true;
}

/* Loaded certificates are shared through the cache, so the same inputs give the same
 * pointers; a renewed file (new change time) gives a new one. */
bool gw_certs_same(const gw_config_t *a, const gw_config_t *b)
{
    if (!a || !b || !same_list(a->certs, a->n_certs, b->certs, b->n_certs) ||
        a->n_listeners != b->n_listeners)
        return false;
    for (size_t i = 0; i < a->n_listeners; i++) {
        const gw_listener_tls_t *x = a->listeners[i].tls, *y = b->listeners[i].tls;
        if (!x != !y || (x && !same_list(x->certs, x->n_certs, y->certs, y->n_certs)))
            return false;
    }
    return true;
}
