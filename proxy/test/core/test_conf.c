/* Process configuration (Pingora's ServerConf) and the command line. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sluice/conf.h"

static char *write_tmp(const char *suffix, const char *text)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/sl_conf_test_XXXXXX%s", suffix);
    int fd = mkstemps(path, (int)strlen(suffix));
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

Test(conf, pingora_defaults)
{
    sl_server_conf_t c;
    sl_server_conf_init(&c);
    cr_assert_eq(c.threads, 1);
    cr_assert_str_eq(c.pid_file, "/tmp/pingora.pid");
    cr_assert_str_eq(c.upgrade_sock, "/tmp/pingora_upgrade.sock");
    cr_assert_null(c.error_log);
    cr_assert_eq(c.upstream_keepalive_pool_size, 128);
    cr_assert_eq(c.max_retries, 16);
    cr_assert(c.work_stealing);
    cr_assert_eq(sl_server_conf_grace_period(&c), 300);
    cr_assert_eq(sl_server_conf_shutdown_timeout(&c), 5);
    sl_server_conf_release(&c);
}

Test(conf, load_lesson_01_yaml)
{
    char *p = write_tmp(".yaml", "---\nversion: 1\nthreads: 2\npid_file: \"/tmp/x.pid\"\n"
                                 "upgrade_sock: \"/tmp/u.sock\"\nerror_log: \"/tmp/e.log\"\n"
                                 "grace_period_seconds: 10\nclient_bind_to_ipv4: [\"10.0.0.1\"]\n");
    sl_server_conf_t c;
    sl_server_conf_init(&c);
    sl_error_t err = {0};
    cr_assert_eq(sl_server_conf_load(&c, p, NULL, &err), 0, "%s", err.msg);
    unlink(p);
    cr_assert_eq(c.version, 1);
    cr_assert_eq(c.threads, 2);
    cr_assert_str_eq(c.pid_file, "/tmp/x.pid");
    cr_assert_str_eq(c.error_log, "/tmp/e.log");
    cr_assert_eq(c.grace_period_seconds, 10);
    cr_assert_eq(c.n_client_bind_to_ipv4, 1);
    cr_assert_str_eq(c.client_bind_to_ipv4[0], "10.0.0.1");
    sl_server_conf_t copy;
    sl_server_conf_copy(&copy, &c);
    sl_server_conf_release(&c);
    cr_assert_str_eq(copy.client_bind_to_ipv4[0], "10.0.0.1", "copies are deep");
    sl_server_conf_release(&copy);
}

Test(conf, load_json)
{
    char *p = write_tmp(".json", "{\"threads\": 3, \"daemon\": false}");
    sl_server_conf_t c;
    sl_server_conf_init(&c);
    sl_error_t err = {0};
    cr_assert_eq(sl_server_conf_load(&c, p, NULL, &err), 0, "%s", err.msg);
    unlink(p);
    cr_assert_eq(c.threads, 3);
    sl_server_conf_release(&c);
}

static void load_fails(const char *text, const char *const *extra, const char *msg)
{
    char *p = write_tmp(".yaml", text);
    sl_server_conf_t c;
    sl_server_conf_init(&c);
    sl_error_t err = {0};
    int rc = sl_server_conf_load(&c, p, extra, &err);
    unlink(p);
    cr_assert_eq(rc, SL_ECONFIG, "expected failure for %s", text);
    cr_assert(strstr(err.msg, msg), "\"%s\" lacks \"%s\"", err.msg, msg);
    /* The defaults survive a failed load. */
    cr_assert_eq(c.threads, 1);
    sl_server_conf_release(&c);
}

Test(conf, errors_name_the_key)
{
    load_fails("threads: two\n", NULL, "threads: expected an integer, got string \"two\"");
    load_fails("threads: 0\n", NULL, "threads: 0 is out of range");
    load_fails("daemon: \"yes\"\n", NULL, "daemon: expected a boolean");
    load_fails("thread: 2\n", NULL, "thread: unknown key (did you mean \"threads\"?)");
    load_fails("routes: []\n", NULL, "routes: unknown key");
    load_fails("pid_file: \"\"\n", NULL, "pid_file: must not be empty");
    load_fails("- a\n- b\n", NULL, "(top level): expected a mapping, got list");
    load_fails("threads: [1\n", NULL, "invalid YAML");
}

Test(conf, extra_keys_are_left_to_the_caller)
{
    static const char *const extra[] = {"routes", NULL};
    char *p = write_tmp(".yaml", "threads: 2\nroutes: []\n");
    sl_server_conf_t c;
    sl_server_conf_init(&c);
    sl_error_t err = {0};
    cr_assert_eq(sl_server_conf_load(&c, p, extra, &err), 0, "%s", err.msg);
    unlink(p);
    sl_server_conf_release(&c);
}

Test(conf, missing_file)
{
    sl_server_conf_t c;
    sl_server_conf_init(&c);
    sl_error_t err = {0};
    cr_assert_eq(sl_server_conf_load(&c, "/nonexistent/x.yaml", NULL, &err), SL_ECONFIG);
    cr_assert_str_eq(err.msg, "cannot open /nonexistent/x.yaml: No such file or directory");
    sl_server_conf_release(&c);
}

Test(opt, flags)
{
    sl_opt_t o;
    char *argv[] = {"sluice", "-c", "a.yaml", "-d", "-t", "-u", NULL};
    cr_assert_eq(sl_opt_parse(&o, 6, argv), 0);
    cr_assert_str_eq(o.conf, "a.yaml");
    cr_assert(o.daemon && o.test && o.upgrade);
    char *argv2[] = {"sluice", "--conf=b.json", "--version", NULL};
    cr_assert_eq(sl_opt_parse(&o, 3, argv2), 0);
    cr_assert_str_eq(o.conf, "b.json");
    cr_assert(o.version);
}

Test(opt, usage_errors, .init = cr_redirect_stderr)
{
    sl_opt_t o;
    char *argv[] = {"sluice", "-c", NULL};
    cr_assert_eq(sl_opt_parse(&o, 2, argv), SL_EPARSE);
    char *argv2[] = {"sluice", "--bogus", NULL};
    cr_assert_eq(sl_opt_parse(&o, 2, argv2), SL_EPARSE);
}
