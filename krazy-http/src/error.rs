//! The one error type of the crate, and where in an answer a peer closed.

use std::fmt;
use std::io;

/// Where in an answer the connection ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// In (or before) the status line and headers.
    Head,
    /// At or in a chunk-size line: between two chunks of a chunked body.
    ChunkSize,
    /// Inside a chunk's data or its closing CRLF.
    ChunkData,
    /// In the trailers after the last chunk.
    Trailers,
    /// Inside a `Content-Length` body.
    Body,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Head => "inside the response head",
            Phase::ChunkSize => "between chunks of the body",
            Phase::ChunkData => "inside a chunk of the body",
            Phase::Trailers => "inside the body's trailers",
            Phase::Body => "before the end of the body (Content-Length)",
        })
    }
}

/// Why a request could not be sent or its answer not read.
///
/// Each variant prints its cause once: either in its text or as its
/// [`source`](std::error::Error::source), never both.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// Reading from or writing to the stream failed.
    #[error(transparent)]
    Io(io::Error),
    /// The peer closed the connection before the answer was complete.
    #[error("the connection closed {0}")]
    Closed(Phase),
    /// A line of the head (or a chunk-size or trailer line) is too long.
    #[error("a line of the answer is longer than {limit} bytes")]
    LineTooLong {
        /// [`Limits::max_line`](crate::Limits::max_line).
        limit: usize,
    },
    /// The head (or the trailers) are longer than allowed in total.
    #[error("the head is longer than {limit} bytes")]
    HeadTooLong {
        /// [`Limits::max_head`](crate::Limits::max_head).
        limit: usize,
    },
    /// The head (or the trailers) have too many header lines.
    #[error("the answer has more than {limit} header lines")]
    TooManyHeaders {
        /// [`Limits::max_headers`](crate::Limits::max_headers).
        limit: usize,
    },
    /// More interim (`1xx`) answers than allowed came before the final one.
    #[error("more than {limit} interim (1xx) answers")]
    TooManyInterim {
        /// [`Limits::max_interim`](crate::Limits::max_interim).
        limit: usize,
    },
    /// The first line is not `HTTP/1.x NNN ...` (its first 80 characters).
    #[error("not an HTTP/1 status line: {0:?}")]
    BadStatusLine(String),
    /// The status code is not three digits from 100 to 599.
    #[error("bad status code {0:?}")]
    BadStatus(String),
    /// A header line is not `name: value` (its first 80 characters).
    #[error("bad header line {0:?}")]
    BadHeader(String),
    /// A `Content-Length` is not a decimal number, or two disagree.
    #[error("bad Content-Length {0:?}")]
    BadContentLength(String),
    /// A chunk-size line does not start with hexadecimal digits.
    #[error("bad chunk size {0:?}")]
    BadChunkSize(String),
    /// A chunk size does not fit in 64 bits.
    #[error("a chunk size does not fit in 64 bits")]
    ChunkSizeOverflow,
    /// A chunk's data is not followed by a line end.
    #[error("a chunk's data is not followed by CRLF")]
    BadChunkEnd,
    /// The body is longer than the reader's limit.
    #[error("the body is longer than {limit} bytes")]
    BodyTooLong {
        /// The limit given to [`BodyReader::read_to_vec`](crate::BodyReader::read_to_vec).
        limit: u64,
    },
    /// The request cannot be written: a method, target or header with a
    /// line break, a control character or an empty name.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The request body's source ended before its declared length.
    #[error("the request body's source ended after {got} of {want} bytes")]
    SourceShort {
        /// Bytes read.
        got: u64,
        /// The declared length.
        want: u64,
    },
    /// Reading the request body's source failed.
    #[error("reading the request body's source failed")]
    Source(#[source] io::Error),
    /// The peer presented a certificate other than the pinned one.
    #[cfg(feature = "tls")]
    #[error("the peer presented a certificate (SHA-256 {got}) that is not the pinned one (SHA-256 {want})")]
    NotPinned {
        /// Fingerprint ([`tls::cert_fingerprint`](crate::tls::cert_fingerprint)) of the presented certificate.
        got: String,
        /// Fingerprint of the pinned certificate.
        want: String,
    },
    /// The TLS handshake failed for another reason.
    #[cfg(feature = "tls")]
    #[error("the TLS handshake failed")]
    Tls(#[source] io::Error),
    /// The TLS configuration could not be built.
    #[cfg(feature = "tls")]
    #[error("cannot set up TLS")]
    TlsConfig(#[source] rustls::Error),
}

impl HttpError {
    /// True for [`HttpError::Io`] and [`HttpError::Closed`]: the transport
    /// failed, rather than the peer sending something malformed.
    pub fn is_transport(&self) -> bool {
        matches!(self, HttpError::Io(_) | HttpError::Closed(_))
    }

    /// Turns the error into an [`io::Error`], as the [`Read`](io::Read)
    /// implementation of [`BodyReader`](crate::BodyReader) returns it:
    /// `Io` is unwrapped, `Closed` has kind `UnexpectedEof`, the rest
    /// `InvalidData`. [`HttpError::from`] undoes it.
    pub fn into_io(self) -> io::Error {
        match self {
            HttpError::Io(e) => e,
            e @ HttpError::Closed(_) => io::Error::new(io::ErrorKind::UnexpectedEof, e),
            e => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}

impl From<io::Error> for HttpError {
    /// An `io::Error` made by [`HttpError::into_io`] gives back the
    /// `HttpError` inside; any other becomes [`HttpError::Io`].
    fn from(e: io::Error) -> Self {
        if !e.get_ref().is_some_and(|i| i.is::<HttpError>()) {
            return HttpError::Io(e);
        }
        let kind = e.kind();
        match e.into_inner().map(|i| i.downcast::<HttpError>()) {
            Some(Ok(h)) => *h,
            Some(Err(other)) => HttpError::Io(io::Error::new(kind, other)),
            None => HttpError::Io(kind.into()),
        }
    }
}
