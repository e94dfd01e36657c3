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
//!
//! The module is split by concern: [`discover`](self::discover()) and
//! [`Accel`] in `discover.rs`, [`VmOptions`] and the command line in
//! `options.rs`, console capture in `serial.rs`, the control socket in
//! `qmp.rs`, the little HTTP client in `http.rs`, [`VmError`] in
//! `error.rs`; this file owns the running [`Vm`] and its process.

mod discover;
mod error;
mod http;
mod options;
mod pi;
mod qmp;
mod serial;

pub use discover::{
    default_ovmf_candidates, discover, pick_accel, Accel, Discovery, Ovmf, Tools, OVMF_CODE_ENV,
    OVMF_INSTALL_HINT, OVMF_PAIRS, OVMF_VARS_ENV, QEMU_BINARY, QEMU_ENV, QEMU_INSTALL_HINT,
};
pub use error::VmError;
pub use http::{http_request, wait_http, HttpRequest, HttpResponse};
pub use options::{free_port, prepare_vars, vars_path, Forward, HostForward, VmOptions, USER_NET};
pub use pi::{pi_boot, PiBoot, PiBootError, PiConfig};
pub use serial::SerialMark;

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serial::{serial_reader, stderr_reader, Serial, SerialSinks, SerialState};

/// How long [`Vm::start`] waits for QEMU's QMP socket to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);

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

/// Makes the kernel SIGKILL the child when this process ends, however it
/// ends (a signal, `process::exit`, a panic with `panic = "abort"`): QEMU
/// never outlives the program that started it.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits,
/// not only when the process does, so QEMU is forked by
/// [`spawn_from_keeper`]'s thread, which lives as long as the process.
fn die_with_this_process(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed: it makes two raw system calls
    // (prctl, getppid) and builds `io::Error`s from errno values, which
    // does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            let kill = nix::libc::SIGKILL as nix::libc::c_ulong;
            if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, kill, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent died between fork and prctl: no signal will come.
            if u32::try_from(nix::libc::getppid()).ok() != Some(parent) {
                return Err(io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// A request to the keeper thread: the command and where to send the child.
type SpawnJob = (Command, mpsc::Sender<io::Result<Child>>);

/// The keeper thread's queue, started by the first [`spawn_from_keeper`].
static KEEPER: Mutex<Option<mpsc::Sender<SpawnJob>>> = Mutex::new(None);

/// Spawns `cmd` from one thread kept for the life of the process, so that
/// QEMU's `PR_SET_PDEATHSIG` ([`die_with_this_process`]) fires when the
/// process ends and not when the thread that called [`Vm::start`] does (a
/// `Vm` may be started on a short-lived thread and used elsewhere).
fn spawn_from_keeper(cmd: Command) -> io::Result<Child> {
    let gone = || io::Error::other("the thread that spawns QEMU is gone");
    let mut keeper = KEEPER.lock().unwrap_or_else(|p| p.into_inner());
    let tx = match keeper.as_ref() {
        Some(tx) => tx.clone(),
        None => {
            let (tx, rx) = mpsc::channel::<SpawnJob>();
            thread::Builder::new()
                .name("krazy-vm-spawn".into())
                .spawn(move || {
                    for (mut cmd, reply) in rx {
                        let _ = reply.send(cmd.spawn());
                    }
                })?;
            keeper.insert(tx).clone()
        }
    };
    drop(keeper);
    let (reply, answer) = mpsc::channel();
    tx.send((cmd, reply)).map_err(|_| gone())?;
    answer.recv().map_err(|_| gone())?
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
            error: source,
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
        for h in &opts.host_forwards {
            h.check()?;
        }
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
                error: source,
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
        die_with_this_process(&mut cmd);
        let started = Instant::now();
        let mut child = match spawn_from_keeper(cmd) {
            Ok(c) => c,
            Err(source) => {
                let _ = fs::remove_dir_all(&runtime_dir);
                return Err(VmError::Spawn {
                    qemu: tools.qemu.clone(),
                    error: source,
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
                        error: e,
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

    /// The private directory holding the QMP socket (`/tmp/krazy-vm-*`),
    /// removed when the `Vm` is dropped.
    pub fn runtime_dir(&self) -> &Path {
        &self.runtime_dir
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

    fn child(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// QEMU's exit status if it has exited, `None` while it runs.
    pub fn exit_status(&self) -> Result<Option<ExitStatus>, VmError> {
        self.child().try_wait().map_err(|source| VmError::Process {
            what: "wait for",
            pid: self.pid,
            error: source,
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

    /// What dropping the `Vm` does, for code that cannot wait for the drop
    /// (a signal handler about to call `process::exit`, which runs no
    /// destructors): kills QEMU (SIGKILL) if it still runs, reaps it and
    /// removes the runtime directory. The serial log and the variable store
    /// stay. Methods that need QEMU fail afterwards.
    pub fn kill_and_clean_up(&self) -> Result<ExitStatus, VmError> {
        let status = self.kill();
        let _ = fs::remove_dir_all(&self.runtime_dir);
        status
    }

    /// Kills QEMU (SIGKILL) if it still runs and returns its exit status.
    pub fn kill(&self) -> Result<ExitStatus, VmError> {
        let mut c = self.child();
        if let Some(s) = c.try_wait().map_err(|source| VmError::Process {
            what: "wait for",
            pid: self.pid,
            error: source,
        })? {
            return Ok(s);
        }
        c.kill().map_err(|source| VmError::Process {
            what: "kill",
            pid: self.pid,
            error: source,
        })?;
        c.wait().map_err(|source| VmError::Process {
            what: "wait for",
            pid: self.pid,
            error: source,
        })
    }

    fn join_readers(&self) {
        let handles: Vec<_> =
            std::mem::take(&mut *self.readers.lock().unwrap_or_else(|p| p.into_inner()));
        for h in handles {
            let _ = h.join();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.kill();
        self.join_readers();
        let _ = fs::remove_dir_all(&self.runtime_dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_can_be_shared_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Vm>();
    }
}
