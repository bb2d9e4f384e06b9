/* Lesson 26: round robin — a load balancer over Blue and Green, alternating. Port 6170. */
#define SL_LOG_TAG "26_round_robin"
#include <sluice/sluice.h>

static int upstream_peer(sl_session_t *s, void *ctx, sl_peer_t *peer)
{
    sl_lb_t *lb = sl_session_app(s);
    sl_backend_t b;
    if (sl_lb_select(lb, "", 0, &b) != 0)
        return sl_session_error(s, "NoUpstreamAvailable");
    char addr[64];
    sl_backend_addr_str(&b, addr, sizeof(addr));
    SL_INFO("Selected upstream: Backend { addr: Inet(%s), weight: %u }", addr, b.weight);
    sl_peer_init(peer);
    peer->addr = b.addr;
    peer->addr_len = b.addr_len;
    return SL_CONTINUE;
}

static int upstream_request_filter(sl_session_t *s, void *ctx, sl_request_header_t *req)
{
    sl_headers_set(&req->headers, "Host", "round-robin-cluster");
    return SL_CONTINUE;
}

int main(int argc, char **argv)
{
    int code;
    sl_server_t *server = sl_server_from_args(argc, argv, &code);
    if (!server)
        return code;
    sl_server_bootstrap(server);

    static const char *const addrs[] = {"172.28.0.20:8080", "172.28.0.21:8080"};
    sl_lb_t *lb = sl_lb_from_addrs(addrs, 2);
    /* The background service would run health checks or discovery; with neither it exits. */
    sl_server_add_service(server, sl_lb_background_service("round_robin_lb", lb));

    static const sl_proxy_hooks_t hooks = {
        .upstream_peer = upstream_peer,
        .upstream_request_filter = upstream_request_filter,
    };
    sl_service_t *proxy = sl_http_proxy_service_new(sl_server_conf(server), &hooks, lb);
    sl_service_add_tcp(proxy, "0.0.0.0:6170");
    SL_INFO("Round Robin Load Balancer running on 0.0.0.0:6170");
    sl_server_add_service(server, proxy);
    code = sl_server_run_forever(server);
    sl_lb_free(lb);
    return code;
}
