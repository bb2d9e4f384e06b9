/* Lesson 11: response modification — removes X-App-Version, adds
 * X-Content-Type-Options: nosniff and copies Date into X-Legacy-Date. Port 6151. */
#define SL_LOG_TAG "11_response_modification"
#include <sluice/sluice.h>

static int upstream_peer(sl_session_t *s, void *ctx, sl_peer_t *peer)
{
    return sl_peer_new(peer, "172.28.0.20:8080", false, "blue.pingora.local");
}

static int response_filter(sl_session_t *s, void *ctx, sl_response_header_t *resp)
{
    sl_headers_remove(&resp->headers, "X-App-Version");
    sl_headers_set(&resp->headers, "X-Content-Type-Options", "nosniff");
    const sl_str_t *date = sl_headers_get(&resp->headers, "Date");
    if (date)
        sl_headers_set_n(&resp->headers, "X-Legacy-Date", 13, date->ptr, date->len);
    SL_INFO("Response filtered. Stripped Version. Added Security Headers.");
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
        .response_filter = response_filter,
    };
    sl_service_t *proxy = sl_http_proxy_service_new(sl_server_conf(server), &hooks, NULL);
    sl_service_add_tcp(proxy, "0.0.0.0:6151");
    SL_INFO("Response Mod Proxy running on 0.0.0.0:6151");
    sl_server_add_service(server, proxy);
    return sl_server_run_forever(server);
}
