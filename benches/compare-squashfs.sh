#!/usr/bin/env bash
# Runs the benchmark sample tree through krazy's mksquashfs example and
# through mksquashfs (gzip and zstd, default levels, -processors 2), and
# prints times (hyperfine when installed), sizes and krazy/C ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
cargo build --release -q -p krazy-fs --example mksquashfs
cargo build --release -q -p krazy-benches --example sample-tree
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
target/release/examples/sample-tree "$work/src"
k=target/release/examples/mksquashfs
for comp in gzip zstd; do
  kcmd="$k $work/src $work/k-$comp.sqfs --compression $comp --all-root"
  ccmd="mksquashfs $work/src $work/c-$comp.sqfs -comp $comp -processors 2 -noappend -quiet -no-progress -all-root"  # mksquashfs reads SOURCE_DATE_EPOCH itself
  if command -v hyperfine >/dev/null; then
    hyperfine -N -w 1 -r 5 --export-json "$work/$comp.json" -n "krazy $comp" "$kcmd" -n "mksquashfs $comp" "$ccmd" >&2
    read -r kt ct < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"]; print(r[0]["mean"], r[1]["mean"])' "$work/$comp.json")
  else
    s=$(date +%s.%N); $kcmd 2>/dev/null; kt=$(echo "$(date +%s.%N) - $s" | bc)
    s=$(date +%s.%N); $ccmd >/dev/null; ct=$(echo "$(date +%s.%N) - $s" | bc)
  fi
  $kcmd 2>/dev/null; $ccmd >/dev/null
  ks=$(stat -c %s "$work/k-$comp.sqfs"); cs=$(stat -c %s "$work/c-$comp.sqfs")
  unsquashfs -lln "$work/k-$comp.sqfs" >/dev/null
  printf '%s: krazy %.3f s %d B | mksquashfs %.3f s %d B | time ratio %.2f size ratio %.4f\n' \
    "$comp" "$kt" "$ks" "$ct" "$cs" "$(echo "$kt / $ct" | bc -l)" "$(echo "$ks / $cs" | bc -l)"
done
