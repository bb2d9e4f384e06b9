/* Lesson 18: unix domain socket peer — requests on 0.0.0.0:6162 go to an upstream listening on
 * the unix socket /tmp/upstream.sock.
 *
 * The lab has no UDS upstream, so the program runs a mock one itself, as the lesson does: a
 * second listening service on /tmp/upstream.sock (a stale socket file from an earlier run is
 * replaced) that reads a request and answers "Hello via UDS", then closes. The proxy's peer
 * carries the socket path and a name ("uds.local"): HTTP still needs a Host, and the client's
 * goes upstream, or that name when the client sent none. */
#define SL_LOG_TAG "18_uds_peer"
#include <sluice/sluice.h>

#define UDS_PATH "/tmp/upstream.sock"

/* ---- the mock upstream ------------------------------------------------------------------- */

static const char response[] = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\n"
                               "Hello via UDS";

typedef struct mock_conn {
    char buf[4096];
    bool answered;
} mock_conn_t;

static void mock_alloc(sl_stream_t *s, size_t suggested, uv_buf_t *buf)
{
    mock_conn_t *c = sl_stream_extra(s);
    *buf = uv_buf_init(c->buf, sizeof(c->buf));
}

static void mock_written(sl_stream_t *s, int status, void *arg)
{
    sl_stream_finish(s, false); /* Connection: close */
}

static void mock_read(sl_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    mock_conn_t *c = sl_stream_extra(s);
    if (nread < 0) {
        sl_stream_finish(s, false);
        return;
    }
    if (c->answered)
        return; /* like the lesson: one read drains the request, the rest is ignored */
    c->answered = true;
    uv_buf_t out = uv_buf_init((char *)response, sizeof(response) - 1);
    if (sl_stream_write(s, &out, 1, mock_written, NULL) != 0)
        sl_stream_finish(s, false);
}

static void mock_process_new(void *app, sl_stream_t *stream, sl_shutdown_watch_t *shutdown)
{
    sl_stream_read_start(stream, mock_alloc, mock_read);
}

/* Once the sockets are bound and the workers run. */
static int mock_started(sl_server_t *server, void *data, sl_error_t *err)
{
    SL_INFO("Mock Upstream running at %s", UDS_PATH);
    return 0;
}

/* ---- the proxy --------------------------------------------------------------------------- */

static int upstream_peer(sl_session_t *s, void *ctx, sl_peer_t *peer)
{
    /* Like HttpPeer::new_uds(path, false, "uds.local"). */
    int rc = sl_peer_new(peer, "unix:" UDS_PATH, false, "uds.local");
    if (rc == 0)
        SL_INFO("Forwarding to UDS: %s", UDS_PATH);
    return rc;
}

int main(int argc, char **argv)
{
    int code;
    sl_server_t *server = sl_server_from_args(argc, argv, &code);
    if (!server)
        return code;
    sl_server_bootstrap(server);

    static const sl_server_app_t mock_app = {
        .process_new = mock_process_new,
        .stream_data_size = sizeof(mock_conn_t),
    };
    sl_service_t *mock = sl_listening_service_new("Mock UDS Upstream", &mock_app, NULL);
    sl_service_add_uds(mock, UDS_PATH, 0666);
    sl_server_add_service(server, mock);
    sl_server_on_start(server, mock_started, NULL);

    static const sl_proxy_hooks_t hooks = {.upstream_peer = upstream_peer};
    sl_service_t *proxy = sl_http_proxy_service_new(sl_server_conf(server), &hooks, NULL);
    sl_service_add_tcp(proxy, "0.0.0.0:6162");
    SL_INFO("UDS Proxy running on 0.0.0.0:6162");
    sl_server_add_service(server, proxy);
    return sl_server_run_forever(server);
}
