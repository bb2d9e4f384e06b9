/* The registry of built-in filter kinds and the helpers the kinds share. */
#include <criterion/criterion.h>
#include <string.h>

#include "gateway/filters/filters.h"

Test(filter_registry, finds_every_kind)
{
    cr_assert_eq(gw_filter_kind_find("request_headers"), &gw_filter_request_headers);
    cr_assert_eq(gw_filter_kind_find("response_headers"), &gw_filter_response_headers);
    cr_assert_eq(gw_filter_kind_find("query"), &gw_filter_query);
    cr_assert_eq(gw_filter_kind_find("body_inspect"), &gw_filter_body_inspect);
    cr_assert_null(gw_filter_kind_find("Query"), "kinds are case-sensitive, like every key");
    cr_assert_null(gw_filter_kind_find("rate_limit"));
    cr_assert_null(gw_filter_kind_find(""));
    cr_assert_null(gw_filter_kind_find(NULL));
}

Test(filter_registry, names_list_matches_the_table)
{
    const char *names = gw_filter_kind_names();
    cr_assert_str_eq(names, "request_headers, response_headers, query, body_inspect");
    size_t n = 0;
    for (const char *p = names; *p; n++) {
        const char *sep = strstr(p, ", ");
        size_t len = sep ? (size_t)(sep - p) : strlen(p);
        char tok[32];
        cr_assert_lt(len, sizeof(tok));
        memcpy(tok, p, len);
        tok[len] = '\0';
        const gw_filter_kind_t *k = gw_filter_kind_find(tok);
        cr_assert_not_null(k, "listed kind %s is not in the table", tok);
        cr_assert_str_eq(k->name, tok);
        p += len + (sep ? 2 : 0);
    }
    cr_assert_eq(n, 4);
}

Test(filter_registry, every_kind_parses_and_frees)
{
    static const char *const kinds[] = {"request_headers", "response_headers", "query",
                                        "body_inspect"};
    for (size_t i = 0; i < 4; i++) {
        const gw_filter_kind_t *k = gw_filter_kind_find(kinds[i]);
        cr_assert_not_null(k->parse);
        cr_assert_not_null(k->free);
    }
}

Test(filter_registry, hooks_are_in_the_brief_phases)
{
    cr_assert_not_null(gw_filter_request_headers.upstream_request);
    cr_assert_null(gw_filter_request_headers.response);
    cr_assert_not_null(gw_filter_response_headers.response);
    cr_assert_null(gw_filter_response_headers.upstream_request);
    cr_assert_not_null(gw_filter_query.upstream_request);
    cr_assert_not_null(gw_filter_body_inspect.request_body);
    cr_assert_not_null(gw_filter_body_inspect.request);
    cr_assert_null(gw_filter_body_inspect.response_body);
    cr_assert_eq(gw_filter_body_inspect.scratch_size, sizeof(gw_body_scratch_t));
    cr_assert_eq(gw_filter_request_headers.scratch_size, 0);
    cr_assert_eq(gw_filter_query.scratch_size, 0);
}

Test(filter_registry, reason_status)
{
    cr_assert_eq(gw_filter_reason_status(gw_reason_body_too_large), 413);
    cr_assert_eq(gw_filter_reason_status("body too large"), 413, "compared by content");
    cr_assert_eq(gw_filter_reason_status(gw_reason_body_denied), 0);
    cr_assert_eq(gw_filter_reason_status("something else"), 0);
    cr_assert_eq(gw_filter_reason_status(NULL), 0);
    cr_assert_str_eq(gw_reason_body_denied, "body_inspect: denied content");
}

Test(filter_registry, quote_escapes_control_characters)
{
    char q[64];
    gw__filter_quote(q, sizeof(q), "a\r\nb\"c\\");
    cr_assert_str_eq(q, "\"a\\x0d\\x0ab\\x22c\\x5c\"");
    gw__filter_quote(q, 12, "abcdefghijklmnop");
    cr_assert_str_eq(q, "\"abcde...\"");
    cr_assert_lt(strlen(q), 12);
    gw__filter_quote(q, 2, "abc");
    cr_assert_str_eq(q, "");
}

Test(filter_registry, tchar)
{
    const char *ok = "!#$%&'*+-.^_`|~09azAZ";
    for (const char *p = ok; *p; p++)
        cr_assert(gw__is_tchar((unsigned char)*p), "%c is a tchar", *p);
    const char *bad = " \t\"(),/:;<=>?@[\\]{}\x7f\x80";
    for (const char *p = bad; *p; p++)
        cr_assert_not(gw__is_tchar((unsigned char)*p), "0x%02x is not a tchar", *p & 0xff);
    cr_assert_not(gw__is_tchar(0));
}
