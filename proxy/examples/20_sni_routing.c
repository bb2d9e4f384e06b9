/* Lesson 20: SNI routing — one upstream address (172.28.0.22:443), two identities: /v1* is
 * sent with SNI and Host v1.api.pingora.local, everything else with v2.api.pingora.local
 * (nginx's certificate covers *.api.pingora.local, so both verify). request_filter makes the
 * decision and keeps it in the request context for upstream_peer and
 * upstream_request_filter. Port 6164. */
#define SL_LOG_TAG "20_sni_routing"
#include <sluice/sluice.h>

/* 1. Context shared between the hooks of one request. */
typedef struct sni_ctx {
    const char *target_host;
} sni_ctx_t;

static void *new_ctx(sl_session_t *s)
{
    sni_ctx_t *c = sl_arena_alloc(sl_session_arena(s), sizeof(*c));
    c->target_host = "";
    return c;
}

/* 2. Routing logic, early (layer 7). */
static int request_filter(sl_session_t *s, void *ctx)
{
    sl_str_t path = sl_request_path(sl_session_req(s));
    ((sni_ctx_t *)ctx)->target_host =
        sl_str_starts_with(path, "/v1") ? "v1.api.pingora.local" : "v2.api.pingora.local";
    return SL_CONTINUE;
}

/* 3. The connection (layer 4): the SNI decided above. The pool keys connections by SNI, so a
 * v1 connection is never reused for v2. */
static int upstream_peer(sl_session_t *s, void *ctx, sl_peer_t *peer)
{
    const char *sni = ((sni_ctx_t *)ctx)->target_host;
    int rc = sl_peer_new(peer, "172.28.0.22:443", true, sni);
    SL_INFO("Connecting to IP: (\"172.28.0.22\", 443) with SNI: %s", sni);
    return rc;
}

/* 4. Keep the Host header in sync with the SNI. */
static int upstream_request_filter(sl_session_t *s, void *ctx, sl_request_header_t *req)
{
    sl_headers_set(&req->headers, "Host", ((sni_ctx_t *)ctx)->target_host);
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
        .new_ctx = new_ctx,
        .request_filter = request_filter,
        .upstream_peer = upstream_peer,
        .upstream_request_filter = upstream_request_filter,
    };
    sl_service_t *proxy = sl_http_proxy_service_new(sl_server_conf(server), &hooks, NULL);
    sl_service_add_tcp(proxy, "0.0.0.0:6164");
    SL_INFO("SNI Routing Proxy running on 0.0.0.0:6164");
    sl_server_add_service(server, proxy);
    return sl_server_run_forever(server);
}
