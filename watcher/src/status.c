/* Writing Ingress status. */
#define SL_LOG_TAG "status"
#include "sluice/log.h"
#include "status.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/mem.h"

#define RETRY_MS 1000

struct wt_status {
    uv_loop_t *loop;
    wt_kube_t *k;
    const wt_objects_t *objs;
    const wt_tr_opts_t *tr;
    char *publish_service, *publish_addresses;
    wt_status_opts_t o;
    char **queue; /* Ingress keys left to fix */
    size_t n_queue, next;
    cJSON *want; /* the addresses being written */
    wt_http_req_t *req;
    bool busy, again;
    uv_timer_t timer;
    bool warned_no_address;
};

static void step(wt_status_t *s);

static void add_address(cJSON *list, const char *a)
{
    unsigned char bin[16];
    bool ip = inet_pton(AF_INET, a, bin) == 1 || inet_pton(AF_INET6, a, bin) == 1;
    if (!ip && !wt_valid_host(a, false))
        return;
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, ip ? "ip" : "hostname", a);
    cJSON_AddItemToArray(list, e);
}

cJSON *wt_status_addresses(const wt_objects_t *objs, const wt_status_opts_t *o)
{
    cJSON *list = cJSON_CreateArray();
    if (o->publish_addresses) {
        char *copy = sl_xstrdup(o->publish_addresses), *save = NULL;
        for (char *a = strtok_r(copy, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
            while (*a == ' ')
                a++;
            if (*a)
                add_address(list, a);
        }
        free(copy);
        return list;
    }
    const wt_service_t *svc =
        o->publish_service ? wt_store_get(&objs->kinds[WT_SERVICE], o->publish_service) : NULL;
    if (!svc)
        return list;
    for (size_t i = 0; i < svc->n_lb; i++) {
        const char *a = svc->lb[i].ip ? svc->lb[i].ip : svc->lb[i].hostname;
        if (a)
            add_address(list, a);
    }
    if (cJSON_GetArraySize(list))
        return list;
    for (size_t i = 0; i < svc->n_external_ips; i++)
        if (svc->external_ips[i])
            add_address(list, svc->external_ips[i]);
    if (cJSON_GetArraySize(list))
        return list;
    if (svc->cluster_ip && strcmp(svc->cluster_ip, "None") != 0)
        add_address(list, svc->cluster_ip);
    return list;
}

static bool streq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

/* Whether an Ingress (model) already shows the addresses (ip/hostname only: other fields such
 * as ports are not ours to manage). */
static bool same_model_status(const wt_ingress_t *ing, const cJSON *want)
{
    if (ing->n_lb != (size_t)cJSON_GetArraySize(want))
        return false;
    for (size_t i = 0; i < ing->n_lb; i++) {
        const cJSON *b = cJSON_GetArrayItem(want, (int)i);
        if (!streq(ing->lb[i].ip, WT_STR(b, "ip")) ||
            !streq(ing->lb[i].hostname, WT_STR(b, "hostname")))
            return false;
    }
    return true;
}

static bool same_status(const cJSON *ing, const cJSON *want)
{
    const cJSON *have = WT_GET(ing, "status", "loadBalancer", "ingress");
    if (!have || cJSON_IsNull(have))
        return cJSON_GetArraySize(want) == 0;
    /* Compare only ip/hostname: other fields (ports) are not ours to manage. */
    if (cJSON_GetArraySize(have) != cJSON_GetArraySize(want))
        return false;
    for (int i = 0; i < cJSON_GetArraySize(want); i++) {
        const cJSON *a = cJSON_GetArrayItem(have, i), *b = cJSON_GetArrayItem(want, i);
        const char *ai = WT_STR(a, "ip"), *bi = WT_STR(b, "ip");
        const char *ah = WT_STR(a, "hostname"), *bh = WT_STR(b, "hostname");
        if ((ai || bi) && (!ai || !bi || strcmp(ai, bi)))
            return false;
        if ((ah || bh) && (!ah || !bh || strcmp(ah, bh)))
            return false;
    }
    return true;
}

static void clear_queue(wt_status_t *s)
{
    for (size_t i = 0; i < s->n_queue; i++)
        free(s->queue[i]);
    free(s->queue);
    s->queue = NULL;
    s->n_queue = s->next = 0;
}

static void on_timer(uv_timer_t *t)
{
    wt_status_sync(t->data);
}

static void on_put_done(wt_http_req_t *r, const wt_http_resp_t *resp, void *arg)
{
    wt_status_t *s = arg;
    s->req = NULL;
    const char *key = s->queue[s->next - 1];
    if (resp->status == 200) {
        SL_INFO("Ingress %s: status.loadBalancer updated", key);
    } else if (resp->status == 409) {
        SL_DEBUG("Ingress %s: changed meanwhile (409); trying again later", key);
        s->again = true;
    } else {
        char msg[256];
        if (resp->status)
            SL_WARN("Ingress %s: status update failed: HTTP %ld %s", key, resp->status,
                    wt_kube_status_message(resp->body, resp->len, msg, sizeof(msg)));
        else
            SL_WARN("Ingress %s: status update failed: %s", key,
                    resp->error ? resp->error : "no answer");
        if (resp->status == 401)
            wt_kube_token_stale(s->k);
        s->again = true;
    }
    step(s);
}

static void on_get_done(wt_http_req_t *r, const wt_http_resp_t *resp, void *arg)
{
    wt_status_t *s = arg;
    s->req = NULL;
    const char *key = s->queue[s->next - 1];
    cJSON *ing = resp->status == 200 ? cJSON_ParseWithLength(resp->body, resp->len) : NULL;
    if (!ing) {
        if (resp->status != 404) {
            SL_WARN("Ingress %s: cannot read it for a status update (HTTP %ld)", key, resp->status);
            s->again = true;
        }
        step(s);
        return;
    }
    if (same_status(ing, s->want)) {
        cJSON_Delete(ing);
        step(s);
        return;
    }
    cJSON *status = cJSON_GetObjectItemCaseSensitive(ing, "status");
    if (!cJSON_IsObject(status)) {
        cJSON_DeleteItemFromObjectCaseSensitive(ing, "status");
        status = cJSON_AddObjectToObject(ing, "status");
    }
    cJSON_DeleteItemFromObjectCaseSensitive(status, "loadBalancer");
    cJSON *lb = cJSON_AddObjectToObject(status, "loadBalancer");
    cJSON_AddItemToObject(lb, "ingress", cJSON_Duplicate(s->want, 1));
    char *body = cJSON_PrintUnformatted(ing);
    cJSON_Delete(ing);
    const char *slash = strchr(key, '/');
    char path[800];
    snprintf(path, sizeof(path), "/apis/networking.k8s.io/v1/namespaces/%.*s/ingresses/%s/status",
             (int)(slash - key), key, slash + 1);
    wt_kube_req_opts_t ko = {
        .method = "PUT",
        .path = path,
        .body = body,
        .body_len = strlen(body),
        .timeout_ms = 10000,
        .on_done = on_put_done,
        .arg = s,
    };
    s->req = wt_kube_request(s->k, &ko);
    free(body);
    if (!s->req) {
        s->again = true;
        step(s);
    }
}

/* The next Ingress of the queue: read it (the whole object, not our pruned copy), then write. */
static void step(wt_status_t *s)
{
    if (s->next >= s->n_queue) {
        bool again = s->again;
        s->again = false;
        s->busy = false;
        clear_queue(s);
        cJSON_Delete(s->want);
        s->want = NULL;
        if (again)
            uv_timer_start(&s->timer, on_timer, RETRY_MS, 0);
        return;
    }
    const char *key = s->queue[s->next++];
    const char *slash = strchr(key, '/');
    char path[800];
    snprintf(path, sizeof(path), "/apis/networking.k8s.io/v1/namespaces/%.*s/ingresses/%s",
             (int)(slash - key), key, slash + 1);
    wt_kube_req_opts_t ko = {.path = path, .timeout_ms = 10000, .on_done = on_get_done, .arg = s};
    s->req = wt_kube_request(s->k, &ko);
    if (!s->req) {
        s->again = true;
        step(s);
    }
}

void wt_status_cancel(wt_status_t *s)
{
    wt_http_cancel(s->req);
    s->req = NULL;
    uv_timer_stop(&s->timer);
    s->busy = s->again = false;
    clear_queue(s);
    cJSON_Delete(s->want);
    s->want = NULL;
}

void wt_status_sync(wt_status_t *s)
{
    if (s->busy) {
        s->again = true;
        return;
    }
    cJSON *want = wt_status_addresses(s->objs, &s->o);
    if (!cJSON_GetArraySize(want)) {
        if (!s->warned_no_address && (s->o.publish_service || s->o.publish_addresses))
            SL_WARN("no address to publish in Ingress status yet (%s)",
                    s->o.publish_service ? "the publish service has none" : "invalid addresses");
        s->warned_no_address = true;
        cJSON_Delete(want);
        return;
    }
    s->warned_no_address = false;
    const wt_store_t *ings = &s->objs->kinds[WT_INGRESS];
    s->queue = sl_xcalloc(ings->n ? ings->n : 1, sizeof(char *));
    WT_STORE_FOREACH(ings, e)
    {
        if (!strchr(e->key, '/') || !wt_ingress_is_ours(s->objs, s->tr, e->obj) ||
            same_model_status(e->obj, want))
            continue;
        s->queue[s->n_queue++] = sl_xstrdup(e->key);
    }
    if (!s->n_queue) {
        clear_queue(s);
        cJSON_Delete(want);
        return;
    }
    s->want = want;
    s->busy = true;
    step(s);
}

wt_status_t *wt_status_new(uv_loop_t *loop, wt_kube_t *k, const wt_objects_t *objs,
                           const wt_tr_opts_t *tr, const wt_status_opts_t *o)
{
    wt_status_t *s = sl_xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->k = k;
    s->objs = objs;
    s->tr = tr;
    s->publish_service = o->publish_service ? sl_xstrdup(o->publish_service) : NULL;
    s->publish_addresses = o->publish_addresses ? sl_xstrdup(o->publish_addresses) : NULL;
    s->o.publish_service = s->publish_service;
    s->o.publish_addresses = s->publish_addresses;
    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    return s;
}

static void on_closed(uv_handle_t *h)
{
    wt_status_t *s = h->data;
    clear_queue(s);
    cJSON_Delete(s->want);
    free(s->publish_service);
    free(s->publish_addresses);
    free(s);
}

void wt_status_free(wt_status_t *s)
{
    if (!s)
        return;
    wt_http_cancel(s->req);
    s->req = NULL;
    uv_close((uv_handle_t *)&s->timer, on_closed);
}
