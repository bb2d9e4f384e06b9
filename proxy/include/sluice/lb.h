/* sluice — load balancing (Pingora's LoadBalancer, Backends, ServiceDiscovery).
 *
 * A load balancer holds a set of backends and picks one per request. Its set can be replaced
 * at any time from any thread (sl_lb_update), or refreshed periodically by a discovery
 * callback that a background service runs (sl_lb_background_service). Picking never blocks on
 * an update for longer than a copy of one backend. */
#ifndef SLUICE_LB_H
#define SLUICE_LB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "server.h"

typedef struct sl_backend {
    struct sockaddr_storage addr;
    unsigned addr_len;
    uint32_t weight; /* >= 1 */
} sl_backend_t;

/* Parses "1.2.3.4:80", "[::1]:80" or "unix:/path" with a weight (1 if 0). Returns 0 or
 * SL_ECONFIG. */
int sl_backend_init(sl_backend_t *b, const char *addr, uint32_t weight);
/* "172.28.0.20:8080" */
void sl_backend_addr_str(const sl_backend_t *b, char *buf, size_t cap);

typedef enum sl_lb_algorithm {
    SL_LB_ROUND_ROBIN, /* smooth weighted round robin: weights 3:1 give a a b a */
} sl_lb_algorithm_t;

typedef struct sl_lb sl_lb_t;

/* A load balancer over n backends (copied). */
sl_lb_t *sl_lb_new(sl_lb_algorithm_t algorithm, const sl_backend_t *backends, size_t n);
/* Convenience (Pingora's try_from_iter): weight 1 each. Returns NULL on a bad address. */
sl_lb_t *sl_lb_from_addrs(const char *const *addrs, size_t n);
void sl_lb_free(sl_lb_t *lb);

/* Picks a backend into *out. key is for hashing algorithms (ignored by round robin).
 * Returns 0, or SL_ENOUPSTREAM when the set is empty. Thread-safe. */
int sl_lb_select(sl_lb_t *lb, const void *key, size_t key_len, sl_backend_t *out);
/* Replaces the set (copied) when it differs. Returns true if it changed. Thread-safe. */
bool sl_lb_update(sl_lb_t *lb, const sl_backend_t *backends, size_t n);
/* Copies the current set into a malloc'd array (*out, *n). Thread-safe. */
void sl_lb_backends(sl_lb_t *lb, sl_backend_t **out, size_t *n);

/* Discovery: fills a malloc'd array of backends; returns 0, or an error to keep the current
 * set. Called from the load balancer's background service every update_frequency_ms. */
typedef int (*sl_lb_discover_fn)(void *data, sl_backend_t **backends, size_t *n);
void sl_lb_set_discovery(sl_lb_t *lb, sl_lb_discover_fn fn, void *data,
                         uint64_t update_frequency_ms);
/* A background service that runs the discovery (Pingora's background_service(name, lb)). With
 * no discovery it finishes at once (the set stays). The service does not own lb. */
sl_service_t *sl_lb_background_service(const char *name, sl_lb_t *lb);

/* The smooth weighted round robin order for weights (reduced by their gcd): seq gets
 * sum-of-weights indices (at most 8192; larger sums are scaled). Caller frees *seq. */
void sl_swrr_sequence(const uint32_t *weights, size_t n, uint32_t **seq, size_t *len);

#endif
