/* File discovery (lesson 34): an upstream's backends come from a file of "ip:port" lines
 * ('#' starts a comment), re-read when it changes, checked every `interval`. A file that cannot
 * be read or holds an invalid line leaves the running backends alone. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gateway/runtime.h"
#include "util/jmem.h"
#include "util/mem.h"

#define SL_LOG_TAG "discovery"
#include "sluice/log.h"

#define MAX_FILE (4 * 1024 * 1024)

typedef struct watch {
    gateway_t *gw;
    char *upstream;
    char *path;
    uint64_t interval_ms;
    uv_timer_t timer;
    struct stat last;
    bool have_last;
    struct watch *next;
} watch_t;

struct gw_discovery {
    watch_t *watches;
};

int gw_discovery_read(const char *path, cJSON **list, sl_error_t *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return sl_error_set(err, SL_ECONFIG, "cannot read discovery file %s: %s", path,
                            strerror(errno));
    cJSON *out = cJSON_CreateArray();
    char line[1024];
    size_t lineno = 0, total = 0;
    int rc = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        total += strlen(line);
        if (total > MAX_FILE) {
            rc = sl_error_set(err, SL_ECONFIG, "%s: file too large", path);
            break;
        }
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        char *e = s + strlen(s);
        while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
            *--e = '\0';
        if (!*s)
            continue;
        gw_backend_t b;
        char p[64];
        snprintf(p, sizeof(p), "line %zu", lineno);
        cJSON *v = cJSON_CreateString(s);
        rc = gw_backend_parse(v, p, NULL, &b, err);
        if (rc) {
            cJSON_Delete(v);
            sl_error_t inner = *err;
            sl_error_set(err, rc, "%s: %s", path, inner.msg);
            break;
        }
        gw_backend_free(&b);
        cJSON_AddItemToArray(out, v);
    }
    if (!rc && ferror(f))
        rc = sl_error_set(err, SL_ECONFIG, "cannot read discovery file %s: %s", path,
                          strerror(errno));
    fclose(f);
    if (!rc && cJSON_GetArraySize(out) == 0)
        rc = sl_error_set(err, SL_ECONFIG, "discovery file %s lists no backend", path);
    if (rc) {
        cJSON_Delete(out);
        return rc;
    }
    *list = out;
    return 0;
}

int gw_discovery_resolve(cJSON *doc, sl_error_t *err)
{
    cJSON *ups = cJSON_GetObjectItemCaseSensitive(doc, "upstreams");
    if (!cJSON_IsObject(ups))
        return 0;
    for (cJSON *u = ups->child; u; u = u->next) {
        cJSON *d = cJSON_GetObjectItemCaseSensitive(u, "discovery");
        cJSON *f = cJSON_IsObject(d) ? cJSON_GetObjectItemCaseSensitive(d, "file") : NULL;
        if (!cJSON_IsString(f))
            continue; /* the config parser reports a malformed discovery */
        cJSON *list = NULL;
        if (gw_discovery_read(f->valuestring, &list, err) != 0) {
            sl_error_t inner = *err;
            return sl_error_set(err, SL_ECONFIG, "upstreams.%s.discovery.file: %s", u->string,
                                inner.msg);
        }
        cJSON_DeleteItemFromObjectCaseSensitive(u, "backends");
        cJSON_AddItemToObject(u, "backends", list);
    }
    return 0;
}

static bool same_stat(const struct stat *a, const struct stat *b)
{
    return a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_size == b->st_size && a->st_ino == b->st_ino;
}

static void on_tick(uv_timer_t *t)
{
    watch_t *w = t->data;
    struct stat st;
    if (stat(w->path, &st) != 0) {
        if (w->have_last)
            SL_ERROR("discovery file %s: %s; keeping the current backends of %s", w->path,
                     strerror(errno), w->upstream);
        w->have_last = false;
        return;
    }
    if (w->have_last && same_stat(&st, &w->last))
        return;
    w->last = st;
    w->have_last = true;
    cJSON *list = NULL;
    sl_error_t err = {0};
    if (gw_discovery_read(w->path, &list, &err) != 0) {
        SL_ERROR("%s; keeping the current backends of %s", err.msg, w->upstream);
        return;
    }
    const gw_upstream_t *u = gw_config_upstream(w->gw->current, w->upstream);
    bool changed = !u || (size_t)cJSON_GetArraySize(list) != u->n_backends;
    for (size_t i = 0; u && !changed && i < u->n_backends; i++)
        changed = strcmp(cJSON_GetArrayItem(list, (int)i)->valuestring, u->backends[i].address);
    if (changed) {
        SL_INFO("discovery: %s now has %d backend(s) from %s", w->upstream,
                cJSON_GetArraySize(list), w->path);
        /* The running configuration is parsed again from its text: in bulk (util/jmem.h). */
        sl_jmem_scope_t scope;
        sl_jmem_begin(&scope, w->gw->current->text_len * 8);
        int rc = gw_set_backends(w->gw, w->upstream, list, "discovery", &err);
        sl_jmem_end(&scope);
        if (rc != 0)
            SL_ERROR("discovery update of %s refused: %s", w->upstream, err.msg);
    }
    cJSON_Delete(list);
}

static void on_timer_closed(uv_handle_t *h)
{
    watch_t *w = h->data;
    free(w->upstream);
    free(w->path);
    free(w);
}

static void drop_all(gw_discovery_t *d)
{
    watch_t *w = d->watches;
    d->watches = NULL;
    while (w) {
        watch_t *next = w->next;
        uv_close((uv_handle_t *)&w->timer, on_timer_closed);
        w = next;
    }
}

/* Makes the set of watches follow the current config: one per upstream with a file. Watches
 * that stay the same keep their last-seen state (no spurious reload). */
void gw_discovery_sync(gateway_t *gw, uv_loop_t *loop)
{
    if (!gw->discovery)
        gw->discovery = sl_xcalloc(1, sizeof(gw_discovery_t));
    gw_discovery_t *d = gw->discovery;
    const gw_config_t *c = gw->current;
    watch_t *keep = NULL, *w = d->watches;
    d->watches = NULL;
    while (w) {
        watch_t *next = w->next;
        const gw_upstream_t *u = gw_config_upstream(c, w->upstream);
        if (u && u->discovery_file && !strcmp(u->discovery_file, w->path) &&
            u->discovery_interval_ms == w->interval_ms) {
            w->next = keep;
            keep = w;
        } else {
            uv_close((uv_handle_t *)&w->timer, on_timer_closed);
        }
        w = next;
    }
    d->watches = keep;
    for (size_t i = 0; i < c->n_upstreams; i++) {
        const gw_upstream_t *u = c->upstreams[i];
        if (!u->discovery_file)
            continue;
        bool have = false;
        for (w = d->watches; w && !have; w = w->next)
            have = !strcmp(w->upstream, u->name);
        if (have)
            continue;
        w = sl_xcalloc(1, sizeof(*w));
        w->gw = gw;
        w->upstream = sl_xstrdup(u->name);
        w->path = sl_xstrdup(u->discovery_file);
        w->interval_ms = u->discovery_interval_ms;
        w->have_last = stat(w->path, &w->last) == 0; /* just read by the config load */
        uv_timer_init(loop, &w->timer);
        w->timer.data = w;
        uv_timer_start(&w->timer, on_tick, w->interval_ms, w->interval_ms);
        w->next = d->watches;
        d->watches = w;
    }
}

void gw_discovery_stop(gateway_t *gw)
{
    if (!gw->discovery)
        return;
    drop_all(gw->discovery);
    free(gw->discovery);
    gw->discovery = NULL;
}
