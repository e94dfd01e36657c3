//! A plain HTTP/1.1 client ([`http_request`], [`wait_http`]) for tests and
//! smoke checks against a guest through a forward: a thin layer over
//! [`krazy_http`], the project's one HTTP client.

use std::io;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};

use krazy_http::{exchange, HttpError, Limits, Request};
use std::thread;
use std::time::{Duration, Instant};

use super::VmError;

/// The largest HTTP head or body [`http_request`] accepts.
const HTTP_MAX_BODY: u64 = 16 << 20;
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
/// reads the answer with [`krazy_http`], with `timeout` for connecting and
/// for each read and write. Plain HTTP only; the request says
/// `Connection: close`; the body is read by its framing (`Content-Length`,
/// chunked, or to the end of the stream), at most 16 MiB of it.
pub fn http_request(
    target: &str,
    req: &HttpRequest,
    timeout: Duration,
) -> Result<HttpResponse, VmError> {
    let hostport = parse_target(target)?;
    let fail = |e: HttpError| {
        let (method, path, target) = (req.method.clone(), req.path.clone(), target.to_string());
        if e.is_transport() {
            VmError::Http {
                method,
                path,
                target,
                source: Box::new(e),
            }
        } else {
            VmError::HttpResponse {
                method,
                path,
                target,
                source: Box::new(e),
            }
        }
    };
    let io_err = |e: io::Error| fail(HttpError::Io(e));
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
    let mut stream = None;
    for a in hostport.to_socket_addrs().map_err(io_err)? {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let s = stream.ok_or_else(|| io_err(last))?;
    s.set_read_timeout(Some(timeout)).map_err(io_err)?;
    s.set_write_timeout(Some(timeout)).map_err(io_err)?;

    let mut r = Request::new(req.method.as_str(), req.path.as_str())
        .header("Host", hostport)
        .header("Connection", "close")
        .header("User-Agent", "krazy");
    if let Some((u, p)) = &req.basic_auth {
        r = r.basic_auth(u, p);
    }
    for (n, v) in &req.headers {
        r = r.header(n.as_str(), v.as_str());
    }
    let body = (!req.body.is_empty() || req.method != "GET").then_some(req.body.as_slice());
    let limits = Limits {
        max_head: HTTP_MAX_HEAD,
        ..Limits::default()
    };
    let mut resp = exchange(&s, &r, body, &limits).map_err(fail)?;
    let body = resp.read_to_vec(HTTP_MAX_BODY).map_err(fail)?;
    // The answer is whole; the peer's close is not waited for.
    let _ = s.shutdown(Shutdown::Both);
    Ok(HttpResponse {
        status: resp.status(),
        headers: resp.head.headers,
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
            Err(e) => krazy_update::client::chain(&e),
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

#[cfg(test)]
mod tests {
    use super::*;

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
