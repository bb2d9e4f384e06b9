/* String index without key copies. */
#include "index.h"

#include <stdlib.h>
#include <string.h>

#include "util/hmap.h"
#include "util/mem.h"

void wt_index_init(wt_index_t *x)
{
    x->slots = NULL;
    x->cap = x->n = 0;
}

void wt_index_free(wt_index_t *x)
{
    free(x->slots);
    wt_index_init(x);
}

static wt_index_slot_t *find(const wt_index_t *x, const char *key, size_t len, uint64_t h)
{
    size_t mask = x->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        wt_index_slot_t *s = &x->slots[i];
        if (!s->key || (s->hash == h && s->len == len && !memcmp(s->key, key, len)))
            return s;
    }
}

void *wt_index_get(const wt_index_t *x, const char *key, size_t len)
{
    if (!x->n)
        return NULL;
    wt_index_slot_t *s = find(x, key, len, sl_hash_bytes(key, len));
    return s->key ? s->value : NULL;
}

void **wt_index_put(wt_index_t *x, const char *key, size_t len)
{
    if ((x->n + 1) * 2 > x->cap) {
        wt_index_t old = *x;
        x->cap = old.cap ? old.cap * 2 : 64;
        x->slots = sl_xcalloc(x->cap, sizeof(*x->slots));
        for (size_t i = 0; i < old.cap; i++)
            if (old.slots[i].key)
                *find(x, old.slots[i].key, old.slots[i].len, old.slots[i].hash) = old.slots[i];
        free(old.slots);
    }
    uint64_t h = sl_hash_bytes(key, len);
    wt_index_slot_t *s = find(x, key, len, h);
    if (!s->key) {
        s->key = key;
        s->len = len;
        s->hash = h;
        s->value = NULL;
        x->n++;
    }
    return &s->value;
}
