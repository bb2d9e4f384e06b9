/* Lesson 7: TLS termination — HTTPS (TLS 1.2/1.3, Mozilla intermediate, ALPN h2 and
 * http/1.1) on 0.0.0.0:6147 with the lab's server certificate, plain HTTP to Blue. The key
 * directory is /keys as in the lab (SLUICE_KEYS overrides). */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define SL_LOG_TAG "07_tls_termination"
#include <sluice/sluice.h>

static int upstream_peer(sl_session_t *s, void *ctx, sl_peer_t *peer)
{
    return sl_peer_new(peer, "172.28.0.20:8080", false, "blue.pingora.local");
}

static int upstream_request_filter(sl_session_t *s, void *ctx, sl_request_header_t *req)
{
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

    const char *keys = getenv("SLUICE_KEYS") ? getenv("SLUICE_KEYS") : "/keys";
    char cert[512], key[512];
    snprintf(cert, sizeof(cert), "%s/server.crt", keys);
    snprintf(key, sizeof(key), "%s/server.key", keys);
    if (access(cert, R_OK) != 0 || access(key, R_OK) != 0) {
        SL_ERROR("Missing keys at %s", cert);
        return 1;
    }
    sl_tls_settings_t *tls;
    sl_error_t err;
    if (sl_tls_settings_intermediate(cert, key, &tls, &err) != 0) {
        SL_ERROR("%s", err.msg);
        return 1;
    }
    sl_tls_settings_enable_h2(tls);

    static const sl_proxy_hooks_t hooks = {
        .upstream_peer = upstream_peer,
        .upstream_request_filter = upstream_request_filter,
    };
    sl_service_t *proxy = sl_http_proxy_service_new(sl_server_conf(server), &hooks, NULL);
    sl_service_add_tls(proxy, "0.0.0.0:6147", tls);
    SL_INFO("TLS Proxy running on 0.0.0.0:6147");
    sl_server_add_service(server, proxy);
    code = sl_server_run_forever(server);
    sl_tls_settings_free(tls);
    return code;
}
