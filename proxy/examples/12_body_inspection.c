/* Lesson 12: body inspection — request bodies are buffered (up to 1 MiB) and scanned for the
 * word "rogue"; a match fails the request with a custom error (500). Port 6152. */
#include <string.h>

#define SL_LOG_TAG "12_body_inspection"
#include <sluice/sluice.h>

#define MAX_INSPECT (1 << 20)

typedef struct body_ctx {
    char *buf;
    size_t len, cap;
} body_ctx_t;

static void *new_ctx(sl_session_t *s)
{
    body_ctx_t *c = sl_arena_alloc(sl_session_arena(s), sizeof(*c));
    memset(c, 0, sizeof(*c));
    return c;
}

static int upstream_peer(sl_session_t *s, void *ctx, sl_peer_t *peer)
{
    return sl_peer_new(peer, "172.28.0.20:8080", false, "blue.pingora.local");
}

static int upstream_request_filter(sl_session_t *s, void *ctx, sl_request_header_t *req)
{
    sl_headers_set(&req->headers, "Host", "blue.pingora.local");
    return SL_CONTINUE;
}

static int request_body_filter(sl_session_t *s, void *ctx, sl_body_t *body, bool end)
{
    body_ctx_t *c = ctx;
    if (!body->len)
        return SL_CONTINUE;
    /* Keep what we saw (bounded) so a keyword split across chunks is still found. */
    if (c->len + body->len > MAX_INSPECT)
        return sl_session_error(s, "BodyTooLargeToInspect");
    if (c->len + body->len > c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 4096;
        while (cap < c->len + body->len)
            cap *= 2;
        char *n = sl_arena_alloc(sl_session_arena(s), cap);
        if (c->len)
            memcpy(n, c->buf, c->len);
        c->buf = n;
        c->cap = cap;
    }
    memcpy(c->buf + c->len, body->data, body->len);
    c->len += body->len;
    if (memmem(c->buf, c->len, "rogue", 5)) {
        SL_WARN("Security Alert: Forbidden content 'rogue' detected in body!");
        return sl_session_error(s, "SecurityPolicyViolation");
    }
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
        .upstream_peer = upstream_peer,
        .upstream_request_filter = upstream_request_filter,
        .request_body_filter = request_body_filter,
    };
    sl_service_t *proxy = sl_http_proxy_service_new(sl_server_conf(server), &hooks, NULL);
    sl_service_add_tcp(proxy, "0.0.0.0:6152");
    SL_INFO("Body Inspector running on 0.0.0.0:6152");
    sl_server_add_service(server, proxy);
    return sl_server_run_forever(server);
}
