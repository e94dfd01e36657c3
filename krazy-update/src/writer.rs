//! The verifying stream: counts and hashes a part's bytes as they are read,
//! refuses more than the manifest's size and detects fewer.
//!
//! [`write_image`] streams a raw image into a [`BlockDevice`] in 1 MiB
//! chunks, so memory stays constant whatever the part's size.

use std::io::{self, Read};

use krazy_fs::BlockDevice;
use sha2::{Digest as _, Sha256};

use crate::protocol::{hex, PartSpec};

/// The chunk size of every write: memory use of a part upload.
pub const CHUNK: usize = 1 << 20;

/// Why a stream did not match its manifest entry.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The sender kept sending past the manifest's size.
    #[error("the {part} part is longer than the manifest's {size} bytes")]
    TooLong {
        /// The part.
        part: String,
        /// The manifest's size.
        size: u64,
    },
    /// The stream ended early.
    #[error("the {part} part ended after {got} of the manifest's {size} bytes")]
    TooShort {
        /// The part.
        part: String,
        /// Bytes received.
        got: u64,
        /// The manifest's size.
        size: u64,
    },
    /// All bytes arrived but their hash differs.
    #[error("the {part} part's SHA-256 is {got}, the manifest says {want}")]
    HashMismatch {
        /// The part.
        part: String,
        /// The digest of what arrived.
        got: String,
        /// The manifest's digest.
        want: String,
    },
    /// The part is larger than where it must go.
    #[error("the {part} part is {size} bytes, its target holds only {capacity}")]
    TooLarge {
        /// The part.
        part: String,
        /// The manifest's size.
        size: u64,
        /// The target's size.
        capacity: u64,
    },
    /// Reading the stream failed (a dropped connection).
    #[error("reading the {part} part failed after {got} bytes: {source}")]
    Read {
        /// The part.
        part: String,
        /// Bytes received.
        got: u64,
        /// The cause.
        source: io::Error,
    },
    /// Writing the target failed.
    #[error("writing the {part} part at byte {offset} failed: {source}")]
    Write {
        /// The part.
        part: String,
        /// Where.
        offset: u64,
        /// The cause.
        source: io::Error,
    },
}

/// A [`Read`] adapter that hashes and counts, and fails with
/// [`io::ErrorKind::InvalidData`] rather than yield a byte past `limit`.
#[derive(Debug)]
pub struct Verifying<R> {
    inner: R,
    limit: u64,
    got: u64,
    hash: Sha256,
    overrun: bool,
}

impl<R: Read> Verifying<R> {
    /// Wraps `inner`, allowing at most `limit` bytes.
    pub fn new(inner: R, limit: u64) -> Self {
        Verifying {
            inner,
            limit,
            got: 0,
            hash: Sha256::new(),
            overrun: false,
        }
    }

    /// Bytes passed through so far.
    pub fn count(&self) -> u64 {
        self.got
    }

    /// The size the manifest gives.
    pub fn size(&self) -> u64 {
        self.limit
    }

    /// Whether the sender tried to pass the limit.
    pub fn overrun(&self) -> bool {
        self.overrun
    }

    /// Reads until `buf` is full or the stream ends; returns the count.
    pub fn fill(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Ends the stream: checks that it holds exactly `spec.size` bytes
    /// (reading one more to be sure) and hashes to `spec.sha256`.
    pub fn finish(mut self, spec: &PartSpec) -> Result<String, VerifyError> {
        let part = spec.name.to_string();
        if self.overrun {
            return Err(VerifyError::TooLong {
                part,
                size: spec.size,
            });
        }
        let mut one = [0u8; 1];
        loop {
            match self.inner.read(&mut one) {
                Ok(0) => break,
                Ok(_) => {
                    return Err(VerifyError::TooLong {
                        part,
                        size: spec.size,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(VerifyError::Read {
                        part,
                        got: self.got,
                        source: e,
                    })
                }
            }
        }
        if self.got != spec.size {
            return Err(VerifyError::TooShort {
                part,
                got: self.got,
                size: spec.size,
            });
        }
        let got = hex(&self.hash.finalize());
        if got != spec.sha256 {
            return Err(VerifyError::HashMismatch {
                part,
                got,
                want: spec.sha256.clone(),
            });
        }
        Ok(got)
    }
}

impl<R: Read> Read for Verifying<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.got >= self.limit {
            // Probe for an overrun without passing the byte on.
            let mut one = [0u8; 1];
            return match self.inner.read(&mut one)? {
                0 => Ok(0),
                _ => {
                    self.overrun = true;
                    Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the stream is longer than the manifest says",
                    ))
                }
            };
        }
        let room = usize::try_from(self.limit - self.got).unwrap_or(usize::MAX);
        let take = buf.len().min(room);
        let n = self.inner.read(&mut buf[..take])?;
        self.hash.update(&buf[..n]);
        self.got += n as u64;
        Ok(n)
    }
}

/// Streams `src` (exactly `spec.size` bytes hashing to `spec.sha256`) into
/// `dev` from offset 0, in [`CHUNK`]-sized writes, then flushes. Returns the
/// hex digest. Nothing is written when the part is larger than `dev`; on any
/// other error some prefix of `dev` has been written.
pub fn write_image(
    src: impl Read,
    spec: &PartSpec,
    dev: &mut dyn BlockDevice,
) -> Result<String, VerifyError> {
    let part = spec.name.to_string();
    if spec.size > dev.len() {
        return Err(VerifyError::TooLarge {
            part,
            size: spec.size,
            capacity: dev.len(),
        });
    }
    let mut v = Verifying::new(src, spec.size);
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        let n = match v.fill(&mut buf) {
            Ok(n) => n,
            Err(_) if v.overrun() => {
                return Err(VerifyError::TooLong {
                    part,
                    size: spec.size,
                })
            }
            Err(e) => {
                return Err(VerifyError::Read {
                    part,
                    got: v.count(),
                    source: e,
                })
            }
        };
        if n == 0 {
            break;
        }
        dev.write_at(offset, &buf[..n])
            .map_err(|e| VerifyError::Write {
                part: part.clone(),
                offset,
                source: e,
            })?;
        offset += n as u64;
    }
    dev.flush().map_err(|e| VerifyError::Write {
        part: part.clone(),
        offset,
        source: e,
    })?;
    v.finish(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::PartKind;
    use krazy_fs::MemDevice;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 3) as u8).collect()
    }

    #[test]
    fn exact_stream_is_written_and_verified() {
        let bytes = data(3 * CHUNK + 17);
        let spec = PartSpec::for_bytes(PartKind::Root, &bytes);
        let mut dev = MemDevice::zeroed(4 * CHUNK);
        let d = write_image(&bytes[..], &spec, &mut dev).unwrap();
        assert_eq!(d, spec.sha256);
        assert_eq!(&dev.as_slice()[..bytes.len()], &bytes[..]);
        assert!(dev.as_slice()[bytes.len()..].iter().all(|&b| b == 0));
    }

    #[test]
    fn longer_stream_is_refused_without_writing_past_size() {
        let bytes = data(1000);
        let spec = PartSpec::for_bytes(PartKind::Root, &bytes[..900]);
        let mut dev = MemDevice::zeroed(2000);
        let e = write_image(&bytes[..], &spec, &mut dev).unwrap_err();
        assert!(matches!(e, VerifyError::TooLong { size: 900, .. }), "{e}");
        assert!(dev.as_slice()[900..].iter().all(|&b| b == 0));
    }

    #[test]
    fn shorter_stream_and_wrong_bytes_are_detected() {
        let bytes = data(1000);
        let spec = PartSpec::for_bytes(PartKind::Boot, &bytes);
        let mut dev = MemDevice::zeroed(2000);
        let e = write_image(&bytes[..999], &spec, &mut dev).unwrap_err();
        assert!(
            matches!(
                e,
                VerifyError::TooShort {
                    got: 999,
                    size: 1000,
                    ..
                }
            ),
            "{e}"
        );
        let mut bad = bytes.clone();
        bad[500] ^= 1;
        let e = write_image(&bad[..], &spec, &mut dev).unwrap_err();
        assert!(matches!(e, VerifyError::HashMismatch { .. }), "{e}");
    }

    #[test]
    fn part_larger_than_target_writes_nothing() {
        let bytes = data(100);
        let spec = PartSpec::for_bytes(PartKind::Root, &bytes);
        let mut dev = MemDevice::from_vec(vec![9; 50]);
        let e = write_image(&bytes[..], &spec, &mut dev).unwrap_err();
        assert!(matches!(e, VerifyError::TooLarge { capacity: 50, .. }));
        assert!(dev.as_slice().iter().all(|&b| b == 9));
    }
}
