//! Finding `qemu-system-x86_64` and the OVMF firmware ([`Discovery`],
//! [`discover`]) and choosing the accelerator ([`Accel`], [`pick_accel`]).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::VmError;

/// The QEMU binary searched for in `PATH`.
pub const QEMU_BINARY: &str = "qemu-system-x86_64";
/// Environment variable naming the QEMU binary to use (a path, or a name
/// looked up in `PATH`).
pub const QEMU_ENV: &str = "KRAZY_QEMU";
/// Environment variable naming the OVMF code file (set together with
/// [`OVMF_VARS_ENV`]).
pub const OVMF_CODE_ENV: &str = "KRAZY_OVMF_CODE";
/// Environment variable naming the OVMF variable-store template (set
/// together with [`OVMF_CODE_ENV`]).
pub const OVMF_VARS_ENV: &str = "KRAZY_OVMF_VARS";

/// Where distributions install OVMF, as `(code, vars template)` pairs, in
/// the order they are tried: Debian/Ubuntu 4 MiB, Debian/Ubuntu 2 MiB,
/// Fedora, Arch. A code file only works with the vars file of its own pair.
pub const OVMF_PAIRS: &[(&str, &str)] = &[
    (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
    (
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
    ),
    (
        "/usr/share/edk2/ovmf/OVMF_CODE.fd",
        "/usr/share/edk2/ovmf/OVMF_VARS.fd",
    ),
    (
        "/usr/share/edk2/x64/OVMF_CODE.4m.fd",
        "/usr/share/edk2/x64/OVMF_VARS.4m.fd",
    ),
];

/// How to install QEMU, shown when it is missing.
pub const QEMU_INSTALL_HINT: &str = "install it with `apt-get install qemu-system-x86` \
(on Debian 12 with qemu-utils from bookworm-backports that install fails on a Breaks: \
downgrade qemu-utils to bookworm's version in the same command: \
`apt-get install --allow-downgrades qemu-utils=<bookworm version> qemu-system-x86`, \
the version as `apt-cache policy qemu-utils` lists it for bookworm), \
or set KRAZY_QEMU to the qemu-system-x86_64 binary";

/// How to install OVMF, shown when it is missing.
pub const OVMF_INSTALL_HINT: &str = "install it with `apt-get install ovmf`, \
or set both KRAZY_OVMF_CODE and KRAZY_OVMF_VARS to an OVMF code file and its variable-store template";

/// An OVMF firmware: the read-only code and the template of its variable
/// store (each VM gets a writable copy of the template, see [`prepare_vars`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ovmf {
    /// The firmware code (`OVMF_CODE_4M.fd`), mapped read-only.
    pub code: PathBuf,
    /// The variable-store template (`OVMF_VARS_4M.fd`), never written.
    pub vars_template: PathBuf,
}

/// What QEMU runs with: the QEMU binary and the firmware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// OVMF.
    pub ovmf: Ovmf,
}

/// Where to look for QEMU and OVMF. [`Discovery::from_env`] reads the
/// environment; tests and embedders can fill the fields themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    /// `$KRAZY_QEMU`: a path, or a bare name looked up in [`Self::path`].
    pub qemu_override: Option<PathBuf>,
    /// `$PATH`, searched for [`QEMU_BINARY`].
    pub path: Option<OsString>,
    /// `$KRAZY_OVMF_CODE`.
    pub ovmf_code_override: Option<PathBuf>,
    /// `$KRAZY_OVMF_VARS`.
    pub ovmf_vars_override: Option<PathBuf>,
    /// OVMF pairs tried in order when there is no override ([`OVMF_PAIRS`]).
    pub ovmf_candidates: Vec<Ovmf>,
}

impl Discovery {
    /// The search the environment asks for: `KRAZY_QEMU`, `PATH`,
    /// `KRAZY_OVMF_CODE`, `KRAZY_OVMF_VARS` (empty values count as unset)
    /// and [`OVMF_PAIRS`].
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        Discovery {
            qemu_override: var(QEMU_ENV).map(PathBuf::from),
            path: var("PATH"),
            ovmf_code_override: var(OVMF_CODE_ENV).map(PathBuf::from),
            ovmf_vars_override: var(OVMF_VARS_ENV).map(PathBuf::from),
            ovmf_candidates: default_ovmf_candidates(),
        }
    }

    /// Finds QEMU: the override when set (it must exist), else the first
    /// executable [`QEMU_BINARY`] in `PATH`.
    pub fn find_qemu(&self) -> Result<PathBuf, VmError> {
        if let Some(o) = &self.qemu_override {
            let found = if o.as_os_str().as_bytes().contains(&b'/') {
                is_executable(o).then(|| o.clone())
            } else {
                search_path(self.path.as_deref(), o.as_os_str())
            };
            return found.ok_or_else(|| VmError::QemuOverrideMissing { path: o.clone() });
        }
        search_path(self.path.as_deref(), OsStr::new(QEMU_BINARY)).ok_or_else(|| {
            VmError::QemuNotFound {
                searched: self
                    .path
                    .as_deref()
                    .map_or_else(|| "PATH is unset".into(), |p| p.to_string_lossy().into()),
            }
        })
    }

    /// Finds OVMF: both overrides when set (both must exist), else the first
    /// candidate pair whose two files exist.
    pub fn find_ovmf(&self) -> Result<Ovmf, VmError> {
        match (&self.ovmf_code_override, &self.ovmf_vars_override) {
            (Some(code), Some(vars)) => {
                for (var, path) in [(OVMF_CODE_ENV, code), (OVMF_VARS_ENV, vars)] {
                    if !path.is_file() {
                        return Err(VmError::OvmfOverrideMissing {
                            var,
                            path: path.clone(),
                        });
                    }
                }
                Ok(Ovmf {
                    code: code.clone(),
                    vars_template: vars.clone(),
                })
            }
            (Some(_), None) => Err(VmError::OvmfOverrideIncomplete {
                set: OVMF_CODE_ENV,
                unset: OVMF_VARS_ENV,
            }),
            (None, Some(_)) => Err(VmError::OvmfOverrideIncomplete {
                set: OVMF_VARS_ENV,
                unset: OVMF_CODE_ENV,
            }),
            (None, None) => self
                .ovmf_candidates
                .iter()
                .find(|o| o.code.is_file() && o.vars_template.is_file())
                .cloned()
                .ok_or_else(|| VmError::OvmfNotFound {
                    searched: self
                        .ovmf_candidates
                        .iter()
                        .map(|o| o.code.clone())
                        .collect(),
                }),
        }
    }

    /// Finds both QEMU and OVMF.
    pub fn find(&self) -> Result<Tools, VmError> {
        Ok(Tools {
            qemu: self.find_qemu()?,
            ovmf: self.find_ovmf()?,
        })
    }
}

/// [`OVMF_PAIRS`] as [`Ovmf`] values.
pub fn default_ovmf_candidates() -> Vec<Ovmf> {
    OVMF_PAIRS
        .iter()
        .map(|(c, v)| Ovmf {
            code: c.into(),
            vars_template: v.into(),
        })
        .collect()
}

/// Finds QEMU and OVMF as the environment says ([`Discovery::from_env`]).
pub fn discover() -> Result<Tools, VmError> {
    Discovery::from_env().find()
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn search_path(path: Option<&OsStr>, name: &OsStr) -> Option<PathBuf> {
    let path = path?;
    path.as_bytes()
        .split(|&b| b == b':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(OsStr::from_bytes(dir)).join(name))
        .find(|p| is_executable(p))
}

/// Accelerator QEMU runs the guest with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// Software emulation (`-accel tcg`): works everywhere, the default.
    #[default]
    Tcg,
    /// Hardware virtualisation (`-accel kvm -cpu host`): only when asked
    /// for, since a broken KVM (nested, in a VM) hangs instead of failing.
    Kvm,
}

impl Accel {
    /// `tcg` or `kvm`.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Accel {
    type Err = VmError;
    fn from_str(s: &str) -> Result<Self, VmError> {
        match s {
            "tcg" => Ok(Accel::Tcg),
            "kvm" => Ok(Accel::Kvm),
            _ => Err(VmError::UnknownAccel(s.to_string())),
        }
    }
}

/// The accelerator to use: TCG unless KVM is asked for explicitly. KVM is
/// never chosen on its own (a `/dev/kvm` that exists can still hang QEMU);
/// when asked for, `/dev/kvm` must at least open read-write.
pub fn pick_accel(requested: Option<Accel>) -> Result<Accel, VmError> {
    match requested {
        None | Some(Accel::Tcg) => Ok(Accel::Tcg),
        Some(Accel::Kvm) => {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .map_err(|source| VmError::KvmUnavailable { error: source })?;
            Ok(Accel::Kvm)
        }
    }
}
