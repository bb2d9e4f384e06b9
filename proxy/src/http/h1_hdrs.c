/* HTTP/1.x header lines as llhttp reports them, for both directions (h1_down's requests and
 * h1_up's responses): offsets while parsing, strings once the header block is complete. */
#include <string.h>

#include "http/proxy_impl.h"
#include "util/mem.h"

#define TRAILERS_MAX     64
#define TRAILER_PART_MAX 8192

int sl__h1_hdrs_field(h1_hdrs_t *h, uint32_t off, size_t len, size_t max)
{
    if (h->phase != 1) {
        if (h->n >= max)
            return -1;
        if (h->n == h->cap) {
            h->cap = h->cap ? h->cap * 2 : 32;
            h->v = sl_xrealloc(h->v, h->cap * sizeof(*h->v));
        }
        h->v[h->n++] = (hdr_off_t){.name_off = off};
        h->phase = 1;
    }
    h->v[h->n - 1].name_len += (uint32_t)len;
    return 0;
}

int sl__h1_hdrs_value(h1_hdrs_t *h, uint32_t off, size_t len)
{
    hdr_off_t *e = &h->v[h->n - 1];
    if (h->phase != 2) {
        e->val_off = off;
        h->phase = 2;
    } else if (off != e->val_off + e->val_len) {
        return -1;
    }
    e->val_len += (uint32_t)len;
    return 0;
}

int sl__h1_hdrs_trailer(h1_hdrs_t *h, sl_headers_t *t, sl_arena_t *a, const char *at, size_t len,
                        bool value)
{
    if (!t->arena)
        t->arena = a;
    if (!value && h->phase != 1) {
        if (t->n >= TRAILERS_MAX)
            return -1;
        sl_headers_add_n(t, at, len, "", 0);
    } else {
        sl_header_t *e = &t->items[t->n - 1];
        sl_str_t *f = value ? &e->value : &e->name;
        if (f->len + len > TRAILER_PART_MAX)
            return -1;
        char *n = sl_arena_alloc(t->arena, f->len + len + 1);
        memcpy(n, f->ptr, f->len);
        memcpy(n + f->len, at, len);
        f->ptr = n;
        f->len += len;
    }
    h->phase = value ? 2 : 1;
    return 0;
}

void sl__h1_hdrs_publish(const h1_hdrs_t *h, const char *base, sl_headers_t *out, sl_arena_t *a)
{
    out->arena = a;
    out->n = out->cap = h->n;
    out->items = sl_arena_alloc(a, (h->n ? h->n : 1) * sizeof(sl_header_t));
    for (size_t i = 0; i < h->n; i++) {
        const hdr_off_t *e = &h->v[i];
        const char *v = base + e->val_off;
        size_t vl = e->val_len;
        while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
            vl--;
        out->items[i].name = (sl_str_t){base + e->name_off, e->name_len};
        out->items[i].value = (sl_str_t){v, vl};
    }
}
