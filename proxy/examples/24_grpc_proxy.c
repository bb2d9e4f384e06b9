/* Lesson 24: gRPC proxy — a TLS listener on 0.0.0.0:6168 (server certificate from /keys,
 * SLUICE_KEYS overrides) to the gRPC upstream's TLS port 172.28.0.23:9001 with SNI
 * grpc.pingora.local, verified against the lab CA (SSL_CERT_FILE) and forced to HTTP/2 by ALPN:
 * gRPC servers refuse HTTP/1.1. Trailers (grpc-status) pass through; an HTTP/1.1 client gets
 * them as chunked trailers. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define SL_LOG_TAG "24_grpc_proxy"
#include <sluice/sluice.h>

static int upstream_peer(sl_session_t *s, void *ctx, sl_peer_t *peer)
{
    /* 1. TLS on, verified with the trust store (SSL_CERT_FILE in the lab). */
    int rc = sl_peer_new(peer, "172.28.0.23:9001", true, "grpc.pingora.local");
    /* 2. Force HTTP/2 by ALPN: this is mandatory for gRPC. */
    peer->options.alpn = SL_ALPN_H2;
    return rc;
}

static int upstream_request_filter(sl_session_t *s, void *ctx, sl_request_header_t *req)
{
    /* Optional: log when we see gRPC traffic. */
    const sl_str_t *ctype = sl_headers_get(&req->headers, "content-type");
    if (ctype && sl_str_starts_with(*ctype, "application/grpc"))
        SL_INFO("Proxying gRPC request...");
    return SL_CONTINUE;
}

int main(int argc, char **argv)
{
    int code;
    sl_server_t *server = sl_server_from_args(argc, argv, &code);
    if (!server)
        return code;
    sl_server_bootstrap(server);

    /* The guide's conf/keys/server.crt is /keys/server.crt in the lab's hosts. */
    const char *keys = getenv("SLUICE_KEYS") ? getenv("SLUICE_KEYS") : "/keys";
    char cert[512], key[512];
    snprintf(cert, sizeof(cert), "%s/server.crt", keys);
    snprintf(key, sizeof(key), "%s/server.key", keys);
    sl_tls_settings_t *tls;
    sl_error_t err;
    if (sl_tls_settings_intermediate(cert, key, &tls, &err) != 0) {
        SL_ERROR("Failed to add TLS listener: %s", err.msg);
        return 1;
    }
    /* The guide's add_tls() negotiates only http/1.1 with clients (its note on curl getting
     * HTTP/1.1); real gRPC clients insist on h2 by ALPN, so h2 is offered too. HTTP/1.1
     * clients still work: sluice speaks HTTP/2 to the upstream either way. */
    sl_tls_settings_enable_h2(tls);

    static const sl_proxy_hooks_t hooks = {
        .upstream_peer = upstream_peer,
        .upstream_request_filter = upstream_request_filter,
    };
    sl_service_t *proxy = sl_http_proxy_service_new(sl_server_conf(server), &hooks, NULL);
    sl_service_add_tls(proxy, "0.0.0.0:6168", tls);
    SL_INFO("gRPC Proxy running on 0.0.0.0:6168");
    sl_server_add_service(server, proxy);
    code = sl_server_run_forever(server);
    sl_tls_settings_free(tls);
    return code;
}
