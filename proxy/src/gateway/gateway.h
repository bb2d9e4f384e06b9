/* The declarative gateway (SPEC §4-§5): configuration snapshots, routes, upstreams, filters.
 *
 * A configuration is parsed into an immutable, reference-counted snapshot (gw_config_t). The
 * control thread builds a new snapshot and publishes it; each worker switches to it between
 * requests, and a request keeps the snapshot it started with until it ends.
 *
 * Upstreams and routes are immutable, reference-counted objects of their own, each in one slab
 * (a few allocations, one free). A new snapshot built with the previous one at hand
 * (gw_config_build) takes over those whose configuration text did not change instead of parsing
 * them again: a change of one Service's endpoints rebuilds one upstream and the routes that
 * use it, not 10,000 routes. */
#ifndef SL_GATEWAY_GATEWAY_H
#define SL_GATEWAY_GATEWAY_H

#include <cjson/cJSON.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "sluice/conf.h"
#include "sluice/dns.h"
#include "sluice/proxy.h"
#include "sluice/tls.h"
#include "util/slab.h"

typedef struct gw_config gw_config_t;
typedef struct gw_route gw_route_t;
typedef struct gw_upstream gw_upstream_t;
typedef struct gw_tunnel gw_tunnel_t;
typedef struct gw_filter gw_filter_t;
typedef struct gw_req gw_req_t;
typedef struct gw_router gw_router_t;
typedef struct gateway gateway_t;

/* ---- timeouts ---------------------------------------------------------------------------- */

/* Durations in ms; 0 means "not set" (inherit). */
typedef struct gw_timeouts {
    uint64_t connect, read, write, idle;
    uint64_t tunnel; /* an upgraded (WebSocket) connection without a byte either way */
} gw_timeouts_t;

/* ---- upstreams --------------------------------------------------------------------------- */

typedef struct gw_backend {
    char *address; /* as written: "172.28.0.20:8080", "unix:/path", "blue.local:8080"; for an
                    * address a watched name resolved to, that address ("10.0.0.1:8080") */
    struct sockaddr_storage addr; /* addr_len 0: a host name resolved per request */
    unsigned addr_len;
    uint32_t weight;     /* >= 1 */
    char *host;          /* host name backends (and the addresses of watched names): the name, the
                          * default SNI; NULL for ip:port and unix:/path */
    uint16_t port;       /* with host: the port */
    _Atomic uint32_t rr; /* a name resolved per request: rotation over its addresses */
} gw_backend_t;

typedef enum gw_lb { GW_LB_ROUND_ROBIN } gw_lb_t;

/* An upstream's protocol (SPEC §4 upstreams.*.protocol). */
typedef enum gw_proto { GW_PROTO_HTTP1, GW_PROTO_H2, GW_PROTO_H2C, GW_PROTO_GRPC } gw_proto_t;

/* TLS to an upstream's backends. */
typedef struct gw_upstream_tls {
    char *sni;   /* NULL: the upstream's host, else none (the address is verified) */
    bool verify; /* chain and name (default true) */
    char *ca;    /* NULL: the top-level ca_file, else the system's */
    char *cert, *key;
} gw_upstream_tls_t;

/* Rotation state shared by every snapshot that has an upstream of this name, so a config
 * swap does not restart the rotation. */
/* The memory of the upstreams and routes that one build made (config.c): one slab, freed when
 * the last of them goes. A build changing one Service's endpoints makes a small one; the first
 * build of 10,000 routes a few huge pages. */
typedef struct gw_gen {
    _Atomic long refs; /* its objects alive, and its build while that runs */
    long made;         /* objects made in it */
    sl_slab_t mem;     /* the gw_gen_t itself too */
} gw_gen_t;

typedef struct gw_upstream_state {
    _Atomic long refs;
    _Atomic uint64_t counter;
} gw_upstream_state_t;

struct gw_upstream {
    _Atomic long refs; /* one per snapshot that has it */
    gw_gen_t *gen;     /* holds it and everything below not said otherwise */
    char *name;
    gw_backend_t *backends;
    size_t n_backends;
    /* Smooth weighted round robin, precomputed: picks are seq[counter++ % seq_len], so weights
     * 3:1 give exactly 3:1 over every 4 picks without a lock. */
    uint32_t *seq;
    size_t seq_len;
    gw_lb_t lb;
    char *host; /* Host header sent upstream, NULL: the client's */
    gw_proto_t protocol;
    gw_upstream_tls_t *tls; /* NULL: plain */
    gw_tunnel_t *tunnel;    /* NULL: direct; else through a CONNECT proxy (upstream_tunnel.h) */
    gw_timeouts_t timeouts;
    bool dns_watch;       /* dns.watch: host names are followed and their addresses are backends */
    int dns_family;       /* dns.family: AF_UNSPEC (any), AF_INET, AF_INET6 */
    char *discovery_file; /* NULL: no file discovery */
    uint64_t discovery_interval_ms;
    gw_upstream_state_t *state;
    bool reusable; /* the next snapshot may take it over when its text is the same (not when
                    * files are read for it, nor when dns.watch rewrites its backends) */
};

/* Parses one backend entry ("ip:port", "name:port", "unix:/p", {address, weight}). Its strings
 * go to mem (an upstream's gen), or are malloc'd when mem is NULL (free those with
 * gw_backend_free). */
int gw_backend_parse(const cJSON *v, const char *path, sl_slab_t *mem, gw_backend_t *out,
                     sl_error_t *err);
void gw_backend_free(gw_backend_t *b);
/* Computes the rotation of u's backends (call after filling them; the sequence goes to u->gen). */
void gw_upstream_build_rotation(gw_upstream_t *u);
/* Picks the next backend by smooth weighted round robin; NULL when there is none. */
const gw_backend_t *gw_upstream_pick(gw_upstream_t *u);

/* ---- filters ----------------------------------------------------------------------------- */

/* One built-in filter kind (request_headers, response_headers, query, body_inspect). Each kind
 * is one module with its own parser. Hooks are optional; they return SL_CONTINUE, SL_DONE (the
 * filter answered the client) or an error. `state` is what parse produced (immutable, shared
 * by all requests); `scratch` is per-request memory of scratch_size bytes (zeroed). */
typedef struct gw_filter_kind {
    const char *name;
    size_t scratch_size;
    int (*parse)(const cJSON *conf, const char *path, void **state, sl_error_t *err);
    void (*free)(void *state);
    int (*request)(void *state, void *scratch, sl_session_t *s);
    int (*upstream_request)(void *state, void *scratch, sl_session_t *s, sl_request_header_t *req);
    int (*request_body)(void *state, void *scratch, sl_session_t *s, sl_body_t *body, bool end);
    int (*response)(void *state, void *scratch, sl_session_t *s, sl_response_header_t *resp);
    int (*response_body)(void *state, void *scratch, sl_session_t *s, sl_body_t *body, bool end);
} gw_filter_kind_t;

struct gw_filter {
    const gw_filter_kind_t *kind;
    void *state;
    size_t scratch_offset; /* into the request's filter scratch block */
};

/* The registry of filter kinds (filters/registry.c). */
const gw_filter_kind_t *gw_filter_kind_find(const char *name);
/* Comma-separated list of known kinds, for error messages. */
const char *gw_filter_kind_names(void);

/* ---- routes ------------------------------------------------------------------------------ */

typedef enum gw_path_type { GW_PATH_PREFIX, GW_PATH_EXACT, GW_PATH_REGEX } gw_path_type_t;

typedef struct gw_header_match {
    char *name;
    char *value;
} gw_header_match_t;

typedef struct gw_respond {
    int status;
    char *body;
    size_t body_len;
    sl_header_t *headers; /* name/value pairs, NUL-terminated strings */
    size_t n_headers;
} gw_respond_t;

struct gw_route {
    _Atomic long refs; /* one per snapshot that has it */
    gw_gen_t *gen;     /* holds it and its strings (filter states and regex are apart) */
    char *name;        /* "routes[3]" when none was given */
    char *host;        /* NULL: any host; "*.example.com": one-label wildcard */
    char *path;        /* "/": everything (prefix) */
    gw_path_type_t path_type;
    void *regex;      /* pcre2_code * for GW_PATH_REGEX */
    uint32_t methods; /* bit mask of gw_method_bit(); 0: any */
    gw_header_match_t *headers;
    size_t n_headers;
    gw_upstream_t *upstream; /* NULL with respond */
    gw_respond_t *respond;
    gw_timeouts_t timeouts;
    gw_filter_t *filters;
    size_t n_filters;
    size_t scratch_size; /* sum of the filters' scratch */
};

/* Bit for a method name ("GET" -> 1 << n), 0 for an unknown one. */
uint32_t gw_method_bit(const char *m, size_t len);

/* ---- router ------------------------------------------------------------------------------ */

/* Compiles routes into lookup tables: hosts by hash (exact), then one-label wildcards, then
 * any-host; per host exact paths by hash, prefixes by path-element trie, regexes in order. */
gw_router_t *gw_router_build(gw_route_t **routes, size_t n, sl_error_t *err);
void gw_router_free(gw_router_t *r);
/* Routing's view of a path: unreserved %XX decoded, "//" merged, dot segments resolved.
 * out must hold len + 1 bytes. Returns the new length. */
size_t gw_path_normalize(const char *in, size_t len, char *out);
/* The best route for a request, or NULL. host may include a port (ignored). The path is
 * normalized first (gw_path_normalize). */
gw_route_t *gw_router_match(const gw_router_t *r, sl_str_t host, sl_str_t path, sl_str_t method,
                            const sl_headers_t *headers);

/* ---- certificates ------------------------------------------------------------------------ */

typedef struct gw_cert {
    sl_tls_cert_t *cert;
    unsigned char digest[32]; /* what defines it (cache key) */
    bool any_host;            /* no hosts given: serves its own names; a default candidate */
} gw_cert_t;

/* Parses {cert, key} | {cert_pem, key_pem} (+ hosts when allowed) and loads it (cached). */
int gw_cert_parse(const cJSON *v, const char *path, bool allow_hosts, gw_cert_t *out,
                  sl_error_t *err);
int gw_certs_parse_list(const cJSON *list, const char *path, bool allow_hosts, gw_cert_t **out,
                        size_t *n_out, sl_error_t *err);
void gw_cert_free(gw_cert_t *c);

/* ---- listeners --------------------------------------------------------------------------- */

typedef struct gw_listener_tls {
    gw_cert_t *certs;
    size_t n_certs;
    bool h2;         /* ALPN offers h2 */
    char *client_ca; /* NULL: no client certificates asked */
    uint64_t handshake_timeout_ms;
} gw_listener_tls_t;

typedef struct gw_listener {
    char *name;
    char *listen;   /* "0.0.0.0:8080", "unix:/path" */
    char *protocol; /* "http" or "tcp" */
    gw_listener_tls_t *tls;
    bool tcp;                    /* protocol: tcp (layer 4 to `upstream`) */
    char *upstream;              /* tcp: the upstream's name */
    gw_upstream_t *tcp_upstream; /* tcp: that upstream in this snapshot */
} gw_listener_t;

/* ---- the snapshot ------------------------------------------------------------------------ */

/* A part of a snapshot's text. */
typedef struct gw_span {
    size_t off, len;
} gw_span_t;

/* An upstream or route of a snapshot with its canonical text, where the next snapshot looks
 * for what it can take over. */
typedef struct gw_unit {
    void *obj;      /* gw_upstream_t * or gw_route_t * */
    gw_span_t text; /* in the snapshot's text */
    /* The mappings whose order a parser may keep (filter and respond headers, ...) were already
     * in canonical order: the object is what a parse of the canonical text gives. */
    bool ordered;
} gw_unit_t;

/* Number of gw_top_keys. */
#define GW_TOP_KEYS 7

struct gw_config {
    _Atomic long refs;
    uint64_t generation;
    gw_listener_t *listeners;
    size_t n_listeners;
    gw_upstream_t **upstreams;
    size_t n_upstreams;
    gw_route_t **routes;
    size_t n_routes;
    gw_router_t *router;
    char *error_format; /* json | html | text */
    char *admin_listen;
    char *admin_token; /* "" or NULL: no token */
    char **dns_servers;
    size_t n_dns_servers;
    sl_dns_options_t dns; /* the resolvers' options (dns.*; servers point to dns_servers) */
    gw_cert_t *certs;     /* the dynamic `certificates`, for every TLS listener */
    size_t n_certs;
    /* The effective document (the gateway's keys as given), canonical JSON: what GET /config
     * shows and the hash covers. top[k] is the value of gw_top_keys[k] in it (len 0: absent). */
    char *text;
    size_t text_len;
    gw_span_t top[GW_TOP_KEYS];
    gw_unit_t *upstream_units;      /* parallel to upstreams */
    gw_unit_t *route_units;         /* parallel to routes */
    struct sl_hmap *upstream_index; /* name -> gw_unit_t* */
    struct sl_hmap *route_index;    /* name ("routes[3]" when none) -> gw_unit_t*, the first */
    sl_slab_t mem;                  /* the arrays and indexes above */
    uint64_t names_hash; /* of the route and upstream names: equal when no name came or went */
    char hash[65];       /* sha256 of the canonical dynamic part as last applied whole */
};

/* Keys of the gateway schema (beyond the process keys of sl_server_conf). */
extern const char *const gw_top_keys[];

/* Parses a whole config tree (process keys are checked by sl_server_conf; here only the
 * gateway part). Takes ownership of root. On error returns SL_ECONFIG with the key path in err. */
int gw_config_parse(cJSON *root, gw_config_t **out, sl_error_t *err);

typedef struct gw_build_opts {
    /* The running snapshot (or NULL): its upstreams and routes whose canonical text (and, for a
     * route, upstream) is the same are shared instead of parsed again. prev is not changed,
     * whatever the outcome. */
    const gw_config_t *prev;
    /* When set, the new snapshot's hash (64 hex digits and NUL), not computed. */
    const char *keep_hash;
} gw_build_opts_t;

/* gw_config_parse with options (o may be NULL). */
int gw_config_build(cJSON *root, const gw_build_opts_t *o, gw_config_t **out, sl_error_t *err);
/* The snapshot's document as a tree (caller frees): all of it, or only the keys of gw_top_keys
 * that are not in gw_dynamic_keys (listeners, admin, dns). */
cJSON *gw_config_doc(const gw_config_t *c, bool static_only);
/* Replaces u's backends from a JSON list (at least one entry). Only for an upstream no
 * published snapshot has yet. */
int gw_upstream_set_backends(gw_upstream_t *u, const cJSON *list, const char *path,
                             sl_error_t *err);
/* sha256 (hex) of a document's compact JSON as cJSON_PrintUnformatted writes it (the watcher
 * passes canonical documents: sorted keys, no spaces); the text is streamed, never held. */
void gw_config_hash_json(const cJSON *doc, char out[65]);
/* Keys a PUT /config may carry (the rest needs a restart or hot upgrade). */
extern const char *const gw_dynamic_keys[];
gw_config_t *gw_config_ref(gw_config_t *c);
/* A TLS listener's certificate set for a configuration (its own, then the dynamic ones). */
sl_tls_certs_t *gw_listener_certs(const gw_listener_t *l, const gw_config_t *c, sl_error_t *err);
/* True when both configurations have the same dynamic certificates. */
bool gw_certs_same(const gw_config_t *a, const gw_config_t *b);
/* Keeps in the certificate cache exactly what c uses (after c is published). */
void gw_certs_cache_keep(const gw_config_t *c);
void gw_certs_cache_clear(void);
void gw_config_release(gw_config_t *c);
gw_upstream_t *gw_config_upstream(const gw_config_t *c, const char *name);
/* The effective config as JSON with private keys and tokens redacted (caller frees). */
cJSON *gw_config_to_json(const gw_config_t *c);

/* ---- the running gateway ----------------------------------------------------------------- */

/* Installs a new snapshot (takes the caller's reference) and hands it to every worker.
 * Control thread only. */
void gw_publish(gateway_t *gw, gw_config_t *c, const char *source);
/* The current snapshot (a new reference). Control thread only. */
gw_config_t *gw_current(gateway_t *gw);
/* Applies a config document (PUT /config, SIGHUP): validates it whole, then publishes it.
 * On error nothing changes and err explains. Takes ownership of root. */
int gw_apply_json(gateway_t *gw, cJSON *root, const char *source, sl_error_t *err);
/* Replaces one upstream's backends (PUT /upstreams/NAME/backends). SL_ENOUPSTREAM for an
 * unknown name. */
int gw_set_backends(gateway_t *gw, const char *upstream, const cJSON *list, const char *source,
                    sl_error_t *err);

#endif
