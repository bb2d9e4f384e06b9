/* Listening sockets: address parsing, binding (one SO_REUSEPORT socket per worker for TCP),
 * and the per-worker accept loop. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/core.h"
#include "io/tls.h"
#include "util/mem.h"

#define SL_LOG_TAG "listener"
#include "sluice/log.h"

#define LISTEN_BACKLOG 4096

int sl__endpoint_parse(sl_endpoint_t *ep, const char *spec, sl_error_t *err)
{
    memset(&ep->addr, 0, sizeof(ep->addr));
    if (strncmp(spec, "unix:", 5) == 0) {
        const char *path = spec + 5;
        struct sockaddr_un *un = (struct sockaddr_un *)&ep->addr;
        if (!*path || strlen(path) >= sizeof(un->sun_path))
            return sl_error_set(err, SL_ECONFIG, "\"%s\": invalid unix socket path", spec);
        ep->kind = SL_EP_UDS;
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, path, strlen(path) + 1);
        ep->addr_len = sizeof(*un);
        return 0;
    }
    ep->kind = SL_EP_TCP;
    const char *colon = strrchr(spec, ':');
    if (!colon)
        return sl_error_set(err, SL_ECONFIG, "\"%s\": expected host:port", spec);
    char host[INET6_ADDRSTRLEN + 2];
    size_t hlen = (size_t)(colon - spec);
    const char *h = spec;
    if (hlen >= 2 && spec[0] == '[' && spec[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    if (hlen >= sizeof(host))
        return sl_error_set(err, SL_ECONFIG, "\"%s\": invalid address", spec);
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || port < 0 || port > 65535)
        return sl_error_set(err, SL_ECONFIG, "\"%s\": invalid port", spec);
    if (hlen == 0 || strcmp(host, "*") == 0)
        snprintf(host, sizeof(host), "0.0.0.0");
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ep->addr;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ep->addr;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        ep->addr_len = sizeof(*in4);
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        ep->addr_len = sizeof(*in6);
    } else {
        return sl_error_set(err, SL_ECONFIG,
                            "\"%s\": the listen address must be an IP address, not a name", spec);
    }
    ep->bound_port = (int)port;
    return 0;
}

static int set_port(struct sockaddr_storage *a, int port)
{
    if (a->ss_family == AF_INET)
        ((struct sockaddr_in *)a)->sin_port = htons((uint16_t)port);
    else if (a->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)a)->sin6_port = htons((uint16_t)port);
    return 0;
}

static int get_port(int fd)
{
    struct sockaddr_storage a;
    socklen_t len = sizeof(a);
    if (getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    if (a.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&a)->sin_port);
    if (a.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&a)->sin6_port);
    return -1;
}

static int tcp_socket(const sl_endpoint_t *ep, bool reuseport, int *out, sl_error_t *err)
{
    int fd = socket(ep->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return sl_error_set(err, -errno, "%s: socket: %s", ep->spec, strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (ep->addr.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&ep->addr, ep->addr_len) != 0) {
        int e = errno;
        close(fd);
        if (e == EADDRINUSE)
            return sl_error_set(err, -e, "cannot listen on %s: address already in use", ep->spec);
        return sl_error_set(err, -e, "cannot listen on %s: %s", ep->spec, strerror(e));
    }
    if (listen(fd, LISTEN_BACKLOG) != 0) {
        int e = errno;
        close(fd);
        return sl_error_set(err, -e, "cannot listen on %s: %s", ep->spec, strerror(e));
    }
    *out = fd;
    return 0;
}

static int uds_socket(sl_endpoint_t *ep, int *out, sl_error_t *err)
{
    const char *path = ((struct sockaddr_un *)&ep->addr)->sun_path;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return sl_error_set(err, -errno, "%s: socket: %s", ep->spec, strerror(errno));
    /* A stale socket file from a previous run is replaced; anything else is refused. */
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            close(fd);
            return sl_error_set(err, SL_ECONFIG,
                                "cannot listen on %s: %s exists and is not a socket", ep->spec,
                                path);
        }
        /* Someone still listening there? Then it is in use. */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0 && connect(probe, (const struct sockaddr *)&ep->addr, ep->addr_len) == 0) {
            close(probe);
            close(fd);
            return sl_error_set(err, -EADDRINUSE, "cannot listen on %s: address already in use",
                                ep->spec);
        }
        if (probe >= 0)
            close(probe);
        unlink(path);
    }
    if (bind(fd, (const struct sockaddr *)&ep->addr, ep->addr_len) != 0 ||
        (ep->perms && chmod(path, (mode_t)ep->perms) != 0) || listen(fd, LISTEN_BACKLOG) != 0) {
        int e = errno;
        close(fd);
        return sl_error_set(err, -e, "cannot listen on %s: %s", ep->spec, strerror(e));
    }
    *out = fd;
    return 0;
}

static int take_inherited(sl_endpoint_t *ep, sl_inherited_t **inherited)
{
    for (sl_inherited_t *in = inherited ? *inherited : NULL; in; in = in->next) {
        if (!in->used && strcmp(in->spec, ep->spec) == 0) {
            in->used = true;
            ep->fds = sl_xrealloc(ep->fds, (ep->n_fds + 1) * sizeof(int));
            ep->fds[ep->n_fds++] = in->fd;
            in->fd = -1;
        }
    }
    return (int)ep->n_fds;
}

int sl__endpoint_bind(sl_endpoint_t *ep, size_t n, sl_inherited_t **inherited, sl_error_t *err)
{
    int rc;
    if (take_inherited(ep, inherited) > 0) {
        int port = ep->kind == SL_EP_TCP ? get_port(ep->fds[0]) : -1;
        ep->bound_port = port;
        if (ep->kind == SL_EP_UDS || ep->n_fds >= n) {
            SL_INFO("%s: took over %zu listening socket(s) from the old process", ep->spec,
                    ep->n_fds);
            return 0;
        }
        /* Fewer sockets than workers: add ours to the same SO_REUSEPORT group. */
        set_port(&ep->addr, port);
        while (ep->n_fds < n) {
            int fd;
            if ((rc = tcp_socket(ep, true, &fd, err)))
                return rc;
            ep->fds = sl_xrealloc(ep->fds, (ep->n_fds + 1) * sizeof(int));
            ep->fds[ep->n_fds++] = fd;
        }
        return 0;
    }
    if (ep->kind == SL_EP_UDS) {
        ep->fds = sl_xmalloc(sizeof(int));
        if ((rc = uds_socket(ep, &ep->fds[0], err)))
            return rc;
        ep->n_fds = 1;
        return 0;
    }
    /* SO_REUSEPORT would let us silently share a port with another instance; a plain bind
     * first tells "already in use" apart. */
    if (ep->bound_port != 0) {
        int probe;
        if ((rc = tcp_socket(ep, false, &probe, err)))
            return rc;
        close(probe);
    }
    ep->fds = sl_xcalloc(n, sizeof(int));
    for (size_t i = 0; i < n; i++) {
        if ((rc = tcp_socket(ep, true, &ep->fds[i], err)))
            return rc;
        ep->n_fds++;
        if (i == 0 && ep->bound_port == 0) {
            /* Port 0: every worker's socket must share the port the kernel chose. */
            ep->bound_port = get_port(ep->fds[0]);
            set_port(&ep->addr, ep->bound_port);
        }
    }
    return 0;
}

void sl__endpoint_close(sl_endpoint_t *ep)
{
    for (size_t i = 0; i < ep->n_fds; i++)
        if (ep->fds[i] >= 0)
            close(ep->fds[i]);
    free(ep->fds);
    ep->fds = NULL;
    ep->n_fds = 0;
}

/* ---- accepting --------------------------------------------------------------------------- */

static void on_handshake(sl_stream_t *s, int status)
{
    if (status) {
        /* Failed handshakes are routine (scanners, old clients): debug, not noise. */
        if (sl_log_enabled(SL_LOG_DEBUG)) {
            struct sockaddr_storage peer;
            char addr[128] = "?";
            if (sl_stream_peer_addr(s, &peer) == 0)
                sl_sockaddr_str(&peer, addr, sizeof(addr));
            SL_DEBUG("TLS handshake with %s failed: %s", addr, sl__tls_error(s));
        }
        sl_stream_close(s, NULL);
        return;
    }
    sl_service_t *svc = sl_stream_service(s);
    sl_worker_t *w = sl_stream_worker(s);
    svc->app.process_new(svc->app_data, s, sl_worker_shutdown_watch(w));
}

static void on_connection(uv_stream_t *server, int status)
{
    sl_listener_handle_t *lh = server->data;
    if (status < 0) {
        SL_WARN("%s: accept failed: %s", lh->endpoint->spec, uv_strerror(status));
        return;
    }
    sl_worker_t *w = lh->worker;
    if (w->state != SL_WORKER_RUNNING)
        return;
    sl_stream_t *s;
    int rc = sl__stream_accept(lh, &s);
    if (rc) {
        if (rc != UV_EAGAIN)
            SL_WARN("%s: accept: %s", lh->endpoint->spec, uv_strerror(rc));
        return;
    }
    if (lh->endpoint->tls) {
        /* The application sees TLS streams once the handshake is done. */
        if (sl__tls_server_start(s, lh->endpoint->tls, sl__tls_handshake_timeout(lh->endpoint->tls),
                                 on_handshake) != 0)
            sl_stream_close(s, NULL);
        return;
    }
    sl_service_t *svc = lh->endpoint->service;
    svc->app.process_new(svc->app_data, s, &w->shutdown);
}

static void free_listener_cb(uv_handle_t *h)
{
    free(h->data);
}

int sl__listener_start(sl_worker_t *w, sl_endpoint_t *ep, int fd)
{
    sl_listener_handle_t *lh = sl_xcalloc(1, sizeof(*lh));
    lh->endpoint = ep;
    lh->worker = w;
    /* The loop owns a duplicate: the endpoint keeps its descriptor for a hot upgrade. */
    int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (dfd < 0) {
        free(lh);
        return -errno;
    }
    int rc;
    if (ep->kind == SL_EP_TCP) {
        uv_tcp_init(&w->loop, &lh->u.tcp);
        rc = uv_tcp_open(&lh->u.tcp, dfd);
    } else {
        uv_pipe_init(&w->loop, &lh->u.pipe, 0);
        rc = uv_pipe_open(&lh->u.pipe, dfd);
    }
    lh->u.handle.data = lh;
    if (rc == 0)
        rc = uv_listen(&lh->u.stream, LISTEN_BACKLOG, on_connection);
    if (rc) {
        uv_close(&lh->u.handle, free_listener_cb);
        return rc;
    }
    lh->next = w->listeners;
    w->listeners = lh;
    return 0;
}
