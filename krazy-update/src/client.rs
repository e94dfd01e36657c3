//! The client: pushes a signed update to a device and waits for it to
//! commit or roll back.
//!
//! Blocking HTTP/1.1 over a `std::net::TcpStream`, optionally wrapped in
//! rustls (ring provider) with the device's certificate pinned. One request
//! per connection (`Connection: close`): an update is a handful of requests,
//! so keep-alive would buy nothing, and a blocking client keeps the
//! dependency tree to rustls alone (no async runtime), which suits a
//! command-line tool that does one thing at a time. Parts are streamed from
//! any [`Read`] with a `Content-Length` taken from the manifest, so memory
//! does not grow with their size.
//!
//! Answers are untrusted: heads are capped at 16 KiB and JSON bodies at
//! 1 MiB, and nothing here panics on what the device sends.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest as _, Sha256};

use crate::protocol::*;

/// The user name of the device's HTTP Basic authentication.
pub const USER: &str = "krazy";

const MAX_HEAD: u64 = 16 << 10;
const MAX_JSON: u64 = 1 << 20;
const SEND_CHUNK: usize = 256 << 10;

/// Why a request or an update failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No TCP connection could be made.
    #[error("cannot connect to the device at {host}: {source}")]
    Connect {
        /// `HOST:PORT`.
        host: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The device presented a certificate other than the pinned one.
    #[error("the device at {host} presented a certificate (SHA-256 {got}) that is not the pinned one (SHA-256 {want}); refusing to talk to it")]
    NotPinned {
        /// `HOST:PORT`.
        host: String,
        /// Fingerprint of the presented certificate.
        got: String,
        /// Fingerprint of the pinned certificate.
        want: String,
    },
    /// The TLS handshake failed for another reason.
    #[error("the TLS handshake with {host} failed: {source}")]
    Tls {
        /// `HOST:PORT`.
        host: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Sending the request or reading the answer failed.
    #[error("{what} to {host} failed: {source}")]
    Io {
        /// The request.
        what: String,
        /// `HOST:PORT`.
        host: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The device refused the password (HTTP 401).
    #[error("the device at {host} refused the password for user {USER:?} (HTTP 401); check the instance's password")]
    Unauthorized {
        /// `HOST:PORT`.
        host: String,
    },
    /// The device answered with an error.
    #[error("{what}: the device answered {status} {code}: {message}")]
    Device {
        /// The request.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The error code from the body (`hash_mismatch`, ...), or `""`.
        code: String,
        /// The device's sentence, or the raw body.
        message: String,
    },
    /// The answer is not HTTP/1.x or not the JSON expected.
    #[error("{what}: malformed answer from the device: {reason}")]
    BadAnswer {
        /// The request.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// The device does not take this update.
    #[error("the device does not take this update: {0}")]
    Incompatible(String),
    /// The part source gave fewer bytes than the manifest's size.
    #[error("the {part} part's source ended after {got} of {size} bytes")]
    SourceShort {
        /// The part.
        part: PartKind,
        /// Bytes read.
        got: u64,
        /// The manifest's size.
        size: u64,
    },
    /// Reading a part's source failed.
    #[error("reading the {part} part failed: {source}")]
    Source {
        /// The part.
        part: PartKind,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The new build neither committed nor rolled back in time.
    #[error("build {build_id} did not commit within {waited:?}; last seen: {last}")]
    Timeout {
        /// The build waited for.
        build_id: String,
        /// How long.
        waited: Duration,
        /// The last thing seen (a build id and trial state, or an error).
        last: String,
    },
    /// The trial failed and the device rolled back.
    #[error("the device rolled back build {build_id}: {}{}", reason.as_deref().unwrap_or("no reason given"), fmt_log(service, log))]
    RolledBack {
        /// The build that failed.
        build_id: String,
        /// The device's reason.
        reason: Option<String>,
        /// The failing service, if one was named.
        service: Option<String>,
        /// Its last log lines.
        log: Vec<String>,
    },
    /// The TLS configuration could not be built.
    #[error("cannot set up TLS: {0}")]
    TlsConfig(#[source] rustls::Error),
}

fn fmt_log(service: &Option<String>, log: &[String]) -> String {
    let mut s = String::new();
    if let Some(svc) = service {
        s.push_str(&format!("\nlast log lines of {svc}:"));
        for l in log {
            s.push_str("\n  ");
            s.push_str(l);
        }
    }
    s
}

/// Where the device is and how to reach it.
#[derive(Clone)]
pub struct ClientConfig {
    /// `HOST:PORT`.
    pub host: String,
    /// The password of user [`USER`].
    pub password: String,
    /// The device's TLS certificate (DER) to pin; `None` speaks plain HTTP.
    pub pinned_cert: Option<Vec<u8>>,
    /// Connect, read and write timeout of each request.
    pub io_timeout: Duration,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("host", &self.host)
            .field("password", &"<hidden>")
            .field("tls", &self.pinned_cert.is_some())
            .field("io_timeout", &self.io_timeout)
            .finish()
    }
}

impl ClientConfig {
    /// Plain HTTP to `host` with `password` and a 60 s I/O timeout.
    pub fn new(host: impl Into<String>, password: impl Into<String>) -> Self {
        ClientConfig {
            host: host.into(),
            password: password.into(),
            pinned_cert: None,
            io_timeout: Duration::from_secs(60),
        }
    }

    /// Speaks TLS, accepting exactly the certificate `der`.
    pub fn with_pinned_cert(mut self, der: Vec<u8>) -> Self {
        self.pinned_cert = Some(der);
        self
    }
}

/// Accepts exactly one certificate, still checking that the peer holds its
/// key (the handshake signature is verified against it).
#[derive(Debug)]
struct Pinned {
    der: Vec<u8>,
    seen: Mutex<Option<Vec<u8>>>,
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut s) = self.seen.lock() {
            *s = Some(end_entity.as_ref().to_vec());
        }
        if end_entity.as_ref() == self.der.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Lowercase hex SHA-256 of a certificate, as printed in errors.
pub fn cert_fingerprint(der: &[u8]) -> String {
    hex(&Sha256::digest(der))
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
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
struct Answer {
    status: u16,
    body: Vec<u8>,
}

/// How far a part upload has come, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The part being sent.
    pub part: PartKind,
    /// Bytes sent so far.
    pub sent: u64,
    /// The part's size.
    pub total: u64,
}

/// A request body.
enum Body<'a> {
    None,
    Json(&'a [u8]),
    Stream {
        part: PartKind,
        size: u64,
        src: &'a mut dyn Read,
        progress: &'a mut dyn FnMut(Progress),
    },
}

/// How an update ended well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The device's features after the commit.
    pub features: Features,
    /// How long the reboot and the health gate took.
    pub waited: Duration,
}

/// A blocking client of one device.
#[derive(Debug, Clone)]
pub struct Client {
    cfg: ClientConfig,
    tls: Option<(Arc<rustls::ClientConfig>, Arc<Pinned>)>,
}

impl Client {
    /// A client for the device in `cfg`.
    pub fn new(cfg: ClientConfig) -> Result<Self, ClientError> {
        let tls = match &cfg.pinned_cert {
            None => None,
            Some(der) => {
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let pinned = Arc::new(Pinned {
                    der: der.clone(),
                    seen: Mutex::new(None),
                    algs: provider.signature_verification_algorithms,
                });
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(ClientError::TlsConfig)?
                    .dangerous()
                    .with_custom_certificate_verifier(pinned.clone())
                    .with_no_client_auth();
                Some((Arc::new(config), pinned))
            }
        };
        Ok(Client { cfg, tls })
    }

    /// The device's `HOST:PORT`.
    pub fn host(&self) -> &str {
        &self.cfg.host
    }

    fn connect(&self) -> Result<Conn, ClientError> {
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
        let _ = tcp.set_nodelay(true);
        let Some((config, pinned)) = &self.tls else {
            return Ok(Conn::Plain(tcp));
        };
        if let Ok(mut s) = pinned.seen.lock() {
            *s = None;
        }
        let name_part = host
            .rsplit_once(':')
            .map_or(host.as_str(), |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(name_part.to_string())
            .unwrap_or_else(|_| ServerName::try_from("krazy.invalid").expect("a valid DNS name"));
        let conn =
            rustls::ClientConnection::new(config.clone(), name).map_err(|e| ClientError::Tls {
                host: host.clone(),
                source: io::Error::other(e),
            })?;
        let mut s = rustls::StreamOwned::new(conn, tcp);
        while s.conn.is_handshaking() {
            if let Err(e) = s.conn.complete_io(&mut s.sock) {
                let seen = pinned.seen.lock().ok().and_then(|g| g.clone());
                return Err(match seen {
                    Some(got) if got != pinned.der => ClientError::NotPinned {
                        host: host.clone(),
                        got: cert_fingerprint(&got),
                        want: cert_fingerprint(&pinned.der),
                    },
                    _ => ClientError::Tls {
                        host: host.clone(),
                        source: e,
                    },
                });
            }
        }
        Ok(Conn::Tls(Box::new(s)))
    }

    fn request(&self, method: &str, path: &str, body: Body<'_>) -> Result<Answer, ClientError> {
        self.request_with(method, path, None, body)
    }

    fn request_with(
        &self,
        method: &str,
        path: &str,
        upload_id: Option<&str>,
        body: Body<'_>,
    ) -> Result<Answer, ClientError> {
        let what = format!("{method} {path}");
        let host = self.cfg.host.clone();
        let ioerr = |source| ClientError::Io {
            what: what.clone(),
            host: host.clone(),
            source,
        };
        let mut conn = self.connect()?;
        let mut head = self.head(method, path, "application/json");
        if let Some(id) = upload_id {
            // The id comes from the device's answer: keep it to a header's
            // safe characters.
            let id: String = id.chars().filter(char::is_ascii_alphanumeric).collect();
            head.push_str(&format!("Krazy-Upload-Id: {id}\r\n"));
        }
        match &body {
            Body::None => {}
            Body::Json(b) => head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            )),
            Body::Stream { size, .. } => head.push_str(&format!(
                "Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n"
            )),
        }
        head.push_str("\r\n");
        let sent = (|| -> Result<(), ClientError> {
            conn.write_all(head.as_bytes()).map_err(ioerr)?;
            match body {
                Body::None => {}
                Body::Json(b) => conn.write_all(b).map_err(ioerr)?,
                Body::Stream {
                    part,
                    size,
                    src,
                    progress,
                } => {
                    let mut buf = vec![0u8; SEND_CHUNK];
                    let mut sent = 0u64;
                    progress(Progress {
                        part,
                        sent,
                        total: size,
                    });
                    while sent < size {
                        let want = (size - sent).min(SEND_CHUNK as u64) as usize;
                        let n = match src.read(&mut buf[..want]) {
                            Ok(0) => {
                                return Err(ClientError::SourceShort {
                                    part,
                                    got: sent,
                                    size,
                                })
                            }
                            Ok(n) => n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(source) => return Err(ClientError::Source { part, source }),
                        };
                        conn.write_all(&buf[..n]).map_err(ioerr)?;
                        sent += n as u64;
                        progress(Progress {
                            part,
                            sent,
                            total: size,
                        });
                    }
                }
            }
            conn.flush().map_err(ioerr)
        })();
        // A device that refuses early may close before the body is sent:
        // its answer says why, and is worth more than the broken pipe.
        match (sent, read_answer(&mut BufReader::new(&mut conn))) {
            (Ok(()), Ok(a)) => self.check(&what, a),
            (Ok(()), Err(e)) => Err(answer_err(&what, &host, e)),
            (Err(e @ ClientError::Io { .. }), Ok(a)) => self.check(&what, a).and(Err(e)),
            (Err(e), _) => Err(e),
        }
    }

    /// The request head up to (not including) the body headers and the blank line.
    fn head(&self, method: &str, path: &str, accept: &str) -> String {
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{USER}:{}", self.cfg.password));
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {auth}\r\n\
             User-Agent: krazy-update/{}\r\nAccept: {accept}\r\nConnection: close\r\n",
            self.cfg.host,
            env!("CARGO_PKG_VERSION")
        )
    }

    /// `GET path` of any JSON endpoint of the device (`/api/v1/system`, say).
    pub fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json("GET", path, Body::None)
    }

    /// `POST path` with a JSON body (and `Content-Type: application/json`,
    /// as the device requires of state-changing requests).
    pub fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, ClientError> {
        let b = body.to_string();
        self.json("POST", path, Body::Json(b.as_bytes()))
    }

    /// `GET path` as text (a service's log backlog, say).
    pub fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let a = self.request("GET", path, Body::None)?;
        Ok(String::from_utf8_lossy(&a.body).into_owned())
    }

    /// `GET path` and hands the body to `on_data` as it arrives (a
    /// server-sent event stream, say), until the device closes it or
    /// `on_data` returns `false`.
    pub fn follow(
        &self,
        path: &str,
        mut on_data: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), ClientError> {
        let what = format!("GET {path}");
        let host = self.cfg.host.clone();
        let mut conn = self.connect()?;
        let mut head = self.head("GET", path, "text/event-stream");
        head.push_str("\r\n");
        conn.write_all(head.as_bytes())
            .and_then(|()| conn.flush())
            .map_err(|source| ClientError::Io {
                what: what.clone(),
                host: host.clone(),
                source,
            })?;
        let mut r = BufReader::new(conn);
        let mut budget = MAX_HEAD;
        let status_line =
            read_line(&mut r, &mut budget).map_err(|e| answer_err(&what, &host, e))?;
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let mut chunked = false;
        loop {
            let line = read_line(&mut r, &mut budget).map_err(|e| answer_err(&what, &host, e))?;
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = v.to_ascii_lowercase().contains("chunked");
                }
            }
        }
        if !(200..300).contains(&status) {
            let mut body = Vec::new();
            let _ = r.take(MAX_JSON).read_to_end(&mut body);
            return self.check(&what, Answer { status, body }).map(|_| ());
        }
        let mut buf = vec![0u8; 16 << 10];
        loop {
            let mut n = if chunked {
                let mut b = MAX_HEAD;
                let line = match read_line(&mut r, &mut b) {
                    Ok(l) => l,
                    Err(AnswerError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        return Ok(())
                    }
                    Err(e) => return Err(answer_err(&what, &host, e)),
                };
                let size = line.split(';').next().unwrap_or("").trim();
                let n = u64::from_str_radix(size, 16).map_err(|_| ClientError::BadAnswer {
                    what: what.clone(),
                    reason: format!("bad chunk size {size:?}"),
                })?;
                if n == 0 {
                    return Ok(());
                }
                n
            } else {
                u64::MAX
            };
            while n > 0 {
                let want = n.min(buf.len() as u64) as usize;
                let got = match r.read(&mut buf[..want]) {
                    Ok(0) if !chunked => return Ok(()),
                    Ok(0) => {
                        return Err(answer_err(
                            &what,
                            &host,
                            AnswerError::Io(io::ErrorKind::UnexpectedEof.into()),
                        ))
                    }
                    Ok(g) => g,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(answer_err(&what, &host, AnswerError::Io(e))),
                };
                if !on_data(&buf[..got]) {
                    return Ok(());
                }
                if chunked {
                    n -= got as u64;
                }
            }
            let mut b = MAX_HEAD;
            read_line(&mut r, &mut b).map_err(|e| answer_err(&what, &host, e))?;
        }
    }

    fn check(&self, what: &str, a: Answer) -> Result<Answer, ClientError> {
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

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Body<'_>,
    ) -> Result<T, ClientError> {
        let a = self.request(method, path, body)?;
        parse_json(method, path, a)
    }

    /// `GET /update/features`.
    pub fn features(&self) -> Result<Features, ClientError> {
        self.json("GET", "/update/features", Body::None)
    }

    /// `GET /update/status`.
    pub fn status(&self) -> Result<Status, ClientError> {
        self.json("GET", "/update/status", Body::None)
    }

    /// `PUT /update/manifest` with a signed envelope (JSON bytes) to a
    /// protocol-2 device: the answer carries the upload id.
    pub fn put_manifest(&self, signed: &[u8]) -> Result<Accepted, ClientError> {
        self.json("PUT", "/update/manifest", Body::Json(signed))
    }

    /// `PUT /update/manifest` with a protocol-1 envelope to a protocol-1
    /// device (its answer, the manifest, is not needed).
    pub fn put_manifest_v1(&self, signed: &[u8]) -> Result<(), ClientError> {
        self.request("PUT", "/update/manifest", Body::Json(signed))
            .map(|_| ())
    }

    /// `PUT /update/root` or `/update/boot` of upload `upload_id` (none for
    /// a protocol-1 device): streams exactly `size` bytes of `src`, calling
    /// `progress` after every chunk.
    pub fn put_part(
        &self,
        part: PartKind,
        upload_id: Option<&str>,
        size: u64,
        src: &mut dyn Read,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<PartWritten, ClientError> {
        let path = format!("/update/{part}");
        let a = self.request_with(
            "PUT",
            &path,
            upload_id,
            Body::Stream {
                part,
                size,
                src,
                progress,
            },
        )?;
        parse_json("PUT", &path, a)
    }

    /// `POST /update/switch` of upload `upload_id`: arms a trial boot of the
    /// written slot.
    pub fn switch(&self, upload_id: Option<&str>) -> Result<Switched, ClientError> {
        let a = self.request_with("POST", "/update/switch", upload_id, Body::Json(b"{}"))?;
        parse_json("POST", "/update/switch", a)
    }

    /// `POST /update/cancel`: disarms an armed trial and abandons an upload
    /// in progress (protocol 2).
    pub fn cancel(&self) -> Result<Cancelled, ClientError> {
        self.json("POST", "/update/cancel", Body::Json(b"{}"))
    }

    /// `POST /api/v1/reboot`. A connection that drops before the answer
    /// counts as success: the device may be quicker to go down than to
    /// answer.
    pub fn reboot(&self) -> Result<(), ClientError> {
        match self.request("POST", "/api/v1/reboot", Body::Json(b"{}")) {
            Ok(_) => Ok(()),
            Err(ClientError::Io { source, .. })
                if matches!(
                    source.kind(),
                    io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::BrokenPipe
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Polls `GET /update/features` every `interval` until the device runs
    /// `build_id` with no trial pending (committed), or `GET /update/status`
    /// reports that a trial of `build_id` was rolled back, or `timeout`
    /// passes. Connection errors while the device reboots are expected and
    /// retried.
    pub fn wait_for_build(
        &self,
        build_id: &str,
        timeout: Duration,
        interval: Duration,
    ) -> Result<Committed, ClientError> {
        let start = Instant::now();
        let mut last;
        loop {
            match self.features() {
                Ok(f) if f.build_id == build_id && f.trial != TrialState::Trial => {
                    return Ok(Committed {
                        features: f,
                        waited: start.elapsed(),
                    });
                }
                Ok(f) => {
                    last = format!("build {} (trial {:?})", f.build_id, f.trial);
                    if f.build_id != build_id && f.trial != TrialState::Armed {
                        if let Some(lt) = self.status()?.last_trial {
                            if lt.build_id == build_id && lt.outcome == TrialOutcome::RolledBack {
                                return Err(ClientError::RolledBack {
                                    build_id: lt.build_id,
                                    reason: lt.reason,
                                    service: lt.service,
                                    log: lt.log,
                                });
                            }
                        }
                    }
                }
                Err(e @ (ClientError::Unauthorized { .. } | ClientError::NotPinned { .. })) => {
                    return Err(e)
                }
                Err(e) => last = e.to_string(),
            }
            if start.elapsed() >= timeout {
                return Err(ClientError::Timeout {
                    build_id: build_id.to_string(),
                    waited: start.elapsed(),
                    last,
                });
            }
            std::thread::sleep(interval.min(timeout.saturating_sub(start.elapsed())));
        }
    }

    /// The whole update: checks the device's features against the
    /// manifest, puts the signed manifest (the protocol-1 envelope to a
    /// protocol-1 device), streams each part from `parts` (every part of
    /// the manifest must be given), arms the trial, reboots and waits up to
    /// `timeout` for the commit. A trial armed earlier is cancelled first,
    /// and `notice` is told so.
    pub fn update(
        &self,
        signed: Signed<'_>,
        parts: &mut [(PartKind, &mut dyn Read)],
        progress: &mut dyn FnMut(Progress),
        notice: &mut dyn FnMut(&str),
        timeout: Duration,
    ) -> Result<Committed, ClientError> {
        let manifest = signed.manifest;
        let f = self.features()?;
        let v1 = match (f.protocol, signed.v1) {
            (PROTOCOL_VERSION, _) => None,
            (PROTOCOL_V1, Some(v1)) => Some(v1),
            (p, _) => {
                return Err(ClientError::Incompatible(format!(
                    "it speaks update protocol {p}, this client speaks {PROTOCOL_VERSION} and {PROTOCOL_V1}"
                )))
            }
        };
        if (f.arch, f.platform) != (manifest.arch, manifest.platform) {
            return Err(ClientError::Incompatible(format!(
                "it is {}/{}, the build is for {}/{}",
                f.arch, f.platform, manifest.arch, manifest.platform
            )));
        }
        if f.trial == TrialState::Trial {
            return Err(ClientError::Incompatible(format!(
                "build {} is still on trial in slot {}; wait for it to commit or roll back",
                f.build_id, f.running_slot
            )));
        }
        if manifest.slot != f.running_slot.other() {
            return Err(ClientError::Incompatible(format!(
                "the update was built for slot {}, but the device runs slot {} and takes updates into slot {}",
                manifest.slot,
                f.running_slot,
                f.running_slot.other()
            )));
        }
        if v1.is_none() && !manifest.allow_downgrade && manifest.version <= f.committed_version {
            return Err(ClientError::Incompatible(format!(
                "its committed build has version {}, not older than this update's {}; \
                 sign a newer version, or a deliberate downgrade",
                f.committed_version, manifest.version
            )));
        }
        for spec in &manifest.parts {
            if !parts.iter().any(|(k, _)| *k == spec.name) {
                return Err(ClientError::Incompatible(format!(
                    "the manifest lists a {} part, but none was given",
                    spec.name
                )));
            }
        }
        let upload_id = match v1 {
            Some(env) => {
                self.put_manifest_v1(env)?;
                None
            }
            None => {
                if f.trial == TrialState::Armed {
                    let c = self.cancel()?;
                    notice(&format!("the device had a trial armed: {}", c.message));
                }
                Some(self.put_manifest(signed.v2)?.upload_id)
            }
        };
        for (kind, src) in parts.iter_mut() {
            let Some(spec) = manifest.part(*kind) else {
                continue;
            };
            self.put_part(*kind, upload_id.as_deref(), spec.size, *src, progress)?;
        }
        self.switch(upload_id.as_deref())?;
        self.reboot()?;
        self.wait_for_build(
            &manifest.build_id,
            timeout,
            Duration::from_millis(500).min(timeout / 4),
        )
    }
}

/// A manifest and its signed envelopes, as [`Client::update`] sends them.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// The manifest.
    pub manifest: &'a Manifest,
    /// The protocol-2 envelope ([`SignedManifest::sign`]).
    pub v2: &'a [u8],
    /// The protocol-1 envelope ([`SignedManifest::sign_v1`]) for devices in
    /// the field that speak only protocol 1; without it they are refused.
    pub v1: Option<&'a [u8]>,
}

fn parse_json<T: serde::de::DeserializeOwned>(
    method: &str,
    path: &str,
    a: Answer,
) -> Result<T, ClientError> {
    serde_json::from_slice(&a.body).map_err(|e| ClientError::BadAnswer {
        what: format!("{method} {path}"),
        reason: format!("the body is not the JSON expected: {e}"),
    })
}

#[derive(Debug)]
enum AnswerError {
    Io(io::Error),
    Bad(String),
}

fn answer_err(what: &str, host: &str, e: AnswerError) -> ClientError {
    match e {
        AnswerError::Io(source) => ClientError::Io {
            what: what.to_string(),
            host: host.to_string(),
            source,
        },
        AnswerError::Bad(reason) => ClientError::BadAnswer {
            what: what.to_string(),
            reason,
        },
    }
}

fn read_line(r: &mut impl BufRead, budget: &mut u64) -> Result<String, AnswerError> {
    let mut line = Vec::new();
    let n = r
        .take(*budget)
        .read_until(b'\n', &mut line)
        .map_err(AnswerError::Io)?;
    *budget -= n as u64;
    if line.last() != Some(&b'\n') {
        return Err(if n == 0 {
            AnswerError::Io(io::ErrorKind::UnexpectedEof.into())
        } else if *budget == 0 {
            AnswerError::Bad(format!("the head is longer than {MAX_HEAD} bytes"))
        } else {
            AnswerError::Io(io::ErrorKind::UnexpectedEof.into())
        });
    }
    String::from_utf8(line)
        .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
        .map_err(|_| AnswerError::Bad("the head is not UTF-8".into()))
}

/// Reads a status line, headers and a body of at most [`MAX_JSON`] bytes
/// (by `Content-Length`, chunked, or up to the close).
fn read_answer(r: &mut impl BufRead) -> Result<Answer, AnswerError> {
    let mut budget = MAX_HEAD;
    let status_line = read_line(r, &mut budget)?;
    let mut it = status_line.splitn(3, ' ');
    let (proto, code) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
    if !proto.starts_with("HTTP/1.") {
        return Err(AnswerError::Bad(format!(
            "not an HTTP/1 status line: {:?}",
            status_line.chars().take(80).collect::<String>()
        )));
    }
    let status: u16 = code
        .parse()
        .ok()
        .filter(|s| (100..600).contains(s))
        .ok_or_else(|| AnswerError::Bad(format!("bad status code {code:?}")))?;
    let mut length = None;
    let mut chunked = false;
    loop {
        let line = read_line(r, &mut budget)?;
        if line.is_empty() {
            break;
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err(AnswerError::Bad(format!("bad header line {line:?}")));
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            length = Some(
                v.parse::<u64>()
                    .map_err(|_| AnswerError::Bad(format!("bad Content-Length {v:?}")))?,
            );
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.to_ascii_lowercase().contains("chunked");
        }
    }
    if (100..200).contains(&status) {
        // 100 Continue and friends: the real answer follows.
        return read_answer(r);
    }
    let too_big = || AnswerError::Bad(format!("the body is longer than {MAX_JSON} bytes"));
    let mut body = Vec::new();
    if chunked {
        let mut budget = MAX_HEAD;
        loop {
            let line = read_line(r, &mut budget)?;
            let size_hex = line.split(';').next().unwrap_or("").trim();
            let n = u64::from_str_radix(size_hex, 16)
                .map_err(|_| AnswerError::Bad(format!("bad chunk size {size_hex:?}")))?;
            if n == 0 {
                break;
            }
            if body.len() as u64 + n > MAX_JSON {
                return Err(too_big());
            }
            let start = body.len();
            body.resize(start + n as usize, 0);
            r.read_exact(&mut body[start..]).map_err(AnswerError::Io)?;
            read_line(r, &mut budget)?;
        }
    } else if let Some(n) = length {
        if n > MAX_JSON {
            return Err(too_big());
        }
        body.resize(n as usize, 0);
        r.read_exact(&mut body).map_err(AnswerError::Io)?;
    } else {
        r.take(MAX_JSON + 1)
            .read_to_end(&mut body)
            .map_err(AnswerError::Io)?;
        if body.len() as u64 > MAX_JSON {
            return Err(too_big());
        }
    }
    Ok(Answer { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &[u8]) -> Result<Answer, AnswerError> {
        read_answer(&mut &b[..])
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
        assert!(matches!(parse(b"SSH-2.0\r\n"), Err(AnswerError::Bad(_))));
        assert!(matches!(
            parse(b"HTTP/1.1 99999 x\r\n\r\n"),
            Err(AnswerError::Bad(_))
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n"),
            Err(AnswerError::Bad(_))
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"),
            Err(AnswerError::Io(_))
        ));
        let long = [b"HTTP/1.1 200 OK\r\nX: ".as_slice(), &[b'a'; 20000]].concat();
        assert!(matches!(parse(&long), Err(AnswerError::Bad(_))));
        assert!(matches!(parse(b""), Err(AnswerError::Io(_))));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffff\r\n"),
            Err(AnswerError::Bad(_))
        ));
    }

    #[test]
    fn password_is_not_debug_printed() {
        let c = ClientConfig::new("h:1", "secret");
        assert!(!format!("{c:?}").contains("secret"));
    }
}
