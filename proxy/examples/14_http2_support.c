/* Lesson 14: HTTP/2 end to end — a TLS listener on 0.0.0.0:6154 that offers h2 by ALPN, and
 * upstream TLS to the Advanced nginx (172.28.0.22:443, SNI advanced.pingora.local) offering
 * h2 then http/1.1 (ALPN H2H1). The upstream certificate is verified against the server's
 * ca_file, else the system trust store, which OpenSSL takes from SSL_CERT_FILE when set (the
 * lab's dev host sets it to /keys/ca.crt). Keys from /keys (SLUICE_KEYS overrides). */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define SL_LOG_TAG "14_http2_support"
#include <sluice/sluice.h>

static int upstream_peer(sl_session_t *s, void *ctx, sl_peer_t *peer)
{
    /* Target the "Advanced" nginx upstream on port 443 (HTTPS); TLS on. */
    int rc = sl_peer_new(peer, "172.28.0.22:443", true, "advanced.pingora.local");
    /* Offer HTTP/2 to the upstream, fall back to HTTP/1.1. */
    peer->options.alpn = SL_ALPN_H2H1;
    SL_INFO("Forwarding to Upstream Advanced via HTTPS (ALPN: H2/H1)");
    return rc;
}

static int upstream_request_filter(sl_session_t *s, void *ctx, sl_request_header_t *req)
{
    /* nginx requires the Host header (:authority over h2) to match the server_name. */
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

    /* 1. Configure downstream TLS. */
    const char *keys = getenv("SLUICE_KEYS") ? getenv("SLUICE_KEYS") : "/keys";
    char cert[512], key[512];
    snprintf(cert, sizeof(cert), "%s/server.crt", keys);
    snprintf(key, sizeof(key), "%s/server.key", keys);
    if (access(cert, R_OK) != 0) {
        SL_ERROR("Missing keys at %s", cert);
        return 1;
    }
    sl_tls_settings_t *tls;
    sl_error_t err;
    if (sl_tls_settings_intermediate(cert, key, &tls, &err) != 0) {
        SL_ERROR("%s", err.msg);
        return 1;
    }
    /* CRITICAL: this enables h2 negotiation with the client. */
    sl_tls_settings_enable_h2(tls);

    static const sl_proxy_hooks_t hooks = {
        .upstream_peer = upstream_peer,
        .upstream_request_filter = upstream_request_filter,
    };
    sl_service_t *proxy = sl_http_proxy_service_new(sl_server_conf(server), &hooks, NULL);
    sl_service_add_tls(proxy, "0.0.0.0:6154", tls);

    SL_INFO("HTTP/2 Proxy running on 0.0.0.0:6154");
    sl_server_add_service(server, proxy);
    code = sl_server_run_forever(server);
    sl_tls_settings_free(tls);
    return code;
}
