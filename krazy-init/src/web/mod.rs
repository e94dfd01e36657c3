//! The web interface: HTML status pages and the JSON API over hyper 1, with rustls.
//!
//! [`Web`] answers requests; [`Web::serve_tcp`] and [`Web::serve_unix`] run
//! listeners. TCP requests need HTTP Basic auth (user `krazy`); Unix-socket
//! requests are trusted. See the crate documentation for the API table.

pub mod auth;
mod html;
pub mod limits;
pub mod parse;
pub mod system;
pub mod update;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::{Frame, Incoming};
use hyper::header::{
    HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_TYPE, HOST, LOCATION, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::logbuf::{Follower, LogItem, Stream};
use crate::supervisor::Supervisor;
use auth::{Csrf, Password, Verifier};
use limits::{ConnGuard, ConnTable, Limits, Refusal};
use parse::{Power, Route, ServiceAction};

/// Errors of setting up the web interface.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// A TCP address that is not loopback, RFC 1918, ULA or link-local.
    #[error("refusing to listen on {0}: it is not a loopback or private address (RFC 1918, ULA, link-local)")]
    PublicAddress(IpAddr),
    /// Binding a TCP address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Binding the Unix socket failed.
    #[error("cannot listen on the Unix socket {path}: {source}")]
    BindUnix {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Reading a certificate or key file failed.
    #[error("cannot read TLS file {path}: {source}")]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The PEM file holds no certificate or no private key.
    #[error("TLS file {0} holds no usable certificate or private key")]
    TlsEmpty(PathBuf),
    /// rustls rejected the certificate and key.
    #[error("rustls rejected the certificate or key: {0}")]
    Tls(#[from] rustls::Error),
    /// The system random generator failed (CSRF secret).
    #[error("cannot get random bytes for the CSRF secret")]
    Random,
}

/// A reboot or poweroff asked for through the web interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerRequest {
    /// Reboot.
    Reboot,
    /// Power off.
    Poweroff,
}

/// Settings of the web interface.
#[derive(Default)]
pub struct WebConfig {
    /// The instance password; without one, TCP requests always get 401.
    pub password: Option<Password>,
    /// Shown as `build_id`.
    pub build_id: Option<String>,
    /// Shown as `running_slot`.
    pub running_slot: Option<String>,
    /// Where `/perm` is (for its usage figures).
    pub perm: Option<PathBuf>,
    /// TLS: with it, TCP connections speak HTTPS, and plain HTTP gets a redirect.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// krazy-update's device side, served under `/update/` when present.
    pub update: Option<update::SharedDevice>,
    /// TLS was wanted but its certificate or key could not be loaded (what
    /// is wrong and how to fix it): TCP requests are then answered 503, so
    /// the password is never sent in plain text.
    pub tls_error: Option<String>,
    /// The HTTPS port plain-HTTP redirects point at (default: the port of
    /// the request's `Host`, the same port serving both).
    pub https_port: Option<u16>,
    /// Connection, peer and log-follower limits.
    pub limits: Limits,
}

type Body = BoxBody<Bytes, Infallible>;

/// The request handler shared by all listeners.
pub struct Web {
    sup: Supervisor,
    cfg: WebConfig,
    verifier: Option<Verifier>,
    conns: Arc<ConnTable>,
    followers: Arc<Semaphore>,
    csrf: Csrf,
    power: mpsc::UnboundedSender<PowerRequest>,
    addresses_changed: watch::Sender<u64>,
}

/// Largest request body read.
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyAddress {
    address: IpAddr,
    prefix: u8,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyNetwork {
    interface: String,
    addresses: Vec<NotifyAddress>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyClock {
    synchronized: bool,
}

fn full(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    r
}

fn json(status: StatusCode, v: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_else(|_| b"null".to_vec());
    full(status, "application/json", body)
}

fn error(status: StatusCode, msg: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": msg }))
}

fn redirect(status: StatusCode, to: &str) -> Response<Body> {
    let mut r = full(status, "text/plain; charset=utf-8", format!("see {to}\n"));
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

/// A body fed by a channel (server-sent events).
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

fn sse_event(stream: Stream, text: &str) -> Bytes {
    let clean: String = text.chars().filter(|&c| c != '\r' && c != '\n').collect();
    Bytes::from(format!("event: {}\ndata: {clean}\n\n", stream.as_str()))
}

impl Web {
    /// A handler over `sup`; reboot and poweroff requests go to `power`.
    pub fn new(
        sup: Supervisor,
        cfg: WebConfig,
        power: mpsc::UnboundedSender<PowerRequest>,
    ) -> Result<Arc<Self>, WebError> {
        let csrf = Csrf::lazy();
        let verifier = cfg.password.clone().map(Verifier::new);
        let conns = ConnTable::new(cfg.limits);
        let followers = Arc::new(Semaphore::new(cfg.limits.max_log_followers));
        Ok(Arc::new(Web {
            sup,
            cfg,
            verifier,
            conns,
            followers,
            csrf,
            power,
            addresses_changed: watch::channel(0).0,
        }))
    }

    /// Changes each time the network notify endpoint is called (listeners re-scan).
    pub fn addresses_changed(&self) -> watch::Receiver<u64> {
        self.addresses_changed.subscribe()
    }

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

    /// Answers one request; `trusted` for the Unix socket. (Without a
    /// connection, so without the per-peer login limit.)
    pub async fn handle(&self, req: Request<Incoming>, trusted: bool) -> Response<Body> {
        let ctx = Conn {
            trusted,
            peer: Peer::Unix,
            guard: None,
        };
        let mut r = self.answer(req, &ctx).await;
        security_headers(&mut r);
        r
    }

    /// The authentication of a TCP request: `Err` is the answer to send.
    async fn authenticate(
        &self,
        parts: &hyper::http::request::Parts,
        ctx: &Conn<'_>,
    ) -> Result<(), Response<Body>> {
        if let Some(why) = &self.cfg.tls_error {
            return Err(full(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                format!(
                    "krazy: this device is set up for HTTPS (tls = true) but cannot serve it, \
                     so it does not take the password over plain HTTP.\n{why}\n"
                ),
            ));
        }
        let ip = match ctx.peer {
            Peer::Tcp(a) => Some(a.ip()),
            Peer::Unix => None,
        };
        let now = Instant::now();
        if let Some(wait) = ip.and_then(|ip| self.conns.login_retry_after(ip, now)) {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed logins from this address; try again later",
            );
            r.headers_mut().insert(
                RETRY_AFTER,
                HeaderValue::from(limits::retry_after_secs(wait)),
            );
            return Err(r);
        }
        let header = parts.headers.get(AUTHORIZATION).map(|v| v.as_bytes());
        let ok = match &self.verifier {
            Some(v) => v.check(header).await,
            None => false,
        };
        if ok {
            if let Some(g) = ctx.guard {
                g.authenticated();
            }
            return Ok(());
        }
        if header.is_some() {
            tracing::warn!(peer = %ctx.peer, path = %parts.uri.path(), "failed login");
            if let Some(ip) = ip {
                self.conns.login_failed(ip, now);
            }
        }
        let mut r = full(
            StatusCode::UNAUTHORIZED,
            "text/plain; charset=utf-8",
            "authentication required\n",
        );
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"krazy\", charset=\"UTF-8\""),
        );
        Err(r)
    }

    async fn answer(&self, req: Request<Incoming>, ctx: &Conn<'_>) -> Response<Body> {
        let trusted = ctx.trusted;
        let (parts, body) = req.into_parts();
        if !trusted {
            if let Err(r) = self.authenticate(&parts, ctx).await {
                return r;
            }
        }
        if let Some(dev) = &self.cfg.update {
            if let Some(r) =
                krazy_update::device::Route::parse(parts.method.as_str(), parts.uri.path())
            {
                return update::handle(dev, r, &parts.headers, body).await;
            }
        }
        let Some(route) = parse::route(parts.uri.path()) else {
            return error(StatusCode::NOT_FOUND, "no such page");
        };
        let query = parse::parse_pairs(parts.uri.query().unwrap_or("").as_bytes());
        let is_json = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        let method = parts.method.clone();
        let needs_post = matches!(
            route,
            Route::ServiceForm(..)
                | Route::PowerForm(_)
                | Route::ApiServiceAction(..)
                | Route::ApiPower(_)
                | Route::NotifyNetwork
                | Route::NotifyClock
        );
        if needs_post && method != Method::POST {
            return error(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        }
        if !needs_post && method != Method::GET && method != Method::HEAD {
            return error(StatusCode::METHOD_NOT_ALLOWED, "use GET");
        }
        let is_api_post = matches!(
            route,
            Route::ApiServiceAction(..)
                | Route::ApiPower(_)
                | Route::NotifyNetwork
                | Route::NotifyClock
        );
        if is_api_post && !is_json {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "state-changing API requests need Content-Type: application/json",
            );
        }
        let body = if needs_post {
            match Limited::new(body, MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
            }
        } else {
            Bytes::new()
        };
        match route {
            Route::Overview => {
                let info = self.system();
                let page = html::overview(&info, &self.sup.list(), &self.csrf);
                full(StatusCode::OK, "text/html; charset=utf-8", page)
            }
            Route::ServicePage(name) => match (
                self.sup.status(&name),
                self.sup.config(&name),
                self.sup.logs(&name),
            ) {
                (Some(st), Some(cfg), Some(logs)) => {
                    let page = html::service(&st, &cfg, &logs, &self.csrf);
                    full(StatusCode::OK, "text/html; charset=utf-8", page)
                }
                _ => error(StatusCode::NOT_FOUND, "no such service"),
            },
            Route::ServiceForm(name, action) => {
                let form = parse::parse_pairs(&body);
                let path = format!("/services/{name}/{}", action.as_str());
                if !self
                    .csrf
                    .check(&path, parse::get(&form, "csrf").unwrap_or(""))
                {
                    return full(
                        StatusCode::FORBIDDEN,
                        "text/plain; charset=utf-8",
                        "missing or wrong CSRF token\n",
                    );
                }
                match self.act(&name, action) {
                    Ok(()) => redirect(StatusCode::SEE_OTHER, &format!("/services/{name}")),
                    Err(_) => error(StatusCode::NOT_FOUND, "no such service"),
                }
            }
            Route::PowerForm(p) => {
                let form = parse::parse_pairs(&body);
                let path = match p {
                    Power::Reboot => "/reboot",
                    Power::Poweroff => "/poweroff",
                };
                if !self
                    .csrf
                    .check(path, parse::get(&form, "csrf").unwrap_or(""))
                {
                    return full(
                        StatusCode::FORBIDDEN,
                        "text/plain; charset=utf-8",
                        "missing or wrong CSRF token\n",
                    );
                }
                self.power(p);
                full(
                    StatusCode::ACCEPTED,
                    "text/html; charset=utf-8",
                    html::power_page(p),
                )
            }
            Route::ApiSystem => json(StatusCode::OK, &self.system()),
            Route::ApiServices => json(StatusCode::OK, &self.sup.list()),
            Route::ApiService(name) => match self.sup.status(&name) {
                Some(s) => json(StatusCode::OK, &s),
                None => error(StatusCode::NOT_FOUND, "no such service"),
            },
            Route::ApiServiceAction(name, action) => match self.act(&name, action) {
                Ok(()) => json(StatusCode::ACCEPTED, &serde_json::json!({ "ok": true })),
                Err(_) => error(StatusCode::NOT_FOUND, "no such service"),
            },
            Route::ApiLog(name) => self.log(&name, &query).await,
            Route::ApiPower(p) => {
                self.power(p);
                json(StatusCode::ACCEPTED, &serde_json::json!({ "ok": true }))
            }
            Route::NotifyNetwork => {
                if !trusted {
                    return error(
                        StatusCode::FORBIDDEN,
                        "notify endpoints are served on the Unix socket only",
                    );
                }
                match serde_json::from_slice::<NotifyNetwork>(&body) {
                    Ok(n) => {
                        let addrs: Vec<IpAddr> = n.addresses.iter().map(|a| a.address).collect();
                        tracing::info!(
                            interface = %n.interface,
                            "addresses: {:?}",
                            n.addresses.iter().map(|a| format!("{}/{}", a.address, a.prefix)).collect::<Vec<_>>()
                        );
                        self.sup.notify_network(&addrs);
                        self.addresses_changed.send_modify(|n| *n += 1);
                        json(StatusCode::OK, &serde_json::json!({ "ok": true }))
                    }
                    Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
                }
            }
            Route::NotifyClock => {
                if !trusted {
                    return error(
                        StatusCode::FORBIDDEN,
                        "notify endpoints are served on the Unix socket only",
                    );
                }
                match serde_json::from_slice::<NotifyClock>(&body) {
                    Ok(c) => {
                        self.sup.notify_clock(c.synchronized);
                        json(StatusCode::OK, &serde_json::json!({ "ok": true }))
                    }
                    Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
                }
            }
        }
    }

    fn act(&self, name: &str, action: ServiceAction) -> Result<(), crate::SupervisorError> {
        match action {
            ServiceAction::Start => self.sup.start(name),
            ServiceAction::Stop => self.sup.stop(name),
            ServiceAction::Restart => self.sup.restart(name),
        }
    }

    fn power(&self, p: Power) {
        let _ = self.power.send(match p {
            Power::Reboot => PowerRequest::Reboot,
            Power::Poweroff => PowerRequest::Poweroff,
        });
    }

    fn system(&self) -> system::SystemInfo {
        system::gather(
            self.cfg.perm.as_deref(),
            self.cfg.build_id.as_deref(),
            self.cfg.running_slot.as_deref(),
            self.sup.clock_synchronized(),
        )
    }

    async fn log(&self, name: &str, query: &[(String, String)]) -> Response<Body> {
        let Some(logs) = self.sup.logs(name) else {
            return error(StatusCode::NOT_FOUND, "no such service");
        };
        let mut follower = match parse::get(query, "stream").unwrap_or("both") {
            "stdout" => Follower::new(&[&logs.stdout]),
            "stderr" => Follower::new(&[&logs.stderr]),
            "both" => Follower::new(&[&logs.stdout, &logs.stderr]),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "stream must be stdout, stderr or both",
                )
            }
        };
        let follow = matches!(parse::get(query, "follow"), Some("1" | "true"));
        let permit = match follow.then(|| self.followers.clone().try_acquire_owned()) {
            Some(Err(_)) => {
                let mut r = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many live log followers (max_log_followers); try again later",
                );
                r.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(limits::RETRY_AFTER_BUSY));
                return r;
            }
            Some(Ok(p)) => Some(p),
            None => None,
        };
        if !follow {
            let mut text = String::new();
            for l in follower.take_backlog() {
                text.push_str(&l.text);
                text.push('\n');
            }
            return full(StatusCode::OK, "text/plain; charset=utf-8", text);
        }
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        tokio::spawn(async move {
            let _permit = permit;
            // A follower that reads nothing for a minute is let go.
            let send = |b: Bytes| {
                let tx = tx.clone();
                async move {
                    matches!(
                        tokio::time::timeout(FOLLOWER_STALL, tx.send(b)).await,
                        Ok(Ok(()))
                    )
                }
            };
            if !send(Bytes::from_static(b": krazy log\n\n")).await {
                return;
            }
            loop {
                let item = tokio::select! {
                    i = follower.next() => i,
                    _ = tokio::time::sleep(Duration::from_secs(15)) => {
                        if !send(Bytes::from_static(b": keep-alive\n\n")).await {
                            return;
                        }
                        continue;
                    }
                };
                let chunk = match item {
                    Some(LogItem::Line(l)) => sse_event(l.stream, &l.text),
                    Some(d @ LogItem::Dropped(stream, _)) => sse_event(stream, &d.text()),
                    None => return,
                };
                if !send(chunk).await {
                    return;
                }
            }
        });
        let mut r = Response::new(BoxBody::new(ChannelBody(rx)));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        r.headers_mut()
            .insert("cache-control", HeaderValue::from_static("no-store"));
        r
    }
}

/// How long a live log follower may read nothing before it is let go.
const FOLLOWER_STALL: Duration = Duration::from_secs(60);

/// The connection a request came on.
struct Conn<'a> {
    trusted: bool,
    peer: Peer,
    guard: Option<&'a ConnGuard>,
}

/// The headers every answer carries: no framing, no type sniffing, no referrer.
fn security_headers(r: &mut Response<Body>) {
    let h = r.headers_mut();
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
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
enum Peer {
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
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(WebError::TlsEmpty(cert.to_owned()));
    }
    let key_der = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .ok()
        .flatten()
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
