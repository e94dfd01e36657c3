//! krazy-net: a pure-Rust DHCPv4 client and SNTP client for krazy appliances.
//!
//! The protocol cores are sans-IO state machines: they take packets and the
//! current time and return actions, so they are tested with a simulated clock
//! and no network. The Linux driver ([`linux`]) carries the actions out with a
//! raw packet socket, netlink and files.
//!
//! ```
//! use krazy_net::dhcp::{Action, Client, Config, Destination};
//! use std::time::Duration;
//!
//! let mut client = Client::new(Config::new([0x02, 0, 0, 0, 0, 1]));
//! let actions = client.poll(Duration::ZERO);
//! // The first poll broadcasts a DISCOVER padded to the BOOTP minimum...
//! assert!(matches!(&actions[0],
//!     Action::Send { bytes, destination: Destination::Broadcast } if bytes.len() >= 300));
//! // ...and asks to be polled again when it is time to retransmit.
//! assert!(matches!(actions.last(), Some(Action::SleepUntil(t)) if *t > Duration::ZERO));
//! ```

pub mod dhcp;
pub mod linux;
pub mod notify;
pub mod ntp;

/// Sets up `tracing` output on stderr for the binaries (`-v` for debug).
/// Only with the `bin` feature (tracing-subscriber is the binaries' dependency).
#[cfg(feature = "bin")]
pub fn init_logging(verbose: bool) {
    let level = if verbose {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
