//! `krazy-init supervise` with real child processes: states, backoff, logs, stop, reaping.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;

const SERVICES: &str = r#"
version = 1

[[service]]
name = "hello"
path = "/bin/sh"
args = ["-c", "echo hello out; echo hello err >&2; i=0; while true; do i=$((i+1)); echo tick $i; echo tock $i >&2; sleep 0.1; done"]

[[service]]
name = "crash"
path = "/bin/sh"
args = ["-c", "echo crashing; exit 3"]
backoff_initial_ms = 100
backoff_max_ms = 400

[[service]]
name = "stubborn"
path = "/bin/sh"
args = ["-c", "trap '' TERM; echo ready; while true; do sleep 0.05; done"]
grace_period_ms = 500

[[service]]
name = "nosupervise"
path = "/bin/sh"
args = ["-c", "exit 125"]

[[service]]
name = "manual"
path = "/bin/sleep"
args = ["1000"]
start = "manual"

[[service]]
name = "orphaner"
path = "/bin/sh"
args = ["-c", "sh -c 'sleep 1.37 &'; exec sleep 1000"]

[[service]]
name = "flood"
path = "/bin/sh"
args = ["-c", "seq 1 200000; sleep 1000"]
start = "manual"

[[service]]
name = "clocked"
path = "/bin/sleep"
args = ["1000"]
wait_for = ["clock"]
"#;

#[test]
fn running_service_logs_both_streams() {
    let k = start(SERVICES);
    let v = k.wait_state("hello", "running");
    assert!(v["pid"].as_u64().unwrap() > 1);
    assert!(v["started_at"].as_str().unwrap().ends_with('Z'));
    assert!(v["last_exit"].is_null());
    k.wait("hello", 20, |_| k.log("hello", "stdout").contains("tick 3"));
    let out = k.log("hello", "stdout");
    let err = k.log("hello", "stderr");
    assert!(out.starts_with("hello out\ntick 1\n"), "{out}");
    assert!(err.starts_with("hello err\ntock 1\n"), "{err}");
    assert!(!out.contains("tock") && !err.contains("tick"));
    let both = k.log("hello", "both");
    // Lines of the two streams are merged in the order they were read.
    for l in ["hello out", "hello err", "tick 1", "tock 1"] {
        assert!(both.lines().take(6).any(|x| x == l), "{both}");
    }
    // The service list carries every service.
    let (c, list) = k.get("/api/v1/services");
    assert_eq!(c, 200);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 8);
}

#[test]
fn crash_loop_restarts_are_spaced_by_the_backoff() {
    let k = start(SERVICES);
    let v = k.wait("crash", 30, |v| v["restarts"].as_u64().unwrap() >= 4);
    assert_eq!(v["last_exit"]["code"], 3);
    assert!(v["last_exit"]["signal"].is_null());
    let ev = events(&v);
    // Each backoff -> starting gap is at least the delay: 100, 200, 400, 400 ms.
    let mut gaps = Vec::new();
    for w in ev.windows(2) {
        if w[0].0 == "backoff" && w[1].0 == "starting" {
            gaps.push(w[1].1 - w[0].1);
        }
    }
    assert!(gaps.len() >= 4, "{ev:?}");
    for (gap, want_ms) in gaps.iter().zip([100u64, 200, 400, 400]) {
        assert!(
            *gap >= want_ms * 1000,
            "gap {gap} us < {want_ms} ms: {ev:?}"
        );
    }
    // The crash loop starves nobody: the other services run.
    assert_eq!(k.service("hello")["state"], "running");
    assert!(k.log("crash", "stdout").contains("crashing"));
}

#[test]
fn stop_kills_after_the_grace_period() {
    let k = start(SERVICES);
    k.wait_state("stubborn", "running");
    k.wait("stubborn", 20, |_| {
        k.log("stubborn", "stdout").contains("ready")
    });
    let before = now_us();
    assert_eq!(k.post_json("/api/v1/services/stubborn/stop"), 202);
    let v = k.wait_state("stubborn", "stopped");
    assert_eq!(v["last_exit"]["signal"], 9, "{v:#}");
    let stopped_at = events(&v)
        .iter()
        .rev()
        .find(|e| e.0 == "stopped")
        .unwrap()
        .1;
    assert!(
        stopped_at - before >= 500_000,
        "killed before the grace period"
    );
    assert!(k.log("stubborn", "stderr").contains("grace period over"));
    assert!(v["pid"].is_null());
}

#[test]
fn exit_125_is_not_supervised() {
    let k = start(SERVICES);
    let v = k.wait_state("nosupervise", "exited");
    assert_eq!(v["last_exit"]["code"], 125);
    std::thread::sleep(Duration::from_millis(400));
    let v = k.service("nosupervise");
    assert_eq!(v["state"], "exited");
    assert_eq!(v["restarts"], 0);
}

#[test]
fn manual_service_start_restart_stop() {
    let k = start(SERVICES);
    k.wait_state("hello", "running");
    let v = k.service("manual");
    assert_eq!(v["state"], "stopped");
    assert!(v["pid"].is_null());
    assert_eq!(k.post_json("/api/v1/services/manual/start"), 202);
    let pid1 = k.wait_state("manual", "running")["pid"].as_u64().unwrap();
    assert_eq!(k.post_json("/api/v1/services/manual/restart"), 202);
    let v = k.wait("manual", 20, |v| {
        v["state"] == "running" && v["pid"].as_u64() != Some(pid1)
    });
    assert_eq!(
        v["restarts"], 0,
        "a requested restart is not counted as a crash"
    );
    assert_eq!(k.post_json("/api/v1/services/manual/stop"), 202);
    let v = k.wait_state("manual", "stopped");
    assert_eq!(v["last_exit"]["signal"], 15);
    assert_eq!(k.post_json("/api/v1/services/nope/stop"), 404);
}

fn children_of(pid: u32) -> Vec<(u32, char, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.get(1).and_then(|x| x.parse::<u32>().ok()) == Some(pid) {
            let cmd = std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .unwrap_or_default()
                .replace('\0', " ");
            out.push((p, f[0].chars().next().unwrap_or('?'), cmd));
        }
    }
    out
}

#[test]
fn orphans_are_reaped_as_subreaper() {
    let k = start(SERVICES);
    k.wait_state("orphaner", "running");
    let me = k.child.id();
    // The double-forked sleep is re-parented to the supervisor (subreaper)...
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if children_of(me).iter().any(|c| c.2.contains("sleep 1.37")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orphan never re-parented: {:?}",
            children_of(me)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...and after it exits, it is reaped: no zombie stays.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let kids = children_of(me);
        if !kids
            .iter()
            .any(|c| c.2.contains("sleep 1.37") || c.1 == 'Z')
        {
            break;
        }
        assert!(Instant::now() < deadline, "zombies remain: {kids:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The supervised child's own status still reached its service.
    assert_eq!(k.service("orphaner")["state"], "running");
}

#[test]
fn flood_stays_bounded_and_a_slow_follower_sees_a_drop_marker() {
    let k = start(SERVICES);
    // A follower that connects first, then reads nothing for a while.
    let mut s = std::net::TcpStream::connect(&k.addr).unwrap();
    let auth = krazy_init::web::auth::base64_encode(k.auth().as_bytes());
    write!(
        s,
        "GET /api/v1/services/flood/log?stream=stdout&follow=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 64];
    let n = s.read(&mut head).unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));
    assert_eq!(k.post_json("/api/v1/services/flood/start"), 202);
    k.wait("flood", 30, |_| {
        k.log("flood", "stdout").ends_with("\n200000\n")
    });
    // The ring keeps the newest 1,000 lines.
    let log = k.log("flood", "stdout");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 1000);
    assert_eq!(lines[0], "199001");
    // Now the follower reads: it lost lines and was told so, and still gets the end.
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while !String::from_utf8_lossy(&got).contains("data: 200000\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("lines dropped]"), "no drop marker");
    // The supervisor still answers.
    assert_eq!(k.service("hello")["state"], "running");
}

#[test]
fn follow_streams_server_sent_events() {
    let k = start(SERVICES);
    k.wait_state("hello", "running");
    let (code, headers, body) = curl(&[
        "-N",
        "--max-time",
        "2",
        "-u",
        &k.auth(),
        &k.url("/api/v1/services/hello/log?stream=both&follow=1"),
    ]);
    // curl ends with a timeout (28) after 2 s: the stream stays open.
    assert_eq!(code, 200, "{headers}");
    assert!(headers
        .to_ascii_lowercase()
        .contains("content-type: text/event-stream"));
    assert!(body.contains("event: stdout\ndata: hello out\n"), "{body}");
    assert!(body.contains("event: stderr\ndata: hello err\n"), "{body}");
    // Lines keep coming live: more ticks than at connect time.
    let ticks = body.matches("data: tick").count();
    assert!(ticks >= 5, "{body}");
}

#[test]
fn unix_socket_is_trusted_and_notify_clock_opens_the_gate() {
    let k = start(SERVICES);
    k.wait_state("hello", "running");
    assert_eq!(k.service("clocked")["state"], "starting");
    let sock = k.socket.to_str().unwrap();
    let (c, _, body) = curl(&["--unix-socket", sock, "http://x/api/v1/services/clocked"]);
    assert_eq!(c, 200, "{body}");
    // Notify endpoints are for the Unix socket only.
    let (c, _, _) = curl(&[
        "-u",
        &k.auth(),
        "-H",
        "Content-Type: application/json",
        "--data",
        r#"{"synchronized": true}"#,
        &k.url("/api/v1/notify/clock"),
    ]);
    assert_eq!(c, 403);
    let (c, _, _) = curl(&[
        "--unix-socket",
        sock,
        "-H",
        "Content-Type: application/json",
        "--data",
        r#"{"synchronized": true}"#,
        "http://x/api/v1/notify/clock",
    ]);
    assert_eq!(c, 200);
    k.wait_state("clocked", "running");
    let (c, _, _) = curl(&[
        "--unix-socket",
        sock,
        "-H",
        "Content-Type: application/json",
        "--data",
        r#"{"interface": "eth0", "addresses": [{"address": "10.0.2.15", "prefix": 24}]}"#,
        "http://x/api/v1/notify/network",
    ]);
    assert_eq!(c, 200);
    let (c, _, _) = curl(&[
        "--unix-socket",
        sock,
        "-H",
        "Content-Type: application/json",
        "--data",
        r#"{"interface": 7}"#,
        "http://x/api/v1/notify/network",
    ]);
    assert_eq!(c, 400);
    let (c, _, sys) = curl(&["--unix-socket", sock, "http://x/api/v1/system"]);
    assert_eq!(c, 200);
    let sys: serde_json::Value = serde_json::from_str(&sys).unwrap();
    assert!(sys["uptime_seconds"].as_u64().unwrap() > 0);
    assert!(sys["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["interface"] == "lo" && a["address"] == "127.0.0.1" && a["prefix"] == 8));
    assert_eq!(sys["clock_synchronized"], true);
}

#[test]
fn poweroff_in_host_mode_stops_services_and_the_supervisor() {
    let mut k = start(SERVICES);
    let pid = k.wait_state("hello", "running")["pid"].as_u64().unwrap();
    assert_eq!(k.post_json("/api/v1/poweroff"), 202);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = k.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "supervisor did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists() || {
            let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            s.contains(") Z")
        }
    );
}

#[test]
fn public_listen_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.toml"), "version = 1\n").unwrap();
    std::fs::write(dir.path().join("pw"), "pw").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_krazy-init"))
        .args(["supervise", "--config"])
        .arg(dir.path().join("s.toml"))
        .args(["--listen", "8.8.8.8:80", "--password-file"])
        .arg(dir.path().join("pw"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to listen on 8.8.8.8"), "{err}");
    // A bad services file names the field.
    std::fs::write(
        dir.path().join("s.toml"),
        "version = 1\n[[service]]\npath = \"/a\"\nrestart_policy = 1\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_krazy-init"))
        .args(["supervise", "--config"])
        .arg(dir.path().join("s.toml"))
        .args(["--listen", "127.0.0.1:0", "--password-file"])
        .arg(dir.path().join("pw"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("restart_policy"));
}
