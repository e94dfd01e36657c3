//! Facts about the running system for the overview page and `GET /api/v1/system`.

use std::net::IpAddr;
use std::path::Path;

use serde::Serialize;

/// One address of one interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Address {
    /// Interface name, e.g. `eth0`.
    pub interface: String,
    /// The address.
    pub address: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

/// Memory figures from `/proc/meminfo`, in KiB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// MemTotal.
    pub total_kib: u64,
    /// MemAvailable.
    pub available_kib: u64,
}

/// Usage of the `/perm` file system, in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// The mount point.
    pub path: String,
    /// Total size.
    pub total: u64,
    /// Available to unprivileged users.
    pub available: u64,
}

/// `GET /api/v1/system`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SystemInfo {
    /// Host name.
    pub hostname: String,
    /// The per-device id (32 hex digits, kept in `/perm`), once made.
    pub device_id: Option<String>,
    /// Board or machine model, when known.
    pub model: Option<String>,
    /// Kernel release and version (`uname -rv`).
    pub kernel: String,
    /// Seconds since the kernel booted.
    pub uptime_seconds: u64,
    /// 1, 5 and 15 minute load averages.
    pub load: Option<[f64; 3]>,
    /// Memory.
    pub memory: Option<Memory>,
    /// `/perm` usage, when mounted.
    pub perm: Option<Usage>,
    /// Every address of every interface.
    pub addresses: Vec<Address>,
    /// The image's build id, when known.
    pub build_id: Option<String>,
    /// The running A/B slot, when known.
    pub running_slot: Option<String>,
    /// Whether the ntp service reported a synchronised clock.
    pub clock_synchronized: bool,
    /// Resident memory of this process (PID 1 on a device), from
    /// `/proc/self/status` `VmRSS`.
    pub supervisor_rss_kib: Option<u64>,
}

/// Every address of every interface, from getifaddrs(3).
pub fn addresses() -> Vec<Address> {
    let Ok(ifs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ifa in ifs {
        let (Some(a), m) = (ifa.address, ifa.netmask) else {
            continue;
        };
        let (address, prefix) = if let Some(v4) = a.as_sockaddr_in() {
            let p = m.and_then(|m| m.as_sockaddr_in().map(|n| u32::from(n.ip()).count_ones()));
            (IpAddr::V4(v4.ip()), p.unwrap_or(32))
        } else if let Some(v6) = a.as_sockaddr_in6() {
            let p = m.and_then(|m| m.as_sockaddr_in6().map(|n| u128::from(n.ip()).count_ones()));
            (IpAddr::V6(v6.ip()), p.unwrap_or(128))
        } else {
            continue;
        };
        out.push(Address {
            interface: ifa.interface_name,
            address,
            prefix: u8::try_from(prefix).unwrap_or(128),
        });
    }
    out
}

fn read_trim(p: &str) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| {
            s.trim_matches(|c: char| c.is_whitespace() || c == '\0')
                .to_owned()
        })
        .filter(|s| !s.is_empty())
}

fn meminfo() -> Option<Memory> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.trim_start_matches(':').split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Some(Memory {
        total_kib: field("MemTotal")?,
        available_kib: field("MemAvailable")?,
    })
}

fn usage(path: &Path) -> Option<Usage> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let frsize = st.fragment_size();
    #[allow(clippy::useless_conversion)]
    let (blocks, avail) = (u64::from(st.blocks()), u64::from(st.blocks_available()));
    Some(Usage {
        path: path.display().to_string(),
        total: blocks.saturating_mul(frsize),
        available: avail.saturating_mul(frsize),
    })
}

/// Gathers the facts; `perm` is checked only when it is a mount point.
pub fn gather(
    perm: Option<&Path>,
    build_id: Option<&str>,
    running_slot: Option<&str>,
    clock: bool,
) -> SystemInfo {
    let uname = nix::sys::utsname::uname().ok();
    let kernel = uname
        .as_ref()
        .map(|u| {
            format!(
                "{} {}",
                u.release().to_string_lossy(),
                u.version().to_string_lossy()
            )
        })
        .unwrap_or_default();
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let uptime_seconds = read_trim("/proc/uptime")
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|f| f.parse::<f64>().ok())
        })
        .map(|f| f as u64)
        .unwrap_or(0);
    let load = read_trim("/proc/loadavg").and_then(|s| {
        let mut it = s.split_whitespace().map(|f| f.parse::<f64>().ok());
        Some([it.next()??, it.next()??, it.next()??])
    });
    let model = read_trim("/proc/device-tree/model")
        .or_else(|| read_trim("/sys/class/dmi/id/product_name"));
    SystemInfo {
        hostname,
        device_id: None,
        model,
        kernel,
        uptime_seconds,
        load,
        memory: meminfo(),
        perm: perm.and_then(usage),
        addresses: addresses(),
        build_id: build_id.map(str::to_owned),
        running_slot: running_slot.map(str::to_owned),
        clock_synchronized: clock,
        supervisor_rss_kib: read_trim("/proc/self/status").and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        }),
    }
}

/// Whether the web server may listen on `ip`: loopback, RFC 1918, ULA
/// (fc00::/7), link-local, or the unspecified address is refused like a public one.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            let s0 = v6.segments()[0];
            v6.is_loopback() || (s0 & 0xfe00) == 0xfc00 || (s0 & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses() {
        for ok in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "::1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(is_private(ok.parse().unwrap()), "{ok}");
        }
        for bad in [
            "0.0.0.0",
            "8.8.8.8",
            "172.32.0.1",
            "::",
            "2001:db8::1",
            "100.64.0.1",
        ] {
            assert!(!is_private(bad.parse().unwrap()), "{bad}");
        }
    }

    #[test]
    fn gather_reads_this_machine() {
        let s = gather(Some(Path::new("/")), Some("b1"), None, false);
        assert!(!s.kernel.is_empty());
        assert!(s.uptime_seconds > 0);
        assert!(s
            .addresses
            .iter()
            .any(|a| a.address.is_loopback() && a.interface == "lo"));
        assert!(s.perm.unwrap().total > 0);
        assert_eq!(s.build_id.as_deref(), Some("b1"));
    }
}
