/* Metrics: each worker counts into its own tables (atomic counters, a lock only to add a new
 * label set), and the admin thread sums the workers when Prometheus scrapes. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/runtime.h"
#include "gateway/upstream_dns.h"
#include "sluice/tcp.h"
#include "util/hmap.h"
#include "util/mem.h"

static const double dur_buckets[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1,
                                     0.25,  0.5,   1,    2.5,   5,    10};
#define N_BUCKETS (sizeof(dur_buckets) / sizeof(dur_buckets[0]))

typedef struct req_entry {
    char *route, *upstream, *method;
    int code;
    _Atomic uint64_t count;
} req_entry_t;

typedef struct hist {
    _Atomic uint64_t buckets[N_BUCKETS]; /* cumulative at render time */
    _Atomic uint64_t count;
    _Atomic uint64_t sum_ns;
} hist_t;

typedef struct named_hist {
    char *name;
    hist_t h;
    _Atomic uint64_t reused;
} named_hist_t;

struct gw_metrics {
    pthread_mutex_t lock; /* held to add entries (worker) and to read them all (admin) */
    sl_hmap_t reqs;       /* "route\1upstream\1code\1method" -> req_entry_t */
    sl_hmap_t routes;     /* route -> named_hist_t (request duration) */
    sl_hmap_t upstreams;  /* upstream -> named_hist_t (connect duration, reuse) */
};

gw_metrics_t *gw_metrics_new(void)
{
    gw_metrics_t *m = sl_xcalloc(1, sizeof(*m));
    pthread_mutex_init(&m->lock, NULL);
    sl_hmap_init(&m->reqs);
    sl_hmap_init(&m->routes);
    sl_hmap_init(&m->upstreams);
    return m;
}

static void drop_req(void *v);
static void drop_named(void *v);

static void free_map(sl_hmap_t *m, void (*drop)(void *value))
{
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key && m->slots[i].value)
            drop(m->slots[i].value);
    sl_hmap_free(m);
}

void gw_metrics_free(gw_metrics_t *m)
{
    if (!m)
        return;
    free_map(&m->reqs, drop_req);
    free_map(&m->routes, drop_named);
    free_map(&m->upstreams, drop_named);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static void hist_observe(hist_t *h, uint64_t ns)
{
    double s = (double)ns / 1e9;
    for (size_t i = 0; i < N_BUCKETS; i++) {
        if (s <= dur_buckets[i]) {
            atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
            break;
        }
    }
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
}

static named_hist_t *named(gw_metrics_t *m, sl_hmap_t *map, const char *name)
{
    size_t n = strlen(name);
    named_hist_t *h = sl_hmap_get(map, name, n);
    if (h)
        return h;
    pthread_mutex_lock(&m->lock);
    void **slot = sl_hmap_put(map, name, n);
    if (!*slot) {
        h = sl_xcalloc(1, sizeof(*h));
        h->name = sl_xstrdup(name);
        *slot = h;
    }
    h = *slot;
    pthread_mutex_unlock(&m->lock);
    return h;
}

static const char *method_label(sl_str_t m)
{
    static const char *const known[] = {"GET",     "HEAD",  "POST",    "PUT",   "DELETE",
                                        "OPTIONS", "PATCH", "CONNECT", "TRACE", NULL};
    for (const char *const *k = known; *k; k++)
        if (sl_str_eq(m, sl_str(*k)))
            return *k;
    return "OTHER"; /* unbounded method names would make unbounded series */
}

void gw_metrics_request(gw_metrics_t *m, const char *route, const char *upstream, int code,
                        sl_str_t method, uint64_t duration_ns, uint64_t connect_ns, bool reused)
{
    const char *meth = method_label(method);
    char key[600];
    int n = snprintf(key, sizeof(key), "%s\1%s\1%d\1%s", route, upstream, code, meth);
    if (n < 0 || (size_t)n >= sizeof(key))
        n = (int)sizeof(key) - 1;
    req_entry_t *e = sl_hmap_get(&m->reqs, key, (size_t)n);
    if (!e) {
        pthread_mutex_lock(&m->lock);
        void **slot = sl_hmap_put(&m->reqs, key, (size_t)n);
        if (!*slot) {
            req_entry_t *ne = sl_xcalloc(1, sizeof(*ne));
            ne->route = sl_xstrdup(route);
            ne->upstream = sl_xstrdup(upstream);
            ne->method = sl_xstrdup(meth);
            ne->code = code;
            *slot = ne;
        }
        e = *slot;
        pthread_mutex_unlock(&m->lock);
    }
    atomic_fetch_add_explicit(&e->count, 1, memory_order_relaxed);
    hist_observe(&named(m, &m->routes, route)->h, duration_ns);
    if (*upstream) {
        named_hist_t *u = named(m, &m->upstreams, upstream);
        if (reused)
            atomic_fetch_add_explicit(&u->reused, 1, memory_order_relaxed);
        else if (connect_ns)
            hist_observe(&u->h, connect_ns);
    }
}

/* ---- pruning ---------------------------------------------------------------------------- */

static bool has_route(const gw_config_t *c, const char *name)
{
    return !*name || sl_hmap_get(c->route_index, name, strlen(name)) != NULL;
}

static bool has_upstream(const gw_config_t *c, const char *name)
{
    return !*name || gw_config_upstream(c, name) != NULL;
}

/* Keeps the entries of *map that keep() accepts, frees the others' values with drop(); the map
 * is rebuilt (it has no deletion) only when something goes. */
static void prune_map(sl_hmap_t *map, const gw_config_t *c,
                      bool (*keep)(const gw_config_t *c, const void *value),
                      void (*drop)(void *value))
{
    size_t gone = 0;
    for (size_t i = 0; i < map->cap; i++)
        if (map->slots[i].key && map->slots[i].value && !keep(c, map->slots[i].value))
            gone++;
    if (!gone)
        return;
    sl_hmap_t kept;
    sl_hmap_init(&kept);
    for (size_t i = 0; i < map->cap; i++) {
        sl_hmap_entry_t *e = &map->slots[i];
        if (!e->key || !e->value)
            continue;
        if (keep(c, e->value))
            *sl_hmap_put(&kept, e->key, e->klen) = e->value;
        else
            drop(e->value);
    }
    sl_hmap_free(map);
    *map = kept;
}

static bool keep_req(const gw_config_t *c, const void *v)
{
    const req_entry_t *e = v;
    return has_route(c, e->route) && has_upstream(c, e->upstream);
}

static void drop_req(void *v)
{
    req_entry_t *e = v;
    free(e->route);
    free(e->upstream);
    free(e->method);
    free(e);
}

static bool keep_route(const gw_config_t *c, const void *v)
{
    return has_route(c, ((const named_hist_t *)v)->name);
}

static bool keep_upstream(const gw_config_t *c, const void *v)
{
    return has_upstream(c, ((const named_hist_t *)v)->name);
}

static void drop_named(void *v)
{
    named_hist_t *h = v;
    free(h->name);
    free(h);
}

void gw_metrics_prune(gw_metrics_t *m, const gw_config_t *c)
{
    pthread_mutex_lock(&m->lock);
    prune_map(&m->reqs, c, keep_req, drop_req);
    prune_map(&m->routes, c, keep_route, drop_named);
    prune_map(&m->upstreams, c, keep_upstream, drop_named);
    pthread_mutex_unlock(&m->lock);
}

/* ---- rendering ------------------------------------------------------------------------- */

typedef struct out {
    char *buf;
    size_t len, cap;
} out_t;

static void outf(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void outf(out_t *o, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        o->cap = o->cap * 2 + (size_t)(n > 0 ? n : 0) + 1024;
        o->buf = sl_xrealloc(o->buf, o->cap);
    }
}

/* Label values escaped per the text format: backslash, quote, newline. */
static const char *esc(const char *s, char *buf, size_t cap)
{
    size_t j = 0;
    for (; *s && j + 2 < cap; s++) {
        if (*s == '\\' || *s == '"') {
            buf[j++] = '\\';
            buf[j++] = *s;
        } else if (*s == '\n') {
            buf[j++] = '\\';
            buf[j++] = 'n';
        } else {
            buf[j++] = *s;
        }
    }
    buf[j] = '\0';
    return buf;
}

/* Sums a named-histogram map over all workers into one temporary map of named_hist_t. */
static void sum_named(gateway_t *gw, size_t offset, sl_hmap_t *sum)
{
    for (size_t w = 0; w < gw->n_workers; w++) {
        gw_metrics_t *m = gw->workers[w].metrics;
        sl_hmap_t *map = (sl_hmap_t *)((char *)m + offset);
        pthread_mutex_lock(&m->lock);
        for (size_t i = 0; i < map->cap; i++) {
            named_hist_t *h = map->slots[i].value;
            if (!map->slots[i].key || !h)
                continue;
            void **slot = sl_hmap_put(sum, h->name, strlen(h->name));
            if (!*slot) {
                named_hist_t *t = sl_xcalloc(1, sizeof(*t));
                t->name = sl_xstrdup(h->name);
                *slot = t;
            }
            named_hist_t *t = *slot;
            for (size_t b = 0; b < N_BUCKETS; b++)
                t->h.buckets[b] += atomic_load_explicit(&h->h.buckets[b], memory_order_relaxed);
            t->h.count += atomic_load_explicit(&h->h.count, memory_order_relaxed);
            t->h.sum_ns += atomic_load_explicit(&h->h.sum_ns, memory_order_relaxed);
            t->reused += atomic_load_explicit(&h->reused, memory_order_relaxed);
        }
        pthread_mutex_unlock(&m->lock);
    }
}

static void render_hist(out_t *o, const char *metric, const char *label, sl_hmap_t *sum,
                        bool only_observed)
{
    char e[512];
    for (size_t i = 0; i < sum->cap; i++) {
        named_hist_t *t = sum->slots[i].value;
        if (!sum->slots[i].key || !t || (only_observed && !t->h.count))
            continue;
        esc(t->name, e, sizeof(e));
        uint64_t cum = 0;
        for (size_t b = 0; b < N_BUCKETS; b++) {
            cum += t->h.buckets[b];
            outf(o, "%s_bucket{%s=\"%s\",le=\"%g\"} %llu\n", metric, label, e, dur_buckets[b],
                 (unsigned long long)cum);
        }
        outf(o, "%s_bucket{%s=\"%s\",le=\"+Inf\"} %llu\n", metric, label, e,
             (unsigned long long)t->h.count);
        outf(o, "%s_sum{%s=\"%s\"} %.9f\n", metric, label, e, (double)t->h.sum_ns / 1e9);
        outf(o, "%s_count{%s=\"%s\"} %llu\n", metric, label, e, (unsigned long long)t->h.count);
    }
}

static void render_requests(gateway_t *gw, out_t *o)
{
    sl_hmap_t sum;
    sl_hmap_init(&sum);
    for (size_t w = 0; w < gw->n_workers; w++) {
        gw_metrics_t *m = gw->workers[w].metrics;
        pthread_mutex_lock(&m->lock);
        for (size_t i = 0; i < m->reqs.cap; i++) {
            req_entry_t *e = m->reqs.slots[i].value;
            if (!m->reqs.slots[i].key || !e)
                continue;
            void **slot = sl_hmap_put(&sum, m->reqs.slots[i].key, m->reqs.slots[i].klen);
            if (!*slot) {
                req_entry_t *t = sl_xcalloc(1, sizeof(*t));
                t->route = e->route;
                t->upstream = e->upstream;
                t->method = e->method;
                t->code = e->code;
                *slot = t;
            }
            ((req_entry_t *)*slot)->count += atomic_load_explicit(&e->count, memory_order_relaxed);
        }
        pthread_mutex_unlock(&m->lock);
    }
    outf(o, "# HELP sluice_requests_total Requests answered, by route, upstream, status code and "
            "method.\n# TYPE sluice_requests_total counter\n");
    char r[512], u[512];
    for (size_t i = 0; i < sum.cap; i++) {
        req_entry_t *t = sum.slots[i].value;
        if (!sum.slots[i].key || !t)
            continue;
        outf(o,
             "sluice_requests_total{route=\"%s\",upstream=\"%s\",code=\"%d\",method=\"%s\"} "
             "%llu\n",
             esc(t->route, r, sizeof(r)), esc(t->upstream, u, sizeof(u)), t->code, t->method,
             (unsigned long long)t->count);
        free(t);
        sum.slots[i].value = NULL;
    }
    sl_hmap_free(&sum);
}

/* `protocol: tcp` listeners, from their services' counters (bytes count as they flow). */
static void render_tcp(gateway_t *gw, out_t *o)
{
    static const char *const head[] = {
        "# HELP sluice_tcp_connections_total TCP proxy client connections accepted, by "
        "listener.\n# TYPE sluice_tcp_connections_total counter\n",
        "# HELP sluice_tcp_connections_active TCP proxy client connections open now (connecting "
        "or forwarding), by listener.\n# TYPE sluice_tcp_connections_active gauge\n",
        "# HELP sluice_tcp_bytes_total Bytes forwarded by TCP listeners: in = received from "
        "clients, out = received from upstreams.\n# TYPE sluice_tcp_bytes_total counter\n",
        "# HELP sluice_tcp_connect_failures_total Upstream connect attempts of TCP listeners that "
        "failed (refused, unreachable, timed out), retries included.\n"
        "# TYPE sluice_tcp_connect_failures_total counter\n",
    };
    const gw_config_t *c = gw->current;
    for (size_t m = 0; m < SL_ARRAY_LEN(head); m++) {
        bool any = false;
        for (size_t i = 0; gw->tcp && i < gw->n_services && i < c->n_listeners; i++) {
            if (!gw->tcp[i])
                continue;
            if (!any)
                outf(o, "%s", head[m]);
            any = true;
            sl_tcp_stats_t st;
            sl_tcp_proxy_stats(gw->services[i], &st);
            char e[512];
            esc(c->listeners[i].name, e, sizeof(e));
            if (m == 0)
                outf(o, "sluice_tcp_connections_total{listener=\"%s\"} %llu\n", e,
                     (unsigned long long)st.accepted);
            else if (m == 1)
                outf(o, "sluice_tcp_connections_active{listener=\"%s\"} %ld\n", e, st.open);
            else if (m == 2)
                outf(o,
                     "sluice_tcp_bytes_total{listener=\"%s\",direction=\"in\"} %llu\n"
                     "sluice_tcp_bytes_total{listener=\"%s\",direction=\"out\"} %llu\n",
                     e, (unsigned long long)st.bytes_in, e, (unsigned long long)st.bytes_out);
            else
                outf(o, "sluice_tcp_connect_failures_total{listener=\"%s\"} %llu\n", e,
                     (unsigned long long)st.connect_failed);
        }
    }
}

char *gw_metrics_render(gateway_t *gw, size_t *len)
{
    out_t o = {sl_xmalloc(8192), 0, 8192};
    render_requests(gw, &o);

    sl_hmap_t routes, ups;
    sl_hmap_init(&routes);
    sl_hmap_init(&ups);
    sum_named(gw, offsetof(gw_metrics_t, routes), &routes);
    sum_named(gw, offsetof(gw_metrics_t, upstreams), &ups);
    outf(&o, "# HELP sluice_request_duration_seconds Time from the request header to the end "
             "of the response.\n# TYPE sluice_request_duration_seconds histogram\n");
    render_hist(&o, "sluice_request_duration_seconds", "route", &routes, false);
    outf(&o, "# HELP sluice_upstream_connect_duration_seconds Time to open a new upstream "
             "connection.\n# TYPE sluice_upstream_connect_duration_seconds histogram\n");
    render_hist(&o, "sluice_upstream_connect_duration_seconds", "upstream", &ups, false);
    outf(&o, "# HELP sluice_upstream_connections_reused_total Requests sent on a pooled "
             "upstream connection.\n# TYPE sluice_upstream_connections_reused_total counter\n");
    char e[512];
    for (size_t i = 0; i < ups.cap; i++) {
        named_hist_t *t = ups.slots[i].value;
        if (ups.slots[i].key && t)
            outf(&o, "sluice_upstream_connections_reused_total{upstream=\"%s\"} %llu\n",
                 esc(t->name, e, sizeof(e)), (unsigned long long)t->reused);
    }
    free_map(&routes, drop_named);
    free_map(&ups, drop_named);

    sl_http_stats_t st, total = {0};
    for (size_t i = 0; i < gw->n_services; i++) {
        if (gw->tcp && gw->tcp[i])
            continue; /* TCP listeners have their own metrics (render_tcp) */
        sl_http_proxy_stats(gw->services[i], &st);
        total.accepted += st.accepted;
        total.requests += st.requests;
        total.open += st.open;
        total.active += st.active;
        total.upstream_open += st.upstream_open;
        total.upstream_idle += st.upstream_idle;
    }
    outf(&o,
         "# HELP sluice_connections Client connections, by state.\n"
         "# TYPE sluice_connections gauge\n"
         "sluice_connections{state=\"active\"} %ld\n"
         "sluice_connections{state=\"idle\"} %ld\n",
         total.active, total.open - total.active > 0 ? total.open - total.active : 0);
    outf(&o,
         "# HELP sluice_upstream_connections Upstream connections, by state.\n"
         "# TYPE sluice_upstream_connections gauge\n"
         "sluice_upstream_connections{state=\"active\"} %ld\n"
         "sluice_upstream_connections{state=\"idle\"} %ld\n",
         total.upstream_open - total.upstream_idle, total.upstream_idle);
    outf(&o,
         "# HELP sluice_connections_accepted_total Client connections accepted.\n"
         "# TYPE sluice_connections_accepted_total counter\n"
         "sluice_connections_accepted_total %llu\n",
         (unsigned long long)total.accepted);
    render_tcp(gw, &o);
    char *dns = gw_dns_metrics(gw);
    outf(&o, "%s", dns);
    free(dns);
    outf(&o,
         "# HELP sluice_config_reloads_total Configuration changes, by result.\n"
         "# TYPE sluice_config_reloads_total counter\n"
         "sluice_config_reloads_total{result=\"success\"} %llu\n"
         "sluice_config_reloads_total{result=\"failure\"} %llu\n",
         (unsigned long long)atomic_load(&gw->reloads_ok),
         (unsigned long long)atomic_load(&gw->reloads_failed));
    /* The hash as a number (first 52 bits: exact in a double), like ingress-nginx's. */
    char head[14];
    memcpy(head, gw->current->hash, 13);
    head[13] = '\0';
    unsigned long long h = strtoull(head, NULL, 16);
    outf(&o,
         "# HELP sluice_config_hash The running configuration's hash (first 52 bits).\n"
         "# TYPE sluice_config_hash gauge\nsluice_config_hash %llu\n",
         h);
    outf(&o,
         "# HELP sluice_config_generation Configurations applied since start.\n"
         "# TYPE sluice_config_generation gauge\nsluice_config_generation %llu\n",
         (unsigned long long)gw->current->generation);
    *len = o.len;
    return o.buf;
}
