//! DHCPv4: the wire codec, lease validation and the sans-IO client machine.

pub mod lease;
pub mod machine;
pub mod packet;

pub use lease::{Lease, Route};
pub use machine::{Action, Client, Config, Destination, State};
