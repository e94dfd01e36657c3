//! `/etc/krazy/services.toml`: the file's shape ([`ServicesToml`], one struct
//! for the writer, krazy-build, and the reader) and its parse into
//! [`ServiceConfig`]s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use super::{ConfigError, ServiceConfig, StartMode, WaitFor};
use crate::policy::Restart;

/// A parsed `services.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServicesFile {
    /// Base directory for per-service home directories, if set.
    pub home_base: Option<PathBuf>,
    /// The services, in file order.
    pub services: Vec<ServiceConfig>,
}

/// `services.toml` as written: krazy-build serializes it, [`parse_services`]
/// reads it (see the [module documentation](super) for every field).
/// Unknown fields are errors.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicesToml {
    /// The format version: 1, the only one so far.
    pub version: u32,
    /// Base of the per-service home directories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_base: Option<PathBuf>,
    /// The services, in start order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service: Vec<ServiceEntry>,
}

impl ServicesToml {
    /// The only version so far.
    pub const VERSION: u32 = 1;
}

/// One `[[service]]` of `services.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceEntry {
    /// The name (default: the file name of `path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Absolute path of the program.
    pub path: String,
    /// Arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment added to the supervisor's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Restart policy (default `on-failure`).
    #[serde(default)]
    pub restart: Restart,
    /// Start at boot (default) or manually.
    #[serde(default)]
    pub start: StartMode,
    /// Conditions to wait for before the first start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wait_for: Vec<WaitFor>,
    /// Stop signal name (`SIGTERM`, `INT`; default SIGTERM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Milliseconds from the stop signal to SIGKILL (default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period_ms: Option<u64>,
    /// Working directory (overrides `<home_base>/<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<PathBuf>,
    /// First restart delay in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_initial_ms: Option<u64>,
    /// Largest restart delay in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_max_ms: Option<u64>,
    /// Run time in milliseconds that resets the delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_reset_ms: Option<u64>,
    /// Ring buffer bound in lines per stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_lines: Option<usize>,
    /// Ring buffer bound in bytes per stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_bytes: Option<usize>,
}

/// Parses `services.toml` text into its table, without checking more than
/// its shape (unknown fields and wrong types are errors; see
/// [`parse_services`] for the checked form).
pub fn parse_services_toml(text: &str) -> Result<ServicesToml, ConfigError> {
    Ok(toml::from_str(text)?)
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
    let raw = parse_services_toml(text)?;
    if raw.version != ServicesToml::VERSION {
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

#[cfg(test)]
mod tests {
    use super::*;

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
