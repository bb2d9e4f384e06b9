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

typedef struct route_list {
    gw_route_t **items;
    size_t n, cap;
} route_list_t;

typedef struct host_group {
    sl_hmap_t exact;  /* path -> route_list_t* */
    sl_hmap_t prefix; /* normalized prefix -> route_list_t* */
    size_t max_prefix_depth;
    route_list_t regex;
} host_group_t;

struct gw_router {
    sl_hmap_t hosts;     /* lowercase host -> host_group_t* */
    sl_hmap_t wildcards; /* lowercase ".example.com" -> host_group_t* */
    host_group_t *any;
    bool have_any;
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

static void list_add(route_list_t *l, gw_route_t *r)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 2;
        l->items = sl_xrealloc(l->items, l->cap * sizeof(*l->items));
    }
    l->items[l->n++] = r;
}

static route_list_t *list_at(sl_hmap_t *m, const char *key, size_t len)
{
    void **slot = sl_hmap_put(m, key, len);
    if (!*slot)
        *slot = sl_xcalloc(1, sizeof(route_list_t));
    return *slot;
}

static void free_lists(sl_hmap_t *m)
{
    for (size_t i = 0; i < m->cap; i++) {
        route_list_t *l = m->slots[i].value;
        if (m->slots[i].key && l) {
            free(l->items);
            free(l);
        }
    }
    sl_hmap_free(m);
}

static void group_free(host_group_t *g)
{
    if (!g)
        return;
    free_lists(&g->exact);
    free_lists(&g->prefix);
    free(g->regex.items);
    free(g);
}

static host_group_t *group_at(sl_hmap_t *m, const char *key, size_t len)
{
    void **slot = sl_hmap_put(m, key, len);
    if (!*slot)
        *slot = sl_xcalloc(1, sizeof(host_group_t));
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

static void group_add(host_group_t *g, gw_route_t *r)
{
    size_t len = strlen(r->path);
    switch (r->path_type) {
    case GW_PATH_EXACT:
        list_add(list_at(&g->exact, r->path, len), r);
        break;
    case GW_PATH_PREFIX: {
        size_t n = prefix_norm_len(r->path, len);
        list_add(list_at(&g->prefix, r->path, n), r);
        size_t depth = path_depth(r->path, n);
        if (depth > g->max_prefix_depth)
            g->max_prefix_depth = depth;
        break;
    }
    case GW_PATH_REGEX:
        list_add(&g->regex, r);
        break;
    }
}

static void free_groups(sl_hmap_t *m)
{
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key)
            group_free(m->slots[i].value);
    sl_hmap_free(m);
}

void gw_router_free(gw_router_t *r)
{
    if (!r)
        return;
    free_groups(&r->hosts);
    free_groups(&r->wildcards);
    group_free(r->any);
    free(r);
}

gw_router_t *gw_router_build(gw_route_t **routes, size_t n, sl_error_t *err)
{
    gw_router_t *r = sl_xcalloc(1, sizeof(*r));
    r->any = sl_xcalloc(1, sizeof(host_group_t));
    char lower[256];
    for (size_t i = 0; i < n; i++) {
        gw_route_t *rt = routes[i];
        if (!rt->host) {
            group_add(r->any, rt);
            r->have_any = true;
            continue;
        }
        size_t len = strlen(rt->host);
        if (len >= sizeof(lower)) {
            gw_router_free(r);
            sl_error_set(err, SL_ECONFIG, "%s.match.host: too long", rt->name);
            return NULL;
        }
        for (size_t k = 0; k < len; k++)
            lower[k] = (char)tolower((unsigned char)rt->host[k]);
        if (len > 2 && lower[0] == '*' && lower[1] == '.')
            group_add(group_at(&r->wildcards, lower + 1, len - 1), rt);
        else
            group_add(group_at(&r->hosts, lower, len), rt);
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

static gw_route_t *match_group(const host_group_t *g, sl_str_t path, uint32_t mbit,
                               const sl_headers_t *headers)
{
    gw_route_t *r = first_ok(sl_hmap_get(&g->exact, path.ptr, path.len), mbit, headers);
    if (r)
        return r;
    if (g->prefix.n) {
        /* Longest first: the whole path, then cut at each '/' from the right. A prefix ends
         * at an element boundary: "/foo" matches "/foo" and "/foo/x", never "/foobar". */
        size_t len = prefix_norm_len(path.ptr, path.len);
        size_t depth = path_depth(path.ptr, len);
        while (len > 0) {
            if (depth <= g->max_prefix_depth) {
                r = first_ok(sl_hmap_get(&g->prefix, path.ptr, len), mbit, headers);
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
        gw_route_t *rt = g->regex.items[i];
        if (!conditions_hold(rt, mbit, headers))
            continue;
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(rt->regex, NULL);
        int rc = pcre2_match(rt->regex, (PCRE2_SPTR)path.ptr, path.len, 0, 0, md, NULL);
        pcre2_match_data_free(md);
        if (rc >= 0)
            return rt;
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
        if (g && (rt = match_group(g, path, mbit, headers)))
            return rt;
        const char *dot = memchr(h, '.', n);
        if (dot && r->wildcards.n) {
            g = sl_hmap_get(&r->wildcards, dot, n - (size_t)(dot - h));
            if (g && (rt = match_group(g, path, mbit, headers)))
                return rt;
        }
    }
    return r->have_any ? match_group(r->any, path, mbit, headers) : NULL;
}
