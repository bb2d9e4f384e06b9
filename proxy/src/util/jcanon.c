/* cJSON_PrintUnformatted's text, written without cJSON's allocations and, for canonical text,
 * without sorting the tree in place (jcanon.h). What cJSON does, and we must do the same byte for
 * byte (the configuration hash depends on it): strings escape '"', '\\', \b \f \n \r \t by letter
 * and every other byte below 0x20 as \u00xx (lowercase); all other bytes are copied; numbers
 * are printed by cJSON itself (cJSON_PrintPreallocated: its precision rules and its version's
 * handling of integers); no spaces anywhere. */
#include "util/jcanon.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "util/mem.h"
#include "util/slab.h"

#define SINK_BUFFER (64 * 1024)

void sl_jc_init(sl_jc_t *w, bool sort, void (*sink)(sl_jc_t *, const char *, size_t),
                void *sink_data)
{
    memset(w, 0, sizeof(*w));
    w->sort = sort;
    w->sink = sink;
    w->sink_data = sink_data;
    if (sink) {
        w->cap = SINK_BUFFER;
        w->p = sl_xmalloc(w->cap);
    }
}

void sl_jc_init_pooled(sl_jc_t *w, bool sort, size_t size_hint)
{
    sl_jc_init(w, sort, NULL, NULL);
    w->pooled = true;
    w->p = sl_pool_alloc(size_hint, &w->cap);
}

void sl_jc_free(sl_jc_t *w)
{
    if (w->pooled)
        sl_pool_free(w->p);
    else
        free(w->p);
    free(w->stack);
    w->p = NULL;
    w->stack = NULL;
    w->len = w->cap = w->sp = w->stack_cap = 0;
}

void sl_jc_finish(sl_jc_t *w)
{
    if (w->sink && w->len) {
        w->sink(w, w->p, w->len);
        w->len = 0;
    }
}

static void make_room(sl_jc_t *w, size_t n)
{
    if (w->sink) {
        sl_jc_finish(w);
        if (n <= w->cap)
            return;
    }
    size_t cap = w->cap ? w->cap : 4096;
    while (cap - w->len < n)
        cap *= 2;
    if (w->pooled) {
        size_t got;
        char *p = sl_pool_alloc(cap, &got);
        memcpy(p, w->p, w->len);
        sl_pool_free(w->p);
        w->p = p;
        w->cap = got;
        return;
    }
    w->p = sl_xrealloc(w->p, cap);
    w->cap = cap;
}

static inline void put(sl_jc_t *w, const char *s, size_t n)
{
    if (w->cap - w->len < n)
        make_room(w, n);
    memcpy(w->p + w->len, s, n);
    w->len += n;
}

static inline void put_c(sl_jc_t *w, char c)
{
    if (w->cap == w->len)
        make_room(w, 1);
    w->p[w->len++] = c;
}

void sl_jc_raw(sl_jc_t *w, const char *s, size_t n)
{
    put(w, s, n);
}

/* 1: escaped by letter (the letter is in letters[]), 2: as \u00xx, 0: copied. */
static const unsigned char escape_kind[256] = {
    [0x00] = 2, [0x01] = 2, [0x02] = 2, [0x03] = 2, [0x04] = 2, [0x05] = 2, [0x06] = 2,
    [0x07] = 2, ['\b'] = 1, ['\t'] = 1, ['\n'] = 1, [0x0b] = 2, ['\f'] = 1, ['\r'] = 1,
    [0x0e] = 2, [0x0f] = 2, [0x10] = 2, [0x11] = 2, [0x12] = 2, [0x13] = 2, [0x14] = 2,
    [0x15] = 2, [0x16] = 2, [0x17] = 2, [0x18] = 2, [0x19] = 2, [0x1a] = 2, [0x1b] = 2,
    [0x1c] = 2, [0x1d] = 2, [0x1e] = 2, [0x1f] = 2, ['"'] = 1,  ['\\'] = 1,
};
static const char letters[256] = {['\b'] = 'b', ['\t'] = 't', ['\n'] = 'n', ['\f'] = 'f',
                                  ['\r'] = 'r', ['"'] = '"',  ['\\'] = '\\'};

/* Nonzero when one of the 8 bytes of x is below 0x20, '"' or '\\' (the bit-twiddling tests for a
 * byte less than n and for a zero byte: no false negatives). */
static inline uint64_t special8(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
    return (((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((b - ones) & ~b)) & highs;
}

static void put_escape(sl_jc_t *w, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    if (escape_kind[c] == 1) {
        char e[2] = {'\\', letters[c]};
        put(w, e, 2);
    } else {
        char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        put(w, e, 6);
    }
}

void sl_jc_string(sl_jc_t *w, const char *str)
{
    if (!str) {
        put(w, "\"\"", 2);
        return;
    }
    const unsigned char *s = (const unsigned char *)str;
    size_t len = strlen(str), run = 0, i = 0;
    put_c(w, '"');
    while (i < len) {
        /* Eight bytes at a time while none needs escaping (most strings: none at all). */
        for (uint64_t x; i + 8 <= len; i += 8) {
            memcpy(&x, s + i, 8);
            if (special8(x))
                break;
        }
        for (size_t stop = i + 8 < len ? i + 8 : len; i < stop; i++) {
            if (!escape_kind[s[i]])
                continue;
            put(w, str + run, i - run);
            run = i + 1;
            put_escape(w, s[i]);
        }
    }
    put(w, str + run, len - run);
    put_c(w, '"');
}

static int key_cmp(const cJSON *a, const cJSON *b)
{
    return strcmp(a->string ? a->string : "", b->string ? b->string : "");
}

bool sl_jc_is_sorted(const cJSON *obj)
{
    for (const cJSON *c = obj->child; c && c->next; c = c->next)
        if (key_cmp(c, c->next) > 0)
            return false;
    return true;
}

static void stack_room(sl_jc_t *w, size_t n)
{
    if (w->stack_cap - w->sp >= n)
        return;
    size_t cap = w->stack_cap ? w->stack_cap : 64;
    while (cap - w->sp < n)
        cap *= 2;
    w->stack = sl_xrealloc(w->stack, cap * sizeof(*w->stack));
    w->stack_cap = cap;
}

/* Stable merge sort of a[0..n) by key, tmp holding n entries. */
static void merge_sort(sl_jc_child_t *a, sl_jc_child_t *tmp, size_t n)
{
    if (n <= 8) {
        for (size_t i = 1; i < n; i++) {
            sl_jc_child_t x = a[i];
            size_t j = i;
            while (j > 0 && key_cmp(a[j - 1].node, x.node) > 0) {
                a[j] = a[j - 1];
                j--;
            }
            a[j] = x;
        }
        return;
    }
    size_t h = n / 2;
    merge_sort(a, tmp, h);
    merge_sort(a + h, tmp, n - h);
    if (key_cmp(a[h - 1].node, a[h].node) <= 0)
        return;
    memcpy(tmp, a, h * sizeof(*a));
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n)
        a[k++] = key_cmp(a[j].node, tmp[i].node) < 0 ? a[j++] : tmp[i++];
    while (i < h)
        a[k++] = tmp[i++];
}

size_t sl_jc_children(sl_jc_t *w, const cJSON *obj, size_t *base)
{
    size_t n = 0;
    bool sorted = true;
    for (const cJSON *c = obj->child; c; c = c->next, n++)
        if (sorted && c->next && key_cmp(c, c->next) > 0)
            sorted = false;
    if (!sorted)
        w->unsorted++;
    bool sort = w->sort && !sorted;
    stack_room(w, sort ? 2 * n : n);
    *base = w->sp;
    sl_jc_child_t *a = w->stack + w->sp;
    size_t i = 0;
    for (const cJSON *c = obj->child; c; c = c->next, i++)
        a[i] = (sl_jc_child_t){c, i};
    if (sort)
        merge_sort(a, a + n, n);
    w->sp += n;
    return n;
}

void sl_jc_pop(sl_jc_t *w, size_t n)
{
    w->sp -= n;
}

static void write_number(sl_jc_t *w, const cJSON *v)
{
    char buf[64];
    if (!cJSON_PrintPreallocated((cJSON *)v, buf, (int)sizeof(buf), 0)) {
        w->failed = true;
        return;
    }
    put(w, buf, strlen(buf));
}

void sl_jc_value(sl_jc_t *w, const cJSON *v)
{
    switch (v->type & 0xFF) {
    case cJSON_NULL:
        put(w, "null", 4);
        return;
    case cJSON_False:
        put(w, "false", 5);
        return;
    case cJSON_True:
        put(w, "true", 4);
        return;
    case cJSON_Number:
        write_number(w, v);
        return;
    case cJSON_Raw:
        if (!v->valuestring)
            w->failed = true;
        else
            put(w, v->valuestring, strlen(v->valuestring));
        return;
    case cJSON_String:
        sl_jc_string(w, v->valuestring);
        return;
    case cJSON_Array:
        put_c(w, '[');
        for (const cJSON *c = v->child; c; c = c->next) {
            sl_jc_value(w, c);
            if (c->next)
                put_c(w, ',');
        }
        put_c(w, ']');
        return;
    case cJSON_Object: {
        size_t base, n = sl_jc_children(w, v, &base);
        put_c(w, '{');
        for (size_t i = 0; i < n; i++) {
            const cJSON *c = w->stack[base + i].node; /* the stack may move: index it anew */
            sl_jc_string(w, c->string);
            put_c(w, ':');
            sl_jc_value(w, c);
            if (i + 1 < n)
                put_c(w, ',');
        }
        put_c(w, '}');
        sl_jc_pop(w, n);
        return;
    }
    default:
        w->failed = true;
        return;
    }
}

static void sha_sink(sl_jc_t *w, const char *p, size_t n)
{
    EVP_DigestUpdate(w->sink_data, p, n);
}

bool sl_jc_sha256(const cJSON *v, bool sort, unsigned char md[32])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        sl_oom();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    sl_jc_t w;
    sl_jc_init(&w, sort, sha_sink, ctx);
    sl_jc_value(&w, v);
    sl_jc_finish(&w);
    bool ok = !w.failed;
    sl_jc_free(&w);
    unsigned len = 0;
    EVP_DigestFinal_ex(ctx, md, &len);
    EVP_MD_CTX_free(ctx);
    return ok;
}
