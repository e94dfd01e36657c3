//! A small, strict DHCPv4 / BOOTP codec (RFC 2131, RFC 2132).
//!
//! Written here instead of using `dhcproto` because the client needs only a
//! fraction of it, must pad to the 300-byte BOOTP minimum, and must never
//! panic on hostile bytes in any build profile (dhcproto 0.15's decoder trips a
//! `debug_assert` under fuzzing). The decoder checks every length against the
//! bytes that are really there, never allocates more than the input's size, and
//! returns a typed error instead.

use std::net::Ipv4Addr;

/// BOOTP fixed header size (op .. file), before the magic cookie.
pub const HEADER_LEN: usize = 236;
/// The magic cookie that starts the options area (RFC 2132 §2).
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// The BOOTP minimum message size that relays and old servers expect (RFC 1542).
pub const MIN_LEN: usize = 300;
/// The maximum message size we announce (option 57): a full Ethernet frame's UDP payload.
pub const MAX_MESSAGE_SIZE: u16 = 1500 - 20 - 8;

/// Option codes used by the client (RFC 2132, RFC 3397, RFC 3442).
#[allow(missing_docs)]
pub mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const MTU: u8 = 26;
    pub const BROADCAST: u8 = 28;
    pub const NTP_SERVERS: u8 = 42;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_REQUEST_LIST: u8 = 55;
    pub const MESSAGE: u8 = 56;
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    pub const T1: u8 = 58;
    pub const T2: u8 = 59;
    pub const CLIENT_ID: u8 = 61;
    pub const DOMAIN_SEARCH: u8 = 119;
    pub const CLASSLESS_ROUTES: u8 = 121;
    pub const END: u8 = 255;
}

/// DHCP message types (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum MessageType {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
    Inform = 8,
}

impl MessageType {
    /// Maps the option-53 byte to a type, if it is one we know.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Discover,
            2 => Self::Offer,
            3 => Self::Request,
            4 => Self::Decline,
            5 => Self::Ack,
            6 => Self::Nak,
            7 => Self::Release,
            8 => Self::Inform,
            _ => return None,
        })
    }
}

/// Why a packet could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the BOOTP header plus cookie.
    #[error("the packet is {0} bytes, shorter than the 240-byte BOOTP header and magic cookie")]
    TooShort(usize),
    /// The magic cookie is wrong, so this is plain BOOTP or garbage.
    #[error("the options area does not start with the DHCP magic cookie")]
    BadCookie,
    /// An option's length byte points past the end of its area.
    #[error("option {code} claims {len} bytes but only {left} remain in the {area}")]
    OptionOverrun {
        /// Option code.
        code: u8,
        /// Claimed length.
        len: usize,
        /// Bytes left in the area.
        left: usize,
        /// Which area (options, file, sname).
        area: &'static str,
    },
    /// An option code appears without its length byte.
    #[error("option {0} is cut off before its length byte")]
    MissingLength(u8),
    /// The hardware address length is larger than the chaddr field.
    #[error("hardware address length {0} is larger than 16")]
    BadHlen(u8),
}

/// A decoded (or to-be-encoded) DHCP message. Options keep their wire order;
/// repeated codes are concatenated on decode (RFC 3396).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// 1 = BOOTREQUEST, 2 = BOOTREPLY.
    pub op: u8,
    /// Transaction id.
    pub xid: u32,
    /// Seconds since the client began acquiring.
    pub secs: u16,
    /// Flags; bit 15 is the broadcast flag.
    pub flags: u16,
    /// Client address (set while BOUND/RENEWING/REBINDING).
    pub ciaddr: Ipv4Addr,
    /// "Your" address offered or assigned by the server.
    pub yiaddr: Ipv4Addr,
    /// Next server address.
    pub siaddr: Ipv4Addr,
    /// Relay agent address.
    pub giaddr: Ipv4Addr,
    /// Client hardware address, `hlen` bytes used.
    pub chaddr: [u8; 16],
    /// Hardware address length (6 for Ethernet).
    pub hlen: u8,
    /// Options as (code, value) in order.
    pub options: Vec<(u8, Vec<u8>)>,
}

impl Message {
    /// A new BOOTREQUEST with Ethernet hardware address `mac` and no options.
    pub fn request(xid: u32, mac: [u8; 6]) -> Self {
        let mut chaddr = [0u8; 16];
        chaddr[..6].copy_from_slice(&mac);
        Self {
            op: 1,
            xid,
            secs: 0,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr,
            hlen: 6,
            options: Vec::new(),
        }
    }

    /// The value of option `code`, if present.
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_slice())
    }

    /// Adds an option; values longer than 255 bytes are split into several
    /// instances when encoding (RFC 3396).
    pub fn push(&mut self, code: u8, value: impl Into<Vec<u8>>) {
        self.options.push((code, value.into()));
    }

    /// The message type (option 53), if present and known.
    pub fn message_type(&self) -> Option<MessageType> {
        match self.option(opt::MESSAGE_TYPE) {
            Some([t]) => MessageType::from_u8(*t),
            _ => None,
        }
    }

    /// The client hardware address as 6 Ethernet bytes, if hlen is 6.
    pub fn mac(&self) -> Option<[u8; 6]> {
        if self.hlen != 6 {
            return None;
        }
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.chaddr[..6]);
        Some(m)
    }

    /// Encodes the message, padded with zeros to at least 300 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(MIN_LEN + 64);
        b.push(self.op);
        b.push(1); // htype Ethernet
        b.push(self.hlen.min(16));
        b.push(0); // hops
        b.extend_from_slice(&self.xid.to_be_bytes());
        b.extend_from_slice(&self.secs.to_be_bytes());
        b.extend_from_slice(&self.flags.to_be_bytes());
        for a in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            b.extend_from_slice(&a.octets());
        }
        b.extend_from_slice(&self.chaddr);
        b.resize(HEADER_LEN, 0); // sname (64) and file (128) stay empty
        b.extend_from_slice(&MAGIC_COOKIE);
        for (code, value) in &self.options {
            if value.is_empty() {
                b.extend_from_slice(&[*code, 0]);
            }
            for chunk in value.chunks(255) {
                b.push(*code);
                // chunks(255) guarantees the length fits in a byte.
                b.push(u8::try_from(chunk.len()).unwrap_or(255));
                b.extend_from_slice(chunk);
            }
        }
        b.push(opt::END);
        if b.len() < MIN_LEN {
            b.resize(MIN_LEN, 0);
        }
        b
    }

    /// Decodes a message from the UDP payload. Never panics; every length is
    /// checked against the bytes present. Honours option overload (52).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() < HEADER_LEN + 4 {
            return Err(DecodeError::TooShort(bytes.len()));
        }
        let (head, rest) = bytes.split_at(HEADER_LEN);
        let (cookie, opts) = rest.split_at(4);
        if cookie != MAGIC_COOKIE {
            return Err(DecodeError::BadCookie);
        }
        let u32_at =
            |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let ip_at = |i: usize| Ipv4Addr::from(u32_at(i));
        let hlen = head[2];
        if hlen > 16 {
            return Err(DecodeError::BadHlen(hlen));
        }
        let mut chaddr = [0u8; 16];
        chaddr.copy_from_slice(&head[28..44]);
        let mut options: Vec<(u8, Vec<u8>)> = Vec::new();
        parse_area(opts, "options", &mut options)?;
        // Option overload: 1 = file holds options, 2 = sname, 3 = both.
        let overload = options
            .iter()
            .find(|(c, _)| *c == opt::OVERLOAD)
            .and_then(|(_, v)| v.first().copied())
            .unwrap_or(0);
        if overload & 1 != 0 {
            parse_area(&head[108..236], "file", &mut options)?;
        }
        if overload & 2 != 0 {
            parse_area(&head[44..108], "sname", &mut options)?;
        }
        Ok(Self {
            op: head[0],
            xid: u32_at(4),
            secs: u16::from_be_bytes([head[8], head[9]]),
            flags: u16::from_be_bytes([head[10], head[11]]),
            ciaddr: ip_at(12),
            yiaddr: ip_at(16),
            siaddr: ip_at(20),
            giaddr: ip_at(24),
            chaddr,
            hlen,
            options,
        })
    }
}

/// Parses one options area, appending to `out` and concatenating repeated
/// codes. Stops at END or the end of the area.
fn parse_area(
    mut area: &[u8],
    name: &'static str,
    out: &mut Vec<(u8, Vec<u8>)>,
) -> Result<(), DecodeError> {
    while let Some((&code, rest)) = area.split_first() {
        match code {
            opt::PAD => area = rest,
            opt::END => return Ok(()),
            _ => {
                let Some((&len, rest)) = rest.split_first() else {
                    return Err(DecodeError::MissingLength(code));
                };
                let len = usize::from(len);
                if len > rest.len() {
                    return Err(DecodeError::OptionOverrun {
                        code,
                        len,
                        left: rest.len(),
                        area: name,
                    });
                }
                let (value, rest) = rest.split_at(len);
                match out.iter_mut().find(|(c, _)| *c == code) {
                    Some((_, v)) => v.extend_from_slice(value),
                    None => out.push((code, value.to_vec())),
                }
                area = rest;
            }
        }
    }
    Ok(())
}

/// Reads a list of IPv4 addresses; `None` when the length is not a positive multiple of 4.
pub fn ip_list(v: &[u8]) -> Option<Vec<Ipv4Addr>> {
    if v.is_empty() || v.len() % 4 != 0 {
        return None;
    }
    Some(
        v.chunks_exact(4)
            .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
            .collect(),
    )
}

/// Reads exactly one IPv4 address.
pub fn ip(v: &[u8]) -> Option<Ipv4Addr> {
    match v {
        [a, b, c, d] => Some(Ipv4Addr::new(*a, *b, *c, *d)),
        _ => None,
    }
}

/// Reads a 32-bit big-endian number.
pub fn u32_be(v: &[u8]) -> Option<u32> {
    match v {
        [a, b, c, d] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// Decodes an RFC 1035 name list with compression pointers (option 119,
/// RFC 3397). Pointers may only point backwards, so decoding terminates;
/// `None` on any malformation.
pub fn domain_search(v: &[u8]) -> Option<Vec<String>> {
    let mut names = Vec::new();
    let mut pos = 0usize;
    while pos < v.len() {
        let (name, next) = read_name(v, pos)?;
        if !name.is_empty() {
            names.push(name);
        }
        pos = next;
    }
    Some(names)
}

/// Reads one name starting at `start`; returns it and the offset after it.
fn read_name(v: &[u8], start: usize) -> Option<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut pos = start;
    let mut end_after: Option<usize> = None;
    let mut limit = pos; // pointers must go strictly below this
    let mut total = 0usize;
    loop {
        let len = *v.get(pos)?;
        match len {
            0 => {
                let after = end_after.unwrap_or(pos + 1);
                return Some((labels.join("."), after));
            }
            1..=63 => {
                let l = usize::from(len);
                let label = v.get(pos + 1..pos + 1 + l)?;
                if !label
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
                {
                    return None;
                }
                total += l + 1;
                if total > 255 {
                    return None;
                }
                labels.push(String::from_utf8_lossy(label).into_owned());
                pos += 1 + l;
            }
            0xC0..=0xFF => {
                let lo = *v.get(pos + 1)?;
                let target = (usize::from(len & 0x3F) << 8) | usize::from(lo);
                if target >= limit {
                    return None;
                }
                if end_after.is_none() {
                    end_after = Some(pos + 2);
                }
                limit = target;
                pos = target;
            }
            _ => return None,
        }
    }
}

/// Encodes names for option 119 without compression (used by tests and servers).
pub fn encode_domain_search(names: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for n in names {
        for label in n.split('.').filter(|l| !l.is_empty()) {
            out.push(u8::try_from(label.len()).unwrap_or(63).min(63));
            out.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
        }
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_padding() {
        let mut m = Message::request(0xdead_beef, [2, 0, 0, 0, 0, 1]);
        m.push(opt::MESSAGE_TYPE, [1]);
        m.push(opt::HOSTNAME, b"krazy".to_vec());
        m.push(200, vec![7u8; 300]);
        let b = m.encode();
        assert!(b.len() >= MIN_LEN);
        let small = {
            let mut s = Message::request(1, [2, 0, 0, 0, 0, 1]);
            s.push(opt::MESSAGE_TYPE, [1]);
            s.encode()
        };
        assert_eq!(small.len(), MIN_LEN);
        let d = Message::decode(&b).unwrap();
        assert_eq!(d, m);
        assert_eq!(d.message_type(), Some(MessageType::Discover));
    }

    #[test]
    fn lying_length_is_an_error() {
        let mut m = Message::request(1, [0; 6]).encode();
        m.truncate(240);
        m.extend_from_slice(&[53, 1, 2, 3, 200, 9, 9]);
        assert!(matches!(
            Message::decode(&m),
            Err(DecodeError::OptionOverrun { code: 3, .. })
        ));
        assert_eq!(Message::decode(&m[..100]), Err(DecodeError::TooShort(100)));
    }

    #[test]
    fn search_list_with_pointers() {
        // "eng.example.com" then "corp" + pointer to "example.com"
        let mut v = encode_domain_search(&["eng.example.com"]);
        v.extend_from_slice(&[4, b'c', b'o', b'r', b'p', 0xC0, 4]);
        assert_eq!(
            domain_search(&v).unwrap(),
            vec![
                "eng.example.com".to_string(),
                "corp.example.com".to_string()
            ]
        );
        // a pointer loop is rejected
        assert_eq!(domain_search(&[0xC0, 0]), None);
        assert_eq!(domain_search(&[3, b'a', b'b', 0xC0, 0]), None);
    }
}
