/* Workers: one thread, one libuv loop, its own listening sockets and background tasks.
 *
 * The main thread talks to a worker through atomic command flags plus uv_async_send, and
 * through sl_worker_post() for arbitrary functions. A worker drains (stops accepting, fires
 * its shutdown watch) and reports back once its reference count reaches zero. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/core.h"
#include "io/stream_impl.h"
#include "util/timeout.h"
#include "util/mem.h"

#define SL_LOG_TAG "worker"
#include "sluice/log.h"

static __thread sl_worker_t *current_worker;

const char *sl__worker_state_str(sl_worker_state_t s)
{
    switch (s) {
    case SL_WORKER_STARTING:
        return "starting";
    case SL_WORKER_RUNNING:
        return "running";
    case SL_WORKER_DRAINING:
        return "draining";
    case SL_WORKER_STOPPING:
        return "stopping";
    case SL_WORKER_STOPPED:
        return "stopped";
    }
    return "?";
}

static void set_state(sl_worker_t *w, sl_worker_state_t st)
{
    SL_TRACE("worker %u: %s -> %s", w->id, sl__worker_state_str(w->state),
             sl__worker_state_str(st));
    w->state = st;
}

sl_worker_t *sl_worker_current(void)
{
    return current_worker;
}

uv_loop_t *sl_worker_loop(sl_worker_t *w)
{
    return &w->loop;
}

unsigned sl_worker_id(const sl_worker_t *w)
{
    return w->id;
}

sl_server_t *sl_worker_server(sl_worker_t *w)
{
    return w->server;
}

sl_shutdown_watch_t *sl_worker_shutdown_watch(sl_worker_t *w)
{
    return &w->shutdown;
}

/* ---- shutdown watch ---------------------------------------------------------------------- */

void sl__shutdown_watch_init(sl_shutdown_watch_t *w)
{
    memset(w, 0, sizeof(*w));
    w->head.next = w->head.prev = &w->head;
    w->expire_head.next = w->expire_head.prev = &w->expire_head;
}

bool sl_shutdown_requested(const sl_shutdown_watch_t *w)
{
    return w->requested;
}

bool sl_shutdown_expired(const sl_shutdown_watch_t *w)
{
    return w->expired;
}

static void sub_unlink(sl_shutdown_sub_t *sub)
{
    sub->prev->next = sub->next;
    sub->next->prev = sub->prev;
    sub->next = sub->prev = NULL;
    sub->watch = NULL;
}

static void late_notify(void *arg)
{
    sl_shutdown_sub_t *sub = arg;
    /* A self-linked node with a watch is still pending; unsubscribe clears the watch. */
    if (sub->watch != NULL && sub->next == sub) {
        sub->next = sub->prev = NULL;
        sub->watch = NULL;
        sub->cb(sub);
    }
}

static void subscribe(sl_shutdown_watch_t *w, sl_shutdown_sub_t *head, bool already,
                      sl_shutdown_sub_t *sub, sl_shutdown_cb cb)
{
    sub->cb = cb;
    sub->watch = w;
    if (already) {
        /* Notify from the next iteration, never re-entrantly. */
        sub->next = sub->prev = sub;
        sl__worker_defer(current_worker, late_notify, sub);
        return;
    }
    sub->next = head;
    sub->prev = head->prev;
    head->prev->next = sub;
    head->prev = sub;
}

void sl_shutdown_subscribe(sl_shutdown_watch_t *w, sl_shutdown_sub_t *sub, sl_shutdown_cb cb)
{
    subscribe(w, &w->head, w->requested, sub, cb);
}

void sl_shutdown_subscribe_expired(sl_shutdown_watch_t *w, sl_shutdown_sub_t *sub,
                                   sl_shutdown_cb cb)
{
    subscribe(w, &w->expire_head, w->expired, sub, cb);
}

void sl_shutdown_unsubscribe(sl_shutdown_sub_t *sub)
{
    if (!sub->watch)
        return;
    if (sub->next == sub) { /* pending late notification: cancel it */
        sub->watch = NULL;
        return;
    }
    sub_unlink(sub);
}

void sl__shutdown_watch_fire(sl_shutdown_watch_t *w, bool expired)
{
    sl_shutdown_sub_t *head = expired ? &w->expire_head : &w->head;
    if (expired)
        w->expired = true;
    else
        w->requested = true;
    /* Each callback may unsubscribe others or itself: always take the first. */
    while (head->next != head) {
        sl_shutdown_sub_t *sub = head->next;
        sub_unlink(sub);
        sub->cb(sub);
    }
}

/* ---- deferred work (same thread) --------------------------------------------------------- */

static void on_defer_idle(uv_idle_t *h)
{
    sl_worker_t *w = h->data;
    sl_deferred_t *list = w->deferred;
    w->deferred = w->deferred_tail = NULL;
    uv_idle_stop(&w->defer_idle);
    while (list) {
        sl_deferred_t *d = list;
        list = d->next;
        d->fn(d->arg);
        free(d);
    }
}

void sl__worker_defer(sl_worker_t *w, void (*fn)(void *), void *arg)
{
    sl_deferred_t *d = sl_xmalloc(sizeof(*d));
    d->fn = fn;
    d->arg = arg;
    d->next = NULL;
    if (w->deferred_tail)
        w->deferred_tail->next = d;
    else
        w->deferred = d;
    w->deferred_tail = d;
    uv_idle_start(&w->defer_idle, on_defer_idle);
}

/* ---- references and draining ------------------------------------------------------------- */

static void worker_stop_loop(sl_worker_t *w);
static void on_defer_idle(uv_idle_t *h);

static void check_drained(sl_worker_t *w)
{
    if (w->state == SL_WORKER_DRAINING && w->refs == 0) {
        SL_DEBUG("worker %u drained", w->id);
        worker_stop_loop(w);
    }
}

void sl_worker_ref(sl_worker_t *w)
{
    w->refs++;
}

void sl_worker_unref(sl_worker_t *w)
{
    if (--w->refs < 0) {
        SL_ERROR("worker %u: reference count below zero", w->id);
        w->refs = 0;
    }
    check_drained(w);
}

/* ---- posting from other threads ---------------------------------------------------------- */

void sl_worker_post(sl_worker_t *w, sl_worker_fn fn, void *arg)
{
    sl_posted_t *p = sl_xmalloc(sizeof(*p));
    p->fn = fn;
    p->arg = arg;
    p->next = NULL;
    pthread_mutex_lock(&w->post_lock);
    if (w->posted_tail)
        w->posted_tail->next = p;
    else
        w->posted = p;
    w->posted_tail = p;
    pthread_mutex_unlock(&w->post_lock);
    uv_async_send(&w->async);
}

static void close_listener_cb(uv_handle_t *h)
{
    free(h->data);
}

static void close_listeners(sl_worker_t *w)
{
    sl_listener_handle_t *lh = w->listeners;
    w->listeners = NULL;
    while (lh) {
        sl_listener_handle_t *next = lh->next;
        lh->u.handle.data = lh;
        uv_close(&lh->u.handle, close_listener_cb);
        lh = next;
    }
}

static void do_drain(sl_worker_t *w)
{
    if (w->state != SL_WORKER_RUNNING)
        return;
    set_state(w, SL_WORKER_DRAINING);
    close_listeners(w);
    sl__shutdown_watch_fire(&w->shutdown, false);
    check_drained(w);
}

static void do_expire(sl_worker_t *w)
{
    sl__shutdown_watch_fire(&w->shutdown, true);
}

static void close_any(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void worker_stop_loop(sl_worker_t *w)
{
    if (w->state == SL_WORKER_STOPPING || w->state == SL_WORKER_STOPPED)
        return;
    set_state(w, SL_WORKER_STOPPING);
    sl_service_t **svcs = w->server->services;
    for (size_t i = 0; i < w->server->n_services; i++)
        if (svcs[i]->kind == SL_SVC_LISTENING && svcs[i]->app.worker_stop)
            svcs[i]->app.worker_stop(svcs[i]->app_data, w);
    /* The application's per-worker state goes after the services that used it. */
    for (sl_cb_entry_t *e = w->server->on_worker_stop; e; e = e->next)
        ((sl_worker_cb)e->fn)(w, e->data);
    close_listeners(w);
    /* Deferred work (frees, write completions) runs now: the idle handle that would run it
     * is about to close. */
    while (w->deferred)
        on_defer_idle(&w->defer_idle);
    sl__stream_thread_cleanup();
    sl_timeout_thread_close();
    /* Whatever is still open (idle pooled connections, timers a finished task forgot) closes
     * now so the loop can end. */
    uv_walk(&w->loop, close_any, NULL);
    sl__server_worker_drained(w->server);
}

static void on_async(uv_async_t *h)
{
    sl_worker_t *w = h->data;
    pthread_mutex_lock(&w->post_lock);
    sl_posted_t *list = w->posted;
    w->posted = w->posted_tail = NULL;
    pthread_mutex_unlock(&w->post_lock);
    while (list) {
        sl_posted_t *p = list;
        list = p->next;
        p->fn(w, p->arg);
        free(p);
    }
    if (atomic_exchange(&w->cmd_drain, 0))
        do_drain(w);
    if (atomic_exchange(&w->cmd_expire, 0))
        do_expire(w);
    if (atomic_exchange(&w->cmd_stop, 0)) {
        /* Forced: close everything, whoever owns it. */
        worker_stop_loop(w);
        uv_walk(&w->loop, close_any, NULL);
    }
}

void sl__worker_cmd_drain(sl_worker_t *w)
{
    atomic_store(&w->cmd_drain, 1);
    uv_async_send(&w->async);
}

void sl__worker_cmd_expire(sl_worker_t *w)
{
    atomic_store(&w->cmd_expire, 1);
    uv_async_send(&w->async);
}

void sl__worker_cmd_stop(sl_worker_t *w)
{
    atomic_store(&w->cmd_stop, 1);
    uv_async_send(&w->async);
}

/* ---- lifecycle --------------------------------------------------------------------------- */

int sl__worker_init(sl_worker_t *w, sl_server_t *server, unsigned id)
{
    memset(w, 0, sizeof(*w));
    w->id = id;
    w->server = server;
    int rc = uv_loop_init(&w->loop);
    if (rc)
        return rc;
    uv_async_init(&w->loop, &w->async, on_async);
    w->async.data = w;
    uv_idle_init(&w->loop, &w->defer_idle);
    w->defer_idle.data = w;
    pthread_mutex_init(&w->post_lock, NULL);
    sl__shutdown_watch_init(&w->shutdown);
    w->state = SL_WORKER_STARTING;
    return 0;
}

static void start_services(sl_worker_t *w)
{
    sl_server_t *s = w->server;
    /* The application's per-worker state exists before any service can use it. */
    for (sl_cb_entry_t *e = s->on_worker_start; e; e = e->next)
        ((sl_worker_cb)e->fn)(w, e->data);
    for (size_t i = 0; i < s->n_services; i++) {
        sl_service_t *svc = s->services[i];
        if (svc->kind == SL_SVC_LISTENING) {
            if (svc->app.worker_start)
                svc->app.worker_start(svc->app_data, w);
            for (size_t e = 0; e < svc->n_endpoints; e++) {
                sl_endpoint_t *ep = &svc->endpoints[e];
                /* Worker k takes sockets k, k+N, k+2N... (more sockets than workers after an
                 * upgrade from a process with more threads: none may be left unaccepted). A
                 * unix socket has one descriptor (no SO_REUSEPORT): every worker accepts from
                 * it, whoever is free first (the others get EAGAIN). */
                bool shared = ep->kind == SL_EP_UDS;
                for (size_t f = shared ? 0 : w->id; f < ep->n_fds; f += shared ? 1 : s->n_workers) {
                    int rc = sl__listener_start(w, ep, ep->fds[f]);
                    if (rc && !w->start_error) {
                        SL_ERROR("%s: cannot listen on %s: %s", svc->name, ep->spec,
                                 uv_strerror(rc));
                        w->start_error = rc;
                    }
                }
            }
        }
    }
    for (size_t i = 0; i < w->n_tasks; i++) {
        sl_bg_task_t *t = &w->tasks[i];
        sl_worker_ref(w);
        t->service->bg_start(t->service->bg_data, t);
    }
}

static void *worker_main(void *arg)
{
    sl_worker_t *w = arg;
    current_worker = w;
    char name[16];
    snprintf(name, sizeof(name), "sluice-w%u", w->id);
    pthread_setname_np(pthread_self(), name);
    set_state(w, SL_WORKER_RUNNING);
    start_services(w);
    sl__server_worker_started(w->server);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    sl__stream_thread_cleanup();
    sl_timeout_thread_close();
    uv_run(&w->loop, UV_RUN_DEFAULT);
    sl__stream_free_thread_reqs();
    set_state(w, SL_WORKER_STOPPED);
    current_worker = NULL;
    return NULL;
}

int sl__worker_start(sl_worker_t *w)
{
    /* Signals are handled by the main thread only. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc)
        return -rc;
    w->thread_started = true;
    return 0;
}

void sl__worker_join(sl_worker_t *w)
{
    if (w->thread_started) {
        pthread_join(w->thread, NULL);
        w->thread_started = false;
    }
}

void sl__worker_release(sl_worker_t *w)
{
    /* Close whatever is left (never started, or stopped without running the loop). */
    uv_walk(&w->loop, close_any, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    uv_loop_close(&w->loop);
    pthread_mutex_destroy(&w->post_lock);
    free(w->tasks);
    sl_posted_t *p = w->posted;
    while (p) {
        sl_posted_t *n = p->next;
        free(p);
        p = n;
    }
    sl_deferred_t *d = w->deferred;
    while (d) {
        sl_deferred_t *n = d->next;
        free(d);
        d = n;
    }
}

/* ---- background tasks -------------------------------------------------------------------- */

uv_loop_t *sl_bg_task_loop(sl_bg_task_t *t)
{
    return &t->worker->loop;
}

sl_worker_t *sl_bg_task_worker(sl_bg_task_t *t)
{
    return t->worker;
}

sl_shutdown_watch_t *sl_bg_task_shutdown(sl_bg_task_t *t)
{
    return &t->worker->shutdown;
}

const char *sl_bg_task_name(const sl_bg_task_t *t)
{
    return t->service->name;
}

void *sl_bg_task_data(sl_bg_task_t *t)
{
    return t->service->bg_data;
}

void sl_bg_task_done(sl_bg_task_t *t)
{
    if (t->done)
        return;
    t->done = true;
    SL_DEBUG("background service %s finished", t->service->name);
    sl_worker_unref(t->worker);
}
