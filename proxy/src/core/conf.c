/* Process configuration: Pingora's ServerConf keys, names and defaults. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "sluice/conf.h"
#include "util/cfg.h"
#include "util/mem.h"

static const char *const process_keys[] = {
    "version",
    "daemon",
    "error_log",
    "pid_file",
    "upgrade_sock",
    "user",
    "group",
    "threads",
    "listener_tasks_per_fd",
    "work_stealing",
    "ca_file",
    "grace_period_seconds",
    "graceful_shutdown_timeout_seconds",
    "client_bind_to_ipv4",
    "client_bind_to_ipv6",
    "upstream_keepalive_pool_size",
    "upstream_connect_offload_threadpools",
    "upstream_connect_offload_thread_per_pool",
    "upstream_debug_ssl_keylog",
    "max_retries",
    NULL,
};

void sl_server_conf_init(sl_server_conf_t *c)
{
    memset(c, 0, sizeof(*c));
    c->version = 0;
    c->pid_file = sl_xstrdup("/tmp/pingora.pid");
    c->upgrade_sock = sl_xstrdup("/tmp/pingora_upgrade.sock");
    c->threads = 1;
    c->listener_tasks_per_fd = 1;
    c->work_stealing = true;
    c->grace_period_seconds = -1;
    c->graceful_shutdown_timeout_seconds = -1;
    c->upstream_keepalive_pool_size = 128;
    c->upstream_connect_offload_threadpools = -1;
    c->upstream_connect_offload_thread_per_pool = -1;
    c->max_retries = 16;
}

void sl_server_conf_release(sl_server_conf_t *c)
{
    free(c->error_log);
    free(c->pid_file);
    free(c->upgrade_sock);
    free(c->user);
    free(c->group);
    free(c->ca_file);
    sl__cfg_free_str_list(c->client_bind_to_ipv4, c->n_client_bind_to_ipv4);
    sl__cfg_free_str_list(c->client_bind_to_ipv6, c->n_client_bind_to_ipv6);
    memset(c, 0, sizeof(*c));
}

static char *dup_or_null(const char *s)
{
    return s ? sl_xstrdup(s) : NULL;
}

static char **dup_list(char *const *l, size_t n)
{
    if (!l)
        return NULL;
    char **out = sl_xcalloc(n ? n : 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        out[i] = sl_xstrdup(l[i]);
    return out;
}

void sl_server_conf_copy(sl_server_conf_t *dst, const sl_server_conf_t *src)
{
    *dst = *src;
    dst->error_log = dup_or_null(src->error_log);
    dst->pid_file = dup_or_null(src->pid_file);
    dst->upgrade_sock = dup_or_null(src->upgrade_sock);
    dst->user = dup_or_null(src->user);
    dst->group = dup_or_null(src->group);
    dst->ca_file = dup_or_null(src->ca_file);
    dst->client_bind_to_ipv4 = dup_list(src->client_bind_to_ipv4, src->n_client_bind_to_ipv4);
    dst->client_bind_to_ipv6 = dup_list(src->client_bind_to_ipv6, src->n_client_bind_to_ipv6);
}

long sl_server_conf_grace_period(const sl_server_conf_t *c)
{
    return c->grace_period_seconds >= 0 ? c->grace_period_seconds : 300;
}

long sl_server_conf_shutdown_timeout(const sl_server_conf_t *c)
{
    return c->graceful_shutdown_timeout_seconds >= 0 ? c->graceful_shutdown_timeout_seconds : 5;
}

int sl__server_conf_from_tree(sl_server_conf_t *c, const cJSON *root, const char *const *extra_keys,
                              sl_error_t *err)
{
    int rc = sl__cfg_expect_object(root, "", err);
    if (rc)
        return rc;
    /* Unknown keys: anything that is neither ours nor listed by the caller. */
    size_t n_extra = 0;
    while (extra_keys && extra_keys[n_extra])
        n_extra++;
    size_t n_own = 0;
    while (process_keys[n_own])
        n_own++;
    const char **known = sl_xcalloc(n_own + n_extra + 1, sizeof(char *));
    for (size_t i = 0; i < n_own; i++)
        known[i] = process_keys[i];
    for (size_t i = 0; i < n_extra; i++)
        known[n_own + i] = extra_keys[i];
    rc = sl__cfg_check_keys(root, "", known, err);
    free(known);
    if (rc)
        return rc;

    long v;
    v = c->version;
    if ((rc = sl__cfg_get_int(root, "", "version", 0, INT_MAX, &v, err)))
        return rc;
    c->version = (int)v;
    if ((rc = sl__cfg_get_bool(root, "", "daemon", &c->daemon, err)) ||
        (rc = sl__cfg_get_str(root, "", "error_log", false, &c->error_log, err)) ||
        (rc = sl__cfg_get_str(root, "", "pid_file", false, &c->pid_file, err)) ||
        (rc = sl__cfg_get_str(root, "", "upgrade_sock", false, &c->upgrade_sock, err)) ||
        (rc = sl__cfg_get_str(root, "", "user", false, &c->user, err)) ||
        (rc = sl__cfg_get_str(root, "", "group", false, &c->group, err)) ||
        (rc = sl__cfg_get_str(root, "", "ca_file", false, &c->ca_file, err)) ||
        (rc = sl__cfg_get_bool(root, "", "work_stealing", &c->work_stealing, err)) ||
        (rc = sl__cfg_get_bool(root, "", "upstream_debug_ssl_keylog", &c->upstream_debug_ssl_keylog,
                               err)) ||
        (rc = sl__cfg_get_str_list(root, "", "client_bind_to_ipv4", &c->client_bind_to_ipv4,
                                   &c->n_client_bind_to_ipv4, err)) ||
        (rc = sl__cfg_get_str_list(root, "", "client_bind_to_ipv6", &c->client_bind_to_ipv6,
                                   &c->n_client_bind_to_ipv6, err)))
        return rc;
    v = c->threads;
    if ((rc = sl__cfg_get_int(root, "", "threads", 1, 1024, &v, err)))
        return rc;
    c->threads = (int)v;
    v = c->listener_tasks_per_fd;
    if ((rc = sl__cfg_get_int(root, "", "listener_tasks_per_fd", 1, 1024, &v, err)))
        return rc;
    c->listener_tasks_per_fd = (int)v;
    if ((rc = sl__cfg_get_int(root, "", "grace_period_seconds", 0, 86400 * 7,
                              &c->grace_period_seconds, err)) ||
        (rc = sl__cfg_get_int(root, "", "graceful_shutdown_timeout_seconds", 0, 86400,
                              &c->graceful_shutdown_timeout_seconds, err)) ||
        (rc = sl__cfg_get_int(root, "", "upstream_connect_offload_threadpools", 0, 1024,
                              &c->upstream_connect_offload_threadpools, err)) ||
        (rc = sl__cfg_get_int(root, "", "upstream_connect_offload_thread_per_pool", 0, 1024,
                              &c->upstream_connect_offload_thread_per_pool, err)))
        return rc;
    v = (long)c->upstream_keepalive_pool_size;
    if ((rc = sl__cfg_get_int(root, "", "upstream_keepalive_pool_size", 0, 1 << 20, &v, err)))
        return rc;
    c->upstream_keepalive_pool_size = (size_t)v;
    v = c->max_retries;
    if ((rc = sl__cfg_get_int(root, "", "max_retries", 0, 1000, &v, err)))
        return rc;
    c->max_retries = (int)v;
    return 0;
}

int sl_server_conf_load(sl_server_conf_t *c, const char *path, const char *const *extra_keys,
                        sl_error_t *err)
{
    cJSON *root = NULL;
    int rc = sl__cfg_load_file(path, &root, err);
    if (rc)
        return rc;
    sl_server_conf_t tmp;
    sl_server_conf_copy(&tmp, c);
    rc = sl__server_conf_from_tree(&tmp, root, extra_keys, err);
    cJSON_Delete(root);
    if (rc) {
        sl_server_conf_release(&tmp);
        return rc;
    }
    sl_server_conf_release(c);
    *c = tmp;
    return 0;
}
