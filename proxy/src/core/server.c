/* The server: process lifecycle, signals, daemon mode, hot upgrade, workers. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/core.h"
#include "util/mem.h"

#define SL_LOG_TAG "server"
#include "sluice/log.h"

#define SLUICE_VERSION "0.1.0"
#define UPGRADE_WAIT_S 60

const char *sl_version(void)
{
    return "sluice " SLUICE_VERSION;
}

/* ---- construction ------------------------------------------------------------------------ */

static sl_server_t *server_alloc(const sl_opt_t *opt)
{
    sl_server_t *s = sl_xcalloc(1, sizeof(*s));
    if (opt)
        s->opt = *opt;
    if (s->opt.conf) {
        s->conf_path = sl_xstrdup(s->opt.conf);
        s->opt.conf = s->conf_path;
    }
    s->pid_fd = -1;
    s->ready_fd = -1;
    pthread_mutex_init(&s->start_lock, NULL);
    pthread_cond_init(&s->start_cond, NULL);
    return s;
}

int sl_server_new(const sl_opt_t *opt, sl_server_t **out, sl_error_t *err)
{
    sl_log_init_from_env();
    sl_server_t *s = server_alloc(opt);
    sl_server_conf_init(&s->conf);
    if (s->opt.conf) {
        int rc = sl_server_conf_load(&s->conf, s->opt.conf, NULL, err);
        if (rc) {
            sl_server_conf_release(&s->conf);
            free(s->conf_path);
            free(s);
            return rc;
        }
    }
    if (s->opt.daemon)
        s->conf.daemon = true;
    *out = s;
    return 0;
}

sl_server_t *sl_server_from_args(int argc, char **argv, int *exit_code)
{
    sl_opt_t opt;
    if (sl_opt_parse(&opt, argc, argv) != 0) {
        *exit_code = 2;
        return NULL;
    }
    if (opt.help || opt.version) {
        if (opt.help)
            sl_opt_usage(argc > 0 ? argv[0] : "sluice");
        else
            printf("%s\n", sl_version());
        *exit_code = 0;
        return NULL;
    }
    sl_server_t *s;
    sl_error_t err = {0};
    if (sl_server_new(&opt, &s, &err) != 0) {
        if (opt.test)
            fprintf(stderr, "%s\n", err.msg);
        else
            SL_ERROR("%s", err.msg);
        *exit_code = 1;
        return NULL;
    }
    *exit_code = 0;
    return s;
}

int sl_server_new_with_conf(const sl_opt_t *opt, const sl_server_conf_t *conf, sl_server_t **out)
{
    sl_log_init_from_env();
    sl_server_t *s = server_alloc(opt);
    sl_server_conf_copy(&s->conf, conf);
    if (s->opt.daemon)
        s->conf.daemon = true;
    *out = s;
    return 0;
}

sl_server_conf_t *sl_server_conf(sl_server_t *s)
{
    return &s->conf;
}

const sl_opt_t *sl_server_opt(const sl_server_t *s)
{
    return &s->opt;
}

int sl_server_bootstrap(sl_server_t *s)
{
    s->bootstrapped = true;
    return 0;
}

void sl_server_add_service(sl_server_t *s, sl_service_t *svc)
{
    svc->server = s;
    s->services = sl_xrealloc(s->services, (s->n_services + 1) * sizeof(*s->services));
    s->services[s->n_services++] = svc;
}

uv_loop_t *sl_server_main_loop(sl_server_t *s)
{
    return &s->loop;
}

static void add_cb(sl_cb_entry_t **list, void *fn, void *data)
{
    sl_cb_entry_t *e = sl_xcalloc(1, sizeof(*e));
    e->fn = fn;
    e->data = data;
    sl_cb_entry_t **p = list;
    while (*p)
        p = &(*p)->next;
    *p = e;
}

void sl_server_on_start(sl_server_t *s, sl_server_start_cb cb, void *data)
{
    add_cb(&s->on_start, (void *)cb, data);
}

void sl_server_on_reload(sl_server_t *s, sl_server_reload_cb cb, void *data)
{
    add_cb(&s->on_reload, (void *)cb, data);
}

void sl_server_on_shutdown(sl_server_t *s, sl_server_stop_cb cb, void *data)
{
    add_cb(&s->on_shutdown, (void *)cb, data);
}

void sl_server_on_stop(sl_server_t *s, sl_server_stop_cb cb, void *data)
{
    add_cb(&s->on_stop, (void *)cb, data);
}

void sl_server_on_worker_start(sl_server_t *s, sl_worker_cb cb, void *data)
{
    add_cb(&s->on_worker_start, (void *)cb, data);
}

void sl_server_on_worker_stop(sl_server_t *s, sl_worker_cb cb, void *data)
{
    add_cb(&s->on_worker_stop, (void *)cb, data);
}

size_t sl_server_n_workers(const sl_server_t *s)
{
    return s->n_workers;
}

sl_worker_t *sl_server_worker(sl_server_t *s, size_t i)
{
    return i < s->n_workers ? &s->workers[i] : NULL;
}

bool sl_server_upgraded(const sl_server_t *s)
{
    return s->upgraded;
}

bool sl_server_is_draining(const sl_server_t *s)
{
    return atomic_load(&s->state) >= SL_SERVER_DRAINING;
}

/* ---- shutdown ---------------------------------------------------------------------------- */

static void remove_pid_file(sl_server_t *s)
{
    if (s->pid_fd >= 0) {
        sl__pidfile_remove(s->conf.pid_file, s->pid_fd);
        s->pid_fd = -1;
    }
}

static void unlink_unix_sockets(sl_server_t *s)
{
    for (size_t i = 0; i < s->n_services; i++)
        for (size_t e = 0; e < s->services[i]->n_endpoints; e++) {
            sl_endpoint_t *ep = &s->services[i]->endpoints[e];
            if (ep->kind == SL_EP_UDS && ep->n_fds)
                unlink(((struct sockaddr_un *)&ep->addr)->sun_path);
        }
}

static void close_endpoints(sl_server_t *s)
{
    for (size_t i = 0; i < s->n_services; i++)
        for (size_t e = 0; e < s->services[i]->n_endpoints; e++)
            sl__endpoint_close(&s->services[i]->endpoints[e]);
    /* Control listeners keep running through the drain (their users hold their own
     * descriptor); only our copies, kept for a hand-over, go. */
    for (size_t i = 0; i < s->n_control; i++)
        sl__endpoint_close(&s->control[i]);
}

int sl_server_control_listen(sl_server_t *s, const char *spec, sl_error_t *err)
{
    sl_endpoint_t ep;
    memset(&ep, 0, sizeof(ep));
    if (sl__endpoint_parse(&ep, spec, err) != 0)
        return SL_ECONFIG;
    ep.spec = sl_xstrdup(spec);
    int rc = sl__endpoint_bind(&ep, 1, &s->inherited, err);
    if (rc) {
        sl__endpoint_close(&ep);
        free(ep.spec);
        return rc;
    }
    int fd = fcntl(ep.fds[0], F_DUPFD_CLOEXEC, 3);
    if (fd < 0) {
        rc = -errno;
        sl__endpoint_close(&ep);
        free(ep.spec);
        return sl_error_set(err, rc, "%s: %s", spec, strerror(-rc));
    }
    s->control = sl_xrealloc(s->control, (s->n_control + 1) * sizeof(*s->control));
    s->control[s->n_control++] = ep;
    return fd;
}

static void close_main_handle(uv_handle_t *h)
{
    if (h->loop && !uv_is_closing(h))
        uv_close(h, NULL);
}

static void finish_main_loop(sl_server_t *s)
{
    atomic_store(&s->state, SL_SERVER_DONE);
    close_main_handle((uv_handle_t *)&s->sig_term);
    close_main_handle((uv_handle_t *)&s->sig_int);
    close_main_handle((uv_handle_t *)&s->sig_hup);
    close_main_handle((uv_handle_t *)&s->sig_quit);
    close_main_handle((uv_handle_t *)&s->sig_usr1);
    close_main_handle((uv_handle_t *)&s->wake);
    close_main_handle((uv_handle_t *)&s->grace_timer);
    close_main_handle((uv_handle_t *)&s->pid_timer);
}

static void on_pid_timer(uv_timer_t *t)
{
    sl_server_t *s = t->data;
    if (sl__pidfile_try_lock(s->pid_fd)) {
        SL_DEBUG("pid file lock taken over from the old process");
        s->pid_locked = true;
        uv_timer_stop(t);
    }
}

static void on_grace_timer(uv_timer_t *t)
{
    sl_server_t *s = t->data;
    if (s->phase == 1) {
        long left = sl_server_conf_shutdown_timeout(&s->conf);
        SL_INFO("grace period of %lds over; closing open connections, waiting up to %lds more",
                sl_server_conf_grace_period(&s->conf), left);
        s->phase = 2;
        for (size_t i = 0; i < s->n_workers; i++)
            sl__worker_cmd_expire(&s->workers[i]);
        uv_timer_start(t, on_grace_timer, (uint64_t)left * 1000, 0);
        return;
    }
    SL_WARN("graceful shutdown timed out; exiting now");
    remove_pid_file(s);
    _exit(s->exit_code);
}

static void begin_shutdown(sl_server_t *s, const char *why)
{
    if (atomic_load(&s->state) != SL_SERVER_RUNNING)
        return;
    atomic_store(&s->state, SL_SERVER_DRAINING);
    s->phase = 1;
    SL_INFO("%s", why);
    /* Stop accepting: our copies of the listening sockets close now (after an upgrade the new
     * process holds its own), and each worker closes its handles. */
    if (!s->upgraded)
        unlink_unix_sockets(s);
    close_endpoints(s);
    for (size_t i = 0; i < s->n_workers; i++)
        sl__worker_cmd_drain(&s->workers[i]);
    for (sl_cb_entry_t *e = s->on_shutdown; e; e = e->next)
        ((sl_server_stop_cb)e->fn)(s, e->data);
    uv_timer_start(&s->grace_timer, on_grace_timer,
                   (uint64_t)sl_server_conf_grace_period(&s->conf) * 1000, 0);
}

void sl_server_shutdown(sl_server_t *s)
{
    atomic_store(&s->shutdown_requested, 1);
    uv_async_send(&s->wake);
}

void sl__server_worker_drained(sl_server_t *s)
{
    atomic_fetch_add(&s->drained_workers, 1);
    uv_async_send(&s->wake);
}

static void on_wake(uv_async_t *h)
{
    sl_server_t *s = h->data;
    if (atomic_exchange(&s->shutdown_requested, 0))
        begin_shutdown(s, "shutdown requested, gracefully exiting");
    if ((size_t)atomic_load(&s->drained_workers) == s->n_workers &&
        atomic_load(&s->state) == SL_SERVER_DRAINING) {
        SL_INFO("all work finished; exiting");
        for (sl_cb_entry_t *e = s->on_stop; e; e = e->next)
            ((sl_server_stop_cb)e->fn)(s, e->data);
        finish_main_loop(s);
    }
}

static void on_signal(uv_signal_t *h, int signum)
{
    sl_server_t *s = h->data;
    sl_error_t err = {0};
    switch (signum) {
    case SIGTERM:
        begin_shutdown(s, "SIGTERM received, gracefully exiting");
        break;
    case SIGINT:
        SL_INFO("SIGINT received, exiting");
        remove_pid_file(s);
        _exit(0);
    case SIGQUIT:
        SL_INFO("SIGQUIT received, handing the listening sockets to the new process");
        if (sl__upgrade_send(s, &err) != 0) {
            SL_ERROR("%s; still serving", err.msg);
            break;
        }
        s->upgraded = true;
        begin_shutdown(s, "listeners handed over, gracefully exiting");
        break;
    case SIGHUP:
        if (!s->on_reload) {
            SL_INFO("SIGHUP received; nothing to reload");
            break;
        }
        SL_INFO("SIGHUP received, reloading the configuration");
        for (sl_cb_entry_t *e = s->on_reload; e; e = e->next)
            ((sl_server_reload_cb)e->fn)(s, e->data);
        break;
    case SIGUSR1: {
        int rc = sl_log_reopen();
        if (rc)
            SL_ERROR("SIGUSR1: cannot reopen the log file: %s", strerror(-rc));
        else
            SL_INFO("SIGUSR1 received, log file reopened");
        break;
    }
    default:
        break;
    }
}

/* ---- running ----------------------------------------------------------------------------- */

static int bind_all(sl_server_t *s, sl_error_t *err)
{
    for (size_t i = 0; i < s->n_services; i++) {
        sl_service_t *svc = s->services[i];
        for (size_t e = 0; e < svc->n_endpoints; e++) {
            int rc = sl__endpoint_bind(&svc->endpoints[e], s->n_workers, &s->inherited, err);
            if (rc)
                return rc;
        }
    }
    return 0;
}

/* Sockets the old process had but we do not use (after services and control listeners took
 * theirs): closing them is what a config change that drops a listener means. */
static void drop_unused_inherited(sl_server_t *s)
{
    for (sl_inherited_t *in = s->inherited; in; in = in->next)
        if (!in->used)
            SL_WARN("upgrade: %s is not configured here; closing it", in->spec);
    sl__inherited_free(s->inherited);
    s->inherited = NULL;
}

static void assign_background_tasks(sl_server_t *s)
{
    unsigned next = 0;
    for (size_t i = 0; i < s->n_services; i++) {
        sl_service_t *svc = s->services[i];
        if (svc->kind != SL_SVC_BACKGROUND)
            continue;
        sl_worker_t *w = &s->workers[next++ % s->n_workers];
        w->tasks = sl_xrealloc(w->tasks, (w->n_tasks + 1) * sizeof(*w->tasks));
        sl_bg_task_t *t = &w->tasks[w->n_tasks++];
        memset(t, 0, sizeof(*t));
        t->service = svc;
        t->worker = w;
        svc->bg_worker = w->id;
    }
}

void sl__server_worker_started(sl_server_t *s)
{
    pthread_mutex_lock(&s->start_lock);
    s->started_workers++;
    pthread_cond_signal(&s->start_cond);
    pthread_mutex_unlock(&s->start_lock);
}

static int start_workers(sl_server_t *s, sl_error_t *err)
{
    for (size_t i = 0; i < s->n_workers; i++) {
        int rc = sl__worker_start(&s->workers[i]);
        if (rc)
            return sl_error_set(err, rc, "cannot start worker thread: %s", strerror(-rc));
    }
    pthread_mutex_lock(&s->start_lock);
    while (s->started_workers < s->n_workers)
        pthread_cond_wait(&s->start_cond, &s->start_lock);
    pthread_mutex_unlock(&s->start_lock);
    for (size_t i = 0; i < s->n_workers; i++)
        if (s->workers[i].start_error)
            return sl_error_set(err, s->workers[i].start_error, "worker %zu failed to start", i);
    return 0;
}

static void init_signal(sl_server_t *s, uv_signal_t *h, int signum)
{
    uv_signal_init(&s->loop, h);
    h->data = s;
    uv_signal_start(h, on_signal, signum);
}

static int prepare_process(sl_server_t *s, sl_error_t *err)
{
    int rc;
    if (s->opt.upgrade &&
        (rc = sl__upgrade_receive(s->conf.upgrade_sock, UPGRADE_WAIT_S, &s->inherited, err)))
        return rc;
    if ((rc = bind_all(s, err)))
        return rc;
    if (s->conf.daemon) {
        if ((rc = sl__pidfile_lock(s->conf.pid_file, s->opt.upgrade, &s->pid_fd, &s->pid_locked,
                                   err)))
            return rc;
        if (s->conf.error_log) {
            /* Fail before forking when the log cannot be written. */
            FILE *f = fopen(s->conf.error_log, "a");
            if (!f)
                return sl_error_set(err, -errno, "error_log %s: %s", s->conf.error_log,
                                    strerror(errno));
            fclose(f);
        }
        if ((rc = sl__daemonize(&s->ready_fd, err)))
            return rc;
        if ((rc = sl__pidfile_write(s->pid_fd)))
            return sl_error_set(err, rc, "cannot write pid file %s: %s", s->conf.pid_file,
                                strerror(-rc));
        if (s->conf.error_log) {
            if ((rc = sl_log_open(s->conf.error_log)))
                return sl_error_set(err, rc, "error_log %s: %s", s->conf.error_log, strerror(-rc));
            dup2(2, 1);
        } else {
            dup2(1, 2); /* stdout is /dev/null already */
        }
    }
    if ((rc = sl__drop_privileges(s->conf.user, s->conf.group, err)))
        return rc;
    return 0;
}

static int run(sl_server_t *s)
{
    sl_error_t err = {0};
    if (s->opt.test) {
        printf("configuration OK\n");
        return 0;
    }
    s->n_workers = (size_t)(s->conf.threads > 0 ? s->conf.threads : 1);
    if (uv_loop_init(&s->loop) != 0) {
        SL_ERROR("cannot create the main event loop");
        return 3;
    }
    s->loop_ready = true;
    uv_async_init(&s->loop, &s->wake, on_wake);
    s->wake.data = s;
    uv_timer_init(&s->loop, &s->grace_timer);
    s->grace_timer.data = s;
    s->workers = sl_xcalloc(s->n_workers, sizeof(sl_worker_t));
    for (size_t i = 0; i < s->n_workers; i++) {
        if (sl__worker_init(&s->workers[i], s, (unsigned)i) != 0) {
            SL_ERROR("cannot create worker %zu", i);
            return 3;
        }
        s->n_workers_init++;
    }

    if (prepare_process(s, &err) != 0) {
        SL_ERROR("%s", err.msg);
        sl__daemon_report(s->ready_fd, 3, err.msg);
        s->ready_fd = -1;
        return 3;
    }
    /* Signal handlers exist before any worker runs, so no signal is ever missed or takes the
     * default action mid-start. */
    init_signal(s, &s->sig_term, SIGTERM);
    init_signal(s, &s->sig_int, SIGINT);
    init_signal(s, &s->sig_hup, SIGHUP);
    init_signal(s, &s->sig_quit, SIGQUIT);
    init_signal(s, &s->sig_usr1, SIGUSR1);
    signal(SIGPIPE, SIG_IGN);
    if (s->pid_fd >= 0 && !s->pid_locked) {
        uv_timer_init(&s->loop, &s->pid_timer);
        s->pid_timer.data = s;
        uv_timer_start(&s->pid_timer, on_pid_timer, 500, 500);
    }

    assign_background_tasks(s);
    atomic_store(&s->state, SL_SERVER_RUNNING);
    int rc = start_workers(s, &err);
    for (sl_cb_entry_t *e = s->on_start; e && !rc; e = e->next) {
        rc = ((sl_server_start_cb)e->fn)(s, e->data, &err);
        if (rc && !err.msg[0])
            sl_error_set(&err, rc, "startup failed");
    }
    drop_unused_inherited(s);
    if (rc) {
        SL_ERROR("%s", err.msg);
        sl__daemon_report(s->ready_fd, 3, err.msg);
        s->ready_fd = -1;
        s->exit_code = 3;
        begin_shutdown(s, "startup failed, stopping");
    } else {
        SL_INFO("%s started, pid %ld, %zu worker thread(s)", sl_version(), (long)getpid(),
                s->n_workers);
        sl__daemon_report(s->ready_fd, 0, NULL);
        s->ready_fd = -1;
    }
    uv_run(&s->loop, UV_RUN_DEFAULT);
    for (size_t i = 0; i < s->n_workers; i++)
        sl__worker_join(&s->workers[i]);
    return s->exit_code;
}

static void free_services(sl_server_t *s)
{
    for (size_t i = 0; i < s->n_services; i++) {
        sl_service_t *svc = s->services[i];
        for (size_t e = 0; e < svc->n_endpoints; e++) {
            sl__endpoint_close(&svc->endpoints[e]);
            free(svc->endpoints[e].spec);
        }
        free(svc->endpoints);
        if (svc->kind == SL_SVC_LISTENING && svc->app.free)
            svc->app.free(svc->app_data);
        free(svc->name);
        free(svc);
    }
    free(s->services);
}

static void free_cbs(sl_cb_entry_t *e)
{
    while (e) {
        sl_cb_entry_t *n = e->next;
        free(e);
        e = n;
    }
}

int sl_server_run_forever(sl_server_t *s)
{
    int code = run(s);
    for (size_t i = 0; i < s->n_workers_init; i++)
        sl__worker_release(&s->workers[i]);
    free(s->workers);
    if (s->loop_ready) {
        finish_main_loop(s);
        uv_run(&s->loop, UV_RUN_DEFAULT);
        if (uv_loop_close(&s->loop) != 0)
            SL_DEBUG("main loop closed with handles still open");
    }
    remove_pid_file(s);
    free_services(s);
    for (size_t i = 0; i < s->n_control; i++) {
        sl__endpoint_close(&s->control[i]);
        free(s->control[i].spec);
    }
    free(s->control);
    sl__inherited_free(s->inherited);
    free_cbs(s->on_start);
    free_cbs(s->on_reload);
    free_cbs(s->on_shutdown);
    free_cbs(s->on_stop);
    free_cbs(s->on_worker_start);
    free_cbs(s->on_worker_stop);
    sl_server_conf_release(&s->conf);
    pthread_mutex_destroy(&s->start_lock);
    pthread_cond_destroy(&s->start_cond);
    free(s->conf_path);
    free(s);
    return code;
}
