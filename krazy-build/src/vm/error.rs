//! [`VmError`]: why discovering, starting, controlling or talking to a VM
//! failed, each message naming what to do about it.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use super::discover::{OVMF_INSTALL_HINT, QEMU_BINARY, QEMU_INSTALL_HINT};

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
    #[error("KVM was asked for but /dev/kvm cannot be opened read-write: {error}; use TCG (the default) instead")]
    KvmUnavailable {
        /// The error opening `/dev/kvm`.
        error: io::Error,
    },
    /// An accelerator name other than `tcg` or `kvm`.
    #[error("unknown accelerator {0:?}; use tcg or kvm")]
    UnknownAccel(String),
    /// A host forward ([`HostForward`](super::HostForward)) QEMU cannot or
    /// should not set up.
    #[error("bad host forward {rule}: {reason}")]
    HostForward {
        /// The rule, as `GUEST_ADDR:GUEST_PORT=HOST_PORT`.
        rule: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The disk image does not exist.
    #[error("the disk image {} does not exist (build it first)", path.display())]
    ImageMissing {
        /// The image path.
        path: PathBuf,
    },
    /// Creating or copying the OVMF variable store failed.
    #[error("cannot create the UEFI variable store {} from {}: {error}", to.display(), from.display())]
    Vars {
        /// The template.
        from: PathBuf,
        /// The writable copy.
        to: PathBuf,
        /// The underlying error.
        error: io::Error,
    },
    /// Some other file or directory could not be created or read.
    #[error("cannot {what} {}: {error}", path.display())]
    Io {
        /// What was being done ("create the serial log", ...).
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The underlying error.
        error: io::Error,
    },
    /// QEMU could not be started.
    #[error("cannot start {}: {error}", qemu.display())]
    Spawn {
        /// The QEMU binary.
        qemu: PathBuf,
        /// The underlying error.
        error: io::Error,
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
    #[error("QEMU's QMP socket {} did not answer within {waited:?}: {error}", socket.display())]
    StartTimeout {
        /// The socket.
        socket: PathBuf,
        /// How long [`Vm::start`] waited.
        waited: Duration,
        /// The last connection error.
        error: io::Error,
    },
    /// Talking to QEMU's QMP socket failed.
    #[error("QMP command {command} on {}: {error}", socket.display())]
    Qmp {
        /// The command.
        command: String,
        /// The socket.
        socket: PathBuf,
        /// The underlying error.
        error: io::Error,
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
    #[error("cannot {what} QEMU (pid {pid}): {error}")]
    Process {
        /// "wait for" or "kill".
        what: &'static str,
        /// QEMU's process id.
        pid: u32,
        /// The underlying error.
        error: io::Error,
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
    #[error("HTTP {method} {path} on {target} failed")]
    Http {
        /// The method.
        method: String,
        /// The path.
        path: String,
        /// The target.
        target: String,
        /// The underlying error (a transport one: [`krazy_http::HttpError::Io`]
        /// or [`krazy_http::HttpError::Closed`]).
        #[source]
        source: Box<krazy_http::HttpError>,
    },
    /// The server's answer is not HTTP/1.x as understood here, or too long.
    #[error("HTTP {method} {path} on {target}: bad response")]
    HttpResponse {
        /// The method.
        method: String,
        /// The path.
        path: String,
        /// The target.
        target: String,
        /// What is wrong with the answer.
        #[source]
        source: Box<krazy_http::HttpError>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_cause_is_printed_once() {
        let e = VmError::Spawn {
            qemu: "/usr/bin/qemu-system-aarch64".into(),
            error: io::Error::new(io::ErrorKind::NotFound, "no such file"),
        };
        let c = crate::test_util::chain(&e);
        assert_eq!(c.matches("no such file").count(), 1, "{c}");
    }
}
