//! The reaper: waits for SIGCHLD and routes each exit status to the service
//! whose main process it was (orphans are counted and dropped).

use std::time::Duration;

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::{lock, Inner};
use crate::policy::{ExitStatus, Input};

/// Waits for SIGCHLD and routes exit statuses; also sweeps once a second.
pub(super) async fn reaper(
    inner: std::sync::Weak<Inner>,
    mut sigchld: tokio::signal::unix::Signal,
) {
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
