//! The QEMU runner behind `krazy vm run` and the end-to-end tests.
//!
//! It boots a whole disk image the way a PC does: OVMF (UEFI) with a
//! writable copy of its variable store kept beside the image
//! (`<image>.vars.fd`), the image as a virtio disk, user-mode networking
//! with port forwards bound to `127.0.0.1` only, and the serial console
//! captured line by line (and, in foreground mode, copied to stdout). There
//! is no `-kernel`: firmware, systemd-boot and the image's own boot entries
//! do the work, exactly as on hardware.
//!
//! - [`discover`] (or a [`Discovery`] built by hand) finds
//!   `qemu-system-x86_64` and the OVMF files; when one is missing its error
//!   says which Debian package to install.
//! - [`VmOptions`] says what to boot and how; [`Vm::start`] starts QEMU and
//!   returns once its QMP control socket answers.
//! - [`Vm::wait_for_serial`] waits for a console line and returns the time
//!   since QEMU started; [`Vm::serial_tail`] gives the last lines for error
//!   messages; [`Vm::powerdown`], [`Vm::reset`], [`Vm::quit`] and
//!   [`Vm::kill`] end or restart the machine; dropping a [`Vm`] kills QEMU.
//! - [`wait_http`] retries a plain HTTP GET through a forward until the guest
//!   answers (QEMU accepts connections on a forward long before the guest
//!   listens, and resets them).
//!
//! KVM is used only when asked for ([`Accel::Kvm`]): on machines that are
//! themselves VMs `/dev/kvm` can exist and hang, so nothing here detects it.
//!
//! ```no_run
//! use krazy_build::vm::{free_port, wait_http, Vm, VmOptions};
//! use std::time::Duration;
//!
//! let web = free_port()?;
//! let opts = VmOptions::new("out/pc.img")
//!     .with_forward(web, 80)
//!     .with_serial_log("out/serial.log")
//!     .with_watchdog(true);
//! let vm = Vm::start(opts)?;
//! let boot = vm.wait_for_serial("krazy: stage 2", Duration::from_secs(120))?;
//! println!("stage 2 after {boot:?}");
//! let answer = wait_http(
//!     &format!("127.0.0.1:{web}"),
//!     "/api/v1/services",
//!     Some(("krazy", "the password")),
//!     Duration::from_secs(60),
//! )?;
//! assert_eq!(answer.status, 200);
//! vm.powerdown()?;
//! vm.wait_exit(Duration::from_secs(60))?;
//! # Ok::<(), krazy_build::vm::VmError>(())
//! ```

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

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

/// How long [`Vm::start`] waits for QEMU's QMP socket to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one QMP exchange may take.
const QMP_TIMEOUT: Duration = Duration::from_secs(10);
/// How many serial lines are kept in memory (the log file keeps all).
const SERIAL_LINES_KEPT: usize = 20_000;
/// A line longer than this is split (firmware menus redraw without newlines).
const SERIAL_LINE_MAX: usize = 4096;
/// How much of QEMU's stderr is kept for error messages.
const STDERR_KEPT: usize = 16 * 1024;
/// The largest HTTP head or body [`http_request`] accepts.
const HTTP_MAX_BODY: usize = 16 << 20;
const HTTP_MAX_HEAD: usize = 64 << 10;

/// Why discovering, starting, controlling or talking to a VM failed.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// `qemu-system-x86_64` is not in `PATH` and `KRAZY_QEMU` is not set.
    #[error("{QEMU_BINARY} was not found in PATH ({searched}); {QEMU_INSTALL_HINT}")]
    QemuNotFound {
        /// The `PATH` that was searched.
        searched: String,
    },
    /// `KRAZY_QEMU` names nothing executable.
    #[error("KRAZY_QEMU={} is not an executable file; unset it to search PATH, or {QEMU_INSTALL_HINT}", path.display())]
    QemuOverrideMissing {
        /// The value of `KRAZY_QEMU`.
        path: PathBuf,
    },
    /// No OVMF pair was found.
    #[error(
        "OVMF (UEFI firmware for QEMU) was not found (looked for {}); {OVMF_INSTALL_HINT}",
        list_paths(searched)
    )]
    OvmfNotFound {
        /// The code files looked for.
        searched: Vec<PathBuf>,
    },
    /// An OVMF override names a missing file.
    #[error("{var}={} does not exist; unset it to use the installed OVMF, or {OVMF_INSTALL_HINT}", path.display())]
    OvmfOverrideMissing {
        /// `KRAZY_OVMF_CODE` or `KRAZY_OVMF_VARS`.
        var: &'static str,
        /// Its value.
        path: PathBuf,
    },
    /// Only one of the two OVMF overrides is set.
    #[error("{set} is set but {unset} is not; OVMF code and variables must come as a pair, so set both or neither")]
    OvmfOverrideIncomplete {
        /// The variable that is set.
        set: &'static str,
        /// The variable that is missing.
        unset: &'static str,
    },
    /// KVM was asked for and `/dev/kvm` cannot be opened.
    #[error("KVM was asked for but /dev/kvm cannot be opened read-write: {source}; use TCG (the default) instead")]
    KvmUnavailable {
        /// The error opening `/dev/kvm`.
        #[source]
        source: io::Error,
    },
    /// An accelerator name other than `tcg` or `kvm`.
    #[error("unknown accelerator {0:?}; use tcg or kvm")]
    UnknownAccel(String),
    /// The disk image does not exist.
    #[error("the disk image {} does not exist (build it first)", path.display())]
    ImageMissing {
        /// The image path.
        path: PathBuf,
    },
    /// Creating or copying the OVMF variable store failed.
    #[error("cannot create the UEFI variable store {} from {}: {source}", to.display(), from.display())]
    Vars {
        /// The template.
        from: PathBuf,
        /// The writable copy.
        to: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Some other file or directory could not be created or read.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// What was being done ("create the serial log", ...).
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// QEMU could not be started.
    #[error("cannot start {}: {source}", qemu.display())]
    Spawn {
        /// The QEMU binary.
        qemu: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// QEMU exited before it could be used.
    #[error("QEMU exited ({status}) while starting; its error output:\n{stderr}")]
    StartFailed {
        /// How it exited.
        status: ExitStatus,
        /// The end of its stderr.
        stderr: String,
    },
    /// QEMU's QMP socket did not answer in time.
    #[error("QEMU's QMP socket {} did not answer within {waited:?}: {source}", socket.display())]
    StartTimeout {
        /// The socket.
        socket: PathBuf,
        /// How long [`Vm::start`] waited.
        waited: Duration,
        /// The last connection error.
        #[source]
        source: io::Error,
    },
    /// Talking to QEMU's QMP socket failed.
    #[error("QMP command {command} on {}: {source}", socket.display())]
    Qmp {
        /// The command.
        command: String,
        /// The socket.
        socket: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// QEMU answered a QMP command with an error.
    #[error("QEMU refused QMP command {command}: {reason}")]
    QmpRefused {
        /// The command.
        command: String,
        /// QEMU's error description (or what was wrong with its answer).
        reason: String,
    },
    /// No serial line contained the pattern in time.
    #[error("no serial console line containing {pattern:?} within {waited:?}; the console's last lines:\n{tail}")]
    SerialTimeout {
        /// The pattern.
        pattern: String,
        /// How long it was waited for.
        waited: Duration,
        /// The last lines of the console.
        tail: String,
    },
    /// The serial console ended (QEMU exited) before the pattern appeared.
    #[error("QEMU exited ({}) before a serial console line contained {pattern:?}; the console's last lines:\n{tail}{}",
        status.map_or_else(|| "status unknown".to_string(), |s| s.to_string()),
        if stderr.is_empty() { String::new() } else { format!("\nQEMU's error output:\n{stderr}") })]
    SerialEnded {
        /// The pattern.
        pattern: String,
        /// QEMU's exit status, when already collected.
        status: Option<ExitStatus>,
        /// The last lines of the console.
        tail: String,
        /// The end of QEMU's stderr.
        stderr: String,
    },
    /// QEMU did not exit in time.
    #[error("QEMU (pid {pid}) did not exit within {waited:?}")]
    ExitTimeout {
        /// QEMU's process id.
        pid: u32,
        /// How long it was waited for.
        waited: Duration,
    },
    /// Waiting for or killing QEMU failed.
    #[error("cannot {what} QEMU (pid {pid}): {source}")]
    Process {
        /// "wait for" or "kill".
        what: &'static str,
        /// QEMU's process id.
        pid: u32,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Binding a local port failed.
    #[error("cannot bind a free port on 127.0.0.1: {0}")]
    FreePort(#[source] io::Error),
    /// An HTTP target that is not `host:port` or `http://host:port`.
    #[error("bad HTTP target {target:?}: {reason}")]
    HttpTarget {
        /// The target as given.
        target: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// One HTTP exchange failed (connect, send or receive).
    #[error("HTTP {method} {path} on {target}: {source}")]
    Http {
        /// The method.
        method: String,
        /// The path.
        path: String,
        /// The target.
        target: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The server's answer is not HTTP/1.x as understood here.
    #[error("HTTP {method} {path} on {target}: bad response: {reason}")]
    HttpResponse {
        /// The method.
        method: String,
        /// The path.
        path: String,
        /// The target.
        target: String,
        /// What is wrong with the answer.
        reason: String,
    },
    /// No HTTP answer arrived in time.
    #[error(
        "no HTTP answer from {target} for GET {path} within {waited:?}; last error: {last_error}"
    )]
    HttpTimeout {
        /// The target.
        target: String,
        /// The path.
        path: String,
        /// How long it was tried.
        waited: Duration,
        /// The last attempt's error.
        last_error: String,
    },
}

fn list_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------
// Discovery
// ---------------------------------------------------------------------------

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
                .map_err(|source| VmError::KvmUnavailable { source })?;
            Ok(Accel::Kvm)
        }
    }
}

// ---------------------------------------------------------------------------
// Options and the command line
// ---------------------------------------------------------------------------

/// One TCP port forward from `127.0.0.1:host_port` to the guest's
/// `guest_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// The port on the host's `127.0.0.1`.
    pub host_port: u16,
    /// The port in the guest.
    pub guest_port: u16,
}

/// What to boot and how. Build with [`VmOptions::new`] and the `with_*`
/// methods; every field is public for the cases they do not cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmOptions {
    /// The raw disk image, attached as a virtio disk.
    pub image: PathBuf,
    /// Guest memory in MiB. Default 256.
    pub memory_mib: u32,
    /// Accelerator. Default TCG.
    pub accel: Accel,
    /// TCP forwards, bound to `127.0.0.1` only. Default none.
    pub forwards: Vec<Forward>,
    /// `restrict=on` for user networking: the guest gets a DHCP lease but no
    /// router, DNS or way out. Default true.
    pub restrict_network: bool,
    /// A file that receives the raw serial console output (truncated at
    /// start). Default none (lines are still kept in memory).
    pub serial_log: Option<PathBuf>,
    /// Also copy the serial console to this process's stdout, and QEMU's
    /// stderr to this process's stderr. Default false.
    pub foreground: bool,
    /// Add an emulated `i6300esb` watchdog (`-device i6300esb`; QEMU resets
    /// the guest when it fires). Default false.
    pub watchdog: bool,
    /// Pass `-no-reboot`: a guest reboot (or panic reboot) ends QEMU instead
    /// of restarting the machine. Default false, so reboots stay in one
    /// QEMU process with its forwards and serial capture.
    pub no_reboot: bool,
    /// Start from a fresh copy of the OVMF variable template instead of the
    /// kept `<image>.vars.fd`. Default false.
    pub fresh_vars: bool,
    /// Run QEMU in its own process group, so a terminal's Ctrl-C reaches only
    /// this process (which should then call [`Vm::powerdown`]). Default
    /// false: with no handler, Ctrl-C then ends QEMU too and nothing leaks.
    pub own_process_group: bool,
    /// QEMU and OVMF to use; `None` runs [`discover`] at start.
    pub tools: Option<Tools>,
    /// Extra QEMU arguments, appended last.
    pub extra_args: Vec<OsString>,
}

impl VmOptions {
    /// Options that boot `image` with the defaults above.
    pub fn new(image: impl Into<PathBuf>) -> Self {
        VmOptions {
            image: image.into(),
            memory_mib: 256,
            accel: Accel::Tcg,
            forwards: Vec::new(),
            restrict_network: true,
            serial_log: None,
            foreground: false,
            watchdog: false,
            no_reboot: false,
            fresh_vars: false,
            own_process_group: false,
            tools: None,
            extra_args: Vec::new(),
        }
    }

    /// Sets the guest memory in MiB.
    pub fn with_memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Sets the accelerator.
    pub fn with_accel(mut self, accel: Accel) -> Self {
        self.accel = accel;
        self
    }

    /// Adds a forward from `127.0.0.1:host_port` to the guest's `guest_port`.
    pub fn with_forward(mut self, host_port: u16, guest_port: u16) -> Self {
        self.forwards.push(Forward {
            host_port,
            guest_port,
        });
        self
    }

    /// Sets the serial log file.
    pub fn with_serial_log(mut self, path: impl Into<PathBuf>) -> Self {
        self.serial_log = Some(path.into());
        self
    }

    /// Sets foreground mode (serial console on stdout).
    pub fn with_foreground(mut self, on: bool) -> Self {
        self.foreground = on;
        self
    }

    /// Adds or removes the `i6300esb` watchdog device.
    pub fn with_watchdog(mut self, on: bool) -> Self {
        self.watchdog = on;
        self
    }

    /// Sets `-no-reboot`.
    pub fn with_no_reboot(mut self, on: bool) -> Self {
        self.no_reboot = on;
        self
    }

    /// Starts from a fresh UEFI variable store.
    pub fn with_fresh_vars(mut self, on: bool) -> Self {
        self.fresh_vars = on;
        self
    }

    /// Runs QEMU in its own process group.
    pub fn with_own_process_group(mut self, on: bool) -> Self {
        self.own_process_group = on;
        self
    }

    /// Uses these tools instead of discovering them.
    pub fn with_tools(mut self, tools: Tools) -> Self {
        self.tools = Some(tools);
        self
    }

    /// Appends an extra QEMU argument.
    pub fn with_extra_arg(mut self, arg: impl Into<OsString>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// QEMU's arguments (without the binary) for these options, with the
    /// firmware code at `ovmf_code`, the writable variable store at `vars`
    /// and the QMP socket at `qmp_socket`:
    ///
    /// `-name krazy -nodefaults -display none -accel tcg -m 256`
    /// `-drive if=pflash,format=raw,unit=0,readonly=on,file=CODE`
    /// `-drive if=pflash,format=raw,unit=1,file=VARS`
    /// `-drive file=IMAGE,format=raw,if=virtio`
    /// `-netdev user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:H-:G...`
    /// `-device virtio-net-pci,netdev=net0 -serial stdio`
    /// `-qmp unix:SOCKET,server=on,wait=off`, then `-device i6300esb`,
    /// `-no-reboot` and the extra arguments when asked for. Commas in paths
    /// are doubled, as QEMU's option syntax requires.
    pub fn qemu_args(&self, ovmf_code: &Path, vars: &Path, qmp_socket: &Path) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: &str| a.push(s.into());
        push("-name");
        push("krazy");
        push("-nodefaults");
        push("-display");
        push("none");
        push("-accel");
        match self.accel {
            Accel::Tcg => push("tcg"),
            Accel::Kvm => {
                push("kvm");
                push("-cpu");
                push("host");
            }
        }
        push("-m");
        a.push(self.memory_mib.to_string().into());
        a.push("-drive".into());
        a.push(opt_with_path(
            "if=pflash,format=raw,unit=0,readonly=on,file=",
            ovmf_code,
            "",
        ));
        a.push("-drive".into());
        a.push(opt_with_path("if=pflash,format=raw,unit=1,file=", vars, ""));
        a.push("-drive".into());
        a.push(opt_with_path("file=", &self.image, ",format=raw,if=virtio"));
        let mut netdev = String::from("user,id=net0");
        if self.restrict_network {
            netdev.push_str(",restrict=on");
        }
        for f in &self.forwards {
            netdev.push_str(&format!(
                ",hostfwd=tcp:127.0.0.1:{}-:{}",
                f.host_port, f.guest_port
            ));
        }
        a.push("-netdev".into());
        a.push(netdev.into());
        for s in ["-device", "virtio-net-pci,netdev=net0", "-serial", "stdio"] {
            a.push(s.into());
        }
        a.push("-qmp".into());
        a.push(opt_with_path("unix:", qmp_socket, ",server=on,wait=off"));
        if self.watchdog {
            a.push("-device".into());
            a.push("i6300esb".into());
        }
        if self.no_reboot {
            a.push("-no-reboot".into());
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

/// `prefix` + `path` with commas doubled + `suffix`.
fn opt_with_path(prefix: &str, path: &Path, suffix: &str) -> OsString {
    let mut v = prefix.as_bytes().to_vec();
    for &b in path.as_os_str().as_bytes() {
        v.push(b);
        if b == b',' {
            v.push(b',');
        }
    }
    v.extend_from_slice(suffix.as_bytes());
    OsString::from_vec(v)
}

/// Where the writable UEFI variable store of `image` lives: the image's
/// path with `.vars.fd` appended (`pc.img` → `pc.img.vars.fd`).
pub fn vars_path(image: &Path) -> PathBuf {
    let mut s = image.as_os_str().to_os_string();
    s.push(".vars.fd");
    PathBuf::from(s)
}

/// Makes sure `image`'s variable store ([`vars_path`]) exists and returns
/// its path. It is copied from `template` when missing, when `fresh` is
/// true, or when its size differs from the template's (another OVMF build);
/// otherwise it is kept as it is, so UEFI variables (boot entries,
/// systemd-boot's one-shot) survive from one run to the next. The copy is
/// written to a temporary file and renamed into place.
pub fn prepare_vars(image: &Path, template: &Path, fresh: bool) -> Result<PathBuf, VmError> {
    let to = vars_path(image);
    let err = |source| VmError::Vars {
        from: template.to_path_buf(),
        to: to.clone(),
        source,
    };
    let want = fs::metadata(template).map_err(err)?.len();
    let keep = !fresh && fs::metadata(&to).is_ok_and(|m| m.is_file() && m.len() == want);
    if keep {
        return Ok(to);
    }
    let mut tmp = to.as_os_str().to_os_string();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let copied = fs::copy(template, &tmp).and_then(|_| {
        // The template may be read-only; QEMU writes the copy.
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))?;
        fs::rename(&tmp, &to)
    });
    if let Err(e) = copied {
        let _ = fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(to)
}

/// A TCP port on `127.0.0.1` that was free a moment ago: binds port 0, reads
/// the port the kernel chose and closes the socket. Another process can take
/// it before QEMU binds it; QEMU then fails to start and says so.
pub fn free_port() -> Result<u16, VmError> {
    let l = TcpListener::bind(("127.0.0.1", 0)).map_err(VmError::FreePort)?;
    Ok(l.local_addr().map_err(VmError::FreePort)?.port())
}

// ---------------------------------------------------------------------------
// Serial console capture
// ---------------------------------------------------------------------------

/// A position in the serial console's line stream, for waiting only for
/// lines after it ([`Vm::serial_mark`], [`Vm::wait_for_serial_after`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SerialMark(u64);

#[derive(Default)]
struct SerialState {
    /// Complete lines, cleaned, with the time since start they ended at.
    lines: VecDeque<(Duration, String)>,
    /// How many lines were dropped from the front of `lines`.
    dropped: u64,
    /// The line still being received.
    partial: String,
    /// When `partial` last grew.
    partial_at: Duration,
    /// Whether QEMU closed its stdout (it exited).
    ended: bool,
}

struct Serial {
    state: Mutex<SerialState>,
    changed: Condvar,
}

impl Serial {
    fn lock(&self) -> MutexGuard<'_, SerialState> {
        // A reader thread that panicked leaves valid data behind.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Strips what makes a console line unreadable: ANSI escape sequences,
/// carriage returns, backspaces and other control characters (tabs stay).
fn clean_into(out: &mut String, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // ESC [ ... final byte (CSI), or ESC and one more character.
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
}

struct SerialSinks {
    log: Option<File>,
    foreground: bool,
}

fn serial_reader(
    mut from: ChildStdout,
    serial: Arc<Serial>,
    mut sinks: SerialSinks,
    started: Instant,
) {
    let mut buf = [0u8; 8192];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let at = started.elapsed();
        let chunk = &buf[..n];
        if let Some(log) = sinks.log.as_mut() {
            // A failing log must not stop the capture; the lines stay in memory.
            let _ = log.write_all(chunk).and_then(|()| log.flush());
        }
        if sinks.foreground {
            let mut out = io::stdout().lock();
            let _ = out.write_all(chunk).and_then(|()| out.flush());
        }
        let mut st = serial.lock();
        for &b in chunk {
            if b == b'\n' {
                let mut line = std::mem::take(&mut st.partial);
                clean_into(&mut line, &pending);
                pending.clear();
                push_line(&mut st, at, line);
            } else {
                pending.push(b);
                if pending.len() >= SERIAL_LINE_MAX {
                    let mut line = std::mem::take(&mut st.partial);
                    clean_into(&mut line, &pending);
                    pending.clear();
                    push_line(&mut st, at, line);
                }
            }
        }
        // Keep `partial` (cleaned) current for matching; `pending` holds the
        // raw bytes of the unfinished line so escapes split across reads
        // are cleaned whole.
        let mut partial = String::new();
        clean_into(&mut partial, &pending);
        st.partial = partial;
        st.partial_at = at;
        drop(st);
        serial.changed.notify_all();
    }
    let mut st = serial.lock();
    if !pending.is_empty() {
        let mut line = String::new();
        clean_into(&mut line, &pending);
        let at = started.elapsed();
        push_line(&mut st, at, line);
    }
    st.partial.clear();
    st.ended = true;
    drop(st);
    serial.changed.notify_all();
}

fn push_line(st: &mut SerialState, at: Duration, line: String) {
    if st.lines.len() >= SERIAL_LINES_KEPT {
        st.lines.pop_front();
        st.dropped += 1;
    }
    st.lines.push_back((at, line));
}

fn stderr_reader(mut from: ChildStderr, keep: Arc<Mutex<Vec<u8>>>, foreground: bool) {
    let mut buf = [0u8; 4096];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if foreground {
            let _ = io::stderr().write_all(&buf[..n]);
        }
        let mut k = keep.lock().unwrap_or_else(|p| p.into_inner());
        k.extend_from_slice(&buf[..n]);
        if k.len() > STDERR_KEPT {
            let cut = k.len() - STDERR_KEPT;
            k.drain(..cut);
        }
    }
}

// ---------------------------------------------------------------------------
// The running VM
// ---------------------------------------------------------------------------

/// A running QEMU. All methods take `&self`, so a `Vm` can be shared (for
/// example with a Ctrl-C handler that calls [`Vm::powerdown`]). Dropping it
/// kills QEMU if it still runs and removes its runtime directory; the serial
/// log and the variable store stay.
pub struct Vm {
    child: Mutex<Child>,
    pid: u32,
    started: Instant,
    serial: Arc<Serial>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Mutex<Vec<JoinHandle<()>>>,
    qmp_socket: PathBuf,
    qmp_lock: Mutex<()>,
    runtime_dir: PathBuf,
    vars: PathBuf,
    qemu: PathBuf,
    args: Vec<OsString>,
    forwards: Vec<Forward>,
    serial_log: Option<PathBuf>,
}

impl fmt::Debug for Vm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vm")
            .field("pid", &self.pid)
            .field("qemu", &self.qemu)
            .field("args", &self.args)
            .finish_non_exhaustive()
    }
}

static RUNTIME_DIRS: AtomicU64 = AtomicU64::new(0);

/// A fresh private directory (0700) for the QMP socket, short enough for a
/// Unix socket path.
fn make_runtime_dir() -> Result<PathBuf, VmError> {
    let mut base = std::env::temp_dir();
    if base.as_os_str().len() > 60 {
        base = PathBuf::from("/tmp");
    }
    let n = RUNTIME_DIRS.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = base.join(format!("krazy-vm-{}-{n}-{nanos:x}", std::process::id()));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|source| VmError::Io {
            what: "create the VM's runtime directory",
            path: dir.clone(),
            source,
        })?;
    Ok(dir)
}

impl Vm {
    /// Starts QEMU as `opts` say and returns once its QMP socket answers.
    ///
    /// Finds the tools (unless given), checks that the image exists,
    /// prepares the variable store ([`prepare_vars`]), truncates the serial
    /// log, spawns QEMU with [`VmOptions::qemu_args`] and starts the threads
    /// that capture its serial console and stderr. The start time that
    /// [`Vm::wait_for_serial`] measures from is taken just before the spawn.
    /// If QEMU exits while starting (a port already in use, a locked image),
    /// the error carries its stderr.
    pub fn start(opts: VmOptions) -> Result<Vm, VmError> {
        let tools = match &opts.tools {
            Some(t) => t.clone(),
            None => discover()?,
        };
        if !opts.image.is_file() {
            return Err(VmError::ImageMissing {
                path: opts.image.clone(),
            });
        }
        let vars = prepare_vars(&opts.image, &tools.ovmf.vars_template, opts.fresh_vars)?;
        let log = match &opts.serial_log {
            Some(p) => Some(File::create(p).map_err(|source| VmError::Io {
                what: "create the serial log",
                path: p.clone(),
                source,
            })?),
            None => None,
        };
        let runtime_dir = make_runtime_dir()?;
        let qmp_socket = runtime_dir.join("qmp.sock");
        let args = opts.qemu_args(&tools.ovmf.code, &vars, &qmp_socket);

        let mut cmd = Command::new(&tools.qemu);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if opts.own_process_group {
            cmd.process_group(0);
        }
        let started = Instant::now();
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(source) => {
                let _ = fs::remove_dir_all(&runtime_dir);
                return Err(VmError::Spawn {
                    qemu: tools.qemu.clone(),
                    source,
                });
            }
        };
        let pid = child.id();
        let serial = Arc::new(Serial {
            state: Mutex::new(SerialState::default()),
            changed: Condvar::new(),
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            let serial = serial.clone();
            let sinks = SerialSinks {
                log,
                foreground: opts.foreground,
            };
            readers.push(thread::spawn(move || {
                serial_reader(out, serial, sinks, started)
            }));
        }
        if let Some(err) = child.stderr.take() {
            let keep = stderr.clone();
            let fg = opts.foreground;
            readers.push(thread::spawn(move || stderr_reader(err, keep, fg)));
        }
        let vm = Vm {
            child: Mutex::new(child),
            pid,
            started,
            serial,
            stderr,
            readers: Mutex::new(readers),
            qmp_socket,
            qmp_lock: Mutex::new(()),
            runtime_dir,
            vars,
            qemu: tools.qemu,
            args,
            forwards: opts.forwards,
            serial_log: opts.serial_log,
        };
        vm.wait_qmp_ready()?;
        Ok(vm)
    }

    /// Waits until the QMP socket completes a handshake, or fails with
    /// QEMU's stderr when it exits first. (On error `self` is dropped by the
    /// caller, which kills QEMU.)
    fn wait_qmp_ready(&self) -> Result<(), VmError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.exit_status()? {
                // Let the stderr reader finish so the message is complete.
                self.join_readers();
                return Err(VmError::StartFailed {
                    status,
                    stderr: self.stderr_text(),
                });
            }
            match self.qmp_connect() {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(VmError::StartTimeout {
                        socket: self.qmp_socket.clone(),
                        waited: START_TIMEOUT,
                        source: e,
                    })
                }
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// When QEMU was started (just before the spawn).
    pub fn started_at(&self) -> Instant {
        self.started
    }

    /// Time since QEMU was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The QEMU binary.
    pub fn qemu(&self) -> &Path {
        &self.qemu
    }

    /// QEMU's arguments as passed (see [`VmOptions::qemu_args`]).
    pub fn args(&self) -> &[OsString] {
        &self.args
    }

    /// The whole command line, shell-quoted enough to read and paste.
    pub fn command_line(&self) -> String {
        std::iter::once(self.qemu.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(|a| {
                let s = a.to_string_lossy();
                if !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_=,.:/@+".contains(&b))
                {
                    s.into_owned()
                } else {
                    format!("'{}'", s.replace('\'', r"'\''"))
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The forwards, as given.
    pub fn forwards(&self) -> &[Forward] {
        &self.forwards
    }

    /// The host port forwarded to `guest_port`, if any.
    pub fn host_port(&self, guest_port: u16) -> Option<u16> {
        self.forwards
            .iter()
            .find(|f| f.guest_port == guest_port)
            .map(|f| f.host_port)
    }

    /// The writable UEFI variable store in use.
    pub fn vars_path(&self) -> &Path {
        &self.vars
    }

    /// The serial log file, when one was asked for.
    pub fn serial_log(&self) -> Option<&Path> {
        self.serial_log.as_deref()
    }

    /// The QMP socket.
    pub fn qmp_socket(&self) -> &Path {
        &self.qmp_socket
    }

    /// The end of QEMU's stderr so far (lossy UTF-8).
    pub fn stderr_text(&self) -> String {
        let k = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&k).trim_end().to_string()
    }

    // --- serial console ---------------------------------------------------

    /// The position after the lines received so far: lines that arrive
    /// later are "after" it.
    pub fn serial_mark(&self) -> SerialMark {
        let st = self.serial.lock();
        SerialMark(st.dropped + st.lines.len() as u64)
    }

    /// Waits until a serial console line contains `pattern` (plain substring
    /// match on the cleaned line: escape sequences and control characters
    /// removed) and returns the time from QEMU's start to the arrival of
    /// that line. Lines since QEMU started count, including ones received
    /// before the call; use [`Vm::wait_for_serial_after`] to wait for a
    /// new one. Fails with [`VmError::SerialTimeout`] after `timeout`, and
    /// at once with [`VmError::SerialEnded`] if QEMU exits first; both carry
    /// the console's tail.
    pub fn wait_for_serial(&self, pattern: &str, timeout: Duration) -> Result<Duration, VmError> {
        self.wait_for_serial_after(SerialMark(0), pattern, timeout)
    }

    /// Like [`Vm::wait_for_serial`], counting only lines received after
    /// `mark` (for example the second boot's lines after a reboot).
    pub fn wait_for_serial_after(
        &self,
        mark: SerialMark,
        pattern: &str,
        timeout: Duration,
    ) -> Result<Duration, VmError> {
        let deadline = Instant::now() + timeout;
        let mut st = self.serial.lock();
        loop {
            let first = mark.0.saturating_sub(st.dropped);
            let first = usize::try_from(first).unwrap_or(usize::MAX);
            if let Some((at, _)) = st
                .lines
                .iter()
                .skip(first)
                .find(|(_, l)| l.contains(pattern))
            {
                return Ok(*at);
            }
            if st.partial.contains(pattern) {
                return Ok(st.partial_at);
            }
            if st.ended {
                drop(st);
                // The serial reader saw EOF: QEMU is exiting or gone.
                let status = self.wait_exit(Duration::from_secs(2)).ok();
                return Err(VmError::SerialEnded {
                    pattern: pattern.to_string(),
                    status,
                    tail: self.serial_tail(40),
                    stderr: self.stderr_text(),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                drop(st);
                return Err(VmError::SerialTimeout {
                    pattern: pattern.to_string(),
                    waited: timeout,
                    tail: self.serial_tail(40),
                });
            }
            st = self
                .serial
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The last `n` lines of the serial console (cleaned, joined with `\n`,
    /// the unfinished last line included).
    pub fn serial_tail(&self, n: usize) -> String {
        let st = self.serial.lock();
        let mut lines: Vec<&str> = st.lines.iter().map(|(_, l)| l.as_str()).collect();
        if !st.partial.is_empty() {
            lines.push(&st.partial);
        }
        let skip = lines.len().saturating_sub(n);
        lines[skip..].join("\n")
    }

    /// Every serial line kept in memory (the last 20,000), with the time
    /// since start at which each arrived.
    pub fn serial_lines(&self) -> Vec<(Duration, String)> {
        self.serial.lock().lines.iter().cloned().collect()
    }

    // --- process ------------------------------------------------------------

    fn child(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// QEMU's exit status if it has exited, `None` while it runs.
    pub fn exit_status(&self) -> Result<Option<ExitStatus>, VmError> {
        self.child().try_wait().map_err(|source| VmError::Process {
            what: "wait for",
            pid: self.pid,
            source,
        })
    }

    /// Waits up to `timeout` for QEMU to exit and returns its status.
    pub fn wait_exit(&self, timeout: Duration) -> Result<ExitStatus, VmError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exit_status()? {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                return Err(VmError::ExitTimeout {
                    pid: self.pid,
                    waited: timeout,
                });
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Kills QEMU (SIGKILL) if it still runs and returns its exit status.
    pub fn kill(&self) -> Result<ExitStatus, VmError> {
        let mut c = self.child();
        if let Some(s) = c.try_wait().map_err(|source| VmError::Process {
            what: "wait for",
            pid: self.pid,
            source,
        })? {
            return Ok(s);
        }
        c.kill().map_err(|source| VmError::Process {
            what: "kill",
            pid: self.pid,
            source,
        })?;
        c.wait().map_err(|source| VmError::Process {
            what: "wait for",
            pid: self.pid,
            source,
        })
    }

    fn join_readers(&self) {
        let handles: Vec<_> =
            std::mem::take(&mut *self.readers.lock().unwrap_or_else(|p| p.into_inner()));
        for h in handles {
            let _ = h.join();
        }
    }

    // --- QMP ------------------------------------------------------------------

    /// Connects to the QMP socket and completes the capabilities handshake.
    fn qmp_connect(&self) -> io::Result<(BufReader<UnixStream>, UnixStream)> {
        let s = UnixStream::connect(&self.qmp_socket)?;
        s.set_read_timeout(Some(QMP_TIMEOUT))?;
        s.set_write_timeout(Some(QMP_TIMEOUT))?;
        let mut w = s.try_clone()?;
        let mut r = BufReader::new(s);
        let greeting = qmp_read(&mut r)?;
        if greeting.get("QMP").is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not a QMP greeting: {greeting}"),
            ));
        }
        w.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
        if let Err(reason) = qmp_answer(&mut r)? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("qmp_capabilities refused: {reason}"),
            ));
        }
        Ok((r, w))
    }

    /// Runs one QMP command (`execute` with optional `arguments`) and
    /// returns its `return` value. For `quit`, QEMU closing the socket
    /// before answering counts as success.
    pub fn qmp(
        &self,
        command: &str,
        arguments: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, VmError> {
        let _one_at_a_time = self.qmp_lock.lock().unwrap_or_else(|p| p.into_inner());
        let io_err = |source| VmError::Qmp {
            command: command.to_string(),
            socket: self.qmp_socket.clone(),
            source,
        };
        let (mut r, mut w) = self.qmp_connect().map_err(io_err)?;
        let mut msg = serde_json::json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        w.write_all(line.as_bytes()).map_err(io_err)?;
        match qmp_answer(&mut r) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(reason)) => Err(VmError::QmpRefused {
                command: command.to_string(),
                reason,
            }),
            Err(e) if command == "quit" && e.kind() == io::ErrorKind::UnexpectedEof => {
                Ok(serde_json::Value::Null)
            }
            Err(e) => Err(io_err(e)),
        }
    }

    /// Presses the virtual power button (QMP `system_powerdown`, an ACPI
    /// event). A guest OS then shuts down and QEMU exits; firmware without
    /// an OS ignores it. Returns once QEMU accepted the command; wait with
    /// [`Vm::wait_exit`].
    pub fn powerdown(&self) -> Result<(), VmError> {
        self.qmp("system_powerdown", None).map(drop)
    }

    /// Resets the machine (QMP `system_reset`), like a reset button. With
    /// `-no-reboot` QEMU exits instead.
    pub fn reset(&self) -> Result<(), VmError> {
        self.qmp("system_reset", None).map(drop)
    }

    /// Ends QEMU at once (QMP `quit`, no guest shutdown) and waits up to
    /// 10 s for it to exit.
    pub fn quit(&self) -> Result<ExitStatus, VmError> {
        if let Some(s) = self.exit_status()? {
            return Ok(s);
        }
        self.qmp("quit", None)?;
        self.wait_exit(Duration::from_secs(10))
    }
}

/// Reads one QMP message (one JSON object per line).
fn qmp_read(r: &mut impl BufRead) -> io::Result<serde_json::Value> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "QEMU closed the QMP socket",
        ));
    }
    serde_json::from_str(&line).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad QMP message {:?}: {e}", line.trim_end()),
        )
    })
}

/// Reads messages until a command's answer, skipping events: `Ok(return)`
/// or `Err(error description)`.
fn qmp_answer(r: &mut impl BufRead) -> io::Result<Result<serde_json::Value, String>> {
    loop {
        let v = qmp_read(r)?;
        if let Some(ret) = v.get("return") {
            return Ok(Ok(ret.clone()));
        }
        if let Some(err) = v.get("error") {
            let desc = err
                .get("desc")
                .and_then(|d| d.as_str())
                .map_or_else(|| err.to_string(), str::to_string);
            return Ok(Err(desc));
        }
        // {"event": ...} and anything else: skip.
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.kill();
        self.join_readers();
        let _ = fs::remove_dir_all(&self.runtime_dir);
    }
}

// ---------------------------------------------------------------------------
// Minimal HTTP/1.1 client
// ---------------------------------------------------------------------------

/// A plain HTTP/1.1 request for [`http_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path with query, starting with `/`.
    pub path: String,
    /// HTTP Basic credentials `(user, password)`.
    pub basic_auth: Option<(String, String)>,
    /// Extra headers (`Host`, `Connection`, `Content-Length` and
    /// `Authorization` are written by [`http_request`]).
    pub headers: Vec<(String, String)>,
    /// The body (sent with a `Content-Length` when not empty or not a GET).
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// A GET of `path`.
    pub fn get(path: &str) -> Self {
        HttpRequest {
            method: "GET".into(),
            path: path.into(),
            basic_auth: None,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A POST of `path` with a JSON body and `Content-Type: application/json`
    /// (which krazy's API requires on every state-changing request).
    pub fn post_json(path: &str, body: impl Into<Vec<u8>>) -> Self {
        HttpRequest {
            method: "POST".into(),
            path: path.into(),
            basic_auth: None,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.into(),
        }
    }

    /// Adds HTTP Basic credentials.
    pub fn with_basic_auth(mut self, user: &str, password: &str) -> Self {
        self.basic_auth = Some((user.into(), password.into()));
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `host:port` from `host:port`, `http://host:port` or `http://host:port/`.
fn parse_target(target: &str) -> Result<&str, VmError> {
    let bad = |reason| VmError::HttpTarget {
        target: target.to_string(),
        reason,
    };
    if target.starts_with("https://") {
        return Err(bad("only plain http:// is supported here"));
    }
    let rest = target.strip_prefix("http://").unwrap_or(target);
    let hostport = rest.strip_suffix('/').unwrap_or(rest);
    if hostport.contains('/') {
        return Err(bad("give the path separately, not in the target"));
    }
    match hostport.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(hostport),
        _ => Err(bad("expected host:port")),
    }
}

/// Sends one request to `target` (`host:port` or `http://host:port`) and
/// reads the answer, with `timeout` for connecting and for each read and
/// write. Plain HTTP only; the request says `Connection: close`; the body is
/// read by `Content-Length`, chunked encoding, or to the end of the stream.
pub fn http_request(
    target: &str,
    req: &HttpRequest,
    timeout: Duration,
) -> Result<HttpResponse, VmError> {
    let hostport = parse_target(target)?;
    let io_err = |source| VmError::Http {
        method: req.method.clone(),
        path: req.path.clone(),
        target: target.to_string(),
        source,
    };
    let bad = |reason: String| VmError::HttpResponse {
        method: req.method.clone(),
        path: req.path.clone(),
        target: target.to_string(),
        reason,
    };
    let addrs: Vec<_> = hostport.to_socket_addrs().map_err(io_err)?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut s = stream.ok_or_else(|| io_err(last))?;
    s.set_read_timeout(Some(timeout)).map_err(io_err)?;
    s.set_write_timeout(Some(timeout)).map_err(io_err)?;

    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nUser-Agent: krazy\r\n",
        req.method, req.path
    );
    if let Some((u, p)) = &req.basic_auth {
        head.push_str("Authorization: Basic ");
        head.push_str(&base64(format!("{u}:{p}").as_bytes()));
        head.push_str("\r\n");
    }
    for (n, v) in &req.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if !req.body.is_empty() || req.method != "GET" {
        head.push_str(&format!("Content-Length: {}\r\n", req.body.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&req.body);
    s.write_all(&out).map_err(io_err)?;

    let mut r = BufReader::new(s);
    // Status line and headers.
    let mut head_len = 0usize;
    let mut read_head_line = |r: &mut BufReader<TcpStream>| -> Result<String, VmError> {
        let mut line = Vec::new();
        let n = r
            .by_ref()
            .take((HTTP_MAX_HEAD - head_len) as u64)
            .read_until(b'\n', &mut line)
            .map_err(io_err)?;
        head_len += n;
        if n == 0 || !line.ends_with(b"\n") {
            return Err(io_err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection ended inside the response head",
            )));
        }
        Ok(String::from_utf8_lossy(&line).trim_end().to_string())
    };
    let status_line = read_head_line(&mut r)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or_else(|| bad(format!("status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_head_line(&mut r)?;
        if line.is_empty() {
            break;
        }
        let (n, v) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("header line {line:?}")))?;
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    let resp_header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let chunked = resp_header("Transfer-Encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = resp_header("Content-Length")
        .map(|v| {
            v.parse::<usize>()
                .map_err(|_| bad(format!("Content-Length {v:?}")))
        })
        .transpose()?;
    let mut body = Vec::new();
    if status == 204 || status == 304 || (100..200).contains(&status) {
        // No body.
    } else if chunked {
        loop {
            let mut size_line = String::new();
            r.read_line(&mut size_line).map_err(io_err)?;
            let hex = size_line.trim().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(hex, 16)
                .map_err(|_| bad(format!("chunk size {:?}", size_line.trim())))?;
            if size == 0 {
                break; // Trailers, if any, are not needed.
            }
            if body.len() + size > HTTP_MAX_BODY {
                return Err(bad(format!("body larger than {HTTP_MAX_BODY} bytes")));
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..]).map_err(io_err)?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf).map_err(io_err)?;
        }
    } else if let Some(len) = length {
        if len > HTTP_MAX_BODY {
            return Err(bad(format!("body larger than {HTTP_MAX_BODY} bytes")));
        }
        body.resize(len, 0);
        r.read_exact(&mut body).map_err(io_err)?;
    } else {
        r.by_ref()
            .take(HTTP_MAX_BODY as u64 + 1)
            .read_to_end(&mut body)
            .map_err(io_err)?;
        if body.len() > HTTP_MAX_BODY {
            return Err(bad(format!("body larger than {HTTP_MAX_BODY} bytes")));
        }
    }
    let _ = r.get_ref().shutdown(Shutdown::Both);
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// GETs `path` from `target` (`host:port` or `http://host:port`), with HTTP
/// Basic credentials when given, retrying every 250 ms until any HTTP
/// answer arrives (whatever its status) or `timeout` passes. Connection
/// refusals, resets and truncated answers count as "not yet": QEMU accepts
/// on a forwarded port before the guest listens and then resets.
pub fn wait_http(
    target: &str,
    path: &str,
    basic_auth: Option<(&str, &str)>,
    timeout: Duration,
) -> Result<HttpResponse, VmError> {
    parse_target(target)?;
    let mut req = HttpRequest::get(path);
    if let Some((u, p)) = basic_auth {
        req = req.with_basic_auth(u, p);
    }
    let start = Instant::now();
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        let attempt = left
            .min(Duration::from_secs(10))
            .max(Duration::from_millis(100));
        let last_error = match http_request(target, &req, attempt) {
            Ok(resp) => return Ok(resp),
            Err(e) => e.to_string(),
        };
        if start.elapsed() >= timeout {
            return Err(VmError::HttpTimeout {
                target: target.to_string(),
                path: path.to_string(),
                waited: timeout,
                last_error,
            });
        }
        thread::sleep(Duration::from_millis(250).min(timeout.saturating_sub(start.elapsed())));
    }
}

/// Standard base64 with padding (for the Basic `Authorization` header).
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= c.len() {
                out.push(char::from(ABC[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_can_be_shared_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Vm>();
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("krazy:pa ss", "a3Jhenk6cGEgc3M="),
        ] {
            assert_eq!(base64(i.as_bytes()), o, "{i:?}");
        }
    }

    #[test]
    fn clean_strips_escapes_and_controls() {
        let mut s = String::new();
        clean_into(
            &mut s,
            b"\x1b[2J\x1b[01;01H\x1b[=3hBdsDxe: start\r\x08 \x1b[1m\x1b[37m\x1b[40miPXE\ttab",
        );
        assert_eq!(s, "BdsDxe: start iPXE\ttab");
    }

    #[test]
    fn targets_parse() {
        assert_eq!(parse_target("127.0.0.1:80").ok(), Some("127.0.0.1:80"));
        assert_eq!(
            parse_target("http://127.0.0.1:8080/").ok(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(parse_target("localhost:1").ok(), Some("localhost:1"));
        for bad in [
            "https://127.0.0.1:443",
            "127.0.0.1",
            "http://h:1/api",
            ":80",
            "h:99999",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn commas_in_paths_are_doubled() {
        assert_eq!(
            opt_with_path("file=", Path::new("/a,b/c.img"), ",format=raw"),
            OsString::from("file=/a,,b/c.img,format=raw")
        );
    }
}
