//! The per-service task: feeds the [`Machine`] its inputs, carries out its
//! actions (spawn, stop signal, kill, restart timer), opens the `wait_for`
//! gate and records state changes into the service's snapshot.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::{mpsc, watch};

use super::spawn::spawn;
use super::{lock, micros, Event, Inner, LastExit, Service, EVENTS_KEPT};
use crate::config::WaitFor;
use crate::policy::{Action, ExitStatus, Input, Machine, State};
use crate::time::rfc3339;

/// Sends `GateOpen` once the service's `wait_for` conditions hold.
pub(super) async fn gate(
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
pub(super) async fn run_service(
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
