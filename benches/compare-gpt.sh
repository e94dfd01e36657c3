#!/usr/bin/env bash
# Times creating the pc layout's 4-partition GPT on a sparse 4 GiB file:
# krazy-disk's mkdisk example against sgdisk (same partitions, same sizes).
# Uses hyperfine when installed, else a loop timed with date +%s%N.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p krazy-disk --example mkdisk
mkdisk="$PWD/target/release/examples/mkdisk"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
size_mib=4096

krazy="$mkdisk --platform pc --size-mib $size_mib $dir/krazy.img >/dev/null"
# sgdisk: fresh sparse file, then the same table as krazy's pc layout.
sg="rm -f $dir/sg.img && truncate -s ${size_mib}M $dir/sg.img && \
sgdisk -a 8192 -U R \
 -n 1:8192:+512M -t 1:C12A7328-F81F-11D2-BA4B-00A0C93EC93B -c 1:esp \
 -n 2:0:+512M -t 2:4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709 -c 2:root-a \
 -n 3:0:+512M -t 3:4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709 -c 3:root-b \
 -n 4:0:0 -t 4:0FC63DAF-8483-4772-8E79-3D69D8477DE4 -c 4:perm $dir/sg.img >/dev/null"

if command -v hyperfine >/dev/null; then
  hyperfine -N --warmup 5 --runs 100 -n krazy-mkdisk "sh -c '$krazy'" -n sgdisk "sh -c '$sg'" 2>/dev/null ||
  hyperfine --warmup 5 --runs 100 -n krazy-mkdisk "$krazy" -n sgdisk "$sg"
else
  for name in krazy sg; do
    cmd=${!name}
    start=$(date +%s%N)
    for _ in $(seq 50); do sh -c "$cmd"; done
    end=$(date +%s%N)
    echo "$name: $(( (end - start) / 50 / 1000 )) µs per run"
  done
fi
echo "sgdisk -p of both:"
sgdisk -p "$dir/krazy.img" | tail -n 5
sgdisk -p "$dir/sg.img" | tail -n 5
