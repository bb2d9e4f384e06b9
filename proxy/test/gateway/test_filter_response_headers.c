/* response_headers: the same edits as request_headers, in the response hook (lesson 11). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/filters/filters.h"
#include "util/arena.h"
#include "util/cfg.h"

#define PATH "routes[2].filters[0].response_headers"

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

TestSuite(filter_response_headers, .init = setup, .fini = teardown);

static void *parse_text(const char *text, sl_error_t *err, int *rc)
{
    cJSON *conf = NULL;
    cr_assert_eq(sl__cfg_parse(text, strlen(text), SL_CFG_YAML, 10000, &conf, err), 0);
    void *state = NULL;
    *rc = gw_filter_response_headers.parse(conf, PATH, &state, err);
    cJSON_Delete(conf);
    return state;
}

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

Test(filter_response_headers, lesson_11)
{
    sl_error_t err = {0};
    int rc;
    void *st = parse_text("{set: {X-Content-Type-Options: nosniff}, remove: [X-App-Version], "
                          "copy: {Date: X-Legacy-Date}}",
                          &err, &rc);
    cr_assert_eq(rc, 0, "%s", err.msg);
    sl_response_header_t resp = {.status = 200, .version = 11, .headers = {.arena = arena}};
    sl_headers_add(&resp.headers, "X-App-Name", "http-echo");
    sl_headers_add(&resp.headers, "X-App-Version", "0.2.3");
    sl_headers_add(&resp.headers, "Date", "Sat, 28 Nov 2026 20:00:00 GMT");
    sl_headers_add(&resp.headers, "Content-Length", "19");
    cr_assert_eq(gw_filter_response_headers.response(st, NULL, NULL, &resp), SL_CONTINUE);
    cr_assert_str_eq(dump(&resp.headers), "X-App-Name: http-echo\n"
                                          "Date: Sat, 28 Nov 2026 20:00:00 GMT\n"
                                          "Content-Length: 19\n"
                                          "X-Content-Type-Options: nosniff\n"
                                          "X-Legacy-Date: Sat, 28 Nov 2026 20:00:00 GMT\n");
    gw_filter_response_headers.free(st);
}

Test(filter_response_headers, no_date_no_copy)
{
    sl_error_t err = {0};
    int rc;
    void *st = parse_text("{copy: {Date: X-Legacy-Date}, add: {Set-Cookie: \"a=1\"}}", &err, &rc);
    cr_assert_eq(rc, 0, "%s", err.msg);
    sl_response_header_t resp = {.status = 404, .headers = {.arena = arena}};
    sl_headers_add(&resp.headers, "Set-Cookie", "b=2");
    gw_filter_response_headers.response(st, NULL, NULL, &resp);
    cr_assert_str_eq(dump(&resp.headers), "Set-Cookie: b=2\nSet-Cookie: a=1\n");
    gw_filter_response_headers.free(st);
}

Test(filter_response_headers, errors_carry_this_filters_path)
{
    sl_error_t err = {0};
    int rc;
    cr_assert_null(parse_text("{set: {X-Content-Type-Options: 3}}", &err, &rc));
    cr_assert_eq(rc, SL_ECONFIG);
    cr_assert_str_eq(err.msg, PATH ".set.X-Content-Type-Options: expected a string, got integer 3");
    cr_assert_null(parse_text("{rename: {A: B}}", &err, &rc));
    cr_assert_str_eq(err.msg, PATH ".rename: unknown key");
    cr_assert_null(parse_text("{set: {Transfer-Encoding: gzip}}", &err, &rc));
    cr_assert_str_eq(err.msg, PATH ".set: \"Transfer-Encoding\" cannot be set: the proxy owns "
                                   "message framing");
    cr_assert_null(parse_text("nosniff", &err, &rc));
    cr_assert_str_eq(err.msg, PATH ": expected a mapping, got string \"nosniff\"");
}

Test(filter_response_headers, removing_content_length_is_allowed)
{
    /* The engine re-frames a response without Content-Length (chunked or close). */
    sl_error_t err = {0};
    int rc;
    void *st = parse_text("{remove: [Content-Length]}", &err, &rc);
    cr_assert_eq(rc, 0, "%s", err.msg);
    sl_response_header_t resp = {.status = 200, .headers = {.arena = arena}};
    sl_headers_add(&resp.headers, "content-length", "3");
    gw_filter_response_headers.response(st, NULL, NULL, &resp);
    cr_assert_eq(resp.headers.n, 0);
    gw_filter_response_headers.free(st);
}
