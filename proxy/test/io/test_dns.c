/* DNS resolver: error mapping, server strings, options, and the resolver itself against a small
 * DNS server running on the test's own loop (127.0.0.1, an ephemeral UDP port): A/AAAA answers,
 * NXDOMAIN/NODATA/SERVFAIL/REFUSED, silent and dead servers, TTL clamping and expiry, negative
 * caching, coalescing, LRU eviction, cancellation, closing with lookups in flight, watches. */
#include <ares.h>
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sluice/dns.h"

/* ---- a DNS server on the test loop -------------------------------------------------------- */

typedef struct rec {
    char name[128];
    int type; /* 1 (A) or 28 (AAAA) */
    uint32_t ttl;
    uint8_t addr[16];
} rec_t;

typedef struct tsrv {
    uv_udp_t udp;
    uv_tcp_t tcp;
    int port;
    rec_t recs[160];
    int n;
    bool drop; /* answer nothing */
    int rcode; /* answer every query with this code (0: look up the records) */
    int queries, queries_a, queries_aaaa, truncated, tcp_queries;
} tsrv_t;

static uv_loop_t loop;
static tsrv_t srv;
static sl_resolver_t *res;

static void srv_add(const char *name, const char *ip, uint32_t ttl)
{
    rec_t *r = &srv.recs[srv.n++];
    cr_assert(srv.n <= (int)(sizeof(srv.recs) / sizeof(srv.recs[0])));
    snprintf(r->name, sizeof(r->name), "%s", name);
    r->ttl = ttl;
    if (inet_pton(AF_INET, ip, r->addr) == 1)
        r->type = 1;
    else if (inet_pton(AF_INET6, ip, r->addr) == 1)
        r->type = 28;
    else
        cr_assert_fail("bad ip %s", ip);
}

static void srv_clear(const char *name)
{
    int k = 0;
    for (int i = 0; i < srv.n; i++)
        if (strcasecmp(srv.recs[i].name, name) != 0)
            srv.recs[k++] = srv.recs[i];
    srv.n = k;
}

static void srv_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static char mem[2048];
    *buf = uv_buf_init(mem, sizeof(mem));
}

static void put16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* Builds the answer to one query (q, n) into out: header + question copied, then the matching
 * records (name compressed). Returns its length, or 0 to stay silent. */
static size_t srv_answer(const uint8_t *q, size_t n, uint8_t *out, size_t cap)
{
    if (n < 17)
        return 0;
    char name[256];
    size_t nl = 0, i = 12;
    while (i < n && q[i]) {
        size_t l = q[i++];
        if (i + l > n || nl + l + 2 > sizeof(name))
            return 0;
        if (nl)
            name[nl++] = '.';
        memcpy(name + nl, q + i, l);
        nl += l;
        i += l;
    }
    name[nl] = '\0';
    if (i + 5 > n)
        return 0;
    unsigned qtype = (unsigned)(q[i + 1] << 8 | q[i + 2]);
    size_t qend = i + 5;
    srv.queries++;
    srv.queries_a += qtype == 1;
    srv.queries_aaaa += qtype == 28;
    if (srv.drop || strncmp(name, "drop.", 5) == 0)
        return 0;
    memcpy(out, q, qend);
    int rcode = srv.rcode;
    if (!rcode && strncmp(name, "servfail.", 9) == 0)
        rcode = 2;
    if (!rcode && strncmp(name, "refused.", 8) == 0)
        rcode = 5;
    bool known = false;
    size_t o = qend;
    unsigned an = 0;
    for (int k = 0; k < srv.n && !rcode; k++) {
        const rec_t *r = &srv.recs[k];
        if (strcasecmp(r->name, name) != 0)
            continue;
        known = true;
        if ((unsigned)r->type != qtype || o + 28 > cap)
            continue;
        size_t len = r->type == 1 ? 4 : 16;
        put16(out + o, 0xc00c);
        put16(out + o + 2, qtype);
        put16(out + o + 4, 1);
        put16(out + o + 6, r->ttl >> 16);
        put16(out + o + 8, r->ttl & 0xffff);
        put16(out + o + 10, (unsigned)len);
        memcpy(out + o + 12, r->addr, len);
        o += 12 + len;
        an++;
    }
    if (!rcode && !known)
        rcode = 3; /* NXDOMAIN */
    put16(out + 2, 0x8180 | (unsigned)rcode);
    put16(out + 4, 1);
    put16(out + 6, an);
    put16(out + 8, 0);
    put16(out + 10, 0);
    return o;
}

static void srv_recv(uv_udp_t *u, ssize_t n, const uv_buf_t *buf, const struct sockaddr *from,
                     unsigned flags)
{
    static uint8_t out[8192];
    if (n <= 0 || !from)
        return;
    size_t o = srv_answer((const uint8_t *)buf->base, (size_t)n, out, sizeof(out));
    if (o > 512) { /* too big for UDP: truncated, the client retries over TCP */
        o = 12;
        while (out[o])
            o += out[o] + 1u;
        o += 5;
        put16(out + 2, 0x8380);
        put16(out + 6, 0);
        srv.truncated++;
    }
    if (o == 0)
        return;
    uv_buf_t b = uv_buf_init((char *)out, (unsigned)o);
    uv_udp_try_send(u, &b, 1, from);
}

/* DNS over TCP: two-byte length, then the message. */
typedef struct tconn {
    uv_tcp_t h;
    uint8_t buf[4096];
    size_t len;
} tconn_t;

static void tconn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    tconn_t *c = h->data;
    *b = uv_buf_init((char *)c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len));
}

static void tconn_closed(uv_handle_t *h)
{
    free(h->data);
}

static void tconn_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    tconn_t *c = st->data;
    static uint8_t out[8192];
    if (n < 0) {
        uv_close((uv_handle_t *)st, tconn_closed);
        return;
    }
    c->len += (size_t)n;
    while (c->len >= 2) {
        size_t ql = (size_t)(c->buf[0] << 8 | c->buf[1]);
        if (c->len < 2 + ql)
            break;
        srv.tcp_queries++;
        size_t o = srv_answer(c->buf + 2, ql, out + 2, sizeof(out) - 2);
        if (o) {
            put16(out, (unsigned)o);
            uv_buf_t ob = uv_buf_init((char *)out, (unsigned)o + 2);
            cr_assert_eq(uv_try_write(st, &ob, 1), (int)o + 2);
        }
        memmove(c->buf, c->buf + 2 + ql, c->len - 2 - ql);
        c->len -= 2 + ql;
    }
}

static void srv_accept(uv_stream_t *l, int status)
{
    tconn_t *c = calloc(1, sizeof(*c));
    cr_assert(c);
    uv_tcp_init(&loop, &c->h);
    c->h.data = c;
    cr_assert_eq(uv_accept(l, (uv_stream_t *)&c->h), 0);
    uv_read_start((uv_stream_t *)&c->h, tconn_alloc, tconn_read);
}

/* ---- loop helpers ------------------------------------------------------------------------- */

static void guard_fired(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

/* Runs the loop until *flag or ms elapse. Returns *flag. */
static bool run_until(bool *flag, uint64_t ms)
{
    bool expired = false;
    uv_timer_t guard;
    uv_timer_init(&loop, &guard);
    guard.data = &expired;
    uv_timer_start(&guard, guard_fired, ms, 0);
    while (!*flag && !expired)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return *flag;
}

static void run_for(uint64_t ms)
{
    bool never = false;
    run_until(&never, ms);
}

/* One answer, copied out of the callback. */
typedef struct got {
    int calls;
    int err;
    sl_dns_result_t res;
    char host[256];
    struct sockaddr_storage addrs[SL_DNS_MAX_ADDRS];
    bool done;
    uint64_t at;
} got_t;

static void on_answer(void *data, int err, const sl_dns_result_t *r)
{
    got_t *g = data;
    g->calls++;
    g->err = err;
    g->res = *r;
    snprintf(g->host, sizeof(g->host), "%s", r->host);
    cr_assert_not_null(r->addrs);
    memcpy(g->addrs, r->addrs, r->n * sizeof(r->addrs[0]));
    g->res.addrs = g->addrs;
    g->res.host = g->host;
    g->done = true;
    g->at = uv_now(&loop);
}

static sl_resolver_t *make_resolver(const sl_dns_options_t *o)
{
    sl_resolver_t *r = NULL;
    cr_assert_eq(sl_resolver_new(&loop, o, &r), 0);
    return r;
}

/* Options pointing at the test server, quick timeouts, and an empty resolv.conf (no search
 * domains; the machine's servers are never used). */
static void test_options(sl_dns_options_t *o)
{
    static char server[32];
    static const char *servers[1] = {server};
    snprintf(server, sizeof(server), "127.0.0.1:%d", srv.port);
    sl_dns_options_init(o);
    o->servers = servers;
    o->n_servers = 1;
    o->resolv_conf = "/dev/null";
    o->timeout_ms = 200;
    o->tries = 2;
}

/* A TCP listener and a UDP socket on the same free loopback port. */
static void srv_bind(void)
{
    for (int attempt = 0; attempt < 50; attempt++) {
        struct sockaddr_in a;
        socklen_t len = sizeof(a);
        uv_ip4_addr("127.0.0.1", 0, &a);
        int t = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        cr_assert(t >= 0 && u >= 0);
        cr_assert_eq(bind(t, (struct sockaddr *)&a, sizeof(a)), 0);
        cr_assert_eq(listen(t, 16), 0);
        getsockname(t, (struct sockaddr *)&a, &len);
        if (bind(u, (struct sockaddr *)&a, sizeof(a)) == 0) {
            srv.port = ntohs(a.sin_port);
            cr_assert_eq(uv_udp_init(&loop, &srv.udp), 0);
            cr_assert_eq(uv_udp_open(&srv.udp, u), 0);
            cr_assert_eq(uv_udp_recv_start(&srv.udp, srv_alloc, srv_recv), 0);
            cr_assert_eq(uv_tcp_init(&loop, &srv.tcp), 0);
            cr_assert_eq(uv_tcp_open(&srv.tcp, t), 0);
            cr_assert_eq(uv_listen((uv_stream_t *)&srv.tcp, 16, srv_accept), 0);
            return;
        }
        close(t);
        close(u);
    }
    cr_assert_fail("no free port for the test DNS server");
}

static void setup(void)
{
    cr_assert_eq(uv_loop_init(&loop), 0);
    memset(&srv, 0, sizeof(srv));
    srv_bind();
    sl_dns_options_t o;
    test_options(&o);
    res = make_resolver(&o);
}

static void closed(void *data)
{
    *(bool *)data = true;
}

static void close_resolver(sl_resolver_t *r)
{
    bool done = false;
    sl_resolver_close(r, closed, &done);
    cr_assert(run_until(&done, 2000), "resolver close callback never ran");
}

static void teardown(void)
{
    if (res)
        close_resolver(res);
    res = NULL;
    uv_close((uv_handle_t *)&srv.udp, NULL);
    uv_close((uv_handle_t *)&srv.tcp, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0, "handles left open on the loop");
}

static void resolve_wait(const char *host, int family, got_t *g)
{
    memset(g, 0, sizeof(*g));
    cr_assert_not_null(sl_dns_resolve(res, host, 8080, family, on_answer, g));
    cr_assert_eq(g->calls, 0, "callback ran inside sl_dns_resolve");
    cr_assert(run_until(&g->done, 3000), "no answer for %s", host);
}

static const char *ip_of(const struct sockaddr_storage *ss, char *buf, size_t cap)
{
    if (ss->ss_family == AF_INET)
        return inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, buf, (socklen_t)cap);
    return inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, buf, (socklen_t)cap);
}

static uint16_t port_of(const struct sockaddr_storage *ss)
{
    return ntohs(ss->ss_family == AF_INET ? ((const struct sockaddr_in *)ss)->sin_port
                                          : ((const struct sockaddr_in6 *)ss)->sin6_port);
}

static bool has_ip(const got_t *g, const char *ip)
{
    char buf[64];
    for (size_t i = 0; i < g->res.n; i++)
        if (strcmp(ip_of(&g->addrs[i], buf, sizeof(buf)), ip) == 0)
            return true;
    return false;
}

/* ---- pure functions ----------------------------------------------------------------------- */

Test(dns_errors, ares_codes_map_to_three_clear_classes)
{
    cr_assert_eq(sl_dns_status_from_ares(ARES_SUCCESS), SL_DNS_OK);
    cr_assert_eq(sl_dns_status_from_ares(ARES_ENOTFOUND), SL_DNS_NOT_FOUND);
    cr_assert_eq(sl_dns_status_from_ares(ARES_ENODATA), SL_DNS_NOT_FOUND);
    cr_assert_eq(sl_dns_status_from_ares(ARES_ESERVFAIL), SL_DNS_SERVER_FAILURE);
    cr_assert_eq(sl_dns_status_from_ares(ARES_EREFUSED), SL_DNS_SERVER_FAILURE);
    cr_assert_eq(sl_dns_status_from_ares(ARES_EBADRESP), SL_DNS_SERVER_FAILURE);
    cr_assert_eq(sl_dns_status_from_ares(ARES_ETIMEOUT), SL_DNS_TIMEOUT);
    cr_assert_eq(sl_dns_status_from_ares(ARES_ECONNREFUSED), SL_DNS_TIMEOUT);
    cr_assert_eq(sl_dns_status_from_ares(ARES_EBADNAME), SL_DNS_BAD_NAME);
    cr_assert_eq(sl_dns_status_from_ares(ARES_ENOMEM), SL_DNS_ERROR);
    cr_assert_eq(sl_dns_status_from_ares(9999), SL_DNS_ERROR);
    cr_assert(strstr(sl_dns_strerror(ARES_ENOTFOUND), "not found"));
    cr_assert(strstr(sl_dns_strerror(ARES_ENOTFOUND), "NXDOMAIN"));
    cr_assert(strstr(sl_dns_strerror(ARES_ENODATA), "NODATA"));
    cr_assert(strstr(sl_dns_strerror(ARES_ESERVFAIL), "DNS server failure (SERVFAIL)"));
    cr_assert(strstr(sl_dns_strerror(ARES_EREFUSED), "DNS server failure"));
    cr_assert(strstr(sl_dns_strerror(ARES_ETIMEOUT), "DNS timeout"));
    cr_assert(strstr(sl_dns_strerror(ARES_ECONNREFUSED), "DNS timeout"));
    cr_assert_not_null(sl_dns_strerror(9999));
    cr_assert_str_eq(sl_dns_status_name(SL_DNS_NOT_FOUND), "NOT_FOUND");
    cr_assert_str_eq(sl_dns_status_name(SL_DNS_SERVER_FAILURE), "SERVER_FAILURE");
    cr_assert_str_eq(sl_dns_status_name(SL_DNS_TIMEOUT), "TIMEOUT");
    cr_assert_eq(sl_error_http_status(SL_EDNS), 502);
}

Test(dns_options, server_strings)
{
    struct sockaddr_storage ss;
    char buf[64];
    cr_assert_eq(sl_dns_parse_server("10.0.0.2", &ss), 0);
    cr_assert_eq(ss.ss_family, AF_INET);
    cr_assert_eq(port_of(&ss), 53);
    cr_assert_str_eq(ip_of(&ss, buf, sizeof(buf)), "10.0.0.2");
    cr_assert_eq(sl_dns_parse_server("172.28.0.2:5353", &ss), 0);
    cr_assert_eq(port_of(&ss), 5353);
    cr_assert_eq(sl_dns_parse_server("[fd00::2]:5300", &ss), 0);
    cr_assert_eq(ss.ss_family, AF_INET6);
    cr_assert_eq(port_of(&ss), 5300);
    cr_assert_str_eq(ip_of(&ss, buf, sizeof(buf)), "fd00::2");
    cr_assert_eq(sl_dns_parse_server("[::1]", &ss), 0);
    cr_assert_eq(port_of(&ss), 53);
    cr_assert_eq(sl_dns_parse_server("::1", &ss), 0, "a bare IPv6 address has no port");
    cr_assert_eq(port_of(&ss), 53);
    const char *bad[] = {"",          "10.0.0.2:",    "10.0.0.2:0",    "10.0.0.2:65536",
                         "dns.local", "dns.local:53", "[::1",          "[::1]x",
                         "[::1]:",    "1.2.3.4:53x",  "[10.0.0.1]:53", "10.0.0.256",
                         ":53",       "1.2.3.4:-1",   "fe80::1%eth0",  "1.2.3.4: 53"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_neq(sl_dns_parse_server(bad[i], &ss), 0, "accepted \"%s\"", bad[i]);
    cr_assert_neq(sl_dns_parse_server(NULL, &ss), 0);
}

Test(dns_options, defaults_and_validation)
{
    sl_dns_options_t o;
    sl_error_t err = {0};
    sl_dns_options_init(&o);
    cr_assert_eq(o.timeout_ms, 2000);
    cr_assert_eq(o.tries, 2);
    cr_assert_leq(o.timeout_ms * (uint64_t)o.tries, 10000,
                  "a dead server must fail within "
                  "the 10 s connect timeout");
    cr_assert_eq(o.min_ttl_s, 1);
    cr_assert_eq(o.max_ttl_s, 300);
    cr_assert_eq(o.negative_ttl_s, 5);
    cr_assert_eq(o.cache_size, 1024);
    cr_assert_eq(o.n_servers, 0);
    cr_assert_eq(sl_dns_options_check(&o, &err), 0);

    const char *servers[] = {"10.0.0.2", "dns.example:53"};
    o.servers = servers;
    o.n_servers = 2;
    cr_assert_eq(sl_dns_options_check(&o, &err), SL_ECONFIG);
    cr_assert(strstr(err.msg, "dns.servers[1]"), "%s", err.msg);
    cr_assert(strstr(err.msg, "dns.example:53"), "%s", err.msg);
    o.n_servers = 1;
    cr_assert_eq(sl_dns_options_check(&o, &err), 0);

    o.min_ttl_s = 10;
    o.max_ttl_s = 5;
    cr_assert_eq(sl_dns_options_check(&o, &err), SL_ECONFIG);
    cr_assert(strstr(err.msg, "min_ttl"), "%s", err.msg);
    sl_dns_options_init(&o);
    o.tries = 0;
    cr_assert_eq(sl_dns_options_check(&o, &err), SL_ECONFIG);
    sl_dns_options_init(&o);
    o.timeout_ms = 0;
    cr_assert_eq(sl_dns_options_check(&o, &err), SL_ECONFIG);

    uv_loop_t l;
    uv_loop_init(&l);
    sl_resolver_t *r = NULL;
    cr_assert_eq(sl_resolver_new(&l, &o, &r), SL_ECONFIG);
    cr_assert_null(r);
    cr_assert_eq(uv_loop_close(&l), 0);
}

/* ---- answers ------------------------------------------------------------------------------ */

TestSuite(dns, .init = setup, .fini = teardown, .timeout = 30);

Test(dns, a_and_aaaa_with_port_delivered_later)
{
    srv_add("web.test", "10.0.0.1", 60);
    srv_add("web.test", "10.0.0.2", 60);
    srv_add("web.test", "fd00::1", 60);
    got_t g;
    resolve_wait("web.test", AF_UNSPEC, &g);
    cr_assert_eq(g.calls, 1);
    cr_assert_eq(g.err, 0);
    cr_assert_eq(g.res.status, SL_DNS_OK);
    cr_assert_str_eq(g.res.host, "web.test");
    cr_assert_eq(g.res.family, AF_UNSPEC);
    cr_assert_eq(g.res.n, 3);
    cr_assert(has_ip(&g, "10.0.0.1") && has_ip(&g, "10.0.0.2") && has_ip(&g, "fd00::1"));
    for (size_t i = 0; i < g.res.n; i++)
        cr_assert_eq(port_of(&g.addrs[i]), 8080);
    cr_assert_not(g.res.cached);
    cr_assert_eq(srv.queries_a, 1);
    cr_assert_eq(srv.queries_aaaa, 1);
}

Test(dns, explicit_families)
{
    srv_add("web.test", "10.0.0.1", 60);
    srv_add("web.test", "fd00::1", 60);
    got_t g;
    resolve_wait("web.test", AF_INET, &g);
    cr_assert_eq(g.res.n, 1);
    cr_assert_eq(g.addrs[0].ss_family, AF_INET);
    cr_assert_eq(srv.queries_aaaa, 0);
    resolve_wait("web.test", AF_INET6, &g);
    cr_assert_eq(g.res.n, 1);
    cr_assert_eq(g.addrs[0].ss_family, AF_INET6);
    cr_assert_not(g.res.cached, "families are cached apart");
}

Test(dns, nxdomain_is_not_found_and_cached_briefly)
{
    got_t g;
    resolve_wait("missing.test", AF_UNSPEC, &g);
    cr_assert_eq(g.err, SL_EDNS);
    cr_assert_eq(g.res.status, SL_DNS_NOT_FOUND);
    cr_assert_eq(g.res.n, 0);
    cr_assert(strstr(g.res.message, "NXDOMAIN"), "%s", g.res.message);
    cr_assert_gt(g.res.ttl_ms, 4000);
    cr_assert_leq(g.res.ttl_ms, 5000);
    int q = srv.queries;
    resolve_wait("missing.test", AF_UNSPEC, &g);
    cr_assert_eq(g.res.status, SL_DNS_NOT_FOUND);
    cr_assert(g.res.cached);
    cr_assert_eq(srv.queries, q, "negative answer was not cached");
    sl_dns_stats_t st;
    sl_dns_stats(res, &st);
    cr_assert_eq(st.negative_hits, 1);
}

Test(dns, nodata_is_not_found)
{
    srv_add("v4.test", "10.0.0.9", 60);
    got_t g;
    resolve_wait("v4.test", AF_INET6, &g);
    cr_assert_eq(g.err, SL_EDNS);
    cr_assert_eq(g.res.status, SL_DNS_NOT_FOUND);
    cr_assert(strstr(g.res.message, "NODATA"), "%s", g.res.message);
    resolve_wait("v4.test", AF_UNSPEC, &g);
    cr_assert_eq(g.res.status, SL_DNS_OK, "A without AAAA is an answer for AF_UNSPEC");
    cr_assert_eq(g.res.n, 1);
}

Test(dns, servfail_is_a_server_failure_and_not_cached)
{
    got_t g;
    resolve_wait("servfail.test", AF_INET, &g);
    cr_assert_eq(g.err, SL_EDNS);
    cr_assert_eq(g.res.status, SL_DNS_SERVER_FAILURE, "%s", g.res.message);
    cr_assert(strstr(g.res.message, "SERVFAIL"), "%s", g.res.message);
    cr_assert_eq(g.res.ttl_ms, 0);
    int q = srv.queries;
    resolve_wait("servfail.test", AF_INET, &g);
    cr_assert_gt(srv.queries, q, "a server failure must not be cached");
}

Test(dns, refused_is_a_server_failure)
{
    got_t g;
    resolve_wait("refused.test", AF_UNSPEC, &g);
    cr_assert_eq(g.res.status, SL_DNS_SERVER_FAILURE, "%s", g.res.message);
    cr_assert(strstr(g.res.message, "refused"), "%s", g.res.message);
}

Test(dns, silent_server_times_out_within_timeout_times_tries)
{
    srv.drop = true;
    got_t g;
    uint64_t t0 = uv_now(&loop);
    resolve_wait("web.test", AF_UNSPEC, &g);
    uint64_t took = g.at - t0;
    cr_assert_eq(g.err, SL_EDNS);
    cr_assert_eq(g.res.status, SL_DNS_TIMEOUT, "%s", g.res.message);
    cr_assert(strstr(g.res.message, "DNS timeout"), "%s", g.res.message);
    cr_assert_geq(took, 190, "gave up after %llu ms", (unsigned long long)took);
    cr_assert_leq(took, 400 + 150, "took %llu ms, budget 400 ms", (unsigned long long)took);
    cr_assert_geq(srv.queries, 2, "tries were not made");
    sl_dns_stats_t st;
    sl_dns_stats(res, &st);
    cr_assert_eq(st.timeouts, 1);
    cr_assert_eq(st.failures, 1);
}

Test(dns, dead_server_fails_fast)
{
    /* Nothing listens on the port any more: ICMP port unreachable, or a timeout. */
    close_resolver(res);
    uv_close((uv_handle_t *)&srv.udp, NULL);
    uv_close((uv_handle_t *)&srv.tcp, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    sl_dns_options_t o;
    test_options(&o);
    res = make_resolver(&o);
    got_t g;
    uint64_t t0 = uv_now(&loop);
    resolve_wait("web.test", AF_UNSPEC, &g);
    cr_assert_eq(g.res.status, SL_DNS_TIMEOUT, "%s", g.res.message);
    cr_assert_leq(g.at - t0, 550);
    uv_udp_init(&loop, &srv.udp); /* for teardown */
    uv_tcp_init(&loop, &srv.tcp);
}

/* ---- cache -------------------------------------------------------------------------------- */

Test(dns, cache_hit_is_still_asynchronous)
{
    srv_add("web.test", "10.0.0.1", 60);
    got_t g;
    resolve_wait("web.test", AF_INET, &g);
    cr_assert_not(g.res.cached);
    resolve_wait("WEB.Test", AF_INET, &g); /* names are case-insensitive */
    cr_assert(g.res.cached);
    cr_assert_str_eq(g.res.host, "WEB.Test");
    cr_assert_eq(g.res.n, 1);
    cr_assert_eq(srv.queries, 1);
    cr_assert_gt(g.res.ttl_ms, 58000);
    cr_assert_leq(g.res.ttl_ms, 60000);
}

Test(dns, ttl_is_clamped_to_max)
{
    srv_add("long.test", "10.0.0.1", 86400);
    got_t g;
    resolve_wait("long.test", AF_INET, &g);
    cr_assert_leq(g.res.ttl_ms, 300 * 1000);
    cr_assert_gt(g.res.ttl_ms, 299 * 1000);
}

Test(dns, ttl_is_clamped_to_min)
{
    close_resolver(res);
    sl_dns_options_t o;
    test_options(&o);
    o.min_ttl_s = 2;
    res = make_resolver(&o);
    srv_add("zero.test", "10.0.0.1", 0);
    got_t g;
    resolve_wait("zero.test", AF_INET, &g);
    cr_assert_gt(g.res.ttl_ms, 1900);
    cr_assert_leq(g.res.ttl_ms, 2000);
    resolve_wait("zero.test", AF_INET, &g);
    cr_assert(g.res.cached, "a TTL of 0 is cached for min_ttl");
    cr_assert_eq(srv.queries, 1);
}

Test(dns, expired_answer_is_looked_up_again)
{
    close_resolver(res);
    sl_dns_options_t o;
    test_options(&o);
    o.min_ttl_s = 0;
    res = make_resolver(&o);
    srv_add("short.test", "10.0.0.1", 1);
    got_t g;
    resolve_wait("short.test", AF_INET, &g);
    cr_assert(has_ip(&g, "10.0.0.1"));
    srv_clear("short.test");
    srv_add("short.test", "10.0.0.2", 1);
    resolve_wait("short.test", AF_INET, &g);
    cr_assert(g.res.cached);
    cr_assert(has_ip(&g, "10.0.0.1"), "served from the cache within the TTL");
    run_for(1100);
    resolve_wait("short.test", AF_INET, &g);
    cr_assert_not(g.res.cached);
    cr_assert(has_ip(&g, "10.0.0.2"), "the new answer after the TTL");
    cr_assert_eq(srv.queries, 2);
}

Test(dns, smallest_ttl_of_the_answer_wins)
{
    srv_add("mixed.test", "10.0.0.1", 100);
    srv_add("mixed.test", "10.0.0.2", 30);
    got_t g;
    resolve_wait("mixed.test", AF_INET, &g);
    cr_assert_leq(g.res.ttl_ms, 30000);
    cr_assert_gt(g.res.ttl_ms, 29000);
}

Test(dns, lru_eviction_keeps_cache_size)
{
    close_resolver(res);
    sl_dns_options_t o;
    test_options(&o);
    o.cache_size = 2;
    res = make_resolver(&o);
    srv_add("a.test", "10.0.0.1", 60);
    srv_add("b.test", "10.0.0.2", 60);
    srv_add("c.test", "10.0.0.3", 60);
    got_t g;
    resolve_wait("a.test", AF_INET, &g);
    resolve_wait("b.test", AF_INET, &g);
    resolve_wait("a.test", AF_INET, &g); /* a is now the most recent */
    cr_assert(g.res.cached);
    resolve_wait("c.test", AF_INET, &g); /* evicts b */
    sl_dns_stats_t st;
    sl_dns_stats(res, &st);
    cr_assert_eq(st.entries, 2);
    cr_assert_eq(st.evictions, 1);
    resolve_wait("a.test", AF_INET, &g);
    cr_assert(g.res.cached, "the recently used entry stayed");
    int q = srv.queries;
    resolve_wait("b.test", AF_INET, &g);
    cr_assert_not(g.res.cached, "the least recently used entry went");
    cr_assert_eq(srv.queries, q + 1);
}

Test(dns, cache_size_zero_still_coalesces)
{
    close_resolver(res);
    sl_dns_options_t o;
    test_options(&o);
    o.cache_size = 0;
    res = make_resolver(&o);
    srv_add("web.test", "10.0.0.1", 60);
    got_t g[5];
    memset(g, 0, sizeof(g));
    for (int i = 0; i < 5; i++)
        cr_assert_not_null(sl_dns_resolve(res, "web.test", 80, AF_INET, on_answer, &g[i]));
    cr_assert(run_until(&g[4].done, 2000));
    cr_assert_eq(srv.queries, 1);
    got_t again;
    resolve_wait("web.test", AF_INET, &again);
    cr_assert_not(again.res.cached);
    cr_assert_eq(srv.queries, 2);
    sl_dns_stats_t st;
    sl_dns_stats(res, &st);
    cr_assert_eq(st.entries, 0);
}

Test(dns, peek_reads_the_cache_synchronously)
{
    srv_add("web.test", "10.0.0.1", 60);
    srv_add("web.test", "10.0.0.2", 60);
    struct sockaddr_storage a[4];
    size_t n = 99;
    uint64_t ttl = 99;
    cr_assert_eq(sl_dns_peek(res, "web.test", 443, AF_INET, a, 4, &n, &ttl), UV_ENOENT);
    cr_assert_eq(n, 0);
    cr_assert_eq(srv.queries, 0, "peek never starts a lookup");
    got_t g;
    resolve_wait("web.test", AF_INET, &g);
    cr_assert_eq(sl_dns_peek(res, "web.test", 443, AF_INET, a, 4, &n, &ttl), 0);
    cr_assert_eq(n, 2);
    cr_assert_eq(port_of(&a[0]), 443);
    cr_assert_gt(ttl, 59000);
    cr_assert_eq(sl_dns_peek(res, "web.test", 443, AF_INET, a, 1, &n, NULL), 0);
    cr_assert_eq(n, 1, "at most cap addresses");
    cr_assert_eq(sl_dns_peek(res, "web.test", 443, AF_INET6, a, 4, &n, NULL), UV_ENOENT);
    resolve_wait("gone.test", AF_INET, &g);
    cr_assert_eq(sl_dns_peek(res, "gone.test", 443, AF_INET, a, 4, &n, NULL), SL_EDNS);
    cr_assert_eq(sl_dns_peek(res, "10.1.2.3", 443, AF_UNSPEC, a, 4, &n, NULL), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(port_of(&a[0]), 443);
}

Test(dns, big_answers_come_over_tcp_and_are_capped)
{
    char ip[32];
    for (int i = 0; i < 100; i++) {
        snprintf(ip, sizeof(ip), "10.0.1.%d", i + 1);
        srv_add("many.test", ip, 60);
    }
    got_t g;
    resolve_wait("many.test", AF_INET, &g);
    cr_assert_eq(g.res.status, SL_DNS_OK, "%s", g.res.message);
    cr_assert_eq(g.res.n, SL_DNS_MAX_ADDRS);
    cr_assert_eq(srv.truncated, 1);
    cr_assert_eq(srv.tcp_queries, 1);
}

/* ---- coalescing, cancellation, closing ---------------------------------------------------- */

Test(dns, concurrent_lookups_are_coalesced)
{
    srv_add("web.test", "10.0.0.1", 60);
    got_t g[10];
    memset(g, 0, sizeof(g));
    for (int i = 0; i < 10; i++)
        cr_assert_not_null(
            sl_dns_resolve(res, "web.test", (uint16_t)(8000 + i), AF_UNSPEC, on_answer, &g[i]));
    bool all = false;
    for (int k = 0; k < 200 && !all; k++) {
        run_for(10);
        all = true;
        for (int i = 0; i < 10; i++)
            all = all && g[i].done;
    }
    cr_assert(all);
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(g[i].calls, 1);
        cr_assert_eq(g[i].res.n, 1);
        cr_assert_eq(port_of(&g[i].addrs[0]), 8000 + i, "each waiter gets its own port");
    }
    cr_assert_eq(srv.queries_a, 1, "one query for the burst");
    sl_dns_stats_t st;
    sl_dns_stats(res, &st);
    cr_assert_eq(st.lookups, 1);
    cr_assert_eq(st.coalesced, 9);
    cr_assert_eq(st.resolves, 10);
}

Test(dns, cancelled_query_never_calls_back_but_fills_the_cache)
{
    srv_add("web.test", "10.0.0.1", 60);
    got_t a, b;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    sl_dns_query_t *qa = sl_dns_resolve(res, "web.test", 80, AF_INET, on_answer, &a);
    sl_dns_resolve(res, "web.test", 80, AF_INET, on_answer, &b);
    sl_dns_cancel(qa);
    cr_assert(run_until(&b.done, 2000), "the other waiter still gets its answer");
    run_for(50);
    cr_assert_eq(a.calls, 0);

    /* alone, cancelled while in flight: the answer still lands in the cache */
    srv_add("solo.test", "10.0.0.5", 60);
    memset(&a, 0, sizeof(a));
    sl_dns_cancel(sl_dns_resolve(res, "solo.test", 80, AF_INET, on_answer, &a));
    run_for(100);
    cr_assert_eq(a.calls, 0);
    got_t g;
    resolve_wait("solo.test", AF_INET, &g);
    cr_assert(g.res.cached);

    /* a cache hit waiting for delivery can be cancelled too */
    memset(&a, 0, sizeof(a));
    sl_dns_cancel(sl_dns_resolve(res, "solo.test", 80, AF_INET, on_answer, &a));
    run_for(20);
    cr_assert_eq(a.calls, 0);
}

Test(dns, close_with_lookups_in_flight)
{
    srv.drop = true;
    got_t g[3];
    memset(g, 0, sizeof(g));
    sl_dns_resolve(res, "a.test", 80, AF_UNSPEC, on_answer, &g[0]);
    sl_dns_resolve(res, "b.test", 80, AF_INET, on_answer, &g[1]);
    sl_dns_resolve(res, "a.test", 80, AF_UNSPEC, on_answer, &g[2]);
    run_for(30);
    close_resolver(res);
    res = NULL;
    run_for(500);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(g[i].calls, 0);
}

Test(dns, close_with_deliveries_pending)
{
    got_t g;
    memset(&g, 0, sizeof(g));
    sl_dns_resolve(res, "10.0.0.1", 80, AF_UNSPEC, on_answer, &g);
    close_resolver(res);
    res = NULL;
    cr_assert_eq(g.calls, 0);
}

static void close_from_callback(void *data, int err, const sl_dns_result_t *r)
{
    got_t *g = data;
    on_answer(data, err, r);
    sl_resolver_close(res, NULL, NULL);
    res = NULL;
    (void)g;
}

Test(dns, close_from_inside_a_callback)
{
    srv_add("web.test", "10.0.0.1", 60);
    got_t g[2];
    memset(g, 0, sizeof(g));
    sl_dns_resolve(res, "web.test", 80, AF_INET, close_from_callback, &g[0]);
    sl_dns_resolve(res, "web.test", 80, AF_INET, on_answer, &g[1]);
    cr_assert(run_until(&g[0].done, 2000));
    run_for(50);
    cr_assert_eq(g[1].calls, 0, "a query after the close must not be delivered");
}

typedef struct chain {
    got_t first, second;
    bool in_first;
} chain_t;

static void second_answer(void *data, int err, const sl_dns_result_t *r)
{
    chain_t *c = data;
    cr_assert_not(c->in_first, "delivered synchronously from inside a callback");
    on_answer(&c->second, err, r);
}

static void first_answer(void *data, int err, const sl_dns_result_t *r)
{
    chain_t *c = data;
    on_answer(&c->first, err, r);
    c->in_first = true;
    cr_assert_not_null(sl_dns_resolve(res, r->host, 81, AF_INET, second_answer, c));
    c->in_first = false;
}

Test(dns, resolving_again_from_a_callback)
{
    srv_add("web.test", "10.0.0.1", 60);
    chain_t c;
    memset(&c, 0, sizeof(c));
    sl_dns_resolve(res, "web.test", 80, AF_INET, first_answer, &c);
    cr_assert(run_until(&c.second.done, 2000));
    cr_assert(c.second.res.cached);
    cr_assert_eq(port_of(&c.second.addrs[0]), 81);
}

Test(dns, literals_bad_names_and_bad_arguments)
{
    got_t g;
    resolve_wait("192.0.2.7", AF_UNSPEC, &g);
    cr_assert_eq(g.res.status, SL_DNS_OK);
    cr_assert_eq(g.res.n, 1);
    cr_assert_eq(port_of(&g.addrs[0]), 8080);
    resolve_wait("2001:db8::7", AF_INET6, &g);
    cr_assert_eq(g.res.status, SL_DNS_OK);
    resolve_wait("2001:db8::7", AF_INET, &g);
    cr_assert_eq(g.res.status, SL_DNS_NOT_FOUND);
    cr_assert_eq(srv.queries, 0, "literals need no lookup");

    resolve_wait("", AF_UNSPEC, &g);
    cr_assert_eq(g.res.status, SL_DNS_BAD_NAME);
    char longname[400];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    resolve_wait(longname, AF_UNSPEC, &g);
    cr_assert_eq(g.res.status, SL_DNS_BAD_NAME);
    cr_assert_eq(g.err, SL_EDNS);
    char label64[80];
    memset(label64, 'b', 64);
    snprintf(label64 + 64, sizeof(label64) - 64, ".test");
    const char *bad[] = {"has space.test", "a..test",  ".test",  "web.test..",
                         "x\r\ny.test",    "a/b.test", "*.test", label64};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        resolve_wait(bad[i], AF_UNSPEC, &g);
        cr_assert_eq(g.res.status, SL_DNS_BAD_NAME, "\"%s\": %s", bad[i], g.res.message);
    }
    cr_assert_eq(srv.queries, 0, "bad names never reach a server");
    srv_add("web.test", "10.0.0.1", 60);
    resolve_wait("web.test.", AF_INET, &g); /* absolute name */
    cr_assert_eq(g.res.status, SL_DNS_OK, "%s", g.res.message);
    resolve_wait("_svc-1.web.test", AF_INET, &g);
    cr_assert_eq(g.res.status, SL_DNS_NOT_FOUND, "'_' and '-' are name characters");

    cr_assert_null(sl_dns_resolve(res, "web.test", 80, AF_UNIX, on_answer, &g));
    cr_assert_null(sl_dns_resolve(res, NULL, 80, AF_INET, on_answer, &g));
    cr_assert_null(sl_dns_resolve(res, "web.test", 80, AF_INET, NULL, &g));
}

Test(dns, hosts_file_names)
{
    /* "localhost" is in every /etc/hosts; c-ares answers it without a query. */
    got_t g;
    resolve_wait("localhost", AF_INET, &g);
    cr_assert_eq(g.res.status, SL_DNS_OK, "%s", g.res.message);
    cr_assert(has_ip(&g, "127.0.0.1"));
    cr_assert_eq(srv.queries, 0);
}

/* ---- watches ------------------------------------------------------------------------------ */

typedef struct watched {
    int calls;
    got_t last;
    bool unwatch_in_cb;
    sl_dns_watch_t *w;
} watched_t;

static void on_change(void *data, int err, const sl_dns_result_t *r)
{
    watched_t *w = data;
    w->calls++;
    on_answer(&w->last, err, r);
    if (w->unwatch_in_cb)
        sl_dns_unwatch(w->w);
}

static void fast_resolver(void)
{
    close_resolver(res);
    sl_dns_options_t o;
    test_options(&o);
    o.min_ttl_s = 0;
    o.negative_ttl_s = 1;
    res = make_resolver(&o);
}

Test(dns, watch_follows_changes_only)
{
    fast_resolver();
    srv_add("svc.test", "10.0.0.2", 1);
    srv_add("svc.test", "10.0.0.1", 1);
    watched_t w;
    memset(&w, 0, sizeof(w));
    w.w = sl_dns_watch(res, "svc.test", 80, AF_INET, on_change, &w);
    cr_assert_not_null(w.w);
    cr_assert_eq(w.calls, 0);
    cr_assert(run_until(&w.last.done, 2000));
    cr_assert_eq(w.calls, 1);
    cr_assert_eq(w.last.res.n, 2);
    char b0[64], b1[64];
    cr_assert_str_eq(ip_of(&w.last.addrs[0], b0, sizeof(b0)), "10.0.0.1", "sorted");
    cr_assert_str_eq(ip_of(&w.last.addrs[1], b1, sizeof(b1)), "10.0.0.2");

    run_for(2300); /* re-resolved twice, same set: no call */
    cr_assert_geq(srv.queries, 3);
    cr_assert_eq(w.calls, 1);

    srv_clear("svc.test");
    srv_add("svc.test", "10.0.0.3", 1);
    w.last.done = false;
    cr_assert(run_until(&w.last.done, 2500), "the change was not followed");
    cr_assert_eq(w.calls, 2);
    cr_assert_eq(w.last.res.n, 1);
    cr_assert(has_ip(&w.last, "10.0.0.3"));

    srv.rcode = 2; /* an outage keeps the last known set */
    run_for(2200);
    cr_assert_eq(w.calls, 2);

    srv.rcode = 0;
    srv_clear("svc.test"); /* the name disappears: news */
    w.last.done = false;
    cr_assert(run_until(&w.last.done, 3500));
    cr_assert_eq(w.calls, 3);
    cr_assert_eq(w.last.res.status, SL_DNS_NOT_FOUND);
    cr_assert_eq(w.last.err, SL_EDNS);
    sl_dns_unwatch(w.w);
}

Test(dns, watch_reports_a_first_failure_once)
{
    fast_resolver();
    watched_t w;
    memset(&w, 0, sizeof(w));
    srv.rcode = 2;
    w.w = sl_dns_watch(res, "svc.test", 80, AF_INET, on_change, &w);
    cr_assert(run_until(&w.last.done, 2000));
    cr_assert_eq(w.last.res.status, SL_DNS_SERVER_FAILURE);
    run_for(1200);
    cr_assert_eq(w.calls, 1, "failures repeat silently");
    srv.rcode = 0;
    srv_add("svc.test", "10.0.0.1", 1);
    w.last.done = false;
    cr_assert(run_until(&w.last.done, 2500));
    cr_assert_eq(w.last.res.status, SL_DNS_OK);
    cr_assert_eq(w.calls, 2);
    sl_dns_unwatch(w.w);
}

Test(dns, unwatch_from_the_callback_and_close_with_watches)
{
    fast_resolver();
    srv_add("svc.test", "10.0.0.1", 1);
    watched_t a, b;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    a.unwatch_in_cb = true;
    a.w = sl_dns_watch(res, "svc.test", 80, AF_INET, on_change, &a);
    b.w = sl_dns_watch(res, "svc.test", 80, AF_INET, on_change, &b);
    cr_assert(run_until(&b.last.done, 2000));
    run_for(1500);
    cr_assert_eq(a.calls, 1);
    /* b is still watching: closing the resolver stops it */
}
