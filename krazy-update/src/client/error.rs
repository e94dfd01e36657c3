//! [`ClientError`]: why a request or an update failed, and how an HTTP
//! failure of [`krazy_http`] becomes one.

use std::io;
use std::time::Duration;

use krazy_http::HttpError;

use super::USER;
use crate::protocol::PartKind;

/// Why a request or an update failed.
///
/// Each variant prints its cause once: in its text or as its
/// [`source`](std::error::Error::source), never both.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No TCP connection could be made.
    #[error("cannot connect to the device at {host}")]
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
    #[error("the TLS handshake with {host} failed")]
    Tls {
        /// `HOST:PORT`.
        host: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Sending the request or reading the answer failed: the connection
    /// broke, timed out or closed early (kind `UnexpectedEof`).
    #[error("{what} to {host} failed")]
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
    /// The answer is not HTTP/1.x: a bad head, bad framing, or a body
    /// over the client's limit.
    #[error("{what}: malformed answer from the device at {host}")]
    Malformed {
        /// The request.
        what: String,
        /// `HOST:PORT`.
        host: String,
        /// What is wrong.
        #[source]
        source: HttpError,
    },
    /// The answer is not the JSON expected.
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
    #[error("reading the {part} part failed")]
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
        /// The last thing seen (a build id and trial state, or an error
        /// with its causes).
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
    #[error("cannot set up TLS")]
    TlsConfig(#[source] krazy_http::tls::rustls::Error),
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

/// `e` and its causes, `: `-separated, as a `{:#}` printer shows them
/// (each cause once, since every error here prints only its own part).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// An HTTP failure of request `what` to `host`: a transport failure
/// (broken, timed out, closed early) is [`ClientError::Io`], anything the
/// device sent wrong [`ClientError::Malformed`].
pub(crate) fn http_err(what: &str, host: &str, e: HttpError) -> ClientError {
    match e {
        HttpError::NotPinned { got, want } => ClientError::NotPinned {
            host: host.to_string(),
            got,
            want,
        },
        HttpError::Tls(source) => ClientError::Tls {
            host: host.to_string(),
            source,
        },
        HttpError::TlsConfig(e) => ClientError::TlsConfig(e),
        e if e.is_transport() => ClientError::Io {
            what: what.to_string(),
            host: host.to_string(),
            source: e.into_io(),
        },
        source => ClientError::Malformed {
            what: what.to_string(),
            host: host.to_string(),
            source,
        },
    }
}
