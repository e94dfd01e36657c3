//! [`format`]: validating the options, then writing the data blocks, the
//! journal, the group descriptors and bitmaps, the inode tables and the
//! superblocks, in that order.

// A writer: its casts narrow values the validated tree and the geometry
// computed before bound (block counts, entry counts, name lengths); they are
// not yet each turned into a `try_from` (issue 13), so the crate's cast
// lints are allowed in this file only.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use super::bytes::{lo32, put16, put32, put32be, set_bits};
use super::csum::Csum;
use super::geometry::{default_journal_blocks, has_super, Allocator, Geometry, Run};
use super::records::{dirent, extent_root, inode_time, make_inode};
use super::*;
use crate::BlockDevice;

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
    let csum = Csum::new(&opts.uuid);
    let plan = Plan::new(&geo, opts, size)?;
    let mut w = Writer {
        dev,
        bs: geo.bs,
        written: 0,
    };
    let mut files = Files::new(&geo, opts, &plan);
    write_directories(&mut w, &geo, &csum, &plan)?;
    write_journal(&mut w, &geo, opts, &csum, &plan, &mut files.leaves)?;
    let groups = write_groups(&mut w, &geo, opts, &csum, &plan)?;
    write_inode_tables(&mut w, &geo, opts, &csum, &files.inodes)?;
    let sb = superblock(&geo, opts, &plan, &files, &groups);
    write_superblocks(&mut w, &geo, sb, &groups.gdt)?;
    w.dev.flush().map_err(|source| Error::Io {
        what: "flushing".into(),
        source,
    })?;

    Ok(Ext4Summary {
        block_size: opts.block_size,
        blocks: geo.blocks,
        groups: geo.groups,
        inodes: geo.ipg * geo.groups,
        free_blocks: groups.free_blocks,
        free_inodes: geo.ipg * geo.groups - USED_INODES,
        journal_blocks: plan.journal_blocks,
        bytes_written: w.written,
    })
}

/// Inodes 1..=11 are in use: the reserved ones and `lost+found`.
const USED_INODES: u32 = FIRST_INO;

/// Where the data blocks go: the root directory, lost+found (16 KiB, at
/// least two blocks, as mke2fs), then the journal and its extent leaves.
pub(super) struct Plan {
    pub(super) root_runs: Vec<Run>,
    pub(super) lpf_count: u64,
    pub(super) lpf_runs: Vec<Run>,
    pub(super) journal_blocks: u32,
    pub(super) journal_runs: Vec<Run>,
    /// Extent entries in one leaf block.
    pub(super) per_leaf: usize,
    pub(super) leaf_count: usize,
    pub(super) leaf_blocks: Vec<u64>,
    /// Data blocks taken from each group.
    pub(super) used_data: Vec<u64>,
}

impl Plan {
    pub(super) fn new(geo: &Geometry, opts: &Ext4Options, size: u64) -> Result<Self, Error> {
        let bs = geo.bs as usize;
        let mut alloc = Allocator::new(geo);
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
        let journal_size = Error::JournalSize {
            blocks: journal_blocks,
            min: JBD2_MIN_BLOCKS,
            max: max_journal,
        };
        if journal_blocks < JBD2_MIN_BLOCKS || journal_blocks > max_journal {
            return Err(journal_size);
        }
        let Some(journal_runs) = alloc.alloc(u64::from(journal_blocks)) else {
            return Err(journal_size);
        };
        let per_leaf = (bs - 12) / 12;
        let leaf_count = if journal_runs.len() <= 4 {
            0
        } else {
            journal_runs.len().div_ceil(per_leaf)
        };
        if leaf_count > 4 {
            return Err(journal_size);
        }
        let leaf_blocks: Vec<u64> = match alloc.alloc(leaf_count as u64) {
            Some(runs) => runs
                .iter()
                .flat_map(|&(s, l)| s..s + u64::from(l))
                .collect(),
            None => return Err(full(())),
        };
        Ok(Self {
            root_runs,
            lpf_count,
            lpf_runs,
            journal_blocks,
            journal_runs,
            per_leaf,
            leaf_count,
            leaf_blocks,
            used_data: alloc.used,
        })
    }
}

/// The three inodes with contents (root, lost+found, journal), the
/// journal's extent leaves and what the superblock repeats of the journal.
struct Files {
    inodes: Vec<(u32, [u8; INODE_SIZE])>,
    leaves: Vec<Vec<u8>>,
    j_iblock: [u8; 60],
    j_size: u64,
}

impl Files {
    fn new(geo: &Geometry, opts: &Ext4Options, plan: &Plan) -> Self {
        let bs = geo.bs as usize;
        let mut inodes: Vec<(u32, [u8; INODE_SIZE])> = Vec::new();
        let sectors = |blocks: u64| blocks * geo.bs / 512;
        let no_leaves = &mut Vec::new();
        let root_iblock = extent_root(&plan.root_runs, &[], no_leaves, bs);
        let root = make_inode(
            opts.time,
            S_IFDIR | 0o755,
            3,
            geo.bs,
            sectors(1),
            &root_iblock,
        );
        inodes.push((ROOT_INO, root));
        let lpf_iblock = extent_root(&plan.lpf_runs, &[], no_leaves, bs);
        let lpf = make_inode(
            opts.time,
            S_IFDIR | 0o700,
            2,
            plan.lpf_count * geo.bs,
            sectors(plan.lpf_count),
            &lpf_iblock,
        );
        inodes.push((LPF_INO, lpf));
        let mut leaves = Vec::new();
        let j_iblock = extent_root(&plan.journal_runs, &plan.leaf_blocks, &mut leaves, bs);
        let j_size = u64::from(plan.journal_blocks) * geo.bs;
        let journal = make_inode(
            opts.time,
            S_IFREG | 0o600,
            1,
            j_size,
            sectors(u64::from(plan.journal_blocks) + plan.leaf_count as u64),
            &j_iblock,
        );
        inodes.push((JOURNAL_INO, journal));
        Self {
            inodes,
            leaves,
            j_iblock,
            j_size,
        }
    }
}

/// The directory blocks of the root and of lost+found.
fn write_directories<D: BlockDevice>(
    w: &mut Writer<'_, D>,
    geo: &Geometry,
    csum: &Csum,
    plan: &Plan,
) -> Result<(), Error> {
    let bs = geo.bs as usize;
    let mut root_block = vec![0u8; bs];
    let mut at = dirent(&mut root_block, 0, ROOT_INO, 12, b".", 2);
    at = dirent(&mut root_block, at, ROOT_INO, 12, b"..", 2);
    dirent(&mut root_block, at, LPF_INO, bs - 12 - at, b"lost+found", 2);
    csum.dir_block(ROOT_INO, &mut root_block);
    w.write_block(plan.root_runs[0].0, &root_block, || {
        "writing the root directory".into()
    })?;
    let lpf_blocks = plan.lpf_runs.iter().flat_map(|&(s, l)| s..s + u64::from(l));
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
    Ok(())
}

/// The journal: extent leaves, the jbd2 superblock, optionally zeros.
fn write_journal<D: BlockDevice>(
    w: &mut Writer<'_, D>,
    geo: &Geometry,
    opts: &Ext4Options,
    csum: &Csum,
    plan: &Plan,
    leaves: &mut [Vec<u8>],
) -> Result<(), Error> {
    let jseed = csum.inode_seed(JOURNAL_INO);
    for (leaf, &b) in leaves.iter_mut().zip(&plan.leaf_blocks) {
        let t = 12 + plan.per_leaf * 12;
        let c = crc32c::update(jseed, &leaf[..t]);
        put32(leaf, t, c);
        w.write_block(b, leaf, || "writing the journal's extent tree".into())?;
    }
    if opts.zero_journal {
        for &(s, l) in &plan.journal_runs {
            w.zero_blocks(s, u64::from(l), "the journal")?;
        }
    }
    let mut jsb = vec![0u8; geo.bs as usize];
    put32be(&mut jsb, 0x00, JBD2_MAGIC);
    put32be(&mut jsb, 0x04, 4); // superblock v2
    put32be(&mut jsb, 0x0C, geo.bs as u32);
    put32be(&mut jsb, 0x10, plan.journal_blocks);
    put32be(&mut jsb, 0x14, 1); // first log block
    put32be(&mut jsb, 0x18, 1); // first expected commit sequence
    jsb[0x30..0x40].copy_from_slice(&opts.uuid);
    put32be(&mut jsb, 0x40, 1); // one user: this file system
    w.write_block(plan.journal_runs[0].0, &jsb, || {
        "writing the journal superblock".into()
    })
}

/// What the group descriptors add up to.
struct Groups {
    /// The group descriptor table, as every superblock copy carries it.
    gdt: Vec<u8>,
    free_blocks: u64,
    /// Metadata blocks of all groups (not the journal).
    overhead: u64,
}

/// The group descriptors, and the bitmaps of the groups that are in use.
fn write_groups<D: BlockDevice>(
    w: &mut Writer<'_, D>,
    geo: &Geometry,
    opts: &Ext4Options,
    csum: &Csum,
    plan: &Plan,
) -> Result<Groups, Error> {
    let zeroed = opts.inode_tables != InodeTableInit::Lazy;
    let mut gdt = vec![0u8; geo.gdt_blocks as usize * geo.bs as usize];
    let mut free_blocks_total = 0u64;
    let mut overhead_total = geo.first_data_block;
    let mut bitmap = vec![0u8; geo.bs as usize];
    for g in 0..geo.groups {
        let start = geo.group_start(g);
        let len = geo.group_len(g);
        let overhead = geo.overhead(g);
        let data = plan.used_data[g as usize];
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
        put32(d, BG_BLOCK_BITMAP, lo32(geo.block_bitmap(g)));
        put32(d, BG_INODE_BITMAP, lo32(geo.inode_bitmap(g)));
        put32(d, BG_INODE_TABLE, lo32(geo.inode_table(g)));
        put16(d, BG_FREE_BLOCKS, free as u16);
        let (free_inodes, dirs, unused) = if g == 0 {
            (geo.ipg - USED_INODES, 2, geo.ipg - USED_INODES)
        } else {
            (geo.ipg, 0, geo.ipg)
        };
        put16(d, BG_FREE_INODES, free_inodes as u16);
        put16(d, BG_USED_DIRS, dirs);
        put16(d, BG_FLAGS, flags);
        put16(d, BG_ITABLE_UNUSED, unused as u16);
        if !block_uninit {
            bitmap.fill(0);
            set_bits(&mut bitmap, 0, overhead + data);
            set_bits(&mut bitmap, len, geo.bs * 8);
            put16(
                d,
                BG_BLOCK_BITMAP_CSUM,
                csum.bitmap(&bitmap[..(geo.bpg / 8) as usize]),
            );
            w.write_block(geo.block_bitmap(g), &bitmap, || {
                format!("writing the block bitmap of group {g}")
            })?;
        }
        if g == 0 {
            bitmap.fill(0);
            set_bits(&mut bitmap, 0, u64::from(USED_INODES));
            set_bits(&mut bitmap, u64::from(geo.ipg), geo.bs * 8);
            put16(
                d,
                BG_INODE_BITMAP_CSUM,
                csum.bitmap(&bitmap[..geo.ipg as usize / 8]),
            );
            w.write_block(geo.inode_bitmap(g), &bitmap, || {
                "writing the inode bitmap of group 0".into()
            })?;
        }
        csum.group_desc(g, d);
        debug_assert!(start + overhead <= start + len);
    }
    Ok(Groups {
        gdt,
        free_blocks: free_blocks_total,
        overhead: overhead_total,
    })
}

/// The inode tables: zeros if asked, then the first block(s) of group 0,
/// which hold inodes 1..=11.
fn write_inode_tables<D: BlockDevice>(
    w: &mut Writer<'_, D>,
    geo: &Geometry,
    opts: &Ext4Options,
    csum: &Csum,
    inodes: &[(u32, [u8; INODE_SIZE])],
) -> Result<(), Error> {
    if opts.inode_tables == InodeTableInit::Zero {
        for g in 0..geo.groups {
            w.zero_blocks(geo.inode_table(g), geo.itable_blocks, "the inode tables")?;
        }
    }
    let per_block = geo.bs as usize / INODE_SIZE;
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
    })
}

/// The superblock, but for the fields each copy sets itself (its group,
/// the lifetime writes and the checksum).
fn superblock(
    geo: &Geometry,
    opts: &Ext4Options,
    plan: &Plan,
    files: &Files,
    groups: &Groups,
) -> [u8; SB_SIZE] {
    let free_inodes = geo.ipg * geo.groups - USED_INODES;
    let mut sb = [0u8; SB_SIZE];
    let inodes_count = geo.ipg * geo.groups;
    put32(&mut sb, 0x00, inodes_count);
    put32(&mut sb, SB_BLOCKS_LO, lo32(geo.blocks));
    put32(
        &mut sb,
        0x08,
        (geo.blocks * u64::from(opts.reserved_percent) / 100) as u32,
    );
    put32(&mut sb, 0x0C, lo32(groups.free_blocks));
    put32(&mut sb, 0x10, free_inodes);
    put32(&mut sb, SB_FIRST_DATA_BLOCK, lo32(geo.first_data_block));
    let log = geo.bs.trailing_zeros() - 10;
    put32(&mut sb, SB_LOG_BLOCK_SIZE, log);
    put32(&mut sb, 0x1C, log);
    put32(&mut sb, SB_BLOCKS_PER_GROUP, lo32(geo.bpg));
    put32(&mut sb, 0x24, lo32(geo.bpg));
    put32(&mut sb, SB_INODES_PER_GROUP, geo.ipg);
    let (tlo, thi) = (opts.time as u32, (opts.time >> 32) as u8);
    put32(&mut sb, 0x30, tlo); // last write
    sb[0x274] = thi;
    put16(&mut sb, 0x36, 0xFFFF); // no mount-count checks
    put16(&mut sb, SB_MAGIC, MAGIC);
    put16(&mut sb, 0x3A, 1); // clean
    put16(&mut sb, 0x3C, 1); // on errors: continue
    put32(&mut sb, 0x40, tlo); // last check
    sb[0x277] = thi;
    put32(&mut sb, SB_REV_LEVEL, 1); // dynamic revision
    put32(&mut sb, 0x54, FIRST_INO);
    put16(&mut sb, SB_INODE_SIZE, INODE_SIZE as u16);
    put32(
        &mut sb,
        SB_FEATURE_COMPAT,
        COMPAT_HAS_JOURNAL | COMPAT_EXT_ATTR | COMPAT_DIR_INDEX,
    );
    put32(
        &mut sb,
        SB_FEATURE_INCOMPAT,
        INCOMPAT_FILETYPE | INCOMPAT_EXTENTS,
    );
    put32(
        &mut sb,
        SB_FEATURE_RO_COMPAT,
        RO_COMPAT_SPARSE_SUPER
            | RO_COMPAT_LARGE_FILE
            | RO_COMPAT_HUGE_FILE
            | RO_COMPAT_DIR_NLINK
            | RO_COMPAT_EXTRA_ISIZE
            | RO_COMPAT_METADATA_CSUM,
    );
    sb[SB_UUID..SB_UUID + 16].copy_from_slice(&opts.uuid);
    sb[SB_LABEL..SB_LABEL + opts.label.len()].copy_from_slice(opts.label.as_bytes());
    put32(&mut sb, SB_JOURNAL_INUM, JOURNAL_INO);
    for i in 0..4u8 {
        let mut c = crc32c::update(!0, b"krazy ext4 directory hash seed");
        c = crc32c::update(c, &opts.uuid);
        c = crc32c::update(c, &[i]);
        put32(&mut sb, 0xEC + 4 * usize::from(i), c);
    }
    sb[0xFC] = 1; // half_md4
    sb[0xFD] = 1; // s_jnl_blocks holds a copy of the journal's i_block
    put32(&mut sb, 0x100, 0x4 | 0x8); // user_xattr, acl
    put32(&mut sb, SB_MKFS_TIME, tlo); // mkfs time
    sb[SB_MKFS_TIME_HI] = thi;
    sb[0x10C..0x10C + 60].copy_from_slice(&files.j_iblock);
    put32(&mut sb, 0x10C + 60, (files.j_size >> 32) as u32);
    put32(&mut sb, 0x10C + 64, lo32(files.j_size));
    put16(&mut sb, 0x15C, EXTRA_ISIZE);
    put16(&mut sb, 0x15E, EXTRA_ISIZE);
    put32(&mut sb, 0x160, 0x1); // signed directory hash
    sb[0x175] = 1; // crc32c
    let overhead_total = groups.overhead + u64::from(plan.journal_blocks) + plan.leaf_count as u64;
    put32(&mut sb, 0x248, lo32(overhead_total));
    sb
}

/// The superblock and its backups, each with the group descriptor table;
/// last, as the superblock records the bytes written before it.
fn write_superblocks<D: BlockDevice>(
    w: &mut Writer<'_, D>,
    geo: &Geometry,
    mut sb: [u8; SB_SIZE],
    gdt: &[u8],
) -> Result<(), Error> {
    let bs = geo.bs as usize;
    // Lifetime writes: what this format writes, fixed before writing it.
    let sb_groups: Vec<u32> = (0..geo.groups).filter(|&g| has_super(g)).collect();
    let kbytes = (w.written + sb_groups.len() as u64 * (geo.bs + gdt.len() as u64)) / 1024;
    put32(&mut sb, 0x178, lo32(kbytes));
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
        w.write_block(first + 1, gdt, || {
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
    Ok(())
}
