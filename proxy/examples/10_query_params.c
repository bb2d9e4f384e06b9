/* Lesson 10: query parameters — drops every `debug=` parameter and appends ref=pingora before
 * the request goes to Blue. Port 6150. */
#include <string.h>

#define SL_LOG_TAG "10_query_params"
#include <sluice/sluice.h>

static int upstream_peer(sl_session_t *s, void *ctx, sl_peer_t *peer)
{
    return sl_peer_new(peer, "172.28.0.20:8080", false, "blue.pingora.local");
}

static int upstream_request_filter(sl_session_t *s, void *ctx, sl_request_header_t *req)
{
    sl_arena_t *a = sl_session_arena(s);
    sl_str_t path = sl_request_path(req);
    sl_str_t query = sl_request_query(req);
    SL_INFO("Original Query: '%.*s'", (int)query.len, query.ptr);
    /* Rebuild the query from the parameters we keep, then add ours. */
    char *out = sl_arena_alloc(a, path.len + query.len + 16);
    size_t n = 0;
    memcpy(out, path.ptr, path.len);
    n += path.len;
    out[n++] = '?';
    const char *p = query.ptr, *end = query.ptr + query.len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        size_t len = (size_t)(e - p);
        if (len && !(len >= 6 && memcmp(p, "debug=", 6) == 0)) {
            memcpy(out + n, p, len);
            n += len;
            out[n++] = '&';
        }
        p = e + 1;
    }
    memcpy(out + n, "ref=pingora", 11);
    n += 11;
    sl_request_set_uri(req, out, n);
    SL_INFO("Rewritten URI: %.*s", (int)n, out);
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
    static const sl_proxy_hooks_t hooks = {
        .upstream_peer = upstream_peer,
        .upstream_request_filter = upstream_request_filter,
    };
    sl_service_t *proxy = sl_http_proxy_service_new(sl_server_conf(server), &hooks, NULL);
    sl_service_add_tcp(proxy, "0.0.0.0:6150");
    SL_INFO("Query Param Proxy running on 0.0.0.0:6150");
    sl_server_add_service(server, proxy);
    return sl_server_run_forever(server);
}
