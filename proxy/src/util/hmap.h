/* A string-keyed hash map (open addressing, linear probing). Keys are copied; values are
 * pointers the caller owns. Built once, read many times: no deletion.
 *
 * A map made with sl_hmap_init_borrowed keeps the caller's key pointers instead (they must
 * outlive the map) and takes its slots from a slab when one is given: building one costs no
 * allocation per key, and sl_hmap_free on it only forgets (the slab frees the memory). */
#ifndef SL_UTIL_HMAP_H
#define SL_UTIL_HMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sl_slab;

typedef struct sl_hmap_entry {
    char *key;
    size_t klen;
    uint64_t hash;
    void *value;
} sl_hmap_entry_t;

typedef struct sl_hmap {
    sl_hmap_entry_t *slots;
    size_t cap, n;
    bool borrowed;        /* keys are the caller's */
    struct sl_slab *slab; /* borrowed maps: where slots come from (NULL: malloc) */
} sl_hmap_t;

uint64_t sl_hash_bytes(const void *p, size_t n);
void sl_hmap_init(sl_hmap_t *m);
void sl_hmap_init_borrowed(sl_hmap_t *m, struct sl_slab *slab);
/* Makes room for n keys in all (no growth while they are added). */
void sl_hmap_reserve(sl_hmap_t *m, size_t n);
void sl_hmap_free(sl_hmap_t *m);
/* Returns the slot's value address for key, inserting NULL when absent. */
void **sl_hmap_put(sl_hmap_t *m, const char *key, size_t klen);
void *sl_hmap_get(const sl_hmap_t *m, const char *key, size_t klen);

#endif
