/* Translation: Kubernetes objects in, the gateway's dynamic config (SPEC §4) out. Pure: no I/O,
 * no clock, no global state; the same objects and options always give the same document.
 * What is wrong with the objects is reported in diagnostics, never in the output. */
#ifndef WT_TRANSLATE_H
#define WT_TRANSLATE_H

#include <cjson/cJSON.h>
#include <stdbool.h>

#include "diag.h"
#include "model.h"
#include "objects.h"

typedef struct wt_tr_opts {
    const char *controller_class; /* IngressClass spec.controller that is ours */
    const char *ingress_class;    /* our class name (when no IngressClass object names it) */
    bool watch_without_class;     /* Ingresses without a class are ours */
    const char *default_backend;  /* "ns/name" of a Service, or NULL */
    const char *default_ssl_cert; /* "ns/name" of a TLS Secret, or NULL */
    bool tls_certificates;        /* emit the "certificates" key */
} wt_tr_opts_t;

/* Defaults of SPEC §6 (sluice.io/ingress-controller, class sluice). */
void wt_tr_opts_init(wt_tr_opts_t *o);

/* One upstream or route of the output, as canonical JSON text (sorted keys, no spaces: the
 * bytes cJSON_PrintUnformatted gives). */
typedef struct wt_item {
    char *name;
    char *text;
    const char *upstream; /* a route's upstream (points into the upstream's name), or NULL */
} wt_item_t;

typedef struct wt_items {
    wt_item_t *v;
    size_t n, cap;
} wt_items_t;

/* The translated config: {"upstreams": {...}, "routes": [...], "certificates": [...]}. */
typedef struct wt_config {
    wt_pool_t pool;       /* the items' names and texts */
    wt_items_t upstreams; /* sorted by name */
    wt_items_t routes;    /* sorted by name */
    char *certificates;   /* a JSON array, or NULL when certificates are not emitted */
} wt_config_t;

/* Translates the objects. Diagnostics are appended to d (may be NULL). Caller frees the
 * result with wt_config_free. */
wt_config_t *wt_translate(const wt_objects_t *in, const wt_tr_opts_t *o, wt_diags_t *d);
void wt_config_free(wt_config_t *c);
/* The config as one cJSON document (tests and tools; caller frees). */
cJSON *wt_config_json(const wt_config_t *c);

/* Whether an Ingress belongs to us (class selection of SPEC §6). */
bool wt_ingress_is_ours(const wt_objects_t *in, const wt_tr_opts_t *o, const wt_ingress_t *ing);

/* Host names and paths as translation accepts them (exposed for tests). */
bool wt_valid_host(const char *h, bool allow_wildcard);
bool wt_valid_path(const char *p, bool prefix);

#endif
