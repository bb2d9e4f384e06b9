/* body_inspect: the parser, the deny-word automaton across chunks, and the inspection limit. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/filters/filters.h"
#include "util/arena.h"
#include "util/cfg.h"

#define PATH "routes[0].filters[3].body_inspect"

static gw_body_inspect_t *bi_ok(const char *text)
{
    cJSON *conf = NULL;
    sl_error_t err = {0};
    cr_assert_eq(sl__cfg_parse(text, strlen(text), SL_CFG_YAML, 100000, &conf, &err), 0, "%s",
                 err.msg);
    void *state = NULL;
    int rc = gw_filter_body_inspect.parse(conf, PATH, &state, &err);
    cr_assert_eq(rc, 0, "parse failed: %s", err.msg);
    cJSON_Delete(conf);
    return state;
}

static void bi_fails(const char *text, const char *msg)
{
    cJSON *conf = NULL;
    sl_error_t err = {0};
    cr_assert_eq(sl__cfg_parse(text, strlen(text), SL_CFG_YAML, 100000, &conf, &err), 0, "%s",
                 err.msg);
    void *state = NULL;
    cr_assert_eq(gw_filter_body_inspect.parse(conf, PATH, &state, &err), SL_ECONFIG,
                 "no error for %s", text);
    cr_assert_str_eq(err.msg, msg);
    cr_assert_null(state);
    cJSON_Delete(conf);
}

/* Feeds the chunks (NULL-terminated) in order; returns the first verdict that is not PASS. */
static gw_body_verdict_t feed(const gw_body_inspect_t *b, const char *const *chunks)
{
    gw_body_scratch_t sc = {0};
    for (; *chunks; chunks++) {
        gw_body_verdict_t v = gw_body_inspect_feed(b, &sc, *chunks, strlen(*chunks));
        if (v != GW_BODY_PASS)
            return v;
    }
    return GW_BODY_PASS;
}

#define CHUNKS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ---- parsing ----------------------------------------------------------------------------- */

Test(filter_body_inspect, defaults)
{
    gw_body_inspect_t *b = bi_ok("{deny: [rogue]}");
    cr_assert_eq(b->limit, 1u << 20);
    cr_assert_eq(b->on_overflow, GW_OVERFLOW_PASS);
    cr_assert_not(b->ignore_case);
    cr_assert_eq(b->n_states, 6);
    cr_assert_eq(b->n_classes, 6, "r o g u e and everything else");
    gw_filter_body_inspect.free(b);
}

Test(filter_body_inspect, options)
{
    gw_body_inspect_t *b = bi_ok("{deny: [a, b], max_buffer: 8k, on_overflow: reject, "
                                 "ignore_case: true}");
    cr_assert_eq(b->limit, 8192);
    cr_assert_eq(b->on_overflow, GW_OVERFLOW_REJECT);
    cr_assert(b->ignore_case);
    gw_filter_body_inspect.free(b);
    b = bi_ok("{deny: [a], max_buffer: 100, on_overflow: pass}");
    cr_assert_eq(b->limit, 100);
    cr_assert_eq(b->on_overflow, GW_OVERFLOW_PASS);
    gw_filter_body_inspect.free(b);
}

Test(filter_body_inspect, errors_name_the_key_path)
{
    bi_fails("[rogue]", PATH ": expected a mapping, got list");
    bi_fails("{}", PATH ".deny: required (a list of words to deny)");
    bi_fails("{deny: null}", PATH ".deny: required (a list of words to deny)");
    bi_fails("{deny: []}", PATH ".deny: must not be empty");
    bi_fails("{deny: rogue}", PATH ".deny: expected a list, got string \"rogue\"");
    bi_fails("{deny: [rogue, 7]}", PATH ".deny[1]: expected a string, got integer 7");
    bi_fails("{deny: [\"\"]}", PATH ".deny[0]: must not be empty");
    bi_fails("{deny: [a], max_bufer: 1m}", PATH ".max_bufer: unknown key (did you mean "
                                                "\"max_buffer\"?)");
    bi_fails("{deny: [a], max_buffer: 1x}",
             PATH ".max_buffer: expected a size like 1024, \"8k\" or \"1m\", got string \"1x\"");
    bi_fails("{deny: [a], max_buffer: 0}", PATH ".max_buffer: must be between 1 and 1g");
    bi_fails("{deny: [a], max_buffer: 2g}", PATH ".max_buffer: must be between 1 and 1g");
    bi_fails("{deny: [a], on_overflow: drop}",
             PATH ".on_overflow: unknown value \"drop\" (pass, reject)");
    bi_fails("{deny: [a], on_overflow: \"\"}", PATH ".on_overflow: must not be empty");
    bi_fails("{deny: [a], on_overflow: true}",
             PATH ".on_overflow: expected a string, got boolean true");
    bi_fails("{deny: [a], ignore_case: \"yes\"}",
             PATH ".ignore_case: expected a boolean, got string \"yes\"");
}

Test(filter_body_inspect, sizes_are_bounded)
{
    char *text = malloc(65536);
    char word[GW_BODY_WORD_MAX + 2];
    memset(word, 'w', sizeof(word) - 1);
    word[sizeof(word) - 1] = '\0';
    snprintf(text, 65536, "{deny: [%s]}", word);
    bi_fails(text, PATH ".deny[0]: too long (257 bytes, at most 256)");

    int o = snprintf(text, 65536, "{deny: [");
    for (int i = 0; i <= GW_BODY_WORDS_MAX; i++)
        o += snprintf(text + o, 65536 - (size_t)o, "%sw%d", i ? ", " : "", i);
    snprintf(text + o, 65536 - (size_t)o, "]}");
    bi_fails(text, PATH ".deny: too many entries (257, at most 256)");

    word[GW_BODY_WORD_MAX] = '\0';
    o = snprintf(text, 65536, "{deny: [");
    for (int i = 0; i < 17; i++)
        o += snprintf(text + o, 65536 - (size_t)o, "%s%s", i ? ", " : "", word);
    snprintf(text + o, 65536 - (size_t)o, "]}");
    bi_fails(text, PATH ".deny: too many bytes in all (4352, at most 4096)");

    /* The largest automaton allowed builds: 16 words of 256 distinct-ish bytes. */
    o = snprintf(text, 65536, "{deny: [");
    for (int i = 0; i < 16; i++) {
        for (int j = 0; j < GW_BODY_WORD_MAX; j++)
            word[j] = (char)('!' + (i * 7 + j) % 90);
        word[GW_BODY_WORD_MAX] = '\0';
        o += snprintf(text + o, 65536 - (size_t)o, "%s'", i ? ", " : "");
        for (const char *p = word; *p; p++) {
            if (*p == '\'')
                text[o++] = '\'';
            text[o++] = *p;
        }
        text[o++] = '\'';
    }
    snprintf(text + o, 65536 - (size_t)o, "]}");
    gw_body_inspect_t *b = bi_ok(text);
    cr_assert_leq(b->n_states, 4097);
    gw_filter_body_inspect.free(b);
    free(text);
}

/* ---- inspecting -------------------------------------------------------------------------- */

Test(filter_body_inspect, lesson_12)
{
    gw_body_inspect_t *b = bi_ok("{deny: [rogue]}");
    cr_assert_eq(feed(b, CHUNKS("Hello World")), GW_BODY_PASS);
    cr_assert_eq(feed(b, CHUNKS("I am a rogue agent")), GW_BODY_DENIED);
    cr_assert_eq(feed(b, CHUNKS("rogue")), GW_BODY_DENIED);
    cr_assert_eq(feed(b, CHUNKS("rogu")), GW_BODY_PASS);
    cr_assert_eq(feed(b, CHUNKS("ROGUE")), GW_BODY_PASS, "case-sensitive by default");
    cr_assert_eq(feed(b, CHUNKS("rrogue")), GW_BODY_DENIED);
    cr_assert_eq(feed(b, CHUNKS("rorogue")), GW_BODY_DENIED);
    gw_filter_body_inspect.free(b);
}

Test(filter_body_inspect, words_split_across_chunks)
{
    gw_body_inspect_t *b = bi_ok("{deny: [rogue]}");
    cr_assert_eq(feed(b, CHUNKS("I am a ro", "gue agent")), GW_BODY_DENIED);
    cr_assert_eq(feed(b, CHUNKS("r", "o", "g", "u", "e")), GW_BODY_DENIED);
    cr_assert_eq(feed(b, CHUNKS("xxrog", "", "ue")), GW_BODY_DENIED);
    cr_assert_eq(feed(b, CHUNKS("rog", "x", "ue")), GW_BODY_PASS);
    cr_assert_eq(feed(b, CHUNKS("ro", "ro", "gue")), GW_BODY_DENIED);
    gw_filter_body_inspect.free(b);
}

Test(filter_body_inspect, ignore_case)
{
    gw_body_inspect_t *b = bi_ok("{deny: [Rogue, \"DROP TABLE\"], ignore_case: true}");
    cr_assert_eq(feed(b, CHUNKS("a ROGUE agent")), GW_BODY_DENIED);
    cr_assert_eq(feed(b, CHUNKS("rOg", "Ue")), GW_BODY_DENIED);
    cr_assert_eq(feed(b, CHUNKS("x; drop table users")), GW_BODY_DENIED);
    cr_assert_eq(feed(b, CHUNKS("drop  table")), GW_BODY_PASS);
    gw_filter_body_inspect.free(b);
}

Test(filter_body_inspect, several_overlapping_words)
{
    gw_body_inspect_t *b = bi_ok("{deny: [he, she, hers, abcd, bce]}");
    cr_assert_eq(feed(b, CHUNKS("ushers")), GW_BODY_DENIED);
    cr_assert_eq(feed(b, CHUNKS("abce")), GW_BODY_DENIED, "failure link from abc to bc");
    cr_assert_eq(feed(b, CHUNKS("abc", "xbcd")), GW_BODY_PASS);
    cr_assert_eq(feed(b, CHUNKS("s", "h")), GW_BODY_PASS);
    gw_filter_body_inspect.free(b);
    b = bi_ok("{deny: [abcdef, cd]}");
    cr_assert_eq(feed(b, CHUNKS("abcdx")), GW_BODY_DENIED, "a short word inside a long prefix");
    gw_filter_body_inspect.free(b);
}

Test(filter_body_inspect, binary_bodies)
{
    /* YAML's "\xff" is U+00FF (UTF-8 c3 bf); raw bytes need a tree built by hand. */
    cJSON *conf = cJSON_CreateObject();
    cJSON *deny = cJSON_AddArrayToObject(conf, "deny");
    cJSON_AddItemToArray(deny, cJSON_CreateString("\xff\xfeMZ"));
    void *state = NULL;
    sl_error_t err = {0};
    cr_assert_eq(gw_filter_body_inspect.parse(conf, PATH, &state, &err), 0, "%s", err.msg);
    cJSON_Delete(conf);
    gw_body_inspect_t *b = state;
    const char body[] = {'\0', 'a', '\xff', '\xfe', 'M', 'Z', '\0'};
    gw_body_scratch_t sc = {0};
    cr_assert_eq(gw_body_inspect_feed(b, &sc, body, 3), GW_BODY_PASS);
    cr_assert_eq(gw_body_inspect_feed(b, &sc, body + 3, 4), GW_BODY_DENIED);
    gw_filter_body_inspect.free(b);
}

/* The automaton agrees with a plain search of the inspected bytes, whatever the chunking. */
Test(filter_body_inspect, agrees_with_a_naive_search)
{
    static const char *const words[] = {"aab", "abab", "ba", "bbb", "cab"};
    gw_body_inspect_t *b = bi_ok("{deny: [aab, abab, ba, bbb, cab]}");
    gw_body_inspect_t *bi = bi_ok("{deny: [aab, abab, ba, bbb, cab], ignore_case: true}");
    unsigned seed = 12345;
    for (int round = 0; round < 3000; round++) {
        char body[64];
        size_t len = 1 + (seed = seed * 1103515245 + 12345) % 40;
        for (size_t i = 0; i < len; i++) {
            seed = seed * 1103515245 + 12345;
            unsigned r = (seed >> 16) % 7;
            body[i] = "abcAB x"[r];
        }
        body[len] = '\0';
        char lower[64];
        for (size_t i = 0; i <= len; i++)
            lower[i] = (char)gw__lower((unsigned char)body[i]);
        bool want = false, want_i = false;
        for (size_t w = 0; w < 5; w++) {
            want = want || strstr(body, words[w]);
            want_i = want_i || strstr(lower, words[w]);
        }
        gw_body_scratch_t sc = {0}, sci = {0};
        gw_body_verdict_t got = GW_BODY_PASS, got_i = GW_BODY_PASS;
        for (size_t pos = 0; pos < len;) {
            seed = seed * 1103515245 + 12345;
            size_t n = 1 + (seed >> 16) % 5;
            if (n > len - pos)
                n = len - pos;
            if (got == GW_BODY_PASS)
                got = gw_body_inspect_feed(b, &sc, body + pos, n);
            if (got_i == GW_BODY_PASS)
                got_i = gw_body_inspect_feed(bi, &sci, body + pos, n);
            pos += n;
        }
        cr_assert_eq(got == GW_BODY_DENIED, want, "body \"%s\"", body);
        cr_assert_eq(got_i == GW_BODY_DENIED, want_i, "body \"%s\" (ignore_case)", body);
    }
    gw_filter_body_inspect.free(b);
    gw_filter_body_inspect.free(bi);
}

Test(filter_body_inspect, only_the_first_max_buffer_bytes_are_inspected)
{
    gw_body_inspect_t *b = bi_ok("{deny: [rogue], max_buffer: 10}");
    cr_assert_eq(feed(b, CHUNKS("0123456789rogue")), GW_BODY_PASS);
    cr_assert_eq(feed(b, CHUNKS("01234rogue")), GW_BODY_DENIED, "ends on the last byte");
    cr_assert_eq(feed(b, CHUNKS("012345rogue")), GW_BODY_PASS, "straddles the limit");
    cr_assert_eq(feed(b, CHUNKS("0123456789", "rogue", "rogue")), GW_BODY_PASS);
    gw_filter_body_inspect.free(b);
}

Test(filter_body_inspect, on_overflow_reject)
{
    gw_body_inspect_t *b = bi_ok("{deny: [rogue], max_buffer: 10, on_overflow: reject}");
    cr_assert_eq(feed(b, CHUNKS("0123456789")), GW_BODY_PASS, "exactly the limit is fine");
    cr_assert_eq(feed(b, CHUNKS("01234", "56789", "")), GW_BODY_PASS);
    cr_assert_eq(feed(b, CHUNKS("01234", "56789", "a")), GW_BODY_TOO_LARGE);
    cr_assert_eq(feed(b, CHUNKS("0123456789a")), GW_BODY_TOO_LARGE);
    cr_assert_eq(feed(b, CHUNKS("rogue456789a")), GW_BODY_DENIED, "a word beats the size");
    gw_body_scratch_t sc = {0};
    cr_assert_eq(gw_body_inspect_feed(b, &sc, "0123456789abc", 13), GW_BODY_TOO_LARGE);
    cr_assert(sc.done);
    cr_assert_eq(sc.seen, 10);
    gw_filter_body_inspect.free(b);
}

Test(filter_body_inspect, content_length_fast_path)
{
    gw_body_inspect_t *b = bi_ok("{deny: [x], max_buffer: 10, on_overflow: reject}");
    sl_arena_t *arena = malloc(sizeof(*arena));
    sl__arena_init(arena);
    sl_headers_t h = {.arena = arena};
    cr_assert_eq(gw_body_inspect_check_length(b, &h), GW_BODY_PASS, "no length: chunked");
    sl_headers_set(&h, "Content-Length", "10");
    cr_assert_eq(gw_body_inspect_check_length(b, &h), GW_BODY_PASS);
    sl_headers_set(&h, "Content-Length", "11");
    cr_assert_eq(gw_body_inspect_check_length(b, &h), GW_BODY_TOO_LARGE);
    sl_headers_set(&h, "content-length", "0000000000000000000000000010");
    cr_assert_eq(gw_body_inspect_check_length(b, &h), GW_BODY_PASS);
    sl_headers_set(&h, "content-length", "184467440737095516160000000");
    cr_assert_eq(gw_body_inspect_check_length(b, &h), GW_BODY_TOO_LARGE, "no overflow");
    gw_filter_body_inspect.free(b);

    b = bi_ok("{deny: [x], max_buffer: 10}");
    cr_assert_eq(gw_body_inspect_check_length(b, &h), GW_BODY_PASS, "pass mode never refuses");
    gw_filter_body_inspect.free(b);
    sl__arena_release(arena);
    free(arena);
}

Test(filter_body_inspect, hooks_pass_clean_bodies)
{
    gw_body_inspect_t *b = bi_ok("{deny: [rogue]}");
    gw_body_scratch_t *sc = calloc(1, gw_filter_body_inspect.scratch_size);
    sl_body_t body = {"clean ro", 8};
    cr_assert_eq(gw_filter_body_inspect.request_body(b, sc, NULL, &body, false), SL_CONTINUE);
    body = (sl_body_t){NULL, 0};
    cr_assert_eq(gw_filter_body_inspect.request_body(b, sc, NULL, &body, true), SL_CONTINUE);
    cr_assert_eq(sc->seen, 8);
    cr_assert_neq(sc->state, 0, "the window survives between chunks");
    free(sc);
    gw_filter_body_inspect.free(b);
}
