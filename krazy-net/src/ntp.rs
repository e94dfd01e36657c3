//! A sans-IO SNTP client (RFC 4330): request building, strict response
//! validation, offset/delay computation and the polling schedule.
//!
//! Times come in from the driver: `mono` is a monotonic [`Duration`] for
//! scheduling, `wall` the system clock as a [`Duration`] since the Unix epoch
//! for the timestamps.

use std::net::SocketAddr;
use std::time::Duration;

/// Seconds between 1900 (NTP era 0) and 1970 (Unix).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// NTP packet size without extensions.
pub const PACKET_LEN: usize = 48;
/// Shortest poll interval once synchronised.
pub const MIN_POLL: Duration = Duration::from_secs(16);
/// Longest poll interval.
pub const MAX_POLL: Duration = Duration::from_secs(1024);
/// How long to wait for an answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// Offsets above this are stepped, smaller ones slewed (like ntpd's 128 ms).
pub const STEP_THRESHOLD: Duration = Duration::from_millis(128);

/// Why an answer was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NtpError {
    /// Fewer than 48 bytes.
    #[error("the answer is {0} bytes, shorter than 48")]
    TooShort(usize),
    /// Mode is not 4 (server).
    #[error("the answer has mode {0}, not 4 (server)")]
    WrongMode(u8),
    /// Version is not 3 or 4.
    #[error("the answer has version {0}, not 3 or 4")]
    WrongVersion(u8),
    /// Transmit timestamp is zero.
    #[error("the answer's transmit timestamp is zero")]
    ZeroTransmit,
    /// Originate timestamp does not echo our request.
    #[error("the answer's originate timestamp does not match our request (an answer to another request)")]
    OriginateMismatch,
    /// Kiss-of-death (stratum 0) with its code.
    #[error("kiss-of-death from the server: {0}")]
    KissOfDeath(String),
    /// Leap indicator 3 or stratum >= 16.
    #[error("the server is not synchronised")]
    Unsynchronised,
    /// No request is outstanding, or the answer came from another address.
    #[error("an unexpected answer from {0}")]
    Unexpected(SocketAddr),
}

/// A 64-bit NTP timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// From Unix time.
    pub fn from_unix(d: Duration) -> Self {
        let secs = d.as_secs().wrapping_add(NTP_UNIX_OFFSET) & 0xffff_ffff;
        let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
        Self((secs << 32) | frac)
    }

    /// To Unix time in nanoseconds, choosing the NTP era closest to `near`
    /// (so 2036's era rollover is handled).
    pub fn to_unix_nanos(self, near: Duration) -> i128 {
        let secs = i128::from(self.0 >> 32);
        let frac = i128::from(self.0 & 0xffff_ffff);
        let nanos = (frac * 1_000_000_000) >> 32;
        let base = secs - i128::from(NTP_UNIX_OFFSET);
        let near_s = near.as_secs() as i128;
        let era = 1i128 << 32;
        let k = (near_s - base + era / 2).div_euclid(era);
        (base + k * era) * 1_000_000_000 + nanos
    }
}

fn ts_at(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(i..i + 8) {
        a.copy_from_slice(s);
    }
    u64::from_be_bytes(a)
}

/// Builds a client request (LI 0, version 4, mode 3) whose transmit timestamp
/// is `nonce`: a random value the server must echo, so that off-path spoofers
/// cannot guess it (our real send time is kept locally).
pub fn request(nonce: u64) -> [u8; PACKET_LEN] {
    let mut p = [0u8; PACKET_LEN];
    p[0] = 4 << 3 | 3;
    p[40..48].copy_from_slice(&nonce.to_be_bytes());
    p
}

/// A valid measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// How far our clock is behind the server (add this to correct it), nanoseconds.
    pub offset_ns: i64,
    /// Round-trip delay, nanoseconds.
    pub delay_ns: i64,
    /// The server's stratum.
    pub stratum: u8,
}

impl Sample {
    /// Offset in seconds.
    pub fn offset_secs(&self) -> f64 {
        self.offset_ns as f64 / 1e9
    }
}

/// Validates an answer to the request with `nonce`, sent at wall time `t1`
/// and received at `t4`, and computes offset and delay (RFC 4330 §5).
pub fn parse_response(
    b: &[u8],
    nonce: u64,
    t1: Duration,
    t4: Duration,
) -> Result<Sample, NtpError> {
    if b.len() < PACKET_LEN {
        return Err(NtpError::TooShort(b.len()));
    }
    let li = b[0] >> 6;
    let vn = (b[0] >> 3) & 7;
    let mode = b[0] & 7;
    let stratum = b[1];
    if mode != 4 {
        return Err(NtpError::WrongMode(mode));
    }
    if !(3..=4).contains(&vn) {
        return Err(NtpError::WrongVersion(vn));
    }
    if ts_at(b, 24) != nonce {
        return Err(NtpError::OriginateMismatch);
    }
    if stratum == 0 {
        let code: String = b[12..16]
            .iter()
            .map(|c| {
                if c.is_ascii_graphic() {
                    char::from(*c)
                } else {
                    '?'
                }
            })
            .collect();
        return Err(NtpError::KissOfDeath(code));
    }
    if li == 3 || stratum >= 16 {
        return Err(NtpError::Unsynchronised);
    }
    let t3 = ts_at(b, 40);
    if t3 == 0 {
        return Err(NtpError::ZeroTransmit);
    }
    let t2 = Timestamp(ts_at(b, 32)).to_unix_nanos(t1);
    let t3 = Timestamp(t3).to_unix_nanos(t1);
    let t1n = t1.as_nanos() as i128;
    let t4n = t4.as_nanos() as i128;
    let offset = ((t2 - t1n) + (t3 - t4n)) / 2;
    let delay = (t4n - t1n) - (t3 - t2);
    let clamp = |v: i128| v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    Ok(Sample {
        offset_ns: clamp(offset),
        delay_ns: clamp(delay).max(0),
        stratum,
    })
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NtpAction {
    /// Send this request to this server.
    Send {
        /// Server address.
        to: SocketAddr,
        /// 48 bytes.
        bytes: Vec<u8>,
    },
    /// Call [`Poller::poll`] at this monotonic time at the latest.
    SleepUntil(Duration),
}

#[derive(Debug, Clone)]
struct Pending {
    nonce: u64,
    to: SocketAddr,
    t1: Duration,
}

/// The polling schedule over a list of servers: rotates through them, backs
/// off while synchronised (16 s doubling to 1024 s), retries fast (1 s
/// doubling to 16 s) while unsynchronised, honours kiss-of-death.
#[derive(Debug, Clone)]
pub struct Poller {
    servers: Vec<SocketAddr>,
    denied: Vec<SocketAddr>,
    next_server: usize,
    interval: Duration,
    retry: Duration,
    synced: bool,
    pending: Option<Pending>,
    deadline: Duration,
    rng: u64,
}

impl Poller {
    /// A poller over `servers`; `seed` feeds the nonces.
    pub fn new(servers: Vec<SocketAddr>, seed: u64) -> Self {
        Self {
            servers,
            denied: Vec::new(),
            next_server: 0,
            interval: MIN_POLL,
            retry: Duration::from_secs(1),
            synced: false,
            pending: None,
            deadline: Duration::ZERO,
            rng: seed | 1,
        }
    }

    /// Replaces the server list (e.g. after a new DHCP lease).
    pub fn set_servers(&mut self, servers: Vec<SocketAddr>) {
        if servers != self.servers {
            self.servers = servers;
            self.next_server = 0;
        }
    }

    /// True once a valid answer has been accepted.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// The current poll interval (once synchronised).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn nonce(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fail(&mut self, mono: Duration) {
        self.pending = None;
        if self.synced {
            self.deadline = mono + self.interval;
        } else {
            self.deadline = mono + self.retry;
            self.retry = (self.retry * 2).min(MIN_POLL);
        }
    }

    /// Sends the next request when due, or times out the outstanding one.
    pub fn poll(&mut self, mono: Duration, wall: Duration) -> Vec<NtpAction> {
        let mut out = Vec::new();
        if mono >= self.deadline {
            if let Some(p) = self.pending.take() {
                tracing::info!(server = %p.to, "no answer");
                self.next_server += 1;
                self.fail(mono);
            } else {
                let usable: Vec<_> = self
                    .servers
                    .iter()
                    .filter(|s| !self.denied.contains(s))
                    .copied()
                    .collect();
                if usable.is_empty() {
                    if !self.denied.is_empty() {
                        tracing::warn!("every server denied us; trying them again later");
                    }
                    self.denied.clear();
                    self.deadline = mono
                        + if self.servers.is_empty() {
                            self.retry.max(Duration::from_secs(5))
                        } else {
                            MAX_POLL
                        };
                } else {
                    let to = usable[self.next_server % usable.len()];
                    let nonce = self.nonce();
                    out.push(NtpAction::Send {
                        to,
                        bytes: request(nonce).to_vec(),
                    });
                    self.pending = Some(Pending {
                        nonce,
                        to,
                        t1: wall,
                    });
                    self.deadline = mono + ANSWER_TIMEOUT;
                }
            }
        }
        out.push(NtpAction::SleepUntil(self.deadline));
        out
    }

    /// Handles an answer from `from` received at `wall`. Invalid answers leave
    /// the request outstanding (a spoofer cannot cancel it), except a
    /// kiss-of-death with the right nonce, which is acted on.
    pub fn handle(
        &mut self,
        from: SocketAddr,
        bytes: &[u8],
        mono: Duration,
        wall: Duration,
    ) -> Result<Sample, NtpError> {
        let Some(p) = self.pending.clone() else {
            return Err(NtpError::Unexpected(from));
        };
        if p.to != from {
            return Err(NtpError::Unexpected(from));
        }
        match parse_response(bytes, p.nonce, p.t1, wall) {
            Ok(s) => {
                self.pending = None;
                self.synced = true;
                self.retry = Duration::from_secs(1);
                self.deadline = mono + self.interval;
                self.interval = (self.interval * 2).min(MAX_POLL);
                Ok(s)
            }
            Err(NtpError::KissOfDeath(code)) => {
                match code.as_str() {
                    "RATE" => {
                        self.interval = (self.interval * 2).min(MAX_POLL);
                        self.retry = self.retry.max(MIN_POLL);
                    }
                    "DENY" | "RSTR" => self.denied.push(from),
                    _ => {}
                }
                self.next_server += 1;
                self.fail(mono);
                Err(NtpError::KissOfDeath(code))
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "192.0.2.1:123";

    fn answer(nonce: u64, recv: Duration, xmit: Duration) -> [u8; 48] {
        let mut p = [0u8; 48];
        p[0] = 4 << 3 | 4;
        p[1] = 2;
        p[24..32].copy_from_slice(&nonce.to_be_bytes());
        p[32..40].copy_from_slice(&Timestamp::from_unix(recv).0.to_be_bytes());
        p[40..48].copy_from_slice(&Timestamp::from_unix(xmit).0.to_be_bytes());
        p
    }

    #[test]
    fn request_format() {
        let r = request(0x1122_3344_5566_7788);
        assert_eq!(r[0], 0x23);
        assert_eq!(&r[40..], &0x1122_3344_5566_7788u64.to_be_bytes());
    }

    #[test]
    fn offset_and_delay() {
        let t1 = Duration::from_secs(1_800_000_000);
        // Server is 5 s ahead; 10 ms each way; 1 ms processing.
        let t2 = t1 + Duration::from_millis(5010);
        let t3 = t2 + Duration::from_millis(1);
        let t4 = t1 + Duration::from_millis(21);
        let s = parse_response(&answer(7, t2, t3), 7, t1, t4).unwrap();
        assert!(
            (s.offset_ns - 5_000_000_000).abs() < 1000,
            "{}",
            s.offset_ns
        );
        assert!((s.delay_ns - 20_000_000).abs() < 1000, "{}", s.delay_ns);
    }

    #[test]
    fn era_rollover() {
        // 2036-02-07 is where NTP era 0 ends.
        let t = Duration::from_secs((1u64 << 32) - NTP_UNIX_OFFSET + 10);
        let ts = Timestamp::from_unix(t);
        assert_eq!(ts.0 >> 32, 10);
        assert_eq!(ts.to_unix_nanos(t), t.as_nanos() as i128);
    }

    #[test]
    fn rejects_malformed_answers() {
        let t = Duration::from_secs(1_800_000_000);
        let good = answer(9, t, t);
        let with = |f: &dyn Fn(&mut [u8; 48])| {
            let mut p = good;
            f(&mut p);
            parse_response(&p, 9, t, t)
        };
        assert!(with(&|_| {}).is_ok());
        assert_eq!(with(&|p| p[0] = 4 << 3 | 3), Err(NtpError::WrongMode(3)));
        assert_eq!(with(&|p| p[0] = 2 << 3 | 4), Err(NtpError::WrongVersion(2)));
        assert_eq!(with(&|p| p[40..48].fill(0)), Err(NtpError::ZeroTransmit));
        assert_eq!(with(&|p| p[31] ^= 1), Err(NtpError::OriginateMismatch));
        assert_eq!(with(&|p| p[0] |= 3 << 6), Err(NtpError::Unsynchronised));
        assert_eq!(with(&|p| p[1] = 16), Err(NtpError::Unsynchronised));
        assert_eq!(
            with(&|p| {
                p[1] = 0;
                p[12..16].copy_from_slice(b"RATE");
            }),
            Err(NtpError::KissOfDeath("RATE".into()))
        );
        assert_eq!(
            parse_response(&good[..47], 9, t, t),
            Err(NtpError::TooShort(47))
        );
    }

    fn sent(a: &[NtpAction]) -> (SocketAddr, u64) {
        match &a[0] {
            NtpAction::Send { to, bytes } => (*to, ts_at(bytes, 40)),
            other => panic!("expected a send, got {other:?}"),
        }
    }

    fn sleep(a: &[NtpAction]) -> Duration {
        match a.last() {
            Some(NtpAction::SleepUntil(t)) => *t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn schedule_fast_retries_then_backoff() {
        let s: SocketAddr = SERVER.parse().unwrap();
        let wall = Duration::from_secs(1_800_000_000);
        let mut p = Poller::new(vec![s], 1);
        let mut now = Duration::ZERO;
        // Unsynchronised and unanswered: 2 s timeout, then 1, 2, 4, 8, 16, 16 s pauses.
        let mut gaps = Vec::new();
        for _ in 0..6 {
            let a = p.poll(now, wall);
            sent(&a);
            now = sleep(&a);
            let a = p.poll(now, wall);
            let next = sleep(&a);
            gaps.push((next - now).as_secs());
            now = next;
        }
        assert_eq!(gaps, vec![1, 2, 4, 8, 16, 16]);
        // An answer: then 16, 32, 64 ... 1024 s between polls.
        let mut gaps = Vec::new();
        for _ in 0..8 {
            let a = p.poll(now, wall);
            let (_, nonce) = sent(&a);
            p.handle(s, &answer(nonce, wall, wall), now, wall).unwrap();
            let next = sleep(&p.poll(now, wall));
            gaps.push((next - now).as_secs());
            now = next;
        }
        assert_eq!(gaps, vec![16, 32, 64, 128, 256, 512, 1024, 1024]);
        assert!(p.synced());
    }

    #[test]
    fn spoofed_and_kod_answers() {
        let a: SocketAddr = SERVER.parse().unwrap();
        let b: SocketAddr = "192.0.2.2:123".parse().unwrap();
        let wall = Duration::from_secs(1_800_000_000);
        let mut p = Poller::new(vec![a, b], 5);
        let (to, nonce) = sent(&p.poll(Duration::ZERO, wall));
        assert_eq!(to, a);
        // From another address, or with another nonce: rejected, still pending.
        assert!(matches!(
            p.handle(b, &answer(nonce, wall, wall), Duration::ZERO, wall),
            Err(NtpError::Unexpected(_))
        ));
        assert_eq!(
            p.handle(a, &answer(nonce ^ 1, wall, wall), Duration::ZERO, wall),
            Err(NtpError::OriginateMismatch)
        );
        // DENY: that server is dropped; the next poll goes to the other one.
        let mut kod = answer(nonce, wall, wall);
        kod[1] = 0;
        kod[12..16].copy_from_slice(b"DENY");
        assert!(matches!(
            p.handle(a, &kod, Duration::ZERO, wall),
            Err(NtpError::KissOfDeath(_))
        ));
        let mut now = Duration::ZERO;
        for _ in 0..3 {
            now = sleep(&p.poll(now, wall));
            let acts = p.poll(now, wall);
            if let NtpAction::Send { to, .. } = &acts[0] {
                assert_eq!(*to, b);
            }
            now = sleep(&acts);
        }
    }
}
