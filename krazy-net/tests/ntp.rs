//! krazy-ntp --no-set against chrony in a network namespace and against a
//! hostile in-test server. The host clock is never touched.

mod common;

use common::*;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn ntp_ts(t: Duration) -> [u8; 8] {
    let secs = (t.as_secs() + 2_208_988_800) & 0xffff_ffff;
    let frac = (u64::from(t.subsec_nanos()) << 32) / 1_000_000_000;
    ((secs << 32) | frac).to_be_bytes()
}

fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

fn ntp_bin() -> &'static str {
    env!("CARGO_BIN_EXE_krazy-ntp")
}

#[test]
fn offset_against_chrony_is_near_zero() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || Command::new("chronyd").arg("--version").output().is_err() || !can_run() {
        common::skip("needs root and chrony");
        return;
    }
    let lab = Lab::new(20);
    let n = &lab.net;
    let conf = lab.dir.path().join("chrony.conf");
    std::fs::write(
        &conf,
        format!(
            "allow all\nlocal stratum 8\nport 123\ncmdport 0\npidfile {}\n",
            lab.dir.path().join("chronyd.pid").display()
        ),
    )
    .unwrap();
    // -x: never touch the clock; -d: foreground.
    let _chrony = Proc(Some(
        Command::new("ip")
            .args(["netns", "exec", &lab.srv, "chronyd", "-f"])
            .arg(&conf)
            .args(["-d", "-x", "-u", "root"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    run(
        "ip",
        &[
            "-n",
            &lab.cli,
            "addr",
            "add",
            &format!("{n}.10/24"),
            "dev",
            "eth0",
        ],
    );
    run("ip", &["-n", &lab.cli, "link", "set", "eth0", "up"]);
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.cli,
            ntp_bin(),
            "--no-set",
            "--oneshot",
        ])
        .args(["--server", &format!("{n}.1")])
        .args([
            "--state-dir",
            &lab.dir.path().join("state").display().to_string(),
        ])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let offset = v["offset"].as_f64().unwrap();
    assert!(offset.abs() < 1.0, "offset {offset}: {log}");
    assert!(v["delay"].as_f64().unwrap() >= 0.0);
    assert_eq!(
        v["stratum"].as_u64(),
        Some(8),
        "chrony serves its local stratum: {v}"
    );
    assert!(!log.contains("clock stepped") && !log.contains("clock slewed"));
    // --no-set never writes the time file either.
    assert!(!lab.dir.path().join("state/last-time").exists());
}

/// A server that answers each request with several malformed packets and
/// then one good answer 5 s ahead of our clock.
#[test]
fn malformed_answers_are_rejected_and_the_good_one_used() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 128];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            if n < 48 {
                continue;
            }
            let mut nonce = [0u8; 8];
            nonce.copy_from_slice(&buf[40..48]);
            let t = now() + Duration::from_secs(5);
            let good = {
                let mut p = [0u8; 48];
                p[0] = 4 << 3 | 4;
                p[1] = 2;
                p[24..32].copy_from_slice(&nonce);
                p[32..40].copy_from_slice(&ntp_ts(t));
                p[40..48].copy_from_slice(&ntp_ts(t));
                p
            };
            let mut wrong_mode = good;
            wrong_mode[0] = 4 << 3 | 3;
            let mut wrong_version = good;
            wrong_version[0] = 1 << 3 | 4;
            let mut zero_xmit = good;
            zero_xmit[40..48].fill(0);
            let mut other_request = good;
            other_request[24] ^= 0xff;
            let mut unsynced = good;
            unsynced[0] |= 3 << 6;
            for p in [
                wrong_mode,
                wrong_version,
                zero_xmit,
                other_request,
                unsynced,
                good,
            ] {
                sock.send_to(&p, from).unwrap();
            }
        }
    });
    let out = Command::new(ntp_bin())
        .args([
            "--no-set",
            "--oneshot",
            "--server",
            &format!("127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    for why in [
        "mode 3, not 4",
        "version 1, not 3 or 4",
        "transmit timestamp is zero",
        "does not match our request",
        "not synchronised",
    ] {
        assert!(log.contains(why), "no rejection for {why:?}: {log}");
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let offset = v["offset"].as_f64().unwrap();
    assert!((offset - 5.0).abs() < 0.5, "offset {offset}");
}

/// Kiss-of-death and silence: the client logs, backs off and keeps running.
#[test]
fn kiss_of_death_and_silence_keep_it_running() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 128];
        while let Ok((_, from)) = sock.recv_from(&mut buf) {
            let mut p = [0u8; 48];
            p[0] = 4 << 3 | 4;
            p[24..32].copy_from_slice(&buf[40..48]);
            p[12..16].copy_from_slice(b"RATE");
            let _ = sock.send_to(&p, from);
        }
    });
    // A port where nothing answers.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ntp.log");
    let mut c = Proc(Some(
        Command::new(ntp_bin())
            .args(["--no-set", "--server", &format!("127.0.0.1:{silent_port}")])
            .args(["--server", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    ));
    wait_for(
        "a timeout on the silent server",
        Duration::from_secs(10),
        || read(&log).contains("no answer"),
    );
    wait_for("a kiss-of-death", Duration::from_secs(10), || {
        read(&log).contains("kiss-of-death from the server: RATE")
    });
    assert!(
        c.0.as_mut().unwrap().try_wait().unwrap().is_none(),
        "it must keep running"
    );
    assert!(c.terminate().unwrap().success());
    drop(silent);
}
