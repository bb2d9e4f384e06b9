/* The built-in gateway filters (SPEC §4 `routes[].filters`): their kinds, the config helpers
 * they share, and the pure functions behind their hooks.
 *
 * Everything is parsed at config time into flat, immutable structures (names pre-lowercased,
 * query parameters pre-encoded, deny words compiled into an automaton). At request time a hook
 * only compares and copies bytes: no config parsing, no malloc; new strings go to the request
 * arena. Each hook is a thin wrapper around a pure function declared here, so the logic is
 * unit-tested without a server.
 *
 * Lifetime: header names and values that filters add point into the filter state, not into the
 * request arena. That state belongs to the config snapshot, which every request holds until it
 * ends (gateway.h), so it outlives any header list it was put into. */
#ifndef SL_GATEWAY_FILTERS_H
#define SL_GATEWAY_FILTERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/gateway.h"

extern const gw_filter_kind_t gw_filter_request_headers;
extern const gw_filter_kind_t gw_filter_response_headers;
extern const gw_filter_kind_t gw_filter_query;
extern const gw_filter_kind_t gw_filter_body_inspect;

/* ---- limits (config errors beyond them) -------------------------------------------------- */

#define GW_HDR_NAME_MAX       256  /* bytes of a header name */
#define GW_HDR_VALUE_MAX      8192 /* bytes of a header value */
#define GW_HDR_OPS_MAX        100  /* entries in one of remove/set/add/copy */
#define GW_QUERY_NAME_MAX     256  /* bytes of a parameter name or remove_prefix entry */
#define GW_QUERY_VALUE_MAX    2048 /* bytes of a parameter value (before encoding) */
#define GW_QUERY_OPS_MAX      64   /* entries in one of remove_prefix/remove/set/append */
#define GW_QUERY_ADDED_MAX    8192 /* encoded bytes that set + append may add to a URI */
#define GW_BODY_WORD_MAX      256  /* bytes of one deny word */
#define GW_BODY_WORDS_MAX     256  /* deny words */
#define GW_BODY_WORDS_BYTES   4096 /* bytes of all deny words together */
#define GW_BODY_MAX_INSPECT   ((size_t)1 << 30) /* largest max_buffer */
#define GW_BODY_DEFAULT_LIMIT ((size_t)1 << 20) /* max_buffer default: 1m */

/* ---- error reasons (sl_session_error) ----------------------------------------------------- */

/* body_inspect found a deny word. The session reports SL_ECUSTOM; without a mapping that is a
 * 500, as in the guide's lesson 12. */
extern const char gw_reason_body_denied[]; /* "body_inspect: denied content" */
/* body_inspect with on_overflow: reject saw more than max_buffer bytes (or a Content-Length
 * above it). The gateway should answer 413. */
extern const char gw_reason_body_too_large[]; /* "body too large" */

/* The HTTP status a filter's custom error reason stands for (413 for gw_reason_body_too_large,
 * compared by content), or 0 when the default mapping of SL_ECUSTOM applies. NULL gives 0. */
int gw_filter_reason_status(const char *reason);

/* ---- config helpers shared by the filters (registry.c) ----------------------------------- */

/* Sets err to "<path>: expected <want>, got <what got is>" (the wording of util/cfg.c) and
 * returns SL_ECONFIG. */
int gw__filter_type_error(sl_error_t *err, const char *path, const char *want, const cJSON *got);
/* Writes s into dst as a quoted, printable string ("a\x0ab"), truncated to fit. Error messages
 * use it so config text can never put control characters into a log line. */
void gw__filter_quote(char *dst, size_t cap, const char *s);
/* The value at obj.key when it is a mapping (*out NULL when absent or null). Errors name the
 * path (written to p) for another type or more than max entries. */
int gw__filter_get_map(const cJSON *obj, const char *path, const char *key, size_t max,
                       const cJSON **out, char *p, size_t pcap, sl_error_t *err);
/* Same for a list. */
int gw__filter_get_list(const cJSON *obj, const char *path, const char *key, size_t max,
                        const cJSON **out, char *p, size_t pcap, sl_error_t *err);
/* Checks that v is a string of min..max bytes without control characters (HTAB allowed when
 * tab_ok). Errors name path. */
int gw__filter_check_str(const cJSON *v, const char *path, size_t min, size_t max, bool tab_ok,
                         sl_error_t *err);
/* True for RFC 9110 tchar. */
bool gw__is_tchar(unsigned char c);
/* ASCII lowercase (header names; independent of the locale). */
static inline unsigned char gw__lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* ---- header edits (request_headers, response_headers) ------------------------------------ */

typedef struct gw_hdr_name {
    char *name;  /* as configured: what is sent */
    char *lower; /* lowercased: what is compared */
    size_t len;
} gw_hdr_name_t;

typedef struct gw_hdr_pair {
    gw_hdr_name_t name;
    char *value;
    size_t value_len;
} gw_hdr_pair_t;

typedef struct gw_hdr_copy {
    gw_hdr_name_t from, to;
} gw_hdr_copy_t;

/* One header-editing program: applied as remove, set, add, copy. */
typedef struct gw_hdr_edit {
    gw_hdr_name_t *remove;
    size_t n_remove;
    gw_hdr_pair_t *set; /* replaces every header of the name by one */
    size_t n_set;
    gw_hdr_pair_t *add; /* appends, keeping existing ones */
    size_t n_add;
    gw_hdr_copy_t *copy; /* first value of from replaces to; nothing when from is absent */
    size_t n_copy;
} gw_hdr_edit_t;

/* Parses {set: {N: V}, add: {N: V}, remove: [N], copy: {FROM: TO}} at path into a malloc'd
 * gw_hdr_edit_t in *state (free with gw_hdr_edit_free; untouched on error). Names must be tokens,
 * values free of control characters; Content-Length and Transfer-Encoding cannot be set, added or
 * copied to (the proxy owns message framing). Returns 0 or SL_ECONFIG with the key path in err.
 * These two are the parse and free of both the request_headers and the response_headers filters. */
int gw_hdr_edit_parse(const cJSON *conf, const char *path, void **state, sl_error_t *err);
void gw_hdr_edit_free(void *state);
/* True when the edit changes nothing. */
bool gw_hdr_edit_is_empty(const gw_hdr_edit_t *e);
/* Applies the edit to h (the array may grow in h->arena; values are not copied). */
void gw_hdr_edit_apply(const gw_hdr_edit_t *e, sl_headers_t *h);

/* ---- query ------------------------------------------------------------------------------- */

typedef struct gw_qstr {
    char *s; /* NUL-terminated */
    size_t len;
} gw_qstr_t;

typedef struct gw_qparam {
    gw_qstr_t name; /* decoded, as configured: what parameters are compared with */
    gw_qstr_t enc;  /* "name=value", percent-encoded: what is written */
} gw_qparam_t;

typedef struct gw_query {
    gw_qstr_t *remove_prefix;
    size_t n_remove_prefix;
    gw_qstr_t *remove;
    size_t n_remove;
    gw_qparam_t *set;
    size_t n_set;
    gw_qparam_t *append;
    size_t n_append;
    size_t added_len; /* encoded bytes of set + append, with separators */
} gw_query_t;

int gw_query_parse(const cJSON *conf, const char *path, gw_query_t **out, sl_error_t *err);
void gw_query_free(gw_query_t *q);
/* The request target with its query rewritten: parameters whose raw or percent-decoded
 * "name=value" starts with a remove_prefix entry, whose decoded name is in remove, and empty
 * ones are dropped; the first parameter named in set gets the set value (later ones of that
 * name are dropped) or it is appended; append entries are appended. The rest keeps its order,
 * the path is untouched and no '?' is left when the query ends up empty. Returns uri itself
 * when it has no query and nothing is added; otherwise the new target, NUL-terminated, in
 * arena. */
sl_str_t gw_query_rewrite(const gw_query_t *q, sl_arena_t *arena, sl_str_t uri);

/* ---- body_inspect ------------------------------------------------------------------------ */

typedef enum gw_overflow { GW_OVERFLOW_PASS, GW_OVERFLOW_REJECT } gw_overflow_t;

typedef struct gw_body_inspect {
    /* Deny words compiled into a DFA (Aho-Corasick with every transition resolved). A state is
     * a row offset into delta; a transition into a word's end is GW_BODY_MATCH. The state is
     * all that has to survive between chunks: it stands for the longest suffix of the bytes
     * seen that is a prefix of a word, i.e. the (longest word - 1)-byte window, in 4 bytes. */
    uint32_t *delta;
    size_t n_states;
    uint16_t n_classes;
    uint8_t cls[256]; /* byte -> class (case folded with ignore_case) */
    size_t limit;     /* max_buffer: bytes inspected */
    gw_overflow_t on_overflow;
    bool ignore_case;
} gw_body_inspect_t;

#define GW_BODY_MATCH UINT32_MAX

/* Per-request state, in the filter scratch (zeroed memory is the start state). */
typedef struct gw_body_scratch {
    uint64_t seen;  /* bytes inspected */
    uint32_t state; /* DFA row offset */
    bool done;      /* past the limit: the rest is not inspected */
} gw_body_scratch_t;

typedef enum gw_body_verdict {
    GW_BODY_PASS = 0,
    GW_BODY_DENIED,    /* a deny word was found */
    GW_BODY_TOO_LARGE, /* more than limit bytes with on_overflow: reject */
} gw_body_verdict_t;

int gw_body_inspect_parse(const cJSON *conf, const char *path, gw_body_inspect_t **out,
                          sl_error_t *err);
void gw_body_inspect_free(gw_body_inspect_t *b);
/* Inspects one chunk, continuing the match across chunks. After a verdict other than PASS the
 * request is over; further calls are not expected. */
gw_body_verdict_t gw_body_inspect_feed(const gw_body_inspect_t *b, gw_body_scratch_t *sc,
                                       const char *data, size_t len);
/* GW_BODY_TOO_LARGE when on_overflow is reject and a Content-Length in h announces more than
 * the limit (answered before anything goes upstream), else GW_BODY_PASS. */
gw_body_verdict_t gw_body_inspect_check_length(const gw_body_inspect_t *b, const sl_headers_t *h);

#endif
