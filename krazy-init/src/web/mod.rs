//! The web interface: HTML status pages and the JSON API over hyper 1, with rustls.
//!
//! [`Web`] answers requests; [`Web::serve_tcp`] and [`Web::serve_unix`] run
//! listeners. TCP requests need HTTP Basic auth (user `krazy`); Unix-socket
//! requests are trusted. See the crate documentation for the API table.

mod answer;
pub mod auth;
mod html;
pub mod limits;
pub mod parse;
mod routes;
mod serve;
pub mod system;
pub mod update;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::supervisor::Supervisor;
use auth::{Csrf, Password, Verifier};
use limits::{ConnTable, Limits};

// For `update.rs`, which answers with these through `super::`.
use answer::{error, json};
pub use serve::{bind_tcp, bind_unix, load_tls, serve_private_addresses, tls_fix_hint};

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
    /// Shown as `device_id` once made (PID 1 makes it after the services
    /// started; see [`crate::device_id`]); `null` without one.
    pub device_id: Option<Arc<crate::device_id::DeviceId>>,
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
}
