//! The tokio driver: spawns processes, reaps them, runs timers, feeds [`crate::policy::Machine`].
//!
//! This file owns the [`Supervisor`] handle, its options, errors and the
//! status snapshots; `service.rs` the per-service task, `spawn.rs` process
//! start and output pumps, `reap.rs` the SIGCHLD reaper.
//!
//! Reaping is done here, not by `tokio::process`: one task waits for SIGCHLD
//! and calls `waitpid` while holding the pid table lock, and every spawn also
//! holds that lock from fork until the pid is in the table. So an exit status
//! always reaches the service it belongs to, even when the reaper collects
//! orphans with `waitpid(-1)` as PID 1 or a subreaper
//! ([`SupervisorOptions::reap_orphans`]). With `reap_orphans` off, only the
//! supervisor's own children are waited for, by pid, so an embedding program
//! can still run its own child processes.

mod reap;
mod service;
mod spawn;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::config::{ServiceConfig, StartMode};
use crate::logbuf::{LogBuffer, Stream};
use crate::policy::{Input, State};
use crate::time::rfc3339;

use reap::reaper;
pub use service::has_non_loopback_address;
use service::{gate, run_service};
pub use spawn::{raise_nofile_limit, SERVICE_NOFILE};

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
