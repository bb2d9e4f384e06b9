#!/bin/bash
# lab/up.sh (make lab): bring up Pingora City with Linux network namespaces.
#
#   sl-net       the bridge br0, in a namespace of its own: the host's root
#                namespace gets no interface, route or address of the lab
#   sl-<host>    one namespace per host, eth0 = 172.28.0.<n>/24 on the bridge:
#                dns .2, dev .10, blue .20, green .21, advanced .22, grpc .23,
#                client1 .30, client2 .31; each resolves through dns (172.28.0.2)
#                via /etc/netns/sl-<host>/resolv.conf
#
# Services (pid files and logs in build/lab/run/): dnsmasq on dns, http_echo.py
# on blue and green (:8080), nginx on advanced (:80, :443, :8443 mTLS, :8081 h2c),
# grpc_server.py on grpc (:9000, :9001 TLS). dev, client1 and client2 run nothing.
#
# Idempotent: whatever already exists and runs is kept; only what is missing or
# down is (re)made. Ends with lab/validate.sh and fails if any check fails.
set -eu
# shellcheck source=lab/lib.sh
. "$(dirname "$0")/lib.sh"
require_root

ensure_bridge() {
    ns_exists "$BRIDGE_NS" || ip netns add "$BRIDGE_NS"
    ip -n "$BRIDGE_NS" link set lo up
    ip -n "$BRIDGE_NS" link show "$BRIDGE" >/dev/null 2>&1 ||
        ip -n "$BRIDGE_NS" link add "$BRIDGE" type bridge ||
        die "cannot create a bridge (a kernel without bridge support?)"
    ip -n "$BRIDGE_NS" link set "$BRIDGE" up
}

# ensure_host NAME IP: the namespace, its veth pair to the bridge, address, DNS.
ensure_host() {
    local addr=$2 ns=$NS_PREFIX$1 port=v-$1
    ns_exists "$ns" || ip netns add "$ns"
    ip -n "$ns" link set lo up
    if ! ip -n "$ns" link show eth0 >/dev/null 2>&1; then
        # A half pair left by an interrupted run would block the name.
        ip -n "$BRIDGE_NS" link del "$port" 2>/dev/null || true
        ip -n "$BRIDGE_NS" link add "$port" type veth peer name eth0 netns "$ns" ||
            die "cannot create a veth pair (a kernel without veth support?)"
    fi
    ip -n "$BRIDGE_NS" link set "$port" master "$BRIDGE" up
    ip -n "$ns" addr replace "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
    # `ip netns exec` bind-mounts this file over /etc/resolv.conf. timeout:1 makes
    # a lookup fail fast (not after 5 s) while the dns host is down.
    mkdir -p "/etc/netns/$ns"
    printf 'nameserver %s\noptions timeout:1 attempts:2\n' "$(host_ip dns)" \
        >"/etc/netns/$ns/resolv.conf"
}

# Lesson 19 needs an address whose connect times out: 192.0.2.1 (TEST-NET-1) is
# routed, in sl-dev only, to a veth pair that leads nowhere. The usual tool, a
# dummy interface, needs a kernel module that some kernels (this VM's) lack; with
# a veth the SYNs go out bh0, arrive at bh1 addressed to a MAC that is nobody's,
# and are dropped: no reply, no ICMP, so the connect hangs until its timeout.
ensure_blackhole() {
    local ns=${NS_PREFIX}dev
    ip -n "$ns" link show bh0 >/dev/null 2>&1 ||
        ip -n "$ns" link add bh0 type veth peer name bh1
    ip -n "$ns" link set bh1 up
    ip -n "$ns" link set bh0 up
    ip -n "$ns" neigh replace 169.254.0.1 lladdr 02:00:00:00:00:01 dev bh0 nud permanent
    ip -n "$ns" route replace "$BLACKHOLE_NET" via 169.254.0.1 dev bh0 onlink
}

"$LAB_DIR/certs.sh" "$LAB_KEYS"
ensure_bridge
for h in $LAB_HOSTS; do
    ensure_host "${h%%:*}" "$SUBNET_PREFIX.${h#*:}"
done
ensure_blackhole

mkdir -p "$LAB_RUN"
# Start what is down (in parallel: the Python servers take a moment to import),
# then wait for each to listen.
for s in $LAB_SERVICES; do svc_launch "$s"; done
failed=0
for s in $LAB_SERVICES; do wait_pidfile "$s" 15 || failed=1; done
[ "$failed" -eq 0 ] || die "some services did not start (logs in $LAB_RUN)"

"$LAB_DIR/validate.sh"
