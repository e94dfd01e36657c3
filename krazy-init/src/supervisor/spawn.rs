//! Starting a service's process: its own session and process group, its
//! home directory, the ordinary descriptor limit, and the pumps that copy
//! its stdout and stderr into the ring buffers.

use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;

use tokio::io::AsyncReadExt;

use super::{lock, Inner, Service, ServiceLogs};
use crate::logbuf::{LineSplitter, Stream};

#[derive(Debug, thiserror::Error)]
pub(super) enum SpawnError {
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
pub(super) fn spawn(inner: &Inner, svc: &Arc<Service>) -> Result<u32, SpawnError> {
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
