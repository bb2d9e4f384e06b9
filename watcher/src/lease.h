/* Leader election with a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it:
 * every retry period a candidate reads the Lease and takes it when it is free or expired (by its
 * own clock: the time it last saw the record change, plus leaseDurationSeconds); the leader
 * renews it and steps down when it could not renew for the renew deadline. Writes carry the
 * record's resourceVersion, so two candidates never both win (409 Conflict). A leader that
 * stops releases the Lease so another takes over at once. */
#ifndef WT_LEASE_H
#define WT_LEASE_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "kube.h"

typedef struct wt_lease wt_lease_t;

typedef struct wt_lease_opts {
    const char *namespace;
    const char *name;
    const char *identity;
    uint64_t duration_ms;       /* 15 s */
    uint64_t renew_deadline_ms; /* 10 s */
    uint64_t retry_ms;          /* 2 s */
    void (*on_change)(void *arg, bool leader);
    void *arg;
} wt_lease_opts_t;

wt_lease_t *wt_lease_new(uv_loop_t *loop, wt_kube_t *k, const wt_lease_opts_t *o);
void wt_lease_start(wt_lease_t *l);
bool wt_lease_is_leader(const wt_lease_t *l);
/* Stops campaigning; a leader releases the Lease first (at most timeout_ms), then done runs. */
void wt_lease_stop(wt_lease_t *l, uint64_t timeout_ms, void (*done)(void *arg), void *arg);
void wt_lease_free(wt_lease_t *l);

/* A metav1.MicroTime for the wall clock time t (seconds since the epoch), and back. */
void wt_micro_time(double t, char out[40]);
int wt_parse_micro_time(const char *s, double *t);

#endif
