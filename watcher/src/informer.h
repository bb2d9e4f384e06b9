/* An informer keeps one kind's store in sync with the API server: a paginated LIST (limit,
 * continue), then a WATCH from the list's resourceVersion with bookmarks. A closed watch resumes
 * from the last resourceVersion seen; "410 Gone" (an HTTP status or an ERROR event) lists
 * again; other failures retry with exponential backoff and jitter. While it lists again, the
 * store keeps the previous state, and is replaced at once when the new list is complete. */
#ifndef WT_INFORMER_H
#define WT_INFORMER_H

#include <stdbool.h>
#include <uv.h>

#include "kube.h"
#include "objects.h"

typedef enum wt_inf_event { WT_INF_CHANGED, WT_INF_SYNCED } wt_inf_event_t;
typedef void (*wt_informer_cb)(void *arg, wt_kind_t kind, wt_inf_event_t ev);

typedef struct wt_informer_opts {
    wt_kind_t kind;
    const char *namespace;      /* NULL: all namespaces */
    const char *field_selector; /* e.g. "type=kubernetes.io/tls", or NULL */
    unsigned page_size;         /* 0: 500 */
    size_t max_line;            /* one watch event; 0: 8 MiB */
    wt_informer_cb cb;
    void *arg;
} wt_informer_opts_t;

typedef struct wt_informer wt_informer_t;

/* The store must outlive the informer. */
wt_informer_t *wt_informer_new(uv_loop_t *loop, wt_kube_t *k, wt_store_t *store,
                               const wt_informer_opts_t *o);
void wt_informer_start(wt_informer_t *i);
/* Stops (requests cancelled, no more callbacks); memory goes when its timer closed. */
void wt_informer_free(wt_informer_t *i);
bool wt_informer_synced(const wt_informer_t *i);

/* Backoff: base * 2^attempt capped at max, then a random point in [half, whole] (jitter). */
uint64_t wt_backoff_ms(unsigned attempt, uint64_t base_ms, uint64_t max_ms);

#endif
