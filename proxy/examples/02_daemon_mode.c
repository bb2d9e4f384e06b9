/* Lesson 2: daemon mode — a heartbeat background service that logs "Beep..." every second.
 * With `daemon: true` (or -d) the process detaches, writes pid_file and logs to error_log. */
#include <stdio.h>
#include <unistd.h>

#define SL_LOG_TAG "02_daemon_mode"
#include <sluice/sluice.h>

typedef struct heartbeat {
    uv_timer_t timer;
    sl_shutdown_sub_t on_shutdown;
    sl_bg_task_t *task;
} heartbeat_t;

static void on_tick(uv_timer_t *t)
{
    SL_INFO("Beep... (PID: %ld)", (long)getpid());
}

static void on_closed(uv_handle_t *h)
{
    heartbeat_t *hb = h->data;
    sl_bg_task_done(hb->task);
}

static void on_shutdown(sl_shutdown_sub_t *sub)
{
    heartbeat_t *hb = sl_container_of(sub, heartbeat_t, on_shutdown);
    SL_INFO("Shutdown signal received. Stopping heartbeat.");
    uv_close((uv_handle_t *)&hb->timer, on_closed);
}

static void start(void *data, sl_bg_task_t *task)
{
    heartbeat_t *hb = data;
    hb->task = task;
    SL_INFO("Heartbeat service started. PID: %ld", (long)getpid());
    uv_timer_init(sl_bg_task_loop(task), &hb->timer);
    hb->timer.data = hb;
    uv_timer_start(&hb->timer, on_tick, 0, 1000);
    sl_shutdown_subscribe(sl_bg_task_shutdown(task), &hb->on_shutdown, on_shutdown);
}

int main(int argc, char **argv)
{
    int code;
    sl_server_t *server = sl_server_from_args(argc, argv, &code);
    if (!server)
        return code;
    sl_server_bootstrap(server);

    const sl_server_conf_t *conf = sl_server_conf(server);
    if (conf->daemon) {
        printf("Preparing to daemonize. Logs will be redirected to: %s\n",
               conf->error_log ? conf->error_log : "(none)");
        printf("Check the PID file at: %s\n", conf->pid_file);
    } else {
        printf("Running in foreground mode. Pass '-d' or use config file to daemonize.\n");
    }
    fflush(stdout);

    static heartbeat_t heartbeat;
    sl_server_add_service(server, sl_background_service_new("Heartbeat", start, &heartbeat));
    return sl_server_run_forever(server);
}
