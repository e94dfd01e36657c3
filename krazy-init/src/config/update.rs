//! `/etc/krazy/update.toml`: how a trial boot decides ([`UpdateFile`], one
//! struct for the writer, krazy-build, and the reader, PID 1's health driver).
//!
//! ```toml
//! settle_seconds = 30          # every boot service must run this long
//! deadline_seconds = 180       # optional: roll back when not healthy by then
//! fail_after_restarts = 3      # optional: this many restarts of one boot service fail at once
//!
//! [[health]]
//! service = "hello"
//! http = "http://127.0.0.1:8080/"   # or: command = ["/user/hello", "--check"]
//! ```
//!
//! Unknown fields are errors.
//!
//! ```
//! let u = krazy_init::config::parse_update("settle_seconds = 10\n").unwrap();
//! assert_eq!((u.settle_seconds, u.deadline_seconds, u.fail_after_restarts), (10, None, 3));
//! assert!(krazy_init::config::parse_update("setle_seconds = 1\n").unwrap_err().to_string().contains("setle_seconds"));
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `/etc/krazy/update.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateFile {
    /// Seconds every boot service must stay up before a trial commits (default 30).
    #[serde(default = "default_settle")]
    pub settle_seconds: u64,
    /// Seconds after which an unhealthy trial rolls back (default: settle + 150).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_seconds: Option<u64>,
    /// Automatic restarts of one boot service, before the trial settled,
    /// that roll it back at once (default 3; 0: only the deadline).
    #[serde(default = "default_fail_after_restarts")]
    pub fail_after_restarts: u64,
    /// Health checks per service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<HealthCheck>,
}

fn default_settle() -> u64 {
    30
}

fn default_fail_after_restarts() -> u64 {
    3
}

impl Default for UpdateFile {
    fn default() -> Self {
        UpdateFile {
            settle_seconds: default_settle(),
            deadline_seconds: None,
            fail_after_restarts: default_fail_after_restarts(),
            health: Vec::new(),
        }
    }
}

/// One `[[health]]` check: `http` or `command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// The service it belongs to.
    pub service: String,
    /// A URL whose GET must answer 2xx (plain HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// A command that must exit 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
}

impl HealthCheck {
    /// The check's name in the gate and in reasons (`hello:http`).
    pub fn name(&self) -> String {
        let kind = if self.http.is_some() {
            "http"
        } else {
            "command"
        };
        format!("{}:{kind}", self.service)
    }
}

/// Errors of reading an `update.toml`.
#[derive(Debug, thiserror::Error)]
pub enum UpdateFileError {
    /// The file could not be read.
    #[error("cannot read the update settings file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The TOML is malformed or has a wrong or unknown field.
    #[error("update settings file is invalid: {0}")]
    Toml(#[from] toml::de::Error),
}

/// Parses `update.toml` text.
pub fn parse_update(text: &str) -> Result<UpdateFile, UpdateFileError> {
    Ok(toml::from_str(text)?)
}

/// Reads and parses an `update.toml` file; a missing file (an image from
/// before it existed) gives the defaults.
pub fn load_update(path: &Path) -> Result<UpdateFile, UpdateFileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_update(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UpdateFile::default()),
        Err(source) => Err(UpdateFileError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fields_and_errors() {
        assert_eq!(parse_update("").unwrap(), UpdateFile::default());
        let u = parse_update(
            "settle_seconds = 5\ndeadline_seconds = 60\nfail_after_restarts = 0\n\
             [[health]]\nservice = \"hello\"\nhttp = \"http://127.0.0.1:8080/\"\n\
             [[health]]\nservice = \"db\"\ncommand = [\"/user/db\", \"--check\"]\n",
        )
        .unwrap();
        assert_eq!(
            (u.settle_seconds, u.deadline_seconds, u.fail_after_restarts),
            (5, Some(60), 0)
        );
        assert_eq!(u.health[0].name(), "hello:http");
        assert_eq!(u.health[1].name(), "db:command");
        assert!(parse_update("[[health]]\nservice = \"a\"\nurl = \"x\"\n")
            .unwrap_err()
            .to_string()
            .contains("url"));
        assert!(parse_update("settle_seconds = \"soon\"\n").is_err());
        // Written and read back.
        assert_eq!(parse_update(&toml::to_string(&u).unwrap()).unwrap(), u);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            load_update(&dir.path().join("none.toml")).unwrap(),
            UpdateFile::default()
        );
        std::fs::write(dir.path().join("bad.toml"), "settle = 1\n").unwrap();
        assert!(load_update(&dir.path().join("bad.toml")).is_err());
    }
}
