/* Lesson 15: h2c — plain HTTP/1.1 clients on 0.0.0.0:6155, cleartext HTTP/2 by prior
 * knowledge to the Advanced nginx's h2c port (172.28.0.22:8081): TLS off with ALPN H2 means
 * "send the HTTP/2 preface at once". There is no fallback: an upstream that does not speak
 * h2c fails the request (502). */
#define SL_LOG_TAG "15_h2c_support"
#include <sluice/sluice.h>

static int upstream_peer(sl_session_t *s, void *ctx, sl_peer_t *peer)
{
    /* Target the "Advanced" nginx upstream on port 8081 (h2c); TLS off. */
    int rc = sl_peer_new(peer, "172.28.0.22:8081", false, "advanced.pingora.local");
    /* Force HTTP/2: without TLS there is no ALPN to negotiate it, we just send h2 frames. */
    peer->options.alpn = SL_ALPN_H2;
    SL_INFO("Forwarding to Upstream Advanced via H2C (Port 8081)");
    return rc;
}

static int upstream_request_filter(sl_session_t *s, void *ctx, sl_request_header_t *req)
{
    /* nginx requires the Host header (:authority over h2) to match the server block. */
    sl_headers_set(&req->headers, "Host", "advanced.pingora.local");
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
    /* Standard HTTP/1.1 on the front end. */
    sl_service_add_tcp(proxy, "0.0.0.0:6155");
    SL_INFO("Proxy running on 0.0.0.0:6155 (HTTP/1.1) -> Forwarding to Upstream (H2C)");
    sl_server_add_service(server, proxy);
    return sl_server_run_forever(server);
}
