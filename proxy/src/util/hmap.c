#include "util/hmap.h"

#include <stdlib.h>
#include <string.h>

#include "util/mem.h"
#include "util/slab.h"

uint64_t sl_hash_bytes(const void *p, size_t n)
{
    /* FNV-1a: short keys (hosts, paths), good enough spread, no allocation. */
    const unsigned char *c = p;
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++) {
        h ^= c[i];
        h *= 1099511628211ull;
    }
    return h;
}

void sl_hmap_init(sl_hmap_t *m)
{
    m->slots = NULL;
    m->cap = m->n = 0;
    m->borrowed = false;
    m->slab = NULL;
}

void sl_hmap_init_borrowed(sl_hmap_t *m, sl_slab_t *slab)
{
    sl_hmap_init(m);
    m->borrowed = true;
    m->slab = slab;
}

void sl_hmap_free(sl_hmap_t *m)
{
    if (!m->borrowed)
        for (size_t i = 0; i < m->cap; i++)
            free(m->slots[i].key);
    if (!m->slab)
        free(m->slots);
    m->slots = NULL;
    m->cap = m->n = 0;
}

static sl_hmap_entry_t *find(const sl_hmap_t *m, const char *key, size_t klen, uint64_t h)
{
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        sl_hmap_entry_t *e = &m->slots[i];
        if (!e->key)
            return e;
        if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0)
            return e;
    }
}

static void resize(sl_hmap_t *m, size_t cap)
{
    sl_hmap_t old = *m;
    m->cap = cap;
    m->slots = m->slab ? sl_slab_calloc(m->slab, cap, sizeof(*m->slots))
                       : sl_xcalloc(cap, sizeof(*m->slots));
    for (size_t i = 0; i < old.cap; i++) {
        sl_hmap_entry_t *e = &old.slots[i];
        if (e->key)
            *find(m, e->key, e->klen, e->hash) = *e;
    }
    if (!m->slab)
        free(old.slots);
}

void sl_hmap_reserve(sl_hmap_t *m, size_t n)
{
    size_t cap = m->cap ? m->cap : 16;
    while (n * 4 > cap * 3)
        cap *= 2;
    if (cap != m->cap)
        resize(m, cap);
}

void **sl_hmap_put(sl_hmap_t *m, const char *key, size_t klen)
{
    if ((m->n + 1) * 4 > m->cap * 3)
        resize(m, m->cap ? m->cap * 2 : 16);
    uint64_t h = sl_hash_bytes(key, klen);
    sl_hmap_entry_t *e = find(m, key, klen, h);
    if (!e->key) {
        /* A borrowed empty key still needs a non-NULL pointer to mark the slot used. */
        e->key = m->borrowed ? (char *)(klen ? key : "") : sl_xstrndup(key, klen);
        e->klen = klen;
        e->hash = h;
        e->value = NULL;
        m->n++;
    }
    return &e->value;
}

void *sl_hmap_get(const sl_hmap_t *m, const char *key, size_t klen)
{
    if (!m->n)
        return NULL;
    sl_hmap_entry_t *e = find(m, key, klen, sl_hash_bytes(key, klen));
    return e->key ? e->value : NULL;
}
