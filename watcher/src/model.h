/* The objects as translation reads them: compact structs made from the Kubernetes JSON when an
 * object arrives (informer event, list page, manifest file), holding only the fields the
 * watcher uses. Each lives in one small pool, freed at once. Values keep their raw form where
 * translation must report them (a path that is not absolute, a pathType it does not know);
 * a field of the wrong JSON type reads as absent (NULL / 0).
 *
 * 15,000 objects take a fraction of the memory of their cJSON trees, and translation reads
 * fields directly instead of searching JSON members by name. */
#ifndef WT_MODEL_H
#define WT_MODEL_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct wt_pool_block wt_pool_block_t;

typedef struct wt_pool {
    wt_pool_block_t *blocks;
} wt_pool_t;

void *wt_pool_alloc(wt_pool_t *p, size_t n);
char *wt_pool_str(wt_pool_t *p, const char *s); /* NULL stays NULL */
void wt_pool_free(wt_pool_t *p);

/* ---- networking.k8s.io/v1 Ingress --------------------------------------------------------- */

typedef enum wt_backend_kind {
    WT_BACKEND_NONE, /* absent, or not an object */
    WT_BACKEND_SERVICE,
    WT_BACKEND_RESOURCE,
    WT_BACKEND_EMPTY /* an object with neither */
} wt_backend_kind_t;

typedef struct wt_backend {
    wt_backend_kind_t kind;
    const char *service; /* service.name, or NULL */
    int port_number;     /* service.port.number: 0 absent, -1 not a valid port */
    const char *port_name;
} wt_backend_t;

typedef struct wt_ipath {
    const char *path; /* NULL when absent or not a string */
    const char *type; /* pathType, or NULL */
    wt_backend_t backend;
} wt_ipath_t;

typedef struct wt_rule {
    bool has_host; /* the rule names a host (host may still be NULL: not a string) */
    const char *host;
    wt_ipath_t *paths;
    size_t n_paths;
} wt_rule_t;

typedef struct wt_itls {
    const char *secret;
    const char **hosts; /* NULL entries: not a string */
    size_t n_hosts;
} wt_itls_t;

typedef struct wt_kv {
    const char *key;
    const char *value; /* NULL when not a string */
    bool is_number;
    double number;
} wt_kv_t;

typedef struct wt_lb {
    const char *ip, *hostname;
} wt_lb_t;

typedef struct wt_ingress {
    wt_pool_t pool;
    const char *ns, *name, *created;
    const char *class_name;   /* spec.ingressClassName */
    const char *legacy_class; /* kubernetes.io/ingress.class */
    wt_kv_t *annotations;     /* sluice.io/ ones only */
    size_t n_annotations;
    wt_backend_t dflt; /* spec.defaultBackend */
    wt_rule_t *rules;
    size_t n_rules;
    wt_itls_t *tls;
    size_t n_tls;
    wt_lb_t *lb; /* status.loadBalancer.ingress */
    size_t n_lb;
} wt_ingress_t;

/* ---- networking.k8s.io/v1 IngressClass ---------------------------------------------------- */

typedef struct wt_class {
    wt_pool_t pool;
    const char *name, *controller;
    bool is_default;
} wt_class_t;

/* ---- v1 Service --------------------------------------------------------------------------- */

typedef struct wt_sport {
    const char *name; /* NULL: unnamed */
    int port;         /* 0: absent */
    int target_number;
    const char *target_name;
} wt_sport_t;

typedef struct wt_service {
    wt_pool_t pool;
    const char *ns, *name, *type, *external_name, *cluster_ip;
    wt_sport_t *ports;
    size_t n_ports;
    const char **external_ips;
    size_t n_external_ips;
    wt_lb_t *lb; /* status.loadBalancer.ingress */
    size_t n_lb;
} wt_service_t;

/* ---- discovery.k8s.io/v1 EndpointSlice ---------------------------------------------------- */

typedef struct wt_eport {
    const char *name;     /* NULL and "" are the same: unnamed */
    int port;             /* 0: no number ("all ports") */
    const char *protocol; /* NULL: TCP */
} wt_eport_t;

typedef struct wt_endpoint {
    const char **addresses; /* NULL entries: not a string */
    size_t n_addresses;
    bool not_ready; /* conditions.ready is false */
} wt_endpoint_t;

typedef struct wt_slice {
    wt_pool_t pool;
    const char *ns, *name, *service, *address_type;
    wt_eport_t *ports;
    size_t n_ports;
    wt_endpoint_t *endpoints;
    size_t n_endpoints;
} wt_slice_t;

/* ---- v1 Secret (kubernetes.io/tls) -------------------------------------------------------- */

typedef struct wt_secret {
    wt_pool_t pool;
    const char *ns, *name, *type;
    const char *crt_b64, *key_b64; /* data["tls.crt"], data["tls.key"] */
} wt_secret_t;

/* Makes the model of a JSON object of a kind (objects.h's wt_kind_t); NULL when the object has
 * no metadata.name. */
void *wt_model_new(int kind, const cJSON *obj);
void wt_model_free(int kind, void *m);

#endif
