/* Lesson 9: path routing — /blue* to Blue, /green* to Green, anything else 404, with the
 * routing decision carried from request_filter to upstream_peer in the per-request context.
 * Port 6149. */
#include <stdlib.h>

#define SL_LOG_TAG "09_path_routing"
#include <sluice/sluice.h>

typedef enum { TARGET_NONE, TARGET_BLUE, TARGET_GREEN } target_t;

static void *new_ctx(sl_session_t *s)
{
    /* The context lives in the request's arena: nothing to free. */
    target_t *t = sl_arena_alloc(sl_session_arena(s), sizeof(*t));
    *t = TARGET_NONE;
    return t;
}

static int filter(sl_session_t *s, void *ctx)
{
    target_t *t = ctx;
    sl_str_t path = sl_request_path(sl_session_req(s));
    if (sl_str_starts_with(path, "/blue")) {
        *t = TARGET_BLUE;
    } else if (sl_str_starts_with(path, "/green")) {
        *t = TARGET_GREEN;
    } else {
        /* Unknown path: answer 404 ourselves and stop here. */
        sl_session_respond_error(s, 404, NULL);
        return SL_DONE;
    }
    return SL_CONTINUE;
}

static int upstream_peer(sl_session_t *s, void *ctx, sl_peer_t *peer)
{
    target_t *t = ctx;
    bool blue = *t == TARGET_BLUE;
    SL_INFO("Routing request to %s based on path", blue ? "Blue" : "Green");
    return blue ? sl_peer_new(peer, "172.28.0.20:8080", false, "blue.pingora.local")
                : sl_peer_new(peer, "172.28.0.21:8080", false, "green.pingora.local");
}

static int upstream_request_filter(sl_session_t *s, void *ctx, sl_request_header_t *req)
{
    target_t *t = ctx;
    sl_headers_set(&req->headers, "Host",
                   *t == TARGET_BLUE ? "blue.pingora.local" : "green.pingora.local");
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
        .request_filter = filter,
        .upstream_peer = upstream_peer,
        .upstream_request_filter = upstream_request_filter,
    };
    sl_service_t *proxy = sl_http_proxy_service_new(sl_server_conf(server), &hooks, NULL);
    sl_service_add_tcp(proxy, "0.0.0.0:6149");
    SL_INFO("Path Router running on 0.0.0.0:6149");
    SL_INFO("Try: curl http://127.0.0.1:6149/blue or /green");
    sl_server_add_service(server, proxy);
    return sl_server_run_forever(server);
}
