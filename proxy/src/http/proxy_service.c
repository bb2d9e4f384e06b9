/* The HTTP proxy service: a listening service whose app is the HTTP/1.1 engine, with one
 * engine state (pool, buffers) per worker. */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "http/proxy_impl.h"
#include "io/tls.h"
#include "sluice/tls.h"
#include "util/mem.h"

#define SL_LOG_TAG "proxy"
#include "sluice/log.h"

sl_http_worker_t *sl__http_worker(sl_http_service_t *svc, sl_worker_t *w)
{
    return svc->workers[sl_worker_id(w)];
}

static void on_shutdown(sl_shutdown_sub_t *sub)
{
    sl_http_worker_t *hw = sl_container_of(sub, sl_http_worker_t, on_shutdown);
    hw->shutting_down = true;
    sl__down_shutdown_all(hw, false);
    sl__h2_down_shutdown_all(hw, false);
}

static void on_expired(sl_shutdown_sub_t *sub)
{
    sl_http_worker_t *hw = sl_container_of(sub, sl_http_worker_t, on_expired);
    sl__down_shutdown_all(hw, true);
    sl__h2_down_shutdown_all(hw, true);
    sl__session_close_tunnels(hw);
}

static void worker_start(void *data, sl_worker_t *w)
{
    sl_http_service_t *svc = data;
    sl_http_worker_t *hw = sl_xcalloc(1, sizeof(*hw));
    hw->svc = svc;
    hw->worker = w;
    hw->loop = sl_worker_loop(w);
    hw->pool = sl__pool_new(hw, svc->pool_size);
    svc->workers[sl_worker_id(w)] = hw;
    sl_shutdown_watch_t *watch = sl_worker_shutdown_watch(w);
    sl_shutdown_subscribe(watch, &hw->on_shutdown, on_shutdown);
    sl_shutdown_subscribe_expired(watch, &hw->on_expired, on_expired);
}

static void worker_stop(void *data, sl_worker_t *w)
{
    sl_http_service_t *svc = data;
    sl_http_worker_t *hw = svc->workers[sl_worker_id(w)];
    if (!hw)
        return;
    sl_shutdown_unsubscribe(&hw->on_shutdown);
    sl_shutdown_unsubscribe(&hw->on_expired);
    hw->shutting_down = true;
    sl__down_shutdown_all(hw, true);
    sl__h2_down_shutdown_all(hw, true);
    sl__h2_up_close_all(hw);
    sl__session_close_tunnels(hw);
    sl__pool_free(hw->pool);
    free(hw->h2_rbuf);
    hw->h2_rbuf = NULL;
    hw->pool = NULL;
    /* Connections and pooled upstreams close asynchronously; buffers they return after this
     * point are freed rather than pooled (see sl__iobuf_put with hw->free_bufs == NULL). */
    for (size_t i = 0; i < hw->n_free_bufs; i++)
        free(hw->free_bufs[i]);
    for (size_t i = 0; i < hw->n_free_small; i++)
        free(hw->free_small[i]);
    free(hw->free_bufs);
    free(hw->free_small);
    hw->free_bufs = hw->free_small = NULL;
    hw->n_free_bufs = hw->n_free_small = 0;
    hw->stopped = true;
    sl__down_free_parse_list(hw);
    while (hw->free_sessions) {
        sl_session_t *s = hw->free_sessions;
        hw->free_sessions = s->next_free;
        free(s);
    }
    hw->n_free_sessions = 0;
}

static void process_new(void *data, sl_stream_t *stream, sl_shutdown_watch_t *shutdown)
{
    const char *alpn = sl_stream_alpn(stream);
    if (alpn && strcmp(alpn, "h2") == 0)
        sl__h2_down_new(data, stream);
    else
        sl__down_new(data, stream);
}

static void service_free(void *data)
{
    sl_http_service_t *svc = data;
    free(svc->ca_file);
    free(svc->bind4);
    free(svc->bind6);
    for (size_t i = 0; i < svc->n_workers; i++)
        free(svc->workers[i]);
    free(svc->workers);
    free(svc);
}

/* Pingora's client_bind_to_ipv4/ipv6: addresses (port 0) upstream connections bind to. An
 * entry that is not an address of the family is skipped with a warning. */
static struct sockaddr_storage *parse_binds(char *const *list, size_t n, int family, size_t *out_n)
{
    *out_n = 0;
    if (!n)
        return NULL;
    struct sockaddr_storage *a = sl_xcalloc(n, sizeof(*a));
    for (size_t i = 0; i < n; i++) {
        struct sockaddr_storage *x = &a[*out_n];
        if (family == AF_INET &&
            inet_pton(AF_INET, list[i], &((struct sockaddr_in *)x)->sin_addr) == 1) {
            x->ss_family = AF_INET;
            (*out_n)++;
        } else if (family == AF_INET6 &&
                   inet_pton(AF_INET6, list[i], &((struct sockaddr_in6 *)x)->sin6_addr) == 1) {
            x->ss_family = AF_INET6;
            (*out_n)++;
        } else {
            SL_WARN("client_bind_to_ipv%d: \"%s\" is not an address; ignored",
                    family == AF_INET ? 4 : 6, list[i]);
        }
    }
    return a;
}

sl_service_t *sl_http_proxy_service_new(const sl_server_conf_t *conf, const sl_proxy_hooks_t *hooks,
                                        void *app)
{
    sl__h2_init();
    sl__h2_up_init();
    sl_http_service_t *svc = sl_xcalloc(1, sizeof(*svc));
    svc->hooks = *hooks;
    svc->app = app;
    svc->pool_size = conf ? conf->upstream_keepalive_pool_size : 128;
    svc->max_retries = conf ? conf->max_retries : 16;
    svc->n_workers = conf && conf->threads > 0 ? (size_t)conf->threads : 1;
    svc->workers = sl_xcalloc(svc->n_workers, sizeof(*svc->workers));
    if (conf) {
        svc->ca_file = conf->ca_file ? sl_xstrdup(conf->ca_file) : NULL;
        if (conf->upstream_debug_ssl_keylog)
            sl__tls_keylog_enable();
        svc->bind4 = parse_binds(conf->client_bind_to_ipv4, conf->n_client_bind_to_ipv4, AF_INET,
                                 &svc->n_bind4);
        svc->bind6 = parse_binds(conf->client_bind_to_ipv6, conf->n_client_bind_to_ipv6, AF_INET6,
                                 &svc->n_bind6);
    }
    sl_http_options_t *o = &svc->opts;
    o->max_request_line = 8192;
    o->max_header_size = 32768;
    o->max_headers = 100;
    o->header_timeout_ms = 10000;
    o->body_timeout_ms = 60000;
    o->keepalive_timeout_ms = 60000;
    o->max_requests_per_conn = 0;
    o->add_forwarded_headers = true;
    o->error_format = "json";
    o->h2c = true;
    o->h2_max_concurrent_streams = 128;
    o->h2_initial_window_size = 256 * 1024;
    static const sl_server_app_t app_vt = {
        .process_new = process_new,
        .worker_start = worker_start,
        .worker_stop = worker_stop,
        .free = service_free,
        .stream_data_size = sizeof(h1_down_t),
    };
    svc->service = sl_listening_service_new("http-proxy", &app_vt, svc);
    return svc->service;
}

sl_http_options_t *sl_http_proxy_options(sl_service_t *service)
{
    sl_http_service_t *svc = sl_service_app_data(service);
    return &svc->opts;
}

void sl_http_proxy_stats(sl_service_t *service, sl_http_stats_t *out)
{
    sl_http_service_t *svc = sl_service_app_data(service);
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < svc->n_workers; i++) {
        sl_http_worker_t *hw = svc->workers[i];
        if (!hw)
            continue;
        out->accepted += atomic_load_explicit(&hw->st_accepted, memory_order_relaxed);
        out->requests += atomic_load_explicit(&hw->st_requests, memory_order_relaxed);
        out->upstream_reused += atomic_load_explicit(&hw->st_reused, memory_order_relaxed);
        out->open += atomic_load_explicit(&hw->st_open, memory_order_relaxed);
        out->active += atomic_load_explicit(&hw->st_active, memory_order_relaxed);
        out->upstream_open += atomic_load_explicit(&hw->st_up_open, memory_order_relaxed);
        out->upstream_idle += atomic_load_explicit(&hw->st_up_idle, memory_order_relaxed);
    }
}
