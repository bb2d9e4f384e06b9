/* A very small HTTP/1.1 responder: one request per connection, request head capped at 4 KiB,
 * 5 seconds to send it. */
#define SL_LOG_TAG "healthz"
#include "healthz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/log.h"
#include "util/mem.h"

#define MAX_HEAD   4096
#define TIMEOUT_MS 5000

typedef struct conn conn_t;

struct wt_healthz {
    uv_tcp_t server;
    bool (*ready)(void *);
    void *arg;
    conn_t *conns;
    bool stopping;
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    wt_healthz_t *h;
    char head[MAX_HEAD];
    size_t len;
    bool answered, closing;
    int open;
    uv_write_t wr;
    char out[256];
    conn_t *next, *prev;
};

int wt_parse_hostport(const char *s, struct sockaddr_storage *addr)
{
    char host[128];
    const char *colon;
    memset(addr, 0, sizeof(*addr));
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':' || (size_t)(end - s - 1) >= sizeof(host))
            return -1;
        memcpy(host, s + 1, (size_t)(end - s - 1));
        host[end - s - 1] = '\0';
        colon = end + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || (size_t)(colon - s) >= sizeof(host))
            return -1;
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = '\0';
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || port < 0 || port > 65535)
        return -1;
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)addr) == 0)
        return 0;
    if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)addr) == 0)
        return 0;
    return -1;
}

static void on_conn_closed(uv_handle_t *hd)
{
    conn_t *c = hd->data;
    if (--c->open == 0)
        free(c);
}

static void conn_close(conn_t *c)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->prev)
        c->prev->next = c->next;
    else
        c->h->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

static void on_written(uv_write_t *w, int status)
{
    conn_close(w->data);
}

static void answer(conn_t *c, int status, const char *body)
{
    c->answered = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
    const char *reason = status == 200   ? "OK"
                         : status == 503 ? "Service Unavailable"
                         : status == 404 ? "Not Found"
                         : status == 405 ? "Method Not Allowed"
                                         : "Bad Request";
    int n = snprintf(c->out, sizeof(c->out),
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\nConnection: close\r\n\r\n%s",
                     status, reason, strlen(body), body);
    uv_buf_t b = uv_buf_init(c->out, (unsigned)n);
    c->wr.data = c;
    if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0)
        conn_close(c);
}

static void handle(conn_t *c)
{
    char *sp1 = memchr(c->head, ' ', c->len);
    char *sp2 = sp1 ? memchr(sp1 + 1, ' ', c->len - (size_t)(sp1 + 1 - c->head)) : NULL;
    if (!sp1 || !sp2)
        return answer(c, 400, "bad request\n");
    size_t mlen = (size_t)(sp1 - c->head), plen = (size_t)(sp2 - sp1 - 1);
    const char *path = sp1 + 1;
    const char *q = memchr(path, '?', plen);
    if (q)
        plen = (size_t)(q - path);
    bool get =
        (mlen == 3 && !memcmp(c->head, "GET", 3)) || (mlen == 4 && !memcmp(c->head, "HEAD", 4));
    bool health =
        (plen == 8 && !memcmp(path, "/healthz", 8)) || (plen == 7 && !memcmp(path, "/readyz", 7));
    if (!health)
        return answer(c, 404, "not found\n");
    if (!get)
        return answer(c, 405, "use GET\n");
    if (c->h->ready(c->h->arg))
        answer(c, 200, "ok\n");
    else
        answer(c, 503, "not synced yet\n");
}

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf)
{
    conn_t *c = hd->data;
    *buf = uv_buf_init(c->head + c->len, (unsigned)(MAX_HEAD - c->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    conn_t *c = s->data;
    if (n < 0) {
        conn_close(c);
        return;
    }
    if (c->answered)
        return;
    c->len += (size_t)n;
    if (memmem(c->head, c->len, "\r\n\r\n", 4) || memmem(c->head, c->len, "\n\n", 2))
        handle(c);
    else if (c->len == MAX_HEAD)
        answer(c, 400, "request head too large\n");
}

static void on_server_closed(uv_handle_t *hd)
{
    free(hd->data);
}

static void on_timeout(uv_timer_t *t)
{
    conn_close(t->data);
}

static void on_connection(uv_stream_t *server, int status)
{
    wt_healthz_t *h = server->data;
    if (status < 0 || h->stopping)
        return;
    conn_t *c = sl_xcalloc(1, sizeof(*c));
    c->h = h;
    uv_tcp_init(server->loop, &c->tcp);
    uv_timer_init(server->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->open = 2;
    c->next = h->conns;
    if (h->conns)
        h->conns->prev = c;
    h->conns = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_timeout, TIMEOUT_MS, 0);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

wt_healthz_t *wt_healthz_start(uv_loop_t *loop, const char *listen, bool (*ready)(void *arg),
                               void *arg, sl_error_t *err)
{
    struct sockaddr_storage addr;
    if (wt_parse_hostport(listen, &addr) != 0) {
        sl_error_set(err, SL_ECONFIG, "--healthz-listen %s: expected IP:PORT", listen);
        return NULL;
    }
    wt_healthz_t *h = sl_xcalloc(1, sizeof(*h));
    h->ready = ready;
    h->arg = arg;
    uv_tcp_init(loop, &h->server);
    h->server.data = h;
    int rc = uv_tcp_bind(&h->server, (const struct sockaddr *)&addr, 0);
    if (!rc)
        rc = uv_listen((uv_stream_t *)&h->server, 64, on_connection);
    if (rc) {
        sl_error_set(err, rc, "--healthz-listen %s: %s", listen, uv_strerror(rc));
        h->stopping = true;
        uv_close((uv_handle_t *)&h->server, on_server_closed);
        return NULL;
    }
    SL_INFO("health endpoint on http://%s/healthz", listen);
    return h;
}

void wt_healthz_stop(wt_healthz_t *h)
{
    if (!h)
        return;
    h->stopping = true;
    while (h->conns)
        conn_close(h->conns);
    uv_close((uv_handle_t *)&h->server, on_server_closed);
}
