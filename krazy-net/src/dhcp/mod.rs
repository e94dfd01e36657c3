//! DHCPv4: the wire codec, lease validation and the sans-IO client machine.
//!
//! Casts are decisions here (these modules read bytes from the network):
//! a value from the wire is converted with `try_from` and a typed error, a
//! widening with `From`.
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

pub mod lease;
pub mod machine;
pub mod packet;

pub use lease::{Lease, Route};
pub use machine::{Action, Client, Config, Destination, State};
