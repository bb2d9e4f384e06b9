/* sluice — HTTP messages: string views, arenas, header lists, request and response headers.
 *
 * Strings are views ({ptr, len}, not NUL-terminated) into buffers the request owns: the bytes
 * the client sent, or the request's arena. Changing a header copies the new text into the
 * arena; nothing is freed piecemeal — the arena goes at the end of the request. */
#ifndef SLUICE_HTTP_H
#define SLUICE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sl_str {
    const char *ptr;
    size_t len;
} sl_str_t;

#define SL_STR(lit) ((sl_str_t){(lit), sizeof(lit) - 1})
sl_str_t sl_str(const char *cstr);
bool sl_str_eq(sl_str_t a, sl_str_t b);
/* ASCII case-insensitive comparison (header names). */
bool sl_str_ieq(sl_str_t a, sl_str_t b);
bool sl_str_ieq_cstr(sl_str_t a, const char *b);
bool sl_str_starts_with(sl_str_t s, const char *prefix);
/* Index of needle in s, or -1. */
long sl_str_find(sl_str_t s, const char *needle, size_t needle_len);

/* ---- arena ------------------------------------------------------------------------------- */

typedef struct sl_arena sl_arena_t;
/* Memory that lives until the arena is reset (end of request). Never returns NULL. */
void *sl_arena_alloc(sl_arena_t *a, size_t n);
char *sl_arena_strndup(sl_arena_t *a, const char *s, size_t n);
char *sl_arena_printf(sl_arena_t *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- headers ----------------------------------------------------------------------------- */

typedef struct sl_header {
    sl_str_t name;  /* as received (case kept) */
    sl_str_t value; /* without surrounding whitespace */
} sl_header_t;

typedef struct sl_headers {
    sl_header_t *items;
    size_t n, cap;
    sl_arena_t *arena; /* where new names, values and a grown array go */
} sl_headers_t;

/* First value of name (case-insensitive), or NULL. */
const sl_str_t *sl_headers_get(const sl_headers_t *h, const char *name);
/* Number of headers called name. */
size_t sl_headers_count(const sl_headers_t *h, const char *name);
/* Replaces every header called name by one with value (copied). */
void sl_headers_set(sl_headers_t *h, const char *name, const char *value);
void sl_headers_set_n(sl_headers_t *h, const char *name, size_t nlen, const char *value,
                      size_t vlen);
/* Appends a header (copied), keeping existing ones. */
void sl_headers_add(sl_headers_t *h, const char *name, const char *value);
void sl_headers_add_n(sl_headers_t *h, const char *name, size_t nlen, const char *value,
                      size_t vlen);
/* Removes every header called name; returns how many. */
size_t sl_headers_remove(sl_headers_t *h, const char *name);
/* True when a comma-separated header (e.g. Connection) lists token (case-insensitive). */
bool sl_headers_has_token(const sl_headers_t *h, const char *name, const char *token);

/* ---- request and response headers ------------------------------------------------------- */

typedef struct sl_request_header {
    sl_str_t method; /* "GET" */
    sl_str_t uri;    /* request target as sent upstream: path and query ("/a/b?x=1") */
    int version;     /* 10, 11 or 20 */
    sl_headers_t headers;
} sl_request_header_t;

/* The path part of uri (before '?') and the query (after '?', empty when absent). */
sl_str_t sl_request_path(const sl_request_header_t *req);
sl_str_t sl_request_query(const sl_request_header_t *req);
/* Replaces the request target (copied into the arena). */
void sl_request_set_uri(sl_request_header_t *req, const char *uri, size_t len);
void sl_request_set_method(sl_request_header_t *req, const char *method);

typedef struct sl_response_header {
    int status;
    sl_str_t reason; /* empty: the standard phrase for status */
    int version;
    sl_headers_t headers;
} sl_response_header_t;

/* The standard reason phrase ("Not Found"), or "" for unknown codes. */
const char *sl_http_reason(int status);

#endif
