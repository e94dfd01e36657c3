//! What the caller chooses: the [`Compression`] and its level, the block
//! size ([`SquashfsOptions`]); and what [`write`](super::write) reports
//! ([`SquashfsSummary`]).

use std::fmt;
use std::str::FromStr;

use super::DEFAULT_BLOCK_SIZE;

/// The compressor of data and metadata blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// zlib streams (squashfs calls it gzip); pure Rust (zlib-rs). Default level 9.
    Gzip,
    /// zstd; the bundled C library, behind the `squashfs-zstd` feature. Default level 15.
    Zstd,
    /// No compression: every block is stored as is (the uncompressed flags are set).
    None,
}

impl Compression {
    /// The level used when [`SquashfsOptions::level`] is `None` (mksquashfs's defaults).
    pub fn default_level(self) -> u32 {
        match self {
            Compression::Gzip => 9,
            Compression::Zstd => 15,
            Compression::None => 0,
        }
    }

    /// The range of valid levels.
    pub fn levels(self) -> (u32, u32) {
        match self {
            Compression::Gzip => (1, 9),
            Compression::Zstd => (1, 22),
            Compression::None => (0, 0),
        }
    }

    /// The name used on command lines and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }

    pub(super) fn id(self) -> u16 {
        match self {
            // An uncompressed image still names a compressor; mksquashfs uses gzip.
            Compression::Gzip | Compression::None => 1,
            Compression::Zstd => 6,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A compressor name that is not known.
#[derive(Debug, thiserror::Error)]
#[error("unknown squashfs compression {0:?} (expected gzip, zstd or none)")]
pub struct UnknownCompression(pub String);

impl FromStr for Compression {
    type Err = UnknownCompression;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "none" => Ok(Compression::None),
            _ => Err(UnknownCompression(s.to_string())),
        }
    }
}

/// How to write an image.
#[derive(Debug, Clone)]
pub struct SquashfsOptions {
    /// The compressor (default: gzip, which the benchmarks in the README favour:
    /// pure Rust, as fast as mksquashfs, within 1 % of zstd's size on a root tree).
    pub compression: Compression,
    /// The compression level; `None` for [`Compression::default_level`].
    pub level: Option<u32>,
    /// Data block size: a power of two from 4 KiB to 1 MiB (default 128 KiB).
    pub block_size: u32,
    /// The superblock's creation time, seconds since the epoch (default 0);
    /// set it from `SOURCE_DATE_EPOCH` for reproducible builds.
    pub mkfs_time: u32,
    /// Also pack the last partial block of files larger than a block into
    /// fragments (mksquashfs `-tailends`); smaller images. Default true.
    pub tail_ends: bool,
    /// Store files with equal contents once (found by size and SHA-256, as
    /// mksquashfs does by default). Default true.
    pub dedup: bool,
}

impl Default for SquashfsOptions {
    fn default() -> Self {
        Self {
            compression: Compression::Gzip,
            level: None,
            block_size: DEFAULT_BLOCK_SIZE,
            mkfs_time: 0,
            tail_ends: true,
            dedup: true,
        }
    }
}

/// What [`write`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SquashfsSummary {
    /// The superblock's `bytes_used`: the file system proper.
    pub bytes_used: u64,
    /// Bytes written: `bytes_used` padded with zeros to a multiple of 4 KiB.
    pub image_len: u64,
    /// Number of inodes (every entry, the root included).
    pub inodes: u32,
    /// Number of fragment blocks.
    pub fragments: u32,
    /// Bytes of file contents before compression.
    pub data_bytes: u64,
}
