/* `protocol: tcp` listeners: the library's TCP proxy with the gateway's hooks. Each new
 * connection takes the listener's upstream from the worker's current snapshot (so PUT /config
 * and PUT /upstreams/NAME/backends apply to new connections), and holds that snapshot only until
 * it is connected: a long-lived connection keeps its backend, never an old configuration. */
#include <stdlib.h>
#include <string.h>

#include "gateway/runtime.h"
#include "gateway/upstream_tunnel.h"
#include "sluice/tcp.h"
#include "util/mem.h"

#define SL_LOG_TAG "gateway"
#include "sluice/log.h"

struct gw_tcp_listener {
    gateway_t *gw;
    size_t index; /* in every snapshot's listeners (they never change at run time) */
};

typedef struct tcp_ctx {
    gw_config_t *cfg; /* the snapshot this connection chose its backend from, until connected */
    char tunnel_host[GW_TUNNEL_HOST_MAX]; /* through a CONNECT proxy: an IP backend's target */
} tcp_ctx_t;

static void *new_ctx(sl_tcp_session_t *s)
{
    gw_tcp_listener_t *tl = sl_tcp_session_app(s);
    gw_worker_t *gww = &tl->gw->workers[sl_worker_id(sl_tcp_session_worker(s))];
    tcp_ctx_t *c = sl_xmalloc(sizeof(*c));
    c->cfg = gw_config_ref(gww->snap->cfg);
    return c;
}

static void release_cfg(tcp_ctx_t *c)
{
    if (c->cfg) {
        gw_config_release(c->cfg);
        c->cfg = NULL;
    }
}

static void free_ctx(sl_tcp_session_t *s, void *ctx)
{
    release_cfg(ctx);
    free(ctx);
}

static gw_upstream_t *listener_upstream(sl_tcp_session_t *s, const tcp_ctx_t *c)
{
    const gw_tcp_listener_t *tl = sl_tcp_session_app(s);
    if (!c->cfg || tl->index >= c->cfg->n_listeners)
        return NULL;
    return c->cfg->listeners[tl->index].tcp_upstream;
}

static int upstream_peer(sl_tcp_session_t *s, void *ctx, sl_peer_t *peer)
{
    gw_upstream_t *u = listener_upstream(s, ctx);
    const gw_backend_t *b = u ? gw_upstream_pick(u) : NULL;
    if (!b)
        return SL_ENOUPSTREAM;
    if (!b->addr_len && !u->tunnel) {
        /* A host name resolved per request (HTTP routes only, for now; a tunnel's proxy
         * resolves them itself). */
        SL_WARN("tcp listener: backend %s of upstream %s is a host name, which tcp listeners do "
                "not resolve yet",
                b->address, u->name);
        return SL_ENOUPSTREAM;
    }
    memcpy(&peer->addr, &b->addr, b->addr_len);
    peer->addr_len = b->addr_len;
    if (u->tunnel) {
        int rc = gw_tunnel_peer(u, b, peer, ((tcp_ctx_t *)ctx)->tunnel_host);
        if (rc)
            return rc;
    }
    /* 0 means "not set": the listener's defaults stay (connect 10 s, idle 10 min). */
    if (u->timeouts.connect)
        peer->options.connect_timeout_ms = u->timeouts.connect;
    if (u->timeouts.idle)
        peer->options.idle_timeout_ms = u->timeouts.idle;
    if (u->tls) {
        /* The strings live in the snapshot, which this connection holds until connected. */
        /* A host name backend (only through a tunnel) is its own default name. */
        const char *sni = u->tls->sni   ? u->tls->sni
                          : u->host     ? u->host
                          : b->addr_len ? NULL
                                        : b->host;
        if (sni && strlen(sni) < sizeof(peer->sni))
            memcpy(peer->sni, sni, strlen(sni) + 1);
        peer->tls = true;
        peer->options.verify_cert = peer->options.verify_hostname = u->tls->verify;
        peer->options.ca_file = u->tls->ca;
        peer->options.client_cert = u->tls->cert;
        peer->options.client_key = u->tls->key;
    }
    return SL_CONTINUE;
}

static int fail_to_connect(sl_tcp_session_t *s, void *ctx, const sl_peer_t *peer, int err)
{
    const gw_upstream_t *u = listener_upstream(s, ctx);
    if (u && u->n_backends > 1)
        sl_tcp_session_set_retry(s, true);
    return err;
}

static int connected_to_upstream(sl_tcp_session_t *s, void *ctx, const sl_peer_t *peer, int fd)
{
    release_cfg(ctx); /* the backend is chosen for good */
    return SL_CONTINUE;
}

static const sl_tcp_proxy_hooks_t gw_tcp_hooks = {
    .new_ctx = new_ctx,
    .free_ctx = free_ctx,
    .upstream_peer = upstream_peer,
    .fail_to_connect = fail_to_connect,
    .connected_to_upstream = connected_to_upstream,
};

sl_service_t *gw_tcp_service_new(gateway_t *gw, size_t listener, gw_tcp_listener_t **out)
{
    gw_tcp_listener_t *tl = sl_xcalloc(1, sizeof(*tl));
    tl->gw = gw;
    tl->index = listener;
    *out = tl;
    return sl_tcp_proxy_service_new(sl_server_conf(gw->server), &gw_tcp_hooks, tl);
}

void gw_tcp_listener_free(gw_tcp_listener_t *tl)
{
    free(tl);
}
