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

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::libc;

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
/// The smallest alignment used for extents and `O_DIRECT` buffers.
const MIN_ALIGN: u64 = 4096;
/// Bytes per `BLKZEROOUT` call (so progress moves while the kernel zeroes).
const ZERO_STEP: u64 = 32 << 20;
/// How many mismatching chunks [`FlashError::Verify`] lists.
const MAX_MISMATCHES: usize = 32;
/// The sector size krazy images are laid out for.
const IMAGE_SECTOR: u32 = 512;

/// Why a device cannot be written, or writing it failed. Every message
/// names the device and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    /// The device (or file) could not be opened or examined.
    #[error("cannot open {path}: {source} (list disks with `lsblk`)")]
    Open {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
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
    #[error("reading {path} failed: {source}")]
    System {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A block-device ioctl failed.
    #[error("{what} on {path} failed: {source}")]
    Ioctl {
        /// The device.
        path: PathBuf,
        /// The ioctl's name.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
    /// The image could not be opened or read.
    #[error("reading the image {path} failed: {source}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
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
        "writing {path} at byte {offset} failed: {source} (a failing card or a removed device?)"
    )]
    Write {
        /// The target.
        path: PathBuf,
        /// Where the write started.
        offset: u64,
        /// The I/O error.
        source: io::Error,
    },
    /// Flushing the device failed.
    #[error("flushing {path} failed: {source}; the device may not hold what was written")]
    Sync {
        /// The target.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Reading back from the device failed.
    #[error("reading back {path} at byte {offset} failed: {source}")]
    ReadBack {
        /// The target.
        path: PathBuf,
        /// Where the read started.
        offset: u64,
        /// The I/O error.
        source: io::Error,
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

/// Opens `dev` and checks it can be overwritten; see the module docs for
/// what is refused. Regular files are refused; [`inspect_target_with`]
/// can allow them.
pub fn inspect_target(dev: &Path) -> Result<Target, FlashError> {
    inspect_target_with(dev, &TargetOptions::default())
}

/// [`inspect_target`] with options.
pub fn inspect_target_with(dev: &Path, opts: &TargetOptions) -> Result<Target, FlashError> {
    inspect_in(&Sys::default(), dev, opts)
}

/// Where the system's views live (so the sysfs logic can be unit-tested on
/// a fake tree).
struct Sys {
    sys: PathBuf,
    mountinfo: PathBuf,
    swaps: PathBuf,
}

impl Default for Sys {
    fn default() -> Self {
        Self {
            sys: "/sys".into(),
            mountinfo: "/proc/self/mountinfo".into(),
            swaps: "/proc/swaps".into(),
        }
    }
}

fn open_err(path: &Path) -> impl FnOnce(io::Error) -> FlashError + '_ {
    move |source| FlashError::Open {
        path: path.to_path_buf(),
        source,
    }
}

fn sys_err(path: &Path) -> impl FnOnce(io::Error) -> FlashError + '_ {
    move |source| FlashError::System {
        path: path.to_path_buf(),
        source,
    }
}

fn inspect_in(sys: &Sys, path: &Path, opts: &TargetOptions) -> Result<Target, FlashError> {
    let meta = std::fs::metadata(path).map_err(open_err(path))?;
    let ft = meta.file_type();
    if ft.is_file() && opts.allow_regular_file {
        return inspect_file(path);
    }
    if !ft.is_block_device() {
        let kind = if ft.is_file() {
            "regular file"
        } else if ft.is_dir() {
            "directory"
        } else if ft.is_char_device() {
            "character device"
        } else {
            "special file"
        };
        return Err(FlashError::NotABlockDevice {
            path: path.to_path_buf(),
            kind,
        });
    }
    let rdev = meta.rdev();
    let (major, minor) = (dev_major(rdev), dev_minor(rdev));
    let dir = sys
        .block_dir(major, minor)
        .map_err(sys_err(&sys.sys.join(format!("dev/block/{major}:{minor}"))))?;
    let name = file_name(&dir);
    if dir.join("partition").exists() {
        let disk = dir.parent().map(file_name).unwrap_or_default();
        return Err(FlashError::IsPartition {
            path: path.to_path_buf(),
            disk: Path::new("/dev").join(disk),
        });
    }

    let mounts =
        parse_mountinfo(&std::fs::read_to_string(&sys.mountinfo).map_err(sys_err(&sys.mountinfo))?);
    if let Some((root_device, disks)) = sys.root_disks(&mounts) {
        if disks.contains(&name) {
            return Err(FlashError::RootDisk {
                path: path.to_path_buf(),
                root_device,
            });
        }
    }
    if read_trim(&dir.join("ro")).as_deref() == Some("1") {
        return Err(FlashError::ReadOnly {
            path: path.to_path_buf(),
        });
    }

    // The disk and its partitions, as (name, dev).
    let partitions = partitions_of(&dir);
    let mut devices = vec![(name.clone(), (major, minor), dir.clone())];
    devices.extend(partitions.iter().cloned());

    let mut uses = Vec::new();
    for m in &mounts {
        let src_dev = m.source_rdev();
        for (n, d, _) in &devices {
            if m.dev == *d || src_dev == Some(*d) {
                uses.push(MountUse {
                    device: Path::new("/dev").join(n),
                    mount_point: m.mount_point.clone(),
                });
            }
        }
    }
    if !uses.is_empty() {
        return Err(FlashError::Mounted {
            path: path.to_path_buf(),
            mounts: uses,
        });
    }
    if let Ok(text) = std::fs::read_to_string(&sys.swaps) {
        for swap in parse_swaps(&text) {
            let Ok(m) = std::fs::metadata(&swap) else {
                continue;
            };
            if !m.file_type().is_block_device() {
                continue;
            }
            let d = (dev_major(m.rdev()), dev_minor(m.rdev()));
            if devices.iter().any(|(_, dd, _)| *dd == d) {
                return Err(FlashError::Swap {
                    path: path.to_path_buf(),
                    device: swap,
                });
            }
        }
    }
    for (n, _, d) in &devices {
        if let Some(holder) = list_dir(&d.join("holders")).into_iter().next() {
            return Err(FlashError::Held {
                path: path.to_path_buf(),
                device: Path::new("/dev").join(n),
                holder,
            });
        }
    }

    // O_EXCL on a block device claims it in the kernel: it fails with EBUSY
    // while the device or any partition is mounted (in any namespace) or
    // claimed, and keeps others from mounting it while we hold it.
    let open = |direct: bool| {
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        let mut flags = libc::O_EXCL | libc::O_CLOEXEC;
        if direct {
            flags |= libc::O_DIRECT;
        }
        o.custom_flags(flags).open(path)
    };
    let (file, direct) = match open(true) {
        Ok(f) => (f, true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            (open(false).map_err(open_err(path))?, false)
        }
        Err(e) => return Err(open_error(path, e)),
    };
    let fd = file.as_raw_fd();
    let mut size = 0u64;
    // SAFETY: fd is an open block device and `size` is a valid u64 the
    // kernel writes the size into.
    unsafe { ioctl::blkgetsize64(fd, &mut size) }.map_err(ioctl_err(path, "BLKGETSIZE64"))?;
    if size == 0 {
        return Err(FlashError::NoMedium {
            path: path.to_path_buf(),
        });
    }
    let mut lbs: libc::c_int = 0;
    // SAFETY: fd is an open block device and `lbs` is a valid int.
    unsafe { ioctl::blksszget(fd, &mut lbs) }.map_err(ioctl_err(path, "BLKSSZGET"))?;
    let mut pbs: libc::c_uint = 0;
    // SAFETY: fd is an open block device and `pbs` is a valid unsigned int.
    unsafe { ioctl::blkpbszget(fd, &mut pbs) }.map_err(ioctl_err(path, "BLKPBSZGET"))?;
    let logical = u32::try_from(lbs).unwrap_or(512).max(512);
    let model = [
        read_trim(&dir.join("device/vendor")),
        read_trim(&dir.join("device/model")),
    ]
    .into_iter()
    .flatten()
    .filter(|s| !s.is_empty())
    .collect::<Vec<_>>()
    .join(" ");
    let target = Target {
        path: path.to_path_buf(),
        name: Some(name),
        kind: TargetKind::BlockDevice { major, minor },
        size,
        logical_sector_size: logical,
        physical_sector_size: pbs.max(logical),
        model: (!model.is_empty()).then_some(model),
        removable: read_trim(&dir.join("removable")).as_deref() == Some("1"),
        partitions: partitions.into_iter().map(|(n, _, _)| n).collect(),
        file,
        direct,
        sys_dir: Some(dir),
    };
    tracing::debug!(?target, "flash target inspected");
    Ok(target)
}

fn open_error(path: &Path, e: io::Error) -> FlashError {
    match e.raw_os_error() {
        Some(libc::EBUSY) => FlashError::Busy {
            path: path.to_path_buf(),
        },
        Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM) => FlashError::ReadOnly {
            path: path.to_path_buf(),
        },
        _ => FlashError::Open {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

fn ioctl_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(Errno) -> FlashError + 'a {
    move |e| FlashError::Ioctl {
        path: path.to_path_buf(),
        what,
        source: io::Error::from(e),
    }
}

fn inspect_file(path: &Path) -> Result<Target, FlashError> {
    let open = |direct: bool| {
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        o.custom_flags(if direct {
            libc::O_DIRECT | libc::O_CLOEXEC
        } else {
            libc::O_CLOEXEC
        })
        .open(path)
    };
    let (file, direct) = match open(true) {
        Ok(f) => (f, true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            (open(false).map_err(open_err(path))?, false)
        }
        Err(e) => return Err(open_error(path, e)),
    };
    let size = file.metadata().map_err(open_err(path))?.len();
    if size == 0 {
        return Err(FlashError::NoMedium {
            path: path.to_path_buf(),
        });
    }
    Ok(Target {
        path: path.to_path_buf(),
        name: None,
        kind: TargetKind::RegularFile,
        size,
        logical_sector_size: IMAGE_SECTOR,
        physical_sector_size: IMAGE_SECTOR,
        model: None,
        removable: false,
        partitions: Vec::new(),
        file,
        direct,
        sys_dir: None,
    })
}

fn dev_major(rdev: u64) -> u32 {
    // glibc's gnu_dev_major.
    (((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0x0000_0fff)) as u32
}

fn dev_minor(rdev: u64) -> u32 {
    (((rdev >> 12) & 0xffff_ff00) | (rdev & 0x0000_00ff)) as u32
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn list_dir(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn parse_dev(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The partitions of the disk whose sysfs directory is `disk`: subdirectories
/// with a `partition` file, as (name, major:minor, directory).
fn partitions_of(disk: &Path) -> Vec<(String, (u32, u32), PathBuf)> {
    let mut out = Vec::new();
    for n in list_dir(disk) {
        let d = disk.join(&n);
        if !d.join("partition").is_file() {
            continue;
        }
        if let Some(dev) = read_trim(&d.join("dev")).as_deref().and_then(parse_dev) {
            out.push((n, dev, d));
        }
    }
    out
}

impl Sys {
    /// The canonical sysfs directory of block device `major:minor`.
    fn block_dir(&self, major: u32, minor: u32) -> io::Result<PathBuf> {
        std::fs::canonicalize(self.sys.join(format!("dev/block/{major}:{minor}")))
    }

    /// The device `/` is mounted from and every block device it rests on:
    /// the device itself, the disk of a partition, and (through `slaves`)
    /// what a device-mapper or RAID device is built on. `None` when `/` is
    /// not on a block device (overlay, NFS, tmpfs).
    fn root_disks(&self, mounts: &[MountInfo]) -> Option<(PathBuf, BTreeSet<String>)> {
        let root = mounts
            .iter()
            .rev()
            .find(|m| m.mount_point == Path::new("/"))?;
        let mut dev = root.dev;
        if dev.0 == 0 {
            dev = root.source_rdev()?;
        }
        let dir = self.block_dir(dev.0, dev.1).ok()?;
        let mut names = BTreeSet::new();
        self.collect_bases(&dir, &mut names, 0);
        tracing::debug!(root = %root.source, ?names, "disks under /");
        let root_device = if root.source.starts_with("/dev/") {
            PathBuf::from(&root.source)
        } else {
            Path::new("/dev").join(file_name(&dir))
        };
        Some((root_device, names))
    }

    fn collect_bases(&self, dir: &Path, names: &mut BTreeSet<String>, depth: u32) {
        if depth > 16 || !names.insert(file_name(dir)) {
            return;
        }
        if dir.join("partition").exists() {
            if let Some(parent) = dir.parent() {
                self.collect_bases(parent, names, depth + 1);
            }
        }
        for s in list_dir(&dir.join("slaves")) {
            if let Ok(d) = std::fs::canonicalize(self.sys.join("class/block").join(&s)) {
                self.collect_bases(&d, names, depth + 1);
            }
        }
    }
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountInfo {
    dev: (u32, u32),
    mount_point: PathBuf,
    source: String,
}

impl MountInfo {
    /// The device number of the mount's source when it names a block device.
    fn source_rdev(&self) -> Option<(u32, u32)> {
        if !self.source.starts_with("/dev/") {
            return None;
        }
        let m = std::fs::metadata(&self.source).ok()?;
        m.file_type()
            .is_block_device()
            .then(|| (dev_major(m.rdev()), dev_minor(m.rdev())))
    }
}

/// Undoes the octal escapes (`\040` for a space) the kernel puts in paths.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let dev = parse_dev(f.get(2)?)?;
            let mount_point = PathBuf::from(unescape(f.get(4)?));
            let source = unescape(right.split(' ').nth(1)?);
            Some(MountInfo {
                dev,
                mount_point,
                source,
            })
        })
        .collect()
}

fn parse_swaps(text: &str) -> Vec<PathBuf> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(|p| PathBuf::from(unescape(p)))
        .collect()
}

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

/// Writes `image` onto `target` with [`WriteOptions::default`], reporting
/// progress; see [`write_image_with`].
pub fn write_image(
    image: &Path,
    target: &Target,
    progress: impl FnMut(Progress),
) -> Result<Report, FlashError> {
    write_image_with(image, target, &WriteOptions::default(), progress)
}

/// One step of the single pass over the device.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Data(Range<u64>),
    Zero(Range<u64>),
}

/// Writes `image` onto `target`: its data extents, then zeros over the holes
/// that [`WriteOptions::holes`] selects, in one pass in offset order; then
/// flushes, reads back ([`WriteOptions::verify`]) and asks the kernel to
/// re-read the partition table. Refuses an image whose size is not the
/// target's.
pub fn write_image_with(
    image: &Path,
    target: &Target,
    opts: &WriteOptions,
    mut progress: impl FnMut(Progress),
) -> Result<Report, FlashError> {
    let img_err = |source| FlashError::Image {
        path: image.to_path_buf(),
        source,
    };
    let img = File::open(image).map_err(img_err)?;
    let meta = img.metadata().map_err(img_err)?;
    let tmeta = target.file.metadata().map_err(open_err(&target.path))?;
    if meta.dev() == tmeta.dev() && meta.ino() == tmeta.ino() {
        return Err(FlashError::SameFile {
            image: image.to_path_buf(),
            path: target.path.clone(),
        });
    }
    let size = meta.len();
    if size != target.size {
        return Err(FlashError::SizeMismatch {
            image: image.to_path_buf(),
            image_size: size,
            path: target.path.clone(),
            device_size: target.size,
        });
    }
    let gpt = read_image_gpt(&img, size);
    if gpt.is_some() && target.logical_sector_size != IMAGE_SECTOR {
        return Err(FlashError::SectorSize {
            path: target.path.clone(),
            sector_size: target.logical_sector_size,
        });
    }
    let align = MIN_ALIGN.max(u64::from(target.logical_sector_size));
    let data = data_ranges(&img, size, align).map_err(img_err)?;
    let wanted = match &opts.holes {
        Holes::All => whole(size),
        Holes::Keep => Vec::new(),
        Holes::Within(v) => v.clone(),
        Holes::Auto => match &gpt {
            Some(parts) => auto_ranges(&img, size, parts),
            None => whole(size),
        },
    };
    // Rounded out to the alignment: the extra bytes are holes too.
    let wanted = normalize(
        wanted
            .into_iter()
            .map(|r| align_down(r.start, align)..align_up(r.end, align).min(size))
            .collect(),
    );
    let holes = complement(&data, size);
    let zero = intersect(&holes, &wanted);
    let holes_left = subtract(&holes, &zero);
    let mut ops: Vec<Op> = data.iter().cloned().map(Op::Data).collect();
    ops.extend(zero.iter().cloned().map(Op::Zero));
    ops.sort_by_key(|op| op.range().start);
    let data_bytes: u64 = data.iter().map(|r| r.end - r.start).sum();
    let zeroed_bytes: u64 = zero.iter().map(|r| r.end - r.start).sum();
    tracing::info!(
        image = %image.display(),
        target = %target.path.display(),
        data_bytes,
        zeroed_bytes,
        left = size - data_bytes - zeroed_bytes,
        "writing image"
    );

    let chunk =
        usize::try_from(align_up(opts.chunk_bytes.max(1) as u64, align)).unwrap_or(DEFAULT_CHUNK);
    let mut w = Writer {
        target,
        img: &img,
        image,
        buf: AlignedBuf::new(chunk, align as usize),
        zeros: None,
        zero_with: opts.zero_with,
        fallback: false,
    };

    // Write: one pass in offset order.
    let started = Instant::now();
    let total = data_bytes + zeroed_bytes;
    let mut done = 0u64;
    let phase = Phase::Write;
    progress(Progress { phase, done, total });
    for op in &ops {
        let r = op.range();
        let step = match op {
            Op::Data(_) => chunk as u64,
            Op::Zero(_) => ZERO_STEP,
        };
        let mut off = r.start;
        while off < r.end {
            let n = (r.end - off).min(step);
            match op {
                Op::Data(_) => w.copy(off, n)?,
                Op::Zero(_) => w.zero(off, n)?,
            }
            off += n;
            done += n;
            progress(Progress { phase, done, total });
        }
    }
    let write_time = started.elapsed();

    // Flush.
    let started = Instant::now();
    let phase = Phase::Sync;
    progress(Progress {
        phase,
        done: 0,
        total: 1,
    });
    target.file.sync_all().map_err(|source| FlashError::Sync {
        path: target.path.clone(),
        source,
    })?;
    if !target.direct {
        // Without O_DIRECT the read-back would come from the page cache;
        // drop it so it at least goes through the file system. Advisory only.
        let _ = nix::fcntl::posix_fadvise(
            &target.file,
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
    }
    progress(Progress {
        phase,
        done: 1,
        total: 1,
    });
    let sync_time = started.elapsed();

    // Read back.
    let started = Instant::now();
    let checks: Vec<&Op> = ops
        .iter()
        .filter(|op| match opts.verify {
            Verify::Off => false,
            Verify::Data => matches!(op, Op::Data(_)),
            Verify::Written => true,
        })
        .collect();
    let verified_bytes = if opts.verify == Verify::Off {
        0
    } else {
        verify(&mut w, &checks, chunk, &mut progress)?
    };
    let verify_time = started.elapsed();

    let image_partitions = gpt.as_ref().map_or(0, Vec::len);
    let partition_table = reread(target, image_partitions);
    Ok(Report {
        size,
        data_bytes,
        zeroed_bytes,
        holes_left,
        zero_fallback: w.fallback,
        verified_bytes,
        write_time,
        sync_time,
        verify_time,
        image_partitions,
        partition_table,
    })
}

impl Op {
    fn range(&self) -> &Range<u64> {
        match self {
            Op::Data(r) | Op::Zero(r) => r,
        }
    }
}

/// Reads `checks` back from the device and compares them with the image
/// (data) or zeros (zeroed holes); returns the bytes compared.
fn verify(
    w: &mut Writer<'_>,
    checks: &[&Op],
    chunk: usize,
    progress: &mut impl FnMut(Progress),
) -> Result<u64, FlashError> {
    let target = w.target;
    let total: u64 = checks
        .iter()
        .map(|op| op.range().end - op.range().start)
        .sum();
    let phase = Phase::Verify;
    let mut done = 0u64;
    progress(Progress { phase, done, total });
    let mut dev_buf = AlignedBuf::new(chunk, w.buf.align);
    let mut mismatches = Vec::new();
    let mut chunks = 0u64;
    for op in checks {
        let r = op.range();
        let mut off = r.start;
        while off < r.end {
            let len = (r.end - off).min(chunk as u64) as usize;
            let dev = dev_buf.slice(len);
            target
                .file
                .read_exact_at(dev, off)
                .map_err(|source| FlashError::ReadBack {
                    path: target.path.clone(),
                    offset: off,
                    source,
                })?;
            let found = match op {
                Op::Data(_) => {
                    let want = w.buf.slice(len);
                    w.img
                        .read_exact_at(want, off)
                        .map_err(|source| FlashError::Image {
                            path: w.image.to_path_buf(),
                            source,
                        })?;
                    first_difference(dev, want)
                }
                Op::Zero(_) => first_nonzero(dev),
            };
            if let Some((first, count)) = found {
                tracing::error!(
                    target = %target.path.display(),
                    offset = off + first as u64,
                    count,
                    "read-back differs"
                );
                chunks += 1;
                if mismatches.len() < MAX_MISMATCHES {
                    mismatches.push(Mismatch {
                        offset: off + first as u64,
                        differing_bytes: count,
                    });
                }
            }
            off += len as u64;
            done += len as u64;
            progress(Progress { phase, done, total });
        }
    }
    if chunks > 0 {
        return Err(FlashError::Verify {
            path: target.path.clone(),
            chunks,
            mismatches,
        });
    }
    Ok(done)
}

/// Copies and zeroes ranges of the device.
struct Writer<'a> {
    target: &'a Target,
    img: &'a File,
    image: &'a Path,
    buf: AlignedBuf,
    zeros: Option<AlignedBuf>,
    zero_with: ZeroWith,
    fallback: bool,
}

impl Writer<'_> {
    fn write_err(&self, offset: u64) -> impl FnOnce(io::Error) -> FlashError + '_ {
        move |source| FlashError::Write {
            path: self.target.path.clone(),
            offset,
            source,
        }
    }

    /// Copies `n` bytes at `off` (at most one chunk) from the image.
    fn copy(&mut self, off: u64, n: u64) -> Result<(), FlashError> {
        let b = self.buf.slice(n as usize);
        self.img
            .read_exact_at(b, off)
            .map_err(|source| FlashError::Image {
                path: self.image.to_path_buf(),
                source,
            })?;
        let b = self.buf.slice(n as usize);
        self.target
            .file
            .write_all_at(b, off)
            .map_err(|source| FlashError::Write {
                path: self.target.path.clone(),
                offset: off,
                source,
            })
    }

    /// Makes `n` bytes at `off` read as zeros.
    fn zero(&mut self, off: u64, n: u64) -> Result<(), FlashError> {
        if self.zero_with == ZeroWith::Kernel && !self.fallback {
            match self.kernel_zero(off, n) {
                Ok(()) => return Ok(()),
                Err(e @ (Errno::EOPNOTSUPP | Errno::EINVAL | Errno::ENOTTY)) => {
                    tracing::warn!(
                        target = %self.target.path.display(),
                        error = %e,
                        "the kernel cannot zero ranges of this target; writing zeros instead"
                    );
                    self.fallback = true;
                }
                Err(e) => return Err(self.write_err(off)(io::Error::from(e))),
            }
        }
        let len = self.buf.cap;
        let align = self.buf.align;
        let zeros = self
            .zeros
            .get_or_insert_with(|| AlignedBuf::new(len, align));
        let mut at = off;
        while at < off + n {
            let k = (off + n - at).min(len as u64);
            let z = zeros.slice(k as usize);
            self.target
                .file
                .write_all_at(z, at)
                .map_err(|source| FlashError::Write {
                    path: self.target.path.clone(),
                    offset: at,
                    source,
                })?;
            at += k;
        }
        Ok(())
    }

    fn kernel_zero(&self, off: u64, n: u64) -> Result<(), Errno> {
        match self.target.kind {
            TargetKind::BlockDevice { .. } => {
                let range = [off, n];
                // SAFETY: the fd is an open block device and `range` is the
                // [start, length] pair of u64 the ioctl reads.
                unsafe { ioctl::blkzeroout(self.target.file.as_raw_fd(), &range) }.map(|_| ())
            }
            TargetKind::RegularFile => {
                let (Ok(o), Ok(l)) = (i64::try_from(off), i64::try_from(n)) else {
                    return Err(Errno::EINVAL);
                };
                nix::fcntl::fallocate(
                    &self.target.file,
                    nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                        | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
                    o,
                    l,
                )
            }
        }
    }
}

/// A buffer whose start is aligned for `O_DIRECT`.
struct AlignedBuf {
    raw: Vec<u8>,
    off: usize,
    cap: usize,
    align: usize,
}

impl AlignedBuf {
    fn new(cap: usize, align: usize) -> Self {
        let raw = vec![0u8; cap + align];
        let off = raw.as_ptr().align_offset(align);
        // align_offset may give up (usize::MAX); O_DIRECT then fails with EINVAL.
        let off = if off >= align { 0 } else { off };
        Self {
            raw,
            off,
            cap,
            align,
        }
    }

    fn slice(&mut self, len: usize) -> &mut [u8] {
        let len = len.min(self.cap);
        &mut self.raw[self.off..self.off + len]
    }
}

/// The first differing byte of `a` and `b` (same length) and how many differ.
fn first_difference(a: &[u8], b: &[u8]) -> Option<(usize, u64)> {
    if a == b {
        return None;
    }
    let mut first = None;
    let mut count = 0u64;
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if x != y {
            first.get_or_insert(i);
            count += 1;
        }
    }
    first.map(|f| (f, count))
}

/// The first non-zero byte of `a` and how many are non-zero.
fn first_nonzero(a: &[u8]) -> Option<(usize, u64)> {
    static ZEROS: [u8; 4096] = [0; 4096];
    if a.chunks(ZEROS.len()).all(|c| c == &ZEROS[..c.len()]) {
        return None;
    }
    let first = a.iter().position(|&x| x != 0)?;
    Some((first, a.iter().filter(|&&x| x != 0).count() as u64))
}

fn align_down(x: u64, a: u64) -> u64 {
    x / a * a
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a).saturating_mul(a)
}

/// The single range `0..size`, as a list.
fn whole(size: u64) -> Vec<Range<u64>> {
    std::iter::once(0..size).collect()
}

/// Sorted, merged, without empty ranges.
fn normalize(mut v: Vec<Range<u64>>) -> Vec<Range<u64>> {
    v.retain(|r| r.start < r.end);
    v.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// What of `0..size` normalized `v` does not cover.
fn complement(v: &[Range<u64>], size: u64) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut at = 0;
    for r in v {
        if r.start > at {
            out.push(at..r.start.min(size));
        }
        at = at.max(r.end);
    }
    if at < size {
        out.push(at..size);
    }
    normalize(out)
}

/// The intersection of two normalized lists.
fn intersect(a: &[Range<u64>], b: &[Range<u64>]) -> Vec<Range<u64>> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let s = a[i].start.max(b[j].start);
        let e = a[i].end.min(b[j].end);
        if s < e {
            out.push(s..e);
        }
        if a[i].end < b[j].end {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// `a` without `b` (both normalized).
fn subtract(a: &[Range<u64>], b: &[Range<u64>]) -> Vec<Range<u64>> {
    let end = a.last().map_or(0, |r| r.end);
    intersect(a, &complement(b, end))
}

/// The image's data extents, rounded out to `align` and merged.
fn data_ranges(f: &File, size: u64, align: u64) -> io::Result<Vec<Range<u64>>> {
    use nix::unistd::{lseek, Whence};
    let end = i64::try_from(size).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut out = Vec::new();
    let mut pos = 0i64;
    while pos < end {
        let start = match lseek(f, pos, Whence::SeekData) {
            Ok(s) => s,
            Err(Errno::ENXIO) => break,
            // No SEEK_DATA on this file system: all of it is data.
            Err(Errno::EINVAL | Errno::EOPNOTSUPP) if pos == 0 => return Ok(whole(size)),
            Err(e) => return Err(e.into()),
        };
        let stop = lseek(f, start, Whence::SeekHole)?;
        out.push(align_down(start as u64, align)..align_up(stop as u64, align).min(size));
        pos = stop;
    }
    Ok(normalize(out))
}

/// The byte ranges of the partitions in the image's GPT, if it has a valid one.
fn read_image_gpt(img: &File, size: u64) -> Option<Vec<Range<u64>>> {
    let mut r = img;
    let gpt = krazy_disk::read::read_gpt(&mut r, size).ok()?;
    let sector = u64::from(IMAGE_SECTOR);
    Some(
        gpt.partitions
            .iter()
            .map(|p| {
                let s = p.first_lba.saturating_mul(sector).min(size);
                let e = p
                    .last_lba
                    .saturating_add(1)
                    .saturating_mul(sector)
                    .min(size);
                s..e
            })
            .collect(),
    )
}

/// [`Holes::Auto`]: everything, except the parts of ext4 partitions whose
/// old contents ext4 never reads.
fn auto_ranges(img: &File, size: u64, parts: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut skip = Vec::new();
    let mut keep = Vec::new();
    for p in parts {
        let Ok(f) = img.try_clone() else { continue };
        let mut dev = krazy_fs::FileDevice::new(f, p.start, p.end - p.start);
        if let Some(needed) = ext4_needed(&mut dev) {
            tracing::debug!(partition = ?p, ranges = needed.len(), "ext4: zeroing its metadata only");
            skip.push(p.clone());
            keep.extend(
                needed
                    .into_iter()
                    .map(|r| p.start + r.start..p.start + r.end),
            );
        }
    }
    let mut v = complement(&normalize(skip), size);
    v.extend(keep);
    normalize(v)
}

const MIB: u64 = 1 << 20;
const BG_INODE_UNINIT: u16 = 0x1;
const BG_BLOCK_UNINIT: u16 = 0x2;
const BG_INODE_ZEROED: u16 = 0x4;

/// The ranges of an ext4 file system on `dev` (relative to its start)
/// whose bytes ext4 reads before writing them (see [`Holes::Auto`]); `None`
/// when `dev` does not hold a sane ext4.
fn ext4_needed(dev: &mut impl krazy_fs::BlockDevice) -> Option<Vec<Range<u64>>> {
    let len = dev.len();
    let info = krazy_fs::ext4::probe(dev)?;
    let mut sb = [0u8; 1024];
    dev.read_at(1024, &mut sb).ok()?;
    let u16at = |b: &[u8], o: usize| u64::from(u16::from_le_bytes([b[o], b[o + 1]]));
    let u32at =
        |b: &[u8], o: usize| u64::from(u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]));
    let bs = u64::from(info.block_size);
    let first_data_block = u32at(&sb, 0x14);
    let blocks_per_group = u32at(&sb, 0x20);
    let inodes_per_group = u32at(&sb, 0x28);
    let inode_size = if u32at(&sb, 0x4C) == 0 {
        128
    } else {
        u16at(&sb, 0x58)
    };
    let is64 = info.feature_incompat & 0x80 != 0;
    let desc_size = if is64 { u16at(&sb, 0xFE).max(32) } else { 32 };
    // Group flags and itable_unused count only with group checksums.
    let csum = info.feature_ro_compat & (0x10 | 0x400) != 0;
    if blocks_per_group == 0 || inodes_per_group == 0 || info.blocks <= first_data_block {
        return None;
    }
    let groups = (info.blocks - first_data_block).div_ceil(blocks_per_group);
    let gdt_off = (first_data_block + 1) * bs;
    let gdt_len = groups.checked_mul(desc_size)?;
    if gdt_len > 64 * MIB || gdt_off + gdt_len > len {
        return None;
    }
    let mut gdt = vec![0u8; usize::try_from(gdt_len).ok()?];
    dev.read_at(gdt_off, &mut gdt).ok()?;

    let mut v = vec![
        0..MIB.min(len),
        len.saturating_sub(MIB)..len,
        gdt_off..gdt_off + gdt_len,
    ];
    let itable_len = inodes_per_group * inode_size;
    for d in gdt.chunks_exact(usize::try_from(desc_size).ok()?) {
        let hi = |lo: usize, hi: usize| {
            u32at(d, lo)
                | if desc_size >= 64 {
                    u32at(d, hi) << 32
                } else {
                    0
                }
        };
        let block_bitmap = hi(0x0, 0x20);
        let inode_bitmap = hi(0x4, 0x24);
        let inode_table = hi(0x8, 0x28);
        let (flags, unused) = if csum {
            let unused = u16at(d, 0x1C)
                | if desc_size >= 64 {
                    u16at(d, 0x32) << 16
                } else {
                    0
                };
            (u16at(d, 0x12) as u16, unused)
        } else {
            (0, 0)
        };
        if flags & BG_BLOCK_UNINIT == 0 {
            v.push(block_bitmap * bs..(block_bitmap + 1) * bs);
        }
        if flags & BG_INODE_UNINIT == 0 {
            v.push(inode_bitmap * bs..(inode_bitmap + 1) * bs);
            let used = inodes_per_group.saturating_sub(unused);
            v.push(inode_table * bs..inode_table * bs + used * inode_size);
        }
        if flags & BG_INODE_ZEROED != 0 {
            v.push(inode_table * bs..inode_table * bs + itable_len);
        }
    }
    if v.iter().any(|r| r.end > len) {
        return None;
    }
    Some(normalize(v))
}

/// Asks the kernel to re-read the partition table.
fn reread(target: &Target, image_partitions: usize) -> Reread {
    if !target.is_block_device() {
        return Reread::NotABlockDevice;
    }
    // SAFETY: the fd is an open block device; BLKRRPART takes no argument.
    match unsafe { ioctl::blkrrpart(target.file.as_raw_fd()) } {
        Ok(_) => {
            let kernel_partitions = target
                .sys_dir
                .as_deref()
                .map_or(0, |d| partitions_of(d).len());
            if kernel_partitions < image_partitions {
                tracing::warn!(
                    target = %target.path.display(),
                    kernel_partitions,
                    image_partitions,
                    "the kernel re-read the partition table but shows fewer partitions than \
                     the image has (a kernel without GPT support?); `partx -a` adds them"
                );
            }
            Reread::Done { kernel_partitions }
        }
        Err(e) => {
            let is_loop = target
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("loop"));
            if is_loop && e == Errno::EINVAL {
                tracing::info!(
                    target = %target.path.display(),
                    "loop device without partition scanning: the kernel does not re-read its \
                     partition table (attach it with `losetup -P` to get partition devices)"
                );
            } else {
                tracing::warn!(
                    target = %target.path.display(),
                    error = %e,
                    "the kernel did not re-read the partition table; replug the device to see \
                     its new partitions"
                );
            }
            Reread::Failed(e.desc().to_string())
        }
    }
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

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use krazy_fs::ext4::{Ext4Options, InodeTableInit};
    use krazy_fs::MemDevice;
    use std::os::unix::fs::symlink;

    #[test]
    fn mountinfo_and_swaps_parse_with_escapes() {
        let text = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                    27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                    90 27 7:3 / /mnt/my\\040disk rw master:2 - vfat /dev/loop3p1 rw\n\
                    garbage line\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].dev, (254, 0));
        assert_eq!(m[1].mount_point, Path::new("/"));
        assert_eq!(m[1].source, "/dev/vda");
        assert_eq!(m[2].dev, (7, 3));
        assert_eq!(m[2].mount_point, Path::new("/mnt/my disk"));
        assert_eq!(m[2].source, "/dev/loop3p1");
        let swaps = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
                     /dev/sdb2                               partition\t1048572\t\t0\t\t-2\n\
                     /swap\\040file file 100 0 -3\n";
        assert_eq!(
            parse_swaps(swaps),
            vec![PathBuf::from("/dev/sdb2"), PathBuf::from("/swap file")]
        );
        assert_eq!(unescape("a\\134b\\0"), "a\\b\\0");
        assert_eq!(shell_quote(Path::new("/mnt/usb")), "/mnt/usb");
        assert_eq!(
            shell_quote(Path::new("/mnt/it's mine")),
            "'/mnt/it'\\''s mine'"
        );
    }

    #[test]
    fn range_algebra() {
        let v = normalize(vec![5..7, 0..2, 1..3, 7..9, 4..4]);
        assert_eq!(v, vec![0..3, 5..9]);
        assert_eq!(complement(&v, 12), vec![3..5, 9..12]);
        assert_eq!(complement(&[], 4), vec![0..4]);
        assert_eq!(intersect(&v, &[2..6, 8..20]), vec![2..3, 5..6, 8..9]);
        assert_eq!(subtract(&[0..10], &[2..3, 5..6]), vec![0..2, 3..5, 6..10]);
        assert_eq!(align_up(4097, 4096), 8192);
        assert_eq!(align_down(4097, 4096), 4096);
    }

    #[test]
    fn differences_are_located() {
        assert_eq!(first_difference(b"abcd", b"abcd"), None);
        assert_eq!(first_difference(b"abcd", b"xbcy"), Some((0, 2)));
        let mut z = vec![0u8; 10_000];
        assert_eq!(first_nonzero(&z), None);
        z[9000] = 1;
        z[9999] = 2;
        assert_eq!(first_nonzero(&z), Some((9000, 2)));
    }

    fn write(p: &Path, s: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, s).unwrap();
    }
    use std::fs;

    /// A fake sysfs: sda with partitions sda1, sda2; dm-0 built on sdb1.
    fn fake_sys(root: &Path) -> Sys {
        let sys = root.join("sys");
        let sda = sys.join("devices/pci0/host0/block/sda");
        write(&sda.join("dev"), "8:0\n");
        for (n, dev) in [(1, "8:1"), (2, "8:2")] {
            write(&sda.join(format!("sda{n}/partition")), &format!("{n}\n"));
            write(&sda.join(format!("sda{n}/dev")), dev);
        }
        let sdb = sys.join("devices/pci0/host1/block/sdb");
        write(&sdb.join("dev"), "8:16\n");
        write(&sdb.join("sdb1/partition"), "1\n");
        write(&sdb.join("sdb1/dev"), "8:17\n");
        let dm = sys.join("devices/virtual/block/dm-0");
        write(&dm.join("dev"), "254:0\n");
        fs::create_dir_all(dm.join("slaves")).unwrap();
        symlink("../../../pci0/host1/block/sdb/sdb1", dm.join("slaves/sdb1")).unwrap();
        fs::create_dir_all(sys.join("dev/block")).unwrap();
        fs::create_dir_all(sys.join("class/block")).unwrap();
        for (dev, path, name) in [
            ("8:0", "pci0/host0/block/sda", "sda"),
            ("8:1", "pci0/host0/block/sda/sda1", "sda1"),
            ("8:2", "pci0/host0/block/sda/sda2", "sda2"),
            ("8:16", "pci0/host1/block/sdb", "sdb"),
            ("8:17", "pci0/host1/block/sdb/sdb1", "sdb1"),
            ("254:0", "virtual/block/dm-0", "dm-0"),
        ] {
            symlink(
                format!("../../devices/{path}"),
                sys.join("dev/block").join(dev),
            )
            .unwrap();
            symlink(
                format!("../../devices/{path}"),
                sys.join("class/block").join(name),
            )
            .unwrap();
        }
        Sys {
            sys,
            mountinfo: root.join("mountinfo"),
            swaps: root.join("swaps"),
        }
    }

    #[test]
    fn root_disk_through_partitions_and_device_mapper() {
        let t = tempfile::tempdir().unwrap();
        let sys = fake_sys(t.path());
        let on_part = parse_mountinfo("1 0 8:2 / / rw - ext4 /dev/sda2 rw\n");
        let (dev, disks) = sys.root_disks(&on_part).unwrap();
        assert_eq!(dev, Path::new("/dev/sda2"));
        assert_eq!(disks, ["sda", "sda2"].map(String::from).into());
        let on_dm = parse_mountinfo(
            "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 0 254:0 / / rw - ext4 /dev/mapper/root rw\n",
        );
        let (dev, disks) = sys.root_disks(&on_dm).unwrap();
        assert_eq!(dev, Path::new("/dev/mapper/root"));
        assert_eq!(disks, ["dm-0", "sdb", "sdb1"].map(String::from).into());
        // Not on a block device (overlay, NFS): nothing to protect by disk.
        assert!(sys
            .root_disks(&parse_mountinfo("1 0 0:30 / / rw - overlay overlay rw\n"))
            .is_none());
        let sda = sys.block_dir(8, 0).unwrap();
        let parts: Vec<_> = partitions_of(&sda)
            .into_iter()
            .map(|(n, d, _)| (n, d))
            .collect();
        assert_eq!(
            parts,
            vec![("sda1".to_string(), (8, 1)), ("sda2".to_string(), (8, 2))]
        );
    }

    #[test]
    fn ext4_needs_only_its_metadata_unless_tables_are_marked_zeroed() {
        let size = 256u64 << 20;
        let total = |v: &[Range<u64>]| v.iter().map(|r| r.end - r.start).sum::<u64>();
        let mut lazy = MemDevice::zeroed(size as usize);
        krazy_fs::ext4::format(&mut lazy, &Ext4Options::new([1; 16], 1)).unwrap();
        // Two groups of 128 MiB; group 1's inode table (8192 inodes of 256
        // bytes) starts at block 32772.
        let table1 = 32772 * 4096..32772 * 4096 + 2 * MIB;
        let covers = |v: &[Range<u64>], r: &Range<u64>| {
            v.iter().any(|x| x.start <= r.start && r.end <= x.end)
        };
        let needed = ext4_needed(&mut lazy).unwrap();
        assert_eq!(needed[0].start, 0);
        assert!(needed[0].end >= MIB);
        assert_eq!(needed.last().unwrap().end, size);
        assert!(!covers(&needed, &table1), "{needed:?}");
        // Head and tail MiB, the block bitmap of the last group, little else.
        assert!(total(&needed) < 2 * MIB + 64 * 1024, "{needed:?}");

        let mut zeroed = MemDevice::zeroed(size as usize);
        let opts = Ext4Options::new([1; 16], 1).inode_tables(InodeTableInit::Zero);
        krazy_fs::ext4::format(&mut zeroed, &opts).unwrap();
        let needed = ext4_needed(&mut zeroed).unwrap();
        assert!(covers(&needed, &table1), "{needed:?}");
        assert!(
            covers(&needed, &(4 * 4096..4 * 4096 + 2 * MIB)),
            "{needed:?}"
        );

        assert!(ext4_needed(&mut MemDevice::zeroed(size as usize)).is_none());
    }
}
