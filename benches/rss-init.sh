#!/usr/bin/env bash
# Resident memory of `krazy-init supervise` with 10 services (goal: < 4 MiB).
# Usage: benches/rss-init.sh [image|release|debug]   (default image)
#   image:   static musl, stripped of debug info and built for size, as
#            krazy-build builds it for a device (krazy_build::cargo::SYSTEM_PROFILE)
#   release: the workspace's host release build; debug: its debug build
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-image}"
case "$profile" in
  image)
    triple=x86_64-unknown-linux-musl
    CARGO_PROFILE_RELEASE_STRIP=debuginfo cargo build -q -p krazy-init --release --bin krazy-init \
      --target "$triple" --target-dir target/rss-image \
      --config 'profile.release.lto="fat"' --config 'profile.release.codegen-units=1' \
      --config 'profile.release.opt-level="s"' --config 'profile.release.package.sha2.opt-level=3' \
      --config 'profile.release.package.ring.opt-level=3'
    bin=target/rss-image/$triple/release/krazy-init ;;
  release) cargo build -q -p krazy-init --release --bin krazy-init; bin=target/release/krazy-init ;;
  debug) cargo build -q -p krazy-init --bin krazy-init; bin=target/debug/krazy-init ;;
  *) echo "usage: $0 [image|release|debug]" >&2; exit 2 ;;
esac
dir=$(mktemp -d); trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
{ echo 'version = 1'
  for i in $(seq 1 10); do
    printf '[[service]]\nname = "s%d"\npath = "/bin/sh"\nargs = ["-c", "while true; do echo tick; sleep 1; done"]\n' "$i"
  done; } > "$dir/services.toml"
echo "rss-bench-password-0123456789" > "$dir/pw"
"$bin" supervise --config "$dir/services.toml" --listen 127.0.0.1:0 --password-file "$dir/pw" >"$dir/out" 2>/dev/null &
pid=$!
sleep 3
# Exercise the web server once so its buffers are counted.
addr=$(sed -n 's/krazy-init: listening on //p' "$dir/out")
curl -s -u krazy:rss-bench-password-0123456789 "http://$addr/" >/dev/null
curl -s -u krazy:rss-bench-password-0123456789 "http://$addr/api/v1/services" >/dev/null
sleep 1
echo "krazy-init ($profile, $(du -k "$bin" | cut -f1) KiB) supervising 10 services: $(grep -E 'VmRSS|VmHWM|RssAnon|RssFile' /proc/$pid/status | tr -s ' \t' ' ' | paste -sd ' ')"
