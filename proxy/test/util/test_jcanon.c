/* The JSON writer: byte for byte what cJSON_PrintUnformatted writes, canonical or as it is, and
 * its streamed hash; the allocation-free key paths; slabs and borrowed-key maps. */
#include <criterion/criterion.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/cfg.h"
#include "util/hmap.h"
#include "util/jcanon.h"
#include "util/slab.h"

/* The reference canonical form: every mapping sorted in place by a stable insertion sort (what
 * the gateway did before the writer, with glibc's stable qsort). */
static void ref_canonicalize(cJSON *v)
{
    for (cJSON *c = v->child; c; c = c->next)
        ref_canonicalize(c);
    if (!cJSON_IsObject(v) || !v->child)
        return;
    size_t n = 0;
    for (cJSON *c = v->child; c; c = c->next)
        n++;
    cJSON **a = malloc(n * sizeof(*a));
    n = 0;
    for (cJSON *c = v->child; c; c = c->next)
        a[n++] = c;
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && strcmp(a[j - 1]->string, a[j]->string) > 0; j--) {
            cJSON *t = a[j];
            a[j] = a[j - 1];
            a[j - 1] = t;
        }
    for (size_t i = 0; i < n; i++) {
        a[i]->prev = i ? a[i - 1] : a[n - 1];
        a[i]->next = i + 1 < n ? a[i + 1] : NULL;
    }
    v->child = a[0];
    free(a);
}

static char *write(const cJSON *v, bool sort)
{
    sl_jc_t w;
    sl_jc_init(&w, sort, NULL, NULL);
    sl_jc_value(&w, v);
    cr_assert(!w.failed);
    sl_jc_raw(&w, "", 1); /* NUL */
    char *text = w.p;
    w.p = NULL;
    sl_jc_free(&w);
    return text;
}

static void check_same(const cJSON *v)
{
    char *want = cJSON_PrintUnformatted(v);
    char *got = write(v, false);
    cr_assert_str_eq(got, want);
    unsigned char md1[32], md2[32];
    unsigned len = 0;
    EVP_Digest(want, strlen(want), md1, &len, EVP_sha256(), NULL);
    cr_assert(sl_jc_sha256(v, false, md2));
    cr_assert_eq(memcmp(md1, md2, 32), 0);
    cJSON *copy = cJSON_Duplicate(v, 1);
    ref_canonicalize(copy);
    char *want_sorted = cJSON_PrintUnformatted(copy);
    char *got_sorted = write(v, true);
    cr_assert_str_eq(got_sorted, want_sorted);
    cr_assert(sl_jc_sha256(v, true, md2));
    EVP_Digest(want_sorted, strlen(want_sorted), md1, &len, EVP_sha256(), NULL);
    cr_assert_eq(memcmp(md1, md2, 32), 0);
    char *again = cJSON_PrintUnformatted(v);
    cr_assert_str_eq(again, want, "the tree is not changed");
    free(want);
    free(got);
    free(want_sorted);
    free(got_sorted);
    free(again);
    cJSON_Delete(copy);
}

Test(jcanon, scalars_as_cjson_prints_them)
{
    static const double numbers[] = {0,
                                     -0.0,
                                     1,
                                     -1,
                                     42,
                                     0.1,
                                     1.0 / 3,
                                     1e300,
                                     -1e-300,
                                     2147483647,
                                     2147483648.0,
                                     -2147483648.0,
                                     -2147483649.0,
                                     9007199254740993.0,
                                     123.456,
                                     1e15,
                                     1e16,
                                     5e-324,
                                     NAN,
                                     INFINITY};
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < sizeof(numbers) / sizeof(numbers[0]); i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(numbers[i]));
    cJSON_AddItemToArray(a, cJSON_CreateTrue());
    cJSON_AddItemToArray(a, cJSON_CreateFalse());
    cJSON_AddItemToArray(a, cJSON_CreateNull());
    cJSON_AddItemToArray(a, cJSON_CreateString(""));
    cJSON_AddItemToArray(a, cJSON_CreateRaw("{\"raw\":1}"));
    cJSON_AddItemToArray(a, cJSON_CreateArray());
    cJSON_AddItemToArray(a, cJSON_CreateObject());
    char all[256];
    for (int i = 1; i < 256; i++)
        all[i - 1] = (char)i;
    all[255] = '\0';
    cJSON_AddItemToArray(a, cJSON_CreateString(all));
    cJSON_AddItemToArray(a, cJSON_CreateString("q\"b\\s/\b\f\n\r\t\x01\x1f\x7f é ☃"));
    check_same(a);
    cJSON_Delete(a);
}

Test(jcanon, documents_sorted_and_as_they_are)
{
    static const char *const docs[] = {
        "{}",
        "[]",
        "{\"b\":1,\"a\":{\"z\":[{\"y\":1,\"x\":2}],\"\":null},\"a\":\"dup\",\"c\":[]}",
        "{\"routes\":[{\"upstream\":\"u\",\"name\":\"r\",\"match\":{\"path\":\"/"
        "\",\"host\":\"h\"}}],"
        "\"upstreams\":{\"u10\":{\"backends\":[\"1.2.3.4:5\"]},\"u2\":{\"lb\":\"round_robin\","
        "\"backends\":[{\"weight\":2,\"address\":\"x:1\"}]}}}",
        "{\"k\\u00e9y\":\"v\\n\",\"K\":1.5e3,\"k\":-0,\"\\t\":true}",
    };
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        cJSON *v = cJSON_Parse(docs[i]);
        cr_assert_not_null(v, "%s", docs[i]);
        check_same(v);
        cJSON_Delete(v);
    }
}

/* A pseudo-random tree of every kind of value and key order, big enough to sort with merges. */
static cJSON *random_tree(unsigned *seed, int depth)
{
    int kind = depth > 4 ? rand_r(seed) % 4 : rand_r(seed) % 6;
    switch (kind) {
    case 0:
        return cJSON_CreateNumber((double)(rand_r(seed) % 2000 - 1000) / (rand_r(seed) % 7 + 1));
    case 1: {
        char s[12];
        for (int i = 0; i < 11; i++)
            s[i] = (char)(rand_r(seed) % 127 + 1);
        s[rand_r(seed) % 11] = '\0';
        return cJSON_CreateString(s);
    }
    case 2:
        return cJSON_CreateBool(rand_r(seed) & 1);
    case 3:
        return cJSON_CreateNull();
    case 4: {
        cJSON *a = cJSON_CreateArray();
        for (int n = rand_r(seed) % 5; n > 0; n--)
            cJSON_AddItemToArray(a, random_tree(seed, depth + 1));
        return a;
    }
    default: {
        cJSON *o = cJSON_CreateObject();
        for (int n = rand_r(seed) % (depth ? 6 : 40); n > 0; n--) {
            char k[4] = {(char)('a' + rand_r(seed) % 5), (char)('a' + rand_r(seed) % 5), 0, 0};
            cJSON_AddItemToObject(o, k, random_tree(seed, depth + 1));
        }
        return o;
    }
    }
}

Test(jcanon, random_trees)
{
    for (unsigned seed = 1; seed <= 300; seed++) {
        unsigned s = seed;
        cJSON *v = random_tree(&s, 0);
        check_same(v);
        cJSON_Delete(v);
    }
}

Test(jcanon, big_values_through_a_sink)
{
    /* Longer than the sink's buffer: a long string and many members. */
    cJSON *o = cJSON_CreateObject();
    char *big = malloc(300000);
    memset(big, 'x', 299999);
    big[299999] = '\0';
    big[1000] = '\n';
    cJSON_AddItemToObject(o, "z", cJSON_CreateString(big));
    for (int i = 0; i < 5000; i++) {
        char k[16];
        snprintf(k, sizeof(k), "k%d", 5000 - i);
        cJSON_AddItemToObject(o, k, cJSON_CreateNumber(i));
    }
    check_same(o);
    free(big);
    cJSON_Delete(o);
}

Test(jcanon, sorted_views_and_counts)
{
    cJSON *v = cJSON_Parse("{\"b\":{\"y\":1,\"x\":1},\"a\":{\"p\":1,\"q\":2},\"c\":{\"n\":{\"m\":1,"
                           "\"l\":2}}}");
    sl_jc_t w;
    sl_jc_init(&w, true, NULL, NULL);
    size_t base, n = sl_jc_children(&w, v, &base);
    cr_assert_eq(n, 3);
    cr_assert_str_eq(w.stack[base].node->string, "a");
    cr_assert_eq(w.stack[base].index, 1);
    cr_assert_eq(w.stack[base + 1].index, 0);
    cr_assert_eq(w.stack[base + 2].index, 2);
    sl_jc_pop(&w, n);
    cr_assert_eq(w.unsorted, 1);
    w.unsorted = 0;
    sl_jc_value(&w, v);
    cr_assert_eq(w.unsorted, 3, "the top, b and c.n");
    cr_assert(!sl_jc_is_sorted(v));
    cr_assert(sl_jc_is_sorted(cJSON_GetObjectItem(v, "a")));
    sl_jc_free(&w);
    cJSON_Delete(v);
}

Test(cfg, paths_without_printf_truncate_like_snprintf)
{
    static const char *const parents[] = {NULL, "", "routes[3]", "upstreams.a-long-name.tls"};
    static const char *const keys[] = {"", "k", "backends", "a.b"};
    char want[64], got[64];
    for (size_t cap = 1; cap < 40; cap++)
        for (size_t p = 0; p < 4; p++) {
            for (size_t k = 0; k < 4; k++) {
                memset(got, '#', sizeof(got));
                memset(want, '#', sizeof(want));
                if (!parents[p] || !*parents[p])
                    snprintf(want, cap, "%s", keys[k]);
                else
                    snprintf(want, cap, "%s.%s", parents[p], keys[k]);
                sl__cfg_path_key(got, cap, parents[p], keys[k]);
                cr_assert_eq(memcmp(got, want, sizeof(got)), 0, "key cap %zu", cap);
            }
            static const size_t idx[] = {0, 7, 12345678901ULL};
            for (size_t i = 0; i < 3; i++) {
                memset(got, '#', sizeof(got));
                memset(want, '#', sizeof(want));
                snprintf(want, cap, "%s[%zu]", parents[p] ? parents[p] : "", idx[i]);
                sl__cfg_path_index(got, cap, parents[p], idx[i]);
                cr_assert_eq(memcmp(got, want, sizeof(got)), 0, "index cap %zu", cap);
            }
        }
}

Test(slab, allocations_and_borrowed_maps)
{
    sl_slab_t s;
    sl_slab_init(&s, 300);
    char *keys[2000];
    sl_hmap_t m;
    sl_hmap_init_borrowed(&m, &s);
    for (int i = 0; i < 2000; i++) {
        char k[16];
        snprintf(k, sizeof(k), "key%d", i);
        keys[i] = sl_slab_strdup(&s, k);
        long *v = sl_slab_alloc(&s, sizeof(long));
        cr_assert_eq((uintptr_t)v % 16, 0);
        *v = i;
        *sl_hmap_put(&m, keys[i], strlen(keys[i])) = v;
    }
    void *big = sl_slab_calloc(&s, 100000, 4); /* a chunk of its own, from the pool next time */
    cr_assert_not_null(big);
    for (int i = 0; i < 2000; i++) {
        long *v = sl_hmap_get(&m, keys[i], strlen(keys[i]));
        cr_assert_eq(*v, i);
        cr_assert_eq(m.slots[0].key == NULL || m.borrowed, true);
    }
    cr_assert_null(sl_hmap_get(&m, "nope", 4));
    sl_hmap_free(&m); /* forgets; the slab frees */
    sl_slab_free(&s);
    size_t cap;
    void *p = sl_pool_alloc(70000, &cap);
    cr_assert_geq(cap, 70000);
    sl_pool_free(p);
    sl_pool_clear();
}
