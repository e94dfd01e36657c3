//! Service configuration: the [`ServiceConfig`] builder and the `services.toml` format.
//!
//! # `services.toml`, version 1
//!
//! ```toml
//! version = 1                 # required; the only version so far
//! home_base = "/perm/home"    # optional: services get <home_base>/<name> as cwd and HOME
//!
//! [[service]]
//! name = "web"                # optional: defaults to the file name of `path`
//! path = "/user/web"          # required: absolute path of the program
//! args = ["--port", "8080"]   # optional
//! env = { RUST_LOG = "info" } # optional
//! restart = "on-failure"      # always | on-failure (default) | never
//! start = "boot"              # boot (default) | manual
//! wait_for = ["network"]      # optional: clock, network
//! stop_signal = "SIGTERM"     # optional (default SIGTERM)
//! grace_period_ms = 10000     # optional: SIGKILL this long after the stop signal
//! working_dir = "/tmp"        # optional: overrides <home_base>/<name>
//! backoff_initial_ms = 100    # optional backoff: first delay,
//! backoff_max_ms = 30000      #   the cap,
//! backoff_reset_ms = 60000    #   and the run time that resets it
//! log_lines = 1000            # optional ring buffer bounds per stream
//! log_bytes = 1048576
//! ```
//!
//! Unknown fields are errors that name the field, so a typo never goes unnoticed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Deserialize;

use crate::policy::{Backoff, Restart};

/// Errors of reading a `services.toml` or building a service.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the services file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The TOML is malformed or has a wrong or unknown field.
    #[error("services file is invalid: {0}")]
    Toml(#[from] toml::de::Error),
    /// `version` is not one this crate understands.
    #[error("services file has version {0}, but only version 1 is supported")]
    Version(u32),
    /// A service's path is not absolute or has no file name.
    #[error("service path {0:?} must be an absolute path to a program")]
    BadPath(String),
    /// A name has characters other than letters, digits, `.`, `_`, `-`.
    #[error("service name {0:?} must be 1-64 letters, digits, '.', '_' or '-'")]
    BadName(String),
    /// Two services have the same name.
    #[error("two services are named {0:?}")]
    Duplicate(String),
    /// The stop signal is not a known signal name.
    #[error("service {service:?} has an unknown stop_signal {signal:?}")]
    BadSignal {
        /// The service.
        service: String,
        /// The value given.
        signal: String,
    },
}

/// Whether a service starts at boot or only when asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartMode {
    /// Started when the supervisor starts (default).
    #[default]
    Boot,
    /// Stays `stopped` until started through the API or the web page.
    Manual,
}

/// A condition a service waits for before its first start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WaitFor {
    /// The clock was synchronised (notified by the ntp service).
    Clock,
    /// A non-loopback address is present (notified by dhcp, or seen on an interface).
    Network,
}

/// Default ring buffer bound in lines per stream.
pub const DEFAULT_LOG_LINES: usize = 1000;
/// Default ring buffer bound in bytes per stream.
pub const DEFAULT_LOG_BYTES: usize = 1 << 20;

/// Everything the supervisor needs to run one service.
///
/// ```
/// use krazy_init::config::{ServiceConfig, StartMode};
/// use krazy_init::policy::Restart;
/// let svc = ServiceConfig::new("/bin/sleep")
///     .arg("60")
///     .env("RUST_LOG", "info")
///     .restart(Restart::Always)
///     .start(StartMode::Manual);
/// assert_eq!(svc.name, "sleep");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// The service's name (the program's file name unless set).
    pub name: String,
    /// Absolute path of the program.
    pub path: PathBuf,
    /// Arguments after the program name.
    pub args: Vec<String>,
    /// Environment added to the supervisor's own.
    pub env: BTreeMap<String, String>,
    /// Working directory; `None` uses `<home_base>/<name>` when that is writable.
    pub working_dir: Option<PathBuf>,
    /// Restart policy.
    pub restart: Restart,
    /// Start at boot or manually.
    pub start: StartMode,
    /// Conditions to wait for before the first start.
    pub wait_for: Vec<WaitFor>,
    /// Signal sent to the process group on stop.
    pub stop_signal: Signal,
    /// Time between the stop signal and SIGKILL.
    pub grace_period: Duration,
    /// Restart backoff.
    pub backoff: Backoff,
    /// Ring buffer bound in lines per stream.
    pub log_lines: usize,
    /// Ring buffer bound in bytes per stream.
    pub log_bytes: usize,
}

impl ServiceConfig {
    /// A service running `path` with the defaults: on-failure, boot, SIGTERM, 10 s grace.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        ServiceConfig {
            name,
            path,
            args: Vec::new(),
            env: BTreeMap::new(),
            working_dir: None,
            restart: Restart::default(),
            start: StartMode::default(),
            wait_for: Vec::new(),
            stop_signal: Signal::SIGTERM,
            grace_period: Duration::from_secs(10),
            backoff: Backoff::default(),
            log_lines: DEFAULT_LOG_LINES,
            log_bytes: DEFAULT_LOG_BYTES,
        }
    }

    /// Sets the name (when two services run the same program).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Sets the restart policy.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the start mode.
    pub fn start(mut self, start: StartMode) -> Self {
        self.start = start;
        self
    }

    /// Adds a condition to wait for.
    pub fn wait_for(mut self, w: WaitFor) -> Self {
        if !self.wait_for.contains(&w) {
            self.wait_for.push(w);
        }
        self
    }

    /// Sets the stop signal and grace period.
    pub fn stop(mut self, signal: Signal, grace: Duration) -> Self {
        self.stop_signal = signal;
        self.grace_period = grace;
        self
    }

    /// Sets the restart backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the working directory.
    pub fn working_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// Sets the ring buffer bounds per stream.
    pub fn log_limits(mut self, lines: usize, bytes: usize) -> Self {
        self.log_lines = lines.max(1);
        self.log_bytes = bytes.max(1);
        self
    }

    /// Checks the name and path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.path.is_absolute() || self.path.file_name().is_none() {
            return Err(ConfigError::BadPath(self.path.display().to_string()));
        }
        if !valid_name(&self.name) {
            return Err(ConfigError::BadName(self.name.clone()));
        }
        Ok(())
    }
}

/// Whether `name` is a valid service name (also used for URL path segments).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A parsed `services.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServicesFile {
    /// Base directory for per-service home directories, if set.
    pub home_base: Option<PathBuf>,
    /// The services, in file order.
    pub services: Vec<ServiceConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    version: u32,
    home_base: Option<PathBuf>,
    #[serde(default)]
    service: Vec<RawService>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Option<String>,
    path: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    restart: Restart,
    #[serde(default)]
    start: StartMode,
    #[serde(default)]
    wait_for: Vec<WaitFor>,
    stop_signal: Option<String>,
    grace_period_ms: Option<u64>,
    working_dir: Option<PathBuf>,
    backoff_initial_ms: Option<u64>,
    backoff_max_ms: Option<u64>,
    backoff_reset_ms: Option<u64>,
    log_lines: Option<usize>,
    log_bytes: Option<usize>,
}

/// Parses `services.toml` text.
///
/// ```
/// let f = krazy_init::config::parse_services("version = 1\n[[service]]\npath = \"/user/web\"\n").unwrap();
/// assert_eq!(f.services[0].name, "web");
/// let err = krazy_init::config::parse_services("version = 1\n[[service]]\npath = \"/a\"\nrestrat = \"never\"\n").unwrap_err();
/// assert!(err.to_string().contains("restrat"));
/// ```
pub fn parse_services(text: &str) -> Result<ServicesFile, ConfigError> {
    let raw: RawFile = toml::from_str(text)?;
    if raw.version != 1 {
        return Err(ConfigError::Version(raw.version));
    }
    let mut services: Vec<ServiceConfig> = Vec::with_capacity(raw.service.len());
    for r in raw.service {
        let path = PathBuf::from(&r.path);
        if !path.is_absolute() || path.file_name().is_none() {
            return Err(ConfigError::BadPath(r.path));
        }
        let mut s = ServiceConfig::new(path);
        if let Some(n) = r.name {
            s.name = n;
        }
        s.args = r.args;
        s.env = r.env;
        s.restart = r.restart;
        s.start = r.start;
        for w in r.wait_for {
            s = s.wait_for(w);
        }
        if let Some(sig) = r.stop_signal {
            let full = if sig.starts_with("SIG") {
                sig.clone()
            } else {
                format!("SIG{sig}")
            };
            s.stop_signal = Signal::from_str(&full).map_err(|_| ConfigError::BadSignal {
                service: s.name.clone(),
                signal: sig,
            })?;
        }
        if let Some(g) = r.grace_period_ms {
            s.grace_period = Duration::from_millis(g);
        }
        s.working_dir = r.working_dir;
        if let Some(v) = r.backoff_initial_ms {
            s.backoff.initial = Duration::from_millis(v);
        }
        if let Some(v) = r.backoff_max_ms {
            s.backoff.max = Duration::from_millis(v);
        }
        if let Some(v) = r.backoff_reset_ms {
            s.backoff.reset_after = Duration::from_millis(v);
        }
        if let Some(v) = r.log_lines {
            s.log_lines = v.clamp(1, 1_000_000);
        }
        if let Some(v) = r.log_bytes {
            s.log_bytes = v.clamp(1, 1 << 30);
        }
        s.validate()?;
        if services.iter().any(|o| o.name == s.name) {
            return Err(ConfigError::Duplicate(s.name));
        }
        services.push(s);
    }
    Ok(ServicesFile {
        home_base: raw.home_base,
        services,
    })
}

/// Reads and parses a `services.toml` file.
pub fn load_services(path: &Path) -> Result<ServicesFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_services(&text)
}

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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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

    #[test]
    fn the_issue_shape_parses() {
        let f = parse_services(
            r#"
version = 1
[[service]]
name = "web"
path = "/user/web"
args = ["--port", "8080"]
env = { RUST_LOG = "info" }
restart = "on-failure"   # always | on-failure | never
start = "boot"           # boot | manual
"#,
        )
        .unwrap();
        let s = &f.services[0];
        assert_eq!(s.name, "web");
        assert_eq!(s.path, Path::new("/user/web"));
        assert_eq!(s.args, ["--port", "8080"]);
        assert_eq!(s.env["RUST_LOG"], "info");
        assert_eq!(s.restart, Restart::OnFailure);
        assert_eq!(s.start, StartMode::Boot);
    }

    #[test]
    fn all_fields_parse() {
        let f = parse_services(
            r#"
version = 1
home_base = "/tmp/h"
[[service]]
path = "/krazy/ntp"
restart = "always"
start = "manual"
wait_for = ["clock", "network"]
stop_signal = "INT"
grace_period_ms = 500
working_dir = "/"
backoff_initial_ms = 10
backoff_max_ms = 20
backoff_reset_ms = 30
log_lines = 5
log_bytes = 100
"#,
        )
        .unwrap();
        let s = &f.services[0];
        assert_eq!(f.home_base.as_deref(), Some(Path::new("/tmp/h")));
        assert_eq!(s.name, "ntp");
        assert_eq!(s.restart, Restart::Always);
        assert_eq!(s.start, StartMode::Manual);
        assert_eq!(s.wait_for, [WaitFor::Clock, WaitFor::Network]);
        assert_eq!(s.stop_signal, Signal::SIGINT);
        assert_eq!(s.grace_period, Duration::from_millis(500));
        assert_eq!(s.backoff.initial, Duration::from_millis(10));
        assert_eq!(s.backoff.max, Duration::from_millis(20));
        assert_eq!(s.backoff.reset_after, Duration::from_millis(30));
        assert_eq!((s.log_lines, s.log_bytes), (5, 100));
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let cases = [
            ("version = 2\n", "version 2"),
            ("[[service]]\npath = \"/a\"\n", "version"),
            ("version = 1\nbogus = 1\n", "bogus"),
            (
                "version = 1\n[[service]]\npath = \"/a\"\nflavour = 1\n",
                "flavour",
            ),
            ("version = 1\n[[service]]\npath = \"a\"\n", "absolute"),
            (
                "version = 1\n[[service]]\npath = \"/a\"\nrestart = \"sometimes\"\n",
                "sometimes",
            ),
            (
                "version = 1\n[[service]]\npath = \"/a\"\nname = \"a/b\"\n",
                "a/b",
            ),
            (
                "version = 1\n[[service]]\npath = \"/a\"\n[[service]]\npath = \"/b/a\"\n",
                "two services",
            ),
            (
                "version = 1\n[[service]]\npath = \"/a\"\nstop_signal = \"NOPE\"\n",
                "NOPE",
            ),
            (
                "version = 1\n[[service]]\npath = \"/a\"\nwait_for = [\"moon\"]\n",
                "moon",
            ),
        ];
        for (text, needle) in cases {
            let err = parse_services(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
