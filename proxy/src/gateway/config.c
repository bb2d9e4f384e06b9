/* Gateway configuration: the schema of SPEC §4 parsed into an immutable snapshot. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <arpa/inet.h>
#include <ctype.h>
#include <openssl/evp.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "gateway/gateway.h"
#include "gateway/upstream_dns.h"
#include "gateway/upstream_tunnel.h"
#include "util/cfg.h"
#include "util/hmap.h"
#include "util/jcanon.h"
#include "util/mem.h"
#include "util/slab.h"

#define SL_LOG_TAG "config"
#include "sluice/log.h"

const char *const gw_top_keys[] = {"admin",  "dns",    "listeners",    "upstreams",
                                   "routes", "errors", "certificates", NULL};
const char *const gw_dynamic_keys[] = {"upstreams", "routes", "errors", "certificates", NULL};

static const char *const listener_keys[] = {"name", "listen", "protocol", "tls", "upstream", NULL};
static const char *const upstream_keys[] = {"backends", "lb",       "discovery", "protocol", "host",
                                            "tls",      "timeouts", "tunnel",    "dns",      NULL};
static const char *const listener_tls_keys[] = {"certificates", "alpn", "client_ca",
                                                "handshake_timeout", NULL};
static const char *const upstream_tls_keys[] = {"sni", "verify", "ca", "cert", "key", NULL};
static const char *const timeout_keys[] = {"connect", "read", "write", "idle", "tunnel", NULL};
static const char *const discovery_keys[] = {"file", "interval", NULL};
static const char *const route_keys[] = {"name",    "match",   "upstream", "timeouts",
                                         "filters", "respond", NULL};
static const char *const match_keys[] = {"host", "path", "path_type", "methods", "headers", NULL};
static const char *const respond_keys[] = {"status", "body", "headers", NULL};
static const char *const errors_keys[] = {"format", NULL};
static const char *const admin_keys[] = {"listen", "token", NULL};

/* ---- rotation state shared across snapshots ---------------------------------------------- */

/* Upstream rotation counters live as long as some snapshot has an upstream of that name; a
 * new snapshot looks them up here by name. Control thread builds snapshots; the lock only
 * guards this table (never taken on the request path). */
static pthread_mutex_t states_lock = PTHREAD_MUTEX_INITIALIZER;
static sl_hmap_t states;

static gw_upstream_state_t *state_for(const char *name)
{
    pthread_mutex_lock(&states_lock);
    void **slot = sl_hmap_put(&states, name, strlen(name));
    if (!*slot)
        *slot = sl_xcalloc(1, sizeof(gw_upstream_state_t));
    gw_upstream_state_t *st = *slot;
    atomic_fetch_add(&st->refs, 1);
    pthread_mutex_unlock(&states_lock);
    return st;
}

static void state_release(gw_upstream_state_t *st)
{
    /* Entries stay in the table (a name comes back often); only the count drops. */
    if (st)
        atomic_fetch_sub(&st->refs, 1);
}

/* ---- helpers ----------------------------------------------------------------------------- */

static bool valid_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (!(isalnum(c) || strchr("!#$%&'*+-.^_`|~", c)))
            return false;
    }
    return true;
}

static bool valid_value(const char *s)
{
    for (; *s; s++)
        if (*s == '\r' || *s == '\n')
            return false;
    return true;
}

static bool valid_host(const char *h, bool allow_wildcard)
{
    size_t n = strlen(h);
    if (!n || n > 253)
        return false;
    if (allow_wildcard && n > 2 && h[0] == '*' && h[1] == '.')
        h += 2;
    for (const char *p = h; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (!(isalnum(c) || c == '-' || c == '.' || c == '_'))
            return false;
    }
    return true;
}

static int get_timeouts(const cJSON *obj, const char *path, gw_timeouts_t *t, sl_error_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, "timeouts");
    if (!v || cJSON_IsNull(v))
        return 0;
    char p[SL_CFG_PATH_MAX];
    sl__cfg_path_key(p, sizeof(p), path, "timeouts");
    int rc = sl__cfg_check_keys(v, p, timeout_keys, err);
    if (rc)
        return rc;
    if ((rc = sl__cfg_get_duration_ms(v, p, "connect", &t->connect, err)) ||
        (rc = sl__cfg_get_duration_ms(v, p, "read", &t->read, err)) ||
        (rc = sl__cfg_get_duration_ms(v, p, "write", &t->write, err)) ||
        (rc = sl__cfg_get_duration_ms(v, p, "idle", &t->idle, err)) ||
        (rc = sl__cfg_get_duration_ms(v, p, "tunnel", &t->tunnel, err)))
        return rc;
    return 0;
}

/* ---- listeners --------------------------------------------------------------------------- */

static void listener_tls_free(gw_listener_tls_t *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n_certs; i++)
        gw_cert_free(&t->certs[i]);
    free(t->certs);
    free(t->client_ca);
    free(t);
}

/* listeners[].tls: {certificates, alpn, client_ca, handshake_timeout}. */
static int parse_listener_tls(gw_listener_t *gl, const cJSON *l, const char *path, sl_error_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(l, "tls");
    if (!v || cJSON_IsNull(v))
        return 0;
    char p[SL_CFG_PATH_MAX], cp[SL_CFG_PATH_MAX];
    sl__cfg_path_key(p, sizeof(p), path, "tls");
    int rc = sl__cfg_check_keys(v, p, listener_tls_keys, err);
    if (rc)
        return rc;
    gw_listener_tls_t *t = gl->tls = sl_xcalloc(1, sizeof(*t));
    t->handshake_timeout_ms = 10000;
    sl__cfg_path_key(cp, sizeof(cp), p, "certificates");
    if ((rc = gw_certs_parse_list(cJSON_GetObjectItemCaseSensitive(v, "certificates"), cp, false,
                                  &t->certs, &t->n_certs, err)) ||
        (rc = sl__cfg_get_str(v, p, "client_ca", false, &t->client_ca, err)) ||
        (rc = sl__cfg_get_duration_ms(v, p, "handshake_timeout", &t->handshake_timeout_ms, err)))
        return rc;
    if (!t->handshake_timeout_ms)
        return sl_error_set(err, SL_ECONFIG, "%s.handshake_timeout: must be more than 0", p);
    char **alpn = NULL;
    size_t n_alpn = 0;
    bool h1 = true;
    t->h2 = true; /* default: [h2, http/1.1] */
    if (cJSON_GetObjectItemCaseSensitive(v, "alpn")) {
        t->h2 = false;
        if ((rc = sl__cfg_get_str_list(v, p, "alpn", &alpn, &n_alpn, err)))
            return rc;
        h1 = false;
        for (size_t i = 0; !rc && i < n_alpn; i++) {
            if (!strcmp(alpn[i], "http/1.1"))
                h1 = true;
            else if (!strcmp(alpn[i], "h2"))
                t->h2 = true;
            else
                rc = sl_error_set(err, SL_ECONFIG,
                                  "%s.alpn[%zu]: unknown protocol \"%s\" (h2, http/1.1)", p, i,
                                  alpn[i]);
        }
        sl__cfg_free_str_list(alpn, n_alpn);
        if (rc)
            return rc;
        if (!h1)
            return sl_error_set(err, SL_ECONFIG,
                                "%s.alpn: http/1.1 is required (clients without ALPN speak it)", p);
    }
    if (t->client_ca) {
        /* Load it now so a bad file is refused with the configuration. */
        sl_tls_settings_t *probe = sl_tls_settings_new();
        sl_error_t e2 = {0};
        rc = sl_tls_settings_set_client_ca(probe, t->client_ca, &e2);
        sl_tls_settings_free(probe);
        if (rc)
            return sl_error_set(err, SL_ECONFIG, "%s.client_ca: %s", p, e2.msg);
    }
    return 0;
}

/* listeners[].protocol and, for tcp, the upstream the listener forwards to. */
static int parse_listener_protocol(gw_listener_t *gl, const cJSON *l, const char *p,
                                   sl_error_t *err)
{
    int rc = sl__cfg_get_str(l, p, "upstream", false, &gl->upstream, err);
    if (rc)
        return rc;
    if (strcmp(gl->protocol, "tcp") == 0) {
        gl->tcp = true;
        if (!gl->upstream)
            return sl_error_set(err, SL_ECONFIG,
                                "%s.upstream: required for a tcp listener (the upstream it "
                                "forwards to)",
                                p);
        return 0;
    }
    if (strcmp(gl->protocol, "http") != 0)
        return sl_error_set(err, SL_ECONFIG, "%s.protocol: unknown value \"%s\" (http, tcp)", p,
                            gl->protocol);
    if (gl->upstream)
        return sl_error_set(err, SL_ECONFIG,
                            "%s.upstream: only a tcp listener has an upstream (http listeners "
                            "use routes)",
                            p);
    return 0;
}

/* A tcp listener's upstream must exist in every configuration: listeners only change at a
 * restart, so a PUT /config without it is refused. */
static int resolve_listener_upstreams(gw_config_t *c, sl_error_t *err)
{
    for (size_t i = 0; i < c->n_listeners; i++) {
        gw_listener_t *l = &c->listeners[i];
        if (!l->tcp)
            continue;
        l->tcp_upstream = gw_config_upstream(c, l->upstream);
        if (!l->tcp_upstream)
            return sl_error_set(err, SL_ECONFIG,
                                "listeners[%zu].upstream: unknown upstream \"%s\" (tcp listener "
                                "\"%s\" forwards to it: every configuration must define it)",
                                i, l->upstream, l->name);
        for (size_t k = 0; k < l->tcp_upstream->n_backends; k++)
            if (l->tcp_upstream->backends[k].host && !l->tcp_upstream->tunnel)
                return sl_error_set(err, SL_ECONFIG,
                                    "upstreams.%s.backends[%zu]: \"%s\": tcp listener \"%s\" "
                                    "forwards to this upstream, and tcp listeners do not resolve "
                                    "host names yet (use ip:port, or a tunnel: its proxy "
                                    "resolves them)",
                                    l->upstream, k, l->tcp_upstream->backends[k].address, l->name);
    }
    return 0;
}

static int parse_listeners(gw_config_t *c, const cJSON *root, sl_error_t *err)
{
    const cJSON *ls = cJSON_GetObjectItemCaseSensitive(root, "listeners");
    if (!ls || cJSON_IsNull(ls))
        return 0;
    if (!cJSON_IsArray(ls))
        return sl_error_set(err, SL_ECONFIG, "listeners: expected a list, got %s",
                            sl__cfg_type_name(ls));
    size_t n = (size_t)cJSON_GetArraySize(ls), i = 0;
    c->listeners = sl_xcalloc(n ? n : 1, sizeof(gw_listener_t));
    for (const cJSON *l = ls->child; l; l = l->next, i++) {
        char p[SL_CFG_PATH_MAX];
        sl__cfg_path_index(p, sizeof(p), "listeners", i);
        int rc = sl__cfg_check_keys(l, p, listener_keys, err);
        if (rc)
            return rc;
        gw_listener_t *gl = &c->listeners[c->n_listeners++];
        if ((rc = sl__cfg_get_str(l, p, "name", false, &gl->name, err)) ||
            (rc = sl__cfg_get_str(l, p, "listen", false, &gl->listen, err)) ||
            (rc = sl__cfg_get_str(l, p, "protocol", false, &gl->protocol, err)))
            return rc;
        if (!gl->listen)
            return sl_error_set(err, SL_ECONFIG, "%s.listen: required", p);
        if (!gl->name)
            gl->name = sl_xstrdup(p);
        if (!gl->protocol)
            gl->protocol = sl_xstrdup("http");
        if ((rc = parse_listener_protocol(gl, l, p, err)) ||
            (rc = parse_listener_tls(gl, l, p, err)))
            return rc;
        if (gl->tcp && gl->tls &&
            !cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(l, "tls"), "alpn"))
            gl->tls->h2 = false; /* the bytes go to the upstream as they are: no h2 unless asked */
        sl_endpoint_t ep;
        memset(&ep, 0, sizeof(ep));
        sl_error_t e2;
        if (sl__endpoint_parse(&ep, gl->listen, &e2) != 0)
            return sl_error_set(err, SL_ECONFIG, "%s.listen: %s", p, e2.msg);
        for (size_t k = 0; k + 1 < c->n_listeners; k++) {
            if (strcmp(c->listeners[k].name, gl->name) == 0)
                return sl_error_set(err, SL_ECONFIG, "%s.name: duplicate listener name \"%s\"", p,
                                    gl->name);
            if (strcmp(c->listeners[k].listen, gl->listen) == 0)
                return sl_error_set(err, SL_ECONFIG, "%s.listen: %s is already used by %s", p,
                                    gl->listen, c->listeners[k].name);
        }
    }
    return 0;
}

/* ---- upstreams --------------------------------------------------------------------------- */

/* sl__cfg_get_str with the copy in an object's slab. */
static int get_str_in(sl_slab_t *mem, const cJSON *obj, const char *path, const char *key,
                      bool allow_empty, char **out, sl_error_t *err)
{
    const char *v = NULL;
    int rc = sl__cfg_get_strv(obj, path, key, allow_empty, &v, err);
    if (!rc && v)
        *out = sl_slab_strdup(mem, v);
    return rc;
}

/* ---- generations: the memory of what one build made ------------------------------------- */

/* Small first (most changes make one or two objects); a big build grows into blocks. */
static gw_gen_t *gen_new(void)
{
    sl_slab_t mem;
    sl_slab_init(&mem, 4096);
    gw_gen_t *g = sl_slab_calloc(&mem, 1, sizeof(*g));
    g->mem = mem;
    atomic_init(&g->refs, 1);
    return g;
}

static void gen_release(gw_gen_t *g)
{
    if (atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) == 1) {
        sl_slab_t mem = g->mem; /* g lives in it */
        sl_slab_free(&mem);
    }
}

/* A new object in g (zeroed, one reference). */
static void *gen_object(gw_gen_t *g, size_t size)
{
    atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
    g->made++;
    return sl_slab_calloc(&g->mem, 1, size);
}

/* Most of g's objects are gone: those left are parsed again rather than shared, so g goes too
 * instead of being kept by a few (memory stays within about four times what is in use). */
static bool gen_sparse(gw_gen_t *g)
{
    long live = atomic_load_explicit(&g->refs, memory_order_relaxed);
    return g->made >= 64 && live * 4 < g->made;
}

/* ---- upstreams (continued) ------------------------------------------------------------------ */

static gw_upstream_t *upstream_new(gw_gen_t *g)
{
    gw_upstream_t *u = gen_object(g, sizeof(*u));
    u->gen = g;
    atomic_init(&u->refs, 1);
    return u;
}

/* Drops one snapshot's reference (on a worker thread when that snapshot's last request ended). */
static void upstream_release(gw_upstream_t *u)
{
    if (!u || atomic_fetch_sub_explicit(&u->refs, 1, memory_order_acq_rel) != 1)
        return;
    state_release(u->state);
    gw_tunnel_free(u->tunnel); /* malloc'd apart: it holds credentials, wiped when freed */
    gen_release(u->gen);
}

/* What a parse of this upstream reads besides its text makes it unfit for reuse: files (the
 * TLS ca, cert and key are loaded and checked each time) and dns.watch (gw_dns_prepare
 * rewrites the backends of the new snapshot's copy). */
static bool upstream_reusable(const gw_upstream_t *u)
{
    return !u->dns_watch && !(u->tls && (u->tls->ca || u->tls->cert || u->tls->key));
}

static int parse_backends(gw_upstream_t *u, const cJSON *list, const char *path, sl_error_t *err)
{
    if (!cJSON_IsArray(list))
        return sl_error_set(err, SL_ECONFIG, "%s: expected a list of backends, got %s", path,
                            sl__cfg_type_name(list));
    size_t n = (size_t)cJSON_GetArraySize(list), i = 0;
    u->backends = sl_slab_calloc(&u->gen->mem, n ? n : 1, sizeof(gw_backend_t));
    u->n_backends = 0;
    for (const cJSON *b = list->child; b; b = b->next, i++) {
        char p[SL_CFG_PATH_MAX];
        sl__cfg_path_index(p, sizeof(p), path, i);
        int rc = gw_backend_parse(b, p, &u->gen->mem, &u->backends[u->n_backends], err);
        if (rc)
            return rc;
        u->n_backends++;
    }
    return 0;
}

int gw_upstream_set_backends(gw_upstream_t *u, const cJSON *list, const char *path, sl_error_t *err)
{
    int rc = parse_backends(u, list, path, err);
    if (rc)
        return rc;
    if (u->n_backends == 0)
        return sl_error_set(err, SL_ECONFIG, "%s: an upstream needs at least one backend", path);
    gw_upstream_build_rotation(u);
    return 0;
}

/* upstreams.NAME.tls: {sni, verify, ca, cert, key}; `tls: {}` is TLS with the defaults. */
static int parse_upstream_tls(gw_upstream_t *u, const cJSON *up, const char *path, sl_error_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(up, "tls");
    if (!v || cJSON_IsNull(v) || cJSON_IsFalse(v))
        return 0;
    char p[SL_CFG_PATH_MAX];
    sl__cfg_path_key(p, sizeof(p), path, "tls");
    gw_upstream_tls_t *t = u->tls = sl_slab_calloc(&u->gen->mem, 1, sizeof(*t));
    t->verify = true;
    if (cJSON_IsTrue(v))
        return 0;
    int rc = sl__cfg_check_keys(v, p, upstream_tls_keys, err);
    if (rc || (rc = get_str_in(&u->gen->mem, v, p, "sni", false, &t->sni, err)) ||
        (rc = sl__cfg_get_bool(v, p, "verify", &t->verify, err)) ||
        (rc = get_str_in(&u->gen->mem, v, p, "ca", false, &t->ca, err)) ||
        (rc = get_str_in(&u->gen->mem, v, p, "cert", false, &t->cert, err)) ||
        (rc = get_str_in(&u->gen->mem, v, p, "key", false, &t->key, err)))
        return rc;
    if (t->sni && !valid_host(t->sni, false))
        return sl_error_set(err, SL_ECONFIG, "%s.sni: \"%s\" is not a host name", p, t->sni);
    if (!t->cert != !t->key)
        return sl_error_set(err, SL_ECONFIG, "%s: a client certificate needs both cert and key", p);
    /* The files load now (and again when they change): a typo is refused with the config. */
    sl_peer_options_t o;
    memset(&o, 0, sizeof(o));
    o.verify_cert = t->verify;
    o.ca_file = t->ca;
    o.client_cert = t->cert;
    o.client_key = t->key;
    sl_error_t e2 = {0};
    if ((t->ca || t->cert) && sl_tls_client_check(&o, NULL, &e2) != 0)
        return sl_error_set(err, SL_ECONFIG, "%s: %s", p, e2.msg);
    return 0;
}

static int parse_upstream(gw_gen_t *g, const cJSON *v, const char *name, gw_upstream_t **out,
                          sl_error_t *err)
{
    char p[SL_CFG_PATH_MAX];
    sl__cfg_path_key(p, sizeof(p), "upstreams", name);
    int rc = sl__cfg_check_keys(v, p, upstream_keys, err);
    if (rc)
        return rc;
    if (!*name || strlen(name) > 128)
        return sl_error_set(err, SL_ECONFIG, "%s: an upstream name must have 1 to 128 characters",
                            p);
    gw_upstream_t *u = upstream_new(g);
    *out = u;
    u->name = sl_slab_strdup(&u->gen->mem, name);
    u->lb = GW_LB_ROUND_ROBIN;
    const char *lb = NULL, *proto = NULL;
    rc = sl__cfg_get_strv(v, p, "lb", false, &lb, err);
    if (!rc && lb && strcmp(lb, "round_robin") != 0)
        rc = sl_error_set(err, SL_ECONFIG, "%s.lb: unknown value \"%s\" (round_robin)", p, lb);
    if (!rc)
        rc = sl__cfg_get_strv(v, p, "protocol", false, &proto, err);
    if (!rc && proto) {
        if (!strcmp(proto, "http1"))
            u->protocol = GW_PROTO_HTTP1;
        else if (!strcmp(proto, "h2"))
            u->protocol = GW_PROTO_H2;
        else if (!strcmp(proto, "h2c"))
            u->protocol = GW_PROTO_H2C;
        else if (!strcmp(proto, "grpc"))
            u->protocol = GW_PROTO_GRPC;
        else
            rc = sl_error_set(err, SL_ECONFIG,
                              "%s.protocol: unknown value \"%s\" (http1, h2, h2c, grpc)", p, proto);
    }
    if (rc || (rc = get_str_in(&u->gen->mem, v, p, "host", false, &u->host, err)) ||
        (rc = get_timeouts(v, p, &u->timeouts, err)) || (rc = parse_upstream_tls(u, v, p, err)) ||
        (rc = gw_upstream_dns_parse(u, v, p, err)))
        return rc;
    if (u->host && !valid_host(u->host, false))
        return sl_error_set(err, SL_ECONFIG, "%s.host: \"%s\" is not a host name", p, u->host);
    /* h2 is HTTP/2 over TLS (ALPN), h2c in cleartext by prior knowledge; grpc is either. */
    if (u->protocol == GW_PROTO_H2 && !u->tls)
        return sl_error_set(err, SL_ECONFIG,
                            "%s.protocol: h2 needs tls (for cleartext HTTP/2 use h2c)", p);
    if (u->protocol == GW_PROTO_H2C && u->tls)
        return sl_error_set(err, SL_ECONFIG, "%s.protocol: h2c is cleartext; with tls use h2", p);
    const cJSON *disc = cJSON_GetObjectItemCaseSensitive(v, "discovery");
    if (disc && !cJSON_IsNull(disc)) {
        char dp[SL_CFG_PATH_MAX];
        sl__cfg_path_key(dp, sizeof(dp), p, "discovery");
        u->discovery_interval_ms = 1000;
        if ((rc = sl__cfg_check_keys(disc, dp, discovery_keys, err)) ||
            (rc = get_str_in(&u->gen->mem, disc, dp, "file", false, &u->discovery_file, err)) ||
            (rc = sl__cfg_get_duration_ms(disc, dp, "interval", &u->discovery_interval_ms, err)))
            return rc;
        if (!u->discovery_file)
            return sl_error_set(err, SL_ECONFIG, "%s.file: required", dp);
        if (u->discovery_interval_ms < 100)
            return sl_error_set(err, SL_ECONFIG, "%s.interval: at least 100ms", dp);
    }
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(v, "backends");
    char bp[SL_CFG_PATH_MAX];
    sl__cfg_path_key(bp, sizeof(bp), p, "backends");
    if (b && !cJSON_IsNull(b)) {
        if ((rc = parse_backends(u, b, bp, err)))
            return rc;
    }
    if (!u->n_backends && !u->discovery_file)
        return sl_error_set(err, SL_ECONFIG,
                            "%s: an upstream needs at least one backend (or a discovery file)", bp);
    if ((rc = gw_tunnel_parse(u, v, p, err)))
        return rc;
    u->state = state_for(name);
    gw_upstream_build_rotation(u);
    u->reusable = upstream_reusable(u);
    return 0;
}

/* ---- taking over what did not change ------------------------------------------------------ */

static bool same_text(const gw_config_t *c, const gw_unit_t *a, const gw_config_t *prev,
                      const gw_unit_t *b)
{
    return a->text.len == b->text.len &&
           memcmp(c->text + a->text.off, prev->text + b->text.off, a->text.len) == 0;
}

/* prev's upstream of this name when its canonical text is the same as the new one's (and both
 * are in canonical order where order matters): it is what parsing the new text would give. A
 * new reference, or NULL. */
static gw_upstream_t *take_upstream(const gw_config_t *c, const gw_config_t *prev, const char *name,
                                    const gw_unit_t *unit)
{
    if (!prev || !prev->upstream_index || !unit->ordered)
        return NULL;
    const gw_unit_t *old = sl_hmap_get(prev->upstream_index, name, strlen(name));
    if (!old || !old->ordered || !same_text(c, unit, prev, old))
        return NULL;
    gw_upstream_t *u = old->obj;
    if (!u->reusable || gen_sparse(u->gen))
        return NULL;
    atomic_fetch_add_explicit(&u->refs, 1, memory_order_relaxed);
    return u;
}

static int parse_upstreams(gw_config_t *c, const cJSON *root, const gw_config_t *prev, gw_gen_t *g,
                           sl_error_t *err)
{
    const cJSON *us = cJSON_GetObjectItemCaseSensitive(root, "upstreams");
    if (!us || cJSON_IsNull(us))
        return 0;
    if (!cJSON_IsObject(us))
        return sl_error_set(err, SL_ECONFIG,
                            "upstreams: expected a mapping of name to upstream, "
                            "got %s",
                            sl__cfg_type_name(us));
    size_t n = (size_t)cJSON_GetArraySize(us), i = 0;
    c->upstreams = sl_slab_calloc(&c->mem, n ? n : 1, sizeof(gw_upstream_t *));
    for (const cJSON *u = us->child; u; u = u->next, i++) {
        gw_unit_t *unit = &c->upstream_units[i]; /* its text: write_text */
        gw_upstream_t *up = take_upstream(c, prev, u->string, unit);
        int rc = up ? 0 : parse_upstream(g, u, u->string, &up, err);
        unit->obj = up;
        c->upstreams[c->n_upstreams++] = up;
        if (rc)
            return rc;
    }
    return 0;
}

gw_upstream_t *gw_config_upstream(const gw_config_t *c, const char *name)
{
    const gw_unit_t *e =
        c->upstream_index ? sl_hmap_get(c->upstream_index, name, strlen(name)) : NULL;
    return e ? e->obj : NULL;
}

/* ---- routes ------------------------------------------------------------------------------ */

static gw_route_t *route_new(gw_gen_t *g)
{
    gw_route_t *r = gen_object(g, sizeof(*r));
    r->gen = g;
    atomic_init(&r->refs, 1);
    return r;
}

static void route_release(gw_route_t *r)
{
    if (!r || atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (r->regex)
        pcre2_code_free(r->regex);
    for (size_t i = 0; i < r->n_filters; i++)
        if (r->filters[i].kind && r->filters[i].kind->free)
            r->filters[i].kind->free(r->filters[i].state);
    gen_release(r->gen);
}

/* parent.headers (at path), a mapping of header name to value, checked whole: names are tokens,
 * values strings without control characters. *out is NULL when it is absent or null. */
static int header_map(const cJSON *parent, const char *path, const cJSON **out, size_t *n,
                      sl_error_t *err)
{
    const cJSON *hs = cJSON_GetObjectItemCaseSensitive(parent, "headers");
    *out = NULL;
    *n = 0;
    if (!hs || cJSON_IsNull(hs))
        return 0;
    char hp[SL_CFG_PATH_MAX];
    sl__cfg_path_key(hp, sizeof(hp), path, "headers");
    if (!cJSON_IsObject(hs))
        return sl_error_set(err, SL_ECONFIG, "%s: expected a mapping of header to value, got %s",
                            hp, sl__cfg_type_name(hs));
    for (const cJSON *h = hs->child; h; h = h->next) {
        char ep[SL_CFG_PATH_MAX];
        sl__cfg_path_key(ep, sizeof(ep), hp, h->string);
        if (!valid_token(h->string))
            return sl_error_set(err, SL_ECONFIG, "%s: not a valid header name", ep);
        if (!cJSON_IsString(h) || !valid_value(h->valuestring))
            return sl_error_set(err, SL_ECONFIG, "%s: expected a header value string", ep);
        (*n)++;
    }
    *out = hs;
    return 0;
}

static int parse_match(gw_route_t *r, const cJSON *m, const char *path, sl_error_t *err)
{
    char p[SL_CFG_PATH_MAX];
    sl__cfg_path_key(p, sizeof(p), path, "match");
    r->path = NULL;
    r->path_type = GW_PATH_PREFIX;
    if (!m || cJSON_IsNull(m)) {
        r->path = sl_slab_strdup(&r->gen->mem, "/");
        return 0;
    }
    int rc = sl__cfg_check_keys(m, p, match_keys, err);
    const char *pt = NULL;
    if (rc || (rc = get_str_in(&r->gen->mem, m, p, "host", false, &r->host, err)) ||
        (rc = get_str_in(&r->gen->mem, m, p, "path", false, &r->path, err)) ||
        (rc = sl__cfg_get_strv(m, p, "path_type", false, &pt, err)))
        return rc;
    if (r->host) {
        size_t hl = strlen(r->host);
        while (hl > 1 && r->host[hl - 1] == '.')
            r->host[--hl] = '\0'; /* "example.com." is "example.com", as requests are matched */
    }
    if (r->host && !valid_host(r->host, true)) {
        if (strchr(r->host, '*'))
            return sl_error_set(err, SL_ECONFIG,
                                "%s.host: \"%s\": a wildcard must be \"*.\" followed by a domain",
                                p, r->host);
        return sl_error_set(err, SL_ECONFIG, "%s.host: \"%s\" is not a host name", p, r->host);
    }
    if (pt) {
        if (!strcmp(pt, "prefix"))
            r->path_type = GW_PATH_PREFIX;
        else if (!strcmp(pt, "exact"))
            r->path_type = GW_PATH_EXACT;
        else if (!strcmp(pt, "regex"))
            r->path_type = GW_PATH_REGEX;
        else
            rc = sl_error_set(err, SL_ECONFIG,
                              "%s.path_type: unknown value \"%s\" (prefix, exact, regex)", p, pt);
        if (rc)
            return rc;
    }
    if (!r->path)
        r->path = sl_slab_strdup(&r->gen->mem, "/");
    if (r->path_type != GW_PATH_REGEX && r->path[0] != '/')
        return sl_error_set(err, SL_ECONFIG, "%s.path: \"%s\" must start with '/'", p, r->path);
    if (r->path_type == GW_PATH_REGEX) {
        int ec;
        PCRE2_SIZE off;
        r->regex = pcre2_compile((PCRE2_SPTR)r->path, PCRE2_ZERO_TERMINATED, 0, &ec, &off, NULL);
        if (!r->regex) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(ec, msg, sizeof(msg));
            return sl_error_set(err, SL_ECONFIG, "%s.path: invalid regex at offset %zu: %s", p,
                                (size_t)off, (char *)msg);
        }
        pcre2_jit_compile(r->regex, PCRE2_JIT_COMPLETE);
    }
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(m, "methods");
    if (ms && !cJSON_IsNull(ms)) {
        char mp[SL_CFG_PATH_MAX];
        sl__cfg_path_key(mp, sizeof(mp), p, "methods");
        if (!cJSON_IsArray(ms))
            return sl_error_set(err, SL_ECONFIG, "%s: expected a list of methods, got %s", mp,
                                sl__cfg_type_name(ms));
        size_t i = 0;
        for (const cJSON *e = ms->child; e; e = e->next, i++) {
            uint32_t bit =
                cJSON_IsString(e) ? gw_method_bit(e->valuestring, strlen(e->valuestring)) : 0;
            if (!bit) {
                char ep[SL_CFG_PATH_MAX];
                sl__cfg_path_index(ep, sizeof(ep), mp, i);
                return sl_error_set(err, SL_ECONFIG, "%s: unknown method %s%s%s", ep,
                                    cJSON_IsString(e) ? "\"" : "",
                                    cJSON_IsString(e) ? e->valuestring : sl__cfg_type_name(e),
                                    cJSON_IsString(e) ? "\"" : "");
            }
            r->methods |= bit;
        }
    }
    const cJSON *hs;
    size_t n;
    if ((rc = header_map(m, p, &hs, &n, err)))
        return rc;
    if (hs) {
        r->headers = sl_slab_calloc(&r->gen->mem, n ? n : 1, sizeof(gw_header_match_t));
        for (const cJSON *h = hs->child; h; h = h->next, r->n_headers++) {
            r->headers[r->n_headers].name = sl_slab_strdup(&r->gen->mem, h->string);
            r->headers[r->n_headers].value = sl_slab_strdup(&r->gen->mem, h->valuestring);
        }
    }
    return 0;
}

static int parse_respond(gw_route_t *r, const cJSON *v, const char *path, sl_error_t *err)
{
    char p[SL_CFG_PATH_MAX];
    sl__cfg_path_key(p, sizeof(p), path, "respond");
    int rc = sl__cfg_check_keys(v, p, respond_keys, err);
    if (rc)
        return rc;
    gw_respond_t *rs = sl_slab_calloc(&r->gen->mem, 1, sizeof(*rs));
    r->respond = rs;
    long status = 200;
    if ((rc = sl__cfg_get_int(v, p, "status", 200, 599, &status, err)) ||
        (rc = get_str_in(&r->gen->mem, v, p, "body", true, &rs->body, err)))
        return rc;
    rs->status = (int)status;
    rs->body_len = rs->body ? strlen(rs->body) : 0;
    const cJSON *hs;
    size_t n;
    if ((rc = header_map(v, p, &hs, &n, err)))
        return rc;
    if (hs) {
        rs->headers = sl_slab_calloc(&r->gen->mem, n ? n : 1, sizeof(sl_header_t));
        for (const cJSON *h = hs->child; h; h = h->next, rs->n_headers++) {
            rs->headers[rs->n_headers].name = sl_str(sl_slab_strdup(&r->gen->mem, h->string));
            rs->headers[rs->n_headers].value = sl_str(sl_slab_strdup(&r->gen->mem, h->valuestring));
        }
    }
    return 0;
}

static int parse_filters(gw_route_t *r, const cJSON *v, const char *path, sl_error_t *err)
{
    char p[SL_CFG_PATH_MAX];
    sl__cfg_path_key(p, sizeof(p), path, "filters");
    if (!cJSON_IsArray(v))
        return sl_error_set(err, SL_ECONFIG, "%s: expected a list of filters, got %s", p,
                            sl__cfg_type_name(v));
    size_t n = (size_t)cJSON_GetArraySize(v), i = 0;
    r->filters = sl_slab_calloc(&r->gen->mem, n ? n : 1, sizeof(gw_filter_t));
    for (const cJSON *f = v->child; f; f = f->next, i++) {
        char fp[SL_CFG_PATH_MAX];
        sl__cfg_path_index(fp, sizeof(fp), p, i);
        if (!cJSON_IsObject(f) || cJSON_GetArraySize(f) != 1)
            return sl_error_set(err, SL_ECONFIG,
                                "%s: expected a mapping with exactly one filter name (%s)", fp,
                                gw_filter_kind_names());
        const cJSON *body = f->child;
        const gw_filter_kind_t *kind = gw_filter_kind_find(body->string);
        char kp[SL_CFG_PATH_MAX];
        sl__cfg_path_key(kp, sizeof(kp), fp, body->string);
        if (!kind)
            return sl_error_set(err, SL_ECONFIG, "%s: unknown filter (%s)", kp,
                                gw_filter_kind_names());
        gw_filter_t *gf = &r->filters[r->n_filters];
        int rc = kind->parse(body, kp, &gf->state, err);
        if (rc)
            return rc;
        gf->kind = kind;
        gf->scratch_offset = r->scratch_size;
        r->scratch_size += (kind->scratch_size + 15) & ~(size_t)15;
        r->n_filters++;
    }
    return 0;
}

static int parse_route(gw_config_t *c, gw_gen_t *g, const cJSON *v, size_t index, gw_route_t **out,
                       sl_error_t *err)
{
    char p[SL_CFG_PATH_MAX];
    sl__cfg_path_index(p, sizeof(p), "routes", index);
    int rc = sl__cfg_check_keys(v, p, route_keys, err);
    if (rc)
        return rc;
    gw_route_t *r = route_new(g);
    *out = r;
    if ((rc = get_str_in(&r->gen->mem, v, p, "name", false, &r->name, err)))
        return rc;
    if (!r->name)
        r->name = sl_slab_strdup(&r->gen->mem, p);
    if ((rc = parse_match(r, cJSON_GetObjectItemCaseSensitive(v, "match"), p, err)) ||
        (rc = get_timeouts(v, p, &r->timeouts, err)))
        return rc;
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(v, "filters");
    if (f && !cJSON_IsNull(f) && (rc = parse_filters(r, f, p, err)))
        return rc;
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(v, "respond");
    const char *up = NULL;
    if ((rc = sl__cfg_get_strv(v, p, "upstream", false, &up, err)))
        return rc;
    if (rs && !cJSON_IsNull(rs)) {
        if (up)
            return sl_error_set(err, SL_ECONFIG, "%s: a route has an upstream or respond, not both",
                                p);
        return parse_respond(r, rs, p, err);
    }
    if (!up)
        return sl_error_set(err, SL_ECONFIG, "%s: a route needs an upstream or respond", p);
    r->upstream = gw_config_upstream(c, up);
    if (!r->upstream)
        rc = sl_error_set(err, SL_ECONFIG, "%s.upstream: unknown upstream \"%s\"", p, up);
    return rc;
}

/* The name a route is known by in prev->route_index: its own, else "routes[i]" (written to
 * buf); NULL when the name is invalid (the parse says why). */
static const char *route_key(const cJSON *v, size_t index, char *buf, size_t cap)
{
    const cJSON *n = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, "name") : NULL;
    if (!n || cJSON_IsNull(n)) {
        sl__cfg_path_index(buf, cap, "routes", index);
        return buf;
    }
    return cJSON_IsString(n) && *n->valuestring ? n->valuestring : NULL;
}

/* prev's route of the same name when its canonical text is the same as the new one's and the
 * upstream it names is the very object it points to: the parse would give the same route. A
 * new reference, or NULL. */
static gw_route_t *take_route(const gw_config_t *c, const gw_config_t *prev, const cJSON *v,
                              size_t index, const gw_unit_t *unit)
{
    if (!prev || !prev->route_index || !unit->ordered)
        return NULL;
    char buf[SL_CFG_PATH_MAX];
    const char *key = route_key(v, index, buf, sizeof(buf));
    const gw_unit_t *old = key ? sl_hmap_get(prev->route_index, key, strlen(key)) : NULL;
    if (!old || !old->ordered || !same_text(c, unit, prev, old))
        return NULL;
    gw_route_t *r = old->obj;
    if (gen_sparse(r->gen) ||
        (r->upstream && gw_config_upstream(c, r->upstream->name) != r->upstream))
        return NULL;
    atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
    return r;
}

static int parse_routes(gw_config_t *c, const cJSON *root, const gw_config_t *prev, gw_gen_t *g,
                        sl_error_t *err)
{
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "routes");
    if (!rs || cJSON_IsNull(rs))
        return 0;
    if (!cJSON_IsArray(rs))
        return sl_error_set(err, SL_ECONFIG, "routes: expected a list, got %s",
                            sl__cfg_type_name(rs));
    size_t n = (size_t)cJSON_GetArraySize(rs), i = 0;
    c->routes = sl_slab_calloc(&c->mem, n ? n : 1, sizeof(gw_route_t *));
    sl_hmap_t names;
    sl_hmap_init_borrowed(&names, NULL);
    sl_hmap_reserve(&names, n);
    int rc = 0;
    for (const cJSON *r = rs->child; r && !rc; r = r->next, i++) {
        gw_unit_t *unit = &c->route_units[i]; /* its text: write_text */
        gw_route_t *route = take_route(c, prev, r, i, unit);
        if (!route)
            rc = parse_route(c, g, r, i, &route, err);
        unit->obj = route;
        c->routes[c->n_routes++] = route;
        if (!rc && cJSON_GetObjectItemCaseSensitive(r, "name")) {
            void **slot = sl_hmap_put(&names, route->name, strlen(route->name));
            if (*slot)
                rc = sl_error_set(err, SL_ECONFIG, "routes[%zu].name: duplicate route name \"%s\"",
                                  i, route->name);
            *slot = route;
        }
    }
    sl_hmap_free(&names);
    return rc;
}

/* ---- small sections ---------------------------------------------------------------------- */

static int parse_misc(gw_config_t *c, const cJSON *root, sl_error_t *err)
{
    int rc;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "errors");
    c->error_format = sl_xstrdup("json");
    if (e && !cJSON_IsNull(e)) {
        if ((rc = sl__cfg_check_keys(e, "errors", errors_keys, err)) ||
            (rc = sl__cfg_get_str(e, "errors", "format", false, &c->error_format, err)))
            return rc;
        if (strcmp(c->error_format, "json") && strcmp(c->error_format, "html") &&
            strcmp(c->error_format, "text"))
            return sl_error_set(err, SL_ECONFIG,
                                "errors.format: unknown value \"%s\" (json, html, text)",
                                c->error_format);
    }
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, "admin");
    c->admin_listen = sl_xstrdup("127.0.0.1:10254");
    if (a && !cJSON_IsNull(a)) {
        if ((rc = sl__cfg_check_keys(a, "admin", admin_keys, err)) ||
            (rc = sl__cfg_get_str(a, "admin", "listen", false, &c->admin_listen, err)) ||
            (rc = sl__cfg_get_str(a, "admin", "token", true, &c->admin_token, err)))
            return rc;
        sl_endpoint_t ep;
        memset(&ep, 0, sizeof(ep));
        sl_error_t e2;
        if (sl__endpoint_parse(&ep, c->admin_listen, &e2) != 0)
            return sl_error_set(err, SL_ECONFIG, "admin.listen: %s", e2.msg);
    }
    if ((rc = gw_certs_parse_list(cJSON_GetObjectItemCaseSensitive(root, "certificates"),
                                  "certificates", true, &c->certs, &c->n_certs, err)))
        return rc;
    return gw_dns_conf_parse(c, root, err);
}

/* ---- the snapshot's text and hash ---------------------------------------------------------- */

/* Mappings whose key order no parser keeps (each key is looked up by name) may come in any
 * order; every other mapping of an upstream or route (filter and respond headers, and whatever
 * a later key brings) must already be in canonical order for the object to be taken over by the
 * next snapshot: then it is exactly what parsing the canonical text gives. These count the
 * lenient mappings of a unit that are out of order. */
static size_t unsorted_in(const cJSON *obj, const char *key)
{
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    return cJSON_IsObject(v) && !sl_jc_is_sorted(v);
}

static size_t lenient_unsorted_upstream(const cJSON *u)
{
    if (!cJSON_IsObject(u))
        return 0;
    size_t n = !sl_jc_is_sorted(u) + unsorted_in(u, "tls") + unsorted_in(u, "timeouts") +
               unsorted_in(u, "dns") + unsorted_in(u, "discovery");
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(u, "backends");
    for (const cJSON *e = cJSON_IsArray(b) ? b->child : NULL; e; e = e->next)
        n += cJSON_IsObject(e) && !sl_jc_is_sorted(e);
    return n;
}

static size_t lenient_unsorted_route(const cJSON *r)
{
    if (!cJSON_IsObject(r))
        return 0;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(r, "match");
    return !sl_jc_is_sorted(r) + unsorted_in(r, "match") +
           (cJSON_IsObject(m) ? unsorted_in(m, "headers") : 0) + unsorted_in(r, "timeouts") +
           unsorted_in(r, "respond");
}

/* Writes v as a unit: its span, and whether it is in order where order matters. */
static void write_unit(sl_jc_t *w, const cJSON *v, gw_unit_t *unit,
                       size_t (*lenient)(const cJSON *))
{
    size_t off = w->len, unsorted = w->unsorted;
    sl_jc_value(w, v);
    unit->text = (gw_span_t){off, w->len - off};
    unsorted = w->unsorted - unsorted;
    unit->ordered = !unsorted || unsorted == lenient(v);
}

static void write_upstreams(gw_config_t *c, sl_jc_t *w, const cJSON *us)
{
    size_t base, n = sl_jc_children(w, us, &base);
    c->upstream_units = sl_slab_calloc(&c->mem, n ? n : 1, sizeof(gw_unit_t));
    sl_jc_raw(w, "{", 1);
    for (size_t i = 0; i < n; i++) {
        sl_jc_child_t ch = w->stack[base + i];
        if (i)
            sl_jc_raw(w, ",", 1);
        sl_jc_string(w, ch.node->string);
        sl_jc_raw(w, ":", 1);
        write_unit(w, ch.node, &c->upstream_units[ch.index], lenient_unsorted_upstream);
    }
    sl_jc_raw(w, "}", 1);
    sl_jc_pop(w, n);
}

static void write_routes(gw_config_t *c, sl_jc_t *w, const cJSON *rs)
{
    size_t n = (size_t)cJSON_GetArraySize(rs), i = 0;
    c->route_units = sl_slab_calloc(&c->mem, n ? n : 1, sizeof(gw_unit_t));
    sl_jc_raw(w, "[", 1);
    for (const cJSON *r = rs->child; r; r = r->next, i++) {
        if (i)
            sl_jc_raw(w, ",", 1);
        write_unit(w, r, &c->route_units[i], lenient_unsorted_route);
    }
    sl_jc_raw(w, "]", 1);
}

static int top_index(const char *key)
{
    for (int k = 0; gw_top_keys[k]; k++)
        if (!strcmp(gw_top_keys[k], key))
            return k;
    return -1;
}

/* The gateway's keys of root (null ones left out) as canonical JSON, once: what GET /config
 * shows, what the hash covers and what the next snapshot compares its upstreams and routes
 * with. Nothing is copied or sorted in the tree itself. */
static void write_text(gw_config_t *c, const cJSON *root, size_t size_hint)
{
    _Static_assert(sizeof(gw_top_keys) / sizeof(gw_top_keys[0]) == GW_TOP_KEYS + 1,
                   "GW_TOP_KEYS is the number of gw_top_keys");
    int order[GW_TOP_KEYS] = {0};
    for (int k = 0; k < GW_TOP_KEYS; k++) { /* the keys sorted, as in any mapping */
        int j = k;
        while (j > 0 && strcmp(gw_top_keys[order[j - 1]], gw_top_keys[k]) > 0) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = k;
    }
    sl_jc_t w;
    sl_jc_init_pooled(&w, true, size_hint);
    sl_jc_raw(&w, "{", 1);
    bool first = true;
    for (int i = 0; i < GW_TOP_KEYS; i++) {
        int k = order[i];
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, gw_top_keys[k]);
        if (!v || cJSON_IsNull(v))
            continue;
        if (!first)
            sl_jc_raw(&w, ",", 1);
        first = false;
        sl_jc_string(&w, gw_top_keys[k]);
        sl_jc_raw(&w, ":", 1);
        size_t off = w.len;
        if (k == top_index("upstreams") && cJSON_IsObject(v))
            write_upstreams(c, &w, v);
        else if (k == top_index("routes") && cJSON_IsArray(v))
            write_routes(c, &w, v);
        else
            sl_jc_value(&w, v);
        c->top[k] = (gw_span_t){off, w.len - off};
    }
    sl_jc_raw(&w, "}", 1);
    if (w.failed) /* only a tree built by hand could have such a value */
        sl_oom();
    c->text = w.p;
    c->text_len = w.len;
    w.p = NULL;
    sl_jc_free(&w);
}

static void hex(const unsigned char md[32], char out[65])
{
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        out[2 * i] = digits[md[i] >> 4];
        out[2 * i + 1] = digits[md[i] & 15];
    }
    out[64] = '\0';
}

/* The hash of {"upstreams":…,"routes":…,"errors":…,"certificates":…} (present keys, in this
 * order, each value canonical): the pieces of the text, streamed. */
static void hash_text(gw_config_t *c)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md)
        sl_oom();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    EVP_DigestUpdate(md, "{", 1);
    bool first = true;
    for (const char *const *d = gw_dynamic_keys; *d; d++) {
        const gw_span_t *v = &c->top[top_index(*d)];
        if (!v->len)
            continue;
        if (!first)
            EVP_DigestUpdate(md, ",", 1);
        first = false;
        EVP_DigestUpdate(md, "\"", 1); /* the keys need no escaping */
        EVP_DigestUpdate(md, *d, strlen(*d));
        EVP_DigestUpdate(md, "\":", 2);
        EVP_DigestUpdate(md, c->text + v->off, v->len);
    }
    EVP_DigestUpdate(md, "}", 1);
    unsigned char out[32];
    unsigned len = 0;
    EVP_DigestFinal_ex(md, out, &len);
    EVP_MD_CTX_free(md);
    hex(out, c->hash);
}

void gw_config_hash_json(const cJSON *doc, char out[65])
{
    unsigned char md[32];
    if (!sl_jc_sha256(doc, false, md))
        sl_oom(); /* cJSON_PrintUnformatted would have failed the same way */
    hex(md, out);
}

/* ---- the snapshot ------------------------------------------------------------------------ */

static void config_free(gw_config_t *c)
{
    for (size_t i = 0; i < c->n_listeners; i++) {
        free(c->listeners[i].name);
        free(c->listeners[i].listen);
        free(c->listeners[i].protocol);
        free(c->listeners[i].upstream);
        listener_tls_free(c->listeners[i].tls);
    }
    free(c->listeners);
    for (size_t i = 0; i < c->n_certs; i++)
        gw_cert_free(&c->certs[i]);
    free(c->certs);
    gw_router_free(c->router);
    for (size_t i = 0; i < c->n_routes; i++)
        route_release(c->routes[i]);
    for (size_t i = 0; i < c->n_upstreams; i++)
        upstream_release(c->upstreams[i]);
    free(c->error_format);
    free(c->admin_listen);
    free(c->admin_token);
    sl__cfg_free_str_list(c->dns_servers, c->n_dns_servers);
    sl_pool_free(c->text);
    sl_slab_free(&c->mem);
    free(c);
}

gw_config_t *gw_config_ref(gw_config_t *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

void gw_config_release(gw_config_t *c)
{
    if (c && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
        config_free(c);
}

static int index_upstreams(gw_config_t *c, sl_error_t *err)
{
    c->upstream_index = sl_slab_alloc(&c->mem, sizeof(sl_hmap_t));
    sl_hmap_init_borrowed(c->upstream_index, &c->mem);
    sl_hmap_reserve(c->upstream_index, c->n_upstreams);
    for (size_t i = 0; i < c->n_upstreams; i++) {
        gw_upstream_t *u = c->upstreams[i];
        void **slot = sl_hmap_put(c->upstream_index, u->name, strlen(u->name));
        if (*slot)
            return sl_error_set(err, SL_ECONFIG, "upstreams.%s: duplicate upstream name", u->name);
        *slot = &c->upstream_units[i];
    }
    return 0;
}

/* Routes by name for the next snapshot (a name given twice is refused; "routes[3]" may also be
 * someone's name: the first keeps it). */
static void index_routes(gw_config_t *c)
{
    c->route_index = sl_slab_alloc(&c->mem, sizeof(sl_hmap_t));
    sl_hmap_init_borrowed(c->route_index, &c->mem);
    sl_hmap_reserve(c->route_index, c->n_routes);
    for (size_t i = 0; i < c->n_routes; i++) {
        void **slot = sl_hmap_put(c->route_index, c->routes[i]->name, strlen(c->routes[i]->name));
        if (!*slot)
            *slot = &c->route_units[i];
    }
}

int gw_config_parse(cJSON *root, gw_config_t **out, sl_error_t *err)
{
    return gw_config_build(root, NULL, out, err);
}

/* Members of root[key] (0 when it is not a container). */
static size_t count_of(const cJSON *root, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    return cJSON_IsObject(v) || cJSON_IsArray(v) ? (size_t)cJSON_GetArraySize(v) : 0;
}

/* Order does not matter (a sum); routes and upstreams count apart (an odd multiplier). */
static uint64_t names_hash(const gw_config_t *c)
{
    uint64_t h = 0;
    for (size_t i = 0; i < c->n_routes; i++)
        h += sl_hash_bytes(c->routes[i]->name, strlen(c->routes[i]->name));
    for (size_t i = 0; i < c->n_upstreams; i++)
        h += 0x9e3779b97f4a7c15ull *
             sl_hash_bytes(c->upstreams[i]->name, strlen(c->upstreams[i]->name));
    return h;
}

int gw_config_build(cJSON *root, const gw_build_opts_t *o, gw_config_t **out, sl_error_t *err)
{
    const gw_config_t *prev = o ? o->prev : NULL;
    *out = NULL;
    int rc = sl__cfg_expect_object(root, "", err);
    size_t units = rc ? 0 : count_of(root, "upstreams") + count_of(root, "routes");
    gw_config_t *c = sl_xcalloc(1, sizeof(*c));
    atomic_store(&c->refs, 1);
    /* Sized for its arrays and indexes (about 200 bytes per upstream or route) at once. */
    sl_slab_init(&c->mem, 4096 + units * 200);
    gw_gen_t *g = gen_new(); /* what this build makes */
    if (!rc)
        /* First: upstreams and routes are compared by their text. Its size is usually about
         * the running one's. */
        write_text(c, root, prev ? prev->text_len + prev->text_len / 8 : 4096 + units * 128);
    if (!rc)
        rc = parse_misc(c, root, err);
    if (!rc)
        rc = parse_listeners(c, root, err);
    if (!rc)
        rc = parse_upstreams(c, root, prev, g, err);
    if (!rc)
        rc = index_upstreams(c, err);
    if (!rc)
        rc = resolve_listener_upstreams(c, err);
    if (!rc)
        rc = parse_routes(c, root, prev, g, err);
    if (!rc) {
        c->router = gw_router_build(c->routes, c->n_routes, err);
        if (!c->router)
            rc = SL_ECONFIG;
    }
    if (!rc)
        c->names_hash = names_hash(c);
    gen_release(g); /* now kept by its objects alone */
    cJSON_Delete(root);
    if (rc) {
        config_free(c);
        return rc;
    }
    index_routes(c);
    if (o && o->keep_hash)
        memcpy(c->hash, o->keep_hash, sizeof(c->hash));
    else
        hash_text(c);
    *out = c;
    return 0;
}

cJSON *gw_config_doc(const gw_config_t *c, bool static_only)
{
    if (!static_only) {
        cJSON *j = cJSON_ParseWithLength(c->text, c->text_len);
        if (!j)
            sl_oom(); /* our own text */
        return j;
    }
    cJSON *j = cJSON_CreateObject();
    for (int k = 0; k < GW_TOP_KEYS; k++) {
        const gw_span_t *v = &c->top[k];
        bool dynamic = false;
        for (const char *const *d = gw_dynamic_keys; *d; d++)
            dynamic |= !strcmp(*d, gw_top_keys[k]);
        if (!v->len || dynamic)
            continue;
        cJSON *x = cJSON_ParseWithLength(c->text + v->off, v->len);
        if (!x)
            sl_oom();
        cJSON_AddItemToObject(j, gw_top_keys[k], x);
    }
    return j;
}

static void redact_keys(cJSON *certs)
{
    cJSON *e;
    cJSON_ArrayForEach(e, certs)
    {
        if (cJSON_GetObjectItemCaseSensitive(e, "key_pem"))
            cJSON_ReplaceItemInObjectCaseSensitive(e, "key_pem", cJSON_CreateString("<redacted>"));
    }
}

cJSON *gw_config_to_json(const gw_config_t *c)
{
    cJSON *j = gw_config_doc(c, false);
    redact_keys(cJSON_GetObjectItemCaseSensitive(j, "certificates"));
    cJSON *l;
    cJSON_ArrayForEach(l, cJSON_GetObjectItemCaseSensitive(j, "listeners"))
    {
        redact_keys(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(l, "tls"),
                                                     "certificates"));
    }
    gw_tunnel_redact(cJSON_GetObjectItemCaseSensitive(j, "upstreams"));
    cJSON *admin = cJSON_GetObjectItemCaseSensitive(j, "admin");
    if (admin && cJSON_GetObjectItemCaseSensitive(admin, "token"))
        cJSON_ReplaceItemInObjectCaseSensitive(admin, "token", cJSON_CreateString("<redacted>"));
    return j;
}
