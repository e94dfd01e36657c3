//! A squashfs 4.0 writer: the root file system of every krazy image.
//!
//! Our own writer rather than a crate (see the crate README, "squashfs", for
//! the benchmark that decided it): data blocks are compressed in parallel
//! with rayon while a reader thread fetches the next files, file tails are
//! packed into shared fragment blocks, and the output depends only on the
//! [`Tree`] and the [`SquashfsOptions`] (the superblock's time comes from the
//! options, never from the clock), so the same inputs give the same bytes.
//!
//! Layout, as mksquashfs writes it: superblock, data and fragment blocks,
//! inode table, directory table, fragment table, id table; the image is
//! padded with zeros to a multiple of 4 KiB. Files with equal contents are
//! stored once. No export table, no xattrs.
//!
//! ```
//! use krazy_fs::squashfs::{self, SquashfsOptions};
//! use krazy_fs::{Contents, Tree};
//! let mut tree = Tree::new();
//! tree.add_file("hello", Contents::bytes("hi\n"), 0o644, 0).unwrap();
//! let mut image = std::io::Cursor::new(Vec::new());
//! let summary = squashfs::write(&mut image, &tree, &SquashfsOptions::default()).unwrap();
//! assert_eq!(summary.image_len as usize, image.get_ref().len());
//! assert_eq!(&image.get_ref()[..4], b"hsqs");
//! ```

// A writer: its casts narrow values the validated tree and the geometry
// computed before bound (block counts, entry counts, name lengths); they are
// not yet each turned into a `try_from` (issue 13), so the crate's cast
// lints are allowed in this file only.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::mpsc;

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::dev::BlockDevice;
use crate::tree::{Contents, Kind, NameRules, Tree, TreeError, Validated};

mod codec;
mod data;
mod entries;
mod inodes;
mod meta;
mod options;
mod output;

use codec::*;
use data::*;
use entries::*;
use inodes::*;
use meta::*;
pub use options::{Compression, SquashfsOptions, SquashfsSummary, UnknownCompression};
use output::*;

/// What squashfs can hold: Unix names of up to 255 bytes, symlinks, devices.
pub const NAME_RULES: NameRules = NameRules {
    format: "squashfs",
    ..NameRules::UNIX
};

/// The default data block size, 128 KiB (as mksquashfs).
pub const DEFAULT_BLOCK_SIZE: u32 = 128 * 1024;

const MAGIC: u32 = 0x7371_7368;
const SUPERBLOCK_LEN: usize = 96;
const METADATA_SIZE: usize = 8192;
const METADATA_UNCOMPRESSED: u16 = 0x8000;
const DATA_UNCOMPRESSED: u32 = 1 << 24;
const NO_FRAGMENT: u32 = 0xffff_ffff;
const NO_XATTR: u32 = 0xffff_ffff;
const NO_TABLE: u64 = u64::MAX;
const PAD: u64 = 4096;
/// Bytes of raw data handed to the compressor threads at once.
const BATCH_BYTES: usize = 8 << 20;
/// Files up to this size are read into memory in one go.
const WHOLE_FILE_MAX: u64 = 32 << 20;
/// Longest symlink target the Linux driver accepts (it rejects more than a page).
const MAX_SYMLINK: usize = 4096;

// Superblock flags.
const FLAG_UNCOMPRESSED_INODES: u16 = 0x0001;
const FLAG_UNCOMPRESSED_DATA: u16 = 0x0002;
const FLAG_UNCOMPRESSED_FRAGMENTS: u16 = 0x0008;
const FLAG_DUPLICATES: u16 = 0x0040;
const FLAG_NO_XATTRS: u16 = 0x0200;
const FLAG_UNCOMPRESSED_IDS: u16 = 0x0800;

// Inode types.
const T_DIR: u16 = 1;
const T_FILE: u16 = 2;
const T_SYMLINK: u16 = 3;
const T_CHR: u16 = 5;
const T_LDIR: u16 = 8;
const T_LFILE: u16 = 9;

/// Why a squashfs image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The tree breaks a rule of the tree or of squashfs.
    #[error("the tree cannot be written as squashfs")]
    Tree(#[from] TreeError),
    /// A file's contents could not be read.
    #[error("cannot read the contents of {path:?}")]
    Read {
        /// The entry's path in the tree.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Writing the image failed (for a device: perhaps it is too small).
    #[error("writing the squashfs image failed")]
    Write(#[source] io::Error),
    /// An entry's time does not fit squashfs's unsigned 32-bit seconds.
    #[error("{path:?} has mtime {mtime}, past squashfs's limit of 2^32-1 seconds (year 2106)")]
    TimeOutOfRange {
        /// The entry.
        path: String,
        /// Its time.
        mtime: u64,
    },
    /// A device number does not fit the 32-bit encoding squashfs stores.
    #[error("{path:?} has device number {major}:{minor}, which squashfs cannot store (major < 4096, minor < 2^20)")]
    DeviceNumber {
        /// The entry.
        path: String,
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A symlink target is empty or longer than Linux accepts from squashfs.
    #[error("symlink {path:?} has a target of {len} bytes; squashfs on Linux needs 1 to 4096")]
    SymlinkTarget {
        /// The symlink.
        path: String,
        /// The target's length.
        len: usize,
    },
    /// More distinct owners and groups than the 16-bit id index can address.
    #[error("the tree uses {count} distinct uids and gids; squashfs holds at most 65536")]
    TooManyIds {
        /// How many there are.
        count: usize,
    },
    /// The block size is not a power of two from 4 KiB to 1 MiB.
    #[error("block size {0} is not a power of two from 4096 to 1048576")]
    BlockSize(u32),
    /// The compression level is outside the compressor's range.
    #[error("compression level {level} is outside {compression}'s range {min}..={max}")]
    Level {
        /// The compressor.
        compression: Compression,
        /// The level asked for.
        level: u32,
        /// Lowest level.
        min: u32,
        /// Highest level.
        max: u32,
    },
    /// The compressor was not compiled in.
    #[error("{0} support is not compiled in (enable krazy-fs's squashfs-{0} feature)")]
    NotCompiled(Compression),
    /// The compressor itself failed.
    #[error("compressing a block with {compression} failed")]
    Compress {
        /// The compressor.
        compression: Compression,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The tree has more entries than squashfs can number.
    #[error("the tree has {0} entries; squashfs numbers at most 2^32-2")]
    TooManyEntries(usize),
}

/// Writes `tree` as a squashfs image to `out`, starting at `out`'s current
/// position, and returns its summary. `out` is left just after the image.
///
/// To write into a partition of a disk image, use [`write_to_device`].
pub fn write<W: Write + Seek>(
    out: &mut W,
    tree: &Tree,
    opts: &SquashfsOptions,
) -> Result<SquashfsSummary, Error> {
    let codec = Codec::new(opts)?;
    let v = tree.validate(&NAME_RULES)?;
    let n = v.nodes.len();
    if n > u32::MAX as usize - 2 {
        return Err(Error::TooManyEntries(n));
    }
    check_entries(&v)?;
    let ids = IdTable::new(&v)?;

    let base = out.stream_position().map_err(Error::Write)?;
    let mut w = Out { inner: out, pos: 0 };
    w.write(&[0; SUPERBLOCK_LEN])?;

    let data = write_data(
        &mut w,
        &v,
        &codec,
        opts.block_size,
        opts.tail_ends,
        opts.dedup,
    )?;

    let order = post_order(&v);
    let mut number = vec![0u32; n];
    for (i, &node) in order.iter().enumerate() {
        number[node] = i as u32 + 1;
    }
    let tables = write_inodes_and_dirs(&v, &order, &number, &data.files, &ids, &codec)?;

    let inode_table_start = w.pos;
    w.write(&tables.inodes)?;
    let directory_table_start = w.pos;
    w.write(&tables.dirs)?;

    let mut frag_bytes = Vec::with_capacity(data.fragments.len() * 16);
    for &(start, size) in &data.fragments {
        frag_bytes.extend_from_slice(&start.to_le_bytes());
        frag_bytes.extend_from_slice(&size.to_le_bytes());
        frag_bytes.extend_from_slice(&0u32.to_le_bytes());
    }
    let fragment_table_start = write_table(&mut w, &frag_bytes, &codec)?;
    let id_bytes: Vec<u8> = ids.ids.iter().flat_map(|i| i.to_le_bytes()).collect();
    let id_table_start = write_table(&mut w, &id_bytes, &codec)?;
    let bytes_used = w.pos;

    let padded = bytes_used.div_ceil(PAD) * PAD;
    w.write(&vec![0; (padded - bytes_used) as usize])?;

    let mut flags = FLAG_NO_XATTRS;
    if opts.dedup {
        flags |= FLAG_DUPLICATES;
    }
    if codec.compression == Compression::None {
        flags |= FLAG_UNCOMPRESSED_INODES
            | FLAG_UNCOMPRESSED_DATA
            | FLAG_UNCOMPRESSED_FRAGMENTS
            | FLAG_UNCOMPRESSED_IDS;
    }
    let mut sb = Vec::with_capacity(SUPERBLOCK_LEN);
    sb.extend_from_slice(&MAGIC.to_le_bytes());
    sb.extend_from_slice(&(n as u32).to_le_bytes());
    sb.extend_from_slice(&opts.mkfs_time.to_le_bytes());
    sb.extend_from_slice(&opts.block_size.to_le_bytes());
    sb.extend_from_slice(&(data.fragments.len() as u32).to_le_bytes());
    sb.extend_from_slice(&codec.compression.id().to_le_bytes());
    sb.extend_from_slice(&(opts.block_size.trailing_zeros() as u16).to_le_bytes());
    sb.extend_from_slice(&flags.to_le_bytes());
    sb.extend_from_slice(&(ids.ids.len() as u16).to_le_bytes());
    sb.extend_from_slice(&4u16.to_le_bytes());
    sb.extend_from_slice(&0u16.to_le_bytes());
    sb.extend_from_slice(&tables.root_ref.to_le_bytes());
    sb.extend_from_slice(&bytes_used.to_le_bytes());
    sb.extend_from_slice(&id_table_start.to_le_bytes());
    sb.extend_from_slice(&NO_TABLE.to_le_bytes()); // xattr id table
    sb.extend_from_slice(&inode_table_start.to_le_bytes());
    sb.extend_from_slice(&directory_table_start.to_le_bytes());
    sb.extend_from_slice(&fragment_table_start.to_le_bytes());
    sb.extend_from_slice(&NO_TABLE.to_le_bytes()); // export table
    debug_assert_eq!(sb.len(), SUPERBLOCK_LEN);

    let out = w.inner;
    out.seek(SeekFrom::Start(base)).map_err(Error::Write)?;
    out.write_all(&sb).map_err(Error::Write)?;
    out.seek(SeekFrom::Start(base + padded))
        .map_err(Error::Write)?;
    out.flush().map_err(Error::Write)?;

    Ok(SquashfsSummary {
        bytes_used,
        image_len: padded,
        inodes: n as u32,
        fragments: data.fragments.len() as u32,
        data_bytes: data.data_bytes,
    })
}

/// Writes `tree` as a squashfs image at offset 0 of `dev` (a partition
/// window of a disk image, say). Fails with [`Error::Write`] if the image
/// does not fit; bytes of `dev` after [`SquashfsSummary::image_len`] are
/// left untouched.
pub fn write_to_device<D: BlockDevice>(
    dev: &mut D,
    tree: &Tree,
    opts: &SquashfsOptions,
) -> Result<SquashfsSummary, Error> {
    let mut w = DeviceWriter { dev, pos: 0 };
    write(&mut w, tree, opts)
}
