//! State machine tests with a simulated clock and an in-memory server.

use super::*;
use crate::dhcp::packet::{opt, Message, MessageType};

const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 50);

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn cfg() -> Config {
    let mut c = Config::new(MAC);
    c.seed = 42;
    c.hostname = Some("krazy".into());
    c
}

/// The single Send of `actions`, decoded.
fn sent(actions: &[Action]) -> (Message, Destination) {
    let sends: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { bytes, destination } => Some((bytes, *destination)),
            _ => None,
        })
        .collect();
    assert_eq!(sends.len(), 1, "expected exactly one Send in {actions:?}");
    assert!(sends[0].0.len() >= 300, "not padded to 300 bytes");
    (Message::decode(sends[0].0).unwrap(), sends[0].1)
}

fn sleep_of(actions: &[Action]) -> Duration {
    match actions.last() {
        Some(Action::SleepUntil(t)) => *t,
        other => panic!("last action is not SleepUntil: {other:?}"),
    }
}

fn configured(actions: &[Action]) -> Option<&Lease> {
    actions.iter().find_map(|a| match a {
        Action::Configure(l) => Some(l),
        _ => None,
    })
}

fn deconfigured(actions: &[Action]) -> bool {
    actions.iter().any(|a| matches!(a, Action::Deconfigure(_)))
}

/// A server reply to `req` of type `t` with the usual options.
struct Reply {
    t: MessageType,
    server: Ipv4Addr,
    addr: Ipv4Addr,
    lease: u32,
    t1: Option<u32>,
    t2: Option<u32>,
    mask: [u8; 4],
    router: Option<Ipv4Addr>,
}

impl Reply {
    fn new(t: MessageType) -> Self {
        Self {
            t,
            server: SERVER,
            addr: ADDR,
            lease: 3600,
            t1: None,
            t2: None,
            mask: [255, 255, 255, 0],
            router: Some(SERVER),
        }
    }
    fn to(&self, req: &Message) -> Vec<u8> {
        let mut m = Message::request(req.xid, MAC);
        m.chaddr = req.chaddr;
        m.op = 2;
        m.yiaddr = if self.t == MessageType::Nak {
            Ipv4Addr::UNSPECIFIED
        } else {
            self.addr
        };
        m.push(opt::MESSAGE_TYPE, [self.t as u8]);
        m.push(opt::SERVER_ID, self.server.octets());
        if self.t != MessageType::Nak {
            m.push(opt::LEASE_TIME, self.lease.to_be_bytes());
            if let Some(t1) = self.t1 {
                m.push(opt::T1, t1.to_be_bytes());
            }
            if let Some(t2) = self.t2 {
                m.push(opt::T2, t2.to_be_bytes());
            }
            m.push(opt::SUBNET_MASK, self.mask);
            if let Some(r) = self.router {
                m.push(opt::ROUTER, r.octets());
            }
            m.push(opt::DNS, [10, 0, 0, 53, 10, 0, 0, 54]);
            m.push(opt::DOMAIN_NAME, b"example.org".to_vec());
            m.push(opt::NTP_SERVERS, [10, 0, 0, 123]);
            m.push(opt::MTU, 1400u16.to_be_bytes());
        }
        m.encode()
    }
}

/// Drives a fresh client to BOUND at time 0; returns the client and the ACK's actions.
fn bound(reply_ack: Reply) -> (Client, Vec<Action>) {
    let mut c = Client::new(cfg());
    let a = c.poll(s(0));
    let (disc, _) = sent(&a);
    let a = c.handle_packet(&Reply::new(MessageType::Offer).to(&disc), s(0));
    let (req, _) = sent(&a);
    let a = c.handle_packet(&reply_ack.to(&req), s(0));
    assert_eq!(c.state(), State::Bound);
    (c, a)
}

#[test]
fn full_exchange_init_selecting_requesting_bound() {
    let mut c = Client::new(cfg());
    assert_eq!(c.state(), State::Init);
    let a = c.poll(s(0));
    assert_eq!(c.state(), State::Selecting);
    let (disc, dest) = sent(&a);
    assert_eq!(dest, Destination::Broadcast);
    assert_eq!(disc.message_type(), Some(MessageType::Discover));
    assert_eq!(disc.option(opt::HOSTNAME), Some(&b"krazy"[..]));
    assert_eq!(
        disc.option(opt::CLIENT_ID),
        Some(&[1, 2, 0x11, 0x22, 0x33, 0x44, 0x55][..])
    );
    assert!(disc
        .option(opt::PARAMETER_REQUEST_LIST)
        .unwrap()
        .contains(&opt::CLASSLESS_ROUTES));
    assert_eq!(
        disc.option(opt::MAX_MESSAGE_SIZE),
        Some(&1472u16.to_be_bytes()[..])
    );
    assert_eq!(disc.mac(), Some(MAC));

    let a = c.handle_packet(&Reply::new(MessageType::Offer).to(&disc), s(0));
    assert_eq!(c.state(), State::Requesting);
    let (req, dest) = sent(&a);
    assert_eq!(dest, Destination::Broadcast);
    assert_eq!(req.message_type(), Some(MessageType::Request));
    assert_eq!(req.xid, disc.xid);
    assert_eq!(req.option(opt::REQUESTED_IP), Some(&ADDR.octets()[..]));
    assert_eq!(req.option(opt::SERVER_ID), Some(&SERVER.octets()[..]));
    assert_eq!(req.ciaddr, Ipv4Addr::UNSPECIFIED);

    let a = c.handle_packet(&Reply::new(MessageType::Ack).to(&req), s(1));
    assert_eq!(c.state(), State::Bound);
    let l = configured(&a).unwrap();
    assert_eq!(l.address, ADDR);
    assert_eq!(l.prefix, 24);
    assert_eq!(l.gateway(), Some(SERVER));
    assert_eq!(
        l.dns,
        vec![Ipv4Addr::new(10, 0, 0, 53), Ipv4Addr::new(10, 0, 0, 54)]
    );
    assert_eq!(l.domain.as_deref(), Some("example.org"));
    assert_eq!(l.ntp, vec![Ipv4Addr::new(10, 0, 0, 123)]);
    assert_eq!(l.mtu, Some(1400));
    assert_eq!(l.broadcast, Ipv4Addr::new(10, 0, 0, 255));
    assert_eq!((l.t1_secs, l.t2_secs), (1800, 3150));
    // T1 counts from when the REQUEST was sent (t=0), not the ACK (t=1).
    assert_eq!(sleep_of(&a), s(1800));
}

#[test]
fn retransmission_backoff_is_exponential_with_bounded_jitter() {
    let mut c = Client::new(cfg());
    let mut now = s(0);
    let a = c.poll(now);
    let xid = sent(&a).0.xid;
    let mut deadlines = vec![sleep_of(&a)];
    for _ in 0..8 {
        now = *deadlines.last().unwrap();
        // Polling early does nothing.
        let early = c.poll(now - Duration::from_millis(1));
        assert_eq!(early, vec![Action::SleepUntil(now)]);
        let a = c.poll(now);
        let (m, _) = sent(&a);
        assert_eq!(m.xid, xid, "retransmissions keep the xid");
        assert_eq!(m.message_type(), Some(MessageType::Discover));
        deadlines.push(sleep_of(&a));
    }
    let mut prev = s(0);
    for (i, d) in deadlines.iter().enumerate() {
        let base = (1u64 << i).min(64) as f64;
        let gap = (*d - prev).as_secs_f64();
        let jitter = (base / 4.0).min(1.0);
        assert!(
            (gap - base).abs() <= jitter + 1e-9,
            "attempt {i}: gap {gap} base {base}"
        );
        prev = *d;
    }
    // Same seed, same schedule: deterministic.
    let mut c2 = Client::new(cfg());
    assert_eq!(sleep_of(&c2.poll(s(0))), deadlines[0]);
}

#[test]
fn rfc_profile_timing_4_8_16_32_64() {
    let mut conf = cfg();
    conf.initial_timeout = s(4);
    let mut c = Client::new(conf);
    let mut prev = s(0);
    let mut next = sleep_of(&c.poll(prev));
    for base in [4u64, 8, 16, 32, 64, 64] {
        let gap = (next - prev).as_secs_f64();
        assert!(
            (gap - base as f64).abs() <= 1.0,
            "gap {gap} for base {base}"
        );
        prev = next;
        next = sleep_of(&c.poll(prev));
    }
}

#[test]
fn requesting_times_out_back_to_init() {
    let mut c = Client::new(cfg());
    let (disc, _) = sent(&c.poll(s(0)));
    let a = c.handle_packet(&Reply::new(MessageType::Offer).to(&disc), s(0));
    let mut t = sleep_of(&a);
    for _ in 0..3 {
        let a = c.poll(t);
        assert_eq!(sent(&a).0.message_type(), Some(MessageType::Request));
        assert_eq!(c.state(), State::Requesting);
        t = sleep_of(&a);
    }
    let a = c.poll(t);
    assert_eq!(c.state(), State::Selecting);
    let (m, _) = sent(&a);
    assert_eq!(m.message_type(), Some(MessageType::Discover));
    assert_ne!(m.xid, disc.xid, "a new exchange has a new xid");
}

#[test]
fn t1_renews_by_unicast_and_t2_rebinds_by_broadcast() {
    let mut ack = Reply::new(MessageType::Ack);
    ack.lease = 100;
    ack.t1 = Some(50);
    ack.t2 = Some(80);
    let (mut c, a) = bound(ack);
    assert_eq!(sleep_of(&a), s(50));
    assert!(c.poll(s(49)).len() == 1);
    let a = c.poll(s(50));
    assert_eq!(c.state(), State::Renewing);
    let (renew, dest) = sent(&a);
    assert_eq!(dest, Destination::Unicast(SERVER));
    assert_eq!(renew.ciaddr, ADDR);
    assert_eq!(renew.option(opt::SERVER_ID), None);
    assert_eq!(renew.option(opt::REQUESTED_IP), None);
    // Retransmission in RENEWING waits at least 60 s but never past T2.
    assert_eq!(sleep_of(&a), s(80));
    let a = c.poll(s(80));
    assert_eq!(c.state(), State::Rebinding);
    let (rebind, dest) = sent(&a);
    assert_eq!(dest, Destination::Broadcast);
    assert_eq!(rebind.ciaddr, ADDR);
    assert_eq!(sleep_of(&a), s(100));
    // Another server answers the broadcast: back to BOUND with its id.
    let mut ack = Reply::new(MessageType::Ack);
    ack.server = Ipv4Addr::new(10, 0, 0, 2);
    let a = c.handle_packet(&ack.to(&rebind), s(81));
    assert_eq!(c.state(), State::Bound);
    assert!(!deconfigured(&a), "same address: no deconfigure");
    assert_eq!(
        configured(&a).unwrap().server_id,
        Ipv4Addr::new(10, 0, 0, 2)
    );
    assert_eq!(sleep_of(&a), s(80 + 1800));
}

#[test]
fn renew_ack_rebinds_times_to_the_request() {
    let mut ack = Reply::new(MessageType::Ack);
    ack.lease = 1000;
    let (mut c, _) = bound(ack);
    let a = c.poll(s(500));
    let (renew, _) = sent(&a);
    let a = c.handle_packet(&Reply::new(MessageType::Ack).to(&renew), s(502));
    assert_eq!(c.state(), State::Bound);
    assert!(configured(&a).is_some());
    assert_eq!(sleep_of(&a), s(500 + 1800));
}

#[test]
fn expiry_deconfigures_and_restarts() {
    let mut ack = Reply::new(MessageType::Ack);
    ack.lease = 100;
    let (mut c, _) = bound(ack);
    let a = c.poll(s(50));
    assert_eq!(c.state(), State::Renewing);
    let t = sleep_of(&a);
    assert_eq!(t, s(87)); // T2 = 87.5 s truncated
    let a = c.poll(t);
    assert_eq!(c.state(), State::Rebinding);
    assert_eq!(sleep_of(&a), s(100));
    let a = c.poll(s(100));
    assert!(deconfigured(&a));
    assert_eq!(c.state(), State::Selecting);
    assert_eq!(sent(&a).0.message_type(), Some(MessageType::Discover));
    assert!(c.lease().is_none());
}

#[test]
fn a_late_poll_after_suspend_expires_directly() {
    let (mut c, _) = bound(Reply::new(MessageType::Ack));
    let a = c.poll(s(100_000));
    assert!(deconfigured(&a));
    assert_eq!(c.state(), State::Selecting);
}

#[test]
fn nak_in_requesting_goes_back_to_init() {
    let mut c = Client::new(cfg());
    let (disc, _) = sent(&c.poll(s(0)));
    let (req, _) = sent(&c.handle_packet(&Reply::new(MessageType::Offer).to(&disc), s(0)));
    let a = c.handle_packet(&Reply::new(MessageType::Nak).to(&req), s(1));
    assert!(!deconfigured(&a));
    // Restarted at once with a new DISCOVER.
    assert_eq!(c.state(), State::Selecting);
    let (m, _) = sent(&a);
    assert_eq!(m.message_type(), Some(MessageType::Discover));
}

#[test]
fn nak_while_renewing_deconfigures() {
    let (mut c, _) = bound(Reply::new(MessageType::Ack));
    let (renew, _) = sent(&c.poll(s(1800)));
    let a = c.handle_packet(&Reply::new(MessageType::Nak).to(&renew), s(1801));
    assert!(deconfigured(&a));
    assert_eq!(c.state(), State::Selecting);
    // A NAK storm backs off: the second NAK in a row waits before rediscovering.
    let disc = sent(&a).0;
    let (req, _) = sent(&c.handle_packet(&Reply::new(MessageType::Offer).to(&disc), s(1801)));
    let a = c.handle_packet(&Reply::new(MessageType::Nak).to(&req), s(1801));
    assert_eq!(c.state(), State::Init);
    assert_eq!(sleep_of(&a), s(1802));
}

#[test]
fn nak_from_a_foreign_server_is_ignored_while_renewing() {
    let (mut c, _) = bound(Reply::new(MessageType::Ack));
    let (renew, _) = sent(&c.poll(s(1800)));
    let mut nak = Reply::new(MessageType::Nak);
    nak.server = Ipv4Addr::new(10, 9, 9, 9);
    let a = c.handle_packet(&nak.to(&renew), s(1801));
    assert!(!deconfigured(&a));
    assert_eq!(c.state(), State::Renewing);
}

#[test]
fn server_that_changes_its_id_is_followed() {
    let (mut c, _) = bound(Reply::new(MessageType::Ack));
    let (renew, dest) = sent(&c.poll(s(1800)));
    assert_eq!(dest, Destination::Unicast(SERVER));
    let mut ack = Reply::new(MessageType::Ack);
    ack.server = Ipv4Addr::new(10, 0, 0, 3);
    c.handle_packet(&ack.to(&renew), s(1800));
    assert_eq!(c.lease().unwrap().server_id, Ipv4Addr::new(10, 0, 0, 3));
    let (_, dest) = sent(&c.poll(s(3600)));
    assert_eq!(dest, Destination::Unicast(Ipv4Addr::new(10, 0, 0, 3)));
}

#[test]
fn a_lease_that_shrinks() {
    let (mut c, _) = bound(Reply::new(MessageType::Ack));
    let (renew, _) = sent(&c.poll(s(1800)));
    let mut ack = Reply::new(MessageType::Ack);
    ack.lease = 60;
    let a = c.handle_packet(&ack.to(&renew), s(1800));
    assert_eq!(configured(&a).unwrap().lease_secs, 60);
    assert_eq!(sleep_of(&a), s(1830));
    // Expiry follows the new, shorter lease.
    let a = c.poll(s(1830));
    assert_eq!(c.state(), State::Renewing);
    let t = sleep_of(&a);
    assert_eq!(t, s(1852));
    c.poll(t);
    assert_eq!(c.state(), State::Rebinding);
    let a = c.poll(s(1860));
    assert!(deconfigured(&a));
}

#[test]
fn renew_to_another_address_deconfigures_the_old_one() {
    let (mut c, _) = bound(Reply::new(MessageType::Ack));
    let (renew, _) = sent(&c.poll(s(1800)));
    let mut ack = Reply::new(MessageType::Ack);
    ack.addr = Ipv4Addr::new(10, 0, 0, 77);
    let a = c.handle_packet(&ack.to(&renew), s(1800));
    let pos_de = a
        .iter()
        .position(|x| matches!(x, Action::Deconfigure(l) if l.address == ADDR));
    let pos_co = a.iter().position(
        |x| matches!(x, Action::Configure(l) if l.address == Ipv4Addr::new(10, 0, 0, 77)),
    );
    assert!(pos_de.unwrap() < pos_co.unwrap());
}

#[test]
fn init_reboot_ack_nak_and_timeout() {
    // ACK
    let mut c = Client::with_saved_address(cfg(), ADDR);
    let a = c.poll(s(0));
    assert_eq!(c.state(), State::Rebooting);
    let (req, dest) = sent(&a);
    assert_eq!(dest, Destination::Broadcast);
    assert_eq!(req.message_type(), Some(MessageType::Request));
    assert_eq!(req.option(opt::REQUESTED_IP), Some(&ADDR.octets()[..]));
    assert_eq!(req.option(opt::SERVER_ID), None);
    assert_eq!(req.ciaddr, Ipv4Addr::UNSPECIFIED);
    let a = c.handle_packet(&Reply::new(MessageType::Ack).to(&req), s(0));
    assert_eq!(c.state(), State::Bound);
    assert_eq!(configured(&a).unwrap().address, ADDR);

    // NAK
    let mut c = Client::with_saved_address(cfg(), ADDR);
    let (req, _) = sent(&c.poll(s(0)));
    let a = c.handle_packet(&Reply::new(MessageType::Nak).to(&req), s(0));
    assert_eq!(c.state(), State::Selecting);
    assert_eq!(sent(&a).0.message_type(), Some(MessageType::Discover));

    // silence: falls back to INIT after the configured attempts
    let mut c = Client::with_saved_address(cfg(), ADDR);
    let t = sleep_of(&c.poll(s(0)));
    let a = c.poll(t);
    assert_eq!(c.state(), State::Rebooting);
    let a = c.poll(sleep_of(&a));
    assert_eq!(c.state(), State::Selecting);
    assert_eq!(sent(&a).0.message_type(), Some(MessageType::Discover));
}

#[test]
fn release_on_shutdown() {
    let (mut c, _) = bound(Reply::new(MessageType::Ack));
    let a = c.release(s(10));
    assert_eq!(c.state(), State::Released);
    let (m, dest) = sent(&a);
    assert_eq!(dest, Destination::Unicast(SERVER));
    assert_eq!(m.message_type(), Some(MessageType::Release));
    assert_eq!(m.ciaddr, ADDR);
    assert_eq!(m.option(opt::SERVER_ID), Some(&SERVER.octets()[..]));
    assert!(deconfigured(&a));
    assert!(c.poll(s(100_000)).is_empty());
    // Releasing without a lease sends nothing.
    let mut c = Client::new(cfg());
    assert!(c.release(s(0)).is_empty());
}

/// Hostile answers: each is ignored, the state and deadline stay as they were.
#[test]
fn hostile_offers_are_ignored() {
    let mut c = Client::new(cfg());
    let a = c.poll(s(0));
    let deadline = sleep_of(&a);
    let (disc, _) = sent(&a);
    let good = Reply::new(MessageType::Offer);

    let mut wrong_xid = disc.clone();
    wrong_xid.xid ^= 1;
    let mut wrong_mac = disc.clone();
    wrong_mac.chaddr[5] ^= 1;
    let mut zero_lease = Reply::new(MessageType::Offer);
    zero_lease.lease = 0;
    let mut bad_mask = Reply::new(MessageType::Offer);
    bad_mask.mask = [255, 0, 255, 0];
    let mut far_router = Reply::new(MessageType::Offer);
    far_router.router = Some(Ipv4Addr::new(192, 168, 1, 1));
    let mut lying = good.to(&disc);
    // Make the last option before END claim more bytes than exist.
    let end = lying.iter().rposition(|b| *b == opt::END).unwrap();
    lying.truncate(end);
    lying.extend_from_slice(&[opt::DNS, 200, 1, 2, 3]);
    let mut bad_cookie = good.to(&disc);
    bad_cookie[236] = 0;
    let mut ours_but_request = good.to(&disc);
    ours_but_request[0] = 1;

    for (name, bytes) in [
        ("wrong xid", good.to(&wrong_xid)),
        ("wrong chaddr", good.to(&wrong_mac)),
        ("zero lease time", zero_lease.to(&disc)),
        ("non-contiguous mask", bad_mask.to(&disc)),
        ("router outside subnet", far_router.to(&disc)),
        ("lying option length", lying),
        ("bad cookie", bad_cookie),
        ("BOOTREQUEST", ours_but_request),
        ("truncated", good.to(&disc)[..100].to_vec()),
        (
            "ACK while selecting",
            Reply::new(MessageType::Ack).to(&disc),
        ),
    ] {
        let a = c.handle_packet(&bytes, s(0));
        assert_eq!(c.state(), State::Selecting, "{name}");
        assert_eq!(a, vec![Action::SleepUntil(deadline)], "{name}");
    }
    // Still works afterwards.
    c.handle_packet(&good.to(&disc), s(0));
    assert_eq!(c.state(), State::Requesting);
}

#[test]
fn hostile_acks_keep_the_bound_lease() {
    let (mut c, _) = bound(Reply::new(MessageType::Ack));
    let (renew, _) = sent(&c.poll(s(1800)));
    let mut zero = Reply::new(MessageType::Ack);
    zero.lease = 0;
    let a = c.handle_packet(&zero.to(&renew), s(1801));
    assert_eq!(c.state(), State::Renewing);
    assert!(configured(&a).is_none() && !deconfigured(&a));
    assert_eq!(c.lease().unwrap().address, ADDR);
}

#[test]
fn classless_routes_win_over_router() {
    let mut c = Client::new(cfg());
    let (disc, _) = sent(&c.poll(s(0)));
    let (req, _) = sent(&c.handle_packet(&Reply::new(MessageType::Offer).to(&disc), s(0)));
    let mut ack = Message::decode(&Reply::new(MessageType::Ack).to(&req)).unwrap();
    ack.push(
        opt::CLASSLESS_ROUTES,
        vec![0, 10, 0, 0, 254, 16, 172, 16, 10, 0, 0, 9],
    );
    let a = c.handle_packet(&ack.encode(), s(0));
    let l = configured(&a).unwrap();
    assert_eq!(l.gateway(), Some(Ipv4Addr::new(10, 0, 0, 254)));
    assert_eq!(l.routes.len(), 2);
    assert_eq!(l.routes[1].destination, Ipv4Addr::new(172, 16, 0, 0));
}
