//! [`used_ranges`]: which bytes of an ext4 file system ext4 reads before it
//! writes them, read back through the same field offsets and flags the
//! formatter writes, so a copier may leave every other byte as it was.

use std::ops::Range;

use super::bytes::{le16, le32};
use super::{
    BG_BLOCK_BITMAP, BG_BLOCK_BITMAP_HI, BG_BLOCK_UNINIT, BG_FLAGS, BG_INODE_BITMAP,
    BG_INODE_BITMAP_HI, BG_INODE_TABLE, BG_INODE_TABLE_HI, BG_INODE_UNINIT, BG_ITABLE_UNUSED,
    BG_ITABLE_UNUSED_HI, BG_ITABLE_ZEROED, DESC_SIZE, EXTENTS_FL, EXT_MAGIC, INCOMPAT_64BIT,
    I_BLOCK, I_FLAGS, I_MODE, RO_COMPAT_GDT_CSUM, RO_COMPAT_METADATA_CSUM, SB_BLOCKS_PER_GROUP,
    SB_DESC_SIZE, SB_FIRST_DATA_BLOCK, SB_INODES_PER_GROUP, SB_INODE_SIZE, SB_JOURNAL_INUM,
    SB_OFFSET, SB_REV_LEVEL, SB_SIZE, S_IFDIR, S_IFREG,
};
use crate::ranges::normalize;
use crate::BlockDevice;

const MIB: u64 = 1 << 20;
/// Inode size of revision-0 file systems.
const GOOD_OLD_INODE_SIZE: u64 = 128;
/// A group descriptor table longer than this is not believed.
const MAX_GDT: u64 = 64 * MIB;
/// The longest extent tree followed, in levels.
const MAX_DEPTH: u16 = 5;
/// The most extent tree blocks read for one file system, so hostile bytes
/// cannot make the walk endless.
const MAX_TREE_BLOCKS: u32 = 1 << 16;
/// An extent longer than this is an uninitialised one: it reads as zeros
/// whatever its blocks hold.
const MAX_INIT_EXTENT: u16 = 32768;
/// An inode's link count: 0 for a deleted one, whose blocks are free.
const I_LINKS: usize = 0x1A;
const S_IFMT: u16 = 0o170000;
const S_IFLNK: u16 = 0o120000;

/// The byte ranges of the ext4 file system on `dev` (relative to its
/// start) whose contents ext4 reads before writing them, sorted and merged;
/// `None` when `dev` does not hold a sane ext4 (see [`probe`](super::probe)).
///
/// They are: the first and last MiB (the boot sector and superblock, and
/// where `blkid` finds the signatures of other formats), the group
/// descriptors, the block bitmap of every group without `BLOCK_UNINIT`,
/// the inode bitmap and the used part of the inode table (up to
/// `bg_itable_unused`) of every group without `INODE_UNINIT`, the whole
/// inode table of every group marked `ITABLE_ZEROED`, and the extent tree
/// and initialised data blocks of every directory, regular file and
/// symlink in use, but of the journal only its superblock. Everything else
/// is unreachable whatever it holds: free blocks are never read, the kernel
/// zeroes uninitialised inode tables itself, and an empty journal
/// (`s_start = 0`, as [`format`](super::format) writes it) is never
/// replayed. Files mapped by blocks rather than extents (ext2/3) are not
/// followed. Never panics on any bytes.
///
/// ```
/// use krazy_fs::{ext4, MemDevice};
/// let mut dev = MemDevice::zeroed(16 << 20);
/// ext4::format(&mut dev, &ext4::Ext4Options::new([7; 16], 0)).unwrap();
/// let used = ext4::used_ranges(&mut dev).unwrap();
/// assert_eq!(used[0].start, 0);
/// assert!(used.iter().map(|r| r.end - r.start).sum::<u64>() < 4 << 20);
/// ```
pub fn used_ranges(dev: &mut impl BlockDevice) -> Option<Vec<Range<u64>>> {
    let len = dev.len();
    let info = super::probe(dev)?;
    let mut sb = [0u8; SB_SIZE];
    dev.read_at(SB_OFFSET, &mut sb).ok()?;
    let bs = u64::from(info.block_size);
    let first_data_block = u64::from(le32(&sb, SB_FIRST_DATA_BLOCK));
    let blocks_per_group = u64::from(le32(&sb, SB_BLOCKS_PER_GROUP));
    let inodes_per_group = u64::from(le32(&sb, SB_INODES_PER_GROUP));
    let inode_size = if le32(&sb, SB_REV_LEVEL) == 0 {
        GOOD_OLD_INODE_SIZE
    } else {
        u64::from(le16(&sb, SB_INODE_SIZE))
    };
    let desc_size = if info.feature_incompat & INCOMPAT_64BIT != 0 {
        u64::from(le16(&sb, SB_DESC_SIZE)).max(DESC_SIZE as u64)
    } else {
        DESC_SIZE as u64
    };
    // Group flags and itable_unused count only with group checksums.
    let csum = info.feature_ro_compat & (RO_COMPAT_GDT_CSUM | RO_COMPAT_METADATA_CSUM) != 0;
    if blocks_per_group == 0
        || inodes_per_group == 0
        || inode_size < GOOD_OLD_INODE_SIZE
        || info.blocks <= first_data_block
    {
        return None;
    }
    let groups = (info.blocks - first_data_block).div_ceil(blocks_per_group);
    let gdt_off = (first_data_block + 1) * bs;
    let gdt_len = groups.checked_mul(desc_size)?;
    if gdt_len > MAX_GDT || gdt_off + gdt_len > len {
        return None;
    }
    let mut gdt = vec![0u8; usize::try_from(gdt_len).ok()?];
    dev.read_at(gdt_off, &mut gdt).ok()?;

    let mut v = vec![
        0..MIB.min(len),
        len.saturating_sub(MIB)..len,
        gdt_off..gdt_off + gdt_len,
    ];
    let itable_len = inodes_per_group.checked_mul(inode_size)?;
    let mut files = Files {
        bs,
        len,
        journal: le32(&sb, SB_JOURNAL_INUM),
        tree_blocks: 0,
    };
    for (g, d) in gdt
        .chunks_exact(usize::try_from(desc_size).ok()?)
        .enumerate()
    {
        let wide = desc_size >= 64;
        let lo_hi = |lo: usize, hi: usize| {
            u64::from(le32(d, lo))
                | if wide {
                    u64::from(le32(d, hi)) << 32
                } else {
                    0
                }
        };
        let block_bitmap = lo_hi(BG_BLOCK_BITMAP, BG_BLOCK_BITMAP_HI);
        let inode_bitmap = lo_hi(BG_INODE_BITMAP, BG_INODE_BITMAP_HI);
        let inode_table = lo_hi(BG_INODE_TABLE, BG_INODE_TABLE_HI).checked_mul(bs)?;
        let (flags, unused) = if csum {
            let hi = if wide {
                u64::from(le16(d, BG_ITABLE_UNUSED_HI)) << 16
            } else {
                0
            };
            (le16(d, BG_FLAGS), u64::from(le16(d, BG_ITABLE_UNUSED)) | hi)
        } else {
            (0, 0)
        };
        if flags & BG_BLOCK_UNINIT == 0 {
            v.push(block_range(block_bitmap, 1, bs)?);
        }
        if flags & BG_INODE_UNINIT == 0 {
            v.push(block_range(inode_bitmap, 1, bs)?);
            let used = inodes_per_group.saturating_sub(unused);
            let table = inode_table..inode_table.checked_add(used * inode_size)?;
            let first_ino = u64::try_from(g).ok()? * inodes_per_group + 1;
            files.cover(dev, &table, inode_size, first_ino, &mut v)?;
            v.push(table);
        }
        if flags & BG_ITABLE_ZEROED != 0 {
            v.push(inode_table..inode_table.checked_add(itable_len)?);
        }
    }
    if v.iter().any(|r| r.end > len) {
        return None;
    }
    Some(normalize(v))
}

/// `count` blocks from block `first`, in bytes.
fn block_range(first: u64, count: u64, bs: u64) -> Option<Range<u64>> {
    let start = first.checked_mul(bs)?;
    Some(start..start.checked_add(count.checked_mul(bs)?)?)
}

/// Follows the extent trees of the inodes in use.
struct Files {
    bs: u64,
    len: u64,
    /// The journal's inode number, whose data is read only in its first block.
    journal: u32,
    /// Extent tree blocks read so far, against [`MAX_TREE_BLOCKS`].
    tree_blocks: u32,
}

impl Files {
    /// Adds the data of the inodes in `table` (numbered from `first_ino`).
    fn cover(
        &mut self,
        dev: &mut impl BlockDevice,
        table: &Range<u64>,
        inode_size: u64,
        first_ino: u64,
        v: &mut Vec<Range<u64>>,
    ) -> Option<()> {
        if table.end > self.len {
            return None;
        }
        let mut raw = vec![0u8; usize::try_from(table.end - table.start).ok()?];
        dev.read_at(table.start, &mut raw).ok()?;
        for (i, inode) in raw
            .chunks_exact(usize::try_from(inode_size).ok()?)
            .enumerate()
        {
            let kind = le16(inode, I_MODE) & S_IFMT;
            let extents = le32(inode, I_FLAGS) & EXTENTS_FL != 0;
            let live = le16(inode, I_LINKS) != 0;
            if !live || !extents || !matches!(kind, S_IFDIR | S_IFREG | S_IFLNK) {
                continue;
            }
            let ino = first_ino + u64::try_from(i).ok()?;
            let journal = ino == u64::from(self.journal);
            let root = inode.get(I_BLOCK..I_BLOCK + 60)?;
            self.tree(dev, root, MAX_DEPTH, journal, v)?;
        }
        Some(())
    }

    /// Adds the blocks of the extent tree node `node` and below; of the
    /// journal only the first logical block.
    fn tree(
        &mut self,
        dev: &mut impl BlockDevice,
        node: &[u8],
        levels: u16,
        journal: bool,
        v: &mut Vec<Range<u64>>,
    ) -> Option<()> {
        if le16(node, 0) != EXT_MAGIC {
            return None;
        }
        let entries = usize::from(le16(node, 2));
        let depth = le16(node, 6);
        if depth >= levels || 12 + 12 * entries > node.len() {
            return None;
        }
        for e in node[12..12 + 12 * entries].chunks_exact(12) {
            let logical = le32(e, 0);
            if depth == 0 {
                let n = le16(e, 4);
                let start = u64::from(le32(e, 8)) | u64::from(le16(e, 6)) << 32;
                if n > MAX_INIT_EXTENT || (journal && logical != 0) {
                    continue;
                }
                let count = if journal { 1 } else { u64::from(n) };
                v.push(block_range(start, count, self.bs)?);
            } else {
                let leaf = u64::from(le32(e, 4)) | u64::from(le16(e, 8)) << 32;
                let r = block_range(leaf, 1, self.bs)?;
                self.tree_blocks += 1;
                if r.end > self.len || self.tree_blocks > MAX_TREE_BLOCKS {
                    return None;
                }
                let mut block = vec![0u8; usize::try_from(self.bs).ok()?];
                dev.read_at(r.start, &mut block).ok()?;
                v.push(r);
                self.tree(dev, &block, depth, journal, v)?;
            }
        }
        Some(())
    }
}
