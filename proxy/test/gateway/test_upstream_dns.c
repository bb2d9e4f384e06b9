/* Host name backends in the configuration: which strings are names, their ports, the `dns`
 * section (values into the resolver's options) and upstreams' `dns` keys. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "gateway/gateway.h"
#include "gateway/upstream_dns.h"
#include "util/cfg.h"

static int parse_backend(const char *text, gw_backend_t *b, sl_error_t *err)
{
    cJSON *v = cJSON_CreateString(text);
    int rc = gw_backend_parse(v, "b", NULL, b, err);
    cJSON_Delete(v);
    return rc;
}

static void name_ok(const char *text, const char *host, unsigned port)
{
    gw_backend_t b;
    sl_error_t err = {0};
    cr_assert_eq(parse_backend(text, &b, &err), 0, "%s: %s", text, err.msg);
    cr_assert_str_eq(b.host, host, "%s", text);
    cr_assert_eq(b.port, port, "%s", text);
    cr_assert_eq(b.addr_len, 0, "%s: a name is resolved later", text);
    cr_assert_str_eq(b.address, text);
    cr_assert_str_eq(gw_backend_name(&b), host);
    gw_backend_free(&b);
}

static void refused(const char *text, const char *message)
{
    gw_backend_t b;
    sl_error_t err = {0};
    cr_assert_neq(parse_backend(text, &b, &err), 0, "%s was accepted", text);
    cr_assert(strstr(err.msg, message), "%s: %s", text, err.msg);
}

Test(upstream_dns, host_names_are_backends)
{
    name_ok("blue.pingora.local:8080", "blue.pingora.local", 8080);
    name_ok("localhost:80", "localhost", 80);
    name_ok("absolute.example.:443", "absolute.example.", 443);
    name_ok("_srv-x.a-b.test:1", "_srv-x.a-b.test", 1);
    name_ok("1.2.3.example:65535", "1.2.3.example", 65535);
    name_ok("x9:8080", "x9", 8080);
    char label63[80], name253[300];
    memset(label63, 'a', 63);
    snprintf(label63 + 63, sizeof(label63) - 63, ".test:80");
    name_ok(label63, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.test", 80);
    /* 253 characters: 63 + 1 + 63 + 1 + 63 + 1 + 61 */
    size_t n = 0;
    for (int i = 0; i < 4; i++) {
        int len = i < 3 ? 63 : 61;
        memset(name253 + n, 'a' + i, (size_t)len);
        n += (size_t)len;
        name253[n++] = i < 3 ? '.' : ':';
    }
    snprintf(name253 + n, sizeof(name253) - n, "80");
    gw_backend_t b;
    sl_error_t err = {0};
    cr_assert_eq(parse_backend(name253, &b, &err), 0, "%s", err.msg);
    cr_assert_eq(strlen(b.host), 253);
    gw_backend_free(&b);
}

Test(upstream_dns, what_is_not_a_name)
{
    const char *bad = "expected ip:port, name:port or unix:/path";
    refused("web.test", bad);      /* no port */
    refused("-web.test:80", bad);  /* label starts with '-' */
    refused("web-.test:80", bad);  /* label ends with '-' */
    refused("web..test:80", bad);  /* empty label */
    refused("web test:80", bad);   /* space */
    refused("web.test/x:80", bad); /* slash */
    refused("1.2.3.400:80", bad);  /* all-digit last label: a mistyped address */
    refused("10.0.0.1.5:80", bad); /* same */
    refused("web.test:0", "invalid port (1-65535)");
    refused("web.test:65536", "invalid port (1-65535)");
    refused("web.test:+80", "invalid port (1-65535)");
    refused("web.test:8o", "invalid port (1-65535)");
    refused("unix:", "invalid unix socket path");
    char label64[80];
    memset(label64, 'a', 64);
    snprintf(label64 + 64, sizeof(label64) - 64, ".test:80");
    refused(label64, bad);
}

Test(upstream_dns, addresses_and_sockets_are_not_names)
{
    gw_backend_t b;
    sl_error_t err = {0};
    cr_assert_eq(parse_backend("127.0.0.1:80", &b, &err), 0);
    cr_assert_null(b.host);
    cr_assert_null(gw_backend_name(&b)); /* an IP address has no default name */
    gw_backend_free(&b);
    cr_assert_eq(parse_backend("unix:/tmp/x.sock", &b, &err), 0);
    cr_assert_null(b.host);
    cr_assert_str_eq(gw_backend_name(&b), "localhost");
    gw_backend_free(&b);
}

static gw_config_t *load(const char *yaml, sl_error_t *err)
{
    cJSON *root = NULL;
    cr_assert_eq(sl__cfg_parse(yaml, strlen(yaml), SL_CFG_YAML, 10000, &root, err), 0);
    gw_config_t *c = NULL;
    if (gw_config_parse(root, &c, err) != 0)
        return NULL;
    return c;
}

Test(upstream_dns, dns_section_fills_the_resolver_options)
{
    sl_error_t err = {0};
    gw_config_t *c = load("dns: {servers: ['127.0.0.1:5353', '[::1]'], timeout: 250ms, tries: 3,"
                          " min_ttl: 2s, max_ttl: 1m, negative_ttl: 0, cache_size: 10}\n",
                          &err);
    cr_assert_not_null(c, "%s", err.msg);
    cr_assert_eq(c->dns.n_servers, 2);
    cr_assert_str_eq(c->dns.servers[1], "[::1]");
    cr_assert_eq(c->dns.timeout_ms, 250);
    cr_assert_eq(c->dns.tries, 3);
    cr_assert_eq(c->dns.min_ttl_s, 2);
    cr_assert_eq(c->dns.max_ttl_s, 60);
    cr_assert_eq(c->dns.negative_ttl_s, 0);
    cr_assert_eq(c->dns.cache_size, 10);
    gw_config_release(c);

    c = load("routes: []\n", &err); /* no dns section: the resolver's defaults */
    sl_dns_options_t d;
    sl_dns_options_init(&d);
    cr_assert_eq(c->dns.n_servers, 0);
    cr_assert_eq(c->dns.timeout_ms, d.timeout_ms);
    cr_assert_eq(c->dns.tries, d.tries);
    cr_assert_eq(c->dns.max_ttl_s, d.max_ttl_s);
    gw_config_release(c);
}

Test(upstream_dns, upstream_dns_keys)
{
    sl_error_t err = {0};
    gw_config_t *c = load("upstreams:\n"
                          "  w: {backends: ['a.test:80'], dns: {watch: true, family: ipv6}}\n"
                          "  p: {backends: ['a.test:80']}\n",
                          &err);
    cr_assert_not_null(c, "%s", err.msg);
    gw_upstream_t *w = gw_config_upstream(c, "w"), *p = gw_config_upstream(c, "p");
    cr_assert(w->dns_watch);
    cr_assert_eq(w->dns_family, AF_INET6);
    cr_assert_not(p->dns_watch);
    cr_assert_eq(p->dns_family, AF_UNSPEC);
    gw_config_release(c);
}
