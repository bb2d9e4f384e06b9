/* The running gateway: its snapshot handling, per-worker state, metrics, admin and discovery. */
#ifndef SL_GATEWAY_RUNTIME_H
#define SL_GATEWAY_RUNTIME_H

#include <pthread.h>

#include "gateway/gateway.h"
#include "sluice/server.h"

/* A worker's hold on a snapshot: requests count uses on the worker thread (no atomics); the
 * global reference drops once the worker moved on and the last request using it ended. */
typedef struct gw_worker gw_worker_t;
typedef struct gw_wsnap {
    gw_config_t *cfg;
    gw_worker_t *owner;
    long uses;
    bool retired;
} gw_wsnap_t;

typedef struct gw_metrics gw_metrics_t;
typedef struct gw_tcp_listener gw_tcp_listener_t;
typedef struct gw_admin gw_admin_t;
typedef struct gw_discovery gw_discovery_t;

struct gw_worker {
    gateway_t *gw;
    gw_wsnap_t *snap;
    gw_metrics_t *metrics;
};

struct gateway {
    sl_server_t *server;
    const char *conf_path; /* for SIGHUP; NULL with built-in defaults */
    gw_config_t *current;  /* control thread's reference */
    cJSON *file_doc;       /* the gateway part of the file as last loaded */
    gw_worker_t *workers;
    size_t n_workers;
    sl_service_t **services; /* one proxy service per listener (HTTP, or TCP: see tcp) */
    size_t n_services;
    gw_tcp_listener_t **tcp; /* per listener: the TCP proxy's state, NULL for HTTP */
    sl_tls_settings_t **tls; /* per listener (NULL: plain); certificates swap with configs */
    gw_admin_t *admin;
    gw_discovery_t *discovery;
    struct gw_dns *dns; /* host name backends: resolvers and watches (upstream_dns.c) */
    uint64_t generation;
    uint64_t last_apply_us; /* parse + publish time of the last change (control thread) */
    _Atomic uint64_t reloads_ok, reloads_failed;
    bool ready; /* listeners bound and a config loaded */
    bool draining;
};

/* gateway.c */
gateway_t *gw_new(sl_server_t *server, gw_config_t *initial, const cJSON *file_doc,
                  const char *conf_path);
void gw_free(gateway_t *gw);
/* Adds the listeners' services to the server and the hooks behind them. */
int gw_add_services(gateway_t *gw, sl_error_t *err);
/* The proxy hooks of the gateway (the gateway is one user of the public API). */
extern const sl_proxy_hooks_t gw_hooks;
/* Re-reads the config file (SIGHUP). */
void gw_reload_file(gateway_t *gw);

/* metrics.c: one table per worker; the admin thread sums them. */
gw_metrics_t *gw_metrics_new(void);
void gw_metrics_free(gw_metrics_t *m);
/* Worker thread: one finished request. */
void gw_metrics_request(gw_metrics_t *m, const char *route, const char *upstream, int code,
                        sl_str_t method, uint64_t duration_ns, uint64_t connect_ns, bool reused);
/* Worker thread (m's own): drops the series of routes and upstreams that c does not have. */
void gw_metrics_prune(gw_metrics_t *m, const gw_config_t *c);
/* Admin thread: the Prometheus text of every worker's metrics and the gateway's gauges. */
char *gw_metrics_render(gateway_t *gw, size_t *len);

/* tcp_listener.c: a `protocol: tcp` listener's service (the TCP proxy with the gateway's
 * hooks); *out is its state, freed by gw_tcp_listener_free after the server ended. */
sl_service_t *gw_tcp_service_new(gateway_t *gw, size_t listener, gw_tcp_listener_t **out);
void gw_tcp_listener_free(gw_tcp_listener_t *tl);

/* admin.c */
int gw_admin_start(gateway_t *gw, uv_loop_t *loop, sl_error_t *err);
void gw_admin_stop(gateway_t *gw);

/* discovery.c: watches every upstream's discovery.file (control thread). */
void gw_discovery_sync(gateway_t *gw, uv_loop_t *loop);
void gw_discovery_stop(gateway_t *gw);
/* Reads a discovery file into a JSON list of backends ("ip:port" strings). */
int gw_discovery_read(const char *path, cJSON **list, sl_error_t *err);
/* Fills upstreams that have a discovery file from the file (control thread, at load). */
int gw_discovery_resolve(cJSON *doc, sl_error_t *err);

#endif
