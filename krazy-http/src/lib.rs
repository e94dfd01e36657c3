//! A small blocking HTTP/1.1 client for krazy: one parser of answers for
//! every place that talks HTTP (the update client, init's notification
//! socket, the VM tests).
//!
//! It works over any [`Read`](std::io::Read) + [`Write`](std::io::Write)
//! stream (a `TcpStream`, a `UnixStream`, a rustls stream) and keeps no
//! connection state of its own: the shape is a handful of free functions
//! and plain values, so a caller (or a later pull service) owns the stream,
//! its timeouts and its reuse.
//!
//! - [`Request`] writes a request head with [`Request::write_head`], and a
//!   body from a slice ([`Request::send`]) or from a reader of a known
//!   length ([`copy_body`]).
//! - [`read_response`] reads a response head within [`Limits`] (line
//!   length, header count, head size, interim `1xx` answers), skipping
//!   `100 Continue` and friends, and hands back a [`Response`] whose
//!   [`BodyReader`] streams the body by its framing ([`Framing`]):
//!   `Content-Length`, chunked (extensions and trailers skipped, sizes
//!   that overflow refused) or until the peer closes.
//! - [`BodyReader::read_to_vec`] reads a whole body up to a limit, refusing
//!   a declared length above it before reading a byte.
//! - [`exchange`] does all of it for a one-shot request.
//! - With the `tls` feature, [`tls::PinnedTls`] connects a stream to a peer
//!   that must present exactly one certificate.
//!
//! Everything read is untrusted: nothing here panics on what a peer sends,
//! and memory stays within the limits given. Each failure is a typed
//! [`HttpError`].
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

mod body;
mod error;
mod head;
mod line;
mod request;
#[cfg(feature = "tls")]
pub mod tls;

pub use body::{BodyReader, Framing};
pub use error::{HttpError, Phase};
pub use head::{read_head, read_response, Limits, Response, ResponseHead};
pub use request::{copy_body, exchange, Request};

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
