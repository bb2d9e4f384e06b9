/* Header edits (remove, set, add, copy), parsed once and applied to a header list, and the
 * request_headers filter that applies them to the request sent upstream. response_headers
 * (response_headers.c) runs the same edits on the response to the client. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway/filters/filters.h"
#include "util/cfg.h"
#include "util/mem.h"

static const char *const edit_keys[] = {"set", "add", "remove", "copy", NULL};

/* ---- parsing ----------------------------------------------------------------------------- */

static void name_init(gw_hdr_name_t *n, const char *s)
{
    n->len = strlen(s);
    n->name = sl_xstrndup(s, n->len);
    n->lower = sl_xmalloc(n->len + 1);
    for (size_t i = 0; i <= n->len; i++)
        n->lower[i] = (char)gw__lower((unsigned char)s[i]);
}

static void name_release(gw_hdr_name_t *n)
{
    free(n->name);
    free(n->lower);
}

static bool name_eq(const gw_hdr_name_t *n, const char *s)
{
    size_t len = strlen(s);
    if (len != n->len)
        return false;
    for (size_t i = 0; i < len; i++)
        if (gw__lower((unsigned char)s[i]) != (unsigned char)n->lower[i])
            return false;
    return true;
}

static bool is_framing(const char *name)
{
    return strcasecmp(name, "content-length") == 0 || strcasecmp(name, "transfer-encoding") == 0;
}

/* Checks a header name found under parent (the mapping it is a key of, or the list entry it
 * is). Names are checked before they become part of a path, so every path printed is made of
 * valid tokens. framing_ok: Content-Length and Transfer-Encoding are allowed (remove, copy
 * from), since only adding them could desynchronise the proxy and its peer. */
static int check_name(const char *name, const char *parent, bool framing_ok, sl_error_t *err)
{
    char q[96];
    size_t len = strlen(name);
    if (len == 0)
        return sl_error_set(err, SL_ECONFIG, "%s: empty header name", parent);
    gw__filter_quote(q, sizeof(q), name);
    if (len > GW_HDR_NAME_MAX)
        return sl_error_set(err, SL_ECONFIG, "%s: header name %s is too long (at most %d bytes)",
                            parent, q, GW_HDR_NAME_MAX);
    for (size_t i = 0; i < len; i++)
        if (!gw__is_tchar((unsigned char)name[i]))
            return sl_error_set(err, SL_ECONFIG,
                                "%s: invalid header name %s (RFC 9110 token characters only)",
                                parent, q);
    if (!framing_ok && is_framing(name))
        return sl_error_set(err, SL_ECONFIG, "%s: %s cannot be set: the proxy owns message framing",
                            parent, q);
    return 0;
}

static int check_value(const cJSON *v, const char *path, sl_error_t *err)
{
    int rc = gw__filter_check_str(v, path, 0, GW_HDR_VALUE_MAX, true, err);
    if (rc)
        return rc;
    const char *s = v->valuestring;
    size_t len = strlen(s);
    if (len && (s[0] == ' ' || s[0] == '\t' || s[len - 1] == ' ' || s[len - 1] == '\t'))
        return sl_error_set(err, SL_ECONFIG,
                            "%s: header value must not start or end with whitespace", path);
    return 0;
}

/* set and add: {Name: "value", ...}. unique: a name (case-insensitive) may appear once. */
static int parse_pairs(const cJSON *conf, const char *path, const char *key, bool unique,
                       gw_hdr_pair_t **out, size_t *n_out, sl_error_t *err)
{
    char p[SL_CFG_PATH_MAX], ep[SL_CFG_PATH_MAX];
    const cJSON *m;
    int rc = gw__filter_get_map(conf, path, key, GW_HDR_OPS_MAX, &m, p, sizeof(p), err);
    if (rc || !m)
        return rc;
    *out = sl_xcalloc((size_t)cJSON_GetArraySize(m) + 1, sizeof(**out));
    for (const cJSON *ch = m->child; ch; ch = ch->next) {
        if ((rc = check_name(ch->string, p, false, err)))
            return rc;
        sl__cfg_path_key(ep, sizeof(ep), p, ch->string);
        if ((rc = check_value(ch, ep, err)))
            return rc;
        for (size_t i = 0; unique && i < *n_out; i++)
            if (name_eq(&(*out)[i].name, ch->string))
                return sl_error_set(err, SL_ECONFIG,
                                    "%s: set twice (header names are case-insensitive)", ep);
        gw_hdr_pair_t *pair = &(*out)[(*n_out)++];
        name_init(&pair->name, ch->string);
        pair->value_len = strlen(ch->valuestring);
        pair->value = sl_xstrndup(ch->valuestring, pair->value_len);
    }
    return 0;
}

static int parse_remove(const cJSON *conf, const char *path, gw_hdr_edit_t *e, sl_error_t *err)
{
    char p[SL_CFG_PATH_MAX], ep[SL_CFG_PATH_MAX];
    const cJSON *l;
    int rc = gw__filter_get_list(conf, path, "remove", GW_HDR_OPS_MAX, &l, p, sizeof(p), err);
    if (rc || !l)
        return rc;
    e->remove = sl_xcalloc((size_t)cJSON_GetArraySize(l) + 1, sizeof(*e->remove));
    size_t i = 0;
    for (const cJSON *ch = l->child; ch; ch = ch->next, i++) {
        sl__cfg_path_index(ep, sizeof(ep), p, i);
        if (!cJSON_IsString(ch))
            return gw__filter_type_error(err, ep, "a header name", ch);
        if ((rc = check_name(ch->valuestring, ep, true, err)))
            return rc;
        name_init(&e->remove[e->n_remove++], ch->valuestring);
    }
    return 0;
}

/* copy: {From: To, ...}. Each target once; a header is not copied onto itself. */
static int parse_copy(const cJSON *conf, const char *path, gw_hdr_edit_t *e, sl_error_t *err)
{
    char p[SL_CFG_PATH_MAX], ep[SL_CFG_PATH_MAX];
    const cJSON *m;
    int rc = gw__filter_get_map(conf, path, "copy", GW_HDR_OPS_MAX, &m, p, sizeof(p), err);
    if (rc || !m)
        return rc;
    e->copy = sl_xcalloc((size_t)cJSON_GetArraySize(m) + 1, sizeof(*e->copy));
    for (const cJSON *ch = m->child; ch; ch = ch->next) {
        if ((rc = check_name(ch->string, p, true, err)))
            return rc;
        sl__cfg_path_key(ep, sizeof(ep), p, ch->string);
        if (!cJSON_IsString(ch))
            return gw__filter_type_error(err, ep, "a header name", ch);
        if ((rc = check_name(ch->valuestring, ep, false, err)))
            return rc;
        if (strcasecmp(ch->string, ch->valuestring) == 0)
            return sl_error_set(err, SL_ECONFIG, "%s: copies the header onto itself", ep);
        for (size_t i = 0; i < e->n_copy; i++)
            if (name_eq(&e->copy[i].to, ch->valuestring))
                return sl_error_set(err, SL_ECONFIG, "%s: %s is already the target of a copy", ep,
                                    e->copy[i].to.name);
        gw_hdr_copy_t *c = &e->copy[e->n_copy++];
        name_init(&c->from, ch->string);
        name_init(&c->to, ch->valuestring);
    }
    return 0;
}

int gw_hdr_edit_parse(const cJSON *conf, const char *path, void **state, sl_error_t *err)
{
    int rc = sl__cfg_check_keys(conf, path, edit_keys, err);
    if (rc)
        return rc;
    gw_hdr_edit_t *e = sl_xcalloc(1, sizeof(*e));
    if ((rc = parse_pairs(conf, path, "set", true, &e->set, &e->n_set, err)) ||
        (rc = parse_pairs(conf, path, "add", false, &e->add, &e->n_add, err)) ||
        (rc = parse_remove(conf, path, e, err)) || (rc = parse_copy(conf, path, e, err))) {
        gw_hdr_edit_free(e);
        return rc;
    }
    *state = e;
    return 0;
}

static void pairs_free(gw_hdr_pair_t *pairs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        name_release(&pairs[i].name);
        free(pairs[i].value);
    }
    free(pairs);
}

void gw_hdr_edit_free(void *state)
{
    gw_hdr_edit_t *e = state;
    if (!e)
        return;
    pairs_free(e->set, e->n_set);
    pairs_free(e->add, e->n_add);
    for (size_t i = 0; i < e->n_remove; i++)
        name_release(&e->remove[i]);
    free(e->remove);
    for (size_t i = 0; i < e->n_copy; i++) {
        name_release(&e->copy[i].from);
        name_release(&e->copy[i].to);
    }
    free(e->copy);
    free(e);
}

bool gw_hdr_edit_is_empty(const gw_hdr_edit_t *e)
{
    return !e || (e->n_remove + e->n_set + e->n_add + e->n_copy) == 0;
}

/* ---- applying ---------------------------------------------------------------------------- */

static bool hdr_is(const sl_header_t *h, const gw_hdr_name_t *n)
{
    if (h->name.len != n->len)
        return false;
    const unsigned char *a = (const unsigned char *)h->name.ptr;
    for (size_t i = 0; i < n->len; i++)
        if (gw__lower(a[i]) != (unsigned char)n->lower[i])
            return false;
    return true;
}

/* Grows the array once for everything the edit may append, the way headers.c grows it. */
static void reserve(sl_headers_t *h, size_t need)
{
    if (need <= h->cap)
        return;
    size_t cap = h->cap ? h->cap * 2 : 16;
    if (cap < need)
        cap = need;
    sl_header_t *items = sl_arena_alloc(h->arena, cap * sizeof(*items));
    if (h->n)
        memcpy(items, h->items, h->n * sizeof(*items));
    h->items = items;
    h->cap = cap;
}

static void append(sl_headers_t *h, const gw_hdr_name_t *name, sl_str_t value)
{
    reserve(h, h->n + 1);
    h->items[h->n++] = (sl_header_t){{name->name, name->len}, value};
}

/* One pass, whatever the number of names to remove. */
static void remove_all(const gw_hdr_edit_t *e, sl_headers_t *h)
{
    size_t w = 0;
    for (size_t r = 0; r < h->n; r++) {
        bool drop = false;
        for (size_t i = 0; i < e->n_remove && !drop; i++)
            drop = hdr_is(&h->items[r], &e->remove[i]);
        if (!drop)
            h->items[w++] = h->items[r];
    }
    h->n = w;
}

/* The first header called name takes value (keeping its place); the others go. */
static void set_one(sl_headers_t *h, const gw_hdr_name_t *name, sl_str_t value)
{
    for (size_t i = 0; i < h->n; i++) {
        if (!hdr_is(&h->items[i], name))
            continue;
        h->items[i].value = value;
        size_t w = i + 1;
        for (size_t r = i + 1; r < h->n; r++)
            if (!hdr_is(&h->items[r], name))
                h->items[w++] = h->items[r];
        h->n = w;
        return;
    }
    append(h, name, value);
}

static const sl_str_t *find(const sl_headers_t *h, const gw_hdr_name_t *name)
{
    for (size_t i = 0; i < h->n; i++)
        if (hdr_is(&h->items[i], name))
            return &h->items[i].value;
    return NULL;
}

void gw_hdr_edit_apply(const gw_hdr_edit_t *e, sl_headers_t *h)
{
    if (e->n_remove)
        remove_all(e, h);
    if (e->n_set + e->n_add + e->n_copy)
        reserve(h, h->n + e->n_set + e->n_add + e->n_copy);
    for (size_t i = 0; i < e->n_set; i++)
        set_one(h, &e->set[i].name, (sl_str_t){e->set[i].value, e->set[i].value_len});
    for (size_t i = 0; i < e->n_add; i++)
        append(h, &e->add[i].name, (sl_str_t){e->add[i].value, e->add[i].value_len});
    for (size_t i = 0; i < e->n_copy; i++) {
        const sl_str_t *v = find(h, &e->copy[i].from);
        if (v)
            set_one(h, &e->copy[i].to, *v); /* by value: set_one may move items */
    }
}

/* ---- the request_headers filter ---------------------------------------------------------- */

static int upstream_request(void *state, void *scratch, sl_session_t *s, sl_request_header_t *req)
{
    gw_hdr_edit_apply(state, &req->headers);
    return SL_CONTINUE;
}

const gw_filter_kind_t gw_filter_request_headers = {
    .name = "request_headers",
    .parse = gw_hdr_edit_parse,
    .free = gw_hdr_edit_free,
    .upstream_request = upstream_request,
};
