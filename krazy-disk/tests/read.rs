//! Reading tables back: round trips, a table of corruptions with the typed
//! error each must give, the fallback to the backup header, and the
//! PARTUUID lookup over a fake /sys/block and /dev.

mod common;

use std::io::Cursor;

use common::*;
use krazy_disk::{
    find_by_partuuid, read_gpt, read_mbr, GptError, HeaderCopy, InstanceId, Layout, LayoutOptions,
    MbrError, MbrKind, PartitionTable, Platform, Role,
};

/// A 24 MiB pc disk in memory and its table.
fn pc_image() -> (Vec<u8>, PartitionTable) {
    let opts = LayoutOptions::default()
        .with_esp_bytes(4 * MIB)
        .with_root_bytes(4 * MIB)
        .with_min_perm_bytes(4 * MIB);
    let layout = Layout::new(Platform::Pc, arch(Platform::Pc), 24 * MIB, &opts).unwrap();
    let table = PartitionTable::from_layout(&layout, &InstanceId::new("corrupt").unwrap()).unwrap();
    let mut c = Cursor::new(vec![0u8; (24 * MIB) as usize]);
    table.write(&mut c).unwrap();
    (c.into_inner(), table)
}

const N: u64 = 24 * MIB / 512;
const PRIMARY: usize = 512;
const BACKUP: usize = ((N - 1) * 512) as usize;
const PRIMARY_ENTRIES: usize = 1024;
const BACKUP_ENTRIES: usize = ((N - 33) * 512) as usize;

fn put_u32(img: &mut [u8], at: usize, v: u32) {
    img[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(img: &mut [u8], at: usize, v: u64) {
    img[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Recomputes the CRC of the header at byte offset `h` over 92 bytes.
fn fix_header(img: &mut [u8], h: usize) {
    img[h + 16..h + 20].fill(0);
    let crc = crc32fast::hash(&img[h..h + 92]);
    put_u32(img, h + 16, crc);
}

/// Changes a header field and keeps the header's CRC valid.
fn set_field(img: &mut [u8], h: usize, f: impl Fn(&mut [u8])) {
    f(&mut img[h..h + 512]);
    fix_header(img, h);
}

/// Changes both entry arrays the same way and keeps every CRC valid.
fn edit_entries(img: &mut [u8], f: impl Fn(&mut [u8])) {
    for (h, e) in [(PRIMARY, PRIMARY_ENTRIES), (BACKUP, BACKUP_ENTRIES)] {
        f(&mut img[e..e + 16384]);
        let crc = crc32fast::hash(&img[e..e + 16384]);
        put_u32(img, h + 88, crc);
        fix_header(img, h);
    }
}

/// Entry `i` (0-based) first/last LBA offsets inside an entry array.
fn first_at(i: usize) -> usize {
    i * 128 + 32
}
fn last_at(i: usize) -> usize {
    i * 128 + 40
}

type Check = fn(&GptError) -> bool;
/// A named corruption of the whole image and the error it must give.
type ImageCase = (&'static str, Box<dyn Fn(&mut Vec<u8>)>, Check);
/// A named edit of both entry arrays and the error it must give.
type EntriesCase = (&'static str, Box<dyn Fn(&mut [u8])>, Check);

/// Corruptions of the primary copy only: the reader must fall back to the
/// backup and name what was wrong with the primary.
fn primary_only_cases() -> Vec<ImageCase> {
    vec![
        ("signature byte", Box::new(|i| i[PRIMARY] ^= 1), |e| {
            matches!(e, GptError::BadSignature { lba: 1 })
        }),
        (
            "header CRC field",
            Box::new(|i| i[PRIMARY + 16] ^= 0x80),
            |e| matches!(e, GptError::BadHeaderCrc { lba: 1, .. }),
        ),
        (
            "disk GUID byte without CRC fix",
            Box::new(|i| i[PRIMARY + 60] ^= 4),
            |e| matches!(e, GptError::BadHeaderCrc { lba: 1, .. }),
        ),
        (
            "entry array byte",
            Box::new(|i| i[PRIMARY_ENTRIES + 200] ^= 1),
            |e| matches!(e, GptError::BadEntriesCrc { lba: 1, .. }),
        ),
        (
            "header size 91",
            Box::new(|i| set_field(i, PRIMARY, |h| put_u32(h, 12, 91))),
            |e| matches!(e, GptError::HeaderSizeOutOfRange { size: 91, .. }),
        ),
        (
            "header size 513",
            Box::new(|i| put_u32(i, PRIMARY + 12, 513)),
            |e| matches!(e, GptError::HeaderSizeOutOfRange { size: 513, .. }),
        ),
        (
            "entry size 100",
            Box::new(|i| set_field(i, PRIMARY, |h| put_u32(h, 84, 100))),
            |e| matches!(e, GptError::BadEntrySize { size: 100, .. }),
        ),
        (
            "entry size 384",
            Box::new(|i| set_field(i, PRIMARY, |h| put_u32(h, 84, 384))),
            |e| matches!(e, GptError::BadEntrySize { size: 384, .. }),
        ),
        (
            "entry size 1 GiB",
            Box::new(|i| set_field(i, PRIMARY, |h| put_u32(h, 84, 1 << 30))),
            |e| matches!(e, GptError::BadEntrySize { .. }),
        ),
        (
            "4 billion entries",
            Box::new(|i| set_field(i, PRIMARY, |h| put_u32(h, 80, u32::MAX))),
            |e| {
                matches!(
                    e,
                    GptError::TooManyEntries {
                        count: u32::MAX,
                        ..
                    }
                )
            },
        ),
        (
            "8193 entries",
            Box::new(|i| set_field(i, PRIMARY, |h| put_u32(h, 80, 8193))),
            |e| matches!(e, GptError::TooManyEntries { count: 8193, .. }),
        ),
        (
            "own LBA 7",
            Box::new(|i| set_field(i, PRIMARY, |h| put_u64(h, 24, 7))),
            |e| {
                matches!(
                    e,
                    GptError::WrongHeaderLba {
                        lba: 1,
                        recorded: 7
                    }
                )
            },
        ),
        (
            "first usable > last usable",
            Box::new(|i| set_field(i, PRIMARY, |h| put_u64(h, 40, N))),
            |e| matches!(e, GptError::BadUsableRange { .. }),
        ),
        (
            "last usable past the disk",
            Box::new(|i| set_field(i, PRIMARY, |h| put_u64(h, 48, N + 100))),
            |e| matches!(e, GptError::BadUsableRange { .. }),
        ),
        (
            "first usable 1 (covers the header)",
            Box::new(|i| set_field(i, PRIMARY, |h| put_u64(h, 40, 1))),
            |e| matches!(e, GptError::BadUsableRange { .. }),
        ),
        (
            "entries inside the usable range",
            Box::new(|i| set_field(i, PRIMARY, |h| put_u64(h, 72, 100))),
            |e| {
                matches!(
                    e,
                    GptError::EntriesOutOfRange {
                        entries_lba: 100,
                        ..
                    }
                )
            },
        ),
        (
            "entries past the disk",
            Box::new(|i| set_field(i, PRIMARY, |h| put_u64(h, 72, u64::MAX - 3))),
            |e| matches!(e, GptError::EntriesOutOfRange { .. }),
        ),
        (
            "entries over the header",
            Box::new(|i| set_field(i, PRIMARY, |h| put_u64(h, 72, 0))),
            |e| matches!(e, GptError::EntriesOutOfRange { .. }),
        ),
        (
            "primary zeroed",
            Box::new(|i| i[PRIMARY..PRIMARY + 512].fill(0)),
            |e| matches!(e, GptError::BadSignature { lba: 1 }),
        ),
    ]
}

#[test]
fn round_trip_pc_and_pi3() {
    for platform in [Platform::Pc, Platform::Pi3] {
        let bytes = 96 * MIB;
        let layout = Layout::new(platform, arch(platform), bytes, &small_opts()).unwrap();
        let table = PartitionTable::from_layout(&layout, &InstanceId::new("rt").unwrap()).unwrap();
        let mut c = Cursor::new(vec![0u8; bytes as usize]);
        table.write(&mut c).unwrap();
        let gpt = read_gpt(&mut c, bytes).unwrap();
        assert_eq!(gpt.used, HeaderCopy::Primary);
        assert!(
            gpt.primary_problem.is_none() && gpt.backup_problem.is_none(),
            "{gpt:?}"
        );
        assert_eq!(gpt.header.disk_guid, table.disk_guid());
        assert_eq!(gpt.header.first_usable_lba, 34);
        assert_eq!(gpt.header.last_usable_lba, layout.disk_sectors() - 34);
        assert_eq!(gpt.header.alternate_lba, layout.disk_sectors() - 1);
        assert_eq!((gpt.header.entry_count, gpt.header.entry_size), (128, 128));
        assert_eq!(gpt.partitions.len(), table.entries().len());
        for (r, e) in gpt.partitions.iter().zip(table.entries()) {
            let p = &e.partition;
            assert_eq!(
                (
                    r.number,
                    r.type_guid,
                    r.guid,
                    r.first_lba,
                    r.last_lba,
                    r.attributes,
                    r.name.as_str()
                ),
                (
                    p.number,
                    p.type_guid,
                    e.guid,
                    p.first_lba,
                    p.last_lba(),
                    0,
                    p.name
                )
            );
            assert_eq!(r.sectors(), p.sectors);
        }
        let mbr = read_mbr(&mut c, bytes).unwrap();
        assert_eq!(mbr.disk_signature, table.mbr_signature());
        let want = if platform == Platform::Pc {
            MbrKind::Protective
        } else {
            MbrKind::Hybrid
        };
        assert_eq!(mbr.kind(), want);
        let root = table.entry(Role::RootA).unwrap();
        assert_eq!(
            root.root_arg(),
            format!("root=PARTUUID={}", root.partuuid())
        );
        assert_eq!(root.partuuid(), root.partuuid().to_lowercase());
    }
}

#[test]
fn a_broken_primary_falls_back_to_the_backup() {
    let (clean, table) = pc_image();
    for (name, corrupt, check) in primary_only_cases() {
        let mut img = clean.clone();
        corrupt(&mut img);
        let gpt = read_gpt(&mut Cursor::new(&img), 24 * MIB)
            .unwrap_or_else(|e| panic!("{name}: no fallback: {e}"));
        assert_eq!(gpt.used, HeaderCopy::Backup, "{name}");
        let problem = gpt.primary_problem.as_ref().unwrap();
        assert!(check(problem), "{name}: got {problem:?}");
        assert!(!problem.to_string().is_empty());
        assert_eq!(gpt.header.my_lba, N - 1);
        assert_eq!(gpt.header.disk_guid, table.disk_guid());
        assert_eq!(gpt.partitions.len(), 4, "{name}");

        // With the backup broken too, nothing is usable, and both reasons are given.
        img[BACKUP] ^= 1;
        match read_gpt(&mut Cursor::new(&img), 24 * MIB) {
            Err(GptError::NoValidGpt { primary, backup }) => {
                assert!(check(&primary), "{name}: {primary:?}");
                assert!(matches!(*backup, GptError::BadSignature { lba } if lba == N - 1));
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn bad_entries_in_both_copies_are_typed_errors() {
    let cases: Vec<EntriesCase> = vec![
        (
            "overlap",
            Box::new(|e| {
                let v = u64::from_le_bytes(e[last_at(0)..last_at(0) + 8].try_into().unwrap());
                put_u64(e, first_at(1), v)
            }),
            |e| matches!(e, GptError::PartitionsOverlap { a: 1, b: 2 }),
        ),
        (
            "contained overlap",
            Box::new(|e| {
                put_u64(e, first_at(3), 9000);
                put_u64(e, last_at(3), 9001)
            }),
            |e| matches!(e, GptError::PartitionsOverlap { a: 1, b: 4 }),
        ),
        (
            "past the end of the disk",
            Box::new(|e| put_u64(e, last_at(3), N)),
            |e| matches!(e, GptError::PartitionPastEndOfDisk { number: 4, .. }),
        ),
        (
            "far past the end",
            Box::new(|e| put_u64(e, last_at(3), u64::MAX)),
            |e| matches!(e, GptError::PartitionPastEndOfDisk { number: 4, .. }),
        ),
        (
            "into the backup table",
            Box::new(|e| put_u64(e, last_at(3), N - 20)),
            |e| matches!(e, GptError::PartitionOutsideUsable { number: 4, .. }),
        ),
        (
            "over the primary table",
            Box::new(|e| put_u64(e, first_at(0), 20)),
            |e| {
                matches!(
                    e,
                    GptError::PartitionOutsideUsable {
                        number: 1,
                        first: 20,
                        ..
                    }
                )
            },
        ),
        (
            "first > last",
            Box::new(|e| put_u64(e, first_at(2), u64::MAX - 1)),
            |e| matches!(e, GptError::PartitionFirstAfterLast { number: 3, .. }),
        ),
        (
            "entry 100 overlaps entry 2",
            Box::new(|e| {
                let src = e[128..256].to_vec();
                e[99 * 128..100 * 128].copy_from_slice(&src)
            }),
            |e| matches!(e, GptError::PartitionsOverlap { a: 2, b: 100 }),
        ),
    ];
    let (clean, _) = pc_image();
    for (name, edit, check) in cases {
        let mut img = clean.clone();
        edit_entries(&mut img, edit);
        match read_gpt(&mut Cursor::new(&img), 24 * MIB) {
            Err(GptError::NoValidGpt { primary, backup }) => {
                assert!(check(&primary), "{name}: primary {primary:?}");
                assert!(check(&backup), "{name}: backup {backup:?}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    // An entry moved (not overlapping) is fine: the edit helper itself is sound.
    let mut img = clean.clone();
    edit_entries(&mut img, |e| {
        let src = e[128..256].to_vec();
        e[99 * 128..100 * 128].copy_from_slice(&src);
        e[128..256].fill(0);
    });
    let gpt = read_gpt(&mut Cursor::new(&img), 24 * MIB).unwrap();
    assert!(gpt.backup_problem.is_none());
    assert_eq!(
        gpt.partitions.iter().map(|p| p.number).collect::<Vec<_>>(),
        [1, 3, 4, 100]
    );
}

#[test]
fn backup_problems_are_reported_beside_a_good_primary() {
    let (clean, _) = pc_image();
    let cases: Vec<ImageCase> = vec![
        (
            "backup CRC",
            Box::new(|i| i[BACKUP + 16] ^= 1),
            |e| matches!(e, GptError::BadHeaderCrc { lba, .. } if *lba == N - 1),
        ),
        (
            "backup entries",
            Box::new(|i| i[BACKUP_ENTRIES + 5] ^= 1),
            |e| matches!(e, GptError::BadEntriesCrc { .. }),
        ),
        (
            "backup disk GUID",
            Box::new(|i| set_field(i, BACKUP, |h| h[56] ^= 1)),
            |e| matches!(e, GptError::BackupMismatch { field: "disk GUID" }),
        ),
        (
            "backup usable range",
            Box::new(|i| set_field(i, BACKUP, |h| put_u64(h, 40, 40))),
            |e| {
                matches!(
                    e,
                    GptError::BackupMismatch {
                        field: "usable range"
                    }
                )
            },
        ),
        (
            "backup entry count",
            Box::new(|i| set_field(i, BACKUP, |h| put_u32(h, 80, 64))),
            |e| {
                matches!(
                    e,
                    GptError::BackupMismatch { .. } | GptError::BadEntriesCrc { .. }
                )
            },
        ),
        (
            "backup missing (truncated disk)",
            Box::new(|i| i.truncate(BACKUP)),
            |e| matches!(e, GptError::Io { .. }),
        ),
    ];
    for (name, corrupt, check) in cases {
        let mut img = clean.clone();
        corrupt(&mut img);
        let gpt = read_gpt(&mut Cursor::new(&img), 24 * MIB).unwrap();
        assert_eq!(gpt.used, HeaderCopy::Primary, "{name}");
        assert!(gpt.primary_problem.is_none());
        let p = gpt
            .backup_problem
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: not noticed"));
        assert!(check(p), "{name}: {p:?}");
    }
}

#[test]
fn tiny_or_empty_disks_are_errors_not_panics() {
    for len in [0usize, 1, 511, 512, 1024, 2048, 4096, 34 * 512] {
        let img = vec![0u8; len];
        assert!(
            read_gpt(&mut Cursor::new(&img), len as u64).is_err(),
            "{len}"
        );
        assert!(
            read_mbr(&mut Cursor::new(&img), len as u64).is_err(),
            "{len}"
        );
    }
    // The disk claims to be larger than the bytes the reader has.
    let (img, _) = pc_image();
    let head = img[..34 * 512].to_vec();
    let gpt = read_gpt(&mut Cursor::new(&head), 24 * MIB).unwrap();
    assert!(matches!(gpt.backup_problem, Some(GptError::Io { .. })));
}

#[test]
fn mbr_corruptions_are_typed_errors() {
    let (clean, _) = pc_image();
    let mbr = |img: &[u8]| read_mbr(&mut Cursor::new(img), 24 * MIB);
    let mut img = clean.clone();
    img[510] = 0;
    assert!(matches!(
        mbr(&img),
        Err(MbrError::BadSignature { found: 0xaa00 })
    ));
    let mut img = clean.clone();
    img[446] = 0x7f;
    assert!(matches!(
        mbr(&img),
        Err(MbrError::BadStatus {
            entry: 1,
            status: 0x7f
        })
    ));
    let mut img = clean.clone();
    put_u32(&mut img, 446 + 12, (N as u32) + 5); // protective entry past the end
    assert!(matches!(
        mbr(&img),
        Err(MbrError::PastEndOfDisk { entry: 1, .. })
    ));
    let mut img = clean.clone();
    img[462..478].copy_from_slice(&[0, 0, 0, 0, 0x0c, 0, 0, 0, 0, 0x20, 0, 0, 0, 0x10, 0, 0]);
    assert!(matches!(mbr(&img), Err(MbrError::Overlap { a: 1, b: 2 })));
    let mut img = clean.clone();
    put_u32(&mut img, 446 + 12, 0);
    assert!(matches!(
        mbr(&img),
        Err(MbrError::EmptyEntry {
            entry: 1,
            kind: 0xee
        })
    ));
    let mut img = clean.clone();
    put_u32(&mut img, 446 + 8, 0);
    assert!(matches!(mbr(&img), Err(MbrError::Overlap { a: 0, b: 1 })));
    // The 0xFFFFFFFF whole-disk marker is accepted on a small disk.
    let mut img = clean.clone();
    put_u32(&mut img, 446 + 12, u32::MAX);
    assert_eq!(mbr(&img).unwrap().kind(), MbrKind::Protective);
    // A plain MBR disk.
    let mut img = clean;
    img[446 + 4] = 0x83;
    let m = mbr(&img).unwrap();
    assert_eq!(m.kind(), MbrKind::Legacy);
    assert_eq!(m.partuuid(1), format!("{:08x}-01", m.disk_signature));
}

#[test]
fn find_by_partuuid_over_a_fake_sys_block() {
    let dir = tempfile::tempdir().unwrap();
    let (sys, dev) = (dir.path().join("sys/block"), dir.path().join("dev"));
    std::fs::create_dir_all(&dev).unwrap();
    let o = small_opts();
    let (_, _, pc) = write_image(&dev, "sda", Platform::Pc, 64 * MIB, &o, "pc-box");
    let (_, _, pi) = write_image(&dev, "mmcblk0", Platform::Pi3, 128 * MIB, &o, "pi-box");
    let (_, _, nv) = write_image(&dev, "nvme0n1", Platform::Pc, 64 * MIB, &o, "nvme-box");
    std::fs::write(dev.join("loop0"), b"not a disk").unwrap();
    for (name, sectors) in [
        ("sda", Some(64 * 2048)),
        ("mmcblk0", Some(128 * 2048)),
        ("nvme0n1", None),
        ("loop0", Some(0)),
        ("sr0", Some(2048)),
    ] {
        std::fs::create_dir_all(sys.join(name)).unwrap();
        if let Some(s) = sectors {
            std::fs::write(sys.join(name).join("size"), format!("{s}\n")).unwrap();
        }
    }
    let find = |guid| find_by_partuuid(&sys, &dev, guid).unwrap();

    let root_b = pi.entry(Role::RootB).unwrap();
    let found = find(root_b.guid).unwrap();
    assert_eq!(found.device, dev.join("mmcblk0p5"));
    assert_eq!(found.disk, dev.join("mmcblk0"));
    assert_eq!(found.partition.first_lba, root_b.partition.first_lba);

    assert_eq!(
        find(pc.entry(Role::Perm).unwrap().guid).unwrap().device,
        dev.join("sda4")
    );
    // nvme0n1 has no size file: its size comes from the node itself.
    assert_eq!(
        find(nv.entry(Role::RootA).unwrap().guid).unwrap().device,
        dev.join("nvme0n1p2")
    );
    let parsed = pc
        .entry(Role::Esp)
        .unwrap()
        .partuuid()
        .to_uppercase()
        .parse()
        .unwrap();
    assert_eq!(find(parsed).unwrap().device, dev.join("sda1"));
    assert_eq!(
        find(InstanceId::new("nobody").unwrap().derive_guid("perm")),
        None
    );
    assert!(find_by_partuuid(&dir.path().join("missing"), &dev, pc.disk_guid()).is_err());
}
