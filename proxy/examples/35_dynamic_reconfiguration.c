/* Lesson 35: dynamic reconfiguration — an admin port (9090) takes a raw POST body "ip:port"
 * and hot-swaps the upstream; the load balancer picks the change up from shared memory every
 * 500 ms (InMemoryDiscovery). The proxy listens on 6179, starting with Blue. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL_LOG_TAG "35_dynamic_reconfiguration"
#include <sluice/sluice.h>

/* The shared state: written by the admin service, read by discovery (different threads). */
typedef struct upstream_state {
    pthread_mutex_t lock;
    sl_backend_t backend;
} upstream_state_t;

static upstream_state_t state = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int in_memory_discover(void *data, sl_backend_t **out, size_t *n)
{
    upstream_state_t *st = data;
    sl_backend_t *b = malloc(sizeof(*b));
    if (!b)
        return SL_EINTERNAL;
    pthread_mutex_lock(&st->lock);
    *b = st->backend;
    pthread_mutex_unlock(&st->lock);
    *out = b;
    *n = 1;
    return 0;
}

/* ---- the admin API: a raw TCP service, as in the lesson ---------------------------------- */

typedef struct admin_conn {
    char buf[2048];
    size_t len;
} admin_conn_t;

static void admin_reply(sl_stream_t *s, const char *text)
{
    uv_buf_t b = uv_buf_init((char *)text, (unsigned)strlen(text));
    sl_stream_write(s, &b, 1, NULL, NULL); /* static text: nothing to free */
    free(sl_stream_data(s));
    sl_stream_finish(s, false);
}

static void admin_alloc(sl_stream_t *s, size_t suggested, uv_buf_t *buf)
{
    admin_conn_t *c = sl_stream_data(s);
    *buf = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - 1 - c->len));
}

static void admin_read(sl_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    admin_conn_t *c = sl_stream_data(s);
    if (nread < 0) {
        free(c);
        sl_stream_finish(s, false);
        return;
    }
    c->len += (size_t)nread;
    c->buf[c->len] = '\0';
    char *sep = strstr(c->buf, "\r\n\r\n");
    if (!sep && c->len < sizeof(c->buf) - 1)
        return; /* the body is after the header block */
    sl_stream_read_stop(s);
    char *body = sep ? sep + 4 : c->buf;
    /* Demonstration-grade parsing, like the lesson: the body is one "ip:port". */
    char *e = body + strlen(body);
    while (e > body && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' '))
        *--e = '\0';
    while (*body == ' ')
        body++;
    sl_backend_t b;
    if (!*body || sl_backend_init(&b, body, 1) != 0) {
        SL_ERROR("Admin: Failed to parse IP: %s", body);
        admin_reply(s, "HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\n\r\nParse Error");
        return;
    }
    pthread_mutex_lock(&state.lock);
    state.backend = b;
    pthread_mutex_unlock(&state.lock);
    SL_INFO("Admin: Hot-swapped upstream to %s", body);
    admin_reply(s, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK");
}

static void admin_process_new(void *app, sl_stream_t *stream, sl_shutdown_watch_t *shutdown)
{
    admin_conn_t *c = calloc(1, sizeof(*c));
    if (!c) {
        sl_stream_finish(stream, false);
        return;
    }
    sl_stream_set_data(stream, c);
    sl_stream_read_start(stream, admin_alloc, admin_read);
}

/* ---- the proxy --------------------------------------------------------------------------- */

static int upstream_peer(sl_session_t *s, void *ctx, sl_peer_t *peer)
{
    sl_lb_t *lb = sl_session_app(s);
    sl_backend_t b;
    if (sl_lb_select(lb, "", 0, &b) != 0)
        return sl_session_error(s, "NoUpstreamAvailable");
    char addr[64];
    sl_backend_addr_str(&b, addr, sizeof(addr));
    SL_INFO("Routed to upstream: Backend { addr: Inet(%s), weight: %u }", addr, b.weight);
    sl_peer_init(peer);
    peer->addr = b.addr;
    peer->addr_len = b.addr_len;
    return SL_CONTINUE;
}

static int upstream_request_filter(sl_session_t *s, void *ctx, sl_request_header_t *req)
{
    sl_headers_set(&req->headers, "Host", "hot-swap-cluster");
    return SL_CONTINUE;
}

int main(int argc, char **argv)
{
    int code;
    sl_server_t *server = sl_server_from_args(argc, argv, &code);
    if (!server)
        return code;
    sl_server_bootstrap(server);

    sl_backend_init(&state.backend, "172.28.0.20:8080", 1); /* Blue to start */
    sl_lb_t *lb = sl_lb_new(SL_LB_ROUND_ROBIN, &state.backend, 1);
    sl_lb_set_discovery(lb, in_memory_discover, &state, 500);
    sl_server_add_service(server, sl_lb_background_service("lb_updater", lb));

    static const sl_server_app_t admin_app = {.process_new = admin_process_new};
    sl_service_t *admin = sl_listening_service_new("admin_api", &admin_app, NULL);
    sl_service_add_tcp(admin, "0.0.0.0:9090");
    sl_server_add_service(server, admin);

    static const sl_proxy_hooks_t hooks = {
        .upstream_peer = upstream_peer,
        .upstream_request_filter = upstream_request_filter,
    };
    sl_service_t *proxy = sl_http_proxy_service_new(sl_server_conf(server), &hooks, lb);
    sl_service_add_tcp(proxy, "0.0.0.0:6179");
    SL_INFO("Hot-Swap Proxy running on 0.0.0.0:6179");
    SL_INFO("Admin API running on 0.0.0.0:9090");
    sl_server_add_service(server, proxy);
    code = sl_server_run_forever(server);
    sl_lb_free(lb);
    return code;
}
