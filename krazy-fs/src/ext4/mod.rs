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

mod crc32c;

use std::io;

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

/// How [`format`] treats the inode tables, which take about 1.6 % of the
/// device with the default inode ratio.
///
/// The group descriptors' `ITABLE_ZEROED` flag says whether a table is known
/// to read as zeros. When it is clear, the kernel zeroes the table itself in
/// the background after the first mount (its `ext4lazyinit` thread, like
/// mke2fs's `lazy_itable_init=1`), and e2fsck trusts only the inodes the
/// descriptors count as used (`bg_itable_unused`), so stale bytes are never
/// read as inodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InodeTableInit {
    /// Write only the block holding the reserved inodes; leave the flag
    /// clear so the kernel zeroes the rest later. Safe on any device.
    #[default]
    Lazy,
    /// Write zeros over every inode table now and set the flag: slow on
    /// large devices, but no background writes after the first mount.
    Zero,
    /// Write nothing and set the flag, promising the device already reads
    /// zeros there: right for a freshly created sparse image file or a
    /// device just discarded with zeroing, wrong for a disk with old data.
    AssumeZeroed,
}

/// What [`format`] writes: identity, time and geometry knobs.
///
/// Build one with [`Ext4Options::new`] and the builder methods; every other
/// field has mke2fs's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Options {
    /// The file system UUID; also seeds the directory hash and the checksums.
    pub uuid: [u8; 16],
    /// Seconds since 1970 for every timestamp (mkfs time, inodes, last check).
    pub time: u64,
    /// The volume label, at most 16 bytes.
    pub label: String,
    /// Block size in bytes: 1024, 2048 or 4096 (default).
    pub block_size: u32,
    /// Bytes of device per inode (default 16384, as mke2fs).
    pub inode_ratio: u32,
    /// Percent of blocks reserved for root (default 5, as mke2fs).
    pub reserved_percent: u8,
    /// Journal size in blocks; `None` scales it with the size as mke2fs does.
    pub journal_blocks: Option<u32>,
    /// How the inode tables are initialised (default [`InodeTableInit::Lazy`]).
    pub inode_tables: InodeTableInit,
    /// Write zeros over the whole journal (default false: not needed, see the module docs).
    pub zero_journal: bool,
}

impl Ext4Options {
    /// Options with the given UUID and time and mke2fs's defaults otherwise.
    pub fn new(uuid: [u8; 16], time: u64) -> Self {
        Self {
            uuid,
            time,
            label: String::new(),
            block_size: 4096,
            inode_ratio: 16384,
            reserved_percent: 5,
            journal_blocks: None,
            inode_tables: InodeTableInit::Lazy,
            zero_journal: false,
        }
    }

    /// Sets the volume label.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Sets the block size (1024, 2048 or 4096).
    pub fn block_size(mut self, block_size: u32) -> Self {
        self.block_size = block_size;
        self
    }

    /// Sets the bytes of device per inode.
    pub fn inode_ratio(mut self, ratio: u32) -> Self {
        self.inode_ratio = ratio;
        self
    }

    /// Sets the percent of blocks reserved for root.
    pub fn reserved_percent(mut self, percent: u8) -> Self {
        self.reserved_percent = percent;
        self
    }

    /// Sets the journal size in blocks.
    pub fn journal_blocks(mut self, blocks: u32) -> Self {
        self.journal_blocks = Some(blocks);
        self
    }

    /// Sets how the inode tables are initialised.
    pub fn inode_tables(mut self, init: InodeTableInit) -> Self {
        self.inode_tables = init;
        self
    }

    /// Asks for the journal to be overwritten with zeros.
    pub fn zero_journal(mut self, zero: bool) -> Self {
        self.zero_journal = zero;
        self
    }
}

/// What [`format`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Summary {
    /// Block size in bytes.
    pub block_size: u32,
    /// Blocks in the file system (the device's tail may be left out when the
    /// last group would be too small to hold its own metadata).
    pub blocks: u64,
    /// Block groups.
    pub groups: u32,
    /// Inodes in the file system.
    pub inodes: u32,
    /// Free blocks after formatting.
    pub free_blocks: u64,
    /// Free inodes after formatting.
    pub free_inodes: u32,
    /// Journal size in blocks.
    pub journal_blocks: u32,
    /// Bytes written to the device.
    pub bytes_written: u64,
}

/// What [`probe`] found in an ext2/3/4 superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Info {
    /// The file system UUID.
    pub uuid: [u8; 16],
    /// The volume label (lossily decoded, up to the first NUL).
    pub label: String,
    /// Block size in bytes.
    pub block_size: u32,
    /// Blocks in the file system (64-bit when the `64bit` feature is set).
    pub blocks: u64,
    /// Compatible feature flags.
    pub feature_compat: u32,
    /// Incompatible feature flags.
    pub feature_incompat: u32,
    /// Read-only-compatible feature flags.
    pub feature_ro_compat: u32,
    /// When the file system was made, in seconds since 1970.
    pub mkfs_time: u64,
}

impl Ext4Info {
    /// Whether the file system has a journal (ext3 or ext4 rather than ext2).
    pub fn has_journal(&self) -> bool {
        self.feature_compat & COMPAT_HAS_JOURNAL != 0
    }
}

/// Reads the superblock at byte 1024 and returns what it says if it carries
/// the ext2/3/4 magic and a sane block size; `None` for anything else,
/// including a device too short to hold one. Never panics on any bytes.
pub fn probe(dev: &mut impl crate::BlockDevice) -> Option<Ext4Info> {
    let mut sb = [0u8; SB_SIZE];
    dev.read_at(SB_OFFSET, &mut sb).ok()?;
    if le16(&sb, 0x38) != MAGIC {
        return None;
    }
    let log = le32(&sb, 0x18);
    if log > 6 {
        return None;
    }
    let block_size = 1024u32 << log;
    let incompat = le32(&sb, 0x60);
    let mut blocks = u64::from(le32(&sb, 0x04));
    if incompat & 0x80 != 0 {
        blocks |= u64::from(le32(&sb, 0x150)) << 32;
    }
    let label_bytes = &sb[0x78..0x88];
    let end = label_bytes.iter().position(|&b| b == 0).unwrap_or(16);
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&sb[0x68..0x78]);
    Some(Ext4Info {
        uuid,
        label: String::from_utf8_lossy(&label_bytes[..end]).into_owned(),
        block_size,
        blocks,
        feature_compat: le32(&sb, 0x5C),
        feature_incompat: incompat,
        feature_ro_compat: le32(&sb, 0x64),
        mkfs_time: u64::from(le32(&sb, 0x108)) | (u64::from(sb[0x276]) << 32),
    })
}

/// Whether the device holds an ext2, ext3 or ext4 file system.
pub fn has_filesystem(dev: &mut impl crate::BlockDevice) -> bool {
    probe(dev).is_some()
}

fn le16(b: &[u8], off: usize) -> u16 {
    b.get(off..off + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

fn le32(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn put32be(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

/// mke2fs's default journal size in blocks for a file system of `blocks` blocks.
fn default_journal_blocks(blocks: u64) -> u32 {
    match blocks {
        b if b < 32768 => 1024,
        b if b < 256 * 1024 => 4096,
        b if b < 512 * 1024 => 8192,
        b if b < 4096 * 1024 => 16384,
        b if b < 8192 * 1024 => 32768,
        b if b < 16384 * 1024 => 65536,
        b if b < 32768 * 1024 => 131072,
        _ => 262144,
    }
}

/// Whether group `g` holds a superblock copy under `sparse_super`:
/// groups 0 and 1 and the powers of 3, 5 and 7.
fn has_super(g: u32) -> bool {
    if g <= 1 {
        return true;
    }
    [3u32, 5, 7].iter().any(|&p| {
        let mut x = g;
        while x % p == 0 {
            x /= p;
        }
        x == 1
    })
}

/// The geometry of the file system: a pure function of size and options.
#[derive(Debug, Clone)]
struct Geometry {
    bs: u64,
    first_data_block: u64,
    blocks: u64,
    bpg: u64,
    groups: u32,
    ipg: u32,
    itable_blocks: u64,
    gdt_blocks: u64,
}

impl Geometry {
    fn new(size: u64, opts: &Ext4Options) -> Result<Self, Error> {
        let bs = u64::from(opts.block_size);
        let first_data_block = u64::from(bs == 1024);
        let bpg = bs * 8;
        let mut blocks = size / bs;
        loop {
            let groups = (blocks - first_data_block).div_ceil(bpg);
            let inodes = blocks * bs / u64::from(opts.inode_ratio);
            // Whole inode-table blocks, a multiple of 8 for the bitmap, and
            // no more than one bitmap block can track.
            let per_block = bs / INODE_SIZE as u64;
            let align = per_block.max(8);
            let ipg = inodes
                .div_ceil(groups)
                .max(u64::from(FIRST_INO) + 5)
                .next_multiple_of(align)
                .min(bpg);
            let itable_blocks = ipg / per_block;
            let gdt_blocks = (groups * DESC_SIZE as u64).div_ceil(bs);
            // Without meta_bg every superblock copy carries the whole table:
            // it, the bitmaps and an inode table must leave room in a group.
            if 3 + gdt_blocks + itable_blocks + 50 > bpg {
                return Err(Error::TooLargeForBlockSize {
                    size,
                    block_size: opts.block_size,
                });
            }
            let last = groups - 1;
            let rem = (blocks - first_data_block) % bpg;
            let mut overhead = 2 + itable_blocks;
            if has_super(last as u32) {
                overhead += 1 + gdt_blocks;
            }
            if rem != 0 && rem < overhead + 50 {
                if groups == 1 {
                    return Err(Error::TooSmall {
                        size,
                        min: MIN_SIZE,
                    });
                }
                // A tail too small to carry its own metadata is left unused.
                blocks -= rem;
                continue;
            }
            return Ok(Self {
                bs,
                first_data_block,
                blocks,
                bpg,
                groups: groups as u32,
                ipg: ipg as u32,
                itable_blocks,
                gdt_blocks,
            });
        }
    }

    fn group_start(&self, g: u32) -> u64 {
        self.first_data_block + u64::from(g) * self.bpg
    }

    fn group_len(&self, g: u32) -> u64 {
        (self.blocks - self.group_start(g)).min(self.bpg)
    }

    /// First block of the group's bitmaps (after its superblock and GDT copy).
    fn block_bitmap(&self, g: u32) -> u64 {
        let mut b = self.group_start(g);
        if has_super(g) {
            b += 1 + self.gdt_blocks;
        }
        b
    }

    fn inode_bitmap(&self, g: u32) -> u64 {
        self.block_bitmap(g) + 1
    }

    fn inode_table(&self, g: u32) -> u64 {
        self.block_bitmap(g) + 2
    }

    fn data_start(&self, g: u32) -> u64 {
        self.inode_table(g) + self.itable_blocks
    }

    fn overhead(&self, g: u32) -> u64 {
        self.data_start(g) - self.group_start(g)
    }
}

/// A run of contiguous blocks: (first block, length).
type Run = (u64, u32);

/// Hands out data blocks in order, skipping each group's metadata, and
/// remembers how many it took from each group.
struct Allocator<'a> {
    geo: &'a Geometry,
    group: u32,
    next: u64,
    used: Vec<u64>,
}

impl<'a> Allocator<'a> {
    fn new(geo: &'a Geometry) -> Self {
        Self {
            geo,
            group: 0,
            next: geo.data_start(0),
            used: vec![0; geo.groups as usize],
        }
    }

    /// `n` blocks as runs of at most one extent each; `None` when full.
    fn alloc(&mut self, mut n: u64) -> Option<Vec<Run>> {
        let mut runs: Vec<Run> = Vec::new();
        while n > 0 {
            let g = self.group;
            if g >= self.geo.groups {
                return None;
            }
            let end = self.geo.group_start(g) + self.geo.group_len(g);
            let avail = end.saturating_sub(self.next);
            if avail == 0 {
                self.group += 1;
                if self.group < self.geo.groups {
                    self.next = self.geo.data_start(self.group);
                }
                continue;
            }
            let take = avail.min(n).min(u64::from(MAX_EXTENT_LEN));
            match runs.last_mut() {
                Some((s, l))
                    if *s + u64::from(*l) == self.next
                        && u64::from(*l) + take <= u64::from(MAX_EXTENT_LEN) =>
                {
                    *l += take as u32
                }
                _ => runs.push((self.next, take as u32)),
            }
            self.used[g as usize] += take;
            self.next += take;
            n -= take;
        }
        Some(runs)
    }
}

/// Splits ext4 seconds into the 32-bit field and the two epoch bits of the
/// `*_extra` field.
fn inode_time(t: u64) -> (u32, u32) {
    let lo = t as u32;
    let epoch = ((t as i64 - i64::from(lo as i32)) >> 32) as u32 & 3;
    (lo, epoch)
}

/// Wraps the device, counting bytes and naming every failed write.
struct Writer<'d, D: crate::BlockDevice> {
    dev: &'d mut D,
    bs: u64,
    written: u64,
}

impl<D: crate::BlockDevice> Writer<'_, D> {
    fn write(
        &mut self,
        offset: u64,
        buf: &[u8],
        what: impl FnOnce() -> String,
    ) -> Result<(), Error> {
        self.dev.write_at(offset, buf).map_err(|source| Error::Io {
            what: what(),
            source,
        })?;
        self.written += buf.len() as u64;
        Ok(())
    }

    fn write_block(
        &mut self,
        block: u64,
        buf: &[u8],
        what: impl FnOnce() -> String,
    ) -> Result<(), Error> {
        self.write(block * self.bs, buf, what)
    }

    fn zero_blocks(&mut self, start: u64, count: u64, what: &str) -> Result<(), Error> {
        const CHUNK: u64 = 1 << 20;
        let zeros = vec![0u8; CHUNK.min(count * self.bs) as usize];
        let mut off = start * self.bs;
        let end = (start + count) * self.bs;
        while off < end {
            let n = (end - off).min(zeros.len() as u64) as usize;
            self.write(off, &zeros[..n], || format!("zeroing {what}"))?;
            off += n as u64;
        }
        Ok(())
    }
}

/// The checksum state of one file system.
struct Csum {
    seed: u32,
}

impl Csum {
    fn new(uuid: &[u8; 16]) -> Self {
        Self {
            seed: crc32c::update(!0, uuid),
        }
    }

    /// The per-inode seed: inode number and generation over the fs seed.
    fn inode_seed(&self, ino: u32) -> u32 {
        let c = crc32c::update(self.seed, &ino.to_le_bytes());
        crc32c::update(c, &0u32.to_le_bytes())
    }

    fn inode(&self, ino: u32, raw: &mut [u8]) {
        put16(raw, 0x7C, 0);
        put16(raw, 0x82, 0);
        let c = crc32c::update(self.inode_seed(ino), raw);
        put16(raw, 0x7C, c as u16);
        if le16(raw, 0x80) >= 4 {
            put16(raw, 0x82, (c >> 16) as u16);
        }
    }

    fn bitmap(&self, bits: &[u8]) -> u16 {
        crc32c::update(self.seed, bits) as u16
    }

    fn group_desc(&self, g: u32, desc: &mut [u8]) {
        put16(desc, 0x1E, 0);
        let c = crc32c::update(self.seed, &g.to_le_bytes());
        put16(desc, 0x1E, crc32c::update(c, desc) as u16);
    }

    /// Fills the 12-byte checksum tail of a directory leaf block.
    fn dir_block(&self, ino: u32, block: &mut [u8]) {
        let t = block.len() - 12;
        block[t..].fill(0);
        put16(block, t + 4, 12);
        block[t + 7] = 0xDE;
        let c = crc32c::update(self.inode_seed(ino), &block[..t]);
        put32(block, t + 8, c);
    }
}

fn set_bits(bitmap: &mut [u8], from: u64, to: u64) {
    for i in from..to {
        bitmap[(i / 8) as usize] |= 1 << (i % 8);
    }
}

/// Writes an extent header at `at`.
fn extent_header(b: &mut [u8], at: usize, entries: u16, max: u16, depth: u16) {
    put16(b, at, EXT_MAGIC);
    put16(b, at + 2, entries);
    put16(b, at + 4, max);
    put16(b, at + 6, depth);
    put32(b, at + 8, 0);
}

fn extent_entry(b: &mut [u8], at: usize, logical: u32, (start, len): Run) {
    put32(b, at, logical);
    put16(b, at + 4, len as u16);
    put16(b, at + 6, (start >> 32) as u16);
    put32(b, at + 8, start as u32);
}

/// A 256-byte inode with times, mode, links, size and the extent root.
fn make_inode(
    time: u64,
    mode: u16,
    links: u16,
    size: u64,
    sectors: u64,
    i_block: &[u8; 60],
) -> [u8; INODE_SIZE] {
    let mut ino = [0u8; INODE_SIZE];
    let (t, epoch) = inode_time(time);
    put16(&mut ino, 0x00, mode);
    put32(&mut ino, 0x04, size as u32);
    for off in [0x08, 0x0C, 0x10, 0x90] {
        put32(&mut ino, off, t);
    }
    for off in [0x84, 0x88, 0x8C, 0x94] {
        put32(&mut ino, off, epoch);
    }
    put16(&mut ino, 0x1A, links);
    put32(&mut ino, 0x1C, sectors as u32);
    put16(&mut ino, 0x74, (sectors >> 32) as u16);
    put32(&mut ino, 0x20, EXTENTS_FL);
    ino[0x28..0x64].copy_from_slice(i_block);
    put32(&mut ino, 0x6C, (size >> 32) as u32);
    put16(&mut ino, 0x80, EXTRA_ISIZE);
    ino
}

/// Builds the in-inode extent root for `runs` mapped from logical block 0;
/// when they do not fit the inode's four slots, fills `leaves` (one block
/// each) and returns an index root pointing at `leaf_blocks`.
fn extent_root(
    runs: &[Run],
    leaf_blocks: &[u64],
    leaves: &mut Vec<Vec<u8>>,
    bs: usize,
) -> [u8; 60] {
    let mut root = [0u8; 60];
    let mut logical = Vec::with_capacity(runs.len());
    let mut l = 0u32;
    for r in runs {
        logical.push(l);
        l += r.1;
    }
    if runs.len() <= 4 {
        extent_header(&mut root, 0, runs.len() as u16, 4, 0);
        for (i, r) in runs.iter().enumerate() {
            extent_entry(&mut root, 12 + 12 * i, logical[i], *r);
        }
        return root;
    }
    let per_leaf = (bs - 12) / 12;
    extent_header(&mut root, 0, leaf_blocks.len() as u16, 4, 1);
    for (k, &leaf) in leaf_blocks.iter().enumerate() {
        let first = k * per_leaf;
        let chunk = &runs[first..(first + per_leaf).min(runs.len())];
        let mut block = vec![0u8; bs];
        extent_header(&mut block, 0, chunk.len() as u16, per_leaf as u16, 0);
        for (i, r) in chunk.iter().enumerate() {
            extent_entry(&mut block, 12 + 12 * i, logical[first + i], *r);
        }
        leaves.push(block);
        let at = 12 + 12 * k;
        put32(&mut root, at, logical[first]);
        put32(&mut root, at + 4, leaf as u32);
        put16(&mut root, at + 8, (leaf >> 32) as u16);
    }
    root
}

/// A directory entry with file type; returns the offset after it.
fn dirent(b: &mut [u8], at: usize, ino: u32, rec_len: usize, name: &[u8], ftype: u8) -> usize {
    put32(b, at, ino);
    put16(b, at + 4, rec_len as u16);
    b[at + 6] = name.len() as u8;
    b[at + 7] = ftype;
    b[at + 8..at + 8 + name.len()].copy_from_slice(name);
    at + rec_len
}

fn validate(opts: &Ext4Options, size: u64) -> Result<(), Error> {
    if size < MIN_SIZE {
        return Err(Error::TooSmall {
            size,
            min: MIN_SIZE,
        });
    }
    if size > MAX_SIZE {
        return Err(Error::TooLarge {
            size,
            max: MAX_SIZE,
        });
    }
    if !matches!(opts.block_size, 1024 | 2048 | 4096) {
        return Err(Error::BlockSize(opts.block_size));
    }
    if opts.inode_ratio < opts.block_size || opts.inode_ratio > 64 << 20 {
        return Err(Error::InodeRatio {
            ratio: opts.inode_ratio,
            block_size: opts.block_size,
        });
    }
    if opts.reserved_percent > 50 {
        return Err(Error::ReservedPercent(opts.reserved_percent));
    }
    if opts.label.len() > 16 {
        return Err(Error::LabelTooLong {
            label: opts.label.clone(),
            len: opts.label.len(),
        });
    }
    if opts.time > MAX_TIME {
        return Err(Error::TimeOutOfRange(opts.time));
    }
    Ok(())
}

/// Formats the whole device as an empty ext4 file system and returns its
/// geometry. Writes metadata only (see the module docs); the device's size
/// must lie in [`MIN_SIZE`]..=[`MAX_SIZE`].
pub fn format(dev: &mut impl crate::BlockDevice, opts: &Ext4Options) -> Result<Ext4Summary, Error> {
    let size = dev.len();
    validate(opts, size)?;
    let geo = Geometry::new(size, opts)?;
    let bs = geo.bs as usize;
    let csum = Csum::new(&opts.uuid);

    // Data blocks: the root directory, lost+found (16 KiB, at least two
    // blocks, as mke2fs), then the journal and its extent leaves.
    let mut alloc = Allocator::new(&geo);
    let full = |_| Error::TooSmall {
        size,
        min: MIN_SIZE,
    };
    let root_runs = alloc.alloc(1).ok_or(()).map_err(full)?;
    let lpf_count = (16384 / geo.bs).max(2);
    let lpf_runs = alloc.alloc(lpf_count).ok_or(()).map_err(full)?;
    let journal_blocks = opts
        .journal_blocks
        .unwrap_or_else(|| default_journal_blocks(geo.blocks));
    let max_journal = (geo.blocks / 2).min(1 << 22) as u32;
    if journal_blocks < JBD2_MIN_BLOCKS || journal_blocks > max_journal {
        return Err(Error::JournalSize {
            blocks: journal_blocks,
            min: JBD2_MIN_BLOCKS,
            max: max_journal,
        });
    }
    let journal_runs = alloc
        .alloc(u64::from(journal_blocks))
        .ok_or(Error::JournalSize {
            blocks: journal_blocks,
            min: JBD2_MIN_BLOCKS,
            max: max_journal,
        })?;
    let per_leaf = (bs - 12) / 12;
    let leaf_count = if journal_runs.len() <= 4 {
        0
    } else {
        journal_runs.len().div_ceil(per_leaf)
    };
    if leaf_count > 4 {
        return Err(Error::JournalSize {
            blocks: journal_blocks,
            min: JBD2_MIN_BLOCKS,
            max: max_journal,
        });
    }
    let leaf_blocks: Vec<u64> = match alloc.alloc(leaf_count as u64) {
        Some(runs) => runs
            .iter()
            .flat_map(|&(s, l)| s..s + u64::from(l))
            .collect(),
        None => return Err(full(())),
    };
    let used_data = alloc.used.clone();

    let mut w = Writer {
        dev,
        bs: geo.bs,
        written: 0,
    };

    // Inodes: root, lost+found, journal.
    let mut inodes: Vec<(u32, [u8; INODE_SIZE])> = Vec::new();
    let sectors = |blocks: u64| blocks * geo.bs / 512;
    let no_leaves = &mut Vec::new();
    let root_iblock = extent_root(&root_runs, &[], no_leaves, bs);
    let root = make_inode(
        opts.time,
        S_IFDIR | 0o755,
        3,
        geo.bs,
        sectors(1),
        &root_iblock,
    );
    inodes.push((ROOT_INO, root));
    let lpf_iblock = extent_root(&lpf_runs, &[], no_leaves, bs);
    let lpf = make_inode(
        opts.time,
        S_IFDIR | 0o700,
        2,
        lpf_count * geo.bs,
        sectors(lpf_count),
        &lpf_iblock,
    );
    inodes.push((LPF_INO, lpf));
    let mut leaves = Vec::new();
    let j_iblock = extent_root(&journal_runs, &leaf_blocks, &mut leaves, bs);
    let j_size = u64::from(journal_blocks) * geo.bs;
    let journal = make_inode(
        opts.time,
        S_IFREG | 0o600,
        1,
        j_size,
        sectors(u64::from(journal_blocks) + leaf_count as u64),
        &j_iblock,
    );
    inodes.push((JOURNAL_INO, journal));

    // Directory blocks.
    let mut root_block = vec![0u8; bs];
    let mut at = dirent(&mut root_block, 0, ROOT_INO, 12, b".", 2);
    at = dirent(&mut root_block, at, ROOT_INO, 12, b"..", 2);
    dirent(&mut root_block, at, LPF_INO, bs - 12 - at, b"lost+found", 2);
    csum.dir_block(ROOT_INO, &mut root_block);
    w.write_block(root_runs[0].0, &root_block, || {
        "writing the root directory".into()
    })?;
    let lpf_blocks = lpf_runs.iter().flat_map(|&(s, l)| s..s + u64::from(l));
    for (i, b) in lpf_blocks.enumerate() {
        let mut block = vec![0u8; bs];
        if i == 0 {
            let at = dirent(&mut block, 0, LPF_INO, 12, b".", 2);
            dirent(&mut block, at, ROOT_INO, bs - 12 - at, b"..", 2);
        } else {
            dirent(&mut block, 0, 0, bs - 12, b"", 0);
        }
        csum.dir_block(LPF_INO, &mut block);
        w.write_block(b, &block, || "writing lost+found".into())?;
    }

    // Journal: extent leaves, the jbd2 superblock, optionally zeros.
    let jseed = csum.inode_seed(JOURNAL_INO);
    for (leaf, &b) in leaves.iter_mut().zip(&leaf_blocks) {
        let t = 12 + per_leaf * 12;
        let c = crc32c::update(jseed, &leaf[..t]);
        put32(leaf, t, c);
        w.write_block(b, leaf, || "writing the journal's extent tree".into())?;
    }
    if opts.zero_journal {
        for &(s, l) in &journal_runs {
            w.zero_blocks(s, u64::from(l), "the journal")?;
        }
    }
    let mut jsb = vec![0u8; bs];
    put32be(&mut jsb, 0x00, JBD2_MAGIC);
    put32be(&mut jsb, 0x04, 4); // superblock v2
    put32be(&mut jsb, 0x0C, geo.bs as u32);
    put32be(&mut jsb, 0x10, journal_blocks);
    put32be(&mut jsb, 0x14, 1); // first log block
    put32be(&mut jsb, 0x18, 1); // first expected commit sequence
    jsb[0x30..0x40].copy_from_slice(&opts.uuid);
    put32be(&mut jsb, 0x40, 1); // one user: this file system
    w.write_block(journal_runs[0].0, &jsb, || {
        "writing the journal superblock".into()
    })?;

    // Group descriptors and bitmaps.
    let zeroed = opts.inode_tables != InodeTableInit::Lazy;
    let mut gdt = vec![0u8; geo.gdt_blocks as usize * bs];
    let mut free_blocks_total = 0u64;
    let mut overhead_total = geo.first_data_block;
    let used_inodes = FIRST_INO; // inodes 1..=11
    let mut bitmap = vec![0u8; bs];
    for g in 0..geo.groups {
        let start = geo.group_start(g);
        let len = geo.group_len(g);
        let overhead = geo.overhead(g);
        let data = used_data[g as usize];
        let free = len - overhead - data;
        free_blocks_total += free;
        overhead_total += overhead;
        let last = g == geo.groups - 1;
        let block_uninit = data == 0 && !last;
        let mut flags = 0;
        if g != 0 {
            flags |= BG_INODE_UNINIT;
        }
        if block_uninit {
            flags |= BG_BLOCK_UNINIT;
        }
        if zeroed {
            flags |= BG_ITABLE_ZEROED;
        }
        let d = &mut gdt[g as usize * DESC_SIZE..(g as usize + 1) * DESC_SIZE];
        put32(d, 0x00, geo.block_bitmap(g) as u32);
        put32(d, 0x04, geo.inode_bitmap(g) as u32);
        put32(d, 0x08, geo.inode_table(g) as u32);
        put16(d, 0x0C, free as u16);
        let (free_inodes, dirs, unused) = if g == 0 {
            (geo.ipg - used_inodes, 2, geo.ipg - used_inodes)
        } else {
            (geo.ipg, 0, geo.ipg)
        };
        put16(d, 0x0E, free_inodes as u16);
        put16(d, 0x10, dirs);
        put16(d, 0x12, flags);
        put16(d, 0x1C, unused as u16);
        if !block_uninit {
            bitmap.fill(0);
            set_bits(&mut bitmap, 0, overhead + data);
            set_bits(&mut bitmap, len, geo.bs * 8);
            put16(d, 0x18, csum.bitmap(&bitmap[..(geo.bpg / 8) as usize]));
            w.write_block(geo.block_bitmap(g), &bitmap, || {
                format!("writing the block bitmap of group {g}")
            })?;
        }
        if g == 0 {
            bitmap.fill(0);
            set_bits(&mut bitmap, 0, u64::from(used_inodes));
            set_bits(&mut bitmap, u64::from(geo.ipg), geo.bs * 8);
            put16(d, 0x1A, csum.bitmap(&bitmap[..geo.ipg as usize / 8]));
            w.write_block(geo.inode_bitmap(g), &bitmap, || {
                "writing the inode bitmap of group 0".into()
            })?;
        }
        csum.group_desc(g, d);
        debug_assert!(start + overhead <= start + len);
    }

    // Inode tables: the first block(s) of group 0 hold inodes 1..=11.
    if opts.inode_tables == InodeTableInit::Zero {
        for g in 0..geo.groups {
            w.zero_blocks(geo.inode_table(g), geo.itable_blocks, "the inode tables")?;
        }
    }
    let per_block = bs / INODE_SIZE;
    let table_len = (FIRST_INO as usize).div_ceil(per_block) * per_block * INODE_SIZE;
    let mut table = vec![0u8; table_len];
    let (t, _) = inode_time(opts.time);
    for ino in 1..=FIRST_INO {
        let at = (ino as usize - 1) * INODE_SIZE;
        let raw = &mut table[at..at + INODE_SIZE];
        if let Some((_, inode)) = inodes.iter().find(|(n, _)| *n == ino) {
            raw.copy_from_slice(inode);
        } else if ino == 1 {
            // The bad-blocks inode: empty, with times, as mke2fs writes it.
            for off in [0x08, 0x0C, 0x10] {
                put32(raw, off, t);
            }
        }
        csum.inode(ino, raw);
    }
    w.write_block(geo.inode_table(0), &table, || {
        "writing the reserved inodes".into()
    })?;

    // Superblock and its backups, each with the group descriptor table.
    let free_inodes = geo.ipg * geo.groups - used_inodes;
    let mut sb = [0u8; SB_SIZE];
    let inodes_count = geo.ipg * geo.groups;
    put32(&mut sb, 0x00, inodes_count);
    put32(&mut sb, 0x04, geo.blocks as u32);
    put32(
        &mut sb,
        0x08,
        (geo.blocks * u64::from(opts.reserved_percent) / 100) as u32,
    );
    put32(&mut sb, 0x0C, free_blocks_total as u32);
    put32(&mut sb, 0x10, free_inodes);
    put32(&mut sb, 0x14, geo.first_data_block as u32);
    let log = geo.bs.trailing_zeros() - 10;
    put32(&mut sb, 0x18, log);
    put32(&mut sb, 0x1C, log);
    put32(&mut sb, 0x20, geo.bpg as u32);
    put32(&mut sb, 0x24, geo.bpg as u32);
    put32(&mut sb, 0x28, geo.ipg);
    let (tlo, thi) = (opts.time as u32, (opts.time >> 32) as u8);
    put32(&mut sb, 0x30, tlo); // last write
    sb[0x274] = thi;
    put16(&mut sb, 0x36, 0xFFFF); // no mount-count checks
    put16(&mut sb, 0x38, MAGIC);
    put16(&mut sb, 0x3A, 1); // clean
    put16(&mut sb, 0x3C, 1); // on errors: continue
    put32(&mut sb, 0x40, tlo); // last check
    sb[0x277] = thi;
    put32(&mut sb, 0x4C, 1); // dynamic revision
    put32(&mut sb, 0x54, FIRST_INO);
    put16(&mut sb, 0x58, INODE_SIZE as u16);
    put32(
        &mut sb,
        0x5C,
        COMPAT_HAS_JOURNAL | COMPAT_EXT_ATTR | COMPAT_DIR_INDEX,
    );
    put32(&mut sb, 0x60, INCOMPAT_FILETYPE | INCOMPAT_EXTENTS);
    put32(
        &mut sb,
        0x64,
        RO_COMPAT_SPARSE_SUPER
            | RO_COMPAT_LARGE_FILE
            | RO_COMPAT_HUGE_FILE
            | RO_COMPAT_DIR_NLINK
            | RO_COMPAT_EXTRA_ISIZE
            | RO_COMPAT_METADATA_CSUM,
    );
    sb[0x68..0x78].copy_from_slice(&opts.uuid);
    sb[0x78..0x78 + opts.label.len()].copy_from_slice(opts.label.as_bytes());
    put32(&mut sb, 0xE0, JOURNAL_INO);
    for i in 0..4u8 {
        let mut c = crc32c::update(!0, b"krazy ext4 directory hash seed");
        c = crc32c::update(c, &opts.uuid);
        c = crc32c::update(c, &[i]);
        put32(&mut sb, 0xEC + 4 * usize::from(i), c);
    }
    sb[0xFC] = 1; // half_md4
    sb[0xFD] = 1; // s_jnl_blocks holds a copy of the journal's i_block
    put32(&mut sb, 0x100, 0x4 | 0x8); // user_xattr, acl
    put32(&mut sb, 0x108, tlo); // mkfs time
    sb[0x276] = thi;
    sb[0x10C..0x10C + 60].copy_from_slice(&j_iblock);
    put32(&mut sb, 0x10C + 60, (j_size >> 32) as u32);
    put32(&mut sb, 0x10C + 64, j_size as u32);
    put16(&mut sb, 0x15C, EXTRA_ISIZE);
    put16(&mut sb, 0x15E, EXTRA_ISIZE);
    put32(&mut sb, 0x160, 0x1); // signed directory hash
    sb[0x175] = 1; // crc32c
    let overhead_total = overhead_total + u64::from(journal_blocks) + leaf_count as u64;
    put32(&mut sb, 0x248, overhead_total as u32);

    // Lifetime writes: what this format writes, fixed before writing it.
    let sb_groups: Vec<u32> = (0..geo.groups).filter(|&g| has_super(g)).collect();
    let kbytes = (w.written + sb_groups.len() as u64 * (geo.bs + gdt.len() as u64)) / 1024;
    put32(&mut sb, 0x178, kbytes as u32);
    put32(&mut sb, 0x17C, (kbytes >> 32) as u32);

    let mut block = vec![0u8; bs];
    for &g in &sb_groups {
        let mut copy = sb;
        put16(&mut copy, 0x5A, g as u16);
        let c = crc32c::update(!0, &copy[..SB_SIZE - 4]);
        put32(&mut copy, SB_SIZE - 4, c);
        block.fill(0);
        // In group 0 with blocks over 1 KiB, the superblock sits 1 KiB into
        // block 0 after the boot sector area, which is cleared too.
        let at = if g == 0 && bs > 1024 { 1024 } else { 0 };
        block[at..at + SB_SIZE].copy_from_slice(&copy);
        let first = geo.group_start(g);
        w.write_block(first, &block, || {
            format!("writing the superblock of group {g}")
        })?;
        w.write_block(first + 1, &gdt, || {
            format!("writing the group descriptors of group {g}")
        })?;
    }
    if geo.first_data_block == 1 {
        // 1 KiB blocks: block 0 is the boot sector area before group 0.
        w.write_block(
            0,
            &block[..1024].iter().map(|_| 0).collect::<Vec<u8>>(),
            || "clearing the boot sector area".into(),
        )?;
    }
    w.dev.flush().map_err(|source| Error::Io {
        what: "flushing".into(),
        source,
    })?;

    Ok(Ext4Summary {
        block_size: opts.block_size,
        blocks: geo.blocks,
        groups: geo.groups,
        inodes: inodes_count,
        free_blocks: free_blocks_total,
        free_inodes,
        journal_blocks,
        bytes_written: w.written,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemDevice;

    #[test]
    fn sparse_super_groups() {
        let v: Vec<u32> = (0..100).filter(|&g| has_super(g)).collect();
        assert_eq!(v, [0, 1, 3, 5, 7, 9, 25, 27, 49, 81]);
    }

    #[test]
    fn inode_time_epochs() {
        assert_eq!(inode_time(0), (0, 0));
        assert_eq!(inode_time((1 << 31) - 1), ((1 << 31) - 1, 0));
        assert_eq!(inode_time(1 << 31), (1 << 31, 1));
        assert_eq!(inode_time(MAX_TIME), ((1 << 31) - 1, 3));
    }

    #[test]
    fn sizes_out_of_range_are_typed_errors() {
        let opts = Ext4Options::new([1; 16], 0);
        let mut small = MemDevice::zeroed((MIN_SIZE - 4096) as usize);
        assert!(matches!(
            format(&mut small, &opts),
            Err(Error::TooSmall { .. })
        ));
        let opts = opts.label("a label that is far too long");
        let mut ok = MemDevice::zeroed(MIN_SIZE as usize);
        assert!(matches!(
            format(&mut ok, &opts),
            Err(Error::LabelTooLong { .. })
        ));
        let opts = Ext4Options::new([1; 16], 0).block_size(8192);
        assert!(matches!(
            format(&mut ok, &opts),
            Err(Error::BlockSize(8192))
        ));
        let opts = Ext4Options::new([1; 16], MAX_TIME + 1);
        assert!(matches!(
            format(&mut ok, &opts),
            Err(Error::TimeOutOfRange(_))
        ));
        let opts = Ext4Options::new([1; 16], 0).journal_blocks(100);
        assert!(matches!(
            format(&mut ok, &opts),
            Err(Error::JournalSize { .. })
        ));
    }

    #[test]
    fn probe_reads_back_and_rejects_garbage() {
        let mut dev = MemDevice::zeroed(MIN_SIZE as usize);
        assert!(probe(&mut dev).is_none());
        let opts = Ext4Options::new([9; 16], 1234).label("perm");
        format(&mut dev, &opts).unwrap();
        let info = probe(&mut dev).unwrap();
        assert_eq!(info.uuid, [9; 16]);
        assert_eq!(info.label, "perm");
        assert_eq!(info.mkfs_time, 1234);
        assert_eq!(info.blocks, 4096);
        assert!(info.has_journal());
        assert!(probe(&mut MemDevice::zeroed(1500)).is_none());
        let mut bad = MemDevice::zeroed(4096);
        bad.as_mut_slice()[1080..1082].copy_from_slice(&MAGIC.to_le_bytes());
        bad.as_mut_slice()[1048] = 200; // absurd block size
        assert!(probe(&mut bad).is_none());
    }

    #[test]
    fn superblock_checksum_verifies() {
        let mut dev = MemDevice::zeroed(MIN_SIZE as usize);
        format(&mut dev, &Ext4Options::new([3; 16], 0)).unwrap();
        let sb = &dev.as_slice()[1024..2048];
        assert_eq!(crc32c::update(!0, &sb[..1020]), le32(sb, 1020));
    }
}
