/* sluice — asynchronous DNS: a caching resolver per event loop, on c-ares.
 *
 * A resolver owns one c-ares channel driven by its loop alone (a uv_poll_t per c-ares socket and
 * one uv_timer_t); nothing in it blocks, apart from c-ares reading resolv.conf once in
 * sl_resolver_new and /etc/hosts (a local file) on a cache miss. Names are looked up with
 * ares_getaddrinfo: /etc/hosts first, then DNS with the search domains and ndots of resolv.conf.
 *
 * Answers are cached per resolver (name + family -> addresses) for their TTL, bounded by
 * min_ttl_s/max_ttl_s; "name not found" answers for negative_ttl_s; server failures and timeouts
 * are not cached. Concurrent lookups of one name are coalesced into one c-ares query whose answer
 * goes to every waiter. The cache holds at most cache_size entries and evicts the least recently
 * used idle one (entries with a lookup in flight are never evicted).
 *
 * Threading: a resolver and everything made from it (queries, watches) belong to the thread
 * running its loop; no function here may be called from another thread. One resolver per loop
 * (per worker) is the intended use; there are no locks.
 *
 * Callbacks never run inside the call that asked for them: an answer, even from the cache, is
 * delivered from the loop (the same or the next iteration), and a cancelled query's callback
 * never runs. A lookup ends at the latest timeout_ms x tries after it started, whatever the
 * number of servers (c-ares' own per-try back-off is cut by that budget).
 *
 * Errors: the callback's err is 0 or SL_EDNS (which the proxy maps to 502); res->status says
 * which class of failure it was and res->message explains it ("DNS name not found (NXDOMAIN)",
 * "DNS server failure (SERVFAIL)", "DNS timeout (no answer from the DNS servers)", ...). */
#ifndef SLUICE_DNS_H
#define SLUICE_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "error.h"

/* Most addresses kept from one answer (the rest are dropped). */
#define SL_DNS_MAX_ADDRS 64
/* Longest host name accepted (RFC 1035: 253 characters, 254 with the root dot). */
#define SL_DNS_MAX_NAME 254

typedef enum sl_dns_status {
    SL_DNS_OK = 0,
    SL_DNS_NOT_FOUND,      /* NXDOMAIN, or no address of the family asked for (NODATA) */
    SL_DNS_SERVER_FAILURE, /* SERVFAIL, REFUSED, NOTIMP, FORMERR or a malformed answer */
    SL_DNS_TIMEOUT,        /* no server answered in time, or none could be reached */
    SL_DNS_BAD_NAME,       /* not a valid host name */
    SL_DNS_ERROR,          /* anything else (resolver configuration, out of memory) */
} sl_dns_status_t;

/* The class of a c-ares status code (ARES_SUCCESS, ARES_ENOTFOUND, ...). */
sl_dns_status_t sl_dns_status_from_ares(int ares_status);
/* A static, precise message for a c-ares status code, e.g. "DNS server failure (SERVFAIL)". */
const char *sl_dns_strerror(int ares_status);
/* "OK", "NOT_FOUND", "SERVER_FAILURE", "TIMEOUT", "BAD_NAME", "ERROR". */
const char *sl_dns_status_name(sl_dns_status_t st);

typedef struct sl_dns_options {
    /* DNS servers: "ip", "ip:port", "[v6]" or "[v6]:port" (port 53 by default), tried in
     * order (no rotation). n_servers == 0: the nameservers of resolv_conf. Not kept. */
    const char *const *servers;
    size_t n_servers;
    /* Path of the resolv.conf to read (servers when none are given, search domains, ndots).
     * NULL: /etc/resolv.conf. Not kept. */
    const char *resolv_conf;
    uint64_t timeout_ms;     /* per try (default 2000) */
    int tries;               /* rounds over the servers (default 2); a lookup's budget is
                              * timeout_ms x tries */
    uint32_t min_ttl_s;      /* answers are cached at least this long (default 1) */
    uint32_t max_ttl_s;      /* and at most this long (default 300) */
    uint32_t negative_ttl_s; /* "name not found" is cached this long (default 5; 0: not cached;
                              * at most max_ttl_s) */
    size_t cache_size;       /* entries (default 1024; 0: no cache, lookups still coalesce) */
} sl_dns_options_t;

/* Fills o with the defaults above (no servers: resolv.conf). */
void sl_dns_options_init(sl_dns_options_t *o);
/* Validates o (server strings, ranges) without creating anything; for config loading.
 * Returns 0 or SL_ECONFIG with a message in err (when not NULL). */
int sl_dns_options_check(const sl_dns_options_t *o, sl_error_t *err);
/* Parses one server string ("ip", "ip:port", "[v6]", "[v6]:port"; port 53 by default) into
 * *out. Returns 0 or SL_ECONFIG. */
int sl_dns_parse_server(const char *s, struct sockaddr_storage *out);

typedef struct sl_resolver sl_resolver_t;
typedef struct sl_dns_query sl_dns_query_t;
typedef struct sl_dns_watch sl_dns_watch_t;

/* Creates a resolver on loop with options o (NULL: defaults; o is not kept). Returns 0 and
 * *out, or SL_ECONFIG (bad options, logged) or SL_EDNS (c-ares could not start). */
int sl_resolver_new(uv_loop_t *loop, const sl_dns_options_t *o, sl_resolver_t **out);

typedef void (*sl_resolver_close_cb)(void *data);
/* Closes r: every pending query and watch is cancelled (their callbacks never run and their
 * handles become invalid at once), the c-ares channel is destroyed, and r's memory is freed
 * once libuv has closed its handles; then cb (may be NULL) runs from the loop. Safe with lookups
 * in flight and from inside a resolver callback. r must not be used after this call. */
void sl_resolver_close(sl_resolver_t *r, sl_resolver_close_cb cb, void *data);

/* An answer, valid only during the callback that receives it (copy what you keep). */
typedef struct sl_dns_result {
    const char *host; /* the name asked for */
    int family;       /* the family asked for: AF_UNSPEC, AF_INET or AF_INET6 */
    sl_dns_status_t status;
    int ares_status;     /* the c-ares code behind status (ARES_SUCCESS == 0) */
    const char *message; /* sl_dns_strerror(ares_status) */
    /* n addresses (AF_INET/AF_INET6, port set from the query, IPv4 and IPv6 in c-ares' RFC 6724
     * order); n == 0 unless status is SL_DNS_OK. */
    const struct sockaddr_storage *addrs;
    size_t n;
    /* The answer's remaining lifetime: its TTL (the smallest of its records', bounded by
     * min/max TTL; negative_ttl_s for "not found") minus the time since it arrived. 0 for
     * failures, which are never cached. */
    uint64_t ttl_ms;
    bool cached; /* served from the cache, no lookup was made for it */
} sl_dns_result_t;

/* err is 0 (res->status == SL_DNS_OK) or SL_EDNS. res is never NULL. */
typedef void (*sl_dns_cb)(void *data, int err, const sl_dns_result_t *res);

/* Resolves host (a name or an IP literal) for family (AF_UNSPEC: A and AAAA, AF_INET, AF_INET6)
 * and calls cb(data, ...) once, later, from the loop, with the addresses carrying port (host
 * order). host is copied. A host that is not a name (letters, digits, '-', '_' in labels of 1-63
 * characters, 253 at most, optional root dot) gets SL_DNS_BAD_NAME without any query. Returns the
 * query, valid until its callback starts or sl_dns_cancel; NULL (and cb never runs) only when r
 * is closing, host or cb is NULL, or family is not one of the three. */
sl_dns_query_t *sl_dns_resolve(sl_resolver_t *r, const char *host, uint16_t port, int family,
                               sl_dns_cb cb, void *data);
/* Cancels q: its callback will not run and q is freed. The lookup it started, if any, goes on
 * and fills the cache for later askers. q must not be used afterwards. */
void sl_dns_cancel(sl_dns_query_t *q);

/* Synchronous cache probe, for hot paths that can skip the asynchronous round trip: copies up to
 * cap fresh cached addresses of host (with port set) into addrs, their count into *n and the
 * remaining TTL into *ttl_ms (each may be NULL). Returns 0 (fresh answer), SL_EDNS (the name is
 * cached as not found) or UV_ENOENT (nothing fresh: call sl_dns_resolve). Counts as a cache hit
 * and never starts a lookup. */
int sl_dns_peek(sl_resolver_t *r, const char *host, uint16_t port, int family,
                struct sockaddr_storage *addrs, size_t cap, size_t *n, uint64_t *ttl_ms);

/* Follows a name: resolves it now, and again each time its answer's TTL (bounded by the
 * resolver's min/max TTL) runs out, calling cb only when the answer changes: the first answer
 * (success or failure), then a different sorted address set, or the name disappearing
 * (SL_DNS_NOT_FOUND). Server failures and timeouts after a first answer are retried every
 * max(min_ttl_s, 1) s without calling cb, so an outage keeps the last known set. res->addrs are
 * sorted (IPv4 before IPv6, then by address). Returns NULL on the same conditions as
 * sl_dns_resolve. cb may call sl_dns_unwatch. */
sl_dns_watch_t *sl_dns_watch(sl_resolver_t *r, const char *host, uint16_t port, int family,
                             sl_dns_cb cb, void *data);
/* Stops w: cb will not run again and w is freed (its timer once libuv closed it). */
void sl_dns_unwatch(sl_dns_watch_t *w);

/* Counters since the resolver was created. */
typedef struct sl_dns_stats {
    uint64_t resolves;      /* sl_dns_resolve calls for valid names (not literals) */
    uint64_t hits;          /* answered from the cache (including sl_dns_peek hits) */
    uint64_t negative_hits; /* of which "not found" answers */
    uint64_t coalesced;     /* joined a lookup already in flight */
    uint64_t lookups;       /* c-ares lookups started */
    uint64_t failures;      /* lookups ended by a server failure, a timeout or an error */
    uint64_t timeouts;      /* of which timeouts (no server answered, or the budget ran out) */
    uint64_t evictions;     /* entries dropped to keep cache_size */
    size_t entries;         /* cached names now */
    size_t in_flight;       /* lookups in flight now */
} sl_dns_stats_t;

void sl_dns_stats(const sl_resolver_t *r, sl_dns_stats_t *out);

#endif
