//! What [`super::write_image_with`] is asked to do and what it reports:
//! which holes to zero and how, verification, progress, the report.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

#[cfg(doc)]
use super::write_image_with;
use super::DEFAULT_CHUNK;

/// Which holes of the image [`write_image_with`] makes read as zeros on
/// the device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Holes {
    /// Every hole except the interior of ext4 partitions (found through the
    /// image's GPT). Inside an ext4 partition, the holes zeroed are: its
    /// first and last MiB (boot sector and superblock area, and where old
    /// signatures that `blkid` would find live), the group descriptors,
    /// the block bitmap of every group without `BLOCK_UNINIT`, the inode
    /// bitmap of every group without `INODE_UNINIT`, the used part of the
    /// inode table of every group without `INODE_UNINIT` (up to
    /// `bg_itable_unused`), and the whole inode table of every group marked
    /// `ITABLE_ZEROED`. Everything else there is unreachable whatever it
    /// holds: free blocks are never read, the kernel zeroes uninitialised
    /// inode tables itself after the first mount (lazy itable init), and an
    /// empty journal (`s_start = 0`) is never replayed — the rules that let
    /// `mke2fs` skip zeroing on a device. An image without a valid GPT is
    /// treated like [`Holes::All`].
    #[default]
    Auto,
    /// Every hole: the device ends byte-identical to the image. Costs a
    /// write of the whole device where it has no write-zeroes support
    /// (most SD card readers).
    All,
    /// Only the holes inside these byte ranges (for a caller that knows its
    /// layout); everything else keeps the device's old bytes.
    Within(Vec<Range<u64>>),
    /// No hole (a device known to read as zeros already).
    Keep,
}

/// How holes are zeroed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ZeroWith {
    /// `BLKZEROOUT` on a block device (WRITE ZEROES where supported, the
    /// kernel's zero page otherwise), `fallocate(PUNCH_HOLE)` on a file;
    /// plain writes where neither works.
    #[default]
    Kernel,
    /// `O_DIRECT` writes of a zero buffer from user space (kept for
    /// comparison and for devices whose zeroing offload misbehaves).
    Writes,
}

/// What is read back after writing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Verify {
    /// The data and the zeroed holes: everything written.
    #[default]
    Written,
    /// The data only.
    Data,
    /// Nothing.
    Off,
}

/// Options for [`write_image_with`]; `Default` is what [`write_image`] uses.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Which holes are zeroed.
    pub holes: Holes,
    /// How they are zeroed.
    pub zero_with: ZeroWith,
    /// What is read back.
    pub verify: Verify,
    /// Bytes per write and read (rounded up to the alignment); 4 MiB.
    pub chunk_bytes: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            holes: Holes::default(),
            zero_with: ZeroWith::default(),
            verify: Verify::default(),
            chunk_bytes: DEFAULT_CHUNK,
        }
    }
}

/// The step a [`Progress`] report belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Copying data and zeroing holes (`total` = data + zeroed bytes).
    Write,
    /// Flushing the device (`done` goes from 0 to `total` = 1 when finished).
    Sync,
    /// Reading back (`total` = the bytes to verify).
    Verify,
}

/// Progress of [`write_image`]: bytes done out of the phase's total. Every
/// phase starts with a report of `done = 0`, so a caller can reset its bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The current phase.
    pub phase: Phase,
    /// Bytes (or steps) done in this phase.
    pub done: u64,
    /// Bytes (or steps) in this phase.
    pub total: u64,
}

/// What happened when the kernel was asked to re-read the partition table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reread {
    /// The kernel re-read it and now shows this many partitions (fewer than
    /// [`Report::image_partitions`] means the kernel cannot parse the table,
    /// e.g. one built without `CONFIG_EFI_PARTITION`; `partx -a` adds them).
    Done {
        /// Partitions of the device in sysfs after the re-read.
        kernel_partitions: usize,
    },
    /// Not asked: the target is a file.
    NotABlockDevice,
    /// The kernel declined (a loop device without partition scanning says
    /// `EINVAL`); the partitions appear after re-attaching or replugging.
    Failed(String),
}

/// What [`write_image`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Bytes of the device (and the image).
    pub size: u64,
    /// Bytes copied from the image's data extents.
    pub data_bytes: u64,
    /// Bytes of holes made to read as zeros.
    pub zeroed_bytes: u64,
    /// Hole ranges left as the device had them (see [`Holes`]).
    pub holes_left: Vec<Range<u64>>,
    /// Whether kernel zeroing was unavailable and zeros were written instead.
    pub zero_fallback: bool,
    /// Bytes read back and compared.
    pub verified_bytes: u64,
    /// Time spent writing and zeroing.
    pub write_time: Duration,
    /// Time spent flushing.
    pub sync_time: Duration,
    /// Time spent reading back.
    pub verify_time: Duration,
    /// Partitions in the image's GPT (0 without a valid GPT).
    pub image_partitions: usize,
    /// The partition-table re-read.
    pub partition_table: Reread,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Write => "writing",
            Phase::Sync => "flushing",
            Phase::Verify => "verifying",
        })
    }
}
