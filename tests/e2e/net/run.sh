#!/usr/bin/env bash
# Runs a program inside a fake internet that this script builds and removes,
# so that nothing it does can reach a real outside address or the host's
# resolver, even by accident:
#
#   netns "inet" (A): its loopback holds "public" TEST-NET addresses (203.0.113.10 and
#     .11 web, 198.51.100.53 DNS, 169.254.169.254 a fake metadata server,
#     10.99.0.10 a server in a private range);
#     tests/e2e/net/inet.mjs serves HTTP, a UDP echo, a TCP sink and an
#     accept-and-close port there; dnsmasq answers the *.fake.test names and
#     forwards nothing. A has no route but its link to B.
#   netns "gw" (B): up0 198.18.0.1/30, default route via A's end 198.18.0.2.
#     The program runs here (node --test, and every coppiced it starts), in its
#     own mount namespace where /etc/resolv.conf names the fake DNS server and
#     /sys/class/net shows B's interfaces. Its uplink is up0.
#
# Usage (as root):
#   tests/e2e/net/run.sh tests/e2e/network.test.mjs     node --test on that file
#   tests/e2e/net/run.sh --check                       verify the world itself
#   tests/e2e/net/run.sh --bench bench/net.mjs [args]  node on a program
#   tests/e2e/net/run.sh --shell                       an interactive shell in B
#
# The namespaces are named after this script's pid (parallel runs do not
# collide). On exit (failure, signal, or its own time limit:
# COPPICE_NET_TIMEOUT seconds, default 1700, under CTest's 1800) it kills what
# runs in them and deletes both. Namespaces left by a run that was killed with
# SIGKILL are removed by the next run. Exits 77 (CTest's skip) with the reason
# when it cannot run here.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Keep in step with tests/e2e/lib/fakenet.mjs.
B_UP=198.18.0.1 A_UP=198.18.0.2 WEB1=203.0.113.10 WEB2=203.0.113.11 DNS=198.51.100.53 META=169.254.169.254 PRIV=10.99.0.10

skip() { echo "SKIP: $*" >&2; exit 77; }

# Second stage: runs inside netns B (nsenter) in a new mount namespace.
if [[ "${1:-}" == "__inside" ]]; then
  shift
  set -e
  # /etc/resolv.conf: only the fake DNS server (what the gateway's default
  # upstream and the test process itself would use).
  echo "nameserver $DNS" > "$COPPICE_FAKENET_DIR/resolv.conf"
  mount --bind "$COPPICE_FAKENET_DIR/resolv.conf" /etc/resolv.conf
  # A sysfs of this netns, for the net parts of /sys only: the rest of /sys
  # (cgroups above all) stays the host's.
  mkdir -p "$COPPICE_FAKENET_DIR/sys"
  mount -t sysfs sysfs "$COPPICE_FAKENET_DIR/sys"
  mount --bind "$COPPICE_FAKENET_DIR/sys/class/net" /sys/class/net
  mount --bind "$COPPICE_FAKENET_DIR/sys/devices/virtual/net" /sys/devices/virtual/net
  umount -l "$COPPICE_FAKENET_DIR/sys"
  set +e
  exec "$@"
fi

[[ $(id -u) == 0 ]] || skip "needs root (network namespaces)"
for t in ip dnsmasq nft nsenter unshare node timeout; do
  command -v "$t" >/dev/null || skip "missing $t (scripts/deps.sh installs iproute2 dnsmasq-base nftables util-linux)"
done
ip netns list >/dev/null 2>&1 || skip "ip netns does not work here"

mode=test
case "${1:-}" in
  --check) mode=check; shift ;;
  --bench) mode=bench; shift ;;
  --shell) mode=shell; shift ;;
esac
if [[ $mode == test || $mode == bench ]] && [[ $# -lt 1 ]]; then
  echo "usage: $0 [--check | --shell | --bench PROGRAM [ARGS] | TEST_FILE...]" >&2; exit 2
fi

# Namespaces from runs that died without cleaning up (their runner is gone).
for ns in $(ip netns list | awk '{print $1}' | grep -E '^cpt-(inet|gw)-[0-9]+$'); do
  owner=${ns##*-}
  if ! kill -0 "$owner" 2>/dev/null; then
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null && echo "fakenet: removed stale namespace $ns" >&2
  fi
done
for d in /tmp/coppice-fakenet-*-*; do
  [[ -d "$d" ]] || continue
  owner=${d#/tmp/coppice-fakenet-}; owner=${owner%%-*}
  [[ "$owner" =~ ^[0-9]+$ ]] && ! kill -0 "$owner" 2>/dev/null && rm -rf "$d"
done

A=cpt-inet-$$
B=cpt-gw-$$
DIR=$(mktemp -d /tmp/coppice-fakenet-$$-XXXXXX)
PIDS=()

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # Everything still running in either namespace was started by this run
  # (the program, gateways it left, the fake servers).
  for ns in "$B" "$A"; do
    local pids
    pids=$(ip netns pids "$ns" 2>/dev/null)
    [[ -n "$pids" ]] && kill -TERM $pids 2>/dev/null
  done
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  sleep 0.3
  for ns in "$B" "$A"; do
    local pids
    pids=$(ip netns pids "$ns" 2>/dev/null)
    [[ -n "$pids" ]] && kill -KILL $pids 2>/dev/null
  done
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  ip netns del "$B" 2>/dev/null
  ip netns del "$A" 2>/dev/null
  rm -rf "$DIR"
  exit $rc
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

set -e
ip netns add "$A"
ip netns add "$B"
ip -n "$A" link set lo up
ip -n "$B" link set lo up
# The link: up0 in B, inet0 in A (made inside B, so no name touches the host).
ip -n "$B" link add up0 type veth peer name inet0 netns "$A"
ip -n "$B" addr add "$B_UP/30" dev up0
ip -n "$A" addr add "$A_UP/30" dev inet0
ip -n "$B" link set up0 up
ip -n "$A" link set inet0 up
ip -n "$B" route add default via "$A_UP" dev up0
# The fake internet's public addresses, on A's loopback (kernels without the
# dummy driver exist: this one has none).
for a in "$WEB1" "$WEB2" "$DNS" "$META" "$PRIV"; do ip -n "$A" addr add "$a/32" dev lo; done

# dnsmasq: the test names only; never forwards (no upstream, no hosts file).
ip netns exec "$A" dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
  --listen-address="$DNS" --bind-interfaces --port=53 \
  --pid-file="$DIR/dnsmasq.pid" --user=root --local=/fake.test/ --local-ttl=60 \
  --host-record=web.fake.test,"$WEB1" --host-record=other.fake.test,"$WEB1" \
  --host-record=web2.fake.test,"$WEB2" --host-record=a.sub.fake.test,"$WEB2" \
  --log-facility="$DIR/dnsmasq.log" &
PIDS+=($!)
ip netns exec "$A" node "$HERE/inet.mjs" "$DIR/inet.ready" >"$DIR/inet.log" 2>&1 &
PIDS+=($!)
set +e

for _ in $(seq 200); do
  [[ -e "$DIR/inet.ready" ]] && ip netns exec "$A" ss -lun 2>/dev/null | grep -q "$DNS:53" && break
  for p in "${PIDS[@]}"; do
    if ! kill -0 "$p" 2>/dev/null; then
      echo "fakenet: a fake server died at start:" >&2; cat "$DIR"/*.log >&2; exit 1
    fi
  done
  sleep 0.05
done
[[ -e "$DIR/inet.ready" ]] || { echo "fakenet: inet.mjs did not start" >&2; cat "$DIR/inet.log" >&2; exit 1; }

export COPPICE_FAKENET=1 COPPICE_FAKENET_DIR="$DIR" COPPICE_FAKENET_INET="$A" COPPICE_FAKENET_GW="$B"
inside=(nsenter --net="/run/netns/$B" -- unshare --mount --propagation slave -- "$HERE/run.sh" __inside)
limit=${COPPICE_NET_TIMEOUT:-1700}
# In the background and waited for, so that a signal to this script runs the
# clean-up at once.
case $mode in
  shell) "${inside[@]}" bash -i; exit $? ;;
  check) timeout -k 5 60 "${inside[@]}" node "$HERE/check.mjs" & ;;
  bench) timeout -k 5 "$limit" "${inside[@]}" node "$@" & ;;
  test)  timeout -k 5 "$limit" "${inside[@]}" node --test --test-reporter=spec "$@" & ;;
esac
PIDS+=($!)
wait $!
rc=$?
[[ $rc == 124 ]] && echo "fakenet: time limit of ${limit}s reached" >&2
exit $rc
