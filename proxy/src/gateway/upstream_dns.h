/* Host name backends of the gateway (`name:port`), resolved with the sluice resolver (c-ares):
 *
 * - per request: each worker has its own resolver (created and closed on the worker's loop);
 *   upstream_peer takes a fresh cached answer synchronously (sl_dns_peek), else waits for the
 *   lookup (SL_PENDING, resumed from the resolver's callback) for at most the upstream's connect
 *   timeout. The addresses of a name are used in turn. A failure answers 502 with the name and
 *   the reason ("upstream name blue.local: DNS name not found (NXDOMAIN)").
 * - followed (`upstreams.NAME.dns.watch`): the control thread watches the names of such
 *   upstreams (sl_dns_watch) and, when an answer changes, publishes a new snapshot where each
 *   name is replaced by its addresses (ordinary backends: balancing, retries, GET /upstreams).
 *   A name that stops resolving keeps its last addresses; one never resolved yet is resolved
 *   per request meanwhile.
 *
 * Configuration parsing is pure (any thread); the rest follows the gateway's threading: control
 * thread for gw_dns_init/free/prepare, worker threads for the request functions. */
#ifndef SL_GATEWAY_UPSTREAM_DNS_H
#define SL_GATEWAY_UPSTREAM_DNS_H

#include "gateway/gateway.h"

/* ---- configuration ----------------------------------------------------------------------- */

/* The top-level `dns` section (servers, timeout, tries, min_ttl, max_ttl, negative_ttl,
 * cache_size) into c->dns and c->dns_servers; validated with sl_dns_options_check. Returns 0 or
 * SL_ECONFIG with the key path in err. */
int gw_dns_conf_parse(gw_config_t *c, const cJSON *root, sl_error_t *err);
/* `upstreams.NAME.dns`: {watch: bool, family: any|ipv4|ipv6} into u (v is the upstream). */
int gw_upstream_dns_parse(gw_upstream_t *u, const cJSON *v, const char *path, sl_error_t *err);

/* ---- the running gateway ----------------------------------------------------------------- */

typedef struct gw_dns gw_dns_t;
typedef struct gw_dns_req gw_dns_req_t;

/* Registers the per-worker resolvers and the control thread's watches with gw's server (from
 * gw_new, before the server runs). gw_dns_free releases what is left after it ran. */
void gw_dns_init(gateway_t *gw);
void gw_dns_free(gateway_t *gw);
/* Control thread, before c is published: follows the names of c's watched upstreams (starting
 * and stopping watches) and replaces each name that has answered by its current addresses.
 * A no-op before the server runs. */
void gw_dns_prepare(gateway_t *gw, gw_config_t *c);

/* The name a backend's Host/SNI defaults to: its host name, "localhost" for a unix socket,
 * NULL for an IP address. */
const char *gw_backend_name(const gw_backend_t *b);

/* upstream_peer for a backend with a host name still to resolve (b->host && !b->addr_len):
 * fills peer->addr and returns SL_CONTINUE, returns SL_PENDING and resumes the session later,
 * or returns SL_EDNS (gw_dns_fail explains). *req is the request's state, made on first use
 * (session arena); peer->options.connect_timeout_ms must be set (it caps the wait, and what the
 * wait took is taken from it). */
int gw_dns_peer(sl_session_t *s, gw_dns_req_t **req, const gw_upstream_t *u, const gw_backend_t *b,
                sl_peer_t *peer);
/* fail_to_connect: notes the address that failed (the next try avoids it); true when the name
 * had more than one address. req may be NULL. */
bool gw_dns_retry(gw_dns_req_t *req, const sl_peer_t *peer);
/* fail_to_proxy: when err is a resolution failure of this request, answers 502 with its
 * message and returns 502; else 0. */
int gw_dns_fail(sl_session_t *s, gw_dns_req_t *req, int err);
/* free_ctx: cancels a lookup still pending (the session is going away). req may be NULL. */
void gw_dns_req_end(gw_dns_req_t *req);

/* Admin thread: the Prometheus text of the DNS metrics (caller frees). */
char *gw_dns_metrics(gateway_t *gw);

#endif
