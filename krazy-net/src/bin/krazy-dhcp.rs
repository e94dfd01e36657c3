//! krazy-dhcp: the DHCPv4 client service (`/krazy/dhcp`).

use anyhow::{bail, Context, Result};
use clap::Parser;
use krazy_net::linux::{self, dhcp};
use std::path::PathBuf;
use std::time::Duration;

/// DHCPv4 client: configures addresses, routes, MTU and DNS, renews, rebinds,
/// and releases on SIGTERM.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Interface to configure (repeatable; default: every Ethernet interface backed by a device).
    #[arg(long = "interface")]
    interfaces: Vec<String>,
    /// Exit 0 once the first lease is applied (on every interface).
    #[arg(long)]
    oneshot: bool,
    /// Resolver file to write.
    #[arg(long, default_value = "/run/resolv.conf")]
    resolv_conf: PathBuf,
    /// Directory for saved leases (INIT-REBOOT); default /perm/krazy/dhcp when /perm exists.
    #[arg(long)]
    lease_dir: Option<PathBuf>,
    /// Host name to send (default: the kernel's host name).
    #[arg(long)]
    hostname: Option<String>,
    /// Init's Unix socket for change reports (default /run/krazy/http.sock when it exists).
    #[arg(long)]
    notify_socket: Option<PathBuf>,
    /// Static configuration (TOML: address = "a.b.c.d/len", gateway, dns, search, mtu) instead of DHCP.
    #[arg(long = "static")]
    static_config: Option<PathBuf>,
    /// Metric of installed routes.
    #[arg(long, default_value_t = 100)]
    metric: u32,
    /// Debug logging.
    #[arg(short, long)]
    verbose: bool,
}

fn kernel_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s != "(none)")
}

fn main() -> Result<()> {
    let args = Args::parse();
    krazy_net::init_logging(args.verbose);
    let stop = dhcp::stop_on_signals();
    let mut interfaces = args.interfaces.clone();
    if interfaces.is_empty() {
        loop {
            interfaces = linux::default_interfaces();
            if !interfaces.is_empty() || stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            tracing::info!("no Ethernet interface yet, waiting");
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let lease_dir = args.lease_dir.clone().or_else(|| {
        std::path::Path::new("/perm")
            .is_dir()
            .then(|| PathBuf::from("/perm/krazy/dhcp"))
    });
    let base = dhcp::Options {
        interface: String::new(),
        hostname: args.hostname.clone().or_else(kernel_hostname),
        resolv_conf: args.resolv_conf.clone(),
        lease_dir,
        notify_socket: krazy_net::notify::resolve_socket(args.notify_socket.as_deref()),
        oneshot: args.oneshot,
        metric: args.metric,
        carrier_timeout: Duration::from_secs(10),
    };
    if let Some(path) = &args.static_config {
        let lease = linux::StaticConfig::load(path)?;
        let Some(iface) = interfaces.first() else {
            bail!("no interface to configure statically");
        };
        let opts = dhcp::Options {
            interface: iface.clone(),
            ..base
        };
        dhcp::apply_static(&opts, &lease)?;
        // 125: done, the supervisor need not keep us running (gokrazy convention).
        std::process::exit(if args.oneshot { 0 } else { 125 });
    }
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = interfaces
            .iter()
            .map(|i| {
                let opts = dhcp::Options {
                    interface: i.clone(),
                    ..base.clone()
                };
                s.spawn(move || {
                    dhcp::run(&opts, stop).with_context(|| format!("DHCP on {}", opts.interface))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    for r in results {
        match r {
            Ok(r) => r?,
            Err(_) => bail!("a DHCP thread panicked"),
        }
    }
    Ok(())
}
