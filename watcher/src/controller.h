/* The controller: wires a source (informers or manifest files) to translation and publishing,
 * and runs leader election, Ingress status and /healthz. One libuv loop, one thread. */
#ifndef WT_CONTROLLER_H
#define WT_CONTROLLER_H

#include <uv.h>

#include "opts.h"

/* Runs until SIGTERM/SIGINT. Returns the process exit code (0, or 1 when the configuration
 * cannot work: no cluster credentials, a missing manifest directory, a port in use). */
int wt_controller_run(uv_loop_t *loop, wt_opts_t *opts);

#endif
