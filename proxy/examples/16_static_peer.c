/* Lesson 16: static peer — a hard-coded ip:port upstream (Blue). Port 6160. */
#define SL_LOG_TAG "16_static_peer"
#include <sluice/sluice.h>

static int upstream_peer(sl_session_t *s, void *ctx, sl_peer_t *peer)
{
    /* Address, TLS off, SNI (also the name used for Host when the client sent none). */
    SL_INFO("Connecting to static peer: (\"172.28.0.20\", 8080)");
    return sl_peer_new(peer, "172.28.0.20:8080", false, "blue.pingora.local");
}

int main(int argc, char **argv)
{
    int code;
    sl_server_t *server = sl_server_from_args(argc, argv, &code);
    if (!server)
        return code;
    sl_server_bootstrap(server);
    static const sl_proxy_hooks_t hooks = {.upstream_peer = upstream_peer};
    sl_service_t *proxy = sl_http_proxy_service_new(sl_server_conf(server), &hooks, NULL);
    sl_service_add_tcp(proxy, "0.0.0.0:6160");
    SL_INFO("Static Peer Proxy running on 0.0.0.0:6160");
    sl_server_add_service(server, proxy);
    return sl_server_run_forever(server);
}
