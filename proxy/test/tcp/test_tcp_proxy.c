/* The TCP proxy service in-process: a server with one tcp proxy listener, a blocking echo
 * upstream thread and a blocking client thread. The smallest buffer (4 KiB per direction)
 * makes every ring wrap many times; upstream_peer finishes later (SL_PENDING, resumed from a
 * timer on the worker's loop); logging sees the bytes and the outcome. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sluice/tcp.h"

#define TOTAL (8u << 20)

typedef struct tcp_test {
    sl_server_t *server;
    sl_service_t *svc;
    int up_fd; /* the echo upstream's listening socket */
    int up_port;
    int no_peer; /* upstream_peer fails */
    pthread_t client, upstream;
    _Atomic int logged;
    _Atomic uint64_t log_in, log_out;
    _Atomic int log_err;
    _Atomic int pending_resumed;
    size_t received; /* by the client */
    int mismatch;    /* first byte that differed + 1 */
    bool eof_seen;
} tcp_test_t;

static unsigned char pattern(size_t i)
{
    return (unsigned char)((i * 2654435761u) >> 13);
}

static void *echo_upstream(void *arg)
{
    tcp_test_t *t = arg;
    int c = accept(t->up_fd, NULL, NULL);
    if (c < 0)
        return NULL;
    static char buf[65536];
    for (;;) {
        ssize_t n = read(c, buf, sizeof(buf));
        if (n <= 0)
            break;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(c, buf + off, (size_t)(n - off));
            if (w <= 0)
                goto out;
            off += w;
        }
    }
    shutdown(c, SHUT_WR);
out:
    close(c);
    return NULL;
}

static void *writer(void *arg)
{
    int fd = *(int *)arg;
    static unsigned char buf[65536];
    for (size_t sent = 0; sent < TOTAL;) {
        size_t n = TOTAL - sent < sizeof(buf) ? TOTAL - sent : sizeof(buf);
        for (size_t i = 0; i < n; i++)
            buf[i] = pattern(sent + i);
        for (size_t off = 0; off < n;) {
            ssize_t w = write(fd, buf + off, n - off);
            if (w <= 0)
                return NULL;
            off += (size_t)w;
        }
        sent += n;
    }
    shutdown(fd, SHUT_WR); /* half-close: the echo still comes back */
    return NULL;
}

static void *client(void *arg)
{
    tcp_test_t *t = arg;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    a.sin_port = htons((uint16_t)sl_service_bound_port(t->svc, 0));
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
        pthread_t w;
        if (!t->no_peer)
            pthread_create(&w, NULL, writer, &fd);
        static unsigned char buf[65536];
        for (;;) {
            ssize_t n = read(fd, buf, sizeof(buf));
            if (n <= 0) {
                t->eof_seen = n == 0;
                break;
            }
            for (ssize_t i = 0; i < n && !t->mismatch; i++)
                if (buf[i] != pattern(t->received + (size_t)i))
                    t->mismatch = (int)(t->received + (size_t)i) + 1;
            t->received += (size_t)n;
        }
        if (!t->no_peer)
            pthread_join(w, NULL);
    }
    if (fd >= 0)
        close(fd);
    for (int i = 0; i < 200 && !atomic_load(&t->logged); i++)
        usleep(10 * 1000);
    sl_server_shutdown(t->server);
    return NULL;
}

/* ---- hooks ------------------------------------------------------------------------------- */

typedef struct later {
    uv_timer_t timer;
    sl_tcp_session_t *s;
} later_t;

static void later_closed(uv_handle_t *h)
{
    free(h->data);
}

static void resume_later(uv_timer_t *h)
{
    later_t *l = h->data;
    tcp_test_t *t = sl_tcp_session_app(l->s);
    atomic_store(&t->pending_resumed, 1);
    sl_tcp_session_resume(l->s, SL_CONTINUE);
    uv_close((uv_handle_t *)h, later_closed);
}

static int upstream_peer(sl_tcp_session_t *s, void *ctx, sl_peer_t *peer)
{
    tcp_test_t *t = sl_tcp_session_app(s);
    if (t->no_peer)
        return SL_ENOUPSTREAM;
    struct sockaddr_in *a = (struct sockaddr_in *)&peer->addr;
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a->sin_port = htons((uint16_t)t->up_port);
    peer->addr_len = sizeof(*a);
    /* Finish later, from our own callback on the worker's loop. */
    later_t *l = calloc(1, sizeof(*l));
    l->s = s;
    uv_timer_init(sl_worker_loop(sl_tcp_session_worker(s)), &l->timer);
    l->timer.data = l;
    uv_timer_start(&l->timer, resume_later, 10, 0);
    return SL_PENDING;
}

static void logging(sl_tcp_session_t *s, void *ctx, int err)
{
    tcp_test_t *t = sl_tcp_session_app(s);
    atomic_store(&t->log_in, sl_tcp_session_bytes_in(s));
    atomic_store(&t->log_out, sl_tcp_session_bytes_out(s));
    atomic_store(&t->log_err, err);
    atomic_store(&t->logged, 1);
}

static int started(sl_server_t *server, void *data, sl_error_t *err)
{
    tcp_test_t *t = data;
    return pthread_create(&t->client, NULL, client, t) == 0 ? 0 : -1;
}

static void run(tcp_test_t *t)
{
    t->up_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(t->up_fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(t->up_fd, 8), 0);
    socklen_t len = sizeof(a);
    getsockname(t->up_fd, (struct sockaddr *)&a, &len);
    t->up_port = ntohs(a.sin_port);
    if (!t->no_peer)
        pthread_create(&t->upstream, NULL, echo_upstream, t);

    sl_server_conf_t conf;
    sl_server_conf_init(&conf);
    conf.grace_period_seconds = 5;
    sl_opt_t opt;
    memset(&opt, 0, sizeof(opt));
    cr_assert_eq(sl_server_new_with_conf(&opt, &conf, &t->server), 0);
    sl_server_bootstrap(t->server);
    static const sl_tcp_proxy_hooks_t hooks = {.upstream_peer = upstream_peer, .logging = logging};
    t->svc = sl_tcp_proxy_service_new(&conf, &hooks, t);
    sl_server_conf_release(&conf);
    sl_tcp_proxy_options(t->svc)->buffer_size = 1; /* clamped to the minimum, 4 KiB */
    cr_assert_eq(sl_service_add_tcp(t->svc, "127.0.0.1:0"), 0);
    sl_server_add_service(t->server, t->svc);
    sl_server_on_start(t->server, started, t);
    cr_assert_eq(sl_server_run_forever(t->server), 0);
    pthread_join(t->client, NULL);
    if (!t->no_peer)
        pthread_join(t->upstream, NULL);
    close(t->up_fd);
}

Test(tcp_proxy, echo_through_a_tiny_ring_with_a_pending_peer, .timeout = 30)
{
    static tcp_test_t t;
    memset(&t, 0, sizeof(t));
    run(&t);
    cr_assert_eq(t.mismatch, 0, "byte %d came back different", t.mismatch - 1);
    cr_assert_eq(t.received, TOTAL, "received %zu of %u bytes", t.received, TOTAL);
    cr_assert(t.eof_seen, "the upstream's EOF reached the client");
    cr_assert(atomic_load(&t.pending_resumed));
    cr_assert(atomic_load(&t.logged));
    cr_assert_eq(atomic_load(&t.log_in), TOTAL);
    cr_assert_eq(atomic_load(&t.log_out), TOTAL);
    cr_assert_eq(atomic_load(&t.log_err), 0, "ended with %s", sl_strerror(t.log_err));
}

Test(tcp_proxy, no_peer_closes_the_client, .timeout = 30)
{
    static tcp_test_t t;
    memset(&t, 0, sizeof(t));
    t.no_peer = 1;
    run(&t);
    cr_assert_eq(t.received, 0);
    cr_assert(atomic_load(&t.logged));
    cr_assert_eq(atomic_load(&t.log_err), SL_ENOUPSTREAM);
}
