#!/usr/bin/env bash
# The web server of `krazy-init supervise` under a hostile LAN client
# (issue 12 §3): descriptors in use, resident memory, and the latency of an
# authenticated request from 127.0.0.1, idle and while 127.0.0.2 holds 2,000
# connection attempts, and while 1,000 connections from 127.0.0.2-33 send
# endless headers. Also PBKDF2 verification time at krazy's iteration count.
# The process starts with PID 1's kernel limits (soft 1024, hard 4096 descriptors).
# Usage: benches/hostile-lan.sh [release|debug]   (default release)
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-release}"
target="${CARGO_TARGET_DIR:-target}"
case "$profile" in
  release) cargo build -q -p krazy-init --release --bin krazy-init; bin=$target/release/krazy-init ;;
  debug) cargo build -q -p krazy-init --bin krazy-init; bin=$target/debug/krazy-init ;;
  *) echo "usage: $0 [release|debug]" >&2; exit 2 ;;
esac
command -v python3 >/dev/null || { echo "needs python3" >&2; exit 2; }
dir=$(mktemp -d); trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
cat > "$dir/services.toml" <<EOF
version = 1
[[service]]
name = "crasher"
path = "/bin/sh"
args = ["-c", "echo start >> $dir/starts; exit 1"]
restart = "always"
backoff_initial_ms = 20
backoff_max_ms = 100
EOF
pw=hostile-bench-password-0123456789
echo "$pw" > "$dir/pw"
printf 'max_connections = 1100\nmax_connections_per_peer = 1100\n' > "$dir/wide.toml"

start() { # $1: extra args
  prlimit --nofile=1024:4096 "$bin" supervise --config "$dir/services.toml" --listen 127.0.0.1:0 \
    --password-file "$dir/pw" $1 >"$dir/out" 2>"$dir/log" &
  pid=$!
  for _ in $(seq 100); do grep -q listening "$dir/out" 2>/dev/null && break; sleep 0.05; done
  addr=$(sed -n 's/krazy-init: listening on //p' "$dir/out")
}
figures() { # $1: label
  local fds rss t starts
  fds=$(ls /proc/$pid/fd | wc -l)
  rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  t=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' --max-time 30 -u "krazy:$pw" "http://$addr/api/v1/services")
  starts=$(wc -l < "$dir/starts" 2>/dev/null || echo 0)
  printf '%-44s fds %5s  VmRSS %6s KiB  authenticated GET: status %s in %s s  crasher starts so far %s\n' \
    "$1" "$fds" "$rss" "${t% *}" "${t#* }" "$starts"
}

attack() { # $1: mode (idle|headers), $2: connections, $3: seconds held
  python3 - "$addr" "$1" "$2" "$3" <<'EOF' &
import socket, sys, time, resource
host, port = sys.argv[1].rsplit(':', 1); mode, n, hold = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE); resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
socks = []
filler = b"X-Filler: " + b"a" * 4084 + b"\r\n"
for i in range(n):
    src = "127.0.0.2" if mode == "idle" else "127.0.0.%d" % (2 + i % 32)
    try:
        s = socket.socket(); s.bind((src, 0)); s.settimeout(2); s.connect((host, int(port)))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        if mode == "headers":
            s.setblocking(False)
        socks.append(s)
    except OSError:
        pass
end = time.time() + hold
while time.time() < end:
    if mode == "headers":
        for s in socks:
            try: s.send(filler)
            except OSError: pass
    time.sleep(0.05)
EOF
  apid=$!
}

start ""
sleep 1
figures "idle"
attack idle 2000 8; sleep 4
figures "2,000 idle attempts from 127.0.0.2"
wait $apid; sleep 1
figures "after"
kill $pid; wait $pid 2>/dev/null || true
start "--web-config $dir/wide.toml"
sleep 1
figures "idle (limits 1100/1100)"
attack headers 1000 8; sleep 4
figures "1,000 x endless headers from 127.0.0.2-33"
wait $apid; sleep 1
figures "after"
echo "VmHWM (peak) $(awk '/VmHWM/ {print $2}' /proc/$pid/status) KiB"
cargo test -q -p krazy-build --release --lib -- --ignored --nocapture pbkdf2_verify_time 2>/dev/null | grep -i pbkdf2 || true
