//! An ext4 formatter in pure Rust: an empty, valid ext4 with a journal, a
//! root directory and `lost+found`, for any size from 16 MiB to 2 TiB.
//!
//! [`format`] writes metadata only (superblocks, group descriptors, the
//! bitmaps of groups that are in use, the first inode-table block, two
//! directories, the journal superblock and extent blocks): on a sparse image
//! file the data area stays a hole, so a 2 TiB file system costs a few MiB.
//! The output depends only on the device size and the [`Ext4Options`], so
//! the same UUID and time give byte-identical images.
//!
//! [`probe`] recognises an ext2/3/4 superblock, so the device can tell
//! whether its `/perm` partition already holds a file system.
//!
//! ```
//! use krazy_fs::{ext4, MemDevice};
//! let mut dev = MemDevice::zeroed(16 << 20);
//! let opts = ext4::Ext4Options::new([7; 16], 1_700_000_000).label("perm");
//! let summary = ext4::format(&mut dev, &opts).unwrap();
//! assert_eq!(summary.block_size, 4096);
//! let info = ext4::probe(&mut dev).unwrap();
//! assert_eq!(info.label, "perm");
//! assert_eq!(info.uuid, [7; 16]);
//! ```
//!
//! # On-disk choices
//!
//! * Features: `has_journal ext_attr dir_index filetype extent sparse_super
//!   large_file huge_file dir_nlink extra_isize metadata_csum` — what
//!   mke2fs 1.47 writes for ext4, minus `64bit` (2 TiB of 4 KiB blocks fit
//!   32-bit block numbers), `flex_bg` (each group keeps its own bitmaps and
//!   inode table, which keeps the layout a simple function of the group
//!   number), `resize_inode` (no reserved GDT blocks: `resize2fs` can still
//!   grow the file system offline) and `orphan_file`/`metadata_csum_seed`.
//! * 256-byte inodes, one inode per 16 KiB by default, 5 % of blocks
//!   reserved for root (mke2fs's defaults), `half_md4` directory hashing
//!   with a seed derived from the UUID, signed hash flag (as mke2fs on x86).
//! * Groups other than group 0 are `INODE_UNINIT`; groups holding no data
//!   (all but the ones the journal and the two directories use, and never
//!   the last group) are `BLOCK_UNINIT` and their bitmaps are not written.
//! * The journal is sized like mke2fs's (4 MiB for small volumes up to
//!   1 GiB from 128 GiB on, with 4 KiB blocks) and is not zeroed unless
//!   [`Ext4Options::zero_journal`] asks: its superblock says the log is
//!   empty (`s_start = 0`), so the kernel never replays what the blocks
//!   held before (mke2fs's `lazy_journal_init`).
//! * Inode tables follow [`InodeTableInit`].

mod bytes;
mod crc32c;
mod csum;
mod format;
mod geometry;
mod options;
mod probe;
mod records;
#[cfg(test)]
mod tests;
mod used;

use std::io;

pub use format::format;
pub use options::{Ext4Options, Ext4Summary, InodeTableInit};
pub use probe::{has_filesystem, probe, Ext4Info};
pub use used::used_ranges;

/// The smallest device [`format`] accepts.
pub const MIN_SIZE: u64 = 16 << 20;
/// The largest device [`format`] accepts.
pub const MAX_SIZE: u64 = 2 << 40;

const SB_OFFSET: u64 = 1024;
const SB_SIZE: usize = 1024;
const MAGIC: u16 = 0xEF53;
const INODE_SIZE: usize = 256;
const EXTRA_ISIZE: u16 = 32;
const DESC_SIZE: usize = 32;
const FIRST_INO: u32 = 11;
const ROOT_INO: u32 = 2;
const JOURNAL_INO: u32 = 8;
const LPF_INO: u32 = 11;
const EXT_MAGIC: u16 = 0xF30A;
const MAX_EXTENT_LEN: u32 = 32768;
const JBD2_MAGIC: u32 = 0xC03B_3998;
const JBD2_MIN_BLOCKS: u32 = 1024;
/// Latest time an inode's 32-bit seconds plus two epoch bits can hold (2446).
const MAX_TIME: u64 = (1 << 31) - 1 + (3 << 32);

const COMPAT_HAS_JOURNAL: u32 = 0x4;
const COMPAT_EXT_ATTR: u32 = 0x8;
const COMPAT_DIR_INDEX: u32 = 0x20;
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_EXTENTS: u32 = 0x40;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_LARGE_FILE: u32 = 0x2;
const RO_COMPAT_HUGE_FILE: u32 = 0x8;
const RO_COMPAT_DIR_NLINK: u32 = 0x20;
const RO_COMPAT_EXTRA_ISIZE: u32 = 0x40;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;

const INCOMPAT_64BIT: u32 = 0x80;
const RO_COMPAT_GDT_CSUM: u32 = 0x10;

// Superblock fields: byte offsets in the 1024-byte superblock.
const SB_BLOCKS_LO: usize = 0x04;
const SB_FIRST_DATA_BLOCK: usize = 0x14;
const SB_LOG_BLOCK_SIZE: usize = 0x18;
const SB_BLOCKS_PER_GROUP: usize = 0x20;
const SB_INODES_PER_GROUP: usize = 0x28;
const SB_MAGIC: usize = 0x38;
const SB_REV_LEVEL: usize = 0x4C;
const SB_INODE_SIZE: usize = 0x58;
const SB_FEATURE_COMPAT: usize = 0x5C;
const SB_FEATURE_INCOMPAT: usize = 0x60;
const SB_FEATURE_RO_COMPAT: usize = 0x64;
const SB_UUID: usize = 0x68;
const SB_LABEL: usize = 0x78;
const SB_JOURNAL_INUM: usize = 0xE0;
const SB_DESC_SIZE: usize = 0xFE;
const SB_MKFS_TIME: usize = 0x108;
const SB_BLOCKS_HI: usize = 0x150;
const SB_MKFS_TIME_HI: usize = 0x276;

// Group descriptor fields: byte offsets in a descriptor (the `_HI` halves
// only in the 64-byte descriptors of `64bit` file systems).
const BG_BLOCK_BITMAP: usize = 0x00;
const BG_INODE_BITMAP: usize = 0x04;
const BG_INODE_TABLE: usize = 0x08;
const BG_FREE_BLOCKS: usize = 0x0C;
const BG_FREE_INODES: usize = 0x0E;
const BG_USED_DIRS: usize = 0x10;
const BG_FLAGS: usize = 0x12;
const BG_BLOCK_BITMAP_CSUM: usize = 0x18;
const BG_INODE_BITMAP_CSUM: usize = 0x1A;
const BG_ITABLE_UNUSED: usize = 0x1C;
const BG_BLOCK_BITMAP_HI: usize = 0x20;
const BG_INODE_BITMAP_HI: usize = 0x24;
const BG_INODE_TABLE_HI: usize = 0x28;
const BG_ITABLE_UNUSED_HI: usize = 0x32;

// Inode fields.
const I_MODE: usize = 0x00;
const I_FLAGS: usize = 0x20;
const I_BLOCK: usize = 0x28;

const BG_INODE_UNINIT: u16 = 0x1;
const BG_BLOCK_UNINIT: u16 = 0x2;
const BG_ITABLE_ZEROED: u16 = 0x4;

const EXTENTS_FL: u32 = 0x80000;
const S_IFDIR: u16 = 0o040000;
const S_IFREG: u16 = 0o100000;

/// Why [`format`] refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The device is smaller than [`MIN_SIZE`].
    #[error("the device holds {size} bytes; an ext4 file system needs at least {min} bytes")]
    TooSmall {
        /// The device's size.
        size: u64,
        /// The smallest size accepted.
        min: u64,
    },
    /// The device is larger than [`MAX_SIZE`].
    #[error("the device holds {size} bytes; this formatter writes at most {max} bytes (2 TiB)")]
    TooLarge {
        /// The device's size.
        size: u64,
        /// The largest size accepted.
        max: u64,
    },
    /// With small blocks, the group descriptor table would not fit a group.
    #[error("the device holds {size} bytes, too many for {block_size}-byte blocks: use 4096-byte blocks")]
    TooLargeForBlockSize {
        /// The device's size.
        size: u64,
        /// The block size asked for.
        block_size: u32,
    },
    /// The block size is not 1024, 2048 or 4096.
    #[error("block size {0} is not supported: use 1024, 2048 or 4096")]
    BlockSize(u32),
    /// The inode ratio is outside 1 KiB..=64 MiB or below the block size.
    #[error(
        "inode ratio {ratio} is not supported: use one inode per {block_size} to 67108864 bytes"
    )]
    InodeRatio {
        /// The ratio asked for.
        ratio: u32,
        /// The block size, the smallest ratio allowed.
        block_size: u32,
    },
    /// More than half of the blocks would be reserved for root.
    #[error("reserving {0} % of the blocks for root is not supported: use 0 to 50")]
    ReservedPercent(u8),
    /// The volume label does not fit the superblock's 16 bytes.
    #[error("volume label {label:?} is {len} bytes long; ext4 labels hold at most 16")]
    LabelTooLong {
        /// The label given.
        label: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The time cannot be stored in ext4 timestamps.
    #[error("time {0} (seconds since 1970) is past what ext4 timestamps hold (year 2446)")]
    TimeOutOfRange(u64),
    /// The journal size is below jbd2's minimum or leaves too little room.
    #[error("a journal of {blocks} blocks does not fit: use {min} to {max} blocks for this size")]
    JournalSize {
        /// The journal size asked for, in blocks.
        blocks: u32,
        /// The smallest journal jbd2 accepts.
        min: u32,
        /// The largest journal this file system leaves room for.
        max: u32,
    },
    /// Reading or writing the device failed.
    #[error("{what} failed on the device")]
    Io {
        /// What was being written, e.g. "writing the superblock of group 3".
        what: String,
        /// The device's error.
        #[source]
        source: io::Error,
    },
}
