//! Telling krazy-init about network and clock changes: a tiny HTTP/1.1 client
//! over init's Unix socket (never a signal to PID 1, which on a host is systemd).

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The socket krazy-init listens on.
pub const DEFAULT_SOCKET: &str = "/run/krazy/http.sock";

/// Why a notification did not arrive.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Connecting, writing or reading failed.
    #[error("talking to init at {path} failed: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Init answered with something other than 2xx.
    #[error("init at {path} answered {status:?}")]
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

/// Builds the request bytes of a JSON POST.
pub fn request_bytes(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// POSTs `body` to `path` over the Unix socket and checks for a 2xx answer.
pub fn post(socket: &Path, path: &str, body: &str) -> Result<(), NotifyError> {
    let io = |source| NotifyError::Io {
        path: socket.to_path_buf(),
        source,
    };
    let mut s = UnixStream::connect(socket).map_err(io)?;
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(io)?;
    s.set_write_timeout(Some(Duration::from_secs(3)))
        .map_err(io)?;
    s.write_all(&request_bytes(path, body)).map_err(io)?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = s.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(buf.get(..n).unwrap_or(&[]));
    }
    let line = String::from_utf8_lossy(&head);
    let status = line.lines().next().unwrap_or("").to_string();
    if status.split(' ').nth(1).is_some_and(|c| c.starts_with('2')) {
        Ok(())
    } else {
        Err(NotifyError::Status {
            path: socket.to_path_buf(),
            status,
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
}
