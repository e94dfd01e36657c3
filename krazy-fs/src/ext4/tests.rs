//! Unit tests of the formatter's pieces and of its refusals.

use super::bytes::le32;
use super::crc32c;
use super::geometry::{has_super, Geometry};
use super::records::inode_time;
use super::*;
use crate::MemDevice;

#[test]
fn sparse_super_groups() {
    let v: Vec<u32> = (0..100).filter(|&g| has_super(g)).collect();
    assert_eq!(v, [0, 1, 3, 5, 7, 9, 25, 27, 49, 81]);
}

#[test]
fn inode_time_epochs() {
    assert_eq!(inode_time(0), (0, 0));
    assert_eq!(inode_time((1 << 31) - 1), ((1 << 31) - 1, 0));
    assert_eq!(inode_time(1 << 31), (1 << 31, 1));
    assert_eq!(inode_time(MAX_TIME), ((1 << 31) - 1, 3));
}

#[test]
fn sizes_out_of_range_are_typed_errors() {
    let opts = Ext4Options::new([1; 16], 0);
    let mut small = MemDevice::zeroed(usize::try_from(MIN_SIZE - 4096).unwrap());
    assert!(matches!(
        format(&mut small, &opts),
        Err(Error::TooSmall { .. })
    ));
    let opts = opts.label("a label that is far too long");
    let mut ok = MemDevice::zeroed(usize::try_from(MIN_SIZE).unwrap());
    assert!(matches!(
        format(&mut ok, &opts),
        Err(Error::LabelTooLong { .. })
    ));
    let opts = Ext4Options::new([1; 16], 0).block_size(8192);
    assert!(matches!(
        format(&mut ok, &opts),
        Err(Error::BlockSize(8192))
    ));
    let opts = Ext4Options::new([1; 16], MAX_TIME + 1);
    assert!(matches!(
        format(&mut ok, &opts),
        Err(Error::TimeOutOfRange(_))
    ));
    let opts = Ext4Options::new([1; 16], 0).journal_blocks(100);
    assert!(matches!(
        format(&mut ok, &opts),
        Err(Error::JournalSize { .. })
    ));
}

#[test]
fn probe_reads_back_and_rejects_garbage() {
    let mut dev = MemDevice::zeroed(usize::try_from(MIN_SIZE).unwrap());
    assert!(probe(&mut dev).is_none());
    let opts = Ext4Options::new([9; 16], 1234).label("perm");
    format(&mut dev, &opts).unwrap();
    let info = probe(&mut dev).unwrap();
    assert_eq!(info.uuid, [9; 16]);
    assert_eq!(info.label, "perm");
    assert_eq!(info.mkfs_time, 1234);
    assert_eq!(info.blocks, 4096);
    assert!(info.has_journal());
    assert!(probe(&mut MemDevice::zeroed(1500)).is_none());
    let mut bad = MemDevice::zeroed(4096);
    bad.as_mut_slice()[1080..1082].copy_from_slice(&MAGIC.to_le_bytes());
    bad.as_mut_slice()[1048] = 200; // absurd block size
    assert!(probe(&mut bad).is_none());
}

#[test]
fn superblock_checksum_verifies() {
    let mut dev = MemDevice::zeroed(usize::try_from(MIN_SIZE).unwrap());
    format(&mut dev, &Ext4Options::new([3; 16], 0)).unwrap();
    let sb = &dev.as_slice()[1024..2048];
    assert_eq!(crc32c::update(!0, &sb[..1020]), le32(sb, 1020));
}

/// Whether one range of `v` holds all of `r`.
fn covers(v: &[std::ops::Range<u64>], r: &std::ops::Range<u64>) -> bool {
    v.iter().any(|x| x.start <= r.start && r.end <= x.end)
}

#[test]
fn used_ranges_are_only_metadata_unless_tables_are_marked_zeroed() {
    // The cases of krazy-build's flash test, whose code this was.
    const MIB: u64 = 1 << 20;
    let size = 256u64 << 20;
    let total = |v: &[std::ops::Range<u64>]| v.iter().map(|r| r.end - r.start).sum::<u64>();
    let mut lazy = MemDevice::zeroed(usize::try_from(size).unwrap());
    format(&mut lazy, &Ext4Options::new([1; 16], 1)).unwrap();
    // Two groups of 128 MiB; group 1's inode table (8192 inodes of 256
    // bytes) starts at block 32772.
    let table1 = 32772 * 4096..32772 * 4096 + 2 * MIB;
    let needed = used_ranges(&mut lazy).unwrap();
    assert_eq!(needed[0].start, 0);
    assert!(needed[0].end >= MIB);
    assert_eq!(needed.last().unwrap().end, size);
    assert!(!covers(&needed, &table1), "{needed:?}");
    // Head and tail MiB, the block bitmap of the last group, little else.
    assert!(total(&needed) < 2 * MIB + 64 * 1024, "{needed:?}");

    let mut zeroed = MemDevice::zeroed(usize::try_from(size).unwrap());
    let opts = Ext4Options::new([1; 16], 1).inode_tables(InodeTableInit::Zero);
    format(&mut zeroed, &opts).unwrap();
    let needed = used_ranges(&mut zeroed).unwrap();
    assert!(covers(&needed, &table1), "{needed:?}");
    assert!(
        covers(&needed, &(4 * 4096..4 * 4096 + 2 * MIB)),
        "{needed:?}"
    );

    assert!(used_ranges(&mut MemDevice::zeroed(usize::try_from(size).unwrap())).is_none());
}

#[test]
fn used_ranges_cover_what_the_writer_wrote() {
    for (bs, init) in [
        (4096, InodeTableInit::Lazy),
        (1024, InodeTableInit::Lazy),
        (2048, InodeTableInit::AssumeZeroed),
    ] {
        let size = 64u64 << 20;
        let opts = Ext4Options::new([5; 16], 7)
            .block_size(bs)
            .inode_tables(init);
        let mut dev = MemDevice::zeroed(usize::try_from(size).unwrap());
        format(&mut dev, &opts).unwrap();
        let used = used_ranges(&mut dev).unwrap();
        let geo = Geometry::new(size, &opts).unwrap();
        let plan = format::Plan::new(&geo, &opts, size).unwrap();
        let b = |first: u64, n: u64| first * geo.bs..(first + n) * geo.bs;
        let what = format!("{bs}-byte blocks, {init:?}: {used:?}");
        // Superblock and descriptors, bitmaps of group 0 and of the last
        // group, the reserved inodes.
        assert!(covers(&used, &(1024..2048)), "{what}");
        assert!(
            covers(&used, &b(geo.first_data_block + 1, geo.gdt_blocks)),
            "{what}"
        );
        assert!(covers(&used, &b(geo.block_bitmap(0), 2)), "{what}");
        assert!(
            covers(&used, &b(geo.block_bitmap(geo.groups - 1), 1)),
            "{what}"
        );
        let ino = geo.inode_table(0) * geo.bs;
        assert!(covers(&used, &(ino..ino + 11 * 256)), "{what}");
        // Every inode table only when it is marked zeroed (those in the
        // first MiB are covered anyway).
        for g in 0..geo.groups {
            let table = b(geo.inode_table(g), geo.itable_blocks);
            if init != InodeTableInit::Lazy {
                assert!(covers(&used, &table), "{what}");
            } else if table.end > 1 << 20 {
                assert!(!covers(&used, &table), "{what}");
            }
        }
        // Every block of the directories, the journal's superblock and
        // extent leaves; not the rest of the journal.
        for &(s, n) in plan.root_runs.iter().chain(&plan.lpf_runs) {
            assert!(covers(&used, &b(s, u64::from(n))), "{what}");
        }
        for &leaf in &plan.leaf_blocks {
            assert!(covers(&used, &b(leaf, 1)), "{what}");
        }
        let (j, jn) = plan.journal_runs[0];
        assert!(covers(&used, &b(j, 1)), "{what}");
        let rest = b(j + 1, u64::from(jn) - 1);
        let head_tail = |r: &std::ops::Range<u64>| r.start == 0 || r.end == size;
        assert!(
            !used
                .iter()
                .any(|r| !head_tail(r) && r.start < rest.end && rest.start < r.end),
            "{what}"
        );
    }
}
