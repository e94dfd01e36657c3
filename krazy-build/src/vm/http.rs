//! A minimal plain HTTP/1.1 client ([`http_request`], [`wait_http`]) for
//! tests and smoke checks against a guest through a forward. It stands
//! alone so that it can be replaced by a shared HTTP crate.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::thread;
use std::time::{Duration, Instant};

use super::VmError;

/// The largest HTTP head or body [`http_request`] accepts.
const HTTP_MAX_BODY: usize = 16 << 20;
const HTTP_MAX_HEAD: usize = 64 << 10;

/// A plain HTTP/1.1 request for [`http_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path with query, starting with `/`.
    pub path: String,
    /// HTTP Basic credentials `(user, password)`.
    pub basic_auth: Option<(String, String)>,
    /// Extra headers (`Host`, `Connection`, `Content-Length` and
    /// `Authorization` are written by [`http_request`]).
    pub headers: Vec<(String, String)>,
    /// The body (sent with a `Content-Length` when not empty or not a GET).
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// A GET of `path`.
    pub fn get(path: &str) -> Self {
        HttpRequest {
            method: "GET".into(),
            path: path.into(),
            basic_auth: None,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A POST of `path` with a JSON body and `Content-Type: application/json`
    /// (which krazy's API requires on every state-changing request).
    pub fn post_json(path: &str, body: impl Into<Vec<u8>>) -> Self {
        HttpRequest {
            method: "POST".into(),
            path: path.into(),
            basic_auth: None,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.into(),
        }
    }

    /// Adds HTTP Basic credentials.
    pub fn with_basic_auth(mut self, user: &str, password: &str) -> Self {
        self.basic_auth = Some((user.into(), password.into()));
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `host:port` from `host:port`, `http://host:port` or `http://host:port/`.
fn parse_target(target: &str) -> Result<&str, VmError> {
    let bad = |reason| VmError::HttpTarget {
        target: target.to_string(),
        reason,
    };
    if target.starts_with("https://") {
        return Err(bad("only plain http:// is supported here"));
    }
    let rest = target.strip_prefix("http://").unwrap_or(target);
    let hostport = rest.strip_suffix('/').unwrap_or(rest);
    if hostport.contains('/') {
        return Err(bad("give the path separately, not in the target"));
    }
    match hostport.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(hostport),
        _ => Err(bad("expected host:port")),
    }
}

/// Sends one request to `target` (`host:port` or `http://host:port`) and
/// reads the answer, with `timeout` for connecting and for each read and
/// write. Plain HTTP only; the request says `Connection: close`; the body is
/// read by `Content-Length`, chunked encoding, or to the end of the stream.
pub fn http_request(
    target: &str,
    req: &HttpRequest,
    timeout: Duration,
) -> Result<HttpResponse, VmError> {
    let hostport = parse_target(target)?;
    let io_err = |source| VmError::Http {
        method: req.method.clone(),
        path: req.path.clone(),
        target: target.to_string(),
        source,
    };
    let bad = |reason: String| VmError::HttpResponse {
        method: req.method.clone(),
        path: req.path.clone(),
        target: target.to_string(),
        reason,
    };
    let addrs: Vec<_> = hostport.to_socket_addrs().map_err(io_err)?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut s = stream.ok_or_else(|| io_err(last))?;
    s.set_read_timeout(Some(timeout)).map_err(io_err)?;
    s.set_write_timeout(Some(timeout)).map_err(io_err)?;

    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nUser-Agent: krazy\r\n",
        req.method, req.path
    );
    if let Some((u, p)) = &req.basic_auth {
        head.push_str("Authorization: Basic ");
        head.push_str(&base64(format!("{u}:{p}").as_bytes()));
        head.push_str("\r\n");
    }
    for (n, v) in &req.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if !req.body.is_empty() || req.method != "GET" {
        head.push_str(&format!("Content-Length: {}\r\n", req.body.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&req.body);
    s.write_all(&out).map_err(io_err)?;

    let mut r = BufReader::new(s);
    // Status line and headers.
    let mut head_len = 0usize;
    let mut read_head_line = |r: &mut BufReader<TcpStream>| -> Result<String, VmError> {
        let mut line = Vec::new();
        let n = r
            .by_ref()
            .take((HTTP_MAX_HEAD - head_len) as u64)
            .read_until(b'\n', &mut line)
            .map_err(io_err)?;
        head_len += n;
        if n == 0 || !line.ends_with(b"\n") {
            return Err(io_err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection ended inside the response head",
            )));
        }
        Ok(String::from_utf8_lossy(&line).trim_end().to_string())
    };
    let status_line = read_head_line(&mut r)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or_else(|| bad(format!("status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_head_line(&mut r)?;
        if line.is_empty() {
            break;
        }
        let (n, v) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("header line {line:?}")))?;
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    let resp_header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let chunked = resp_header("Transfer-Encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = resp_header("Content-Length")
        .map(|v| {
            v.parse::<usize>()
                .map_err(|_| bad(format!("Content-Length {v:?}")))
        })
        .transpose()?;
    let mut body = Vec::new();
    if status == 204 || status == 304 || (100..200).contains(&status) {
        // No body.
    } else if chunked {
        loop {
            let mut size_line = String::new();
            r.read_line(&mut size_line).map_err(io_err)?;
            let hex = size_line.trim().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(hex, 16)
                .map_err(|_| bad(format!("chunk size {:?}", size_line.trim())))?;
            if size == 0 {
                break; // Trailers, if any, are not needed.
            }
            if body.len() + size > HTTP_MAX_BODY {
                return Err(bad(format!("body larger than {HTTP_MAX_BODY} bytes")));
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..]).map_err(io_err)?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf).map_err(io_err)?;
        }
    } else if let Some(len) = length {
        if len > HTTP_MAX_BODY {
            return Err(bad(format!("body larger than {HTTP_MAX_BODY} bytes")));
        }
        body.resize(len, 0);
        r.read_exact(&mut body).map_err(io_err)?;
    } else {
        r.by_ref()
            .take(HTTP_MAX_BODY as u64 + 1)
            .read_to_end(&mut body)
            .map_err(io_err)?;
        if body.len() > HTTP_MAX_BODY {
            return Err(bad(format!("body larger than {HTTP_MAX_BODY} bytes")));
        }
    }
    let _ = r.get_ref().shutdown(Shutdown::Both);
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// GETs `path` from `target` (`host:port` or `http://host:port`), with HTTP
/// Basic credentials when given, retrying every 250 ms until any HTTP
/// answer arrives (whatever its status) or `timeout` passes. Connection
/// refusals, resets and truncated answers count as "not yet": QEMU accepts
/// on a forwarded port before the guest listens and then resets.
pub fn wait_http(
    target: &str,
    path: &str,
    basic_auth: Option<(&str, &str)>,
    timeout: Duration,
) -> Result<HttpResponse, VmError> {
    parse_target(target)?;
    let mut req = HttpRequest::get(path);
    if let Some((u, p)) = basic_auth {
        req = req.with_basic_auth(u, p);
    }
    let start = Instant::now();
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        let attempt = left
            .min(Duration::from_secs(10))
            .max(Duration::from_millis(100));
        let last_error = match http_request(target, &req, attempt) {
            Ok(resp) => return Ok(resp),
            Err(e) => e.to_string(),
        };
        if start.elapsed() >= timeout {
            return Err(VmError::HttpTimeout {
                target: target.to_string(),
                path: path.to_string(),
                waited: timeout,
                last_error,
            });
        }
        thread::sleep(Duration::from_millis(250).min(timeout.saturating_sub(start.elapsed())));
    }
}

/// Standard base64 with padding (for the Basic `Authorization` header).
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= c.len() {
                out.push(char::from(ABC[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("krazy:pa ss", "a3Jhenk6cGEgc3M="),
        ] {
            assert_eq!(base64(i.as_bytes()), o, "{i:?}");
        }
    }

    #[test]
    fn targets_parse() {
        assert_eq!(parse_target("127.0.0.1:80").ok(), Some("127.0.0.1:80"));
        assert_eq!(
            parse_target("http://127.0.0.1:8080/").ok(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(parse_target("localhost:1").ok(), Some("localhost:1"));
        for bad in [
            "https://127.0.0.1:443",
            "127.0.0.1",
            "http://h:1/api",
            ":80",
            "h:99999",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }
}
