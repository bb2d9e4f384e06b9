/* The router: which route serves a request.
 *
 * Routes are grouped by host: exact host names in a hash map, one-label wildcards
 * ("*.example.com") by their suffix in another, host-less routes apart. A request tries its
 * exact host's routes, then the wildcard of its parent domain, then the host-less routes;
 * the first group with a matching route wins. Within a group: an exact path (hash map), else
 * the longest prefix by path elements (one hash lookup per element of the request path), else
 * regexes in file order. Method and header conditions filter candidates; candidates for the same
 * path keep file order. Lookup cost depends on the request (its path depth), not on how many
 * routes exist. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <ctype.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway/gateway.h"
#include "util/hmap.h"
#include "util/mem.h"
#include "util/slab.h"

typedef struct route_list {
    gw_route_t **items;
    size_t n, cap;
} route_list_t;

typedef struct host_group {
    uint64_t seed; /* mixed into the hash of its paths (the tables hold every group's) */
    size_t max_prefix_depth;
    bool exact, prefix; /* has some */
    route_list_t regex;
} host_group_t;

/* Exact paths, or prefixes, of every group in one table keyed by (group, path): a router is a
 * few arrays however many hosts it serves. */
typedef struct path_entry {
    const host_group_t *g; /* NULL: free slot */
    const char *path;
    size_t len;
    uint64_t hash;
    route_list_t routes;
} path_entry_t;

typedef struct path_table {
    path_entry_t *slots;
    size_t mask;
} path_table_t;

/* Everything of a router lives in its slab (built and freed in a few allocations); keys point
 * into the routes, which the snapshot keeps as long as its router. */
struct gw_router {
    sl_slab_t mem;       /* the router itself too */
    sl_hmap_t hosts;     /* lowercase host -> host_group_t* */
    sl_hmap_t wildcards; /* lowercase ".example.com" -> host_group_t* */
    host_group_t *any;
    bool have_any;
    path_table_t exact, prefix;
    uint64_t n_groups;
};

static const char *const method_names[] = {
    "GET",      "HEAD",      "POST",  "PUT",  "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE",   "LOCK",    "UNLOCK",  "PURGE", NULL};

uint32_t gw_method_bit(const char *m, size_t len)
{
    for (uint32_t i = 0; method_names[i]; i++)
        if (strlen(method_names[i]) == len && memcmp(method_names[i], m, len) == 0)
            return 1u << i;
    return 0;
}

static void list_add(sl_slab_t *mem, route_list_t *l, gw_route_t *r)
{
    if (l->n == l->cap) { /* most lists hold one route: the old array stays in the slab */
        l->cap = l->cap ? l->cap * 2 : 1;
        gw_route_t **items = sl_slab_alloc(mem, l->cap * sizeof(*items));
        if (l->n)
            memcpy(items, l->items, l->n * sizeof(*items));
        l->items = items;
    }
    l->items[l->n++] = r;
}

static void table_init(sl_slab_t *mem, path_table_t *t, size_t n)
{
    size_t cap = 16;
    while (cap * 3 < n * 4)
        cap *= 2;
    t->slots = n ? sl_slab_calloc(mem, cap, sizeof(*t->slots)) : NULL;
    t->mask = cap - 1;
}

static uint64_t path_hash(const host_group_t *g, const char *path, size_t len)
{
    return sl_hash_bytes(path, len) ^ g->seed;
}

/* The entry of (g, path), or the free slot where it goes. Tables are sized for every route up
 * front: there is always a free slot. */
static path_entry_t *table_find(const path_table_t *t, const host_group_t *g, const char *path,
                                size_t len, uint64_t h)
{
    for (size_t i = h & t->mask;; i = (i + 1) & t->mask) {
        path_entry_t *e = &t->slots[i];
        if (!e->g || (e->hash == h && e->g == g && e->len == len && !memcmp(e->path, path, len)))
            return e;
    }
}

static const route_list_t *table_get(const path_table_t *t, const host_group_t *g, const char *path,
                                     size_t len)
{
    if (!t->slots)
        return NULL;
    path_entry_t *e = table_find(t, g, path, len, path_hash(g, path, len));
    return e->g ? &e->routes : NULL;
}

static void table_add(sl_slab_t *mem, path_table_t *t, const host_group_t *g, const char *path,
                      size_t len, gw_route_t *r)
{
    uint64_t h = path_hash(g, path, len);
    path_entry_t *e = table_find(t, g, path, len, h);
    if (!e->g)
        *e = (path_entry_t){.g = g, .path = path, .len = len, .hash = h};
    list_add(mem, &e->routes, r);
}

static host_group_t *group_new(gw_router_t *r)
{
    host_group_t *g = sl_slab_calloc(&r->mem, 1, sizeof(*g));
    g->seed = ++r->n_groups * 0x9E3779B97F4A7C15ull;
    return g;
}

static host_group_t *group_at(gw_router_t *r, sl_hmap_t *m, const char *key, size_t len)
{
    void **slot = sl_hmap_put(m, key, len);
    if (!*slot)
        *slot = group_new(r);
    return *slot;
}

/* "/a/b/" -> "/a/b"; "/" stays. */
static size_t prefix_norm_len(const char *p, size_t len)
{
    while (len > 1 && p[len - 1] == '/')
        len--;
    return len;
}

static size_t path_depth(const char *p, size_t len)
{
    size_t d = 0;
    for (size_t i = 0; i < len; i++)
        d += p[i] == '/';
    return d;
}

static void group_add(gw_router_t *rt, host_group_t *g, gw_route_t *r)
{
    size_t len = strlen(r->path);
    switch (r->path_type) {
    case GW_PATH_EXACT:
        table_add(&rt->mem, &rt->exact, g, r->path, len, r);
        g->exact = true;
        break;
    case GW_PATH_PREFIX: {
        size_t n = prefix_norm_len(r->path, len);
        table_add(&rt->mem, &rt->prefix, g, r->path, n, r);
        g->prefix = true;
        size_t depth = path_depth(r->path, n);
        if (depth > g->max_prefix_depth)
            g->max_prefix_depth = depth;
        break;
    }
    case GW_PATH_REGEX:
        list_add(&rt->mem, &g->regex, r);
        break;
    }
}

void gw_router_free(gw_router_t *r)
{
    if (!r)
        return;
    sl_slab_t mem = r->mem; /* r lives in it */
    sl_slab_free(&mem);
}

gw_router_t *gw_router_build(gw_route_t **routes, size_t n, sl_error_t *err)
{
    sl_slab_t mem;
    sl_slab_init(&mem, 4096 + n * 160); /* its tables and lists at once */
    gw_router_t *r = sl_slab_calloc(&mem, 1, sizeof(*r));
    r->mem = mem;
    sl_hmap_init_borrowed(&r->hosts, &r->mem);
    sl_hmap_init_borrowed(&r->wildcards, &r->mem);
    size_t n_exact = 0, n_prefix = 0;
    for (size_t i = 0; i < n; i++) {
        n_exact += routes[i]->path_type == GW_PATH_EXACT;
        n_prefix += routes[i]->path_type == GW_PATH_PREFIX;
    }
    table_init(&r->mem, &r->exact, n_exact);
    table_init(&r->mem, &r->prefix, n_prefix);
    r->any = group_new(r);
    for (size_t i = 0; i < n; i++) {
        gw_route_t *rt = routes[i];
        if (!rt->host) {
            group_add(r, r->any, rt);
            r->have_any = true;
            continue;
        }
        size_t len = strlen(rt->host);
        if (len >= 256) {
            gw_router_free(r);
            sl_error_set(err, SL_ECONFIG, "%s.match.host: too long", rt->name);
            return NULL;
        }
        /* The key is the route's host unless it has capitals (then a lowercase copy). */
        const char *key = rt->host;
        for (size_t k = 0; k < len; k++)
            if (rt->host[k] != (char)tolower((unsigned char)rt->host[k])) {
                char *lower = sl_slab_strndup(&r->mem, rt->host, len);
                for (size_t j = 0; j < len; j++)
                    lower[j] = (char)tolower((unsigned char)lower[j]);
                key = lower;
                break;
            }
        if (len > 2 && key[0] == '*' && key[1] == '.')
            group_add(r, group_at(r, &r->wildcards, key + 1, len - 1), rt);
        else
            group_add(r, group_at(r, &r->hosts, key, len), rt);
    }
    return r;
}

/* ---- matching ---------------------------------------------------------------------------- */

static bool conditions_hold(const gw_route_t *rt, uint32_t mbit, const sl_headers_t *headers)
{
    if (rt->methods && !(rt->methods & mbit))
        return false;
    for (size_t i = 0; i < rt->n_headers; i++) {
        const sl_str_t *v = sl_headers_get(headers, rt->headers[i].name);
        if (!v || !sl_str_eq(*v, sl_str(rt->headers[i].value)))
            return false;
    }
    return true;
}

static gw_route_t *first_ok(const route_list_t *l, uint32_t mbit, const sl_headers_t *headers)
{
    if (!l)
        return NULL;
    for (size_t i = 0; i < l->n; i++)
        if (conditions_hold(l->items[i], mbit, headers))
            return l->items[i];
    return NULL;
}

static gw_route_t *match_group(const gw_router_t *rt, const host_group_t *g, sl_str_t path,
                               uint32_t mbit, const sl_headers_t *headers)
{
    gw_route_t *r =
        g->exact ? first_ok(table_get(&rt->exact, g, path.ptr, path.len), mbit, headers) : NULL;
    if (r)
        return r;
    if (g->prefix) {
        /* Longest first: the whole path, then cut at each '/' from the right. A prefix ends
         * at an element boundary: "/foo" matches "/foo" and "/foo/x", never "/foobar". */
        size_t len = prefix_norm_len(path.ptr, path.len);
        size_t depth = path_depth(path.ptr, len);
        while (len > 0) {
            if (depth <= g->max_prefix_depth) {
                r = first_ok(table_get(&rt->prefix, g, path.ptr, len), mbit, headers);
                if (r)
                    return r;
            }
            if (len == 1)
                break;
            while (len > 1 && path.ptr[len - 1] != '/')
                len--;
            if (len > 1)
                len--; /* drop the '/' itself: "/a/b" -> "/a" */
            depth--;
        }
    }
    for (size_t i = 0; i < g->regex.n; i++) {
        gw_route_t *re = g->regex.items[i];
        if (!conditions_hold(re, mbit, headers))
            continue;
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(re->regex, NULL);
        int rc = pcre2_match(re->regex, (PCRE2_SPTR)path.ptr, path.len, 0, 0, md, NULL);
        pcre2_match_data_free(md);
        if (rc >= 0)
            return re;
    }
    return NULL;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

static bool unreserved(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

/* The path routes are matched on: percent-encoded unreserved characters decoded, repeated
 * slashes merged, "." and ".." segments resolved (RFC 3986 §5.2.4), never above the root. So
 * "/%61dmin", "//admin" and "/x/../admin" all meet the route for "/admin". The request goes
 * upstream as the client sent it. Returns the length written to out (cap >= len + 1). */
size_t gw_path_normalize(const char *in, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '%' && i + 2 < len && hexval(in[i + 1]) >= 0 && hexval(in[i + 2]) >= 0) {
            unsigned char d = (unsigned char)(hexval(in[i + 1]) * 16 + hexval(in[i + 2]));
            if (unreserved(d)) {
                c = (char)d;
                i += 2;
            }
        }
        if (c == '/' && o > 0 && out[o - 1] == '/')
            continue; /* "//" -> "/" */
        out[o++] = c;
        /* At a segment end, resolve "." and "..". */
        bool end = i + 1 == len || in[i + 1] == '/';
        if (!end)
            continue;
        if (o >= 2 && out[o - 1] == '.' && out[o - 2] == '/') {
            o -= 1; /* "/." -> "/" */
        } else if (o >= 3 && out[o - 1] == '.' && out[o - 2] == '.' && out[o - 3] == '/') {
            o -= 3; /* drop "/..", then the segment before it */
            while (o > 0 && out[o - 1] != '/')
                o--;
            if (o == 0)
                out[o++] = '/';
        }
    }
    if (o == 0)
        out[o++] = '/';
    out[o] = '\0';
    return o;
}

gw_route_t *gw_router_match(const gw_router_t *r, sl_str_t host, sl_str_t path, sl_str_t method,
                            const sl_headers_t *headers)
{
    uint32_t mbit = gw_method_bit(method.ptr, method.len);
    if (!path.len)
        path = SL_STR("/");
    static __thread char norm[16384];
    if (path.len < sizeof(norm)) {
        size_t n = gw_path_normalize(path.ptr, path.len, norm);
        path = (sl_str_t){norm, n};
    }
    gw_route_t *rt;
    if ((r->hosts.n || r->wildcards.n) && host.len) {
        /* Host without port, lowercased ("[::1]:80" keeps its brackets). */
        char h[256];
        size_t n = host.len;
        const char *colon = memrchr(host.ptr, ':', n);
        if (colon && (host.ptr[0] != '[' || colon[-1] == ']'))
            n = (size_t)(colon - host.ptr);
        if (n >= sizeof(h))
            n = sizeof(h) - 1;
        for (size_t i = 0; i < n; i++)
            h[i] = (char)tolower((unsigned char)host.ptr[i]);
        while (n && h[n - 1] == '.')
            n--; /* "example.com." is "example.com" */
        host_group_t *g = sl_hmap_get(&r->hosts, h, n);
        if (g && (rt = match_group(r, g, path, mbit, headers)))
            return rt;
        const char *dot = memchr(h, '.', n);
        if (dot && r->wildcards.n) {
            g = sl_hmap_get(&r->wildcards, dot, n - (size_t)(dot - h));
            if (g && (rt = match_group(r, g, path, mbit, headers)))
                return rt;
        }
    }
    return r->have_any ? match_group(r, r->any, path, mbit, headers) : NULL;
}
