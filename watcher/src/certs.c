/* TLS: the Secrets named by our Ingresses' spec.tls become inline certificates for their hosts
 * ({"hosts": [...], "cert_pem": ..., "key_pem": ...}); --default-ssl-certificate becomes one
 * with no hosts (the certificate for names nothing else covers). A Secret that is missing, is
 * not a certificate and key that match, or names an invalid host is reported and skipped. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pem.h"
#include "translate_impl.h"
#include "util/hmap.h"
#include "util/mem.h"

typedef struct cert {
    char *key; /* "ns/name" */
    char **hosts;
    size_t n_hosts, cap_hosts;
    bool is_default;
} cert_t;

typedef struct certs {
    cert_t *v;
    size_t n, cap;
    sl_hmap_t index;
} certs_t;

static cert_t *cert_at(certs_t *c, const char *key)
{
    void **slot = sl_hmap_put(&c->index, key, strlen(key));
    if (*slot)
        return &c->v[(size_t)*slot - 1];
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 8;
        c->v = sl_xrealloc(c->v, c->cap * sizeof(*c->v));
    }
    cert_t *e = &c->v[c->n++];
    memset(e, 0, sizeof(*e));
    e->key = sl_xstrdup(key);
    *slot = (void *)c->n;
    return e;
}

static void add_host(cert_t *e, const char *h)
{
    for (size_t i = 0; i < e->n_hosts; i++)
        if (!strcmp(e->hosts[i], h))
            return;
    if (e->n_hosts == e->cap_hosts) {
        e->cap_hosts = e->cap_hosts ? e->cap_hosts * 2 : 4;
        e->hosts = sl_xrealloc(e->hosts, e->cap_hosts * sizeof(char *));
    }
    e->hosts[e->n_hosts++] = sl_xstrdup(h);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_cert(const void *a, const void *b)
{
    return strcmp(((const cert_t *)a)->key, ((const cert_t *)b)->key);
}

/* The decoded, checked PEM pair of a Secret, or NULL (reported). */
static bool secret_pem(wt_tr_t *t, const char *key, const char *who, char **cert, size_t *clen,
                       char **pkey, size_t *klen)
{
    const wt_secret_t *s = wt_store_get(&t->in->kinds[WT_SECRET], key);
    *cert = *pkey = NULL;
    if (!s) {
        wt_diag(t->d, SL_LOG_WARN, "%s: TLS Secret %s not found; skipped", who, key);
        return false;
    }
    const char *c64 = s->crt_b64, *k64 = s->key_b64;
    if (!c64 || !k64) {
        wt_diag(t->d, SL_LOG_WARN, "Secret %s: no tls.crt and tls.key; skipped", key);
        return false;
    }
    *cert = wt_base64_decode(c64, clen);
    *pkey = wt_base64_decode(k64, klen);
    char why[300];
    if (!*cert || !*pkey)
        snprintf(why, sizeof(why), "tls.crt or tls.key is not valid base64");
    else if (strlen(*cert) != *clen || strlen(*pkey) != *klen)
        snprintf(why, sizeof(why), "tls.crt or tls.key holds a NUL byte");
    else if (wt_pem_check(*cert, *clen, *pkey, *klen, why, sizeof(why)) == 0)
        return true;
    wt_diag(t->d, SL_LOG_ERROR, "Secret %s: invalid TLS certificate (%s); skipped", key, why);
    free(*cert);
    free(*pkey);
    *cert = *pkey = NULL;
    return false;
}

static void collect(wt_tr_t *t, certs_t *c, const wt_ingress_t *ing)
{
    const char *ns = ing->ns ? ing->ns : "default";
    char who[400], key[400], q[96];
    snprintf(who, sizeof(who), "Ingress %s/%s", ns, ing->name);
    for (size_t i = 0; i < ing->n_tls; i++) {
        const wt_itls_t *tls = &ing->tls[i];
        const char *secret = tls->secret;
        if (!secret || !*secret)
            continue; /* hosts served with the default certificate */
        if (strlen(secret) > 253 || strchr(secret, '/')) {
            wt_diag(t->d, SL_LOG_WARN, "%s: spec.tls secretName %s is not valid; skipped", who,
                    wt_quote(q, sizeof(q), secret));
            continue;
        }
        snprintf(key, sizeof(key), "%s/%s", ns, secret);
        cert_t *e = cert_at(c, key);
        for (size_t k = 0; k < tls->n_hosts; k++) {
            const char *hs = tls->hosts[k];
            if (hs && wt_valid_host(hs, true))
                add_host(e, hs);
            else
                wt_diag(t->d, SL_LOG_WARN, "%s: spec.tls host %s is not a host name; skipped", who,
                        wt_quote(q, sizeof(q), hs ? hs : "(not a string)"));
        }
    }
}

char *wt_tr_certificates(wt_tr_t *t, const wt_ingress_t *const *ingresses, size_t n)
{
    certs_t c = {0};
    sl_hmap_init(&c.index);
    for (size_t i = 0; i < n; i++)
        collect(t, &c, ingresses[i]);
    if (t->o->default_ssl_cert)
        cert_at(&c, t->o->default_ssl_cert)->is_default = true;
    if (c.n > 1)
        qsort(c.v, c.n, sizeof(*c.v), cmp_cert);
    wt_buf_t b;
    wt_buf_init(&b);
    wt_buf_put(&b, "[", 1);
    bool first = true;
    for (size_t i = 0; i < c.n; i++) {
        cert_t *e = &c.v[i];
        char *cert, *pkey;
        size_t clen, klen;
        const char *who = e->is_default ? "--default-ssl-certificate" : "spec.tls";
        if (secret_pem(t, e->key, who, &cert, &clen, &pkey, &klen)) {
            if (e->n_hosts > 1)
                qsort(e->hosts, e->n_hosts, sizeof(char *), cmp_str);
            wt_buf_puts(&b, first ? "{\"cert_pem\":" : ",{\"cert_pem\":");
            first = false;
            wt_buf_str(&b, cert);
            wt_buf_puts(&b, ",\"hosts\":[");
            /* The default certificate serves every name: its own hosts do not narrow it. */
            for (size_t k = 0; !e->is_default && k < e->n_hosts; k++) {
                if (k)
                    wt_buf_put(&b, ",", 1);
                wt_buf_str(&b, e->hosts[k]);
            }
            wt_buf_puts(&b, "],\"key_pem\":");
            wt_buf_str(&b, pkey);
            wt_buf_put(&b, "}", 1);
            free(cert);
            free(pkey);
        }
        for (size_t k = 0; k < e->n_hosts; k++)
            free(e->hosts[k]);
        free(e->hosts);
        free(e->key);
    }
    wt_buf_put(&b, "]", 1);
    free(c.v);
    sl_hmap_free(&c.index);
    return wt_buf_take(&b);
}
