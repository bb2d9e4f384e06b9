/* Kubernetes objects as the watcher keeps them: the kinds it reads, accessors for their JSON,
 * and one store per kind keyed by "namespace/name" (cluster-scoped kinds: "name"). A store
 * holds the compact models of model.h and owns them. */
#ifndef WT_OBJECTS_H
#define WT_OBJECTS_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum wt_kind {
    WT_INGRESS,
    WT_INGRESSCLASS,
    WT_SERVICE,
    WT_ENDPOINTSLICE,
    WT_SECRET,
    WT_NKINDS
} wt_kind_t;

typedef struct wt_kind_info {
    const char *kind;        /* "Ingress" */
    const char *api_version; /* "networking.k8s.io/v1" */
    const char *prefix;      /* "/apis/networking.k8s.io/v1" */
    const char *plural;      /* "ingresses" */
    bool namespaced;
} wt_kind_info_t;

const wt_kind_info_t *wt_kind_info(wt_kind_t k);
/* The kind of an object from its kind and apiVersion; -1 for kinds the watcher does not use
 * (*wrong_version is set when the kind is known but the apiVersion is not the one read). */
int wt_kind_of(const char *kind, const char *api_version, bool *wrong_version);
/* The kind by name alone; -1 when unknown. */
int wt_kind_by_name(const char *kind);

/* ---- JSON accessors (NULL-terminated key paths; NULL when absent or of another type) ---- */

const cJSON *wt_get(const cJSON *obj, ...) __attribute__((sentinel));
const char *wt_get_str(const cJSON *obj, ...) __attribute__((sentinel));
#define WT_GET(o, ...)  wt_get((o), __VA_ARGS__, (const char *)NULL)
#define WT_STR(o, ...)  wt_get_str((o), __VA_ARGS__, (const char *)NULL)
#define WT_NAME(o)      WT_STR((o), "metadata", "name")
#define WT_NAMESPACE(o) WT_STR((o), "metadata", "namespace")

/* Writes "namespace/name" (or "name") into buf; returns buf, or NULL when the object has no
 * name (or the key does not fit). */
char *wt_obj_key(wt_kind_t k, const cJSON *obj, char *buf, size_t cap);

/* A value from an object, safe to put in a log line: quoted, control characters escaped,
 * long values cut with "...". Returns buf. */
const char *wt_quote(char *buf, size_t cap, const char *s);

/* ---- stores ---------------------------------------------------------------------------- */

typedef struct wt_entry {
    char *key;
    uint64_t hash;
    void *obj; /* the model (model.h) of the store's kind */
    struct wt_entry *next;
} wt_entry_t;

typedef struct wt_store {
    wt_kind_t kind;
    wt_entry_t **buckets;
    size_t cap, n;
} wt_store_t;

void wt_store_init(wt_store_t *s, wt_kind_t kind);
void wt_store_free(wt_store_t *s);
void *wt_store_get(const wt_store_t *s, const char *key);
/* Inserts or replaces (the old model is freed). Takes obj. */
void wt_store_put(wt_store_t *s, const char *key, void *obj);
/* Converts a JSON object to its model and stores it under its key; false (nothing stored)
 * when the object has no name. */
bool wt_store_put_json(wt_store_t *s, const cJSON *obj);
/* Removes and frees; false when absent. */
bool wt_store_del(wt_store_t *s, const char *key);
void wt_store_swap(wt_store_t *a, wt_store_t *b);
/* The entries sorted by key (caller frees the array, not the entries). */
wt_entry_t **wt_store_sorted(const wt_store_t *s);

#define WT_STORE_FOREACH(s, e)                        \
    for (size_t wt_i_ = 0; wt_i_ < (s)->cap; wt_i_++) \
        for (wt_entry_t *e = (s)->buckets[wt_i_]; e; e = e->next)

/* Every object translation reads: one store per kind. */
typedef struct wt_objects {
    wt_store_t kinds[WT_NKINDS];
} wt_objects_t;

void wt_objects_init(wt_objects_t *o);
void wt_objects_free(wt_objects_t *o);

#endif
