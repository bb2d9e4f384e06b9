/* Diagnostics collected by translation, logged once. */
#include "diag.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/hmap.h"
#include "util/mem.h"

void wt_diags_init(wt_diags_t *d)
{
    d->items = NULL;
    d->n = d->cap = 0;
}

void wt_diags_free(wt_diags_t *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->items[i].msg);
    free(d->items);
    wt_diags_init(d);
}

void wt_diag(wt_diags_t *d, sl_log_level_t level, const char *fmt, ...)
{
    if (!d)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 16;
        d->items = sl_xrealloc(d->items, d->cap * sizeof(*d->items));
    }
    d->items[d->n].level = level;
    d->items[d->n].msg = sl_xstrdup(buf);
    d->n++;
}

int wt_diags_find(const wt_diags_t *d, const char *needle)
{
    for (size_t i = 0; i < d->n; i++)
        if (strstr(d->items[i].msg, needle))
            return 1;
    return 0;
}

void wt_diags_log_new(const wt_diags_t *prev, const wt_diags_t *cur, const char *tag)
{
    sl_hmap_t seen;
    sl_hmap_init(&seen);
    for (size_t i = 0; prev && i < prev->n; i++)
        *sl_hmap_put(&seen, prev->items[i].msg, strlen(prev->items[i].msg)) = (void *)1;
    for (size_t i = 0; i < cur->n; i++) {
        const wt_diag_t *e = &cur->items[i];
        if (sl_hmap_get(&seen, e->msg, strlen(e->msg)))
            continue;
        if (sl_log_enabled(e->level))
            sl_log_write(e->level, tag, "%s", e->msg);
    }
    sl_hmap_free(&seen);
}
