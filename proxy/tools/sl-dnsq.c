/* sl-dnsq: resolves names through sluice's DNS module (for tests and debugging).
 *
 *   sl-dnsq [--server ADDR]... [--resolv-conf FILE] [--timeout MS] [--tries N]
 *           [--min-ttl S] [--max-ttl S] [--negative-ttl S] [--cache-size N]
 *           [--family any|4|6] [--port P] [--parallel N] [--repeat N] [--interval MS]
 *           [--stats] name...
 *   sl-dnsq [options] --watch [--for DURATION] name...
 *
 * Without --watch, each round (--repeat, --interval apart) resolves every name --parallel times
 * at once and prints one line per answer:
 *   answer name=web.test family=any status=OK cached=0 ttl_ms=5000 elapsed_ms=2
 *          addrs=10.0.0.1:80,[fd00::1]:80 message="ok"
 * With --watch it follows each name for DURATION ("3s", "500ms"; default 3s) and prints a
 * "change ..." line (with t_ms since start) each time its answer changes. --stats ends with
 *   stats resolves=N hits=N negative_hits=N coalesced=N lookups=N failures=N timeouts=N
 *         evictions=N entries=N in_flight=N
 * Exits 0 when every answer was OK, 1 otherwise, 2 on bad usage. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL_LOG_TAG "sl-dnsq"
#include <sluice/dns.h>
#include <sluice/log.h>

typedef struct app {
    uv_loop_t *loop;
    sl_resolver_t *r;
    char **names;
    int n_names;
    int family;
    uint16_t port;
    long parallel, repeat, interval_ms, for_ms;
    bool watch, stats;
    long rounds_started, outstanding;
    int failures;
    uint64_t t0;
    uv_timer_t timer;
    sl_dns_watch_t **watches;
} app_t;

typedef struct ask {
    app_t *app;
    uint64_t started;
} ask_t;

static void die_usage(const char *msg, const char *arg)
{
    fprintf(stderr, "sl-dnsq: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    exit(2);
}

static long num(const char *flag, const char *v)
{
    char *end;
    long n = strtol(v, &end, 10);
    if (*end || end == v || n < 0)
        die_usage("needs a number", flag);
    return n;
}

/* "3s", "500ms", "2" (seconds) -> ms */
static long duration_ms(const char *v)
{
    char *end;
    double d = strtod(v, &end);
    if (end == v || d < 0)
        die_usage("bad duration", v);
    if (strcmp(end, "ms") == 0)
        return (long)d;
    if (*end == '\0' || strcmp(end, "s") == 0)
        return (long)(d * 1000);
    die_usage("bad duration", v);
    return 0;
}

static const char *family_str(int f)
{
    return f == AF_INET ? "4" : f == AF_INET6 ? "6" : "any";
}

static void print_addrs(const sl_dns_result_t *res)
{
    for (size_t i = 0; i < res->n; i++) {
        char ip[INET6_ADDRSTRLEN];
        const struct sockaddr_storage *ss = &res->addrs[i];
        if (ss->ss_family == AF_INET) {
            const struct sockaddr_in *in4 = (const struct sockaddr_in *)ss;
            inet_ntop(AF_INET, &in4->sin_addr, ip, sizeof(ip));
            printf("%s%s:%u", i ? "," : "", ip, ntohs(in4->sin_port));
        } else {
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
            inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
            printf("%s[%s]:%u", i ? "," : "", ip, ntohs(in6->sin6_port));
        }
    }
}

static void print_result(const char *what, const sl_dns_result_t *res, const char *extra_key,
                         uint64_t extra)
{
    printf("%s name=%s family=%s status=%s cached=%d ttl_ms=%llu %s=%llu addrs=", what, res->host,
           family_str(res->family), sl_dns_status_name(res->status), res->cached,
           (unsigned long long)res->ttl_ms, extra_key, (unsigned long long)extra);
    print_addrs(res);
    printf(" message=\"%s\"\n", res->message);
    fflush(stdout);
}

static void print_stats(app_t *a)
{
    sl_dns_stats_t s;
    sl_dns_stats(a->r, &s);
    printf("stats resolves=%llu hits=%llu negative_hits=%llu coalesced=%llu lookups=%llu "
           "failures=%llu timeouts=%llu evictions=%llu entries=%zu in_flight=%zu\n",
           (unsigned long long)s.resolves, (unsigned long long)s.hits,
           (unsigned long long)s.negative_hits, (unsigned long long)s.coalesced,
           (unsigned long long)s.lookups, (unsigned long long)s.failures,
           (unsigned long long)s.timeouts, (unsigned long long)s.evictions, s.entries, s.in_flight);
    fflush(stdout);
}

static void timer_closed(uv_handle_t *h) {}

static void finish(app_t *a)
{
    if (a->stats)
        print_stats(a);
    if (a->watches)
        for (int i = 0; i < a->n_names; i++)
            sl_dns_unwatch(a->watches[i]);
    sl_resolver_close(a->r, NULL, NULL);
    uv_close((uv_handle_t *)&a->timer, timer_closed);
}

static void on_answer(void *data, int err, const sl_dns_result_t *res)
{
    ask_t *k = data;
    app_t *a = k->app;
    print_result("answer", res, "elapsed_ms", uv_now(a->loop) - k->started);
    free(k);
    if (err)
        a->failures++;
    if (--a->outstanding == 0 && a->rounds_started == a->repeat)
        finish(a);
}

static void start_round(uv_timer_t *t)
{
    app_t *a = t->data;
    a->rounds_started++;
    for (int i = 0; i < a->n_names; i++) {
        for (long j = 0; j < a->parallel; j++) {
            ask_t *k = calloc(1, sizeof(*k));
            if (!k)
                abort();
            k->app = a;
            k->started = uv_now(a->loop);
            a->outstanding++;
            if (!sl_dns_resolve(a->r, a->names[i], a->port, a->family, on_answer, k)) {
                fprintf(stderr, "sl-dnsq: cannot resolve %s\n", a->names[i]);
                exit(1);
            }
        }
    }
    if (a->rounds_started < a->repeat)
        uv_timer_start(&a->timer, start_round, (uint64_t)a->interval_ms, 0);
}

static void on_change(void *data, int err, const sl_dns_result_t *res)
{
    app_t *a = data;
    print_result("change", res, "t_ms", uv_now(a->loop) - a->t0);
    if (err)
        a->failures++;
}

static void watch_over(uv_timer_t *t)
{
    finish(t->data);
}

static int parse_family(const char *v)
{
    if (strcmp(v, "4") == 0)
        return AF_INET;
    if (strcmp(v, "6") == 0)
        return AF_INET6;
    if (strcmp(v, "any") != 0)
        die_usage("--family is any, 4 or 6", v);
    return AF_UNSPEC;
}

/* Fills a and o from the command line (o->servers must have room for 16). */
static void parse_args(int argc, char **argv, app_t *a, sl_dns_options_t *o)
{
    const char **servers = (const char **)o->servers;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(f, "--watch") == 0 || strcmp(f, "--stats") == 0) {
            *(f[2] == 'w' ? &a->watch : &a->stats) = true;
            continue;
        }
        if (strncmp(f, "--", 2) != 0) {
            a->names[a->n_names++] = argv[i];
            continue;
        }
        if (!v)
            die_usage("needs a value", f);
        i++;
        if (strcmp(f, "--server") == 0) {
            if (o->n_servers == 16)
                die_usage("too many servers", v);
            servers[o->n_servers++] = v;
        } else if (strcmp(f, "--resolv-conf") == 0) {
            o->resolv_conf = v;
        } else if (strcmp(f, "--timeout") == 0) {
            o->timeout_ms = (uint64_t)num(f, v);
        } else if (strcmp(f, "--tries") == 0) {
            o->tries = (int)num(f, v);
        } else if (strcmp(f, "--min-ttl") == 0) {
            o->min_ttl_s = (uint32_t)num(f, v);
        } else if (strcmp(f, "--max-ttl") == 0) {
            o->max_ttl_s = (uint32_t)num(f, v);
        } else if (strcmp(f, "--negative-ttl") == 0) {
            o->negative_ttl_s = (uint32_t)num(f, v);
        } else if (strcmp(f, "--cache-size") == 0) {
            o->cache_size = (size_t)num(f, v);
        } else if (strcmp(f, "--port") == 0) {
            a->port = (uint16_t)num(f, v);
        } else if (strcmp(f, "--parallel") == 0) {
            a->parallel = num(f, v);
        } else if (strcmp(f, "--repeat") == 0) {
            a->repeat = num(f, v);
        } else if (strcmp(f, "--interval") == 0) {
            a->interval_ms = num(f, v);
        } else if (strcmp(f, "--for") == 0) {
            a->for_ms = duration_ms(v);
        } else if (strcmp(f, "--family") == 0) {
            a->family = parse_family(v);
        } else {
            die_usage("unknown option", f);
        }
    }
    if (a->n_names == 0 || a->parallel < 1 || a->repeat < 1)
        die_usage("usage: sl-dnsq [--server ADDR]... [options] name...", NULL);
}

int main(int argc, char **argv)
{
    static const char *servers[16];
    static app_t a;
    sl_dns_options_t o;
    sl_dns_options_init(&o);
    o.servers = servers;
    a.parallel = a.repeat = 1;
    a.for_ms = 3000;
    a.family = AF_UNSPEC;
    a.names = calloc((size_t)argc, sizeof(char *));
    if (!a.names)
        return 1;
    parse_args(argc, argv, &a, &o);
    sl_log_init_from_env();
    a.loop = uv_default_loop();
    sl_error_t err;
    if (sl_dns_options_check(&o, &err) != 0) {
        fprintf(stderr, "sl-dnsq: %s\n", err.msg);
        return 2;
    }
    if (sl_resolver_new(a.loop, &o, &a.r) != 0)
        return 1;
    uv_timer_init(a.loop, &a.timer);
    a.timer.data = &a;
    a.t0 = uv_now(a.loop);
    if (a.watch) {
        a.watches = calloc((size_t)a.n_names, sizeof(*a.watches));
        for (int i = 0; i < a.n_names; i++)
            a.watches[i] = sl_dns_watch(a.r, a.names[i], a.port, a.family, on_change, &a);
        uv_timer_start(&a.timer, watch_over, (uint64_t)a.for_ms, 0);
    } else {
        start_round(&a.timer);
    }
    uv_run(a.loop, UV_RUN_DEFAULT);
    uv_loop_close(a.loop);
    free(a.watches);
    free(a.names);
    return a.failures ? 1 : 0;
}
