//! krazy-ntp: the SNTP client service (`/krazy/ntp`).

use anyhow::Result;
use clap::Parser;
use krazy_net::linux::{dhcp::stop_on_signals, ntp};
use std::path::{Path, PathBuf};

/// SNTP client: sets the clock from servers given here or by DHCP (option 42),
/// keeps retrying while none answers, reports synchronisation to init.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// NTP server, `host` or `host:port` (repeatable).
    #[arg(long = "server")]
    servers: Vec<String>,
    /// Directory of krazy-dhcp's saved leases (their NTP servers are used too).
    #[arg(long)]
    lease_dir: Option<PathBuf>,
    /// Directory for the last known time (default /perm/krazy/ntp when /perm exists).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Compute and log the offset without touching the clock.
    #[arg(long)]
    no_set: bool,
    /// Exit after the first valid answer, printing it as JSON on stdout.
    #[arg(long)]
    oneshot: bool,
    /// Init's Unix socket (default /run/krazy/http.sock when it exists).
    #[arg(long)]
    notify_socket: Option<PathBuf>,
    /// Debug logging.
    #[arg(short, long)]
    verbose: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    krazy_net::init_logging(args.verbose);
    let perm = Path::new("/perm").is_dir();
    let lease_dir = args
        .lease_dir
        .or_else(|| perm.then(|| PathBuf::from("/perm/krazy/dhcp")));
    let mut servers = args.servers;
    let from_lease = lease_dir.as_deref().is_some_and(|d| {
        krazy_net::linux::SavedLease::load_all(d)
            .iter()
            .any(|l| !l.lease.ntp.is_empty())
    });
    if servers.is_empty() && !from_lease {
        servers = (0..4).map(|i| format!("{i}.pool.ntp.org")).collect();
    }
    let opts = ntp::Options {
        servers,
        lease_dir,
        state_dir: args
            .state_dir
            .or_else(|| perm.then(|| PathBuf::from("/perm/krazy/ntp"))),
        set_clock: !args.no_set,
        oneshot: args.oneshot,
        notify_socket: krazy_net::notify::resolve_socket(args.notify_socket.as_deref()),
    };
    let stop = stop_on_signals();
    if let Some((server, s)) = ntp::run(&opts, stop)? {
        println!(
            "{}",
            serde_json::json!({
                "server": server.to_string(),
                "offset": s.offset_secs(),
                "delay": s.delay_ns as f64 / 1e9,
                "stratum": s.stratum,
            })
        );
    }
    Ok(())
}
