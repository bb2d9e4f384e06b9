#include "util/slab.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "util/mem.h"

#define SLAB_ALIGN 16
#define POOL_MAX   ((size_t)32 << 20) /* bytes of blocks the pool keeps */

#if defined(__SANITIZE_ADDRESS__)
#define USE_BLOCKS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define USE_BLOCKS 0
#endif
#endif
#ifndef USE_BLOCKS
#define USE_BLOCKS 1
#endif

struct sl_slab_chunk {
    sl_slab_chunk_t *next;
    size_t size; /* of data */
    bool block;  /* mapped (size + header is a multiple of SL_SLAB_BLOCK) */
    _Alignas(SLAB_ALIGN) char data[];
};

#define HEADER offsetof(sl_slab_chunk_t, data)

/* ---- blocks and their pool ---------------------------------------------------------------- */

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static sl_slab_chunk_t *pool;
static size_t pool_bytes;

static sl_slab_chunk_t *block_map(size_t total)
{
    size_t len = total + SL_SLAB_BLOCK;
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        sl_oom();
    char *a = (char *)(((uintptr_t)p + SL_SLAB_BLOCK - 1) & ~(uintptr_t)(SL_SLAB_BLOCK - 1));
    if (a > p)
        munmap(p, (size_t)(a - p));
    if (p + len > a + total)
        munmap(a + total, (size_t)(p + len - (a + total)));
    madvise(a, total, MADV_HUGEPAGE); /* a hint: without huge pages it is ordinary memory */
    sl_slab_chunk_t *c = (sl_slab_chunk_t *)a;
    c->size = total - HEADER;
    c->block = true;
    return c;
}

/* A chunk with at least size bytes of data: a block (pooled or new) from SL_SLAB_BLOCK / 2 on,
 * else malloc'd. */
static sl_slab_chunk_t *chunk_get(size_t size)
{
    if (USE_BLOCKS && size >= SL_SLAB_BLOCK / 2) {
        size_t total = (size + HEADER + SL_SLAB_BLOCK - 1) & ~(SL_SLAB_BLOCK - 1);
        pthread_mutex_lock(&pool_lock);
        sl_slab_chunk_t **best = NULL;
        for (sl_slab_chunk_t **c = &pool; *c; c = &(*c)->next)
            if ((*c)->size + HEADER >= total && ((*c)->size + HEADER) / 2 < total &&
                (!best || (*c)->size < (*best)->size))
                best = c;
        sl_slab_chunk_t *got = NULL;
        if (best) {
            got = *best;
            *best = got->next;
            pool_bytes -= got->size + HEADER;
        }
        pthread_mutex_unlock(&pool_lock);
        return got ? got : block_map(total);
    }
    sl_slab_chunk_t *c = sl_xmalloc(HEADER + size);
    c->size = size;
    c->block = false;
    return c;
}

static void chunk_put(sl_slab_chunk_t *c)
{
    if (!c->block) {
        free(c);
        return;
    }
    size_t total = c->size + HEADER;
    pthread_mutex_lock(&pool_lock);
    bool keep = pool_bytes + total <= POOL_MAX;
    if (keep) {
        c->next = pool;
        pool = c;
        pool_bytes += total;
    }
    pthread_mutex_unlock(&pool_lock);
    if (!keep)
        munmap(c, total);
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
        munmap(c, c->size + HEADER);
        c = next;
    }
}

void *sl_pool_alloc(size_t n, size_t *cap)
{
    sl_slab_chunk_t *c = chunk_get(n);
    *cap = c->size;
    return c->data;
}

void sl_pool_free(void *p)
{
    if (p)
        chunk_put((sl_slab_chunk_t *)((char *)p - HEADER));
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
    /* Fourfold up to a block; then a block at a time. */
    s->next_size = size >= SL_SLAB_BLOCK / 4 ? SL_SLAB_BLOCK - HEADER : size * 4;
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

bool sl_slab_owns(const sl_slab_t *s, const void *p)
{
    for (const sl_slab_chunk_t *c = s->chunks; c; c = c->next)
        if ((const char *)p >= c->data && (const char *)p < c->data + c->size)
            return true;
    return false;
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
