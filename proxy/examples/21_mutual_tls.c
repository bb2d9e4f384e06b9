/* Lesson 21: mutual TLS to the Advanced nginx's :8443 (ssl_verify_client on). /auth presents
 * the lab's client certificate (CN=PingoraClient, signed by the lab CA); any other path
 * connects without one and gets nginx's 400 "No required SSL certificate was sent".
 * Port 6165; keys from /keys (SLUICE_KEYS overrides). */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define SL_LOG_TAG "21_mutual_tls"
#include <sluice/sluice.h>

/* The client credentials, by path: the library loads them once into a TLS context shared by
 * every connection that names the same files (Pingora's Arc<CertKey>); main() loads them at
 * startup. The strings live as long as the program. */
typedef struct mtls_proxy {
    char client_cert[512];
    char client_key[512];
} mtls_proxy_t;

static int upstream_peer(sl_session_t *s, void *ctx, sl_peer_t *peer)
{
    const mtls_proxy_t *app = sl_session_app(s);
    sl_str_t path = sl_request_path(sl_session_req(s));

    /* Target the mTLS port (8443) on the Advanced upstream. */
    int rc = sl_peer_new(peer, "172.28.0.22:8443", true, "advanced.pingora.local");

    /* To auth or not to auth? */
    if (sl_str_eq(path, SL_STR("/auth"))) {
        SL_INFO("Attaching Client Certificate for /auth request...");
        peer->options.client_cert = app->client_cert;
        peer->options.client_key = app->client_key;
    } else {
        /* No client certificate: nginx refuses the request. */
        SL_INFO("Connecting anonymously (no cert) for %.*s...", (int)path.len, path.ptr);
    }
    return rc;
}

int main(int argc, char **argv)
{
    int code;
    sl_server_t *server = sl_server_from_args(argc, argv, &code);
    if (!server)
        return code;
    sl_server_bootstrap(server);

    /* 1. Load the credentials at startup. */
    static mtls_proxy_t app;
    const char *keys = getenv("SLUICE_KEYS") ? getenv("SLUICE_KEYS") : "/keys";
    snprintf(app.client_cert, sizeof(app.client_cert), "%s/client.crt", keys);
    snprintf(app.client_key, sizeof(app.client_key), "%s/client.key", keys);
    if (access(app.client_cert, R_OK) != 0) {
        SL_ERROR("Client keys missing at %s. Run 00-setup-certs.sh", app.client_cert);
        return 1;
    }
    /* 2. Parse them (and the trust store) now, as /auth requests will use them: a bad file
     * stops the program here rather than failing requests later. */
    sl_peer_t probe;
    sl_peer_new(&probe, "172.28.0.22:8443", true, "advanced.pingora.local");
    probe.options.client_cert = app.client_cert;
    probe.options.client_key = app.client_key;
    sl_error_t err;
    if (sl_tls_client_check(&probe.options, sl_server_conf(server)->ca_file, &err) != 0) {
        SL_ERROR("Failed to load the client certificate: %s", err.msg);
        return 1;
    }

    static const sl_proxy_hooks_t hooks = {.upstream_peer = upstream_peer};
    sl_service_t *proxy = sl_http_proxy_service_new(sl_server_conf(server), &hooks, &app);
    sl_service_add_tcp(proxy, "0.0.0.0:6165");
    SL_INFO("mTLS Proxy running on 0.0.0.0:6165");
    sl_server_add_service(server, proxy);
    return sl_server_run_forever(server);
}
