//! A raw AF_PACKET socket for DHCP before the interface has an address, and
//! the Ethernet/IPv4/UDP framing that goes with it.

use super::NetError;
use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, LinkAddr, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrLike,
};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

const ETH_P_IP: u16 = 0x0800;
const FILTER_LEN: u16 = 11;

/// Classic BPF: accept unfragmented IPv4/UDP frames to port 68, drop the rest,
/// so the socket does not wake up for every packet on the link.
const FILTER: [(u16, u8, u8, u32); FILTER_LEN as usize] = [
    (0x28, 0, 0, 12),       // ldh [12]        ethertype
    (0x15, 0, 8, 0x0800),   // jeq IPv4 else drop
    (0x30, 0, 0, 23),       // ldb [23]        IP protocol
    (0x15, 0, 6, 17),       // jeq UDP else drop
    (0x28, 0, 0, 20),       // ldh [20]        flags + fragment offset
    (0x45, 4, 0, 0x1fff),   // jset fragment -> drop
    (0xb1, 0, 0, 14),       // ldxb 4*([14]&0xf)  IP header length
    (0x48, 0, 0, 16),       // ldh [x+16]      UDP destination port
    (0x15, 0, 1, 68),       // jeq 68 else drop
    (0x06, 0, 0, 0x4_0000), // accept
    (0x06, 0, 0, 0),        // drop
];

/// A raw packet socket bound to one interface.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    index: u32,
    mac: [u8; 6],
}

/// The Internet checksum (RFC 1071) over `parts`.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [b] = chunks.remainder() {
            sum += u32::from(*b) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Builds an Ethernet frame carrying `payload` in IPv4/UDP from 68 to 67.
pub fn build_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = (8 + payload.len()) as u16;
    let total = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + usize::from(total));
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&ETH_P_IP.to_be_bytes());
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64; // TTL
    ip[9] = 17; // UDP
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut udp = [0u8; 8];
    udp[0..2].copy_from_slice(&68u16.to_be_bytes());
    udp[2..4].copy_from_slice(&67u16.to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = 17;
    pseudo[10..12].copy_from_slice(&udp_len.to_be_bytes());
    let mut c = checksum(&[&pseudo, &udp, payload]);
    if c == 0 {
        c = 0xffff;
    }
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&udp);
    f.extend_from_slice(payload);
    f
}

/// Extracts the UDP payload of an Ethernet frame to port 68; `None` for
/// anything else or anything malformed. The IP header checksum is verified;
/// the UDP checksum is not, because frames captured on the sending host (veth,
/// offload) carry a partial one.
pub fn parse_frame(frame: &[u8]) -> Option<(&[u8], Ipv4Addr)> {
    if frame.get(12..14)? != ETH_P_IP.to_be_bytes() {
        return None;
    }
    let ip = frame.get(14..)?;
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if ip.first()? >> 4 != 4 || ihl < 20 || *ip.get(9)? != 17 {
        return None;
    }
    let header = ip.get(..ihl)?;
    if checksum(&[header]) != 0 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let ip = ip.get(..total)?;
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let udp = ip.get(ihl..)?;
    if udp.get(2..4)? != 68u16.to_be_bytes() {
        return None;
    }
    let ulen = usize::from(u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]));
    if ulen < 8 {
        return None;
    }
    Some((udp.get(8..ulen)?, src))
}

impl PacketSocket {
    /// Opens a raw socket on interface `index` with hardware address `mac`.
    pub fn open(iface: &str, index: u32, mac: [u8; 6]) -> Result<Self, NetError> {
        let fd = socket::socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::EthIp,
        )
        .map_err(|e| NetError::io("open a raw packet socket", iface, e.into()))?;
        attach_filter(&fd).map_err(|e| NetError::io("attach the packet filter", iface, e))?;
        link_addr(index, [0; 6])
            .and_then(|sa| socket::bind(fd.as_raw_fd(), &sa))
            .map_err(|e| NetError::io("bind the raw packet socket", iface, e.into()))?;
        Ok(Self { fd, index, mac })
    }

    /// The descriptor, for poll(2).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Broadcasts a DHCP payload from `src` (0.0.0.0 before we have an address).
    pub fn send_broadcast(
        &self,
        iface: &str,
        src: Ipv4Addr,
        payload: &[u8],
    ) -> Result<(), NetError> {
        let frame = build_frame(self.mac, [0xff; 6], src, Ipv4Addr::BROADCAST, payload);
        link_addr(self.index, [0xff; 6])
            .and_then(|sa| socket::sendto(self.fd.as_raw_fd(), &frame, &sa, MsgFlags::empty()))
            .map_err(|e| NetError::io("send a DHCP broadcast", iface, e.into()))?;
        Ok(())
    }

    /// Receives one frame without blocking; returns the DHCP payload if it is one.
    pub fn try_recv(&self, buf: &mut [u8]) -> Option<Vec<u8>> {
        let n = socket::recv(self.fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT).ok()?;
        let frame = buf.get(..n).filter(|f| !f.is_empty())?;
        parse_frame(frame).map(|(p, _)| p.to_vec())
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Attaches [`FILTER`] (`SO_ATTACH_FILTER`, which nix has no option for).
fn attach_filter(fd: &OwnedFd) -> io::Result<()> {
    let insns = FILTER.map(|(code, jt, jf, k)| libc::sock_filter { code, jt, jf, k });
    let prog = libc::sock_fprog {
        len: FILTER_LEN,
        filter: insns.as_ptr().cast_mut(),
    };
    let size = libc::socklen_t::try_from(std::mem::size_of::<libc::sock_fprog>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: prog points at insns (FILTER_LEN instructions), which outlives
    // the call; the kernel copies the program; size is sock_fprog's.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast(),
            size,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The `sockaddr_ll` of interface `index` for IPv4 frames to or from `mac`
/// (nix reads these but has no constructor, so it is made with libc).
fn link_addr(index: u32, mac: [u8; 6]) -> Result<LinkAddr, Errno> {
    // SAFETY: all-zero is a valid sockaddr_ll; fields are set below.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family =
        libc::sa_family_t::try_from(libc::AF_PACKET).map_err(|_| Errno::EAFNOSUPPORT)?;
    sa.sll_protocol = ETH_P_IP.to_be();
    sa.sll_ifindex = i32::try_from(index).map_err(|_| Errno::ENODEV)?;
    sa.sll_halen = 6;
    sa.sll_addr[..6].copy_from_slice(&mac);
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_ll>())
        .map_err(|_| Errno::EINVAL)?;
    // SAFETY: the pointer is to a live, initialised sockaddr_ll and len is
    // its exact size; from_raw copies it.
    unsafe { LinkAddr::from_raw((&sa as *const libc::sockaddr_ll).cast(), Some(len)) }
        .ok_or(Errno::EAFNOSUPPORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_checksums() {
        let payload = vec![7u8; 301];
        let f = build_frame(
            [2; 6],
            [0xff; 6],
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            &payload,
        );
        assert_eq!(checksum(&[&f[14..34]]), 0, "IP header checksum verifies");
        // UDP checksum verifies over the pseudo header.
        let mut pseudo = [0u8; 12];
        pseudo[4..8].copy_from_slice(&[255; 4]);
        pseudo[9] = 17;
        pseudo[10..12].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        assert_eq!(checksum(&[&pseudo, &f[34..]]), 0);
        // A frame to port 67 is not for us; turn ports around to parse it.
        assert!(parse_frame(&f).is_none());
        let mut g = f.clone();
        g[36..38].copy_from_slice(&68u16.to_be_bytes());
        assert_eq!(parse_frame(&g).unwrap().0, &payload[..]);
        assert!(parse_frame(&g[..40]).is_none());
    }
}
