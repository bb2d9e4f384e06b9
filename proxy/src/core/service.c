/* Services: listening (an app per accepted stream) and background (a task on a worker). */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "sluice/tls.h"
#include "util/mem.h"

#define SL_LOG_TAG "service"
#include "sluice/log.h"

sl_service_t *sl_listening_service_new(const char *name, const sl_server_app_t *app, void *app_data)
{
    sl_service_t *svc = sl_xcalloc(1, sizeof(*svc));
    svc->kind = SL_SVC_LISTENING;
    svc->name = sl_xstrdup(name ? name : "service");
    svc->app = *app;
    svc->app_data = app_data;
    return svc;
}

sl_service_t *sl_background_service_new(const char *name, sl_bg_start_fn start, void *data)
{
    sl_service_t *svc = sl_xcalloc(1, sizeof(*svc));
    svc->kind = SL_SVC_BACKGROUND;
    svc->name = sl_xstrdup(name ? name : "background");
    svc->bg_start = start;
    svc->bg_data = data;
    return svc;
}

static int add_endpoint(sl_service_t *svc, const char *spec, int perms)
{
    sl_error_t err;
    sl_endpoint_t ep;
    memset(&ep, 0, sizeof(ep));
    if (svc->kind != SL_SVC_LISTENING)
        return SL_ECONFIG;
    if (sl__endpoint_parse(&ep, spec, &err) != 0) {
        SL_ERROR("%s: %s", svc->name, err.msg);
        return SL_ECONFIG;
    }
    ep.spec = sl_xstrdup(spec);
    ep.perms = perms;
    ep.service = svc;
    svc->endpoints = sl_xrealloc(svc->endpoints, (svc->n_endpoints + 1) * sizeof(ep));
    svc->endpoints[svc->n_endpoints++] = ep;
    /* The array moved: endpoints' back-pointers are still the service, nothing else points in
     * until the server binds them. */
    return 0;
}

int sl_service_add_tls(sl_service_t *svc, const char *addr, sl_tls_settings_t *settings)
{
    int rc = sl_service_add_listen(svc, addr);
    if (rc == 0)
        svc->endpoints[svc->n_endpoints - 1].tls = settings;
    return rc;
}

int sl_service_add_tcp(sl_service_t *svc, const char *addr)
{
    if (strncmp(addr, "unix:", 5) == 0)
        return SL_ECONFIG;
    return add_endpoint(svc, addr, 0);
}

int sl_service_add_uds(sl_service_t *svc, const char *path, int perms)
{
    char spec[256];
    int n = snprintf(spec, sizeof(spec), "unix:%s", path);
    if (n < 0 || (size_t)n >= sizeof(spec))
        return SL_ECONFIG;
    return add_endpoint(svc, spec, perms);
}

int sl_service_add_listen(sl_service_t *svc, const char *spec)
{
    return add_endpoint(svc, spec, strncmp(spec, "unix:", 5) == 0 ? 0666 : 0);
}

const char *sl_service_name(const sl_service_t *svc)
{
    return svc->name;
}

void *sl_service_app_data(sl_service_t *svc)
{
    return svc->app_data;
}

int sl_service_bound_port(const sl_service_t *svc, size_t i)
{
    if (i >= svc->n_endpoints || svc->endpoints[i].kind != SL_EP_TCP)
        return -1;
    return svc->endpoints[i].bound_port;
}
