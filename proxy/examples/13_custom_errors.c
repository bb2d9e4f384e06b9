/* Lesson 13: custom errors — /oops raises a custom error that fail_to_proxy turns into a 400
 * with a JSON body; other paths go to Blue. Port 6153. */
#include <stdio.h>
#include <string.h>

#define SL_LOG_TAG "13_custom_errors"
#include <sluice/sluice.h>

static int upstream_peer(sl_session_t *s, void *ctx, sl_peer_t *peer)
{
    return sl_peer_new(peer, "172.28.0.20:8080", false, "blue.pingora.local");
}

static int request_filter(sl_session_t *s, void *ctx)
{
    sl_str_t path = sl_request_path(sl_session_req(s));
    if (sl_str_eq(path, SL_STR("/oops")))
        return sl_session_error(s, "SimulatedFailure"); /* jumps to fail_to_proxy */
    return SL_CONTINUE;
}

static int fail_to_proxy(sl_session_t *s, void *ctx, int err)
{
    const char *reason = sl_session_error_reason(s);
    SL_ERROR("Entered fail_to_proxy with error: %s", reason ? reason : sl_strerror(err));
    int code = (err == SL_ECUSTOM && reason && strcmp(reason, "SimulatedFailure") == 0) ? 400 : 500;
    char body[160];
    int n = snprintf(body, sizeof(body),
                     "{\"status\": \"error\", \"code\": %d, \"message\": \"We caught a custom "
                     "error!\"}",
                     code);
    sl_response_header_t *resp = sl_session_response_new(s, code);
    sl_headers_set(&resp->headers, "Content-Type", "application/json");
    sl_session_respond_header(s, resp, body, (size_t)n);
    return code;
}

int main(int argc, char **argv)
{
    int code;
    sl_server_t *server = sl_server_from_args(argc, argv, &code);
    if (!server)
        return code;
    sl_server_bootstrap(server);
    static const sl_proxy_hooks_t hooks = {
        .request_filter = request_filter,
        .upstream_peer = upstream_peer,
        .fail_to_proxy = fail_to_proxy,
    };
    sl_service_t *proxy = sl_http_proxy_service_new(sl_server_conf(server), &hooks, NULL);
    sl_service_add_tcp(proxy, "0.0.0.0:6153");
    SL_INFO("Custom Error Proxy running on 0.0.0.0:6153");
    SL_INFO("Try: curl http://127.0.0.1:6153/oops");
    sl_server_add_service(server, proxy);
    return sl_server_run_forever(server);
}
