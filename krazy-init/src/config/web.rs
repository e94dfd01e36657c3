//! `/etc/krazy/web.toml`: the web interface's ports, TLS and limits
//! ([`WebSettings`], one struct for the writer, krazy-build, and the reader).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `/etc/krazy/web.toml`, written by krazy-build from the instance's `[web]`
/// table (host mode reads the same form with `--web-config`):
///
/// ```toml
/// http_port = 80                 # plain HTTP (a redirect to HTTPS when tls = true)
/// https_port = 443               # HTTPS (when tls = true)
/// tls = true                     # serve HTTPS with /etc/krazy/tls/{cert,key}.pem
/// max_connections = 256          # TCP connections served at once, all peers together
/// max_connections_per_peer = 32  # per IPv4 address or IPv6 /64
/// max_log_followers = 16         # live log streams (`follow=1`) at once
/// ```
///
/// Every field is optional (the defaults are shown); unknown fields are errors.
///
/// ```
/// let w = krazy_init::config::parse_web("http_port = 8080\n").unwrap();
/// assert_eq!((w.http_port, w.https_port, w.max_connections), (8080, 443, 256));
/// assert!(krazy_init::config::parse_web("max_conections = 1\n").unwrap_err().to_string().contains("max_conections"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSettings {
    /// Port of the plain HTTP listener.
    pub http_port: u16,
    /// Port of the HTTPS listener.
    pub https_port: u16,
    /// Whether HTTPS is wanted; with a missing or broken certificate the
    /// device then refuses authenticated requests instead of serving them in
    /// plain text.
    pub tls: bool,
    /// TCP connections served at once (over it the oldest unauthenticated
    /// connection is shed, or the new one gets 429).
    pub max_connections: u32,
    /// TCP connections at once from one IPv4 address or IPv6 /64 (over it: 429).
    pub max_connections_per_peer: u32,
    /// Live log followers at once (over it: 429).
    pub max_log_followers: u32,
}

impl Default for WebSettings {
    fn default() -> Self {
        WebSettings {
            http_port: 80,
            https_port: 443,
            tls: true,
            max_connections: 256,
            max_connections_per_peer: 32,
            max_log_followers: 16,
        }
    }
}

/// Errors of reading a `web.toml`.
#[derive(Debug, thiserror::Error)]
pub enum WebFileError {
    /// The file could not be read.
    #[error("cannot read the web settings file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The TOML is malformed or has a wrong or unknown field.
    #[error("web settings file is invalid: {0}")]
    Toml(#[from] toml::de::Error),
    /// A limit is zero.
    #[error("web settings: {0} must be at least 1")]
    Zero(&'static str),
}

/// Parses `web.toml` text.
pub fn parse_web(text: &str) -> Result<WebSettings, WebFileError> {
    let w: WebSettings = toml::from_str(text)?;
    for (name, v) in [
        ("max_connections", w.max_connections),
        ("max_connections_per_peer", w.max_connections_per_peer),
        ("max_log_followers", w.max_log_followers),
    ] {
        if v == 0 {
            return Err(WebFileError::Zero(name));
        }
    }
    Ok(w)
}

/// Reads and parses a `web.toml` file.
pub fn load_web(path: &Path) -> Result<WebSettings, WebFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| WebFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_web(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_settings_defaults_and_errors() {
        assert_eq!(parse_web("").unwrap(), WebSettings::default());
        let w = parse_web(
            "http_port = 8080\nhttps_port = 8443\ntls = false\nmax_connections = 10\nmax_connections_per_peer = 2\nmax_log_followers = 1\n",
        )
        .unwrap();
        assert_eq!(
            w,
            WebSettings {
                http_port: 8080,
                https_port: 8443,
                tls: false,
                max_connections: 10,
                max_connections_per_peer: 2,
                max_log_followers: 1
            }
        );
        assert!(parse_web("max_log_followers = 0\n")
            .unwrap_err()
            .to_string()
            .contains("max_log_followers"));
        assert!(parse_web("colour = 1\n")
            .unwrap_err()
            .to_string()
            .contains("colour"));
        assert!(parse_web("http_port = 70000\n").is_err());
        // What krazy-build writes for the default `[web]` (its
        // `config::tests::web_settings_file_form`).
        let built = "http_port = 80\nhttps_port = 443\ntls = true\nmax_connections = 256\n\
                     max_connections_per_peer = 32\nmax_log_followers = 16\n";
        assert_eq!(parse_web(built).unwrap(), WebSettings::default());
    }
}
