//! Service configuration: the [`ServiceConfig`] builder, and the tables the
//! device reads from `/etc/krazy/`, one struct each, shared by the writer
//! (krazy-build serializes them) and the reader (parsed here, unknown fields
//! rejected): `services.toml` ([`ServicesToml`], in `services.rs`),
//! `web.toml` ([`WebSettings`], in `web.rs`), `update.toml` ([`UpdateFile`],
//! in `update.rs`).
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

mod services;
mod update;
mod web;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::policy::{Backoff, Restart};

pub use services::{
    load_services, parse_services, parse_services_toml, ServiceEntry, ServicesFile, ServicesToml,
};
pub use update::{load_update, parse_update, HealthCheck, UpdateFile, UpdateFileError};
pub use web::{load_web, parse_web, WebFileError, WebSettings};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartMode {
    /// Started when the supervisor starts (default).
    #[default]
    Boot,
    /// Stays `stopped` until started through the API or the web page.
    Manual,
}

/// A condition a service waits for before its first start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
