/* Leader election on a Lease. */
#define SL_LOG_TAG "lease"
#include "sluice/log.h"
#include "lease.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "objects.h"
#include "util/mem.h"

typedef enum lease_state { LEASE_IDLE, LEASE_GETTING, LEASE_WRITING, LEASE_STOPPED } lease_state_t;

struct wt_lease {
    uv_loop_t *loop;
    wt_kube_t *k;
    wt_lease_opts_t o;
    char *ns, *name, *identity, *path, *collection;
    lease_state_t state;
    bool leader;
    wt_http_req_t *req;
    uv_timer_t timer;
    /* the last record seen */
    cJSON *record;       /* the whole Lease as last read or written */
    char seen_key[512];  /* holder + renewTime + resourceVersion */
    uint64_t seen_at;    /* uv_now when seen_key last changed */
    uint64_t last_renew; /* uv_now of our last successful write as leader */
    bool logged_holder;
    /* stopping */
    void (*done)(void *);
    void *done_arg;
    uv_timer_t stop_timer;
    int open_handles;
};

static void tick(wt_lease_t *l);

static const char *state_str(lease_state_t s)
{
    static const char *const names[] = {"idle", "getting", "writing", "stopped"};
    return names[s];
}

static void set_state(wt_lease_t *l, lease_state_t s)
{
    if (l->state != s)
        SL_TRACE("lease %s: %s -> %s", l->name, state_str(l->state), state_str(s));
    l->state = s;
}

void wt_micro_time(double t, char out[40])
{
    time_t s = (time_t)t;
    struct tm tm;
    gmtime_r(&s, &tm);
    long us = (long)((t - (double)s) * 1e6);
    if (us < 0)
        us = 0;
    if (us > 999999)
        us = 999999;
    snprintf(out, 40, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, us);
}

int wt_parse_micro_time(const char *s, double *t)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    int used = 0;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                     &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &used) != 6)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    double frac = 0;
    const char *p = s + used;
    if (*p == '.') {
        double scale = 0.1;
        for (p++; *p >= '0' && *p <= '9'; p++, scale /= 10)
            frac += (*p - '0') * scale;
    }
    if (*p != 'Z')
        return -1;
    *t = (double)timegm(&tm) + frac;
    return 0;
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_tick(uv_timer_t *t)
{
    tick(t->data);
}

static void schedule(wt_lease_t *l, uint64_t ms)
{
    if (l->state == LEASE_STOPPED)
        return;
    set_state(l, LEASE_IDLE);
    uv_timer_start(&l->timer, on_tick, ms, 0);
}

static void become(wt_lease_t *l, bool leader)
{
    if (l->leader == leader)
        return;
    l->leader = leader;
    if (leader)
        SL_INFO("%s is now the leader (Lease %s/%s)", l->identity, l->ns, l->name);
    else
        SL_WARN("%s is no longer the leader (Lease %s/%s)", l->identity, l->ns, l->name);
    if (l->o.on_change)
        l->o.on_change(l->o.arg, leader);
}

/* A leader that could not renew for the renew deadline steps down. */
static void check_deadline(wt_lease_t *l)
{
    if (l->leader && uv_now(l->loop) - l->last_renew > l->o.renew_deadline_ms) {
        SL_WARN("could not renew Lease %s/%s for %llu ms", l->ns, l->name,
                (unsigned long long)l->o.renew_deadline_ms);
        become(l, false);
    }
}

static void remember(wt_lease_t *l, cJSON *obj)
{
    const char *holder = WT_STR(obj, "spec", "holderIdentity");
    const char *renew = WT_STR(obj, "spec", "renewTime");
    const char *rv = WT_STR(obj, "metadata", "resourceVersion");
    char key[512];
    snprintf(key, sizeof(key), "%s|%s|%s", holder ? holder : "", renew ? renew : "", rv ? rv : "");
    if (strcmp(key, l->seen_key) != 0) {
        memcpy(l->seen_key, key, sizeof(key));
        l->seen_at = uv_now(l->loop);
    }
    cJSON_Delete(l->record);
    l->record = obj;
}

/* ---- writes --------------------------------------------------------------------------------- */

static void on_write_done(wt_http_req_t *r, const wt_http_resp_t *resp, void *arg)
{
    wt_lease_t *l = arg;
    l->req = NULL;
    if (l->state == LEASE_STOPPED)
        return;
    if (resp->status == 200 || resp->status == 201) {
        cJSON *obj = cJSON_ParseWithLength(resp->body, resp->len);
        if (obj) {
            remember(l, obj);
            l->last_renew = uv_now(l->loop);
            become(l, true);
        }
    } else if (resp->status == 409) {
        /* Someone else wrote it first (or our copy was stale): read it again. */
        SL_DEBUG("Lease %s/%s: conflict; reading it again", l->ns, l->name);
        cJSON_Delete(l->record);
        l->record = NULL;
        check_deadline(l);
    } else {
        char msg[256];
        if (resp->status)
            SL_WARN("Lease %s/%s: write failed: HTTP %ld %s", l->ns, l->name, resp->status,
                    wt_kube_status_message(resp->body, resp->len, msg, sizeof(msg)));
        else
            SL_WARN("Lease %s/%s: write failed: %s", l->ns, l->name,
                    resp->error ? resp->error : "no answer");
        if (resp->status == 401)
            wt_kube_token_stale(l->k);
        check_deadline(l);
    }
    schedule(l, l->o.retry_ms);
}

/* Writes the Lease with us as holder (create when obj is NULL). */
static void write_lease(wt_lease_t *l, const cJSON *current, bool acquire)
{
    char now[40];
    wt_micro_time(wall_now(), now);
    cJSON *obj = current ? cJSON_Duplicate(current, 1) : cJSON_CreateObject();
    if (!current) {
        cJSON_AddStringToObject(obj, "apiVersion", "coordination.k8s.io/v1");
        cJSON_AddStringToObject(obj, "kind", "Lease");
        cJSON *md = cJSON_AddObjectToObject(obj, "metadata");
        cJSON_AddStringToObject(md, "name", l->name);
        cJSON_AddStringToObject(md, "namespace", l->ns);
    }
    cJSON *spec = cJSON_GetObjectItemCaseSensitive(obj, "spec");
    if (!cJSON_IsObject(spec)) {
        cJSON_DeleteItemFromObjectCaseSensitive(obj, "spec");
        spec = cJSON_AddObjectToObject(obj, "spec");
    }
    double transitions = 0;
    const cJSON *tr = WT_GET(spec, "leaseTransitions");
    if (cJSON_IsNumber(tr))
        transitions = tr->valuedouble;
    const char *holder = WT_STR(spec, "holderIdentity");
    if (acquire && current && holder && *holder && strcmp(holder, l->identity))
        transitions++;
    cJSON_DeleteItemFromObjectCaseSensitive(spec, "holderIdentity");
    cJSON_DeleteItemFromObjectCaseSensitive(spec, "leaseDurationSeconds");
    cJSON_DeleteItemFromObjectCaseSensitive(spec, "renewTime");
    cJSON_DeleteItemFromObjectCaseSensitive(spec, "leaseTransitions");
    cJSON_AddStringToObject(spec, "holderIdentity", l->identity);
    cJSON_AddNumberToObject(spec, "leaseDurationSeconds",
                            (double)((l->o.duration_ms + 999) / 1000));
    cJSON_AddStringToObject(spec, "renewTime", now);
    cJSON_AddNumberToObject(spec, "leaseTransitions", transitions);
    if (acquire) {
        cJSON_DeleteItemFromObjectCaseSensitive(spec, "acquireTime");
        cJSON_AddStringToObject(spec, "acquireTime", now);
    }
    char *body = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    wt_kube_req_opts_t ko = {
        .method = current ? "PUT" : "POST",
        .path = current ? l->path : l->collection,
        .body = body,
        .body_len = strlen(body),
        .timeout_ms = (long)l->o.renew_deadline_ms / 2,
        .on_done = on_write_done,
        .arg = l,
    };
    set_state(l, LEASE_WRITING);
    l->req = wt_kube_request(l->k, &ko);
    free(body);
    if (!l->req)
        schedule(l, l->o.retry_ms);
}

/* ---- reads ---------------------------------------------------------------------------------- */

static void decide(wt_lease_t *l)
{
    const char *holder = WT_STR(l->record, "spec", "holderIdentity");
    const cJSON *dur = WT_GET(l->record, "spec", "leaseDurationSeconds");
    uint64_t duration_ms = cJSON_IsNumber(dur) && dur->valuedouble > 0
                               ? (uint64_t)(dur->valuedouble * 1000)
                               : l->o.duration_ms;
    if (holder && !strcmp(holder, l->identity)) {
        write_lease(l, l->record, !l->leader);
        return;
    }
    bool held = holder && *holder && uv_now(l->loop) < l->seen_at + duration_ms;
    if (held) {
        if (l->leader)
            become(l, false);
        if (!l->logged_holder) {
            char q[100];
            SL_INFO("Lease %s/%s is held by %s; waiting", l->ns, l->name,
                    wt_quote(q, sizeof(q), holder));
            l->logged_holder = true;
        }
        schedule(l, l->o.retry_ms);
        return;
    }
    l->logged_holder = false;
    write_lease(l, l->record, true);
}

static void on_get_done(wt_http_req_t *r, const wt_http_resp_t *resp, void *arg)
{
    wt_lease_t *l = arg;
    l->req = NULL;
    if (l->state == LEASE_STOPPED)
        return;
    if (resp->status == 404) {
        cJSON_Delete(l->record);
        l->record = NULL;
        write_lease(l, NULL, true);
        return;
    }
    cJSON *obj = resp->status == 200 ? cJSON_ParseWithLength(resp->body, resp->len) : NULL;
    if (!obj) {
        char msg[256];
        if (resp->status)
            SL_WARN("Lease %s/%s: read failed: HTTP %ld %s", l->ns, l->name, resp->status,
                    wt_kube_status_message(resp->body, resp->len, msg, sizeof(msg)));
        else
            SL_WARN("Lease %s/%s: read failed: %s", l->ns, l->name,
                    resp->error ? resp->error : "no answer");
        if (resp->status == 401)
            wt_kube_token_stale(l->k);
        check_deadline(l);
        schedule(l, l->o.retry_ms);
        return;
    }
    remember(l, obj);
    decide(l);
}

static void tick(wt_lease_t *l)
{
    if (l->state == LEASE_STOPPED)
        return;
    check_deadline(l);
    /* A leader renews from its own copy (one request); others read first. */
    if (l->leader && l->record) {
        write_lease(l, l->record, false);
        return;
    }
    wt_kube_req_opts_t ko = {
        .path = l->path,
        .timeout_ms = (long)l->o.retry_ms * 2,
        .on_done = on_get_done,
        .arg = l,
    };
    set_state(l, LEASE_GETTING);
    l->req = wt_kube_request(l->k, &ko);
    if (!l->req)
        schedule(l, l->o.retry_ms);
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

wt_lease_t *wt_lease_new(uv_loop_t *loop, wt_kube_t *k, const wt_lease_opts_t *o)
{
    wt_lease_t *l = sl_xcalloc(1, sizeof(*l));
    l->loop = loop;
    l->k = k;
    l->o = *o;
    if (!l->o.duration_ms)
        l->o.duration_ms = 15000;
    if (!l->o.renew_deadline_ms)
        l->o.renew_deadline_ms = 10000;
    if (!l->o.retry_ms)
        l->o.retry_ms = 2000;
    l->ns = sl_xstrdup(o->namespace);
    l->name = sl_xstrdup(o->name);
    l->identity = sl_xstrdup(o->identity);
    size_t n = strlen(l->ns) + strlen(l->name) + 64;
    l->path = sl_xmalloc(n);
    snprintf(l->path, n, "/apis/coordination.k8s.io/v1/namespaces/%s/leases/%s", l->ns, l->name);
    l->collection = sl_xmalloc(n);
    snprintf(l->collection, n, "/apis/coordination.k8s.io/v1/namespaces/%s/leases", l->ns);
    uv_timer_init(loop, &l->timer);
    uv_timer_init(loop, &l->stop_timer);
    l->timer.data = l->stop_timer.data = l;
    l->open_handles = 2;
    return l;
}

void wt_lease_start(wt_lease_t *l)
{
    SL_INFO("campaigning for Lease %s/%s as %s", l->ns, l->name, l->identity);
    tick(l);
}

bool wt_lease_is_leader(const wt_lease_t *l)
{
    return l && l->leader;
}

static void finish_stop(wt_lease_t *l)
{
    uv_timer_stop(&l->stop_timer);
    void (*done)(void *) = l->done;
    l->done = NULL;
    if (done)
        done(l->done_arg);
}

static void on_release_done(wt_http_req_t *r, const wt_http_resp_t *resp, void *arg)
{
    wt_lease_t *l = arg;
    l->req = NULL;
    if (resp->status == 200)
        SL_INFO("released Lease %s/%s", l->ns, l->name);
    else
        SL_WARN("could not release Lease %s/%s (HTTP %ld); it expires on its own", l->ns, l->name,
                resp->status);
    finish_stop(l);
}

static void on_stop_timeout(uv_timer_t *t)
{
    wt_lease_t *l = t->data;
    wt_http_cancel(l->req);
    l->req = NULL;
    SL_WARN("releasing Lease %s/%s timed out; it expires on its own", l->ns, l->name);
    finish_stop(l);
}

void wt_lease_stop(wt_lease_t *l, uint64_t timeout_ms, void (*done)(void *arg), void *arg)
{
    bool was_leader = l->leader && l->record;
    set_state(l, LEASE_STOPPED);
    uv_timer_stop(&l->timer);
    wt_http_cancel(l->req);
    l->req = NULL;
    l->done = done;
    l->done_arg = arg;
    l->leader = false;
    if (!was_leader) {
        finish_stop(l);
        return;
    }
    /* As client-go's ReleaseOnCancel: no holder, a 1-second duration. */
    cJSON *obj = cJSON_Duplicate(l->record, 1);
    cJSON *spec = cJSON_GetObjectItemCaseSensitive(obj, "spec");
    char now[40];
    wt_micro_time(wall_now(), now);
    cJSON_ReplaceItemInObjectCaseSensitive(spec, "holderIdentity", cJSON_CreateString(""));
    cJSON_ReplaceItemInObjectCaseSensitive(spec, "leaseDurationSeconds", cJSON_CreateNumber(1));
    cJSON_ReplaceItemInObjectCaseSensitive(spec, "renewTime", cJSON_CreateString(now));
    char *body = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    wt_kube_req_opts_t ko = {
        .method = "PUT",
        .path = l->path,
        .body = body,
        .body_len = strlen(body),
        .timeout_ms = (long)timeout_ms,
        .on_done = on_release_done,
        .arg = l,
    };
    l->req = wt_kube_request(l->k, &ko);
    free(body);
    if (!l->req) {
        finish_stop(l);
        return;
    }
    uv_timer_start(&l->stop_timer, on_stop_timeout, timeout_ms + 100, 0);
}

static void on_closed(uv_handle_t *h)
{
    wt_lease_t *l = h->data;
    if (--l->open_handles)
        return;
    cJSON_Delete(l->record);
    free(l->ns);
    free(l->name);
    free(l->identity);
    free(l->path);
    free(l->collection);
    free(l);
}

void wt_lease_free(wt_lease_t *l)
{
    if (!l)
        return;
    set_state(l, LEASE_STOPPED);
    wt_http_cancel(l->req);
    l->req = NULL;
    uv_close((uv_handle_t *)&l->timer, on_closed);
    uv_close((uv_handle_t *)&l->stop_timer, on_closed);
}
