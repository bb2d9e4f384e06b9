/* The watcher's own health endpoint: GET /healthz (and /readyz) answers 200 "ok" once the first
 * sync is done (every informer listed, or the manifests read, and the first config applied),
 * 503 before; GET /livez answers 200 while the process runs (a liveness probe that does not
 * restart a watcher that waits for an unreachable API server). */
#ifndef WT_HEALTHZ_H
#define WT_HEALTHZ_H

#include <stdbool.h>
#include <uv.h>

#include "sluice/error.h"

typedef struct wt_healthz wt_healthz_t;

/* listen: "127.0.0.1:10255" or "[::1]:10255". ready() is asked at every request. */
wt_healthz_t *wt_healthz_start(uv_loop_t *loop, const char *listen, bool (*ready)(void *arg),
                               void *arg, sl_error_t *err);
void wt_healthz_stop(wt_healthz_t *h);
/* Parses "host:port" / "[v6]:port" into addr; 0 or -1. */
int wt_parse_hostport(const char *s, struct sockaddr_storage *addr);

#endif
