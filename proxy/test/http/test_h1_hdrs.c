/* HTTP/1.x header lines as llhttp hands them over in pieces (h1_hdrs.c), shared by the request
 * and the response parsers. */
#include <criterion/criterion.h>
#include <string.h>

#include "http/proxy_impl.h"

static const char msg[] = "Host: a.test  \r\nX-Long: one two\t\r\nEmpty:\r\n\r\n";

static uint32_t off(const char *p)
{
    return (uint32_t)(p - msg);
}

Test(h1_hdrs, pieces_join_and_publish_trims_trailing_blanks)
{
    h1_hdrs_t h = {0};
    const char *host = strstr(msg, "Host"), *lng = strstr(msg, "X-Long"),
               *emp = strstr(msg, "Empty");
    /* "Host" in two pieces, its value in two adjacent pieces */
    cr_assert_eq(sl__h1_hdrs_field(&h, off(host), 2, 8), 0);
    cr_assert_eq(sl__h1_hdrs_field(&h, off(host) + 2, 2, 8), 0);
    cr_assert_eq(sl__h1_hdrs_value(&h, off(host) + 6, 3), 0);
    cr_assert_eq(sl__h1_hdrs_value(&h, off(host) + 9, 5), 0);
    h.phase = 0; /* on_header_value_complete */
    cr_assert_eq(sl__h1_hdrs_field(&h, off(lng), 6, 8), 0);
    cr_assert_eq(sl__h1_hdrs_value(&h, off(lng) + 8, 8), 0);
    h.phase = 0;
    cr_assert_eq(sl__h1_hdrs_field(&h, off(emp), 5, 8), 0);
    h.phase = 0;
    cr_assert_eq(h.n, 3);

    sl_arena_t a;
    sl__arena_init(&a);
    sl_headers_t out = {0};
    sl__h1_hdrs_publish(&h, msg, &out, &a);
    cr_assert_eq(out.n, 3);
    cr_assert(sl_str_eq(out.items[0].name, sl_str("Host")));
    cr_assert(sl_str_eq(out.items[0].value, sl_str("a.test")), "trailing blanks go");
    cr_assert(sl_str_eq(out.items[1].name, sl_str("X-Long")));
    cr_assert(sl_str_eq(out.items[1].value, sl_str("one two")));
    cr_assert(sl_str_eq(out.items[2].name, sl_str("Empty")));
    cr_assert_eq(out.items[2].value.len, 0);
    sl__arena_release(&a);
    free(h.v);
}

Test(h1_hdrs, limits_and_folded_values)
{
    h1_hdrs_t h = {0};
    for (uint32_t i = 0; i < 40; i++) { /* past the first array (32): it grows */
        cr_assert_eq(sl__h1_hdrs_field(&h, i * 10, 1, 40), 0);
        h.phase = 0;
    }
    cr_assert_eq(sl__h1_hdrs_field(&h, 400, 1, 40), -1, "one more than max");
    cr_assert_eq(h.n, 40);
    cr_assert_eq(h.v[39].name_off, 390);
    /* A value piece that does not follow the previous one: a folded line. */
    h.n = 0;
    cr_assert_eq(sl__h1_hdrs_field(&h, 0, 4, 40), 0);
    cr_assert_eq(sl__h1_hdrs_value(&h, 6, 3), 0);
    cr_assert_eq(sl__h1_hdrs_value(&h, 12, 3), -1);
    free(h.v);
}

Test(h1_hdrs, trailers_are_copied_and_bounded)
{
    sl_arena_t a;
    sl__arena_init(&a);
    h1_hdrs_t h = {0};
    sl_headers_t t = {0};
    char buf[] = "X-Sum: abc";
    cr_assert_eq(sl__h1_hdrs_trailer(&h, &t, &a, buf, 3, false), 0);
    cr_assert_eq(sl__h1_hdrs_trailer(&h, &t, &a, buf + 3, 2, false), 0);
    cr_assert_eq(sl__h1_hdrs_trailer(&h, &t, &a, buf + 7, 3, true), 0);
    memset(buf, 'z', sizeof(buf) - 1); /* the body bytes are reused: the trailer is a copy */
    cr_assert_eq(t.n, 1);
    cr_assert(sl_str_eq(t.items[0].name, sl_str("X-Sum")));
    cr_assert(sl_str_eq(t.items[0].value, sl_str("abc")));
    cr_assert_eq(t.arena, &a);
    static char big[8192];
    memset(big, 'v', sizeof(big));
    cr_assert_eq(sl__h1_hdrs_trailer(&h, &t, &a, big, sizeof(big), true), -1, "past 8 KiB");
    for (int i = 1; i < 64; i++) {
        h.phase = 2;
        cr_assert_eq(sl__h1_hdrs_trailer(&h, &t, &a, "N", 1, false), 0);
    }
    h.phase = 2;
    cr_assert_eq(sl__h1_hdrs_trailer(&h, &t, &a, "N", 1, false), -1, "a 65th trailer");
    sl__arena_release(&a);
}
