/* `upstreams.NAME.tunnel`: an upstream's backends reached through an HTTP forward proxy with
 * CONNECT (the library's sl_peer_proxy_t):
 *
 *   tunnel: { connect_proxy: 127.0.0.1:3128 }
 *   tunnel: { connect_proxy: 10.0.0.1:3128, auth: "Basic dXNlcjpwYXNz" }
 *   tunnel: { connect_proxy: unix:/run/proxy.sock, auth: { user: alice, password: s3cret } }
 *
 * The proxy is asked for each backend as written: `ip:port` as the IP, `name:port` as the name,
 * which the proxy resolves (sluice does not), so `dns` does not go with `tunnel`, and unix
 * socket backends cannot be tunnelled. TLS (sni, verification) and Host are as without a proxy. */
#ifndef SL_GATEWAY_UPSTREAM_TUNNEL_H
#define SL_GATEWAY_UPSTREAM_TUNNEL_H

#include <netinet/in.h>

#include "gateway/gateway.h"

struct gw_tunnel {
    char *connect_proxy;          /* as written */
    struct sockaddr_storage addr; /* the proxy */
    unsigned addr_len;
    char *authorization; /* the Proxy-Authorization value, NULL: none */
};

/* Room for the CONNECT host of an IP backend (see gw_tunnel_peer). */
#define GW_TUNNEL_HOST_MAX INET6_ADDRSTRLEN

/* upstreams.NAME.tunnel of v (the upstream) into u->tunnel; checks it against u's other keys
 * and backends (call after they are parsed). Returns 0 or SL_ECONFIG with the key path. */
int gw_tunnel_parse(gw_upstream_t *u, const cJSON *v, const char *path, sl_error_t *err);
void gw_tunnel_free(gw_tunnel_t *t);
/* Sets peer's proxy for backend b of u (u->tunnel set). host (GW_TUNNEL_HOST_MAX bytes that
 * outlive the request) receives an IP backend's address. A host name backend gets the
 * unspecified address with its port (so it is not resolved here). Returns 0, or
 * SL_ENOUPSTREAM for a backend that cannot be tunnelled. */
int gw_tunnel_peer(const gw_upstream_t *u, const gw_backend_t *b, sl_peer_t *peer, char *host);
/* GET /config: the credentials of every upstream's tunnel replaced by "<redacted>". */
void gw_tunnel_redact(cJSON *upstreams);

#endif
