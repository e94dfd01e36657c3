//! Runs the real `hello` binary: the counter persists in $HOME/count, and
//! HELLO_FAIL=1 exits with status 1 at once.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

fn get(port: u16) -> String {
    for _ in 0..200 {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            let mut r = String::new();
            s.read_to_string(&mut r).unwrap();
            return r;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("hello never answered on port {port}");
}

#[test]
fn counts_requests_in_home_and_persists() {
    let home = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_hello"))
        .args(["--port", &port.to_string()])
        .env("HOME", home.path())
        .env_remove("HELLO_FAIL")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = get(port);
    let second = get(port);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(first.ends_with("request 1\n"), "{first}");
    assert!(second.ends_with("request 2\n"), "{second}");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(first.contains(&format!("hello from {}", host.trim())));
    assert_eq!(
        std::fs::read_to_string(home.path().join("count")).unwrap(),
        "2\n"
    );
}

#[test]
fn hello_fail_exits_with_status_1() {
    let out = Command::new(env!("CARGO_BIN_EXE_hello"))
        .env("HELLO_FAIL", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
