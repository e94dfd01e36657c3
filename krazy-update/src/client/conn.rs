//! One request per connection: connecting (TCP, then TLS pinned by
//! [`krazy_http::tls::PinnedTls`]), writing the request with its body, and
//! reading the answer with [`krazy_http`] within the client's limits.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};

use krazy_http::tls::rustls::{ClientConnection, StreamOwned};
use krazy_http::{copy_body, read_response, HttpError, Limits, Request};

use super::error::http_err;
use super::{Client, ClientError, Progress, USER};
use crate::protocol::{ErrorBody, PartKind};

/// The most of a JSON (or text) answer's body that is read.
pub(crate) const MAX_JSON: u64 = 1 << 20;
/// The write size of a part upload.
const SEND_CHUNK: usize = 256 << 10;

/// A connection to the device: plain or TLS.
pub(crate) enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// An answer: status and body (at most [`MAX_JSON`] bytes).
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

/// A request body.
pub(crate) enum Body<'a> {
    None,
    Json(&'a [u8]),
    Stream {
        part: PartKind,
        size: u64,
        src: &'a mut dyn Read,
        progress: &'a mut dyn FnMut(Progress),
    },
}

/// Reads the answer to a `method` request: interim answers skipped, the
/// body whole, refused above [`MAX_JSON`] bytes.
pub(crate) fn read_answer<R: BufRead>(r: R, method: &str) -> Result<Answer, HttpError> {
    let mut resp = read_response(r, method, &Limits::default())?;
    let body = resp.read_to_vec(MAX_JSON)?;
    Ok(Answer {
        status: resp.status(),
        body,
    })
}

impl Client {
    /// Opens a connection (TLS when a certificate is pinned) with the
    /// configured timeouts.
    pub(crate) fn connect(&self) -> Result<Conn, ClientError> {
        let host = &self.cfg.host;
        let cerr = |source| ClientError::Connect {
            host: host.clone(),
            source,
        };
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address");
        let mut tcp = None;
        for addr in host.to_socket_addrs().map_err(cerr)? {
            match TcpStream::connect_timeout(&addr, self.cfg.io_timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let tcp = tcp.ok_or_else(|| cerr(last))?;
        tcp.set_read_timeout(Some(self.cfg.io_timeout))
            .map_err(cerr)?;
        tcp.set_write_timeout(Some(self.cfg.io_timeout))
            .map_err(cerr)?;
        // Only latency is at stake if it cannot be set.
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Conn::Plain(tcp)),
            Some(tls) => tls
                .connect(host, tcp)
                .map(|s| Conn::Tls(Box::new(s)))
                .map_err(|e| http_err("the TLS handshake", host, e)),
        }
    }

    /// The request head: authentication, `Connection: close`, `Accept`.
    pub(crate) fn head(&self, method: &str, path: &str, accept: &str) -> Request {
        Request::new(method, path)
            .header("Host", &self.cfg.host)
            .basic_auth(USER, &self.cfg.password)
            .header(
                "User-Agent",
                format!("krazy-update/{}", env!("CARGO_PKG_VERSION")),
            )
            .header("Accept", accept)
            .header("Connection", "close")
    }

    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        body: Body<'_>,
    ) -> Result<Answer, ClientError> {
        self.request_with(method, path, None, body)
    }

    pub(crate) fn request_with(
        &self,
        method: &str,
        path: &str,
        upload_id: Option<&str>,
        body: Body<'_>,
    ) -> Result<Answer, ClientError> {
        let what = format!("{method} {path}");
        let host = self.cfg.host.as_str();
        let herr = |e| http_err(&what, host, e);
        let mut conn = self.connect()?;
        let mut req = self.head(method, path, "application/json");
        if let Some(id) = upload_id {
            // The id comes from the device's answer: keep it to a header's
            // safe characters.
            let id: String = id.chars().filter(char::is_ascii_alphanumeric).collect();
            req = req.header("Krazy-Upload-Id", id);
        }
        let sent = match body {
            Body::None => req.send(&mut conn, None).map_err(herr),
            Body::Json(b) => req
                .header("Content-Type", "application/json")
                .send(&mut conn, Some(b))
                .map_err(herr),
            Body::Stream {
                part,
                size,
                src,
                progress,
            } => {
                let req = req.header("Content-Type", "application/octet-stream");
                send_part(&mut conn, &req, part, size, src, progress).map_err(|e| match e {
                    HttpError::SourceShort { got, want } => ClientError::SourceShort {
                        part,
                        got,
                        size: want,
                    },
                    HttpError::Source(source) => ClientError::Source { part, source },
                    e => herr(e),
                })
            }
        };
        // A device that refuses early may close before the body is sent:
        // its answer says why, and is worth more than the broken pipe.
        match (sent, read_answer(BufReader::new(&mut conn), method)) {
            (Ok(()), Ok(a)) => self.check(&what, a),
            (Ok(()), Err(e)) => Err(herr(e)),
            (Err(e @ ClientError::Io { .. }), Ok(a)) => self.check(&what, a).and(Err(e)),
            (Err(e), _) => Err(e),
        }
    }

    /// A 2xx answer as it is; 401 as [`ClientError::Unauthorized`]; any
    /// other as [`ClientError::Device`] with the body's code and sentence.
    pub(crate) fn check(&self, what: &str, a: Answer) -> Result<Answer, ClientError> {
        if (200..300).contains(&a.status) {
            return Ok(a);
        }
        if a.status == 401 {
            return Err(ClientError::Unauthorized {
                host: self.cfg.host.clone(),
            });
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&a.body) {
            Ok(b) => (b.error, b.message),
            Err(_) => (
                String::new(),
                String::from_utf8_lossy(&a.body)
                    .trim()
                    .chars()
                    .take(500)
                    .collect(),
            ),
        };
        Err(ClientError::Device {
            what: what.to_string(),
            status: a.status,
            code,
            message,
        })
    }
}

/// Writes the head and streams exactly `size` bytes of `src`, telling
/// `progress` before the first write and after every one.
fn send_part(
    conn: &mut Conn,
    req: &Request,
    part: PartKind,
    size: u64,
    src: &mut dyn Read,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), HttpError> {
    req.write_head(conn, Some(size))?;
    progress(Progress {
        part,
        sent: 0,
        total: size,
    });
    let mut buf = vec![0u8; SEND_CHUNK];
    copy_body(src, conn, size, &mut buf, &mut |sent| {
        progress(Progress {
            part,
            sent,
            total: size,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &[u8]) -> Result<Answer, HttpError> {
        read_answer(b, "GET")
    }

    #[test]
    fn answers() {
        let a = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!((a.status, &a.body[..]), (200, &b"{}"[..]));
        let a = parse(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 422 X\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n1;x\r\nd\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((a.status, &a.body[..]), (422, &b"abcd"[..]));
        let a = parse(b"HTTP/1.0 500 Oops\n\nrest").unwrap();
        assert_eq!((a.status, &a.body[..]), (500, &b"rest"[..]));
        let bad = |r: Result<Answer, HttpError>| matches!(r, Err(e) if !e.is_transport());
        let io = |r: Result<Answer, HttpError>| matches!(r, Err(e) if e.is_transport());
        assert!(bad(parse(b"SSH-2.0\r\n")));
        assert!(bad(parse(b"HTTP/1.1 99999 x\r\n\r\n")));
        assert!(bad(parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n"
        )));
        assert!(io(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")));
        let long = [b"HTTP/1.1 200 OK\r\nX: ".as_slice(), &[b'a'; 20000]].concat();
        assert!(bad(parse(&long)));
        assert!(io(parse(b"")));
        assert!(bad(parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffff\r\n"
        )));
    }

    #[test]
    fn transport_failures_keep_their_io_kind() {
        // `Client::reboot` takes an early close as success by its kind.
        let e = http_err("GET /", "h:1", parse(b"").unwrap_err());
        match e {
            ClientError::Io { source, .. } => {
                assert_eq!(source.kind(), io::ErrorKind::UnexpectedEof)
            }
            e => panic!("{e:?}"),
        }
        let e = http_err("GET /", "h:1", parse(b"SSH-2.0\r\n").unwrap_err());
        assert!(matches!(e, ClientError::Malformed { .. }), "{e:?}");
    }
}
