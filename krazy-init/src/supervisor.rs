//! The tokio driver: spawns processes, reaps them, runs timers, feeds [`policy::Machine`].
//!
//! Reaping is done here, not by `tokio::process`: one task waits for SIGCHLD
//! and calls `waitpid` while holding the pid table lock, and every spawn also
//! holds that lock from fork until the pid is in the table. So an exit status
//! always reaches the service it belongs to, even when the reaper collects
//! orphans with `waitpid(-1)` as PID 1 or a subreaper
//! ([`SupervisorOptions::reap_orphans`]). With `reap_orphans` off, only the
//! supervisor's own children are waited for, by pid, so an embedding program
//! can still run its own child processes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};

use crate::config::{ServiceConfig, StartMode, WaitFor};
use crate::logbuf::{LineSplitter, LogBuffer, Stream};
use crate::policy::{Action, ExitStatus, Input, Machine, State};
use crate::time::rfc3339;

/// Errors of the supervisor.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// No service has this name.
    #[error("no service is named {0:?}")]
    NoSuchService(String),
    /// A service with this name was already added.
    #[error("a service named {0:?} already exists")]
    Duplicate(String),
    /// The service configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// SIGCHLD handling could not be set up (no tokio runtime with signals?).
    #[error("cannot install the SIGCHLD handler: {0}")]
    Signal(std::io::Error),
    /// Becoming a child subreaper failed.
    #[error("cannot become a child subreaper: {0}")]
    Subreaper(Errno),
}

/// How the supervisor runs.
#[derive(Debug, Clone, Default)]
pub struct SupervisorOptions {
    /// Base of per-service home directories (`/perm/home` on a device); each
    /// service gets `<home_base>/<name>` (mode 0700) as cwd and `HOME` when it
    /// can be created, and runs in the supervisor's cwd otherwise.
    pub home_base: Option<PathBuf>,
    /// Reap every child with `waitpid(-1)`, orphans included (PID 1, subreaper).
    pub reap_orphans: bool,
    /// Call `prctl(PR_SET_CHILD_SUBREAPER)` so orphans of services come to us.
    pub subreaper: bool,
}

/// Number of state-change events kept per service.
pub const EVENTS_KEPT: usize = 64;

/// A state change with its time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// RFC 3339 time with microseconds.
    pub at: String,
    /// Microseconds since the Unix epoch (for arithmetic).
    pub at_us: u64,
    /// The new state.
    pub state: State,
}

/// How the last run ended, for the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastExit {
    /// The exit code, or null when killed by a signal or not started.
    pub code: Option<i32>,
    /// The signal number, or null.
    pub signal: Option<i32>,
    /// When it ended (RFC 3339).
    pub at: String,
}

/// A snapshot of one service, as the JSON API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceStatus {
    /// The name.
    pub name: String,
    /// The program.
    pub path: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The state.
    pub state: State,
    /// The pid while running.
    pub pid: Option<u32>,
    /// Automatic restarts so far.
    pub restarts: u64,
    /// When the current run started (RFC 3339).
    pub started_at: Option<String>,
    /// Seconds the current run has lasted.
    pub uptime_seconds: Option<u64>,
    /// How the last run ended.
    pub last_exit: Option<LastExit>,
    /// The newest state changes, oldest first.
    pub events: Vec<Event>,
}

/// The two output ring buffers of a service.
pub struct ServiceLogs {
    /// Standard output.
    pub stdout: LogBuffer,
    /// Standard error.
    pub stderr: LogBuffer,
}

struct Snapshot {
    state: State,
    pid: Option<u32>,
    restarts: u64,
    started_at: Option<SystemTime>,
    last_exit: Option<LastExit>,
    events: VecDeque<Event>,
}

struct Service {
    config: ServiceConfig,
    logs: Arc<ServiceLogs>,
    tx: mpsc::UnboundedSender<Input>,
    snap: Mutex<Snapshot>,
    state: watch::Sender<State>,
}

struct Inner {
    options: SupervisorOptions,
    services: Mutex<BTreeMap<String, Arc<Service>>>,
    pids: Mutex<HashMap<u32, Arc<Service>>>,
    clock: watch::Sender<bool>,
    network: watch::Sender<bool>,
    orphans_reaped: AtomicU64,
}

/// A handle to the supervisor; cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Supervisor {
    /// Creates a supervisor and its reaper task; call inside a tokio runtime.
    pub fn new(options: SupervisorOptions) -> Result<Self, SupervisorError> {
        if options.subreaper {
            nix::sys::prctl::set_child_subreaper(true).map_err(SupervisorError::Subreaper)?;
        }
        let sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
            .map_err(SupervisorError::Signal)?;
        let inner = Arc::new(Inner {
            options,
            services: Mutex::new(BTreeMap::new()),
            pids: Mutex::new(HashMap::new()),
            clock: watch::channel(false).0,
            network: watch::channel(false).0,
            orphans_reaped: AtomicU64::new(0),
        });
        tokio::spawn(reaper(Arc::downgrade(&inner), sigchld));
        Ok(Supervisor { inner })
    }

    /// Adds a service (state `stopped`); [`Supervisor::boot`] or [`Supervisor::start`] runs it.
    pub fn add(&self, config: ServiceConfig) -> Result<(), SupervisorError> {
        config.validate()?;
        let mut services = lock(&self.inner.services);
        if services.contains_key(&config.name) {
            return Err(SupervisorError::Duplicate(config.name));
        }
        let seq = Arc::new(AtomicU64::new(0));
        let logs = Arc::new(ServiceLogs {
            stdout: LogBuffer::new(
                Stream::Stdout,
                config.log_lines,
                config.log_bytes,
                seq.clone(),
            ),
            stderr: LogBuffer::new(Stream::Stderr, config.log_lines, config.log_bytes, seq),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let svc = Arc::new(Service {
            config: config.clone(),
            logs,
            tx,
            snap: Mutex::new(Snapshot {
                state: State::Stopped,
                pid: None,
                restarts: 0,
                started_at: None,
                last_exit: None,
                events: VecDeque::new(),
            }),
            state: watch::channel(State::Stopped).0,
        });
        services.insert(config.name.clone(), svc.clone());
        tokio::spawn(gate(
            svc.clone(),
            self.inner.clock.subscribe(),
            self.inner.network.subscribe(),
        ));
        tokio::spawn(run_service(Arc::downgrade(&self.inner), svc, rx));
        Ok(())
    }

    fn service(&self, name: &str) -> Result<Arc<Service>, SupervisorError> {
        lock(&self.inner.services)
            .get(name)
            .cloned()
            .ok_or_else(|| SupervisorError::NoSuchService(name.to_owned()))
    }

    fn send(&self, name: &str, input: Input) -> Result<(), SupervisorError> {
        let _ = self.service(name)?.tx.send(input);
        Ok(())
    }

    /// Starts every service whose start mode is `boot`.
    pub fn boot(&self) {
        for svc in lock(&self.inner.services).values() {
            if svc.config.start == StartMode::Boot {
                let _ = svc.tx.send(Input::Start);
            }
        }
    }

    /// Starts a service (a no-op when it runs).
    pub fn start(&self, name: &str) -> Result<(), SupervisorError> {
        self.send(name, Input::Start)
    }

    /// Stops a service: stop signal to its group, SIGKILL after the grace period.
    pub fn stop(&self, name: &str) -> Result<(), SupervisorError> {
        self.send(name, Input::Stop)
    }

    /// Restarts a service (stop, then start), or starts it when it is not running.
    pub fn restart(&self, name: &str) -> Result<(), SupervisorError> {
        self.send(name, Input::Restart)
    }

    /// The names of all services, sorted.
    pub fn names(&self) -> Vec<String> {
        lock(&self.inner.services).keys().cloned().collect()
    }

    /// The configuration of a service.
    pub fn config(&self, name: &str) -> Option<ServiceConfig> {
        self.service(name).ok().map(|s| s.config.clone())
    }

    /// The output buffers of a service.
    pub fn logs(&self, name: &str) -> Option<Arc<ServiceLogs>> {
        self.service(name).ok().map(|s| s.logs.clone())
    }

    /// A snapshot of one service.
    pub fn status(&self, name: &str) -> Option<ServiceStatus> {
        self.service(name).ok().map(|s| status_of(&s))
    }

    /// Snapshots of every service, sorted by name.
    pub fn list(&self) -> Vec<ServiceStatus> {
        let services: Vec<_> = lock(&self.inner.services).values().cloned().collect();
        services.iter().map(|s| status_of(s)).collect()
    }

    /// Waits until the service's state satisfies `pred` or `timeout` passes; returns the last state.
    pub async fn wait_for_state(
        &self,
        name: &str,
        timeout: Duration,
        pred: impl Fn(State) -> bool,
    ) -> Result<State, SupervisorError> {
        let mut rx = self.service(name)?.state.subscribe();
        let res = tokio::time::timeout(timeout, rx.wait_for(|s| pred(*s)))
            .await
            .ok()
            .and_then(|r| r.ok().map(|s| *s));
        Ok(res.unwrap_or_else(|| *rx.borrow()))
    }

    /// Reports whether the clock is synchronised (opens `wait_for = ["clock"]`).
    pub fn notify_clock(&self, synchronized: bool) {
        self.inner.clock.send_replace(synchronized);
    }

    /// Reports that an interface has addresses (opens `wait_for = ["network"]` when any is
    /// not a loopback address).
    pub fn notify_network(&self, addresses: &[std::net::IpAddr]) {
        if addresses.iter().any(|a| !a.is_loopback()) {
            self.inner.network.send_replace(true);
        }
    }

    /// Whether the clock was reported synchronised.
    pub fn clock_synchronized(&self) -> bool {
        *self.inner.clock.borrow()
    }

    /// How many processes that were not services' main processes were reaped.
    pub fn orphans_reaped(&self) -> u64 {
        self.inner
            .orphans_reaped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops every service and waits until none runs (each gets its grace period).
    pub async fn shutdown(&self) {
        let services: Vec<_> = lock(&self.inner.services).values().cloned().collect();
        for s in &services {
            let _ = s.tx.send(Input::Stop);
        }
        for s in &services {
            let mut rx = s.state.subscribe();
            let grace = s.config.grace_period + Duration::from_secs(5);
            let _ = tokio::time::timeout(
                grace,
                rx.wait_for(|st| !matches!(st, State::Running | State::Starting)),
            )
            .await;
        }
    }
}

fn status_of(s: &Service) -> ServiceStatus {
    let snap = lock(&s.snap);
    ServiceStatus {
        name: s.config.name.clone(),
        path: s.config.path.display().to_string(),
        args: s.config.args.clone(),
        state: snap.state,
        pid: snap.pid,
        restarts: snap.restarts,
        started_at: snap.started_at.map(rfc3339),
        uptime_seconds: snap
            .started_at
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .map(|d| d.as_secs()),
        last_exit: snap.last_exit.clone(),
        events: snap.events.iter().cloned().collect(),
    }
}

/// Sends `GateOpen` once the service's `wait_for` conditions hold.
async fn gate(
    svc: Arc<Service>,
    mut clock: watch::Receiver<bool>,
    mut network: watch::Receiver<bool>,
) {
    if svc.config.wait_for.contains(&WaitFor::Clock) && clock.wait_for(|c| *c).await.is_err() {
        return;
    }
    if svc.config.wait_for.contains(&WaitFor::Network) {
        loop {
            if *network.borrow() || has_non_loopback_address() {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(1), network.changed()).await {
                Ok(Err(_)) => return,
                _ => continue,
            }
        }
    }
    let _ = svc.tx.send(Input::GateOpen);
}

/// Whether any interface has an address that is not loopback (nor IPv6 link-local).
pub fn has_non_loopback_address() -> bool {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return false;
    };
    addrs.into_iter().any(|ifa| {
        let Some(a) = ifa.address else { return false };
        if let Some(v4) = a.as_sockaddr_in() {
            !v4.ip().is_loopback()
        } else if let Some(v6) = a.as_sockaddr_in6() {
            let ip = v6.ip();
            !ip.is_loopback() && (ip.segments()[0] & 0xffc0) != 0xfe80
        } else {
            false
        }
    })
}

/// The per-service task: feeds inputs to the machine and performs its actions.
async fn run_service(
    inner: std::sync::Weak<Inner>,
    svc: Arc<Service>,
    mut rx: mpsc::UnboundedReceiver<Input>,
) {
    let mut machine = Machine::new(svc.config.restart, svc.config.backoff);
    let mut queue: VecDeque<Input> = VecDeque::new();
    while let Some(input) = rx.recv().await {
        queue.push_back(input);
        while let Some(input) = queue.pop_front() {
            let before = machine.state();
            let actions = machine.handle(input, Instant::now());
            record(&svc, &machine, before, input);
            for action in actions {
                match action {
                    Action::Spawn => {
                        let Some(inner) = inner.upgrade() else { return };
                        match spawn(&inner, &svc) {
                            Ok(pid) => queue.push_back(Input::Spawned(pid)),
                            Err(e) => {
                                svc.logs.stderr.push(&format!(
                                    "[krazy: cannot start {}: {e}]",
                                    svc.config.path.display()
                                ));
                                tracing::warn!(service = %svc.config.name, "cannot start: {e}");
                                queue.push_back(Input::Exited(ExitStatus::SpawnFailed));
                            }
                        }
                    }
                    Action::SignalStop { kill_token } => {
                        if let Some(pid) = machine.pid() {
                            signal_group(pid, svc.config.stop_signal);
                        }
                        let tx = svc.tx.clone();
                        let grace = svc.config.grace_period;
                        tokio::spawn(async move {
                            tokio::time::sleep(grace).await;
                            let _ = tx.send(Input::KillTimer(kill_token));
                        });
                    }
                    Action::Kill => {
                        if let Some(pid) = machine.pid() {
                            svc.logs
                                .stderr
                                .push("[krazy: grace period over, sending SIGKILL]");
                            signal_group(pid, Signal::SIGKILL);
                        }
                    }
                    Action::ArmRestart { delay, token } => {
                        let tx = svc.tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = tx.send(Input::RestartTimer(token));
                        });
                    }
                }
            }
        }
    }
}

fn signal_group(pid: u32, sig: Signal) {
    if let Ok(p) = i32::try_from(pid) {
        // ESRCH (the group is gone already) is fine.
        let _ = killpg(Pid::from_raw(p), sig);
    }
}

fn record(svc: &Service, m: &Machine, before: State, input: Input) {
    let now = SystemTime::now();
    let mut snap = lock(&svc.snap);
    snap.pid = m.pid();
    snap.restarts = m.restarts();
    if let Input::Spawned(_) = input {
        snap.started_at = Some(now);
    }
    if let Input::Exited(status) = input {
        if m.pid().is_none() {
            snap.started_at = None;
            let (code, signal) = match status {
                ExitStatus::Code(c) => (Some(c), None),
                ExitStatus::Signal(s) => (None, Some(s)),
                ExitStatus::SpawnFailed => (None, None),
            };
            snap.last_exit = Some(LastExit {
                code,
                signal,
                at: rfc3339(now),
            });
        }
    }
    let after = m.state();
    if after != before {
        snap.state = after;
        if snap.events.len() >= EVENTS_KEPT {
            snap.events.pop_front();
        }
        snap.events.push_back(Event {
            at: rfc3339(now),
            at_us: micros(now),
            state: after,
        });
        tracing::info!(service = %svc.config.name, "{} -> {}", before.as_str(), after.as_str());
        drop(snap);
        svc.state.send_replace(after);
    }
}

#[derive(Debug, thiserror::Error)]
enum SpawnError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the kernel gave a pid that does not fit: {0}")]
    Pid(u32),
}

/// The soft `RLIMIT_NOFILE` services start with (the usual Linux default).
pub const SERVICE_NOFILE: u64 = 1024;

/// Raises this process's `RLIMIT_NOFILE`: the hard limit to at least
/// `want_hard` when allowed (PID 1 may; `None` keeps it), and the soft
/// limit to the hard one. Returns the soft limit now in force. Services
/// spawned afterwards still get [`SERVICE_NOFILE`] as their soft limit.
pub fn raise_nofile_limit(want_hard: Option<u64>) -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return SERVICE_NOFILE;
    };
    if let Some(want) = want_hard.filter(|&w| w > hard) {
        if setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
            return want;
        }
    }
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// Spawns the service's process in its own session and process group.
fn spawn(inner: &Inner, svc: &Arc<Service>) -> Result<u32, SpawnError> {
    let c = &svc.config;
    let mut cmd = Command::new(&c.path);
    cmd.args(&c.args)
        .envs(&c.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = &c.working_dir {
        cmd.current_dir(dir);
    } else if let Some(base) = &inner.options.home_base {
        let home = base.join(&c.name);
        match std::fs::create_dir_all(&home)
            .and_then(|_| std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)))
        {
            Ok(()) => {
                cmd.current_dir(&home);
                if !c.env.contains_key("HOME") {
                    cmd.env("HOME", &home);
                }
            }
            Err(e) => {
                tracing::info!(service = %c.name, "no home directory {}: {e}", home.display());
            }
        }
    }
    // Services get the ordinary soft descriptor limit back (PID 1 raises
    // its own, see [`raise_nofile_limit`]); the hard limit stays.
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .filter(|&(soft, _)| soft > SERVICE_NOFILE)
        .map(|(_, hard)| hard);
    // SAFETY: the closure runs in the forked child before exec and only calls
    // setsid(2) and setrlimit(2), which are async-signal-safe, with values
    // computed before the fork; it touches no other memory of ours.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if let Some(hard) = nofile {
                nix::sys::resource::setrlimit(
                    nix::sys::resource::Resource::RLIMIT_NOFILE,
                    SERVICE_NOFILE,
                    hard,
                )
                .map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
    // Hold the pid table from fork until the pid is in it: the reaper takes
    // the same lock before any waitpid, so it can neither steal this child's
    // status before we know the pid, nor race std's own wait after a failed exec.
    let mut pids = lock(&inner.pids);
    let mut child = cmd.spawn()?;
    let pid = child.id();
    pids.insert(pid, svc.clone());
    drop(pids);
    if i32::try_from(pid).is_err() {
        return Err(SpawnError::Pid(pid));
    }
    // `child` is dropped without wait(): the reaper owns its exit status.
    if let Some(out) = child.stdout.take() {
        pump(OwnedFd::from(out), svc.logs.clone(), Stream::Stdout);
    }
    if let Some(err) = child.stderr.take() {
        pump(OwnedFd::from(err), svc.logs.clone(), Stream::Stderr);
    }
    Ok(pid)
}

/// Copies a pipe into a ring buffer until EOF.
fn pump(fd: OwnedFd, logs: Arc<ServiceLogs>, stream: Stream) {
    let rx = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
        Ok(rx) => rx,
        Err(e) => {
            tracing::warn!("cannot read a service's {}: {e}", stream.as_str());
            return;
        }
    };
    tokio::spawn(async move {
        let mut rx = rx;
        let mut buf = vec![0u8; 16 * 1024];
        let mut split = LineSplitter::default();
        let target = match stream {
            Stream::Stdout => &logs.stdout,
            Stream::Stderr => &logs.stderr,
        };
        loop {
            match rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => split.feed(buf.get(..n).unwrap_or_default(), |l| target.push(l)),
            }
        }
        split.finish(|l| target.push(l));
    });
}

/// Waits for SIGCHLD and routes exit statuses; also sweeps once a second.
async fn reaper(inner: std::sync::Weak<Inner>, mut sigchld: tokio::signal::unix::Signal) {
    loop {
        tokio::select! {
            _ = sigchld.recv() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        reap(&inner);
    }
}

fn exit_of(ws: WaitStatus) -> Option<(Pid, ExitStatus)> {
    match ws {
        WaitStatus::Exited(pid, code) => Some((pid, ExitStatus::Code(code))),
        WaitStatus::Signaled(pid, sig, _) => Some((pid, ExitStatus::Signal(sig as i32))),
        _ => None,
    }
}

fn reap(inner: &Inner) {
    let mut pids = lock(&inner.pids);
    if inner.options.reap_orphans {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(ws) => {
                    let Some((pid, status)) = exit_of(ws) else {
                        continue;
                    };
                    let key = u32::try_from(pid.as_raw()).unwrap_or(0);
                    match pids.remove(&key) {
                        Some(svc) => {
                            let _ = svc.tx.send(Input::Exited(status));
                        }
                        None => {
                            inner
                                .orphans_reaped
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tracing::debug!("reaped orphan {pid}: {status:?}");
                        }
                    }
                }
            }
        }
    } else {
        let mine: Vec<u32> = pids.keys().copied().collect();
        for key in mine {
            let Ok(raw) = i32::try_from(key) else {
                continue;
            };
            if let Ok(ws) = waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG)) {
                if let Some((_, status)) = exit_of(ws) {
                    if let Some(svc) = pids.remove(&key) {
                        let _ = svc.tx.send(Input::Exited(status));
                    }
                }
            }
        }
    }
}
