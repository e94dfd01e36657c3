//! Connection serving: the TCP and Unix listeners, TLS detection and
//! handshakes, connection limits, the plain-HTTP redirect, and loading TLS.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, HOST};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener};

use super::answer::{redirect, security_headers};
use super::limits::{self, ConnGuard, Refusal};
use super::{system, Body, Web, WebError};

impl Web {
    /// Accepts TCP connections forever (HTTPS when TLS is configured, with
    /// plain HTTP answered by a redirect on the same port).
    pub async fn serve_tcp(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, addr) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let web = self.clone();
            tokio::spawn(async move { web.tcp_connection(stream, addr).await });
        }
    }

    async fn tcp_connection(self: Arc<Self>, stream: TcpStream, addr: SocketAddr) {
        let peer = Peer::Tcp(addr);
        let guard = match self.conns.admit(addr.ip()) {
            Ok(g) => g,
            Err(why) => {
                tracing::debug!(%peer, "connection refused: {why:?}");
                if self.cfg.tls.is_none() {
                    // One small write into a fresh socket's empty send
                    // buffer: never blocks, and a failure changes nothing.
                    let _ = stream.try_write(refusal_bytes(why).as_bytes());
                }
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(tls) = self.cfg.tls.clone() else {
            self.serve_conn(stream, false, false, peer, Some(guard))
                .await;
            return;
        };
        let mut first = [0u8; 1];
        let is_tls = matches!(
            tokio::time::timeout(Duration::from_secs(10), stream.peek(&mut first)).await,
            Ok(Ok(1))
        ) && first[0] == 0x16;
        if is_tls {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                Ok(Ok(s)) => self.serve_conn(s, false, false, peer, Some(guard)).await,
                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        } else {
            self.serve_conn(stream, false, true, peer, Some(guard))
                .await;
        }
    }

    /// Accepts Unix-socket connections forever; their requests are trusted.
    pub async fn serve_unix(self: Arc<Self>, listener: UnixListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let web = self.clone();
            tokio::spawn(
                async move { web.serve_conn(stream, true, false, Peer::Unix, None).await },
            );
        }
    }

    async fn serve_conn<S>(
        self: Arc<Self>,
        stream: S,
        trusted: bool,
        redirect_only: bool,
        peer: Peer,
        guard: Option<ConnGuard>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let web = self.clone();
        let shed = guard.as_ref().map(ConnGuard::shed);
        let guard = guard.map(Arc::new);
        let reading_body = Arc::new(AtomicBool::new(false));
        let stream = limits::Watched::new(
            stream,
            reading_body.clone(),
            limits::BODY_INACTIVITY_TIMEOUT,
        );
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let web = web.clone();
            let guard = guard.clone();
            let reading_body = reading_body.clone();
            async move {
                use hyper::body::Body as _;
                let mut r = if redirect_only {
                    https_redirect(&req, web.cfg.https_port)
                } else {
                    reading_body.store(!req.body().is_end_stream(), Ordering::Relaxed);
                    let ctx = Conn {
                        trusted,
                        peer,
                        guard: guard.as_deref(),
                    };
                    let r = web.answer(req, &ctx).await;
                    reading_body.store(false, Ordering::Relaxed);
                    r
                };
                security_headers(&mut r);
                // Keep-alive is for authenticated connections only.
                if guard.as_ref().is_some_and(|g| !g.is_authenticated()) {
                    r.headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(r)
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits::HEADER_READ_TIMEOUT)
            .max_buf_size(limits::MAX_BUF)
            .max_headers(limits::MAX_HEADERS)
            .serve_connection(TokioIo::new(stream), svc);
        let r = match shed {
            Some(shed) => tokio::select! {
                r = conn => r,
                _ = shed.notified() => {
                    tracing::debug!(%peer, "connection shed for a newer one (max_connections)");
                    return;
                }
            },
            None => conn.await,
        };
        // A client that goes away between or mid-request, or a kept-alive
        // connection left idle past the header timeout, is routine; anything
        // else (a malformed request, a reset or another I/O error) is worth
        // a line.
        if let Err(e) = r {
            if e.is_incomplete_message() || e.is_canceled() || e.is_closed() || e.is_timeout() {
                tracing::debug!(%peer, "HTTP connection ended early: {e}");
            } else {
                tracing::info!(%peer, "HTTP connection failed: {e}");
            }
        }
    }
}

/// The connection a request came on.
pub(super) struct Conn<'a> {
    pub(super) trusted: bool,
    pub(super) peer: Peer,
    pub(super) guard: Option<&'a ConnGuard>,
}

/// The whole answer to a connection refused before its request is read.
fn refusal_bytes(why: Refusal) -> String {
    let body = match why {
        Refusal::PerPeer => "too many connections from this address (max_connections_per_peer)\n",
        Refusal::Full => "too many connections (max_connections)\n",
    };
    format!(
        "HTTP/1.1 429 Too Many Requests\r\nretry-after: {}\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\nx-frame-options: DENY\r\n\
         content-security-policy: frame-ancestors 'none'\r\nx-content-type-options: nosniff\r\n\
         referrer-policy: no-referrer\r\ncache-control: no-store\r\n\r\n{body}",
        limits::RETRY_AFTER_BUSY,
        body.len()
    )
}

/// Who is at the other end of a connection, for the log lines about it;
/// formatted only when a line is written.
#[derive(Clone, Copy)]
pub(super) enum Peer {
    Tcp(SocketAddr),
    Unix,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Tcp(a) => a.fmt(f),
            Peer::Unix => f.write_str("unix"),
        }
    }
}

fn https_redirect(req: &Request<Incoming>, https_port: Option<u16>) -> Response<Body> {
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'-' | b'[' | b']')
                })
        })
        .unwrap_or("localhost");
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let target = match https_port {
        Some(port) => {
            // Drop the port of `Host` (after an IPv6 literal's `]`).
            let name = match host.rfind(':') {
                Some(i) if !host[i..].contains(']') => &host[..i],
                _ => host,
            };
            if port == 443 {
                format!("https://{name}{path}")
            } else {
                format!("https://{name}:{port}{path}")
            }
        }
        None => format!("https://{host}{path}"),
    };
    redirect(StatusCode::FOUND, &target)
}

/// Binds a TCP listener, refusing addresses that are not loopback or private.
pub async fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, WebError> {
    if !system::is_private(addr.ip()) {
        return Err(WebError::PublicAddress(addr.ip()));
    }
    TcpListener::bind(addr)
        .await
        .map_err(|source| WebError::Bind { addr, source })
}

/// Binds the Unix socket at `path` (a stale socket file is replaced), mode 0600.
pub fn bind_unix(path: &Path) -> Result<UnixListener, WebError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| WebError::BindUnix {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let l = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(l)
}

/// What to tell the console and plain-HTTP clients when TLS is wanted but
/// `cert`/`key` cannot be used: what is wrong and how to fix it.
pub fn tls_fix_hint(e: &WebError, cert: &Path, key: &Path) -> String {
    format!(
        "HTTPS is off and the web interface refuses authenticated requests (503): {e}. \
         To fix it, put a PEM certificate chain at {} and its private key at {} \
         (on a krazy device: the instance's secrets/tls-cert.pem and secrets/tls-key.pem, \
         built into the image; build and update or overwrite the device again), \
         or set `[web] tls = false` in krazy.toml to serve plain HTTP on purpose.",
        cert.display(),
        key.display()
    )
}

/// Loads a PEM certificate chain and private key into a rustls server config (ring provider).
pub fn load_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, WebError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| WebError::TlsFile {
            path: p.to_owned(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(WebError::TlsEmpty(cert.to_owned()));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .ok()
        .ok_or_else(|| WebError::TlsEmpty(key.to_owned()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)?;
    Ok(Arc::new(cfg))
}

/// Serves on every private address of every interface on `port` and follows
/// address changes (re-scanned on each network notification and every 30 s).
pub async fn serve_private_addresses(web: Arc<Web>, port: u16) {
    use std::collections::HashMap;
    let mut running: HashMap<SocketAddr, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut changed = web.addresses_changed();
    loop {
        let mut want = Vec::new();
        for a in system::addresses() {
            if !system::is_private(a.address) {
                continue;
            }
            let sa = match a.address {
                IpAddr::V4(v4) => SocketAddr::from((v4, port)),
                IpAddr::V6(v6) => {
                    let scope = if (v6.segments()[0] & 0xffc0) == 0xfe80 {
                        nix::net::if_::if_nametoindex(a.interface.as_str()).unwrap_or(0)
                    } else {
                        0
                    };
                    SocketAddr::V6(std::net::SocketAddrV6::new(v6, port, 0, scope))
                }
            };
            want.push(sa);
        }
        running.retain(|sa, h| {
            let keep = want.contains(sa) && !h.is_finished();
            if !keep {
                h.abort();
            }
            keep
        });
        let mut failed = false;
        for sa in want {
            if running.contains_key(&sa) {
                continue;
            }
            match bind_tcp(sa).await {
                Ok(l) => {
                    tracing::info!("listening on {sa}");
                    running.insert(sa, tokio::spawn(web.clone().serve_tcp(l)));
                }
                // A fresh IPv6 address is unusable until duplicate address
                // detection ends (EADDRNOTAVAIL): try again soon.
                Err(e) => {
                    tracing::debug!("{e}; retrying");
                    failed = true;
                }
            }
        }
        let wait = if failed { 2 } else { 30 };
        let _ = tokio::time::timeout(Duration::from_secs(wait), changed.changed()).await;
    }
}
