/* sluice — logging.
 *
 * One line per call: `2026-11-28T20:00:00.123Z INFO  [tag] message`, written with a single
 * write(2) so lines from different threads never interleave. The level comes from the
 * SLUICE_LOG environment variable (error|warn|info|debug|trace, default info). Output goes to
 * stderr until sl_log_open() points it at a file; sl_log_reopen() re-opens that file (SIGUSR1)
 * without a moment where lines are lost. */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

#include <stdarg.h>
#include <stdbool.h>

typedef enum sl_log_level {
    SL_LOG_ERROR = 0,
    SL_LOG_WARN = 1,
    SL_LOG_INFO = 2,
    SL_LOG_DEBUG = 3,
    SL_LOG_TRACE = 4,
} sl_log_level_t;

/* Reads SLUICE_LOG (called by sl_server_new; safe to call again). */
void sl_log_init_from_env(void);
void sl_log_set_level(sl_log_level_t level);
sl_log_level_t sl_log_get_level(void);
/* Parses "error".."trace"; returns 0 or -1. */
int sl_log_parse_level(const char *s, sl_log_level_t *out);

/* Sends log lines to path (appending). Returns 0 or a negative errno. */
int sl_log_open(const char *path);
/* Re-opens the file given to sl_log_open (log rotation). Returns 0 or a negative errno. */
int sl_log_reopen(void);
/* The file descriptor lines go to (2 until sl_log_open). */
int sl_log_fd(void);

static inline bool sl_log_enabled(sl_log_level_t level)
{
    extern int sl__log_level;
    return (int)level <= sl__log_level;
}

void sl_log_write(sl_log_level_t level, const char *tag, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void sl_log_vwrite(sl_log_level_t level, const char *tag, const char *fmt, va_list ap);

/* Files define SL_LOG_TAG before including this header to name their lines' [tag]. */
#ifndef SL_LOG_TAG
#define SL_LOG_TAG "sluice"
#endif

#define SL_LOG_AT(lvl, ...)                             \
    do {                                                \
        if (sl_log_enabled(lvl))                        \
            sl_log_write(lvl, SL_LOG_TAG, __VA_ARGS__); \
    } while (0)
#define SL_ERROR(...) SL_LOG_AT(SL_LOG_ERROR, __VA_ARGS__)
#define SL_WARN(...)  SL_LOG_AT(SL_LOG_WARN, __VA_ARGS__)
#define SL_INFO(...)  SL_LOG_AT(SL_LOG_INFO, __VA_ARGS__)
#define SL_DEBUG(...) SL_LOG_AT(SL_LOG_DEBUG, __VA_ARGS__)
#define SL_TRACE(...) SL_LOG_AT(SL_LOG_TRACE, __VA_ARGS__)

#endif
