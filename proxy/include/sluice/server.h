/* sluice — server, workers, services (Pingora's Server, Service, ServerApp, BackgroundService).
 *
 * A server owns the process: its configuration, signals, daemon mode, hot upgrade, and N worker
 * threads (`threads:`), each running its own libuv loop. Services are added before
 * sl_server_run_forever():
 *   - a listening service receives every accepted stream on the worker thread that accepted it
 *     (each worker has its own SO_REUSEPORT socket per endpoint);
 *   - a background service runs a start callback on one worker's loop (services are spread
 *     across workers) and says when it has finished.
 * Shutdown (SIGTERM) stops accepting, notifies every shutdown watch, waits for streams and
 * background services to finish for up to grace_period_seconds, closes the remaining streams,
 * waits graceful_shutdown_timeout_seconds more for background services, then exits. */
#ifndef SLUICE_SERVER_H
#define SLUICE_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "conf.h"
#include "error.h"

/* The struct of type `type` whose member `member` is at ptr. */
#define sl_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

typedef struct sl_server sl_server_t;
typedef struct sl_service sl_service_t;
typedef struct sl_worker sl_worker_t;
typedef struct sl_stream sl_stream_t;
typedef struct sl_bg_task sl_bg_task_t;
typedef struct sl_shutdown_watch sl_shutdown_watch_t;

/* ---- server ----------------------------------------------------------------------------- */

/* Creates a server from the command line: loads opt->conf (process keys only; see
 * sl_server_new_with_conf for programs with a larger schema), applies -d. On a config error
 * returns SL_ECONFIG with err->msg set; the caller prints it and exits 1. */
int sl_server_new(const sl_opt_t *opt, sl_server_t **out, sl_error_t *err);
/* Parses argv (sl_opt_parse) and creates the server, the way every sluice program starts:
 * -h prints the usage and --version the version (exit 0), a usage error exits 2, a config
 * error prints the message (exit 1). Returns NULL with *exit_code set in those cases. */
sl_server_t *sl_server_from_args(int argc, char **argv, int *exit_code);
/* Same, with a configuration the caller already loaded (copied). */
int sl_server_new_with_conf(const sl_opt_t *opt, const sl_server_conf_t *conf, sl_server_t **out);

/* The configuration; may be changed until sl_server_bootstrap(). */
sl_server_conf_t *sl_server_conf(sl_server_t *server);
const sl_opt_t *sl_server_opt(const sl_server_t *server);

/* Freezes the configuration and prepares the process (log level). Returns 0. */
int sl_server_bootstrap(sl_server_t *server);

/* Adds a service (the server takes ownership). */
void sl_server_add_service(sl_server_t *server, sl_service_t *service);

/* Binds every listener (or takes them over with -u), daemonizes with -d, drops privileges,
 * starts the workers and runs until shutdown. Returns the process exit code (SPEC §3:
 * 0 ok, 3 fatal runtime error such as a port in use) and frees the server. */
int sl_server_run_forever(sl_server_t *server);

/* The main thread's loop, for control-plane work (admin API, discovery). Valid during
 * sl_server_run_forever, from callbacks registered with sl_server_on_start. */
uv_loop_t *sl_server_main_loop(sl_server_t *server);

/* Called on the main thread once the workers run (after daemonizing). Return non-zero (and
 * explain in err) to abort startup (exit 3). */
typedef int (*sl_server_start_cb)(sl_server_t *server, void *data, sl_error_t *err);
void sl_server_on_start(sl_server_t *server, sl_server_start_cb cb, void *data);
/* A listening socket for the control plane (an admin API on the main loop), handed over by
 * a hot upgrade like the services' sockets: taken from the old process when it had one for
 * spec, else bound. Main thread, from an on_start callback. Returns a descriptor the caller
 * owns (uv_tcp_open/uv_pipe_open it), or a negative error with err set. */
int sl_server_control_listen(sl_server_t *server, const char *spec, sl_error_t *err);
/* Called on the main thread for SIGHUP. Without one, SIGHUP is logged and ignored. */
typedef void (*sl_server_reload_cb)(sl_server_t *server, void *data);
void sl_server_on_reload(sl_server_t *server, sl_server_reload_cb cb, void *data);
/* Called on the main thread when graceful shutdown starts (SIGTERM, SIGQUIT after handing over
 * the listeners). Control-plane handles should be closed from here. */
typedef void (*sl_server_stop_cb)(sl_server_t *server, void *data);
void sl_server_on_shutdown(sl_server_t *server, sl_server_stop_cb cb, void *data);

/* Called on the main thread once every worker has finished, right before the main loop ends:
 * close control-plane handles here (they would otherwise keep the process alive). */
void sl_server_on_stop(sl_server_t *server, sl_server_stop_cb cb, void *data);

/* Per-worker state of an application that spans several services (a DNS resolver, a cache):
 * start runs on each worker's thread before the worker starts its services (before it accepts
 * or runs a background task); stop runs on that thread once the worker has stopped them (after
 * every listening service's worker_stop, so no request of the worker runs any more), before
 * the worker's loop closes whatever handles are left and ends. Handles opened in start can be
 * closed in stop with their own close callbacks: the loop runs until they are closed. Both run
 * once per worker, in registration order; register before sl_server_run_forever. */
typedef void (*sl_worker_cb)(sl_worker_t *w, void *data);
void sl_server_on_worker_start(sl_server_t *server, sl_worker_cb cb, void *data);
void sl_server_on_worker_stop(sl_server_t *server, sl_worker_cb cb, void *data);

/* Starts a graceful shutdown from code, as SIGTERM does. Thread-safe. */
void sl_server_shutdown(sl_server_t *server);
/* True once the listeners were handed to a new process (SIGQUIT): shared files such as unix
 * socket paths now belong to it. */
bool sl_server_upgraded(const sl_server_t *server);
/* True once graceful shutdown has begun. Thread-safe. */
bool sl_server_is_draining(const sl_server_t *server);

size_t sl_server_n_workers(const sl_server_t *server);
sl_worker_t *sl_server_worker(sl_server_t *server, size_t index);

/* ---- workers ----------------------------------------------------------------------------- */

/* The worker running the calling thread, or NULL on the main thread. */
sl_worker_t *sl_worker_current(void);
uv_loop_t *sl_worker_loop(sl_worker_t *w);
/* 0-based index, stable for the life of the process. */
unsigned sl_worker_id(const sl_worker_t *w);
sl_server_t *sl_worker_server(sl_worker_t *w);
sl_shutdown_watch_t *sl_worker_shutdown_watch(sl_worker_t *w);

/* Runs fn(arg) on the worker's loop thread soon. Thread-safe. */
typedef void (*sl_worker_fn)(sl_worker_t *w, void *arg);
void sl_worker_post(sl_worker_t *w, sl_worker_fn fn, void *arg);

/* Work in flight: a worker does not finish draining while it holds references. Accepted
 * streams and running background tasks hold one automatically. Worker thread only. */
void sl_worker_ref(sl_worker_t *w);
void sl_worker_unref(sl_worker_t *w);

/* ---- shutdown watch (Pingora's ShutdownWatch) -------------------------------------------- */

typedef struct sl_shutdown_sub sl_shutdown_sub_t;
typedef void (*sl_shutdown_cb)(sl_shutdown_sub_t *sub);
/* Embed in your own struct; the callback finds it with container_of. */
struct sl_shutdown_sub {
    sl_shutdown_cb cb;
    sl_shutdown_sub_t *prev, *next;
    sl_shutdown_watch_t *watch;
};

/* True once shutdown was requested. */
bool sl_shutdown_requested(const sl_shutdown_watch_t *watch);
/* True once the grace period expired: streams still open are being closed. */
bool sl_shutdown_expired(const sl_shutdown_watch_t *watch);
/* Calls cb (once, on the watch's worker thread) when shutdown is requested. If it already was,
 * cb runs from the next loop iteration. */
void sl_shutdown_subscribe(sl_shutdown_watch_t *watch, sl_shutdown_sub_t *sub, sl_shutdown_cb cb);
/* Calls cb (once) when the grace period has expired and open streams must close now. */
void sl_shutdown_subscribe_expired(sl_shutdown_watch_t *watch, sl_shutdown_sub_t *sub,
                                   sl_shutdown_cb cb);
/* Safe to call when not subscribed or already notified. */
void sl_shutdown_unsubscribe(sl_shutdown_sub_t *sub);

/* ---- listening services (Pingora's ServerApp) -------------------------------------------- */

typedef struct sl_server_app {
    /* Called on the accepting worker's thread with a new stream (or a reused one). The app owns
     * the stream until it calls sl_stream_finish(): with reuse=false the stream is closed; with
     * reuse=true the service waits for the next bytes and calls process_new again. */
    void (*process_new)(void *app_data, sl_stream_t *stream, sl_shutdown_watch_t *shutdown);
    /* Optional: called once per worker before it accepts, and when the worker stops. */
    void (*worker_start)(void *app_data, sl_worker_t *worker);
    void (*worker_stop)(void *app_data, sl_worker_t *worker);
    /* Optional: frees app_data when the server is freed. */
    void (*free)(void *app_data);
    /* Bytes of zeroed memory allocated with each accepted stream for the app's own state
     * (sl_stream_extra): one allocation per connection instead of two. */
    size_t stream_data_size;
} sl_server_app_t;

/* Creates a listening service. app is copied; app_data is passed to every callback. */
sl_service_t *sl_listening_service_new(const char *name, const sl_server_app_t *app,
                                       void *app_data);
/* Adds a TCP endpoint: "0.0.0.0:6142", "127.0.0.1:0", "[::]:80", ":8080". Returns 0 or
 * SL_ECONFIG for an invalid address. */
int sl_service_add_tcp(sl_service_t *service, const char *addr);
/* Adds a unix socket endpoint (created with perms, e.g. 0660; an existing socket file is
 * replaced). */
int sl_service_add_uds(sl_service_t *service, const char *path, int perms);
/* Adds "unix:/path" or a TCP address. */
int sl_service_add_listen(sl_service_t *service, const char *spec);
const char *sl_service_name(const sl_service_t *service);
void *sl_service_app_data(sl_service_t *service);
/* The port actually bound for endpoint i (useful with port 0), or -1. Valid once running. */
int sl_service_bound_port(const sl_service_t *service, size_t endpoint);

/* ---- background services ----------------------------------------------------------------- */

/* start runs on a worker loop. The task stays alive until sl_bg_task_done(). Watch
 * sl_bg_task_shutdown() to know when to stop. */
typedef void (*sl_bg_start_fn)(void *data, sl_bg_task_t *task);
sl_service_t *sl_background_service_new(const char *name, sl_bg_start_fn start, void *data);

uv_loop_t *sl_bg_task_loop(sl_bg_task_t *task);
sl_worker_t *sl_bg_task_worker(sl_bg_task_t *task);
sl_shutdown_watch_t *sl_bg_task_shutdown(sl_bg_task_t *task);
const char *sl_bg_task_name(const sl_bg_task_t *task);
void *sl_bg_task_data(sl_bg_task_t *task);
/* The task has finished (every handle it opened is closed or closing). */
void sl_bg_task_done(sl_bg_task_t *task);

/* The version string ("sluice 0.1.0"). */
const char *sl_version(void);

#endif
