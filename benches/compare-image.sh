#!/usr/bin/env bash
# Times image assembly without cargo for examples/pc_appliance, krazy against
# the C-tool pipeline on the same content.
#
# krazy: krazy-build's assemble_image example prepares the instance once
# (kernel, firmware and cargo builds, cached under target/ like the tests'),
# then times image::assemble + image::write_image RUNS times in-process (and
# each phase alone). Everything it writes is the image: ESP, two roots,
# perm, GPT, one fsync; assemble also builds the initramfs (cpio, gzip -9)
# and hashes every file for the SBOM.
#
# C tools, on the trees taken out of krazy's own image (unsquashfs of the
# root, mcopy of the ESP with its padded capacity files, cpio -i of the
# initramfs), timed by hyperfine:
#   "C (issue's list)": truncate -s 2G; sgdisk (the same 4 partitions and
#     GUIDs); mksquashfs -comp gzip -processors 2; mkfs.fat -C + mcopy -s;
#     mkfs.ext4 of the perm size; dd conv=notrunc,sparse of each part into
#     the image; sync of the image (krazy's write_image ends with fsync).
#   "C (same work as krazy)": the above plus what krazy's assemble does on
#     top: the initramfs (find | cpio -o -H newc | gzip -9) and sha256sum of
#     every file of the root and ESP trees (the SBOM's hashes).
# Then each C step alone, to set beside krazy's phases.
#
# Needs squashfs-tools, dosfstools, mtools, e2fsprogs, gdisk, cpio, python3
# and hyperfine. Run from anywhere: bash benches/compare-image.sh
# RUNS (default 10) sets the number of runs; the machine should be idle.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-10}
target=${CARGO_TARGET_DIR:-target}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
command -v hyperfine >/dev/null || { echo "needs hyperfine (apt-get install -y hyperfine)" >&2; exit 1; }

cargo build --release -q -p krazy-build --example assemble_image
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== krazy: assemble + write_image ($runs runs, in-process)" >&2
"$target/release/examples/assemble_image" examples/pc_appliance -o "$work/k" --runs "$runs" \
  --cache-dir "$PWD/target/krazy-test-cache" --target-dir "$PWD/target/krazy-test-cache/target" >"$work/k.json"
img="$work/k/krazy.img"

# The layout and GUIDs of krazy's image, as shell variables.
eval "$(python3 - "$work/k.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
r = d["report"]
print(f"disk_bytes={r['disk_bytes']} root_bytes={r['root_bytes']} initramfs_bytes={r['initramfs_bytes'] or 0}")
print(f"k_median={d['median_s']} k_assemble={d['assemble_median_s']} k_write={d['write_image_median_s']}")
for p in r["partitions"]:
    n = p["name"].replace("-", "_")
    print(f"{n}_start={p['start']} {n}_bytes={p['bytes']} {n}_guid={p['partuuid']} {n}_num={p['number']}")
EOF
)"
disk_guid=$(sgdisk -p "$img" | sed -n 's/^Disk identifier (GUID): //p')

# The trees krazy's image holds.
t="$work/tree"
mkdir -p "$t/esp" "$t/initramfs"
unsquashfs -q -n -o "$root_a_start" -d "$t/root" "$img" >/dev/null
mcopy -s -n -m -i "$img@@$esp_start" '::/*' "$t/esp/"
head -c "$initramfs_bytes" "$t/esp/krazy/a/initrd" | gzip -dc | (cd "$t/initramfs" && cpio -idm --quiet)
echo "trees: root $(du -sh --apparent-size "$t/root" | cut -f1), ESP $(du -sh --apparent-size "$t/esp" | cut -f1) (capacity files padded), initramfs $(du -sh --apparent-size "$t/initramfs" | cut -f1)" >&2

c="$work/c"
mkdir -p "$c"
sectors() { echo $(($1 / 512)); }
cat >"$c/gpt.sh" <<EOF
sgdisk -a 2048 -U $disk_guid \
 -n $esp_num:$(sectors $esp_start):$(($(sectors $esp_start) + $(sectors $esp_bytes) - 1)) -t $esp_num:EF00 -c $esp_num:esp -u $esp_num:$esp_guid \
 -n $root_a_num:$(sectors $root_a_start):$(($(sectors $root_a_start) + $(sectors $root_a_bytes) - 1)) -t $root_a_num:4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709 -c $root_a_num:root-a -u $root_a_num:$root_a_guid \
 -n $root_b_num:$(sectors $root_b_start):$(($(sectors $root_b_start) + $(sectors $root_b_bytes) - 1)) -t $root_b_num:4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709 -c $root_b_num:root-b -u $root_b_num:$root_b_guid \
 -n $perm_num:$(sectors $perm_start):$(($(sectors $perm_start) + $(sectors $perm_bytes) - 1)) -t $perm_num:8300 -c $perm_num:perm -u $perm_num:$perm_guid \
 $c/c.img >/dev/null
EOF
cat >"$c/squashfs.sh" <<EOF
mksquashfs $t/root $c/root.sqfs -comp gzip -noappend -processors 2 -all-root -quiet -no-progress >/dev/null
EOF
cat >"$c/fat.sh" <<EOF
rm -f $c/esp.img
mkfs.fat -F 32 -n KRAZY-ESP -i 4b52415a -C $c/esp.img $((esp_bytes / 1024)) >/dev/null
mcopy -s -m -i $c/esp.img $t/esp/* ::/
EOF
cat >"$c/ext4.sh" <<EOF
rm -f $c/perm.img
mkfs.ext4 -q -F -L perm -U $perm_guid $c/perm.img $((perm_bytes / 1024))k
EOF
cat >"$c/initramfs.sh" <<EOF
(cd $t/initramfs && find . | LC_ALL=C sort | cpio -o -H newc --reproducible -R 0:0 --quiet) | gzip -9 >$c/initrd
EOF
cat >"$c/sbom.sh" <<EOF
find $t/root $t/esp -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum >$c/sbom.txt
EOF
cat >"$c/image.sh" <<EOF
set -e
rm -f $c/c.img && truncate -s $disk_bytes $c/c.img
. $c/gpt.sh
. $c/squashfs.sh
. $c/fat.sh
. $c/ext4.sh
for p in "root.sqfs $root_a_start" "root.sqfs $root_b_start" "esp.img $esp_start" "perm.img $perm_start"; do
  set -- \$p
  dd if=$c/\$1 of=$c/c.img bs=1M oflag=seek_bytes seek=\$2 conv=notrunc,sparse status=none
done
sync $c/c.img
EOF
cat >"$c/same-work.sh" <<EOF
set -e
. $c/initramfs.sh
. $c/sbom.sh
. $c/image.sh
EOF

echo "== C tools (hyperfine, $runs runs)" >&2
hyperfine -N --warmup 1 --runs "$runs" --export-json "$work/c.json" \
  -n "C (issue's list)" "bash $c/image.sh" \
  -n "C (same work as krazy)" "bash $c/same-work.sh" >&2
# The C image is a valid disk with the same table.
sgdisk -v "$c/c.img" | grep -q "No problems found"
echo "== C steps alone (hyperfine, $runs runs)" >&2
hyperfine -N --warmup 1 --runs "$runs" --export-json "$work/steps.json" \
  -n "mksquashfs gzip -processors 2" "bash $c/squashfs.sh" \
  -n "mkfs.fat -C + mcopy -s" "bash $c/fat.sh" \
  -n "mkfs.ext4 (perm size)" "bash $c/ext4.sh" \
  -n "cpio -o | gzip -9 (initramfs)" "bash $c/initramfs.sh" \
  -n "sha256sum of root + ESP" "bash $c/sbom.sh" >&2

load_end=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$work/k.json" "$work/c.json" "$work/steps.json" "$(stat -c %s "$c/root.sqfs")" "$(stat -c %s "$c/initrd")" \
  "$load_start" "$load_end" <<'EOF'
import json, statistics, sys
k = json.load(open(sys.argv[1]))
c = {r["command"]: r for r in json.load(open(sys.argv[2]))["results"]}
s = json.load(open(sys.argv[3]))["results"]
r = k["report"]
print(f"load average {sys.argv[6]} at the start, {sys.argv[7]} at the end")
print(f"sizes: root squashfs krazy {r['root_bytes']} B, mksquashfs {sys.argv[4]} B; "
      f"initramfs krazy {r['initramfs_bytes']} B, cpio | gzip -9 {sys.argv[5]} B")
med = lambda r: statistics.median(r["times"])
km = k["median_s"]
print(f"krazy assemble + write_image: median {km:.3f} s "
      f"(assemble {k['assemble_median_s']:.3f} s, write_image {k['write_image_median_s']:.3f} s); runs {', '.join(f'{x:.3f}' for x in k['runs'])}")
for name, r in c.items():
    m = med(r)
    print(f"{name}: median {m:.3f} s -> C/krazy = {m / km:.2f}x")
print("krazy phases (each alone, median):")
for p in k["phases"]:
    print(f"  {p['median_s']:8.3f} s  {p['phase']}")
print("C steps (each alone, median):")
for r in s:
    print(f"  {med(r):8.3f} s  {r['command']}")
EOF
