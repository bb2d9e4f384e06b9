#include "util/jmem.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdlib.h>

static _Thread_local sl_jmem_scope_t *scope;

static void *jmem_malloc(size_t n)
{
    return scope ? sl_slab_alloc(&scope->mem, n) : malloc(n);
}

static void jmem_free(void *p)
{
    /* A tree made before the scope may still be freed in it (then it is malloc's). */
    for (const sl_jmem_scope_t *s = scope; s && p; s = s->outer)
        if (sl_slab_owns(&s->mem, p))
            return;
    free(p);
}

void sl_jmem_init(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    cJSON_Hooks h = {.malloc_fn = jmem_malloc, .free_fn = jmem_free};
    cJSON_InitHooks(&h);
}

void sl_jmem_begin(sl_jmem_scope_t *s, size_t size_hint)
{
    sl_slab_init(&s->mem, size_hint < 4096 ? 4096 : size_hint);
    s->outer = scope;
    scope = s;
}

void sl_jmem_end(sl_jmem_scope_t *s)
{
    scope = s->outer;
    sl_slab_free(&s->mem);
}
