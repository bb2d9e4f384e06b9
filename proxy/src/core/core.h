/* Internal structures of the process core: server, workers, services, endpoints. */
#ifndef SL_CORE_CORE_H
#define SL_CORE_CORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>

#include "sluice/server.h"
#include "sluice/stream.h"

/* ---- shutdown watch ---------------------------------------------------------------------- */
struct sl_shutdown_watch {
    bool requested;
    bool expired;
    sl_shutdown_sub_t head; /* circular list sentinels */
    sl_shutdown_sub_t expire_head;
};
void sl__shutdown_watch_init(sl_shutdown_watch_t *w);
/* Requested (expired=false) or grace period over (expired=true): notifies and removes every
 * subscriber of that list, each exactly once. */
void sl__shutdown_watch_fire(sl_shutdown_watch_t *w, bool expired);

/* ---- endpoints and services -------------------------------------------------------------- */
typedef enum sl_endpoint_kind { SL_EP_TCP, SL_EP_UDS } sl_endpoint_kind_t;

typedef struct sl_endpoint {
    sl_endpoint_kind_t kind;
    char *spec;                   /* as given: "0.0.0.0:6142" or "unix:/path" */
    struct sockaddr_storage addr; /* resolved bind address */
    socklen_t addr_len;
    int perms; /* unix sockets */
    int *fds;  /* listening sockets, one or more per worker */
    size_t n_fds;
    int bound_port;
    sl_service_t *service;
    struct sl_tls_settings *tls; /* TLS listener: handshake before process_new */
} sl_endpoint_t;

typedef enum sl_service_kind { SL_SVC_LISTENING, SL_SVC_BACKGROUND } sl_service_kind_t;

struct sl_service {
    sl_service_kind_t kind;
    char *name;
    sl_server_t *server;
    /* listening */
    sl_server_app_t app;
    void *app_data;
    sl_endpoint_t *endpoints;
    size_t n_endpoints;
    /* background */
    sl_bg_start_fn bg_start;
    void *bg_data;
    unsigned bg_worker; /* which worker runs it */
};

struct sl_bg_task {
    sl_service_t *service;
    sl_worker_t *worker;
    bool done;
};

/* ---- workers ----------------------------------------------------------------------------- */
typedef struct sl_posted {
    sl_worker_fn fn;
    void *arg;
    struct sl_posted *next;
} sl_posted_t;

typedef struct sl_deferred {
    void (*fn)(void *arg);
    void *arg;
    struct sl_deferred *next;
} sl_deferred_t;

typedef struct sl_listener_handle {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } u;
    sl_endpoint_t *endpoint;
    sl_worker_t *worker;
    struct sl_listener_handle *next;
} sl_listener_handle_t;

typedef enum sl_worker_state {
    SL_WORKER_STARTING,
    SL_WORKER_RUNNING,
    SL_WORKER_DRAINING, /* not accepting; waiting for refs to reach zero */
    SL_WORKER_STOPPING, /* closing every handle */
    SL_WORKER_STOPPED,
} sl_worker_state_t;

struct sl_worker {
    unsigned id;
    sl_server_t *server;
    pthread_t thread;
    bool thread_started;
    uv_loop_t loop;
    uv_async_t async;
    pthread_mutex_t post_lock;
    sl_posted_t *posted, *posted_tail;
    uv_idle_t defer_idle;
    sl_deferred_t *deferred, *deferred_tail;
    sl_shutdown_watch_t shutdown;
    sl_listener_handle_t *listeners;
    sl_bg_task_t *tasks;
    size_t n_tasks;
    long refs;
    sl_worker_state_t state;
    atomic_int cmd_drain, cmd_expire, cmd_stop;
    int start_error;
};
const char *sl__worker_state_str(sl_worker_state_t s);

int sl__worker_init(sl_worker_t *w, sl_server_t *server, unsigned id);
int sl__worker_start(sl_worker_t *w);
void sl__worker_join(sl_worker_t *w);
void sl__worker_release(sl_worker_t *w);
/* Commands from the main thread. */
void sl__worker_cmd_drain(sl_worker_t *w);
void sl__worker_cmd_expire(sl_worker_t *w);
void sl__worker_cmd_stop(sl_worker_t *w);
/* Runs fn(arg) from the next loop iteration on the worker thread (worker thread only). */
void sl__worker_defer(sl_worker_t *w, void (*fn)(void *), void *arg);

/* ---- server ------------------------------------------------------------------------------ */
typedef struct sl_cb_entry {
    void *fn;
    void *data;
    struct sl_cb_entry *next;
} sl_cb_entry_t;

typedef enum sl_server_state {
    SL_SERVER_NEW,
    SL_SERVER_RUNNING,
    SL_SERVER_DRAINING,
    SL_SERVER_STOPPING,
    SL_SERVER_DONE,
} sl_server_state_t;

struct sl_server {
    sl_opt_t opt;
    char *conf_path;
    sl_server_conf_t conf;
    bool bootstrapped;
    sl_service_t **services;
    size_t n_services;
    sl_worker_t *workers;
    size_t n_workers;
    uv_loop_t loop;
    uv_signal_t sig_term, sig_int, sig_hup, sig_quit, sig_usr1;
    uv_async_t wake; /* workers report "drained"; sl_server_shutdown from any thread */
    uv_timer_t grace_timer;
    atomic_int drained_workers;
    atomic_int shutdown_requested;
    atomic_int state;
    int exit_code;
    int phase; /* 0 running, 1 draining, 2 grace expired, 3 forced */
    sl_cb_entry_t *on_start, *on_reload, *on_shutdown, *on_stop;
    sl_cb_entry_t *on_worker_start, *on_worker_stop; /* run on each worker's thread */
    int pid_fd;
    bool pid_written;
    bool pid_locked;
    uv_timer_t pid_timer; /* retries the lock after a hot upgrade */
    int ready_fd;         /* daemon: pipe to the waiting parent */
    /* hot upgrade: sockets received from the old process, matched to endpoints by address */
    struct sl_inherited *inherited;
    bool upgraded;          /* listeners handed to a new process: leave unix socket files alone */
    sl_endpoint_t *control; /* control-plane listeners (sl_server_control_listen) */
    size_t n_control;
    bool loop_ready;
    size_t n_workers_init;
    pthread_mutex_t start_lock;
    pthread_cond_t start_cond;
    size_t started_workers;
};

/* Called by a worker (any thread) once it has no work left. */
void sl__server_worker_drained(sl_server_t *s);
/* Called by a worker thread once its listeners and background tasks are started. */
void sl__server_worker_started(sl_server_t *s);

/* ---- configuration (conf.c) -------------------------------------------------------------- */
struct cJSON;
/* Reads the process keys of a parsed config tree over c; keys in extra_keys are left to the
 * caller, anything else is an unknown-key error. */
int sl__server_conf_from_tree(sl_server_conf_t *c, const struct cJSON *root,
                              const char *const *extra_keys, sl_error_t *err);

/* ---- listener sockets (listener.c) ------------------------------------------------------- */
/* Parses "host:port", "[v6]:port", ":port" or "unix:/path" into ep. */
int sl__endpoint_parse(sl_endpoint_t *ep, const char *spec, sl_error_t *err);
/* Creates the listening sockets of ep: n per TCP endpoint (SO_REUSEPORT), one for a unix
 * socket. Reuses inherited sockets first. */
int sl__endpoint_bind(sl_endpoint_t *ep, size_t n, struct sl_inherited **inherited,
                      sl_error_t *err);
void sl__endpoint_close(sl_endpoint_t *ep);
int sl__listener_start(sl_worker_t *w, sl_endpoint_t *ep, int fd);

/* ---- hot upgrade (upgrade.c) -------------------------------------------------------------- */
typedef struct sl_inherited {
    char *spec;
    int fd;
    bool used;
    struct sl_inherited *next;
} sl_inherited_t;
/* New process: receive the listening sockets from the old one over path. */
int sl__upgrade_receive(const char *path, long timeout_s, sl_inherited_t **out, sl_error_t *err);
/* Old process: send our listening sockets to the new one. */
int sl__upgrade_send(sl_server_t *s, sl_error_t *err);
void sl__inherited_free(sl_inherited_t *list);

/* ---- daemon (daemon.c) -------------------------------------------------------------------- */
/* Opens and locks the pid file. During a hot upgrade (upgrading) the old process still holds
 * the lock: then *locked is false and the caller retries later (sl__pidfile_try_lock). */
int sl__pidfile_lock(const char *path, bool upgrading, int *fd_out, bool *locked, sl_error_t *err);
bool sl__pidfile_try_lock(int fd);
int sl__pidfile_write(int fd);
void sl__pidfile_remove(const char *path, int fd);
/* Forks; the parent waits for the child's readiness report and exits with it. Returns in
 * the child with *ready_fd set. */
int sl__daemonize(int *ready_fd, sl_error_t *err);
void sl__daemon_report(int ready_fd, int code, const char *msg);
int sl__drop_privileges(const char *user, const char *group, sl_error_t *err);

/* ---- streams (io/stream.c) ---------------------------------------------------------------- */
/* Accepts a connection from a listening handle into a new stream owned by the service. */
int sl__stream_accept(sl_listener_handle_t *lh, sl_stream_t **out);

#endif
