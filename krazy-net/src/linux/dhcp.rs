//! The DHCP driver: runs a [`Client`] on one interface and applies its leases.

use super::netlink::{Netlink, RouteSpec};
use super::packet_socket::PacketSocket;
use super::{NetError, SavedLease};
use crate::dhcp::{Action, Client, Config, Destination, Lease, State};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{self, SigHandler, Signal};
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
use std::ffi::OsString;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How to run the client on one interface.
#[derive(Debug, Clone)]
pub struct Options {
    /// Interface name.
    pub interface: String,
    /// Host name to send.
    pub hostname: Option<String>,
    /// Resolver file to write.
    pub resolv_conf: PathBuf,
    /// Where leases are saved for INIT-REBOOT (None: not saved).
    pub lease_dir: Option<PathBuf>,
    /// Init's socket for change reports (None: not reported).
    pub notify_socket: Option<PathBuf>,
    /// Return after the first lease has been applied.
    pub oneshot: bool,
    /// Metric of the routes we install.
    pub metric: u32,
    /// How long to wait for carrier before trying anyway.
    pub carrier_timeout: Duration,
}

/// Applies a lease with netlink: MTU, address (with the lease as lifetime), routes.
pub fn apply_lease(
    nl: &mut Netlink,
    index: u32,
    iface: &str,
    lease: &Lease,
    metric: u32,
) -> Result<(), NetError> {
    if let Some(mtu) = lease.mtu {
        if let Err(e) = nl.set_mtu(index, iface, u32::from(mtu)) {
            warn!("{e}");
        }
    }
    nl.replace_address(
        index,
        iface,
        lease.address,
        lease.prefix,
        lease.broadcast,
        lease.lease_secs,
    )?;
    // On-link routes first, so that gateways behind them are reachable.
    let mut routes = lease.routes.clone();
    routes.sort_by_key(|r| !r.gateway.is_unspecified());
    for r in &routes {
        let spec = RouteSpec {
            destination: r.destination,
            prefix: r.prefix,
            gateway: r.gateway,
            source: lease.address,
            metric,
        };
        if let Err(e) = nl.replace_route(index, iface, &spec) {
            warn!(dest = %r.destination, prefix = r.prefix, gateway = %r.gateway, "{e}");
        }
    }
    Ok(())
}

/// Removes a lease's routes and address.
pub fn remove_lease(
    nl: &mut Netlink,
    index: u32,
    iface: &str,
    lease: &Lease,
    metric: u32,
) -> Result<(), NetError> {
    for r in &lease.routes {
        let spec = RouteSpec {
            destination: r.destination,
            prefix: r.prefix,
            gateway: r.gateway,
            source: lease.address,
            metric,
        };
        let _ = nl.delete_route(index, iface, &spec);
    }
    nl.delete_address(index, iface, lease.address, lease.prefix)
}

/// A UDP socket on port 68 bound to the interface, for unicast renewals.
fn open_udp(iface: &str) -> Result<UdpSocket, NetError> {
    let err = |what| move |e: Errno| NetError::io(what, iface, e.into());
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(err("open a UDP socket"))?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(err("allow reusing UDP port 68"))?;
    socket::setsockopt(&fd, sockopt::BindToDevice, &OsString::from(iface))
        .map_err(err("bind a UDP socket to the interface"))?;
    socket::bind(fd.as_raw_fd(), &SockaddrIn::new(0, 0, 0, 0, 68))
        .map_err(err("bind UDP port 68"))?;
    let sock = UdpSocket::from(fd);
    sock.set_nonblocking(true)
        .map_err(|e| NetError::io("make the UDP socket non-blocking", iface, e))?;
    Ok(sock)
}

fn seed(mac: [u8; 6]) -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| io::Read::read_exact(&mut f, &mut b))
        .is_ok()
    {
        return u64::from_ne_bytes(b);
    }
    let mut m = [0u8; 8];
    m[..6].copy_from_slice(&mac);
    u64::from_ne_bytes(m) ^ super::unix_now().as_nanos() as u64
}

/// Waits until `iface` exists; None if asked to stop first.
fn wait_for_interface(iface: &str, stop: &AtomicBool) -> Option<u32> {
    let mut logged = false;
    loop {
        if let Some(i) = super::if_index(iface) {
            return Some(i);
        }
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        if !logged {
            info!(iface, "waiting for the interface to appear");
            logged = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs the client on one interface until `stop` is set (then releases the
/// lease) or, with `oneshot`, until the first lease is applied.
pub fn run(opts: &Options, stop: &AtomicBool) -> Result<(), NetError> {
    let iface = opts.interface.as_str();
    let Some(index) = wait_for_interface(iface, stop) else {
        return Ok(());
    };
    let mac = super::mac_address(iface)?;
    let mut nl = Netlink::open()?;
    nl.link_up(index, iface)?;
    let t0 = Instant::now();
    while !super::has_carrier(iface)
        && t0.elapsed() < opts.carrier_timeout
        && !stop.load(Ordering::Relaxed)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !super::has_carrier(iface) {
        warn!(iface, "no carrier, trying anyway");
    }
    let raw = PacketSocket::open(iface, index, mac)?;
    let udp = open_udp(iface)
        .inspect_err(|e| warn!("{e}; renewals will be broadcast"))
        .ok();
    let mut cfg = Config::new(mac);
    cfg.hostname = opts.hostname.clone();
    cfg.seed = seed(mac);
    let saved = opts
        .lease_dir
        .as_deref()
        .and_then(|d| SavedLease::load_valid(d, iface));
    let mut client = match &saved {
        Some(s) => Client::with_saved_address(cfg, s.lease.address),
        None => Client::new(cfg),
    };
    info!(iface, mac = %format_mac(mac), reboot = saved.is_some(), "DHCP client starting");
    let start = Instant::now();
    let mut buf = vec![0u8; 4096];
    let mut actions = client.poll(Duration::ZERO);
    loop {
        let mut deadline = Duration::ZERO;
        for a in actions.drain(..) {
            match a {
                Action::SleepUntil(t) => deadline = t,
                Action::Send { bytes, destination } => {
                    send(&raw, udp.as_ref(), &client, iface, &bytes, destination);
                }
                Action::Configure(lease) => {
                    apply_lease(&mut nl, index, iface, &lease, opts.metric)?;
                    after_configure(opts, &lease);
                    if opts.oneshot {
                        return Ok(());
                    }
                }
                Action::Deconfigure(lease) => {
                    if let Err(e) = remove_lease(&mut nl, index, iface, &lease, opts.metric) {
                        warn!("{e}");
                    }
                    info!(iface, address = %lease.address, "lease removed");
                    if let Some(d) = &opts.lease_dir {
                        let _ = std::fs::remove_file(SavedLease::path(d, iface));
                    }
                    crate::notify::network(opts.notify_socket.as_deref(), iface, &[]);
                }
            }
        }
        if client.state() == State::Released {
            return Ok(());
        }
        // Wait for a packet, the deadline, or a stop request (checked every 200 ms).
        let now = start.elapsed();
        if stop.load(Ordering::Relaxed) {
            actions = client.release(now);
            continue;
        }
        let wait = deadline.saturating_sub(now).min(Duration::from_millis(200));
        let mut fds = vec![PollFd::new(raw.as_fd(), PollFlags::POLLIN)];
        if let Some(u) = &udp {
            fds.push(PollFd::new(u.as_fd(), PollFlags::POLLIN));
        }
        // At most 200 ms, so it fits.
        let ms = u16::try_from(wait.as_millis()).unwrap_or(200);
        match poll(&mut fds, PollTimeout::from(ms)) {
            // A signal (SIGTERM) is seen at the top of the loop.
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(NetError::io("wait for DHCP packets", iface, e.into())),
        }
        let now = start.elapsed();
        let mut got = Vec::new();
        while let Some(p) = raw.try_recv(&mut buf) {
            got.push(p);
        }
        if let Some(u) = &udp {
            while let Ok((n, _)) = u.recv_from(&mut buf) {
                got.push(buf.get(..n).unwrap_or(&[]).to_vec());
            }
        }
        for p in got {
            actions.extend(client.handle_packet(&p, now));
        }
        actions.extend(client.poll(now));
    }
}

fn format_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn send(
    raw: &PacketSocket,
    udp: Option<&UdpSocket>,
    client: &Client,
    iface: &str,
    bytes: &[u8],
    dest: Destination,
) {
    let ours = client
        .lease()
        .map(|l| l.address)
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    let r = match (dest, udp) {
        (Destination::Unicast(server), Some(u)) if !ours.is_unspecified() => u
            .send_to(bytes, SocketAddrV4::new(server, 67))
            .map(|_| ())
            .map_err(|e| NetError::io("send a unicast DHCP message", iface, e)),
        _ => raw.send_broadcast(iface, ours, bytes),
    };
    if let Err(e) = r {
        warn!("{e}");
    }
}

fn after_configure(opts: &Options, lease: &Lease) {
    let iface = opts.interface.as_str();
    info!(
        iface, address = %lease.address, prefix = lease.prefix, gateway = ?lease.gateway(),
        dns = ?lease.dns, lease_secs = lease.lease_secs, "lease applied"
    );
    if !lease.dns.is_empty() {
        let text = super::resolv_conf(iface, lease);
        if let Err(e) = super::write_resolv_conf(&opts.resolv_conf, &text) {
            warn!(path = %opts.resolv_conf.display(), "could not write the resolver file: {e}");
        }
    }
    if let Some(d) = &opts.lease_dir {
        let saved = SavedLease {
            interface: iface.to_string(),
            obtained_unix: super::unix_now().as_secs(),
            lease: lease.clone(),
        };
        if let Err(e) = saved.save(d) {
            warn!(dir = %d.display(), "could not save the lease: {e}");
        }
    }
    crate::notify::network(
        opts.notify_socket.as_deref(),
        iface,
        &[(lease.address, lease.prefix)],
    );
}

/// Applies a static configuration once (link up, address, route, resolver, report).
pub fn apply_static(opts: &Options, lease: &Lease) -> Result<(), NetError> {
    let iface = opts.interface.as_str();
    let index = super::if_index(iface)
        .ok_or_else(|| NetError::io("find the interface", iface, Errno::ENODEV.into()))?;
    let mut nl = Netlink::open()?;
    nl.link_up(index, iface)?;
    apply_lease(&mut nl, index, iface, lease, opts.metric)?;
    let opts = Options {
        lease_dir: None,
        ..opts.clone()
    };
    after_configure(&opts, lease);
    Ok(())
}

/// A flag set by SIGTERM and SIGINT, for a graceful RELEASE. A handler
/// that cannot be installed is logged (the signal then keeps its default
/// action: the process ends without a RELEASE).
pub fn stop_on_signals() -> &'static AtomicBool {
    static STOP: AtomicBool = AtomicBool::new(false);
    extern "C" fn on_signal(_: libc::c_int) {
        STOP.store(true, Ordering::Relaxed);
    }
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler is async-signal-safe (one atomic store) and
        // nothing else in the process manages these signals' handlers.
        if let Err(e) = unsafe { signal::signal(sig, SigHandler::Handler(on_signal)) } {
            warn!("cannot handle {sig}: {e}");
        }
    }
    &STOP
}
