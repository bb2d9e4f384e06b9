/* A hash index over strings that it does not copy (they live in a pool owned by the caller):
 * translation builds several of these per run, with thousands of keys, and copying every key
 * into its own allocation cost more than the lookups. Open addressing, no deletion. */
#ifndef WT_INDEX_H
#define WT_INDEX_H

#include <stddef.h>
#include <stdint.h>

typedef struct wt_index_slot {
    const char *key;
    size_t len;
    uint64_t hash;
    void *value;
} wt_index_slot_t;

typedef struct wt_index {
    wt_index_slot_t *slots;
    size_t cap, n;
} wt_index_t;

void wt_index_init(wt_index_t *x);
void wt_index_free(wt_index_t *x);
void *wt_index_get(const wt_index_t *x, const char *key, size_t len);
/* The value slot for key, inserted as NULL when absent. The key must outlive the index. */
void **wt_index_put(wt_index_t *x, const char *key, size_t len);

#endif
