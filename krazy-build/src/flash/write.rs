//! The writer: one pass over the device in offset order copying the
//! image's data extents with `O_DIRECT` from an aligned buffer and zeroing
//! the selected holes (`BLKZEROOUT`, hole punching, or zero writes), then
//! the flush, the read-back and the partition-table re-read.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::Instant;

use nix::errno::Errno;

use super::ranges::{
    align_down, align_up, auto_ranges, complement, data_ranges, intersect, normalize,
    read_image_gpt, subtract, whole,
};
use super::target::{open_err, partitions_of};
use super::{
    ioctl, FlashError, Holes, Mismatch, Phase, Progress, Report, Reread, Target, TargetKind,
    Verify, WriteOptions, ZeroWith, DEFAULT_CHUNK, IMAGE_SECTOR,
};

/// The smallest alignment used for extents and `O_DIRECT` buffers.
const MIN_ALIGN: u64 = 4096;
/// Bytes per `BLKZEROOUT` call (so progress moves while the kernel zeroes).
const ZERO_STEP: u64 = 32 << 20;
/// How many mismatching chunks [`FlashError::Verify`] lists.
const MAX_MISMATCHES: usize = 32;

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
    let img_err = |error| FlashError::Image {
        path: image.to_path_buf(),
        error,
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
    target.file.sync_all().map_err(|error| FlashError::Sync {
        path: target.path.clone(),
        error,
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
                .map_err(|error| FlashError::ReadBack {
                    path: target.path.clone(),
                    offset: off,
                    error,
                })?;
            let found = match op {
                Op::Data(_) => {
                    let want = w.buf.slice(len);
                    w.img
                        .read_exact_at(want, off)
                        .map_err(|error| FlashError::Image {
                            path: w.image.to_path_buf(),
                            error,
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
        move |error| FlashError::Write {
            path: self.target.path.clone(),
            offset,
            error,
        }
    }

    /// Copies `n` bytes at `off` (at most one chunk) from the image.
    fn copy(&mut self, off: u64, n: u64) -> Result<(), FlashError> {
        let b = self.buf.slice(n as usize);
        self.img
            .read_exact_at(b, off)
            .map_err(|error| FlashError::Image {
                path: self.image.to_path_buf(),
                error,
            })?;
        let b = self.buf.slice(n as usize);
        self.target
            .file
            .write_all_at(b, off)
            .map_err(|error| FlashError::Write {
                path: self.target.path.clone(),
                offset: off,
                error,
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
                .map_err(|error| FlashError::Write {
                    path: self.target.path.clone(),
                    offset: at,
                    error,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
