//! Runs the real `krazy-init supervise` binary and talks to it with curl.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const PASSWORD: &str = "correct-horse-battery-staple-42";

pub struct Instance {
    pub child: Child,
    pub addr: String,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub scheme: &'static str,
}

pub fn start(services: &str) -> Instance {
    start_with(services, &[])
}

pub fn start_with(services: &str, extra: &[&str]) -> Instance {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("services.toml");
    std::fs::write(&cfg, services).unwrap();
    let pw = dir.path().join("password");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let socket = dir.path().join("http.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_krazy-init"))
        .args(["supervise", "--config"])
        .arg(&cfg)
        .args(["--listen", "127.0.0.1:0", "--password-file"])
        .arg(&pw)
        .arg("--socket")
        .arg(&socket)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("KRAZY_TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("krazy-init: listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let scheme = if extra.contains(&"--tls-cert") {
        "https"
    } else {
        "http"
    };
    Instance {
        child,
        addr,
        dir,
        socket,
        scheme,
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs curl; returns (status, headers, body).
pub fn curl(args: &[&str]) -> (u16, String, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-S",
            "-k",
            "-D",
            "/dev/stderr",
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .output()
        .expect("curl runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", stdout.as_str()));
    let headers = String::from_utf8_lossy(&out.stderr).into_owned();
    (code.trim().parse().unwrap_or(0), headers, body.to_owned())
}

impl Instance {
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
    }

    pub fn auth(&self) -> String {
        format!("krazy:{PASSWORD}")
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        let (c, _, b) = curl(&["-u", &self.auth(), &self.url(path)]);
        (c, b)
    }

    pub fn post_json(&self, path: &str) -> u16 {
        curl(&[
            "-u",
            &self.auth(),
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
            "{}",
            &self.url(path),
        ])
        .0
    }

    pub fn service(&self, name: &str) -> Value {
        let (code, body) = self.get(&format!("/api/v1/services/{name}"));
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Polls until `pred` holds on the service's JSON, or panics after `secs`.
    pub fn wait(&self, name: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.service(name);
            if pred(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting on {name}: {v:#}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_state(&self, name: &str, state: &str) -> Value {
        self.wait(name, 20, |v| v["state"] == state)
    }

    pub fn log(&self, name: &str, stream: &str) -> String {
        let (c, b) = self.get(&format!("/api/v1/services/{name}/log?stream={stream}"));
        assert_eq!(c, 200);
        b
    }
}

/// (state, at_us) pairs of a service's events.
pub fn events(v: &Value) -> Vec<(String, u64)> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["state"].as_str().unwrap().to_owned(),
                e["at_us"].as_u64().unwrap(),
            )
        })
        .collect()
}

pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}
