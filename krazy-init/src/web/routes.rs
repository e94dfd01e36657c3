//! Request routing: authentication, then the JSON API, the HTML pages,
//! the notify endpoints and the live log stream.

use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Limited};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::answer::{error, full, json, redirect, security_headers};
use super::parse::{Power, Route, ServiceAction};
use super::serve::{Conn, Peer};
use super::{html, limits, parse, system, update, Body, PowerRequest, Web, MAX_BODY};
use crate::logbuf::{Follower, LogItem, Stream};

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

    pub(super) async fn answer(&self, req: Request<Incoming>, ctx: &Conn<'_>) -> Response<Body> {
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
        let mut info = system::gather(
            self.cfg.perm.as_deref(),
            self.cfg.build_id.as_deref(),
            self.cfg.running_slot.as_deref(),
            self.sup.clock_synchronized(),
        );
        info.device_id = self
            .cfg
            .device_id
            .as_ref()
            .and_then(|d| d.get())
            .map(str::to_owned);
        info
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
