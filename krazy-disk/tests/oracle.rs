//! The written tables as sgdisk, sfdisk and fdisk read them.

mod common;

use common::*;
use krazy_disk::{read_mbr, Layout, LayoutOptions, MbrKind, PartitionTable, Platform, Role};

/// Disk sizes (MiB) per platform: near the minimum, a common SD/VM size,
/// and 3 TiB (beyond what an MBR entry can address).
fn cases() -> Vec<(Platform, u64)> {
    vec![
        (Platform::Pc, 1560),
        (Platform::Pc, 4096),
        (Platform::Pc, 3 << 20),
        (Platform::Pi3, 1310),
        (Platform::Pi3, 2048),
        (Platform::Pi3, 3 << 20),
    ]
}

fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key:?} in\n{text}"))
        .trim()
}

#[test]
fn sgdisk_verifies_and_reads_every_partition() {
    let dir = tempfile::tempdir().unwrap();
    for (platform, mib) in cases() {
        let (path, layout, table) = write_image(
            dir.path(),
            "disk.img",
            platform,
            mib * MIB,
            &LayoutOptions::default(),
            "oracle-test",
        );
        let p = path.to_str().unwrap();
        let verify = run("sgdisk", &["-v", p]);
        assert!(
            verify.contains("No problems found"),
            "{platform} {mib} MiB:\n{verify}"
        );
        assert!(!verify.to_lowercase().contains("warning"), "{verify}");

        let print = run("sgdisk", &["-p", p]);
        assert_eq!(
            field(&print, "Disk identifier (GUID):"),
            table.disk_guid().to_string().to_uppercase()
        );
        assert_eq!(field(&print, "Partition table holds up to"), "128 entries");
        let rows = print
            .lines()
            .skip_while(|l| !l.starts_with("Number"))
            .skip(1)
            .count();
        assert_eq!(rows, layout.partitions().len(), "{print}");

        for e in table.entries() {
            let part = &e.partition;
            let n = part.number.to_string();
            let info = run("sgdisk", &["-i", &n, p]);
            let code = field(&info, "Partition GUID code:");
            assert!(
                code.starts_with(&part.type_guid.to_string().to_uppercase()),
                "{code}"
            );
            assert_eq!(
                field(&info, "Partition unique GUID:"),
                e.guid.to_string().to_uppercase()
            );
            let first = field(&info, "First sector:");
            assert!(
                first.starts_with(&format!("{} ", part.first_lba)),
                "{first}"
            );
            let last = field(&info, "Last sector:");
            assert!(last.starts_with(&format!("{} ", part.last_lba())), "{last}");
            assert_eq!(field(&info, "Partition name:"), format!("'{}'", part.name));
            assert_eq!(field(&info, "Attribute flags:"), "0000000000000000");
        }
    }
}

#[test]
fn sfdisk_dump_and_json_match_the_layout() {
    let dir = tempfile::tempdir().unwrap();
    for (platform, mib) in cases() {
        let (path, layout, table) = write_image(
            dir.path(),
            "disk.img",
            platform,
            mib * MIB,
            &LayoutOptions::default(),
            "sfdisk-test",
        );
        let p = path.to_str().unwrap();
        let n = layout.disk_sectors();

        let dump = run("sfdisk", &["--dump", p]);
        assert_eq!(field(&dump, "label:"), "gpt");
        assert_eq!(field(&dump, "first-lba:"), "34");
        assert_eq!(field(&dump, "last-lba:"), (n - 34).to_string());
        let lines: Vec<&str> = dump.lines().filter(|l| l.contains(" : start=")).collect();
        assert_eq!(lines.len(), table.entries().len(), "{dump}");
        for (line, e) in lines.iter().zip(table.entries()) {
            let part = &e.partition;
            let want = format!(
                "{p}{} : start={:>12}, size={:>12}, type={}, uuid={}, name=\"{}\"",
                part.number,
                part.first_lba,
                part.sectors,
                part.type_guid.to_string().to_uppercase(),
                e.guid.to_string().to_uppercase(),
                part.name
            );
            assert_eq!(*line, want);
        }

        let json: serde_json::Value = serde_json::from_str(&run("sfdisk", &["--json", p])).unwrap();
        let t = &json["partitiontable"];
        assert_eq!(t["label"], "gpt");
        assert_eq!(t["id"], table.disk_guid().to_string().to_uppercase());
        assert_eq!(t["lastlba"], n - 34);
        let parts = t["partitions"].as_array().unwrap();
        assert_eq!(parts.len(), table.entries().len());
        for (j, e) in parts.iter().zip(table.entries()) {
            let part = &e.partition;
            assert_eq!(j["start"], part.first_lba);
            assert_eq!(j["size"], part.sectors);
            assert_eq!(j["uuid"], e.guid.to_string().to_uppercase());
            assert_eq!(j["name"], part.name);
            assert_eq!(
                part.start_bytes() % (4 * MIB),
                0,
                "{part:?} is not 4 MiB aligned"
            );
        }
        // /perm fills the disk up to the last usable sector.
        assert_eq!(layout.partition(Role::Perm).unwrap().last_lba(), n - 34);
    }
}

#[test]
fn hybrid_mbr_as_fdisk_and_raw_bytes_show_it() {
    let dir = tempfile::tempdir().unwrap();
    for mib in [1310u64, 2048, 3 << 20] {
        let (path, layout, table) = write_image(
            dir.path(),
            "pi.img",
            Platform::Pi3,
            mib * MIB,
            &LayoutOptions::default(),
            "hybrid-test",
        );
        let p = path.to_str().unwrap();
        let out = run("fdisk", &["-l", "-t", "dos", p]);
        assert_eq!(
            field(&out, "Disk identifier:"),
            format!("0x{:08x}", table.mbr_signature())
        );
        let rows: Vec<Vec<&str>> = out
            .lines()
            .filter(|l| l.starts_with(p))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows.len(), 4, "{out}");
        let fat = [Role::Autoboot, Role::BootA, Role::BootB];
        for (i, role) in fat.iter().enumerate() {
            let part = layout.partition(*role).unwrap();
            let r = &rows[i];
            // Device, [Boot *], Start, End, Sectors, Size, Id, Type...
            let (boot, rest) = if r[1] == "*" {
                (true, &r[2..])
            } else {
                (false, &r[1..])
            };
            assert_eq!(boot, i == 0, "{out}");
            assert_eq!(rest[0], part.first_lba.to_string());
            assert_eq!(rest[1], part.last_lba().to_string());
            assert_eq!(rest[2], part.sectors.to_string());
            assert_eq!(rest[4], "c");
        }
        let first = layout.partitions()[0].first_lba;
        assert_eq!(
            rows[3][1..4],
            ["1", &(first - 1).to_string(), &(first - 1).to_string()]
        );
        assert_eq!(rows[3][5], "ee");

        // Our own reader agrees, byte for byte on the fields.
        let mut f = std::fs::File::open(&path).unwrap();
        let mbr = read_mbr(&mut f, mib * MIB).unwrap();
        assert_eq!(mbr.kind(), MbrKind::Hybrid);
        assert_eq!(mbr.disk_signature, table.mbr_signature());
        let got: Vec<(u8, bool, u8, u32, u32)> = mbr
            .entries
            .iter()
            .map(|e| (e.index, e.active, e.kind, e.first_lba, e.sectors))
            .collect();
        let mut want: Vec<(u8, bool, u8, u32, u32)> = fat
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let part = layout.partition(*r).unwrap();
                (
                    i as u8 + 1,
                    i == 0,
                    0x0c,
                    part.first_lba as u32,
                    part.sectors as u32,
                )
            })
            .collect();
        want.push((4, false, 0xee, 1, first as u32 - 1));
        assert_eq!(got, want);
    }
}

#[test]
fn protective_mbr_covers_the_disk_capped_at_32_bits() {
    let dir = tempfile::tempdir().unwrap();
    for mib in [1560u64, 4096, 3 << 20] {
        let (path, layout, _) = write_image(
            dir.path(),
            "pc.img",
            Platform::Pc,
            mib * MIB,
            &LayoutOptions::default(),
            "protective-test",
        );
        let out = run("fdisk", &["-l", "-t", "dos", path.to_str().unwrap()]);
        let rows: Vec<Vec<&str>> = out
            .lines()
            .filter(|l| l.starts_with(path.to_str().unwrap()))
            .map(|l| l.split_whitespace().collect())
            .collect();
        let size = (layout.disk_sectors() - 1).min(u32::MAX as u64);
        assert_eq!(rows.len(), 1, "{out}");
        assert_eq!(rows[0][1], "1");
        assert_eq!(rows[0][3], size.to_string());
        assert_eq!(rows[0][5], "ee");
        let mbr = read_mbr(&mut std::fs::File::open(&path).unwrap(), mib * MIB).unwrap();
        assert_eq!(mbr.kind(), MbrKind::Protective);
    }
}

#[test]
fn same_id_same_bytes_other_id_other_guids() {
    let dir = tempfile::tempdir().unwrap();
    for platform in [Platform::Pc, Platform::Pi3] {
        let bytes = 2048 * MIB;
        let o = LayoutOptions::default();
        let (a, _, ta) = write_image(dir.path(), "a.img", platform, bytes, &o, "instance-1");
        let (b, _, tb) = write_image(dir.path(), "b.img", platform, bytes, &o, "instance-1");
        let (c, _, tc) = write_image(dir.path(), "c.img", platform, bytes, &o, "instance-2");
        assert_eq!(ta, tb);
        // Only the first 34 and last 33 sectors are written; compare them.
        let ends = |p: &std::path::Path| {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = std::fs::File::open(p).unwrap();
            let mut head = vec![0u8; 34 * 512];
            f.read_exact(&mut head).unwrap();
            let mut tail = vec![0u8; 33 * 512];
            f.seek(SeekFrom::End(-(33 * 512))).unwrap();
            f.read_exact(&mut tail).unwrap();
            (head, tail)
        };
        assert_eq!(ends(&a), ends(&b));
        assert_ne!(ends(&a), ends(&c));
        let dump = |p: &std::path::Path| run("sfdisk", &["--dump", p.to_str().unwrap()]);
        assert_eq!(
            dump(&a).replace(a.to_str().unwrap(), ""),
            dump(&b).replace(b.to_str().unwrap(), "")
        );
        assert_ne!(ta.disk_guid(), tc.disk_guid());
        assert_ne!(ta.mbr_signature(), tc.mbr_signature());
        for (x, y) in ta.entries().iter().zip(tc.entries()) {
            assert_ne!(x.guid, y.guid);
            assert_eq!(x.partition, y.partition);
        }
        // Every GUID on one disk is distinct.
        let mut all: Vec<_> = ta.entries().iter().map(|e| e.guid).collect();
        all.push(ta.disk_guid());
        all.sort();
        all.dedup();
        assert_eq!(all.len(), ta.entries().len() + 1);
    }
}

#[test]
fn only_the_table_sectors_are_allocated() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let (path, _, table) = write_image(
        dir.path(),
        "sparse.img",
        Platform::Pc,
        8192 * MIB,
        &LayoutOptions::default(),
        "sparse",
    );
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), 8192 * MIB);
    // 67 sectors of tables; file systems allocate in blocks of up to 64 KiB.
    assert!(
        meta.blocks() * 512 <= 256 * 1024,
        "{} blocks",
        meta.blocks()
    );
    assert_eq!(table.head_bytes().len(), 34 * 512);
    assert_eq!(table.tail_bytes().len(), 33 * 512);
    assert_eq!(table.tail_offset(), 8192 * MIB - 33 * 512);
}

#[test]
fn too_small_disks_are_refused_with_sizes() {
    for (platform, min_mib) in [(Platform::Pc, 1556u64), (Platform::Pi3, 1308)] {
        let o = LayoutOptions::default();
        let needed = min_mib * MIB + 33 * 512;
        let err = Layout::new(platform, arch(platform), needed - 4096, &o).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&needed.to_string()), "{msg}");
        assert!(msg.contains(&(needed - 4096).to_string()), "{msg}");
        let layout = Layout::new(platform, arch(platform), needed, &o).unwrap();
        assert_eq!(layout.partition(Role::Perm).unwrap().size_bytes(), 16 * MIB);
        PartitionTable::from_layout(&layout, &krazy_disk::InstanceId::new("x").unwrap()).unwrap();
    }
}
