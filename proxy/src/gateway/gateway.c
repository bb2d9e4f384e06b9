/* The gateway at run time: snapshot publication, the proxy hooks that run a route's filters,
 * and configuration changes (file reload, PUT /config, backends). */
#include <stdlib.h>
#include <string.h>

#include "gateway/filters/filters.h"
#include "gateway/runtime.h"
#include "gateway/upstream_dns.h"
#include "gateway/upstream_tunnel.h"
#include "core/core.h"
#include "util/cfg.h"
#include "util/jmem.h"
#include "util/mem.h"
#include "util/slab.h"

#define SL_LOG_TAG "gateway"
#include "sluice/log.h"

/* ---- per-request context ----------------------------------------------------------------- */

typedef struct gw_ctx {
    gw_worker_t *gww;
    gw_wsnap_t *snap;
    gw_route_t *route;
    gw_upstream_t *upstream;
    const gw_backend_t *backend;
    char *scratch;     /* the route's filters' per-request memory */
    gw_dns_req_t *dns; /* host name backends: the lookup's state (upstream_dns.c) */
} gw_ctx_t;

static gw_worker_t *worker_of(sl_session_t *s)
{
    gateway_t *gw = sl_session_app(s);
    return &gw->workers[sl_worker_id(sl_session_worker(s))];
}

static void snap_put(gw_wsnap_t *w)
{
    if (--w->uses == 0 && w->retired) {
        /* The last request of an older snapshot ended: the series of the routes and upstreams
         * that are gone go too (the metrics would grow with every Ingress ever seen). A request
         * of a still older snapshot may bring one back; its own end removes it again. */
        gw_worker_t *gww = w->owner;
        if (gww->snap && gww->snap != w && gww->snap->cfg->names_hash != w->cfg->names_hash)
            gw_metrics_prune(gww->metrics, gww->snap->cfg);
        gw_config_release(w->cfg);
        free(w);
    }
}

static void *new_ctx(sl_session_t *s)
{
    gw_ctx_t *c = sl_arena_alloc(sl_session_arena(s), sizeof(*c));
    memset(c, 0, sizeof(*c));
    c->gww = worker_of(s);
    c->snap = c->gww->snap;
    c->snap->uses++; /* the request keeps this snapshot until it ends */
    sl_session_set_error_format(s, c->snap->cfg->error_format);
    return c;
}

static void free_ctx(sl_session_t *s, void *ctx)
{
    gw_ctx_t *c = ctx;
    gw_dns_req_end(c->dns);
    snap_put(c->snap);
}

/* Runs one hook of every filter of the route, in order; stops at the first non-CONTINUE. */
#define RUN_FILTERS(c, hook, ...)                                                                \
    do {                                                                                         \
        gw_route_t *r_ = (c)->route;                                                             \
        for (size_t i_ = 0; r_ && i_ < r_->n_filters; i_++) {                                    \
            const gw_filter_t *f_ = &r_->filters[i_];                                            \
            if (!f_->kind->hook)                                                                 \
                continue;                                                                        \
            int rc_ = f_->kind->hook(f_->state, (c)->scratch + f_->scratch_offset, __VA_ARGS__); \
            if (rc_ != SL_CONTINUE)                                                              \
                return rc_;                                                                      \
        }                                                                                        \
    } while (0)

static int request_filter(sl_session_t *s, void *ctx)
{
    gw_ctx_t *c = ctx;
    const gw_config_t *cfg = c->snap->cfg;
    sl_request_header_t *req = sl_session_req(s);
    const sl_str_t *host = sl_headers_get(&req->headers, "host");
    c->route = gw_router_match(cfg->router, host ? *host : (sl_str_t){NULL, 0},
                               sl_request_path(req), req->method, &req->headers);
    if (!c->route) {
        sl_session_respond_error(s, 404, "no route");
        return SL_DONE;
    }
    if (c->route->scratch_size) {
        c->scratch = sl_arena_alloc(sl_session_arena(s), c->route->scratch_size);
        memset(c->scratch, 0, c->route->scratch_size);
    }
    RUN_FILTERS(c, request, s);
    const gw_respond_t *rs = c->route->respond;
    if (rs) {
        sl_response_header_t *resp = sl_session_response_new(s, rs->status);
        for (size_t i = 0; i < rs->n_headers; i++)
            sl_headers_add(&resp->headers, rs->headers[i].name.ptr, rs->headers[i].value.ptr);
        sl_session_respond_header(s, resp, rs->body, rs->body_len);
        return SL_DONE;
    }
    c->upstream = c->route->upstream;
    return SL_CONTINUE;
}

static uint64_t pick_timeout(uint64_t route, uint64_t upstream, uint64_t dflt)
{
    return route ? route : upstream ? upstream : dflt;
}

static int upstream_peer(sl_session_t *s, void *ctx, sl_peer_t *peer)
{
    gw_ctx_t *c = ctx;
    gw_upstream_t *u = c->upstream;
    c->backend = gw_upstream_pick(u);
    if (!c->backend)
        return SL_ENOUPSTREAM;
    sl_peer_init(peer);
    memcpy(&peer->addr, &c->backend->addr, c->backend->addr_len);
    peer->addr_len = c->backend->addr_len; /* 0 for a host name: resolved below */
    const gw_timeouts_t *rt = &c->route->timeouts, *ut = &u->timeouts;
    sl_peer_options_t *o = &peer->options;
    o->connect_timeout_ms = pick_timeout(rt->connect, ut->connect, o->connect_timeout_ms);
    o->read_timeout_ms = pick_timeout(rt->read, ut->read, o->read_timeout_ms);
    o->write_timeout_ms = pick_timeout(rt->write, ut->write, o->write_timeout_ms);
    o->idle_timeout_ms = pick_timeout(rt->idle, ut->idle, o->idle_timeout_ms);
    o->tunnel_idle_timeout_ms = pick_timeout(rt->tunnel, ut->tunnel, o->tunnel_idle_timeout_ms);
    const char *name = u->tls && u->tls->sni ? u->tls->sni
                       : u->host             ? u->host
                                             : gw_backend_name(c->backend);
    if (name) {
        size_t n = strlen(name);
        if (n >= sizeof(peer->sni))
            n = sizeof(peer->sni) - 1;
        memcpy(peer->sni, name, n);
        peer->sni[n] = '\0';
    }
    if (u->protocol != GW_PROTO_HTTP1)
        o->alpn = SL_ALPN_H2; /* h2 by ALPN over TLS, else by prior knowledge (h2c) */
    if (u->tls) {
        peer->tls = true;
        o->verify_cert = o->verify_hostname = u->tls->verify;
        o->ca_file = u->tls->ca; /* NULL: the top-level ca_file */
        o->client_cert = u->tls->cert;
        o->client_key = u->tls->key;
    }
    if (u->tunnel) {
        /* Through a CONNECT proxy, which resolves host names itself. */
        int rc = gw_tunnel_peer(u, c->backend, peer,
                                sl_arena_alloc(sl_session_arena(s), GW_TUNNEL_HOST_MAX));
        if (rc)
            return rc;
    }
    if (!peer->addr_len)
        return gw_dns_peer(s, &c->dns, u, c->backend, peer);
    return SL_CONTINUE;
}

static int fail_to_connect(sl_session_t *s, void *ctx, const sl_peer_t *peer, int err)
{
    gw_ctx_t *c = ctx;
    /* Nothing was sent yet: another backend may answer. Only worth it with more than one. */
    bool other_address = gw_dns_retry(c->dns, peer);
    if (c->upstream && (c->upstream->n_backends > 1 || other_address))
        sl_session_set_retry(s, true);
    return err;
}

static int upstream_request_filter(sl_session_t *s, void *ctx, sl_request_header_t *req)
{
    gw_ctx_t *c = ctx;
    if (c->upstream && c->upstream->host)
        sl_headers_set(&req->headers, "Host", c->upstream->host);
    RUN_FILTERS(c, upstream_request, s, req);
    return SL_CONTINUE;
}

static int request_body_filter(sl_session_t *s, void *ctx, sl_body_t *body, bool end)
{
    gw_ctx_t *c = ctx;
    RUN_FILTERS(c, request_body, s, body, end);
    return SL_CONTINUE;
}

static int response_filter(sl_session_t *s, void *ctx, sl_response_header_t *resp)
{
    gw_ctx_t *c = ctx;
    RUN_FILTERS(c, response, s, resp);
    return SL_CONTINUE;
}

static int response_body_filter(sl_session_t *s, void *ctx, sl_body_t *body, bool end)
{
    gw_ctx_t *c = ctx;
    RUN_FILTERS(c, response_body, s, body, end);
    return SL_CONTINUE;
}

/* Errors answer in the config's format; filter reasons may carry their own status (413). */
static int fail_to_proxy(sl_session_t *s, void *ctx, int err)
{
    const char *reason = sl_session_error_reason(s);
    int status = gw_dns_fail(s, ((gw_ctx_t *)ctx)->dns, err);
    if (status)
        return status; /* a host name that did not resolve: 502 saying why */
    status = err == SL_ECUSTOM ? gw_filter_reason_status(reason) : 0;
    if (status) {
        sl_session_respond_error(s, status, reason);
        return status;
    }
    return 0; /* the engine's default answer and message for err */
}

static void logging(sl_session_t *s, void *ctx, int err)
{
    gw_ctx_t *c = ctx;
    int status = sl_session_status(s);
    gw_metrics_request(c->gww->metrics, c->route ? c->route->name : "",
                       c->upstream ? c->upstream->name : "", status ? status : 499,
                       sl_session_req(s)->method, sl_session_elapsed_ns(s),
                       sl_session_connect_ns(s), sl_session_upstream_reused(s));
}

const sl_proxy_hooks_t gw_hooks = {
    .new_ctx = new_ctx,
    .free_ctx = free_ctx,
    .request_filter = request_filter,
    .upstream_peer = upstream_peer,
    .fail_to_connect = fail_to_connect,
    .upstream_request_filter = upstream_request_filter,
    .request_body_filter = request_body_filter,
    .response_filter = response_filter,
    .response_body_filter = response_body_filter,
    .fail_to_proxy = fail_to_proxy,
    .logging = logging,
};

/* ---- snapshots --------------------------------------------------------------------------- */

static gw_wsnap_t *wsnap_new(gw_worker_t *gww, gw_config_t *cfg)
{
    gw_wsnap_t *w = sl_xcalloc(1, sizeof(*w));
    w->cfg = cfg;
    w->owner = gww;
    w->uses = 1; /* the worker's own hold */
    return w;
}

/* On the worker thread: new requests use fresh; the old snapshot goes when its last request
 * ends. */
static void install(sl_worker_t *w, void *arg)
{
    gw_wsnap_t *fresh = arg;
    gw_worker_t *gww = fresh->owner;
    gw_wsnap_t *old = gww->snap;
    gww->snap = fresh;
    if (old) {
        old->retired = true;
        snap_put(old);
    }
}

/* New handshakes of each TLS listener use c's certificates (existing connections keep theirs). */
static void swap_certs(gateway_t *gw, const gw_config_t *c)
{
    for (size_t i = 0; gw->tls && i < c->n_listeners && i < gw->n_services; i++) {
        if (!gw->tls[i])
            continue;
        sl_error_t err = {0};
        sl_tls_certs_t *set = gw_listener_certs(&c->listeners[i], c, &err);
        if (!set) {
            SL_ERROR("listener %s: certificates kept: %s", c->listeners[i].name, err.msg);
            continue;
        }
        sl_tls_settings_set_certs(gw->tls[i], set);
    }
}

void gw_publish(gateway_t *gw, gw_config_t *c, const char *source)
{
    c->generation = ++gw->generation;
    gw_config_t *old = gw->current;
    gw_dns_prepare(gw, c); /* watched host names become their current addresses */
    if (!gw_certs_same(old, c))
        swap_certs(gw, c);
    gw_certs_cache_keep(c);
    gw->current = c;
    for (size_t i = 0; i < gw->n_workers; i++) {
        gw_wsnap_t *fresh = wsnap_new(&gw->workers[i], gw_config_ref(c));
        sl_worker_post(sl_server_worker(gw->server, i), install, fresh);
    }
    SL_INFO("configuration %llu applied from %s (%zu routes, %zu upstreams, hash %.12s)",
            (unsigned long long)c->generation, source, c->n_routes, c->n_upstreams, c->hash);
    if (old)
        gw_config_release(old);
}

gw_config_t *gw_current(gateway_t *gw)
{
    return gw_config_ref(gw->current);
}

/* ---- changes ----------------------------------------------------------------------------- */

static bool is_dynamic_key(const char *k)
{
    for (const char *const *d = gw_dynamic_keys; *d; d++)
        if (strcmp(*d, k) == 0)
            return true;
    return false;
}

/* Builds and validates a snapshot from a document; publishes it when valid. */
static int apply_doc(gateway_t *gw, cJSON *doc, const char *keep_hash, const char *source,
                     sl_error_t *err)
{
    uint64_t t0 = uv_hrtime();
    int rc = gw_discovery_resolve(doc, err);
    gw_config_t *c = NULL;
    /* What did not change is taken over from the running snapshot, not parsed again. */
    gw_build_opts_t opts = {.prev = gw->current, .keep_hash = keep_hash};
    if (!rc)
        rc = gw_config_build(doc, &opts, &c, err);
    else
        cJSON_Delete(doc);
    doc = NULL; /* consumed */
    if (rc)
        return rc;
    atomic_fetch_add(&gw->reloads_ok, 1);
    gw_publish(gw, c, source);
    gw_discovery_sync(gw, sl_server_main_loop(gw->server));
    gw->last_apply_us = (uv_hrtime() - t0) / 1000;
    SL_DEBUG("configuration built and published in %.1f ms", (double)gw->last_apply_us / 1000.0);
    return 0;
}

static int refused(gateway_t *gw, int rc, const char *source, const sl_error_t *err)
{
    if (rc) {
        atomic_fetch_add(&gw->reloads_failed, 1);
        SL_ERROR("configuration from %s refused: %s", source, err->msg);
    }
    return rc;
}

static int apply_json(gateway_t *gw, cJSON *root, const char *source, sl_error_t *err);

/* A new document: the running static part (listeners, admin, dns) with a new dynamic part. */
int gw_apply_json(gateway_t *gw, cJSON *root, const char *source, sl_error_t *err)
{
    int rc = refused(gw, apply_json(gw, root, source, err), source, err);
    cJSON_Delete(root);
    return rc;
}

static int apply_json(gateway_t *gw, cJSON *root, const char *source, sl_error_t *err)
{
    if (!cJSON_IsObject(root))
        return sl_error_set(err, SL_ECONFIG, "(top level): expected a mapping, got %s",
                            sl__cfg_type_name(root));
    for (const cJSON *k = root->child; k; k = k->next) {
        if (is_dynamic_key(k->string))
            continue;
        bool known = false;
        for (const char *const *t = gw_top_keys; *t; t++)
            known |= strcmp(*t, k->string) == 0;
        if (known)
            return sl_error_set(err, SL_ECONFIG,
                                "%s: cannot be changed at run time (edit the file and restart, or "
                                "hot-upgrade with -u)",
                                k->string);
        return sl_error_set(err, SL_ECONFIG,
                            "%s: unknown key (allowed: upstreams, routes, errors, certificates)",
                            k->string);
    }
    /* The static part is small (parsed from the running snapshot's text); the dynamic part is
     * moved out of root. */
    cJSON *doc = gw_config_doc(gw->current, true);
    for (const char *const *d = gw_dynamic_keys; *d; d++) {
        cJSON *v = cJSON_DetachItemFromObjectCaseSensitive(root, *d);
        if (v)
            cJSON_AddItemToObject(doc, *d, v);
    }
    return apply_doc(gw, doc, NULL, source, err);
}

static int set_backends(gateway_t *gw, const char *upstream, const cJSON *list, const char *source,
                        sl_error_t *err);

int gw_set_backends(gateway_t *gw, const char *upstream, const cJSON *list, const char *source,
                    sl_error_t *err)
{
    return refused(gw, set_backends(gw, upstream, list, source, err), source, err);
}

static int set_backends(gateway_t *gw, const char *upstream, const cJSON *list, const char *source,
                        sl_error_t *err)
{
    const gw_upstream_t *cur = gw_config_upstream(gw->current, upstream);
    if (!cur)
        return sl_error_set(err, SL_ENOUPSTREAM, "unknown upstream \"%s\"", upstream);
    if (cur->discovery_file && strcmp(source, "discovery") != 0)
        return sl_error_set(err, SL_ECONFLICT,
                            "upstream \"%s\" takes its backends from the discovery file %s; "
                            "edit that file instead",
                            upstream, cur->discovery_file);
    if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) == 0)
        return sl_error_set(err, SL_ECONFIG, "backends: expected a non-empty list of backends");
    cJSON *doc = gw_config_doc(gw->current, false);
    cJSON *u = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(doc, "upstreams"),
                                                upstream);
    cJSON_DeleteItemFromObjectCaseSensitive(u, "backends");
    cJSON_AddItemToObject(u, "backends", cJSON_Duplicate(list, 1));
    /* The pushed desired state did not change: keep its hash so the watcher does not re-push. */
    char hash[65];
    memcpy(hash, gw->current->hash, sizeof(hash));
    return apply_doc(gw, doc, hash, source, err);
}

void gw_reload_file(gateway_t *gw)
{
    if (!gw->conf_path) {
        SL_INFO("no configuration file to reload (started on built-in defaults)");
        return;
    }
    cJSON *root = NULL;
    sl_error_t err = {0};
    if (sl__cfg_load_file(gw->conf_path, &root, &err) != 0) {
        atomic_fetch_add(&gw->reloads_failed, 1);
        SL_ERROR("reload refused: %s", err.msg);
        return;
    }
    /* The whole file must be valid as at start (a typo is refused, not ignored); only the
     * dynamic part changes now, a changed static part is reported. */
    sl_server_conf_t check;
    sl_server_conf_init(&check);
    int rc = sl__server_conf_from_tree(&check, root, gw_top_keys, &err);
    sl_server_conf_release(&check);
    if (rc) {
        atomic_fetch_add(&gw->reloads_failed, 1);
        SL_ERROR("reload refused, the running configuration stays: %s", err.msg);
        cJSON_Delete(root);
        return;
    }
    cJSON *dyn = cJSON_CreateObject();
    for (const char *const *d = gw_dynamic_keys; *d; d++) {
        cJSON *v = cJSON_GetObjectItemCaseSensitive(root, *d);
        if (v)
            cJSON_AddItemToObject(dyn, *d, cJSON_Duplicate(v, 1));
    }
    for (const cJSON *k = root->child; k; k = k->next) {
        if (is_dynamic_key(k->string))
            continue;
        const cJSON *was = cJSON_GetObjectItemCaseSensitive(gw->file_doc, k->string);
        if (!was || !cJSON_Compare(k, was, 1))
            SL_WARN("reload: \"%s\" changed in %s; it takes effect at the next restart", k->string,
                    gw->conf_path);
    }
    for (const cJSON *k = gw->file_doc->child; k; k = k->next)
        if (!is_dynamic_key(k->string) && !cJSON_GetObjectItemCaseSensitive(root, k->string))
            SL_WARN("reload: \"%s\" was removed from %s; it takes effect at the next restart",
                    k->string, gw->conf_path);
    if (gw_apply_json(gw, dyn, "SIGHUP", &err) != 0)
        SL_ERROR("reload refused, the running configuration stays: %s", err.msg);
    cJSON_Delete(gw->file_doc);
    gw->file_doc = root;
}

/* ---- construction ------------------------------------------------------------------------ */

gateway_t *gw_new(sl_server_t *server, gw_config_t *initial, const cJSON *file_doc,
                  const char *conf_path)
{
    sl_jmem_init(); /* before the workers run: cJSON's hooks are global */
    gateway_t *gw = sl_xcalloc(1, sizeof(*gw));
    gw->server = server;
    gw->conf_path = conf_path;
    gw->file_doc = file_doc ? cJSON_Duplicate(file_doc, 1) : cJSON_CreateObject();
    gw->n_workers =
        (size_t)(sl_server_conf(server)->threads > 0 ? sl_server_conf(server)->threads : 1);
    gw->workers = sl_xcalloc(gw->n_workers, sizeof(gw_worker_t));
    initial->generation = ++gw->generation;
    gw->current = initial;
    for (size_t i = 0; i < gw->n_workers; i++) {
        gw->workers[i].gw = gw;
        gw->workers[i].metrics = gw_metrics_new();
        gw->workers[i].snap = wsnap_new(&gw->workers[i], gw_config_ref(initial));
    }
    gw_dns_init(gw);
    return gw;
}

void gw_free(gateway_t *gw)
{
    if (!gw)
        return;
    for (size_t i = 0; i < gw->n_workers; i++) {
        gw_wsnap_t *w = gw->workers[i].snap;
        if (w) {
            w->retired = true;
            snap_put(w);
        }
        gw_metrics_free(gw->workers[i].metrics);
    }
    free(gw->workers);
    gw_dns_free(gw);
    free(gw->services);
    for (size_t i = 0; gw->tcp && i < gw->n_services; i++)
        gw_tcp_listener_free(gw->tcp[i]);
    free(gw->tcp);
    for (size_t i = 0; gw->tls && i < gw->current->n_listeners; i++)
        sl_tls_settings_free(gw->tls[i]);
    free(gw->tls);
    gw_config_release(gw->current);
    cJSON_Delete(gw->file_doc);
    free(gw);
    gw_certs_cache_clear();
    sl_pool_clear();
}

static sl_tls_settings_t *listener_tls(const gw_listener_t *l, const gw_config_t *c,
                                       sl_error_t *err)
{
    sl_tls_settings_t *t = sl_tls_settings_new();
    sl_error_t e2 = {0};
    sl_tls_settings_set_handshake_timeout(t, l->tls->handshake_timeout_ms);
    if (l->tls->h2)
        sl_tls_settings_enable_h2(t);
    if (l->tls->client_ca && sl_tls_settings_set_client_ca(t, l->tls->client_ca, &e2) != 0) {
        sl_tls_settings_free(t);
        sl_error_set(err, SL_ECONFIG, "listener %s: %s", l->name, e2.msg);
        return NULL;
    }
    sl_tls_certs_t *set = gw_listener_certs(l, c, &e2);
    if (!set) {
        sl_tls_settings_free(t);
        sl_error_set(err, SL_ECONFIG, "listener %s: %s", l->name, e2.msg);
        return NULL;
    }
    if (!sl_tls_certs_count(set))
        SL_WARN("listener %s: no certificate yet; TLS handshakes are refused until one is "
                "configured",
                l->name);
    sl_tls_settings_set_certs(t, set);
    return t;
}

int gw_add_services(gateway_t *gw, sl_error_t *err)
{
    const gw_config_t *c = gw->current;
    size_t n = c->n_listeners ? c->n_listeners : 1;
    gw->services = sl_xcalloc(n, sizeof(sl_service_t *));
    gw->tls = sl_xcalloc(n, sizeof(sl_tls_settings_t *));
    gw->tcp = sl_xcalloc(n, sizeof(gw_tcp_listener_t *));
    for (size_t i = 0; i < c->n_listeners; i++) {
        const gw_listener_t *l = &c->listeners[i];
        sl_service_t *svc =
            l->tcp ? gw_tcp_service_new(gw, i, &gw->tcp[i])
                   : sl_http_proxy_service_new(sl_server_conf(gw->server), &gw_hooks, gw);
        int rc;
        if (l->tls) {
            if (!(gw->tls[i] = listener_tls(l, c, err)))
                return SL_ECONFIG;
            rc = sl_service_add_tls(svc, l->listen, gw->tls[i]);
        } else {
            rc = sl_service_add_listen(svc, l->listen);
        }
        if (rc != 0)
            return sl_error_set(err, SL_ECONFIG, "listener %s: invalid address %s", l->name,
                                l->listen);
        sl_server_add_service(gw->server, svc);
        gw->services[gw->n_services++] = svc;
    }
    return 0;
}
