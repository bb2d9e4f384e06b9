/* Lesson 25: connection reuse — connected_to_upstream records whether the pooled connection
 * was reused; logging reports it. Port 6169, idle timeout 30 s. */
#define SL_LOG_TAG "25_connection_reuse"
#include <sluice/sluice.h>

typedef struct reusing_ctx {
    bool is_reused;
} reusing_ctx_t;

static void *new_ctx(sl_session_t *s)
{
    reusing_ctx_t *c = sl_arena_alloc(sl_session_arena(s), sizeof(*c));
    c->is_reused = false;
    return c;
}

static int upstream_peer(sl_session_t *s, void *ctx, sl_peer_t *peer)
{
    int rc = sl_peer_new(peer, "172.28.0.20:8080", false, "blue.pingora.local");
    peer->options.idle_timeout_ms = 30000; /* 0 would close it right after use */
    peer->options.connect_timeout_ms = 1000;
    return rc;
}

static int connected_to_upstream(sl_session_t *s, void *ctx, bool reused, const sl_peer_t *peer,
                                 int fd)
{
    ((reusing_ctx_t *)ctx)->is_reused = reused;
    return SL_CONTINUE;
}

static void logging(sl_session_t *s, void *ctx, int err)
{
    SL_INFO("Request Complete. Reused Connection: %s",
            ((reusing_ctx_t *)ctx)->is_reused ? "true" : "false");
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
        .upstream_peer = upstream_peer,
        .connected_to_upstream = connected_to_upstream,
        .logging = logging,
    };
    sl_service_t *proxy = sl_http_proxy_service_new(sl_server_conf(server), &hooks, NULL);
    sl_service_add_tcp(proxy, "0.0.0.0:6169");
    SL_INFO("Connection Reuse Demo running on 0.0.0.0:6169");
    sl_server_add_service(server, proxy);
    return sl_server_run_forever(server);
}
