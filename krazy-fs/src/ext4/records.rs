//! The on-disk records the formatter fills: inodes and their timestamps,
//! extent trees and directory entries.

// A writer: its casts narrow values the validated tree and the geometry
// computed before bound (block counts, entry counts, name lengths); they are
// not yet each turned into a `try_from` (issue 13), so the crate's cast
// lints are allowed in this file only.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use super::bytes::{hi16, lo32, put16, put32};
use super::geometry::Run;
use super::{EXTENTS_FL, EXTRA_ISIZE, EXT_MAGIC, INODE_SIZE};

/// Splits ext4 seconds into the 32-bit field and the two epoch bits of the
/// `*_extra` field.
// The low 32 bits are the signed seconds field and the epoch bits are masked
// to 2: the truncations are ext4's encoding.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]
pub(super) fn inode_time(t: u64) -> (u32, u32) {
    let lo = t as u32;
    let epoch = ((t as i64 - i64::from(lo as i32)) >> 32) as u32 & 3;
    (lo, epoch)
}

/// Writes an extent header at `at`.
pub(super) fn extent_header(b: &mut [u8], at: usize, entries: u16, max: u16, depth: u16) {
    put16(b, at, EXT_MAGIC);
    put16(b, at + 2, entries);
    put16(b, at + 4, max);
    put16(b, at + 6, depth);
    put32(b, at + 8, 0);
}

pub(super) fn extent_entry(b: &mut [u8], at: usize, logical: u32, (start, len): Run) {
    put32(b, at, logical);
    put16(b, at + 4, len as u16);
    put16(b, at + 6, hi16(start));
    put32(b, at + 8, lo32(start));
}

/// A 256-byte inode with times, mode, links, size and the extent root.
pub(super) fn make_inode(
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
    put32(&mut ino, 0x04, lo32(size));
    for off in [0x08, 0x0C, 0x10, 0x90] {
        put32(&mut ino, off, t);
    }
    for off in [0x84, 0x88, 0x8C, 0x94] {
        put32(&mut ino, off, epoch);
    }
    put16(&mut ino, 0x1A, links);
    put32(&mut ino, 0x1C, lo32(sectors));
    put16(&mut ino, 0x74, hi16(sectors));
    put32(&mut ino, 0x20, EXTENTS_FL);
    ino[0x28..0x64].copy_from_slice(i_block);
    put32(&mut ino, 0x6C, (size >> 32) as u32);
    put16(&mut ino, 0x80, EXTRA_ISIZE);
    ino
}

/// Builds the in-inode extent root for `runs` mapped from logical block 0;
/// when they do not fit the inode's four slots, fills `leaves` (one block
/// each) and returns an index root pointing at `leaf_blocks`.
pub(super) fn extent_root(
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
        put32(&mut root, at + 4, lo32(leaf));
        put16(&mut root, at + 8, hi16(leaf));
    }
    root
}

/// A directory entry with file type; returns the offset after it.
pub(super) fn dirent(
    b: &mut [u8],
    at: usize,
    ino: u32,
    rec_len: usize,
    name: &[u8],
    ftype: u8,
) -> usize {
    put32(b, at, ino);
    put16(b, at + 4, rec_len as u16);
    b[at + 6] = name.len() as u8;
    b[at + 7] = ftype;
    b[at + 8..at + 8 + name.len()].copy_from_slice(name);
    at + rec_len
}
