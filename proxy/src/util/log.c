/* Logging: one formatted line, one write(2). */
#include "sluice/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

int sl__log_level = SL_LOG_INFO;
static const int log_fd = 2;
static char *log_path;
static pthread_mutex_t log_path_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"ERROR", "WARN ", "INFO ", "DEBUG", "TRACE"};

int sl_log_parse_level(const char *s, sl_log_level_t *out)
{
    static const char *const names[] = {"error", "warn", "info", "debug", "trace"};
    for (int i = 0; i < 5; i++) {
        if (strcasecmp(s, names[i]) == 0) {
            *out = (sl_log_level_t)i;
            return 0;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *out = SL_LOG_WARN;
        return 0;
    }
    return -1;
}

void sl_log_init_from_env(void)
{
    const char *env = getenv("SLUICE_LOG");
    sl_log_level_t lvl;
    if (env && *env) {
        if (sl_log_parse_level(env, &lvl) == 0)
            sl__log_level = (int)lvl;
        else
            sl_log_write(SL_LOG_WARN, "log", "SLUICE_LOG=%s is not a level; using info", env);
    }
}

void sl_log_set_level(sl_log_level_t level)
{
    sl__log_level = (int)level;
}

sl_log_level_t sl_log_get_level(void)
{
    return (sl_log_level_t)sl__log_level;
}

int sl_log_fd(void)
{
    return log_fd;
}

static int open_log(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    return fd < 0 ? -errno : fd;
}

/* Lines always go to descriptor 2; opening a file makes descriptor 2 that file, so anything
 * else written to stderr (by libraries, by sanitizers) lands in the same place. */
int sl_log_open(const char *path)
{
    int fd = open_log(path);
    if (fd < 0)
        return fd;
    pthread_mutex_lock(&log_path_lock);
    free(log_path);
    log_path = strdup(path);
    dup2(fd, log_fd);
    close(fd);
    pthread_mutex_unlock(&log_path_lock);
    return 0;
}

int sl_log_reopen(void)
{
    int rc = 0;
    pthread_mutex_lock(&log_path_lock);
    if (log_path) {
        int fd = open_log(log_path);
        if (fd < 0) {
            rc = fd;
        } else {
            /* dup2 swaps the file under the same descriptor atomically: writers never see a
             * closed descriptor. */
            dup2(fd, log_fd);
            close(fd);
        }
    }
    pthread_mutex_unlock(&log_path_lock);
    return rc;
}

void sl_log_vwrite(sl_log_level_t level, const char *tag, const char *fmt, va_list ap)
{
    char line[4096];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s [%s] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, level_names[level], tag ? tag : "-");
    if (n < 0)
        return;
    size_t len = (size_t)n;
    int m = vsnprintf(line + len, sizeof(line) - len - 1, fmt, ap);
    if (m < 0)
        m = 0;
    len += (size_t)m;
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    /* A message must stay one line: control characters become spaces. */
    for (size_t i = (size_t)n; i < len; i++)
        if ((unsigned char)line[i] < 0x20 && line[i] != '\t')
            line[i] = ' ';
    line[len++] = '\n';
    const char *p = line;
    while (len > 0) {
        ssize_t w = write(log_fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += w;
        len -= (size_t)w;
    }
}

void sl_log_write(sl_log_level_t level, const char *tag, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sl_log_vwrite(level, tag, fmt, ap);
    va_end(ap);
}
