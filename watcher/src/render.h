/* A translated config as the bytes sent to sluice: canonical JSON (object keys sorted
 * recursively, no spaces) and its hashes. */
#ifndef WT_RENDER_H
#define WT_RENDER_H

#include <cjson/cJSON.h>

#include "translate.h"

typedef struct wt_rendered {
    char *text; /* the PUT /config body (canonical, unformatted) */
    size_t len;
    char hash[65];    /* sha256 of text: the watcher's "did anything change" */
    char gw_hash[65]; /* what sluice reports for this config (its dynamic keys only) */
} wt_rendered_t;

/* Sorts every object's keys, recursively (top level too). */
void wt_canonicalize(cJSON *v);
/* Canonicalizes doc (in place) and renders it. The top-level keys come in the gateway's
 * dynamic-key order, then the others. */
void wt_render(cJSON *doc, wt_rendered_t *out);
/* Renders a translated config (its items are canonical already): upstreams and routes in the
 * gateway's dynamic-key order, then certificates. */
void wt_render_config(const wt_config_t *c, wt_rendered_t *out);
void wt_rendered_free(wt_rendered_t *r);
/* sha256 hex of bytes. */
void wt_sha256_hex(const void *p, size_t n, char out[65]);

#endif
