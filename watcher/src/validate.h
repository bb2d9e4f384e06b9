/* Checking translated configs with the gateway's own parser before they are pushed, so that
 * sluice never refuses what the watcher sends. Only what changed since the last valid config is
 * parsed again (the routes and upstreams whose text differs, with the upstreams those routes
 * name): one EndpointSlice change costs one upstream's check, not 10,000 routes'. */
#ifndef WT_VALIDATE_H
#define WT_VALIDATE_H

#include "sluice/error.h"
#include "translate.h"

typedef struct wt_validator {
    wt_config_t *last; /* the last config that passed */
} wt_validator_t;

void wt_validator_init(wt_validator_t *v);
void wt_validator_free(wt_validator_t *v);
/* Checks c against the gateway's schema. On success takes c (it becomes the reference for
 * the next call) and returns 0; on error leaves c to the caller and explains in err (naming
 * the route or upstream). */
int wt_validate(wt_validator_t *v, wt_config_t *c, size_t *checked, sl_error_t *err);

#endif
