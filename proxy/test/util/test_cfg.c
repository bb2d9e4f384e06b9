/* Config trees: YAML/JSON parsing, typing, key-path errors, durations and sizes. */
#include <criterion/criterion.h>
#include <string.h>

#include "util/cfg.h"

static cJSON *parse_ok(const char *text)
{
    cJSON *root = NULL;
    sl_error_t err = {0};
    int rc = sl__cfg_parse(text, strlen(text), SL_CFG_AUTO, 10000, &root, &err);
    cr_assert_eq(rc, 0, "parse failed: %s", err.msg);
    return root;
}

static void parse_fails(const char *text, const char *needle)
{
    cJSON *root = NULL;
    sl_error_t err = {0};
    int rc = sl__cfg_parse(text, strlen(text), SL_CFG_AUTO, 100, &root, &err);
    cr_assert_neq(rc, 0, "expected a parse error for: %s", text);
    cr_assert_null(root);
    cr_assert(strstr(err.msg, needle), "message \"%s\" lacks \"%s\"", err.msg, needle);
}

Test(cfg, yaml_core_schema_types)
{
    cJSON *r = parse_ok("a: 12\nb: true\nc: null\nd: \"12\"\ne: 1.5\nf: hello\ng: ~\nh: 0x1f\n"
                        "i: -3\nj: 'true'\nk: yes\n");
    cr_assert(cJSON_IsNumber(cJSON_GetObjectItem(r, "a")));
    cr_assert_eq(cJSON_GetObjectItem(r, "a")->valuedouble, 12);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(r, "b")));
    cr_assert(cJSON_IsNull(cJSON_GetObjectItem(r, "c")));
    cr_assert(cJSON_IsString(cJSON_GetObjectItem(r, "d")), "quoted scalars stay strings");
    cr_assert_eq(cJSON_GetObjectItem(r, "e")->valuedouble, 1.5);
    cr_assert_str_eq(cJSON_GetObjectItem(r, "f")->valuestring, "hello");
    cr_assert(cJSON_IsNull(cJSON_GetObjectItem(r, "g")));
    cr_assert_eq(cJSON_GetObjectItem(r, "h")->valuedouble, 31);
    cr_assert_eq(cJSON_GetObjectItem(r, "i")->valuedouble, -3);
    cr_assert(cJSON_IsString(cJSON_GetObjectItem(r, "j")));
    /* YAML 1.1's yes/no are strings in the 1.2 core schema: "no" can be a country code. */
    cr_assert(cJSON_IsString(cJSON_GetObjectItem(r, "k")));
    cJSON_Delete(r);
}

Test(cfg, json_and_yaml_give_the_same_tree)
{
    cJSON *y = parse_ok("listeners:\n  - name: web\n    listen: 0.0.0.0:80\nthreads: 2\n");
    cJSON *j = parse_ok("{\"listeners\":[{\"name\":\"web\",\"listen\":\"0.0.0.0:80\"}],"
                        "\"threads\":2}");
    cr_assert(cJSON_Compare(y, j, 1));
    cJSON_Delete(y);
    cJSON_Delete(j);
}

Test(cfg, anchors_and_aliases_expand)
{
    cJSON *r = parse_ok("base: &b {x: 1}\ncopy: *b\n");
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "copy"), "x")->valuedouble, 1);
    cJSON_Delete(r);
}

Test(cfg, errors)
{
    parse_fails("a: 1\na: 2\n", "duplicate key \"a\"");
    parse_fails("a: [1, 2\n", "invalid YAML");
    parse_fails("{\"a\": }", "invalid JSON");
    parse_fails("a: 1\n---\nb: 2\n", "only one YAML document");
    parse_fails("a: *nope\n", "unknown anchor");
    /* Billion laughs: alias expansion counts against the node budget. */
    parse_fails("a: &a [1,1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                "c: [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n",
                "too many nodes");
}

Test(cfg, empty_document_is_an_empty_mapping)
{
    cJSON *r = parse_ok("");
    cr_assert(cJSON_IsObject(r));
    cr_assert_null(r->child);
    cJSON_Delete(r);
    r = parse_ok("# only a comment\n");
    cr_assert(cJSON_IsObject(r));
    cJSON_Delete(r);
}

Test(cfg, unknown_key_names_the_path_and_suggests)
{
    cJSON *r = parse_ok("routes:\n  - match: {path_typ: prefix}\n");
    const cJSON *m =
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(r, "routes"), 0), "match");
    static const char *const known[] = {"path", "path_type", "host", NULL};
    sl_error_t err = {0};
    cr_assert_eq(sl__cfg_check_keys(m, "routes[0].match", known, &err), SL_ECONFIG);
    cr_assert_str_eq(err.msg,
                     "routes[0].match.path_typ: unknown key (did you mean \"path_type\"?)");
    cJSON_Delete(r);
}

Test(cfg, typed_getters)
{
    cJSON *r = parse_ok("n: 5\ns: two\nb: 1\nd: 250ms\nz: 8k\nl: [a, b]\nbad_l: [a, 3]\n");
    sl_error_t err = {0};
    long n = 0;
    cr_assert_eq(sl__cfg_get_int(r, "", "n", 1, 10, &n, &err), 0);
    cr_assert_eq(n, 5);
    cr_assert_eq(sl__cfg_get_int(r, "", "n", 6, 10, &n, &err), SL_ECONFIG);
    cr_assert_str_eq(err.msg, "n: 5 is out of range [6, 10]");
    cr_assert_eq(sl__cfg_get_int(r, "", "s", 0, 10, &n, &err), SL_ECONFIG);
    cr_assert_str_eq(err.msg, "s: expected an integer, got string \"two\"");
    bool b = false;
    cr_assert_eq(sl__cfg_get_bool(r, "x", "b", &b, &err), SL_ECONFIG);
    cr_assert_str_eq(err.msg, "x.b: expected a boolean, got integer 1");
    uint64_t ms = 0;
    cr_assert_eq(sl__cfg_get_duration_ms(r, "", "d", &ms, &err), 0);
    cr_assert_eq(ms, 250);
    size_t z = 0;
    cr_assert_eq(sl__cfg_get_size(r, "", "z", &z, &err), 0);
    cr_assert_eq(z, 8192);
    char **l = NULL;
    size_t nl = 0;
    cr_assert_eq(sl__cfg_get_str_list(r, "", "l", &l, &nl, &err), 0);
    cr_assert_eq(nl, 2);
    cr_assert_str_eq(l[1], "b");
    cr_assert_eq(sl__cfg_get_str_list(r, "", "bad_l", &l, &nl, &err), SL_ECONFIG);
    cr_assert_str_eq(err.msg, "bad_l[1]: expected a non-empty string, got integer 3");
    sl__cfg_free_str_list(l, nl);
    /* Absent keys leave the default alone. */
    n = 42;
    cr_assert_eq(sl__cfg_get_int(r, "", "absent", 0, 100, &n, &err), 0);
    cr_assert_eq(n, 42);
    cJSON_Delete(r);
}

Test(cfg, durations)
{
    uint64_t ms;
    cr_assert_eq(sl__parse_duration_ms("250ms", &ms), 0);
    cr_assert_eq(ms, 250);
    cr_assert_eq(sl__parse_duration_ms("5s", &ms), 0);
    cr_assert_eq(ms, 5000);
    cr_assert_eq(sl__parse_duration_ms("1m30s", &ms), 0);
    cr_assert_eq(ms, 90000);
    cr_assert_eq(sl__parse_duration_ms("2h", &ms), 0);
    cr_assert_eq(ms, 7200000);
    cr_assert_eq(sl__parse_duration_ms("1.5s", &ms), 0);
    cr_assert_eq(ms, 1500);
    cr_assert_eq(sl__parse_duration_ms("3", &ms), 0);
    cr_assert_eq(ms, 3000);
    cr_assert_eq(sl__parse_duration_ms("", &ms), -1);
    cr_assert_eq(sl__parse_duration_ms("5x", &ms), -1);
    cr_assert_eq(sl__parse_duration_ms("-5s", &ms), -1);
    cr_assert_eq(sl__parse_duration_ms("s", &ms), -1);
    cr_assert_eq(sl__parse_duration_ms("1m5", &ms), -1);
}

Test(cfg, sizes)
{
    size_t n;
    cr_assert_eq(sl__parse_size("1024", &n), 0);
    cr_assert_eq(n, 1024);
    cr_assert_eq(sl__parse_size("8k", &n), 0);
    cr_assert_eq(n, 8192);
    cr_assert_eq(sl__parse_size("1m", &n), 0);
    cr_assert_eq(n, 1 << 20);
    cr_assert_eq(sl__parse_size("2G", &n), 0);
    cr_assert_eq(n, 2ull << 30);
    cr_assert_eq(sl__parse_size("1mb", &n), 0);
    cr_assert_eq(sl__parse_size("1q", &n), -1);
    cr_assert_eq(sl__parse_size("-1", &n), -1);
    cr_assert_eq(sl__parse_size("99999999999999999999", &n), -1);
}
