/* Lesson 22: proxy connect (tunnelling) — requests on 0.0.0.0:6166 go to the Advanced nginx's
 * HTTPS port (advanced.pingora.local:443) through an HTTP forward proxy at 127.0.0.1:3128.
 *
 * The lesson writes a custom L4 connector that dials the proxy, sends `CONNECT host:port`,
 * checks the 200 and hands the socket to Pingora, which then runs TLS through it. In sluice
 * that connector is a peer option: the peer stays the real target (address, TLS, SNI) and
 * options.proxy names the proxy. The library sends
 *
 *     CONNECT advanced.pingora.local:443 HTTP/1.1
 *     Host: advanced.pingora.local:443
 *
 * parses the answer strictly (a refusal becomes a 502 naming the proxy and its status), then
 * runs TLS with SNI advanced.pingora.local and HTTP through the tunnel. Tunnels are pooled like
 * direct connections (under a key of their own), so the next request reuses this one.
 *
 * The lab has no forward proxy, so the program runs a mock one itself, as the lesson does: in a
 * thread with its own event loop, on 0.0.0.0:3128. Unlike the lesson's (which always connects
 * to 172.28.0.22:443) it honours the CONNECT target, resolving the name with the host's
 * resolver (the lab's DNS), and answers 502 when it cannot reach it. */
#include <stdlib.h>
#include <string.h>

#define SL_LOG_TAG "22_proxy_connect"
#include <sluice/sluice.h>

#define PROXY_ADDR    "127.0.0.1:3128"
#define UPSTREAM_HOST "advanced.pingora.local"
#define UPSTREAM_ADDR "172.28.0.22:443"

/* ---- the mock forward proxy (its own thread and loop) ----------------------------------- */

typedef struct mp_conn mp_conn_t;

typedef struct mp_dir {
    mp_conn_t *conn;
    uv_stream_t *from, *to;
    uv_write_t wreq;
    char buf[16384];
} mp_dir_t;

struct mp_conn {
    uv_tcp_t client, upstream;
    int handles; /* open handles: freed at 0 */
    bool closing;
    uv_getaddrinfo_t gai;
    uv_connect_t creq;
    uv_write_t answer;
    char head[4096];
    size_t head_len, head_end;
    char host[256], port[8];
    mp_dir_t up, down; /* client -> upstream, upstream -> client */
};

static void mp_closed(uv_handle_t *h)
{
    mp_conn_t *c = h->data;
    if (--c->handles == 0)
        free(c);
}

/* Pending writes report (cancelled) before the close callbacks: c outlives them. */
static void mp_close(mp_conn_t *c)
{
    if (c->closing)
        return;
    c->closing = true;
    uv_close((uv_handle_t *)&c->client, mp_closed);
    if (c->handles == 2)
        uv_close((uv_handle_t *)&c->upstream, mp_closed);
}

static void mp_answered_close(uv_write_t *w, int status)
{
    mp_close(w->data);
}

static void mp_refuse(mp_conn_t *c, const char *answer)
{
    c->answer.data = c;
    uv_buf_t b = uv_buf_init((char *)answer, (unsigned)strlen(answer));
    if (uv_write(&c->answer, (uv_stream_t *)&c->client, &b, 1, mp_answered_close) != 0)
        mp_close(c);
}

/* Blind pipe: each direction reads into its buffer, writes it out, then reads again. */
static void pipe_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static mp_dir_t *dir_of(mp_conn_t *c, const void *h)
{
    return h == (const void *)&c->client ? &c->up : &c->down;
}

static void pipe_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    mp_dir_t *d = dir_of(h->data, h);
    *buf = uv_buf_init(d->buf, sizeof(d->buf));
}

static void pipe_written(uv_write_t *w, int status)
{
    mp_dir_t *d = w->data;
    if (status < 0 || d->conn->closing || uv_read_start(d->from, pipe_alloc, pipe_read) != 0)
        mp_close(d->conn);
}

static void pipe_write(mp_dir_t *d, size_t n)
{
    d->wreq.data = d;
    uv_buf_t b = uv_buf_init(d->buf, (unsigned)n);
    if (uv_write(&d->wreq, d->to, &b, 1, pipe_written) != 0)
        mp_close(d->conn);
}

static void pipe_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    mp_conn_t *c = s->data;
    if (n == 0)
        return;
    if (n < 0) {
        mp_close(c); /* either side ended: the tunnel ends */
        return;
    }
    uv_read_stop(s);
    pipe_write(dir_of(c, s), (size_t)n);
}

static void mp_upstream_connected(uv_connect_t *req, int status)
{
    mp_conn_t *c = req->data;
    if (c->closing)
        return;
    if (status < 0) {
        SL_WARN("Mock Proxy: cannot reach %s:%s: %s", c->host, c->port, uv_strerror(status));
        mp_refuse(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    SL_INFO("Mock Proxy: tunnel to %s:%s open, now a blind pipe", c->host, c->port);
    static const char ok[] = "HTTP/1.1 200 Connection Established\r\n\r\n";
    uv_buf_t b = uv_buf_init((char *)ok, sizeof(ok) - 1);
    if (uv_write(&c->answer, (uv_stream_t *)&c->client, &b, 1, NULL) != 0) {
        mp_close(c);
        return;
    }
    uv_read_start((uv_stream_t *)&c->upstream, pipe_alloc, pipe_read);
    size_t extra = c->head_len - c->head_end; /* sent before our answer: for the target */
    if (extra) {
        memcpy(c->up.buf, c->head + c->head_end, extra);
        pipe_write(&c->up, extra);
    } else {
        uv_read_start((uv_stream_t *)&c->client, pipe_alloc, pipe_read);
    }
}

static void mp_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    mp_conn_t *c = req->data;
    if (status < 0) {
        SL_WARN("Mock Proxy: cannot resolve %s: %s", c->host, uv_strerror(status));
        mp_refuse(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    uv_tcp_init(req->loop, &c->upstream);
    c->upstream.data = c;
    c->handles++;
    c->creq.data = c;
    if (uv_tcp_connect(&c->creq, &c->upstream, res->ai_addr, mp_upstream_connected) != 0)
        mp_refuse(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
    uv_freeaddrinfo(res);
}

/* "CONNECT host:port HTTP/1.1" into c->host and c->port; false for anything else. */
static bool mp_parse(mp_conn_t *c)
{
    const char *p = c->head;
    if (strncmp(p, "CONNECT ", 8) != 0)
        return false;
    p += 8;
    const char *sp = strchr(p, ' ');
    const char *colon = sp ? memrchr(p, ':', (size_t)(sp - p)) : NULL;
    if (!colon || strncmp(sp, " HTTP/1.", 8) != 0)
        return false;
    const char *h = p, *he = colon;
    if (*h == '[' && he > h && he[-1] == ']') { /* [IPv6]:port */
        h++;
        he--;
    }
    size_t hl = (size_t)(he - h), pl = (size_t)(sp - colon - 1);
    if (!hl || hl >= sizeof(c->host) || !pl || pl >= sizeof(c->port))
        return false;
    memcpy(c->host, h, hl);
    c->host[hl] = '\0';
    memcpy(c->port, colon + 1, pl);
    c->port[pl] = '\0';
    return true;
}

static void head_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    mp_conn_t *c = h->data;
    *buf = uv_buf_init(c->head + c->head_len, (unsigned)(sizeof(c->head) - 1 - c->head_len));
}

static void head_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    mp_conn_t *c = s->data;
    if (n == 0)
        return;
    if (n < 0) {
        mp_close(c);
        return;
    }
    c->head_len += (size_t)n;
    c->head[c->head_len] = '\0';
    const char *end = strstr(c->head, "\r\n\r\n");
    if (!end) {
        if (c->head_len == sizeof(c->head) - 1)
            mp_close(c);
        return;
    }
    uv_read_stop(s);
    c->head_end = (size_t)(end + 4 - c->head);
    if (!mp_parse(c)) {
        SL_WARN("Mock Proxy: not a CONNECT request");
        mp_refuse(c, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    SL_INFO("Mock Proxy: Connecting to %s:%s...", c->host, c->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    c->gai.data = c;
    if (uv_getaddrinfo(s->loop, &c->gai, mp_resolved, c->host, c->port, &hints) != 0)
        mp_refuse(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
}

static void mp_accept(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    mp_conn_t *c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    uv_tcp_init(server->loop, &c->client);
    c->client.data = c;
    c->handles = 1;
    c->up =
        (mp_dir_t){.conn = c, .from = (uv_stream_t *)&c->client, .to = (uv_stream_t *)&c->upstream};
    c->down =
        (mp_dir_t){.conn = c, .from = (uv_stream_t *)&c->upstream, .to = (uv_stream_t *)&c->client};
    if (uv_accept(server, (uv_stream_t *)&c->client) != 0 ||
        uv_read_start((uv_stream_t *)&c->client, head_alloc, head_read) != 0)
        mp_close(c);
}

typedef struct mock_proxy {
    uv_thread_t thread;
    uv_sem_t ready;
} mock_proxy_t;

static void mock_proxy_run(void *arg)
{
    mock_proxy_t *mp = arg;
    uv_loop_t loop;
    uv_tcp_t server;
    struct sockaddr_in a;
    uv_loop_init(&loop);
    uv_tcp_init(&loop, &server);
    uv_ip4_addr("0.0.0.0", 3128, &a);
    int rc = uv_tcp_bind(&server, (const struct sockaddr *)&a, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&server, 128, mp_accept);
    if (rc)
        SL_ERROR("Failed to bind Mock Proxy on 0.0.0.0:3128: %s", uv_strerror(rc));
    else
        SL_INFO("Mock Proxy listening on 0.0.0.0:3128");
    uv_sem_post(&mp->ready);
    if (rc == 0)
        uv_run(&loop, UV_RUN_DEFAULT); /* until the process exits */
}

/* ---- the proxy --------------------------------------------------------------------------- */

static int upstream_peer(sl_session_t *s, void *ctx, sl_peer_t *peer)
{
    /* The target as for a direct connection: HttpPeer::new(addr, true, sni). */
    int rc = sl_peer_new(peer, UPSTREAM_ADDR, true, UPSTREAM_HOST);
    /* Reached through the forward proxy: the lesson's custom L4 connector. The CONNECT target
     * is the SNI with the address's port: advanced.pingora.local:443. */
    if (rc == 0)
        rc = sl_peer_set_proxy(peer, PROXY_ADDR);
    SL_INFO("Connector: %s:443 through the proxy at %s (dialing it unless a pooled tunnel is "
            "free)",
            UPSTREAM_HOST, PROXY_ADDR);
    return rc;
}

static int connected_to_upstream(sl_session_t *s, void *ctx, bool reused, const sl_peer_t *peer,
                                 int fd)
{
    if (reused)
        SL_INFO("Connector: reusing a pooled tunnel to %s", peer->sni);
    else
        SL_INFO("Connector: Tunnel established! TLS with %s ran through it.", peer->sni);
    return SL_CONTINUE;
}

static int upstream_request_filter(sl_session_t *s, void *ctx, sl_request_header_t *req)
{
    /* Inside the tunnel the request must look like it goes to the upstream. */
    sl_headers_set(&req->headers, "Host", UPSTREAM_HOST);
    return SL_CONTINUE;
}

int main(int argc, char **argv)
{
    int code;
    sl_server_t *server = sl_server_from_args(argc, argv, &code);
    if (!server)
        return code;
    sl_server_bootstrap(server);

    /* Start the mock proxy in a background thread, listening before requests arrive. */
    static mock_proxy_t mp;
    uv_sem_init(&mp.ready, 0);
    uv_thread_create(&mp.thread, mock_proxy_run, &mp);
    uv_sem_wait(&mp.ready);

    static const sl_proxy_hooks_t hooks = {
        .upstream_peer = upstream_peer,
        .connected_to_upstream = connected_to_upstream,
        .upstream_request_filter = upstream_request_filter,
    };
    sl_service_t *proxy = sl_http_proxy_service_new(sl_server_conf(server), &hooks, NULL);
    sl_service_add_tcp(proxy, "0.0.0.0:6166");
    SL_INFO("Pingora Tunnel Service running on 0.0.0.0:6166");
    sl_server_add_service(server, proxy);
    return sl_server_run_forever(server);
}
