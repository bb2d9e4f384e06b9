/* The registry of built-in filter kinds, and the config-reading helpers every kind shares
 * (same error wording as util/cfg.c, so filter errors read like the rest of the config). */
#include <stdio.h>
#include <string.h>

#include "gateway/filters/filters.h"
#include "util/cfg.h"

static const gw_filter_kind_t *const kinds[] = {
    &gw_filter_request_headers,
    &gw_filter_response_headers,
    &gw_filter_query,
    &gw_filter_body_inspect,
};

/* Kept in table order; a unit test checks that the two agree. */
static const char kind_names[] = "request_headers, response_headers, query, body_inspect";

const gw_filter_kind_t *gw_filter_kind_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (strcmp(kinds[i]->name, name) == 0)
            return kinds[i];
    return NULL;
}

const char *gw_filter_kind_names(void)
{
    return kind_names;
}

const char gw_reason_body_denied[] = "body_inspect: denied content";
const char gw_reason_body_too_large[] = "body too large";

int gw_filter_reason_status(const char *reason)
{
    if (reason && strcmp(reason, gw_reason_body_too_large) == 0)
        return 413;
    return 0;
}

/* ---- config helpers ---------------------------------------------------------------------- */

void gw__filter_quote(char *dst, size_t cap, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (cap < 3) {
        if (cap)
            dst[0] = '\0';
        return;
    }
    dst[o++] = '"';
    for (; *s && o + 6 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f || c == '"' || c == '\\') {
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 15];
        } else {
            dst[o++] = (char)c;
        }
    }
    if (*s && o + 4 < cap) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o++] = '"';
    dst[o] = '\0';
}

int gw__filter_type_error(sl_error_t *err, const char *path, const char *want, const cJSON *got)
{
    char d[96];
    if (cJSON_IsString(got)) {
        char q[72];
        gw__filter_quote(q, sizeof(q), got->valuestring);
        snprintf(d, sizeof(d), "string %s", q);
    } else if (cJSON_IsNumber(got)) {
        snprintf(d, sizeof(d), "%s %g", sl__cfg_type_name(got), got->valuedouble);
    } else if (cJSON_IsBool(got)) {
        snprintf(d, sizeof(d), "boolean %s", cJSON_IsTrue(got) ? "true" : "false");
    } else {
        snprintf(d, sizeof(d), "%s", sl__cfg_type_name(got));
    }
    return sl_error_set(err, SL_ECONFIG, "%s: expected %s, got %s", path, want, d);
}

static int get_container(const cJSON *obj, const char *path, const char *key, size_t max, bool list,
                         const cJSON **out, char *p, size_t pcap, sl_error_t *err)
{
    sl__cfg_path_key(p, pcap, path, key);
    *out = NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v))
        return 0;
    if (list ? !cJSON_IsArray(v) : !cJSON_IsObject(v))
        return gw__filter_type_error(err, p, list ? "a list" : "a mapping", v);
    size_t n = (size_t)cJSON_GetArraySize(v);
    if (n > max)
        return sl_error_set(err, SL_ECONFIG, "%s: too many entries (%zu, at most %zu)", p, n, max);
    *out = v;
    return 0;
}

int gw__filter_get_map(const cJSON *obj, const char *path, const char *key, size_t max,
                       const cJSON **out, char *p, size_t pcap, sl_error_t *err)
{
    return get_container(obj, path, key, max, false, out, p, pcap, err);
}

int gw__filter_get_list(const cJSON *obj, const char *path, const char *key, size_t max,
                        const cJSON **out, char *p, size_t pcap, sl_error_t *err)
{
    return get_container(obj, path, key, max, true, out, p, pcap, err);
}

int gw__filter_check_str(const cJSON *v, const char *path, size_t min, size_t max, bool tab_ok,
                         sl_error_t *err)
{
    if (!cJSON_IsString(v))
        return gw__filter_type_error(err, path, "a string", v);
    size_t len = strlen(v->valuestring);
    if (len < min)
        return sl_error_set(err, SL_ECONFIG, "%s: must not be empty", path);
    if (len > max)
        return sl_error_set(err, SL_ECONFIG, "%s: too long (%zu bytes, at most %zu)", path, len,
                            max);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)v->valuestring[i];
        if ((c < 0x20 && !(c == '\t' && tab_ok)) || c == 0x7f)
            return sl_error_set(err, SL_ECONFIG,
                                "%s: control character 0x%02x at byte %zu is not allowed", path, c,
                                i);
    }
    return 0;
}

bool gw__is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}
