/* query: the parser (every error with its key path) and the rewrite of request targets. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/filters/filters.h"
#include "util/arena.h"
#include "util/cfg.h"

#define PATH "routes[0].filters[1].query"

static sl_arena_t *arena;

static void setup(void)
{
    arena = malloc(sizeof(*arena));
    sl__arena_init(arena);
}

static void teardown(void)
{
    sl__arena_release(arena);
    free(arena);
}

TestSuite(filter_query, .init = setup, .fini = teardown);

static gw_query_t *query_ok(const char *text)
{
    cJSON *conf = NULL;
    sl_error_t err = {0};
    cr_assert_eq(sl__cfg_parse(text, strlen(text), SL_CFG_YAML, 10000, &conf, &err), 0, "%s",
                 err.msg);
    void *state = NULL;
    int rc = gw_filter_query.parse(conf, PATH, &state, &err);
    cr_assert_eq(rc, 0, "parse failed: %s", err.msg);
    cJSON_Delete(conf);
    return state;
}

static void query_fails(const char *text, const char *msg)
{
    cJSON *conf = NULL;
    sl_error_t err = {0};
    cr_assert_eq(sl__cfg_parse(text, strlen(text), SL_CFG_YAML, 10000, &conf, &err), 0, "%s",
                 err.msg);
    void *state = NULL;
    cr_assert_eq(gw_filter_query.parse(conf, PATH, &state, &err), SL_ECONFIG, "no error for %s",
                 text);
    cr_assert_str_eq(err.msg, msg);
    cr_assert_null(state);
    cJSON_Delete(conf);
}

/* Rewrites uri with q and checks the result (NUL-terminated, as promised). */
static void rewrites(const gw_query_t *q, const char *uri, const char *want)
{
    sl_str_t out = gw_query_rewrite(q, arena, sl_str(uri));
    cr_assert_eq(out.len, strlen(want), "%s -> %.*s, want %s", uri, (int)out.len, out.ptr, want);
    cr_assert_eq(memcmp(out.ptr, want, out.len), 0, "%s -> %.*s, want %s", uri, (int)out.len,
                 out.ptr, want);
    if (out.ptr != uri)
        cr_assert_eq(out.ptr[out.len], '\0');
}

/* ---- rewriting --------------------------------------------------------------------------- */

Test(filter_query, lesson_10)
{
    gw_query_t *q = query_ok("{remove_prefix: [\"debug=\"], append: {ref: pingora}}");
    rewrites(q, "/search?q=rust&debug=true&sort=asc", "/search?q=rust&sort=asc&ref=pingora");
    rewrites(q, "/search", "/search?ref=pingora");
    rewrites(q, "/search?", "/search?ref=pingora");
    rewrites(q, "/search?debug=1", "/search?ref=pingora");
    rewrites(q, "/?debug=1&&debug=2&", "/?ref=pingora");
    rewrites(q, "/a?debugger=1", "/a?debugger=1&ref=pingora");
    rewrites(q, "/a?ref=other", "/a?ref=other&ref=pingora");
    gw_filter_query.free(q);
}

Test(filter_query, nothing_to_do_returns_the_uri_itself)
{
    gw_query_t *q = query_ok("{remove_prefix: [\"debug=\"], remove: [utm_source]}");
    const char *uris[] = {"/plain", "/p?a=1&b=2", "/p?debugx=1&utm_sourcex=2", "/p?a"};
    for (size_t i = 0; i < 4; i++) {
        sl_str_t in = sl_str(uris[i]);
        size_t used = arena->total;
        sl_str_t out = gw_query_rewrite(q, arena, in);
        cr_assert_eq(out.ptr, in.ptr, "%s was copied", uris[i]);
        cr_assert_eq(out.len, in.len);
        cr_assert_eq(arena->total, used, "no arena use for %s", uris[i]);
    }
    gw_filter_query.free(q);
    q = query_ok("{}");
    /* An empty filter still drops empty parameters when there is a query. */
    rewrites(q, "/p?x=1&&", "/p?x=1");
    rewrites(q, "/p?x=1", "/p?x=1");
    gw_filter_query.free(q);
}

Test(filter_query, removes_by_name_and_prefix_and_drops_empty_parameters)
{
    gw_query_t *q = query_ok("{remove_prefix: [\"debug=\", \"_\"], remove: [utm_source, fbclid]}");
    rewrites(q,
             "/p?utm_source=x&keep=1&utm_sourcex=2&fbclid&_t=3&&z=", "/p?keep=1&utm_sourcex=2&z=");
    rewrites(q, "/p?utm_source=a&fbclid=b", "/p");
    rewrites(q, "/p?", "/p");
    rewrites(q, "/p?&&", "/p");
    rewrites(q, "/p?a=1&", "/p?a=1");
    rewrites(q, "/p?&a=1", "/p?a=1");
    rewrites(q, "/p/debug=1?x=debug=1", "/p/debug=1?x=debug=1");
    gw_filter_query.free(q);
}

Test(filter_query, percent_encoding_does_not_hide_a_parameter)
{
    gw_query_t *q = query_ok("{remove_prefix: [\"debug=\"], remove: [utm_source]}");
    rewrites(q, "/p?d%65bug=1&a=1", "/p?a=1");
    rewrites(q, "/p?D%65bug=1", "/p?D%65bug=1"); /* names are case-sensitive */
    rewrites(q, "/p?utm%5Fsource=1&b=2", "/p?b=2");
    rewrites(q, "/p?utm%5fsource=1&b=2", "/p?b=2");
    rewrites(q, "/p?debug%3D1&b=2", "/p?b=2");                     /* decoded, it reads debug=1 */
    rewrites(q, "/p?%zz=1&debug%=2&x=%", "/p?%zz=1&debug%=2&x=%"); /* broken escapes: literal */
    gw_filter_query.free(q);
}

Test(filter_query, raw_prefixes_match_too)
{
    gw_query_t *q = query_ok("{remove_prefix: [\"q=%41\"]}");
    rewrites(q, "/p?q=%41b&q=Ab&r=1", "/p?q=Ab&r=1");
    gw_filter_query.free(q);
}

Test(filter_query, set_replaces_the_first_in_place_or_appends)
{
    gw_query_t *q = query_ok("{set: {k: v, page: \"2\"}, append: {ref: pingora}}");
    rewrites(q, "/p?a=1&k=old&b=2&k=again&k", "/p?a=1&k=v&b=2&page=2&ref=pingora");
    rewrites(q, "/p?page=1", "/p?page=2&k=v&ref=pingora");
    rewrites(q, "/p", "/p?k=v&page=2&ref=pingora");
    rewrites(q, "/p?k%3Dx=1", "/p?k%3Dx=1&k=v&page=2&ref=pingora");
    rewrites(q, "/p?%6B=1", "/p?k=v&page=2&ref=pingora");
    gw_filter_query.free(q);
}

Test(filter_query, added_parameters_are_percent_encoded)
{
    gw_query_t *q = query_ok("{set: {\"a b\": \"x&y=z/caf\xc3\xa9\"}, "
                             "append: {\"flag\": \"\", \"t~._-\": \"1+1 #\"}}");
    cr_assert_str_eq(q->set[0].enc.s, "a%20b=x%26y%3Dz%2Fcaf%C3%A9");
    cr_assert_str_eq(q->set[0].name.s, "a b");
    rewrites(q, "/p?a%20b=old", "/p?a%20b=x%26y%3Dz%2Fcaf%C3%A9&flag=&t~._-=1%2B1%20%23");
    gw_filter_query.free(q);
}

Test(filter_query, path_is_untouched)
{
    gw_query_t *q = query_ok("{append: {a: b}}");
    rewrites(q, "/a%20b/c;d", "/a%20b/c;d?a=b");
    rewrites(q, "*", "*?a=b");
    gw_filter_query.free(q);
}

Test(filter_query, hook_uses_only_the_uri)
{
    /* The hook needs a session for its arena; the rewrite itself is tested above. Here: the
     * filter's shape. */
    cr_assert_not_null(gw_filter_query.upstream_request);
    cr_assert_null(gw_filter_query.request);
    cr_assert_null(gw_filter_query.response);
}

/* ---- parsing ----------------------------------------------------------------------------- */

Test(filter_query, parses)
{
    gw_query_t *q = query_ok("{remove_prefix: [\"debug=\"], remove: [utm_source, fbclid], "
                             "set: {k: v}, append: {ref: pingora}}");
    cr_assert_eq(q->n_remove_prefix, 1);
    cr_assert_eq(q->remove_prefix[0].len, 6);
    cr_assert_eq(q->n_remove, 2);
    cr_assert_str_eq(q->remove[1].s, "fbclid");
    cr_assert_eq(q->n_set, 1);
    cr_assert_str_eq(q->set[0].enc.s, "k=v");
    cr_assert_eq(q->n_append, 1);
    cr_assert_str_eq(q->append[0].enc.s, "ref=pingora");
    cr_assert_eq(q->added_len, 4 + 12);
    gw_filter_query.free(q);
}

Test(filter_query, errors_name_the_key_path)
{
    query_fails("[debug]", PATH ": expected a mapping, got list");
    query_fails("{remove_prefixes: []}",
                PATH ".remove_prefixes: unknown key (did you mean \"remove_prefix\"?)");
    query_fails("{remove_prefix: \"debug=\"}",
                PATH ".remove_prefix: expected a list, got string \"debug=\"");
    query_fails("{remove_prefix: [a, b, \"\"]}", PATH ".remove_prefix[2]: must not be empty");
    query_fails("{remove_prefix: [1]}", PATH ".remove_prefix[0]: expected a string, got integer 1");
    query_fails("{remove: [a, [b]]}", PATH ".remove[1]: expected a string, got list");
    query_fails("{remove: [\"a\\nb\"]}",
                PATH ".remove[0]: control character 0x0a at byte 1 is not allowed");
    query_fails("{set: [k]}", PATH ".set: expected a mapping, got list");
    query_fails("{set: {page: 2}}", PATH ".set.page: expected a string, got integer 2");
    query_fails("{append: {ref: null}}", PATH ".append.ref: expected a string, got null");
    query_fails("{append: {ref: \"a\\rb\"}}",
                PATH ".append.ref: control character 0x0d at byte 1 is not allowed");
    query_fails("{append: {\"\": x}}", PATH ".append: empty parameter name");
    query_fails("{set: {\"a\\tb\": x}}",
                PATH ".set: parameter name \"a\\x09b\" contains a control character");
    cJSON *conf = cJSON_Parse("{\"set\": {\"k\": \"1\", \"k\": \"2\"}}");
    void *state = NULL;
    sl_error_t err = {0};
    cr_assert_eq(gw_filter_query.parse(conf, PATH, &state, &err), SL_ECONFIG);
    cr_assert_str_eq(err.msg, PATH ".set.k: given twice");
    cJSON_Delete(conf);
}

Test(filter_query, sizes_are_bounded)
{
    char *text = malloc(65536);
    int o = snprintf(text, 65536, "{remove: [");
    for (int i = 0; i <= GW_QUERY_OPS_MAX; i++)
        o += snprintf(text + o, 65536 - (size_t)o, "%sp%d", i ? ", " : "", i);
    snprintf(text + o, 65536 - (size_t)o, "]}");
    query_fails(text, PATH ".remove: too many entries (65, at most 64)");

    char name[GW_QUERY_NAME_MAX + 2];
    memset(name, 'n', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    snprintf(text, 65536, "{remove_prefix: [%s]}", name);
    query_fails(text, PATH ".remove_prefix[0]: too long (257 bytes, at most 256)");
    snprintf(text, 65536, "{set: {%s: x}}", name);
    char want[512];
    snprintf(want, sizeof(want),
             PATH ".set: parameter name \"%.89s...\" is too long (at most 256 bytes)", name);
    query_fails(text, want);

    char value[GW_QUERY_VALUE_MAX + 2];
    memset(value, 'v', sizeof(value) - 1);
    value[sizeof(value) - 1] = '\0';
    snprintf(text, 65536, "{append: {a: %s}}", value);
    query_fails(text, PATH ".append.a: too long (2049 bytes, at most 2048)");

    /* 2048 bytes of '/' encode to 6144: two such parameters exceed the 8192 budget. */
    memset(value, '/', GW_QUERY_VALUE_MAX);
    value[GW_QUERY_VALUE_MAX] = '\0';
    snprintf(text, 65536, "{set: {a: \"%s\"}, append: {b: \"%s\"}}", value, value);
    query_fails(text, PATH ".append.b: set and append add more than 8192 bytes to the query once "
                           "encoded");
    free(text);
}
