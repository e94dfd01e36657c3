//! Range algebra over byte ranges of the device (`normalize`,
//! `complement`, `intersect`, `subtract`), the image's data extents
//! (`SEEK_DATA`/`SEEK_HOLE`), the partitions of its GPT, and the ranges
//! [`Holes::Auto`](super::Holes::Auto) zeroes, including the ext4 metadata
//! that must read as in the image.

use std::fs::File;
use std::io;
use std::ops::Range;

// Sorted, merged, without empty ranges: krazy-fs's, which `used_ranges` uses too.
pub(super) use krazy_fs::ranges::normalize;
use nix::errno::Errno;

use super::IMAGE_SECTOR;

pub(super) fn align_down(x: u64, a: u64) -> u64 {
    x / a * a
}

pub(super) fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a).saturating_mul(a)
}

/// The single range `0..size`, as a list.
pub(super) fn whole(size: u64) -> Vec<Range<u64>> {
    std::iter::once(0..size).collect()
}

/// What of `0..size` normalized `v` does not cover.
pub(super) fn complement(v: &[Range<u64>], size: u64) -> Vec<Range<u64>> {
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
pub(super) fn intersect(a: &[Range<u64>], b: &[Range<u64>]) -> Vec<Range<u64>> {
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
pub(super) fn subtract(a: &[Range<u64>], b: &[Range<u64>]) -> Vec<Range<u64>> {
    let end = a.last().map_or(0, |r| r.end);
    intersect(a, &complement(b, end))
}

/// The image's data extents, rounded out to `align` and merged.
pub(super) fn data_ranges(f: &File, size: u64, align: u64) -> io::Result<Vec<Range<u64>>> {
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
pub(super) fn read_image_gpt(img: &File, size: u64) -> Option<Vec<Range<u64>>> {
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

/// [`Holes::Auto`](super::Holes::Auto): everything, except the parts of
/// ext4 partitions whose old contents ext4 never reads.
pub(super) fn auto_ranges(img: &File, size: u64, parts: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut skip = Vec::new();
    let mut keep = Vec::new();
    for p in parts {
        let Ok(f) = img.try_clone() else { continue };
        let mut dev = krazy_fs::FileDevice::new(f, p.start, p.end - p.start);
        if let Some(needed) = krazy_fs::ext4::used_ranges(&mut dev) {
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

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use krazy_fs::ext4::{Ext4Options, InodeTableInit};
    use krazy_fs::MemDevice;

    const MIB: u64 = 1 << 20;

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
        let needed = krazy_fs::ext4::used_ranges(&mut lazy).unwrap();
        assert_eq!(needed[0].start, 0);
        assert!(needed[0].end >= MIB);
        assert_eq!(needed.last().unwrap().end, size);
        assert!(!covers(&needed, &table1), "{needed:?}");
        // Head and tail MiB, the block bitmap of the last group, little else.
        assert!(total(&needed) < 2 * MIB + 64 * 1024, "{needed:?}");

        let mut zeroed = MemDevice::zeroed(size as usize);
        let opts = Ext4Options::new([1; 16], 1).inode_tables(InodeTableInit::Zero);
        krazy_fs::ext4::format(&mut zeroed, &opts).unwrap();
        let needed = krazy_fs::ext4::used_ranges(&mut zeroed).unwrap();
        assert!(covers(&needed, &table1), "{needed:?}");
        assert!(
            covers(&needed, &(4 * 4096..4 * 4096 + 2 * MIB)),
            "{needed:?}"
        );

        assert!(krazy_fs::ext4::used_ranges(&mut MemDevice::zeroed(size as usize)).is_none());
    }
}
