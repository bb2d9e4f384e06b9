/* Slabs: bump allocation for objects built once and freed whole (a configuration's routes,
 * upstreams and router tables). The owner embeds an sl_slab_t; the first chunk is allocated on
 * first use with the size given to sl_slab_init (an object can live in its own first chunk), the
 * next ones double. Freeing is one free() per chunk. A slab is not thread-safe (one builder at a
 * time); it may be freed on another thread than the one that built it.
 *
 * Big chunks (64 KiB and more) are recycled through a small process-wide pool instead of going
 * back to malloc, which would hand the pages back to the kernel: a configuration's big arrays
 * are rebuilt on every change, and touching fresh pages costs more than filling them (a page
 * fault per 4 KiB, ~15 µs each on some virtual machines). The pool keeps at most 32 MiB. */
#ifndef SL_UTIL_SLAB_H
#define SL_UTIL_SLAB_H

#include <stddef.h>

typedef struct sl_slab_chunk sl_slab_chunk_t;

typedef struct sl_slab {
    char *cur, *end;
    sl_slab_chunk_t *chunks; /* newest first */
    size_t next_size;        /* of the next chunk */
} sl_slab_t;

void sl_slab_init(sl_slab_t *s, size_t first);
/* n bytes aligned for any object (16); never NULL (aborts when out of memory). */
void *sl_slab_alloc(sl_slab_t *s, size_t n);
void *sl_slab_calloc(sl_slab_t *s, size_t n, size_t size);
/* Copies without alignment (strings, bytes): allocate anything else with sl_slab_alloc. */
char *sl_slab_strndup(sl_slab_t *s, const char *str, size_t n);
char *sl_slab_strdup(sl_slab_t *s, const char *str);
void *sl_slab_memdup(sl_slab_t *s, const void *p, size_t n);
/* Frees every chunk. An object living in its slab frees itself: copy the sl_slab_t first. */
void sl_slab_free(sl_slab_t *s);

/* A big buffer (text of a configuration) from the same pool: at least n bytes, *cap says how
 * many. sl_pool_free takes it back (NULL is fine). */
void *sl_pool_alloc(size_t n, size_t *cap);
void sl_pool_free(void *p);
/* Hands the pool's chunks back to malloc (tests, shutdown). */
void sl_pool_clear(void);

#endif
