/* Incremental validation with gw_config_parse. */
#include "validate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/gateway.h"
#include "jsonw.h"
#include "util/hmap.h"
#include "util/mem.h"

void wt_validator_init(wt_validator_t *v)
{
    v->last = NULL;
}

void wt_validator_free(wt_validator_t *v)
{
    wt_config_free(v->last);
    wt_validator_init(v);
}

/* Marks the items of now that are not in before (both sorted by name) with the same text. */
static void changed(const wt_items_t *before, const wt_items_t *now, bool *out)
{
    size_t i = 0;
    for (size_t k = 0; k < now->n; k++) {
        int c = 1;
        while (i < before->n && (c = strcmp(before->v[i].name, now->v[k].name)) < 0)
            i++;
        out[k] = !(i < before->n && c == 0 && !strcmp(before->v[i].text, now->v[k].text));
    }
}

static const wt_item_t *find_upstream(const wt_config_t *c, const char *name)
{
    size_t lo = 0, hi = c->upstreams.n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int r = strcmp(c->upstreams.v[mid].name, name);
        if (!r)
            return &c->upstreams.v[mid];
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static void add_upstream(wt_buf_t *b, sl_hmap_t *in_doc, const wt_item_t *u, size_t *n)
{
    void **seen = sl_hmap_put(in_doc, u->name, strlen(u->name));
    if (*seen)
        return;
    *seen = (void *)u;
    wt_buf_puts(b, (*n)++ ? "," : "");
    wt_buf_str(b, u->name);
    wt_buf_put(b, ":", 1);
    wt_buf_puts(b, u->text);
}

/* "routes[3].match.host: ..." of the partial document -> "route NAME: match.host: ...". */
static void name_the_item(sl_error_t *err, const wt_item_t *const *routes, size_t n)
{
    size_t idx;
    int used = 0;
    char rest[sizeof(err->msg)];
    memcpy(rest, err->msg, sizeof(rest));
    if (sscanf(rest, "routes[%zu]%n", &idx, &used) == 1 && used && idx < n)
        sl_error_set(err, SL_ECONFIG, "route %s: %s", routes[idx]->name,
                     rest[used] == '.' ? rest + used + 1 : rest + used);
}

int wt_validate(wt_validator_t *v, wt_config_t *c, size_t *checked, sl_error_t *err)
{
    /* The partial document: changed upstreams, changed routes and the upstreams they name. */
    sl_hmap_t in_doc;
    sl_hmap_init(&in_doc);
    const wt_item_t **routes = sl_xmalloc((c->routes.n + 1) * sizeof(*routes));
    size_t n_routes = 0, n_up = 0;
    wt_buf_t b;
    wt_buf_init(&b);
    static const wt_items_t none = {0};
    bool *up_changed = sl_xmalloc(c->upstreams.n + 1), *rt_changed = sl_xmalloc(c->routes.n + 1);
    changed(v->last ? &v->last->upstreams : &none, &c->upstreams, up_changed);
    changed(v->last ? &v->last->routes : &none, &c->routes, rt_changed);
    wt_buf_puts(&b, "{\"upstreams\":{");
    for (size_t i = 0; i < c->upstreams.n; i++)
        if (up_changed[i])
            add_upstream(&b, &in_doc, &c->upstreams.v[i], &n_up);
    for (size_t i = 0; i < c->routes.n; i++) {
        const wt_item_t *r = &c->routes.v[i];
        if (!rt_changed[i])
            continue;
        routes[n_routes++] = r;
        const wt_item_t *u = r->upstream ? find_upstream(c, r->upstream) : NULL;
        if (u)
            add_upstream(&b, &in_doc, u, &n_up);
    }
    wt_buf_puts(&b, "},\"routes\":[");
    for (size_t i = 0; i < n_routes; i++) {
        wt_buf_puts(&b, i ? "," : "");
        wt_buf_puts(&b, routes[i]->text);
    }
    wt_buf_puts(&b, "]");
    /* Certificates are checked as a whole list, when it changed (loading is cached by sluice's
     * library, per certificate). */
    bool certs = c->certificates && !(v->last && v->last->certificates &&
                                      !strcmp(v->last->certificates, c->certificates));
    if (certs) {
        wt_buf_puts(&b, ",\"certificates\":");
        wt_buf_puts(&b, c->certificates);
    }
    wt_buf_puts(&b, "}");
    int rc = 0;
    *checked = n_up + n_routes + certs;
    if (n_up || n_routes || certs) {
        cJSON *doc = cJSON_ParseWithLength(b.p, b.len);
        gw_config_t *g = NULL;
        if (!doc)
            rc = sl_error_set(err, SL_ECONFIG, "the translated config is not JSON");
        else if ((rc = gw_config_parse(doc, &g, err)) == 0) /* takes doc */
            gw_config_release(g);
        else
            name_the_item(err, routes, n_routes);
    }
    wt_buf_free(&b);
    free(routes);
    free(up_changed);
    free(rt_changed);
    sl_hmap_free(&in_doc);
    if (rc)
        return rc;
    wt_config_free(v->last);
    v->last = c;
    return 0;
}
