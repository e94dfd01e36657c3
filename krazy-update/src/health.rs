//! The health gate of a trial boot as a sans-IO state machine: the driver
//! feeds it service states, health check results and the time since boot;
//! it answers commit, roll back (with a reason and the failing service's
//! last log lines) or wait.
//!
//! Rule: commit only when every boot service has been running for
//! `settle` and every configured check's latest result passed; past
//! `deadline` roll back, naming the first thing that is not healthy. A boot
//! service that the supervisor restarted `fail_after_restarts` times before
//! the trial settled is crash-looping: roll back at once, without waiting
//! for the deadline (a service that is merely slow to start still gets it).
//!
//! ```
//! use std::time::Duration;
//! use krazy_update::health::*;
//! let mut g = HealthGate::new(
//!     HealthConfig { settle: Duration::from_secs(30), deadline: Duration::from_secs(120), fail_after_restarts: 3 },
//!     ["hello"],
//!     ["http"],
//! );
//! g.service("hello", ServiceState::Running { since: Duration::ZERO }, vec![]);
//! g.check("http", Duration::from_secs(31), Ok(()));
//! assert_eq!(g.decide(Duration::from_secs(31)), Decision::Commit);
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

/// The gate's knobs (krazy.toml `[update]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// How long each boot service must have run (`settle_seconds`, default 30).
    pub settle: Duration,
    /// When to give up and roll back (`deadline_seconds`, default 180).
    pub deadline: Duration,
    /// Automatic restarts of one boot service that fail the trial at once
    /// (`fail_after_restarts`, default 3; 0 waits for the deadline).
    pub fail_after_restarts: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            settle: Duration::from_secs(30),
            deadline: Duration::from_secs(180),
            fail_after_restarts: 3,
        }
    }
}

/// A service's state as the supervisor reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceState {
    /// Not started yet (waiting for clock or network).
    Waiting,
    /// Running continuously since this time (since boot).
    Running {
        /// When its current run started.
        since: Duration,
    },
    /// Finished as it should (exit 0 under a no-restart policy, or 125).
    Done,
    /// Exited and not running now (crashed, backing off before a restart).
    Down {
        /// What happened (`exited with status 1`).
        why: String,
    },
}

/// What the gate decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Every service settled and every check passes: commit.
    Commit,
    /// Past the deadline and not healthy: record this and reboot.
    RollBack {
        /// A sentence for the status page and the client.
        reason: String,
        /// The failing service, when a service is to blame.
        service: Option<String>,
        /// That service's last log lines.
        log: Vec<String>,
    },
    /// Not yet healthy: ask again at `until` at the latest.
    Wait {
        /// When something may change by itself (a service settles, the deadline).
        until: Duration,
    },
}

#[derive(Debug, Clone)]
struct Service {
    state: ServiceState,
    log: Vec<String>,
    restarts: u64,
}

/// The gate. Feed it with [`HealthGate::service`] and
/// [`HealthGate::check`], ask [`HealthGate::decide`].
#[derive(Debug, Clone)]
pub struct HealthGate {
    cfg: HealthConfig,
    services: BTreeMap<String, Service>,
    checks: BTreeMap<String, Option<Result<(), String>>>,
}

impl HealthGate {
    /// A gate over the named boot services and health checks.
    pub fn new<S: Into<String>, C: Into<String>>(
        cfg: HealthConfig,
        services: impl IntoIterator<Item = S>,
        checks: impl IntoIterator<Item = C>,
    ) -> Self {
        HealthGate {
            cfg,
            services: services
                .into_iter()
                .map(|s| {
                    (
                        s.into(),
                        Service {
                            state: ServiceState::Waiting,
                            log: Vec::new(),
                            restarts: 0,
                        },
                    )
                })
                .collect(),
            checks: checks.into_iter().map(|c| (c.into(), None)).collect(),
        }
    }

    /// Reports a service's state and its latest log lines (unknown names
    /// are ignored: only boot services count).
    pub fn service(&mut self, name: &str, state: ServiceState, log: Vec<String>) {
        if let Some(s) = self.services.get_mut(name) {
            s.state = state;
            if !log.is_empty() {
                s.log = log;
            }
        }
    }

    /// Reports how many times the supervisor has restarted a boot service
    /// since boot (its automatic restarts; a smaller count than one already
    /// reported is ignored, unknown names too).
    pub fn restarts(&mut self, name: &str, restarts: u64) {
        if let Some(s) = self.services.get_mut(name) {
            s.restarts = s.restarts.max(restarts);
        }
    }

    /// Reports a check's result at `_now` (`Err` carries why it failed).
    pub fn check(&mut self, name: &str, _now: Duration, result: Result<(), String>) {
        if let Some(c) = self.checks.get_mut(name) {
            *c = Some(result);
        }
    }

    /// The decision at `now` (time since boot).
    pub fn decide(&mut self, now: Duration) -> Decision {
        let limit = self.cfg.fail_after_restarts;
        if let Some((name, s)) = self
            .services
            .iter()
            .find(|(_, s)| limit > 0 && s.restarts >= limit)
        {
            let why = match &s.state {
                ServiceState::Down { why } => format!(" (last: {why})"),
                _ => String::new(),
            };
            return Decision::RollBack {
                reason: format!(
                    "service {name} restarted {} times in {}s, before the trial settled \
                     (fail_after_restarts = {limit}){why}",
                    s.restarts,
                    now.as_secs()
                ),
                service: Some(name.clone()),
                log: s.log.clone(),
            };
        }
        let settle = self.cfg.settle;
        let mut wait_until = self.cfg.deadline;
        // The first unhealthy thing, for the reason.
        let mut blame: Option<(String, Option<String>)> = None;
        for (name, s) in &self.services {
            let problem = match &s.state {
                ServiceState::Done => None,
                ServiceState::Running { since } => {
                    let ready = since.saturating_add(settle);
                    if now >= ready {
                        None
                    } else {
                        wait_until = wait_until.min(ready);
                        Some(format!(
                            "service {name} has run for {}s, less than the {}s settle time",
                            now.saturating_sub(*since).as_secs(),
                            settle.as_secs()
                        ))
                    }
                }
                ServiceState::Waiting => Some(format!("service {name} never started")),
                ServiceState::Down { why } => Some(format!("service {name} is not running: {why}")),
            };
            if let (Some(p), None) = (problem, &blame) {
                blame = Some((p, Some(name.clone())));
            }
        }
        for (name, c) in &self.checks {
            let problem = match c {
                Some(Ok(())) => None,
                None => Some(format!("health check {name} has not answered")),
                Some(Err(e)) => Some(format!("health check {name} fails: {e}")),
            };
            if let (Some(p), None) = (problem, &blame) {
                blame = Some((p, None));
            }
        }
        match blame {
            None => Decision::Commit,
            Some((reason, service)) if now >= self.cfg.deadline => {
                let log = service
                    .as_ref()
                    .and_then(|s| self.services.get(s))
                    .map(|s| s.log.clone())
                    .unwrap_or_default();
                Decision::RollBack {
                    reason: format!(
                        "not healthy {}s after boot: {reason}",
                        self.cfg.deadline.as_secs()
                    ),
                    service,
                    log,
                }
            }
            Some(_) => Decision::Wait { until: wait_until },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn gate() -> HealthGate {
        HealthGate::new(
            HealthConfig {
                settle: s(30),
                deadline: s(120),
                fail_after_restarts: 3,
            },
            ["dhcp", "hello"],
            ["http"],
        )
    }

    #[test]
    fn commits_once_everything_settled_and_checks_pass() {
        let mut g = gate();
        g.service("dhcp", ServiceState::Running { since: s(1) }, vec![]);
        g.service("hello", ServiceState::Running { since: s(2) }, vec![]);
        assert_eq!(g.decide(s(10)), Decision::Wait { until: s(31) });
        g.check("http", s(20), Ok(()));
        assert_eq!(g.decide(s(31)), Decision::Wait { until: s(32) });
        assert_eq!(g.decide(s(32)), Decision::Commit);
    }

    #[test]
    fn a_restart_resets_the_settle_time() {
        let mut g = gate();
        g.check("http", s(1), Ok(()));
        g.service("dhcp", ServiceState::Done, vec![]);
        g.service("hello", ServiceState::Running { since: s(1) }, vec![]);
        g.service(
            "hello",
            ServiceState::Down {
                why: "exited with status 1".into(),
            },
            vec![],
        );
        g.service("hello", ServiceState::Running { since: s(25) }, vec![]);
        assert_eq!(g.decide(s(40)), Decision::Wait { until: s(55) });
        assert_eq!(g.decide(s(55)), Decision::Commit);
    }

    #[test]
    fn crash_loop_rolls_back_at_the_deadline_with_log_lines() {
        let mut g = gate();
        g.check("http", s(1), Ok(()));
        g.service("dhcp", ServiceState::Running { since: s(0) }, vec![]);
        let mut t = 0;
        while t < 119 {
            g.service("hello", ServiceState::Running { since: s(t) }, vec![]);
            g.service(
                "hello",
                ServiceState::Down {
                    why: "exited with status 1".into(),
                },
                vec!["HELLO_FAIL is set".into(), "exiting".into()],
            );
            assert!(matches!(g.decide(s(t + 1)), Decision::Wait { .. }));
            t += 7;
        }
        match g.decide(s(120)) {
            Decision::RollBack {
                reason,
                service,
                log,
            } => {
                assert!(
                    reason.contains("service hello is not running: exited with status 1"),
                    "{reason}"
                );
                assert_eq!(service.as_deref(), Some("hello"));
                assert_eq!(log, vec!["HELLO_FAIL is set".to_string(), "exiting".into()]);
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn three_restarts_roll_back_at_once() {
        let mut g = gate();
        g.check("http", s(1), Ok(()));
        g.service("dhcp", ServiceState::Running { since: s(0) }, vec![]);
        for n in 1..=3 {
            g.service(
                "hello",
                ServiceState::Down {
                    why: "exited with status 1".into(),
                },
                vec!["HELLO_FAIL is set".into()],
            );
            g.restarts("hello", n);
            if n < 3 {
                assert!(matches!(g.decide(s(n)), Decision::Wait { .. }));
            }
        }
        // Long before the 120 s deadline.
        match g.decide(s(3)) {
            Decision::RollBack {
                reason,
                service,
                log,
            } => {
                assert!(
                    reason.contains("service hello restarted 3 times"),
                    "{reason}"
                );
                assert!(reason.contains("exited with status 1"), "{reason}");
                assert_eq!(service.as_deref(), Some("hello"));
                assert_eq!(log, vec!["HELLO_FAIL is set".to_string()]);
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn two_restarts_then_settled_commits() {
        let mut g = gate();
        g.check("http", s(1), Ok(()));
        g.service("dhcp", ServiceState::Done, vec![]);
        g.service(
            "hello",
            ServiceState::Down {
                why: "exited with status 1".into(),
            },
            vec![],
        );
        g.restarts("hello", 2);
        g.service("hello", ServiceState::Running { since: s(5) }, vec![]);
        assert_eq!(g.decide(s(20)), Decision::Wait { until: s(35) });
        // An older, smaller count changes nothing.
        g.restarts("hello", 1);
        assert_eq!(g.decide(s(35)), Decision::Commit);
    }

    #[test]
    fn a_slow_start_gets_the_deadline() {
        let mut g = gate();
        g.check("http", s(1), Ok(()));
        g.service("dhcp", ServiceState::Running { since: s(0) }, vec![]);
        // hello waits (for the clock, say) and never restarts.
        assert_eq!(g.decide(s(60)), Decision::Wait { until: s(120) });
        g.service("hello", ServiceState::Running { since: s(100) }, vec![]);
        assert_eq!(g.decide(s(110)), Decision::Wait { until: s(120) });
        match g.decide(s(120)) {
            Decision::RollBack { reason, .. } => {
                assert!(reason.contains("not healthy 120s after boot"), "{reason}");
                assert!(reason.contains("less than the 30s settle time"), "{reason}");
            }
            d => panic!("{d:?}"),
        }
        // With the limit off, restarts wait for the deadline too.
        let mut g = HealthGate::new(
            HealthConfig {
                settle: s(30),
                deadline: s(120),
                fail_after_restarts: 0,
            },
            ["hello"],
            Vec::<String>::new(),
        );
        g.restarts("hello", 50);
        assert!(matches!(g.decide(s(60)), Decision::Wait { .. }));
    }

    #[test]
    fn failing_check_rolls_back_without_a_service() {
        let mut g = gate();
        g.service("dhcp", ServiceState::Running { since: s(0) }, vec![]);
        g.service("hello", ServiceState::Running { since: s(0) }, vec![]);
        g.check("http", s(100), Err("answered 503".into()));
        assert!(matches!(g.decide(s(100)), Decision::Wait { until } if until == s(120)));
        match g.decide(s(121)) {
            Decision::RollBack {
                reason, service, ..
            } => {
                assert!(reason.contains("health check http fails: answered 503"));
                assert_eq!(service, None);
            }
            d => panic!("{d:?}"),
        }
        // A check that never answered also blocks the commit.
        let mut g = gate();
        g.service("dhcp", ServiceState::Done, vec![]);
        g.service("hello", ServiceState::Done, vec![]);
        assert!(matches!(g.decide(s(119)), Decision::Wait { .. }));
    }
}
