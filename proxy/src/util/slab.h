/* Slabs: bump allocation for objects built once and freed whole (a configuration's routes,
 * upstreams and router tables, the cJSON trees of a change). The owner embeds an sl_slab_t; the
 * first chunk is allocated on first use with the size given to sl_slab_init, the next ones grow
 * fourfold up to SL_SLAB_BLOCK. Freeing is one free() per chunk. A slab is not thread-safe (one
 * builder at a time); it may be freed on another thread than the one that built it.
 *
 * Chunks of SL_SLAB_BLOCK bytes and more are blocks: mapped 2 MiB-aligned with MADV_HUGEPAGE,
 * and recycled through a small process-wide pool (at most 32 MiB) instead of going back to the
 * kernel. A big configuration is rebuilt on every change, and touching fresh memory costs more
 * than filling it: a page fault per 4 KiB, ~15 µs each on some virtual machines, against one
 * per 2 MiB with transparent huge pages (when the kernel has them, even in `madvise` mode).
 * Builds with AddressSanitizer use malloc for every chunk (its checks and leak scans see them). */
#ifndef SL_UTIL_SLAB_H
#define SL_UTIL_SLAB_H

#include <stdbool.h>
#include <stddef.h>

#define SL_SLAB_BLOCK ((size_t)2 << 20)

typedef struct sl_slab_chunk sl_slab_chunk_t;

typedef struct sl_slab {
    char *cur, *end;
    sl_slab_chunk_t *chunks; /* newest first */
    size_t next_size;        /* of the next chunk */
} sl_slab_t;

/* first: the size of the first chunk (a hint of the whole is best: one chunk, or blocks). */
void sl_slab_init(sl_slab_t *s, size_t first);
/* n bytes aligned for any object (16); never NULL (aborts when out of memory). */
void *sl_slab_alloc(sl_slab_t *s, size_t n);
void *sl_slab_calloc(sl_slab_t *s, size_t n, size_t size);
/* Copies without alignment (strings, bytes): allocate anything else with sl_slab_alloc. */
char *sl_slab_strndup(sl_slab_t *s, const char *str, size_t n);
char *sl_slab_strdup(sl_slab_t *s, const char *str);
void *sl_slab_memdup(sl_slab_t *s, const void *p, size_t n);
/* True when p was allocated from s (a few chunks to look at). */
bool sl_slab_owns(const sl_slab_t *s, const void *p);
/* Frees every chunk. An object living in its slab frees itself: copy the sl_slab_t first. */
void sl_slab_free(sl_slab_t *s);

/* A big buffer (the text of a configuration, a request body) from the same source: at least n
 * bytes, *cap says how many (a block from SL_SLAB_BLOCK / 2 on, else malloc'd). sl_pool_free
 * takes it back (NULL is fine). */
void *sl_pool_alloc(size_t n, size_t *cap);
void sl_pool_free(void *p);
/* Unmaps the pool's blocks (tests, shutdown). */
void sl_pool_clear(void);

#endif
