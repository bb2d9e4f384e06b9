/* The router: host and path precedence, conditions, and lookup independent of route count. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/gateway.h"
#include "util/arena.h"
#include "util/cfg.h"

static gw_config_t *load(const char *yaml)
{
    cJSON *root = NULL;
    sl_error_t err = {0};
    cr_assert_eq(sl__cfg_parse(yaml, strlen(yaml), SL_CFG_YAML, 1u << 22, &root, &err), 0, "%s",
                 err.msg);
    gw_config_t *c = NULL;
    int rc = gw_config_parse(root, &c, &err); /* takes root */
    cr_assert_eq(rc, 0, "%s", err.msg);
    return c;
}

static const char *route_for(gw_config_t *c, const char *host, const char *path, const char *method)
{
    static sl_arena_t arena;
    sl__arena_init(&arena);
    sl_headers_t h = {.arena = &arena};
    sl_headers_add(&h, "x-canary", "1");
    gw_route_t *r = gw_router_match(c->router, host ? sl_str(host) : (sl_str_t){NULL, 0},
                                    sl_str(path), sl_str(method ? method : "GET"), &h);
    const char *name = r ? r->name : "(none)";
    sl__arena_reset(&arena);
    return name;
}

Test(router, precedence)
{
    gw_config_t *c =
        load("routes:\n"
             "  - {name: re, match: {path: '^/a/', path_type: regex}, respond: {}}\n"
             "  - {name: a, match: {path: /a}, respond: {}}\n"
             "  - {name: ab, match: {path: /a/b}, respond: {}}\n"
             "  - {name: ab-exact, match: {path: /a/b, path_type: exact}, respond: {}}\n"
             "  - {name: x-host, match: {host: x.test, path: /}, respond: {}}\n"
             "  - {name: wild, match: {host: '*.test', path: /}, respond: {}}\n"
             "  - {name: post, match: {path: /p, methods: [POST]}, respond: {}}\n"
             "  - {name: hdr, match: {path: /h, headers: {x-canary: '2'}}, respond: {}}\n"
             "  - {name: hdr1, match: {path: /h, headers: {x-canary: '1'}}, respond: {}}\n");
    cr_assert_str_eq(route_for(c, NULL, "/a/b", NULL), "ab-exact");
    cr_assert_str_eq(route_for(c, NULL, "/a/b/", NULL), "ab");
    cr_assert_str_eq(route_for(c, NULL, "/a/b/c", NULL), "ab");
    cr_assert_str_eq(route_for(c, NULL, "/a/bc", NULL), "a");
    cr_assert_str_eq(route_for(c, NULL, "/a", NULL), "a");
    cr_assert_str_eq(route_for(c, NULL, "/ab", NULL), "(none)");
    cr_assert_str_eq(route_for(c, "X.TEST:8080", "/zz", NULL), "x-host");
    cr_assert_str_eq(route_for(c, "y.test", "/zz", NULL), "wild");
    cr_assert_str_eq(route_for(c, "y.x.test", "/zz", NULL), "(none)"); /* one label only */
    cr_assert_str_eq(route_for(c, "test", "/zz", NULL), "(none)");
    cr_assert_str_eq(route_for(c, NULL, "/p", "POST"), "post");
    cr_assert_str_eq(route_for(c, NULL, "/p", "GET"), "(none)");
    cr_assert_str_eq(route_for(c, NULL, "/h", NULL), "hdr1");
    /* falls through from the host's routes to host-less ones */
    cr_assert_str_eq(route_for(c, "x.test", "/a/b", NULL), "x-host");
    gw_config_release(c);
}

Test(router, ten_thousand_routes)
{
    size_t cap = 10000 * 96 + 64;
    char *y = malloc(cap);
    size_t n = (size_t)snprintf(y, cap, "routes:\n");
    for (int i = 0; i < 10000; i++)
        n += (size_t)snprintf(y + n, cap - n,
                              "  - {name: r%d, match: {host: h%d.test, path: /p%d}, respond: {}}\n",
                              i, i % 100, i);
    gw_config_t *c = load(y);
    free(y);
    cr_assert_eq(c->n_routes, 10000);
    cr_assert_str_eq(route_for(c, "h42.test", "/p9942/x", NULL), "r9942");
    cr_assert_str_eq(route_for(c, "h43.test", "/p9942/x", NULL), "(none)");
    gw_config_release(c);
}

static const char *norm(const char *p)
{
    static char out[256];
    gw_path_normalize(p, strlen(p), out);
    return out;
}

Test(router, path_normalization)
{
    cr_assert_str_eq(norm("/%61dmin"), "/admin");
    cr_assert_str_eq(norm("/x/../admin"), "/admin");
    cr_assert_str_eq(norm("//admin///x"), "/admin/x");
    cr_assert_str_eq(norm("/./a/./b/."), "/a/b/");
    cr_assert_str_eq(norm("/../../a"), "/a");
    cr_assert_str_eq(norm("/a/b/.."), "/a/");
    cr_assert_str_eq(norm("/a%2Fb"), "/a%2Fb"); /* an encoded slash stays: it is data */
    cr_assert_str_eq(norm("/%7Euser/%zz"), "/~user/%zz");
    cr_assert_str_eq(norm("/.hidden/..x"), "/.hidden/..x");
    cr_assert_str_eq(norm(""), "/");
}
