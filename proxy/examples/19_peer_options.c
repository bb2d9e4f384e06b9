/* Lesson 19: peer options — /timeout dials the blackhole 192.0.2.1:80 with a 100 ms connect
 * timeout (-> 504); everything else goes to Blue with 2 s timeouts. Port 6163. */
#define SL_LOG_TAG "19_peer_options"
#include <sluice/sluice.h>

static int upstream_peer(sl_session_t *s, void *ctx, sl_peer_t *peer)
{
    sl_str_t path = sl_request_path(sl_session_req(s));
    int rc;
    if (sl_str_eq(path, SL_STR("/timeout"))) {
        SL_INFO("Routing to Blackhole IP (192.0.2.1) to force timeout...");
        rc = sl_peer_new(peer, "192.0.2.1:80", false, "blackhole.local");
        peer->options.connect_timeout_ms = 100;
    } else {
        SL_INFO("Routing to Blue (Standard Timeout)");
        rc = sl_peer_new(peer, "172.28.0.20:8080", false, "blue.pingora.local");
        peer->options.connect_timeout_ms = 2000;
    }
    /* Generous read/write timeouts: only the connect time is under test. */
    peer->options.read_timeout_ms = 2000;
    peer->options.write_timeout_ms = 2000;
    return rc;
}

static int fail_to_proxy(sl_session_t *s, void *ctx, int err)
{
    if (err == SL_ETIMEDOUT_CONNECT || err == SL_ETIMEDOUT_READ) {
        SL_WARN("Custom Error Handler: Connection Timed Out!");
        sl_session_respond_error(s, 504, NULL);
        return 504;
    }
    SL_WARN("Fail to proxy: %s", sl_strerror(err));
    sl_session_respond_error(s, 502, NULL);
    return 502;
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
        .fail_to_proxy = fail_to_proxy,
    };
    sl_service_t *proxy = sl_http_proxy_service_new(sl_server_conf(server), &hooks, NULL);
    sl_service_add_tcp(proxy, "0.0.0.0:6163");
    SL_INFO("Timeout Config Proxy running on 0.0.0.0:6163");
    sl_server_add_service(server, proxy);
    return sl_server_run_forever(server);
}
