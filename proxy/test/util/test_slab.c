/* Slabs with huge-page blocks and their pool; cJSON trees made in bulk (jmem scopes). */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/jmem.h"
#include "util/slab.h"

#if defined(__SANITIZE_ADDRESS__)
#define ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ASAN 1
#endif
#endif
#ifndef ASAN
#define ASAN 0
#endif

Test(slab, small_chunks_grow_and_owns)
{
    sl_slab_t s;
    sl_slab_init(&s, 256);
    void *ptrs[5000];
    for (int i = 0; i < 5000; i++) {
        ptrs[i] = sl_slab_alloc(&s, (size_t)(i % 97) + 1);
        cr_assert_eq((uintptr_t)ptrs[i] % 16, 0);
        memset(ptrs[i], 0xab, (size_t)(i % 97) + 1);
    }
    for (int i = 0; i < 5000; i += 37)
        cr_assert(sl_slab_owns(&s, ptrs[i]));
    int outside;
    char *heap = malloc(16);
    cr_assert_not(sl_slab_owns(&s, &outside));
    cr_assert_not(sl_slab_owns(&s, heap));
    free(heap);
    char *d = sl_slab_strndup(&s, "hello world", 5);
    cr_assert_str_eq(d, "hello");
    sl_slab_free(&s);
    cr_assert_not(sl_slab_owns(&s, ptrs[0]));
}

Test(slab, blocks_are_aligned_and_recycled)
{
    sl_pool_clear();
    sl_slab_t s;
    sl_slab_init(&s, 3u << 20); /* more than a block: two blocks' worth, one chunk */
    char *a = sl_slab_alloc(&s, 3u << 20);
    memset(a, 1, 3u << 20);
    cr_assert(sl_slab_owns(&s, a + (3u << 20) - 1));
    if (!ASAN) /* the chunk header sits at the start of a 2 MiB-aligned mapping */
        cr_assert_lt((uintptr_t)a % SL_SLAB_BLOCK, 64);
    sl_slab_free(&s);

    /* The same size again comes back from the pool (without AddressSanitizer, which sees every
     * chunk as malloc'd memory). */
    sl_slab_init(&s, 3u << 20);
    char *b = sl_slab_alloc(&s, 3u << 20);
    if (!ASAN)
        cr_assert_eq(a, b);
    memset(b, 2, 3u << 20);
    sl_slab_free(&s);

    size_t cap;
    char *p = sl_pool_alloc(100, &cap); /* small: malloc'd */
    cr_assert_geq(cap, 100);
    memset(p, 0, cap);
    sl_pool_free(p);
    p = sl_pool_alloc(SL_SLAB_BLOCK, &cap); /* needs a bigger block than one */
    cr_assert_geq(cap, SL_SLAB_BLOCK);
    memset(p, 0, cap);
    sl_pool_free(p);
    sl_pool_free(NULL);
    sl_pool_clear();
}

Test(jmem, trees_in_a_scope_are_bulk_allocated)
{
    sl_jmem_init();
    cJSON *before = cJSON_Parse("{\"kept\":[1,2,3]}"); /* malloc'd: made outside any scope */
    cJSON *older = cJSON_Parse("{\"gone\":true}");

    sl_jmem_scope_t scope;
    sl_jmem_begin(&scope, 1024);
    cJSON *t = cJSON_Parse("{\"routes\":[{\"name\":\"a\"},{\"name\":\"b\"}],\"n\":2}");
    cr_assert_not_null(t);
    cr_assert(sl_slab_owns(&scope.mem, t));
    cr_assert(sl_slab_owns(&scope.mem, t->child->child->child->valuestring));
    /* A nested scope: its trees are its own; the outer one's still belong to the outer. */
    sl_jmem_scope_t inner;
    sl_jmem_begin(&inner, 0);
    cJSON *u = cJSON_Duplicate(t, 1);
    cr_assert(sl_slab_owns(&inner.mem, u));
    cr_assert_not(sl_slab_owns(&scope.mem, u));
    cJSON_Delete(u);
    cJSON_Delete(t); /* an outer scope's tree deleted while inner is open: nothing to do */
    sl_jmem_end(&inner);
    /* A tree made before the scope is freed for real (AddressSanitizer would see a leak or a
     * bad free otherwise). */
    cJSON_Delete(older);
    /* Reading a tree made before is fine (changing it is not: its new parts would be the
     * scope's). */
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(before, "kept")), 3);
    sl_jmem_end(&scope);

    /* Outside: malloc again, the tree made before is intact. */
    cJSON *after = cJSON_CreateString("x");
    cr_assert_not(sl_slab_owns(&scope.mem, after));
    cJSON_Delete(after);
    char *text = cJSON_PrintUnformatted(before);
    cr_assert_str_eq(text, "{\"kept\":[1,2,3]}");
    free(text);
    cJSON_Delete(before);
}
