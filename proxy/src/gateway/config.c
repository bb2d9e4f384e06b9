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
#include "util/mem.h"

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

static void upstream_free(gw_upstream_t *u)
{
    if (!u)
        return;
    free(u->name);
    for (size_t i = 0; i < u->n_backends; i++)
        gw_backend_free(&u->backends[i]);
    free(u->backends);
    free(u->seq);
    free(u->host);
    if (u->tls) {
        free(u->tls->sni);
        free(u->tls->ca);
        free(u->tls->cert);
        free(u->tls->key);
        free(u->tls);
    }
    free(u->discovery_file);
    gw_tunnel_free(u->tunnel);
    state_release(u->state);
    free(u);
}

static int parse_backends(gw_upstream_t *u, const cJSON *list, const char *path, sl_error_t *err)
{
    if (!cJSON_IsArray(list))
        return sl_error_set(err, SL_ECONFIG, "%s: expected a list of backends, got %s", path,
                            sl__cfg_type_name(list));
    size_t n = (size_t)cJSON_GetArraySize(list), i = 0;
    u->backends = sl_xcalloc(n ? n : 1, sizeof(gw_backend_t));
    for (const cJSON *b = list->child; b; b = b->next, i++) {
        char p[SL_CFG_PATH_MAX];
        sl__cfg_path_index(p, sizeof(p), path, i);
        int rc = gw_backend_parse(b, p, &u->backends[u->n_backends], err);
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
    gw_upstream_tls_t *t = u->tls = sl_xcalloc(1, sizeof(*t));
    t->verify = true;
    if (cJSON_IsTrue(v))
        return 0;
    int rc = sl__cfg_check_keys(v, p, upstream_tls_keys, err);
    if (rc || (rc = sl__cfg_get_str(v, p, "sni", false, &t->sni, err)) ||
        (rc = sl__cfg_get_bool(v, p, "verify", &t->verify, err)) ||
        (rc = sl__cfg_get_str(v, p, "ca", false, &t->ca, err)) ||
        (rc = sl__cfg_get_str(v, p, "cert", false, &t->cert, err)) ||
        (rc = sl__cfg_get_str(v, p, "key", false, &t->key, err)))
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

static int parse_upstream(const cJSON *v, const char *name, gw_upstream_t **out, sl_error_t *err)
{
    char p[SL_CFG_PATH_MAX];
    sl__cfg_path_key(p, sizeof(p), "upstreams", name);
    int rc = sl__cfg_check_keys(v, p, upstream_keys, err);
    if (rc)
        return rc;
    if (!*name || strlen(name) > 128)
        return sl_error_set(err, SL_ECONFIG, "%s: an upstream name must have 1 to 128 characters",
                            p);
    gw_upstream_t *u = sl_xcalloc(1, sizeof(*u));
    *out = u;
    u->name = sl_xstrdup(name);
    u->lb = GW_LB_ROUND_ROBIN;
    char *lb = NULL, *proto = NULL;
    rc = sl__cfg_get_str(v, p, "lb", false, &lb, err);
    if (!rc && lb && strcmp(lb, "round_robin") != 0)
        rc = sl_error_set(err, SL_ECONFIG, "%s.lb: unknown value \"%s\" (round_robin)", p, lb);
    free(lb);
    if (!rc)
        rc = sl__cfg_get_str(v, p, "protocol", false, &proto, err);
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
    free(proto);
    if (rc || (rc = sl__cfg_get_str(v, p, "host", false, &u->host, err)) ||
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
            (rc = sl__cfg_get_str(disc, dp, "file", false, &u->discovery_file, err)) ||
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
    return 0;
}

static int parse_upstreams(gw_config_t *c, const cJSON *root, sl_error_t *err)
{
    const cJSON *us = cJSON_GetObjectItemCaseSensitive(root, "upstreams");
    if (!us || cJSON_IsNull(us))
        return 0;
    if (!cJSON_IsObject(us))
        return sl_error_set(err, SL_ECONFIG,
                            "upstreams: expected a mapping of name to upstream, "
                            "got %s",
                            sl__cfg_type_name(us));
    size_t n = (size_t)cJSON_GetArraySize(us);
    c->upstreams = sl_xcalloc(n ? n : 1, sizeof(gw_upstream_t *));
    for (const cJSON *u = us->child; u; u = u->next) {
        gw_upstream_t *up = NULL;
        int rc = parse_upstream(u, u->string, &up, err);
        c->upstreams[c->n_upstreams++] = up;
        if (rc)
            return rc;
    }
    return 0;
}

gw_upstream_t *gw_config_upstream(const gw_config_t *c, const char *name)
{
    return c->upstream_index ? sl_hmap_get(c->upstream_index, name, strlen(name)) : NULL;
}

/* ---- routes ------------------------------------------------------------------------------ */

static void route_free(gw_route_t *r)
{
    if (!r)
        return;
    free(r->name);
    free(r->host);
    free(r->path);
    if (r->regex)
        pcre2_code_free(r->regex);
    for (size_t i = 0; i < r->n_headers; i++) {
        free(r->headers[i].name);
        free(r->headers[i].value);
    }
    free(r->headers);
    if (r->respond) {
        free(r->respond->body);
        for (size_t i = 0; i < r->respond->n_headers; i++) {
            free((char *)r->respond->headers[i].name.ptr);
            free((char *)r->respond->headers[i].value.ptr);
        }
        free(r->respond->headers);
        free(r->respond);
    }
    for (size_t i = 0; i < r->n_filters; i++)
        if (r->filters[i].kind && r->filters[i].kind->free)
            r->filters[i].kind->free(r->filters[i].state);
    free(r->filters);
    free(r);
}

static int parse_match(gw_route_t *r, const cJSON *m, const char *path, sl_error_t *err)
{
    char p[SL_CFG_PATH_MAX];
    sl__cfg_path_key(p, sizeof(p), path, "match");
    r->path = NULL;
    r->path_type = GW_PATH_PREFIX;
    if (!m || cJSON_IsNull(m)) {
        r->path = sl_xstrdup("/");
        return 0;
    }
    int rc = sl__cfg_check_keys(m, p, match_keys, err);
    char *pt = NULL;
    if (rc || (rc = sl__cfg_get_str(m, p, "host", false, &r->host, err)) ||
        (rc = sl__cfg_get_str(m, p, "path", false, &r->path, err)) ||
        (rc = sl__cfg_get_str(m, p, "path_type", false, &pt, err)))
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
        free(pt);
        if (rc)
            return rc;
    }
    if (!r->path)
        r->path = sl_xstrdup("/");
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
    const cJSON *hs = cJSON_GetObjectItemCaseSensitive(m, "headers");
    if (hs && !cJSON_IsNull(hs)) {
        char hp[SL_CFG_PATH_MAX];
        sl__cfg_path_key(hp, sizeof(hp), p, "headers");
        if (!cJSON_IsObject(hs))
            return sl_error_set(err, SL_ECONFIG,
                                "%s: expected a mapping of header to value, got %s", hp,
                                sl__cfg_type_name(hs));
        size_t n = (size_t)cJSON_GetArraySize(hs);
        r->headers = sl_xcalloc(n ? n : 1, sizeof(gw_header_match_t));
        for (const cJSON *h = hs->child; h; h = h->next) {
            char ep[SL_CFG_PATH_MAX];
            sl__cfg_path_key(ep, sizeof(ep), hp, h->string);
            if (!valid_token(h->string))
                return sl_error_set(err, SL_ECONFIG, "%s: not a valid header name", ep);
            if (!cJSON_IsString(h) || !valid_value(h->valuestring))
                return sl_error_set(err, SL_ECONFIG, "%s: expected a header value string", ep);
            r->headers[r->n_headers].name = sl_xstrdup(h->string);
            r->headers[r->n_headers].value = sl_xstrdup(h->valuestring);
            r->n_headers++;
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
    gw_respond_t *rs = sl_xcalloc(1, sizeof(*rs));
    r->respond = rs;
    long status = 200;
    if ((rc = sl__cfg_get_int(v, p, "status", 200, 599, &status, err)) ||
        (rc = sl__cfg_get_str(v, p, "body", true, &rs->body, err)))
        return rc;
    rs->status = (int)status;
    rs->body_len = rs->body ? strlen(rs->body) : 0;
    const cJSON *hs = cJSON_GetObjectItemCaseSensitive(v, "headers");
    if (hs && !cJSON_IsNull(hs)) {
        char hp[SL_CFG_PATH_MAX];
        sl__cfg_path_key(hp, sizeof(hp), p, "headers");
        if (!cJSON_IsObject(hs))
            return sl_error_set(err, SL_ECONFIG,
                                "%s: expected a mapping of header to value, got %s", hp,
                                sl__cfg_type_name(hs));
        size_t n = (size_t)cJSON_GetArraySize(hs);
        rs->headers = sl_xcalloc(n ? n : 1, sizeof(sl_header_t));
        for (const cJSON *h = hs->child; h; h = h->next) {
            char ep[SL_CFG_PATH_MAX];
            sl__cfg_path_key(ep, sizeof(ep), hp, h->string);
            if (!valid_token(h->string))
                return sl_error_set(err, SL_ECONFIG, "%s: not a valid header name", ep);
            if (!cJSON_IsString(h) || !valid_value(h->valuestring))
                return sl_error_set(err, SL_ECONFIG, "%s: expected a header value string", ep);
            rs->headers[rs->n_headers].name = sl_str(sl_xstrdup(h->string));
            rs->headers[rs->n_headers].value = sl_str(sl_xstrdup(h->valuestring));
            rs->n_headers++;
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
    r->filters = sl_xcalloc(n ? n : 1, sizeof(gw_filter_t));
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

static int parse_route(gw_config_t *c, const cJSON *v, size_t index, gw_route_t **out,
                       sl_error_t *err)
{
    char p[SL_CFG_PATH_MAX];
    sl__cfg_path_index(p, sizeof(p), "routes", index);
    int rc = sl__cfg_check_keys(v, p, route_keys, err);
    if (rc)
        return rc;
    gw_route_t *r = sl_xcalloc(1, sizeof(*r));
    *out = r;
    r->index = index;
    if ((rc = sl__cfg_get_str(v, p, "name", false, &r->name, err)))
        return rc;
    if (!r->name)
        r->name = sl_xstrdup(p);
    if ((rc = parse_match(r, cJSON_GetObjectItemCaseSensitive(v, "match"), p, err)) ||
        (rc = get_timeouts(v, p, &r->timeouts, err)))
        return rc;
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(v, "filters");
    if (f && !cJSON_IsNull(f) && (rc = parse_filters(r, f, p, err)))
        return rc;
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(v, "respond");
    char *up = NULL;
    if ((rc = sl__cfg_get_str(v, p, "upstream", false, &up, err)))
        return rc;
    if (rs && !cJSON_IsNull(rs)) {
        if (up) {
            free(up);
            return sl_error_set(err, SL_ECONFIG, "%s: a route has an upstream or respond, not both",
                                p);
        }
        return parse_respond(r, rs, p, err);
    }
    if (!up)
        return sl_error_set(err, SL_ECONFIG, "%s: a route needs an upstream or respond", p);
    r->upstream = gw_config_upstream(c, up);
    if (!r->upstream)
        rc = sl_error_set(err, SL_ECONFIG, "%s.upstream: unknown upstream \"%s\"", p, up);
    free(up);
    return rc;
}

static int parse_routes(gw_config_t *c, const cJSON *root, sl_error_t *err)
{
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "routes");
    if (!rs || cJSON_IsNull(rs))
        return 0;
    if (!cJSON_IsArray(rs))
        return sl_error_set(err, SL_ECONFIG, "routes: expected a list, got %s",
                            sl__cfg_type_name(rs));
    size_t n = (size_t)cJSON_GetArraySize(rs), i = 0;
    c->routes = sl_xcalloc(n ? n : 1, sizeof(gw_route_t *));
    sl_hmap_t names;
    sl_hmap_init(&names);
    int rc = 0;
    for (const cJSON *r = rs->child; r && !rc; r = r->next, i++) {
        gw_route_t *route = NULL;
        rc = parse_route(c, r, i, &route, err);
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

/* ---- canonical JSON and hash ------------------------------------------------------------- */

static int cmp_keys(const void *a, const void *b)
{
    const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
    return strcmp(x->string, y->string);
}

/* Sorts every object's keys, recursively: the same document always prints the same bytes, so
 * sluice and the watcher agree on its hash. */
static void canonicalize(cJSON *v)
{
    for (cJSON *c = v->child; c; c = c->next)
        canonicalize(c);
    if (!cJSON_IsObject(v) || !v->child)
        return;
    size_t n = 0;
    for (cJSON *c = v->child; c; c = c->next)
        n++;
    cJSON **items = sl_xmalloc(n * sizeof(*items));
    n = 0;
    for (cJSON *c = v->child; c; c = c->next)
        items[n++] = c;
    qsort(items, n, sizeof(*items), cmp_keys);
    for (size_t i = 0; i < n; i++) {
        items[i]->prev = i ? items[i - 1] : items[n - 1];
        items[i]->next = i + 1 < n ? items[i + 1] : NULL;
    }
    v->child = items[0];
    free(items);
}

void gw_config_hash_json(const cJSON *doc, char out[65])
{
    char *text = cJSON_PrintUnformatted(doc);
    if (!text)
        sl_oom();
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(text, strlen(text), md, &mdlen, EVP_sha256(), NULL);
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    free(text);
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
        route_free(c->routes[i]);
    free(c->routes);
    for (size_t i = 0; i < c->n_upstreams; i++)
        upstream_free(c->upstreams[i]);
    free(c->upstreams);
    if (c->upstream_index) {
        sl_hmap_free(c->upstream_index);
        free(c->upstream_index);
    }
    free(c->error_format);
    free(c->admin_listen);
    free(c->admin_token);
    sl__cfg_free_str_list(c->dns_servers, c->n_dns_servers);
    cJSON_Delete(c->json);
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
    c->upstream_index = sl_xcalloc(1, sizeof(sl_hmap_t));
    sl_hmap_init(c->upstream_index);
    for (size_t i = 0; i < c->n_upstreams; i++) {
        gw_upstream_t *u = c->upstreams[i];
        void **slot = sl_hmap_put(c->upstream_index, u->name, strlen(u->name));
        if (*slot)
            return sl_error_set(err, SL_ECONFIG, "upstreams.%s: duplicate upstream name", u->name);
        *slot = u;
    }
    return 0;
}

int gw_config_parse(cJSON *root, gw_config_t **out, sl_error_t *err)
{
    *out = NULL;
    gw_config_t *c = sl_xcalloc(1, sizeof(*c));
    atomic_store(&c->refs, 1);
    int rc = sl__cfg_expect_object(root, "", err);
    if (!rc)
        rc = parse_misc(c, root, err);
    if (!rc)
        rc = parse_listeners(c, root, err);
    if (!rc)
        rc = parse_upstreams(c, root, err);
    if (!rc)
        rc = index_upstreams(c, err);
    if (!rc)
        rc = resolve_listener_upstreams(c, err);
    if (!rc)
        rc = parse_routes(c, root, err);
    if (!rc) {
        c->router = gw_router_build(c->routes, c->n_routes, err);
        if (!c->router)
            rc = SL_ECONFIG;
    }
    if (rc) {
        config_free(c);
        cJSON_Delete(root);
        return rc;
    }
    /* The document as given, canonical, is what GET /config shows and what the hash covers:
     * the gateway's keys of root, moved (not copied) into the snapshot. */
    c->json = cJSON_CreateObject();
    for (const char *const *k = gw_top_keys; *k; k++) {
        cJSON *v = cJSON_DetachItemFromObjectCaseSensitive(root, *k);
        if (v && !cJSON_IsNull(v))
            cJSON_AddItemToObject(c->json, *k, v);
        else
            cJSON_Delete(v);
    }
    cJSON_Delete(root);
    canonicalize(c->json);
    cJSON *dyn = cJSON_CreateObject();
    for (const char *const *k = gw_dynamic_keys; *k; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->json, *k);
        if (v)
            cJSON_AddItemReferenceToObject(dyn, *k, (cJSON *)v);
    }
    gw_config_hash_json(dyn, c->hash);
    cJSON_Delete(dyn);
    *out = c;
    return 0;
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
    cJSON *j = cJSON_Duplicate(c->json, 1);
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
