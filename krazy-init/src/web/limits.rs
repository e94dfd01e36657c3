//! What one LAN client may take from the web server, so that it can neither
//! lock everyone else out nor starve PID 1 of file descriptors.
//!
//! - At most `max_connections` TCP connections at once (all peers), and at
//!   most `max_connections_per_peer` from one IPv4 address or IPv6 /64.
//!   Over the total, the oldest connection that has not authenticated is
//!   shed; when none can be, and over the per-peer limit, the new
//!   connection is answered `429 Too Many Requests` with `Retry-After` and
//!   closed. The table of peers is bounded ([`PEER_TABLE_CAPACITY`],
//!   least recently used peers without connections go first).
//! - Requests that do not authenticate get their answer and the connection
//!   is closed: keep-alive is for authenticated connections only.
//! - Headers: at most [`MAX_BUF`] bytes buffered and [`MAX_HEADERS`]
//!   header lines (hyper answers 431 beyond), read within
//!   [`HEADER_READ_TIMEOUT`].
//! - A request body may be as slow as it likes as a whole (a 30 MB update on
//!   a Pi takes minutes) but must not stall: [`BODY_INACTIVITY_TIMEOUT`]
//!   without a byte ends the connection ([`Watched`]).
//! - Failed logins: after [`FAILED_LOGINS_ALLOWED`] wrong credentials from
//!   one peer within [`FAILED_LOGIN_WINDOW`], that peer gets 429 with
//!   `Retry-After` until the window ends.
//!
//! The connection budget is also held under the process's file descriptor
//! limit minus [`FD_RESERVE`], so the supervisor always has descriptors to
//! start and restart services with.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// hyper's read (and write) buffer per connection: a request's line and
/// headers must fit (hyper's own minimum is 8 KiB).
pub const MAX_BUF: usize = 16 * 1024;
/// Header lines per request.
pub const MAX_HEADERS: usize = 32;
/// The whole request head must arrive within this time.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A request body that sends nothing for this long ends its connection.
pub const BODY_INACTIVITY_TIMEOUT: Duration = Duration::from_secs(30);
/// Wrong credentials allowed per peer and window.
pub const FAILED_LOGINS_ALLOWED: u32 = 10;
/// The window of [`FAILED_LOGINS_ALLOWED`].
pub const FAILED_LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// `Retry-After` (seconds) of a refused connection.
pub const RETRY_AFTER_BUSY: u64 = 5;
/// Peers remembered at most.
pub const PEER_TABLE_CAPACITY: usize = 4096;
/// File descriptors the web server leaves to the rest of the process.
pub const FD_RESERVE: u64 = 512;
/// Connections over `max_connections` while shed ones close.
const SHED_SLACK: usize = 16;

/// The web server's limits (from `[web]`, see [`crate::config::WebSettings`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// TCP connections at once.
    pub max_connections: usize,
    /// TCP connections at once per IPv4 address or IPv6 /64.
    pub max_connections_per_peer: usize,
    /// Live log followers at once.
    pub max_log_followers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from(&crate::config::WebSettings::default())
    }
}

impl From<&crate::config::WebSettings> for Limits {
    fn from(w: &crate::config::WebSettings) -> Self {
        let n = |v: u32| usize::try_from(v).unwrap_or(usize::MAX).max(1);
        Limits {
            max_connections: n(w.max_connections),
            max_connections_per_peer: n(w.max_connections_per_peer),
            max_log_followers: n(w.max_log_followers),
        }
    }
}

impl Limits {
    /// These limits held under a file descriptor limit of `nofile`:
    /// connections never use the last [`FD_RESERVE`] descriptors.
    pub fn within_fd_limit(mut self, nofile: u64) -> Self {
        let budget = usize::try_from(nofile.saturating_sub(FD_RESERVE).max(16))
            .unwrap_or(usize::MAX)
            .saturating_sub(SHED_SLACK)
            .max(1);
        if self.max_connections > budget {
            tracing::warn!(
                "web: max_connections {} lowered to {budget} (file descriptor limit {nofile}, {FD_RESERVE} kept for services)",
                self.max_connections
            );
            self.max_connections = budget;
        }
        self
    }
}

/// Who counts as one peer: an IPv4 address, or an IPv6 /64 (one host
/// easily has a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerKey {
    /// An IPv4 address (also IPv4-mapped IPv6).
    V4(Ipv4Addr),
    /// The first 64 bits of an IPv6 address.
    V6([u16; 4]),
}

impl From<IpAddr> for PeerKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => PeerKey::V4(a),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => PeerKey::V4(v4),
                None => {
                    let s = a.segments();
                    PeerKey::V6([s[0], s[1], s[2], s[3]])
                }
            },
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The peer has `max_connections_per_peer` already.
    PerPeer,
    /// The server has `max_connections` and none can be shed.
    Full,
}

#[derive(Default)]
struct PeerEntry {
    conns: usize,
    last_used: u64,
    failures: u32,
    window_start: Option<Instant>,
}

#[derive(Default)]
struct Inner {
    total: usize,
    tick: u64,
    next_id: u64,
    peers: HashMap<PeerKey, PeerEntry>,
    /// Open connections that have not authenticated, oldest first.
    unauthenticated: BTreeMap<u64, Arc<Notify>>,
}

impl Inner {
    fn entry(&mut self, key: PeerKey) -> &mut PeerEntry {
        self.tick += 1;
        if !self.peers.contains_key(&key) && self.peers.len() >= PEER_TABLE_CAPACITY {
            let oldest = self
                .peers
                .iter()
                .filter(|(_, e)| e.conns == 0)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.peers.remove(&k);
            }
        }
        let tick = self.tick;
        let e = self.peers.entry(key).or_default();
        e.last_used = tick;
        e
    }
}

/// The open TCP connections and failed logins per peer.
pub struct ConnTable {
    limits: Limits,
    inner: Mutex<Inner>,
}

/// One admitted connection; dropping it frees its place.
pub struct ConnGuard {
    table: Arc<ConnTable>,
    key: PeerKey,
    id: u64,
    shed: Arc<Notify>,
    authenticated: AtomicBool,
}

impl ConnGuard {
    /// Notified when the connection is to be shed for a newer one.
    pub fn shed(&self) -> Arc<Notify> {
        self.shed.clone()
    }

    /// Marks the connection authenticated: it is never shed and stays open.
    pub fn authenticated(&self) {
        if !self.authenticated.swap(true, Ordering::Relaxed) {
            self.table.lock().unauthenticated.remove(&self.id);
        }
    }

    /// Whether a request on this connection authenticated.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Relaxed)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut g = self.table.lock();
        g.total = g.total.saturating_sub(1);
        g.unauthenticated.remove(&self.id);
        if let Some(e) = g.peers.get_mut(&self.key) {
            e.conns = e.conns.saturating_sub(1);
        }
    }
}

impl ConnTable {
    /// An empty table enforcing `limits`.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(ConnTable {
            limits,
            inner: Mutex::new(Inner::default()),
        })
    }

    /// The limits enforced.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a connection from `ip`, shedding the oldest unauthenticated
    /// connection when the server is full.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnGuard, Refusal> {
        let key = PeerKey::from(ip);
        let mut g = self.lock();
        if g.entry(key).conns >= self.limits.max_connections_per_peer {
            return Err(Refusal::PerPeer);
        }
        if g.total >= self.limits.max_connections {
            if g.total >= self.limits.max_connections + SHED_SLACK {
                return Err(Refusal::Full);
            }
            match g.unauthenticated.pop_first() {
                Some((_, n)) => n.notify_one(),
                None => return Err(Refusal::Full),
            }
        }
        g.total += 1;
        g.entry(key).conns += 1;
        g.next_id += 1;
        let id = g.next_id;
        let shed = Arc::new(Notify::new());
        g.unauthenticated.insert(id, shed.clone());
        Ok(ConnGuard {
            table: self.clone(),
            key,
            id,
            shed,
            authenticated: AtomicBool::new(false),
        })
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    /// Peers remembered.
    pub fn peers(&self) -> usize {
        self.lock().peers.len()
    }

    /// When `ip` has failed too often: how long until it may try again.
    pub fn login_retry_after(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let g = self.lock();
        let e = g.peers.get(&PeerKey::from(ip))?;
        let start = e.window_start?;
        let elapsed = now.saturating_duration_since(start);
        (e.failures >= FAILED_LOGINS_ALLOWED && elapsed < FAILED_LOGIN_WINDOW)
            .then(|| FAILED_LOGIN_WINDOW - elapsed)
    }

    /// Counts a failed login of `ip`.
    pub fn login_failed(&self, ip: IpAddr, now: Instant) {
        let mut g = self.lock();
        let e = g.entry(PeerKey::from(ip));
        match e.window_start {
            Some(s) if now.saturating_duration_since(s) < FAILED_LOGIN_WINDOW => {
                e.failures = e.failures.saturating_add(1);
            }
            _ => {
                e.window_start = Some(now);
                e.failures = 1;
            }
        }
    }
}

/// Seconds for a `Retry-After` header: `d` rounded up, at least 1.
pub fn retry_after_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// A stream whose reads fail with `TimedOut` after
/// [`BODY_INACTIVITY_TIMEOUT`] without a byte while `armed` (while a request
/// body is being read); otherwise reads wait as long as they like.
pub struct Watched<S> {
    inner: S,
    armed: Arc<AtomicBool>,
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Watched<S> {
    /// Watches `inner`; set `armed` while a request body is expected.
    pub fn new(inner: S, armed: Arc<AtomicBool>, timeout: Duration) -> Self {
        Watched {
            inner,
            armed,
            timeout,
            sleep: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.sleep = None;
                Poll::Ready(r)
            }
            Poll::Pending if !this.armed.load(Ordering::Relaxed) => {
                this.sleep = None;
                Poll::Pending
            }
            Poll::Pending => {
                let t = this.timeout;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(t)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.sleep = None;
                        Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("the request body sent nothing for {} s", t.as_secs()),
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limits(total: usize, per_peer: usize) -> Limits {
        Limits {
            max_connections: total,
            max_connections_per_peer: per_peer,
            max_log_followers: 1,
        }
    }

    #[test]
    fn per_peer_and_total_limits_with_shedding() {
        let t = ConnTable::new(limits(4, 2));
        let a1 = t.admit(ip("10.0.0.1")).unwrap();
        let _a2 = t.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(t.admit(ip("10.0.0.1")).err(), Some(Refusal::PerPeer));
        // One /64 is one peer; IPv4-mapped IPv6 is the IPv4 peer.
        let _b1 = t.admit(ip("fd00::1")).unwrap();
        let _b2 = t.admit(ip("fd00::2")).unwrap();
        assert_eq!(t.admit(ip("fd00::ffff")).err(), Some(Refusal::PerPeer));
        assert_eq!(t.admit(ip("::ffff:10.0.0.1")).err(), Some(Refusal::PerPeer));
        assert_eq!(t.open(), 4);
        // Full: the oldest unauthenticated connection (a1) is shed.
        let shed = a1.shed();
        let c = t.admit(ip("10.0.0.3")).unwrap();
        assert!(futures_ready(shed.notified()));
        drop(a1);
        assert_eq!(t.open(), 4);
        // Authenticated connections are never shed.
        for g in [&_a2, &_b1, &_b2, &c] {
            g.authenticated();
        }
        assert_eq!(t.admit(ip("10.0.0.4")).err(), Some(Refusal::Full));
        drop(c);
        assert!(t.admit(ip("10.0.0.4")).is_ok());
    }

    fn futures_ready(f: impl Future<Output = ()>) -> bool {
        let mut f = std::pin::pin!(f);
        let waker = std::task::Waker::noop();
        f.as_mut().poll(&mut Context::from_waker(waker)).is_ready()
    }

    #[test]
    fn the_peer_table_is_bounded() {
        let t = ConnTable::new(limits(8, 8));
        for i in 0..(PEER_TABLE_CAPACITY as u32 + 500) {
            let a = std::net::Ipv6Addr::from(u128::from(i) << 64);
            drop(t.admit(IpAddr::V6(a)).unwrap());
        }
        assert_eq!(t.peers(), PEER_TABLE_CAPACITY);
    }

    #[test]
    fn failed_logins_pile_up_per_peer_then_expire() {
        let t = ConnTable::new(limits(8, 8));
        let now = Instant::now();
        for _ in 0..FAILED_LOGINS_ALLOWED - 1 {
            t.login_failed(ip("10.0.0.9"), now);
        }
        assert_eq!(t.login_retry_after(ip("10.0.0.9"), now), None);
        t.login_failed(ip("10.0.0.9"), now);
        let d = t.login_retry_after(ip("10.0.0.9"), now).unwrap();
        assert_eq!(retry_after_secs(d), FAILED_LOGIN_WINDOW.as_secs());
        assert_eq!(t.login_retry_after(ip("10.0.0.8"), now), None);
        let later = now + FAILED_LOGIN_WINDOW;
        assert_eq!(t.login_retry_after(ip("10.0.0.9"), later), None);
    }

    #[test]
    fn the_fd_reserve_caps_connections() {
        let l = limits(5000, 8).within_fd_limit(1024);
        assert_eq!(l.max_connections, 1024 - FD_RESERVE as usize - SHED_SLACK);
        assert_eq!(limits(100, 8).within_fd_limit(4096).max_connections, 100);
    }
}
