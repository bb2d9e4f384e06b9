/* Snapshots built from the previous one: what did not change is the same object, what changed
 * is new, and the result is what a build from scratch gives (text, hash, routing, GET /config).
 * A refused configuration leaves the previous snapshot as it was. */
#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/gateway.h"
#include "util/arena.h"
#include "util/cfg.h"

static cJSON *tree(const char *text)
{
    cJSON *root = NULL;
    sl_error_t err = {0};
    cr_assert_eq(sl__cfg_parse(text, strlen(text), SL_CFG_AUTO, 1u << 22, &root, &err), 0,
                 "bad test config: %s", err.msg);
    return root;
}

static gw_config_t *scratch(const char *text)
{
    gw_config_t *c = NULL;
    sl_error_t err = {0};
    cr_assert_eq(gw_config_parse(tree(text), &c, &err), 0, "%s", err.msg);
    return c;
}

/* The gateway's document canonicalized the way it was before the writer (sorted in place, printed
 * by cJSON) and its hash: what the text and hash of every snapshot must be. */
static int cmp_keys(const void *a, const void *b)
{
    return strcmp((*(const cJSON *const *)a)->string, (*(const cJSON *const *)b)->string);
}

static void old_canonicalize(cJSON *v)
{
    for (cJSON *c = v->child; c; c = c->next)
        old_canonicalize(c);
    if (!cJSON_IsObject(v) || !v->child)
        return;
    size_t n = 0;
    for (cJSON *c = v->child; c; c = c->next)
        n++;
    cJSON **items = malloc(n * sizeof(*items));
    n = 0;
    for (cJSON *c = v->child; c; c = c->next)
        items[n++] = c;
    qsort(items, n, sizeof(*items), cmp_keys);
    for (size_t i = 0; i < n; i++) {
        items[i]->prev = i ? items[i - 1] : items[n - 1];
        items[i]->next = i + 1 < n ? items[i + 1] : NULL;
    }
    v->child = items[0];
    free(items);
}

static void check_text_and_hash(const gw_config_t *c, const char *text)
{
    cJSON *root = tree(text), *doc = cJSON_CreateObject();
    for (const char *const *k = gw_top_keys; *k; k++) {
        cJSON *v = cJSON_DetachItemFromObjectCaseSensitive(root, *k);
        if (v && !cJSON_IsNull(v))
            cJSON_AddItemToObject(doc, *k, v);
        else
            cJSON_Delete(v);
    }
    old_canonicalize(doc);
    char *want = cJSON_PrintUnformatted(doc);
    cr_assert_eq(c->text_len, strlen(want));
    cr_assert_eq(memcmp(c->text, want, c->text_len), 0, "text:\n%.*s\nwant:\n%s", (int)c->text_len,
                 c->text, want);
    cJSON *dyn = cJSON_CreateObject();
    for (const char *const *k = gw_dynamic_keys; *k; k++) {
        cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, *k);
        if (v)
            cJSON_AddItemReferenceToObject(dyn, *k, v);
    }
    char *dtext = cJSON_PrintUnformatted(dyn);
    unsigned char md[32];
    unsigned len = 0;
    EVP_Digest(dtext, strlen(dtext), md, &len, EVP_sha256(), NULL);
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    cr_assert_str_eq(c->hash, hex);
    char h2[65];
    gw_config_hash_json(dyn, h2);
    cr_assert_str_eq(h2, hex);
    /* GET /config: the same document parsed back from the text, private keys hidden. */
    cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(doc, "certificates"))
    {
        if (cJSON_GetObjectItem(e, "key_pem"))
            cJSON_ReplaceItemInObject(e, "key_pem", cJSON_CreateString("<redacted>"));
    }
    char *shown_want = cJSON_PrintUnformatted(doc);
    cJSON *shown = gw_config_to_json(c);
    char *stext = cJSON_PrintUnformatted(shown);
    cr_assert_str_eq(stext, shown_want);
    free(shown_want);
    free(stext);
    cJSON_Delete(shown);
    free(dtext);
    cJSON_Delete(dyn);
    free(want);
    cJSON_Delete(doc);
    cJSON_Delete(root);
}

/* text applied over prev (prev stays the caller's). */
static gw_config_t *next(const gw_config_t *prev, const char *text)
{
    gw_config_t *c = NULL;
    sl_error_t err = {0};
    gw_build_opts_t o = {.prev = prev};
    cr_assert_eq(gw_config_build(tree(text), &o, &c, &err), 0, "%s", err.msg);
    gw_config_t *fresh = scratch(text);
    cr_assert_str_eq(c->hash, fresh->hash, "the hash of a build from scratch");
    cr_assert_eq(c->text_len, fresh->text_len);
    cr_assert_eq(memcmp(c->text, fresh->text, c->text_len), 0);
    gw_config_release(fresh);
    check_text_and_hash(c, text);
    return c;
}

static gw_route_t *route(const gw_config_t *c, const char *name)
{
    for (size_t i = 0; i < c->n_routes; i++)
        if (!strcmp(c->routes[i]->name, name))
            return c->routes[i];
    cr_assert_fail("no route %s", name);
    return NULL;
}

static const char *route_for(const gw_config_t *c, const char *host, const char *path)
{
    static sl_arena_t arena;
    sl__arena_init(&arena);
    sl_headers_t h = {.arena = &arena};
    gw_route_t *r = gw_router_match(c->router, host ? sl_str(host) : (sl_str_t){NULL, 0},
                                    sl_str(path), sl_str("GET"), &h);
    sl__arena_reset(&arena);
    return r ? r->name : "(none)";
}

#define BASE                                                                                   \
    "{\"upstreams\": {\"a\": {\"backends\": [\"127.0.0.1:1\", \"127.0.0.1:2\"]},"              \
    " \"b\": {\"backends\": [{\"address\": \"127.0.0.1:3\", \"weight\": 2}], \"host\": "       \
    "\"b.test\","                                                                              \
    " \"timeouts\": {\"read\": \"5s\", \"connect\": \"1s\"}},"                                 \
    " \"c\": {\"backends\": [\"127.0.0.1:4\"], \"tls\": {\"sni\": \"c.test\", \"verify\": "    \
    "false}}},"                                                                                \
    " \"routes\": [{\"name\": \"ra\", \"match\": {\"host\": \"A.test\", \"path\": \"/a\"}, "   \
    "\"upstream\": \"a\"},"                                                                    \
    " {\"match\": {\"path\": \"/b\", \"path_type\": \"exact\"}, \"upstream\": \"b\"},"         \
    " {\"name\": \"rc\", \"match\": {\"host\": \"*.c.test\", \"path\": \"/\"}, \"upstream\": " \
    "\"c\","                                                                                   \
    " \"filters\": [{\"request_headers\": {\"set\": {\"X-A\": \"1\", \"X-B\": \"2\"}}}]},"     \
    " {\"name\": \"rr\", \"match\": {\"path\": \"/r\"}, \"respond\": {\"status\": 204,"        \
    " \"headers\": {\"A\": \"1\", \"B\": \"2\"}}}]}"

Test(config_reuse, unchanged_objects_are_the_same)
{
    gw_config_t *a = next(NULL, BASE);
    gw_config_t *b = next(a, BASE);
    cr_assert_eq(a->n_upstreams, b->n_upstreams);
    for (size_t i = 0; i < a->n_upstreams; i++)
        cr_assert_eq(a->upstreams[i], b->upstreams[i], "upstream %zu", i);
    for (size_t i = 0; i < a->n_routes; i++)
        cr_assert_eq(a->routes[i], b->routes[i], "route %zu", i);
    cr_assert_eq(a->upstreams[0]->refs, 2);
    cr_assert_neq(a->router, b->router, "the router is the snapshot's");
    gw_config_release(a);
    cr_assert_eq(b->upstreams[0]->refs, 1);
    /* Still whole once the first is gone. */
    cr_assert_str_eq(route_for(b, "a.test", "/a/x"), "ra");
    cr_assert_str_eq(route_for(b, NULL, "/b"), "routes[1]");
    cr_assert_str_eq(route_for(b, "x.c.test", "/"), "rc");
    cr_assert_str_eq(route_for(b, NULL, "/r"), "rr");
    gw_config_release(b);
}

Test(config_reuse, changed_backends_make_a_new_upstream_and_new_routes_to_it)
{
    gw_config_t *a = next(NULL, BASE);
    char *text = strdup(BASE);
    char *at = strstr(text, "127.0.0.1:2");
    at[10] = '9'; /* a's second backend */
    gw_config_t *b = next(a, text);
    cr_assert_neq(b->upstreams[0], a->upstreams[0]);
    cr_assert_str_eq(b->upstreams[0]->backends[1].address, "127.0.0.1:9");
    cr_assert_eq(b->upstreams[0]->state, a->upstreams[0]->state, "rotation shared by name");
    cr_assert_eq(b->upstreams[1], a->upstreams[1]);
    cr_assert_eq(b->upstreams[2], a->upstreams[2]);
    cr_assert_neq(route(b, "ra"), route(a, "ra"), "its route points to the new upstream");
    cr_assert_eq(route(b, "ra")->upstream, b->upstreams[0]);
    cr_assert_eq(route(b, "routes[1]"), route(a, "routes[1]"));
    cr_assert_eq(route(b, "rc"), route(a, "rc"));
    cr_assert_eq(route(b, "rr"), route(a, "rr"));
    gw_config_release(a);
    cr_assert_str_eq(route_for(b, "a.test", "/a"), "ra");
    gw_config_release(b);
    free(text);
}

static gw_config_t *change(const gw_config_t *a, const char *from, const char *to)
{
    char text[4096];
    const char *at = strstr(BASE, from);
    cr_assert_not_null(at, "%s", from);
    snprintf(text, sizeof(text), "%.*s%s%s", (int)(at - BASE), BASE, to, at + strlen(from));
    return next(a, text);
}

Test(config_reuse, a_changed_route_filter_or_tls_is_new)
{
    gw_config_t *a = next(NULL, BASE);
    gw_config_t *b = change(a, "\"X-B\": \"2\"", "\"X-B\": \"3\"");
    cr_assert_neq(route(b, "rc"), route(a, "rc"));
    cr_assert_eq(route(b, "ra"), route(a, "ra"));
    cr_assert_eq(b->upstreams[2], a->upstreams[2]);
    gw_config_release(b);

    b = change(a, "\"sni\": \"c.test\"", "\"sni\": \"d.test\"");
    cr_assert_neq(b->upstreams[2], a->upstreams[2]);
    cr_assert_str_eq(b->upstreams[2]->tls->sni, "d.test");
    cr_assert_neq(route(b, "rc"), route(a, "rc"));
    cr_assert_eq(route(b, "rr"), route(a, "rr"));
    gw_config_release(b);

    b = change(a, "\"status\": 204", "\"status\": 205");
    cr_assert_neq(route(b, "rr"), route(a, "rr"));
    cr_assert_eq(route(b, "rr")->respond->status, 205);
    gw_config_release(b);

    /* Key order: where no parser keeps it, reuse; where one does (headers a filter sets, respond
     * headers), the object is parsed again and keeps the new order. */
    b = change(a, "\"timeouts\": {\"read\": \"5s\", \"connect\": \"1s\"}",
               "\"timeouts\": {\"connect\": \"1s\", \"read\": \"5s\"}");
    cr_assert_eq(b->upstreams[1], a->upstreams[1]);
    gw_config_release(b);
    b = change(a, "{\"X-A\": \"1\", \"X-B\": \"2\"}", "{\"X-B\": \"2\", \"X-A\": \"1\"}");
    cr_assert_neq(route(b, "rc"), route(a, "rc"));
    gw_config_release(b);
    b = change(a, "{\"A\": \"1\", \"B\": \"2\"}", "{\"B\": \"2\", \"A\": \"1\"}");
    cr_assert_neq(route(b, "rr"), route(a, "rr"));
    cr_assert_str_eq(route(b, "rr")->respond->headers[0].name.ptr, "B");
    gw_config_release(b);
    gw_config_release(a);
}

Test(config_reuse, routes_move_by_name_unnamed_ones_by_position)
{
    gw_config_t *a = next(NULL, BASE);
    gw_config_t *b = change(a, "\"routes\": [",
                            "\"routes\": [{\"name\": \"new\", \"match\": {\"path\": \"/n\"}, "
                            "\"respond\": {}},");
    cr_assert_eq(route(b, "ra"), route(a, "ra"));
    cr_assert_eq(route(b, "rc"), route(a, "rc"));
    cr_assert_eq(route(b, "rr"), route(a, "rr"));
    cr_assert_str_eq(b->routes[2]->name, "routes[2]", "the unnamed route is a new one");
    cr_assert_eq(route_for(b, NULL, "/b"), b->routes[2]->name);
    cr_assert_str_eq(route_for(b, NULL, "/n"), "new");
    gw_config_release(b);
    gw_config_release(a);
}

Test(config_reuse, upstreams_that_read_files_or_follow_names_are_never_shared)
{
    char dir[] = "/tmp/sl-reuse-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char ca[64];
    snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"ca", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_set_pubkey(x, key);
    X509_sign(x, key, EVP_sha256());
    FILE *f = fopen(ca, "w");
    PEM_write_X509(f, x);
    fclose(f);
    char text[1024];
    snprintf(text, sizeof(text),
             "{\"upstreams\": {\"f\": {\"backends\": [\"127.0.0.1:1\"], \"tls\": {\"ca\": \"%s\"}},"
             " \"w\": {\"backends\": [\"w.test:80\"], \"dns\": {\"watch\": true}},"
             " \"p\": {\"backends\": [\"127.0.0.1:2\"]}},"
             " \"routes\": [{\"name\": \"f\", \"upstream\": \"f\"},"
             " {\"name\": \"w\", \"match\": {\"path\": \"/w\"}, \"upstream\": \"w\"}]}",
             ca);
    gw_config_t *a = next(NULL, text);
    gw_config_t *b = next(a, text);
    cr_assert_neq(b->upstreams[0], a->upstreams[0], "its CA file is read again");
    cr_assert_neq(b->upstreams[1], a->upstreams[1], "dns.watch rewrites its backends");
    cr_assert_eq(b->upstreams[2], a->upstreams[2]);
    gw_config_release(b);
    /* A CA file gone bad refuses the configuration, as at the first load. */
    f = fopen(ca, "w");
    fputs("not a certificate\n", f);
    fclose(f);
    gw_config_t *c = NULL;
    sl_error_t err = {0};
    gw_build_opts_t o = {.prev = a};
    cr_assert_eq(gw_config_build(tree(text), &o, &c, &err), SL_ECONFIG);
    cr_assert(strstr(err.msg, "upstreams.f.tls"), "%s", err.msg);
    gw_config_release(a);
    unlink(ca);
    rmdir(dir);
    X509_free(x);
    EVP_PKEY_free(key);
}

Test(config_reuse, a_refused_config_leaves_the_previous_as_it_was)
{
    gw_config_t *a = next(NULL, BASE);
    long refs[8];
    for (size_t i = 0; i < a->n_upstreams; i++)
        refs[i] = a->upstreams[i]->refs;
    char *before = strndup(a->text, a->text_len);
    char hash[65];
    memcpy(hash, a->hash, sizeof(hash));
    static const char *const bad[] = {
        "\"upstream\": \"c\"",                        /* everything before taken over, then this */
        "\"rc\", \"match\": {\"host\": \"*.c.test\"", /* a duplicate name among reused routes */
    };
    static const char *const with[] = {
        "\"upstream\": \"zzz\"",
        "\"ra\", \"match\": {\"host\": \"*.c.test\"",
    };
    static const char *const msg[] = {
        "routes[2].upstream: unknown upstream \"zzz\"",
        "routes[2].name: duplicate route name \"ra\"",
    };
    for (size_t k = 0; k < 2; k++) {
        char text[4096];
        const char *at = strstr(BASE, bad[k]);
        snprintf(text, sizeof(text), "%.*s%s%s", (int)(at - BASE), BASE, with[k],
                 at + strlen(bad[k]));
        gw_config_t *c = (gw_config_t *)1;
        sl_error_t err = {0};
        gw_build_opts_t o = {.prev = a};
        cr_assert_eq(gw_config_build(tree(text), &o, &c, &err), SL_ECONFIG);
        cr_assert_null(c);
        cr_assert_str_eq(err.msg, msg[k]);
    }
    for (size_t i = 0; i < a->n_upstreams; i++)
        cr_assert_eq(a->upstreams[i]->refs, refs[i]);
    for (size_t i = 0; i < a->n_routes; i++)
        cr_assert_eq(a->routes[i]->refs, 1);
    cr_assert_eq(memcmp(before, a->text, a->text_len), 0);
    cr_assert_str_eq(a->hash, hash);
    cr_assert_str_eq(route_for(a, "a.test", "/a"), "ra");
    free(before);
    gw_config_release(a);
}

Test(config_reuse, kept_hash_and_yaml)
{
    gw_config_t *a = next(NULL, BASE);
    gw_config_t *b = NULL;
    sl_error_t err = {0};
    gw_build_opts_t o = {.prev = a,
                         .keep_hash = "0123456789012345678901234567890123456789012345"
                                      "678901234567890123"};
    cr_assert_eq(gw_config_build(tree(BASE), &o, &b, &err), 0, "%s", err.msg);
    cr_assert_str_eq(b->hash, o.keep_hash);
    gw_config_release(b);
    /* YAML in any key order gives the same snapshot, shared where order does not matter. */
    gw_config_t *y = next(a, "routes:\n"
                             "  - match: {path: /a, host: A.test}\n    upstream: a\n    name: ra\n"
                             "  - {upstream: b, match: {path_type: exact, path: /b}}\n"
                             "upstreams:\n"
                             "  a: {backends: ['127.0.0.1:1', '127.0.0.1:2']}\n"
                             "  b: {timeouts: {connect: 1s, read: 5s}, host: b.test,\n"
                             "      backends: [{weight: 2, address: '127.0.0.1:3'}]}\n");
    cr_assert_eq(y->upstreams[0], a->upstreams[0]);
    cr_assert_eq(y->upstreams[1], a->upstreams[1]);
    cr_assert_eq(route(y, "ra"), route(a, "ra"));
    cr_assert_eq(route(y, "routes[1]"), route(a, "routes[1]"));
    gw_config_release(y);
    gw_config_release(a);
}

Test(config_reuse, certificates_are_loaded_once_and_changed_ones_anew)
{
    char *pem[2][2];
    for (int k = 0; k < 2; k++) {
        EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        X509 *x = X509_new();
        X509_set_version(x, 2);
        ASN1_INTEGER_set(X509_get_serialNumber(x), k + 1);
        X509_gmtime_adj(X509_getm_notBefore(x), 0);
        X509_gmtime_adj(X509_getm_notAfter(x), 3600);
        X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                   (const unsigned char *)"x.test", -1, -1, 0);
        X509_set_issuer_name(x, X509_get_subject_name(x));
        X509_set_pubkey(x, key);
        X509_sign(x, key, EVP_sha256());
        BIO *b = BIO_new(BIO_s_mem());
        PEM_write_bio_X509(b, x);
        char *p;
        long n = BIO_get_mem_data(b, &p);
        pem[k][0] = strndup(p, (size_t)n);
        BIO_free(b);
        b = BIO_new(BIO_s_mem());
        PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL);
        n = BIO_get_mem_data(b, &p);
        pem[k][1] = strndup(p, (size_t)n);
        BIO_free(b);
        X509_free(x);
        EVP_PKEY_free(key);
    }
    char *text[2];
    for (int k = 0; k < 2; k++) {
        cJSON *doc = cJSON_CreateObject(), *certs = cJSON_AddArrayToObject(doc, "certificates");
        cJSON *c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "cert_pem", pem[k][0]);
        cJSON_AddStringToObject(c, "key_pem", pem[k][1]);
        cJSON_AddItemToArray(certs, c);
        text[k] = cJSON_PrintUnformatted(doc);
        cJSON_Delete(doc);
    }
    gw_config_t *a = next(NULL, text[0]);
    gw_config_t *b = next(a, text[0]);
    cr_assert_eq(b->certs[0].cert, a->certs[0].cert);
    cr_assert(gw_certs_same(a, b));
    gw_certs_cache_keep(b);
    gw_config_t *c = next(b, text[1]);
    cr_assert_neq(c->certs[0].cert, b->certs[0].cert);
    cr_assert(!gw_certs_same(b, c));
    /* GET /config hides the key. */
    cJSON *shown = gw_config_to_json(c);
    cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItem(shown, "certificates"), 0);
    cr_assert_str_eq(cJSON_GetObjectItem(first, "key_pem")->valuestring, "<redacted>");
    cJSON_Delete(shown);
    gw_config_release(a);
    gw_config_release(b);
    gw_config_release(c);
    gw_certs_cache_clear();
    for (int k = 0; k < 2; k++) {
        free(pem[k][0]);
        free(pem[k][1]);
        free(text[k]);
    }
}

Test(config_reuse, the_watcher_shape)
{
    /* Many Ingresses, one Service's endpoints changed: one upstream and one route are new. */
    enum { N = 300 };
    char *docs[2];
    for (int gen = 0; gen < 2; gen++) {
        cJSON *doc = cJSON_CreateObject(), *ups = cJSON_AddObjectToObject(doc, "upstreams");
        cJSON *routes = cJSON_AddArrayToObject(doc, "routes");
        for (int i = 0; i < N; i++) {
            char name[64], addr[64], host[64];
            snprintf(name, sizeof(name), "default.s%03d.80", i);
            cJSON *bs = cJSON_AddArrayToObject(cJSON_AddObjectToObject(ups, name), "backends");
            for (int k = 0; k < 4; k++) {
                snprintf(addr, sizeof(addr), "10.%d.%d.%d:8080", i / 100, i % 100,
                         k + (gen && i == 7 ? 10 : 1));
                cJSON_AddItemToArray(bs, cJSON_CreateString(addr));
            }
            cJSON *r = cJSON_CreateObject();
            cJSON *m = cJSON_AddObjectToObject(r, "match");
            snprintf(host, sizeof(host), "h%d.example", i);
            cJSON_AddStringToObject(m, "host", host);
            cJSON_AddStringToObject(m, "path", "/");
            cJSON_AddStringToObject(m, "path_type", "prefix");
            char rname[96];
            snprintf(rname, sizeof(rname), "default/i%d/%s/", i, host);
            cJSON_AddStringToObject(r, "name", rname);
            cJSON_AddStringToObject(r, "upstream", name);
            cJSON_AddItemToArray(routes, r);
        }
        docs[gen] = cJSON_PrintUnformatted(doc);
        cJSON_Delete(doc);
    }
    gw_config_t *a = next(NULL, docs[0]);
    gw_config_t *b = next(a, docs[1]);
    size_t new_u = 0, new_r = 0;
    for (size_t i = 0; i < N; i++) {
        new_u += a->upstreams[i] != b->upstreams[i];
        new_r += a->routes[i] != b->routes[i];
    }
    cr_assert_eq(new_u, 1);
    cr_assert_eq(new_r, 1);
    cr_assert_str_eq(route_for(b, "h7.example", "/x"), "default/i7/h7.example/");
    cr_assert_str_eq(b->routes[7]->upstream->backends[0].address, "10.0.7.10:8080");
    gw_config_release(a);
    gw_config_release(b);
    free(docs[0]);
    free(docs[1]);
}

/* N upstreams with a route each; those below `changed` get other backends. */
static char *many(int n, int changed)
{
    cJSON *doc = cJSON_CreateObject(), *ups = cJSON_AddObjectToObject(doc, "upstreams");
    cJSON *routes = cJSON_AddArrayToObject(doc, "routes");
    for (int i = 0; i < n; i++) {
        char name[32], addr[32], path[32];
        snprintf(name, sizeof(name), "u%03d", i);
        snprintf(addr, sizeof(addr), "127.0.%d.%d:80", i < changed ? 2 : 1, i);
        cJSON *bs = cJSON_AddArrayToObject(cJSON_AddObjectToObject(ups, name), "backends");
        cJSON_AddItemToArray(bs, cJSON_CreateString(addr));
        cJSON *r = cJSON_CreateObject();
        snprintf(path, sizeof(path), "/p%d", i);
        cJSON_AddStringToObject(cJSON_AddObjectToObject(r, "match"), "path", path);
        cJSON_AddStringToObject(r, "name", name);
        cJSON_AddStringToObject(r, "upstream", name);
        cJSON_AddItemToArray(routes, r);
    }
    char *text = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    return text;
}

Test(config_reuse, a_mostly_dead_generation_is_parsed_again_not_kept)
{
    /* 100 upstreams and routes made in one build; a change of 90 of them leaves 10 alive in that
     * build's memory once the first snapshot is gone. The next change parses those 10 again, so
     * the first build's memory goes, instead of being held by a tenth of it. */
    char *t0 = many(100, 0), *t1 = many(100, 90);
    gw_config_t *a = next(NULL, t0);
    gw_config_t *b = next(a, t1);
    cr_assert_eq(b->upstreams[95], a->upstreams[95], "still shared while a lives");
    cr_assert_neq(b->upstreams[5], a->upstreams[5]);
    gw_config_release(a);
    gw_config_t *c = next(b, t1);
    for (int i = 0; i < 100; i++) {
        if (i < 90) {
            cr_assert_eq(c->upstreams[i], b->upstreams[i], "upstream %d of the second build", i);
            cr_assert_eq(c->routes[i], b->routes[i], "route %d", i);
        } else {
            cr_assert_neq(c->upstreams[i], b->upstreams[i], "upstream %d of the sparse first", i);
            cr_assert_neq(c->routes[i], b->routes[i], "route %d", i);
        }
    }
    gw_config_release(b);
    cr_assert_str_eq(route_for(c, NULL, "/p95"), "u095");
    cr_assert_str_eq(c->upstreams[95]->backends[0].address, "127.0.1.95:80");
    gw_config_release(c);
    free(t0);
    free(t1);
}
