//! The streaming body reader: `Content-Length`, chunked (a decoder that
//! holds at most one bounded line) or until the close, and reading a whole
//! body up to a limit.

use std::io::{self, BufRead, Read};

use crate::head::parse_header_line;
use crate::line::{excerpt, head_line, read_line};
use crate::{HttpError, Limits, Phase};

/// How a body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (`HEAD`, 1xx, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the peer closes the connection.
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length { left: u64 },
    ChunkSize,
    ChunkData { left: u64 },
    ChunkEnd,
    Trailers { used: usize, lines: usize },
    UntilClose,
    Done,
}

/// What is known of the bytes ahead.
enum Ahead {
    Done,
    Known(u64),
    Unknown,
}

/// Reads a body as its [`Framing`] says, from the stream after the head.
///
/// [`BodyReader::read_body`] gives typed errors; the [`Read`]
/// implementation turns them into `io::Error`s ([`HttpError::into_io`],
/// undone by `HttpError::from`). Chunk extensions and trailers are read
/// within the [`Limits`] and dropped.
#[derive(Debug)]
pub struct BodyReader<R> {
    inner: R,
    state: State,
    limits: Limits,
    line: Vec<u8>,
}

/// Parses a chunk-size line: hexadecimal digits, optional whitespace and
/// `;extensions`, which are ignored.
fn parse_chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    let size = line.split(|&b| b == b';').next().unwrap_or_default();
    let size = size.trim_ascii();
    if size.is_empty() {
        return Err(HttpError::BadChunkSize(excerpt(line)));
    }
    let mut n = 0u64;
    for &b in size {
        let d = char::from(b)
            .to_digit(16)
            .ok_or_else(|| HttpError::BadChunkSize(excerpt(line)))?;
        n = n
            .checked_mul(16)
            .and_then(|n| n.checked_add(u64::from(d)))
            .ok_or(HttpError::ChunkSizeOverflow)?;
    }
    Ok(n)
}

impl<R: BufRead> BodyReader<R> {
    /// A reader of a body framed as `framing` from `inner`.
    pub fn new(inner: R, framing: Framing, limits: Limits) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length { left: n },
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        BodyReader {
            inner,
            state,
            limits,
            line: Vec::new(),
        }
    }

    /// True once the whole body (and any trailers) has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The stream, positioned after what was read of the body.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Reads framing until data (or the end) is next.
    fn ready(&mut self) -> Result<Ahead, HttpError> {
        loop {
            match self.state {
                State::Done => return Ok(Ahead::Done),
                State::Length { left } | State::ChunkData { left } => {
                    return Ok(Ahead::Known(left))
                }
                State::UntilClose => return Ok(Ahead::Unknown),
                State::ChunkSize => {
                    let max = self.limits.max_line;
                    if read_line(&mut self.inner, max, &mut self.line, Phase::ChunkSize)?.is_none()
                    {
                        return Err(HttpError::LineTooLong { limit: max });
                    }
                    self.state = match parse_chunk_size(&self.line)? {
                        0 => State::Trailers { used: 0, lines: 0 },
                        left => State::ChunkData { left },
                    };
                }
                State::ChunkEnd => {
                    match read_line(&mut self.inner, 2, &mut self.line, Phase::ChunkData)? {
                        Some(_) if self.line.is_empty() => self.state = State::ChunkSize,
                        _ => return Err(HttpError::BadChunkEnd),
                    }
                }
                State::Trailers { mut used, lines } => {
                    head_line(
                        &mut self.inner,
                        &self.limits,
                        &mut used,
                        &mut self.line,
                        Phase::Trailers,
                    )?;
                    if self.line.is_empty() {
                        self.state = State::Done;
                        continue;
                    }
                    if lines >= self.limits.max_headers {
                        return Err(HttpError::TooManyHeaders {
                            limit: self.limits.max_headers,
                        });
                    }
                    parse_header_line(&self.line)?;
                    self.state = State::Trailers {
                        used,
                        lines: lines + 1,
                    };
                }
            }
        }
    }

    /// Reads some of the body into `buf`: `Ok(0)` at its end (or when
    /// `buf` is empty).
    pub fn read_body(&mut self, buf: &mut [u8]) -> Result<usize, HttpError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let want = match self.ready()? {
            Ahead::Done => return Ok(0),
            Ahead::Known(left) => usize::try_from(left).unwrap_or(usize::MAX).min(buf.len()),
            Ahead::Unknown => buf.len(),
        };
        let dst = buf.get_mut(..want).unwrap_or_default();
        let n = loop {
            match self.inner.read(dst) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let got = n as u64;
        self.state = match self.state {
            State::Length { .. } if n == 0 => return Err(HttpError::Closed(Phase::Body)),
            State::ChunkData { .. } if n == 0 => return Err(HttpError::Closed(Phase::ChunkData)),
            State::Length { left } if left == got => State::Done,
            State::Length { left } => State::Length {
                left: left.saturating_sub(got),
            },
            State::ChunkData { left } if left == got => State::ChunkEnd,
            State::ChunkData { left } => State::ChunkData {
                left: left.saturating_sub(got),
            },
            State::UntilClose if n == 0 => State::Done,
            s => s,
        };
        Ok(n)
    }

    /// Reads the whole rest of the body, refusing one longer than `max`
    /// bytes with [`HttpError::BodyTooLong`]: a declared length (or chunk
    /// size) above what is left of `max` is refused before it is read, and
    /// memory never grows past `max`.
    pub fn read_to_vec(&mut self, max: u64) -> Result<Vec<u8>, HttpError> {
        let too_long = HttpError::BodyTooLong { limit: max };
        let cap = usize::try_from(max).unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let mut tmp = [0u8; 8 << 10];
        loop {
            match self.ready()? {
                Ahead::Done => return Ok(out),
                Ahead::Known(left) if (out.len() as u64).saturating_add(left) > max => {
                    return Err(too_long)
                }
                Ahead::Known(_) | Ahead::Unknown => {}
            }
            let n = self.read_body(&mut tmp)?;
            if n == 0 {
                return Ok(out);
            }
            let need = out.len().saturating_add(n);
            if need > cap {
                return Err(too_long);
            }
            if need > out.capacity() {
                let grow = out.capacity().saturating_mul(2).max(need).min(cap);
                out.reserve_exact(grow - out.len());
            }
            out.extend_from_slice(tmp.get(..n).unwrap_or_default());
        }
    }
}

impl<R: BufRead> Read for BodyReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_body(buf).map_err(HttpError::into_io)
    }
}

#[cfg(test)]
mod tests;
