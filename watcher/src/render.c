/* Canonical JSON and hashes. The gateway hashes the dynamic part of a config as "keys sorted
 * below the top level, top-level keys in gw_dynamic_keys order" (gw_config_hash_json over a view
 * of its document); building the same view here gives the same hash. */
#include "render.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/gateway.h"
#include "jsonw.h"
#include "util/mem.h"

static int cmp_keys(const void *a, const void *b)
{
    const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
    return strcmp(x->string, y->string);
}

void wt_canonicalize(cJSON *v)
{
    size_t n = 0;
    for (cJSON *c = v->child; c; c = c->next) {
        wt_canonicalize(c);
        n++;
    }
    if (!cJSON_IsObject(v) || n < 2)
        return;
    cJSON **items = sl_xmalloc(n * sizeof(*items));
    n = 0;
    for (cJSON *c = v->child; c; c = c->next)
        items[n++] = c;
    qsort(items, n, sizeof(*items), cmp_keys);
    for (size_t i = 0; i < n; i++) {
        items[i]->prev = i ? items[i - 1] : items[n - 1];
        items[i]->next = i + 1 < n ? items[i + 1] : NULL;
    }
    v->child = items[0];
    free(items);
}

void wt_sha256_hex(const void *p, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL);
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static bool is_dynamic(const char *k)
{
    for (const char *const *d = gw_dynamic_keys; *d; d++)
        if (strcmp(*d, k) == 0)
            return true;
    return false;
}

void wt_render(cJSON *doc, wt_rendered_t *out)
{
    wt_canonicalize(doc);
    /* Re-order the top level: the gateway's dynamic keys first, in its order. */
    cJSON *head = NULL, *tail = NULL;
    for (const char *const *d = gw_dynamic_keys; *d; d++) {
        cJSON *v = cJSON_DetachItemFromObjectCaseSensitive(doc, *d);
        if (!v)
            continue;
        v->prev = v->next = NULL;
        if (!head) {
            head = tail = v;
        } else {
            tail->next = v;
            v->prev = tail;
            tail = v;
        }
    }
    if (head) {
        cJSON *rest = doc->child;
        tail->next = rest;
        if (rest) {
            cJSON *last = rest->prev;
            rest->prev = tail;
            head->prev = last;
        } else {
            head->prev = tail;
        }
        doc->child = head;
    }
    out->text = cJSON_PrintUnformatted(doc);
    if (!out->text)
        sl_oom();
    out->len = strlen(out->text);
    wt_sha256_hex(out->text, out->len, out->hash);
    cJSON *dyn = cJSON_CreateObject();
    for (cJSON *c = doc->child; c; c = c->next)
        if (is_dynamic(c->string))
            cJSON_AddItemReferenceToObject(dyn, c->string, c);
    gw_config_hash_json(dyn, out->gw_hash);
    cJSON_Delete(dyn);
}

static void put_key(wt_buf_t *b, const char *k)
{
    wt_buf_put(b, b->len > 1 ? "," : "", b->len > 1 ? 1 : 0);
    wt_buf_str(b, k);
    wt_buf_put(b, ":", 1);
}

static void put_value(wt_buf_t *b, const wt_config_t *c, const char *k)
{
    if (!strcmp(k, "upstreams")) {
        wt_buf_put(b, "{", 1);
        for (size_t i = 0; i < c->upstreams.n; i++) {
            if (i)
                wt_buf_put(b, ",", 1);
            wt_buf_str(b, c->upstreams.v[i].name);
            wt_buf_put(b, ":", 1);
            wt_buf_puts(b, c->upstreams.v[i].text);
        }
        wt_buf_put(b, "}", 1);
    } else if (!strcmp(k, "routes")) {
        wt_buf_put(b, "[", 1);
        for (size_t i = 0; i < c->routes.n; i++) {
            if (i)
                wt_buf_put(b, ",", 1);
            wt_buf_puts(b, c->routes.v[i].text);
        }
        wt_buf_put(b, "]", 1);
    } else {
        wt_buf_puts(b, c->certificates);
    }
}

static bool has_key(const wt_config_t *c, const char *k)
{
    return !strcmp(k, "upstreams") || !strcmp(k, "routes") ||
           (!strcmp(k, "certificates") && c->certificates);
}

void wt_render_config(const wt_config_t *c, wt_rendered_t *out)
{
    static const char *const ours[] = {"upstreams", "routes", "certificates", NULL};
    wt_buf_t b;
    wt_buf_init(&b);
    wt_buf_put(&b, "{", 1);
    /* The gateway's dynamic keys first, in its order: that prefix is what sluice hashes. */
    for (const char *const *k = gw_dynamic_keys; *k; k++)
        if (has_key(c, *k)) {
            put_key(&b, *k);
            put_value(&b, c, *k);
        }
    wt_buf_put(&b, "}", 1);
    wt_sha256_hex(b.p, b.len, out->gw_hash);
    b.len--;
    for (const char *const *k = ours; *k; k++)
        if (has_key(c, *k) && !is_dynamic(*k)) {
            put_key(&b, *k);
            put_value(&b, c, *k);
        }
    wt_buf_put(&b, "}", 1);
    out->len = b.len;
    out->text = wt_buf_take(&b);
    wt_sha256_hex(out->text, out->len, out->hash);
}

void wt_rendered_free(wt_rendered_t *r)
{
    free(r->text);
    memset(r, 0, sizeof(*r));
}
