/* The query filter: rewrites the query string of the request sent upstream (the guide's lesson
 * 10: drop `debug=...`, append `ref=pingora`). Parameters to add are percent-encoded at config
 * time; at request time the new target is written once into the request arena. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/filters/filters.h"
#include "util/cfg.h"
#include "util/mem.h"

static const char *const query_keys[] = {"remove_prefix", "remove", "set", "append", NULL};

/* ---- parsing ----------------------------------------------------------------------------- */

static void qstr_init(gw_qstr_t *q, const char *s, size_t len)
{
    q->s = sl_xstrndup(s, len);
    q->len = len;
}

static bool unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* RFC 3986: everything but unreserved characters as %XX. dst has room for 3 * strlen(s). */
static size_t pct_encode(char *dst, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (unreserved(c)) {
            dst[o++] = (char)c;
        } else {
            dst[o++] = '%';
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 15];
        }
    }
    return o;
}

/* remove_prefix and remove: lists of non-empty strings without control characters. */
static int parse_list(const cJSON *conf, const char *path, const char *key, gw_qstr_t **out,
                      size_t *n_out, sl_error_t *err)
{
    char p[SL_CFG_PATH_MAX], ep[SL_CFG_PATH_MAX];
    const cJSON *l;
    int rc = gw__filter_get_list(conf, path, key, GW_QUERY_OPS_MAX, &l, p, sizeof(p), err);
    if (rc || !l)
        return rc;
    *out = sl_xcalloc((size_t)cJSON_GetArraySize(l) + 1, sizeof(**out));
    size_t i = 0;
    for (const cJSON *ch = l->child; ch; ch = ch->next, i++) {
        sl__cfg_path_index(ep, sizeof(ep), p, i);
        if ((rc = gw__filter_check_str(ch, ep, 1, GW_QUERY_NAME_MAX, false, err)))
            return rc;
        qstr_init(&(*out)[(*n_out)++], ch->valuestring, strlen(ch->valuestring));
    }
    return 0;
}

/* A parameter name used as a mapping key is checked before it becomes part of a path. */
static int check_key(const char *name, const char *parent, sl_error_t *err)
{
    size_t len = strlen(name);
    char q[96];
    gw__filter_quote(q, sizeof(q), name);
    if (len == 0)
        return sl_error_set(err, SL_ECONFIG, "%s: empty parameter name", parent);
    if (len > GW_QUERY_NAME_MAX)
        return sl_error_set(err, SL_ECONFIG, "%s: parameter name %s is too long (at most %d bytes)",
                            parent, q, GW_QUERY_NAME_MAX);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x20 || c == 0x7f)
            return sl_error_set(err, SL_ECONFIG,
                                "%s: parameter name %s contains a control character", parent, q);
    }
    return 0;
}

/* set and append: {name: "value", ...}, stored decoded (to compare) and encoded (to write). */
static int parse_params(const cJSON *conf, const char *path, const char *key, gw_qparam_t **out,
                        size_t *n_out, size_t *added, sl_error_t *err)
{
    char p[SL_CFG_PATH_MAX], ep[SL_CFG_PATH_MAX];
    const cJSON *m;
    int rc = gw__filter_get_map(conf, path, key, GW_QUERY_OPS_MAX, &m, p, sizeof(p), err);
    if (rc || !m)
        return rc;
    *out = sl_xcalloc((size_t)cJSON_GetArraySize(m) + 1, sizeof(**out));
    for (const cJSON *ch = m->child; ch; ch = ch->next) {
        if ((rc = check_key(ch->string, p, err)))
            return rc;
        sl__cfg_path_key(ep, sizeof(ep), p, ch->string);
        if ((rc = gw__filter_check_str(ch, ep, 0, GW_QUERY_VALUE_MAX, false, err)))
            return rc;
        for (size_t i = 0; i < *n_out; i++)
            if (strcmp((*out)[i].name.s, ch->string) == 0)
                return sl_error_set(err, SL_ECONFIG, "%s: given twice", ep);
        gw_qparam_t *qp = &(*out)[(*n_out)++];
        qstr_init(&qp->name, ch->string, strlen(ch->string));
        char *enc = sl_xmalloc(3 * (qp->name.len + strlen(ch->valuestring)) + 2);
        size_t n = pct_encode(enc, ch->string);
        enc[n++] = '=';
        n += pct_encode(enc + n, ch->valuestring);
        enc[n] = '\0';
        qp->enc = (gw_qstr_t){enc, n};
        *added += n + 1; /* with its '&' */
        if (*added > GW_QUERY_ADDED_MAX)
            return sl_error_set(
                err, SL_ECONFIG,
                "%s: set and append add more than %d bytes to the query once encoded", ep,
                GW_QUERY_ADDED_MAX);
    }
    return 0;
}

int gw_query_parse(const cJSON *conf, const char *path, gw_query_t **out, sl_error_t *err)
{
    *out = NULL;
    int rc = sl__cfg_check_keys(conf, path, query_keys, err);
    if (rc)
        return rc;
    gw_query_t *q = sl_xcalloc(1, sizeof(*q));
    if ((rc = parse_list(conf, path, "remove_prefix", &q->remove_prefix, &q->n_remove_prefix,
                         err)) ||
        (rc = parse_list(conf, path, "remove", &q->remove, &q->n_remove, err)) ||
        (rc = parse_params(conf, path, "set", &q->set, &q->n_set, &q->added_len, err)) ||
        (rc = parse_params(conf, path, "append", &q->append, &q->n_append, &q->added_len, err))) {
        gw_query_free(q);
        return rc;
    }
    *out = q;
    return 0;
}

static void qstrs_free(gw_qstr_t *l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(l[i].s);
    free(l);
}

static void params_free(gw_qparam_t *l, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(l[i].name.s);
        free(l[i].enc.s);
    }
    free(l);
}

void gw_query_free(gw_query_t *q)
{
    if (!q)
        return;
    qstrs_free(q->remove_prefix, q->n_remove_prefix);
    qstrs_free(q->remove, q->n_remove);
    params_free(q->set, q->n_set);
    params_free(q->append, q->n_append);
    free(q);
}

/* ---- matching ---------------------------------------------------------------------------- */

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = gw__lower(c);
    return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}

/* The next byte of raw once decoded: a valid %XX is one byte, anything else is literal. */
static unsigned char next_byte(sl_str_t raw, size_t *i)
{
    size_t k = *i;
    if (raw.ptr[k] == '%' && k + 2 < raw.len) {
        int h = hexval((unsigned char)raw.ptr[k + 1]), l = hexval((unsigned char)raw.ptr[k + 2]);
        if (h >= 0 && l >= 0) {
            *i = k + 3;
            return (unsigned char)(h << 4 | l);
        }
    }
    *i = k + 1;
    return (unsigned char)raw.ptr[k];
}

/* True when raw, percent-decoded, starts with want (whole: is want). Decoding on the fly means
 * `d%65bug=1` cannot slip past `debug=`, and nothing is copied. */
static bool decoded_match(sl_str_t raw, const gw_qstr_t *want, bool whole)
{
    size_t i = 0;
    for (size_t j = 0; j < want->len; j++)
        if (i >= raw.len || next_byte(raw, &i) != (unsigned char)want->s[j])
            return false;
    return !whole || i == raw.len;
}

static bool dropped(const gw_query_t *q, sl_str_t param)
{
    bool encoded = memchr(param.ptr, '%', param.len) != NULL;
    for (size_t i = 0; i < q->n_remove_prefix; i++) {
        const gw_qstr_t *pre = &q->remove_prefix[i];
        if (param.len >= pre->len && memcmp(param.ptr, pre->s, pre->len) == 0)
            return true;
        if (encoded && decoded_match(param, pre, false))
            return true;
    }
    if (!q->n_remove)
        return false;
    const char *eq = memchr(param.ptr, '=', param.len);
    sl_str_t name = {param.ptr, eq ? (size_t)(eq - param.ptr) : param.len};
    for (size_t i = 0; i < q->n_remove; i++)
        if (decoded_match(name, &q->remove[i], true))
            return true;
    return false;
}

/* Index of the set entry naming param, or -1. */
static long set_index(const gw_query_t *q, sl_str_t param)
{
    const char *eq = memchr(param.ptr, '=', param.len);
    sl_str_t name = {param.ptr, eq ? (size_t)(eq - param.ptr) : param.len};
    for (size_t i = 0; i < q->n_set; i++)
        if (decoded_match(name, &q->set[i].name, true))
            return (long)i;
    return -1;
}

/* Splits query at '&' into params, one call per param (empty ones included). */
static sl_str_t next_param(sl_str_t query, size_t *pos)
{
    const char *p = query.ptr + *pos, *end = query.ptr + query.len;
    const char *amp = memchr(p, '&', (size_t)(end - p));
    const char *pe = amp ? amp : end;
    *pos = amp ? (size_t)(amp + 1 - query.ptr) : query.len;
    return (sl_str_t){p, (size_t)(pe - p)};
}

/* Only for filters that remove: whether this query loses anything (else it is kept as is). */
static bool changes(const gw_query_t *q, sl_str_t query)
{
    if (query.len == 0)
        return true; /* a bare '?' goes */
    for (size_t pos = 0; pos < query.len;) {
        sl_str_t param = next_param(query, &pos);
        if (param.len == 0 || dropped(q, param))
            return true;
    }
    return query.ptr[query.len - 1] == '&';
}

/* ---- rewriting --------------------------------------------------------------------------- */

typedef struct qwriter {
    char *start, *o;
} qwriter_t;

static void emit(qwriter_t *w, const char *s, size_t len)
{
    if (w->o != w->start)
        *w->o++ = '&';
    memcpy(w->o, s, len);
    w->o += len;
}

/* Writes the kept and set parameters of query; returns which set entries were placed. */
static uint64_t write_params(const gw_query_t *q, sl_str_t query, qwriter_t *w)
{
    uint64_t placed = 0;
    for (size_t pos = 0; pos < query.len;) {
        sl_str_t param = next_param(query, &pos);
        if (param.len == 0 || dropped(q, param))
            continue;
        long si = q->n_set ? set_index(q, param) : -1;
        if (si < 0) {
            emit(w, param.ptr, param.len);
        } else if (!(placed & (UINT64_C(1) << si))) {
            placed |= UINT64_C(1) << si;
            emit(w, q->set[si].enc.s, q->set[si].enc.len);
        }
    }
    return placed;
}

sl_str_t gw_query_rewrite(const gw_query_t *q, sl_arena_t *arena, sl_str_t uri)
{
    _Static_assert(GW_QUERY_OPS_MAX <= 64, "set entries are tracked in a 64-bit mask");
    const char *qm = memchr(uri.ptr, '?', uri.len);
    bool adds = q->n_set + q->n_append > 0;
    if (!qm && !adds)
        return uri;
    size_t plen = qm ? (size_t)(qm - uri.ptr) : uri.len;
    sl_str_t query = qm ? (sl_str_t){qm + 1, uri.len - plen - 1} : (sl_str_t){uri.ptr, 0};
    if (!adds && !changes(q, query))
        return uri;

    char *out = sl_arena_alloc(arena, plen + 1 + query.len + q->added_len + 1);
    memcpy(out, uri.ptr, plen);
    qwriter_t w = {out + plen + 1, out + plen + 1};
    uint64_t placed = write_params(q, query, &w);
    for (size_t i = 0; i < q->n_set; i++)
        if (!(placed & (UINT64_C(1) << i)))
            emit(&w, q->set[i].enc.s, q->set[i].enc.len);
    for (size_t i = 0; i < q->n_append; i++)
        emit(&w, q->append[i].enc.s, q->append[i].enc.len);

    size_t len = plen;
    if (w.o != w.start) {
        out[plen] = '?';
        len = (size_t)(w.o - out);
    }
    out[len] = '\0';
    return (sl_str_t){out, len};
}

/* ---- the filter -------------------------------------------------------------------------- */

static int parse(const cJSON *conf, const char *path, void **state, sl_error_t *err)
{
    gw_query_t *q;
    int rc = gw_query_parse(conf, path, &q, err);
    if (rc == 0)
        *state = q;
    return rc;
}

static void release(void *state)
{
    gw_query_free(state);
}

static int upstream_request(void *state, void *scratch, sl_session_t *s, sl_request_header_t *req)
{
    /* The new target lives in the request arena, which the request header also uses. */
    req->uri = gw_query_rewrite(state, sl_session_arena(s), req->uri);
    return SL_CONTINUE;
}

const gw_filter_kind_t gw_filter_query = {
    .name = "query",
    .parse = parse,
    .free = release,
    .upstream_request = upstream_request,
};
