#!/usr/bin/env bash
# Time to a configured address: krazy-dhcp vs busybox udhcpc vs dhcpcd, each
# against the same dnsmasq (--no-ping) across a veth pair between two network
# namespaces. Needs root, iproute2, dnsmasq, hyperfine; udhcpc and dhcpcd are
# skipped when missing (apt-get install busybox dhcpcd-base).
# Usage: benches/compare-dhcp.sh [runs]   (builds krazy-dhcp in release mode)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-20}"
cargo build --release -q -p krazy-net --bin krazy-dhcp
BIN="$PWD/target/release/krazy-dhcp"
TAG="kb$$"
SRV="$TAG-s"; CLI="$TAG-c"
TMP="$(mktemp -d)"
DNSMASQ_PID=""
cleanup() {
  [ -n "$DNSMASQ_PID" ] && kill "$DNSMASQ_PID" 2>/dev/null || true
  ip netns del "$SRV" 2>/dev/null || true
  ip netns del "$CLI" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
ip netns add "$SRV"; ip netns add "$CLI"
ip -n "$SRV" link add eth0 type veth peer name eth0 netns "$CLI"
ip -n "$SRV" addr add 10.99.0.1/24 dev eth0
ip -n "$SRV" link set eth0 up
ip -n "$CLI" link set eth0 up
ip netns exec "$SRV" dnsmasq --no-daemon --conf-file=/dev/null --port=0 --bind-interfaces \
  --interface=eth0 --dhcp-range=10.99.0.100,10.99.0.200,2m --dhcp-leasefile="$TMP/leases" \
  --pid-file="$TMP/pid" --no-ping --dhcp-option=6,10.99.0.1 --log-facility="$TMP/dnsmasq.log" &
DNSMASQ_PID=$!
sleep 0.5

# udhcpc's event script: configure the address like the others do.
cat > "$TMP/udhcpc.sh" <<'S'
#!/bin/sh
[ "$1" = bound ] || [ "$1" = renew ] || exit 0
ip addr add "$ip/${mask:-24}" dev "$interface"
[ -n "$router" ] && ip route replace default via ${router%% *} dev "$interface"
exit 0
S
chmod +x "$TMP/udhcpc.sh"

PREP="ip -n $CLI addr flush dev eth0; ip -n $CLI route flush dev eth0 2>/dev/null; true"
CMDS=(-n krazy-dhcp "ip netns exec $CLI $BIN --oneshot --interface eth0 --resolv-conf $TMP/resolv.conf")
if command -v busybox >/dev/null; then
  CMDS+=(-n udhcpc "ip netns exec $CLI busybox udhcpc -f -q -n -i eth0 -s $TMP/udhcpc.sh")
fi
if command -v dhcpcd >/dev/null; then
  # -1 exit once configured, -4 IPv4 only, -A no ARP probe (neither krazy nor udhcpc probe),
  # -L no IPv4LL, -B foreground, -f /dev/null no config file.
  CMDS+=(-n dhcpcd "ip netns exec $CLI dhcpcd -1 -4 -A -L -B -f /dev/null -c /bin/true -t 20 eth0")
fi
hyperfine --runs "$RUNS" --warmup 2 --prepare "$PREP" --export-markdown "$TMP/result.md" "${CMDS[@]}"
cat "$TMP/result.md"
