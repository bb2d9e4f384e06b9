/* HTTP/2 helpers shared by the client and upstream sides (see h2_common.h). */
#include "http/h2_common.h"

#include <stdlib.h>
#include <string.h>

#include "http/proxy_impl.h"
#include "util/mem.h"

/* ---- output -------------------------------------------------------------------------------- */

void h2_out_put(h2_out_t *o, const void *p, size_t n)
{
    if (o->len + n > o->cap) {
        size_t cap = o->cap ? o->cap : 16384;
        while (cap < o->len + n)
            cap *= 2;
        o->buf = sl_xrealloc(o->buf, cap);
        o->cap = cap;
    }
    memcpy(o->buf + o->len, p, n);
    o->len += n;
}

const char *h2_out_swap(h2_out_t *o, size_t *n)
{
    if (o->writing || !o->len)
        return NULL;
    char *b = o->fly;
    size_t cap = o->fly_cap;
    o->fly = o->buf;
    o->fly_cap = o->cap;
    o->fly_len = o->len;
    o->buf = b;
    o->cap = cap;
    o->len = 0;
    o->writing = true;
    *n = o->fly_len;
    return o->fly;
}

void h2_out_free(h2_out_t *o)
{
    free(o->buf);
    free(o->fly);
    memset(o, 0, sizeof(*o));
}

/* ---- body pieces ----------------------------------------------------------------------------- */

static void push(h2_queue_t *q, const char *p, size_t len, int tag, bool end)
{
    if (q->len == q->cap) {
        q->cap = q->cap ? q->cap * 2 : 8;
        q->q = sl_xrealloc(q->q, q->cap * sizeof(*q->q));
    }
    q->q[q->len++] = (h2_piece_t){p, len, tag, end};
    q->bytes += len;
}

void h2_queue_batch(h2_queue_t *q, const uv_buf_t *body, unsigned n, int tag)
{
    size_t first = q->len;
    for (unsigned i = 0; i < n; i++)
        if (body[i].len)
            push(q, body[i].base, body[i].len, tag, false);
    if (q->len == first)
        push(q, NULL, 0, tag, true);
    else
        q->q[q->len - 1].batch_end = true;
}

void h2_queue_pop_markers(h2_queue_t *q, void (*done)(void *arg, int tag), void *arg)
{
    while (q->head < q->len && q->q[q->head].len == 0) {
        if (q->q[q->head].batch_end)
            done(arg, q->q[q->head].tag);
        q->head++;
    }
    if (q->head == q->len)
        q->head = q->len = 0;
}

void h2_queue_take(h2_queue_t *q, h2_out_t *o, size_t n, void (*done)(void *arg, int tag),
                   void *arg)
{
    while (n && q->head < q->len) {
        h2_piece_t *pc = &q->q[q->head];
        size_t k = pc->len < n ? pc->len : n;
        h2_out_put(o, pc->p, k);
        pc->p += k;
        pc->len -= k;
        n -= k;
        q->bytes -= k;
        if (pc->len == 0) {
            if (pc->batch_end)
                done(arg, pc->tag);
            q->head++;
        }
    }
    h2_queue_pop_markers(q, done, arg);
}

void h2_queue_clear(h2_queue_t *q)
{
    q->head = q->len = 0;
    q->bytes = 0;
}

void h2_queue_free(h2_queue_t *q)
{
    free(q->q);
    memset(q, 0, sizeof(*q));
}

/* ---- fields ---------------------------------------------------------------------------------- */

bool h2_field_forbidden(sl_str_t name, sl_str_t value)
{
    if (sl_str_ieq_cstr(name, "te"))
        return !sl_str_ieq_cstr(value, "trailers");
    return sl__is_hop_by_hop(name);
}

static char *lower(sl_arena_t *a, sl_str_t s)
{
    char *out = sl_arena_alloc(a, s.len + 1);
    for (size_t i = 0; i < s.len; i++) {
        char ch = s.ptr[i];
        out[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);
    }
    out[s.len] = '\0';
    return out;
}

size_t h2_nv_from_headers(sl_arena_t *a, const sl_headers_t *h, nghttp2_nv *nv, bool skip_host)
{
    size_t k = 0;
    for (size_t i = 0; i < h->n; i++) {
        const sl_header_t *e = &h->items[i];
        if (!e->name.len || h2_field_forbidden(e->name, e->value) ||
            (skip_host && sl_str_ieq_cstr(e->name, "host")))
            continue;
        nv[k++] = (nghttp2_nv){(uint8_t *)lower(a, e->name), (uint8_t *)e->value.ptr, e->name.len,
                               e->value.len, NGHTTP2_NV_FLAG_NONE};
    }
    return k;
}

void h2_trailers_copy(h2_trailers_t *t, const sl_headers_t *h)
{
    size_t bytes = 0;
    for (size_t i = 0; i < h->n; i++)
        bytes += h->items[i].name.len + h->items[i].value.len;
    t->nv = sl_xcalloc(h->n ? h->n : 1, sizeof(nghttp2_nv));
    t->mem = sl_xmalloc(bytes ? bytes : 1);
    char *p = t->mem;
    size_t k = 0;
    for (size_t i = 0; i < h->n; i++) {
        const sl_header_t *e = &h->items[i];
        if (!e->name.len || h2_field_forbidden(e->name, e->value))
            continue;
        char *name = p;
        for (size_t j = 0; j < e->name.len; j++) {
            char ch = e->name.ptr[j];
            *p++ = (char)(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);
        }
        char *value = p;
        memcpy(p, e->value.ptr, e->value.len);
        p += e->value.len;
        t->nv[k++] = (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, e->name.len, e->value.len,
                                  NGHTTP2_NV_FLAG_NONE};
    }
    t->n = k;
}

void h2_trailers_free(h2_trailers_t *t)
{
    free(t->nv);
    free(t->mem);
    memset(t, 0, sizeof(*t));
}
