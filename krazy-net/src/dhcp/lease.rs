//! A DHCP lease: what an ACK grants, validated against hostile values.

use super::packet::{self, opt, Message};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::time::Duration;

/// One route from option 121 (or the default route from option 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination network.
    pub destination: Ipv4Addr,
    /// Destination prefix length (0 = default route).
    pub prefix: u8,
    /// Next hop; 0.0.0.0 means the destination is on the link.
    pub gateway: Ipv4Addr,
}

/// A validated lease. Times are durations relative to when the request was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Our address.
    pub address: Ipv4Addr,
    /// Prefix length from the subnet mask.
    pub prefix: u8,
    /// The server that granted the lease (option 54).
    pub server_id: Ipv4Addr,
    /// Lease duration in seconds (u32::MAX = infinite).
    pub lease_secs: u32,
    /// Renewal time T1 in seconds.
    pub t1_secs: u32,
    /// Rebinding time T2 in seconds.
    pub t2_secs: u32,
    /// Routes to install: option 121 when present (RFC 3442), else a default
    /// route via the first router of option 3.
    pub routes: Vec<Route>,
    /// DNS servers (option 6).
    pub dns: Vec<Ipv4Addr>,
    /// Domain name (option 15).
    pub domain: Option<String>,
    /// Domain search list (option 119).
    pub search: Vec<String>,
    /// Interface MTU (option 26), when sane (>= 576).
    pub mtu: Option<u16>,
    /// NTP servers (option 42).
    pub ntp: Vec<Ipv4Addr>,
    /// Broadcast address (option 28) or the one computed from the prefix.
    pub broadcast: Ipv4Addr,
}

/// Why an OFFER or ACK was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// yiaddr is zero, broadcast, multicast or loopback.
    #[error("the offered address {0} is not a usable unicast address")]
    BadAddress(Ipv4Addr),
    /// Option 51 missing or zero.
    #[error("the lease time is missing or zero")]
    NoLeaseTime,
    /// Option 1 is not a contiguous mask.
    #[error("the subnet mask {0} is not contiguous")]
    BadNetmask(Ipv4Addr),
    /// Option 54 missing.
    #[error("the server identifier (option 54) is missing")]
    NoServerId,
    /// Option 3's router is not inside our subnet.
    #[error("the router {router} is outside the subnet {address}/{prefix}")]
    RouterOutsideSubnet {
        /// The router.
        router: Ipv4Addr,
        /// Our address.
        address: Ipv4Addr,
        /// Our prefix.
        prefix: u8,
    },
    /// An option has a length that does not fit its type.
    #[error("option {0} has a malformed value")]
    Malformed(u8),
}

/// Converts a mask to a prefix length, if contiguous.
pub fn mask_to_prefix(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    if m.checked_shl(ones).unwrap_or(0) != 0 {
        return None;
    }
    u8::try_from(ones).ok()
}

/// The netmask for a prefix length (0..=32).
pub fn prefix_to_mask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(
        u32::MAX
            .checked_shl(32 - u32::from(prefix.min(32)))
            .unwrap_or(0),
    )
}

/// True when `a` is in `net/prefix`.
pub fn in_subnet(a: Ipv4Addr, net: Ipv4Addr, prefix: u8) -> bool {
    let m = u32::from(prefix_to_mask(prefix));
    u32::from(a) & m == u32::from(net) & m
}

impl Lease {
    /// Lease duration.
    pub fn lease_time(&self) -> Duration {
        Duration::from_secs(u64::from(self.lease_secs))
    }
    /// T1 duration.
    pub fn t1(&self) -> Duration {
        Duration::from_secs(u64::from(self.t1_secs))
    }
    /// T2 duration.
    pub fn t2(&self) -> Duration {
        Duration::from_secs(u64::from(self.t2_secs))
    }

    /// The default gateway, if any route is a default route.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.routes
            .iter()
            .find(|r| r.prefix == 0)
            .map(|r| r.gateway)
    }

    /// Validates an OFFER or ACK and extracts the lease. `fallback_server`
    /// is used when option 54 is missing (never for OFFERs: the caller passes None).
    pub fn from_message(
        m: &Message,
        fallback_server: Option<Ipv4Addr>,
    ) -> Result<Self, LeaseError> {
        let address = m.yiaddr;
        if address.is_unspecified()
            || address.is_broadcast()
            || address.is_multicast()
            || address.is_loopback()
        {
            return Err(LeaseError::BadAddress(address));
        }
        let server_id = match m.option(opt::SERVER_ID) {
            Some(v) => packet::ip(v).ok_or(LeaseError::Malformed(opt::SERVER_ID))?,
            None => fallback_server.ok_or(LeaseError::NoServerId)?,
        };
        let lease_secs = match m.option(opt::LEASE_TIME).map(packet::u32_be) {
            Some(Some(t)) if t > 0 => t,
            Some(None) => return Err(LeaseError::Malformed(opt::LEASE_TIME)),
            _ => return Err(LeaseError::NoLeaseTime),
        };
        let prefix = match m.option(opt::SUBNET_MASK) {
            Some(v) => {
                let mask = packet::ip(v).ok_or(LeaseError::Malformed(opt::SUBNET_MASK))?;
                match mask_to_prefix(mask) {
                    Some(p) if p > 0 => p,
                    _ => return Err(LeaseError::BadNetmask(mask)),
                }
            }
            // Classful default (RFC 2131 leaves it to the client).
            None => match address.octets()[0] {
                0..=127 => 8,
                128..=191 => 16,
                _ => 24,
            },
        };
        // T1/T2: defaults 0.5 and 0.875 of the lease (RFC 2131 §4.4.5);
        // clamp so that T1 <= T2 <= lease.
        let infinite = lease_secs == u32::MAX;
        let num = |code| m.option(code).and_then(packet::u32_be);
        let def_t2 = if infinite {
            u32::MAX
        } else {
            // 7/8 of a u32 is below it: the fallback is never taken.
            u32::try_from(u64::from(lease_secs) * 7 / 8).unwrap_or(lease_secs)
        };
        let t2 = num(opt::T2)
            .filter(|t| *t > 0)
            .unwrap_or(def_t2)
            .min(lease_secs);
        let def_t1 = if infinite { u32::MAX } else { lease_secs / 2 };
        let t1 = num(opt::T1).filter(|t| *t > 0).unwrap_or(def_t1).min(t2);
        let list = |code| -> Result<Vec<Ipv4Addr>, LeaseError> {
            match m.option(code) {
                None => Ok(Vec::new()),
                Some(v) => packet::ip_list(v).ok_or(LeaseError::Malformed(code)),
            }
        };
        let text = |code| {
            m.option(code)
                .map(|v| {
                    String::from_utf8_lossy(v)
                        .trim_end_matches('\0')
                        .to_string()
                })
                .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_graphic()))
        };
        let mut routes = Vec::new();
        if let Some(v) = m.option(opt::CLASSLESS_ROUTES) {
            routes = classless_routes(v).ok_or(LeaseError::Malformed(opt::CLASSLESS_ROUTES))?;
            routes.retain(|r| {
                let ok = r.gateway.is_unspecified() || in_subnet(r.gateway, address, prefix);
                if !ok {
                    tracing::warn!(gateway = %r.gateway, dest = %r.destination, "ignoring a classless route whose gateway is outside our subnet");
                }
                ok
            });
        } else if let Some(router) = list(opt::ROUTER)?.first() {
            if !in_subnet(*router, address, prefix) {
                return Err(LeaseError::RouterOutsideSubnet {
                    router: *router,
                    address,
                    prefix,
                });
            }
            routes.push(Route {
                destination: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
                gateway: *router,
            });
        }
        let broadcast = match m.option(opt::BROADCAST).and_then(packet::ip) {
            Some(b) if in_subnet(b, address, prefix) => b,
            _ => Ipv4Addr::from(u32::from(address) | !u32::from(prefix_to_mask(prefix))),
        };
        let mtu = match m.option(opt::MTU) {
            Some([a, b]) => Some(u16::from_be_bytes([*a, *b])).filter(|m| *m >= 576),
            _ => None,
        };
        let search = m
            .option(opt::DOMAIN_SEARCH)
            .and_then(packet::domain_search)
            .unwrap_or_default();
        Ok(Self {
            address,
            prefix,
            server_id,
            lease_secs,
            t1_secs: t1,
            t2_secs: t2,
            routes,
            dns: list(opt::DNS)?,
            domain: text(opt::DOMAIN_NAME),
            search,
            mtu,
            ntp: list(opt::NTP_SERVERS)?,
            broadcast,
        })
    }
}

/// Decodes option 121 (RFC 3442): width, significant destination octets, router.
pub fn classless_routes(mut v: &[u8]) -> Option<Vec<Route>> {
    let mut out = Vec::new();
    while let Some((&width, rest)) = v.split_first() {
        if width > 32 {
            return None;
        }
        let n = usize::from(width).div_ceil(8);
        if rest.len() < n + 4 {
            return None;
        }
        let mut dest = [0u8; 4];
        dest[..n].copy_from_slice(&rest[..n]);
        let gw = packet::ip(&rest[n..n + 4])?;
        let destination =
            Ipv4Addr::from(u32::from(Ipv4Addr::from(dest)) & u32::from(prefix_to_mask(width)));
        out.push(Route {
            destination,
            prefix: width,
            gateway: gw,
        });
        v = &rest[n + 4..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(mask_to_prefix(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(prefix_to_mask(20), Ipv4Addr::new(255, 255, 240, 0));
        assert_eq!(prefix_to_mask(0), Ipv4Addr::UNSPECIFIED);
    }

    #[test]
    fn classless() {
        let v = [0, 10, 0, 0, 1, 24, 192, 168, 5, 10, 0, 0, 254];
        let r = classless_routes(&v).unwrap();
        assert_eq!(r[0].prefix, 0);
        assert_eq!(r[0].gateway, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(r[1].destination, Ipv4Addr::new(192, 168, 5, 0));
        assert_eq!(classless_routes(&[33, 1, 2, 3, 4, 5, 6, 7, 8]), None);
        assert_eq!(classless_routes(&[24, 1, 2]), None);
    }
}
