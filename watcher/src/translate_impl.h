/* Translation internals shared by translate.c, backends.c, annotations.c and certs.c. */
#ifndef WT_TRANSLATE_IMPL_H
#define WT_TRANSLATE_IMPL_H

#include "jsonw.h"
#include "model.h"
#include "translate.h"
#include "index.h"

/* What an Ingress's annotations ask for (SPEC §6), already validated. */
typedef struct wt_settings {
    char connect[16], read[16], write[16]; /* "30s"; "" when not set */
    const char *vhost;                     /* Host sent upstream; "" when not set */
} wt_settings_t;

/* Where a route goes: an upstream, or an answer of its own (status, message). */
typedef struct wt_target {
    const char *upstream;
    int status;
    const char *why;
} wt_target_t;

typedef struct wt_tr {
    const wt_objects_t *in;
    const wt_tr_opts_t *o;
    wt_diags_t *d;
    wt_pool_t pool;                  /* scratch: everything below lives until the end of the run */
    wt_index_t slices;               /* "ns/service" -> slice_list_t* */
    wt_index_t targets;              /* resolved backends: "ns/svc:port@vhost" -> target_t* */
    wt_index_t route_names;          /* names used so far */
    wt_index_t upstream_names;       /* upstreams added so far */
    const struct wt_slice **slice_v; /* the slices grouped by Service */
    char **addr_v;                   /* addresses of the Service being resolved */
    size_t addr_cap;
    wt_config_t *out;
    wt_buf_t buf; /* scratch for one item's text */
} wt_tr_t;

/* annotations.c: parses an Ingress's sluice.io/ annotations; invalid ones are reported (who
 * names the Ingress) and ignored. */
void wt_settings_parse(const wt_ingress_t *ing, const char *who, wt_settings_t *s, wt_diags_t *d);

/* backends.c */
void wt_tr_backends_init(wt_tr_t *t);
void wt_tr_backends_free(wt_tr_t *t);
/* Where backend (an IngressBackend of namespace ns) goes: an upstream when the Service has
 * ready endpoints, else a 503 saying why. */
wt_target_t wt_tr_target(wt_tr_t *t, const char *ns, const wt_backend_t *backend,
                         const wt_settings_t *s, const char *who);
/* Appends an item (name and text copied into the output's pool). */
wt_item_t *wt_items_add(wt_tr_t *t, wt_items_t *l, const char *name, const char *text);
/* A string in the scratch pool. */
char *wt_tr_printf(wt_tr_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The respond object of a route that answers status with a JSON error body like the
 * gateway's own. */
void wt_respond_text(wt_buf_t *b, int status, const char *message);

/* certs.c: the "certificates" JSON array for the TLS sections of the given Ingresses. */
char *wt_tr_certificates(wt_tr_t *t, const wt_ingress_t *const *ingresses, size_t n);

#endif
