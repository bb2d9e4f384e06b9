/* Load balancing: smooth weighted round robin order and the public balancer. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/error.h"
#include "sluice/lb.h"

Test(swrr, three_to_one_is_smooth)
{
    uint32_t w[] = {3, 1};
    uint32_t *seq;
    size_t len;
    sl_swrr_sequence(w, 2, &seq, &len);
    cr_assert_eq(len, 4);
    uint32_t want[] = {0, 0, 1, 0}; /* a a b a, never b twice in a row */
    cr_assert_arr_eq(seq, want, sizeof(want));
    free(seq);
}

Test(swrr, gcd_reduces_and_ratios_hold)
{
    uint32_t w[] = {500, 250, 250};
    uint32_t *seq;
    size_t len;
    sl_swrr_sequence(w, 3, &seq, &len);
    cr_assert_eq(len, 4);
    size_t count[3] = {0};
    for (size_t i = 0; i < len; i++)
        count[seq[i]]++;
    cr_assert_eq(count[0], 2);
    cr_assert_eq(count[1], 1);
    cr_assert_eq(count[2], 1);
    free(seq);
}

Test(swrr, huge_sums_are_scaled)
{
    uint32_t w[20];
    for (int i = 0; i < 20; i++)
        w[i] = 997 + (uint32_t)i; /* coprime-ish: no common divisor */
    uint32_t *seq;
    size_t len;
    sl_swrr_sequence(w, 20, &seq, &len);
    cr_assert_leq(len, 8192 + 20);
    size_t count[20] = {0};
    for (size_t i = 0; i < len; i++)
        count[seq[i]]++;
    for (int i = 0; i < 20; i++)
        cr_assert(count[i] > 0, "every backend keeps a share");
    free(seq);
}

Test(swrr, empty)
{
    uint32_t *seq = (uint32_t *)1;
    size_t len = 7;
    sl_swrr_sequence(NULL, 0, &seq, &len);
    cr_assert_null(seq);
    cr_assert_eq(len, 0);
}

Test(lb, select_update_and_empty)
{
    static const char *const addrs[] = {"10.0.0.1:80", "10.0.0.2:80"};
    sl_lb_t *lb = sl_lb_from_addrs(addrs, 2);
    cr_assert_not_null(lb);
    sl_backend_t b;
    char s[64];
    cr_assert_eq(sl_lb_select(lb, "", 0, &b), 0);
    sl_backend_addr_str(&b, s, sizeof(s));
    cr_assert_str_eq(s, "10.0.0.1:80");
    cr_assert_eq(sl_lb_select(lb, "", 0, &b), 0);
    sl_backend_addr_str(&b, s, sizeof(s));
    cr_assert_str_eq(s, "10.0.0.2:80");
    sl_backend_t one;
    cr_assert_eq(sl_backend_init(&one, "unix:/tmp/x.sock", 0), 0);
    cr_assert_eq(one.weight, 1);
    cr_assert(sl_lb_update(lb, &one, 1));
    cr_assert_not(sl_lb_update(lb, &one, 1), "same set: no change");
    cr_assert_eq(sl_lb_select(lb, "", 0, &b), 0);
    sl_backend_addr_str(&b, s, sizeof(s));
    cr_assert_str_eq(s, "unix:/tmp/x.sock");
    cr_assert(sl_lb_update(lb, NULL, 0));
    cr_assert_eq(sl_lb_select(lb, "", 0, &b), SL_ENOUPSTREAM);
    sl_lb_free(lb);
}

Test(lb, bad_addresses)
{
    sl_backend_t b;
    cr_assert_eq(sl_backend_init(&b, "example.com:80", 1), SL_ECONFIG);
    cr_assert_eq(sl_backend_init(&b, "10.0.0.1", 1), SL_ECONFIG);
    cr_assert_eq(sl_backend_init(&b, "10.0.0.1:0", 1), SL_ECONFIG);
    static const char *const addrs[] = {"10.0.0.1:80", "nope"};
    cr_assert_null(sl_lb_from_addrs(addrs, 2));
}
