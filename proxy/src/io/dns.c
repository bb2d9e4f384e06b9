/* Asynchronous DNS: one c-ares channel per loop, driven by libuv, with a cache, coalescing of
 * concurrent lookups, and watches that follow a name's answer over time.
 *
 * Objects, all owned by the resolver and its loop's thread:
 *   answer  an immutable, reference-counted set of addresses (port 0) with its expiry; shared by
 *           the cache entry and the queries it is delivered to, so evicting an entry never pulls
 *           an answer from under a pending delivery.
 *   entry   a cache slot: name + family -> the last cacheable answer, the lookup in flight, and
 *           the queries waiting for it (coalescing). Hash chained, on an LRU list.
 *   lookup  one ares_getaddrinfo call. It ends by c-ares' callback, or earlier by the budget
 *           (timeout_ms x tries), after which it is an orphan whose late answer is dropped.
 *   query   one sl_dns_resolve call: waits on an entry, then sits on the ready queue until the
 *           loop delivers it (uv_check in the same iteration, uv_idle so the loop never blocks
 *           while something is ready).
 * The c-ares glue: sock_state_cb opens/updates/closes a uv_poll_t per c-ares socket; one timer
 * fires at min(ares_timeout(), the oldest lookup's budget). */
#include "sluice/dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define SL_LOG_TAG "dns"
#include "sluice/log.h"
#include "util/hmap.h"
#include "util/mem.h"

/* ---- status and messages ------------------------------------------------------------------ */

/* One table: a c-ares code, its class and the message a client's 502 carries. */
static const struct {
    int code;
    sl_dns_status_t status;
    const char *msg;
} ares_codes[] = {
    {ARES_SUCCESS, SL_DNS_OK, "ok"},
    {ARES_ENOTFOUND, SL_DNS_NOT_FOUND, "DNS name not found (NXDOMAIN)"},
    {ARES_ENONAME, SL_DNS_NOT_FOUND, "DNS name not found (NXDOMAIN)"},
    {ARES_ENODATA, SL_DNS_NOT_FOUND,
     "DNS name not found: no address of the requested family (NODATA)"},
    {ARES_ESERVFAIL, SL_DNS_SERVER_FAILURE, "DNS server failure (SERVFAIL)"},
    {ARES_EREFUSED, SL_DNS_SERVER_FAILURE, "DNS server failure (query refused)"},
    {ARES_ENOTIMP, SL_DNS_SERVER_FAILURE, "DNS server failure (query not implemented)"},
    {ARES_EFORMERR, SL_DNS_SERVER_FAILURE, "DNS server failure (format error)"},
    {ARES_EBADRESP, SL_DNS_SERVER_FAILURE, "DNS server failure (malformed response)"},
    {ARES_ETIMEOUT, SL_DNS_TIMEOUT, "DNS timeout (no answer from the DNS servers)"},
    {ARES_ECONNREFUSED, SL_DNS_TIMEOUT,
     "DNS timeout (DNS servers unreachable: connection refused)"},
    {ARES_EBADNAME, SL_DNS_BAD_NAME, "invalid DNS name"},
    {ARES_EBADSTR, SL_DNS_BAD_NAME, "invalid DNS name"},
    {ARES_EBADFAMILY, SL_DNS_ERROR, "unsupported address family"},
    {ARES_ENOMEM, SL_DNS_ERROR, "DNS resolver out of memory"},
    {ARES_EDESTRUCTION, SL_DNS_ERROR, "DNS resolver closed"},
    {ARES_ECANCELLED, SL_DNS_ERROR, "DNS resolver closed"},
    {ARES_EFILE, SL_DNS_ERROR, "DNS configuration file error"},
};

sl_dns_status_t sl_dns_status_from_ares(int ares_status)
{
    for (size_t i = 0; i < SL_ARRAY_LEN(ares_codes); i++)
        if (ares_codes[i].code == ares_status)
            return ares_codes[i].status;
    return SL_DNS_ERROR;
}

const char *sl_dns_strerror(int ares_status)
{
    for (size_t i = 0; i < SL_ARRAY_LEN(ares_codes); i++)
        if (ares_codes[i].code == ares_status)
            return ares_codes[i].msg;
    return ares_strerror(ares_status);
}

const char *sl_dns_status_name(sl_dns_status_t st)
{
    switch (st) {
    case SL_DNS_OK:
        return "OK";
    case SL_DNS_NOT_FOUND:
        return "NOT_FOUND";
    case SL_DNS_SERVER_FAILURE:
        return "SERVER_FAILURE";
    case SL_DNS_TIMEOUT:
        return "TIMEOUT";
    case SL_DNS_BAD_NAME:
        return "BAD_NAME";
    default:
        return "ERROR";
    }
}

/* ---- options ------------------------------------------------------------------------------ */

void sl_dns_options_init(sl_dns_options_t *o)
{
    memset(o, 0, sizeof(*o));
    o->timeout_ms = 2000;
    o->tries = 2;
    o->min_ttl_s = 1;
    o->max_ttl_s = 300;
    o->negative_ttl_s = 5;
    o->cache_size = 1024;
}

static int parse_port(const char *s, uint16_t *port)
{
    if (*s < '0' || *s > '9')
        return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < 1 || v > 65535)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

int sl_dns_parse_server(const char *s, struct sockaddr_storage *out)
{
    char host[INET6_ADDRSTRLEN];
    uint16_t port = 53;
    const char *h = s, *colon = NULL;
    size_t hlen;
    bool v6 = false;
    if (!s || !*s)
        return SL_ECONFIG;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || (close[1] && close[1] != ':'))
            return SL_ECONFIG;
        h = s + 1;
        hlen = (size_t)(close - h);
        colon = close[1] ? close + 1 : NULL;
        v6 = true;
    } else {
        colon = strchr(s, ':');
        if (colon && strchr(colon + 1, ':')) { /* bare IPv6: no port */
            colon = NULL;
            v6 = true;
        }
        hlen = colon ? (size_t)(colon - s) : strlen(s);
    }
    if (hlen == 0 || hlen >= sizeof(host) || (colon && parse_port(colon + 1, &port) != 0))
        return SL_ECONFIG;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    memset(out, 0, sizeof(*out));
    struct sockaddr_in *in4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
    if (!v6 && inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(port);
    } else if (v6 && inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
    } else {
        return SL_ECONFIG;
    }
    return 0;
}

int sl_dns_options_check(const sl_dns_options_t *o, sl_error_t *err)
{
    struct sockaddr_storage ss;
    if (o->n_servers && !o->servers)
        return sl_error_set(err, SL_ECONFIG, "dns.servers: missing list");
    for (size_t i = 0; i < o->n_servers; i++)
        if (sl_dns_parse_server(o->servers[i], &ss) != 0)
            return sl_error_set(err, SL_ECONFIG,
                                "dns.servers[%zu]: \"%s\" is not an IP address with an optional "
                                "port (\"10.0.0.2\", \"10.0.0.2:5353\", \"[fd00::2]:53\")",
                                i, o->servers[i] ? o->servers[i] : "(null)");
    if (o->timeout_ms < 1 || o->timeout_ms > 3600 * 1000)
        return sl_error_set(err, SL_ECONFIG, "dns: timeout must be between 1 ms and 1 h");
    if (o->tries < 1 || o->tries > 20)
        return sl_error_set(err, SL_ECONFIG, "dns: tries must be between 1 and 20");
    if (o->min_ttl_s > o->max_ttl_s)
        return sl_error_set(err, SL_ECONFIG, "dns: min_ttl (%us) is above max_ttl (%us)",
                            (unsigned)o->min_ttl_s, (unsigned)o->max_ttl_s);
    if (o->max_ttl_s > 7 * 86400)
        return sl_error_set(err, SL_ECONFIG, "dns: max_ttl must be at most 7 days");
    if (o->cache_size > (1u << 22))
        return sl_error_set(err, SL_ECONFIG, "dns: cache_size must be at most %u entries",
                            1u << 22);
    return 0;
}

/* ---- intrusive lists ---------------------------------------------------------------------- */

typedef struct link {
    struct link *prev, *next;
} link_t;

static void list_init(link_t *h)
{
    h->prev = h->next = h;
}
static bool list_empty(const link_t *h)
{
    return h->next == h;
}
static void list_insert_after(link_t *at, link_t *n)
{
    n->prev = at;
    n->next = at->next;
    at->next->prev = n;
    at->next = n;
}
static void list_push_back(link_t *h, link_t *n)
{
    list_insert_after(h->prev, n);
}
/* Unlinks n (a no-op on an unlinked, self-pointing node). */
static void list_remove(link_t *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

#define LIST_ITEM(ptr, type, member) SL_CONTAINER_OF(ptr, type, member)

/* ---- structures --------------------------------------------------------------------------- */

typedef struct answer {
    unsigned refs;
    int ares_status;
    uint64_t expires; /* loop time (ms); fresh while now < expires; 0: never cached */
    size_t n;
    struct sockaddr_storage addrs[]; /* port 0 */
} answer_t;

typedef struct lookup lookup_t;

typedef struct entry {
    struct entry *hnext; /* hash chain */
    link_t lru;          /* r->lru, most recently used first */
    link_t waiters;      /* sl_dns_query_t.link */
    lookup_t *lookup;    /* in flight, or NULL */
    answer_t *answer;    /* last cacheable answer, or NULL */
    uint64_t hash;
    int family;
    size_t len;
    char name[]; /* lower-cased */
} entry_t;

struct lookup {
    sl_resolver_t *r;
    entry_t *entry;  /* NULL once orphaned (budget spent) */
    link_t deadline; /* r->deadlines, oldest first: every lookup has the same budget */
    uint64_t due;
    uint64_t started;
    int server_rcode; /* last SERVFAIL/NOTIMP/REFUSED a server answered for this name */
};

struct sl_dns_query {
    link_t link; /* an entry's waiters, or r->ready */
    answer_t *answer;
    uint64_t seq;
    sl_dns_cb cb;
    void *data;
    int family;
    uint16_t port;
    bool cached;
    char host[];
};

struct sl_dns_watch {
    link_t link; /* r->watches */
    sl_resolver_t *r;
    uv_timer_t timer;
    sl_dns_query_t *q;
    sl_dns_cb cb;
    void *data;
    int last; /* class of the last delivered answer: -1 none, 0 ok, 1 not found, 2 failure */
    bool closing;
    int family;
    uint16_t port;
    size_t n;
    struct sockaddr_storage *addrs; /* sorted, as last delivered */
    char host[];
};

typedef struct poll_s {
    uv_poll_t h;
    link_t link; /* r->polls */
    sl_resolver_t *r;
    int fd;
} poll_t;

typedef enum resolver_state { RESOLVER_RUNNING, RESOLVER_CLOSING } resolver_state_t;

struct sl_resolver {
    uv_loop_t *loop;
    ares_channel channel;
    resolver_state_t state;
    sl_dns_options_t o; /* servers and resolv_conf not kept */
    uint64_t budget_ms;
    uv_timer_t timer;
    uv_idle_t idle;
    uv_check_t check;
    bool kicked; /* idle and check started */
    link_t polls;
    entry_t **buckets;
    size_t nbuckets, n_entries;
    link_t lru;
    link_t ready;
    uint64_t seq;
    link_t deadlines;
    link_t watches;
    unsigned pending_closes;
    sl_resolver_close_cb close_cb;
    void *close_data;
    sl_dns_stats_t stats;
    struct sockaddr_storage scratch[SL_DNS_MAX_ADDRS];
    char scratch_host[SL_DNS_MAX_NAME + 1];
};

static const char *resolver_state_str(resolver_state_t s)
{
    return s == RESOLVER_RUNNING ? "running" : "closing";
}

static void resolver_set_state(sl_resolver_t *r, resolver_state_t s)
{
    SL_TRACE("resolver %p: %s -> %s", (void *)r, resolver_state_str(r->state),
             resolver_state_str(s));
    r->state = s;
}

/* ---- answers ------------------------------------------------------------------------------ */

static answer_t *answer_new(int ares_status, size_t n)
{
    answer_t *a = sl_xcalloc(1, sizeof(*a) + n * sizeof(a->addrs[0]));
    a->refs = 1;
    a->ares_status = ares_status;
    return a;
}

static answer_t *answer_ref(answer_t *a)
{
    a->refs++;
    return a;
}

static void answer_unref(answer_t *a)
{
    if (a && --a->refs == 0)
        free(a);
}

static bool answer_fresh(const sl_resolver_t *r, const answer_t *a)
{
    return a && a->expires > uv_now(r->loop);
}

static uint64_t answer_ttl_ms(const sl_resolver_t *r, const answer_t *a)
{
    uint64_t now = uv_now(r->loop);
    return a->expires > now ? a->expires - now : 0;
}

static size_t addr_len(int family)
{
    return family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
}

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

static bool has_addr(const answer_t *a, const struct sockaddr *sa)
{
    for (size_t i = 0; i < a->n; i++)
        if (a->addrs[i].ss_family == sa->sa_family &&
            memcmp(&a->addrs[i], sa, addr_len(sa->sa_family)) == 0)
            return true;
    return false;
}

static uint32_t clamp_u32(uint32_t v, uint32_t lo, uint32_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* Builds the answer of a finished getaddrinfo: unique addresses (port 0), and an expiry from the
 * smallest TTL of the addresses and CNAMEs, clamped; "not found" gets the negative TTL. */
static answer_t *answer_from_ai(sl_resolver_t *r, int status, const struct ares_addrinfo *ai)
{
    size_t cap = 0;
    for (const struct ares_addrinfo_node *nd = ai ? ai->nodes : NULL; nd; nd = nd->ai_next)
        cap++;
    if (cap > SL_DNS_MAX_ADDRS)
        cap = SL_DNS_MAX_ADDRS;
    answer_t *a = answer_new(status, cap);
    int64_t ttl = INT32_MAX;
    for (const struct ares_addrinfo_node *nd = ai ? ai->nodes : NULL; nd; nd = nd->ai_next) {
        if ((nd->ai_family != AF_INET && nd->ai_family != AF_INET6) || !nd->ai_addr ||
            nd->ai_addrlen < addr_len(nd->ai_family) || has_addr(a, nd->ai_addr))
            continue;
        if (a->n == cap) {
            SL_DEBUG("%s: more than %d addresses, the rest are dropped", ai->name,
                     SL_DNS_MAX_ADDRS);
            break;
        }
        memcpy(&a->addrs[a->n], nd->ai_addr, addr_len(nd->ai_family));
        set_port(&a->addrs[a->n++], 0);
        ttl = nd->ai_ttl < ttl ? nd->ai_ttl : ttl;
    }
    for (const struct ares_addrinfo_cname *c = ai ? ai->cnames : NULL; c; c = c->next)
        ttl = c->ttl < ttl ? c->ttl : ttl;
    if (ttl < 0)
        ttl = 0;
    if (status == ARES_SUCCESS && a->n == 0)
        a->ares_status = ARES_ENODATA;
    uint32_t ttl_s = 0;
    if (a->ares_status == ARES_SUCCESS)
        ttl_s = clamp_u32((uint32_t)ttl, r->o.min_ttl_s, r->o.max_ttl_s);
    else if (sl_dns_status_from_ares(a->ares_status) == SL_DNS_NOT_FOUND)
        ttl_s = r->o.negative_ttl_s < r->o.max_ttl_s ? r->o.negative_ttl_s : r->o.max_ttl_s;
    a->expires = ttl_s ? uv_now(r->loop) + (uint64_t)ttl_s * 1000 : 0;
    return a;
}

/* An IP literal answers itself (never cached). Returns NULL when host is not one. */
static answer_t *answer_literal(const char *host, int family)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1)
        ss.ss_family = AF_INET;
    else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1)
        ss.ss_family = AF_INET6;
    else
        return NULL;
    if (family != AF_UNSPEC && family != ss.ss_family)
        return answer_new(ARES_ENODATA, 0);
    answer_t *a = answer_new(ARES_SUCCESS, 1);
    a->addrs[0] = ss;
    a->n = 1;
    return a;
}

/* ---- the cache ---------------------------------------------------------------------------- */

static uint64_t key_hash(const char *name, size_t len, int family)
{
    return sl_hash_bytes(name, len) ^ (uint64_t)(family + 1) * 0x9e3779b97f4a7c15ull;
}

static entry_t *cache_find(sl_resolver_t *r, const char *name, size_t len, int family, uint64_t h)
{
    for (entry_t *e = r->buckets[h & (r->nbuckets - 1)]; e; e = e->hnext)
        if (e->hash == h && e->family == family && e->len == len && !memcmp(e->name, name, len))
            return e;
    return NULL;
}

static void cache_grow(sl_resolver_t *r)
{
    size_t nb = r->nbuckets * 2;
    entry_t **b = sl_xcalloc(nb, sizeof(*b));
    for (size_t i = 0; i < r->nbuckets; i++) {
        for (entry_t *e = r->buckets[i], *next; e; e = next) {
            next = e->hnext;
            e->hnext = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
        }
    }
    free(r->buckets);
    r->buckets = b;
    r->nbuckets = nb;
}

static entry_t *cache_insert(sl_resolver_t *r, const char *name, size_t len, int family, uint64_t h)
{
    entry_t *e = sl_xcalloc(1, sizeof(*e) + len + 1);
    memcpy(e->name, name, len);
    e->len = len;
    e->family = family;
    e->hash = h;
    list_init(&e->waiters);
    list_insert_after(&r->lru, &e->lru);
    if (++r->n_entries > r->nbuckets)
        cache_grow(r);
    entry_t **slot = &r->buckets[h & (r->nbuckets - 1)];
    e->hnext = *slot;
    *slot = e;
    return e;
}

static void cache_touch(sl_resolver_t *r, entry_t *e)
{
    list_remove(&e->lru);
    list_insert_after(&r->lru, &e->lru);
}

static bool entry_busy(const entry_t *e)
{
    return e->lookup || !list_empty(&e->waiters);
}

static void entry_drop(sl_resolver_t *r, entry_t *e)
{
    entry_t **p = &r->buckets[e->hash & (r->nbuckets - 1)];
    while (*p != e)
        p = &(*p)->hnext;
    *p = e->hnext;
    list_remove(&e->lru);
    answer_unref(e->answer);
    r->n_entries--;
    free(e);
}

/* Drops the least recently used idle entries beyond cache_size (busy ones stay, so the cache
 * can exceed its size by the lookups in flight). */
static void cache_evict(sl_resolver_t *r)
{
    for (link_t *l = r->lru.prev; r->n_entries > r->o.cache_size && l != &r->lru;) {
        entry_t *e = LIST_ITEM(l, entry_t, lru);
        l = l->prev;
        if (!entry_busy(e)) {
            entry_drop(r, e);
            r->stats.evictions++;
        }
    }
}

/* Lower-cases host into buf (names are case-insensitive). Returns its length, or 0 when host is
 * not a host name: letters, digits, '-' and '_' in dot-separated labels of 1 to 63 characters,
 * 253 characters at most (plus an optional root dot). A bad name never reaches a DNS server.
 * *numeric (may be NULL) tells whether it has only digits and dots: only then can a valid name
 * also be an IP literal (an IPv6 literal, with its ':', is never a valid name). */
static size_t name_key(const char *host, char buf[SL_DNS_MAX_NAME + 1], bool *numeric)
{
    size_t len = strnlen(host, SL_DNS_MAX_NAME + 1), label = 0;
    bool digits = true;
    if (len == 0 || len > SL_DNS_MAX_NAME || (len == SL_DNS_MAX_NAME && host[len - 1] != '.'))
        return 0;
    /* Runs for every sl_dns_peek (each request of a host name backend): a few branches per
     * character. c | 0x20 is a letter's lower case, and a letter only for letters. */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)host[i];
        unsigned char lower = (unsigned char)(c | 0x20);
        if ((unsigned)(lower - 'a') < 26u) {
            c = lower;
            digits = false;
        } else if ((unsigned)(c - '0') < 10u) {
            /* a digit */
        } else if (c == '.') {
            if (label == 0 || (i + 1 < len && host[i + 1] == '.'))
                return 0;
            label = 0;
            buf[i] = '.';
            continue;
        } else if (c == '-' || c == '_') {
            digits = false;
        } else {
            return 0;
        }
        if (++label > 63)
            return 0;
        buf[i] = (char)c;
    }
    buf[len] = '\0';
    if (numeric)
        *numeric = digits;
    return len;
}

/* ---- delivery ----------------------------------------------------------------------------- */

static void on_idle(uv_idle_t *h);
static void on_check(uv_check_t *h);

/* Something is ready: deliver it from the check phase of this iteration, or from the next
 * iteration's idle phase (an active idle handle also keeps the loop from blocking in poll). */
static void kick(sl_resolver_t *r)
{
    if (r->kicked)
        return;
    r->kicked = true;
    uv_idle_start(&r->idle, on_idle);
    uv_check_start(&r->check, on_check);
}

static void enqueue_ready(sl_resolver_t *r, sl_dns_query_t *q)
{
    q->seq = ++r->seq;
    list_push_back(&r->ready, &q->link);
    kick(r);
}

static void deliver(sl_resolver_t *r, sl_dns_query_t *q)
{
    answer_t *a = q->answer;
    sl_dns_result_t res;
    memset(&res, 0, sizeof(res));
    for (size_t i = 0; i < a->n; i++) {
        r->scratch[i] = a->addrs[i];
        set_port(&r->scratch[i], q->port);
    }
    snprintf(r->scratch_host, sizeof(r->scratch_host), "%s", q->host);
    res.host = r->scratch_host;
    res.family = q->family;
    res.ares_status = a->ares_status;
    res.status = sl_dns_status_from_ares(a->ares_status);
    res.message = sl_dns_strerror(a->ares_status);
    res.addrs = r->scratch;
    res.n = a->n;
    res.ttl_ms = answer_ttl_ms(r, a);
    res.cached = q->cached;
    sl_dns_cb cb = q->cb;
    void *data = q->data;
    free(q);
    answer_unref(a);
    cb(data, res.status == SL_DNS_OK ? 0 : SL_EDNS, &res);
}

/* Delivers the queries that were ready when it started (those queued by the callbacks wait for
 * the next phase, so a callback that asks again cannot starve the loop). */
static void drain(sl_resolver_t *r)
{
    uint64_t limit = r->seq;
    while (r->state == RESOLVER_RUNNING && !list_empty(&r->ready)) {
        sl_dns_query_t *q = LIST_ITEM(r->ready.next, sl_dns_query_t, link);
        if (q->seq > limit)
            return;
        list_remove(&q->link);
        deliver(r, q);
    }
    if (r->state == RESOLVER_RUNNING && r->kicked) {
        r->kicked = false;
        uv_idle_stop(&r->idle);
        uv_check_stop(&r->check);
    }
}

static void on_idle(uv_idle_t *h)
{
    drain(h->data);
}

static void on_check(uv_check_t *h)
{
    drain(h->data);
}

/* ---- lookups ------------------------------------------------------------------------------ */

static void arm_timer(sl_resolver_t *r);

/* An answer for entry e: cache it when it may be, hand it to every waiter, and drop e when it
 * holds nothing worth keeping. */
static void entry_answered(sl_resolver_t *r, entry_t *e, answer_t *a)
{
    if (answer_fresh(r, a) && r->o.cache_size > 0) {
        answer_unref(e->answer);
        e->answer = answer_ref(a);
    } else if (e->answer && !answer_fresh(r, e->answer)) {
        answer_unref(e->answer);
        e->answer = NULL;
    }
    while (!list_empty(&e->waiters)) {
        sl_dns_query_t *q = LIST_ITEM(e->waiters.next, sl_dns_query_t, link);
        list_remove(&q->link);
        q->answer = answer_ref(a);
        enqueue_ready(r, q);
    }
    if (!e->answer && !e->lookup)
        entry_drop(r, e);
    cache_evict(r);
}

/* A lookup that no server answered usefully, where one did answer SERVFAIL, NOTIMP or REFUSED
 * (see note_server_failure), failed because of that answer. */
static int failure_status(const lookup_t *lk, int status)
{
    if ((status != ARES_ECONNREFUSED && status != ARES_ETIMEOUT) || !lk->server_rcode)
        return status;
    return lk->server_rcode == 2   ? ARES_ESERVFAIL
           : lk->server_rcode == 4 ? ARES_ENOTIMP
                                   : ARES_EREFUSED;
}

static void lookup_done(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
    lookup_t *lk = arg;
    sl_resolver_t *r = lk->r;
    entry_t *e = lk->entry;
    uint64_t started = lk->started;
    status = failure_status(lk, status);
    list_remove(&lk->deadline);
    r->stats.in_flight--;
    free(lk);
    if (status == ARES_EDESTRUCTION || r->state != RESOLVER_RUNNING || !e) {
        if (ai)
            ares_freeaddrinfo(ai);
        return;
    }
    e->lookup = NULL;
    answer_t *a = answer_from_ai(r, status, ai);
    if (ai)
        ares_freeaddrinfo(ai);
    sl_dns_status_t st = sl_dns_status_from_ares(a->ares_status);
    if (st == SL_DNS_SERVER_FAILURE || st == SL_DNS_TIMEOUT || st == SL_DNS_ERROR)
        r->stats.failures++;
    if (st == SL_DNS_TIMEOUT)
        r->stats.timeouts++;
    SL_DEBUG("%s (%s): %s, %zu address(es), cached %llu ms, %llu ms, %d timeout(s)", e->name,
             e->family == AF_INET    ? "A"
             : e->family == AF_INET6 ? "AAAA"
                                     : "A+AAAA",
             sl_dns_strerror(a->ares_status), a->n,
             (unsigned long long)(a->expires ? answer_ttl_ms(r, a) : 0),
             (unsigned long long)(uv_now(r->loop) - started), timeouts);
    entry_answered(r, e, a);
    answer_unref(a);
}

/* Starts the lookup of e. c-ares may answer before returning (hosts file, a bad name): the
 * waiters are then already on the ready queue, and e may be gone. */
static void lookup_start(sl_resolver_t *r, entry_t *e)
{
    lookup_t *lk = sl_xcalloc(1, sizeof(*lk));
    lk->r = r;
    lk->entry = e;
    lk->started = uv_now(r->loop);
    lk->due = lk->started + r->budget_ms;
    list_push_back(&r->deadlines, &lk->deadline);
    e->lookup = lk;
    r->stats.lookups++;
    r->stats.in_flight++;
    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = e->family;
    hints.ai_socktype = SOCK_STREAM;
    ares_getaddrinfo(r->channel, e->name, NULL, &hints, lookup_done, lk);
    arm_timer(r);
}

/* Lookups past their budget end with a timeout now; c-ares finishes them later, unheard. */
static void expire_lookups(sl_resolver_t *r)
{
    uint64_t now = uv_now(r->loop);
    while (!list_empty(&r->deadlines)) {
        lookup_t *lk = LIST_ITEM(r->deadlines.next, lookup_t, deadline);
        if (lk->due > now)
            break;
        list_remove(&lk->deadline);
        entry_t *e = lk->entry;
        lk->entry = NULL;
        e->lookup = NULL;
        int status = failure_status(lk, ARES_ETIMEOUT);
        r->stats.failures++;
        if (status == ARES_ETIMEOUT)
            r->stats.timeouts++;
        SL_DEBUG("%s: no answer within %llu ms", e->name, (unsigned long long)r->budget_ms);
        answer_t *a = answer_new(status, 0);
        entry_answered(r, e, a);
        answer_unref(a);
    }
}

/* ---- c-ares on libuv ---------------------------------------------------------------------- */

static void on_timer(uv_timer_t *t)
{
    sl_resolver_t *r = t->data;
    ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    expire_lookups(r);
    arm_timer(r);
}

static void arm_timer(sl_resolver_t *r)
{
    if (r->state != RESOLVER_RUNNING)
        return;
    uint64_t wait = UINT64_MAX;
    struct timeval tv;
    if (ares_timeout(r->channel, NULL, &tv))
        wait = (uint64_t)tv.tv_sec * 1000 + ((uint64_t)tv.tv_usec + 999) / 1000;
    if (!list_empty(&r->deadlines)) {
        const lookup_t *lk = LIST_ITEM(r->deadlines.next, lookup_t, deadline);
        uint64_t now = uv_now(r->loop);
        uint64_t d = lk->due > now ? lk->due - now : 0;
        wait = d < wait ? d : wait;
    }
    if (wait == UINT64_MAX)
        uv_timer_stop(&r->timer);
    else
        uv_timer_start(&r->timer, on_timer, wait, 0);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    poll_t *p = h->data;
    sl_resolver_t *r = p->r;
    ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;
    if (status < 0 || (events & UV_READABLE))
        rfd = p->fd;
    if (status < 0 || (events & UV_WRITABLE))
        wfd = p->fd;
    ares_process_fd(r->channel, rfd, wfd); /* may close p */
    arm_timer(r);
}

static void handle_closed(sl_resolver_t *r);

static void poll_closed(uv_handle_t *h)
{
    poll_t *p = h->data;
    sl_resolver_t *r = p->r;
    free(p);
    handle_closed(r);
}

static void poll_close(sl_resolver_t *r, poll_t *p)
{
    list_remove(&p->link);
    r->pending_closes++;
    uv_close((uv_handle_t *)&p->h, poll_closed);
}

/* c-ares tells which of its sockets to watch: (0, 0) before it closes one. */
static void sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
    sl_resolver_t *r = data;
    poll_t *p = NULL;
    for (link_t *l = r->polls.next; l != &r->polls; l = l->next) {
        if (LIST_ITEM(l, poll_t, link)->fd == fd) {
            p = LIST_ITEM(l, poll_t, link);
            break;
        }
    }
    if (!readable && !writable) {
        if (p)
            poll_close(r, p);
        return;
    }
    if (!p) {
        p = sl_xcalloc(1, sizeof(*p));
        p->r = r;
        p->fd = fd;
        int rc = uv_poll_init_socket(r->loop, &p->h, fd);
        if (rc != 0) {
            /* Its queries end by the budget. */
            SL_ERROR("cannot watch DNS socket %d: %s", fd, uv_strerror(rc));
            free(p);
            return;
        }
        p->h.data = p;
        /* An open c-ares socket is no work by itself: lookups in flight keep the loop alive
         * through the timer (their budget), answers through the idle handle. */
        uv_unref((uv_handle_t *)&p->h);
        list_push_back(&r->polls, &p->link);
    }
    int rc =
        uv_poll_start(&p->h, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0), on_poll);
    if (rc != 0)
        SL_ERROR("cannot watch DNS socket %d: %s", fd, uv_strerror(rc));
}

/* c-ares 1.18 retries a SERVFAIL, NOTIMP or REFUSED answer on the next server and, when all
 * tries are spent, ends the query with ARES_ECONNREFUSED (or ARES_ETIMEOUT when another server
 * stayed silent): the same as a dead server. To tell them apart, the socket functions below are
 * c-ares' own (plain syscalls) except that UDP answers carrying one of those codes are noted on
 * the lookups of the name asked (or a search-domain extension of it); failure_status() then
 * reports the server's answer instead. Keeping the flag ARES_FLAG_NOCHECKRESP off keeps c-ares'
 * fail-over to the next server. */
static bool qname_matches(const char *qname, size_t qlen, const entry_t *e)
{
    size_t len = e->len;
    if (len && e->name[len - 1] == '.')
        len--;
    return qlen >= len && memcmp(qname, e->name, len) == 0 && (qlen == len || qname[len] == '.');
}

static void note_server_failure(sl_resolver_t *r, const unsigned char *p, size_t n)
{
    int rcode = p[3] & 0x0f;
    if ((rcode != 2 && rcode != 4 && rcode != 5) || n < 13 || (p[2] & 0x80) == 0)
        return;
    char qname[SL_DNS_MAX_NAME + 1];
    size_t qlen = 0;
    for (size_t i = 12; i < n && p[i];) { /* the question's name, lower-cased */
        size_t l = p[i++];
        if (l > 63 || i + l > n || qlen + l + 1 > SL_DNS_MAX_NAME)
            return;
        if (qlen)
            qname[qlen++] = '.';
        for (size_t k = 0; k < l; k++) {
            char c = (char)p[i + k];
            qname[qlen++] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
        }
        i += l;
    }
    for (link_t *l = r->deadlines.next; l != &r->deadlines; l = l->next) {
        lookup_t *lk = LIST_ITEM(l, lookup_t, deadline);
        if (lk->entry && qname_matches(qname, qlen, lk->entry))
            lk->server_rcode = rcode;
    }
}

static ares_socket_t sock_open(int af, int type, int protocol, void *u)
{
    return socket(af, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
}

static int sock_close(ares_socket_t fd, void *u)
{
    return close(fd);
}

static int sock_connect(ares_socket_t fd, const struct sockaddr *sa, ares_socklen_t len, void *u)
{
    return connect(fd, sa, len);
}

static ares_ssize_t sock_recvfrom(ares_socket_t fd, void *buf, size_t cap, int flags,
                                  struct sockaddr *from, ares_socklen_t *from_len, void *u)
{
    ssize_t n = recvfrom(fd, buf, cap, flags, from, from_len);
    if (n >= 12 && from) /* UDP */
        note_server_failure(u, buf, (size_t)n);
    return n;
}

static ares_ssize_t sock_sendv(ares_socket_t fd, const struct iovec *iov, int n, void *u)
{
    return writev(fd, iov, n);
}

static const struct ares_socket_functions sock_funcs = {
    .asocket = sock_open,
    .aclose = sock_close,
    .aconnect = sock_connect,
    .arecvfrom = sock_recvfrom,
    .asendv = sock_sendv,
};

/* ---- resolver ----------------------------------------------------------------------------- */

static pthread_once_t ares_once = PTHREAD_ONCE_INIT;
static int ares_init_status = ARES_ENOTINITIALIZED;

static void ares_global_init(void)
{
    ares_init_status = ares_library_init(ARES_LIB_INIT_ALL);
}

static int set_servers(sl_resolver_t *r, const sl_dns_options_t *o)
{
    struct ares_addr_port_node *nodes = sl_xcalloc(o->n_servers, sizeof(*nodes));
    for (size_t i = 0; i < o->n_servers; i++) {
        struct sockaddr_storage ss;
        sl_dns_parse_server(o->servers[i], &ss); /* checked */
        struct ares_addr_port_node *n = &nodes[i];
        n->family = ss.ss_family;
        if (ss.ss_family == AF_INET) {
            const struct sockaddr_in *in4 = (const struct sockaddr_in *)&ss;
            n->addr.addr4 = in4->sin_addr;
            n->udp_port = n->tcp_port = ntohs(in4->sin_port);
        } else {
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
            memcpy(&n->addr.addr6, &in6->sin6_addr, sizeof(in6->sin6_addr));
            n->udp_port = n->tcp_port = ntohs(in6->sin6_port);
        }
        n->next = i + 1 < o->n_servers ? &nodes[i + 1] : NULL;
    }
    int rc = ares_set_servers_ports(r->channel, nodes);
    free(nodes);
    return rc;
}

static int channel_init(sl_resolver_t *r, const sl_dns_options_t *o)
{
    struct ares_options ao;
    memset(&ao, 0, sizeof(ao));
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_NOROTATE;
    ao.sock_state_cb = sock_state_cb;
    ao.sock_state_cb_data = r;
    ao.timeout = (int)o->timeout_ms;
    ao.tries = o->tries;
    if (o->resolv_conf) {
        mask |= ARES_OPT_RESOLVCONF;
        ao.resolvconf_path = (char *)o->resolv_conf;
    }
    int rc = ares_init_options(&r->channel, &ao, mask);
    if (rc != ARES_SUCCESS) {
        SL_ERROR("cannot start the DNS resolver: %s", ares_strerror(rc));
        return SL_EDNS;
    }
    if (o->n_servers && (rc = set_servers(r, o)) != ARES_SUCCESS) {
        SL_ERROR("cannot set the DNS servers: %s", ares_strerror(rc));
        ares_destroy(r->channel);
        return SL_EDNS;
    }
    ares_set_socket_functions(r->channel, &sock_funcs, r);
    return 0;
}

int sl_resolver_new(uv_loop_t *loop, const sl_dns_options_t *o, sl_resolver_t **out)
{
    sl_dns_options_t defaults;
    sl_error_t err;
    if (!o) {
        sl_dns_options_init(&defaults);
        o = &defaults;
    }
    if (sl_dns_options_check(o, &err) != 0) {
        SL_ERROR("%s", err.msg);
        return SL_ECONFIG;
    }
    pthread_once(&ares_once, ares_global_init);
    if (ares_init_status != ARES_SUCCESS) {
        SL_ERROR("c-ares: %s", ares_strerror(ares_init_status));
        return SL_EDNS;
    }
    sl_resolver_t *r = sl_xcalloc(1, sizeof(*r));
    r->loop = loop;
    r->o = *o;
    r->o.servers = NULL;
    r->o.n_servers = 0;
    r->o.resolv_conf = NULL;
    r->budget_ms = o->timeout_ms * (uint64_t)o->tries;
    int rc = channel_init(r, o);
    if (rc != 0) {
        free(r);
        return rc;
    }
    list_init(&r->polls);
    list_init(&r->lru);
    list_init(&r->ready);
    list_init(&r->deadlines);
    list_init(&r->watches);
    r->nbuckets = 64;
    r->buckets = sl_xcalloc(r->nbuckets, sizeof(*r->buckets));
    uv_timer_init(loop, &r->timer);
    uv_idle_init(loop, &r->idle);
    uv_check_init(loop, &r->check);
    r->timer.data = r->idle.data = r->check.data = r;
    *out = r;
    return 0;
}

static void handle_closed(sl_resolver_t *r)
{
    if (--r->pending_closes > 0 || r->state != RESOLVER_CLOSING)
        return;
    sl_resolver_close_cb cb = r->close_cb;
    void *data = r->close_data;
    free(r);
    if (cb)
        cb(data);
}

static void resolver_handle_closed(uv_handle_t *h)
{
    handle_closed(h->data);
}

static void query_free(sl_dns_query_t *q)
{
    list_remove(&q->link);
    answer_unref(q->answer);
    free(q);
}

static void watch_close(sl_dns_watch_t *w);

void sl_resolver_close(sl_resolver_t *r, sl_resolver_close_cb cb, void *data)
{
    if (!r || r->state != RESOLVER_RUNNING)
        return;
    resolver_set_state(r, RESOLVER_CLOSING);
    r->close_cb = cb;
    r->close_data = data;
    while (!list_empty(&r->watches))
        watch_close(LIST_ITEM(r->watches.next, sl_dns_watch_t, link));
    while (!list_empty(&r->ready))
        query_free(LIST_ITEM(r->ready.next, sl_dns_query_t, link));
    /* Lookups end here (EDESTRUCTION, freed unheard); c-ares closes its sockets, which closes
     * the polls. */
    ares_destroy(r->channel);
    while (!list_empty(&r->lru)) {
        entry_t *e = LIST_ITEM(r->lru.next, entry_t, lru);
        while (!list_empty(&e->waiters))
            query_free(LIST_ITEM(e->waiters.next, sl_dns_query_t, link));
        entry_drop(r, e);
    }
    free(r->buckets);
    r->buckets = NULL;
    while (!list_empty(&r->polls))
        poll_close(r, LIST_ITEM(r->polls.next, poll_t, link));
    r->pending_closes += 3;
    uv_close((uv_handle_t *)&r->timer, resolver_handle_closed);
    uv_close((uv_handle_t *)&r->idle, resolver_handle_closed);
    uv_close((uv_handle_t *)&r->check, resolver_handle_closed);
}

/* ---- queries ------------------------------------------------------------------------------ */

static bool family_ok(int family)
{
    return family == AF_UNSPEC || family == AF_INET || family == AF_INET6;
}

static sl_dns_query_t *query_new(const char *host, uint16_t port, int family, sl_dns_cb cb,
                                 void *data)
{
    size_t len = strnlen(host, SL_DNS_MAX_NAME + 1);
    sl_dns_query_t *q = sl_xcalloc(1, sizeof(*q) + len + 1);
    memcpy(q->host, host, len);
    list_init(&q->link);
    q->cb = cb;
    q->data = data;
    q->port = port;
    q->family = family;
    return q;
}

sl_dns_query_t *sl_dns_resolve(sl_resolver_t *r, const char *host, uint16_t port, int family,
                               sl_dns_cb cb, void *data)
{
    if (!r || r->state != RESOLVER_RUNNING || !host || !cb || !family_ok(family))
        return NULL;
    sl_dns_query_t *q = query_new(host, port, family, cb, data);
    char key[SL_DNS_MAX_NAME + 1];
    size_t len = 0;
    if ((q->answer = answer_literal(host, family)) != NULL ||
        (len = name_key(host, key, NULL)) == 0) {
        if (!q->answer)
            q->answer = answer_new(ARES_EBADNAME, 0);
        enqueue_ready(r, q);
        return q;
    }
    r->stats.resolves++;
    uint64_t h = key_hash(key, len, family);
    entry_t *e = cache_find(r, key, len, family, h);
    if (e)
        cache_touch(r, e);
    if (e && answer_fresh(r, e->answer)) {
        r->stats.hits++;
        if (e->answer->ares_status != ARES_SUCCESS)
            r->stats.negative_hits++;
        q->answer = answer_ref(e->answer);
        q->cached = true;
        enqueue_ready(r, q);
        return q;
    }
    if (!e)
        e = cache_insert(r, key, len, family, h);
    list_push_back(&e->waiters, &q->link); /* busy now: eviction spares it */
    if (e->lookup) {
        r->stats.coalesced++;
        return q;
    }
    cache_evict(r);
    lookup_start(r, e); /* e may be gone after this */
    return q;
}

void sl_dns_cancel(sl_dns_query_t *q)
{
    if (q)
        query_free(q);
}

int sl_dns_peek(sl_resolver_t *r, const char *host, uint16_t port, int family,
                struct sockaddr_storage *addrs, size_t cap, size_t *n, uint64_t *ttl_ms)
{
    if (n)
        *n = 0;
    if (ttl_ms)
        *ttl_ms = 0;
    if (!r || r->state != RESOLVER_RUNNING || !host || !family_ok(family))
        return UV_EINVAL;
    char key[SL_DNS_MAX_NAME + 1];
    /* The hot path: a name with a letter is no IP literal, so no inet_pton for it. */
    bool numeric = false;
    size_t len = name_key(host, key, &numeric);
    answer_t *lit = len == 0 || numeric ? answer_literal(host, family) : NULL;
    if (lit || len == 0) {
        int rc = lit && lit->ares_status == ARES_SUCCESS ? 0 : SL_EDNS;
        if (rc == 0 && addrs && cap > 0) {
            addrs[0] = lit->addrs[0];
            set_port(&addrs[0], port);
            if (n)
                *n = 1;
        }
        answer_unref(lit);
        return rc;
    }
    entry_t *e = cache_find(r, key, len, family, key_hash(key, len, family));
    if (!e || !answer_fresh(r, e->answer))
        return UV_ENOENT;
    cache_touch(r, e);
    r->stats.hits++;
    const answer_t *a = e->answer;
    if (ttl_ms)
        *ttl_ms = answer_ttl_ms(r, a);
    if (a->ares_status != ARES_SUCCESS) {
        r->stats.negative_hits++;
        return SL_EDNS;
    }
    size_t k = addrs ? (a->n < cap ? a->n : cap) : 0;
    for (size_t i = 0; i < k; i++) {
        addrs[i] = a->addrs[i];
        set_port(&addrs[i], port);
    }
    if (n)
        *n = k;
    return 0;
}

void sl_dns_stats(const sl_resolver_t *r, sl_dns_stats_t *out)
{
    *out = r->stats;
    out->entries = r->n_entries;
}

/* ---- watches ------------------------------------------------------------------------------ */

static int addr_cmp(const void *a, const void *b)
{
    const struct sockaddr_storage *x = a, *y = b;
    if (x->ss_family != y->ss_family)
        return x->ss_family == AF_INET ? -1 : 1;
    if (x->ss_family == AF_INET) {
        const struct sockaddr_in *p = a, *q = b;
        int c = memcmp(&p->sin_addr, &q->sin_addr, sizeof(p->sin_addr));
        return c ? c : (int)ntohs(p->sin_port) - (int)ntohs(q->sin_port);
    }
    const struct sockaddr_in6 *p = a, *q = b;
    int c = memcmp(&p->sin6_addr, &q->sin6_addr, sizeof(p->sin6_addr));
    return c ? c : (int)ntohs(p->sin6_port) - (int)ntohs(q->sin6_port);
}

static void watch_timer(uv_timer_t *t);

static int answer_class(sl_dns_status_t st)
{
    return st == SL_DNS_OK ? 0 : st == SL_DNS_NOT_FOUND ? 1 : 2;
}

/* Whether an answer of class cls with the sorted set (addrs, n) is news for w. */
static bool watch_changed(const sl_dns_watch_t *w, int cls, const struct sockaddr_storage *addrs,
                          size_t n)
{
    if (w->last < 0)
        return true;
    if (cls == 2) /* a failure keeps the last known answer */
        return false;
    if (cls != w->last || n != w->n)
        return true;
    for (size_t i = 0; i < n; i++)
        if (addr_cmp(&addrs[i], &w->addrs[i]) != 0)
            return true;
    return false;
}

static void watch_answer(void *data, int err, const sl_dns_result_t *res)
{
    sl_dns_watch_t *w = data;
    sl_resolver_t *r = w->r;
    w->q = NULL;
    int cls = answer_class(res->status);
    uint64_t retry = (uint64_t)(r->o.min_ttl_s > 1 ? r->o.min_ttl_s : 1) * 1000;
    uint64_t delay = cls == 2 || res->ttl_ms == 0 ? retry : res->ttl_ms;
    struct sockaddr_storage *sorted = NULL;
    if (res->n) {
        sorted = sl_xmemdup(res->addrs, res->n * sizeof(*sorted));
        qsort(sorted, res->n, sizeof(*sorted), addr_cmp);
    }
    if (!watch_changed(w, cls, sorted, res->n)) {
        free(sorted);
    } else {
        free(w->addrs);
        w->addrs = sorted;
        w->n = res->n;
        w->last = cls;
        sl_dns_result_t wres = *res;
        wres.addrs = w->addrs ? w->addrs : res->addrs;
        wres.host = w->host;
        w->cb(w->data, err, &wres);
        if (w->closing) /* unwatched from cb: freed once its timer is closed */
            return;
    }
    uv_timer_start(&w->timer, watch_timer, delay, 0);
}

static void watch_timer(uv_timer_t *t)
{
    sl_dns_watch_t *w = t->data;
    w->q = sl_dns_resolve(w->r, w->host, w->port, w->family, watch_answer, w);
}

sl_dns_watch_t *sl_dns_watch(sl_resolver_t *r, const char *host, uint16_t port, int family,
                             sl_dns_cb cb, void *data)
{
    if (!r || r->state != RESOLVER_RUNNING || !host || !cb || !family_ok(family))
        return NULL;
    size_t len = strnlen(host, SL_DNS_MAX_NAME + 1);
    sl_dns_watch_t *w = sl_xcalloc(1, sizeof(*w) + len + 1);
    memcpy(w->host, host, len);
    w->r = r;
    w->cb = cb;
    w->data = data;
    w->port = port;
    w->family = family;
    w->last = -1;
    uv_timer_init(r->loop, &w->timer);
    w->timer.data = w;
    list_push_back(&r->watches, &w->link);
    w->q = sl_dns_resolve(r, w->host, port, family, watch_answer, w);
    return w;
}

static void watch_closed(uv_handle_t *h)
{
    sl_dns_watch_t *w = h->data;
    sl_resolver_t *r = w->r;
    free(w->addrs);
    free(w);
    handle_closed(r);
}

static void watch_close(sl_dns_watch_t *w)
{
    if (w->closing)
        return;
    w->closing = true;
    sl_dns_cancel(w->q);
    w->q = NULL;
    list_remove(&w->link);
    w->r->pending_closes++;
    uv_close((uv_handle_t *)&w->timer, watch_closed);
}

void sl_dns_unwatch(sl_dns_watch_t *w)
{
    if (w)
        watch_close(w);
}
