/* String views, header lists, request/response header helpers, reason phrases. */
#include <string.h>
#include <strings.h>

#include "sluice/http.h"
#include "http/proxy_impl.h"
#include "util/arena.h"

sl_str_t sl_str(const char *cstr)
{
    return (sl_str_t){cstr, cstr ? strlen(cstr) : 0};
}

bool sl_str_eq(sl_str_t a, sl_str_t b)
{
    return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0;
}

bool sl_str_ieq(sl_str_t a, sl_str_t b)
{
    return a.len == b.len && strncasecmp(a.ptr, b.ptr, a.len) == 0;
}

bool sl_str_ieq_cstr(sl_str_t a, const char *b)
{
    size_t n = strlen(b);
    return a.len == n && strncasecmp(a.ptr, b, n) == 0;
}

bool sl_str_starts_with(sl_str_t s, const char *prefix)
{
    size_t n = strlen(prefix);
    return s.len >= n && memcmp(s.ptr, prefix, n) == 0;
}

long sl_str_find(sl_str_t s, const char *needle, size_t nlen)
{
    if (nlen == 0)
        return 0;
    if (s.len < nlen)
        return -1;
    const char *p = memmem(s.ptr, s.len, needle, nlen);
    return p ? (long)(p - s.ptr) : -1;
}

/* ---- header lists ------------------------------------------------------------------------ */

static bool name_is(const sl_header_t *h, const char *name, size_t nlen)
{
    return h->name.len == nlen && strncasecmp(h->name.ptr, name, nlen) == 0;
}

const sl_str_t *sl_headers_get(const sl_headers_t *h, const char *name)
{
    size_t nlen = strlen(name);
    for (size_t i = 0; i < h->n; i++)
        if (name_is(&h->items[i], name, nlen))
            return &h->items[i].value;
    return NULL;
}

size_t sl_headers_count(const sl_headers_t *h, const char *name)
{
    size_t nlen = strlen(name), c = 0;
    for (size_t i = 0; i < h->n; i++)
        c += name_is(&h->items[i], name, nlen);
    return c;
}

static void grow(sl_headers_t *h)
{
    size_t cap = h->cap ? h->cap * 2 : 16;
    sl_header_t *items = sl_arena_alloc(h->arena, cap * sizeof(*items));
    if (h->n)
        memcpy(items, h->items, h->n * sizeof(*items));
    h->items = items;
    h->cap = cap;
}

void sl_headers_add_n(sl_headers_t *h, const char *name, size_t nlen, const char *value,
                      size_t vlen)
{
    if (h->n == h->cap)
        grow(h);
    sl_header_t *e = &h->items[h->n++];
    e->name = (sl_str_t){sl_arena_strndup(h->arena, name, nlen), nlen};
    e->value = (sl_str_t){sl_arena_strndup(h->arena, value, vlen), vlen};
}

void sl_headers_add(sl_headers_t *h, const char *name, const char *value)
{
    sl_headers_add_n(h, name, strlen(name), value, strlen(value));
}

static size_t remove_n(sl_headers_t *h, const char *name, size_t nlen)
{
    size_t w = 0, removed = 0;
    for (size_t r = 0; r < h->n; r++) {
        if (name_is(&h->items[r], name, nlen)) {
            removed++;
            continue;
        }
        h->items[w++] = h->items[r];
    }
    h->n = w;
    return removed;
}

size_t sl_headers_remove(sl_headers_t *h, const char *name)
{
    return remove_n(h, name, strlen(name));
}

void sl_headers_set_n(sl_headers_t *h, const char *name, size_t nlen, const char *value,
                      size_t vlen)
{
    /* Replace the first in place (keeps its position), drop the others. */
    for (size_t i = 0; i < h->n; i++) {
        if (name_is(&h->items[i], name, nlen)) {
            h->items[i].value = (sl_str_t){sl_arena_strndup(h->arena, value, vlen), vlen};
            size_t w = i + 1;
            for (size_t r = i + 1; r < h->n; r++)
                if (!name_is(&h->items[r], name, nlen))
                    h->items[w++] = h->items[r];
            h->n = w;
            return;
        }
    }
    sl_headers_add_n(h, name, nlen, value, vlen);
}

void sl_headers_set(sl_headers_t *h, const char *name, const char *value)
{
    sl_headers_set_n(h, name, strlen(name), value, strlen(value));
}

bool sl__str_has_token(sl_str_t list, sl_str_t token)
{
    const char *p = list.ptr, *end = p + list.len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        const char *t = p;
        while (p < end && *p != ',')
            p++;
        const char *te = p;
        while (te > t && (te[-1] == ' ' || te[-1] == '\t'))
            te--;
        if ((size_t)(te - t) == token.len && strncasecmp(t, token.ptr, token.len) == 0)
            return true;
    }
    return false;
}

bool sl_headers_has_token(const sl_headers_t *h, const char *name, const char *token)
{
    size_t nlen = strlen(name);
    sl_str_t tok = sl_str(token);
    for (size_t i = 0; i < h->n; i++)
        if (name_is(&h->items[i], name, nlen) && sl__str_has_token(h->items[i].value, tok))
            return true;
    return false;
}

/* ---- request / response ------------------------------------------------------------------ */

sl_str_t sl_request_path(const sl_request_header_t *req)
{
    const char *q = memchr(req->uri.ptr, '?', req->uri.len);
    return (sl_str_t){req->uri.ptr, q ? (size_t)(q - req->uri.ptr) : req->uri.len};
}

sl_str_t sl_request_query(const sl_request_header_t *req)
{
    const char *q = memchr(req->uri.ptr, '?', req->uri.len);
    if (!q)
        return (sl_str_t){req->uri.ptr + req->uri.len, 0};
    return (sl_str_t){q + 1, req->uri.len - (size_t)(q + 1 - req->uri.ptr)};
}

void sl_request_set_uri(sl_request_header_t *req, const char *uri, size_t len)
{
    req->uri = (sl_str_t){sl_arena_strndup(req->headers.arena, uri, len), len};
}

void sl_request_set_method(sl_request_header_t *req, const char *method)
{
    size_t n = strlen(method);
    req->method = (sl_str_t){sl_arena_strndup(req->headers.arena, method, n), n};
}

const char *sl_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 103:
        return "Early Hints";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 203:
        return "Non-Authoritative Information";
    case 204:
        return "No Content";
    case 205:
        return "Reset Content";
    case 206:
        return "Partial Content";
    case 300:
        return "Multiple Choices";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 402:
        return "Payment Required";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 407:
        return "Proxy Authentication Required";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 416:
        return "Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 421:
        return "Misdirected Request";
    case 422:
        return "Unprocessable Content";
    case 425:
        return "Too Early";
    case 426:
        return "Upgrade Required";
    case 428:
        return "Precondition Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 451:
        return "Unavailable For Legal Reasons";
    case 499:
        return "Client Closed Request";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "";
    }
}
