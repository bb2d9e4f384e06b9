/* A string-keyed hash map (open addressing, linear probing). Keys are copied; values are
 * pointers the caller owns. Built once, read many times: no deletion. */
#ifndef SL_UTIL_HMAP_H
#define SL_UTIL_HMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct sl_hmap_entry {
    char *key;
    size_t klen;
    uint64_t hash;
    void *value;
} sl_hmap_entry_t;

typedef struct sl_hmap {
    sl_hmap_entry_t *slots;
    size_t cap, n;
} sl_hmap_t;

uint64_t sl_hash_bytes(const void *p, size_t n);
void sl_hmap_init(sl_hmap_t *m);
void sl_hmap_free(sl_hmap_t *m);
/* Returns the slot's value address for key, inserting NULL when absent. */
void **sl_hmap_put(sl_hmap_t *m, const char *key, size_t klen);
void *sl_hmap_get(const sl_hmap_t *m, const char *key, size_t klen);

#endif
