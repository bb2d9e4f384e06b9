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
    /* We forward to Upstream Blue. */
    SL_INFO("Forwarding HTTPS request to Upstream Blue (\"172.28.0.20\", 8080)");
    /* TLS off: the client's TLS ends here ("terminates"); the decrypted request goes to the
     * internal backend as plain HTTP. */
    return sl_peer_new(peer, "172.28.0.20:8080", false, "blue.pingora.local");
}

int main(int argc, char **argv)
{
    int code;
    sl_server_t *server = sl_server_from_args(argc, argv, &code);
    if (!server)
        return code;
    sl_server_bootstrap(server);

    /* 1. Locate certificates (mounted into the lab's hosts at /keys). */
    const char *keys = getenv("SLUICE_KEYS") ? getenv("SLUICE_KEYS") : "/keys";
    char cert[512], key[512];
    snprintf(cert, sizeof(cert), "%s/server.crt", keys);
    snprintf(key, sizeof(key), "%s/server.key", keys);
    if (access(cert, R_OK) != 0 || access(key, R_OK) != 0) {
        SL_ERROR("Certificates not found! Make sure you ran scripts/00-setup-certs.sh");
        SL_ERROR("Missing keys at %s", cert);
        return 1;
    }

    /* 2. Configure TLS: the 'intermediate' profile, and HTTP/2 offered by ALPN. */
    sl_tls_settings_t *tls;
    sl_error_t err;
    if (sl_tls_settings_intermediate(cert, key, &tls, &err) != 0) {
        SL_ERROR("%s", err.msg);
        return 1;
    }
    sl_tls_settings_enable_h2(tls);

    /* 3. Bind the TLS listener on port 6147. */
    static const sl_proxy_hooks_t hooks = {.upstream_peer = upstream_peer};
    sl_service_t *proxy = sl_http_proxy_service_new(sl_server_conf(server), &hooks, NULL);
    sl_service_add_tls(proxy, "0.0.0.0:6147", tls);

    SL_INFO("HTTPS Proxy running on 0.0.0.0:6147 -> Forwarding to Upstream Blue");
    sl_server_add_service(server, proxy);
    code = sl_server_run_forever(server);
    sl_tls_settings_free(tls);
    return code;
}
