/* Lesson 3: graceful shutdown — a batch job service running 20-second jobs. SIGTERM lets the
 * running job wrap up (10 s of cleanup, within grace_period_seconds = 10); SIGINT exits at
 * once and the job is abandoned. */
#define SL_LOG_TAG "03_graceful_shutdown"
#include <sluice/sluice.h>

/* JOB_MS / WRAP_UP_MS can be shortened for tests through the environment. */
#include <stdlib.h>

typedef struct batch {
    uv_timer_t timer;
    sl_shutdown_sub_t on_shutdown;
    sl_bg_task_t *task;
    int job_id;
    uint64_t job_ms, wrap_up_ms, pause_ms;
    enum { IDLE, RUNNING, WRAPPING_UP } state;
} batch_t;

static void next_job(batch_t *b);

static void on_closed(uv_handle_t *h)
{
    batch_t *b = h->data;
    SL_INFO("BatchJob Service has stopped cleanly.");
    sl_bg_task_done(b->task);
}

static void stop(batch_t *b)
{
    sl_shutdown_unsubscribe(&b->on_shutdown);
    uv_close((uv_handle_t *)&b->timer, on_closed);
}

static void on_wrapped_up(uv_timer_t *t)
{
    batch_t *b = t->data;
    SL_INFO("Job #%d completed gracefully during shutdown.", b->job_id);
    stop(b);
}

static void on_pause_over(uv_timer_t *t)
{
    next_job(t->data);
}

static void on_job_done(uv_timer_t *t)
{
    batch_t *b = t->data;
    SL_INFO("Job #%d completed successfully.", b->job_id);
    b->state = IDLE;
    uv_timer_start(&b->timer, on_pause_over, b->pause_ms, 0);
}

static void next_job(batch_t *b)
{
    if (sl_shutdown_requested(sl_bg_task_shutdown(b->task))) {
        SL_INFO("Shutdown requested. No new jobs will be started.");
        stop(b);
        return;
    }
    b->job_id++;
    b->state = RUNNING;
    SL_INFO("Starting Job #%d (simulated %llus duration)...", b->job_id,
            (unsigned long long)(b->job_ms / 1000));
    uv_timer_start(&b->timer, on_job_done, b->job_ms, 0);
}

static void on_shutdown(sl_shutdown_sub_t *sub)
{
    batch_t *b = sl_container_of(sub, batch_t, on_shutdown);
    if (b->state != RUNNING) {
        SL_INFO("Shutdown requested. No new jobs will be started.");
        uv_timer_stop(&b->timer);
        uv_close((uv_handle_t *)&b->timer, on_closed);
        return;
    }
    SL_WARN("Shutdown signal received while Job #%d is running!", b->job_id);
    SL_WARN("Finishing Job #%d before exiting...", b->job_id);
    b->state = WRAPPING_UP;
    uv_timer_start(&b->timer, on_wrapped_up, b->wrap_up_ms, 0);
}

static void start(void *data, sl_bg_task_t *task)
{
    batch_t *b = data;
    b->task = task;
    SL_INFO("BatchJob Service started. Waiting for jobs");
    uv_timer_init(sl_bg_task_loop(task), &b->timer);
    b->timer.data = b;
    sl_shutdown_subscribe(sl_bg_task_shutdown(task), &b->on_shutdown, on_shutdown);
    next_job(b);
}

static uint64_t env_ms(const char *name, uint64_t dflt)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return dflt;
    char *end;
    unsigned long long ms = strtoull(v, &end, 10);
    return *end ? dflt : ms;
}

int main(int argc, char **argv)
{
    int code;
    sl_server_t *server = sl_server_from_args(argc, argv, &code);
    if (!server)
        return code;
    /* The grace period: how long SIGTERM waits for work in flight. */
    sl_server_conf(server)->grace_period_seconds = 10;
    sl_server_bootstrap(server);

    static batch_t batch;
    batch.job_ms = env_ms("BATCH_JOB_MS", 20000);
    batch.wrap_up_ms = env_ms("BATCH_WRAP_UP_MS", 10000);
    batch.pause_ms = 1000;
    sl_server_add_service(server, sl_background_service_new("BatchJobService", start, &batch));

    SL_INFO("Server running. Send SIGTERM to trigger graceful shutdown (e.g. 'pkill -TERM -f "
            "03_graceful_shutdown').");
    return sl_server_run_forever(server);
}
