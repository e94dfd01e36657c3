#!/usr/bin/env bash
# Unpacks a Debian kernel package with krazy-build's pure-Rust reader
# (examples/debx) and with dpkg-deb -x, and prints both wall times.
# Usage: benches/compare-deb.sh [PACKAGE.deb]  (default: the cloud kernel in
# target/krazy-test-cache/debs, fetched by the debian_kernel test).
set -euo pipefail
cd "$(dirname "$0")/.."
deb="${1:-$(ls target/krazy-test-cache/debs/linux-image-*-cloud-amd64_*.deb | head -1)}"
cargo build -q --release -p krazy-build --example debx
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
t0=$(date +%s.%N); target/release/examples/debx "$deb" "$tmp/krazy"; t1=$(date +%s.%N)
dpkg-deb -x "$deb" "$tmp/dpkg"; t2=$(date +%s.%N)
diff -r "$tmp/krazy" "$tmp/dpkg" >/dev/null && echo "trees identical"
printf 'krazy-build debx: %.2f s\ndpkg-deb -x:      %.2f s\n' "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t1" | bc)"
