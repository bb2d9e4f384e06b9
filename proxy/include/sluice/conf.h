/* sluice — process configuration (Pingora's ServerConf) and command line (Pingora's Opt). */
#ifndef SLUICE_CONF_H
#define SLUICE_CONF_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

/* Command-line options: `[-c FILE] [-d] [-t] [-u] [--version] [-h]`. */
typedef struct sl_opt {
    const char *conf; /* -c, --conf: YAML or JSON file; NULL: built-in defaults */
    bool daemon;      /* -d, --daemon */
    bool test;        /* -t, --test: validate the config and exit */
    bool upgrade;     /* -u, --upgrade: take the listeners of a running instance */
    bool version;     /* --version */
    bool help;        /* -h, --help */
} sl_opt_t;

/* Parses argv. Returns 0, or SL_EPARSE after printing the problem and the usage to stderr
 * (the caller exits with 2). prog names the program in messages. */
int sl_opt_parse(sl_opt_t *opt, int argc, char **argv);
/* Prints the usage text of sl_opt_parse to stdout. */
void sl_opt_usage(const char *prog);

/* Pingora's ServerConf, same names and defaults. Strings are owned by the struct. */
typedef struct sl_server_conf {
    int version;
    bool daemon;
    char *error_log;    /* NULL: stderr */
    char *pid_file;     /* default /tmp/pingora.pid */
    char *upgrade_sock; /* default /tmp/pingora_upgrade.sock */
    char *user;
    char *group;
    int threads;               /* default 1 */
    int listener_tasks_per_fd; /* accepted for compatibility; each worker owns its sockets */
    bool work_stealing;        /* accepted; sluice always runs shared-nothing workers */
    char *ca_file;
    long grace_period_seconds;              /* -1: unset (then 300, Pingora's EXIT_TIMEOUT) */
    long graceful_shutdown_timeout_seconds; /* -1: unset (then 5) */
    char **client_bind_to_ipv4;
    size_t n_client_bind_to_ipv4;
    char **client_bind_to_ipv6;
    size_t n_client_bind_to_ipv6;
    size_t upstream_keepalive_pool_size;           /* default 128 */
    long upstream_connect_offload_threadpools;     /* -1: unset */
    long upstream_connect_offload_thread_per_pool; /* -1: unset */
    bool upstream_debug_ssl_keylog;
    int max_retries; /* default 16 */
} sl_server_conf_t;

/* Fills conf with Pingora's defaults. */
void sl_server_conf_init(sl_server_conf_t *conf);
/* Frees the strings conf owns (not conf itself). */
void sl_server_conf_release(sl_server_conf_t *conf);
/* Deep copy. */
void sl_server_conf_copy(sl_server_conf_t *dst, const sl_server_conf_t *src);

/* The effective grace period and shutdown timeout in seconds. */
long sl_server_conf_grace_period(const sl_server_conf_t *conf);
long sl_server_conf_shutdown_timeout(const sl_server_conf_t *conf);

/* Loads path (YAML, or JSON when it ends in .json or starts with '{') over the defaults.
 * Unknown keys are errors unless listed in extra_keys (NULL-terminated; keys another layer
 * parses, such as the gateway's `routes`). On error returns SL_ECONFIG with err->msg naming
 * the key path, e.g. `threads: expected an integer, got string "two"`. */
int sl_server_conf_load(sl_server_conf_t *conf, const char *path, const char *const *extra_keys,
                        sl_error_t *err);

#endif
