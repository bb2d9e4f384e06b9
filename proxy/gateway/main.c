/* The sluice binary: the declarative gateway of SPEC §3-§5 on the library. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL_LOG_TAG "sluice"
#include <sluice/sluice.h>

#include "core/core.h"
#include "gateway/runtime.h"
#include "util/cfg.h"

/* Built-in defaults (SPEC §3): HTTP on 127.0.0.1:8080, admin on 127.0.0.1:10254, no routes. */
static const char default_doc[] =
    "{\"listeners\": [{\"name\": \"web\", \"listen\": \"127.0.0.1:8080\"}]}";

typedef struct loaded {
    sl_server_conf_t conf;
    gw_config_t *gw;
    cJSON *doc;
} loaded_t;

static int load(const char *path, loaded_t *out, sl_error_t *err)
{
    cJSON *root = NULL;
    int rc = path ? sl__cfg_load_file(path, &root, err)
                  : sl__cfg_parse(default_doc, strlen(default_doc), SL_CFG_JSON, 1000, &root, err);
    if (rc)
        return rc;
    sl_server_conf_init(&out->conf);
    /* sluice's own file names; a config can still choose Pingora's. */
    free(out->conf.pid_file);
    free(out->conf.upgrade_sock);
    out->conf.pid_file = strdup("/tmp/sluice.pid");
    out->conf.upgrade_sock = strdup("/tmp/sluice_upgrade.sock");
    out->conf.grace_period_seconds = 30;
    rc = sl__server_conf_from_tree(&out->conf, root, gw_top_keys, err);
    cJSON *resolved = cJSON_Duplicate(root, 1);
    if (!cJSON_GetObjectItemCaseSensitive(resolved, "listeners")) {
        /* No listeners in the file: the built-in one (a process-keys-only file still serves). */
        cJSON *defaults = cJSON_Parse(default_doc);
        cJSON_AddItemToObject(resolved, "listeners",
                              cJSON_DetachItemFromObjectCaseSensitive(defaults, "listeners"));
        cJSON_Delete(defaults);
    }
    if (!rc)
        rc = gw_discovery_resolve(resolved, err);
    if (!rc)
        rc = gw_config_parse(resolved, &out->gw, err); /* takes resolved */
    else
        cJSON_Delete(resolved);
    if (!rc && out->gw->n_listeners == 0) {
        rc = sl_error_set(err, SL_ECONFIG, "listeners: at least one listener is needed");
        gw_config_release(out->gw);
        out->gw = NULL;
    }
    if (rc) {
        sl_server_conf_release(&out->conf);
        cJSON_Delete(root);
        return rc;
    }
    out->doc = root;
    return 0;
}

static int on_start(sl_server_t *server, void *data, sl_error_t *err)
{
    gateway_t *gw = data;
    int rc = gw_admin_start(gw, sl_server_main_loop(server), err);
    if (rc)
        return rc;
    gw_discovery_sync(gw, sl_server_main_loop(server));
    gw->ready = true;
    return 0;
}

static void on_reload(sl_server_t *server, void *data)
{
    gw_reload_file(data);
}

static void on_stop(sl_server_t *server, void *data)
{
    gateway_t *gw = data;
    gw_admin_stop(gw);
    gw_discovery_stop(gw);
}

int main(int argc, char **argv)
{
    sl_log_init_from_env();
    sl_opt_t opt;
    if (sl_opt_parse(&opt, argc, argv) != 0)
        return 2;
    if (opt.help || opt.version) {
        if (opt.help)
            sl_opt_usage(argv[0]);
        else
            printf("%s\n", sl_version());
        return 0;
    }
    loaded_t l = {0};
    sl_error_t err = {0};
    if (load(opt.conf, &l, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    if (opt.test) {
        printf("configuration OK\n");
        gw_config_release(l.gw);
        sl_server_conf_release(&l.conf);
        cJSON_Delete(l.doc);
        return 0;
    }
    sl_server_t *server;
    sl_server_new_with_conf(&opt, &l.conf, &server);
    sl_server_conf_release(&l.conf);
    sl_server_bootstrap(server);
    gateway_t *gw = gw_new(server, l.gw, l.doc, opt.conf);
    cJSON_Delete(l.doc);
    if (gw_add_services(gw, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    sl_server_on_start(server, on_start, gw);
    sl_server_on_reload(server, on_reload, gw);
    sl_server_on_stop(server, on_stop, gw);
    int code = sl_server_run_forever(server);
    gw_free(gw);
    return code;
}
