/* Backends: an IngressBackend -> Service -> port -> EndpointSlices -> "ip:port" list. What
 * cannot be served (no Service, an ExternalName, no ready endpoint) becomes a route that answers
 * 503 and says why, because the gateway refuses an upstream without backends. */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "render.h"
#include "translate_impl.h"
#include "util/mem.h"

#define MAX_UPSTREAM_NAME 128

typedef struct slice_list {
    const wt_slice_t *const *items; /* into t->slice_v */
    size_t n;
} slice_list_t;

/* A resolved backend, shared by every route that names the same Service port. */
typedef struct target {
    const char *upstream; /* or */
    const char *why;      /* the 503 message */
} target_t;

char *wt_tr_printf(wt_tr_t *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *p = wt_pool_alloc(&t->pool, (size_t)(n < 0 ? 0 : n) + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)(n < 0 ? 0 : n) + 1, fmt, ap);
    va_end(ap);
    return p;
}

typedef struct keyed_slice {
    const char *key;
    const wt_slice_t *slice;
} keyed_slice_t;

static int cmp_keyed(const void *a, const void *b)
{
    const keyed_slice_t *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c
             : strcmp(x->slice->name ? x->slice->name : "", y->slice->name ? y->slice->name : "");
}

/* Groups the slices by "ns/service" (one sort, no allocation per Service). */
void wt_tr_backends_init(wt_tr_t *t)
{
    wt_index_init(&t->slices);
    wt_index_init(&t->targets);
    wt_index_init(&t->upstream_names);
    const wt_store_t *s = &t->in->kinds[WT_ENDPOINTSLICE];
    keyed_slice_t *v = sl_xmalloc((s->n ? s->n : 1) * sizeof(*v));
    size_t n = 0;
    WT_STORE_FOREACH(s, e)
    {
        const wt_slice_t *sl = e->obj;
        if (!sl->service)
            continue;
        v[n].key = wt_tr_printf(t, "%s/%s", sl->ns ? sl->ns : "default", sl->service);
        v[n++].slice = sl;
    }
    qsort(v, n, sizeof(*v), cmp_keyed);
    t->slice_v = sl_xmalloc((n ? n : 1) * sizeof(*t->slice_v));
    for (size_t i = 0; i < n;) {
        size_t k = i;
        while (k < n && !strcmp(v[k].key, v[i].key)) {
            t->slice_v[k] = v[k].slice;
            k++;
        }
        slice_list_t *l = wt_pool_alloc(&t->pool, sizeof(*l));
        l->items = &t->slice_v[i];
        l->n = k - i;
        *wt_index_put(&t->slices, v[i].key, strlen(v[i].key)) = l;
        i = k;
    }
    free(v);
}

void wt_tr_backends_free(wt_tr_t *t)
{
    wt_index_free(&t->slices);
    wt_index_free(&t->targets);
    wt_index_free(&t->upstream_names);
    free(t->slice_v);
    free(t->addr_v);
}

void wt_respond_text(wt_buf_t *b, int status, const char *message)
{
    /* The body is the gateway's own error shape: {"status":"error","code":N,"message":...}. */
    wt_buf_t body;
    wt_buf_init(&body);
    wt_buf_puts(&body, "{\"status\":\"error\",\"code\":");
    wt_buf_int(&body, status);
    wt_buf_puts(&body, ",\"message\":");
    wt_buf_str(&body, message);
    wt_buf_puts(&body, "}\n");
    wt_buf_puts(b, "{\"body\":");
    wt_buf_str(b, body.p);
    wt_buf_puts(b, ",\"headers\":{\"Content-Type\":\"application/json\"},\"status\":");
    wt_buf_int(b, status);
    wt_buf_puts(b, "}");
    wt_buf_free(&body);
}

wt_item_t *wt_items_add(wt_tr_t *t, wt_items_t *l, const char *name, const char *text)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->v = sl_xrealloc(l->v, l->cap * sizeof(*l->v));
    }
    wt_item_t *it = &l->v[l->n++];
    it->name = wt_pool_str(&t->out->pool, name);
    it->text = wt_pool_str(&t->out->pool, text);
    it->upstream = NULL;
    return it;
}

/* ---- addresses ----------------------------------------------------------------------------- */

/* The addresses of one Service port: pooled strings in a reused array. */
static void addrs_add(wt_tr_t *t, size_t *n, const char *s)
{
    if (*n == t->addr_cap) {
        t->addr_cap = t->addr_cap ? t->addr_cap * 2 : 16;
        t->addr_v = sl_xrealloc(t->addr_v, t->addr_cap * sizeof(*t->addr_v));
    }
    t->addr_v[(*n)++] = wt_pool_str(&t->pool, s);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool label_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (!n || n > max || s[0] == '-' || s[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

/* The port of a slice that serves the Service port named pname (targetPort rules: a slice
 * port with no number means "all ports": then a numeric targetPort, else the port itself). */
static long slice_port(const wt_slice_t *slice, const char *pname, const wt_sport_t *sp)
{
    for (size_t i = 0; i < slice->n_ports; i++) {
        const wt_eport_t *p = &slice->ports[i];
        if (strcmp(p->name ? p->name : "", pname) != 0 ||
            (p->protocol && strcmp(p->protocol, "TCP") != 0))
            continue;
        if (p->port)
            return p->port;
        return sp->target_number > 0 ? sp->target_number : sp->port;
    }
    return -1;
}

static void slice_addresses(wt_tr_t *t, const wt_slice_t *slice, long port, size_t *out)
{
    const char *type = slice->address_type;
    int af = type && !strcmp(type, "IPv4") ? AF_INET : type && !strcmp(type, "IPv6") ? AF_INET6 : 0;
    char q[96];
    const char *ns = slice->ns ? slice->ns : "default";
    if (!af) {
        wt_diag(t->d, SL_LOG_WARN, "EndpointSlice %s/%s: addressType %s is not supported; skipped",
                ns, slice->name, wt_quote(q, sizeof(q), type ? type : ""));
        return;
    }
    for (size_t i = 0; i < slice->n_endpoints; i++) {
        const wt_endpoint_t *e = &slice->endpoints[i];
        if (e->not_ready)
            continue;
        for (size_t k = 0; k < e->n_addresses; k++) {
            unsigned char bin[16];
            const char *s = e->addresses[k];
            if (!s || strlen(s) > 45 || inet_pton(af, s, bin) != 1) {
                wt_diag(t->d, SL_LOG_WARN,
                        "EndpointSlice %s/%s: address %s is not an %s "
                        "address; skipped",
                        ns, slice->name, wt_quote(q, sizeof(q), s ? s : "(not a string)"),
                        af == AF_INET ? "IPv4" : "IPv6");
                continue;
            }
            char text[80], norm[INET6_ADDRSTRLEN];
            inet_ntop(af, bin, norm, sizeof(norm));
            snprintf(text, sizeof(text), af == AF_INET ? "%s:%ld" : "[%s]:%ld", norm, port);
            addrs_add(t, out, text);
        }
    }
}

/* ---- resolution ---------------------------------------------------------------------------- */

static const char *upstream_name(wt_tr_t *t, const char *ns, const char *svc, long port,
                                 const char *vhost)
{
    char name[512];
    int n = snprintf(name, sizeof(name), "%s.%s.%ld%s%s", ns, svc, port, *vhost ? "@" : "", vhost);
    if (n > MAX_UPSTREAM_NAME) {
        /* Long names (a 63-character namespace and service and a vhost) are cut and made unique
         * again by a hash of the whole. */
        char h[65];
        wt_sha256_hex(name, (size_t)n, h);
        snprintf(name + MAX_UPSTREAM_NAME - 17, sizeof(name) - (MAX_UPSTREAM_NAME - 17), "~%.16s",
                 h);
    }
    return wt_pool_str(&t->pool, name);
}

static target_t *fail(wt_tr_t *t, target_t *g, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static target_t *fail(wt_tr_t *t, target_t *g, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    g->why = wt_pool_str(&t->pool, buf);
    return g;
}

static const wt_sport_t *find_service_port(const wt_service_t *svc, int number, const char *pname)
{
    for (size_t i = 0; i < svc->n_ports; i++) {
        const wt_sport_t *p = &svc->ports[i];
        if (number ? p->port == number : (p->name && !strcmp(p->name, pname)))
            return p;
    }
    return NULL;
}

static target_t *resolve(wt_tr_t *t, const char *ns, const char *name, int number,
                         const char *pname, const char *vhost, const char *who)
{
    target_t *g = wt_pool_alloc(&t->pool, sizeof(*g));
    memset(g, 0, sizeof(*g));
    char key[320], q[96];
    snprintf(key, sizeof(key), "%s/%s", ns, name);
    const wt_service_t *svc = wt_store_get(&t->in->kinds[WT_SERVICE], key);
    if (!svc) {
        wt_diag(t->d, SL_LOG_WARN, "%s: Service %s not found; its paths answer 503", who, key);
        return fail(t, g, "service %s not found", key);
    }
    if (svc->type && !strcmp(svc->type, "ExternalName")) {
        wt_diag(t->d, SL_LOG_WARN,
                "%s: Service %s is an ExternalName (%s): host-name backends are not supported "
                "by the gateway yet; its paths answer 503",
                who, key, wt_quote(q, sizeof(q), svc->external_name));
        return fail(t, g,
                    "service %s is an ExternalName service; host-name backends are not "
                    "supported yet",
                    key);
    }
    const wt_sport_t *sp = find_service_port(svc, number, pname);
    char portdesc[80];
    if (number)
        snprintf(portdesc, sizeof(portdesc), "%d", number);
    else
        snprintf(portdesc, sizeof(portdesc), "\"%s\"", pname);
    if (!sp) {
        wt_diag(t->d, SL_LOG_WARN, "%s: Service %s has no port %s; its paths answer 503", who, key,
                portdesc);
        return fail(t, g, "service %s has no port %s", key, portdesc);
    }
    const char *spname = sp->name;
    long port = sp->port;
    if (port <= 0) {
        wt_diag(t->d, SL_LOG_WARN,
                "%s: Service %s port %s has no valid number; its paths "
                "answer 503",
                who, key, portdesc);
        return fail(t, g, "service %s port %s is not valid", key, portdesc);
    }
    size_t na = 0;
    slice_list_t *l = wt_index_get(&t->slices, key, strlen(key));
    for (size_t i = 0; l && i < l->n; i++) {
        long p = slice_port(l->items[i], spname ? spname : "", sp);
        if (p >= 1 && p <= 65535)
            slice_addresses(t, l->items[i], p, &na);
    }
    if (!na)
        return fail(t, g, "no ready endpoints for service %s port %s", key, portdesc);
    char **av = t->addr_v;
    qsort(av, na, sizeof(*av), cmp_str);
    g->upstream = upstream_name(t, ns, name, port, vhost);
    void **seen = wt_index_put(&t->upstream_names, g->upstream, strlen(g->upstream));
    if (*seen) /* the same Service port, named once by number and once by name */
        return g;
    *seen = g;
    wt_buf_t *b = &t->buf;
    b->len = 0;
    wt_buf_puts(b, "{\"backends\":[");
    for (size_t i = 0; i < na; i++) {
        if (i && strcmp(av[i], av[i - 1]) == 0)
            continue;
        if (i)
            wt_buf_put(b, ",", 1);
        wt_buf_str(b, av[i]);
    }
    wt_buf_put(b, "]", 1);
    if (*vhost) {
        wt_buf_puts(b, ",\"host\":");
        wt_buf_str(b, vhost);
    }
    wt_buf_put(b, "}", 1);
    wt_items_add(t, &t->out->upstreams, g->upstream, b->p);
    return g;
}

static wt_target_t refuse(const char *why)
{
    wt_target_t r = {.upstream = NULL, .status = 503, .why = why};
    return r;
}

wt_target_t wt_tr_target(wt_tr_t *t, const char *ns, const wt_backend_t *backend,
                         const wt_settings_t *s, const char *who)
{
    const char *name = backend->service;
    int number = backend->port_number;
    const char *pname = backend->port_name;
    char q[96];
    if (backend->kind != WT_BACKEND_SERVICE) {
        if (backend->kind == WT_BACKEND_RESOURCE)
            wt_diag(t->d, SL_LOG_WARN,
                    "%s: resource backends are not supported; the path "
                    "answers 503",
                    who);
        else
            wt_diag(t->d, SL_LOG_WARN, "%s: a backend has no service; the path answers 503", who);
        return refuse("this backend is not supported");
    }
    if (!name || !label_ok(name, 63)) {
        wt_diag(t->d, SL_LOG_WARN, "%s: backend service name %s is not valid; the path answers 503",
                who, wt_quote(q, sizeof(q), name ? name : "(missing)"));
        return refuse("invalid backend");
    }
    if (number < 0)
        number = 0, pname = NULL;
    if (!number && (!pname || !label_ok(pname, 15))) {
        wt_diag(t->d, SL_LOG_WARN,
                "%s: backend service %s has no valid port number or name; "
                "the path answers 503",
                who, name);
        return refuse("invalid backend port");
    }
    char key[600];
    if (number)
        snprintf(key, sizeof(key), "%s/%s:%d@%s", ns, name, number, s->vhost);
    else
        snprintf(key, sizeof(key), "%s/%s:%s@%s", ns, name, pname, s->vhost);
    void **slot = wt_index_get(&t->targets, key, strlen(key))
                      ? wt_index_put(&t->targets, key, strlen(key))
                      : wt_index_put(&t->targets, wt_pool_str(&t->pool, key), strlen(key));
    if (!*slot)
        *slot = resolve(t, ns, name, number, pname, s->vhost, who);
    target_t *g = *slot;
    if (g->upstream) {
        wt_target_t r = {.upstream = g->upstream};
        return r;
    }
    return refuse(g->why);
}
