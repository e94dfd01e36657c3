//! Where everything goes: the group layout as a pure function of the
//! device size and options, and the allocator that hands out data blocks
//! around each group's metadata.

// A writer: its casts narrow values the validated tree and the geometry
// computed before bound (block counts, entry counts, name lengths); they are
// not yet each turned into a `try_from` (issue 13), so the crate's cast
// lints are allowed in this file only.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use super::{Error, Ext4Options, DESC_SIZE, FIRST_INO, INODE_SIZE, MAX_EXTENT_LEN, MIN_SIZE};

/// mke2fs's default journal size in blocks for a file system of `blocks` blocks.
pub(super) fn default_journal_blocks(blocks: u64) -> u32 {
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
pub(super) fn has_super(g: u32) -> bool {
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
pub(super) struct Geometry {
    pub(super) bs: u64,
    pub(super) first_data_block: u64,
    pub(super) blocks: u64,
    pub(super) bpg: u64,
    pub(super) groups: u32,
    pub(super) ipg: u32,
    pub(super) itable_blocks: u64,
    pub(super) gdt_blocks: u64,
}

impl Geometry {
    pub(super) fn new(size: u64, opts: &Ext4Options) -> Result<Self, Error> {
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

    pub(super) fn group_start(&self, g: u32) -> u64 {
        self.first_data_block + u64::from(g) * self.bpg
    }

    pub(super) fn group_len(&self, g: u32) -> u64 {
        (self.blocks - self.group_start(g)).min(self.bpg)
    }

    /// First block of the group's bitmaps (after its superblock and GDT copy).
    pub(super) fn block_bitmap(&self, g: u32) -> u64 {
        let mut b = self.group_start(g);
        if has_super(g) {
            b += 1 + self.gdt_blocks;
        }
        b
    }

    pub(super) fn inode_bitmap(&self, g: u32) -> u64 {
        self.block_bitmap(g) + 1
    }

    pub(super) fn inode_table(&self, g: u32) -> u64 {
        self.block_bitmap(g) + 2
    }

    pub(super) fn data_start(&self, g: u32) -> u64 {
        self.inode_table(g) + self.itable_blocks
    }

    pub(super) fn overhead(&self, g: u32) -> u64 {
        self.data_start(g) - self.group_start(g)
    }
}

/// A run of contiguous blocks: (first block, length).
pub(super) type Run = (u64, u32);

/// Hands out data blocks in order, skipping each group's metadata, and
/// remembers how many it took from each group.
pub(super) struct Allocator<'a> {
    pub(super) geo: &'a Geometry,
    pub(super) group: u32,
    pub(super) next: u64,
    pub(super) used: Vec<u64>,
}

impl<'a> Allocator<'a> {
    pub(super) fn new(geo: &'a Geometry) -> Self {
        Self {
            geo,
            group: 0,
            next: geo.data_start(0),
            used: vec![0; geo.groups as usize],
        }
    }

    /// `n` blocks as runs of at most one extent each; `None` when full.
    pub(super) fn alloc(&mut self, mut n: u64) -> Option<Vec<Run>> {
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
