#!/usr/bin/env bash
# Times krazy's mkfat example beside mkfs.fat + mcopy -s on the same
# ESP-like tree (a 14 MiB kernel, a 4 MiB initrd, loader files, 300 small
# files) into a 512 MiB sparse FAT32 image. Needs dosfstools, mtools and
# hyperfine (apt-get install -y hyperfine); falls back to `time` without it.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
src="$work/src"
mkdir -p "$src"/{EFI/BOOT,loader/entries,krazy/a,krazy/b,overlays}
head -c $((100 << 10)) /dev/urandom >"$src/EFI/BOOT/BOOTX64.EFI"
printf 'default krazy-a.conf\ntimeout 0\n' >"$src/loader/loader.conf"
for s in a b; do
  printf 'linux /krazy/%s/vmlinuz\ninitrd /krazy/%s/initrd\n' $s $s >"$src/loader/entries/krazy-$s.conf"
done
head -c $((14 << 20)) /dev/urandom >"$src/krazy/a/vmlinuz"
head -c $((4 << 20)) /dev/urandom >"$src/krazy/a/initrd"
for i in $(seq -w 0 299); do
  head -c $((1000 + 10#$i * 37)) /dev/urandom >"$src/overlays/overlay-$i.dtbo"
done

cargo build --release -q -p krazy-fs --example mkfat
mkfat="$PWD/target/release/examples/mkfat"
krazy="rm -f $work/k.img && $mkfat $src $work/k.img --size-mib 512 >/dev/null"
c_tools="rm -f $work/c.img && truncate -s 512M $work/c.img && mkfs.fat -F 32 -i 4b52415a $work/c.img >/dev/null && mcopy -s -i $work/c.img $src/* ::/"

if command -v hyperfine >/dev/null; then
  hyperfine -N --warmup 3 --runs 20 -n krazy-mkfat "bash -c '$krazy'" -n mkfs.fat+mcopy "bash -c '$c_tools'"
else
  time bash -c "$krazy"
  time bash -c "$c_tools"
fi
fsck.fat -n "$work/k.img"
fsck.fat -n "$work/c.img"
