#!/usr/bin/env bash
# Times what the device does for `PUT /update/root` with the C tools: hash
# 256 MiB with sha256sum, then copy it into a fresh sparse file with dd in
# 1 MiB blocks and an fdatasync (as krazy's FileDevice flush does). Compare
# with `cargo bench -p krazy-benches --bench update`, which streams the
# same bytes through krazy-update's verifying writer (hash and write in one
# pass). Run from the repository root: bash benches/compare-update.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
in="$tmp/root.img"
out="$tmp/slot.img"
# The bench writes its input bytes out when asked, then is cut short.
KRAZY_UPDATE_BENCH_INPUT="$in" cargo bench -q -p krazy-benches --bench update -- --test >/dev/null
test "$(stat -c %s "$in")" -eq $((256 << 20))
prep="bash -c 'rm -f $out; truncate -s 256M $out'"
hyperfine -N --warmup 1 --runs 10 --prepare "$prep" \
  -n "sha256sum" "sha256sum $in" \
  -n "dd 1M fdatasync" "dd if=$in of=$out bs=1M conv=notrunc,fdatasync status=none" \
  -n "sha256sum + dd" "bash -c 'sha256sum $in >/dev/null && dd if=$in of=$out bs=1M conv=notrunc,fdatasync status=none'" \
  -n "tee >(sha256sum) | dd (one pass)" "bash -c 'tee >(sha256sum >/dev/null) <$in | dd of=$out bs=1M iflag=fullblock conv=notrunc,fdatasync status=none'" \
  --export-markdown "$tmp/update.md" >/dev/null
cat "$tmp/update.md"
