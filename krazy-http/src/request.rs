//! Writing a request: its head, a body from a slice or from a reader of a
//! known length, and the one-shot [`exchange`].

use std::io::{self, BufReader, Read, Write};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::{read_response, HttpError, Limits, Response};

/// A request head: method, target and headers, in the order given.
///
/// `Content-Length` is added by [`Request::write_head`] / [`Request::send`]
/// from the body given there; nothing else is added (no `Host`, no
/// `Connection`): set what the peer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl Request {
    /// A request of `method` (`GET`, `PUT`...) for `target` (`/path?query`).
    pub fn new(method: impl Into<String>, target: impl Into<String>) -> Self {
        Request {
            method: method.into(),
            target: target.into(),
            headers: Vec::new(),
        }
    }

    /// `GET target`.
    pub fn get(target: impl Into<String>) -> Self {
        Request::new("GET", target)
    }

    /// `POST target`.
    pub fn post(target: impl Into<String>) -> Self {
        Request::new("POST", target)
    }

    /// `PUT target`.
    pub fn put(target: impl Into<String>) -> Self {
        Request::new("PUT", target)
    }

    /// Adds a header line `name: value`.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Adds `Authorization: Basic` for `user` and `password`.
    pub fn basic_auth(self, user: &str, password: &str) -> Self {
        let token = STANDARD.encode(format!("{user}:{password}"));
        self.header("Authorization", format!("Basic {token}"))
    }

    /// The method.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The request target.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The headers, in order.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The head's bytes, with `Content-Length: n` when `content_length` is
    /// given, and the blank line that ends it. Refuses a method or header
    /// name that is not a token, and line breaks or control characters in
    /// the target or a value ([`HttpError::InvalidRequest`]).
    pub fn head_bytes(&self, content_length: Option<u64>) -> Result<Vec<u8>, HttpError> {
        let bad = |what: &str, v: &str| {
            Err(HttpError::InvalidRequest(format!(
                "{what} {:?}",
                v.chars().take(80).collect::<String>()
            )))
        };
        if !is_token(&self.method) {
            return bad("method", &self.method);
        }
        if self.target.is_empty() || self.target.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return bad("target", &self.target);
        }
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        for (name, value) in &self.headers {
            if !is_token(name) {
                return bad("header name", name);
            }
            if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
                return bad("header value", value);
            }
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(n) = content_length {
            out.push_str(&format!("Content-Length: {n}\r\n"));
        }
        out.push_str("\r\n");
        Ok(out.into_bytes())
    }

    /// Writes the head ([`Request::head_bytes`]); the caller writes the
    /// body, exactly `content_length` bytes of it ([`copy_body`]).
    pub fn write_head<W: Write + ?Sized>(
        &self,
        w: &mut W,
        content_length: Option<u64>,
    ) -> Result<(), HttpError> {
        let head = self.head_bytes(content_length)?;
        w.write_all(&head).map_err(HttpError::Io)
    }

    /// Writes the head and `body` (with its `Content-Length`; none without
    /// a body) in one write, and flushes.
    pub fn send<W: Write + ?Sized>(&self, w: &mut W, body: Option<&[u8]>) -> Result<(), HttpError> {
        let mut out = self.head_bytes(body.map(|b| b.len() as u64))?;
        out.extend_from_slice(body.unwrap_or_default());
        w.write_all(&out)
            .and_then(|()| w.flush())
            .map_err(HttpError::Io)
    }
}

/// Copies exactly `len` bytes of `src` to `dst` through `buf` (its size is
/// the write size), calling `progress` with the bytes sent so far after
/// every write, then flushes `dst`. A source that ends early is
/// [`HttpError::SourceShort`], one that fails [`HttpError::Source`], a
/// failing `dst` [`HttpError::Io`].
pub fn copy_body<R: Read + ?Sized, W: Write + ?Sized>(
    src: &mut R,
    dst: &mut W,
    len: u64,
    buf: &mut [u8],
    progress: &mut dyn FnMut(u64),
) -> Result<(), HttpError> {
    if buf.is_empty() && len > 0 {
        return Err(HttpError::InvalidRequest("an empty copy buffer".into()));
    }
    let mut sent = 0u64;
    while sent < len {
        let want = usize::try_from(len - sent)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let chunk = buf.get_mut(..want).unwrap_or_default();
        let n = match src.read(chunk) {
            Ok(0) => {
                return Err(HttpError::SourceShort {
                    got: sent,
                    want: len,
                })
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HttpError::Source(e)),
        };
        dst.write_all(chunk.get(..n).unwrap_or_default())
            .map_err(HttpError::Io)?;
        sent += n as u64;
        progress(sent);
    }
    dst.flush().map_err(HttpError::Io)
}

/// One request and its answer's head over `stream`: [`Request::send`] then
/// [`read_response`]. Read the body from the [`Response`]'s
/// [`BodyReader`](crate::BodyReader).
pub fn exchange<S: Read + Write>(
    mut stream: S,
    req: &Request,
    body: Option<&[u8]>,
    limits: &Limits,
) -> Result<Response<BufReader<S>>, HttpError> {
    req.send(&mut stream, body)?;
    read_response(BufReader::new(stream), req.method(), limits)
}

/// RFC 9110 `token`: what a method and a header name are made of.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        let r = Request::put("/u").header("Host", "h");
        let h = r.head_bytes(Some(3)).unwrap();
        assert_eq!(
            h,
            b"PUT /u HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n"
        );
        let mut out = Vec::new();
        Request::get("/")
            .basic_auth("krazy", "pw")
            .send(&mut out, None)
            .unwrap();
        assert_eq!(
            out,
            b"GET / HTTP/1.1\r\nAuthorization: Basic a3Jhenk6cHc=\r\n\r\n"
        );
        for bad in [
            Request::get("/a b"),
            Request::get(""),
            Request::new("G T", "/"),
            Request::get("/").header("X\r\nY", "1"),
            Request::get("/").header("X", "1\r\nY: 2"),
        ] {
            assert!(
                matches!(bad.head_bytes(None), Err(HttpError::InvalidRequest(_))),
                "{bad:?}"
            );
        }
        // Padding of one and two, and none (RFC 4648 vectors, as user:password).
        for (user, password, token) in [
            ("a", "", "YTo="),
            ("ab", "", "YWI6"),
            ("f", "oobar", "Zjpvb2Jhcg=="),
            ("krazy", "pa ss", "a3Jhenk6cGEgc3M="),
        ] {
            let r = Request::get("/").basic_auth(user, password);
            assert_eq!(
                r.headers(),
                [("Authorization".to_string(), format!("Basic {token}"))]
            );
        }
    }

    #[test]
    fn copies_bodies() {
        let mut out = Vec::new();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4];
        copy_body(&mut &b"0123456789"[..], &mut out, 10, &mut buf, &mut |s| {
            seen.push(s)
        })
        .unwrap();
        assert_eq!(out, b"0123456789");
        assert_eq!(seen, [4, 8, 10]);
        let e = copy_body(&mut &b"012"[..], &mut Vec::new(), 5, &mut buf, &mut |_| {});
        assert!(
            matches!(e, Err(HttpError::SourceShort { got: 3, want: 5 })),
            "{e:?}"
        );
    }
}
