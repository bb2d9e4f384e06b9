/* Publishing a rendered config: PUT /config to the local sluice (bearer token from a file),
 * retried with backoff until it is applied; a periodic GET /config compares sluice's ETag with
 * the hash it reported for the last push and pushes again when they differ (sluice restarted or
 * someone else changed it). With an output file instead, the config is written atomically. */
#ifndef WT_PUBLISH_H
#define WT_PUBLISH_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "http.h"
#include "render.h"

typedef struct wt_publisher wt_publisher_t;

typedef struct wt_publisher_opts {
    const char *push_url;          /* http://127.0.0.1:10254/config, or NULL with output */
    const char *admin_token_file;  /* or NULL */
    const char *output;            /* file path, or NULL */
    uint64_t check_ms;             /* GET /config period; 0: 5 s */
    void (*on_applied)(void *arg); /* after each successful push or write */
    void *arg;
} wt_publisher_opts_t;

wt_publisher_t *wt_publisher_new(uv_loop_t *loop, wt_http_t *http, const wt_publisher_opts_t *o);
void wt_publisher_free(wt_publisher_t *p);
/* Offers a config (taken). Nothing happens when its hash equals the last one offered. */
void wt_publisher_submit(wt_publisher_t *p, wt_rendered_t *r);
/* A config was applied at least once. */
bool wt_publisher_applied(const wt_publisher_t *p);

#endif
