/* Per-worker application callbacks (sl_server_on_worker_start / sl_server_on_worker_stop): they
 * run once per worker on that worker's thread, start before the services and stop after them,
 * and handles opened in start can be closed in stop before the loop ends. */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/server.h"

#define THREADS 3

typedef struct per_worker {
    uv_timer_t timer; /* a handle the app opens in start and closes in stop */
    bool service_started, service_stopped;
    bool started_before_service, stopped_after_service;
} per_worker_t;

typedef struct app {
    per_worker_t *w[THREADS];
    _Atomic int starts, stops, closes, wrong_thread;
    sl_server_t *server;
} app_t;

static void on_worker_start(sl_worker_t *w, void *data)
{
    app_t *a = data;
    if (sl_worker_current() != w)
        atomic_fetch_add(&a->wrong_thread, 1);
    per_worker_t *pw = calloc(1, sizeof(*pw));
    cr_assert_not_null(pw);
    pw->started_before_service = true;
    uv_timer_init(sl_worker_loop(w), &pw->timer);
    pw->timer.data = a;
    a->w[sl_worker_id(w)] = pw;
    atomic_fetch_add(&a->starts, 1);
}

static void timer_closed(uv_handle_t *h)
{
    app_t *a = h->data;
    atomic_fetch_add(&a->closes, 1); /* the block itself is freed by the test */
}

static void on_worker_stop(sl_worker_t *w, void *data)
{
    app_t *a = data;
    if (sl_worker_current() != w)
        atomic_fetch_add(&a->wrong_thread, 1);
    per_worker_t *pw = a->w[sl_worker_id(w)];
    pw->stopped_after_service = pw->service_stopped;
    uv_close((uv_handle_t *)&pw->timer, timer_closed);
    atomic_fetch_add(&a->stops, 1);
}

static void svc_worker_start(void *data, sl_worker_t *w)
{
    app_t *a = data;
    per_worker_t *pw = a->w[sl_worker_id(w)];
    if (pw)
        pw->service_started = true;
}

static void svc_worker_stop(void *data, sl_worker_t *w)
{
    app_t *a = data;
    per_worker_t *pw = a->w[sl_worker_id(w)];
    if (pw)
        pw->service_stopped = true;
}

static void process_new(void *data, sl_stream_t *s, sl_shutdown_watch_t *shutdown) {}

static void bg_start(void *data, sl_bg_task_t *task)
{
    app_t *a = data;
    sl_bg_task_done(task);
    sl_server_shutdown(a->server);
}

Test(worker_hooks, run_on_each_worker_around_the_services, .timeout = 30)
{
    app_t a;
    memset(&a, 0, sizeof(a));
    sl_server_conf_t conf;
    sl_server_conf_init(&conf);
    conf.threads = THREADS;
    conf.grace_period_seconds = 5;
    sl_opt_t opt;
    memset(&opt, 0, sizeof(opt));
    sl_server_t *server;
    cr_assert_eq(sl_server_new_with_conf(&opt, &conf, &server), 0);
    sl_server_conf_release(&conf);
    a.server = server;
    sl_server_bootstrap(server);
    static const sl_server_app_t app = {
        .process_new = process_new,
        .worker_start = svc_worker_start,
        .worker_stop = svc_worker_stop,
    };
    sl_server_add_service(server, sl_listening_service_new("listening", &app, &a));
    sl_server_add_service(server, sl_background_service_new("stopper", bg_start, &a));
    sl_server_on_worker_start(server, on_worker_start, &a);
    sl_server_on_worker_stop(server, on_worker_stop, &a);

    cr_assert_eq(sl_server_run_forever(server), 0);

    cr_assert_eq(atomic_load(&a.starts), THREADS);
    cr_assert_eq(atomic_load(&a.stops), THREADS);
    cr_assert_eq(atomic_load(&a.closes), THREADS, "handles closed in stop must close");
    cr_assert_eq(atomic_load(&a.wrong_thread), 0, "callbacks run on the worker's own thread");
    for (int i = 0; i < THREADS; i++) {
        cr_assert(a.w[i]->started_before_service && a.w[i]->service_started);
        cr_assert(a.w[i]->stopped_after_service, "worker %d: stop ran before the service's", i);
        free(a.w[i]);
    }
}
