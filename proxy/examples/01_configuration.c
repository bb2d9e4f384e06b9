/* Lesson 1: configuration and lifecycle — load a config (-c) and print the effective
 * ServerConf, then serve a dummy service on 0.0.0.0:6143 that closes every connection. */
#include <stdio.h>

#define SL_LOG_TAG "01_configuration"
#include <sluice/sluice.h>

/* Rust's Debug rendering of Option<String>, which the lesson's expected output uses. */
static const char *opt_str(const char *s, char *buf, size_t cap)
{
    if (!s)
        return "None";
    snprintf(buf, cap, "Some(\"%s\")", s);
    return buf;
}

static const char *opt_long(long v, char *buf, size_t cap)
{
    if (v < 0)
        return "None";
    snprintf(buf, cap, "Some(%ld)", v);
    return buf;
}

static const char *str_list(char *const *l, size_t n, char *buf, size_t cap)
{
    size_t len = (size_t)snprintf(buf, cap, "[");
    for (size_t i = 0; i < n && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s\"%s\"", i ? ", " : "", l[i]);
    if (len < cap)
        snprintf(buf + len, cap - len, "]");
    return buf;
}

static void print_conf(const sl_server_conf_t *c)
{
    char b[512];
    SL_INFO("--- Configuration Loaded ---");
    SL_INFO("  version: %d", c->version);
    SL_INFO("  daemon: %s", c->daemon ? "true" : "false");
    SL_INFO("  error_log: %s", opt_str(c->error_log, b, sizeof(b)));
    SL_INFO("  pid_file: %s", c->pid_file);
    SL_INFO("  upgrade_sock: %s", c->upgrade_sock);
    SL_INFO("  user: %s", opt_str(c->user, b, sizeof(b)));
    SL_INFO("  group: %s", opt_str(c->group, b, sizeof(b)));
    SL_INFO("  threads: %d", c->threads);
    SL_INFO("  listener_tasks_per_fd: %d", c->listener_tasks_per_fd);
    SL_INFO("  work_stealing: %s", c->work_stealing ? "true" : "false");
    SL_INFO("  ca_file: %s", opt_str(c->ca_file, b, sizeof(b)));
    SL_INFO("  grace_period_seconds: %s", opt_long(c->grace_period_seconds, b, sizeof(b)));
    SL_INFO("  graceful_shutdown_timeout_seconds: %s",
            opt_long(c->graceful_shutdown_timeout_seconds, b, sizeof(b)));
    SL_INFO("  client_bind_to_ipv4: %s",
            str_list(c->client_bind_to_ipv4, c->n_client_bind_to_ipv4, b, sizeof(b)));
    SL_INFO("  client_bind_to_ipv6: %s",
            str_list(c->client_bind_to_ipv6, c->n_client_bind_to_ipv6, b, sizeof(b)));
    SL_INFO("  upstream_keepalive_pool_size: %zu", c->upstream_keepalive_pool_size);
    SL_INFO("  upstream_connect_offload_threadpools: %s",
            opt_long(c->upstream_connect_offload_threadpools, b, sizeof(b)));
    SL_INFO("  upstream_connect_offload_thread_per_pool: %s",
            opt_long(c->upstream_connect_offload_thread_per_pool, b, sizeof(b)));
    SL_INFO("  upstream_debug_ssl_keylog: %s", c->upstream_debug_ssl_keylog ? "true" : "false");
    SL_INFO("  max_retries: %d", c->max_retries);
    SL_INFO("----------------------------");
}

/* This lesson does not process traffic: every connection is closed at once. */
static void process_new(void *app, sl_stream_t *stream, sl_shutdown_watch_t *shutdown)
{
    sl_stream_finish(stream, false);
}

int main(int argc, char **argv)
{
    int code;
    sl_server_t *server = sl_server_from_args(argc, argv, &code);
    if (!server)
        return code;
    print_conf(sl_server_conf(server));
    sl_server_bootstrap(server);

    static const sl_server_app_t app = {.process_new = process_new};
    sl_service_t *service = sl_listening_service_new("ConfigDemo", &app, NULL);
    sl_service_add_tcp(service, "0.0.0.0:6143");
    sl_server_add_service(server, service);

    SL_INFO("Starting server. Verify the thread count in the logs above matches your YAML.");
    return sl_server_run_forever(server);
}
