/* Unit tests of the watcher's small parts: manifests, quoting, base64, stores, rendering,
 * flags, backoff and Lease times. Translation itself is covered by test_golden.c. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "../src/informer.h"
#include "../src/lease.h"
#include "../src/manifest.h"
#include "../src/model.h"
#include "../src/opts.h"
#include "../src/pem.h"
#include "../src/render.h"
#include "../src/translate.h"
#include "gateway/gateway.h"

static cJSON *parse(const char *text, sl_error_t *err)
{
    cJSON *out = NULL;
    int rc = wt_manifest_parse(text, strlen(text), &out, err);
    return rc ? NULL : out;
}

Test(manifest, multi_document_yaml_lists_and_json)
{
    sl_error_t err = {0};
    cJSON *a = parse("# leading comment\n---\nkind: Service\nmetadata: {name: a}\n---\n"
                     "--- # empty document\n"
                     "kind: List\nitems:\n  - {kind: Service, metadata: {name: b}}\n"
                     "  - {kind: Service, metadata: {name: c}}\n"
                     "---\nkind: Service\nmetadata:\n  name: d\n  annotations: {x: \"---\"}\n"
                     "...\n",
                     &err);
    cr_assert(a, "%s", err.msg);
    cr_assert_eq(cJSON_GetArraySize(a), 4);
    cr_assert_str_eq(WT_NAME(cJSON_GetArrayItem(a, 2)), "c");
    cr_assert_str_eq(WT_STR(cJSON_GetArrayItem(a, 3), "metadata", "annotations", "x"), "---");
    cJSON_Delete(a);

    cJSON *j = parse("[{\"kind\": \"Service\", \"metadata\": {\"name\": \"j\"}}]", &err);
    cr_assert(j, "%s", err.msg);
    cr_assert_eq(cJSON_GetArraySize(j), 1);
    cJSON_Delete(j);
}

Test(manifest, errors_name_document_and_line)
{
    sl_error_t err = {0};
    cJSON *a = parse("kind: Service\nmetadata: {name: a}\n---\nkind: Service\n"
                     "metadata: {name: [b\n",
                     &err);
    cr_assert_null(a);
    cr_assert(strstr(err.msg, "document 2: line 6"), "%s", err.msg);
    a = parse("a: 1\na: 2\n", &err);
    cr_assert_null(a);
    cr_assert(strstr(err.msg, "duplicate key"), "%s", err.msg);
}

Test(manifest, add_skips_broken_objects)
{
    sl_error_t err = {0};
    cJSON *a = parse("kind: Service\napiVersion: v1\nmetadata: {name: ok, namespace: x}\n---\n"
                     "kind: Service\napiVersion: v1\nmetadata: {}\n---\n"
                     "kind: Ingress\napiVersion: extensions/v1beta1\nmetadata: {name: old}\n---\n"
                     "kind: ConfigMap\napiVersion: v1\nmetadata: {name: other}\n",
                     &err);
    cr_assert(a, "%s", err.msg);
    wt_objects_t o;
    wt_objects_init(&o);
    wt_diags_t d;
    wt_diags_init(&d);
    cr_assert_eq(wt_manifest_add(&o, a, "f.yaml", &d), 1);
    cr_assert_not_null(wt_store_get(&o.kinds[WT_SERVICE], "x/ok"));
    cr_assert(wt_diags_find(&d, "f.yaml: Service (object 2) has no metadata.name"));
    cr_assert(wt_diags_find(&d, "apiVersion \"extensions/v1beta1\" is not read"));
    wt_diags_free(&d);
    wt_objects_free(&o);
}

Test(objects, quote_escapes_and_cuts)
{
    char b[32];
    cr_assert_str_eq(wt_quote(b, sizeof(b), "a\"b\\c"), "\"a\\\"b\\\\c\"");
    cr_assert_str_eq(wt_quote(b, sizeof(b), "x\r\ny"), "\"x\\x0d\\x0ay\"");
    wt_quote(b, sizeof(b), "0123456789012345678901234567890123456789");
    cr_assert(strlen(b) < sizeof(b));
    cr_assert(strstr(b, "...\""), "%s", b);
}

Test(objects, store_put_get_delete_sorted)
{
    wt_store_t s;
    wt_store_init(&s, WT_INGRESSCLASS);
    char json[128];
    for (int i = 0; i < 500; i++) {
        snprintf(json, sizeof(json),
                 "{\"metadata\":{\"name\":\"c%03d\"},\"spec\":"
                 "{\"controller\":\"x/%d\"}}",
                 i, i);
        cJSON *o = cJSON_Parse(json);
        cr_assert(wt_store_put_json(&s, o));
        cJSON_Delete(o);
    }
    cJSON *o = cJSON_Parse("{\"metadata\":{\"name\":\"c007\"},\"spec\":{\"controller\":"
                           "\"replaced\"}}");
    cr_assert(wt_store_put_json(&s, o));
    cJSON_Delete(o);
    o = cJSON_Parse("{\"metadata\":{}}");
    cr_assert_not(wt_store_put_json(&s, o));
    cJSON_Delete(o);
    cr_assert_eq(s.n, 500);
    cr_assert_str_eq(((wt_class_t *)wt_store_get(&s, "c007"))->controller, "replaced");
    cr_assert(wt_store_del(&s, "c100"));
    cr_assert_not(wt_store_del(&s, "c100"));
    cr_assert_null(wt_store_get(&s, "c100"));
    wt_entry_t **v = wt_store_sorted(&s);
    for (size_t i = 1; i < s.n; i++)
        cr_assert(strcmp(v[i - 1]->key, v[i]->key) < 0);
    free(v);
    wt_store_free(&s);
}

Test(model, endpoint_slice)
{
    cJSON *o = cJSON_Parse("{\"kind\":\"EndpointSlice\",\"metadata\":{\"name\":\"s\","
                           "\"namespace\":\"n\",\"managedFields\":[{}],\"labels\":"
                           "{\"kubernetes.io/service-name\":\"web\",\"app\":\"x\"}},"
                           "\"addressType\":\"IPv4\",\"endpoints\":[{\"addresses\":"
                           "[\"10.0.0.1\",7],\"conditions\":{\"ready\":false}},"
                           "{\"addresses\":[\"10.0.0.2\"]}],\"ports\":[{\"name\":\"http\","
                           "\"port\":8080},{\"port\":70000}]}");
    wt_slice_t *m = wt_model_new(WT_ENDPOINTSLICE, o);
    cJSON_Delete(o);
    cr_assert_str_eq(m->ns, "n");
    cr_assert_str_eq(m->service, "web");
    cr_assert_str_eq(m->address_type, "IPv4");
    cr_assert_eq(m->n_endpoints, 2);
    cr_assert(m->endpoints[0].not_ready);
    cr_assert_not(m->endpoints[1].not_ready);
    cr_assert_eq(m->endpoints[0].n_addresses, 2);
    cr_assert_null(m->endpoints[0].addresses[1]);
    cr_assert_eq(m->n_ports, 2);
    cr_assert_eq(m->ports[0].port, 8080);
    cr_assert_eq(m->ports[1].port, -1);
    wt_model_free(WT_ENDPOINTSLICE, m);
}

Test(pem, base64)
{
    size_t n;
    char *s = wt_base64_decode("aGVsbG8=", &n);
    cr_assert_eq(n, 5);
    cr_assert_str_eq(s, "hello");
    free(s);
    s = wt_base64_decode("aGVs\nbG8h", &n);
    cr_assert_str_eq(s, "hello!");
    free(s);
    cr_assert_null(wt_base64_decode("not base64!", &n));
    cr_assert_null(wt_base64_decode("abc", &n));
    char why[200];
    cr_assert_eq(wt_pem_check("x", 1, "y", 1, why, sizeof(why)), -1);
    cr_assert_str_eq(why, "tls.crt is not PEM");
}

Test(render, canonical_and_same_hash_as_the_gateway)
{
    cJSON *a = cJSON_Parse("{\"routes\":[{\"name\":\"r\",\"match\":{\"path\":\"/\"},"
                           "\"respond\":{\"status\":200}}],\"upstreams\":{\"z\":{\"backends\":"
                           "[\"127.0.0.1:1\"]},\"a\":{\"backends\":[\"127.0.0.1:2\"]}}}");
    cJSON *b = cJSON_Parse("{\"upstreams\":{\"a\":{\"backends\":[\"127.0.0.1:2\"]},\"z\":"
                           "{\"backends\":[\"127.0.0.1:1\"]}},\"routes\":[{\"respond\":"
                           "{\"status\":200},\"match\":{\"path\":\"/\"},\"name\":\"r\"}]}");
    wt_rendered_t ra, rb;
    wt_render(a, &ra);
    wt_render(b, &rb);
    cr_assert_str_eq(ra.text, rb.text);
    cr_assert_str_eq(ra.hash, rb.hash);
    cr_assert(!strncmp(ra.text, "{\"upstreams\":{\"a\"", 17), "%s", ra.text);
    gw_config_t *c = NULL;
    sl_error_t err = {0};
    cr_assert_eq(gw_config_parse(cJSON_Parse(ra.text), &c, &err), 0, "%s", err.msg);
    cr_assert_str_eq(c->hash, ra.gw_hash);
    gw_config_release(c);
    wt_rendered_free(&ra);
    wt_rendered_free(&rb);
    cJSON_Delete(a);
    cJSON_Delete(b);
}

Test(translate, validators)
{
    cr_assert(wt_valid_host("a.example.com", false));
    cr_assert(wt_valid_host("*.example.com", true));
    cr_assert_not(wt_valid_host("*.example.com", false));
    cr_assert_not(wt_valid_host("a..b", false));
    cr_assert_not(wt_valid_host("-a.b", false));
    cr_assert_not(wt_valid_host("a_b.c", false));
    cr_assert_not(wt_valid_host("a.b\nX: y", false));
    cr_assert(wt_valid_path("/", true));
    cr_assert(wt_valid_path("/a/b/", true));
    cr_assert_not(wt_valid_path("a", true));
    cr_assert_not(wt_valid_path("/a b", true));
    cr_assert_not(wt_valid_path("/a//b", true));
    cr_assert_not(wt_valid_path("/a/..", true));
    cr_assert_not(wt_valid_path("/a%2Fb", true));
}

static int parse_args(wt_opts_t *o, const char *const *args, char *err)
{
    int argc = 0;
    char *argv[32];
    argv[argc++] = (char *)"sluice-watcher";
    for (; *args; args++)
        argv[argc++] = (char *)*args;
    return wt_opts_parse(o, argc, argv, err, 256);
}

Test(opts, defaults_and_forms)
{
    wt_opts_t o;
    char err[256];
    const char *none[] = {NULL};
    cr_assert_eq(parse_args(&o, none, err), 0, "%s", err);
    cr_assert_eq(o.source, WT_SOURCE_KUBERNETES);
    cr_assert_str_eq(o.push, "http://127.0.0.1:10254/config");
    cr_assert_str_eq(o.ingress_class, "sluice");
    cr_assert_str_eq(o.controller_class, "sluice.io/ingress-controller");
    cr_assert_str_eq(o.election_id, "sluice-leader");
    cr_assert_str_eq(o.healthz_listen, "127.0.0.1:10255");
    cr_assert_eq(o.debounce_ms, 100);
    cr_assert(o.update_status);
    cr_assert(o.tls_certificates);
    wt_opts_free(&o);
    const char *args[] = {"--source=files",
                          "--manifests",
                          "/m",
                          "--output=/o",
                          "--watch-ingress-without-class",
                          "--update-status=false",
                          "--debounce",
                          "250ms",
                          "--healthz-listen",
                          "off",
                          NULL};
    cr_assert_eq(parse_args(&o, args, err), 0, "%s", err);
    cr_assert_eq(o.source, WT_SOURCE_FILES);
    cr_assert_null(o.push);
    cr_assert_str_eq(o.output, "/o");
    cr_assert(o.watch_without_class);
    cr_assert_not(o.update_status);
    cr_assert_eq(o.debounce_ms, 250);
    cr_assert_null(o.healthz_listen);
    wt_opts_free(&o);
}

Test(informer, backoff_grows_with_jitter_and_a_cap)
{
    for (unsigned a = 0; a < 12; a++) {
        uint64_t d = wt_backoff_ms(a, 250, 10000);
        uint64_t full = 250u << (a < 6 ? a : 6);
        if (full > 10000)
            full = 10000;
        cr_assert(d >= full / 2 && d <= full, "attempt %u: %llu", a, (unsigned long long)d);
    }
}

Test(lease, micro_time_round_trip)
{
    char s[40];
    wt_micro_time(1714564800.25, s);
    cr_assert_str_eq(s, "2024-05-01T12:00:00.250000Z");
    double t;
    cr_assert_eq(wt_parse_micro_time(s, &t), 0);
    cr_assert_float_eq(t, 1714564800.25, 1e-6);
    cr_assert_eq(wt_parse_micro_time("2024-05-01T12:00:00Z", &t), 0);
    cr_assert_eq(wt_parse_micro_time("yesterday", &t), -1);
}
