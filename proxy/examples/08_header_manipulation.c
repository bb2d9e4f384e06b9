/* Lesson 8: header manipulation — to Upstream Green; adds X-Pingora-Proxy and removes
 * User-Agent on the way up, adds X-Edited-By: Pingora on the way down. Port 6148. */
#define SL_LOG_TAG "08_header_manipulation"
#include <sluice/sluice.h>

static int upstream_peer(sl_session_t *s, void *ctx, sl_peer_t *peer)
{
    return sl_peer_new(peer, "172.28.0.21:8080", false, "green.pingora.local");
}

static int upstream_request_filter(sl_session_t *s, void *ctx, sl_request_header_t *req)
{
    sl_headers_set(&req->headers, "Host", "green.pingora.local");
    sl_headers_set(&req->headers, "X-Pingora-Proxy", "true");
    sl_headers_remove(&req->headers, "User-Agent");
    SL_INFO("Request headers modified: Added X-Pingora-Proxy, Removed User-Agent.");
    return SL_CONTINUE;
}

static int response_filter(sl_session_t *s, void *ctx, sl_response_header_t *resp)
{
    sl_headers_set(&resp->headers, "X-Edited-By", "Pingora");
    SL_INFO("Response headers modified: Added X-Edited-By");
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
        .response_filter = response_filter,
    };
    sl_service_t *proxy = sl_http_proxy_service_new(sl_server_conf(server), &hooks, NULL);
    sl_service_add_tcp(proxy, "0.0.0.0:6148");
    SL_INFO("Header Manipulation Proxy running on 0.0.0.0:6148 -> Forwarding to Upstream Green");
    sl_server_add_service(server, proxy);
    return sl_server_run_forever(server);
}
