#!/bin/bash
# lab/down.sh (make lab-down): stop everything lab/up.sh started and remove
# every namespace, interface, /etc/netns entry and mount point it made.
# Harmless when nothing is up. Logs stay in build/lab/run/ for post-mortems.
set -eu
# shellcheck source=lab/lib.sh
. "$(dirname "$0")/lib.sh"
require_root

# The services, by their pid files.
# shellcheck disable=SC2086 # a list of names
svc_stop $LAB_SERVICES

# Anything else still running inside a lab host (a program started with lab/run,
# an nginx worker, a service whose pid file was lost with build/), by pid.
# A namespace is only gone once its last process is.
pids=""
for h in $(host_names) "${BRIDGE_NS#"$NS_PREFIX"}"; do
    ns=$NS_PREFIX$h
    if ns_exists "$ns"; then pids="$pids $(ip netns pids "$ns" 2>/dev/null || true)"; fi
done
# shellcheck disable=SC2086
kill_wait $pids

# Deleting a namespace destroys its interfaces, and with them their veth peers.
for h in $(host_names) "${BRIDGE_NS#"$NS_PREFIX"}"; do
    ns=$NS_PREFIX$h
    if ns_exists "$ns"; then ip netns del "$ns"; fi
    rm -rf "/etc/netns/$ns"
done
rmdir /etc/netns 2>/dev/null || true # only if nothing else lives there

# lab/run's mount point on the host: only ever an empty directory there.
if [ -d /keys ] && ! mountpoint -q /keys && [ -z "$(ls -A /keys)" ]; then
    rmdir /keys
fi

rm -f "$LAB_RUN"/*.pid "$LAB_RUN"/*.pid.tmp
