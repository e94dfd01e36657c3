//! krazy-init: krazy's PID 1, the embeddable supervisor and the web status interface.
//!
//! The [`Supervisor`] runs services (any program) in their own process
//! groups, restarts them with exponential backoff, keeps their output in
//! bounded ring buffers that can be followed live, and reaps orphans when it
//! is PID 1 or a subreaper. It builds without the web and PID 1 parts
//! (`default-features = false`), so another init embeds it in a few lines:
//!
//! ```
//! use std::time::Duration;
//! use krazy_init::{Supervisor, SupervisorOptions, ServiceConfig, State, Restart};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sup = Supervisor::new(SupervisorOptions::default())?;
//! sup.add(ServiceConfig::new("/bin/sh").name("hello").args(["-c", "echo hello"]).restart(Restart::Never))?;
//! sup.boot();
//! let state = sup.wait_for_state("hello", Duration::from_secs(10), |s| s == State::Exited).await?;
//! assert_eq!(state, State::Exited);
//! // The output pipe may be read just after the exit is seen.
//! let logs = sup.logs("hello").unwrap();
//! for _ in 0..100 {
//!     if !logs.stdout.snapshot().is_empty() { break }
//!     tokio::time::sleep(Duration::from_millis(10)).await;
//! }
//! assert_eq!(&*logs.stdout.snapshot()[0].text, "hello");
//! # Ok(()) }
//! ```
//!
//! Modules: [`policy`] (the restart rules as a pure state machine), [`config`]
//! (services, and the `/etc/krazy/*.toml` tables), [`device_id`] (the
//! per-device id kept in `/perm`), [`logbuf`] (ring buffers and followers),
//! [`supervisor`] (the tokio driver and reaper); with the `web` feature,
//! [`web`] (HTTP(S) server, JSON API and HTML pages); with `pid1`, [`pid1`]
//! (stage 1 and stage 2 of the boot).
//!
//! # JSON API (feature `web`)
//!
//! Every request over TCP needs HTTP Basic auth, user `krazy`; requests on the
//! Unix socket are trusted. Every `POST` must carry `Content-Type: application/json`
//! (else 415, after the auth check).
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /api/v1/system` | `{hostname, device_id, kernel, model, uptime_seconds, load, memory, perm, addresses: [{interface, address, prefix}], build_id, running_slot, clock_synchronized}` |
//! | `GET /api/v1/services` | a list of service objects |
//! | `GET /api/v1/services/{name}` | `{name, path, args, state, pid, restarts, started_at, uptime_seconds, last_exit: {code, signal, at} or null, events: [{at, at_us, state}]}`; states are `starting`, `running`, `backoff`, `stopped`, `exited` |
//! | `POST /api/v1/services/{name}/start`, `/stop`, `/restart` | 202 `{"ok": true}` |
//! | `GET /api/v1/services/{name}/log?stream=stdout\|stderr\|both[&follow=1]` | the buffered lines as text/plain; with `follow=1` server-sent events (`event: stdout` or `stderr`, one `data:` per line) that go on live |
//! | `POST /api/v1/reboot`, `POST /api/v1/poweroff` | 202; on a device an orderly reboot or poweroff; in host mode (`krazy-init supervise`) both stop every service and end the supervisor |
//! | `POST /api/v1/notify/network` (Unix socket only) | body `{"interface": "eth0", "addresses": [{"address": "10.0.2.15", "prefix": 24}]}`: the dhcp service reports addresses; opens `wait_for = ["network"]` and refreshes the TCP listeners |
//! | `POST /api/v1/notify/clock` (Unix socket only) | body `{"synchronized": true}`: the ntp service reports a set clock; opens `wait_for = ["clock"]` |

pub mod config;
pub mod device_id;
pub mod logbuf;
pub mod policy;
pub mod supervisor;
pub mod time;

pub use config::{ServiceConfig, StartMode, WaitFor};
pub use policy::{Restart, State};
pub use supervisor::{Supervisor, SupervisorError, SupervisorOptions};
#[cfg(feature = "pid1")]
pub mod pid1;
#[cfg(feature = "web")]
pub mod web;

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
