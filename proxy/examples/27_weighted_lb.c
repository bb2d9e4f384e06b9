/* Lesson 27: weighted load balancing — Blue weight 3, Green weight 1: exactly 3:1 over every
 * 4 requests (smooth: blue, blue, green, blue). Port 6171. */
#define SL_LOG_TAG "27_weighted_lb"
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
    sl_headers_set(&req->headers, "Host", "weighted-cluster");
    return SL_CONTINUE;
}

int main(int argc, char **argv)
{
    int code;
    sl_server_t *server = sl_server_from_args(argc, argv, &code);
    if (!server)
        return code;
    sl_server_bootstrap(server);

    sl_backend_t backends[2];
    sl_backend_init(&backends[0], "172.28.0.20:8080", 3); /* Blue */
    sl_backend_init(&backends[1], "172.28.0.21:8080", 1); /* Green */
    sl_lb_t *lb = sl_lb_new(SL_LB_ROUND_ROBIN, backends, 2);
    sl_server_add_service(server, sl_lb_background_service("weighted_lb", lb));

    static const sl_proxy_hooks_t hooks = {
        .upstream_peer = upstream_peer,
        .upstream_request_filter = upstream_request_filter,
    };
    sl_service_t *proxy = sl_http_proxy_service_new(sl_server_conf(server), &hooks, lb);
    sl_service_add_tcp(proxy, "0.0.0.0:6171");
    SL_INFO("Weighted Load Balancer running on 0.0.0.0:6171");
    SL_INFO("Configuration: Blue (Weight 3) vs Green (Weight 1)");
    sl_server_add_service(server, proxy);
    code = sl_server_run_forever(server);
    sl_lb_free(lb);
    return code;
}
