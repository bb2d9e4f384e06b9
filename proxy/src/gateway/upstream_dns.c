/* Host name backends: the `dns` configuration, a resolver per worker for names resolved per
 * request, and the control thread's watches for upstreams that follow their names
 * (upstream_dns.h explains the model). */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "gateway/runtime.h"
#include "gateway/upstream_dns.h"
#include "sluice/stream.h"
#include "util/cfg.h"
#include "util/jmem.h"
#include "util/mem.h"
#include "util/timeout.h"

#define SL_LOG_TAG "dns"
#include "sluice/log.h"

/* Debounce of snapshot rebuilds: answers of names that expire together make one rebuild. */
#define REBUILD_DELAY_MS 20

/* ---- configuration ----------------------------------------------------------------------- */

static const char *const dns_keys[] = {"servers", "timeout",      "tries",      "min_ttl",
                                       "max_ttl", "negative_ttl", "cache_size", NULL};
static const char *const upstream_dns_keys[] = {"watch", "family", NULL};

#define MAX_TTL_S (7 * 86400)

/* A duration key in whole seconds, at most max_s. */
static int get_seconds(const cJSON *d, const char *key, uint32_t max_s, uint32_t *out,
                       sl_error_t *err)
{
    uint64_t ms = (uint64_t)*out * 1000;
    int rc = sl__cfg_get_duration_ms(d, "dns", key, &ms, err);
    if (rc)
        return rc;
    if (ms % 1000)
        return sl_error_set(err, SL_ECONFIG, "dns.%s: %llums: use whole seconds (\"1s\", \"30s\")",
                            key, (unsigned long long)ms);
    if (ms / 1000 > max_s)
        return sl_error_set(err, SL_ECONFIG, "dns.%s: at most %us", key, (unsigned)max_s);
    *out = (uint32_t)(ms / 1000);
    return 0;
}

int gw_dns_conf_parse(gw_config_t *c, const cJSON *root, sl_error_t *err)
{
    sl_dns_options_t *o = &c->dns;
    sl_dns_options_init(o);
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(root, "dns");
    if (!d || cJSON_IsNull(d))
        return 0;
    long tries = o->tries, cache = (long)o->cache_size;
    int rc = sl__cfg_check_keys(d, "dns", dns_keys, err);
    if (rc ||
        (rc = sl__cfg_get_str_list(d, "dns", "servers", &c->dns_servers, &c->n_dns_servers, err)) ||
        (rc = sl__cfg_get_duration_ms(d, "dns", "timeout", &o->timeout_ms, err)) ||
        (rc = sl__cfg_get_int(d, "dns", "tries", 1, 20, &tries, err)) ||
        (rc = get_seconds(d, "min_ttl", MAX_TTL_S, &o->min_ttl_s, err)) ||
        (rc = get_seconds(d, "max_ttl", MAX_TTL_S, &o->max_ttl_s, err)) ||
        (rc = get_seconds(d, "negative_ttl", MAX_TTL_S, &o->negative_ttl_s, err)) ||
        (rc = sl__cfg_get_int(d, "dns", "cache_size", 0, 1L << 22, &cache, err)))
        return rc;
    if (o->timeout_ms < 1 || o->timeout_ms > 3600 * 1000)
        return sl_error_set(err, SL_ECONFIG, "dns.timeout: between 1ms and 1h");
    o->tries = (int)tries;
    o->cache_size = (size_t)cache;
    o->servers = (const char *const *)c->dns_servers;
    o->n_servers = c->n_dns_servers;
    /* The resolver's own check: what `sluice -t` accepts is what the workers will run. */
    return sl_dns_options_check(o, err);
}

int gw_upstream_dns_parse(gw_upstream_t *u, const cJSON *v, const char *path, sl_error_t *err)
{
    u->dns_family = AF_UNSPEC;
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(v, "dns");
    if (!d || cJSON_IsNull(d))
        return 0;
    char p[SL_CFG_PATH_MAX];
    sl__cfg_path_key(p, sizeof(p), path, "dns");
    char *family = NULL;
    int rc = sl__cfg_check_keys(d, p, upstream_dns_keys, err);
    if (rc || (rc = sl__cfg_get_bool(d, p, "watch", &u->dns_watch, err)) ||
        (rc = sl__cfg_get_str(d, p, "family", false, &family, err)))
        return rc;
    if (family) {
        if (!strcmp(family, "ipv4"))
            u->dns_family = AF_INET;
        else if (!strcmp(family, "ipv6"))
            u->dns_family = AF_INET6;
        else if (strcmp(family, "any") != 0)
            rc = sl_error_set(err, SL_ECONFIG, "%s.family: unknown value \"%s\" (any, ipv4, ipv6)",
                              p, family);
        free(family);
        if (rc)
            return rc;
    }
    const cJSON *disc = cJSON_GetObjectItemCaseSensitive(v, "discovery");
    if (u->dns_watch && disc && !cJSON_IsNull(disc))
        return sl_error_set(err, SL_ECONFIG,
                            "%s.watch: not with discovery (the discovery file lists the backends; "
                            "its host names are resolved per request)",
                            p);
    return 0;
}

const char *gw_backend_name(const gw_backend_t *b)
{
    if (b->host)
        return b->host;
    return b->addr.ss_family == AF_UNIX ? "localhost" : NULL;
}

/* ---- state --------------------------------------------------------------------------------- */

/* Outcomes of resolving a name for a request (sluice_dns_lookups_total{result}). */
enum { RES_CACHED, RES_OK, RES_NOT_FOUND, RES_SERVER_FAILURE, RES_TIMEOUT, RES_ERROR, RES_COUNT };
static const char *const result_names[RES_COUNT] = {"cached",         "ok",      "not_found",
                                                    "server_failure", "timeout", "error"};

typedef struct dns_worker {
    sl_resolver_t *r; /* owned by the worker's thread */
    sl_worker_t *worker;
    gw_dns_req_t *waiting;               /* requests waiting for a lookup */
    sl_shutdown_sub_t on_expired;        /* the grace period is over: they stop waiting */
    _Atomic uint64_t results[RES_COUNT]; /* read by the admin thread */
} dns_worker_t;

/* A name followed for watched upstreams (control thread). */
typedef struct watched {
    gw_dns_t *d;
    char *name;
    int family;
    sl_dns_watch_t *w;
    struct sockaddr_storage *addrs; /* the last good answer, sorted, port 0; NULL: none yet */
    size_t n;
    bool used; /* by the snapshot being prepared */
    struct watched *next;
} watched_t;

struct gw_dns {
    gateway_t *gw;
    sl_dns_options_t opts; /* servers point to servers[] */
    char **servers;
    size_t n_servers;
    dns_worker_t *workers;
    size_t n_workers;
    /* control thread */
    sl_resolver_t *r; /* on the main loop, for watches; NULL before start and after stop */
    uv_timer_t rebuild;
    bool rebuild_ready;
    watched_t *watched;
    size_t n_watched;
    uint64_t changes; /* answers that changed an address set */
};

struct gw_dns_req {
    sl_session_t *s;
    sl_peer_t *peer;
    dns_worker_t *dw;
    const gw_backend_t *b;
    sl_dns_query_t *q; /* in flight */
    sl_timeout_t cap;  /* the connect timeout, for the lookup */
    uint64_t started_ms, cap_ms;
    const char *message;            /* why the request failed (session arena) */
    struct sockaddr_storage failed; /* the address whose connect failed last */
    size_t n_addrs;                 /* the name had this many addresses */
    bool waiting;                   /* in dw->waiting: the session owes us its resume */
    gw_dns_req_t *prev, *next;
};

static void count(dns_worker_t *dw, int result)
{
    atomic_fetch_add_explicit(&dw->results[result], 1, memory_order_relaxed);
}

static int result_of(sl_dns_status_t st)
{
    switch (st) {
    case SL_DNS_OK:
        return RES_OK;
    case SL_DNS_NOT_FOUND:
        return RES_NOT_FOUND;
    case SL_DNS_SERVER_FAILURE:
        return RES_SERVER_FAILURE;
    case SL_DNS_TIMEOUT:
        return RES_TIMEOUT;
    default:
        return RES_ERROR;
    }
}

static socklen_t addr_len(const struct sockaddr_storage *a)
{
    return a->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
}

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_addr.s_addr == y->sin_addr.s_addr && x->sin_port == y->sin_port;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) &&
           x->sin6_port == y->sin6_port;
}

static void set_port(struct sockaddr_storage *a, uint16_t port)
{
    if (a->ss_family == AF_INET)
        ((struct sockaddr_in *)a)->sin_port = htons(port);
    else if (a->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)a)->sin6_port = htons(port);
}

/* ---- per worker ---------------------------------------------------------------------------- */

static void abandon_waiting(dns_worker_t *dw, bool resume);
static int fail_now(gw_dns_req_t *q, int result, const char *why);

/* Grace period over: requests still waiting for a lookup get their 502 now (the worker does not
 * finish draining while any waits: each holds a worker reference). */
static void on_expired(sl_shutdown_sub_t *sub)
{
    abandon_waiting(sl_container_of(sub, dns_worker_t, on_expired), true);
}

static void worker_start(sl_worker_t *w, void *data)
{
    gateway_t *gw = data;
    dns_worker_t *dw = &gw->dns->workers[sl_worker_id(w)];
    dw->worker = w;
    sl_shutdown_subscribe_expired(sl_worker_shutdown_watch(w), &dw->on_expired, on_expired);
    if (sl_resolver_new(sl_worker_loop(w), &gw->dns->opts, &dw->r) != 0) {
        SL_ERROR("worker %u: no DNS resolver; host name backends answer 502", sl_worker_id(w));
        dw->r = NULL;
    }
}

static void worker_stop(sl_worker_t *w, void *data)
{
    gateway_t *gw = data;
    dns_worker_t *dw = &gw->dns->workers[sl_worker_id(w)];
    sl_shutdown_unsubscribe(&dw->on_expired);
    /* Nothing waits by now (waiting requests hold the worker); if something still did, its
     * services are gone: it can only be dropped. */
    abandon_waiting(dw, false);
    if (dw->r)
        sl_resolver_close(dw->r, NULL, NULL); /* the loop runs until its handles are closed */
    dw->r = NULL;
}

/* ---- per request --------------------------------------------------------------------------- */

/* Takes the next of n addresses of the name into the peer, avoiding the one that just failed. */
static void use_addrs(gw_dns_req_t *q, const struct sockaddr_storage *addrs, size_t n)
{
    gw_backend_t *b = (gw_backend_t *)q->b; /* the rotation counter is the mutable part */
    size_t k = atomic_fetch_add_explicit(&b->rr, 1, memory_order_relaxed) % n;
    if (n > 1 && same_addr(&addrs[k], &q->failed))
        k = (k + 1) % n;
    memcpy(&q->peer->addr, &addrs[k], addr_len(&addrs[k]));
    q->peer->addr_len = addr_len(&addrs[k]);
    q->n_addrs = n;
}

static void unref_later(void *w)
{
    sl_worker_unref(w);
}

static void wait_begin(gw_dns_req_t *q)
{
    sl_worker_ref(q->dw->worker); /* the worker does not stop under a waiting request */
    q->waiting = true;
    q->prev = NULL;
    q->next = q->dw->waiting;
    if (q->next)
        q->next->prev = q;
    q->dw->waiting = q;
}

/* The wait is over (answered, timed out, abandoned): the lookup, if still running, is cancelled
 * for this request (it goes on and fills the cache for later ones). */
static void wait_end(gw_dns_req_t *q)
{
    if (!q->waiting)
        return;
    q->waiting = false;
    if (q->prev)
        q->prev->next = q->next;
    else
        q->dw->waiting = q->next;
    if (q->next)
        q->next->prev = q->prev;
    q->prev = q->next = NULL;
    if (q->q)
        sl_dns_cancel(q->q);
    q->q = NULL;
    sl_timeout_stop(&q->cap);
    /* From the next iteration: the last reference may stop the worker, which must not happen
     * under the session about to be resumed (or being released). */
    sl__worker_defer(q->dw->worker, unref_later, q->dw->worker);
}

static void abandon_waiting(dns_worker_t *dw, bool resume)
{
    while (dw->waiting) {
        gw_dns_req_t *q = dw->waiting;
        wait_end(q);
        if (resume)
            sl_session_resume(q->s, fail_now(q, RES_ERROR, "the gateway is shutting down"));
        else
            SL_ERROR("upstream name %s: a request still waited at the worker's end", q->b->host);
    }
}

static int fail_now(gw_dns_req_t *q, int result, const char *why)
{
    count(q->dw, result);
    q->message = sl_arena_printf(sl_session_arena(q->s), "upstream name %s: %s", q->b->host, why);
    SL_WARN("%s", q->message);
    return SL_EDNS;
}

static void on_answer(void *data, int err, const sl_dns_result_t *res)
{
    gw_dns_req_t *q = data;
    q->q = NULL; /* answered: nothing to cancel */
    wait_end(q);
    if (err || !res->n) {
        sl_session_resume(q->s, fail_now(q, err ? result_of(res->status) : RES_NOT_FOUND,
                                         err ? res->message : "DNS answer without addresses"));
        return;
    }
    count(q->dw, RES_OK);
    use_addrs(q, res->addrs, res->n);
    if (q->cap_ms) {
        /* The connect timeout covers the lookup and the connect. */
        uint64_t spent = uv_now(sl_worker_loop(sl_session_worker(q->s))) - q->started_ms;
        q->peer->options.connect_timeout_ms = spent < q->cap_ms ? q->cap_ms - spent : 1;
    }
    sl_session_resume(q->s, SL_CONTINUE);
}

static void on_cap(sl_timeout_t *t)
{
    gw_dns_req_t *q = sl_container_of(t, gw_dns_req_t, cap);
    wait_end(q);
    char why[128];
    snprintf(why, sizeof(why), "DNS timeout (no answer within the connect timeout of %llu ms)",
             (unsigned long long)q->cap_ms);
    sl_session_resume(q->s, fail_now(q, RES_TIMEOUT, why));
}

int gw_dns_peer(sl_session_t *s, gw_dns_req_t **slot, const gw_upstream_t *u, const gw_backend_t *b,
                sl_peer_t *peer)
{
    gateway_t *gw = sl_session_app(s);
    gw_dns_req_t *q = *slot;
    if (!q) {
        q = *slot = sl_arena_alloc(sl_session_arena(s), sizeof(*q));
        memset(q, 0, sizeof(*q));
        q->s = s;
    }
    sl_worker_t *w = sl_session_worker(s);
    q->dw = &gw->dns->workers[sl_worker_id(w)];
    q->peer = peer;
    q->b = b;
    q->message = NULL;
    if (!q->dw->r)
        return fail_now(q, RES_ERROR, "no DNS resolver on this worker");
    struct sockaddr_storage addrs[SL_DNS_MAX_ADDRS];
    size_t n = 0;
    if (sl_dns_peek(q->dw->r, b->host, b->port, u->dns_family, addrs, SL_DNS_MAX_ADDRS, &n, NULL) ==
            0 &&
        n) {
        count(q->dw, RES_CACHED);
        use_addrs(q, addrs, n);
        return SL_CONTINUE;
    }
    /* Not cached (or cached as not found: the lookup answers from the cache with the reason). */
    uv_loop_t *loop = sl_worker_loop(w);
    q->started_ms = uv_now(loop);
    q->cap_ms = peer->options.connect_timeout_ms;
    q->q = sl_dns_resolve(q->dw->r, b->host, b->port, u->dns_family, on_answer, q);
    if (!q->q)
        return fail_now(q, RES_ERROR, "the resolver refused the lookup");
    wait_begin(q);
    if (q->cap_ms)
        sl_timeout_start(loop, &q->cap, q->cap_ms, on_cap);
    return SL_PENDING;
}

bool gw_dns_retry(gw_dns_req_t *req, const sl_peer_t *peer)
{
    if (!req || !req->n_addrs)
        return false;
    memcpy(&req->failed, &peer->addr, sizeof(req->failed));
    return req->n_addrs > 1;
}

int gw_dns_fail(sl_session_t *s, gw_dns_req_t *req, int err)
{
    if (err != SL_EDNS || !req || !req->message)
        return 0;
    sl_session_respond_error(s, 502, req->message);
    return 502;
}

void gw_dns_req_end(gw_dns_req_t *req)
{
    if (req)
        wait_end(req);
}

/* ---- watched names (control thread) -------------------------------------------------------- */

static watched_t *find_watched(gw_dns_t *d, const char *name, int family)
{
    for (watched_t *n = d->watched; n; n = n->next)
        if (n->family == family && !strcmp(n->name, name))
            return n;
    return NULL;
}

static void addrs_text(const struct sockaddr_storage *a, size_t n, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && len + 2 < cap; i++) {
        char ip[INET6_ADDRSTRLEN];
        sl_sockaddr_ip_str(&a[i], ip, sizeof(ip));
        int k = snprintf(buf + len, cap - len, "%s%s", i ? ", " : "", ip);
        if (k < 0 || (size_t)k >= cap - len)
            break;
        len += (size_t)k;
    }
}

static void on_rebuild(uv_timer_t *t);

static void schedule_rebuild(gw_dns_t *d)
{
    if (d->rebuild_ready && !uv_is_active((uv_handle_t *)&d->rebuild))
        uv_timer_start(&d->rebuild, on_rebuild, REBUILD_DELAY_MS, 0);
}

static void on_watch(void *data, int err, const sl_dns_result_t *res)
{
    watched_t *n = data;
    if (res->status != SL_DNS_OK || !res->n) {
        if (n->addrs)
            SL_WARN("%s: %s; keeping its last %zu address(es)", n->name, res->message, n->n);
        else
            SL_WARN("%s: %s; requests resolve it themselves until it answers", n->name,
                    res->message);
        return;
    }
    bool same = n->addrs && n->n == res->n;
    struct sockaddr_storage *a = sl_xmalloc(res->n * sizeof(*a));
    for (size_t i = 0; i < res->n; i++) {
        a[i] = res->addrs[i];
        set_port(&a[i], 0);
        same = same && same_addr(&a[i], &n->addrs[i]);
    }
    if (same) { /* back after a "not found": the same set as kept */
        free(a);
        return;
    }
    free(n->addrs);
    n->addrs = a;
    n->n = res->n;
    n->d->changes++;
    char text[512];
    addrs_text(a, res->n, text, sizeof(text));
    SL_INFO("%s now resolves to %zu address(es): %s", n->name, res->n, text);
    schedule_rebuild(n->d);
}

static void watched_free(watched_t *n)
{
    if (n->w)
        sl_dns_unwatch(n->w);
    free(n->name);
    free(n->addrs);
    free(n);
}

static bool is_unresolved(const gw_backend_t *b)
{
    return b->host && !b->addr_len;
}

/* Starts watches for the names of c's watched upstreams; stops those no longer used. */
static void sync_watches(gw_dns_t *d, const gw_config_t *c)
{
    for (watched_t *n = d->watched; n; n = n->next)
        n->used = false;
    for (size_t i = 0; i < c->n_upstreams; i++) {
        const gw_upstream_t *u = c->upstreams[i];
        for (size_t k = 0; u->dns_watch && k < u->n_backends; k++) {
            const gw_backend_t *b = &u->backends[k];
            if (!is_unresolved(b))
                continue;
            watched_t *n = find_watched(d, b->host, u->dns_family);
            if (!n) {
                n = sl_xcalloc(1, sizeof(*n));
                n->d = d;
                n->name = sl_xstrdup(b->host);
                n->family = u->dns_family;
                n->w = sl_dns_watch(d->r, n->name, 0, n->family, on_watch, n);
                n->next = d->watched;
                d->watched = n;
                d->n_watched++;
                SL_DEBUG("following %s for upstream %s", n->name, u->name);
            }
            n->used = true;
        }
    }
    for (watched_t **p = &d->watched; *p;) {
        watched_t *n = *p;
        if (n->used) {
            p = &n->next;
            continue;
        }
        SL_DEBUG("no longer following %s", n->name);
        *p = n->next;
        d->n_watched--;
        watched_free(n);
    }
}

/* One backend per address of a watched name, with the name's weight and port. */
static void expand_name(gw_upstream_t *u, const gw_backend_t *b, const watched_t *n,
                        gw_backend_t *out)
{
    for (size_t i = 0; i < n->n; i++) {
        gw_backend_t *e = &out[i];
        memcpy(&e->addr, &n->addrs[i], sizeof(e->addr));
        set_port(&e->addr, b->port);
        e->addr_len = addr_len(&e->addr);
        char ip[INET6_ADDRSTRLEN], text[INET6_ADDRSTRLEN + 16];
        sl_sockaddr_ip_str(&e->addr, ip, sizeof(ip));
        snprintf(text, sizeof(text), e->addr.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip,
                 (unsigned)b->port);
        e->address = sl_slab_strdup(&u->gen->mem, text);
        e->host = b->host; /* both in u's gen */
        e->port = b->port;
        e->weight = b->weight;
    }
}

/* u is the new snapshot's own (a watched upstream is never shared between snapshots): its
 * backends can be replaced before it is published. */
static void expand_upstream(gw_dns_t *d, gw_upstream_t *u)
{
    size_t total = 0;
    bool any = false;
    for (size_t k = 0; k < u->n_backends; k++) {
        const gw_backend_t *b = &u->backends[k];
        const watched_t *n = is_unresolved(b) ? find_watched(d, b->host, u->dns_family) : NULL;
        any |= n && n->n;
        total += n && n->n ? n->n : 1;
    }
    if (!any)
        return;
    gw_backend_t *out = sl_slab_calloc(&u->gen->mem, total, sizeof(*out));
    size_t j = 0;
    for (size_t k = 0; k < u->n_backends; k++) {
        gw_backend_t *b = &u->backends[k];
        const watched_t *n = is_unresolved(b) ? find_watched(d, b->host, u->dns_family) : NULL;
        if (n && n->n) {
            expand_name(u, b, n, &out[j]);
            j += n->n;
            continue;
        }
        /* Kept as it is (the strings stay in u's gen). */
        out[j].address = b->address;
        out[j].host = b->host;
        memcpy(&out[j].addr, &b->addr, sizeof(b->addr));
        out[j].addr_len = b->addr_len;
        out[j].weight = b->weight;
        out[j].port = b->port;
        j++;
    }
    u->backends = out; /* the old array stays in the gen until it goes */
    u->n_backends = total;
    gw_upstream_build_rotation(u);
}

void gw_dns_prepare(gateway_t *gw, gw_config_t *c)
{
    gw_dns_t *d = gw->dns;
    if (!d || !d->r)
        return;
    sync_watches(d, c);
    for (size_t i = 0; i < c->n_upstreams; i++)
        if (c->upstreams[i]->dns_watch)
            expand_upstream(d, c->upstreams[i]);
}

/* A watched name changed: the same document again, its names replaced by the new addresses
 * (gw_publish calls gw_dns_prepare). The hash stays: the desired state did not change. */
static void on_rebuild(uv_timer_t *t)
{
    gw_dns_t *d = t->data;
    gateway_t *gw = d->gw;
    gw_config_t *c = NULL;
    sl_error_t err = {0};
    /* Only the watched upstreams (never taken over) and their routes are built anew; the tree
     * of the running text is made in bulk (util/jmem.h). */
    gw_build_opts_t opts = {.prev = gw->current, .keep_hash = gw->current->hash};
    sl_jmem_scope_t scope;
    sl_jmem_begin(&scope, gw->current->text_len * 8);
    int rc = gw_config_build(gw_config_doc(gw->current, false), &opts, &c, &err);
    sl_jmem_end(&scope);
    if (rc != 0) {
        atomic_fetch_add(&gw->reloads_failed, 1);
        SL_ERROR("new addresses not applied: the configuration does not load again: %s", err.msg);
        return;
    }
    atomic_fetch_add(&gw->reloads_ok, 1); /* a backends-only change, as discovery's */
    gw_publish(gw, c, "DNS");
}

static int on_server_start(sl_server_t *server, void *data, sl_error_t *err)
{
    gateway_t *gw = data;
    gw_dns_t *d = gw->dns;
    uv_loop_t *loop = sl_server_main_loop(server);
    if (sl_resolver_new(loop, &d->opts, &d->r) != 0) {
        SL_ERROR("no DNS resolver for watched names; they are resolved per request");
        d->r = NULL;
        return 0;
    }
    uv_timer_init(loop, &d->rebuild);
    d->rebuild.data = d;
    d->rebuild_ready = true;
    /* The first snapshot went to the workers unprepared: follow its names now; their first
     * answers publish the addresses. */
    sync_watches(d, gw->current);
    return 0;
}

static void on_server_stop(sl_server_t *server, void *data)
{
    gateway_t *gw = data;
    gw_dns_t *d = gw->dns;
    while (d->watched) {
        watched_t *n = d->watched;
        d->watched = n->next;
        watched_free(n);
    }
    d->n_watched = 0;
    if (d->rebuild_ready)
        uv_close((uv_handle_t *)&d->rebuild, NULL);
    d->rebuild_ready = false;
    if (d->r)
        sl_resolver_close(d->r, NULL, NULL);
    d->r = NULL;
}

void gw_dns_init(gateway_t *gw)
{
    gw_dns_t *d = gw->dns = sl_xcalloc(1, sizeof(*d));
    d->gw = gw;
    const gw_config_t *c = gw->current;
    d->opts = c->dns;
    d->n_servers = c->n_dns_servers;
    d->servers = sl_xcalloc(d->n_servers ? d->n_servers : 1, sizeof(char *));
    for (size_t i = 0; i < d->n_servers; i++)
        d->servers[i] = sl_xstrdup(c->dns_servers[i]);
    d->opts.servers = (const char *const *)d->servers;
    d->n_workers = gw->n_workers;
    d->workers = sl_xcalloc(d->n_workers, sizeof(dns_worker_t));
    sl_server_on_worker_start(gw->server, worker_start, gw);
    sl_server_on_worker_stop(gw->server, worker_stop, gw);
    sl_server_on_start(gw->server, on_server_start, gw);
    sl_server_on_stop(gw->server, on_server_stop, gw);
}

void gw_dns_free(gateway_t *gw)
{
    gw_dns_t *d = gw->dns;
    if (!d)
        return;
    while (d->watched) { /* the server never ran */
        watched_t *n = d->watched;
        d->watched = n->next;
        free(n->name);
        free(n->addrs);
        free(n);
    }
    sl__cfg_free_str_list(d->servers, d->n_servers);
    free(d->workers);
    free(d);
    gw->dns = NULL;
}

/* ---- metrics ------------------------------------------------------------------------------- */

char *gw_dns_metrics(gateway_t *gw)
{
    gw_dns_t *d = gw->dns;
    uint64_t sum[RES_COUNT] = {0};
    for (size_t i = 0; d && i < d->n_workers; i++)
        for (int r = 0; r < RES_COUNT; r++)
            sum[r] += atomic_load_explicit(&d->workers[i].results[r], memory_order_relaxed);
    size_t cap = 2048, len = 0;
    char *out = sl_xmalloc(cap);
    len += (size_t)snprintf(out + len, cap - len,
                            "# HELP sluice_dns_lookups_total Upstream host names resolved for "
                            "requests, by result (cached: a fresh answer of the worker's cache, "
                            "no wait).\n# TYPE sluice_dns_lookups_total counter\n");
    for (int r = 0; r < RES_COUNT; r++)
        len +=
            (size_t)snprintf(out + len, cap - len, "sluice_dns_lookups_total{result=\"%s\"} %llu\n",
                             result_names[r], (unsigned long long)sum[r]);
    snprintf(out + len, cap - len,
             "# HELP sluice_dns_watched_names Host names followed for upstreams with dns.watch.\n"
             "# TYPE sluice_dns_watched_names gauge\nsluice_dns_watched_names %zu\n"
             "# HELP sluice_dns_watch_changes_total Answers that changed the addresses of a "
             "followed name.\n# TYPE sluice_dns_watch_changes_total counter\n"
             "sluice_dns_watch_changes_total %llu\n",
             d ? d->n_watched : 0, (unsigned long long)(d ? d->changes : 0));
    return out;
}
