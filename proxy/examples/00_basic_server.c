/* Lesson 0: the raw event loop — a TCP echo server on 0.0.0.0:6142 (Pingora's ServerApp).
 *
 * Every accepted stream is echoed back until the client closes it or the server shuts down. */
#include <stdlib.h>

#define SL_LOG_TAG "00_basic_server"
#include <sluice/sluice.h>

typedef struct echo_conn {
    sl_stream_t *stream;
    sl_shutdown_sub_t on_shutdown;
    char buf[16384];
    bool writing;
} echo_conn_t;

static void echo_close(echo_conn_t *c)
{
    sl_shutdown_unsubscribe(&c->on_shutdown);
    sl_stream_finish(c->stream, false);
    free(c);
}

static void on_alloc(sl_stream_t *s, size_t suggested, uv_buf_t *buf)
{
    echo_conn_t *c = sl_stream_data(s);
    *buf = uv_buf_init(c->buf, sizeof(c->buf));
}

static void on_read(sl_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_written(sl_stream_t *s, int status, void *arg)
{
    echo_conn_t *c = arg;
    c->writing = false;
    if (status < 0) {
        SL_ERROR("Failed to write to stream: %s", uv_strerror(status));
        echo_close(c);
        return;
    }
    /* Checked every loop, as the lesson does: no new reads once shutdown began. */
    if (sl_shutdown_requested(sl_worker_shutdown_watch(sl_stream_worker(s)))) {
        SL_INFO("Server shutting down, closing connection");
        echo_close(c);
        return;
    }
    sl_stream_read_start(s, on_alloc, on_read);
}

static void on_read(sl_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    echo_conn_t *c = sl_stream_data(s);
    if (nread == UV_EOF) {
        SL_INFO("Client closed connection");
        echo_close(c);
        return;
    }
    if (nread < 0) {
        SL_ERROR("Stream read error: %s", uv_strerror((int)nread));
        echo_close(c);
        return;
    }
    /* One buffer in flight at a time: stop reading until the echo is written (backpressure). */
    sl_stream_read_stop(s);
    uv_buf_t out = uv_buf_init(buf->base, (unsigned)nread);
    c->writing = true;
    int rc = sl_stream_write(s, &out, 1, on_written, c);
    if (rc) {
        SL_ERROR("Failed to write to stream: %s", uv_strerror(rc));
        echo_close(c);
    }
}

static void on_shutdown(sl_shutdown_sub_t *sub)
{
    echo_conn_t *c = sl_container_of(sub, echo_conn_t, on_shutdown);
    if (!c->writing) {
        SL_INFO("Server shutting down, closing connection");
        echo_close(c);
    }
}

static void process_new(void *app, sl_stream_t *stream, sl_shutdown_watch_t *shutdown)
{
    struct sockaddr_storage peer;
    if (sl_stream_peer_addr(stream, &peer) == 0) {
        char addr[128];
        sl_sockaddr_str(&peer, addr, sizeof(addr));
        SL_INFO("New connection from: %s (worker %u)", addr,
                sl_worker_id(sl_stream_worker(stream)));
    }
    echo_conn_t *c = calloc(1, sizeof(*c));
    if (!c) {
        sl_stream_finish(stream, false);
        return;
    }
    c->stream = stream;
    sl_stream_set_data(stream, c);
    sl_shutdown_subscribe(shutdown, &c->on_shutdown, on_shutdown);
    sl_stream_read_start(stream, on_alloc, on_read);
}

int main(int argc, char **argv)
{
    int code;
    sl_server_t *server = sl_server_from_args(argc, argv, &code);
    if (!server)
        return code;
    sl_server_bootstrap(server);

    static const sl_server_app_t echo_app = {.process_new = process_new};
    sl_service_t *service = sl_listening_service_new("Echo Service", &echo_app, NULL);
    sl_service_add_tcp(service, "0.0.0.0:6142");
    sl_server_add_service(server, service);

    SL_INFO("Starting server on 0.0.0.0:6142...");
    return sl_server_run_forever(server);
}
