/* request_headers: the header-edit parser (every error with its key path) and the edits. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/filters/filters.h"
#include "util/arena.h"
#include "util/cfg.h"

#define PATH "routes[0].filters[1].request_headers"

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

TestSuite(filter_request_headers, .init = setup, .fini = teardown);

static cJSON *tree(const char *text)
{
    cJSON *root = NULL;
    sl_error_t err = {0};
    cr_assert_eq(sl__cfg_parse(text, strlen(text), SL_CFG_YAML, 10000, &root, &err), 0,
                 "bad test config: %s", err.msg);
    return root;
}

static gw_hdr_edit_t *edit_ok(const char *text)
{
    cJSON *conf = tree(text);
    void *state = NULL;
    sl_error_t err = {0};
    int rc = gw_filter_request_headers.parse(conf, PATH, &state, &err);
    cr_assert_eq(rc, 0, "parse failed: %s", err.msg);
    cJSON_Delete(conf);
    return state;
}

static void edit_fails(const char *text, const char *msg)
{
    cJSON *conf = tree(text);
    void *state = (void *)1;
    sl_error_t err = {0};
    int rc = gw_filter_request_headers.parse(conf, PATH, &state, &err);
    cr_assert_eq(rc, SL_ECONFIG, "expected an error for %s", text);
    cr_assert_str_eq(err.msg, msg);
    cr_assert_eq(state, (void *)1, "state untouched on error");
    cJSON_Delete(conf);
}

/* A request with headers "Name: value" each, in the arena. */
static sl_request_header_t request(const char *const *lines)
{
    sl_request_header_t r = {.method = SL_STR("GET"), .uri = SL_STR("/"), .version = 11};
    r.headers.arena = arena;
    for (; *lines; lines++) {
        const char *colon = strchr(*lines, ':');
        sl_headers_add_n(&r.headers, *lines, (size_t)(colon - *lines), colon + 2,
                         strlen(colon + 2));
    }
    return r;
}

/* "Name: value\n" for each header, in order. */
static const char *dump(const sl_headers_t *h)
{
    static char buf[2048];
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < h->n; i++)
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%.*s: %.*s\n", (int)h->items[i].name.len,
                              h->items[i].name.ptr, (int)h->items[i].value.len,
                              h->items[i].value.ptr);
    return buf;
}

/* ---- parsing ----------------------------------------------------------------------------- */

Test(filter_request_headers, parses_the_spec_example)
{
    gw_hdr_edit_t *e = edit_ok("{set: {X-Pingora-Proxy: \"true\"}, add: {X-A: \"1\"}, "
                               "remove: [User-Agent], copy: {Host: X-Orig-Host}}");
    cr_assert_eq(e->n_set, 1);
    cr_assert_str_eq(e->set[0].name.name, "X-Pingora-Proxy");
    cr_assert_str_eq(e->set[0].name.lower, "x-pingora-proxy");
    cr_assert_eq(e->set[0].name.len, 15);
    cr_assert_str_eq(e->set[0].value, "true");
    cr_assert_eq(e->set[0].value_len, 4);
    cr_assert_eq(e->n_add, 1);
    cr_assert_eq(e->n_remove, 1);
    cr_assert_str_eq(e->remove[0].lower, "user-agent");
    cr_assert_eq(e->n_copy, 1);
    cr_assert_str_eq(e->copy[0].from.lower, "host");
    cr_assert_str_eq(e->copy[0].to.name, "X-Orig-Host");
    cr_assert_not(gw_hdr_edit_is_empty(e));
    gw_filter_request_headers.free(e);
}

Test(filter_request_headers, empty_config_is_a_no_op)
{
    gw_hdr_edit_t *e = edit_ok("{}");
    cr_assert(gw_hdr_edit_is_empty(e));
    gw_filter_request_headers.free(e);
    e = edit_ok("{set: {}, add: null, remove: [], copy: {}}");
    cr_assert(gw_hdr_edit_is_empty(e));
    gw_filter_request_headers.free(e);
}

Test(filter_request_headers, accepts_odd_but_valid_values)
{
    gw_hdr_edit_t *e = edit_ok("{set: {X-Empty: \"\", X-Tab: \"a\\tb\", X-Utf8: \"caf\xc3\xa9\"},"
                               " remove: [Content-Length], copy: {Content-Length: X-Len}}");
    cr_assert_eq(e->set[0].value_len, 0);
    cr_assert_str_eq(e->set[1].value, "a\tb");
    gw_filter_request_headers.free(e);
}

Test(filter_request_headers, errors_name_the_key_path)
{
    edit_fails("[a]", PATH ": expected a mapping, got list");
    edit_fails("{sett: {}}", PATH ".sett: unknown key (did you mean \"set\"?)");
    edit_fails("{set: [a]}", PATH ".set: expected a mapping, got list");
    edit_fails("{add: x}", PATH ".add: expected a mapping, got string \"x\"");
    edit_fails("{set: {X: 3}}", PATH ".set.X: expected a string, got integer 3");
    edit_fails("{set: {X: true}}", PATH ".set.X: expected a string, got boolean true");
    edit_fails("{add: {X: {a: b}}}", PATH ".add.X: expected a string, got mapping");
    edit_fails("{remove: User-Agent}", PATH ".remove: expected a list, got string \"User-Agent\"");
    edit_fails("{remove: [Via, 3]}", PATH ".remove[1]: expected a header name, got integer 3");
    edit_fails("{remove: [\"\"]}", PATH ".remove[0]: empty header name");
    edit_fails("{copy: {Date: 1}}", PATH ".copy.Date: expected a header name, got integer 1");
    edit_fails("{copy: [Date]}", PATH ".copy: expected a mapping, got list");
}

Test(filter_request_headers, names_must_be_tokens)
{
    edit_fails("{set: {\"X Y\": a}}",
               PATH ".set: invalid header name \"X Y\" (RFC 9110 token characters only)");
    edit_fails("{add: {\"X:Y\": a}}",
               PATH ".add: invalid header name \"X:Y\" (RFC 9110 token characters only)");
    edit_fails("{remove: [\"Bad\\nName\"]}",
               PATH ".remove[0]: invalid header name \"Bad\\x0aName\" (RFC 9110 token characters "
                    "only)");
    edit_fails("{copy: {\"a@b\": X}}",
               PATH ".copy: invalid header name \"a@b\" (RFC 9110 token characters only)");
    edit_fails("{copy: {Date: \"X-Legacy Date\"}}",
               PATH ".copy.Date: invalid header name \"X-Legacy Date\" (RFC 9110 token "
                    "characters only)");
    edit_fails("{set: {\"\": a}}", PATH ".set: empty header name");
    edit_fails("{set: {\":path\": /x}}",
               PATH ".set: invalid header name \":path\" (RFC 9110 token characters only)");
}

Test(filter_request_headers, error_messages_never_carry_raw_control_characters)
{
    cJSON *conf = cJSON_Parse("{\"set\": {\"X\\r\\nInjected: 1\": \"a\"}}");
    void *state = NULL;
    sl_error_t err = {0};
    cr_assert_eq(gw_filter_request_headers.parse(conf, PATH, &state, &err), SL_ECONFIG);
    cr_assert_str_eq(err.msg, PATH ".set: invalid header name \"X\\x0d\\x0aInjected: 1\" "
                                   "(RFC 9110 token characters only)");
    cJSON_Delete(conf);
}

Test(filter_request_headers, values_cannot_inject_text)
{
    edit_fails("{set: {X: \"a\\r\\nEvil: 1\"}}",
               PATH ".set.X: control character 0x0d at byte 1 is not allowed");
    edit_fails("{add: {X: \"a\\nb\"}}", PATH ".add.X: control character 0x0a at byte 1 is not "
                                             "allowed");
    edit_fails("{add: {X: \"a\\x7fb\"}}", PATH ".add.X: control character 0x7f at byte 1 is not "
                                               "allowed");
    edit_fails("{set: {X: \" a\"}}", PATH ".set.X: header value must not start or end with "
                                          "whitespace");
    edit_fails("{set: {X: \"a\\t\"}}", PATH ".set.X: header value must not start or end with "
                                            "whitespace");
    /* NUL cannot reach a value: YAML and raw JSON text refuse it, and so does a JSON
     * "\u0000" escape (cJSON would end the C string there and drop the rest silently). */
    const char *json = "{\"set\": {\"X\": \"a\\u0000\\r\\nEvil: 1\"}}";
    cJSON *root = NULL;
    sl_error_t err = {0};
    cr_assert_eq(sl__cfg_parse(json, strlen(json), SL_CFG_JSON, 100, &root, &err), SL_ECONFIG);
    cr_assert_null(root);
    cr_assert(strstr(err.msg, "NUL characters"), "%s", err.msg);
}

Test(filter_request_headers, framing_headers_cannot_be_set)
{
    edit_fails("{set: {Content-Length: \"5\"}}",
               PATH ".set: \"Content-Length\" cannot be set: the proxy owns message framing");
    edit_fails("{add: {transfer-encoding: chunked}}",
               PATH ".add: \"transfer-encoding\" cannot be set: the proxy owns message framing");
    edit_fails("{copy: {X-Len: Content-Length}}",
               PATH ".copy.X-Len: \"Content-Length\" cannot be set: the proxy owns message "
                    "framing");
}

Test(filter_request_headers, conflicts)
{
    cJSON *conf = cJSON_Parse("{\"set\": {\"X-A\": \"1\", \"x-a\": \"2\"}}");
    void *state = NULL;
    sl_error_t err = {0};
    cr_assert_eq(gw_filter_request_headers.parse(conf, PATH, &state, &err), SL_ECONFIG);
    cr_assert_str_eq(err.msg, PATH ".set.x-a: set twice (header names are case-insensitive)");
    cJSON_Delete(conf);
    edit_fails("{copy: {Date: date}}", PATH ".copy.Date: copies the header onto itself");
    edit_fails("{copy: {A: X, B: x}}", PATH ".copy.B: X is already the target of a copy");
    gw_hdr_edit_t *e = edit_ok("{add: {X-A: \"1\", x-a: \"2\"}, remove: [Via, via]}");
    cr_assert_eq(e->n_add, 2, "adding a name twice is fine");
    gw_filter_request_headers.free(e);
}

Test(filter_request_headers, sizes_are_bounded)
{
    char big[16384];
    int o = snprintf(big, sizeof(big), "{remove: [");
    for (int i = 0; i <= GW_HDR_OPS_MAX; i++)
        o += snprintf(big + o, sizeof(big) - (size_t)o, "%sX-%d", i ? ", " : "", i);
    snprintf(big + o, sizeof(big) - (size_t)o, "]}");
    edit_fails(big, PATH ".remove: too many entries (101, at most 100)");

    char name[GW_HDR_NAME_MAX + 2];
    memset(name, 'n', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    snprintf(big, sizeof(big), "{remove: [%s]}", name);
    char want[1024];
    snprintf(want, sizeof(want),
             PATH ".remove[0]: header name \"%.89s...\" is too long (at most 256 bytes)", name);
    edit_fails(big, want);

    char *value = malloc(GW_HDR_VALUE_MAX + 64);
    memset(value, 'v', GW_HDR_VALUE_MAX + 1);
    value[GW_HDR_VALUE_MAX + 1] = '\0';
    char *text = malloc(GW_HDR_VALUE_MAX + 64);
    snprintf(text, GW_HDR_VALUE_MAX + 64, "{set: {X: %s}}", value);
    edit_fails(text, PATH ".set.X: too long (8193 bytes, at most 8192)");
    value[GW_HDR_VALUE_MAX] = '\0';
    snprintf(text, GW_HDR_VALUE_MAX + 64, "{set: {X: %s}}", value);
    gw_filter_request_headers.free(edit_ok(text));
    free(value);
    free(text);
}

/* ---- applying ---------------------------------------------------------------------------- */

Test(filter_request_headers, remove_set_add_copy_in_that_order)
{
    gw_hdr_edit_t *e = edit_ok("{set: {X-Pingora-Proxy: \"true\", x-a: \"1\"}, "
                               "add: {X-B: \"2\", x-b: \"3\"}, remove: [user-agent, X-Gone], "
                               "copy: {Host: X-Orig-Host, X-A: X-Copy}}");
    sl_request_header_t r =
        request((const char *const[]){"Host: example.com", "User-Agent: curl", "X-A: 0",
                                      "Accept: */*", "X-a: 00", "USER-AGENT: again", NULL});
    gw_filter_request_headers.upstream_request(e, NULL, NULL, &r);
    cr_assert_str_eq(dump(&r.headers), "Host: example.com\n"
                                       "X-A: 1\n"
                                       "Accept: */*\n"
                                       "X-Pingora-Proxy: true\n"
                                       "X-B: 2\n"
                                       "x-b: 3\n"
                                       "X-Orig-Host: example.com\n"
                                       "X-Copy: 1\n");
    gw_filter_request_headers.free(e);
}

Test(filter_request_headers, set_replaces_every_value_and_keeps_the_first_place)
{
    gw_hdr_edit_t *e = edit_ok("{set: {Accept: text/html}}");
    sl_request_header_t r = request(
        (const char *const[]){"accept: a", "Host: h", "ACCEPT: b", "Accept: c", "X: y", NULL});
    gw_hdr_edit_apply(e, &r.headers);
    cr_assert_str_eq(dump(&r.headers), "accept: text/html\nHost: h\nX: y\n");
    gw_hdr_edit_free(e);
}

Test(filter_request_headers, copy_does_nothing_without_a_source_and_replaces_the_target)
{
    gw_hdr_edit_t *e = edit_ok("{copy: {X-From: X-To}}");
    sl_request_header_t r = request((const char *const[]){"X-To: old", "x-to: older", NULL});
    gw_hdr_edit_apply(e, &r.headers);
    cr_assert_str_eq(dump(&r.headers), "X-To: old\nx-to: older\n");
    sl_headers_add(&r.headers, "x-from", "first");
    sl_headers_add(&r.headers, "X-From", "second");
    gw_hdr_edit_apply(e, &r.headers);
    cr_assert_str_eq(dump(&r.headers), "X-To: first\nx-from: first\nX-From: second\n");
    gw_hdr_edit_free(e);
}

Test(filter_request_headers, copy_sees_what_set_and_remove_did)
{
    gw_hdr_edit_t *e = edit_ok("{remove: [X-Src], set: {X-Other: v}, "
                               "copy: {X-Src: X-Dst, X-Other: X-Dst2}}");
    sl_request_header_t r = request((const char *const[]){"X-Src: s", "X-Other: o", NULL});
    gw_hdr_edit_apply(e, &r.headers);
    cr_assert_str_eq(dump(&r.headers), "X-Other: v\nX-Dst2: v\n");
    gw_hdr_edit_free(e);
}

Test(filter_request_headers, empty_headers_grow_in_the_arena)
{
    char text[4096];
    int o = snprintf(text, sizeof(text), "{add: {");
    for (int i = 0; i < 40; i++)
        o += snprintf(text + o, sizeof(text) - (size_t)o, "%sX-%d: v%d", i ? ", " : "", i, i);
    snprintf(text + o, sizeof(text) - (size_t)o, "}}");
    gw_hdr_edit_t *e = edit_ok(text);
    sl_headers_t h = {.arena = arena};
    gw_hdr_edit_apply(e, &h);
    cr_assert_eq(h.n, 40);
    cr_assert_geq(h.cap, 40);
    for (int i = 0; i < 40; i++) {
        char name[16], value[16];
        snprintf(name, sizeof(name), "x-%d", i);
        snprintf(value, sizeof(value), "v%d", i);
        const sl_str_t *v = sl_headers_get(&h, name);
        cr_assert_not_null(v);
        cr_assert(sl_str_eq(*v, sl_str(value)));
    }
    gw_hdr_edit_free(e);
}

Test(filter_request_headers, values_are_not_copied_per_request)
{
    gw_hdr_edit_t *e = edit_ok("{set: {X-A: one}, add: {X-B: two}}");
    sl_request_header_t r = request((const char *const[]){"X-A: zero", NULL});
    size_t used = arena->total;
    gw_hdr_edit_apply(e, &r.headers);
    cr_assert_eq(arena->total, used, "the array had room: nothing allocated");
    cr_assert_eq(sl_headers_get(&r.headers, "x-a")->ptr, e->set[0].value);
    cr_assert_eq(sl_headers_get(&r.headers, "x-b")->ptr, e->add[0].value);
    cr_assert_eq(r.headers.items[1].name.ptr, e->add[0].name.name, "configured case is sent");
    gw_hdr_edit_free(e);
}

Test(filter_request_headers, remove_handles_every_duplicate_and_leaves_the_rest)
{
    gw_hdr_edit_t *e = edit_ok("{remove: [Cookie, X-Debug]}");
    sl_request_header_t r = request((const char *const[]){"cookie: a", "Host: h", "COOKIE: b",
                                                          "X-Debug: 1", "X-Debugger: keep", NULL});
    gw_hdr_edit_apply(e, &r.headers);
    cr_assert_str_eq(dump(&r.headers), "Host: h\nX-Debugger: keep\n");
    gw_hdr_edit_free(e);
}
