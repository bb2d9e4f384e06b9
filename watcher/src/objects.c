/* Kinds, JSON accessors, pruning and the per-kind stores. */
#include "objects.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "util/hmap.h"
#include "util/mem.h"

static const wt_kind_info_t kinds[WT_NKINDS] = {
    [WT_INGRESS] = {"Ingress", "networking.k8s.io/v1", "/apis/networking.k8s.io/v1", "ingresses",
                    true},
    [WT_INGRESSCLASS] = {"IngressClass", "networking.k8s.io/v1", "/apis/networking.k8s.io/v1",
                         "ingressclasses", false},
    [WT_SERVICE] = {"Service", "v1", "/api/v1", "services", true},
    [WT_ENDPOINTSLICE] = {"EndpointSlice", "discovery.k8s.io/v1", "/apis/discovery.k8s.io/v1",
                          "endpointslices", true},
    [WT_SECRET] = {"Secret", "v1", "/api/v1", "secrets", true},
};

const wt_kind_info_t *wt_kind_info(wt_kind_t k)
{
    return &kinds[k];
}

int wt_kind_of(const char *kind, const char *api_version, bool *wrong_version)
{
    *wrong_version = false;
    if (!kind)
        return -1;
    for (int i = 0; i < WT_NKINDS; i++) {
        if (strcmp(kinds[i].kind, kind) != 0)
            continue;
        if (!api_version || strcmp(kinds[i].api_version, api_version) != 0) {
            *wrong_version = true;
            return -1;
        }
        return i;
    }
    return -1;
}

int wt_kind_by_name(const char *kind)
{
    for (int i = 0; kind && i < WT_NKINDS; i++)
        if (strcmp(kinds[i].kind, kind) == 0)
            return i;
    return -1;
}

/* ---- accessors ----------------------------------------------------------------------------- */

static const cJSON *vget(const cJSON *obj, va_list ap)
{
    const char *k;
    while (obj && (k = va_arg(ap, const char *)) != NULL)
        obj = cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, k) : NULL;
    return obj;
}

const cJSON *wt_get(const cJSON *obj, ...)
{
    va_list ap;
    va_start(ap, obj);
    const cJSON *v = vget(obj, ap);
    va_end(ap);
    return v;
}

const char *wt_get_str(const cJSON *obj, ...)
{
    va_list ap;
    va_start(ap, obj);
    const cJSON *v = vget(obj, ap);
    va_end(ap);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

char *wt_obj_key(wt_kind_t k, const cJSON *obj, char *buf, size_t cap)
{
    const char *name = WT_NAME(obj);
    if (!name || !*name)
        return NULL;
    int n;
    if (kinds[k].namespaced) {
        const char *ns = WT_NAMESPACE(obj);
        n = snprintf(buf, cap, "%s/%s", ns && *ns ? ns : "default", name);
    } else {
        n = snprintf(buf, cap, "%s", name);
    }
    return n > 0 && (size_t)n < cap ? buf : NULL;
}

const char *wt_quote(char *buf, size_t cap, const char *s)
{
    size_t o = 0, max = cap > 8 ? cap - 6 : 0; /* room for `..."` and NUL */
    if (cap < 8) {
        if (cap)
            buf[0] = '\0';
        return buf;
    }
    buf[o++] = '"';
    for (; s && *s && o < max; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            if (o + 4 >= max)
                break;
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
        } else {
            buf[o++] = (char)c;
        }
    }
    if (s && *s) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

/* ---- stores -------------------------------------------------------------------------------- */

void wt_store_init(wt_store_t *s, wt_kind_t kind)
{
    s->kind = kind;
    s->buckets = NULL;
    s->cap = s->n = 0;
}

static void entry_free(wt_store_t *s, wt_entry_t *e)
{
    free(e->key);
    wt_model_free(s->kind, e->obj);
    free(e);
}

void wt_store_free(wt_store_t *s)
{
    for (size_t i = 0; i < s->cap; i++) {
        wt_entry_t *e = s->buckets[i];
        while (e) {
            wt_entry_t *next = e->next;
            entry_free(s, e);
            e = next;
        }
    }
    free(s->buckets);
    wt_store_init(s, s->kind);
}

static wt_entry_t **slot_of(const wt_store_t *s, const char *key, uint64_t h)
{
    wt_entry_t **p = &s->buckets[h & (s->cap - 1)];
    while (*p && !((*p)->hash == h && strcmp((*p)->key, key) == 0))
        p = &(*p)->next;
    return p;
}

void *wt_store_get(const wt_store_t *s, const char *key)
{
    if (!s->n)
        return NULL;
    wt_entry_t **p = slot_of(s, key, sl_hash_bytes(key, strlen(key)));
    return *p ? (*p)->obj : NULL;
}

static void grow(wt_store_t *s)
{
    size_t cap = s->cap ? s->cap * 2 : 64;
    wt_entry_t **b = sl_xcalloc(cap, sizeof(*b));
    for (size_t i = 0; i < s->cap; i++) {
        wt_entry_t *e = s->buckets[i];
        while (e) {
            wt_entry_t *next = e->next;
            e->next = b[e->hash & (cap - 1)];
            b[e->hash & (cap - 1)] = e;
            e = next;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->cap = cap;
}

void wt_store_put(wt_store_t *s, const char *key, void *obj)
{
    if (s->n + 1 > s->cap)
        grow(s);
    uint64_t h = sl_hash_bytes(key, strlen(key));
    wt_entry_t **p = slot_of(s, key, h);
    if (*p) {
        wt_model_free(s->kind, (*p)->obj);
        (*p)->obj = obj;
        return;
    }
    wt_entry_t *e = sl_xcalloc(1, sizeof(*e));
    e->key = sl_xstrdup(key);
    e->hash = h;
    e->obj = obj;
    *p = e;
    s->n++;
}

bool wt_store_del(wt_store_t *s, const char *key)
{
    if (!s->n)
        return false;
    wt_entry_t **p = slot_of(s, key, sl_hash_bytes(key, strlen(key)));
    if (!*p)
        return false;
    wt_entry_t *e = *p;
    *p = e->next;
    entry_free(s, e);
    s->n--;
    return true;
}

bool wt_store_put_json(wt_store_t *s, const cJSON *obj)
{
    char key[320];
    if (!wt_obj_key(s->kind, obj, key, sizeof(key)))
        return false;
    void *m = wt_model_new(s->kind, obj);
    if (!m)
        return false;
    wt_store_put(s, key, m);
    return true;
}

void wt_store_swap(wt_store_t *a, wt_store_t *b)
{
    wt_store_t t = *a;
    *a = *b;
    *b = t;
}

static int cmp_entries(const void *a, const void *b)
{
    const wt_entry_t *x = *(wt_entry_t *const *)a, *y = *(wt_entry_t *const *)b;
    return strcmp(x->key, y->key);
}

wt_entry_t **wt_store_sorted(const wt_store_t *s)
{
    wt_entry_t **v = sl_xmalloc((s->n ? s->n : 1) * sizeof(*v));
    size_t n = 0;
    WT_STORE_FOREACH(s, e)
    {
        v[n++] = e;
    }
    if (n > 1)
        qsort(v, n, sizeof(*v), cmp_entries);
    return v;
}

void wt_objects_init(wt_objects_t *o)
{
    for (int i = 0; i < WT_NKINDS; i++)
        wt_store_init(&o->kinds[i], (wt_kind_t)i);
}

void wt_objects_free(wt_objects_t *o)
{
    for (int i = 0; i < WT_NKINDS; i++)
        wt_store_free(&o->kinds[i]);
}
