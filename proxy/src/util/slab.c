#include "util/slab.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/mem.h"

#define SLAB_ALIGN    16
#define POOL_MIN      (64u * 1024) /* chunks this big are recycled */
#define POOL_MAX      (32u << 20)  /* bytes the pool keeps */
#define SLAB_MAX_STEP (1u << 20)   /* growth of a slab's chunks stops doubling here */

struct sl_slab_chunk {
    sl_slab_chunk_t *next;
    size_t size;
    _Alignas(SLAB_ALIGN) char data[];
};

/* ---- the pool of big chunks --------------------------------------------------------------- */

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static sl_slab_chunk_t *pool;
static size_t pool_bytes;

/* A chunk of at least size bytes: the smallest pooled one that is not more than twice as big,
 * else a new one. */
static sl_slab_chunk_t *chunk_get(size_t size)
{
    if (size >= POOL_MIN) {
        pthread_mutex_lock(&pool_lock);
        sl_slab_chunk_t **best = NULL;
        for (sl_slab_chunk_t **c = &pool; *c; c = &(*c)->next)
            if ((*c)->size >= size && (*c)->size / 2 <= size &&
                (!best || (*c)->size < (*best)->size))
                best = c;
        sl_slab_chunk_t *got = NULL;
        if (best) {
            got = *best;
            *best = got->next;
            pool_bytes -= got->size;
        }
        pthread_mutex_unlock(&pool_lock);
        if (got)
            return got;
    }
    sl_slab_chunk_t *c = sl_xmalloc(sizeof(*c) + size);
    c->size = size;
    return c;
}

static void chunk_put(sl_slab_chunk_t *c)
{
    if (c->size >= POOL_MIN) {
        pthread_mutex_lock(&pool_lock);
        bool keep = pool_bytes + c->size <= POOL_MAX;
        if (keep) {
            c->next = pool;
            pool = c;
            pool_bytes += c->size;
        }
        pthread_mutex_unlock(&pool_lock);
        if (keep)
            return;
    }
    free(c);
}

void sl_pool_clear(void)
{
    pthread_mutex_lock(&pool_lock);
    sl_slab_chunk_t *c = pool;
    pool = NULL;
    pool_bytes = 0;
    pthread_mutex_unlock(&pool_lock);
    while (c) {
        sl_slab_chunk_t *next = c->next;
        free(c);
        c = next;
    }
}

void *sl_pool_alloc(size_t n, size_t *cap)
{
    size_t size = POOL_MIN;
    while (size < n)
        size *= 2;
    sl_slab_chunk_t *c = chunk_get(size);
    *cap = c->size;
    return c->data;
}

void sl_pool_free(void *p)
{
    if (p)
        chunk_put((sl_slab_chunk_t *)((char *)p - offsetof(sl_slab_chunk_t, data)));
}

/* ---- slabs -------------------------------------------------------------------------------- */

void sl_slab_init(sl_slab_t *s, size_t first)
{
    s->cur = s->end = NULL;
    s->chunks = NULL;
    s->next_size = first < 256 ? 256 : first;
}

static void grow(sl_slab_t *s, size_t need)
{
    size_t size = s->next_size;
    while (size < need)
        size *= 2;
    sl_slab_chunk_t *c = chunk_get(size);
    c->next = s->chunks;
    s->chunks = c;
    s->cur = c->data;
    s->end = c->data + c->size;
    s->next_size =
        size * 2 > SLAB_MAX_STEP ? (size > SLAB_MAX_STEP ? size : SLAB_MAX_STEP) : size * 2;
}

void *sl_slab_alloc(sl_slab_t *s, size_t n)
{
    uintptr_t at = ((uintptr_t)s->cur + (SLAB_ALIGN - 1)) & ~(uintptr_t)(SLAB_ALIGN - 1);
    if (!s->cur || at + n > (uintptr_t)s->end) {
        grow(s, n);
        at = (uintptr_t)s->cur;
    }
    s->cur = (char *)(at + n);
    return (void *)at;
}

void *sl_slab_calloc(sl_slab_t *s, size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        sl_oom();
    void *p = sl_slab_alloc(s, n * size);
    memset(p, 0, n * size);
    return p;
}

void *sl_slab_memdup(sl_slab_t *s, const void *p, size_t n)
{
    if (!s->cur || n > (size_t)(s->end - s->cur))
        grow(s, n);
    char *d = s->cur;
    s->cur += n;
    memcpy(d, p, n);
    return d;
}

char *sl_slab_strndup(sl_slab_t *s, const char *str, size_t n)
{
    if (!s->cur || n + 1 > (size_t)(s->end - s->cur))
        grow(s, n + 1);
    char *d = s->cur;
    s->cur += n + 1;
    memcpy(d, str, n);
    d[n] = '\0';
    return d;
}

char *sl_slab_strdup(sl_slab_t *s, const char *str)
{
    return sl_slab_strndup(s, str, strlen(str));
}

void sl_slab_free(sl_slab_t *s)
{
    sl_slab_chunk_t *c = s->chunks;
    while (c) {
        sl_slab_chunk_t *next = c->next;
        chunk_put(c);
        c = next;
    }
    s->chunks = NULL;
    s->cur = s->end = NULL;
}
