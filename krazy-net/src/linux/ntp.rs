//! The SNTP driver: resolves servers, runs a [`Poller`], steps or slews the clock,
//! keeps the last known time under /perm for boards without an RTC.

use super::{NetError, SavedLease};
use crate::ntp::{NtpAction, Poller, Sample, STEP_THRESHOLD};
use nix::sys::time::TimeSpec;
use nix::time::{clock_settime, ClockId};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How to run the NTP client.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Servers from the command line (`host` or `host:port`).
    pub servers: Vec<String>,
    /// Where krazy-dhcp saves leases (option 42 servers are read from there).
    pub lease_dir: Option<PathBuf>,
    /// Where the last known time is kept.
    pub state_dir: Option<PathBuf>,
    /// Actually set the clock (false: only compute and log the offset).
    pub set_clock: bool,
    /// Return after the first valid answer.
    pub oneshot: bool,
    /// Init's socket for the "clock synchronised" report.
    pub notify_socket: Option<PathBuf>,
}

/// The file holding the last known time (Unix seconds, decimal).
pub fn state_file(dir: &Path) -> PathBuf {
    dir.join("last-time")
}

/// Saves the current wall clock time.
pub fn save_time(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    super::write_atomic(
        &state_file(dir),
        format!("{}\n", super::unix_now().as_secs()).as_bytes(),
    )
}

/// The saved time, if any.
pub fn load_time(dir: &Path) -> Option<Duration> {
    let s = std::fs::read_to_string(state_file(dir)).ok()?;
    s.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Sets CLOCK_REALTIME to `unix`.
pub fn set_clock(unix: Duration) -> io::Result<()> {
    clock_settime(ClockId::CLOCK_REALTIME, TimeSpec::from_duration(unix))?;
    Ok(())
}

/// Corrects the clock by `offset_ns`: a step when larger than 128 ms, else a slew (adjtime).
pub fn correct(offset_ns: i64) -> io::Result<&'static str> {
    if offset_ns.unsigned_abs() > STEP_THRESHOLD.as_nanos() as u64 {
        let now = super::unix_now().as_nanos() as i128 + i128::from(offset_ns);
        let now = u64::try_from(now.max(0)).unwrap_or(0);
        set_clock(Duration::from_nanos(now))?;
        Ok("stepped")
    } else {
        let tv = libc::timeval {
            tv_sec: (offset_ns.div_euclid(1_000_000_000)) as _,
            tv_usec: (offset_ns.rem_euclid(1_000_000_000) / 1000) as _,
        };
        // adjtime(3) is not in nix: libc it is.
        // SAFETY: tv is a live timeval; the old-delta pointer may be null.
        if unsafe { libc::adjtime(&tv, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok("slewed")
    }
}

/// Resolves the configured servers plus the NTP servers of saved DHCP leases (IPv4).
pub fn resolve_servers(opts: &Options) -> Vec<SocketAddr> {
    let mut names = opts.servers.clone();
    if let Some(d) = &opts.lease_dir {
        for l in SavedLease::load_all(d) {
            names.extend(l.lease.ntp.iter().map(|a| a.to_string()));
        }
    }
    let mut out = Vec::new();
    for n in names {
        let target = if n.contains(':') {
            n.clone()
        } else {
            format!("{n}:123")
        };
        match target.to_socket_addrs() {
            Ok(addrs) => {
                for a in addrs.filter(|a| a.is_ipv4()) {
                    if !out.contains(&a) {
                        out.push(a);
                    }
                }
            }
            Err(e) => warn!(server = %n, "cannot resolve: {e}"),
        }
    }
    out
}

/// Runs until `stop` (or, with `oneshot`, until the first valid answer, which is returned).
pub fn run(opts: &Options, stop: &AtomicBool) -> Result<Option<(SocketAddr, Sample)>, NetError> {
    if let (Some(dir), true) = (&opts.state_dir, opts.set_clock) {
        if let Some(saved) = load_time(dir) {
            if saved > super::unix_now() {
                match set_clock(saved) {
                    Ok(()) => info!(
                        unix = saved.as_secs(),
                        "clock was behind the last known time, set forward"
                    ),
                    Err(e) => warn!("could not set the clock forward: {e}"),
                }
            }
        }
    }
    let sock =
        UdpSocket::bind("0.0.0.0:0").map_err(|e| NetError::io("bind a UDP socket", "ntp", e))?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| NetError::io("set a socket timeout", "ntp", e))?;
    let seed = super::unix_now().as_nanos() as u64 ^ u64::from(std::process::id()) << 32;
    // Name resolution can block for many seconds (no DNS server yet): it
    // runs on its own thread so a stop request is served within 200 ms.
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let opts = opts.clone();
        std::thread::spawn(move || loop {
            if tx.send(resolve_servers(&opts)).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(30));
        });
    }
    let mut poller = Poller::new(Vec::new(), seed);
    let start = Instant::now();
    let mut reported = false;
    let mut buf = [0u8; 512];
    loop {
        if stop.load(Ordering::Relaxed) {
            if let (Some(d), true) = (&opts.state_dir, opts.set_clock) {
                let _ = save_time(d);
            }
            return Ok(None);
        }
        if let Some(servers) = rx.try_iter().last() {
            poller.set_servers(servers);
        }
        for a in poller.poll(start.elapsed(), super::unix_now()) {
            if let NtpAction::Send { to, bytes } = a {
                if let Err(e) = sock.send_to(&bytes, to) {
                    warn!(server = %to, "send failed: {e}");
                }
            }
        }
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue,
        };
        let wall = super::unix_now();
        match poller.handle(from, buf.get(..n).unwrap_or(&[]), start.elapsed(), wall) {
            Ok(s) => {
                info!(server = %from, offset = s.offset_secs(), delay = s.delay_ns as f64 / 1e9, stratum = s.stratum, "NTP answer");
                if opts.set_clock {
                    match correct(s.offset_ns) {
                        Ok(how) => info!("clock {how} by {:.6} s", s.offset_secs()),
                        Err(e) => warn!("could not correct the clock: {e}"),
                    }
                    if let Some(d) = &opts.state_dir {
                        if let Err(e) = save_time(d) {
                            warn!(dir = %d.display(), "could not save the time: {e}");
                        }
                    }
                }
                if !reported {
                    crate::notify::clock(opts.notify_socket.as_deref(), true);
                    reported = true;
                }
                if opts.oneshot {
                    return Ok(Some((from, s)));
                }
            }
            Err(e) => warn!(server = %from, "rejected an NTP answer: {e}"),
        }
    }
}
