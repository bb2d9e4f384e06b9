/* JSON objects -> compact models. */
#include "model.h"

#include <stdlib.h>
#include <string.h>

#include "objects.h"
#include "util/mem.h"

/* ---- pools ---------------------------------------------------------------------------------- */

struct wt_pool_block {
    wt_pool_block_t *next;
    size_t used, size;
    _Alignas(16) char data[];
};

void *wt_pool_alloc(wt_pool_t *p, size_t n)
{
    n = (n + 7) & ~(size_t)7;
    wt_pool_block_t *b = p->blocks;
    if (!b || b->size - b->used < n) {
        /* Small objects fit the first block; bigger needs grow by doubling up to 64 KiB
         * blocks (a translated config's 1 MB of text wastes little). */
        size_t size = b ? b->size * 2 : 256;
        if (size > 65536)
            size = 65536;
        if (size < n)
            size = n;
        wt_pool_block_t *nb = sl_xmalloc(sizeof(*nb) + size);
        nb->next = b;
        nb->used = 0;
        nb->size = size;
        p->blocks = b = nb;
    }
    void *r = b->data + b->used;
    b->used += n;
    return r;
}

char *wt_pool_str(wt_pool_t *p, const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = wt_pool_alloc(p, n);
    memcpy(d, s, n);
    return d;
}

void wt_pool_free(wt_pool_t *p)
{
    wt_pool_block_t *b = p->blocks;
    while (b) {
        wt_pool_block_t *next = b->next;
        free(b);
        b = next;
    }
    p->blocks = NULL;
}

/* ---- helpers -------------------------------------------------------------------------------- */

static const char *str(wt_pool_t *p, const cJSON *v)
{
    return cJSON_IsString(v) ? wt_pool_str(p, v->valuestring) : NULL;
}

/* A port number: 0 when absent, -1 when present but not 1..65535. */
static int port_of(const cJSON *v)
{
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > 65535 ||
        v->valuedouble != (double)(int)v->valuedouble)
        return -1;
    return (int)v->valuedouble;
}

static size_t count(const cJSON *arr)
{
    return cJSON_IsArray(arr) ? (size_t)cJSON_GetArraySize(arr) : 0;
}

static void *array(wt_pool_t *p, size_t n, size_t size)
{
    if (!n)
        return NULL;
    void *a = wt_pool_alloc(p, n * size);
    memset(a, 0, n * size);
    return a;
}

static void backend(wt_pool_t *p, const cJSON *b, wt_backend_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!cJSON_IsObject(b))
        return;
    const cJSON *svc = WT_GET(b, "service");
    if (cJSON_IsObject(svc)) {
        out->kind = WT_BACKEND_SERVICE;
        out->service = str(p, WT_GET(svc, "name"));
        out->port_number = port_of(WT_GET(svc, "port", "number"));
        out->port_name = str(p, WT_GET(svc, "port", "name"));
    } else if (WT_GET(b, "resource")) {
        out->kind = WT_BACKEND_RESOURCE;
    } else {
        out->kind = WT_BACKEND_EMPTY;
    }
}

static wt_lb_t *lb_list(wt_pool_t *p, const cJSON *arr, size_t *n)
{
    *n = count(arr);
    wt_lb_t *v = array(p, *n, sizeof(*v));
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        v[i].ip = str(p, WT_GET(e, "ip"));
        v[i].hostname = str(p, WT_GET(e, "hostname"));
        i++;
    }
    return v;
}

static const char **str_list(wt_pool_t *p, const cJSON *arr, size_t *n)
{
    *n = count(arr);
    const char **v = array(p, *n, sizeof(*v));
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        v[i++] = str(p, e);
    }
    return v;
}

/* ---- kinds ---------------------------------------------------------------------------------- */

static void ingress_annotations(wt_ingress_t *g, const cJSON *ann)
{
    size_t n = 0;
    const cJSON *a;
    cJSON_ArrayForEach(a, ann)
    {
        n += a->string && !strncmp(a->string, "sluice.io/", 10);
    }
    g->annotations = array(&g->pool, n, sizeof(wt_kv_t));
    cJSON_ArrayForEach(a, ann)
    {
        if (!a->string || strncmp(a->string, "sluice.io/", 10) != 0)
            continue;
        wt_kv_t *kv = &g->annotations[g->n_annotations++];
        kv->key = wt_pool_str(&g->pool, a->string);
        kv->value = str(&g->pool, a);
        kv->is_number = cJSON_IsNumber(a);
        kv->number = cJSON_IsNumber(a) ? a->valuedouble : 0;
    }
}

static void ingress_rules(wt_ingress_t *g, const cJSON *rules)
{
    g->n_rules = count(rules);
    g->rules = array(&g->pool, g->n_rules, sizeof(wt_rule_t));
    size_t i = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, rules)
    {
        wt_rule_t *rule = &g->rules[i++];
        const cJSON *host = WT_GET(r, "host");
        rule->has_host = host && !cJSON_IsNull(host);
        rule->host = str(&g->pool, host);
        const cJSON *paths = WT_GET(r, "http", "paths");
        rule->n_paths = count(paths);
        rule->paths = array(&g->pool, rule->n_paths, sizeof(wt_ipath_t));
        size_t k = 0;
        const cJSON *p;
        cJSON_ArrayForEach(p, paths)
        {
            wt_ipath_t *ip = &rule->paths[k++];
            ip->path = str(&g->pool, WT_GET(p, "path"));
            ip->type = str(&g->pool, WT_GET(p, "pathType"));
            backend(&g->pool, WT_GET(p, "backend"), &ip->backend);
        }
    }
}

static void *ingress(const cJSON *o)
{
    wt_ingress_t *g = calloc(1, sizeof(*g));
    if (!g)
        sl_oom();
    wt_pool_t *p = &g->pool;
    g->ns = str(p, WT_GET(o, "metadata", "namespace"));
    g->name = str(p, WT_GET(o, "metadata", "name"));
    g->created = str(p, WT_GET(o, "metadata", "creationTimestamp"));
    g->class_name = str(p, WT_GET(o, "spec", "ingressClassName"));
    g->legacy_class = str(p, WT_GET(o, "metadata", "annotations", "kubernetes.io/ingress.class"));
    ingress_annotations(g, WT_GET(o, "metadata", "annotations"));
    backend(p, WT_GET(o, "spec", "defaultBackend"), &g->dflt);
    ingress_rules(g, WT_GET(o, "spec", "rules"));
    const cJSON *tls = WT_GET(o, "spec", "tls");
    g->n_tls = count(tls);
    g->tls = array(p, g->n_tls, sizeof(wt_itls_t));
    size_t i = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, tls)
    {
        g->tls[i].secret = str(p, WT_GET(t, "secretName"));
        g->tls[i].hosts = str_list(p, WT_GET(t, "hosts"), &g->tls[i].n_hosts);
        i++;
    }
    g->lb = lb_list(p, WT_GET(o, "status", "loadBalancer", "ingress"), &g->n_lb);
    return g;
}

static void *ingress_class(const cJSON *o)
{
    wt_class_t *c = calloc(1, sizeof(*c));
    if (!c)
        sl_oom();
    c->name = str(&c->pool, WT_GET(o, "metadata", "name"));
    c->controller = str(&c->pool, WT_GET(o, "spec", "controller"));
    const char *d =
        WT_STR(o, "metadata", "annotations", "ingressclass.kubernetes.io/is-default-class");
    c->is_default = d && !strcmp(d, "true");
    return c;
}

static void *service(const cJSON *o)
{
    wt_service_t *s = calloc(1, sizeof(*s));
    if (!s)
        sl_oom();
    wt_pool_t *p = &s->pool;
    s->ns = str(p, WT_GET(o, "metadata", "namespace"));
    s->name = str(p, WT_GET(o, "metadata", "name"));
    s->type = str(p, WT_GET(o, "spec", "type"));
    s->external_name = str(p, WT_GET(o, "spec", "externalName"));
    s->cluster_ip = str(p, WT_GET(o, "spec", "clusterIP"));
    const cJSON *ports = WT_GET(o, "spec", "ports");
    s->n_ports = count(ports);
    s->ports = array(p, s->n_ports, sizeof(wt_sport_t));
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, ports)
    {
        wt_sport_t *sp = &s->ports[i++];
        sp->name = str(p, WT_GET(e, "name"));
        sp->port = port_of(WT_GET(e, "port"));
        const cJSON *tp = WT_GET(e, "targetPort");
        sp->target_number = cJSON_IsNumber(tp) ? port_of(tp) : 0;
        sp->target_name = str(p, tp);
    }
    s->external_ips = str_list(p, WT_GET(o, "spec", "externalIPs"), &s->n_external_ips);
    s->lb = lb_list(p, WT_GET(o, "status", "loadBalancer", "ingress"), &s->n_lb);
    return s;
}

static void *slice(const cJSON *o)
{
    wt_slice_t *s = calloc(1, sizeof(*s));
    if (!s)
        sl_oom();
    wt_pool_t *p = &s->pool;
    s->ns = str(p, WT_GET(o, "metadata", "namespace"));
    s->name = str(p, WT_GET(o, "metadata", "name"));
    s->service = str(p, WT_GET(o, "metadata", "labels", "kubernetes.io/service-name"));
    s->address_type = str(p, WT_GET(o, "addressType"));
    const cJSON *ports = WT_GET(o, "ports");
    s->n_ports = count(ports);
    s->ports = array(p, s->n_ports, sizeof(wt_eport_t));
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, ports)
    {
        wt_eport_t *ep = &s->ports[i++];
        ep->name = str(p, WT_GET(e, "name"));
        ep->port = port_of(WT_GET(e, "port"));
        ep->protocol = str(p, WT_GET(e, "protocol"));
    }
    const cJSON *eps = WT_GET(o, "endpoints");
    s->n_endpoints = count(eps);
    s->endpoints = array(p, s->n_endpoints, sizeof(wt_endpoint_t));
    i = 0;
    cJSON_ArrayForEach(e, eps)
    {
        wt_endpoint_t *ep = &s->endpoints[i++];
        ep->addresses = str_list(p, WT_GET(e, "addresses"), &ep->n_addresses);
        ep->not_ready = cJSON_IsFalse(WT_GET(e, "conditions", "ready"));
    }
    return s;
}

static void *secret(const cJSON *o)
{
    wt_secret_t *s = calloc(1, sizeof(*s));
    if (!s)
        sl_oom();
    wt_pool_t *p = &s->pool;
    s->ns = str(p, WT_GET(o, "metadata", "namespace"));
    s->name = str(p, WT_GET(o, "metadata", "name"));
    s->type = str(p, WT_GET(o, "type"));
    s->crt_b64 = str(p, WT_GET(o, "data", "tls.crt"));
    s->key_b64 = str(p, WT_GET(o, "data", "tls.key"));
    return s;
}

void *wt_model_new(int kind, const cJSON *obj)
{
    if (!WT_NAME(obj))
        return NULL;
    switch ((wt_kind_t)kind) {
    case WT_INGRESS:
        return ingress(obj);
    case WT_INGRESSCLASS:
        return ingress_class(obj);
    case WT_SERVICE:
        return service(obj);
    case WT_ENDPOINTSLICE:
        return slice(obj);
    case WT_SECRET:
        return secret(obj);
    case WT_NKINDS:
        break;
    }
    return NULL;
}

void wt_model_free(int kind, void *m)
{
    if (!m)
        return;
    /* Every model starts with its pool. */
    wt_pool_free((wt_pool_t *)m);
    free(m);
}
