#include "util/arena.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/mem.h"

void sl__arena_init(sl_arena_t *a)
{
    a->cur = a->first;
    a->end = a->first + sizeof(a->first);
    a->blocks = NULL;
    a->total = 0;
}

void sl__arena_reset(sl_arena_t *a)
{
    sl_arena_block_t *b = a->blocks;
    while (b) {
        sl_arena_block_t *n = b->next;
        free(b);
        b = n;
    }
    sl__arena_init(a);
}

void sl__arena_release(sl_arena_t *a)
{
    sl__arena_reset(a);
}

void *sl_arena_alloc(sl_arena_t *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if ((size_t)(a->end - a->cur) < n) {
        size_t size = n > 8192 ? n : 8192;
        sl_arena_block_t *b = sl_xmalloc(sizeof(*b) + size);
        b->size = size;
        b->next = a->blocks;
        a->blocks = b;
        a->cur = b->data;
        a->end = b->data + size;
    }
    void *p = a->cur;
    a->cur += n;
    a->total += n;
    return p;
}

char *sl_arena_strndup(sl_arena_t *a, const char *s, size_t n)
{
    char *p = sl_arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *sl_arena_printf(sl_arena_t *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    char *p = sl_arena_alloc(a, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}
