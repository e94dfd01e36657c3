//! Telling krazy-init about network and clock changes: a JSON POST over
//! init's Unix socket (never a signal to PID 1, which on a host is systemd),
//! written and answered through the workspace's one HTTP client, krazy-http.

use krazy_http::{exchange, HttpError, Limits, Request};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The socket krazy-init listens on.
pub const DEFAULT_SOCKET: &str = "/run/krazy/http.sock";

/// How long connecting aside, one write or one read may take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Why a notification did not arrive.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Connecting to the socket or setting its timeouts failed.
    #[error("cannot connect to init at {}: {error}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        error: std::io::Error,
    },
    /// Sending the request or reading the answer's head failed.
    #[error("talking to init at {} failed: {error}", path.display())]
    Http {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        error: HttpError,
    },
    /// Init answered with something other than 2xx.
    #[error("init at {} answered {status:?}", path.display())]
    Status {
        /// The socket path.
        path: PathBuf,
        /// The status line.
        status: String,
    },
}

/// The socket to use: the given one, else the default when it exists.
pub fn resolve_socket(flag: Option<&Path>) -> Option<PathBuf> {
    match flag {
        Some(p) => Some(p.to_path_buf()),
        None => Some(PathBuf::from(DEFAULT_SOCKET)).filter(|p| p.exists()),
    }
}

/// The request head of a JSON POST to `path` (the body's `Content-Length`
/// is added when it is sent).
pub fn request(path: &str) -> Request {
    Request::post(path)
        .header("Host", "localhost")
        .header("Content-Type", "application/json")
        .header("Connection", "close")
}

/// POSTs `body` to `path` over the Unix socket and checks for a 2xx answer.
pub fn post(socket: &Path, path: &str, body: &str) -> Result<(), NotifyError> {
    let connect = |error| NotifyError::Connect {
        path: socket.to_path_buf(),
        error,
    };
    let s = UnixStream::connect(socket).map_err(connect)?;
    s.set_read_timeout(Some(TIMEOUT)).map_err(connect)?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(connect)?;
    let answer = exchange(s, &request(path), Some(body.as_bytes()), &Limits::default()).map_err(
        |error| NotifyError::Http {
            path: socket.to_path_buf(),
            error,
        },
    )?;
    if answer.head.is_success() {
        Ok(())
    } else {
        Err(NotifyError::Status {
            path: socket.to_path_buf(),
            status: answer.head.status_line(),
        })
    }
}

/// The JSON body of `POST /api/v1/notify/network`.
pub fn network_body(interface: &str, addresses: &[(Ipv4Addr, u8)]) -> String {
    let addrs: Vec<_> = addresses
        .iter()
        .map(|(a, p)| serde_json::json!({"address": a.to_string(), "prefix": p}))
        .collect();
    serde_json::json!({"interface": interface, "addresses": addrs}).to_string()
}

/// Reports an interface's addresses to init; a missing socket is logged, not an error.
pub fn network(socket: Option<&Path>, interface: &str, addresses: &[(Ipv4Addr, u8)]) {
    send(
        socket,
        "/api/v1/notify/network",
        &network_body(interface, addresses),
    );
}

/// Reports clock synchronisation to init.
pub fn clock(socket: Option<&Path>, synchronized: bool) {
    let body = serde_json::json!({ "synchronized": synchronized }).to_string();
    send(socket, "/api/v1/notify/clock", &body);
}

fn send(socket: Option<&Path>, path: &str, body: &str) {
    let Some(socket) = socket else {
        tracing::info!("no init socket, not reporting {path}");
        return;
    };
    match post(socket, path, body) {
        Ok(()) => tracing::info!(socket = %socket.display(), "reported {path}: {body}"),
        Err(e) => tracing::warn!("could not report {path}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    #[test]
    fn posts_json_over_a_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("http.sock");
        let l = UnixListener::bind(&sock).unwrap();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !String::from_utf8_lossy(&req).contains("\"addresses\"") {
                let n = c.read(&mut buf).unwrap();
                req.extend_from_slice(&buf[..n]);
            }
            c.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
            String::from_utf8(req).unwrap()
        });
        post(
            &sock,
            "/api/v1/notify/network",
            &network_body("eth0", &[(Ipv4Addr::new(10, 0, 2, 15), 24)]),
        )
        .unwrap();
        let req = t.join().unwrap();
        assert!(req.starts_with("POST /api/v1/notify/network HTTP/1.1\r\n"));
        assert!(req.contains("Content-Type: application/json\r\n"));
        let body = req.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["interface"], "eth0");
        assert_eq!(v["addresses"][0]["address"], "10.0.2.15");
        assert_eq!(v["addresses"][0]["prefix"], 24);
        assert!(post(&dir.path().join("missing"), "/x", "{}").is_err());
    }

    /// Serves one connection: reads the request head, answers `answer`.
    fn answer_once(sock: &Path, answer: &'static [u8]) -> std::thread::JoinHandle<()> {
        let l = UnixListener::bind(sock).unwrap();
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = c.read(&mut buf).unwrap();
                assert!(n > 0, "the client closed before its request head ended");
                req.extend_from_slice(&buf[..n]);
            }
            c.write_all(answer).unwrap();
        })
    }

    #[test]
    fn a_refusal_and_a_silent_close_are_errors_that_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("refuses.sock");
        let t = answer_once(
            &sock,
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\n\r\nno\n",
        );
        let e = post(&sock, "/api/v1/notify/clock", "{}").unwrap_err();
        t.join().unwrap();
        assert!(
            matches!(&e, NotifyError::Status { status, .. } if status == "HTTP/1.1 400 Bad Request"),
            "{e:?}"
        );
        let sock = dir.path().join("closes.sock");
        let t = answer_once(&sock, b"");
        let e = post(&sock, "/api/v1/notify/clock", "{}").unwrap_err();
        t.join().unwrap();
        assert!(
            matches!(&e, NotifyError::Http { error, .. } if error.is_transport()),
            "{e:?}"
        );
        assert!(e.to_string().contains("closes.sock"), "{e}");
        let e = post(&dir.path().join("missing"), "/x", "{}").unwrap_err();
        assert!(matches!(e, NotifyError::Connect { .. }), "{e:?}");
    }
}
