/* JSON text, byte-compatible with cJSON's unformatted printer. */
#include "jsonw.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/mem.h"

void wt_buf_init(wt_buf_t *b)
{
    b->p = NULL;
    b->len = b->cap = 0;
}

void wt_buf_free(wt_buf_t *b)
{
    free(b->p);
    wt_buf_init(b);
}

static void reserve(wt_buf_t *b, size_t more)
{
    if (b->len + more + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1)
        cap *= 2;
    b->p = sl_xrealloc(b->p, cap);
    b->cap = cap;
}

void wt_buf_put(wt_buf_t *b, const char *s, size_t n)
{
    reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void wt_buf_puts(wt_buf_t *b, const char *s)
{
    wt_buf_put(b, s, strlen(s));
}

void wt_buf_str(wt_buf_t *b, const char *s)
{
    size_t n = strlen(s);
    reserve(b, n * 6 + 2);
    char *o = b->p + b->len;
    *o++ = '"';
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c > 31 && *c != '"' && *c != '\\') {
            *o++ = (char)*c;
            continue;
        }
        *o++ = '\\';
        switch (*c) {
        case '\\':
            *o++ = '\\';
            break;
        case '"':
            *o++ = '"';
            break;
        case '\b':
            *o++ = 'b';
            break;
        case '\f':
            *o++ = 'f';
            break;
        case '\n':
            *o++ = 'n';
            break;
        case '\r':
            *o++ = 'r';
            break;
        case '\t':
            *o++ = 't';
            break;
        default:
            o += snprintf(o, 6, "u%04x", *c);
            break;
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->p);
    b->p[b->len] = '\0';
}

void wt_buf_int(wt_buf_t *b, long v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "%ld", v);
    wt_buf_put(b, tmp, (size_t)n);
}

char *wt_buf_take(wt_buf_t *b)
{
    if (!b->p)
        return sl_xstrdup("");
    char *p = b->p;
    wt_buf_init(b);
    return p;
}
