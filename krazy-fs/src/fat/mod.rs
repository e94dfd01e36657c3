//! FAT16 and FAT32: a writer whose files are each one contiguous run of
//! clusters (optionally with a fixed capacity), and a small reader with an
//! in-place editor that rewrites a file's own clusters and nothing else.
//!
//! The writer fills the whole [`BlockDevice`] (a partition window of an
//! image, or memory) from a [`Tree`]; the same tree and options always give
//! the same bytes. A file given a [`Capacity`] gets clusters for the whole
//! capacity and a directory entry whose size is that capacity (its contents
//! padded), so [`FatVolume::overwrite`] can later replace it with plain block
//! writes that never touch FAT tables or directories: a power cut during an
//! update can damage only the file being written.
//!
//! ```
//! use krazy_fs::fat::{self, Capacity, FatOptions, FatVolume, Pad};
//! use krazy_fs::{Contents, MemDevice, Tree};
//!
//! let mut tree = Tree::new();
//! tree.add_dir("loader", 0o755, 0).unwrap();
//! tree.add_file("loader/loader.conf", Contents::bytes("default a\n"), 0o644, 0).unwrap();
//! let opts = FatOptions::default()
//!     .with_capacity("loader/loader.conf", Capacity::new(512, Pad::Space));
//! let mut dev = MemDevice::zeroed(8 << 20);
//! let summary = fat::write(&mut dev, &tree, &opts).unwrap();
//! assert_eq!(summary.fat_type, fat::FatType::Fat16);
//!
//! let mut vol = FatVolume::open(&mut dev).unwrap();
//! vol.overwrite("/LOADER/Loader.conf", b"default b\n", b' ').unwrap();
//! let text = vol.read_file("loader/loader.conf").unwrap();
//! assert_eq!(text.len(), 512);
//! assert!(text.starts_with(b"default b\n   "));
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

use std::collections::BTreeMap;
use std::io;

use crate::tree::{NameRules, TreeError};

mod dirent;
mod geometry;
mod names;
mod read;
mod records;
mod write;

pub use read::{DirEntry, FatVolume};
pub use write::write;

#[cfg(doc)]
use crate::{BlockDevice, Tree};

/// The name rules of FAT long names: at most 255 UTF-16 units, none of
/// `"*:<>?\|` or control characters, no symlinks or devices, and names that
/// differ only in case collide. (Trailing dots and spaces, which FAT drops,
/// are refused by the writer itself.)
pub const NAME_RULES: NameRules = NameRules {
    format: "FAT",
    max_name_bytes: None,
    max_name_utf16: Some(255),
    forbidden_chars: &[
        '"', '*', ':', '<', '>', '?', '\\', '|', '\u{1}', '\u{2}', '\u{3}', '\u{4}', '\u{5}',
        '\u{6}', '\u{7}', '\u{8}', '\u{9}', '\u{a}', '\u{b}', '\u{c}', '\u{d}', '\u{e}', '\u{f}',
        '\u{10}', '\u{11}', '\u{12}', '\u{13}', '\u{14}', '\u{15}', '\u{16}', '\u{17}', '\u{18}',
        '\u{19}', '\u{1a}', '\u{1b}', '\u{1c}', '\u{1d}', '\u{1e}', '\u{1f}', '\u{7f}',
    ],
    case_insensitive: true,
    devices: false,
    symlinks: false,
};

/// Which FAT variant to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FatType {
    /// FAT16 below 512 MiB, FAT32 from 512 MiB (what Windows' format and
    /// mkfs.fat choose; the UEFI spec wants FAT32 for an ESP).
    #[default]
    Auto,
    /// FAT16: 4085 to 65524 clusters, a fixed-size root directory.
    Fat16,
    /// FAT32: at least 65525 clusters, the root directory is a cluster chain.
    Fat32,
}

/// What fills a capacity file after its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pad {
    /// Zero bytes (kernels, initramfs, EFI programs ignore trailing zeros).
    Zero,
    /// ASCII spaces (text config files stay readable).
    Space,
}

impl Pad {
    /// The pad byte.
    pub fn byte(self) -> u8 {
        match self {
            Pad::Zero => 0,
            Pad::Space => b' ',
        }
    }
}

/// A fixed size reserved for a file so it can be replaced in place later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// The file's size on the volume in bytes; its contents must not be longer.
    pub bytes: u64,
    /// What fills the bytes after the contents.
    pub pad: Pad,
}

impl Capacity {
    /// A capacity of `bytes` padded with `pad`.
    pub fn new(bytes: u64, pad: Pad) -> Self {
        Self { bytes, pad }
    }
}

/// How [`write`] lays out the volume. `Default` gives an automatic FAT type,
/// volume id `0x4b52415a`, no label, the tree's own times and no capacities.
#[derive(Debug, Clone)]
pub struct FatOptions {
    /// FAT16, FAT32, or chosen from the device size.
    pub fat_type: FatType,
    /// The volume serial number (fixed, for reproducible images).
    pub volume_id: u32,
    /// Volume label: up to 11 characters of `A-Z 0-9 !#$%&'()-@^_`{}~` and
    /// space; `None` writes `NO NAME` and no label entry.
    pub label: Option<String>,
    /// One time (Unix seconds) for every entry, instead of each entry's mtime.
    pub timestamp: Option<u64>,
    /// The 8-byte OEM name in the boot sector (shorter names are space-padded).
    pub oem_name: String,
    /// Sectors before the volume on its disk (its partition's start LBA);
    /// only DOS-era boot code reads it.
    pub hidden_sectors: u32,
    /// Sectors per cluster instead of the size-based default (a power of two
    /// up to 64); the FAT type's cluster-count limits still apply.
    pub sectors_per_cluster: Option<u8>,
    /// Fixed capacities by path (as in the tree, without a leading `/`).
    pub capacities: BTreeMap<String, Capacity>,
    /// The device already reads as zeros (a new sparse file, a zeroed
    /// buffer): runs of zeros of 1 MiB and more are skipped, not written,
    /// so a file's zero padding stays a hole. Wrong on a used device.
    pub device_zeroed: bool,
}

impl Default for FatOptions {
    fn default() -> Self {
        Self {
            fat_type: FatType::Auto,
            volume_id: 0x4b52_415a,
            label: None,
            timestamp: None,
            oem_name: "KRAZY".to_string(),
            hidden_sectors: 0,
            sectors_per_cluster: None,
            capacities: BTreeMap::new(),
            device_zeroed: false,
        }
    }
}

impl FatOptions {
    /// Adds a fixed capacity for the file at `path`.
    pub fn with_capacity(mut self, path: &str, capacity: Capacity) -> Self {
        let p = path.strip_prefix('/').unwrap_or(path);
        self.capacities.insert(p.to_string(), capacity);
        self
    }

    /// Sets the FAT type.
    pub fn with_fat_type(mut self, fat_type: FatType) -> Self {
        self.fat_type = fat_type;
        self
    }

    /// Sets one time for every entry.
    pub fn with_timestamp(mut self, unix_seconds: u64) -> Self {
        self.timestamp = Some(unix_seconds);
        self
    }
}

/// What [`write`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatSummary {
    /// FAT16 or FAT32 (never `Auto`).
    pub fat_type: FatType,
    /// Sectors of 512 bytes in the volume.
    pub total_sectors: u32,
    /// Bytes per cluster.
    pub cluster_size: u32,
    /// Data clusters in the volume.
    pub cluster_count: u32,
    /// Clusters holding files and directories.
    pub used_clusters: u32,
    /// Entries of the FAT16 root directory (0 on FAT32).
    pub root_entries: u16,
    /// Byte offset of the first data cluster from the volume's start.
    pub data_offset: u64,
    /// Files written.
    pub files: usize,
    /// Directories written, not counting the root.
    pub dirs: usize,
}

/// Why a FAT volume cannot be written, read or edited. Paths are as in the
/// tree or as asked for.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The tree breaks FAT's name rules or is inconsistent.
    #[error("the tree cannot be written as FAT")]
    Tree(#[from] TreeError),
    /// Reading or writing the device (or a host file) failed.
    #[error("{what} failed")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The device is too small or too large for the FAT type.
    #[error("a device of {bytes} bytes cannot hold {fat}: {reason}")]
    BadSize {
        /// Device size.
        bytes: u64,
        /// The FAT type asked for.
        fat: &'static str,
        /// Why.
        reason: String,
    },
    /// The files and directories need more clusters than the volume has.
    #[error("the tree does not fit: it needs {needed} clusters of {cluster_size} bytes but the volume has {available}")]
    DoesNotFit {
        /// Clusters needed.
        needed: u64,
        /// Clusters in the volume.
        available: u32,
        /// Bytes per cluster.
        cluster_size: u32,
    },
    /// The FAT16 root directory cannot hold this many entries.
    #[error("the FAT16 root directory needs {needed} entries (long names count extra), more than its limit of {max}; use FAT32 or a subdirectory")]
    RootDirFull {
        /// Entries needed.
        needed: usize,
        /// The limit.
        max: usize,
    },
    /// A directory has more entries than FAT allows (65536).
    #[error("directory {path:?} needs {needed} entries (long names count extra), more than FAT's limit of 65536")]
    DirectoryTooLarge {
        /// The directory.
        path: String,
        /// Entries needed.
        needed: usize,
    },
    /// A file is 4 GiB or larger.
    #[error("{path:?} has {size} bytes; a FAT file is at most 4294967295")]
    FileTooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
    },
    /// A capacity names a path that is not a file of the tree.
    #[error("a capacity is given for {path:?}, which is not a file of the tree")]
    CapacityNotAFile {
        /// The path.
        path: String,
    },
    /// A file's contents are longer than its capacity.
    #[error("{path:?} has {len} bytes, more than its capacity of {capacity}")]
    CapacityTooSmall {
        /// The file.
        path: String,
        /// Contents length.
        len: u64,
        /// Its capacity.
        capacity: u64,
    },
    /// A host file changed size while the image was written.
    #[error("host file for {path:?} changed size while being written (expected {expected} bytes)")]
    ContentsChanged {
        /// The file.
        path: String,
        /// The size seen when planning.
        expected: u64,
    },
    /// No free `NAME~N` short name was left in a directory.
    #[error("no free 8.3 short name is left for {path:?}")]
    ShortNamesExhausted {
        /// The entry.
        path: String,
    },
    /// The volume label or OEM name holds characters or lengths FAT cannot store.
    #[error("invalid {what} {value:?}: {reason}")]
    BadOption {
        /// Which option.
        what: &'static str,
        /// Its value.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// The boot sector is not one of a FAT16 or FAT32 volume this reader accepts.
    #[error("not a FAT16/FAT32 volume: {0}")]
    BadBootSector(&'static str),
    /// The volume's structures are damaged.
    #[error("corrupt volume at {path:?}: {reason}")]
    Corrupt {
        /// The path being read.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// No entry has this path.
    #[error("{path:?} does not exist on the volume")]
    NotFound {
        /// The path.
        path: String,
    },
    /// A path goes through, or asks a directory's listing of, a file.
    #[error("{path:?} is not a directory")]
    NotADirectory {
        /// The path.
        path: String,
    },
    /// A file operation was asked of a directory.
    #[error("{path:?} is a directory")]
    IsADirectory {
        /// The path.
        path: String,
    },
    /// In-place contents must fit in the file's existing size.
    #[error(
        "new contents of {path:?} have {len} bytes, more than the file's fixed size of {size}"
    )]
    TooLong {
        /// The file.
        path: String,
        /// New contents length.
        len: u64,
        /// The file's size on the volume.
        size: u32,
    },
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Converts Unix seconds to a DOS (date, time) pair in UTC, clamped to the
/// years 1980 to 2107 that DOS dates can hold. Two-second resolution.
pub fn dos_datetime(unix: u64) -> (u16, u16) {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (y, m, d) = civil_from_days(days);
    if y < 1980 {
        return ((1 << 5) | 1, 0);
    }
    if y > 2107 {
        return ((127 << 9) | (12 << 5) | 31, (23 << 11) | (59 << 5) | 29);
    }
    let date = (((y - 1980) as u16) << 9) | ((m as u16) << 5) | d as u16;
    let time = (((secs / 3600) as u16) << 11)
        | ((((secs / 60) % 60) as u16) << 5)
        | ((secs % 60) / 2) as u16;
    (date, time)
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Eras of 400 years from 0000-03-01; days is non-negative, so is everything.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dos_times() {
        // 2024-02-29 13:45:58 UTC
        let (d, t) = dos_datetime(1_709_214_358);
        assert_eq!((d >> 9, (d >> 5) & 15, d & 31), (44, 2, 29));
        assert_eq!((t >> 11, (t >> 5) & 63, (t & 31) * 2), (13, 45, 58));
        assert_eq!(dos_datetime(0), (33, 0));
        assert_eq!(dos_datetime(u64::MAX / 2).0 >> 9, 127);
    }
}
