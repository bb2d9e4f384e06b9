/* Data flow: informers (or the files source) fill the stores and call on_change -> a debounce
 * timer -> translate (pure) -> render (canonical JSON + hash) -> if the hash changed: validate
 * with the gateway's own parser -> publisher (PUT /config, or the output file); the leader also
 * brings Ingress status up to date. */
#define SL_LOG_TAG "watcher"
#include "controller.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "diag.h"
#include "files.h"
#include "healthz.h"
#include "informer.h"
#include "kube.h"
#include "lease.h"
#include "publish.h"
#include "render.h"
#include "sluice/log.h"
#include "status.h"
#include "translate.h"
#include "validate.h"
#include "util/mem.h"

typedef struct ctl {
    uv_loop_t *loop;
    wt_opts_t *o;
    wt_tr_opts_t tr;
    wt_objects_t objs;
    wt_http_t *http;
    wt_kube_t kube;
    bool have_kube;
    wt_informer_t *inf[WT_NKINDS];
    wt_files_t *files;
    wt_publisher_t *pub;
    wt_lease_t *lease;
    wt_status_t *status;
    wt_healthz_t *healthz;
    uv_timer_t debounce;
    uv_signal_t sig_term, sig_int, sig_hup;
    wt_diags_t last_diags;
    wt_validator_t validator;
    char last_hash[65];
    bool synced, stopping, first_applied;
    int exit_code;
} ctl_t;

/* ---- translate and publish ------------------------------------------------------------------ */

static void translate_now(ctl_t *c)
{
    uint64_t t0 = uv_hrtime();
    wt_diags_t d;
    wt_diags_init(&d);
    wt_config_t *cfg = wt_translate(&c->objs, &c->tr, &d);
    wt_diags_log_new(&c->last_diags, &d, "translate");
    wt_diags_free(&c->last_diags);
    c->last_diags = d;
    uint64_t t1 = uv_hrtime();
    wt_rendered_t r;
    wt_render_config(cfg, &r);
    uint64_t t2 = uv_hrtime();
    if (!strcmp(r.hash, c->last_hash)) {
        SL_DEBUG("config unchanged (%.12s; translate %.1f ms, render %.1f ms)", r.hash,
                 (double)(t1 - t0) / 1e6, (double)(t2 - t1) / 1e6);
        wt_rendered_free(&r);
        wt_config_free(cfg);
    } else {
        sl_error_t err = {0};
        size_t checked = 0, routes = cfg->routes.n, ups = cfg->upstreams.n;
        int rc = wt_validate(&c->validator, cfg, &checked, &err); /* takes cfg when valid */
        uint64_t t3 = uv_hrtime();
        memcpy(c->last_hash, r.hash, sizeof(c->last_hash));
        if (rc) {
            SL_ERROR("the translated config %.12s does not pass the gateway's checks (not "
                     "published): %s",
                     r.hash, err.msg);
            wt_config_free(cfg);
            wt_rendered_free(&r);
        } else {
            SL_INFO("config %.12s: %zu routes, %zu upstreams, %zu bytes (%.1f ms)", r.hash, routes,
                    ups, r.len, (double)(t3 - t0) / 1e6);
            SL_DEBUG("translate %.1f ms, render %.1f ms, validate %.1f ms (%zu items checked)",
                     (double)(t1 - t0) / 1e6, (double)(t2 - t1) / 1e6, (double)(t3 - t2) / 1e6,
                     checked);
            wt_publisher_submit(c->pub, &r);
        }
    }
    if (c->status && wt_lease_is_leader(c->lease))
        wt_status_sync(c->status);
}

static void on_debounce(uv_timer_t *t)
{
    ctl_t *c = t->data;
    if (c->synced && !c->stopping)
        translate_now(c);
}

static void changed(ctl_t *c)
{
    if (!c->synced || c->stopping)
        return;
    if (!uv_is_active((uv_handle_t *)&c->debounce))
        uv_timer_start(&c->debounce, on_debounce, c->o->debounce_ms, 0);
}

static void on_informer(void *arg, wt_kind_t kind, wt_inf_event_t ev)
{
    ctl_t *c = arg;
    if (ev == WT_INF_SYNCED && !c->synced) {
        for (int k = 0; k < WT_NKINDS; k++)
            if (c->inf[k] && !wt_informer_synced(c->inf[k]))
                return;
        c->synced = true;
        SL_INFO("initial sync done: %zu Ingresses, %zu IngressClasses, %zu Services, %zu "
                "EndpointSlices, %zu Secrets",
                c->objs.kinds[WT_INGRESS].n, c->objs.kinds[WT_INGRESSCLASS].n,
                c->objs.kinds[WT_SERVICE].n, c->objs.kinds[WT_ENDPOINTSLICE].n,
                c->objs.kinds[WT_SECRET].n);
        uv_timer_start(&c->debounce, on_debounce, 0, 0); /* the first config without delay */
        return;
    }
    changed(c);
}

static void on_files(void *arg)
{
    ctl_t *c = arg;
    if (!c->synced) {
        c->synced = true;
        uv_timer_start(&c->debounce, on_debounce, 0, 0);
        return;
    }
    changed(c);
}

static void on_applied(void *arg)
{
    ctl_t *c = arg;
    if (!c->first_applied)
        SL_INFO("first config applied: ready");
    c->first_applied = true;
}

static bool ready(void *arg)
{
    ctl_t *c = arg;
    return c->synced && wt_publisher_applied(c->pub);
}

static void on_leader(void *arg, bool leader)
{
    ctl_t *c = arg;
    if (!c->status)
        return;
    if (leader && c->synced)
        wt_status_sync(c->status);
    else if (!leader)
        wt_status_cancel(c->status);
}

/* ---- Kubernetes source ---------------------------------------------------------------------- */

static int kube_conf(ctl_t *c, wt_kube_conf_t *kc, sl_error_t *err)
{
    wt_opts_t *o = c->o;
    int rc;
    const char *env_kc = getenv("KUBECONFIG");
    if (o->kubeconfig)
        rc = wt_kube_conf_kubeconfig(kc, o->kubeconfig, err);
    else if (o->api_server) {
        memset(kc, 0, sizeof(*kc));
        kc->source = sl_xstrdup("flags");
        rc = 0;
    } else {
        rc = wt_kube_conf_incluster(kc, err);
        if (rc && env_kc && *env_kc && !strchr(env_kc, ':')) {
            SL_INFO("not in a cluster; using KUBECONFIG=%s", env_kc);
            rc = wt_kube_conf_kubeconfig(kc, env_kc, err);
        }
    }
    if (rc)
        return rc;
    if (o->api_server) {
        free(kc->server);
        size_t n = strlen(o->api_server);
        while (n && o->api_server[n - 1] == '/')
            n--;
        kc->server = sl_xstrndup(o->api_server, n);
    }
    if (o->token_file) {
        free(kc->token);
        kc->token = NULL;
        free(kc->token_file);
        kc->token_file = sl_xstrdup(o->token_file);
    }
    if (o->ca_file) {
        free(kc->tls.ca_file);
        free(kc->tls.ca_pem);
        kc->tls.ca_pem = NULL;
        kc->tls.ca_file = sl_xstrdup(o->ca_file);
    }
    return 0;
}

static char *election_namespace(ctl_t *c)
{
    if (c->o->election_namespace)
        return sl_xstrdup(c->o->election_namespace);
    const char *env = getenv("POD_NAMESPACE");
    if (env && *env)
        return sl_xstrdup(env);
    char *sa = wt_kube_sa_namespace();
    return sa ? sa : sl_xstrdup("default");
}

static char *identity(void)
{
    const char *env = getenv("POD_NAME");
    if (env && *env)
        return sl_xstrdup(env);
    char host[256] = "";
    if (gethostname(host, sizeof(host) - 1) != 0 || !*host)
        snprintf(host, sizeof(host), "sluice-watcher-%ld", (long)getpid());
    return sl_xstrdup(host);
}

static int start_kubernetes(ctl_t *c, sl_error_t *err)
{
    wt_kube_conf_t kc;
    if (kube_conf(c, &kc, err) != 0)
        return SL_ECONFIG;
    SL_INFO("API server %s (%s)%s", kc.server, kc.source,
            c->o->watch_namespace ? ", one namespace" : "");
    if (kc.tls.insecure)
        SL_WARN("the API server's certificate is not verified (insecure-skip-tls-verify)");
    wt_kube_init(&c->kube, c->http, &kc);
    c->have_kube = true;
    for (int k = 0; k < WT_NKINDS; k++) {
        if (k == WT_SECRET && !c->o->tls_certificates)
            continue; /* Secrets are read only when certificates are sent */
        wt_informer_opts_t io = {
            .kind = (wt_kind_t)k,
            .namespace = c->o->watch_namespace,
            .field_selector = k == WT_SECRET ? "type=kubernetes.io/tls" : NULL,
            .cb = on_informer,
            .arg = c,
        };
        c->inf[k] = wt_informer_new(c->loop, &c->kube, &c->objs.kinds[k], &io);
    }
    for (int k = 0; k < WT_NKINDS; k++)
        if (c->inf[k])
            wt_informer_start(c->inf[k]);
    if (c->o->update_status) {
        wt_status_opts_t so = {.publish_service = c->o->publish_service,
                               .publish_addresses = c->o->publish_status_address};
        c->status = wt_status_new(c->loop, &c->kube, &c->objs, &c->tr, &so);
        char *ns = election_namespace(c), *id = identity();
        wt_lease_opts_t lo = {
            .namespace = ns,
            .name = c->o->election_id,
            .identity = id,
            .duration_ms = c->o->lease_duration_ms,
            .renew_deadline_ms = c->o->renew_deadline_ms,
            .retry_ms = c->o->retry_period_ms,
            .on_change = on_leader,
            .arg = c,
        };
        c->lease = wt_lease_new(c->loop, &c->kube, &lo);
        free(ns);
        free(id);
        wt_lease_start(c->lease);
    }
    return 0;
}

/* ---- shutdown ------------------------------------------------------------------------------- */

static void close_rest(void *arg)
{
    ctl_t *c = arg;
    wt_lease_free(c->lease);
    c->lease = NULL;
    wt_publisher_free(c->pub);
    c->pub = NULL;
    wt_http_free(c->http);
    c->http = NULL;
    uv_close((uv_handle_t *)&c->debounce, NULL);
    uv_close((uv_handle_t *)&c->sig_term, NULL);
    uv_close((uv_handle_t *)&c->sig_int, NULL);
    uv_close((uv_handle_t *)&c->sig_hup, NULL);
}

static void stop(ctl_t *c)
{
    if (c->stopping)
        return;
    c->stopping = true;
    uv_timer_stop(&c->debounce);
    for (int k = 0; k < WT_NKINDS; k++) {
        wt_informer_free(c->inf[k]);
        c->inf[k] = NULL;
    }
    wt_files_free(c->files);
    c->files = NULL;
    wt_status_free(c->status);
    c->status = NULL;
    wt_healthz_stop(c->healthz);
    c->healthz = NULL;
    if (c->lease)
        wt_lease_stop(c->lease, 2000, close_rest, c);
    else
        close_rest(c);
}

static void on_signal(uv_signal_t *s, int signum)
{
    ctl_t *c = s->data;
    if (signum == SIGHUP) {
        if (c->files) {
            SL_INFO("SIGHUP: reading the manifests again");
            wt_files_rescan(c->files);
        }
        return;
    }
    if (c->stopping)
        return;
    SL_INFO("%s: stopping", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    stop(c);
}

/* ---- run ------------------------------------------------------------------------------------ */

int wt_controller_run(uv_loop_t *loop, wt_opts_t *o)
{
    ctl_t *c = sl_xcalloc(1, sizeof(*c));
    c->loop = loop;
    c->o = o;
    wt_tr_opts_init(&c->tr);
    c->tr.controller_class = o->controller_class;
    c->tr.ingress_class = o->ingress_class;
    c->tr.watch_without_class = o->watch_without_class;
    c->tr.default_backend = o->default_backend_service;
    c->tr.default_ssl_cert = o->default_ssl_certificate;
    c->tr.tls_certificates = o->tls_certificates;
    wt_objects_init(&c->objs);
    wt_diags_init(&c->last_diags);
    wt_validator_init(&c->validator);
    c->http = wt_http_new(loop);
    wt_publisher_opts_t po = {
        .push_url = o->push,
        .admin_token_file = o->admin_token_file,
        .output = o->output,
        .check_ms = o->sync_check_ms,
        .on_applied = on_applied,
        .arg = c,
    };
    c->pub = wt_publisher_new(loop, c->http, &po);
    uv_timer_init(loop, &c->debounce);
    c->debounce.data = c;
    uv_signal_init(loop, &c->sig_term);
    uv_signal_init(loop, &c->sig_int);
    uv_signal_init(loop, &c->sig_hup);
    c->sig_term.data = c->sig_int.data = c->sig_hup.data = c;
    uv_signal_start(&c->sig_term, on_signal, SIGTERM);
    uv_signal_start(&c->sig_int, on_signal, SIGINT);
    uv_signal_start(&c->sig_hup, on_signal, SIGHUP);
    SL_INFO("sluice-watcher: source %s, %s %s",
            o->source == WT_SOURCE_FILES ? "files" : "kubernetes",
            o->output ? "writing" : "pushing to", o->output ? o->output : o->push);

    sl_error_t err = {0};
    int rc = 0;
    if (o->healthz_listen) {
        c->healthz = wt_healthz_start(loop, o->healthz_listen, ready, c, &err);
        if (!c->healthz)
            rc = SL_ECONFIG;
    }
    if (!rc && o->source == WT_SOURCE_FILES) {
        c->files = wt_files_new(loop, o->manifests, &c->objs, on_files, c);
        rc = wt_files_start(c->files, &err);
        if (!rc && !c->synced)
            on_files(c); /* an empty directory is a (empty) config too */
    } else if (!rc) {
        rc = start_kubernetes(c, &err);
    }
    if (rc) {
        SL_ERROR("%s", err.msg);
        c->exit_code = 1;
        stop(c);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    int code = c->exit_code;
    if (c->have_kube)
        wt_kube_release(&c->kube);
    wt_objects_free(&c->objs);
    wt_diags_free(&c->last_diags);
    wt_validator_free(&c->validator);
    free(c);
    return code;
}
