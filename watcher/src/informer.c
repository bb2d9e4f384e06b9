/* List and watch of one kind. */
#define SL_LOG_TAG "informer"
#include "sluice/log.h"
#include "informer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/mem.h"

#define DEFAULT_PAGE    500
#define MAX_LIST_PAGE   (256u << 20)
#define LIST_TIMEOUT_MS 60000
#define BACKOFF_BASE_MS 250
#define BACKOFF_MAX_MS  10000
#define WATCH_MIN_S     300
#define WATCH_SPREAD_S  300

typedef enum inf_state {
    INF_IDLE,
    INF_LISTING,
    INF_WATCHING,
    INF_WAITING,
    INF_STOPPED
} inf_state_t;

struct wt_informer {
    uv_loop_t *loop;
    wt_kube_t *k;
    wt_store_t *store;
    wt_store_t pending; /* the list being read, page by page */
    wt_informer_opts_t o;
    char *namespace, *field_selector;
    const wt_kind_info_t *info;
    inf_state_t state;
    wt_http_req_t *req;
    uv_timer_t timer;
    char rv[160];
    char *cont;       /* continue token of the next page */
    unsigned attempt; /* failures in a row (backoff) */
    bool synced;
    bool relist;                   /* the watch ended with 410 */
    bool watch_error;              /* an ERROR event other than 410 */
    bool failing;                  /* the last request failed */
    unsigned relists;              /* 410s in a row without a working watch between them */
    size_t watch_events;           /* events in the current watch */
    bool (*next)(wt_informer_t *); /* what to do when the timer fires */
};

static const char *state_str(inf_state_t s)
{
    static const char *const names[] = {"idle", "listing", "watching", "waiting", "stopped"};
    return names[s];
}

static void set_state(wt_informer_t *i, inf_state_t s)
{
    if (i->state != s)
        SL_TRACE("%s: %s -> %s", i->info->plural, state_str(i->state), state_str(s));
    i->state = s;
}

uint64_t wt_backoff_ms(unsigned attempt, uint64_t base_ms, uint64_t max_ms)
{
    uint64_t d = base_ms;
    for (unsigned a = 0; a < attempt && d < max_ms; a++)
        d *= 2;
    if (d > max_ms)
        d = max_ms;
    return d / 2 + (uint64_t)((double)(d - d / 2) * ((double)rand() / RAND_MAX));
}

static bool start_list(wt_informer_t *i);
static bool start_watch(wt_informer_t *i);

static void on_timer(uv_timer_t *t)
{
    wt_informer_t *i = t->data;
    if (i->state == INF_WAITING && i->next)
        i->next(i);
}

/* Runs step after a backoff delay (or the server's Retry-After). */
static void retry_later(wt_informer_t *i, bool (*step)(wt_informer_t *), long retry_after_s)
{
    uint64_t ms = wt_backoff_ms(i->attempt++, BACKOFF_BASE_MS, BACKOFF_MAX_MS);
    if (retry_after_s > 0 && (uint64_t)retry_after_s * 1000 > ms)
        ms = (uint64_t)retry_after_s * 1000;
    set_state(i, INF_WAITING);
    i->next = step;
    SL_DEBUG("%s: retrying in %llu ms", i->info->plural, (unsigned long long)ms);
    uv_timer_start(&i->timer, on_timer, ms, 0);
}

static void base_path(wt_informer_t *i, char *buf, size_t cap)
{
    if (i->info->namespaced && i->namespace)
        snprintf(buf, cap, "%s/namespaces/%s/%s", i->info->prefix, i->namespace, i->info->plural);
    else
        snprintf(buf, cap, "%s/%s", i->info->prefix, i->info->plural);
}

/* The first failure of a streak is a warning; the retries that follow are debug lines, and
 * the recovery is reported (a down API server must not flood the log). */
static void report_failure(wt_informer_t *i, const char *what, const wt_http_resp_t *resp)
{
    char msg[256];
    if (resp->curl_code != 0 || resp->status == 0)
        snprintf(msg, sizeof(msg), "%s", resp->error ? resp->error : "no answer");
    else
        snprintf(msg, sizeof(msg), "HTTP %ld %s", resp->status,
                 wt_kube_status_message(resp->body, resp->len, (char[200]){0}, 200));
    if (!i->failing)
        SL_WARN("%s %s: %s; retrying", i->info->plural, what, msg);
    else
        SL_DEBUG("%s %s: %s; retrying", i->info->plural, what, msg);
    i->failing = true;
    if (resp->status == 401)
        wt_kube_token_stale(i->k);
}

static void recovered(wt_informer_t *i)
{
    if (i->failing)
        SL_INFO("%s: the API server answers again", i->info->plural);
    i->failing = false;
}

/* ---- LIST ----------------------------------------------------------------------------------- */

static size_t add_items(wt_informer_t *i, cJSON *items)
{
    size_t n = 0;
    cJSON *it;
    char key[320];
    while ((it = cJSON_DetachItemFromArray(items, 0)) != NULL) {
        if (!wt_obj_key(i->o.kind, it, key, sizeof(key))) {
            SL_WARN("%s: an item without metadata.name in a list; skipped", i->info->plural);
            cJSON_Delete(it);
            continue;
        }
        n += wt_store_put_json(&i->pending, it);
        cJSON_Delete(it);
    }
    return n;
}

static void list_complete(wt_informer_t *i)
{
    wt_store_swap(i->store, &i->pending);
    wt_store_free(&i->pending);
    SL_INFO("%s: listed %zu at resourceVersion %s", i->info->plural, i->store->n, i->rv);
    bool first = !i->synced;
    i->synced = true;
    i->attempt = 0;
    i->o.cb(i->o.arg, i->o.kind, WT_INF_CHANGED);
    if (first)
        i->o.cb(i->o.arg, i->o.kind, WT_INF_SYNCED);
    start_watch(i);
}

static void on_list_done(wt_http_req_t *r, const wt_http_resp_t *resp, void *arg)
{
    wt_informer_t *i = arg;
    i->req = NULL;
    if (resp->status == 410 && i->cont) {
        /* The continue token expired (the snapshot was compacted): start over. */
        SL_INFO("%s: the list's continue token expired; listing again from the start",
                i->info->plural);
        free(i->cont);
        i->cont = NULL;
        wt_store_free(&i->pending);
        retry_later(i, start_list, 0);
        return;
    }
    if (resp->status != 200) {
        report_failure(i, "list", resp);
        free(i->cont);
        i->cont = NULL;
        wt_store_free(&i->pending);
        retry_later(i, start_list, resp->retry_after);
        return;
    }
    cJSON *doc = cJSON_ParseWithLength(resp->body, resp->len);
    cJSON *items = cJSON_GetObjectItemCaseSensitive(doc, "items");
    const char *rv = WT_STR(doc, "metadata", "resourceVersion");
    if (!doc || (items && !cJSON_IsArray(items) && !cJSON_IsNull(items)) || !rv) {
        SL_WARN("%s list: the answer is not a list (%zu bytes); retrying", i->info->plural,
                resp->len);
        cJSON_Delete(doc);
        free(i->cont);
        i->cont = NULL;
        wt_store_free(&i->pending);
        retry_later(i, start_list, 0);
        return;
    }
    recovered(i);
    if (cJSON_IsArray(items))
        add_items(i, items);
    snprintf(i->rv, sizeof(i->rv), "%s", rv);
    const char *cont = WT_STR(doc, "metadata", "continue");
    free(i->cont);
    i->cont = cont && *cont ? sl_xstrdup(cont) : NULL;
    cJSON_Delete(doc);
    if (i->cont)
        start_list(i);
    else
        list_complete(i);
}

static bool start_list(wt_informer_t *i)
{
    char base[512], path[2048];
    base_path(i, base, sizeof(base));
    int n = snprintf(path, sizeof(path), "%s?limit=%u", base,
                     i->o.page_size ? i->o.page_size : DEFAULT_PAGE);
    if (i->field_selector) {
        char *fs = wt_http_escape(i->field_selector);
        n += snprintf(path + n, sizeof(path) - (size_t)n, "&fieldSelector=%s", fs);
        free(fs);
    }
    char *cont_path = NULL;
    const char *p = path;
    if (i->cont) {
        char *c = wt_http_escape(i->cont);
        size_t len = strlen(path) + strlen(c) + 16;
        cont_path = sl_xmalloc(len);
        snprintf(cont_path, len, "%s&continue=%s", path, c);
        free(c);
        p = cont_path;
    }
    set_state(i, INF_LISTING);
    wt_kube_req_opts_t ko = {
        .path = p,
        .timeout_ms = LIST_TIMEOUT_MS,
        .max_body = MAX_LIST_PAGE,
        .on_done = on_list_done,
        .arg = i,
    };
    i->req = wt_kube_request(i->k, &ko);
    free(cont_path);
    if (!i->req) {
        retry_later(i, start_list, 0);
        return false;
    }
    return true;
}

/* ---- WATCH ---------------------------------------------------------------------------------- */

static void set_rv_of(wt_informer_t *i, const cJSON *obj)
{
    const char *rv = WT_STR(obj, "metadata", "resourceVersion");
    if (rv && strlen(rv) < sizeof(i->rv))
        memcpy(i->rv, rv, strlen(rv) + 1);
}

static int on_event(const char *line, size_t len, bool oversize, void *arg)
{
    wt_informer_t *i = arg;
    if (oversize) {
        SL_ERROR("%s watch: an event larger than %zu bytes was skipped (the object is too large)",
                 i->info->plural, i->o.max_line ? i->o.max_line : (size_t)(8u << 20));
        return 0;
    }
    recovered(i);
    cJSON *ev = cJSON_ParseWithLength(line, len);
    const char *type = WT_STR(ev, "type");
    cJSON *obj = cJSON_GetObjectItemCaseSensitive(ev, "object");
    char key[320];
    if (!ev || !type || !cJSON_IsObject(obj)) {
        SL_WARN("%s watch: an event that is not {\"type\", \"object\"} JSON (%zu bytes) was "
                "skipped",
                i->info->plural, len);
        cJSON_Delete(ev);
        return 0;
    }
    int rc = 0;
    if (strcmp(type, "ERROR") != 0)
        i->attempt = i->relists = 0; /* a working watch */
    if (!strcmp(type, "BOOKMARK")) {
        set_rv_of(i, obj);
    } else if (!strcmp(type, "ERROR")) {
        const cJSON *code = WT_GET(obj, "code");
        char q[200];
        wt_quote(q, sizeof(q), WT_STR(obj, "message") ? WT_STR(obj, "message") : "");
        if (cJSON_IsNumber(code) && code->valueint == 410) {
            SL_INFO("%s watch: resourceVersion %s expired (410: %s); listing again",
                    i->info->plural, i->rv, q);
            i->relist = true;
        } else {
            SL_WARN("%s watch: error event %d %s", i->info->plural,
                    cJSON_IsNumber(code) ? code->valueint : 0, q);
            i->watch_error = true;
        }
        rc = -1;
    } else if (!strcmp(type, "ADDED") || !strcmp(type, "MODIFIED") || !strcmp(type, "DELETED")) {
        if (!wt_obj_key(i->o.kind, obj, key, sizeof(key))) {
            SL_WARN("%s watch: a %s event without metadata.name was skipped", i->info->plural,
                    type);
        } else {
            set_rv_of(i, obj);
            if (type[0] == 'D')
                wt_store_del(i->store, key);
            else
                wt_store_put_json(i->store, obj);
            i->watch_events++;
            i->o.cb(i->o.arg, i->o.kind, WT_INF_CHANGED);
        }
    } else {
        char q[64];
        SL_WARN("%s watch: unknown event type %s skipped", i->info->plural,
                wt_quote(q, sizeof(q), type));
    }
    cJSON_Delete(ev);
    return rc;
}

static void on_watch_done(wt_http_req_t *r, const wt_http_resp_t *resp, void *arg)
{
    wt_informer_t *i = arg;
    i->req = NULL;
    if (i->relist || resp->status == 410) {
        if (resp->status == 410)
            SL_INFO("%s watch: resourceVersion %s is too old (410); listing again", i->info->plural,
                    i->rv);
        i->relist = false;
        /* Right away the first time; with backoff when the server keeps answering 410 to
         * fresh lists (relists counts those without a working watch in between). */
        if (i->relists++ == 0) {
            start_list(i);
        } else {
            unsigned saved = i->attempt;
            i->attempt = i->relists - 1;
            retry_later(i, start_list, 0);
            i->attempt = saved;
        }
        return;
    }
    if (i->watch_error) {
        i->watch_error = false;
        retry_later(i, start_watch, 0);
        return;
    }
    if (resp->status == 200 && resp->curl_code == 0) {
        /* A clean end (timeoutSeconds, or the server closed it): resume where we were. */
        SL_DEBUG("%s watch ended after %.1f s (%zu events); resuming at %s", i->info->plural,
                 resp->seconds, i->watch_events, i->rv);
        if (resp->seconds < 1.0 && i->watch_events == 0)
            retry_later(i, start_watch, 0);
        else
            start_watch(i);
        return;
    }
    if (resp->status == 200 && resp->too_large)
        SL_ERROR("%s watch: the stream was too large; reconnecting", i->info->plural);
    else
        report_failure(i, "watch", resp);
    retry_later(i, start_watch, resp->retry_after);
}

static bool start_watch(wt_informer_t *i)
{
    char base[512], path[2048];
    base_path(i, base, sizeof(base));
    char *rv = wt_http_escape(i->rv);
    unsigned timeout = WATCH_MIN_S + (unsigned)(rand() % WATCH_SPREAD_S);
    int n = snprintf(path, sizeof(path),
                     "%s?watch=1&allowWatchBookmarks=true&resourceVersion=%s&timeoutSeconds=%u",
                     base, rv, timeout);
    free(rv);
    if (i->field_selector) {
        char *fs = wt_http_escape(i->field_selector);
        snprintf(path + n, sizeof(path) - (size_t)n, "&fieldSelector=%s", fs);
        free(fs);
    }
    set_state(i, INF_WATCHING);
    i->watch_events = 0;
    wt_kube_req_opts_t ko = {
        .path = path,
        .timeout_ms = (long)(timeout + 30) * 1000,
        .max_body = 1u << 20, /* an error answer */
        .on_line = on_event,
        .max_line = i->o.max_line,
        .on_done = on_watch_done,
        .arg = i,
    };
    i->req = wt_kube_request(i->k, &ko);
    if (!i->req) {
        retry_later(i, start_watch, 0);
        return false;
    }
    return true;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

wt_informer_t *wt_informer_new(uv_loop_t *loop, wt_kube_t *k, wt_store_t *store,
                               const wt_informer_opts_t *o)
{
    wt_informer_t *i = sl_xcalloc(1, sizeof(*i));
    i->loop = loop;
    i->k = k;
    i->store = store;
    i->o = *o;
    i->namespace = o->namespace ? sl_xstrdup(o->namespace) : NULL;
    i->field_selector = o->field_selector ? sl_xstrdup(o->field_selector) : NULL;
    i->info = wt_kind_info(o->kind);
    wt_store_init(&i->pending, o->kind);
    uv_timer_init(loop, &i->timer);
    i->timer.data = i;
    return i;
}

void wt_informer_start(wt_informer_t *i)
{
    start_list(i);
}

bool wt_informer_synced(const wt_informer_t *i)
{
    return i->synced;
}

static void on_closed(uv_handle_t *h)
{
    wt_informer_t *i = h->data;
    free(i->namespace);
    free(i->field_selector);
    free(i->cont);
    wt_store_free(&i->pending);
    free(i);
}

void wt_informer_free(wt_informer_t *i)
{
    if (!i)
        return;
    set_state(i, INF_STOPPED);
    wt_http_cancel(i->req);
    i->req = NULL;
    uv_timer_stop(&i->timer);
    uv_close((uv_handle_t *)&i->timer, on_closed);
}
