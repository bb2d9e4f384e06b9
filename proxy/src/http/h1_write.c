/* HTTP/1.1 serialization: request and response heads, chunk headers, error bodies. */
#include <stdio.h>
#include <string.h>

#include "http/proxy_impl.h"

static size_t headers_len(const sl_headers_t *h)
{
    size_t n = 0;
    for (size_t i = 0; i < h->n; i++)
        n += h->items[i].name.len + h->items[i].value.len + 4;
    return n;
}

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

static char *put_headers(char *p, const sl_headers_t *h)
{
    for (size_t i = 0; i < h->n; i++) {
        const sl_header_t *e = &h->items[i];
        p = put(p, e->name.ptr, e->name.len);
        *p++ = ':';
        *p++ = ' ';
        p = put(p, e->value.ptr, e->value.len);
        *p++ = '\r';
        *p++ = '\n';
    }
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

uv_buf_t sl__h1_serialize_request(sl_arena_t *a, const sl_request_header_t *req)
{
    size_t n = req->method.len + 1 + req->uri.len + 11 + headers_len(&req->headers) + 2;
    char *buf = sl_arena_alloc(a, n);
    char *p = put(buf, req->method.ptr, req->method.len);
    *p++ = ' ';
    p = put(p, req->uri.ptr, req->uri.len);
    p = put(p, " HTTP/1.1\r\n", 11);
    p = put_headers(p, &req->headers);
    return uv_buf_init(buf, (unsigned)(p - buf));
}

uv_buf_t sl__h1_serialize_response(sl_arena_t *a, const sl_response_header_t *resp)
{
    const char *reason = resp->reason.len ? NULL : sl_http_reason(resp->status);
    size_t rlen = reason ? strlen(reason) : resp->reason.len;
    size_t n = 13 + rlen + 2 + headers_len(&resp->headers) + 2;
    char *buf = sl_arena_alloc(a, n + 8);
    int status = resp->status;
    if (status < 100 || status > 999)
        status = 500;
    char *p = put(buf, resp->version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ", 9);
    *p++ = (char)('0' + status / 100);
    *p++ = (char)('0' + status / 10 % 10);
    *p++ = (char)('0' + status % 10);
    *p++ = ' ';
    p = put(p, reason ? reason : resp->reason.ptr, rlen);
    *p++ = '\r';
    *p++ = '\n';
    p = put_headers(p, &resp->headers);
    return uv_buf_init(buf, (unsigned)(p - buf));
}

uv_buf_t sl__h1_chunk_header(sl_arena_t *a, size_t n)
{
    char *buf = sl_arena_alloc(a, 24);
    int len = snprintf(buf, 24, "%zx\r\n", n);
    return uv_buf_init(buf, (unsigned)len);
}

uv_buf_t sl__h1_last_chunk(sl_arena_t *a, const sl_headers_t *trailers)
{
    if (!trailers || !trailers->n)
        return uv_buf_init((char *)"0\r\n\r\n", 5);
    char *buf = sl_arena_alloc(a, 3 + headers_len(trailers) + 2);
    char *p = put(buf, "0\r\n", 3);
    p = put_headers(p, trailers);
    return uv_buf_init(buf, (unsigned)(p - buf));
}

/* Error text is ours (never client input), but escape it anyway so a message can never
 * break the JSON or HTML around it. */
static const char *escape(sl_arena_t *a, const char *s, bool html)
{
    size_t n = strlen(s);
    char *out = sl_arena_alloc(a, n * 6 + 1), *p = out;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (!html && (c == '"' || c == '\\')) {
            *p++ = '\\';
            *p++ = (char)c;
        } else if (!html && c < 0x20) {
            p += snprintf(p, 7, "\\u%04x", c);
        } else if (html && (c == '<' || c == '>' || c == '&' || c == '"')) {
            const char *ent = c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '&' ? "&amp;" : "&quot;";
            p = put(p, ent, strlen(ent));
        } else {
            *p++ = (char)c;
        }
    }
    *p = '\0';
    return out;
}

const char *sl__error_body(sl_arena_t *a, const char *format, int status, const char *message,
                           const char **ctype, size_t *len)
{
    if (!message || !*message)
        message = sl_http_reason(status);
    char *body;
    if (format && strcmp(format, "html") == 0) {
        const char *m = escape(a, message, true);
        body = sl_arena_printf(a,
                               "<html>\n<head><title>%d %s</title></head>\n<body>\n<center><h1>%d "
                               "%s</h1></center>\n<p>%s</p>\n</body>\n</html>\n",
                               status, sl_http_reason(status), status, sl_http_reason(status), m);
        *ctype = "text/html; charset=utf-8";
    } else if (format && strcmp(format, "text") == 0) {
        body = sl_arena_printf(a, "%d %s: %s\n", status, sl_http_reason(status), message);
        *ctype = "text/plain; charset=utf-8";
    } else {
        body = sl_arena_printf(a, "{\"status\":\"error\",\"code\":%d,\"message\":\"%s\"}", status,
                               escape(a, message, false));
        *ctype = "application/json";
    }
    *len = strlen(body);
    return body;
}
