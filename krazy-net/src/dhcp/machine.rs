//! The sans-IO DHCPv4 client state machine (RFC 2131 §4.4).
//!
//! The machine never reads a clock or a socket: the driver passes in the
//! current time (a [`Duration`] since any fixed, monotonic origin) and received
//! packets, and carries out the returned [`Action`]s. Every call ends with an
//! [`Action::SleepUntil`] telling the driver when to call [`Client::poll`] next
//! (except after [`Client::release`], which ends the life cycle).

use super::lease::Lease;
use super::packet::{opt, Message, MessageType, MAX_MESSAGE_SIZE};
use std::net::Ipv4Addr;
use std::time::Duration;
use tracing::{debug, info, warn};

/// The client's RFC 2131 state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No lease; the next poll sends a DISCOVER.
    Init,
    /// DISCOVER sent, waiting for an OFFER.
    Selecting,
    /// REQUEST sent for an OFFER, waiting for ACK/NAK.
    Requesting,
    /// INIT-REBOOT: REQUEST for a remembered address sent, waiting for ACK/NAK.
    Rebooting,
    /// Lease applied; waiting for T1.
    Bound,
    /// T1 passed: REQUEST unicast to the leasing server.
    Renewing,
    /// T2 passed: REQUEST broadcast to any server.
    Rebinding,
    /// The lease was released; the machine does nothing more.
    Released,
}

/// Where a packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255:67 from 0.0.0.0 (or from our address while rebinding), Ethernet broadcast.
    Broadcast,
    /// Unicast to a server's port 67 from our configured address.
    Unicast(Ipv4Addr),
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this DHCP payload (UDP 68 -> 67).
    Send {
        /// The encoded DHCP message (at least 300 bytes).
        bytes: Vec<u8>,
        /// Where to.
        destination: Destination,
    },
    /// Apply (or refresh) this lease on the interface.
    Configure(Lease),
    /// Remove this lease's address and routes from the interface.
    Deconfigure(Lease),
    /// Call [`Client::poll`] at this time at the latest.
    SleepUntil(Duration),
}

/// Knobs of the client. `Config::new(mac)` gives the defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Ethernet address of the interface.
    pub mac: [u8; 6],
    /// Client identifier (option 61); defaults to type 1 + MAC.
    pub client_id: Vec<u8>,
    /// Host name to send (option 12).
    pub hostname: Option<String>,
    /// First retransmission timeout. RFC 2131 suggests 4 s; the default is 1 s
    /// because the first DISCOVER after link-up is often lost while the switch
    /// port settles, and a 4 s wait then dominates boot time. Doubling follows.
    pub initial_timeout: Duration,
    /// Retransmission timeout cap (RFC 2131: 64 s).
    pub max_timeout: Duration,
    /// Jitter bound: each timeout is randomised by ±min(jitter, timeout/4)
    /// (RFC 2131: ±1 s on a 4 s base).
    pub jitter: Duration,
    /// REQUEST transmissions in REQUESTING before going back to INIT.
    pub request_attempts: u32,
    /// REQUEST transmissions in INIT-REBOOT before falling back to INIT.
    pub reboot_attempts: u32,
    /// Seed of the RNG for xids and jitter (pass a fixed one in tests).
    pub seed: u64,
}

impl Config {
    /// Defaults for an Ethernet interface with address `mac`.
    pub fn new(mac: [u8; 6]) -> Self {
        let mut client_id = vec![1u8];
        client_id.extend_from_slice(&mac);
        Self {
            mac,
            client_id,
            hostname: None,
            initial_timeout: Duration::from_secs(1),
            max_timeout: Duration::from_secs(64),
            jitter: Duration::from_secs(1),
            request_attempts: 4,
            reboot_attempts: 2,
            seed: 0,
        }
    }
}

/// The parameters we ask for (option 55).
pub const PARAMETER_REQUEST_LIST: [u8; 13] = [
    opt::SUBNET_MASK,
    opt::CLASSLESS_ROUTES,
    opt::ROUTER,
    opt::DNS,
    opt::HOSTNAME,
    opt::DOMAIN_NAME,
    opt::MTU,
    opt::BROADCAST,
    opt::NTP_SERVERS,
    opt::LEASE_TIME,
    opt::T1,
    opt::T2,
    opt::DOMAIN_SEARCH,
];

/// splitmix64: tiny, seedable, good enough for xids and jitter.
#[derive(Debug, Clone)]
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The low 32 bits of [`Rng::next`].
    fn next_u32(&mut self) -> u32 {
        let [a, b, c, d, ..] = self.next().to_le_bytes();
        u32::from_le_bytes([a, b, c, d])
    }
}

/// The DHCPv4 client state machine.
#[derive(Debug, Clone)]
pub struct Client {
    cfg: Config,
    state: State,
    rng: Rng,
    xid: u32,
    attempt: u32,
    deadline: Duration,
    /// When the current acquisition began (for the `secs` field).
    acquire_start: Duration,
    /// When the REQUEST of the current transaction was first sent: lease times count from here.
    request_sent: Duration,
    /// The OFFER being requested.
    offer: Option<Lease>,
    /// The remembered address for INIT-REBOOT.
    reboot_address: Option<Ipv4Addr>,
    /// The lease in force and when it started.
    lease: Option<(Lease, Duration)>,
    /// Consecutive NAKs, to back off from a NAK storm.
    naks: u32,
}

impl Client {
    /// A client starting in INIT; the first [`poll`](Self::poll) sends a DISCOVER.
    pub fn new(cfg: Config) -> Self {
        let mut rng = Rng(cfg.seed);
        let xid = rng.next_u32();
        Self {
            cfg,
            state: State::Init,
            rng,
            xid,
            attempt: 0,
            deadline: Duration::ZERO,
            acquire_start: Duration::ZERO,
            request_sent: Duration::ZERO,
            offer: None,
            reboot_address: None,
            lease: None,
            naks: 0,
        }
    }

    /// A client starting in INIT-REBOOT, asking again for `address` from a
    /// saved, unexpired lease; it falls back to INIT if no server answers.
    pub fn with_saved_address(cfg: Config, address: Ipv4Addr) -> Self {
        let mut c = Self::new(cfg);
        c.reboot_address = Some(address);
        c
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The lease in force, if any.
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref().map(|(l, _)| l)
    }

    /// The transaction id of the current exchange.
    pub fn xid(&self) -> u32 {
        self.xid
    }

    /// When the machine next wants to be polled.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    fn timeout(&mut self, attempt: u32) -> Duration {
        let base = self
            .cfg
            .initial_timeout
            .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
            .min(self.cfg.max_timeout);
        let j = self.cfg.jitter.min(base / 4);
        // Saturating: the jitter is configuration, and an absurd one must
        // not overflow.
        let span = u64::try_from(j.as_millis())
            .unwrap_or(u64::MAX)
            .saturating_mul(2);
        if span == 0 {
            return base;
        }
        let r = self.rng.next() % span.saturating_add(1);
        base.saturating_add(Duration::from_millis(r))
            .saturating_sub(j)
    }

    fn new_xid(&mut self) {
        self.xid = self.rng.next_u32();
    }

    fn base(&self, t: MessageType, now: Duration) -> Message {
        let mut m = Message::request(self.xid, self.cfg.mac);
        m.secs =
            u16::try_from(now.saturating_sub(self.acquire_start).as_secs()).unwrap_or(u16::MAX);
        m.push(opt::MESSAGE_TYPE, [t as u8]);
        m.push(opt::CLIENT_ID, self.cfg.client_id.clone());
        m
    }

    fn with_params(&self, m: &mut Message) {
        if let Some(h) = &self.cfg.hostname {
            m.push(opt::HOSTNAME, h.as_bytes().to_vec());
        }
        m.push(opt::PARAMETER_REQUEST_LIST, PARAMETER_REQUEST_LIST.to_vec());
        m.push(opt::MAX_MESSAGE_SIZE, MAX_MESSAGE_SIZE.to_be_bytes());
    }

    fn discover(&self, now: Duration) -> Action {
        let mut m = self.base(MessageType::Discover, now);
        self.with_params(&mut m);
        Action::Send {
            bytes: m.encode(),
            destination: Destination::Broadcast,
        }
    }

    /// The REQUEST for the current state.
    fn request(&self, now: Duration) -> Action {
        let mut m = self.base(MessageType::Request, now);
        self.with_params(&mut m);
        let mut destination = Destination::Broadcast;
        match self.state {
            State::Requesting => {
                if let Some(o) = &self.offer {
                    m.push(opt::REQUESTED_IP, o.address.octets());
                    m.push(opt::SERVER_ID, o.server_id.octets());
                }
            }
            State::Rebooting => {
                if let Some(a) = self.reboot_address {
                    m.push(opt::REQUESTED_IP, a.octets());
                }
            }
            State::Renewing | State::Rebinding => {
                if let Some((l, _)) = &self.lease {
                    m.ciaddr = l.address;
                    if self.state == State::Renewing {
                        destination = Destination::Unicast(l.server_id);
                    }
                }
            }
            _ => {}
        }
        Action::Send {
            bytes: m.encode(),
            destination,
        }
    }

    fn sleep(&self, mut out: Vec<Action>) -> Vec<Action> {
        if self.state != State::Released {
            out.push(Action::SleepUntil(self.deadline));
        }
        out
    }

    /// Advances timers: sends, retransmits, renews, rebinds or expires as due.
    pub fn poll(&mut self, now: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        // A loop because one step may lead straight into another (expiry -> INIT -> DISCOVER).
        for _ in 0..4 {
            if self.state == State::Released || now < self.deadline {
                break;
            }
            self.step(now, &mut out);
        }
        self.sleep(out)
    }

    fn step(&mut self, now: Duration, out: &mut Vec<Action>) {
        match self.state {
            State::Init => {
                self.new_xid();
                self.acquire_start = now;
                self.attempt = 0;
                self.offer = None;
                if self.reboot_address.is_some() {
                    self.state = State::Rebooting;
                    self.request_sent = now;
                    info!(address = ?self.reboot_address, "INIT-REBOOT: requesting the saved address");
                    out.push(self.request(now));
                } else {
                    self.state = State::Selecting;
                    info!(
                        xid = format_args!("{:#010x}", self.xid),
                        "INIT: sending DISCOVER"
                    );
                    out.push(self.discover(now));
                }
                let t = self.timeout(0);
                self.deadline = now + t;
            }
            State::Selecting => {
                self.attempt += 1;
                debug!(attempt = self.attempt, "retransmitting DISCOVER");
                out.push(self.discover(now));
                let t = self.timeout(self.attempt);
                self.deadline = now + t;
            }
            State::Requesting | State::Rebooting => {
                let limit = if self.state == State::Requesting {
                    self.cfg.request_attempts
                } else {
                    self.cfg.reboot_attempts
                };
                self.attempt += 1;
                if self.attempt >= limit {
                    info!(state = ?self.state, "no answer to REQUEST, back to INIT");
                    self.reboot_address = None;
                    self.state = State::Init;
                    self.deadline = now;
                    return;
                }
                debug!(attempt = self.attempt, "retransmitting REQUEST");
                out.push(self.request(now));
                let t = self.timeout(self.attempt);
                self.deadline = now + t;
            }
            State::Bound | State::Renewing | State::Rebinding => {
                let Some((lease, start)) = self.lease.clone() else {
                    self.state = State::Init;
                    self.deadline = now;
                    return;
                };
                let t1 = start.saturating_add(lease.t1());
                let t2 = start.saturating_add(lease.t2());
                let expiry = start.saturating_add(lease.lease_time());
                if now >= expiry {
                    warn!(address = %lease.address, "lease expired, deconfiguring");
                    out.push(Action::Deconfigure(lease));
                    self.lease = None;
                    self.state = State::Init;
                    self.deadline = now;
                    return;
                }
                let (next_state, until) = if now >= t2 {
                    (State::Rebinding, expiry)
                } else if now >= t1 {
                    (State::Renewing, t2)
                } else {
                    (State::Bound, t1)
                };
                if next_state == State::Bound {
                    self.deadline = t1;
                    return;
                }
                if next_state != self.state {
                    info!(address = %lease.address, "{:?}: T{} reached", next_state, if next_state == State::Renewing { 1 } else { 2 });
                    self.state = next_state;
                    self.new_xid();
                    self.acquire_start = now;
                }
                self.request_sent = now;
                out.push(self.request(now));
                // RFC 2131 §4.4.5: wait half the remaining time, at least 60 s,
                // but never past the next phase.
                let half = (until.saturating_sub(now)) / 2;
                self.deadline = (now + half.max(Duration::from_secs(60))).min(until);
            }
            State::Released => {}
        }
    }

    /// Handles a received DHCP payload (UDP port 68). Anything that does not
    /// belong to the current exchange is logged and ignored.
    pub fn handle_packet(&mut self, bytes: &[u8], now: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        self.receive(bytes, now, &mut out);
        // Run due timers (an ACK may have been processed after a deadline).
        let mut rest = self.poll(now);
        rest.retain(|a| !matches!(a, Action::SleepUntil(_)));
        out.extend(rest);
        self.sleep(out)
    }

    fn receive(&mut self, bytes: &[u8], now: Duration, out: &mut Vec<Action>) {
        let m = match Message::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                warn!("ignoring a malformed DHCP packet: {e}");
                return;
            }
        };
        if m.op != 2 {
            return;
        }
        if m.xid != self.xid {
            debug!(
                got = m.xid,
                want = self.xid,
                "ignoring a reply with another xid"
            );
            return;
        }
        if m.mac() != Some(self.cfg.mac) {
            warn!("ignoring a reply for another hardware address");
            return;
        }
        let Some(kind) = m.message_type() else {
            warn!("ignoring a reply without a known message type");
            return;
        };
        let server = m.option(opt::SERVER_ID).and_then(super::packet::ip);
        match (kind, self.state) {
            (MessageType::Offer, State::Selecting) => match Lease::from_message(&m, None) {
                Ok(offer) => {
                    info!(address = %offer.address, server = %offer.server_id, "OFFER accepted, sending REQUEST");
                    self.offer = Some(offer);
                    self.state = State::Requesting;
                    self.attempt = 0;
                    self.request_sent = now;
                    out.push(self.request(now));
                    let t = self.timeout(0);
                    self.deadline = now + t;
                }
                Err(e) => warn!("ignoring an OFFER: {e}"),
            },
            (
                MessageType::Ack,
                State::Requesting | State::Rebooting | State::Renewing | State::Rebinding,
            ) => {
                let fallback = match self.state {
                    State::Requesting => self.offer.as_ref().map(|o| o.server_id),
                    State::Renewing => self.lease.as_ref().map(|(l, _)| l.server_id),
                    _ => None,
                };
                if self.state == State::Requesting && server.is_some() && server != fallback {
                    warn!(server = ?server, "ignoring an ACK from a server we did not select");
                    return;
                }
                let lease = match Lease::from_message(&m, fallback) {
                    Ok(l) => l,
                    Err(e) => {
                        warn!("ignoring an ACK: {e}");
                        return;
                    }
                };
                if self.state == State::Requesting
                    && self
                        .offer
                        .as_ref()
                        .is_some_and(|o| o.address != lease.address)
                {
                    warn!(address = %lease.address, "ignoring an ACK for an address we did not request");
                    return;
                }
                if let Some((old, _)) = &self.lease {
                    if old.address != lease.address || old.prefix != lease.prefix {
                        info!(old = %old.address, new = %lease.address, "the server moved us to another address");
                        out.push(Action::Deconfigure(old.clone()));
                    }
                }
                info!(
                    address = %lease.address, prefix = lease.prefix, server = %lease.server_id,
                    lease_secs = lease.lease_secs, t1 = lease.t1_secs, t2 = lease.t2_secs,
                    "{} ACK: lease bound",
                    match self.state { State::Renewing => "RENEWING", State::Rebinding => "REBINDING", State::Rebooting => "INIT-REBOOT", _ => "REQUESTING" }
                );
                let start = self.request_sent;
                self.deadline = start.saturating_add(lease.t1());
                out.push(Action::Configure(lease.clone()));
                self.lease = Some((lease, start));
                self.state = State::Bound;
                self.offer = None;
                self.reboot_address = None;
                self.naks = 0;
            }
            (
                MessageType::Nak,
                State::Requesting | State::Rebooting | State::Renewing | State::Rebinding,
            ) => {
                let expected = match self.state {
                    State::Requesting => self.offer.as_ref().map(|o| o.server_id),
                    State::Renewing => self.lease.as_ref().map(|(l, _)| l.server_id),
                    _ => None,
                };
                if let (Some(s), Some(e)) = (server, expected) {
                    if s != e {
                        warn!(server = %s, "ignoring a NAK from a server we did not talk to");
                        return;
                    }
                }
                let msg = m
                    .option(opt::MESSAGE)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                warn!(state = ?self.state, server = ?server, message = %msg, "NAK: back to INIT");
                if let Some((old, _)) = self.lease.take() {
                    out.push(Action::Deconfigure(old));
                }
                self.offer = None;
                self.reboot_address = None;
                self.state = State::Init;
                // Back off from NAK storms: 0, 1, 2, 4 ... 64 s.
                let delay = if self.naks == 0 {
                    Duration::ZERO
                } else {
                    Duration::from_secs(1u64 << (self.naks - 1).min(6))
                };
                self.naks = self.naks.saturating_add(1);
                self.deadline = now + delay;
            }
            (kind, state) => debug!(?kind, ?state, "ignoring an unexpected message"),
        }
    }

    /// Releases the lease (on shutdown): a RELEASE unicast to the server and a
    /// Deconfigure. The machine then stays in [`State::Released`].
    pub fn release(&mut self, now: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some((lease, _)) = self.lease.take() {
            self.new_xid();
            let mut m = self.base(MessageType::Release, now);
            m.secs = 0;
            m.ciaddr = lease.address;
            m.push(opt::SERVER_ID, lease.server_id.octets());
            info!(address = %lease.address, server = %lease.server_id, "sending RELEASE");
            out.push(Action::Send {
                bytes: m.encode(),
                destination: Destination::Unicast(lease.server_id),
            });
            out.push(Action::Deconfigure(lease));
        }
        self.state = State::Released;
        out
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
