//! Writing a built image onto a disk or SD card: refusing devices that are
//! in use, copying the image's data, making its holes read as zeros where
//! that matters, reading everything back, and asking the kernel to re-read
//! the partition table.
//!
//! Two steps, so a program can show what it is about to overwrite before it
//! builds and writes:
//!
//! 1. [`inspect_target`] (or [`inspect_target_with`]) opens a device, reads
//!    its size and sector size, and refuses a partition (write to its whole
//!    disk), the disk that holds `/`, a device that is read-only, mounted,
//!    used as swap, held by device mapper/RAID, or busy in the kernel. The
//!    returned [`Target`] keeps the device open exclusively (`O_EXCL`), so
//!    nothing can mount it until the target is dropped.
//! 2. [`write_image`] (or [`write_image_with`]) writes an image whose size
//!    equals the device's (the image assembler lays the image out for the
//!    device's size: backup GPT at its end, `/perm` filling it).
//!
//! ```
//! use krazy_build::flash::{inspect_target_with, write_image, Phase, TargetOptions};
//! use std::os::unix::fs::FileExt;
//!
//! # let dir = tempfile::tempdir()?;
//! # let (image, disk) = (dir.path().join("pc.img"), dir.path().join("disk"));
//! # std::fs::File::create(&disk)?.set_len(8 << 20)?;
//! // A stand-in for an SD card; on a real one: inspect_target(Path::new("/dev/sdb"))?.
//! let opts = TargetOptions { allow_regular_file: true };
//! let target = inspect_target_with(&disk, &opts)?;
//! // Build an image of exactly target.size bytes (here: 4 KiB of data in a sparse file).
//! let f = std::fs::File::create(&image)?;
//! f.set_len(target.size)?;
//! f.write_all_at(b"hello", 1 << 20)?;
//! let report = write_image(&image, &target, |p| {
//!     if p.phase == Phase::Verify {
//!         eprint!("\rverifying {}/{}", p.done, p.total);
//!     }
//! })?;
//! assert_eq!(report.data_bytes, 4096);
//! assert_eq!(report.verified_bytes, target.size);
//! assert_eq!(std::fs::read(&disk)?, std::fs::read(&image)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How the image gets onto the device
//!
//! The image is a sparse file. Its data extents (found with
//! `lseek(SEEK_DATA/SEEK_HOLE)`, rounded out to 4 KiB or the device's
//! logical block size) are copied with 4 MiB `O_DIRECT` writes from an
//! aligned buffer, in offset order, interleaved with the zeroing of the holes
//! between them, so the device sees one sequential pass. `O_DIRECT` keeps
//! gigabytes of image out of the page cache and makes the read-back come
//! from the device, not from memory.
//!
//! A hole reads as zeros in the image but the device may hold anything: old
//! partitions, file systems, random bytes. Which holes are zeroed is
//! [`Holes`]; the default, [`Holes::Auto`], zeroes every hole except the
//! interior of ext4 partitions, where ext4's own flags already make old
//! bytes unreachable (see [`Holes::Auto`] for the exact rule). That keeps a
//! 32 GB SD card from being written end to end for a `/perm` that is
//! nearly empty, while the FAT tables, directories, squashfs slots, GPT and
//! every ext4 metadata block that the file system reads end up exactly as in
//! the image.
//!
//! Holes are zeroed with the `BLKZEROOUT` ioctl ([`ZeroWith::Kernel`]): the
//! kernel sends WRITE ZEROES (or WRITE SAME/UNMAP) where the device supports
//! it and otherwise writes its own zero page, without copying zeros from
//! user space; on a device that supports neither it costs what writing the
//! zeros costs, never more. [`ZeroWith::Writes`] writes a zero buffer
//! instead and exists for comparison.
//!
//! # Measured
//!
//! A 1 GiB sparse image with 200 MiB of data in 25 extents, written over a
//! 1 GiB loop device full of random bytes (2-vCPU VM, kernel 6.18; the loop
//! devices are backed by memory or a fast virtio disk, so these figures
//! show the overheads, not an SD card's speed). Seconds, two runs, with
//! [`Holes::All`] unless said otherwise (`cargo test -p krazy-build --test
//! flash -- --ignored --nocapture measure`):
//!
//! | | ext4-backed loop | same, `--direct-io=on` | tmpfs-backed loop (no write-zeroes: kernel fallback) |
//! |---|---|---|---|
//! | `write_image`, zero 824 MiB of holes, verify all 1 GiB | 0.39–0.51 | 0.39–0.70 | 0.35–0.53 |
//! | same, no verify | 0.10–0.11 | 0.11–0.18 | 0.12–0.15 |
//! | same, zeros by user-space writes ([`ZeroWith::Writes`]) | 1.42–1.90 | 0.29–0.55 | 0.26–0.34 |
//! | data only ([`Holes::Keep`]), verify data | 0.12 | 0.25–0.36 | 0.07–0.11 |
//! | `dd bs=4M conv=fsync` (whole device, no verify) | 3.73–5.32 | 0.77–1.08 | 1.23–2.75 |
//! | `dd bs=4M oflag=direct conv=fsync` | 0.46–0.48 | 0.60–0.66 | 0.31–0.58 |
//! | `dd bs=4M conv=sparse,fsync` (wrong: leaves old bytes in holes) | 0.23–0.27 | 0.21–0.26 | 0.20–0.21 |
//!
//! So: kernel zeroing beats writing zeros from user space by 1.7–20 times
//! (and by far more on devices with a real WRITE ZEROES, where no data
//! moves at all); `write_image` with a full read-back costs about what an
//! unverified `dd oflag=direct` costs, and one without read-back is 2–6
//! times faster than it. On a real SD card (no write-zeroes, ~20 MB/s) the
//! zeroing is as slow as writing, which is why [`Holes::Auto`] skips the
//! interior of ext4 partitions: for a 32 GB card that is ~30 GB (25 minutes)
//! not written.
//!
//! After the writes the device is flushed (`fsync`, which also flushes the
//! device's write cache), then everything written is read back with
//! `O_DIRECT` and compared byte for byte with the image (data) or with zeros
//! (zeroed holes; [`Verify`]). A difference fails with
//! [`FlashError::Verify`], which lists the offsets. Finally `BLKRRPART`
//! makes the kernel read the new partition table; a loop device without
//! partition scanning answers `EINVAL`, which is logged and reported in
//! [`Report::partition_table`], not treated as an error.
//!
//! # Where the code lives
//!
//! This file holds the public types and [`FlashError`]; `target.rs` the
//! inspection of a device (sysfs, mountinfo, swaps, the disks under `/`),
//! `write.rs` the writer (copy, zero, flush, read-back, re-read) and
//! `ranges.rs` the range algebra and the image's data and ext4 ranges.

mod ranges;
mod target;
mod write;

pub use target::{inspect_target, inspect_target_with};
pub use write::{write_image, write_image_with};

mod options;
pub use options::{Holes, Phase, Progress, Report, Reread, Verify, WriteOptions, ZeroWith};

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// The block-device ioctls used here (numbers from `<linux/fs.h>`).
mod ioctl {
    use nix::libc;
    nix::ioctl_read_bad!(
        blkgetsize64,
        nix::request_code_read!(0x12, 114, std::mem::size_of::<usize>()),
        u64
    );
    nix::ioctl_read_bad!(blksszget, nix::request_code_none!(0x12, 104), libc::c_int);
    nix::ioctl_read_bad!(blkpbszget, nix::request_code_none!(0x12, 123), libc::c_uint);
    nix::ioctl_write_ptr_bad!(blkzeroout, nix::request_code_none!(0x12, 127), [u64; 2]);
    nix::ioctl_none!(blkrrpart, 0x12, 95);
}

/// Bytes per chunk of copying, zeroing and reading back.
const DEFAULT_CHUNK: usize = 4 << 20;
/// The sector size krazy images are laid out for.
const IMAGE_SECTOR: u32 = 512;

/// Why a device cannot be written, or writing it failed. Every message
/// names the device and says what to do, and includes its cause (the
/// `error` fields), so no variant also reports it as its `source()`.
#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    /// The device (or file) could not be opened or examined.
    #[error("cannot open {path}: {error} (list disks with `lsblk`)")]
    Open {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        error: io::Error,
    },
    /// The path is not a block device.
    #[error(
        "{path} is not a block device but a {kind}; name a whole disk such as /dev/sdb \
         or /dev/mmcblk0 (writing to an image file must be allowed explicitly)"
    )]
    NotABlockDevice {
        /// The path given.
        path: PathBuf,
        /// What it is instead (`regular file`, `directory`, ...).
        kind: &'static str,
    },
    /// The path is a partition, not a whole disk.
    #[error("{path} is a partition of {disk}; an image holds a whole disk, write it to {disk}")]
    IsPartition {
        /// The path given.
        path: PathBuf,
        /// The whole disk the partition belongs to.
        disk: PathBuf,
    },
    /// The device is (part of) the disk that holds the running system's `/`.
    #[error(
        "{path} is the disk that holds / (the running system's root file system is on \
         {root_device}); writing it would destroy this system, choose another device"
    )]
    RootDisk {
        /// The path given.
        path: PathBuf,
        /// The device `/` is mounted from.
        root_device: PathBuf,
    },
    /// The device or one of its partitions is mounted.
    #[error("{path} is in use: {}", mounted_list(.mounts))]
    Mounted {
        /// The path given.
        path: PathBuf,
        /// Every mount of the device or its partitions.
        mounts: Vec<MountUse>,
    },
    /// The device or one of its partitions is active swap space.
    #[error("{device} (on {path}) is in use as swap: swapoff {device} first")]
    Swap {
        /// The path given.
        path: PathBuf,
        /// The swap device.
        device: PathBuf,
    },
    /// A device-mapper, RAID or similar device is built on the device.
    #[error(
        "{device} (on {path}) is held by {holder} (device mapper, LVM, dm-crypt or RAID); \
         stop that first, e.g. `dmsetup remove {holder}` or `mdadm --stop /dev/{holder}`"
    )]
    Held {
        /// The path given.
        path: PathBuf,
        /// The device that is held (the disk or one of its partitions).
        device: PathBuf,
        /// The kernel name of the holder (`dm-0`, `md127`).
        holder: String,
    },
    /// The kernel refused exclusive access.
    #[error(
        "{path} is busy: the kernel refused exclusive access (mounted in another mount \
         namespace or container, or opened exclusively by another program); close what \
         uses it and try again"
    )]
    Busy {
        /// The path given.
        path: PathBuf,
    },
    /// The device is read-only.
    #[error(
        "{path} is read-only: slide an SD card's or adapter's lock switch to unlocked, or \
         clear the kernel's read-only flag with `blockdev --setrw {path}`"
    )]
    ReadOnly {
        /// The path given.
        path: PathBuf,
    },
    /// The device reports a size of zero.
    #[error("{path} has no medium (its size is 0 bytes): insert the card or attach the disk")]
    NoMedium {
        /// The path given.
        path: PathBuf,
    },
    /// A system file (mountinfo, swaps, sysfs) could not be read.
    #[error("reading {path} failed: {error}")]
    System {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: io::Error,
    },
    /// A block-device ioctl failed.
    #[error("{what} on {path} failed: {error}")]
    Ioctl {
        /// The device.
        path: PathBuf,
        /// The ioctl's name.
        what: &'static str,
        /// The error.
        error: io::Error,
    },
    /// The image could not be opened or read.
    #[error("reading the image {path} failed: {error}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// The I/O error.
        error: io::Error,
    },
    /// The image is the target itself.
    #[error("{image} and {path} are the same file")]
    SameFile {
        /// The image file.
        image: PathBuf,
        /// The target.
        path: PathBuf,
    },
    /// The image's size is not the device's size.
    #[error(
        "the image {image} is {image_size} bytes but {path} is {device_size} bytes; the \
         layout (backup GPT at the end, /perm filling the disk) follows the device's size, \
         so rebuild the image for this device (--size {device_size})"
    )]
    SizeMismatch {
        /// The image file.
        image: PathBuf,
        /// The image's size.
        image_size: u64,
        /// The target.
        path: PathBuf,
        /// The target's size.
        device_size: u64,
    },
    /// The device's sectors are not the 512 bytes the image's GPT is laid out for.
    #[error(
        "{path} has {sector_size}-byte logical sectors but the image's GPT is laid out for \
         512-byte sectors; firmware and kernel would not find its partitions on this device"
    )]
    SectorSize {
        /// The target.
        path: PathBuf,
        /// The device's logical sector size.
        sector_size: u32,
    },
    /// A write to the device failed.
    #[error(
        "writing {path} at byte {offset} failed: {error} (a failing card or a removed device?)"
    )]
    Write {
        /// The target.
        path: PathBuf,
        /// Where the write started.
        offset: u64,
        /// The I/O error.
        error: io::Error,
    },
    /// Flushing the device failed.
    #[error("flushing {path} failed: {error}; the device may not hold what was written")]
    Sync {
        /// The target.
        path: PathBuf,
        /// The I/O error.
        error: io::Error,
    },
    /// Reading back from the device failed.
    #[error("reading back {path} at byte {offset} failed: {error}")]
    ReadBack {
        /// The target.
        path: PathBuf,
        /// Where the read started.
        offset: u64,
        /// The I/O error.
        error: io::Error,
    },
    /// The device does not hold what was written.
    #[error(
        "{path} does not hold what was written: {chunks} chunk(s) differ, the first at byte \
         {first}; the device may be failing or report more capacity than it has \
         (check it with f3probe or another card)",
        first = .mismatches.first().map_or(0, |m| m.offset)
    )]
    Verify {
        /// The target.
        path: PathBuf,
        /// How many chunks differ in all.
        chunks: u64,
        /// The first differences (at most 32), in offset order.
        mismatches: Vec<Mismatch>,
    },
}

fn mounted_list(mounts: &[MountUse]) -> String {
    let mut s = String::new();
    for (i, m) in mounts.iter().enumerate() {
        if i > 0 {
            s.push_str("; ");
        }
        s.push_str(&format!(
            "{} is mounted on {}: unmount it first: umount {}",
            m.device.display(),
            m.mount_point.display(),
            shell_quote(&m.mount_point)
        ));
    }
    s
}

/// `p` as a shell word, quoted when it needs to be.
fn shell_quote(p: &Path) -> String {
    let s = p.display().to_string();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@,=".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// One mount of a target device or of one of its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountUse {
    /// The mounted device (`/dev/sdb1`).
    pub device: PathBuf,
    /// Where it is mounted.
    pub mount_point: PathBuf,
}

/// A range of the device that read back differently from what was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The first differing byte.
    pub offset: u64,
    /// How many bytes of its chunk differ.
    pub differing_bytes: u64,
}

/// What a [`Target`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// A whole-disk block device.
    BlockDevice {
        /// Its major number.
        major: u32,
        /// Its minor number.
        minor: u32,
    },
    /// A regular file, allowed by [`TargetOptions::allow_regular_file`].
    RegularFile,
}

/// Options for [`inspect_target_with`].
#[derive(Debug, Clone, Default)]
pub struct TargetOptions {
    /// Accept an existing regular file as the target (for tests and for
    /// writing into a preallocated image). Off by default: a mistyped device
    /// name must not silently become a file.
    pub allow_regular_file: bool,
}

/// A device that passed the checks of [`inspect_target`], held open
/// exclusively until dropped.
#[derive(Debug)]
pub struct Target {
    /// The path given.
    pub path: PathBuf,
    /// The kernel's name for the device (`sdb`, `mmcblk0`, `loop3`); `None` for a file.
    pub name: Option<String>,
    /// Block device or file.
    pub kind: TargetKind,
    /// Size in bytes.
    pub size: u64,
    /// Logical sector size in bytes (the unit of addressing; 512 for a file).
    pub logical_sector_size: u32,
    /// Physical sector size in bytes (the unit the device writes internally).
    pub physical_sector_size: u32,
    /// Vendor and model from sysfs, for confirmation prompts (`"SanDisk Ultra"`).
    pub model: Option<String>,
    /// Whether the kernel marks the device removable (SD cards, USB sticks).
    pub removable: bool,
    /// The kernel names of the device's current partitions.
    pub partitions: Vec<String>,
    file: File,
    direct: bool,
    sys_dir: Option<PathBuf>,
}

impl Target {
    /// Whether the target is a block device (not a file).
    pub fn is_block_device(&self) -> bool {
        matches!(self.kind, TargetKind::BlockDevice { .. })
    }
}
