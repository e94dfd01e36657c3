#!/usr/bin/env bash
# Times krazy's mkext4 example beside mkfs.ext4 on fresh sparse files of
# 1 GiB and 64 GiB (hyperfine when installed, else a plain loop of `time`).
# Run from the repository root: bash benches/compare-ext4.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p krazy-fs --example mkext4
mk=target/release/examples/mkext4
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export SOURCE_DATE_EPOCH=1700000000
uuid=01234567-89ab-cdef-0123-456789abcdef
for mib in 1024 65536; do
  img="$tmp/fs.img"
  krazy="$mk $img --size-mib $mib --uuid $uuid"
  # mkfs.ext4 on a regular file discards it first (and so sets
  # ITABLE_ZEROED), the same shortcut krazy takes with AssumeZeroed.
  prep="rm -f $img; truncate -s ${mib}M $img"
  prep_n="bash -c '$prep'"
  c_default="mkfs.ext4 -q -F -U $uuid $img"
  c_lazy="mkfs.ext4 -q -F -U $uuid -E lazy_itable_init=1,lazy_journal_init=1 $img"
  echo "== ${mib} MiB"
  if command -v hyperfine >/dev/null; then
    hyperfine -N --warmup 2 --runs 30 --prepare "$prep_n" \
      -n krazy-mkext4 "$krazy" -n mkfs.ext4 "$c_default" -n "mkfs.ext4 lazy" "$c_lazy" \
      --export-markdown "$tmp/ext4-$mib.md" >/dev/null
    cat "$tmp/ext4-$mib.md"
  else
    for cmd in "$krazy" "$c_default" "$c_lazy"; do
      bash -c "$prep"
      echo "-- $cmd"
      /usr/bin/time -f "%e s" $cmd >/dev/null
    done
  fi
  bash -c "$prep" && $krazy >/dev/null && echo "krazy on disk: $(du -k "$img" | cut -f1) KiB"
  bash -c "$prep" && $c_default && echo "mkfs.ext4 on disk: $(du -k "$img" | cut -f1) KiB"
done
