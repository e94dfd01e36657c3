//! The tables of `krazy.toml` as serde types: the kernel and firmware
//! sources, `[update]`, packages with their health checks, `[[file]]`s.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// Where the kernel comes from: exactly one of `apt`, `deb` or `dir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawKernel", into = "RawKernel")]
pub enum KernelSource {
    /// A Debian package name (`linux-image-cloud-amd64`), fetched with
    /// `apt-get download` into the cache; a metapackage is resolved to the
    /// versioned image package, and the result is pinned in `krazy.lock`.
    Apt(String),
    /// A Debian `.deb` file of a kernel image package.
    Deb(PathBuf),
    /// A directory: either an unpacked package (`boot/vmlinuz-VER`,
    /// `lib/modules/VER`) or a `vmlinuz` file with an optional `lib/modules`.
    Dir(PathBuf),
}

/// The on-disk shape of `[kernel]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKernel {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    apt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deb: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dir: Option<PathBuf>,
}

impl TryFrom<RawKernel> for KernelSource {
    type Error = String;
    fn try_from(r: RawKernel) -> Result<Self, String> {
        match (r.apt, r.deb, r.dir) {
            (Some(a), None, None) => Ok(KernelSource::Apt(a)),
            (None, Some(d), None) => Ok(KernelSource::Deb(d)),
            (None, None, Some(d)) => Ok(KernelSource::Dir(d)),
            _ => Err("[kernel] needs exactly one of `apt = \"package\"`, `deb = \"file.deb\"` or `dir = \"directory\"`".into()),
        }
    }
}

impl From<KernelSource> for RawKernel {
    fn from(k: KernelSource) -> Self {
        let mut r = RawKernel::default();
        match k {
            KernelSource::Apt(a) => r.apt = Some(a),
            KernelSource::Deb(d) => r.deb = Some(d),
            KernelSource::Dir(d) => r.dir = Some(d),
        }
        r
    }
}

/// Where the boot firmware comes from: exactly one of `apt`, `file` or `dir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawFirmware", into = "RawFirmware")]
pub enum FirmwareSource {
    /// A Debian package holding the firmware (pc: `systemd-boot-efi`, whose
    /// `usr/lib/systemd/boot/efi/systemd-bootx64.efi` is used).
    Apt(String),
    /// One file: the systemd-boot EFI binary (pc).
    File(PathBuf),
    /// A directory of Raspberry Pi firmware files: `bootcode.bin`,
    /// `start*.elf`, `fixup*.dat` (pi3).
    Dir(PathBuf),
}

/// The on-disk shape of `[firmware]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFirmware {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    apt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dir: Option<PathBuf>,
}

impl TryFrom<RawFirmware> for FirmwareSource {
    type Error = String;
    fn try_from(r: RawFirmware) -> Result<Self, String> {
        match (r.apt, r.file, r.dir) {
            (Some(a), None, None) => Ok(FirmwareSource::Apt(a)),
            (None, Some(f), None) => Ok(FirmwareSource::File(f)),
            (None, None, Some(d)) => Ok(FirmwareSource::Dir(d)),
            _ => Err("[firmware] needs exactly one of `apt = \"package\"`, `file = \"path\"` or `dir = \"directory\"`".into()),
        }
    }
}

impl From<FirmwareSource> for RawFirmware {
    fn from(k: FirmwareSource) -> Self {
        let mut r = RawFirmware::default();
        match k {
            FirmwareSource::Apt(a) => r.apt = Some(a),
            FirmwareSource::File(f) => r.file = Some(f),
            FirmwareSource::Dir(d) => r.dir = Some(d),
        }
        r
    }
}

/// `[web]`: the device's web interface. The image carries it, field for
/// field, as `/etc/krazy/web.toml`: one struct, krazy-init's
/// [`krazy_init::config::WebSettings`] (ports 80/443, `tls = true`,
/// `max_connections` 256, `max_connections_per_peer` 32,
/// `max_log_followers` 16 by default; each limit at least 1).
pub use krazy_init::config::WebSettings as Web;

/// `[update]`: how updates are committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Update {
    /// How long (seconds) every boot service must stay up before a trial boot
    /// commits (default 30).
    pub settle_seconds: u32,
    /// How long a trial boot may take to become healthy before it is
    /// rolled back (seconds since the new init started; default 180).
    pub deadline_seconds: u32,
    /// How many automatic restarts of one boot service, before the trial
    /// settled, roll it back at once instead of waiting for the deadline
    /// (default 3; 0: only the deadline).
    pub fail_after_restarts: u32,
}

impl Default for Update {
    fn default() -> Self {
        Self {
            settle_seconds: 30,
            deadline_seconds: 180,
            fail_after_restarts: 3,
        }
    }
}

/// When a service starts (`boot`, the default, or `manual`): krazy-init's
/// type, which `/etc/krazy/services.toml` carries.
pub use krazy_init::config::StartMode as Start;
/// A condition a service waits for before it starts (`clock`, `network`):
/// krazy-init's type.
pub use krazy_init::config::WaitFor;
/// What the supervisor does when a service exits (`always`, `on-failure`,
/// the default, or `never`): krazy-init's type.
pub use krazy_init::policy::Restart;

/// A service's health check, run during a trial boot: exactly one of `http`
/// or `command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawHealth", into = "RawHealth")]
pub enum Health {
    /// Healthy when a GET of this URL answers 2xx.
    Http(String),
    /// Healthy when this command (program and arguments) exits 0.
    Command(Vec<String>),
}

/// The on-disk shape of `health`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    http: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    command: Option<Vec<String>>,
}

impl TryFrom<RawHealth> for Health {
    type Error = String;
    fn try_from(r: RawHealth) -> Result<Self, String> {
        match (r.http, r.command) {
            (Some(u), None) => Ok(Health::Http(u)),
            (None, Some(c)) if !c.is_empty() => Ok(Health::Command(c)),
            (None, Some(_)) => Err("health `command` needs at least the program".into()),
            _ => Err(
                "health needs exactly one of `http = \"URL\"` or `command = [\"program\", ...]`"
                    .into(),
            ),
        }
    }
}

impl From<Health> for RawHealth {
    fn from(h: Health) -> Self {
        match h {
            Health::Http(u) => RawHealth {
                http: Some(u),
                command: None,
            },
            Health::Command(c) => RawHealth {
                http: None,
                command: Some(c),
            },
        }
    }
}

/// `[[package]]`: a cargo package built for the target and run as a service
/// at `/user/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    /// The service name: the program is installed as `/user/<name>`.
    pub name: String,
    /// The cargo package's directory (relative to the krazy.toml's directory).
    pub path: PathBuf,
    /// The binary target to build; optional when the package has one binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bin: Option<String>,
    /// Command-line arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables (besides what init sets).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// When it starts (default `boot`).
    #[serde(default)]
    pub start: Start,
    /// Restart policy (default `on-failure`).
    #[serde(default)]
    pub restart: Restart,
    /// Conditions to wait for before starting (default none).
    #[serde(default)]
    pub wait_for: Vec<WaitFor>,
    /// A health check that must pass before a trial boot commits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

impl Package {
    /// A package named `name` at `path`, with every other field defaulted.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            path: path.into(),
            bin: None,
            args: Vec::new(),
            env: BTreeMap::new(),
            start: Start::default(),
            restart: Restart::default(),
            wait_for: Vec::new(),
            health: None,
        }
    }
}

/// Permission bits, written in TOML as an octal string (`"0644"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl Default for Mode {
    fn default() -> Self {
        Mode(0o644)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("mode {s:?} is not an octal string like \"0644\" or \"0755\"");
        if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return Err(bad());
        }
        let m = u32::from_str_radix(s, 8).map_err(|_| bad())?;
        if m > 0o7777 {
            return Err(bad());
        }
        Ok(Mode(m))
    }
}

impl Serialize for Mode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `[[file]]`: an extra file in the root file system: exactly one of
/// `contents` or `source`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// The absolute destination path in the root file system (`/etc/motd`).
    pub path: String,
    /// The file's contents as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contents: Option<String>,
    /// A host file to copy (relative to the krazy.toml's directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<PathBuf>,
    /// Permission bits as an octal string (default `"0644"`).
    #[serde(default)]
    pub mode: Mode,
}
