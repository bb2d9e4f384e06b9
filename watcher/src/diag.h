/* Diagnostics: what translation found wrong with the objects (an invalid annotation, a path
 * claimed twice, a Secret that is not a certificate). Translation is pure, so it collects them
 * instead of logging; the caller logs the ones that are new since the previous translation, so
 * a broken object is reported once, not at every change elsewhere. */
#ifndef WT_DIAG_H
#define WT_DIAG_H

#include <stddef.h>

#include "sluice/log.h"

typedef struct wt_diag {
    sl_log_level_t level;
    char *msg;
} wt_diag_t;

typedef struct wt_diags {
    wt_diag_t *items;
    size_t n, cap;
} wt_diags_t;

void wt_diags_init(wt_diags_t *d);
void wt_diags_free(wt_diags_t *d);
void wt_diag(wt_diags_t *d, sl_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* True when d holds a message containing needle (tests). */
int wt_diags_find(const wt_diags_t *d, const char *needle);
/* Logs (under tag) the diagnostics of cur that prev does not have; prev may be NULL. */
void wt_diags_log_new(const wt_diags_t *prev, const wt_diags_t *cur, const char *tag);

#endif
