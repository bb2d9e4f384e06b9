/* Hot upgrade: hand the listening sockets to a new process (Pingora's upgrade_sock).
 *
 * The new process (started with -u) listens on upgrade_sock and waits. On SIGQUIT the old
 * process connects and sends every listening socket with SCM_RIGHTS over SOCK_SEQPACKET (so
 * message boundaries hold): each message is "N\nspec\n...spec\n" with N descriptors attached;
 * "0\n" ends the list, and the new process answers "OK\n". The sockets never close in
 * between, so the kernel keeps queueing connections and none is refused. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/core.h"
#include "util/mem.h"

#define SL_LOG_TAG "upgrade"
#include "sluice/log.h"

#define BATCH   128
#define MSG_MAX 65536

static int uds_addr(const char *path, struct sockaddr_un *un, sl_error_t *err)
{
    memset(un, 0, sizeof(*un));
    un->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(un->sun_path))
        return sl_error_set(err, SL_ECONFIG, "upgrade_sock %s: path too long", path);
    memcpy(un->sun_path, path, strlen(path) + 1);
    return 0;
}

void sl__inherited_free(sl_inherited_t *list)
{
    while (list) {
        sl_inherited_t *n = list->next;
        if (list->fd >= 0)
            close(list->fd);
        free(list->spec);
        free(list);
        list = n;
    }
}

static int recv_batch(int conn, sl_inherited_t **list, size_t *total, sl_error_t *err)
{
    char *buf = sl_xmalloc(MSG_MAX + 1);
    union {
        char b[CMSG_SPACE(sizeof(int) * BATCH)];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = MSG_MAX};
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof(ctl.b)};
    ssize_t n = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);
    if (n <= 0) {
        free(buf);
        return sl_error_set(err, SL_EINTERNAL, "upgrade: connection lost while receiving sockets");
    }
    buf[n] = '\0';
    int fds[BATCH];
    size_t nfds = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < k && nfds < BATCH; i++)
                memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        }
    }
    char *save = NULL;
    char *line = strtok_r(buf, "\n", &save);
    long count = line ? strtol(line, NULL, 10) : -1;
    int rc = 0;
    if (count < 0 || (size_t)count != nfds) {
        rc = sl_error_set(err, SL_EINTERNAL, "upgrade: malformed message from the old process");
    } else {
        for (size_t i = 0; i < nfds; i++) {
            line = strtok_r(NULL, "\n", &save);
            if (!line) {
                rc = sl_error_set(err, SL_EINTERNAL, "upgrade: socket list truncated");
                break;
            }
            sl_inherited_t *in = sl_xcalloc(1, sizeof(*in));
            in->spec = sl_xstrdup(line);
            in->fd = fds[i];
            fds[i] = -1;
            in->next = *list;
            *list = in;
        }
    }
    for (size_t i = 0; i < nfds; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(buf);
    if (rc)
        return rc;
    *total += nfds;
    return count == 0 ? 1 : 0; /* 1: end of list */
}

int sl__upgrade_receive(const char *path, long timeout_s, sl_inherited_t **out, sl_error_t *err)
{
    struct sockaddr_un un;
    int rc = uds_addr(path, &un, err);
    if (rc)
        return rc;
    *out = NULL;
    int ls = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (ls < 0)
        return sl_error_set(err, -errno, "upgrade: socket: %s", strerror(errno));
    unlink(path);
    if (bind(ls, (struct sockaddr *)&un, sizeof(un)) != 0 || listen(ls, 1) != 0) {
        int e = errno;
        close(ls);
        return sl_error_set(err, -e, "upgrade: cannot listen on %s: %s", path, strerror(e));
    }
    SL_INFO("waiting for the old process to send its listening sockets on %s (send it SIGQUIT)",
            path);
    struct pollfd pfd = {.fd = ls, .events = POLLIN};
    int pr;
    do {
        pr = poll(&pfd, 1, (int)(timeout_s * 1000));
    } while (pr < 0 && errno == EINTR);
    if (pr <= 0) {
        close(ls);
        unlink(path);
        return sl_error_set(err, SL_EINTERNAL,
                            "upgrade: no listening sockets received on %s within %lds", path,
                            timeout_s);
    }
    int conn = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
    close(ls);
    unlink(path);
    if (conn < 0)
        return sl_error_set(err, -errno, "upgrade: accept: %s", strerror(errno));
    struct timeval tv = {.tv_sec = 10};
    setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    size_t total = 0;
    for (;;) {
        rc = recv_batch(conn, out, &total, err);
        if (rc < 0) {
            close(conn);
            sl__inherited_free(*out);
            *out = NULL;
            return rc;
        }
        if (rc == 1)
            break;
    }
    ssize_t w = send(conn, "OK\n", 3, MSG_NOSIGNAL);
    (void)w;
    close(conn);
    SL_INFO("received %zu listening socket(s) from the old process", total);
    return 0;
}

static int send_msg(int conn, const char *text, size_t len, const int *fds, size_t nfds)
{
    union {
        char b[CMSG_SPACE(sizeof(int) * BATCH)];
        struct cmsghdr align;
    } ctl;
    memset(&ctl, 0, sizeof(ctl));
    struct iovec iov = {.iov_base = (void *)text, .iov_len = len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds) {
        msg.msg_control = ctl.b;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    return sendmsg(conn, &msg, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -errno;
}

int sl__upgrade_send(sl_server_t *s, sl_error_t *err)
{
    struct sockaddr_un un;
    int rc = uds_addr(s->conf.upgrade_sock, &un, err);
    if (rc)
        return rc;
    int conn = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (conn < 0)
        return sl_error_set(err, -errno, "upgrade: socket: %s", strerror(errno));
    struct timeval tv = {.tv_sec = 10};
    setsockopt(conn, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(conn, (struct sockaddr *)&un, sizeof(un)) != 0) {
        int e = errno;
        close(conn);
        return sl_error_set(err, -e,
                            "upgrade: no new process is waiting on %s (%s); start one with -u",
                            s->conf.upgrade_sock, strerror(e));
    }
    char *text = sl_xmalloc(MSG_MAX);
    int fds[BATCH];
    size_t nfds = 0, len = 0, sent = 0;
    char specs[MSG_MAX - 32];
    rc = 0;
    /* Every service endpoint, then every control listener (admin API). */
    size_t n_eps = 0;
    for (size_t i = 0; i < s->n_services; i++)
        n_eps += s->services[i]->n_endpoints;
    n_eps += s->n_control;
    sl_endpoint_t **eps = sl_xcalloc(n_eps ? n_eps : 1, sizeof(*eps));
    size_t k = 0;
    for (size_t i = 0; i < s->n_services; i++)
        for (size_t e = 0; e < s->services[i]->n_endpoints; e++)
            eps[k++] = &s->services[i]->endpoints[e];
    for (size_t i = 0; i < s->n_control; i++)
        eps[k++] = &s->control[i];
    for (size_t i = 0; i < n_eps && !rc; i++) {
        sl_endpoint_t *ep = eps[i];
        for (size_t f = 0; f < ep->n_fds && !rc; f++) {
            size_t sl = strlen(ep->spec);
            if (nfds == BATCH || len + sl + 1 >= sizeof(specs)) {
                int hl = snprintf(text, MSG_MAX, "%zu\n%.*s", nfds, (int)len, specs);
                rc = send_msg(conn, text, (size_t)hl, fds, nfds);
                sent += nfds;
                nfds = len = 0;
            }
            fds[nfds++] = ep->fds[f];
            memcpy(specs + len, ep->spec, sl);
            specs[len + sl] = '\n';
            len += sl + 1;
        }
    }
    free(eps);
    if (!rc && nfds) {
        int hl = snprintf(text, MSG_MAX, "%zu\n%.*s", nfds, (int)len, specs);
        rc = send_msg(conn, text, (size_t)hl, fds, nfds);
        sent += nfds;
    }
    if (!rc)
        rc = send_msg(conn, "0\n", 2, NULL, 0);
    char ok[8] = {0};
    if (!rc && (recv(conn, ok, sizeof(ok) - 1, 0) < 2 || strncmp(ok, "OK", 2) != 0))
        rc = SL_EINTERNAL;
    free(text);
    close(conn);
    if (rc)
        return sl_error_set(err, rc, "upgrade: handing over the listening sockets failed: %s",
                            rc == SL_EINTERNAL ? "no acknowledgement" : strerror(-rc));
    SL_INFO("handed %zu listening socket(s) to the new process", sent);
    return 0;
}
