/* Peers: where a request goes. */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "core/core.h"
#include "io/connect_tunnel.h"
#include "sluice/peer.h"

void sl_peer_init(sl_peer_t *p)
{
    memset(p, 0, sizeof(*p));
    p->options.connect_timeout_ms = 10000;
    p->options.read_timeout_ms = 60000;
    p->options.write_timeout_ms = 60000;
    p->options.idle_timeout_ms = 60000;
    p->options.tunnel_idle_timeout_ms = 3600000;
    p->options.verify_cert = true;
    p->options.verify_hostname = true;
}

int sl_peer_set_address(sl_peer_t *p, const char *addr)
{
    sl_endpoint_t ep;
    memset(&ep, 0, sizeof(ep));
    if (sl__endpoint_parse(&ep, addr, NULL) != 0)
        return SL_ECONFIG;
    p->addr = ep.addr;
    p->addr_len = ep.addr_len;
    return 0;
}

int sl_peer_new(sl_peer_t *p, const char *addr, bool tls, const char *sni)
{
    sl_peer_init(p);
    p->tls = tls;
    if (sni)
        snprintf(p->sni, sizeof(p->sni), "%s", sni);
    return sl_peer_set_address(p, addr);
}

int sl_peer_set_proxy(sl_peer_t *p, const char *addr)
{
    sl_endpoint_t ep;
    memset(&ep, 0, sizeof(ep));
    if (sl__endpoint_parse(&ep, addr, NULL) != 0)
        return SL_ECONFIG;
    if (ep.addr.ss_family != AF_UNIX && sl__ctun_addr_port(&ep.addr) == 0)
        return SL_ECONFIG;
    p->options.proxy.addr = ep.addr;
    p->options.proxy.addr_len = ep.addr_len;
    return 0;
}

void sl_peer_addr_str(const sl_peer_t *p, char *buf, size_t cap)
{
    if (p->options.proxy.addr_len && sl__ctun_target(p, buf, cap) == 0)
        return;
    sl_sockaddr_str(&p->addr, buf, cap);
}
