//! The client: pushes a signed update to a device and waits for it to
//! commit or roll back.
//!
//! Blocking HTTP/1.1 with [`krazy_http`] over a `std::net::TcpStream`,
//! optionally wrapped in TLS with the device's certificate pinned
//! ([`krazy_http::tls::PinnedTls`]). One request per connection
//! (`Connection: close`): an update is a handful of requests, so keep-alive
//! would buy nothing, and a blocking client keeps the dependency tree to
//! rustls alone (no async runtime), which suits a command-line tool that
//! does one thing at a time. Parts are streamed from any [`Read`](std::io::Read)
//! with a `Content-Length` taken from the manifest, so memory does not grow
//! with their size.
//!
//! Answers are untrusted: heads are capped at 16 KiB and JSON bodies at
//! 1 MiB, and nothing here panics on what the device sends.
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | [`ClientConfig`], [`Client`], the small value types |
//! | `conn.rs` | connecting (TCP, pinned TLS), one request and its answer |
//! | `push.rs` | manifest, parts, switch, [`Client::update`], waiting for the commit |
//! | `queries.rs` | JSON and text `GET`s, `POST`s, [`Client::follow`], cancel, reboot |
//! | `error.rs` | [`ClientError`] and how an HTTP failure maps onto it |

use std::fmt;
use std::time::Duration;

use krazy_http::tls::PinnedTls;

use crate::protocol::{Features, PartKind};

mod conn;
mod error;
mod push;
mod queries;

pub use error::{chain, ClientError};
pub use krazy_http::tls::cert_fingerprint;
pub use push::Signed;

use conn::Answer;

/// The user name of the device's HTTP Basic authentication.
pub const USER: &str = "krazy";

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
    tls: Option<PinnedTls>,
}

impl Client {
    /// A client for the device in `cfg`.
    pub fn new(cfg: ClientConfig) -> Result<Self, ClientError> {
        let tls = match &cfg.pinned_cert {
            None => None,
            Some(der) => Some(
                PinnedTls::new(der.clone())
                    .map_err(|e| error::http_err("setting up TLS", &cfg.host, e))?,
            ),
        };
        Ok(Client { cfg, tls })
    }

    /// The device's `HOST:PORT`.
    pub fn host(&self) -> &str {
        &self.cfg.host
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_not_debug_printed() {
        let c = ClientConfig::new("h:1", "secret");
        assert!(!format!("{c:?}").contains("secret"));
    }
}
