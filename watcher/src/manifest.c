/* Manifest files: YAML documents are split at their "---" markers and each parsed by the
 * library's config reader (which reads one document), so errors keep their line numbers. */
#include "manifest.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util/cfg.h"
#include "util/mem.h"

#define MAX_MANIFEST  (64u << 20)
#define MAX_NODES_DOC (4u << 20)

/* A line that starts a YAML document: "---" then a blank, a line end or the end of text. */
static bool doc_marker(const char *p, const char *end)
{
    if (end - p < 3 || memcmp(p, "---", 3) != 0)
        return false;
    return end - p == 3 || p[3] == ' ' || p[3] == '\t' || p[3] == '\n' || p[3] == '\r';
}

static void flatten(cJSON *out, cJSON *v)
{
    if (cJSON_IsArray(v)) {
        cJSON *c;
        while ((c = cJSON_DetachItemFromArray(v, 0)) != NULL)
            flatten(out, c);
        cJSON_Delete(v);
        return;
    }
    const char *kind = cJSON_IsObject(v)
                           ? cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(v, "kind"))
                           : NULL;
    cJSON *items = cJSON_GetObjectItemCaseSensitive(v, "items");
    if (kind && strlen(kind) >= 4 && strcmp(kind + strlen(kind) - 4, "List") == 0 &&
        cJSON_IsArray(items)) {
        flatten(out, cJSON_DetachItemViaPointer(v, items));
        cJSON_Delete(v);
        return;
    }
    if (cJSON_IsObject(v) && !v->child) { /* an empty document */
        cJSON_Delete(v);
        return;
    }
    cJSON_AddItemToArray(out, v);
}

/* err holds "line L column C: msg" relative to a document starting at line first: shift it. */
static void relocate(sl_error_t *err, size_t doc, size_t first)
{
    size_t line, col;
    int used = 0;
    char rest[sizeof(err->msg)];
    memcpy(rest, err->msg, sizeof(rest));
    if (sscanf(rest, "line %zu column %zu: %n", &line, &col, &used) == 2 && used > 0)
        sl_error_set(err, SL_ECONFIG, "document %zu: line %zu column %zu: %s", doc,
                     line + first - 1, col, rest + used);
    else
        sl_error_set(err, SL_ECONFIG, "document %zu (from line %zu): %s", doc, first, rest);
}

int wt_manifest_parse(const char *text, size_t len, cJSON **out, sl_error_t *err)
{
    *out = NULL;
    cJSON *all = cJSON_CreateArray();
    const char *end = text + len, *p = text;
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r'))
        i++;
    bool json = i < len && (text[i] == '{' || text[i] == '[');
    size_t doc = 0, line = 1;
    while (p < end) {
        /* The document runs to the next marker line (a JSON text is one document). */
        const char *q = p;
        size_t lines = 0;
        if (json) {
            q = end;
        } else {
            const char *s = p;
            for (;;) {
                const char *nl = memchr(s, '\n', (size_t)(end - s));
                if (!nl) {
                    q = end;
                    break;
                }
                lines++;
                s = nl + 1;
                if (s < end && doc_marker(s, end)) {
                    q = s;
                    break;
                }
            }
        }
        doc++;
        cJSON *v = NULL;
        int rc = sl__cfg_parse(p, (size_t)(q - p), json ? SL_CFG_JSON : SL_CFG_YAML, MAX_NODES_DOC,
                               &v, err);
        if (rc) {
            relocate(err, doc, line);
            cJSON_Delete(all);
            return rc;
        }
        flatten(all, v);
        line += lines;
        p = q;
    }
    *out = all;
    return 0;
}

int wt_manifest_load(const char *path, cJSON **out, sl_error_t *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return sl_error_set(err, SL_ECONFIG, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || st.st_size > (off_t)MAX_MANIFEST) {
        fclose(f);
        return sl_error_set(err, SL_ECONFIG, "file too large (the limit is 64 MiB)");
    }
    size_t cap = (size_t)st.st_size + 1, len = 0;
    char *buf = sl_xmalloc(cap + 1);
    for (;;) {
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0 || len > MAX_MANIFEST)
            break;
        if (len == cap) {
            cap *= 2;
            buf = sl_xrealloc(buf, cap + 1);
        }
    }
    int bad = ferror(f);
    fclose(f);
    int rc;
    if (bad)
        rc = sl_error_set(err, SL_ECONFIG, "cannot read: %s", strerror(errno));
    else if (len > MAX_MANIFEST)
        rc = sl_error_set(err, SL_ECONFIG, "file too large (the limit is 64 MiB)");
    else
        rc = wt_manifest_parse(buf, len, out, err);
    free(buf);
    return rc;
}

size_t wt_manifest_add(wt_objects_t *o, cJSON *objects, const char *origin, wt_diags_t *d)
{
    size_t added = 0, idx = 0;
    cJSON *v;
    while ((v = cJSON_DetachItemFromArray(objects, 0)) != NULL) {
        idx++;
        char q1[96], q2[96], key[320];
        if (!cJSON_IsObject(v)) {
            wt_diag(d, SL_LOG_WARN, "%s: object %zu: not a mapping; skipped", origin, idx);
            cJSON_Delete(v);
            continue;
        }
        const char *kind = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(v, "kind"));
        const char *av = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(v, "apiVersion"));
        bool wrong_version;
        int k = wt_kind_of(kind, av, &wrong_version);
        if (k < 0) {
            if (wrong_version)
                wt_diag(d, SL_LOG_WARN, "%s: %s %s: apiVersion %s is not read (use %s); skipped",
                        origin, kind, wt_quote(q1, sizeof(q1), WT_NAME(v)),
                        wt_quote(q2, sizeof(q2), av ? av : ""),
                        wt_kind_info((wt_kind_t)wt_kind_by_name(kind))->api_version);
            else if (!kind)
                wt_diag(d, SL_LOG_WARN, "%s: object %zu has no kind; skipped", origin, idx);
            cJSON_Delete(v);
            continue;
        }
        if (!wt_obj_key((wt_kind_t)k, v, key, sizeof(key))) {
            wt_diag(d, SL_LOG_WARN, "%s: %s (object %zu) has no metadata.name; skipped", origin,
                    kind, idx);
            cJSON_Delete(v);
            continue;
        }
        if (wt_store_get(&o->kinds[k], key))
            wt_diag(d, SL_LOG_WARN, "%s: %s %s is defined twice; the last one is used", origin,
                    kind, wt_quote(q1, sizeof(q1), key));
        if (wt_store_put_json(&o->kinds[k], v))
            added++;
        cJSON_Delete(v);
    }
    cJSON_Delete(objects);
    return added;
}
