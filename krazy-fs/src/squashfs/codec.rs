//! The compressor of data and metadata blocks, with its level.

// A writer: its casts narrow values the validated tree and the geometry
// computed before bound (block counts, entry counts, name lengths); they are
// not yet each turned into a `try_from` (issue 13), so the crate's cast
// lints are allowed in this file only.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::io;

use super::*;

/// The compressor with its level, shared by the compressing threads.
pub(super) struct Codec {
    pub(super) compression: Compression,
    pub(super) level: u32,
}

impl Codec {
    pub(super) fn new(opts: &SquashfsOptions) -> Result<Self, Error> {
        let bs = opts.block_size;
        if !bs.is_power_of_two() || !(4096..=1 << 20).contains(&bs) {
            return Err(Error::BlockSize(bs));
        }
        let c = opts.compression;
        let level = opts.level.unwrap_or(c.default_level());
        let (min, max) = c.levels();
        if !(min..=max).contains(&level) {
            return Err(Error::Level {
                compression: c,
                level,
                min,
                max,
            });
        }
        if c == Compression::Zstd && !cfg!(feature = "squashfs-zstd") {
            return Err(Error::NotCompiled(c));
        }
        Ok(Self {
            compression: c,
            level,
        })
    }

    /// Compresses `raw`; `None` when compressing would not make it smaller
    /// (the block is then stored as is).
    pub(super) fn compress(&self, raw: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let err = |source| Error::Compress {
            compression: self.compression,
            source,
        };
        let out = match self.compression {
            Compression::None => return Ok(None),
            Compression::Gzip => {
                let mut e = flate2::write::ZlibEncoder::new(
                    Vec::with_capacity(raw.len() / 2),
                    flate2::Compression::new(self.level),
                );
                e.write_all(raw).map_err(err)?;
                e.finish().map_err(err)?
            }
            Compression::Zstd => zstd_compress(raw, self.level).map_err(err)?,
        };
        Ok((out.len() < raw.len()).then_some(out))
    }
}

#[cfg(feature = "squashfs-zstd")]
pub(super) fn zstd_compress(raw: &[u8], level: u32) -> io::Result<Vec<u8>> {
    zstd::bulk::compress(raw, level as i32)
}

#[cfg(not(feature = "squashfs-zstd"))]
pub(super) fn zstd_compress(_raw: &[u8], _level: u32) -> io::Result<Vec<u8>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "zstd is not compiled in",
    ))
}
