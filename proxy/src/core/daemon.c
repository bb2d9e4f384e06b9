/* Daemon mode, pid files and privilege dropping. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/core.h"

#define SL_LOG_TAG "daemon"
#include "sluice/log.h"

/* The pid file is locked (flock) for the life of the daemon: a second instance on the same
 * file finds it locked and refuses, naming the running pid. The lock follows the open file
 * across fork, so the daemonized child keeps it when the parent exits. */
int sl__pidfile_lock(const char *path, bool upgrading, int *fd_out, bool *locked, sl_error_t *err)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return sl_error_set(err, -errno, "cannot open pid file %s: %s", path, strerror(errno));
    *locked = true;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        if (e == EWOULDBLOCK && upgrading) {
            /* The old process holds it while it drains; we take it over once it exits. */
            *locked = false;
            *fd_out = fd;
            return 0;
        }
        char buf[32] = {0};
        ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
        close(fd);
        if (e == EWOULDBLOCK) {
            long pid = n > 0 ? strtol(buf, NULL, 10) : 0;
            return sl_error_set(err, -EEXIST,
                                "another instance is already running (pid %ld, pid file %s)", pid,
                                path);
        }
        return sl_error_set(err, -e, "cannot lock pid file %s: %s", path, strerror(e));
    }
    *fd_out = fd;
    return 0;
}

bool sl__pidfile_try_lock(int fd)
{
    return flock(fd, LOCK_EX | LOCK_NB) == 0;
}

int sl__pidfile_write(int fd)
{
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)n, 0) != n)
        return -errno;
    return 0;
}

void sl__pidfile_remove(const char *path, int fd)
{
    if (fd < 0)
        return;
    /* Only remove the file while it names us: after a hot upgrade it names the new process. */
    char buf[32] = {0};
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    if (n > 0 && strtol(buf, NULL, 10) == (long)getpid())
        unlink(path);
    close(fd);
}

/* The parent waits on a pipe for the child's "ready" report, so `sluice -d` exits 0 only once
 * the daemon serves, or prints the child's error and exits with its code. */
int sl__daemonize(int *ready_fd, sl_error_t *err)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        return sl_error_set(err, -errno, "pipe: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        return sl_error_set(err, -errno, "fork: %s", strerror(errno));
    if (pid > 0) {
        close(p[1]);
        char buf[1100];
        size_t len = 0;
        for (;;) {
            ssize_t n = read(p[0], buf + len, sizeof(buf) - 1 - len);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            len += (size_t)n;
            if (len >= sizeof(buf) - 1)
                break;
        }
        buf[len] = '\0';
        if (len == 0) {
            fprintf(stderr, "daemon exited before it was ready\n");
            _exit(3);
        }
        int code = buf[0] - '0';
        if (len > 2)
            fprintf(stderr, "%s\n", buf + 2);
        _exit(code);
    }
    close(p[0]);
    if (setsid() < 0)
        return sl_error_set(err, -errno, "setsid: %s", strerror(errno));
    /* A second fork would keep us from ever reacquiring a terminal; Pingora (and nginx) stop
     * at setsid, and so do we, so the pid the parent reports is the daemon's. The working
     * directory stays: relative paths in the config (the file itself for SIGHUP, discovery
     * files, error_log for SIGUSR1) keep meaning what they meant at start. */
    umask(022);
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {
        dup2(devnull, 0);
        dup2(devnull, 1);
        if (devnull > 2)
            close(devnull);
    }
    *ready_fd = p[1];
    return 0;
}

void sl__daemon_report(int ready_fd, int code, const char *msg)
{
    if (ready_fd < 0)
        return;
    char buf[1100];
    int n = snprintf(buf, sizeof(buf), "%d %s", code, msg ? msg : "");
    if (n > (int)sizeof(buf) - 1)
        n = (int)sizeof(buf) - 1;
    ssize_t w = write(ready_fd, buf, (size_t)n);
    (void)w;
    close(ready_fd);
}

int sl__drop_privileges(const char *user, const char *group, sl_error_t *err)
{
    if (!user && !group)
        return 0;
    if (geteuid() != 0) {
        SL_WARN("user/group set but not running as root; not changing identity");
        return 0;
    }
    gid_t gid = (gid_t)-1;
    uid_t uid = (uid_t)-1;
    struct passwd *pw = NULL;
    if (user) {
        pw = getpwnam(user);
        if (!pw)
            return sl_error_set(err, SL_ECONFIG, "user: unknown user \"%s\"", user);
        uid = pw->pw_uid;
        gid = pw->pw_gid;
    }
    if (group) {
        struct group *gr = getgrnam(group);
        if (!gr)
            return sl_error_set(err, SL_ECONFIG, "group: unknown group \"%s\"", group);
        gid = gr->gr_gid;
    }
    if (gid != (gid_t)-1) {
        if (setgroups(0, NULL) != 0 && errno != EPERM)
            return sl_error_set(err, -errno, "setgroups: %s", strerror(errno));
        if (pw && initgroups(pw->pw_name, gid) != 0)
            return sl_error_set(err, -errno, "initgroups: %s", strerror(errno));
        if (setgid(gid) != 0)
            return sl_error_set(err, -errno, "setgid(%u): %s", (unsigned)gid, strerror(errno));
    }
    if (uid != (uid_t)-1 && setuid(uid) != 0)
        return sl_error_set(err, -errno, "setuid(%u): %s", (unsigned)uid, strerror(errno));
    if (uid != (uid_t)-1 && uid != 0 && setuid(0) == 0)
        return sl_error_set(err, SL_EINTERNAL, "privileges could not be dropped");
    SL_INFO("running as %s%s%s", user ? user : "", group ? ":" : "", group ? group : "");
    return 0;
}
