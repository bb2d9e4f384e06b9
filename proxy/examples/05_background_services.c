/* Lesson 5: background services and shared state — a TCP service on 0.0.0.0:6145 counts
 * visitors in an atomic shared with a background exporter that logs the count every 2 s. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#define SL_LOG_TAG "05_background_services"
#include <sluice/sluice.h>

/* Shared by both services; relaxed ordering is enough for a counter nobody synchronises on. */
typedef struct app_state {
    atomic_size_t connection_count;
} app_state_t;

typedef struct visit {
    char msg[64];
} visit_t;

static void on_written(sl_stream_t *s, int status, void *arg)
{
    free(arg);
    sl_stream_finish(s, false); /* close the connection at once */
}

static void process_new(void *data, sl_stream_t *stream, sl_shutdown_watch_t *shutdown)
{
    app_state_t *state = data;
    size_t count = atomic_fetch_add_explicit(&state->connection_count, 1, memory_order_relaxed) + 1;
    SL_INFO("Traffic: New connection handled. Count is now %zu", count);
    visit_t *v = malloc(sizeof(*v));
    if (!v) {
        sl_stream_finish(stream, false);
        return;
    }
    int n = snprintf(v->msg, sizeof(v->msg), "Hello! You are visitor #%zu\n", count);
    uv_buf_t buf = uv_buf_init(v->msg, (unsigned)n);
    if (sl_stream_write(stream, &buf, 1, on_written, v) != 0) {
        free(v);
        sl_stream_finish(stream, false);
    }
}

typedef struct exporter {
    app_state_t *state;
    uv_timer_t timer;
    sl_shutdown_sub_t on_shutdown;
    sl_bg_task_t *task;
} exporter_t;

static void on_tick(uv_timer_t *t)
{
    exporter_t *e = t->data;
    SL_INFO("Exporter: Current Total Connections: %zu",
            atomic_load_explicit(&e->state->connection_count, memory_order_relaxed));
}

static void on_closed(uv_handle_t *h)
{
    exporter_t *e = h->data;
    sl_bg_task_done(e->task);
}

static void on_shutdown(sl_shutdown_sub_t *sub)
{
    exporter_t *e = sl_container_of(sub, exporter_t, on_shutdown);
    SL_INFO("Exporter: Shutdown requested.");
    uv_close((uv_handle_t *)&e->timer, on_closed);
}

static void exporter_start(void *data, sl_bg_task_t *task)
{
    exporter_t *e = data;
    e->task = task;
    SL_INFO("Exporter: Service started.");
    uv_timer_init(sl_bg_task_loop(task), &e->timer);
    e->timer.data = e;
    uv_timer_start(&e->timer, on_tick, 2000, 2000);
    sl_shutdown_subscribe(sl_bg_task_shutdown(task), &e->on_shutdown, on_shutdown);
}

int main(int argc, char **argv)
{
    int code;
    sl_server_t *server = sl_server_from_args(argc, argv, &code);
    if (!server)
        return code;
    sl_server_bootstrap(server);

    static app_state_t state;
    static const sl_server_app_t traffic_app = {.process_new = process_new};
    sl_service_t *traffic = sl_listening_service_new("Traffic", &traffic_app, &state);
    sl_service_add_tcp(traffic, "0.0.0.0:6145");

    static exporter_t exporter = {.state = &state};
    sl_service_t *bg = sl_background_service_new("MetricExporter", exporter_start, &exporter);

    sl_server_add_service(server, traffic);
    sl_server_add_service(server, bg);

    SL_INFO("Server started. Traffic on port 6145. Metrics in logs.");
    return sl_server_run_forever(server);
}
