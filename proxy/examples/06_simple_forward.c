/* Lesson 6: the simple forwarder — every request on 0.0.0.0:6146 goes to Upstream Blue
 * (172.28.0.20:8080) with its Host header rewritten. */
#define SL_LOG_TAG "06_simple_forward"
#include <sluice/sluice.h>

static int upstream_peer(sl_session_t *s, void *ctx, sl_peer_t *peer)
{
    SL_INFO("Forwarding request to Upstream Blue (172.28.0.20:8080)");
    return sl_peer_new(peer, "172.28.0.20:8080", false, "blue.pingora.local");
}

static int upstream_request_filter(sl_session_t *s, void *ctx, sl_request_header_t *req)
{
    /* Many servers reject a Host that does not name them, even at the right IP. */
    sl_headers_set(&req->headers, "Host", "blue.pingora.local");
    return SL_CONTINUE;
}

int main(int argc, char **argv)
{
    int code;
    sl_server_t *server = sl_server_from_args(argc, argv, &code);
    if (!server)
        return code;
    sl_server_bootstrap(server);

    static const sl_proxy_hooks_t hooks = {
        .upstream_peer = upstream_peer,
        .upstream_request_filter = upstream_request_filter,
    };
    sl_service_t *proxy = sl_http_proxy_service_new(sl_server_conf(server), &hooks, NULL);
    sl_service_add_tcp(proxy, "0.0.0.0:6146");

    SL_INFO("Simple Proxy running on 0.0.0.0:6146 -> Forwarding to Upstream Blue");
    sl_server_add_service(server, proxy);
    return sl_server_run_forever(server);
}
