/* Config trees: YAML (libyaml events) or JSON (cJSON) into one cJSON tree, plus typed
 * accessors that name the key path in every error. */
#include "util/cfg.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "util/mem.h"

#define CFG_MAX_FILE  (64u << 20) /* a config file larger than this is a mistake */
#define CFG_MAX_DEPTH 64

/* ---- YAML -> cJSON ------------------------------------------------------------------------ */

typedef struct anchor {
    char *name;
    cJSON *node; /* owned: a detached copy used to expand aliases */
    struct anchor *next;
} anchor_t;

typedef struct yaml_builder {
    yaml_parser_t parser;
    anchor_t *anchors;
    size_t nodes;
    size_t max_nodes;
    int depth;
    sl_error_t *err;
} yaml_builder_t;

static int yb_fail(yaml_builder_t *b, const yaml_mark_t *mark, const char *what)
{
    return sl_error_set(b->err, SL_ECONFIG, "line %zu column %zu: %s", mark->line + 1,
                        mark->column + 1, what);
}

static size_t count_nodes(const cJSON *n)
{
    size_t c = 1;
    for (const cJSON *ch = n->child; ch; ch = ch->next)
        c += count_nodes(ch);
    return c;
}

static bool str_eq_any(const char *s, const char *const *opts)
{
    for (; *opts; opts++)
        if (strcmp(s, *opts) == 0)
            return true;
    return false;
}

/* YAML 1.2 core schema for plain scalars. */
static cJSON *plain_scalar(const char *s, size_t len)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
    static const char *const trues[] = {"true", "True", "TRUE", NULL};
    static const char *const falses[] = {"false", "False", "FALSE", NULL};
    if (str_eq_any(s, nulls))
        return cJSON_CreateNull();
    if (str_eq_any(s, trues))
        return cJSON_CreateTrue();
    if (str_eq_any(s, falses))
        return cJSON_CreateFalse();

    const char *p = s;
    if (*p == '-' || *p == '+')
        p++;
    if (isdigit((unsigned char)*p)) {
        char *end;
        errno = 0;
        if (p[0] == '0' && (p[1] == 'x' || p[1] == 'o')) {
            int base = p[1] == 'x' ? 16 : 8;
            long long v = strtoll(p + 2, &end, base);
            if (*end == '\0' && end != p + 2 && errno == 0)
                return cJSON_CreateNumber((double)(s[0] == '-' ? -v : v));
        } else {
            long long v = strtoll(s, &end, 10);
            if (*end == '\0' && errno == 0)
                return cJSON_CreateNumber((double)v);
            double d = strtod(s, &end);
            if (*end == '\0' && errno == 0 && strspn(p, "0123456789.eE+-") == strlen(p))
                return cJSON_CreateNumber(d);
        }
    }
    (void)len;
    return cJSON_CreateString(s);
}

static int yb_node(yaml_builder_t *b, yaml_event_t *ev, cJSON **out);

static int yb_register_anchor(yaml_builder_t *b, const yaml_char_t *anchor, const cJSON *node)
{
    if (!anchor)
        return 0;
    anchor_t *a = sl_xcalloc(1, sizeof(*a));
    a->name = sl_xstrdup((const char *)anchor);
    a->node = cJSON_Duplicate(node, 1);
    if (!a->node)
        sl_oom();
    a->next = b->anchors;
    b->anchors = a;
    return 0;
}

static int yb_count(yaml_builder_t *b, const yaml_mark_t *mark, size_t n)
{
    b->nodes += n;
    if (b->nodes > b->max_nodes)
        return yb_fail(b, mark, "document too large (too many nodes)");
    return 0;
}

static int yb_next(yaml_builder_t *b, yaml_event_t *ev)
{
    if (!yaml_parser_parse(&b->parser, ev)) {
        yaml_mark_t m = b->parser.problem_mark;
        char msg[256];
        snprintf(msg, sizeof(msg), "invalid YAML: %s",
                 b->parser.problem ? b->parser.problem : "syntax error");
        return yb_fail(b, &m, msg);
    }
    return 0;
}

static int yb_mapping(yaml_builder_t *b, yaml_event_t *start, cJSON **out)
{
    cJSON *obj = cJSON_CreateObject();
    yaml_char_t *anchor = start->data.mapping_start.anchor;
    yaml_mark_t mark = start->start_mark;
    int rc = 0;
    for (;;) {
        yaml_event_t kev;
        if ((rc = yb_next(b, &kev)))
            break;
        if (kev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&kev);
            break;
        }
        if (kev.type != YAML_SCALAR_EVENT) {
            rc = yb_fail(b, &kev.start_mark, "mapping keys must be plain strings");
            yaml_event_delete(&kev);
            break;
        }
        char *key = sl_xstrdup((const char *)kev.data.scalar.value);
        yaml_mark_t kmark = kev.start_mark;
        yaml_event_delete(&kev);
        if (cJSON_GetObjectItemCaseSensitive(obj, key)) {
            char msg[300];
            snprintf(msg, sizeof(msg), "duplicate key \"%.200s\"", key);
            rc = yb_fail(b, &kmark, msg);
            free(key);
            break;
        }
        yaml_event_t vev;
        if ((rc = yb_next(b, &vev))) {
            free(key);
            break;
        }
        cJSON *val = NULL;
        rc = yb_node(b, &vev, &val);
        yaml_event_delete(&vev);
        if (rc) {
            free(key);
            break;
        }
        cJSON_AddItemToObject(obj, key, val);
        free(key);
    }
    if (rc) {
        cJSON_Delete(obj);
        return rc;
    }
    (void)mark;
    yb_register_anchor(b, anchor, obj);
    *out = obj;
    return 0;
}

static int yb_sequence(yaml_builder_t *b, yaml_event_t *start, cJSON **out)
{
    cJSON *arr = cJSON_CreateArray();
    yaml_char_t *anchor = start->data.sequence_start.anchor;
    int rc = 0;
    for (;;) {
        yaml_event_t ev;
        if ((rc = yb_next(b, &ev)))
            break;
        if (ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        cJSON *val = NULL;
        rc = yb_node(b, &ev, &val);
        yaml_event_delete(&ev);
        if (rc)
            break;
        cJSON_AddItemToArray(arr, val);
    }
    if (rc) {
        cJSON_Delete(arr);
        return rc;
    }
    yb_register_anchor(b, anchor, arr);
    *out = arr;
    return 0;
}

static int yb_node(yaml_builder_t *b, yaml_event_t *ev, cJSON **out)
{
    int rc;
    if ((rc = yb_count(b, &ev->start_mark, 1)))
        return rc;
    switch (ev->type) {
    case YAML_SCALAR_EVENT: {
        const char *v = (const char *)ev->data.scalar.value;
        size_t len = ev->data.scalar.length;
        if (strlen(v) != len)
            return yb_fail(b, &ev->start_mark, "NUL byte in a scalar");
        cJSON *n = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE ? plain_scalar(v, len)
                                                                    : cJSON_CreateString(v);
        if (!n)
            sl_oom();
        yb_register_anchor(b, ev->data.scalar.anchor, n);
        *out = n;
        return 0;
    }
    case YAML_MAPPING_START_EVENT:
    case YAML_SEQUENCE_START_EVENT:
        if (++b->depth > CFG_MAX_DEPTH)
            return yb_fail(b, &ev->start_mark, "nesting too deep");
        rc =
            ev->type == YAML_MAPPING_START_EVENT ? yb_mapping(b, ev, out) : yb_sequence(b, ev, out);
        b->depth--;
        return rc;
    case YAML_ALIAS_EVENT: {
        const char *name = (const char *)ev->data.alias.anchor;
        for (anchor_t *a = b->anchors; a; a = a->next) {
            if (strcmp(a->name, name) == 0) {
                if ((rc = yb_count(b, &ev->start_mark, count_nodes(a->node))))
                    return rc;
                *out = cJSON_Duplicate(a->node, 1);
                if (!*out)
                    sl_oom();
                return 0;
            }
        }
        return yb_fail(b, &ev->start_mark, "alias to an unknown anchor");
    }
    default:
        return yb_fail(b, &ev->start_mark, "unexpected YAML event");
    }
}

static int parse_yaml(const char *text, size_t len, size_t max_nodes, cJSON **out, sl_error_t *err)
{
    yaml_builder_t b = {.max_nodes = max_nodes, .err = err};
    if (!yaml_parser_initialize(&b.parser))
        sl_oom();
    yaml_parser_set_input_string(&b.parser, (const unsigned char *)text, len);
    cJSON *root = NULL;
    int rc = 0;
    int docs = 0;
    for (;;) {
        yaml_event_t ev;
        if ((rc = yb_next(&b, &ev)))
            break;
        yaml_event_type_t t = ev.type;
        if (t == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        if (t == YAML_DOCUMENT_START_EVENT && ++docs > 1) {
            rc = yb_fail(&b, &ev.start_mark, "only one YAML document is allowed");
            yaml_event_delete(&ev);
            break;
        }
        if (t == YAML_MAPPING_START_EVENT || t == YAML_SEQUENCE_START_EVENT ||
            t == YAML_SCALAR_EVENT || t == YAML_ALIAS_EVENT) {
            rc = yb_node(&b, &ev, &root);
            yaml_event_delete(&ev);
            if (rc)
                break;
            continue;
        }
        yaml_event_delete(&ev);
    }
    while (b.anchors) {
        anchor_t *a = b.anchors;
        b.anchors = a->next;
        cJSON_Delete(a->node);
        free(a->name);
        free(a);
    }
    yaml_parser_delete(&b.parser);
    if (rc) {
        cJSON_Delete(root);
        return rc;
    }
    if (!root)
        root = cJSON_CreateObject(); /* an empty file is an empty mapping */
    if (cJSON_IsNull(root)) {
        cJSON_Delete(root);
        root = cJSON_CreateObject();
    }
    *out = root;
    return 0;
}

/* cJSON turns "\u0000" into a string that silently ends there; refuse it instead. */
static bool has_nul_escape(const char *text, size_t len)
{
    for (const char *p = text; (p = memchr(p, '\\', len - (size_t)(p - text))) != NULL; p += 2) {
        if ((size_t)(text + len - p) >= 6 && p[1] == 'u' && p[2] == '0' && p[3] == '0' &&
            p[4] == '0' && p[5] == '0')
            return true;
        if ((size_t)(text + len - p) < 2)
            break;
    }
    return false;
}

static int parse_json(const char *text, size_t len, size_t max_nodes, cJSON **out, sl_error_t *err)
{
    if (has_nul_escape(text, len))
        return sl_error_set(err, SL_ECONFIG, "NUL characters (\\u0000) are not allowed");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        size_t off = end ? (size_t)(end - text) : 0;
        size_t line = 1, col = 1;
        for (size_t i = 0; i < off && i < len; i++) {
            if (text[i] == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        return sl_error_set(err, SL_ECONFIG, "line %zu column %zu: invalid JSON", line, col);
    }
    if (count_nodes(root) > max_nodes) {
        cJSON_Delete(root);
        return sl_error_set(err, SL_ECONFIG, "document too large (too many nodes)");
    }
    *out = root;
    return 0;
}

int sl__cfg_parse(const char *text, size_t len, enum sl_cfg_format fmt, size_t max_nodes,
                  cJSON **out, sl_error_t *err)
{
    *out = NULL;
    if (fmt == SL_CFG_AUTO) {
        size_t i = 0;
        while (i < len && isspace((unsigned char)text[i]))
            i++;
        fmt = (i < len && (text[i] == '{' || text[i] == '[')) ? SL_CFG_JSON : SL_CFG_YAML;
    }
    if (memchr(text, '\0', len))
        return sl_error_set(err, SL_ECONFIG, "NUL byte in config text");
    return fmt == SL_CFG_JSON ? parse_json(text, len, max_nodes, out, err)
                              : parse_yaml(text, len, max_nodes, out, err);
}

int sl__cfg_load_file(const char *path, cJSON **out, sl_error_t *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return sl_error_set(err, SL_ECONFIG, "cannot open %s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int rc = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 65536;
            if (cap > CFG_MAX_FILE + 1)
                cap = CFG_MAX_FILE + 1;
            buf = sl_xrealloc(buf, cap + 1);
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
        if (len > CFG_MAX_FILE) {
            rc = sl_error_set(err, SL_ECONFIG, "%s: file too large", path);
            break;
        }
    }
    if (!rc && ferror(f))
        rc = sl_error_set(err, SL_ECONFIG, "cannot read %s: %s", path, strerror(errno));
    fclose(f);
    if (!rc) {
        buf[len] = '\0';
        size_t pl = strlen(path);
        enum sl_cfg_format fmt =
            (pl > 5 && strcmp(path + pl - 5, ".json") == 0) ? SL_CFG_JSON : SL_CFG_AUTO;
        rc = sl__cfg_parse(buf, len, fmt, 4u << 20, out, err);
        if (rc) {
            char inner[sizeof(err->msg)];
            memcpy(inner, err->msg, sizeof(inner));
            sl_error_set(err, rc, "%s: %s", path, inner);
        }
    }
    free(buf);
    return rc;
}

/* ---- paths and types ---------------------------------------------------------------------- */

/* Paths are written for every section of a big config: plain copies, no printf. Both truncate
 * as snprintf would (at most cap - 1 bytes and a NUL). */
static size_t put_bytes(char *dst, size_t cap, size_t at, const char *s, size_t n)
{
    if (at + 1 >= cap)
        return at;
    if (n > cap - 1 - at)
        n = cap - 1 - at;
    memcpy(dst + at, s, n);
    return at + n;
}

void sl__cfg_path_key(char *dst, size_t cap, const char *parent, const char *key)
{
    if (!cap)
        return;
    size_t at = 0;
    if (parent && *parent) {
        at = put_bytes(dst, cap, at, parent, strlen(parent));
        at = put_bytes(dst, cap, at, ".", 1);
    }
    at = put_bytes(dst, cap, at, key, strlen(key));
    dst[at] = '\0';
}

void sl__cfg_path_index(char *dst, size_t cap, const char *parent, size_t index)
{
    if (!cap)
        return;
    char num[24];
    size_t n = sizeof(num);
    num[--n] = ']';
    do {
        num[--n] = (char)('0' + index % 10);
        index /= 10;
    } while (index);
    num[--n] = '[';
    size_t at = parent ? put_bytes(dst, cap, 0, parent, strlen(parent)) : 0;
    at = put_bytes(dst, cap, at, num + n, sizeof(num) - n);
    dst[at] = '\0';
}

const char *sl__cfg_type_name(const cJSON *v)
{
    if (!v || cJSON_IsNull(v))
        return "null";
    if (cJSON_IsBool(v))
        return "boolean";
    if (cJSON_IsNumber(v))
        return v->valuedouble == floor(v->valuedouble) ? "integer" : "number";
    if (cJSON_IsString(v))
        return "string";
    if (cJSON_IsArray(v))
        return "list";
    if (cJSON_IsObject(v))
        return "mapping";
    return "value";
}

/* A short rendering of a value for messages: strings quoted, containers by type. */
static void describe(const cJSON *v, char *dst, size_t cap)
{
    if (cJSON_IsString(v))
        snprintf(dst, cap, "string \"%.60s\"", v->valuestring);
    else if (cJSON_IsNumber(v))
        snprintf(dst, cap, "%s %g", sl__cfg_type_name(v), v->valuedouble);
    else if (cJSON_IsBool(v))
        snprintf(dst, cap, "boolean %s", cJSON_IsTrue(v) ? "true" : "false");
    else
        snprintf(dst, cap, "%s", sl__cfg_type_name(v));
}

static int type_error(sl_error_t *err, const char *path, const char *want, const cJSON *got)
{
    char d[96];
    describe(got, d, sizeof(d));
    return sl_error_set(err, SL_ECONFIG, "%s: expected %s, got %s", path, want, d);
}

int sl__cfg_expect_object(const cJSON *obj, const char *path, sl_error_t *err)
{
    if (!cJSON_IsObject(obj))
        return type_error(err, path && *path ? path : "(top level)", "a mapping", obj);
    return 0;
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63)
        return 64;
    size_t prev[64], cur[64];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, sizeof(size_t) * (lb + 1));
    }
    return prev[lb];
}

int sl__cfg_check_keys(const cJSON *obj, const char *path, const char *const *known,
                       sl_error_t *err)
{
    int rc = sl__cfg_expect_object(obj, path, err);
    if (rc)
        return rc;
    for (const cJSON *ch = obj->child; ch; ch = ch->next) {
        if (str_eq_any(ch->string, known))
            continue;
        char p[SL_CFG_PATH_MAX];
        sl__cfg_path_key(p, sizeof(p), path, ch->string);
        const char *best = NULL;
        size_t best_d = 3;
        for (const char *const *k = known; *k; k++) {
            size_t d = edit_distance(ch->string, *k);
            if (d < best_d) {
                best_d = d;
                best = *k;
            }
        }
        if (best)
            return sl_error_set(err, SL_ECONFIG, "%s: unknown key (did you mean \"%s\"?)", p, best);
        return sl_error_set(err, SL_ECONFIG, "%s: unknown key", p);
    }
    return 0;
}

/* The value at key (NULL when absent or null). The key path is written to p only when the
 * caller reports something (named()): most values are fine, and a 10,000-route config has
 * a few hundred thousand of them. */
static const cJSON *get(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return (v && !cJSON_IsNull(v)) ? v : NULL;
}

static const char *named(char *p, size_t cap, const char *path, const char *key)
{
    sl__cfg_path_key(p, cap, path, key);
    return p;
}

int sl__cfg_get_bool(const cJSON *obj, const char *path, const char *key, bool *out,
                     sl_error_t *err)
{
    char p[SL_CFG_PATH_MAX];
    const cJSON *v = get(obj, key);
    if (!v)
        return 0;
    if (!cJSON_IsBool(v))
        return type_error(err, named(p, sizeof(p), path, key), "a boolean", v);
    *out = cJSON_IsTrue(v);
    return 0;
}

int sl__cfg_get_int(const cJSON *obj, const char *path, const char *key, long min, long max,
                    long *out, sl_error_t *err)
{
    char p[SL_CFG_PATH_MAX];
    const cJSON *v = get(obj, key);
    if (!v)
        return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
        return type_error(err, named(p, sizeof(p), path, key), "an integer", v);
    if (v->valuedouble < (double)min || v->valuedouble > (double)max)
        return sl_error_set(err, SL_ECONFIG, "%s: %g is out of range [%ld, %ld]",
                            named(p, sizeof(p), path, key), v->valuedouble, min, max);
    *out = (long)v->valuedouble;
    return 0;
}

int sl__cfg_get_strv(const cJSON *obj, const char *path, const char *key, bool allow_empty,
                     const char **out, sl_error_t *err)
{
    char p[SL_CFG_PATH_MAX];
    const cJSON *v = get(obj, key);
    if (!v)
        return 0;
    if (!cJSON_IsString(v))
        return type_error(err, named(p, sizeof(p), path, key), "a string", v);
    if (!allow_empty && !*v->valuestring)
        return sl_error_set(err, SL_ECONFIG, "%s: must not be empty",
                            named(p, sizeof(p), path, key));
    *out = v->valuestring;
    return 0;
}

int sl__cfg_get_str(const cJSON *obj, const char *path, const char *key, bool allow_empty,
                    char **out, sl_error_t *err)
{
    const char *v = NULL;
    int rc = sl__cfg_get_strv(obj, path, key, allow_empty, &v, err);
    if (rc || !v)
        return rc;
    free(*out);
    *out = sl_xstrdup(v);
    return 0;
}

int sl__parse_duration_ms(const char *s, uint64_t *out_ms)
{
    /* A sum of number+unit parts, like Go's ParseDuration: "1m30s", "250ms", "2h". */
    if (!s || !*s)
        return -1;
    uint64_t total = 0;
    const char *p = s;
    while (*p) {
        if (!isdigit((unsigned char)*p))
            return -1;
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        if (errno || end == p || v < 0)
            return -1;
        p = end;
        uint64_t mul;
        if (strncmp(p, "ms", 2) == 0) {
            mul = 1;
            p += 2;
        } else if (*p == 's') {
            mul = 1000;
            p++;
        } else if (*p == 'm') {
            mul = 60000;
            p++;
        } else if (*p == 'h') {
            mul = 3600000;
            p++;
        } else if (*p == '\0' && p == end && total == 0 && s != end) {
            mul = 1000; /* a bare number is seconds */
        } else {
            return -1;
        }
        double ms = v * (double)mul;
        if (ms > 1e15)
            return -1;
        total += (uint64_t)llround(ms);
    }
    *out_ms = total;
    return 0;
}

int sl__cfg_get_duration_ms(const cJSON *obj, const char *path, const char *key, uint64_t *out_ms,
                            sl_error_t *err)
{
    char p[SL_CFG_PATH_MAX];
    const cJSON *v = get(obj, key);
    if (!v)
        return 0;
    if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 1e12) {
        *out_ms = (uint64_t)llround(v->valuedouble * 1000.0);
        return 0;
    }
    if (!cJSON_IsString(v) || sl__parse_duration_ms(v->valuestring, out_ms) != 0) {
        char d[96];
        describe(v, d, sizeof(d));
        return sl_error_set(err, SL_ECONFIG,
                            "%s: expected a duration like \"250ms\", \"5s\" or \"1m\", got %s",
                            named(p, sizeof(p), path, key), d);
    }
    return 0;
}

int sl__parse_size(const char *s, size_t *out)
{
    if (!s || !isdigit((unsigned char)*s))
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    unsigned long long mul = 1;
    switch (tolower((unsigned char)*end)) {
    case '\0':
        break;
    case 'k':
        mul = 1ull << 10;
        break;
    case 'm':
        mul = 1ull << 20;
        break;
    case 'g':
        mul = 1ull << 30;
        break;
    default:
        return -1;
    }
    if (*end) {
        end++;
        if (tolower((unsigned char)*end) == 'b')
            end++;
        if (*end)
            return -1;
    }
    if (v > SIZE_MAX / mul)
        return -1;
    *out = (size_t)(v * mul);
    return 0;
}

int sl__cfg_get_size(const cJSON *obj, const char *path, const char *key, size_t *out,
                     sl_error_t *err)
{
    char p[SL_CFG_PATH_MAX];
    const cJSON *v = get(obj, key);
    if (!v)
        return 0;
    if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble == floor(v->valuedouble) &&
        v->valuedouble < 1e18) {
        *out = (size_t)v->valuedouble;
        return 0;
    }
    if (!cJSON_IsString(v) || sl__parse_size(v->valuestring, out) != 0) {
        char d[96];
        describe(v, d, sizeof(d));
        return sl_error_set(err, SL_ECONFIG,
                            "%s: expected a size like 1024, \"8k\" or \"1m\", got %s",
                            named(p, sizeof(p), path, key), d);
    }
    return 0;
}

void sl__cfg_free_str_list(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

int sl__cfg_get_str_list(const cJSON *obj, const char *path, const char *key, char ***out,
                         size_t *n_out, sl_error_t *err)
{
    char p[SL_CFG_PATH_MAX];
    const cJSON *v = get(obj, key);
    if (!v)
        return 0;
    if (!cJSON_IsArray(v))
        return type_error(err, named(p, sizeof(p), path, key), "a list of strings", v);
    size_t n = (size_t)cJSON_GetArraySize(v), i = 0;
    char **list = sl_xcalloc(n ? n : 1, sizeof(char *));
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        if (!cJSON_IsString(e) || !*e->valuestring) {
            char ep[SL_CFG_PATH_MAX];
            sl__cfg_path_index(ep, sizeof(ep), named(p, sizeof(p), path, key), i);
            sl__cfg_free_str_list(list, i);
            return type_error(err, ep, "a non-empty string", e);
        }
        list[i] = sl_xstrdup(e->valuestring);
    }
    sl__cfg_free_str_list(*out, *n_out);
    *out = list;
    *n_out = n;
    return 0;
}
