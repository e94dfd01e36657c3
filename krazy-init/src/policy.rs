//! The restart policy as a pure state machine: inputs and time in, actions out.
//!
//! [`Machine`] decides what happens to one service; it never touches a process,
//! a clock or a timer. The driver in [`crate::supervisor`] feeds it events
//! (a start request, a process exit, a timer firing) with the current
//! [`Instant`] and carries out the [`Action`]s it returns. Tests drive it with
//! made-up instants, so the backoff rules are checked without processes.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A service's state, spelled as the JSON API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Wanted to run: waiting for its `wait_for` conditions or being spawned.
    Starting,
    /// The process runs (also while it is being stopped, until it exits).
    Running,
    /// Waiting to restart after a failure.
    Backoff,
    /// Stopped by request, or a manual service that was not started.
    Stopped,
    /// Ended and not to be restarted: exit 0, exit 125, or restart `never`.
    Exited,
}

impl State {
    /// The lower-case name used by the API and the HTML pages.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Backoff => "backoff",
            State::Stopped => "stopped",
            State::Exited => "exited",
        }
    }
}

/// When a service that ended is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// After every exit, even exit 0 (never after exit 125).
    Always,
    /// After a non-zero exit or a death by signal (the default).
    #[default]
    OnFailure,
    /// Never: any exit ends in `exited`.
    Never,
}

/// Exponential backoff between automatic restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay (default 100 ms).
    pub initial: Duration,
    /// The largest delay; doubling stops here (default 30 s).
    pub max: Duration,
    /// A run at least this long resets the delay to `initial` (default 60 s).
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        }
    }
}

/// How a process ended, as the reaper saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It called exit with this code.
    Code(i32),
    /// A signal (by number) killed it.
    Signal(i32),
    /// It could not be started at all (exec failed, working dir missing...).
    SpawnFailed,
}

/// The exit code by which a program asks not to be supervised (gokrazy's convention).
pub const DO_NOT_SUPERVISE: i32 = 125;

/// An input to the [`Machine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A start request (API, boot start, or embedding code).
    Start,
    /// A stop request.
    Stop,
    /// A restart request: stop if running, then start.
    Restart,
    /// The `wait_for` conditions are met (or there are none).
    GateOpen,
    /// The driver spawned the process with this pid.
    Spawned(u32),
    /// The service's main process ended (or could not be spawned).
    Exited(ExitStatus),
    /// The restart timer with this token fired.
    RestartTimer(u64),
    /// The kill timer (grace period over) with this token fired.
    KillTimer(u64),
}

/// What the driver must do after an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Spawn the process now.
    Spawn,
    /// Send the stop signal to the process group and arm a kill timer.
    SignalStop {
        /// Token to hand back in [`Input::KillTimer`].
        kill_token: u64,
    },
    /// Send SIGKILL to the process group.
    Kill,
    /// Arm a restart timer.
    ArmRestart {
        /// How long to wait.
        delay: Duration,
        /// Token to hand back in [`Input::RestartTimer`].
        token: u64,
    },
}

/// The decision state of one service.
#[derive(Debug, Clone)]
pub struct Machine {
    restart: Restart,
    backoff: Backoff,
    state: State,
    gate_open: bool,
    next_delay: Duration,
    started_at: Option<Instant>,
    pid: Option<u32>,
    stopping: bool,
    restart_after_stop: bool,
    restarts: u64,
    auto_restart_pending: bool,
    token: u64,
    last_exit: Option<ExitStatus>,
}

impl Machine {
    /// A machine for a service that has not been started (state `stopped`).
    pub fn new(restart: Restart, backoff: Backoff) -> Self {
        Machine {
            restart,
            backoff,
            state: State::Stopped,
            gate_open: false,
            next_delay: backoff.initial,
            started_at: None,
            pid: None,
            stopping: false,
            restart_after_stop: false,
            restarts: 0,
            auto_restart_pending: false,
            token: 0,
            last_exit: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The pid of the running process, if any.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// How many automatic restarts happened (manual starts do not count).
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// How the last run ended.
    pub fn last_exit(&self) -> Option<ExitStatus> {
        self.last_exit
    }

    /// The delay the next automatic restart would wait.
    pub fn next_delay(&self) -> Duration {
        self.next_delay
    }

    /// Whether a stop was requested and the process has not exited yet.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    fn next_token(&mut self) -> u64 {
        self.token += 1;
        self.token
    }

    fn begin_start(&mut self) -> Vec<Action> {
        self.state = State::Starting;
        if self.gate_open {
            vec![Action::Spawn]
        } else {
            Vec::new()
        }
    }

    /// Feeds one input at time `now`; returns what the driver must do, in order.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        match input {
            Input::Start => match self.state {
                State::Stopped | State::Exited | State::Backoff => {
                    // A manual start is a fresh start: the backoff begins anew.
                    self.next_delay = self.backoff.initial;
                    self.auto_restart_pending = false;
                    self.next_token(); // invalidates a pending restart timer
                    self.begin_start()
                }
                State::Running if self.stopping => {
                    self.restart_after_stop = true;
                    Vec::new()
                }
                State::Running | State::Starting => Vec::new(),
            },
            Input::Stop => match self.state {
                State::Running => {
                    self.restart_after_stop = false;
                    if self.stopping {
                        return Vec::new();
                    }
                    self.stopping = true;
                    let kill_token = self.next_token();
                    vec![Action::SignalStop { kill_token }]
                }
                State::Starting | State::Backoff => {
                    self.next_token();
                    self.auto_restart_pending = false;
                    self.state = State::Stopped;
                    Vec::new()
                }
                State::Stopped | State::Exited => Vec::new(),
            },
            Input::Restart => match self.state {
                State::Running => {
                    self.restart_after_stop = true;
                    if self.stopping {
                        return Vec::new();
                    }
                    self.stopping = true;
                    let kill_token = self.next_token();
                    vec![Action::SignalStop { kill_token }]
                }
                _ => self.handle(Input::Start, now),
            },
            Input::GateOpen => {
                let was_open = self.gate_open;
                self.gate_open = true;
                if !was_open && self.state == State::Starting {
                    vec![Action::Spawn]
                } else {
                    Vec::new()
                }
            }
            Input::Spawned(pid) => {
                if self.auto_restart_pending {
                    self.restarts += 1;
                    self.auto_restart_pending = false;
                }
                self.state = State::Running;
                self.pid = Some(pid);
                self.started_at = Some(now);
                self.stopping = false;
                Vec::new()
            }
            Input::Exited(status) => self.exited(status, now),
            Input::RestartTimer(token) => {
                if token == self.token && self.state == State::Backoff {
                    self.begin_start()
                } else {
                    Vec::new()
                }
            }
            Input::KillTimer(token) => {
                if token == self.token && self.state == State::Running && self.stopping {
                    vec![Action::Kill]
                } else {
                    Vec::new()
                }
            }
        }
    }

    fn exited(&mut self, status: ExitStatus, now: Instant) -> Vec<Action> {
        let ran = self
            .started_at
            .map(|s| now.saturating_duration_since(s))
            .unwrap_or_default();
        let was_running = self.state == State::Running;
        self.pid = None;
        self.started_at = None;
        self.last_exit = Some(status);
        if !was_running && status != ExitStatus::SpawnFailed {
            return Vec::new();
        }
        self.next_token(); // invalidates a pending kill timer
        if self.stopping {
            self.stopping = false;
            if std::mem::take(&mut self.restart_after_stop) {
                self.next_delay = self.backoff.initial;
                return self.begin_start();
            }
            self.state = State::Stopped;
            return Vec::new();
        }
        if ran >= self.backoff.reset_after {
            self.next_delay = self.backoff.initial;
        }
        let restart = match status {
            ExitStatus::Code(DO_NOT_SUPERVISE) => false,
            ExitStatus::Code(0) => self.restart == Restart::Always,
            _ => self.restart != Restart::Never,
        };
        if !restart {
            self.state = State::Exited;
            return Vec::new();
        }
        let delay = self.next_delay;
        self.next_delay = (delay * 2).min(self.backoff.max);
        self.state = State::Backoff;
        self.auto_restart_pending = true;
        let token = self.next_token();
        vec![Action::ArmRestart { delay, token }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn running(m: &mut Machine, t: Instant) {
        assert_eq!(m.handle(Input::GateOpen, t), vec![]);
        assert_eq!(m.handle(Input::Start, t), vec![Action::Spawn]);
        m.handle(Input::Spawned(42), t);
        assert_eq!(m.state(), State::Running);
    }

    fn delay_of(actions: &[Action]) -> Duration {
        match actions {
            [Action::ArmRestart { delay, .. }] => *delay,
            other => panic!("expected one ArmRestart, got {other:?}"),
        }
    }

    #[test]
    fn crash_loop_doubles_to_the_cap_and_counts_restarts() {
        let backoff = Backoff {
            initial: ms(100),
            max: ms(1000),
            reset_after: Duration::from_secs(60),
        };
        let mut m = Machine::new(Restart::OnFailure, backoff);
        let mut t = Instant::now();
        running(&mut m, t);
        let mut delays = Vec::new();
        for _ in 0..6 {
            let a = m.handle(Input::Exited(ExitStatus::Code(1)), t);
            assert_eq!(m.state(), State::Backoff);
            let d = delay_of(&a);
            delays.push(d.as_millis());
            let token = match a[0] {
                Action::ArmRestart { token, .. } => token,
                _ => unreachable!(),
            };
            t += d;
            assert_eq!(m.handle(Input::RestartTimer(token), t), vec![Action::Spawn]);
            assert_eq!(m.state(), State::Starting);
            m.handle(Input::Spawned(43), t);
        }
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(m.restarts(), 6);
    }

    #[test]
    fn a_stable_run_resets_the_backoff() {
        let mut m = Machine::new(Restart::OnFailure, Backoff::default());
        let t0 = Instant::now();
        running(&mut m, t0);
        let a = m.handle(Input::Exited(ExitStatus::Signal(11)), t0);
        assert_eq!(delay_of(&a), ms(100));
        let token = match a[0] {
            Action::ArmRestart { token, .. } => token,
            _ => unreachable!(),
        };
        m.handle(Input::RestartTimer(token), t0 + ms(100));
        m.handle(Input::Spawned(7), t0 + ms(100));
        // Crashes after 1 s: doubled.
        let a = m.handle(Input::Exited(ExitStatus::Code(2)), t0 + ms(1100));
        assert_eq!(delay_of(&a), ms(200));
        let token = match a[0] {
            Action::ArmRestart { token, .. } => token,
            _ => unreachable!(),
        };
        m.handle(Input::RestartTimer(token), t0 + ms(1300));
        m.handle(Input::Spawned(8), t0 + ms(1300));
        // Runs 61 s: reset.
        let a = m.handle(Input::Exited(ExitStatus::Code(2)), t0 + ms(62_300));
        assert_eq!(delay_of(&a), ms(100));
    }

    #[test]
    fn exit_codes_and_policies() {
        let t = Instant::now();
        for (restart, status, want) in [
            (Restart::OnFailure, ExitStatus::Code(0), State::Exited),
            (Restart::OnFailure, ExitStatus::Code(1), State::Backoff),
            (Restart::OnFailure, ExitStatus::Code(125), State::Exited),
            (Restart::Always, ExitStatus::Code(0), State::Backoff),
            (Restart::Always, ExitStatus::Code(125), State::Exited),
            (Restart::Never, ExitStatus::Code(1), State::Exited),
            (Restart::Never, ExitStatus::Signal(9), State::Exited),
            (Restart::OnFailure, ExitStatus::Signal(9), State::Backoff),
        ] {
            let mut m = Machine::new(restart, Backoff::default());
            running(&mut m, t);
            m.handle(Input::Exited(status), t);
            assert_eq!(m.state(), want, "{restart:?} {status:?}");
            assert_eq!(m.last_exit(), Some(status));
        }
    }

    #[test]
    fn spawn_failure_backs_off() {
        let mut m = Machine::new(Restart::OnFailure, Backoff::default());
        let t = Instant::now();
        m.handle(Input::GateOpen, t);
        m.handle(Input::Start, t);
        let a = m.handle(Input::Exited(ExitStatus::SpawnFailed), t);
        assert_eq!(delay_of(&a), ms(100));
        assert_eq!(m.state(), State::Backoff);
    }

    #[test]
    fn stop_signals_then_kills_after_grace_and_ends_stopped() {
        let mut m = Machine::new(Restart::Always, Backoff::default());
        let t = Instant::now();
        running(&mut m, t);
        let a = m.handle(Input::Stop, t);
        let kill_token = match a.as_slice() {
            [Action::SignalStop { kill_token }] => *kill_token,
            other => panic!("{other:?}"),
        };
        assert_eq!(m.state(), State::Running);
        assert!(m.is_stopping());
        // A second stop does not signal again.
        assert_eq!(m.handle(Input::Stop, t), vec![]);
        assert_eq!(
            m.handle(Input::KillTimer(kill_token), t),
            vec![Action::Kill]
        );
        assert_eq!(m.handle(Input::Exited(ExitStatus::Signal(9)), t), vec![]);
        assert_eq!(m.state(), State::Stopped);
        // A late kill timer does nothing.
        assert_eq!(m.handle(Input::KillTimer(kill_token), t), vec![]);
    }

    #[test]
    fn restart_while_running_starts_again_after_exit() {
        let mut m = Machine::new(Restart::OnFailure, Backoff::default());
        let t = Instant::now();
        running(&mut m, t);
        assert!(matches!(
            m.handle(Input::Restart, t).as_slice(),
            [Action::SignalStop { .. }]
        ));
        assert_eq!(
            m.handle(Input::Exited(ExitStatus::Signal(15)), t),
            vec![Action::Spawn]
        );
        assert_eq!(m.state(), State::Starting);
        assert_eq!(
            m.restarts(),
            0,
            "a requested restart is not a crash restart"
        );
    }

    #[test]
    fn stop_during_backoff_cancels_the_timer() {
        let mut m = Machine::new(Restart::OnFailure, Backoff::default());
        let t = Instant::now();
        running(&mut m, t);
        let a = m.handle(Input::Exited(ExitStatus::Code(3)), t);
        let token = match a[0] {
            Action::ArmRestart { token, .. } => token,
            _ => unreachable!(),
        };
        m.handle(Input::Stop, t);
        assert_eq!(m.state(), State::Stopped);
        assert_eq!(m.handle(Input::RestartTimer(token), t + ms(100)), vec![]);
        assert_eq!(m.state(), State::Stopped);
    }

    #[test]
    fn start_waits_for_the_gate() {
        let mut m = Machine::new(Restart::OnFailure, Backoff::default());
        let t = Instant::now();
        assert_eq!(m.handle(Input::Start, t), vec![]);
        assert_eq!(m.state(), State::Starting);
        assert_eq!(m.handle(Input::GateOpen, t), vec![Action::Spawn]);
        assert_eq!(m.handle(Input::GateOpen, t), vec![]);
    }
}
