/* Ingress status: the leader writes status.loadBalancer.ingress of our Ingresses (through the
 * status subresource) from --publish-status-address or --publish-service, and only where it
 * differs. One write at a time: read the Ingress, set its status, PUT it back with its
 * resourceVersion (a conflict is retried at the next sync). */
#ifndef WT_STATUS_H
#define WT_STATUS_H

#include <uv.h>

#include "kube.h"
#include "objects.h"
#include "translate.h"

typedef struct wt_status wt_status_t;

typedef struct wt_status_opts {
    const char *publish_service;   /* "ns/name" or NULL */
    const char *publish_addresses; /* "1.2.3.4,lb.example.com" or NULL */
} wt_status_opts_t;

wt_status_t *wt_status_new(uv_loop_t *loop, wt_kube_t *k, const wt_objects_t *objs,
                           const wt_tr_opts_t *tr, const wt_status_opts_t *o);
/* Compares every Ingress of ours with the addresses to publish and fixes those that differ. */
void wt_status_sync(wt_status_t *s);
/* Drops what is left to write (leadership lost). */
void wt_status_cancel(wt_status_t *s);
void wt_status_free(wt_status_t *s);

/* The status.loadBalancer.ingress list to publish ([] when nothing is known). */
cJSON *wt_status_addresses(const wt_objects_t *objs, const wt_status_opts_t *o);

#endif
