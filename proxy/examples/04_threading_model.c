/* Lesson 4: threading models — two background services on a shared-nothing server with two
 * worker threads; each reports the OS thread it runs on, which never changes. */
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SL_LOG_TAG "04_threading_model"
#include <sluice/sluice.h>

typedef struct reporter {
    uv_timer_t timer;
    sl_shutdown_sub_t on_shutdown;
    sl_bg_task_t *task;
} reporter_t;

static void on_tick(uv_timer_t *t)
{
    reporter_t *r = t->data;
    char name[16] = "unnamed";
    pthread_getname_np(pthread_self(), name, sizeof(name));
    SL_INFO("I am running on thread: ThreadId(%ld) (%s, worker %u, BG %s)",
            (long)syscall(SYS_gettid), name, sl_worker_id(sl_bg_task_worker(r->task)),
            sl_bg_task_name(r->task));
}

static void on_closed(uv_handle_t *h)
{
    reporter_t *r = h->data;
    sl_bg_task_done(r->task);
}

static void on_shutdown(sl_shutdown_sub_t *sub)
{
    reporter_t *r = sl_container_of(sub, reporter_t, on_shutdown);
    uv_close((uv_handle_t *)&r->timer, on_closed);
}

static void start(void *data, sl_bg_task_t *task)
{
    reporter_t *r = data;
    r->task = task;
    SL_INFO("ThreadReporter started.");
    uv_timer_init(sl_bg_task_loop(task), &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, on_tick, 0, 1000);
    sl_shutdown_subscribe(sl_bg_task_shutdown(task), &r->on_shutdown, on_shutdown);
}

int main(int argc, char **argv)
{
    int code;
    sl_server_t *server = sl_server_from_args(argc, argv, &code);
    if (!server)
        return code;
    /* Two shared-nothing workers: each runs its own event loop on its own thread. */
    sl_server_conf_t *conf = sl_server_conf(server);
    conf->threads = 2;
    conf->work_stealing = false;
    sl_server_bootstrap(server);

    static reporter_t a, b;
    sl_server_add_service(server, sl_background_service_new("Reporter-A", start, &a));
    sl_server_add_service(server, sl_background_service_new("Reporter-B", start, &b));

    SL_INFO("Server starting with work_stealing = False.");
    return sl_server_run_forever(server);
}
