/* Unix socket listeners: one descriptor, accepted from by every worker (a busy worker does not
 * hold the others' connections back). */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "sluice/server.h"
#include "sluice/stream.h"

#define THREADS     2
#define CONNECTIONS 6

typedef struct uds_test {
    sl_server_t *server;
    char path[108];
    _Atomic int accepted[THREADS];
    _Atomic int total;
    pthread_t client;
} uds_test_t;

static void process_new(void *data, sl_stream_t *stream, sl_shutdown_watch_t *shutdown)
{
    uds_test_t *t = data;
    unsigned id = sl_worker_id(sl_stream_worker(stream));
    atomic_fetch_add(&t->accepted[id], 1);
    if (atomic_fetch_add(&t->total, 1) == 0)
        usleep(300 * 1000); /* the first worker to accept is busy for a while */
    sl_stream_finish(stream, false);
}

static void *client(void *arg)
{
    uds_test_t *t = arg;
    struct sockaddr_un a;
    memset(&a, 0, sizeof(a));
    a.sun_family = AF_UNIX;
    memcpy(a.sun_path, t->path, strlen(t->path) + 1);
    for (int i = 0; i < CONNECTIONS; i++) {
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
            usleep(20 * 1000);
        if (fd >= 0)
            close(fd);
    }
    for (int i = 0; i < 200 && atomic_load(&t->total) < CONNECTIONS; i++)
        usleep(10 * 1000);
    sl_server_shutdown(t->server);
    return NULL;
}

static int started(sl_server_t *server, void *data, sl_error_t *err)
{
    uds_test_t *t = data;
    return pthread_create(&t->client, NULL, client, t) == 0 ? 0 : -1;
}

Test(uds_listener, every_worker_accepts, .timeout = 30)
{
    static uds_test_t t;
    memset(&t, 0, sizeof(t));
    snprintf(t.path, sizeof(t.path), "/tmp/sl_uds_test_%ld.sock", (long)getpid());
    sl_server_conf_t conf;
    sl_server_conf_init(&conf);
    conf.threads = THREADS;
    conf.grace_period_seconds = 5;
    sl_opt_t opt;
    memset(&opt, 0, sizeof(opt));
    cr_assert_eq(sl_server_new_with_conf(&opt, &conf, &t.server), 0);
    sl_server_conf_release(&conf);
    sl_server_bootstrap(t.server);
    static const sl_server_app_t app = {.process_new = process_new};
    sl_service_t *svc = sl_listening_service_new("uds", &app, &t);
    cr_assert_eq(sl_service_add_uds(svc, t.path, 0600), 0);
    sl_server_add_service(t.server, svc);
    sl_server_on_start(t.server, started, &t);

    cr_assert_eq(sl_server_run_forever(t.server), 0);
    pthread_join(t.client, NULL);

    cr_assert_eq(atomic_load(&t.total), CONNECTIONS);
    for (int i = 0; i < THREADS; i++)
        cr_assert_gt(atomic_load(&t.accepted[i]), 0, "worker %d accepted nothing", i);
    cr_assert_neq(access(t.path, F_OK), 0, "the socket file is removed at exit");
}
