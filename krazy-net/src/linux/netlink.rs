//! A minimal synchronous rtnetlink client: link up, MTU, IPv4 addresses and routes.
//!
//! Hand-written (about 200 lines) instead of `rtnetlink` (async, breaks its API
//! between minor versions) or `netlink-packet-route` (large): the client needs
//! five request types and one reply type (the ACK).

use super::NetError;
use nix::errno::Errno;
use nix::sys::socket::{
    self, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use nix::sys::time::TimeVal;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const IFA_CACHEINFO: u16 = 6;
const IFLA_MTU: u16 = 4;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_PREFSRC: u16 = 7;
const RT_TABLE_MAIN: u8 = 254;
/// Routes we add are marked "proto dhcp" so they are easy to tell apart.
const RTPROT_DHCP: u8 = 16;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;

/// A NETLINK_ROUTE socket.
#[derive(Debug)]
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

/// One IPv4 route to add or remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination network.
    pub destination: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Next hop, or 0.0.0.0 for an on-link route.
    pub gateway: Ipv4Addr,
    /// Preferred source address (ties the route to our address).
    pub source: Ipv4Addr,
    /// Route metric.
    pub metric: u32,
}

fn attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
}

impl Netlink {
    /// Opens a NETLINK_ROUTE socket whose reads time out after 2 s.
    pub fn open() -> Result<Self, NetError> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(|e| NetError::io("open a netlink socket", "-", e.into()))?;
        socket::setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(2, 0))
            .map_err(|e| NetError::io("set the netlink socket's receive timeout", "-", e.into()))?;
        Ok(Self { fd, seq: 1 })
    }

    /// Sends one request with `payload` and waits for the kernel's ACK.
    fn request(
        &mut self,
        kind: u16,
        flags: u16,
        payload: &[u8],
        what: &'static str,
        iface: &str,
    ) -> Result<(), NetError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut msg = Vec::with_capacity(16 + payload.len());
        msg.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(payload);
        // pid 0: the kernel.
        let kernel = NetlinkAddr::new(0, 0);
        socket::sendto(self.fd.as_raw_fd(), &msg, &kernel, MsgFlags::empty())
            .map_err(|e| NetError::io(what, iface, e.into()))?;
        let mut buf = [0u8; 8192];
        loop {
            let n = match socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(NetError::io(what, iface, e.into())),
            };
            let mut data = buf.get(..n).unwrap_or(&[]);
            while data.len() >= 16 {
                let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
                let typ = u16::from_ne_bytes([data[4], data[5]]);
                let rseq = u32::from_ne_bytes([data[8], data[9], data[10], data[11]]);
                if len < 16 || len > data.len() {
                    break;
                }
                if typ == NLMSG_ERROR && rseq == seq && len >= 20 {
                    let err = i32::from_ne_bytes([data[16], data[17], data[18], data[19]]);
                    return if err == 0 {
                        Ok(())
                    } else {
                        Err(NetError::Netlink {
                            what,
                            iface: iface.to_string(),
                            error: io::Error::from_raw_os_error(-err),
                        })
                    };
                }
                data = data.get(len.div_ceil(4) * 4..).unwrap_or(&[]);
            }
        }
    }

    fn ifinfo(index: u32, flags: u32, change: u32) -> Vec<u8> {
        let mut p = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
        p.extend_from_slice(&(index as i32).to_ne_bytes());
        p.extend_from_slice(&flags.to_ne_bytes());
        p.extend_from_slice(&change.to_ne_bytes());
        p
    }

    /// Sets the link administratively up.
    pub fn link_up(&mut self, index: u32, iface: &str) -> Result<(), NetError> {
        let up = libc::IFF_UP as u32;
        let p = Self::ifinfo(index, up, up);
        self.request(RTM_NEWLINK, 0, &p, "set the link up", iface)
    }

    /// Sets the link MTU.
    pub fn set_mtu(&mut self, index: u32, iface: &str, mtu: u32) -> Result<(), NetError> {
        let mut p = Self::ifinfo(index, 0, 0);
        attr(&mut p, IFLA_MTU, &mtu.to_ne_bytes());
        self.request(RTM_NEWLINK, 0, &p, "set the MTU", iface)
    }

    fn ifaddr(index: u32, address: Ipv4Addr, prefix: u8) -> Vec<u8> {
        let mut p = vec![libc::AF_INET as u8, prefix, 0, RT_SCOPE_UNIVERSE];
        p.extend_from_slice(&index.to_ne_bytes());
        attr(&mut p, IFA_LOCAL, &address.octets());
        attr(&mut p, IFA_ADDRESS, &address.octets());
        p
    }

    /// Adds or replaces an address; `lifetime_secs` (u32::MAX = forever) lets
    /// the kernel drop it by itself if we die before the lease ends.
    pub fn replace_address(
        &mut self,
        index: u32,
        iface: &str,
        address: Ipv4Addr,
        prefix: u8,
        broadcast: Ipv4Addr,
        lifetime_secs: u32,
    ) -> Result<(), NetError> {
        let mut p = Self::ifaddr(index, address, prefix);
        attr(&mut p, IFA_BROADCAST, &broadcast.octets());
        let mut ci = Vec::with_capacity(16);
        for v in [lifetime_secs, lifetime_secs, 0, 0] {
            ci.extend_from_slice(&v.to_ne_bytes());
        }
        attr(&mut p, IFA_CACHEINFO, &ci);
        self.request(
            RTM_NEWADDR,
            NLM_F_CREATE | NLM_F_REPLACE,
            &p,
            "add the address",
            iface,
        )
    }

    /// Removes an address (routes whose source is that address go with it).
    pub fn delete_address(
        &mut self,
        index: u32,
        iface: &str,
        address: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetError> {
        let p = Self::ifaddr(index, address, prefix);
        self.request(RTM_DELADDR, 0, &p, "remove the address", iface)
    }

    fn rtmsg(index: u32, r: &RouteSpec) -> Vec<u8> {
        let scope = if r.gateway.is_unspecified() {
            RT_SCOPE_LINK
        } else {
            RT_SCOPE_UNIVERSE
        };
        let mut p = vec![
            libc::AF_INET as u8,
            r.prefix,
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_DHCP,
            scope,
            RTN_UNICAST,
        ];
        p.extend_from_slice(&0u32.to_ne_bytes());
        if r.prefix > 0 {
            attr(&mut p, RTA_DST, &r.destination.octets());
        }
        if !r.gateway.is_unspecified() {
            attr(&mut p, RTA_GATEWAY, &r.gateway.octets());
        }
        attr(&mut p, RTA_OIF, &index.to_ne_bytes());
        attr(&mut p, RTA_PREFSRC, &r.source.octets());
        attr(&mut p, RTA_PRIORITY, &r.metric.to_ne_bytes());
        p
    }

    /// Adds or replaces a route through the interface.
    pub fn replace_route(
        &mut self,
        index: u32,
        iface: &str,
        r: &RouteSpec,
    ) -> Result<(), NetError> {
        let p = Self::rtmsg(index, r);
        self.request(
            RTM_NEWROUTE,
            NLM_F_CREATE | NLM_F_REPLACE,
            &p,
            "add a route",
            iface,
        )
    }

    /// Removes a route.
    pub fn delete_route(&mut self, index: u32, iface: &str, r: &RouteSpec) -> Result<(), NetError> {
        let p = Self::rtmsg(index, r);
        self.request(RTM_DELROUTE, 0, &p, "remove a route", iface)
    }
}
